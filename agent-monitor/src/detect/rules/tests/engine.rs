//! Class scopes, rates, summaries, unidentified agents, eviction and reload.

use super::*;
use crate::detect::Tier;

const SCOPED: &str = "
rules:
  - name: only-fraud
    description: d
    classes: fraud
    kinds: open
    tier: log
    summary: s
  - name: not-fraud
    description: d
    except_classes: [fraud, compliance]
    kinds: open
    tier: log
    summary: s
  - name: everyone
    description: d
    kinds: open
    tier: log
    summary: s
";

#[test]
fn class_scopes() {
    let mut e = engine(SCOPED);
    let at = |id: &str, class: &str| event(Some((id, class)), 0, open("/x", 0));
    assert_eq!(fired(&mut e, &at("f", "fraud")), ["only-fraud", "everyone"]);
    assert_eq!(
        fired(&mut e, &at("o", "onboarding")),
        ["not-fraud", "everyone"]
    );
    assert_eq!(fired(&mut e, &at("c", "compliance")), ["everyone"]);
    // A class no rule names gets the unscoped and except-scoped rules.
    assert_eq!(
        fired(&mut e, &at("p", "payments")),
        ["not-fraud", "everyone"]
    );
}

#[test]
fn unidentified_events_still_fire() {
    let mut e = engine(
        "rules:\n  - {name: r, description: d, classes: unidentified, kinds: open, tier: contain, summary: '{agent}/{class} {path}'}\n",
    );
    let f = run(&mut e, &event(None, 5, open("/etc/shadow", 0)));
    assert_eq!(f.len(), 1);
    assert_eq!(&*f[0].agent_id, "unidentified");
    assert_eq!(&*f[0].class, "unidentified");
    assert_eq!(f[0].summary, "unidentified/unidentified /etc/shadow");
    assert!(fired(&mut e, &fraud(open("/etc/shadow", 0))).is_empty());
}

#[test]
fn finding_fields_and_summary_interpolation() {
    let mut e = engine(
        r#"rules:
  - name: sensitive-read
    description: d
    kinds: open
    when: {path: {starts_with: /pii/}}
    tier: contain
    summary: "{agent} ({class}) opened {path} for {access} (flags {flags}, mode {mode}) [{rule}] {{literal}}"
"#,
    );
    let mut ev = event(Some(("a1", "fraud")), 42, open("/pii/x", 0o101));
    if let Body::Open { mode, .. } = &mut ev.body {
        *mode = 0o640;
    }
    let f = run(&mut e, &ev);
    assert_eq!(f.len(), 1);
    let f = &f[0];
    assert_eq!(
        f.summary,
        "a1 (fraud) opened /pii/x for write (flags 0x41, mode 0o640) [sensitive-read] {literal}"
    );
    assert_eq!(f.ts_ns, 42);
    assert_eq!(f.cgroup_id, 7);
    assert_eq!(f.tier, Some(Tier::Contain));
    assert!((f.score - 1.0).abs() < f64::EPSILON);
    assert_eq!(
        f.source,
        Source::Rule {
            name: "sensitive-read".into(),
            file: "test.yaml".into()
        }
    );
}

const BURST: &str = "
rules:
  - name: burst
    description: d
    kinds: connect
    rate: {more_than: 3, within: 10s}
    tier: rate_limit
    summary: '{rate_count} connects in {window}'
";

#[test]
fn rate_fires_at_n_plus_one_within_the_window() {
    let mut e = engine(BURST);
    let at = |t: u64| event(Some(("a", "fraud")), t, connect("1.1.1.1", 80));
    for t in 0..3 {
        assert!(run(&mut e, &at(t * SEC)).is_empty(), "event {t}");
    }
    let f = run(&mut e, &at(3 * SEC));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].summary, "4 connects in 10s");
    assert_eq!(f[0].tier, Some(Tier::RateLimit));
    // The window restarts after firing.
    assert!(run(&mut e, &at(4 * SEC)).is_empty());
}

#[test]
fn rate_does_not_fire_when_spread_out() {
    let mut e = engine(BURST);
    for t in 0..20 {
        let ev = event(Some(("a", "fraud")), t * 4 * SEC, connect("1.1.1.1", 80));
        assert!(run(&mut e, &ev).is_empty(), "event {t}");
    }
}

#[test]
fn rate_is_per_agent() {
    let mut e = engine(BURST);
    for t in 0..4 {
        for id in ["a", "b"] {
            let fired_now = !run(
                &mut e,
                &event(Some((id, "fraud")), t, connect("1.1.1.1", 80)),
            )
            .is_empty();
            assert_eq!(fired_now, t == 3);
        }
    }
}

const SCAN: &str = "
rules:
  - name: scan
    description: d
    kinds: connect
    rate: {more_than: 3, within: 60s, distinct: port}
    tier: rate_limit
    summary: '{agent} tried {rate_count} ports in {window}'
";

#[test]
fn distinct_rate_counts_values_not_events() {
    let mut e = engine(SCAN);
    let at = |t: u64, port: u16| event(Some(("a", "fraud")), t * SEC, connect("10.0.0.1", port));
    // Many connects to the same two ports: no scan.
    for t in 0..10 {
        assert!(run(&mut e, &at(t, 80 + (t % 2) as u16)).is_empty());
    }
    assert!(run(&mut e, &at(11, 22)).is_empty());
    let f = run(&mut e, &at(12, 23));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].summary, "a tried 4 ports in 1m");
}

#[test]
fn distinct_values_expire() {
    let mut e = engine(SCAN);
    for (i, port) in [1u16, 2, 3, 4, 5].iter().enumerate() {
        let ev = event(
            Some(("a", "fraud")),
            i as u64 * 30 * SEC,
            connect("10.0.0.1", *port),
        );
        assert!(run(&mut e, &ev).is_empty(), "port {port}");
    }
}

#[test]
fn a_value_seen_again_outlives_the_values_around_it() {
    let mut e = engine(SCAN);
    let at = |t: u64, port: u16| event(Some(("a", "fraud")), t * SEC, connect("10.0.0.1", port));
    for port in [1, 2, 3] {
        assert!(run(&mut e, &at(0, port)).is_empty());
    }
    assert!(run(&mut e, &at(50, 1)).is_empty());
    // At 70 s ports 2 and 3 have expired; port 1, seen again at 50 s, has not.
    assert!(run(&mut e, &at(70, 4)).is_empty());
    assert!(run(&mut e, &at(70, 5)).is_empty());
    let f = run(&mut e, &at(71, 6));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].summary, "a tried 4 ports in 1m");
}

#[test]
fn agent_removed_drops_rate_state() {
    let mut e = engine(BURST);
    run(
        &mut e,
        &event(Some(("a", "fraud")), 0, connect("1.1.1.1", 80)),
    );
    run(
        &mut e,
        &event(Some(("b", "fraud")), 0, connect("1.1.1.1", 80)),
    );
    assert_eq!(e.tracked_agents(), 2);
    run(
        &mut e,
        &event(Some(("a", "fraud")), 1, removed("a", "fraud")),
    );
    assert_eq!(e.tracked_agents(), 1);
}

#[test]
fn lifecycle_records_only_reach_rules_that_name_them() {
    let mut e = engine(
        "rules:\n  - {name: any-open, description: d, kinds: open, tier: log, summary: s}\n  - {name: gone, description: d, kinds: agent_removed, tier: log, summary: '{cgroup_path}'}\n",
    );
    let f = run(&mut e, &fraud(removed("fraud-1", "fraud")));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].summary, "/agents/fraud/fraud-1");
    assert!(run(&mut e, &fraud(Body::Lost { cpu: 0, count: 3 })).is_empty());
}

#[test]
fn reload_keeps_state_of_unchanged_rules() {
    let two = format!(
        "{BURST}  - name: other
    description: d
    kinds: connect
    rate: {{more_than: 3, within: 10s}}
    tier: log
    summary: s
"
    );
    let mut e = engine(&two);
    let at = |t: u64| event(Some(("a", "fraud")), t * SEC, connect("1.1.1.1", 80));
    for t in 0..3 {
        assert!(run(&mut e, &at(t)).is_empty());
    }
    // `burst` is unchanged (its summary text may differ: it does not count); `other` now
    // counts differently, so its window starts again.
    let reloaded = two
        .replace(
            "'{rate_count} connects in {window}'",
            "'burst: {rate_count}'",
        )
        .replace(
            "more_than: 3, within: 10s}\n    tier: log",
            "more_than: 3, within: 11s}\n    tier: log",
        );
    let new = set(&reloaded);
    e.reload(new);
    assert_eq!(fired(&mut e, &at(3)), ["burst"]);
}

#[test]
fn bad_reload_leaves_the_old_rules_in_force() {
    let mut e = engine(BURST);
    let at = |t: u64| event(Some(("a", "fraud")), t * SEC, connect("1.1.1.1", 80));
    for t in 0..3 {
        run(&mut e, &at(t));
    }
    // What the daemon does: load, and swap only on success.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("a.yaml"),
        "version: 1\nrules:\n  - name: x\n    tier: nope\n",
    )
    .expect("write");
    match RuleSet::load_dir(dir.path()) {
        Ok(set) => e.reload(set),
        Err(err) => assert!(err.to_string().contains("a.yaml"), "{err}"),
    }
    assert_eq!(e.rules().len(), 1);
    assert_eq!(fired(&mut e, &at(3)), ["burst"]);
}

#[test]
fn many_rules_are_indexed() {
    // 1,000 path rules for one class: an event reaches only the rules its path can match.
    let mut text = String::from("rules:\n");
    for i in 0..1000 {
        text.push_str(&format!(
            "  - {{name: r{i}, description: d, classes: fraud, kinds: open, when: {{path: {{starts_with: /data/{i}/}}}}, tier: log, summary: s}}\n"
        ));
    }
    text.push_str("  - {name: star, description: d, kinds: open, when: {path: {glob: '/data/7/*.csv'}}, tier: log, summary: s}\n");
    let mut e = engine(&text);
    assert_eq!(
        fired(&mut e, &fraud(open("/data/7/x.csv", 0))),
        ["r7", "star"]
    );
    assert_eq!(fired(&mut e, &fraud(open("/data/999/y", 0))), ["r999"]);
    assert!(
        fired(
            &mut e,
            &event(Some(("o", "onboarding")), 0, open("/data/7/y", 0))
        )
        .is_empty()
    );
}

/// Rough per-event cost at 1 and 1,000 rules; run with
/// `cargo test --release -p agent-monitor --lib rules_cost -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn rules_cost() {
    let build = |n: usize| {
        let mut text = String::from("rules:\n");
        for i in 0..n {
            let class = ["fraud", "onboarding", "compliance"][i % 3];
            text.push_str(&format!(
                "  - {{name: r{i}, description: d, classes: {class}, kinds: [open, exec, connect], when: {{any: [{{path: {{starts_with: /data/{i}/}}}}, {{filename: /bin/x{i}}}, {{port: {i}}}]}}, tier: log, summary: s}}\n  - {{name: p{i}, description: d, kinds: open, when: {{path: {{glob: '/srv/{i}/**/*.key'}}}}, tier: log, summary: s}}\n"
            ));
        }
        engine(&text)
    };
    let events = [
        fraud(open("/data/transactions/t.csv", 0)),
        fraud(exec("/usr/bin/env", &["env"])),
        fraud(connect("127.0.0.1", 8080)),
    ];
    for n in [1, 1000] {
        let mut e = build(n);
        let mut out = Vec::new();
        let rounds = 200_000;
        let start = std::time::Instant::now();
        for i in 0..rounds {
            e.on_event(&events[i % events.len()], &mut out);
        }
        let ns = start.elapsed().as_nanos() / rounds as u128;
        println!("{n} rules: {ns} ns/event, {} findings", out.len());
    }
}

#[test]
fn anchored_rules_fire_alike_once_the_anchor_memory_turns_over() {
    let mut e = engine(
        "rules:\n  - {name: keys, description: d, kinds: open, when: {path: {glob: '**/.ssh/id_*'}}, tier: contain, summary: s}\n  - {name: tmp, description: d, kinds: open, when: {path: {starts_with: /tmp/}}, tier: log, summary: s}\n",
    );
    // Far more distinct paths than an anchor remembers, with the same few coming back.
    for i in 0..5000 {
        let path = format!("/data/file-{i}.csv");
        assert!(fired(&mut e, &fraud(open(&path, 0))).is_empty(), "{path}");
        if i % 700 == 0 {
            assert_eq!(
                fired(&mut e, &fraud(open("/home/a/.ssh/id_rsa", 0))),
                ["keys"]
            );
            assert_eq!(fired(&mut e, &fraud(open("/tmp/x", 0))), ["tmp"]);
            assert!(fired(&mut e, &fraud(open("/tmpx", 0))).is_empty());
        }
    }
}
