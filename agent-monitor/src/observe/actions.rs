//! `agent_monitor_actions_total{action, tier, result}`: every action the response stage ran,
//! counted as a response sink so that apply, undo on cooldown and release are all seen.

use super::{counters::tier_label, names};
use crate::respond::{
    actuator::{ActionOutcome, Completed, Target},
    engine::{Response, ResponseSink},
};

pub struct ActionMetrics;

fn count(actions: &[ActionOutcome], tier: &'static str) {
    for a in actions {
        metrics::counter!(
            names::ACTIONS,
            "action" => a.action.clone(),
            "tier" => tier,
            "result" => if a.ok { "ok" } else { "failed" }
        )
        .increment(1);
    }
}

impl ResponseSink for ActionMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn on_response(&mut self, r: &Response) -> anyhow::Result<()> {
        count(&r.actions, tier_label(r.decision.to));
        Ok(())
    }

    /// A deferred action's real result (its `queued` outcome was counted with its decision).
    fn on_completed(&mut self, done: &Completed) -> anyhow::Result<()> {
        count(std::slice::from_ref(&done.outcome), tier_label(done.tier));
        Ok(())
    }

    /// A release lifts every tier: its undo actions count under `none`.
    fn on_release(
        &mut self,
        _: &Target,
        _: &[String],
        actions: &[ActionOutcome],
    ) -> anyhow::Result<()> {
        count(actions, tier_label(None));
        Ok(())
    }
}
