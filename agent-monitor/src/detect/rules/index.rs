//! Which rules can match an event, found without looking at every rule: rules are bucketed by
//! agent class and event kind, and within a bucket each rule with a string or number test at
//! the top of its condition (an "anchor") is reached through one GlobSet or hash lookup per
//! field. Only the rules the anchors select, plus the rules without one, are evaluated, so the
//! cost per event stays flat as the rule count grows. Paths and names repeat, while a GlobSet
//! whose patterns need a regex costs far more than a hash probe, so each anchor remembers the
//! glob hits of the strings it saw last.

use std::{collections::BTreeSet, sync::Arc};

use foldhash::HashMap;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::{
    compile::Cond,
    condition::Op,
    error::{Located, Res},
    field::{Ctx, Field, FieldType, Value},
    kind::{ALL_KINDS, KIND_COUNT, Kind},
    matcher::{self, Matcher, Test},
    rule::Rule,
};
use crate::detect::recent::RecentMemo;

pub(crate) struct Index {
    /// Classes some rule names; each has its own row of buckets.
    rows: HashMap<Box<str>, usize>,
    /// The row for every class no rule names.
    default_row: usize,
    buckets: Vec<Bucket>,
    /// By rule: its whole condition is one anchorable test, so an anchor hit proves it.
    exact: Vec<bool>,
    /// The rows of the classes seen last, found by pointer: the agents of a class share one
    /// name (the identity stage interns it), so most events skip hashing and comparing it.
    /// Holding the names keeps their addresses from being reused for another.
    recent_rows: Vec<(Arc<str>, usize)>,
}

/// Classes whose row is remembered by pointer.
const RECENT_ROWS: usize = 8;

#[derive(Default)]
struct Bucket {
    /// Rules without an anchor: always evaluated.
    always: Vec<u32>,
    anchors: Vec<Anchor>,
}

/// The anchors of one field within a bucket.
struct Anchor {
    field: Field,
    /// Shared by every bucket whose anchor has the same globs: most rules apply to every class,
    /// so each class's row repeats the same lists, and a built set is the index's largest part.
    globs: Arc<GlobSet>,
    /// Rule of each glob, by glob number.
    glob_rules: Vec<u32>,
    ints: HashMap<i128, Vec<u32>>,
    /// The rules each recently seen string's globs selected.
    recent: RecentMemo<Box<[u32]>>,
}

/// Distinct strings per generation of an anchor's memo of glob hits.
const RECENT: usize = 512;

/// Reusable buffers, so that lookups do not allocate.
#[derive(Default)]
pub(crate) struct Scratch {
    pub candidates: Vec<u32>,
    /// The candidates whose condition their anchor already proved (sorted).
    pub proven: Vec<u32>,
    glob_hits: Vec<usize>,
}

impl Index {
    /// Cannot fail: an anchor whose globs do not build (already validated, so only a size limit
    /// could hit) leaves its rules to be evaluated on every event of the bucket instead.
    pub fn build(rules: &[Rule]) -> Index {
        let named: BTreeSet<&str> = rules.iter().flat_map(|r| r.scope.named()).collect();
        let rows: HashMap<Box<str>, usize> = named
            .iter()
            .enumerate()
            .map(|(i, c)| ((*c).into(), i))
            .collect();
        let default_row = named.len();
        // Per bucket and field: the globs and numbers collected before building the sets.
        let mut pending: Vec<Vec<PendingAnchor>> = Vec::new();
        let mut buckets: Vec<Bucket> = Vec::new();
        for _ in 0..=default_row {
            for _ in ALL_KINDS {
                buckets.push(Bucket::default());
                pending.push(Vec::new());
            }
        }
        let row_classes = named.iter().map(|c| Some(*c)).chain([None]);
        for (row, class) in row_classes.enumerate() {
            for (i, rule) in rules.iter().enumerate() {
                let applies = match class {
                    Some(c) => rule.scope.applies(c),
                    None => rule.scope.classes.is_none(),
                };
                if !applies {
                    continue;
                }
                let Ok(id) = u32::try_from(i) else { break };
                for kind in &rule.kinds {
                    let b = row * KIND_COUNT + kind.index();
                    let anchored = anchors(&rule.cond)
                        .is_some_and(|t| add_anchors(&mut pending[b], &t, id).is_ok());
                    if !anchored {
                        buckets[b].always.push(id);
                    }
                }
            }
        }
        let mut built: HashMap<Vec<Glob>, Arc<GlobSet>> = HashMap::default();
        for (bucket, anchors) in buckets.iter_mut().zip(pending) {
            for p in anchors {
                let Ok(globs) = shared_set(&mut built, &p.globs) else {
                    bucket.always.extend(&p.glob_rules);
                    bucket.always.extend(p.ints.values().flatten());
                    bucket.always.sort_unstable();
                    bucket.always.dedup();
                    continue;
                };
                bucket.anchors.push(Anchor {
                    field: p.field,
                    globs,
                    glob_rules: p.glob_rules,
                    ints: p.ints,
                    recent: RecentMemo::new(RECENT),
                });
            }
        }
        Index {
            rows,
            default_row,
            buckets,
            exact: rules
                .iter()
                .map(|r| matches!(&r.cond, Cond::Test(t) if usable(t)))
                .collect(),
            recent_rows: Vec::new(),
        }
    }

    fn row(&mut self, class: &Arc<str>) -> usize {
        if let Some((_, row)) = self.recent_rows.iter().find(|(c, _)| Arc::ptr_eq(c, class)) {
            return *row;
        }
        let row = self.rows.get(&**class).copied().unwrap_or(self.default_row);
        if self.recent_rows.len() == RECENT_ROWS {
            self.recent_rows.remove(0);
        }
        self.recent_rows.push((class.clone(), row));
        row
    }

    /// Fills `scratch.candidates` with the rules that may match, in rule order; `class` is
    /// `cx.class`, shared.
    pub fn candidates(
        &mut self,
        kind: Kind,
        class: &Arc<str>,
        cx: &Ctx<'_>,
        scratch: &mut Scratch,
    ) {
        let row = self.row(class);
        let out = &mut scratch.candidates;
        out.clear();
        scratch.proven.clear();
        let Some(bucket) = self.buckets.get_mut(row * KIND_COUNT + kind.index()) else {
            return;
        };
        out.extend_from_slice(&bucket.always);
        if bucket.anchors.is_empty() {
            return;
        }
        let from = out.len();
        for a in &mut bucket.anchors {
            a.collect(cx.get(a.field), out, &mut scratch.glob_hits);
        }
        // A rule anchored in this bucket is never among its `always` rules, so these hits are
        // the anchors'. Evaluating a proven condition again would repeat its glob match, the
        // dearest step on the way to a containment (PERF-ANCHORS row 6).
        let exact = &self.exact;
        scratch.proven.extend(
            out[from..]
                .iter()
                .copied()
                .filter(|&r| exact.get(r as usize) == Some(&true)),
        );
        scratch.proven.sort_unstable();
        scratch.proven.dedup();
        out.sort_unstable();
        out.dedup();
    }
}

impl Anchor {
    fn collect(&mut self, value: Value<'_>, out: &mut Vec<u32>, hits: &mut Vec<usize>) {
        match value {
            Value::Str(s) => {
                if self.globs.is_empty() {
                    return;
                }
                let (globs, glob_rules) = (&self.globs, &self.glob_rules);
                let hit_rules = || {
                    globs.matches_into(s, hits);
                    hits.iter()
                        .filter_map(|g| glob_rules.get(*g))
                        .copied()
                        .collect()
                };
                self.recent
                    .with(s, hit_rules, |rules| out.extend_from_slice(rules));
            }
            Value::Int(i) => {
                if let Some(rules) = self.ints.get(&i) {
                    out.extend_from_slice(rules);
                }
            }
            Value::StrList(items) => {
                for s in items {
                    self.collect(Value::Str(s), out, hits);
                }
            }
            Value::IntList(items) => {
                for i in items {
                    self.collect(Value::Int((*i).into()), out, hits);
                }
            }
            Value::Bool(_) | Value::Addr(_) | Value::Missing => {}
        }
    }
}

/// The set these globs build, built once and shared by every anchor with the same globs.
fn shared_set(
    built: &mut HashMap<Vec<Glob>, Arc<GlobSet>>,
    globs: &[Glob],
) -> Result<Arc<GlobSet>, globset::Error> {
    if let Some(set) = built.get(globs) {
        return Ok(set.clone());
    }
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        builder.add(g.clone());
    }
    let set = Arc::new(builder.build()?);
    built.insert(globs.to_vec(), set.clone());
    Ok(set)
}

struct PendingAnchor {
    field: Field,
    globs: Vec<Glob>,
    glob_rules: Vec<u32>,
    ints: HashMap<i128, Vec<u32>>,
}

/// Tests at least one of which holds whenever the condition holds: a string test (as globs)
/// or a number `equals`/`in`; for `all`, the first child that has anchors; for `any`, the
/// union of its children's anchors if every child has some. `None`: evaluate always.
fn anchors(cond: &Cond) -> Option<Vec<&Test>> {
    match cond {
        Cond::Test(t) => usable(t).then(|| vec![t]),
        Cond::All(items) => items.iter().find_map(anchors),
        Cond::Any(items) => {
            let mut out = Vec::new();
            for i in items.iter() {
                out.extend(anchors(i)?);
            }
            (!out.is_empty()).then_some(out)
        }
        Cond::True | Cond::Not(_) => None,
    }
}

fn usable(t: &Test) -> bool {
    match t.field.ty() {
        FieldType::Str => matches!(
            t.op,
            Op::Equals | Op::In | Op::StartsWith | Op::EndsWith | Op::Contains | Op::Glob
        ),
        FieldType::Int => matches!(t.matcher, Matcher::IntIn(_)),
        FieldType::Bool | FieldType::Addr => false,
    }
}

/// Adds a rule's anchors to its bucket; on error nothing is added.
fn add_anchors(pending: &mut Vec<PendingAnchor>, tests: &[&Test], rule: u32) -> Res<()> {
    let globs = tests
        .iter()
        .map(|t| match t.matcher {
            Matcher::IntIn(_) => Ok(Vec::new()),
            _ => t.values.iter().map(|v| anchor_glob(t.op, v)).collect(),
        })
        .collect::<Res<Vec<Vec<_>>>>()?;
    for (t, globs) in tests.iter().zip(globs) {
        let i = match pending.iter().position(|p| p.field == t.field) {
            Some(i) => i,
            None => {
                pending.push(PendingAnchor {
                    field: t.field,
                    globs: Vec::new(),
                    glob_rules: Vec::new(),
                    ints: HashMap::default(),
                });
                pending.len() - 1
            }
        };
        let p = &mut pending[i];
        if let Matcher::IntIn(values) = &t.matcher {
            for v in values {
                p.ints.entry(*v).or_default().push(rule);
            }
        }
        for glob in globs {
            p.globs.push(glob);
            p.glob_rules.push(rule);
        }
    }
    Ok(())
}

/// A glob that accepts exactly what the string test accepts, so an anchor never drops a match.
fn anchor_glob(op: Op, value: &str) -> Res<globset::Glob> {
    if op == Op::Glob {
        return matcher::glob(value, 0);
    }
    let e = globset::escape(value);
    let pattern = match op {
        Op::StartsWith => format!("{e}*"),
        Op::EndsWith => format!("*{e}"),
        Op::Contains => format!("*{e}*"),
        _ => e,
    };
    GlobBuilder::new(&pattern)
        .literal_separator(false)
        .build()
        .map_err(|e| Located::new(0, format!("glob index: {e}")))
}
