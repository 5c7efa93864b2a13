//! Grouping: an agent's findings update its open ticket instead of opening new ones.
//!
//! A ticket stays open while findings for its agent keep arriving within `window` of the
//! previous one. Findings at the open tier or lower make an `updated` version; a higher tier
//! makes an `escalated` version of the same ticket. Once the window has passed with no
//! finding, the next finding opens a new ticket.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::ticket::{ActionRecord, Ticket, TicketContext, new_ticket_id};
use crate::detect::{Finding, Tier};

struct Open {
    ticket: Ticket,
    last_seen: SystemTime,
}

/// The open ticket of each agent.
pub struct Grouper {
    window: Duration,
    open: HashMap<String, Open>,
}

impl Grouper {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
        }
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
        if let Some(open) = self.open.get_mut(agent_id) {
            open.ticket.update(findings, tier, actions, ctx, now);
            open.last_seen = now;
            return open.ticket.clone();
        }
        let ticket = Ticket::open(new_ticket_id(now), findings, tier, actions, ctx, now);
        self.open.insert(
            agent_id.to_owned(),
            Open {
                ticket: ticket.clone(),
                last_seen: now,
            },
        );
        ticket
    }

    /// Undo the last [`Grouper::add`] for `agent_id` when its version could not be written, so
    /// that the next submit does not skip a version number. `before` is what `add` replaced.
    pub fn restore(&mut self, agent_id: &str, before: Option<Ticket>, last_seen: SystemTime) {
        match before {
            Some(ticket) => {
                self.open
                    .insert(agent_id.to_owned(), Open { ticket, last_seen });
            }
            None => {
                self.open.remove(agent_id);
            }
        }
    }

    /// The open ticket of an agent and when it last saw a finding.
    pub fn snapshot(&self, agent_id: &str) -> Option<(Ticket, SystemTime)> {
        self.open
            .get(agent_id)
            .map(|o| (o.ticket.clone(), o.last_seen))
    }

    /// Close the tickets whose window has passed.
    pub fn expire(&mut self, now: SystemTime) {
        let window = self.window;
        self.open.retain(|_, o| {
            now.duration_since(o.last_seen)
                .map_or(true, |idle| idle <= window)
        });
    }

    /// How many tickets are open.
    pub fn open_count(&self) -> usize {
        self.open.len()
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
