//! The SOC ticket, schema `agent-monitor.ticket/v2`: one JSON object per ticket version,
//! documented field by field in `docs/SOC-TICKETS.md`.
//!
//! Fields are only ever added to v2 (receivers must ignore unknown fields); a rename, a removal
//! or a change of meaning makes v3. v2 added the release of a ticket (`event: released`,
//! `status`, `release`) to v1.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::detect::{Contribution, Finding, Source, Tier};

/// The value of `schema` in every ticket.
pub const SCHEMA: &str = "agent-monitor.ticket/v2";

/// At most this many features, rule matches, recent summaries and actions are kept in a ticket,
/// so that an agent firing for hours keeps a bounded ticket; the counts stay exact.
pub const MAX_FEATURES: usize = 8;
pub const MAX_RULES: usize = 64;
pub const MAX_RECENT: usize = 10;
pub const MAX_ACTIONS: usize = 64;

/// One action a responder took (or tried) for this ticket. Actuators fill these in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// What was done, e.g. `rate_limit`, `revoke_tokens`, `deny_all`, `snapshot`.
    pub action: String,
    /// Whether it took effect.
    pub ok: bool,
    /// What happened, in one line (the error when it failed).
    pub detail: String,
    /// The exact command that undoes it, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
}

/// A Kubernetes pod, when the identity source knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The evidence bundle captured for this ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `sha256:<hex>` of the bundle file.
    pub digest: String,
    /// Where the bundle is, on the node that took it.
    pub path: String,
}

/// What the daemon knows beyond the findings: filled when known, absent otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TicketContext {
    pub pod: Option<PodRef>,
    pub node: Option<String>,
    pub evidence: Option<Evidence>,
    /// Rollback commands beyond the actions' own `undo` commands.
    pub rollback: Vec<String>,
}

/// The agent a ticket is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub id: String,
    pub class: String,
}

/// Why this version of the ticket was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketEvent {
    /// The first version.
    Created,
    /// More findings at the same or a lower tier.
    Updated,
    /// More findings that raised the tier.
    Escalated,
    /// The responses were lifted (`agent-monitor release`); the ticket is closed.
    Released,
}

/// Whether the responses of a ticket are still in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// The actions taken are in force (or nothing was done yet).
    #[default]
    Open,
    /// Released: the actions were undone; later findings open a new ticket.
    Released,
}

/// The release of a ticket: who approved it and what undoing the actions did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// When the daemon carried the release out (RFC 3339, UTC).
    pub at: String,
    /// The tier lifted, when the daemon knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Everyone who approved (a containment needs two distinct approvers).
    pub approvers: Vec<String>,
    /// The reasons they gave, as `<approver>: <reason>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Each undo, with its result, highest tier first.
    pub actions: Vec<ActionRecord>,
}

/// A change of tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    pub tier: Tier,
    pub at: String,
}

/// Anomaly scores, in [0, 1].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// The highest score of any grouped finding (rules report 1.0).
    pub max: f64,
    /// The score of the most recent finding.
    pub last: f64,
    /// The highest window-model score, if the window model reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<f64>,
    /// The highest sequence-model score, if the sequence model reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<f64>,
}

/// A rule that fired at least once in this ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    pub name: String,
    pub file: String,
    /// The summary of its latest finding.
    pub summary: String,
    pub count: u64,
}

/// The findings grouped into this ticket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingsSummary {
    pub count: u64,
    /// Wall-clock time the first and latest findings were submitted (RFC 3339, UTC).
    pub first_seen: String,
    pub last_seen: String,
    /// The findings' own times (boot-time nanoseconds live, trace time in replay).
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// Findings per detector: `rule`, `window`, `sequence`, `unidentified`.
    pub by_source: BTreeMap<String, u64>,
    /// Some finding came from a window that lost events in the kernel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lossy: bool,
    /// The latest findings' summaries, newest last (at most 10).
    pub recent: Vec<String>,
}

/// One version of a SOC ticket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub schema: String,
    pub ticket_id: String,
    /// 1 for the first version, +1 for each update.
    pub version: u32,
    /// `<ticket_id>:v<version>`: the same on every retry of this version.
    pub idempotency_key: String,
    pub event: TicketEvent,
    /// `open` until the ticket is released.
    #[serde(default)]
    pub status: TicketStatus,
    /// This version raised the tier (`previous_tier` says from what).
    pub escalated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_tier: Option<Tier>,
    pub created_at: String,
    pub updated_at: String,
    pub agent: AgentRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub tier: Tier,
    pub tier_history: Vec<TierChange>,
    pub scores: Scores,
    pub top_features: Vec<Contribution>,
    pub rule_matches: Vec<RuleMatch>,
    pub actions: Vec<ActionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    pub rollback: Vec<String>,
    /// On the released version: approvers and what the undos did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseRecord>,
    pub findings: FindingsSummary,
    pub summary: String,
    /// The agent-monitor version that wrote the ticket.
    pub monitor_version: String,
}

/// RFC 3339 UTC with seconds, e.g. `2026-11-22T01:24:08Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A new ticket id: `am-<UTC time>-<8 random hex digits>`, e.g. `am-20261122T012408Z-3f9a1c2b`.
pub fn new_ticket_id(now: SystemTime) -> String {
    let stamp: String = rfc3339(now)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("am-{stamp}-{:08x}", fastrand::u32(..))
}

fn source_key(source: &Source) -> &'static str {
    match source {
        Source::Rule { .. } => "rule",
        Source::Window => "window",
        Source::Sequence => "sequence",
        Source::Unidentified => "unidentified",
    }
}

impl Ticket {
    /// The first version of a ticket for `findings` (non-empty, all of one agent).
    pub(crate) fn open(
        ticket_id: String,
        findings: &[Finding],
        tier: Tier,
        actions: &[ActionRecord],
        ctx: &TicketContext,
        now: SystemTime,
    ) -> Self {
        let at = rfc3339(now);
        let (agent_id, class) = findings
            .first()
            .map(|f| (f.agent_id.to_string(), f.class.to_string()))
            .unwrap_or_default();
        let first_ts = findings.iter().map(|f| f.ts_ns).min().unwrap_or(0);
        let mut ticket = Self {
            schema: SCHEMA.to_owned(),
            idempotency_key: idempotency_key(&ticket_id, 1),
            ticket_id,
            version: 1,
            event: TicketEvent::Created,
            status: TicketStatus::Open,
            escalated: false,
            previous_tier: None,
            created_at: at.clone(),
            updated_at: at.clone(),
            agent: AgentRef {
                id: agent_id,
                class,
            },
            pod: None,
            node: None,
            tier,
            tier_history: vec![TierChange {
                tier,
                at: at.clone(),
            }],
            scores: Scores::default(),
            top_features: Vec::new(),
            rule_matches: Vec::new(),
            actions: Vec::new(),
            evidence: None,
            rollback: Vec::new(),
            release: None,
            findings: FindingsSummary {
                first_seen: at.clone(),
                last_seen: at,
                first_ts_ns: first_ts,
                last_ts_ns: first_ts,
                ..FindingsSummary::default()
            },
            summary: String::new(),
            monitor_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        ticket.absorb(findings, actions, ctx, now);
        ticket
    }

    /// The next version: `findings` added, the tier raised if `tier` is higher.
    /// Returns whether the tier was raised.
    pub(crate) fn update(
        &mut self,
        findings: &[Finding],
        tier: Tier,
        actions: &[ActionRecord],
        ctx: &TicketContext,
        now: SystemTime,
    ) -> bool {
        let at = rfc3339(now);
        self.version = self.version.saturating_add(1);
        self.idempotency_key = idempotency_key(&self.ticket_id, self.version);
        self.updated_at.clone_from(&at);
        let escalated = tier > self.tier;
        if escalated {
            self.previous_tier = Some(self.tier);
            self.tier = tier;
            self.tier_history.push(TierChange { tier, at });
            self.event = TicketEvent::Escalated;
        } else {
            self.previous_tier = None;
            self.event = TicketEvent::Updated;
        }
        self.escalated = escalated;
        self.absorb(findings, actions, ctx, now);
        escalated
    }

    /// The next version after a deferred action finished: its record replaces the latest
    /// record of the same action (its `queued` outcome), and `evidence` is set when given.
    pub(crate) fn complete(
        &mut self,
        action: ActionRecord,
        evidence: Option<Evidence>,
        now: SystemTime,
    ) {
        self.version = self.version.saturating_add(1);
        self.idempotency_key = idempotency_key(&self.ticket_id, self.version);
        self.updated_at = rfc3339(now);
        self.event = TicketEvent::Updated;
        self.escalated = false;
        self.previous_tier = None;
        // The queued outcome's undo is superseded by the finished one's.
        if let Some(old) = self.actions.iter().rposition(|a| a.action == action.action) {
            let old = self.actions.remove(old);
            if let Some(undo) = old.undo {
                self.rollback.retain(|c| *c != undo);
            }
        }
        if action.ok
            && let Some(undo) = &action.undo
            && !self.rollback.contains(undo)
        {
            self.rollback.push(undo.clone());
        }
        if self.actions.len() < MAX_ACTIONS {
            self.actions.push(action);
        }
        if evidence.is_some() {
            self.evidence = evidence;
        }
        self.summary = self.compose_summary();
    }

    /// The released version: the responses were lifted. The release commands leave `rollback`
    /// (they were carried out); what cannot be undone (re-issuing revoked credentials) stays.
    pub(crate) fn release(&mut self, release: ReleaseRecord, now: SystemTime) {
        self.version = self.version.saturating_add(1);
        self.idempotency_key = idempotency_key(&self.ticket_id, self.version);
        self.updated_at = rfc3339(now);
        self.event = TicketEvent::Released;
        self.status = TicketStatus::Released;
        self.escalated = false;
        self.previous_tier = None;
        self.rollback
            .retain(|cmd| !cmd.starts_with("agent-monitor release "));
        self.release = Some(release);
        self.summary = self.compose_summary();
    }

    /// A ticket for a release of an agent no ticket was open for (the webhook was configured
    /// after the containment, or its ticket store was lost): one released version.
    pub(crate) fn for_release(
        ticket_id: String,
        agent: AgentRef,
        tier: Tier,
        release: ReleaseRecord,
        now: SystemTime,
    ) -> Self {
        let at = rfc3339(now);
        let mut ticket = Self {
            schema: SCHEMA.to_owned(),
            idempotency_key: idempotency_key(&ticket_id, 1),
            ticket_id,
            version: 1,
            event: TicketEvent::Released,
            status: TicketStatus::Released,
            escalated: false,
            previous_tier: None,
            created_at: at.clone(),
            updated_at: at.clone(),
            agent,
            pod: None,
            node: None,
            tier,
            tier_history: vec![TierChange {
                tier,
                at: at.clone(),
            }],
            scores: Scores::default(),
            top_features: Vec::new(),
            rule_matches: Vec::new(),
            actions: Vec::new(),
            evidence: None,
            rollback: Vec::new(),
            release: Some(release),
            findings: FindingsSummary {
                first_seen: at.clone(),
                last_seen: at,
                ..FindingsSummary::default()
            },
            summary: String::new(),
            monitor_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        ticket.summary = ticket.compose_summary();
        ticket
    }

    fn absorb(
        &mut self,
        findings: &[Finding],
        actions: &[ActionRecord],
        ctx: &TicketContext,
        now: SystemTime,
    ) {
        let at = rfc3339(now);
        let fs = &mut self.findings;
        fs.count = fs.count.saturating_add(findings.len() as u64);
        fs.last_seen = at;
        for f in findings {
            fs.first_ts_ns = fs.first_ts_ns.min(f.ts_ns);
            fs.last_ts_ns = fs.last_ts_ns.max(f.ts_ns);
            *fs.by_source
                .entry(source_key(&f.source).to_owned())
                .or_default() += 1;
            fs.lossy |= f.lossy;
            fs.recent.push(f.summary.clone());
        }
        let excess = fs.recent.len().saturating_sub(MAX_RECENT);
        fs.recent.drain(..excess);

        for f in findings {
            let s = &mut self.scores;
            s.max = s.max.max(f.score);
            s.last = f.score;
            match f.source {
                Source::Window => s.window = Some(s.window.map_or(f.score, |w| w.max(f.score))),
                Source::Sequence => {
                    s.sequence = Some(s.sequence.map_or(f.score, |w| w.max(f.score)));
                }
                Source::Rule { .. } | Source::Unidentified => {}
            }
            if let Source::Rule { name, file } = &f.source {
                self.add_rule(name, file, &f.summary);
            }
            for c in &f.top_features {
                match self
                    .top_features
                    .iter_mut()
                    .find(|t| t.feature == c.feature)
                {
                    Some(t) if c.weight > t.weight => *t = c.clone(),
                    Some(_) => {}
                    None => self.top_features.push(c.clone()),
                }
            }
        }
        self.top_features
            .sort_by(|a, b| b.weight.total_cmp(&a.weight));
        self.top_features.truncate(MAX_FEATURES);

        for a in actions {
            if self.actions.len() < MAX_ACTIONS {
                self.actions.push(a.clone());
            }
            if a.ok
                && let Some(undo) = &a.undo
                && !self.rollback.contains(undo)
            {
                self.rollback.push(undo.clone());
            }
        }
        for cmd in &ctx.rollback {
            if !self.rollback.contains(cmd) {
                self.rollback.push(cmd.clone());
            }
        }
        if ctx.pod.is_some() {
            self.pod.clone_from(&ctx.pod);
        }
        if ctx.node.is_some() {
            self.node.clone_from(&ctx.node);
        }
        if ctx.evidence.is_some() {
            self.evidence.clone_from(&ctx.evidence);
        }
        self.summary = self.compose_summary();
    }

    fn add_rule(&mut self, name: &str, file: &str, summary: &str) {
        if let Some(r) = self.rule_matches.iter_mut().find(|r| r.name == name) {
            r.count = r.count.saturating_add(1);
            summary.clone_into(&mut r.summary);
        } else if self.rule_matches.len() < MAX_RULES {
            self.rule_matches.push(RuleMatch {
                name: name.to_owned(),
                file: file.to_owned(),
                summary: summary.to_owned(),
                count: 1,
            });
        }
    }

    /// One paragraph an analyst can act on: who, where, how bad, why, what was done, how to undo.
    fn compose_summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!("Agent {} (class {})", self.agent.id, self.agent.class);
        if let Some(pod) = &self.pod {
            let _ = write!(s, ", pod {}/{}", pod.namespace, pod.name);
        }
        if let Some(node) = &self.node {
            let _ = write!(s, " on node {node}");
        }
        let tier = tier_name(self.tier);
        let _ = write!(
            s,
            ": tier {tier} after {} finding{}",
            self.findings.count,
            if self.findings.count == 1 { "" } else { "s" }
        );
        if let Some(prev) = self.previous_tier {
            let _ = write!(s, " (escalated from {})", tier_name(prev));
        }
        s.push('.');
        if !self.rule_matches.is_empty() {
            let names: Vec<&str> = self.rule_matches.iter().map(|r| r.name.as_str()).collect();
            let _ = write!(s, " Rules: {}.", names.join(", "));
        }
        if let Some(w) = self.scores.window {
            let _ = write!(s, " Window model score {w:.2}.");
        }
        if let Some(q) = self.scores.sequence {
            let _ = write!(s, " Sequence model score {q:.2}.");
        }
        if !self.top_features.is_empty() {
            let feats: Vec<&str> = self
                .top_features
                .iter()
                .take(3)
                .map(|c| c.feature.as_str())
                .collect();
            let _ = write!(s, " Top features: {}.", feats.join(", "));
        }
        if let Some(last) = self.findings.recent.last() {
            let _ = write!(s, " Latest: {last}.");
        }
        if self.findings.lossy {
            s.push_str(" Some windows lost events: the picture may be incomplete.");
        }
        if self.actions.is_empty() {
            s.push_str(" No action taken.");
        } else {
            let acts: Vec<String> = self
                .actions
                .iter()
                .map(|a| format!("{} {}", a.action, if a.ok { "ok" } else { "FAILED" }))
                .collect();
            let _ = write!(s, " Actions: {}.", acts.join(", "));
        }
        if self.actions.iter().any(|a| !a.ok) {
            s.push_str(" A failed action needs a manual check.");
        }
        if let Some(ev) = &self.evidence {
            let _ = write!(s, " Evidence: {} ({}).", ev.path, ev.digest);
        }
        if let Some(r) = &self.release {
            let undone: Vec<String> = r
                .actions
                .iter()
                .map(|a| format!("{} {}", a.action, if a.ok { "ok" } else { "FAILED" }))
                .collect();
            let _ = write!(
                s,
                " Released at {} with the approval of {}; undone: {}.",
                r.at,
                r.approvers.join(" and "),
                if undone.is_empty() {
                    "nothing".to_owned()
                } else {
                    undone.join(", ")
                }
            );
            if r.actions.iter().any(|a| !a.ok) {
                s.push_str(" A failed undo needs a manual check.");
            }
        }
        if !self.rollback.is_empty() {
            let _ = write!(s, " To roll back: {}.", self.rollback.join("; "));
        }
        s
    }
}

/// `log`, `rate_limit` or `contain`, as in the JSON.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Log => "log",
        Tier::RateLimit => "rate_limit",
        Tier::Contain => "contain",
    }
}

/// The idempotency key of one ticket version.
pub fn idempotency_key(ticket_id: &str, version: u32) -> String {
    format!("{ticket_id}:v{version}")
}
