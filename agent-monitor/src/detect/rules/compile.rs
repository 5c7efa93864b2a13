//! Condition AST to an evaluable tree: macros inlined, fields checked against the rule's event
//! kinds, operands typed. Also writes a canonical text of the resolved condition, which reload
//! compares to decide whether a rule's rate state can be kept.

use std::{collections::HashMap, fmt::Write};

use super::{
    condition::CondAst,
    error::{Located, Res},
    field::{Ctx, Field},
    kind::Kind,
    matcher::Test,
};

#[derive(Debug)]
pub(crate) enum Cond {
    True,
    All(Box<[Cond]>),
    Any(Box<[Cond]>),
    Not(Box<Cond>),
    Test(Test),
}

impl Cond {
    pub fn eval(&self, cx: &Ctx<'_>) -> bool {
        match self {
            Cond::True => true,
            Cond::All(items) => items.iter().all(|c| c.eval(cx)),
            Cond::Any(items) => items.iter().any(|c| c.eval(cx)),
            Cond::Not(inner) => !inner.eval(cx),
            Cond::Test(t) => t.matches(cx.get(t.field)),
        }
    }
}

pub(crate) struct Compiler<'a> {
    pub macros: &'a HashMap<String, CondAst>,
    pub kinds: &'a [Kind],
    /// Macros being expanded, to refuse cycles.
    pub stack: Vec<String>,
}

impl Compiler<'_> {
    pub fn compile(&mut self, ast: &CondAst, canon: &mut String) -> Res<Cond> {
        Ok(match ast {
            CondAst::All(items) | CondAst::Any(items) => {
                let all = matches!(ast, CondAst::All(_));
                canon.push_str(if all { "all(" } else { "any(" });
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.compile(i, canon)?);
                    canon.push(',');
                }
                canon.push(')');
                if all {
                    Cond::All(out.into())
                } else {
                    Cond::Any(out.into())
                }
            }
            CondAst::Not(inner) => {
                canon.push_str("not(");
                let c = self.compile(inner, canon)?;
                canon.push(')');
                Cond::Not(Box::new(c))
            }
            CondAst::Macro { name, line } => {
                if self.stack.iter().any(|m| m == name) {
                    return Err(Located::new(
                        *line,
                        format!(
                            "macro \"{name}\" refers to itself ({} -> {name})",
                            self.stack.join(" -> ")
                        ),
                    ));
                }
                let body = self
                    .macros
                    .get(name)
                    .ok_or_else(|| Located::new(*line, format!("unknown macro \"{name}\"")))?;
                self.stack.push(name.clone());
                let c = self.compile(body, canon).map_err(|e| Located {
                    message: format!("in macro \"{name}\": {}", e.message),
                    ..e
                });
                self.stack.pop();
                c?
            }
            CondAst::Test {
                field,
                op,
                values,
                line,
            } => {
                self.check_field(*field, *line)?;
                let texts: Vec<&str> = values.iter().map(|v| v.text.as_str()).collect();
                let _ = write!(canon, "{}:{}:{texts:?}", field.name(), op.name());
                Cond::Test(Test::compile(*field, *op, values, *line)?)
            }
        })
    }

    /// A field must exist in at least one of the rule's kinds. On events of a kind without it,
    /// tests on it are false (as for an absent optional value) and summaries show `-`.
    pub fn check_field(&self, field: Field, line: usize) -> Res<()> {
        if self.kinds.iter().any(|k| field.available(*k)) {
            return Ok(());
        }
        let kinds: Vec<_> = self.kinds.iter().map(|k| k.name()).collect();
        Err(Located::new(
            line,
            format!(
                "field \"{}\" is not available for \"{}\" events",
                field.name(),
                kinds.join(", ")
            ),
        ))
    }
}
