//! The response sinks: every decision, action and release goes to the audit log, and decisions
//! become SOC tickets through the webhook outbox.

use super::{
    actuator::{ActionOutcome, Completed, Target},
    audit::{AuditLog, Kind},
    engine::{Response, ResponseSink},
    release::Release,
    webhook::{ActionRecord, AgentRef, DeliveryHandle, ReleaseRecord, TicketContext, Webhook},
};

/// Decisions, actions and releases as signed, chained audit entries.
pub struct AuditSink(pub AuditLog);

impl ResponseSink for AuditSink {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn on_response(&mut self, r: &Response) -> anyhow::Result<()> {
        let t = &r.target;
        let rules: Vec<String> = r
            .findings
            .iter()
            .map(|f| match &f.source {
                crate::detect::Source::Rule { name, .. } => format!("rule:{name}"),
                other => format!("{other:?}").to_lowercase(),
            })
            .collect();
        let max_score = r.findings.iter().map(|f| f.score).fold(0.0, f64::max);
        self.0.append(
            Kind::Decision,
            Some(&t.agent_id),
            Some(&t.class),
            serde_json::json!({
                "cgroup_id": t.cgroup_id,
                "from": r.decision.from,
                "to": r.decision.to,
                "reason": r.decision.reason,
                "findings": r.findings.len(),
                "sources": rules,
                "max_score": max_score,
            }),
        )?;
        for a in &r.actions {
            let data = self.tokenised(&t.agent_id, serde_json::to_value(a)?)?;
            self.0
                .append(Kind::Action, Some(&t.agent_id), Some(&t.class), data)?;
        }
        Ok(())
    }

    fn on_release(
        &mut self,
        t: &Target,
        approvers: &[String],
        actions: &[ActionOutcome],
    ) -> anyhow::Result<()> {
        self.on_released(&Release {
            target: t.clone(),
            tier: None,
            approvers: approvers.to_vec(),
            reasons: Vec::new(),
            actions: actions.to_vec(),
        })
    }

    /// A deferred action's result (the snapshot's bundle) as a second `action` entry, after the
    /// one that recorded it `queued`.
    fn on_completed(&mut self, done: &Completed) -> anyhow::Result<()> {
        let t = &done.target;
        let mut data = serde_json::to_value(&done.outcome)?;
        if let (Some(ev), Some(map)) = (&done.evidence, data.as_object_mut()) {
            map.insert("evidence".into(), serde_json::to_value(ev)?);
        }
        let data = self.tokenised(&t.agent_id, data)?;
        self.0
            .append(Kind::Action, Some(&t.agent_id), Some(&t.class), data)?;
        Ok(())
    }

    /// The approvers' reasons are not logged here: they name the approver (`<name>: ...`);
    /// each approval's reason is in its own `approval` entry, the name tokenised.
    fn on_released(&mut self, r: &Release) -> anyhow::Result<()> {
        let t = &r.target;
        // Approvers are people: their names are tokenised like agent ids.
        let approvers: Vec<String> = r.approvers.iter().map(|a| self.0.token(a)).collect();
        let data = self.tokenised(
            &t.agent_id,
            serde_json::json!({ "approvers": approvers, "tier": r.tier, "actions": r.actions }),
        )?;
        self.0
            .append(Kind::Release, Some(&t.agent_id), Some(&t.class), data)?;
        Ok(())
    }
}

impl AuditSink {
    /// The agent id inside free text (action details, undo commands) replaced by its token, so
    /// the log names it the same way everywhere.
    fn tokenised(&self, agent: &str, data: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let text = serde_json::to_string(&data)?;
        let token = self.0.token(agent);
        Ok(serde_json::from_str(&text.replace(agent, &token))?)
    }
}

/// Decisions as SOC tickets: durable in the outbox before this returns, delivered by the
/// webhook's worker thread.
pub struct WebhookSink {
    pub webhook: Webhook,
    /// Keeps the delivery thread running for the sink's life.
    pub _delivery: DeliveryHandle,
    /// On Kubernetes: the agent's pod and the node, for the ticket.
    pub pods: Option<crate::k8s::ticket::PodContext>,
}

impl ResponseSink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn on_response(&mut self, r: &Response) -> anyhow::Result<()> {
        // A ticket needs a tier and the findings behind it (a cooldown lowering has none).
        let (Some(tier), false) = (r.decision.to, r.findings.is_empty()) else {
            return Ok(());
        };
        let actions: Vec<ActionRecord> = r.actions.iter().map(action_record).collect();
        let (pod, node) = self
            .pods
            .as_ref()
            .map(|p| p.of(&r.target))
            .unwrap_or_default();
        let context = TicketContext {
            rollback: vec![format!(
                "agent-monitor release {} --approver <you>   # a containment needs a second, different approver",
                r.target.agent_id
            )],
            pod,
            node,
            ..TicketContext::default()
        };
        self.webhook.submit(&r.findings, tier, &actions, context)?;
        Ok(())
    }

    fn on_release(
        &mut self,
        target: &Target,
        approvers: &[String],
        actions: &[ActionOutcome],
    ) -> anyhow::Result<()> {
        self.on_released(&Release {
            target: target.clone(),
            tier: None,
            approvers: approvers.to_vec(),
            reasons: Vec::new(),
            actions: actions.to_vec(),
        })
    }

    /// A deferred action finished: the agent's open ticket gets an `updated` version whose
    /// action record is the real outcome and whose `evidence` names the bundle.
    fn on_completed(&mut self, done: &Completed) -> anyhow::Result<()> {
        let t = self.webhook.complete(
            &done.target.agent_id,
            action_record(&done.outcome),
            done.evidence.clone(),
        )?;
        match t {
            Some(t) => log::info!(
                "webhook: {} of {} is version {} of ticket {}",
                done.outcome.action,
                done.target.agent_id,
                t.version,
                t.ticket_id
            ),
            None => log::warn!(
                "webhook: {} of {} finished with no open ticket to update",
                done.outcome.action,
                done.target.agent_id
            ),
        }
        Ok(())
    }

    /// The release updates the agent's ticket (the one that reported the containment): a
    /// `released` version with the approvers and what each undo did.
    fn on_released(&mut self, r: &Release) -> anyhow::Result<()> {
        let record = ReleaseRecord {
            at: super::state::now_rfc3339(),
            tier: r.tier,
            approvers: r.approvers.clone(),
            reasons: r.reasons.clone(),
            actions: r.actions.iter().map(action_record).collect(),
        };
        let agent = AgentRef {
            id: r.target.agent_id.to_string(),
            class: r.target.class.to_string(),
        };
        let t = self.webhook.release(agent, r.tier, record)?;
        log::info!(
            "webhook: release of {} is version {} of ticket {}",
            r.target.agent_id,
            t.version,
            t.ticket_id
        );
        Ok(())
    }
}

fn action_record(a: &ActionOutcome) -> ActionRecord {
    ActionRecord {
        action: a.action.clone(),
        ok: a.ok,
        detail: a.detail.clone(),
        undo: a.undo.clone(),
    }
}
