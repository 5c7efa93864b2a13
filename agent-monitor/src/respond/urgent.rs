//! Which kernel events must reach the daemon at once: those that can lead to a decision at the
//! rate-limit tier or above. Everything else is batched in the kernel (cheaper for the agent)
//! and read at the next poll (up to `poll_interval_ms` later).

use super::policy::PolicyConfig;
use crate::detect::{Tier, rules::RuleSet};

/// The kernel event kinds (wire numbers) that can lead to a rate-limit or a containment under
/// these rules and this policy: the kinds read by a rule of tier `rate_limit` or `contain`,
/// and, when findings escalate (`escalate_after` > 0), by any rule, since repeated `log`
/// findings step up to a rate-limit.
///
/// Window-model findings are not event-driven (they come when a window closes, on the
/// daemon's own clock), so they need no wakeup.
pub fn urgent_kinds(rules: &RuleSet, policy: &PolicyConfig) -> Vec<u16> {
    let lowest = if policy.escalate_after > 0 {
        Tier::Log
    } else {
        Tier::RateLimit
    };
    rules.kernel_kinds_at_or_above(lowest)
}

#[cfg(test)]
mod tests {
    use agent_monitor_common::kind;

    use super::*;

    const RULES: &str = r#"
version: 1
rules:
  - name: cred
    description: d
    kinds: open
    tier: contain
    summary: s
  - name: shell
    description: d
    kinds: exec
    tier: rate_limit
    summary: s
  - name: interp
    description: d
    kinds: [fork, lost]
    tier: log
    summary: s
"#;

    #[test]
    fn kinds_of_rules_that_can_rate_limit_or_contain_wake_the_reader() {
        let rules = RuleSet::parse("t.yaml", RULES).expect("rules");
        let no_escalation = PolicyConfig {
            escalate_after: 0,
            ..PolicyConfig::default()
        };
        assert_eq!(
            urgent_kinds(&rules, &no_escalation),
            [kind::EXEC, kind::OPEN]
        );
        // Repeated log findings escalate: their kinds can lead to a rate-limit too. `lost`
        // is made by the daemon, never by the kernel.
        assert_eq!(
            urgent_kinds(&rules, &PolicyConfig::default()),
            [kind::EXEC, kind::FORK, kind::OPEN]
        );
        assert!(urgent_kinds(&RuleSet::default(), &PolicyConfig::default()).is_empty());
    }

    #[test]
    fn with_the_shipped_rules_opens_execs_and_connects_wake_the_reader_and_syscall_batches_do_not()
    {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
        let rules = RuleSet::load_dir(dir).expect("shipped rules");
        let kinds = urgent_kinds(&rules, &PolicyConfig::default());
        for k in [kind::OPEN, kind::EXEC, kind::CONNECT, kind::DNS_QUERY] {
            assert!(kinds.contains(&k), "kind {k} in {kinds:?}");
        }
        for k in [kind::SYSCALL_BATCH, kind::FORK, kind::EXIT] {
            assert!(!kinds.contains(&k), "kind {k} in {kinds:?}");
        }
    }
}
