//! Metric names and their help texts: the list docs/OBSERVABILITY.md documents. Other parts of
//! the daemon record through the `metrics` macros with these names.

use metrics::Unit;

pub const EVENTS: &str = "agent_monitor_events_total";
pub const KERNEL_DROPS: &str = "agent_monitor_kernel_drops_total";
pub const USERSPACE_DROPS: &str = "agent_monitor_userspace_drops_total";
pub const RINGBUF_FILL: &str = "agent_monitor_ringbuf_fill_ratio";
pub const ATTRIBUTION_EVENTS: &str = "agent_monitor_attribution_events_total";
pub const ATTRIBUTION_COVERAGE: &str = "agent_monitor_attribution_coverage";
pub const FINDINGS: &str = "agent_monitor_findings_total";
pub const ACTIONS: &str = "agent_monitor_actions_total";
pub const OUTBOX_DEPTH: &str = "agent_monitor_webhook_outbox_depth";
pub const EVENT_TO_DECISION: &str = "agent_monitor_event_to_decision_seconds";
pub const DECISION_TO_CONTAINMENT: &str = "agent_monitor_decision_to_containment_seconds";
pub const AGENTS: &str = "agent_monitor_agents";
pub const OTLP_FAILURES: &str = "agent_monitor_otlp_export_failures_total";

/// Class label of events that no identity source attributed.
pub const UNATTRIBUTED: &str = "unattributed";
/// Tier label of a finding below every threshold, and of actions that lower or lift a tier.
pub const NO_TIER: &str = "none";

/// Help texts for the exporters (`# HELP` lines, OTLP descriptions). The latency summaries are
/// described by their own renderer.
pub fn describe() {
    metrics::describe_counter!(
        EVENTS,
        Unit::Count,
        "Events decoded, by kind and agent class"
    );
    metrics::describe_counter!(
        KERNEL_DROPS,
        Unit::Count,
        "Events the kernel could not write to the ring buffer (full), by agent class"
    );
    metrics::describe_counter!(
        USERSPACE_DROPS,
        Unit::Count,
        "Records dropped in userspace, by reason"
    );
    metrics::describe_gauge!(
        RINGBUF_FILL,
        "Highest ring buffer fill seen before a drain during the last snapshot interval (0 to 1)"
    );
    metrics::describe_counter!(
        ATTRIBUTION_EVENTS,
        Unit::Count,
        "Events by attribution result (attributed, held, unattributed)"
    );
    metrics::describe_gauge!(
        ATTRIBUTION_COVERAGE,
        "Events attributed to an agent / events seen"
    );
    metrics::describe_counter!(FINDINGS, Unit::Count, "Findings, by tier and source");
    metrics::describe_counter!(
        ACTIONS,
        Unit::Count,
        "Response actions run, by action, tier and result"
    );
    metrics::describe_gauge!(OUTBOX_DEPTH, "SOC tickets waiting in the webhook outbox");
    metrics::describe_gauge!(AGENTS, "Monitored agents, by class and response state");
    metrics::describe_counter!(
        OTLP_FAILURES,
        Unit::Count,
        "OTLP exports that failed (their data is dropped), by signal (logs, metrics)"
    );
}
