//! The shipped rules in `rules/` load and fire on the behaviour they describe.

use super::*;

fn shipped() -> RuleEngine {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    match RuleSet::load_dir(dir) {
        Ok(set) => RuleEngine::new(set),
        Err(e) => panic!("shipped rules must load: {e}"),
    }
}

#[test]
fn shipped_rules_load() {
    let e = shipped();
    assert!(e.rules().len() >= 10, "{} rules", e.rules().len());
    let files: std::collections::BTreeSet<_> =
        e.rules().rules().map(|r| r.file.to_owned()).collect();
    for f in [
        "common.yaml",
        "fraud.yaml",
        "onboarding.yaml",
        "compliance.yaml",
    ] {
        assert!(files.contains(f), "{f} missing from {files:?}");
    }
}
