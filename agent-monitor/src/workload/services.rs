//! Loopback stand-ins for the bank services the agent workloads call (fraud scoring, KYC,
//! archive): one line in, one line out. They run on their own thread, so a busy pipeline in the
//! same process never makes the agents' calls time out.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
};

/// The demo's service port: fixed, because a class baseline learns its agents' destinations and a
/// real scoring service does not move between runs.
pub const DEMO_PORT: u16 = 17_300;

/// Starts the service on a loopback port (0: any); it runs until the process ends.
pub fn start(port: u16) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("demo-services".into())
        .spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 256];
                if let Ok(n) = conn.read(&mut buf) {
                    let reply: &[u8] = match buf[..n].split(|b| *b == b' ').next() {
                        Some(b"score") => b"score 0.12\n",
                        Some(b"kyc") => b"kyc pass\n",
                        _ => b"ok\n",
                    };
                    let _ = conn.write_all(reply);
                }
            }
        })?;
    Ok(addr)
}
