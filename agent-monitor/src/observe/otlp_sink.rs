//! Findings and actions as OTLP log records: a response sink. Each response gives one record
//! per finding behind it (`agent_monitor.finding`) and one per action run
//! (`agent_monitor.action`); a response with neither (a tier lowered without action) gives one
//! `agent_monitor.decision` record, and a release one `agent_monitor.release`. Severity follows
//! the tier: log WARN, rate_limit ERROR, contain FATAL (an incident), a lowered tier INFO; a
//! failed action is at least ERROR.
//!
//! Agent ids may hold personal data (an agent named after its owner): with a token key they are
//! exported as the audit log's tokens (`tok:` + keyed hash), also inside action details, so an
//! auditor with the key can join these records to the audit log and nobody else can read them.
//! Approvers are people: a release names them only as tokens, or only counts them without a key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};

use super::counters::{source_label, tier_label};
use crate::{
    detect::{Finding, Source, Tier},
    respond::{
        actuator::{ActionOutcome, Target},
        audit::Tokenizer,
        engine::{Response, ResponseSink},
        policy::Reason,
    },
};

/// Attribute keys of the exported records.
pub mod attr {
    pub const AGENT: &str = "agent_monitor.agent.id";
    pub const CLASS: &str = "agent_monitor.agent.class";
    pub const CGROUP: &str = "agent_monitor.cgroup_id";
    pub const TIER: &str = "agent_monitor.tier";
    pub const FROM_TIER: &str = "agent_monitor.tier.from";
    pub const REASON: &str = "agent_monitor.decision.reason";
    pub const SCORE: &str = "agent_monitor.score";
    pub const SOURCE: &str = "agent_monitor.source";
    pub const RULE: &str = "agent_monitor.rule";
    pub const RULE_FILE: &str = "agent_monitor.rule.file";
    pub const TOP_FEATURES: &str = "agent_monitor.top_features";
    pub const LOSSY: &str = "agent_monitor.lossy";
    pub const ACTION: &str = "agent_monitor.action";
    pub const RESULT: &str = "agent_monitor.action.result";
    pub const DETAIL: &str = "agent_monitor.action.detail";
    pub const UNDO: &str = "agent_monitor.action.undo";
    pub const APPROVERS: &str = "agent_monitor.approvers";
    pub const APPROVER_COUNT: &str = "agent_monitor.approvers.count";
}

pub struct OtlpSink {
    logger: SdkLogger,
    tokens: Option<Tokenizer>,
    /// Unix time minus boot time: findings carry boot-clock times.
    wall_offset_ns: i128,
}

fn severity(tier: Option<Tier>) -> Severity {
    match tier {
        None => Severity::Info,
        Some(Tier::Log) => Severity::Warn,
        Some(Tier::RateLimit) => Severity::Error,
        Some(Tier::Contain) => Severity::Fatal,
    }
}

impl OtlpSink {
    pub fn new(logger: SdkLogger, tokens: Option<Tokenizer>) -> Self {
        Self {
            logger,
            tokens,
            wall_offset_ns: crate::clock::wall_offset_ns(),
        }
    }

    fn agent(&self, id: &str) -> String {
        self.tokens
            .as_ref()
            .map_or_else(|| id.to_owned(), |t| t.token(id))
    }

    /// Free text with the agent id replaced by its token (when tokenising).
    fn text(&self, agent_id: &str, text: &str) -> String {
        match &self.tokens {
            Some(t) if !agent_id.is_empty() => text.replace(agent_id, &t.token(agent_id)),
            _ => text.to_owned(),
        }
    }

    fn record(
        &self,
        name: &'static str,
        severity: Severity,
        target: &Target,
        body: String,
    ) -> SdkLogRecord {
        let mut rec = self.logger.create_log_record();
        rec.set_event_name(name);
        rec.set_severity_number(severity);
        rec.set_severity_text(severity.name());
        rec.set_observed_timestamp(SystemTime::now());
        rec.set_body(AnyValue::from(self.text(&target.agent_id, &body)));
        rec.add_attribute(attr::AGENT, self.agent(&target.agent_id));
        rec.add_attribute(attr::CLASS, target.class.to_string());
        rec.add_attribute(attr::CGROUP, target.cgroup_id as i64);
        rec
    }

    fn wall(&self, boot_ns: u64) -> SystemTime {
        let unix = i128::from(boot_ns) + self.wall_offset_ns;
        u64::try_from(unix).map_or(UNIX_EPOCH, |ns| UNIX_EPOCH + Duration::from_nanos(ns))
    }

    fn finding(&self, r: &Response, f: &Finding) {
        let mut rec = self.record(
            "agent_monitor.finding",
            severity(r.decision.to),
            &r.target,
            f.summary.clone(),
        );
        rec.set_timestamp(self.wall(f.ts_ns));
        rec.add_attribute(attr::TIER, tier_label(r.decision.to));
        rec.add_attribute(attr::FROM_TIER, tier_label(r.decision.from));
        rec.add_attribute(attr::REASON, Reason::as_str(&r.decision.reason));
        rec.add_attribute(attr::SCORE, f.score);
        rec.add_attribute(attr::SOURCE, source_label(&f.source));
        if let Source::Rule { name, file } = &f.source {
            rec.add_attribute(attr::RULE, name.clone());
            rec.add_attribute(attr::RULE_FILE, file.clone());
        }
        if !f.top_features.is_empty() {
            let features: AnyValue = f
                .top_features
                .iter()
                .map(|c| {
                    AnyValue::from_iter([
                        ("feature", AnyValue::from(c.feature.clone())),
                        ("value", AnyValue::from(c.value)),
                        ("weight", AnyValue::from(c.weight)),
                    ])
                })
                .collect();
            rec.add_attribute(attr::TOP_FEATURES, features);
        }
        if f.lossy {
            rec.add_attribute(attr::LOSSY, true);
        }
        self.logger.emit(rec);
    }

    fn action(&self, target: &Target, tier: Option<Tier>, a: &ActionOutcome) {
        let mut sev = severity(tier);
        if !a.ok {
            sev = sev.max_by_number(Severity::Error);
        }
        let result = if a.ok { "ok" } else { "failed" };
        let mut rec = self.record(
            "agent_monitor.action",
            sev,
            target,
            format!("{} {result}: {}", a.action, a.detail),
        );
        rec.set_timestamp(SystemTime::now());
        rec.add_attribute(attr::TIER, tier_label(tier));
        rec.add_attribute(attr::ACTION, a.action.clone());
        rec.add_attribute(attr::RESULT, result);
        rec.add_attribute(attr::DETAIL, self.text(&target.agent_id, &a.detail));
        if let Some(undo) = &a.undo {
            rec.add_attribute(attr::UNDO, self.text(&target.agent_id, undo));
        }
        self.logger.emit(rec);
    }
}

trait MaxByNumber {
    fn max_by_number(self, other: Severity) -> Severity;
}

impl MaxByNumber for Severity {
    fn max_by_number(self, other: Severity) -> Severity {
        if (other as i32) > (self as i32) {
            other
        } else {
            self
        }
    }
}

impl ResponseSink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn on_response(&mut self, r: &Response) -> anyhow::Result<()> {
        for f in &r.findings {
            self.finding(r, f);
        }
        for a in &r.actions {
            self.action(&r.target, r.decision.to, a);
        }
        if r.findings.is_empty() && r.actions.is_empty() {
            let mut rec = self.record(
                "agent_monitor.decision",
                severity(r.decision.to),
                &r.target,
                format!(
                    "tier {} -> {} ({})",
                    tier_label(r.decision.from),
                    tier_label(r.decision.to),
                    Reason::as_str(&r.decision.reason)
                ),
            );
            rec.set_timestamp(self.wall(r.decision.ts_ns));
            rec.add_attribute(attr::TIER, tier_label(r.decision.to));
            rec.add_attribute(attr::FROM_TIER, tier_label(r.decision.from));
            rec.add_attribute(attr::REASON, Reason::as_str(&r.decision.reason));
            self.logger.emit(rec);
        }
        Ok(())
    }

    fn on_release(
        &mut self,
        target: &Target,
        approvers: &[String],
        actions: &[ActionOutcome],
    ) -> anyhow::Result<()> {
        let mut rec = self.record(
            "agent_monitor.release",
            Severity::Info,
            target,
            format!("released by {} approvers", approvers.len()),
        );
        rec.set_timestamp(SystemTime::now());
        rec.add_attribute(attr::APPROVER_COUNT, approvers.len() as i64);
        if let Some(t) = &self.tokens {
            let names: AnyValue = approvers.iter().map(|a| t.token(a)).collect();
            rec.add_attribute(attr::APPROVERS, names);
        }
        self.logger.emit(rec);
        for a in actions {
            self.action(target, None, a);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::logs::LoggerProvider as _;
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};

    use super::*;
    use crate::{
        detect::Contribution,
        respond::policy::{Decision, Reason},
    };

    fn sink(tokens: Option<Tokenizer>) -> (OtlpSink, InMemoryLogExporter, SdkLoggerProvider) {
        let exporter = InMemoryLogExporter::default();
        let provider = SdkLoggerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        (
            OtlpSink::new(provider.logger("test"), tokens),
            exporter,
            provider,
        )
    }

    fn target() -> Target {
        Target {
            agent_id: "fraud-alice-7".into(),
            class: "fraud".into(),
            cgroup_id: 42,
            cgroup_path: None,
        }
    }

    fn response() -> Response {
        Response {
            target: target(),
            decision: Decision {
                from: None,
                to: Some(Tier::Contain),
                reason: Reason::Finding,
                ts_ns: 5,
            },
            findings: vec![Finding {
                ts_ns: 5,
                agent_id: "fraud-alice-7".into(),
                class: "fraud".into(),
                cgroup_id: 42,
                source: Source::Rule {
                    name: "credential-read".into(),
                    file: "common.yaml".into(),
                },
                score: 1.0,
                tier: Some(Tier::Contain),
                summary: "fraud-alice-7 read a credential".into(),
                top_features: vec![Contribution {
                    feature: "sensitive_opens".into(),
                    value: 3.0,
                    weight: 0.8,
                }],
                lossy: false,
            }],
            actions: vec![
                ActionOutcome {
                    action: "deny_all".into(),
                    ok: true,
                    detail: "cgroup of fraud-alice-7 denied".into(),
                    undo: Some("agent-monitor release fraud-alice-7".into()),
                },
                ActionOutcome {
                    action: "revoke_tokens".into(),
                    ok: false,
                    detail: "vault unreachable".into(),
                    undo: None,
                },
            ],
        }
    }

    fn attrs(r: &SdkLogRecord) -> std::collections::HashMap<String, AnyValue> {
        r.attributes_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> AnyValue {
        AnyValue::from(v.to_owned())
    }

    #[test]
    fn findings_and_actions_become_records_with_tokenised_agents() {
        let tokens = Tokenizer::new([7; 32]);
        let token = tokens.token("fraud-alice-7");
        let (mut sink, exporter, _provider) = sink(Some(tokens));
        sink.on_response(&response()).unwrap();
        let logs = exporter.get_emitted_logs().unwrap();
        assert_eq!(logs.len(), 3);
        let finding = &logs[0].record;
        assert_eq!(finding.event_name(), Some("agent_monitor.finding"));
        assert_eq!(finding.severity_number(), Some(Severity::Fatal));
        assert_eq!(finding.severity_text(), Some("FATAL"));
        let a = attrs(finding);
        assert_eq!(a[attr::AGENT], s(&token));
        assert_eq!(a[attr::CLASS], s("fraud"));
        assert_eq!(a[attr::TIER], s("contain"));
        assert_eq!(a[attr::FROM_TIER], s("none"));
        assert_eq!(a[attr::SCORE], AnyValue::Double(1.0));
        assert_eq!(a[attr::RULE], s("credential-read"));
        assert_eq!(a[attr::SOURCE], s("rule"));
        let AnyValue::ListAny(features) = &a[attr::TOP_FEATURES] else {
            panic!("{:?}", a[attr::TOP_FEATURES]);
        };
        let AnyValue::Map(f) = &features[0] else {
            panic!("{features:?}")
        };
        assert_eq!(
            f[&opentelemetry::Key::from_static_str("feature")],
            s("sensitive_opens")
        );
        assert_eq!(
            f[&opentelemetry::Key::from_static_str("weight")],
            AnyValue::Double(0.8)
        );
        assert_eq!(
            finding.body(),
            Some(&s(&format!("{token} read a credential")))
        );
        let deny = attrs(&logs[1].record);
        assert_eq!(deny[attr::ACTION], s("deny_all"));
        assert_eq!(deny[attr::RESULT], s("ok"));
        assert_eq!(
            deny[attr::UNDO],
            s(&format!("agent-monitor release {token}"))
        );
        let revoke = &logs[2].record;
        assert_eq!(attrs(revoke)[attr::RESULT], s("failed"));
        // A failed action is at least ERROR; here the tier already says FATAL.
        assert_eq!(revoke.severity_number(), Some(Severity::Fatal));
        assert!(
            !format!("{logs:?}").contains("fraud-alice-7"),
            "the id is never in clear"
        );
    }

    #[test]
    fn without_a_token_key_ids_are_in_clear_and_approvers_only_counted() {
        let (mut sink, exporter, _provider) = sink(None);
        let mut r = response();
        r.decision.to = Some(Tier::Log);
        r.actions.truncate(0);
        r.actions.push(ActionOutcome {
            action: "x".into(),
            ok: false,
            detail: String::new(),
            undo: None,
        });
        sink.on_response(&r).unwrap();
        sink.on_release(&target(), &["alice".into(), "bob".into()], &[])
            .unwrap();
        let logs = exporter.get_emitted_logs().unwrap();
        assert_eq!(attrs(&logs[0].record)[attr::AGENT], s("fraud-alice-7"));
        assert_eq!(logs[0].record.severity_number(), Some(Severity::Warn));
        assert_eq!(logs[1].record.severity_number(), Some(Severity::Error));
        let release = &logs[2].record;
        assert_eq!(release.event_name(), Some("agent_monitor.release"));
        assert_eq!(attrs(release)[attr::APPROVER_COUNT], AnyValue::Int(2));
        assert!(!format!("{logs:?}").contains("alice\""), "{logs:?}");
        assert!(!format!("{logs:?}").contains("bob"));
    }

    #[test]
    fn a_lowering_without_actions_is_one_decision_record() {
        let (mut sink, exporter, _provider) = sink(None);
        let mut r = response();
        r.decision = Decision {
            from: Some(Tier::RateLimit),
            to: Some(Tier::Log),
            reason: Reason::Cooldown,
            ts_ns: 9,
        };
        r.findings.clear();
        r.actions.clear();
        sink.on_response(&r).unwrap();
        let logs = exporter.get_emitted_logs().unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].record.event_name(), Some("agent_monitor.decision"));
        assert_eq!(attrs(&logs[0].record)[attr::REASON], s("cooldown"));
    }
}
