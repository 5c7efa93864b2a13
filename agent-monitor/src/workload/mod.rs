//! A scripted agent workload: a known list of actions, used by the demo, the tests and the
//! benchmarks so that what the kernel reports can be checked against what was done.
//!
//! Steps (one argument each): `getppid:N`, `read:PATH`, `write:PATH`, `unlink:PATH`,
//! `rename:FROM:TO`, `chmod:PATH:OCTAL`, `connect:HOST:PORT` (TCP, sends a line, reads a reply),
//! `accept:HOST:PORT` (listens and accepts one TCP connection, 10 s at most),
//! `offend:PATH:HOST:PORT` (opens PATH, the offence, then connects a UDP socket to HOST:PORT
//! until refused, prints the microseconds from the offence to the first refused connect, and
//! checks that a TCP connect is refused too),
//! `scan:HOST:FROM-TO` (a TCP connect to every port in the range, failures ignored),
//! `udp:HOST:PORT`, `dns:NAME@HOST:PORT` (one DNS query over UDP), `exec:PATH[:ARG...]` (runs a
//! program and waits), `sleep:MS`, `exit:CODE`, `agent:CLASS:SECS:HOST:PORT` (a representative
//! agent of that class, see [`profile`]), and for benchmarks `loop:OP:N` which runs `getppid`,
//! `openat` (open+close) or `connect` N times and prints the mean ns per operation, and
//! `rate:getppid:PER_S:SECS`, getppid at a steady rate, printing `rate N` (calls made) each
//! second. The attack steps that drills re-enact are in [`attack`].

pub mod attack;
pub mod profile;
pub mod services;
pub mod spawn;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Getppid(u64),
    /// `hop:ROUNDS`: round r moves the thread to the next CPU, then calls getppid r times (a
    /// syscall stream whose order can be checked across CPU migrations).
    Hop(u64),
    Read(String),
    Write(String),
    Unlink(String),
    Rename(String, String),
    Chmod(String, u32),
    Connect(String),
    Udp(String),
    Dns(String, String),
    Exec(Vec<String>),
    Sleep(u64),
    Exit(i32),
    Loop(String, u64),
    Agent(profile::Profile, Duration, SocketAddr),
    Scan(String, u16, u16),
    Accept(String),
    Offend(String, String),
    Rate(u64, u64),
    Attack(attack::Attack),
}

impl std::str::FromStr for Step {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (op, arg) = s.split_once(':').unwrap_or((s, ""));
        let num = |a: &str| {
            a.parse::<u64>()
                .with_context(|| format!("step {s:?}: bad number"))
        };
        Ok(match op {
            "getppid" => Step::Getppid(num(arg)?),
            "hop" => Step::Hop(num(arg)?),
            "read" => Step::Read(arg.into()),
            "write" => Step::Write(arg.into()),
            "unlink" => Step::Unlink(arg.into()),
            "rename" => {
                let (a, b) = arg
                    .split_once(':')
                    .ok_or_else(|| anyhow!("step {s:?}: rename:FROM:TO"))?;
                Step::Rename(a.into(), b.into())
            }
            "chmod" => {
                let (p, m) = arg
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow!("step {s:?}: chmod:PATH:MODE"))?;
                Step::Chmod(
                    p.into(),
                    u32::from_str_radix(m, 8).with_context(|| format!("step {s:?}"))?,
                )
            }
            "connect" => Step::Connect(arg.into()),
            "udp" => Step::Udp(arg.into()),
            "dns" => {
                let (n, a) = arg
                    .split_once('@')
                    .ok_or_else(|| anyhow!("step {s:?}: dns:NAME@HOST:PORT"))?;
                Step::Dns(n.into(), a.into())
            }
            "exec" => Step::Exec(arg.split(':').map(String::from).collect()),
            "sleep" => Step::Sleep(num(arg)?),
            "exit" => Step::Exit(arg.parse().with_context(|| format!("step {s:?}"))?),
            "loop" => {
                let (o, n) = arg
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow!("step {s:?}: loop:OP:N"))?;
                Step::Loop(o.into(), num(n)?)
            }
            "accept" => Step::Accept(arg.into()),
            "rate" => {
                let bad = || anyhow!("step {s:?}: rate:getppid:PER_S:SECS");
                let mut parts = arg.split(':');
                if parts.next() != Some("getppid") {
                    return Err(bad());
                }
                let (Some(per_s), Some(secs), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                Step::Rate(num(per_s)?, num(secs)?)
            }
            "offend" => {
                let (path, addr) = arg
                    .split_once(':')
                    .ok_or_else(|| anyhow!("step {s:?}: offend:PATH:HOST:PORT"))?;
                Step::Offend(path.into(), addr.into())
            }
            "scan" => {
                let bad = || anyhow!("step {s:?}: scan:HOST:FROM-TO");
                let (host, range) = arg.rsplit_once(':').ok_or_else(bad)?;
                let (from, to) = range.split_once('-').ok_or_else(bad)?;
                Step::Scan(
                    host.into(),
                    from.parse().map_err(|_| bad())?,
                    to.parse().map_err(|_| bad())?,
                )
            }
            "agent" => {
                let mut parts = arg.splitn(3, ':');
                let (Some(class), Some(secs), Some(addr)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    bail!("step {s:?}: agent:CLASS:SECS:HOST:PORT");
                };
                Step::Agent(
                    class.parse()?,
                    Duration::from_secs(num(secs)?),
                    addr.parse()
                        .with_context(|| format!("step {s:?}: bad service address"))?,
                )
            }
            _ => match attack::parse(op, arg) {
                Some(step) => Step::Attack(step?),
                None => bail!("unknown workload step {s:?}"),
            },
        })
    }
}

/// Runs the steps in order; `exit:CODE` ends the process.
pub fn run(steps: &[Step]) -> anyhow::Result<()> {
    for step in steps {
        run_step(step).with_context(|| format!("workload step {step:?}"))?;
    }
    Ok(())
}

fn run_step(step: &Step) -> anyhow::Result<()> {
    match step {
        Step::Getppid(n) => {
            for _ in 0..*n {
                // SAFETY: no arguments, cannot fail.
                std::hint::black_box(unsafe { libc::getppid() });
            }
        }
        Step::Hop(rounds) => {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            for r in 1..=*rounds {
                let mut set = nix::sched::CpuSet::new();
                set.set(r as usize % cpus)?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
                run_step(&Step::Getppid(r))?;
            }
        }
        Step::Read(p) => {
            let _ = fs::read(p);
        }
        Step::Write(p) => fs::write(p, b"agent-monitor workload report\n")?,
        Step::Unlink(p) => {
            let _ = fs::remove_file(p);
        }
        Step::Rename(a, b) => fs::rename(a, b)?,
        Step::Chmod(p, m) => fs::set_permissions(p, fs::Permissions::from_mode(*m))?,
        Step::Connect(addr) => {
            let mut s = TcpStream::connect_timeout(&resolve(addr)?, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"score txn-1\n")?;
            let mut reply = [0u8; 64];
            let _ = s.read(&mut reply);
        }
        Step::Udp(addr) => {
            UdpSocket::bind("127.0.0.1:0")?.send_to(b"ping", resolve(addr)?)?;
        }
        Step::Dns(name, addr) => {
            UdpSocket::bind("127.0.0.1:0")?.send_to(&dns_query(name), resolve(addr)?)?;
        }
        Step::Exec(argv) => {
            let (prog, args) = argv
                .split_first()
                .ok_or_else(|| anyhow!("exec needs a program"))?;
            Command::new(prog).args(args).status()?;
        }
        Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
        Step::Exit(code) => std::process::exit(*code),
        Step::Loop(op, n) => {
            let ns = bench_loop(op, *n)?;
            println!("{op} {ns:.1}");
        }
        Step::Agent(profile, duration, service) => profile.run(*duration, *service)?,
        Step::Attack(step) => attack::run(step)?,
        Step::Offend(path, addr) => {
            let addr = resolve(addr)?;
            // A UDP connect goes through the same cgroup connect hook as a TCP one but sends no
            // packet: a probe of a few microseconds, so the time measured is the containment's,
            // not that of a TCP handshake in flight when it came into force.
            let probe = UdpSocket::bind(if addr.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            })?;
            let start = Instant::now();
            let _ = fs::File::open(path);
            let mut probes = 0u64;
            while !udp_refused(&probe, addr)? {
                probes += 1;
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("not contained within 10 s of the offence ({probes} connects passed)");
                }
            }
            let us = start.elapsed().as_micros();
            if !tcp_refused(addr)? {
                bail!("a UDP connect to {addr} was refused but a TCP connect was not");
            }
            println!("contained_us {us} probes {probes}");
        }
        Step::Rate(per_s, secs) => paced_getppid(*per_s, Duration::from_secs(*secs)),
        Step::Accept(addr) => {
            let listener = std::net::TcpListener::bind(resolve(addr)?)?;
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match listener.accept() {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            bail!("nobody connected to {addr} within 10 s");
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Step::Scan(host, from, to) => {
            for port in *from..=*to {
                if let Ok(addr) = resolve(&format!("{host}:{port}")) {
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
                }
            }
        }
    }
    Ok(())
}

/// getppid at `per_s` calls a second for `duration`, in 1 ms slices against absolute deadlines
/// (no drift); prints `rate N` with the calls of each second, so a benchmark can report the
/// background load it really got.
fn paced_getppid(per_s: u64, duration: Duration) {
    const SLICE: Duration = Duration::from_millis(1);
    let per_slice = per_s / 1000;
    let start = Instant::now();
    let (mut next, mut second, mut calls) = (start, start, 0u64);
    while start.elapsed() < duration {
        for _ in 0..per_slice {
            // SAFETY: no arguments, cannot fail.
            std::hint::black_box(unsafe { libc::getppid() });
        }
        calls += per_slice;
        next += SLICE;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        if second.elapsed() >= Duration::from_secs(1) {
            println!("rate {calls}");
            let _ = std::io::stdout().flush();
            (second, calls) = (Instant::now(), 0);
        }
    }
}

/// Connects the UDP socket `probe` to `addr`: true when refused with EPERM (containment in
/// force).
fn udp_refused(probe: &UdpSocket, addr: SocketAddr) -> anyhow::Result<bool> {
    match probe.connect(addr) {
        Ok(()) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(true),
        Err(e) => Err(anyhow!("UDP connect {addr}: {e}")),
    }
}

/// One non-blocking TCP connect to `addr`: true when it is refused with EPERM (containment in
/// force), false when it is under way or done. Non-blocking so that a connect whose SYN the deny
/// caught mid-handshake (dropped at egress) is not waited for; the socket is closed at once.
fn tcp_refused(addr: SocketAddr) -> anyhow::Result<bool> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, connect, socket,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK, None)?;
    let r = match addr {
        SocketAddr::V4(a) => connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(a)),
    };
    match r {
        Err(nix::errno::Errno::EPERM) => Ok(true),
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(false),
        Err(e) => Err(anyhow!("connect {addr}: {e}")),
    }
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))
}

/// A minimal DNS query message (A record) for `name`.
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Mean ns per operation over `n` iterations of `op`.
pub fn bench_loop(op: &str, n: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    match op {
        "getppid" => run_step(&Step::Getppid(n))?,
        "openat" => {
            let path = c"/proc/self/stat";
            for _ in 0..n {
                // SAFETY: valid NUL-terminated path; the fd is closed at once.
                unsafe {
                    let fd = libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
            }
        }
        op if op.starts_with("connect=") => {
            let addr = resolve(&op["connect=".len()..])?;
            let reset = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            for _ in 0..n {
                // Close with RST so thousands of loop iterations leave no TIME_WAIT sockets to
                // slow down the next connect's port search.
                let s = TcpStream::connect(addr)?;
                nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &reset)?;
            }
        }
        _ => bail!("unknown loop op {op:?} (getppid, openat, connect=HOST:PORT)"),
    }
    Ok(start.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_step() {
        let s: Step = "rename:/a:/b".parse().unwrap();
        assert_eq!(s, Step::Rename("/a".into(), "/b".into()));
        assert_eq!(
            "chmod:/x:640".parse::<Step>().unwrap(),
            Step::Chmod("/x".into(), 0o640)
        );
        assert_eq!(
            "exec:/bin/echo:hi".parse::<Step>().unwrap(),
            Step::Exec(vec!["/bin/echo".into(), "hi".into()])
        );
        assert_eq!(
            "agent:fraud:5:127.0.0.1:80".parse::<Step>().unwrap(),
            Step::Agent(
                profile::Profile::Fraud,
                Duration::from_secs(5),
                "127.0.0.1:80".parse().unwrap()
            )
        );
        assert!("agent:miner:5:127.0.0.1:80".parse::<Step>().is_err());
        assert_eq!(
            "scan:127.0.0.1:20-25".parse::<Step>().unwrap(),
            Step::Scan("127.0.0.1".into(), 20, 25)
        );
        assert_eq!(
            "rate:getppid:1000000:60".parse::<Step>().unwrap(),
            Step::Rate(1_000_000, 60)
        );
        assert!("rate:openat:1:1".parse::<Step>().is_err());
        assert!("bogus:1".parse::<Step>().is_err());
        assert!("getppid:x".parse::<Step>().is_err());
    }

    #[test]
    fn dns_query_encodes_labels() {
        let q = dns_query("a.bc");
        assert_eq!(&q[12..], b"\x01a\x02bc\x00\x00\x01\x00\x01");
    }
}
