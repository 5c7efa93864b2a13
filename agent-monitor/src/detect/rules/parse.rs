//! A rule file: `version`, `lists`, `macros`, `rules`. Unknown keys are errors everywhere.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{
    compile::{Compiler, Cond},
    condition::{self, CondAst, Scalar, Scope},
    error::{Located, Res, RuleError},
    field::Field,
    kind::{ALL_KINDS, Kind},
    matcher::int,
    rule::{ClassScope, MAX_RATE_COUNT, RateSpec, Rule},
    template::Template,
    yaml::{self, Node},
};
use crate::detect::Tier;

/// The only rule-file format version so far.
pub(crate) const VERSION: i128 = 1;

/// Parses one file into its rules; `file` names it in errors and findings.
pub(crate) fn parse_file(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let invalid = |e: Located, rule: Option<String>| RuleError::Invalid {
        file: file.to_owned(),
        line: e.line,
        rule,
        message: e.message,
    };
    let root = yaml::parse(text).map_err(|e| {
        let rule = rule_name_before(text, e.line);
        invalid(e, rule)
    })?;
    let top = condition::entries(&root, "a mapping with version, lists, macros and rules")
        .map_err(|e| invalid(e, None))?;
    let mut version = None;
    let (mut lists_node, mut macros_node, mut rules_node) = (None, None, None);
    for (key, k, v) in top {
        match key {
            "version" => version = Some(v),
            "lists" => lists_node = Some(v),
            "macros" => macros_node = Some(v),
            "rules" => rules_node = Some(v),
            _ => {
                return Err(invalid(
                    Located::new(
                        k.line,
                        format!("unknown key \"{key}\" (expected version, lists, macros, rules)"),
                    ),
                    None,
                ));
            }
        }
    }
    check_version(version).map_err(|e| invalid(e, None))?;
    let lists = lists_node
        .map_or(Ok(HashMap::new()), parse_lists)
        .map_err(|e| invalid(e, None))?;
    let macros = macros_node
        .map_or(Ok(HashMap::new()), |n| parse_macros(n, &lists))
        .map_err(|e| invalid(e, None))?;
    let Some(rules_node) = rules_node else {
        return Ok(Vec::new());
    };
    let file: Arc<str> = file.into();
    let mut rules: Vec<Rule> = Vec::new();
    let items = rules_node
        .as_seq("a list of rules")
        .map_err(|e| invalid(e, None))?;
    for item in items {
        let name = rule_name(item);
        let rule =
            parse_rule(item, &file, &lists, &macros).map_err(|e| invalid(e, name.clone()))?;
        if let Some(first) = rules.iter().find(|r| r.name == rule.name) {
            return Err(invalid(
                Located::new(
                    rule.line,
                    format!("duplicate rule name (first at line {})", first.line),
                ),
                name,
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn check_version(version: Option<&Node>) -> Res<()> {
    let v = version.ok_or_else(|| Located::new(1, format!("missing \"version: {VERSION}\"")))?;
    let n = int(&condition::scalar(v, "a version number")?)?;
    if n != VERSION {
        return Err(Located::new(
            v.line,
            format!("unsupported version {n} (this build reads {VERSION})"),
        ));
    }
    Ok(())
}

fn parse_lists(node: &Node) -> Res<HashMap<String, Vec<Scalar>>> {
    let mut lists = HashMap::new();
    for (name, _, v) in condition::entries(node, "a mapping of list names to values")? {
        let items = v
            .as_seq("a list of values")?
            .iter()
            .map(|i| condition::scalar(i, "a value"))
            .collect::<Res<Vec<_>>>()?;
        lists.insert(name.to_owned(), items);
    }
    Ok(lists)
}

fn parse_macros(
    node: &Node,
    lists: &HashMap<String, Vec<Scalar>>,
) -> Res<HashMap<String, CondAst>> {
    let entries = condition::entries(node, "a mapping of macro names to conditions")?;
    // Names first, so that a macro may use one defined further down.
    let names: HashSet<String> = entries.iter().map(|(n, _, _)| (*n).to_owned()).collect();
    let scope = Scope {
        lists,
        macros: &names,
    };
    let mut macros = HashMap::new();
    for (name, _, v) in entries {
        let ast = condition::parse(v, &scope)
            .map_err(|e| Located::new(e.line, format!("macro \"{name}\": {}", e.message)))?;
        macros.insert(name.to_owned(), ast);
    }
    Ok(macros)
}

/// The `name` of a rule mapping, if it has a readable one (errors name the rule with it).
fn rule_name(item: &Node) -> Option<String> {
    let entries = item.as_map("a rule").ok()?;
    let (_, v) = entries
        .iter()
        .find(|(k, _)| k.as_str("").is_ok_and(|k| k == "name"))?;
    v.as_str("a name").ok().map(str::to_owned)
}

/// For YAML syntax errors, which have no tree: the last `name:` under `rules:` at or before the
/// error line. A best effort, so that even a syntax error names its rule.
fn rule_name_before(text: &str, line: usize) -> Option<String> {
    let mut in_rules = false;
    let mut name = None;
    for l in text.lines().take(line) {
        if l.starts_with("rules:") {
            in_rules = true;
        } else if !l.starts_with([' ', '-', '#']) && !l.trim().is_empty() {
            in_rules = false;
            name = None;
        }
        let t = l.trim_start().trim_start_matches('-').trim_start();
        if in_rules && let Some(n) = t.strip_prefix("name:") {
            name = Some(n.trim().trim_matches(['"', '\'']).to_owned());
        }
    }
    name.filter(|n| !n.is_empty())
}

fn parse_rule(
    item: &Node,
    file: &Arc<str>,
    lists: &HashMap<String, Vec<Scalar>>,
    macros: &HashMap<String, CondAst>,
) -> Res<Rule> {
    let mut f = RuleFields::default();
    for (key, k, v) in condition::entries(item, "a rule (a mapping)")? {
        match key {
            "name" => f.name = Some(v),
            "description" => f.description = Some(v),
            "classes" => f.classes = Some(v),
            "except_classes" => f.except = Some(v),
            "kinds" => f.kinds = Some(v),
            "when" => f.when = Some(v),
            "rate" => f.rate = Some(v),
            "tier" => f.tier = Some(v),
            "summary" => f.summary = Some(v),
            _ => {
                return Err(Located::new(
                    k.line,
                    format!(
                        "unknown key \"{key}\" (expected name, description, classes, except_classes, kinds, when, rate, tier, summary)"
                    ),
                ));
            }
        }
    }
    let line = item.line;
    let missing = |key: &str| Located::new(line, format!("missing \"{key}\""));
    let name = f
        .name
        .ok_or_else(|| missing("name"))?
        .as_str("a rule name")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Located::new(
            line,
            format!("rule name \"{name}\" must be letters, digits, '-', '_' or '.'"),
        ));
    }
    let description = f
        .description
        .ok_or_else(|| missing("description"))?
        .as_str("a description")?;
    let kinds_node = f.kinds.ok_or_else(|| missing("kinds"))?;
    let mut kinds = Vec::new();
    for k in kinds_node.as_str_list("an event kind or a list of kinds")? {
        let kind = Kind::parse(k).ok_or_else(|| {
            let known: Vec<_> = ALL_KINDS.iter().map(|k| k.name()).collect();
            Located::new(
                kinds_node.line,
                format!("unknown event kind \"{k}\" (kinds: {})", known.join(", ")),
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(Located::new(kinds_node.line, "\"kinds\" is empty"));
    }
    let scope = ClassScope {
        classes: f.classes.map(class_list).transpose()?,
        except: f.except.map_or(Ok(Vec::new()), class_list)?,
    };
    let tier_node = f.tier.ok_or_else(|| missing("tier"))?;
    let tier = match tier_node.as_str("a tier")? {
        "log" => Tier::Log,
        "rate_limit" => Tier::RateLimit,
        "contain" => Tier::Contain,
        other => {
            return Err(Located::new(
                tier_node.line,
                format!("unknown tier \"{other}\" (tiers: log, rate_limit, contain)"),
            ));
        }
    };
    let macro_names: HashSet<String> = macros.keys().cloned().collect();
    let mut cx = Compiler {
        macros,
        kinds: &kinds,
        stack: Vec::new(),
    };
    let mut fingerprint = format!(
        "kinds={kinds:?};scope={:?}/{:?};when=",
        scope.classes, scope.except
    );
    let cond = match f.when {
        Some(w) => {
            let ast = condition::parse(
                w,
                &Scope {
                    lists,
                    macros: &macro_names,
                },
            )?;
            cx.compile(&ast, &mut fingerprint)?
        }
        None => Cond::True,
    };
    let rate = f.rate.map(|r| parse_rate(r, &cx)).transpose()?;
    fingerprint.push_str(&format!(";rate={rate:?}"));
    let summary_node = f.summary.ok_or_else(|| missing("summary"))?;
    let summary = Template::parse(
        summary_node.as_str("a summary")?,
        summary_node.line,
        &cx,
        rate.is_some(),
    )?;
    Ok(Rule {
        name: name.into(),
        file: file.clone(),
        line,
        description: description.to_owned(),
        kinds,
        scope,
        cond,
        rate,
        tier,
        summary,
        fingerprint,
    })
}

#[derive(Default)]
struct RuleFields<'a> {
    name: Option<&'a Node>,
    description: Option<&'a Node>,
    classes: Option<&'a Node>,
    except: Option<&'a Node>,
    kinds: Option<&'a Node>,
    when: Option<&'a Node>,
    rate: Option<&'a Node>,
    tier: Option<&'a Node>,
    summary: Option<&'a Node>,
}

fn class_list(node: &Node) -> Res<Vec<Box<str>>> {
    let list = node.as_str_list("a class or a list of classes")?;
    if list.is_empty() {
        return Err(Located::new(node.line, "empty class list"));
    }
    Ok(list.into_iter().map(Into::into).collect())
}

/// `rate: {more_than: 20, within: 60s, distinct: port}`
fn parse_rate(node: &Node, cx: &Compiler<'_>) -> Res<RateSpec> {
    let (mut more_than, mut within, mut distinct) = (None, None, None);
    for (key, k, v) in condition::entries(node, "a rate mapping (more_than, within, distinct)")? {
        match key {
            "more_than" => {
                let n = int(&condition::scalar(v, "a count")?)?;
                if !(1..=MAX_RATE_COUNT as i128).contains(&n) {
                    return Err(Located::new(
                        v.line,
                        format!("more_than must be 1..={MAX_RATE_COUNT}"),
                    ));
                }
                more_than = usize::try_from(n).ok();
            }
            "within" => {
                let text = v.as_str("a duration such as 60s")?;
                let d = humantime::parse_duration(text).map_err(|e| {
                    Located::new(v.line, format!("invalid duration \"{text}\": {e}"))
                })?;
                if d.is_zero() {
                    return Err(Located::new(v.line, "the window must be longer than zero"));
                }
                within = Some(d);
            }
            "distinct" => {
                let name = v.as_str("a field name")?;
                let field = Field::parse(name)
                    .ok_or_else(|| Located::new(v.line, format!("unknown field \"{name}\"")))?;
                cx.check_field(field, v.line)?;
                distinct = Some(field);
            }
            _ => {
                return Err(Located::new(
                    k.line,
                    format!("unknown key \"{key}\" in rate (expected more_than, within, distinct)"),
                ));
            }
        }
    }
    Ok(RateSpec {
        more_than: more_than.ok_or_else(|| Located::new(node.line, "rate needs \"more_than\""))?,
        within: within.ok_or_else(|| Located::new(node.line, "rate needs \"within\""))?,
        distinct,
    })
}
