//! Condition syntax: YAML nodes to an AST, with list references resolved. Field and operand
//! types are checked later, per rule, when the event kinds are known (see `compile`).

use std::collections::{HashMap, HashSet};

use super::{
    error::{Located, Res},
    field::Field,
    yaml::{Node, NodeKind},
};

/// Operators of a field test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Equals,
    In,
    StartsWith,
    EndsWith,
    Contains,
    Glob,
    Cidr,
    Gt,
    Gte,
    Lt,
    Lte,
    BitsAny,
    BitsAll,
    Exists,
}

const OPS: &[(Op, &str)] = &[
    (Op::Equals, "equals"),
    (Op::In, "in"),
    (Op::StartsWith, "starts_with"),
    (Op::EndsWith, "ends_with"),
    (Op::Contains, "contains"),
    (Op::Glob, "glob"),
    (Op::Cidr, "cidr"),
    (Op::Gt, "gt"),
    (Op::Gte, "gte"),
    (Op::Lt, "lt"),
    (Op::Lte, "lte"),
    (Op::BitsAny, "bits_any"),
    (Op::BitsAll, "bits_all"),
    (Op::Exists, "exists"),
];

impl Op {
    fn parse(name: &str) -> Option<Op> {
        OPS.iter().find(|(_, n)| *n == name).map(|(op, _)| *op)
    }

    pub fn name(self) -> &'static str {
        OPS.iter()
            .find(|(op, _)| *op == self)
            .map_or("?", |(_, n)| n)
    }

    /// Operators that compare against a set of values (a list is allowed as operand).
    fn takes_many(self) -> bool {
        matches!(
            self,
            Op::In | Op::StartsWith | Op::EndsWith | Op::Contains | Op::Glob | Op::Cidr
        )
    }
}

/// One operand value as written, with its line.
#[derive(Clone, Debug)]
pub(crate) struct Scalar {
    pub text: String,
    pub line: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum CondAst {
    All(Vec<CondAst>),
    Any(Vec<CondAst>),
    Not(Box<CondAst>),
    Macro {
        name: String,
        line: usize,
    },
    Test {
        field: Field,
        op: Op,
        /// One value, or the values of an inline list or of a named list.
        values: Vec<Scalar>,
        line: usize,
    },
}

/// Names a condition may refer to: the file's lists (resolved here) and macros (resolved at
/// compile time, so that a macro is typed against each rule's event kinds).
pub(crate) struct Scope<'a> {
    pub lists: &'a HashMap<String, Vec<Scalar>>,
    pub macros: &'a HashSet<String>,
}

/// The entries of a mapping with their keys as text; a repeated key is an error (YAML would
/// silently keep one of them).
pub(crate) fn entries<'a>(node: &'a Node, what: &str) -> Res<Vec<(&'a str, &'a Node, &'a Node)>> {
    let mut out: Vec<(&str, &Node, &Node)> = Vec::new();
    for (k, v) in node.as_map(what)? {
        let key = k.as_str("a key")?;
        if out.iter().any(|(seen, _, _)| *seen == key) {
            return Err(Located::new(k.line, format!("duplicate key \"{key}\"")));
        }
        out.push((key, k, v));
    }
    Ok(out)
}

/// Parses a condition: a mapping whose entries must all hold. Each entry is `all: [..]`,
/// `any: [..]`, `not: {..}`, `macro: name`, or `<field>: <test>`.
pub(crate) fn parse(node: &Node, scope: &Scope<'_>) -> Res<CondAst> {
    let mut parts = Vec::new();
    for (key, k, v) in entries(node, "a condition (a mapping)")? {
        let part = match key {
            "all" | "any" => {
                let items = v
                    .as_seq("a list of conditions")?
                    .iter()
                    .map(|c| parse(c, scope))
                    .collect::<Res<Vec<_>>>()?;
                if items.is_empty() {
                    return Err(Located::new(
                        k.line,
                        format!("\"{key}\" needs at least one condition"),
                    ));
                }
                if key == "all" {
                    CondAst::All(items)
                } else {
                    CondAst::Any(items)
                }
            }
            "not" => CondAst::Not(Box::new(parse(v, scope)?)),
            "macro" => {
                let name = v.as_str("a macro name")?;
                if !scope.macros.contains(name) {
                    return Err(Located::new(v.line, format!("unknown macro \"{name}\"")));
                }
                CondAst::Macro {
                    name: name.to_owned(),
                    line: v.line,
                }
            }
            _ => parse_field(key, k, v, scope)?,
        };
        parts.push(part);
    }
    Ok(match parts.len() {
        1 => parts.remove(0),
        _ => CondAst::All(parts),
    })
}

fn parse_field(key: &str, k: &Node, v: &Node, scope: &Scope<'_>) -> Res<CondAst> {
    let field = Field::parse(key).ok_or_else(|| {
        Located::new(
            k.line,
            format!(
                "unknown field or keyword \"{key}\" (fields: {}; keywords: all, any, not, macro)",
                Field::names().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    // `path: /etc/passwd` is short for `path: {equals: /etc/passwd}`.
    if let NodeKind::Scalar { text } = &v.kind {
        return Ok(CondAst::Test {
            field,
            op: Op::Equals,
            values: vec![Scalar {
                text: text.clone(),
                line: v.line,
            }],
            line: v.line,
        });
    }
    let mut tests = Vec::new();
    for (name, opk, operand) in entries(v, "a value or a mapping of operators")? {
        let op = Op::parse(name).ok_or_else(|| {
            Located::new(
                opk.line,
                format!(
                    "unknown operator \"{name}\" (operators: {})",
                    OPS.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let values = parse_operand(op, operand, scope)?;
        tests.push(CondAst::Test {
            field,
            op,
            values,
            line: opk.line,
        });
    }
    if tests.is_empty() {
        return Err(Located::new(
            v.line,
            format!("no operator for field \"{key}\""),
        ));
    }
    Ok(match tests.len() {
        1 => tests.remove(0),
        _ => CondAst::All(tests),
    })
}

/// A scalar; for set operators also an inline list or `{list: name}`.
fn parse_operand(op: Op, node: &Node, scope: &Scope<'_>) -> Res<Vec<Scalar>> {
    let values = match &node.kind {
        NodeKind::Scalar { text } => vec![Scalar {
            text: text.clone(),
            line: node.line,
        }],
        NodeKind::Seq(items) if op.takes_many() => items
            .iter()
            .map(|i| scalar(i, "a list of values"))
            .collect::<Res<_>>()?,
        NodeKind::Map(_) if op.takes_many() => {
            let e = entries(node, "{list: name}")?;
            match e.as_slice() {
                [("list", _, name)] => {
                    let name = name.as_str("a list name")?;
                    scope.lists.get(name).cloned().ok_or_else(|| {
                        Located::new(node.line, format!("unknown list \"{name}\""))
                    })?
                }
                _ => {
                    return Err(Located::new(
                        node.line,
                        format!(
                            "operator \"{}\" takes a value, a list, or {{list: name}}",
                            op.name()
                        ),
                    ));
                }
            }
        }
        _ => {
            return Err(Located::new(
                node.line,
                format!(
                    "operator \"{}\" takes a single value, found {}",
                    op.name(),
                    node.describe()
                ),
            ));
        }
    };
    if values.is_empty() {
        return Err(Located::new(
            node.line,
            format!("operator \"{}\" has no values", op.name()),
        ));
    }
    Ok(values)
}

/// A scalar node as a [`Scalar`].
pub(crate) fn scalar(node: &Node, what: &str) -> Res<Scalar> {
    match &node.kind {
        NodeKind::Scalar { text } => Ok(Scalar {
            text: text.clone(),
            line: node.line,
        }),
        _ => Err(node.wrong_type(what)),
    }
}
