//! The tree from saphyr's event stream: anchors and aliases, merge keys (`<<`) and duplicate
//! keys handled as PyYAML's `SafeLoader` constructs them.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::resolve::{resolve_scalar, unknown_tag};
use super::{Document, DuplicateKey, Node, Value, YamlError, err_at, scalar_text};

pub(super) struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    duplicates: Vec<DuplicateKey>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            parser: Parser::new_from_str(text),
            anchors: HashMap::new(),
            duplicates: Vec::new(),
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(YamlError {
                message: e.info().to_string(),
                line: e.marker().line(),
                col: e.marker().col() + 1,
            }),
            None => Err(YamlError {
                message: "unexpected end of the YAML stream".into(),
                line: 0,
                col: 0,
            }),
        }
    }

    pub(super) fn stream(&mut self) -> Result<Document, YamlError> {
        let mut root = None;
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        // PyYAML's yaml.load() refuses streams with more than one document.
                        return Err(err_at(
                            "expected a single document in the stream, but found another document",
                            &span,
                        ));
                    }
                    let (event, span) = self.next()?;
                    root = Some(self.node(event, span, "")?);
                }
                other => return Err(err_at(format!("unexpected YAML event {other:?}"), &span)),
            }
        }
        Ok(Document {
            root,
            duplicates: std::mem::take(&mut self.duplicates),
        })
    }

    fn node(&mut self, event: Event<'a>, span: Span, path: &str) -> Result<Node, YamlError> {
        let (line, col) = (span.start.line(), span.start.col() + 1);
        let (value, anchor) = match event {
            Event::Alias(id) => {
                return self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| err_at("found undefined or recursive alias", &span));
            }
            Event::Scalar(text, style, anchor, tag) => {
                (resolve_scalar(&text, style, tag.as_deref(), &span)?, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", &span)?;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let child = format!("{path}[{}]", items.len());
                    items.push(self.node(event, span, &child)?);
                }
                (Value::Seq(items), anchor)
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", &span)?;
                (self.mapping(path)?, anchor)
            }
            other => return Err(err_at(format!("unexpected YAML event {other:?}"), &span)),
        };
        let node = Node { value, line, col };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn mapping(&mut self, path: &str) -> Result<Value, YamlError> {
        let mut explicit: Vec<(Node, Node)> = Vec::new();
        let mut merged: Vec<(Node, Node)> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let is_merge =
                matches!(&event, Event::Scalar(t, ScalarStyle::Plain, _, None) if t == "<<");
            let key = self.node(event, span, path)?;
            let key_text = match &key.value {
                Value::Seq(_) | Value::Map(_) => {
                    return Err(err_at("found unhashable key", &span));
                }
                v => scalar_text(v),
            };
            let child_path = if path.is_empty() {
                key_text.clone()
            } else {
                format!("{path}.{key_text}")
            };
            let (event, span) = self.next()?;
            let value = self.node(event, span, &child_path)?;
            if is_merge {
                merged.splice(0..0, merge_sources(value, &span)?);
                continue;
            }
            if let Some(first_line) = seen.insert(key_text.clone(), key.line) {
                self.duplicates.push(DuplicateKey {
                    parent: path.to_string(),
                    key: key_text,
                    first_line,
                    line: key.line,
                });
            }
            explicit.push((key, value));
        }
        // PyYAML puts merged entries first, so explicit keys override them.
        merged.extend(explicit);
        Ok(Value::Map(merged))
    }
}

/// The entries a `<<` value contributes, in the order that lets the earliest source win.
fn merge_sources(value: Node, span: &Span) -> Result<Vec<(Node, Node)>, YamlError> {
    match value.value {
        Value::Map(entries) => Ok(entries),
        Value::Seq(items) => {
            let mut out = Vec::new();
            // PyYAML reverses the list so that earlier mappings override later ones.
            for item in items.into_iter().rev() {
                match item.value {
                    Value::Map(entries) => out.extend(entries),
                    _ => return Err(err_at("expected a mapping for merging", span)),
                }
            }
            Ok(out)
        }
        _ => Err(err_at(
            "expected a mapping or list of mappings for merging",
            span,
        )),
    }
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str, span: &Span) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(t) if t.is_yaml_core_schema() && t.suffix == expected => Ok(()),
        Some(t) => Err(unknown_tag(t, span)),
    }
}
