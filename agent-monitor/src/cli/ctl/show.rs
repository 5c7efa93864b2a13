//! How `ctl` prints API answers: aligned columns for people, JSON lines for scripts (tiers and
//! states named as in the daemon's own JSON: `log`, `rate_limit`, `contain`, null).

use std::process::ExitCode;

use agent_monitor::api::pb::{self, watch_event::Event};
use serde_json::{Value, json};

fn tier(t: i32) -> Option<&'static str> {
    match pb::Tier::try_from(t).unwrap_or(pb::Tier::None) {
        pb::Tier::None => None,
        pb::Tier::Log => Some("log"),
        pb::Tier::RateLimit => Some("rate_limit"),
        pb::Tier::Contain => Some("contain"),
    }
}

fn tier_text(t: i32) -> &'static str {
    tier(t).unwrap_or("-")
}

fn state(s: i32) -> &'static str {
    match pb::AgentState::try_from(s).unwrap_or(pb::AgentState::Unspecified) {
        pb::AgentState::Unspecified => "unknown",
        pb::AgentState::Monitored => "monitored",
        pb::AgentState::Frozen => "frozen",
        pb::AgentState::Removed => "removed",
    }
}

/// Rows printed as left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  "));
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn json_line(v: &Value) {
    println!("{v}");
}

pub fn agents(agents: &[pb::Agent], as_json: bool) {
    if as_json {
        for a in agents {
            json_line(&json!({
                "id": a.id,
                "class": a.class,
                "state": state(a.state),
                "tier": tier(a.tier),
                "tier_since": (!a.tier_since.is_empty()).then_some(&a.tier_since),
                "cgroup_id": a.cgroup_id,
                "cgroup_path": a.cgroup_path,
                "approvals": a.approvals,
                "approvals_needed": a.approvals_needed,
            }));
        }
        return;
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.class.clone(),
                state(a.state).into(),
                tier_text(a.tier).into(),
                if a.tier_since.is_empty() {
                    "-".into()
                } else {
                    a.tier_since.clone()
                },
                if a.approvals_needed == 0 {
                    "-".into()
                } else {
                    format!("{}/{}", a.approvals, a.approvals_needed)
                },
                a.cgroup_path.clone(),
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "CLASS",
            "STATE",
            "TIER",
            "SINCE",
            "APPROVALS",
            "CGROUP",
        ],
        &rows,
    );
}

fn actions_json(actions: &[pb::Action]) -> Value {
    actions
        .iter()
        .map(|a| {
            json!({
                "action": a.action, "ok": a.ok, "detail": a.detail,
                "undo": (!a.undo.is_empty()).then_some(&a.undo),
            })
        })
        .collect()
}

fn actions_text(actions: &[pb::Action]) -> String {
    if actions.is_empty() {
        return "none".into();
    }
    actions
        .iter()
        .map(|a| format!("{}={}", a.action, if a.ok { "ok" } else { "FAILED" }))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn watch_event(event: &Event, as_json: bool) {
    match event {
        Event::Finding(f) => {
            if as_json {
                let features: Vec<Value> = f
                    .top_features
                    .iter()
                    .map(|c| json!({"feature": c.feature, "value": c.value, "weight": c.weight}))
                    .collect();
                json_line(&json!({"finding": {
                    "ts_ns": f.ts_ns, "agent_id": f.agent_id, "class": f.class,
                    "cgroup_id": f.cgroup_id, "source": f.source,
                    "rule": (!f.rule.is_empty()).then_some(&f.rule),
                    "rule_file": (!f.rule_file.is_empty()).then_some(&f.rule_file),
                    "score": f.score, "tier": tier(f.tier), "summary": f.summary,
                    "top_features": features, "lossy": f.lossy,
                }}));
            } else {
                let source = if f.rule.is_empty() {
                    f.source.clone()
                } else {
                    format!("rule:{}", f.rule)
                };
                println!(
                    "finding   {} [{}] {source} tier={} score={:.2}: {}",
                    f.agent_id,
                    f.class,
                    tier_text(f.tier),
                    f.score,
                    f.summary
                );
            }
        }
        Event::Decision(d) => {
            if as_json {
                json_line(&json!({"decision": {
                    "ts_ns": d.ts_ns, "agent_id": d.agent_id, "class": d.class,
                    "from": tier(d.from), "to": tier(d.to), "reason": d.reason,
                    "findings": d.findings, "actions": actions_json(&d.actions),
                }}));
            } else {
                println!(
                    "decision  {} [{}] {} -> {} ({}); actions: {}",
                    d.agent_id,
                    d.class,
                    tier_text(d.from),
                    tier_text(d.to),
                    d.reason,
                    actions_text(&d.actions)
                );
            }
        }
        Event::Release(r) => {
            if as_json {
                json_line(&json!({"release": {
                    "agent_id": r.agent_id, "class": r.class, "approvers": r.approvers,
                    "actions": actions_json(&r.actions),
                }}));
            } else {
                println!(
                    "release   {} [{}] by {}; actions: {}",
                    r.agent_id,
                    r.class,
                    r.approvers.join(" and "),
                    actions_text(&r.actions)
                );
            }
        }
        Event::Lagged(n) => {
            if as_json {
                json_line(&json!({ "lagged": n }));
            } else {
                println!("lagged    {n} item(s) skipped: this watcher read too slowly");
            }
        }
    }
}

pub fn events(events: &[pb::Event], as_json: bool) {
    if as_json {
        for e in events {
            println!("{}", e.json);
        }
        return;
    }
    // The header fields get columns; the rest of each event's JSON is its detail.
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let detail = match serde_json::from_str::<Value>(&e.json) {
                Ok(Value::Object(mut m)) => {
                    for k in [
                        "ts_ns",
                        "kind_id",
                        "cgroup_id",
                        "pid",
                        "tid",
                        "agent",
                        "kind",
                    ] {
                        m.remove(k);
                    }
                    Value::Object(m).to_string()
                }
                _ => e.json.clone(),
            };
            vec![
                e.ts_ns.to_string(),
                e.kind.clone(),
                e.pid.to_string(),
                detail,
            ]
        })
        .collect();
    table(&["TS_NS", "KIND", "PID", "DETAIL"], &rows);
}

pub fn release(r: &pb::ReleaseResponse, as_json: bool) -> anyhow::Result<ExitCode> {
    let status = pb::ReleaseStatus::try_from(r.status).unwrap_or(pb::ReleaseStatus::Unspecified);
    if as_json {
        let name = match status {
            pb::ReleaseStatus::Unspecified => "unknown",
            pb::ReleaseStatus::NothingInForce => "nothing_in_force",
            pb::ReleaseStatus::ApprovalRecorded => "approval_recorded",
            pb::ReleaseStatus::Released => "released",
            pb::ReleaseStatus::Requested => "requested",
        };
        json_line(&json!({
            "agent_id": r.agent_id, "status": name, "tier": tier(r.tier),
            "approvals": r.approvals, "approvals_needed": r.approvals_needed,
            "approvers": r.approvers, "actions": actions_json(&r.actions),
        }));
    } else {
        match status {
            pb::ReleaseStatus::NothingInForce => {
                println!("{}: no response in force, nothing to release", r.agent_id);
            }
            pb::ReleaseStatus::ApprovalRecorded => println!(
                "{}: approval recorded ({} of {}: {}); a {} needs another, different approver",
                r.agent_id,
                r.approvals,
                r.approvals_needed,
                r.approvers.join(", "),
                tier_text(r.tier)
            ),
            pb::ReleaseStatus::Released => {
                println!(
                    "{}: released by {} ({} lifted)",
                    r.agent_id,
                    r.approvers.join(" and "),
                    tier_text(r.tier)
                );
                for a in &r.actions {
                    println!(
                        "  {}: {} {}",
                        a.action,
                        if a.ok { "ok" } else { "FAILED" },
                        a.detail
                    );
                }
            }
            pb::ReleaseStatus::Requested | pb::ReleaseStatus::Unspecified => println!(
                "{}: release approved by {} and requested, but the daemon has not carried it \
                 out yet; it stays requested",
                r.agent_id,
                r.approvers.join(" and ")
            ),
        }
    }
    let failed = r.actions.iter().any(|a| !a.ok) || status == pb::ReleaseStatus::Requested;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn whoami(me: &pb::WhoAmIResponse, as_json: bool) {
    if as_json {
        json_line(&json!({
            "principal": me.principal, "roles": me.roles, "identified_by": me.identified_by,
        }));
    } else {
        println!(
            "{} (roles: {}), identified by {}",
            me.principal,
            me.roles.join(", "),
            me.identified_by
        );
    }
}
