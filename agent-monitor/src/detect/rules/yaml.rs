//! A YAML tree that remembers the line of every node, so that errors can point at it.
//! serde_yaml does not expose node positions; yaml-rust2's event parser does.

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

use super::error::{Located, Res};

/// One YAML node and its 1-based line.
#[derive(Debug)]
pub(crate) struct Node {
    pub line: usize,
    pub kind: NodeKind,
}

#[derive(Debug)]
pub(crate) enum NodeKind {
    /// Quoted or not: operands are typed by the field they test, not by YAML.
    Scalar {
        text: String,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar; `what` names the expected thing in the error.
    pub fn as_str(&self, what: &str) -> Res<&str> {
        match &self.kind {
            NodeKind::Scalar { text } => Ok(text),
            _ => Err(self.wrong_type(what)),
        }
    }

    pub fn as_seq(&self, what: &str) -> Res<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Ok(items),
            _ => Err(self.wrong_type(what)),
        }
    }

    pub fn as_map(&self, what: &str) -> Res<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Ok(entries),
            _ => Err(self.wrong_type(what)),
        }
    }

    /// A scalar or a list of scalars, as a list.
    pub fn as_str_list(&self, what: &str) -> Res<Vec<&str>> {
        match &self.kind {
            NodeKind::Scalar { text } => Ok(vec![text.as_str()]),
            NodeKind::Seq(items) => items.iter().map(|i| i.as_str(what)).collect(),
            NodeKind::Map(_) => Err(self.wrong_type(what)),
        }
    }

    pub fn wrong_type(&self, what: &str) -> Located {
        Located::new(
            self.line,
            format!("expected {what}, found {}", self.describe()),
        )
    }
}

/// Parses one YAML document. An empty text is an empty mapping.
pub(crate) fn parse(text: &str) -> Res<Node> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| {
            Located::new(
                e.marker().line().max(1),
                format!("YAML syntax: {}", e.info()),
            )
        })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    if builder.documents > 1 {
        return Err(Located::new(1, "one YAML document per file"));
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        kind: NodeKind::Map(Vec::new()),
    }))
}

/// Turns the parser's event stream into nodes. Collections under construction are on a stack;
/// a finished node goes into its parent (or becomes the root).
#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    /// Map keys waiting for their value, one slot per open mapping.
    keys: Vec<Option<Node>>,
    root: Option<Node>,
    documents: usize,
    error: Option<Located>,
}

impl Builder {
    fn fail(&mut self, line: usize, message: &str) {
        if self.error.is_none() {
            self.error = Some(Located::new(line, message));
        }
    }

    fn finish(&mut self, node: Node) {
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut parent.kind {
            NodeKind::Seq(items) => items.push(node),
            NodeKind::Map(entries) => match self.keys.last_mut() {
                Some(slot @ None) => *slot = Some(node),
                Some(slot @ Some(_)) => {
                    if let Some(key) = slot.take() {
                        entries.push((key, node));
                    }
                }
                None => {}
            },
            NodeKind::Scalar { .. } => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line().max(1);
        match ev {
            Event::DocumentStart => self.documents += 1,
            Event::Scalar(text, _, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    self.fail(
                        line,
                        "YAML anchors and tags are not supported: use lists or macros",
                    );
                }
                self.finish(Node {
                    line,
                    kind: NodeKind::Scalar { text },
                });
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if anchor != 0 || tag.is_some() {
                    self.fail(
                        line,
                        "YAML anchors and tags are not supported: use lists or macros",
                    );
                }
                let kind = if matches!(ev, Event::SequenceStart(..)) {
                    NodeKind::Seq(Vec::new())
                } else {
                    self.keys.push(None);
                    NodeKind::Map(Vec::new())
                };
                self.stack.push(Node { line, kind });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if matches!(ev, Event::MappingEnd) {
                    self.keys.pop();
                }
                if let Some(node) = self.stack.pop() {
                    self.finish(node);
                }
            }
            Event::Alias(_) => {
                self.fail(line, "YAML aliases are not supported: use lists or macros")
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept() {
        let root = parse("a: 1\nb:\n  - x\n  - {c: d}\n").expect("parses");
        let entries = root.as_map("map").expect("map");
        assert_eq!(entries[0].0.line, 1);
        assert_eq!(entries[1].0.line, 2);
        let items = entries[1].1.as_seq("seq").expect("seq");
        assert_eq!(items[0].line, 3);
        assert_eq!(items[1].line, 4);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("a: 1\nb: [x\nc: 2\n").expect_err("bad");
        assert!(err.line >= 2, "{err:?}");
    }
}
