use agent_monitor_common::{
    CONTAIN_DENY_ALL, CONTAIN_RATE_LIMIT, MIN_BYTE_BURST, NANOS_PER_SEC, TokenBucket,
};

use super::{Action, ActionResult, PolicyView, next_deny, next_rate, own_undo, same};

#[test]
fn bucket_lets_the_burst_through_then_the_rate() {
    let rate = 10;
    let mut b = TokenBucket::full(rate);
    let t0 = 5 * NANOS_PER_SEC;
    let passed = (0..100).filter(|_| b.take(t0, rate, rate, 1)).count();
    assert_eq!(passed, 10, "a full bucket holds one second's worth");
    // 100 ms later: one more token.
    assert!(b.take(t0 + NANOS_PER_SEC / 10, rate, rate, 1));
    assert!(!b.take(t0 + NANOS_PER_SEC / 10, rate, rate, 1));
    // Fractions accumulate: ten calls 10 ms apart earn exactly one token.
    let mut t = t0 + NANOS_PER_SEC / 10;
    let mut got = 0;
    for _ in 0..10 {
        t += NANOS_PER_SEC / 100;
        got += usize::from(b.take(t, rate, rate, 1));
    }
    assert_eq!(got, 1);
    // A long idle period refills to the burst, no more.
    let t = t + 3600 * NANOS_PER_SEC;
    assert_eq!((0..100).filter(|_| b.take(t, rate, rate, 1)).count(), 10);
}

#[test]
fn byte_bucket_passes_a_large_packet_under_a_small_rate() {
    let p = PolicyView {
        bytes_per_s: Some(1000),
        ..Default::default()
    }
    .to_policy();
    assert_eq!(p.byte_burst(), MIN_BYTE_BURST);
    let mut b = p.byte_bucket;
    assert!(b.take(NANOS_PER_SEC, 1000, p.byte_burst(), 65_000));
    assert!(!b.take(NANOS_PER_SEC, 1000, p.byte_burst(), 1000));
    assert!(b.take(2 * NANOS_PER_SEC, 1000, p.byte_burst(), 1000));
}

#[test]
fn policy_flags_round_trip_through_the_view() {
    let v = PolicyView {
        deny_all: true,
        connects_per_s: Some(5),
        bytes_per_s: None,
        applied_unix_ms: 7,
    };
    let p = v.to_policy();
    assert_eq!(p.flags, CONTAIN_DENY_ALL | CONTAIN_RATE_LIMIT);
    assert_eq!(PolicyView::from(&p), v);
    assert_eq!(PolicyView::default().to_policy().flags, 0);
}

#[test]
fn deny_keeps_a_rate_limit_and_rate_limit_keeps_a_deny() {
    let limited = next_rate(None, 3, 0, 1).unwrap();
    let denied = next_deny(Some(limited), 2);
    assert!(denied.deny_all);
    assert_eq!(denied.connects_per_s, Some(3));
    let relimited = next_rate(Some(denied), 0, 500, 3).unwrap();
    assert!(relimited.deny_all);
    assert_eq!(
        (relimited.connects_per_s, relimited.bytes_per_s),
        (None, Some(500))
    );
    // Removing the only restriction leaves nothing to enforce.
    assert_eq!(next_rate(Some(limited), 0, 0, 4), None);
}

#[test]
fn repeating_an_action_is_no_change() {
    let a = next_deny(None, 1);
    let b = next_deny(Some(a), 2);
    assert!(same(Some(&a), Some(&b)));
    assert!(same(None, None));
    assert!(!same(Some(&a), None));
}

#[test]
fn action_results_serialize_for_the_audit_log() {
    let r = ActionResult {
        action: super::Action::DenyAll,
        cgroup_id: 42,
        agent: Some("fraud-1".into()),
        before: None,
        after: Some(next_deny(None, 9)),
        changed: true,
    };
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["action"], "deny_all");
    assert_eq!(json["after"]["deny_all"], true);
    assert_eq!(json["before"], serde_json::Value::Null);
    let back: ActionResult = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

fn result(action: Action, before: Option<PolicyView>, after: Option<PolicyView>) -> ActionResult {
    ActionResult {
        action,
        cgroup_id: 1,
        agent: None,
        before,
        after,
        changed: true,
    }
}

#[test]
fn deny_and_rate_limit_undo_their_own_part_in_either_order() {
    // Applied deny first, then the rate limit (what a containment decision does).
    let denied = next_deny(None, 1);
    let deny = result(Action::DenyAll, None, Some(denied));
    let both = next_rate(Some(denied), 5, 0, 2).unwrap();
    let rate = result(Action::RateLimit, Some(denied), Some(both));
    // Undone deny first: the rate limit stays, then nothing.
    let after_deny = own_undo(Some(both), &deny, 3).unwrap().unwrap();
    assert!(!after_deny.deny_all && after_deny.connects_per_s == Some(5));
    assert_eq!(own_undo(Some(after_deny), &rate, 4).unwrap(), None);
    // Undone rate limit first: the deny stays, then nothing.
    let after_rate = own_undo(Some(both), &rate, 3).unwrap().unwrap();
    assert!(after_rate.deny_all && after_rate.connects_per_s.is_none());
    assert_eq!(own_undo(Some(after_rate), &deny, 4).unwrap(), None);
    // A deny that was in force before the action stays after its undo.
    let again = result(Action::DenyAll, Some(denied), Some(denied));
    assert!(own_undo(Some(denied), &again, 5).unwrap().unwrap().deny_all);
    // Nothing in force (released meanwhile): nothing to put back.
    assert_eq!(own_undo(None, &deny, 6).unwrap(), None);
    // A release is undone whole.
    assert!(own_undo(None, &result(Action::Release, Some(denied), None), 7).is_none());
}
