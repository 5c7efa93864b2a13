//! A baseline learns a normal workload from windows and then flags an injected change.

use std::{net::IpAddr, sync::Arc, time::Duration};

use super::{Baselines, ClassModel, LearningPolicy, State};
use crate::{
    config::Detection,
    detect::window::{PathClassifier, Window, Windower},
    event::{AgentRef, Body, Endpoint, Event, SockBody},
};

const S: u64 = 1_000_000_000;

fn ev(ts_ns: u64, tid: u32, body: Body) -> Event {
    Event {
        ts_ns,
        kind_id: 0,
        cgroup_id: 42,
        pid: 7,
        tid,
        agent: Some(AgentRef::new(Arc::from("fraud-1"), Arc::from("fraud"))),
        truncated: false,
        body,
    }
}

fn connect(addr: &str, port: u16) -> Body {
    Body::Connect(SockBody {
        peer: Endpoint {
            addr: Some(addr.parse::<IpAddr>().expect("addr")),
            port,
        },
        family: 2,
        sock_type: 1,
        cookie: 9,
        ret: 0,
    })
}

fn open(path: String) -> Body {
    Body::Open {
        path,
        dirfd: -100,
        flags: 0,
        mode: 0,
        ret: 3,
    }
}

/// A fraud agent's 10 s: reads some batches, calls the scoring service for each, a steady
/// syscall mix and a repetitive syscall stream; `k` varies the amounts a little.
fn normal_events(start: u64, k: u64, out: &mut Vec<Event>) {
    let batches = 8 + k % 5;
    for b in 0..batches {
        let t = start + b * S / 2;
        out.push(ev(
            t,
            7,
            open(format!("/srv/transactions/batch-{:03}.csv", (k + b) % 20)),
        ));
        out.push(ev(t + 1, 7, connect("127.0.0.1", 17300)));
        out.push(ev(
            t + 2,
            7,
            Body::Syscalls {
                ids: [0u16, 1, 3, 42, 44, 45, 3, 257, 0, 3].repeat(4),
            },
        ));
    }
    for (nr, n) in [
        (0u32, 40 * batches),
        (1, 12 * batches),
        (3, 20 * batches),
        (257, batches),
    ] {
        out.push(ev(
            start + 9 * S,
            7,
            Body::SyscallCount {
                nr,
                name: None,
                count: n,
            },
        ));
    }
}

/// The same agent turned hostile: reads the service-account token, runs a shell, connects out
/// to hosts the class never talks to.
fn hostile_events(start: u64, out: &mut Vec<Event>) {
    normal_events(start, 3, out);
    out.push(ev(
        start + S,
        8,
        open("/var/run/secrets/kubernetes.io/serviceaccount/token".into()),
    ));
    out.push(ev(
        start + S + 1,
        8,
        Body::Exec {
            filename: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "id".into()],
            uid: 0,
            gid: 0,
            ret: 0,
        },
    ));
    for port in 1..40 {
        out.push(ev(
            start + 2 * S + port,
            8,
            connect("10.9.8.7", port as u16),
        ));
    }
    out.push(ev(
        start + 3 * S,
        8,
        Body::Syscalls {
            ids: [59u16, 41, 42, 33, 33, 33, 59, 61].repeat(8),
        },
    ));
}

fn windows(events: &[Event]) -> Vec<Window> {
    let classifier = PathClassifier::new(&Detection::default()).expect("globs");
    let mut w = Windower::new(Duration::from_secs(10), Duration::ZERO, classifier);
    let mut out = vec![];
    for e in events {
        w.add(e, &mut out);
    }
    w.flush(&mut out);
    out
}

#[test]
fn learns_a_normal_workload_then_flags_an_injected_change() {
    let mut events = vec![];
    for k in 0..60 {
        normal_events(k * 10 * S, k, &mut events);
    }
    let train = windows(&events);
    assert_eq!(train.len(), 60);
    let refs: Vec<&Window> = train.iter().filter(|w| w.steady()).collect();
    let model = ClassModel::fit("fraud", &refs, 30).expect("fit");

    let mut later = vec![];
    normal_events(1000 * S, 61, &mut later);
    hostile_events(1010 * S, &mut later);
    let [normal, hostile] = &windows(&later)[..] else {
        panic!("two windows")
    };
    let normal = model.score(normal).expect("score");
    let hostile = model.score(hostile).expect("score");
    assert!(normal.score < 0.5, "a normal window scores low: {normal:?}");
    assert!(
        hostile.score > 0.9,
        "the hostile window scores high: {hostile:?}"
    );
    assert!(
        hostile.seq_novelty > 0.05,
        "new syscall n-grams are seen: {hostile:?}"
    );
    let top: Vec<&str> = hostile
        .top_features
        .iter()
        .take(8)
        .map(|c| c.feature.as_str())
        .collect();
    assert!(
        top.iter()
            .any(|f| *f == "net_new_destinations" || *f == "net_distinct_destinations"),
        "the new destinations are named among the top features: {top:?}"
    );
}

#[test]
fn a_class_learns_on_line_and_never_from_lossy_or_contained_windows() {
    let mut b = Baselines::new(LearningPolicy {
        min_windows: 20,
        ..LearningPolicy::default()
    });
    let mut events = vec![];
    for k in 0..40 {
        normal_events(k * 10 * S, k, &mut events);
    }
    let ws = windows(&events);
    assert!(
        ws[0].first && !ws[0].steady(),
        "an agent's first window is its start-up"
    );
    assert!(
        ws[39].partial,
        "the window open at the end of input is partial"
    );
    let mut lossy = ws[1].clone();
    lossy.stats.lost = 3;
    for _ in 0..25 {
        assert!(b.observe(&lossy, false).is_none());
        assert!(b.observe(&ws[2], true).is_none());
        assert!(b.observe(&ws[0], false).is_none());
    }
    assert_eq!(
        b.state("fraud"),
        State::Learning,
        "lossy, contained and start-up windows teach nothing"
    );
    for w in &ws[1..20] {
        assert!(
            b.observe(w, false).is_none(),
            "nothing is scored while learning"
        );
    }
    assert_eq!(b.state("fraud"), State::Learning);
    b.observe(&ws[20], false);
    assert_eq!(b.state("fraud"), State::Stable);
    let score = b.observe(&ws[21], false).expect("stable classes score");
    assert!(score.score < 0.5, "{score:?}");
}
