//! Loopback stand-ins for the bank services the agent workloads call (fraud scoring, KYC,
//! archive): one line in, one line out.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

/// The demo's service port: fixed, because a class baseline learns its agents' destinations and a
/// real scoring service does not move between runs.
pub const DEMO_PORT: u16 = 17_300;

/// Starts the service on a loopback port (0: any); it runs until the runtime ends.
pub async fn start(port: u16) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
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
