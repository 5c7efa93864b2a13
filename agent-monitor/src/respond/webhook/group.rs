//! Grouping: an agent's findings update its open ticket instead of opening new ones.
//!
//! A ticket stays open while findings for its agent keep arriving within `window` of the
//! previous one. Findings at the open tier or lower make an `updated` version; a higher tier
//! makes an `escalated` version of the same ticket. Once the window has passed with no
//! finding, the next finding opens a new ticket. The latest ticket of an agent whose tier acts
//! (rate-limit or containment) is kept past the window until it is released, so that the
//! release updates the very ticket that reported the containment, hours later too.
//!
//! With a store directory every ticket's latest version is also kept on disk (one file per
//! agent, written atomically), so a restarted daemon continues the same tickets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::WebhookError;
use super::ticket::{ActionRecord, Ticket, TicketContext, new_ticket_id};
use crate::detect::{Finding, Tier};

struct Open {
    ticket: Ticket,
    last_seen: SystemTime,
}

/// What the store keeps per agent.
#[derive(Serialize, Deserialize)]
struct Stored {
    agent_id: String,
    last_seen_unix_ms: u64,
    ticket: Ticket,
}

/// Whether `now` is within `window` of `last_seen`.
fn within(window: Duration, last_seen: SystemTime, now: SystemTime) -> bool {
    now.duration_since(last_seen)
        .map_or(true, |idle| idle <= window)
}

/// The open ticket of each agent.
pub struct Grouper {
    window: Duration,
    open: HashMap<String, Open>,
    store: Option<PathBuf>,
}

impl Grouper {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
            store: None,
        }
    }

    /// A grouper that keeps its tickets in `dir` (created 0700) and starts from what is there.
    /// A file that cannot be read is reported and skipped (that agent's next finding opens a
    /// new ticket).
    pub fn with_store(window: Duration, dir: &Path) -> Result<Self, WebhookError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| WebhookError::io(dir, "create directory", e))?;
        let mut open = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| WebhookError::io(dir, "list", e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let stored = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Stored>(&b).map_err(|e| e.to_string()));
            match stored {
                Ok(s) => {
                    let last_seen = UNIX_EPOCH + Duration::from_millis(s.last_seen_unix_ms);
                    open.insert(
                        s.agent_id,
                        Open {
                            ticket: s.ticket,
                            last_seen,
                        },
                    );
                }
                Err(e) => log::error!("webhook: ticket {} not restored: {e}", path.display()),
            }
        }
        let mut grouper = Self {
            window,
            open,
            store: Some(dir.to_owned()),
        };
        grouper.expire(SystemTime::now());
        Ok(grouper)
    }

    /// The ticket version these findings make (all of agent `agent_id`, non-empty).
    pub fn add(
        &mut self,
        agent_id: &str,
        findings: &[Finding],
        tier: Tier,
        actions: &[ActionRecord],
        ctx: &TicketContext,
        now: SystemTime,
    ) -> Ticket {
        self.expire(now);
        let window = self.window;
        if let Some(open) = self.open.get_mut(agent_id)
            && within(window, open.last_seen, now)
        {
            open.ticket.update(findings, tier, actions, ctx, now);
            open.last_seen = now;
            let ticket = open.ticket.clone();
            self.persist(agent_id);
            return ticket;
        }
        let ticket = Ticket::open(new_ticket_id(now), findings, tier, actions, ctx, now);
        self.open.insert(
            agent_id.to_owned(),
            Open {
                ticket: ticket.clone(),
                last_seen: now,
            },
        );
        self.persist(agent_id);
        ticket
    }

    /// The version a finished deferred action makes of the agent's open ticket; None when the
    /// agent has none. The finding window is not extended: an action is not a finding.
    pub fn complete(
        &mut self,
        agent_id: &str,
        action: super::ticket::ActionRecord,
        evidence: Option<super::ticket::Evidence>,
        now: SystemTime,
    ) -> Option<Ticket> {
        let open = self.open.get_mut(agent_id)?;
        open.ticket.complete(action, evidence, now);
        let ticket = open.ticket.clone();
        self.persist(agent_id);
        Some(ticket)
    }

    /// Closes the agent's ticket as released and returns that last version; None when the
    /// agent has no ticket.
    pub fn release(
        &mut self,
        agent_id: &str,
        release: super::ticket::ReleaseRecord,
        now: SystemTime,
    ) -> Option<Ticket> {
        let mut open = self.open.remove(agent_id)?;
        open.ticket.release(release, now);
        self.forget(agent_id);
        Some(open.ticket)
    }

    /// Undo the last [`Grouper::add`] or [`Grouper::release`] for `agent_id` when its version
    /// could not be written, so that the next submit does not skip a version number. `before`
    /// is what was replaced.
    pub fn restore(&mut self, agent_id: &str, before: Option<Ticket>, last_seen: SystemTime) {
        match before {
            Some(ticket) => {
                self.open
                    .insert(agent_id.to_owned(), Open { ticket, last_seen });
                self.persist(agent_id);
            }
            None => {
                self.open.remove(agent_id);
                self.forget(agent_id);
            }
        }
    }

    /// The open ticket of an agent and when it last saw a finding.
    pub fn snapshot(&self, agent_id: &str) -> Option<(Ticket, SystemTime)> {
        self.open
            .get(agent_id)
            .map(|o| (o.ticket.clone(), o.last_seen))
    }

    /// Close the tickets whose window has passed, except those whose tier acts: they wait for
    /// their release.
    pub fn expire(&mut self, now: SystemTime) {
        let expired: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| {
                o.ticket.tier < Tier::RateLimit && !within(self.window, o.last_seen, now)
            })
            .map(|(a, _)| a.clone())
            .collect();
        for agent in expired {
            self.open.remove(&agent);
            self.forget(&agent);
        }
    }

    /// How many tickets are kept: open for grouping, or waiting for their release.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The store file of an agent: its id made safe for a file name, and a hash of the id so
    /// that two ids that read the same once made safe do not share a file.
    fn path(&self, agent_id: &str) -> Option<PathBuf> {
        use sha2::Digest as _;
        let dir = self.store.as_ref()?;
        let safe: String = agent_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let hash = sha2::Sha256::digest(agent_id.as_bytes());
        Some(dir.join(format!("{safe}-{}.json", hex::encode(&hash[..4]))))
    }

    fn persist(&self, agent_id: &str) {
        let (Some(path), Some(open)) = (self.path(agent_id), self.open.get(agent_id)) else {
            return;
        };
        let stored = Stored {
            agent_id: agent_id.to_owned(),
            last_seen_unix_ms: open
                .last_seen
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ticket: open.ticket.clone(),
        };
        let written = serde_json::to_vec(&stored)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let (dir, name) = (path.parent(), path.file_name().and_then(|n| n.to_str()));
                match (dir, name) {
                    (Some(dir), Some(name)) => super::outbox::write_atomic(dir, name, &bytes)
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    _ => Err("no file name".to_owned()),
                }
            });
        if let Err(e) = written {
            log::error!(
                "webhook: ticket of {agent_id} not stored ({e}): a restart opens a new ticket"
            );
        }
    }

    fn forget(&self, agent_id: &str) {
        if let Some(path) = self.path(agent_id)
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::error!("webhook: {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::detect::Source;
    use crate::respond::webhook::ticket::TicketEvent;

    pub(crate) fn finding(agent: &str, rule: &str, ts_ns: u64) -> Finding {
        Finding {
            ts_ns,
            agent_id: Arc::from(agent),
            class: Arc::from("fraud"),
            cgroup_id: 7,
            source: Source::Rule {
                name: rule.to_owned(),
                file: "rules/common.yaml".to_owned(),
            },
            score: 1.0,
            tier: Some(Tier::Log),
            summary: format!("{rule} fired"),
            top_features: Vec::new(),
            lossy: false,
        }
    }

    #[test]
    fn webhook_group_updates_then_escalates_then_expires() {
        let mut g = Grouper::new(Duration::from_secs(60));
        let ctx = TicketContext::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = g.add("a", &[finding("a", "r1", 1)], Tier::Log, &[], &ctx, t0);
        assert_eq!((a.version, a.event), (1, TicketEvent::Created));
        let b = g.add(
            "a",
            &[finding("a", "r2", 2)],
            Tier::Log,
            &[],
            &ctx,
            t0 + Duration::from_secs(30),
        );
        assert_eq!(b.ticket_id, a.ticket_id);
        assert_eq!(
            (b.version, b.event, b.escalated),
            (2, TicketEvent::Updated, false)
        );
        assert_eq!(b.rule_matches.len(), 2);
        assert_eq!(b.findings.count, 2);
        let c = g.add(
            "a",
            &[finding("a", "r2", 3)],
            Tier::Contain,
            &[],
            &ctx,
            t0 + Duration::from_secs(80),
        );
        assert_eq!(c.ticket_id, a.ticket_id);
        assert_eq!(
            (c.version, c.event, c.escalated),
            (3, TicketEvent::Escalated, true)
        );
        assert_eq!(c.previous_tier, Some(Tier::Log));
        assert_eq!(c.idempotency_key, format!("{}:v3", a.ticket_id));
        // A lower tier while open: an update, the tier stays.
        let d = g.add(
            "a",
            &[finding("a", "r1", 4)],
            Tier::Log,
            &[],
            &ctx,
            t0 + Duration::from_secs(90),
        );
        assert_eq!((d.tier, d.escalated, d.version), (Tier::Contain, false, 4));
        // Past the window since the last finding: a new ticket.
        let e = g.add(
            "a",
            &[finding("a", "r1", 5)],
            Tier::Log,
            &[],
            &ctx,
            t0 + Duration::from_secs(200),
        );
        assert_ne!(e.ticket_id, a.ticket_id);
        assert_eq!(e.version, 1);
    }
}
