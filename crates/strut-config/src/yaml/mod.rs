//! YAML reading with PyYAML's semantics.
//!
//! truss parses config.yaml with PyYAML's `SafeLoader`, which implements YAML 1.1: `on`/`yes`
//! are booleans, `1e3` is a *string* (PyYAML's float pattern wants a dot and a signed
//! exponent), `0x1F` and `1:30` are integers, `2024-01-01` is a date. A YAML 1.2 reader gives
//! different values for those, and the difference is visible (environment variables are
//! stringified, strings are not coerced to numbers). So we take only the event stream from
//! `saphyr-parser` and build and resolve the tree ourselves, keeping every node's position.
//!
//! build.rs turns the events into the tree (anchors, merge keys, duplicates); resolve.rs
//! gives scalars their types by PyYAML's resolver.

mod build;
mod resolve;

use saphyr_parser::Span;

use build::Builder;

/// A resolved YAML value with the position (1-based line and column) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A YAML 1.1 timestamp, kept as Python's `str()` of the date or datetime would print it.
    Timestamp(String),
    Seq(Vec<Node>),
    /// Entries in file order, merge keys (`<<`) already applied; later entries win on lookup,
    /// as they do in the dict PyYAML builds.
    Map(Vec<(Node, Node)>),
}

/// A key given twice in one mapping. truss 0.18 only warns about these and keeps the last.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    /// Dotted path of the mapping holding the key, "" for the top level.
    pub parent: String,
    pub key: String,
    pub first_line: usize,
    pub line: usize,
}

#[derive(Debug)]
pub struct Document {
    /// None for an empty stream, which truss treats as `{}`.
    pub root: Option<Node>,
    pub duplicates: Vec<DuplicateKey>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (line {line}, column {col})")]
pub struct YamlError {
    pub message: String,
    pub line: usize,
    pub col: usize,
}

impl Value {
    /// The name pydantic uses for the Python type of this value in its error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Timestamp(_) => "date",
            Value::Seq(_) => "list",
            Value::Map(_) => "dict",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Looks a key up the way a Python dict would after construction: the last entry wins.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

pub fn parse(text: &str) -> Result<Document, YamlError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    // Each retry indents one line of a flow collection by one more space.
    for _ in 0..256 {
        match Builder::new(&text).stream() {
            Err(e) if e.message.starts_with("invalid indentation") => {
                match indent_flow_line(&text, e.line) {
                    Some(fixed) => text = std::borrow::Cow::Owned(fixed),
                    None => return Err(e),
                }
            }
            other => return other,
        }
    }
    Err(YamlError {
        message: "invalid indentation".into(),
        line: 0,
        col: 0,
    })
}

/// saphyr enforces YAML 1.2's rule that lines inside a flow collection (`{…}`, `[…]`) are
/// indented deeper than the enclosing block; PyYAML ignores indentation inside flow
/// collections, and real configs rely on it (a closing `}` under its key). Leading spaces on
/// such a line are never content (line folding drops them), so adding one keeps the value.
/// Only lines that are certainly inside a flow collection qualify: ones after an unclosed
/// `{` or `[` earlier in the text, judged by a bracket count outside quotes and comments.
fn indent_flow_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let index = line.checked_sub(1)?;
    if index >= lines.len() || flow_depth(&lines[..index]) == 0 {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 1);
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if i == index {
            out.push(' ');
        }
        out.push_str(l);
    }
    Some(out)
}

/// Open flow brackets at the end of `lines`, ignoring quoted text and comments.
fn flow_depth(lines: &[&str]) -> i64 {
    let mut depth = 0i64;
    let mut quote: Option<char> = None;
    for line in lines {
        let mut prev = ' ';
        for c in line.chars() {
            match quote {
                Some(q) if c == q && !(q == '"' && prev == '\\') => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\''
                        if depth > 0 || matches!(prev, ' ' | ':' | '-' | '[' | '{' | ',') =>
                    {
                        quote = Some(c)
                    }
                    '#' if prev == ' ' || prev == '\t' => break,
                    '{' | '[' => depth += 1,
                    '}' | ']' => depth -= 1,
                    _ => {}
                },
            }
            prev = c;
        }
        // A single-quoted or plain line cannot carry a quote state across a block line.
        if depth == 0 {
            quote = None;
        }
    }
    depth.max(0)
}

fn err_at(message: impl Into<String>, span: &Span) -> YamlError {
    YamlError {
        message: message.into(),
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// The text a scalar key prints as in a key path.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => crate::pyfmt::float_repr(*f),
        Value::Str(s) | Value::Timestamp(s) => s.clone(),
        Value::Seq(_) | Value::Map(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_duplicate_and_reports_it() {
        let doc = parse("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n").unwrap();
        let root = doc.root.unwrap();
        assert_eq!(root.get("a").unwrap().value, Value::Int(3));
        assert_eq!(
            root.get("b").unwrap().get("c").unwrap().value,
            Value::Int(2)
        );
        let found: Vec<_> = doc
            .duplicates
            .iter()
            .map(|d| (d.parent.as_str(), d.key.as_str(), d.first_line, d.line))
            .collect();
        assert_eq!(found, vec![("b", "c", 3, 4), ("", "a", 1, 5)]);
    }

    #[test]
    fn applies_merge_keys_with_explicit_keys_winning() {
        let doc = parse("base: &b {cpu: '1', memory: 2Gi}\nres:\n  <<: *b\n  cpu: '4'\n").unwrap();
        let res = doc.root.unwrap().get("res").unwrap().clone();
        assert_eq!(res.get("cpu").unwrap().as_str(), Some("4"));
        assert_eq!(res.get("memory").unwrap().as_str(), Some("2Gi"));
        assert!(doc.duplicates.is_empty());
    }

    #[test]
    fn rejects_what_safe_loader_rejects() {
        assert!(parse("x: !foo 3\n").unwrap_err().message.contains("'!foo'"));
        assert!(
            parse("a: 1\n---\nb: 2\n")
                .unwrap_err()
                .message
                .contains("single document")
        );
        let e = parse("a: [1,\nb: 2\n").unwrap_err();
        assert!(e.line >= 1, "{e:?}");
        assert!(parse("").unwrap().root.is_none());
    }

    #[test]
    fn accepts_flow_collections_indented_as_pyyaml_allows() {
        // A closing brace level with its key, as in a real config PyYAML accepts.
        let text = "m:\n  x: {\n    \"a\": [\n        1\n    ]\n  }\n  tags:\n    - t\n";
        let root = parse(text).unwrap().root.unwrap();
        let m = root.get("m").unwrap();
        assert_eq!(
            m.get("x").unwrap().get("a").unwrap().value,
            Value::Seq(vec![Node {
                value: Value::Int(1),
                line: 4,
                col: 9
            }])
        );
        assert_eq!(m.get("tags").unwrap().line, 8);
        // Bad indentation outside flow collections is still an error.
        assert!(parse("a:\n  b: 1\n c: 2\n").is_err());
    }

    #[test]
    fn records_positions() {
        let doc = parse("a:\n  b: x\n").unwrap();
        let b = doc
            .root
            .unwrap()
            .get("a")
            .unwrap()
            .get("b")
            .unwrap()
            .clone();
        assert_eq!((b.line, b.col), (2, 6));
    }
}
