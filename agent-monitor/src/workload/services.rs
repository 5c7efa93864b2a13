//! Loopback stand-ins for the bank services the agent workloads call (fraud scoring, KYC,
//! archive): one line in, one line out.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

/// Starts the service on an ephemeral loopback port; it runs until the runtime ends.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                if let Ok(n) = conn.read(&mut buf).await {
                    let reply: &[u8] = match buf[..n].split(|b| *b == b' ').next() {
                        Some(b"score") => b"score 0.12\n",
                        Some(b"kyc") => b"kyc pass\n",
                        _ => b"ok\n",
                    };
                    let _ = conn.write_all(reply).await;
                }
            });
        }
    });
    Ok(addr)
}
