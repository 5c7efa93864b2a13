//! Socket tables of a network namespace (`/proc/<pid>/net/{tcp,tcp6,udp,udp6,unix}`), keyed by
//! socket inode so that a process's `socket:[inode]` descriptors can be named.

use std::{
    collections::HashMap,
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use serde::{Deserialize, Serialize};

/// One socket as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// `tcp`, `tcp6`, `udp`, `udp6` or `unix`.
    pub proto: String,
    pub inode: u64,
    /// `addr:port` (IPv6 in brackets); the bound path for unix sockets.
    pub local: String,
    /// `addr:port`; empty for unix sockets.
    pub remote: String,
    /// TCP state name (`LISTEN`, `ESTABLISHED`...), `UNCONN`/`ESTABLISHED` for UDP, unix state.
    pub state: String,
    pub uid: Option<u32>,
}

/// Reads every table of the namespace `pid` is in. Missing tables (no IPv6) are skipped.
pub(super) fn read_tables(pid: u32) -> HashMap<u64, SocketInfo> {
    let mut out = HashMap::new();
    let base = Path::new("/proc").join(pid.to_string()).join("net");
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        if let Ok(text) = fs::read_to_string(base.join(proto)) {
            for s in parse_inet(proto, &text) {
                out.insert(s.inode, s);
            }
        }
    }
    if let Ok(text) = fs::read_to_string(base.join("unix")) {
        for s in parse_unix(&text) {
            out.insert(s.inode, s);
        }
    }
    out
}

/// Parses `/proc/net/tcp`-style text.
pub(super) fn parse_inet(proto: &str, text: &str) -> Vec<SocketInfo> {
    let udp = proto.starts_with("udp");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            let local = endpoint(f.get(1)?)?;
            let remote = endpoint(f.get(2)?)?;
            let st = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let uid = f.get(7).and_then(|u| u.parse().ok());
            let inode = f.get(9)?.parse().ok()?;
            Some(SocketInfo {
                proto: proto.to_owned(),
                inode,
                local,
                remote,
                state: if udp { udp_state(st) } else { tcp_state(st) }.to_owned(),
                uid,
            })
        })
        .collect()
}

/// `0100007F:1F90` -> `127.0.0.1:8080`. The kernel prints each 32-bit word of the address in
/// host byte order, the port in host order.
fn endpoint(field: &str) -> Option<String> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..addr.len() / 8)
        .map(|i| {
            addr.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
                .map(u32::to_ne_bytes)
        })
        .collect();
    let words = words?;
    match (addr.len(), words.as_slice()) {
        (8, [w]) => Some(format!("{}:{port}", Ipv4Addr::from(*w))),
        (32, ws) if ws.len() == 4 => {
            let mut b = [0u8; 16];
            for (i, w) in ws.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(w);
            }
            Some(format!("[{}]:{port}", Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn tcp_state(st: u8) -> &'static str {
    match st {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

fn udp_state(st: u8) -> &'static str {
    match st {
        0x01 => "ESTABLISHED",
        0x07 => "UNCONN",
        _ => "UNKNOWN",
    }
}

/// Parses `/proc/net/unix`: `Num RefCount Protocol Flags Type St Inode [Path]`.
pub(super) fn parse_unix(text: &str) -> Vec<SocketInfo> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let st = u8::from_str_radix(f.get(5)?, 16).ok()?;
            let inode = f.get(6)?.parse().ok()?;
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let state = match st {
                1 if flags & 0x10000 != 0 => "LISTEN",
                1 => "UNCONNECTED",
                2 => "CONNECTING",
                3 => "CONNECTED",
                4 => "DISCONNECTING",
                _ => "UNKNOWN",
            };
            Some(SocketInfo {
                proto: "unix".to_owned(),
                inode,
                local: f.get(7..).map(|p| p.join(" ")).unwrap_or_default(),
                remote: String::new(),
                state: state.to_owned(),
                uid: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_tcp6_lines() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n";
        let s = parse_inet("tcp", tcp);
        assert_eq!(s.len(), 1);
        if cfg!(target_endian = "little") {
            assert_eq!(s[0].local, "127.0.0.1:8080");
        }
        assert_eq!(s[0].remote.split(':').nth(1), Some("0"));
        assert_eq!(s[0].state, "LISTEN");
        assert_eq!(s[0].inode, 12345);
        assert_eq!(s[0].uid, Some(0));

        let tcp6 = "header\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1\n";
        let s = parse_inet("tcp6", tcp6);
        if cfg!(target_endian = "little") {
            assert_eq!(s[0].local, "[::1]:80");
        }
        assert_eq!(s[0].uid, Some(1000));
        assert_eq!(s[0].inode, 777);
        assert!(parse_inet("udp", "h\n garbage line\n").is_empty());
    }

    #[test]
    fn parses_unix_lines() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 20001 /run/x.sock\n0000000000000000: 00000003 00000000 00000000 0001 03 20002\n";
        let s = parse_unix(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].state.as_str(), s[0].local.as_str()),
            ("LISTEN", "/run/x.sock")
        );
        assert_eq!((s[1].state.as_str(), s[1].inode), ("CONNECTED", 20002));
    }
}
