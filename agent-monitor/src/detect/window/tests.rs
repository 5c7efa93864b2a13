//! Feature extraction on hand-made event sequences with known answers.

use std::{net::IpAddr, sync::Arc, time::Duration};

use super::*;
use crate::{
    config::Detection,
    detect::baseline::{ClassKnowledge, FeatureSchema, SCALAR_FEATURES},
    event::{AgentBody, AgentRef, Body, Endpoint, Event, SockBody},
};

const S: u64 = 1_000_000_000;

fn ev(ts_ns: u64, cgroup_id: u64, body: Body) -> Event {
    Event {
        ts_ns,
        kind_id: 0,
        cgroup_id,
        pid: 100,
        tid: 100,
        agent: Some(AgentRef::new(
            Arc::from(format!("agent-{cgroup_id}")),
            Arc::from("fraud"),
        )),
        truncated: false,
        body,
    }
}

fn open(path: &str, flags: u32, ret: i64) -> Body {
    Body::Open {
        path: path.into(),
        dirfd: -100,
        flags,
        mode: 0,
        ret,
    }
}

fn connect(addr: &str, port: u16, ret: i64) -> Body {
    Body::Connect(SockBody {
        peer: Endpoint {
            addr: Some(addr.parse::<IpAddr>().expect("addr")),
            port,
        },
        family: 2,
        sock_type: 1,
        cookie: 1,
        ret,
    })
}

fn exec(filename: &str) -> Body {
    Body::Exec {
        filename: filename.into(),
        argv: vec![],
        uid: 0,
        gid: 0,
        ret: 0,
    }
}

fn windower() -> Windower<PathClassifier> {
    let classifier = PathClassifier::new(&Detection::default()).expect("globs");
    Windower::new(Duration::from_secs(10), Duration::from_secs(2), classifier)
}

#[test]
fn a_window_counts_what_the_agent_did() {
    let mut w = windower();
    let mut out = vec![];
    let events = [
        open("/data/transactions/a.csv", 0, 3),
        open("/data/transactions/b.csv", 0, 3),
        open("/data/reports/out.txt", 0o1101, 4), // O_WRONLY|O_CREAT|O_TRUNC
        open("/pii/customers.csv", 0, -13),
        connect("127.0.0.1", 8080, 0),
        connect("127.0.0.1", 8080, 0),
        connect("10.0.0.9", 22, -111),
        exec("/bin/sh"),
        exec("/usr/bin/curl"),
        Body::SyscallCount {
            nr: 0,
            name: None,
            count: 70,
        },
        Body::SyscallCount {
            nr: 1,
            name: None,
            count: 30,
        },
        Body::Exit { code: Some(1) },
    ];
    for (i, body) in events.into_iter().enumerate() {
        w.add(&ev(20 * S + i as u64, 7, body), &mut out);
    }
    assert!(out.is_empty(), "the window is still open");
    w.flush(&mut out);
    let [window] = &out[..] else {
        panic!("one window, got {out:?}")
    };
    assert_eq!((window.start_ns, window.end_ns), (20 * S, 30 * S));
    let s = &window.stats;
    assert_eq!((s.file_reads, s.file_writes, s.file_failures), (3, 1, 1));
    assert_eq!((s.paths.len(), s.dirs.len(), s.sensitive_hits), (4, 3, 1));
    assert_eq!(
        (s.connects, s.connect_failures, s.destinations.len()),
        (3, 1, 2)
    );
    assert_eq!((s.execs, s.shells, s.binaries.len()), (2, 1, 2));
    assert_eq!((s.syscall_total(), s.exits_nonzero), (100, 1));
    assert!(!window.lossy());

    // Relative to a class that knows the scoring service and curl but not the SSH host or sh.
    let mut known = ClassKnowledge::default();
    known.destinations.insert("127.0.0.1:8080".into());
    known.binaries.insert("/usr/bin/curl".into());
    known.syscalls.insert(0, 1000);
    known.hours[9] = 10;
    known.first_unix_s = Some(0);
    known.last_unix_s = Some(2 * 86_400);
    let schema = FeatureSchema::for_class(&known);
    let v = schema.vector(window, &known, 0.25, 1.5, Some(3 * 3600 + 5));
    let names = schema.names();
    assert_eq!(names.len(), v.len());
    let get = |name: &str| v[names.iter().position(|n| n == name).expect(name)];
    assert_eq!(get("net_new_destinations"), 1f64.ln_1p());
    assert_eq!(get("proc_new_binaries"), 1f64.ln_1p());
    assert_eq!(get("file_sensitive_hits"), 1f64.ln_1p());
    assert_eq!(get("seq_novel_ngrams"), 0.25);
    assert_eq!(get("seq_surprise"), 1.5);
    assert_eq!(get("time_of_day_deviation"), 1.0);
    assert!((get("sys_read") - 0.7f64.sqrt()).abs() < 1e-12);
    assert!((get("sys_other") - 0.3f64.sqrt()).abs() < 1e-12);
    assert_eq!(v.len(), SCALAR_FEATURES.len() + 2);
}

#[test]
fn windows_are_cut_per_agent_on_aligned_boundaries() {
    let mut w = windower();
    let mut out = vec![];
    w.add(&ev(5 * S, 1, exec("/a")), &mut out);
    w.add(&ev(6 * S, 2, exec("/b")), &mut out);
    w.add(&ev(12 * S, 1, exec("/c")), &mut out); // agent 1 moves on to [10, 20)
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].cgroup_id, out[0].start_ns, out[0].stats.execs),
        (1, 0, 1)
    );
    // Agent 2 is idle: its window closes only after the grace period.
    w.tick(11 * S, &mut out);
    assert_eq!(out.len(), 1);
    w.tick(12 * S, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].cgroup_id, 2);
}

#[test]
fn lost_events_mark_the_window() {
    let mut w = windower();
    let mut out = vec![];
    w.add(&ev(S, 3, exec("/a")), &mut out);
    w.add(&ev(2 * S, 3, Body::Lost { cpu: 1, count: 5 }), &mut out);
    w.add(&ev(15 * S, 3, exec("/a")), &mut out);
    assert!(out[0].lossy());
    w.flush(&mut out);
    assert!(!out[1].lossy(), "the next window is clean again");
}

#[test]
fn removal_closes_the_window_and_unattributed_events_have_none() {
    let mut w = windower();
    let mut out = vec![];
    let mut stray = ev(S, 9, exec("/x"));
    stray.agent = None;
    w.add(&stray, &mut out);
    w.add(&ev(S, 4, exec("/a")), &mut out);
    let removed = Body::AgentRemoved(AgentBody {
        id: "agent-4".into(),
        class: "fraud".into(),
        cgroup_path: "x".into(),
        slot: 0,
    });
    w.add(&ev(2 * S, 4, removed), &mut out);
    assert_eq!(out.len(), 1);
    w.flush(&mut out);
    assert_eq!(out.len(), 1, "nothing open: the stray event made no window");
}

#[test]
fn sequences_are_kept_per_thread_and_capped() {
    let mut w = windower();
    let mut out = vec![];
    let mut e = ev(S, 5, Body::Syscalls { ids: vec![1; 64] });
    for _ in 0..(MAX_SEQUENCE / 64 + 3) {
        w.add(&e, &mut out);
    }
    e.tid = 101;
    w.add(&e, &mut out);
    w.flush(&mut out);
    let s = &out[0].stats;
    assert_eq!(s.sequences.get(100).map(<[u16]>::len), Some(MAX_SEQUENCE));
    assert_eq!(s.sequences.get(101).map(<[u16]>::len), Some(64));
}

#[test]
fn time_of_day_counts_only_once_a_day_is_learned() {
    let mut known = ClassKnowledge::default();
    known.hours[9] = 4;
    known.hours[10] = 2;
    known.first_unix_s = Some(9 * 3600);
    known.last_unix_s = Some(10 * 3600);
    assert_eq!(
        known.hour_deviation(Some(3 * 3600)),
        0.0,
        "one hour of learning"
    );
    known.last_unix_s = Some(86_400 + 10 * 3600);
    assert_eq!(known.hour_deviation(Some(3 * 3600)), 1.0);
    assert_eq!(known.hour_deviation(Some(10 * 3600 + 59)), 0.5);
    assert_eq!(known.hour_deviation(None), 0.0);
}

/// The daemon announces an agent's cgroup before its process runs. An agent that starts just
/// before a window boundary has its start-up in the next window too: that window is a start-up
/// window as well (not scored, not learned from), and the one after it is steady.
#[test]
fn start_up_is_counted_from_the_first_activity_and_spills_into_the_next_window() {
    let classifier = PathClassifier::new(&Detection::default()).expect("globs");
    let mut w = Windower::new(Duration::from_secs(10), Duration::ZERO, classifier);
    let added = Body::AgentAdded(AgentBody {
        id: "agent-7".into(),
        class: "fraud".into(),
        cgroup_path: "/agents/fraud/agent-7".into(),
        slot: 0,
    });
    let mut out = vec![];
    // Announced at 3 s, runs from 9.9 s: its start-up reaches into [10, 20).
    w.add(&ev(3 * S, 7, added), &mut out);
    w.add(
        &ev(9 * S + 900_000_000, 7, exec("/usr/bin/agent")),
        &mut out,
    );
    for t in [11, 15, 21, 25, 31] {
        w.add(&ev(t * S, 7, open("/srv/a", 0, 3)), &mut out);
    }
    let flags: Vec<(u64, bool)> = out.iter().map(|w| (w.start_ns / S, w.first)).collect();
    assert_eq!(flags, [(0, true), (10, true), (20, false)]);

    // Started early in its window: the next window is steady.
    let mut out = vec![];
    w.add(&ev(42 * S, 8, exec("/usr/bin/agent")), &mut out);
    w.add(&ev(51 * S, 8, open("/srv/a", 0, 3)), &mut out);
    w.add(&ev(61 * S, 8, open("/srv/a", 0, 3)), &mut out);
    let flags: Vec<(u64, bool)> = out.iter().map(|w| (w.start_ns / S, w.first)).collect();
    assert_eq!(flags, [(40, true), (50, false)]);
}
