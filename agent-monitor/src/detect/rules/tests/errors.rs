//! Refused files: each error names the file, the line and the rule.

use super::*;
use crate::detect::rules::RuleError;

fn refuse(text: &str) -> RuleError {
    match RuleSet::parse("bad.yaml", text) {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts the error's line, rule and a piece of its message.
fn check(text: &str, line: usize, rule: Option<&str>, needle: &str) {
    let e = refuse(text);
    let shown = e.to_string();
    assert_eq!(e.file(), "bad.yaml", "{shown}");
    assert_eq!(e.line(), Some(line), "{shown}");
    assert_eq!(e.rule(), rule, "{shown}");
    assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
    assert!(shown.starts_with(&format!("bad.yaml:{line}: ")), "{shown}");
    if let Some(r) = rule {
        assert!(shown.contains(&format!("rule \"{r}\"")), "{shown}");
    }
}

const HEAD: &str = "version: 1\nrules:\n  - name: r1\n    description: d\n    kinds: open\n";

#[test]
fn yaml_syntax() {
    // The parser notices the unclosed list on the line after it.
    check(
        &format!("{HEAD}    when: {{path: [x\n    tier: log\n"),
        8,
        Some("r1"),
        "YAML syntax",
    );
}

#[test]
fn unknown_rule_key() {
    check(
        &format!("{HEAD}    tire: log\n"),
        6,
        Some("r1"),
        "unknown key \"tire\"",
    );
}

#[test]
fn unknown_top_level_key() {
    check("version: 1\nrulez: []\n", 2, None, "unknown key \"rulez\"");
}

#[test]
fn unknown_operator() {
    check(
        &format!(
            "{HEAD}    when:\n      path: {{startswith: /x}}\n    tier: log\n    summary: s\n"
        ),
        7,
        Some("r1"),
        "unknown operator \"startswith\"",
    );
}

#[test]
fn unknown_field() {
    check(
        &format!("{HEAD}    when: {{pathname: /x}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "unknown field or keyword \"pathname\"",
    );
}

#[test]
fn field_not_available_for_kind() {
    check(
        &format!("{HEAD}    when: {{port: 22}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "field \"port\" is not available for \"open\" events",
    );
}

#[test]
fn unknown_list() {
    check(
        &format!(
            "{HEAD}    when: {{path: {{in: {{list: nope}}}}}}\n    tier: log\n    summary: s\n"
        ),
        6,
        Some("r1"),
        "unknown list \"nope\"",
    );
}

#[test]
fn unknown_macro() {
    check(
        &format!("{HEAD}    when: {{macro: nope}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "unknown macro \"nope\"",
    );
}

#[test]
fn macro_cycle() {
    let text = "version: 1\nmacros:\n  a: {macro: b}\n  b: {macro: a}\nrules:\n  - {name: r1, description: d, kinds: open, when: {macro: a}, tier: log, summary: s}\n";
    let e = refuse(text);
    assert_eq!(e.rule(), Some("r1"));
    assert!(e.to_string().contains("refers to itself"), "{e}");
}

#[test]
fn wrong_types() {
    check(
        &format!("{HEAD}    when: {{path: {{gt: 5}}}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "operator \"gt\" does not apply to string field \"path\"",
    );
    check(
        &format!("{HEAD}    when: {{flags: {{bits_any: lots}}}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "expected a number",
    );
    check(
        &format!("{HEAD}    when: {{mode: 0755}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "write octal as 0o755",
    );
    check(
        &format!("{HEAD}    when: [x]\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "expected a condition",
    );
    check(
        &format!("{HEAD}    kinds: [open]\n"),
        6,
        Some("r1"),
        "duplicate key \"kinds\"",
    );
}

#[test]
fn invalid_glob() {
    check(
        &format!("{HEAD}    when: {{path: {{glob: '/tmp/[x'}}}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "invalid glob",
    );
}

#[test]
fn invalid_cidr() {
    check(
        "version: 1\nrules:\n  - name: c\n    description: d\n    kinds: connect\n    when: {addr: {cidr: 10.0.0.0/33}}\n    tier: log\n    summary: s\n",
        6,
        Some("c"),
        "invalid CIDR",
    );
}

#[test]
fn duplicate_rule_name() {
    let text = format!(
        "{HEAD}    tier: log\n    summary: s\n  - name: r1\n    description: d\n    kinds: exec\n    tier: log\n    summary: s\n"
    );
    check(
        &text,
        8,
        Some("r1"),
        "duplicate rule name (first at line 3)",
    );
}

#[test]
fn missing_tier_and_unknown_tier() {
    check(
        &format!("{HEAD}    summary: s\n"),
        3,
        Some("r1"),
        "missing \"tier\"",
    );
    check(
        &format!("{HEAD}    tier: panic\n    summary: s\n"),
        6,
        Some("r1"),
        "unknown tier \"panic\"",
    );
}

#[test]
fn bad_summary_placeholder() {
    check(
        &format!("{HEAD}    tier: log\n    summary: '{{port}}'\n"),
        7,
        Some("r1"),
        "not available",
    );
    check(
        &format!("{HEAD}    tier: log\n    summary: '{{rate_count}}'\n"),
        7,
        Some("r1"),
        "needs a rate",
    );
    check(
        &format!("{HEAD}    tier: log\n    summary: '{{path'\n"),
        7,
        Some("r1"),
        "unclosed",
    );
}

#[test]
fn bad_rate() {
    check(
        &format!("{HEAD}    rate: {{more_than: 3, within: soon}}\n    tier: log\n    summary: s\n"),
        6,
        Some("r1"),
        "invalid duration",
    );
    check(
        &format!(
            "{HEAD}    rate: {{more_than: 3, within: 1s, per: pod}}\n    tier: log\n    summary: s\n"
        ),
        6,
        Some("r1"),
        "unknown key \"per\" in rate",
    );
}

#[test]
fn unknown_kind_and_version() {
    check(
        &HEAD.replace("kinds: open", "kinds: [open, teleport]"),
        5,
        Some("r1"),
        "unknown event kind \"teleport\"",
    );
    check("version: 2\nrules: []\n", 1, None, "unsupported version 2");
    check("rules: []\n", 1, None, "missing \"version: 1\"");
}

#[test]
fn anchors_are_refused() {
    check(
        "version: 1\nlists:\n  a: &x [1]\n  b: *x\n",
        3,
        None,
        "anchors",
    );
}

#[test]
fn duplicate_names_across_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rule = "version: 1\nrules:\n  - {name: same, description: d, kinds: open, tier: log, summary: s}\n";
    std::fs::write(dir.path().join("a.yaml"), rule).expect("write");
    std::fs::write(dir.path().join("b.yaml"), rule).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not yaml").expect("write");
    let e = match RuleSet::load_dir(dir.path()) {
        Ok(_) => panic!("duplicate should be refused"),
        Err(e) => e,
    };
    assert!(e.file().ends_with("b.yaml"), "{e}");
    assert_eq!(e.rule(), Some("same"));
    assert!(e.to_string().contains("first in a.yaml line 3"), "{e}");
}
