//! Summary templates: `"{agent} ({class}) read {path}"`. Placeholders are checked when the rule
//! is loaded; rendering only happens when a rule fires.

use std::fmt::Write;

use super::{
    compile::Compiler,
    error::{Located, Res},
    field::{Ctx, Field, Shown},
};

#[derive(Debug)]
enum Part {
    Text(String),
    Field(Field),
    /// The rule's name.
    Rule,
    /// Events (or distinct values) counted in the window when a rate rule fired.
    RateCount,
    /// The rate window, e.g. `1m`.
    Window,
}

#[derive(Debug)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// What a fired rule adds to the event's fields.
pub(crate) struct Extra<'a> {
    pub rule: &'a str,
    pub count: usize,
    pub window: Option<std::time::Duration>,
}

impl Template {
    /// `{{` and `}}` are literal braces.
    pub fn parse(text: &str, line: usize, cx: &Compiler<'_>, has_rate: bool) -> Res<Template> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                lit.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(Located::new(
                    line,
                    "summary has an unmatched \"}\" (write \"}}\")",
                ));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| Located::new(line, "summary has an unclosed \"{\""))?;
            let name = tail[1..end].trim();
            let part = match name {
                "rule" => Part::Rule,
                "rate_count" | "window" if !has_rate => {
                    return Err(Located::new(
                        line,
                        format!("summary placeholder \"{{{name}}}\" needs a rate"),
                    ));
                }
                "rate_count" => Part::RateCount,
                "window" => Part::Window,
                _ => {
                    let field = Field::parse(name).ok_or_else(|| {
                        Located::new(line, format!("unknown summary placeholder \"{{{name}}}\""))
                    })?;
                    cx.check_field(field, line)?;
                    Part::Field(field)
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, cx: &Ctx<'_>, extra: &Extra<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            // Writing to a String cannot fail.
            let _ = match p {
                Part::Text(t) => {
                    out.push_str(t);
                    Ok(())
                }
                Part::Field(f) => write!(out, "{}", Shown(*f, cx.get(*f))),
                Part::Rule => {
                    out.push_str(extra.rule);
                    Ok(())
                }
                Part::RateCount => write!(out, "{}", extra.count),
                Part::Window => match extra.window {
                    Some(w) => write!(out, "{}", humantime::format_duration(w)),
                    None => Ok(()),
                },
            };
        }
        out
    }
}
