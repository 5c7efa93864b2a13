//! Rule engine tests with hand-made events.

mod defaults;
mod engine;
mod errors;
mod ops;

use std::net::IpAddr;

use super::{RuleEngine, RuleSet};
use crate::{
    detect::{Finding, Source},
    event::{AgentBody, AgentRef, Body, Endpoint, Event, SockBody},
};

const SEC: u64 = 1_000_000_000;

fn event(agent: Option<(&str, &str)>, ts_ns: u64, body: Body) -> Event {
    Event {
        ts_ns,
        kind_id: 0,
        cgroup_id: 7,
        pid: 100,
        tid: 100,
        agent: agent.map(|(id, class)| AgentRef::new(id.into(), class.into())),
        truncated: false,
        body,
    }
}

/// An event of agent `fraud-1` (class `fraud`) at time zero.
fn fraud(body: Body) -> Event {
    event(Some(("fraud-1", "fraud")), 0, body)
}

fn open(path: &str, flags: u32) -> Body {
    Body::Open {
        path: path.into(),
        dirfd: -100,
        flags,
        mode: 0,
        ret: 3,
    }
}

fn exec(filename: &str, argv: &[&str]) -> Body {
    Body::Exec {
        filename: filename.into(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        uid: 1000,
        gid: 1000,
        ret: 0,
    }
}

fn connect(addr: &str, port: u16) -> Body {
    Body::Connect(SockBody {
        peer: Endpoint {
            addr: addr.parse::<IpAddr>().ok(),
            port,
        },
        family: 2,
        sock_type: 1,
        cookie: 1,
        ret: 0,
    })
}

fn dns(name: &str) -> Body {
    Body::DnsQuery {
        name: name.into(),
        server: Endpoint {
            addr: "10.0.0.53".parse().ok(),
            port: 53,
        },
        cookie: 1,
    }
}

fn removed(id: &str, class: &str) -> Body {
    Body::AgentRemoved(AgentBody {
        id: id.into(),
        class: class.into(),
        cgroup_path: format!("/agents/{class}/{id}"),
        slot: 0,
    })
}

/// An engine from rule-file text (the `version: 1` line is added).
fn engine(rules: &str) -> RuleEngine {
    RuleEngine::new(set(rules))
}

fn set(rules: &str) -> RuleSet {
    match RuleSet::parse("test.yaml", &format!("version: 1\n{rules}")) {
        Ok(s) => s,
        Err(e) => panic!("rules should load: {e}"),
    }
}

fn run(engine: &mut RuleEngine, event: &Event) -> Vec<Finding> {
    let mut out = Vec::new();
    engine.on_event(event, &mut out);
    out
}

/// Names of the rules that fire on `event`.
fn fired(engine: &mut RuleEngine, event: &Event) -> Vec<String> {
    run(engine, event)
        .into_iter()
        .map(|f| match f.source {
            Source::Rule { name, .. } => name,
            other => format!("{other:?}"),
        })
        .collect()
}

/// One rule named `r` on `kind` with condition `when` (YAML flow or block text).
fn one(kind: &str, when: &str) -> RuleEngine {
    engine(&format!(
        "rules:\n  - name: r\n    description: d\n    kinds: [{kind}]\n    when: {when}\n    tier: log\n    summary: s\n"
    ))
}

/// Whether the one-rule engine fires on the body (agent fraud-1).
fn hits(kind: &str, when: &str, body: Body) -> bool {
    !fired(&mut one(kind, when), &fraud(body)).is_empty()
}
