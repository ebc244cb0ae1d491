//! YAML reading with PyYAML's semantics.
//!
//! truss parses config.yaml with PyYAML's `SafeLoader`, which implements YAML 1.1: `on`/`yes`
//! are booleans, `1e3` is a *string* (PyYAML's float pattern wants a dot and a signed
//! exponent), `0x1F` and `1:30` are integers, `2024-01-01` is a date. A YAML 1.2 reader gives
//! different values for those, and the difference is visible (environment variables are
//! stringified, strings are not coerced to numbers). So we take only the event stream from
//! `saphyr-parser` and build and resolve the tree ourselves, keeping every node's position.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

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
        let mut builder = Builder {
            parser: Parser::new_from_str(&text),
            anchors: HashMap::new(),
            duplicates: Vec::new(),
        };
        match builder.stream() {
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

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    duplicates: Vec<DuplicateKey>,
}

fn err_at(message: impl Into<String>, span: &Span) -> YamlError {
    YamlError {
        message: message.into(),
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

impl<'a> Builder<'a> {
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

    fn stream(&mut self) -> Result<Document, YamlError> {
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

fn check_collection_tag(tag: Option<&Tag>, expected: &str, span: &Span) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(t) if t.is_yaml_core_schema() && t.suffix == expected => Ok(()),
        Some(t) => Err(unknown_tag(t, span)),
    }
}

fn unknown_tag(tag: &Tag, span: &Span) -> YamlError {
    let shown = if tag.is_yaml_core_schema() {
        format!("tag:yaml.org,2002:{}", tag.suffix)
    } else {
        tag.to_string()
    };
    err_at(
        format!("could not determine a constructor for the tag '{shown}'"),
        span,
    )
}

fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: &Span,
) -> Result<Value, YamlError> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            // A lone `!` is the non-specific tag: PyYAML reads the scalar as a string.
            if tag.handle == "!" && tag.suffix.is_empty() {
                return Ok(Value::Str(text.to_string()));
            }
            return Err(unknown_tag(tag, span));
        }
        let bad = || {
            err_at(
                format!("invalid value {text:?} for tag !!{}", tag.suffix),
                span,
            )
        };
        return match tag.suffix.as_str() {
            "str" => Ok(Value::Str(text.to_string())),
            "null" => Ok(Value::Null),
            "bool" => resolve_bool(text).map(Value::Bool).ok_or_else(bad),
            "int" => resolve_int(text).ok_or_else(bad),
            "float" => resolve_float(text)
                .or_else(|| resolve_int(text).map(int_to_float))
                .ok_or_else(bad),
            "timestamp" => resolve_timestamp(text).ok_or_else(bad),
            _ => Err(unknown_tag(tag, span)),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_string()));
    }
    // PyYAML tries its implicit resolvers in this order for a plain scalar.
    if let Some(b) = resolve_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(f) = resolve_float(text) {
        return Ok(f);
    }
    if let Some(i) = resolve_int(text) {
        return Ok(i);
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(t) = resolve_timestamp(text) {
        return Ok(t);
    }
    if text == "=" {
        // SafeLoader resolves `=` to the `value` tag and has no constructor for it.
        return Err(err_at(
            "could not determine a constructor for the tag 'tag:yaml.org,2002:value'",
            span,
        ));
    }
    Ok(Value::Str(text.to_string()))
}

fn int_to_float(v: Value) -> Value {
    match v {
        Value::Int(i) => Value::Float(i as f64),
        other => other,
    }
}

fn resolve_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn all(text: &str, f: impl Fn(u8) -> bool) -> bool {
    text.bytes().all(f)
}

/// `[0-5]?[0-9]` groups after the first, as in PyYAML's sexagesimal patterns.
fn sexagesimal_tail(parts: &[&str]) -> bool {
    parts.iter().all(|p| {
        (1..=2).contains(&p.len())
            && all(p, |b| b.is_ascii_digit())
            && (p.len() == 1 || p.as_bytes()[0] <= b'5')
    })
}

fn resolve_int(text: &str) -> Option<Value> {
    let (neg, body) = split_sign(text);
    let digits_ok =
        |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c == '_' || c.is_digit(radix));
    let value: i128 = if let Some(bin) = body.strip_prefix("0b") {
        if !digits_ok(bin, 2) {
            return None;
        }
        parse_radix(bin, 2)?
    } else if let Some(hex) = body.strip_prefix("0x") {
        if !digits_ok(hex, 16) {
            return None;
        }
        parse_radix(hex, 16)?
    } else if body == "0" {
        0
    } else if let Some(oct) = body.strip_prefix('0') {
        if !digits_ok(oct, 8) {
            return None;
        }
        parse_radix(oct, 8)?
    } else if body.contains(':') {
        let parts: Vec<&str> = body.split(':').collect();
        let head = parts[0];
        if head.is_empty()
            || !head.starts_with(|c: char| ('1'..='9').contains(&c))
            || !digits_ok(head, 10)
            || !sexagesimal_tail(&parts[1..])
        {
            return None;
        }
        let mut acc = parse_radix(head, 10)?;
        for p in &parts[1..] {
            acc = acc.checked_mul(60)?.checked_add(p.parse::<i128>().ok()?)?;
        }
        acc
    } else {
        if !body.starts_with(|c: char| ('1'..='9').contains(&c)) || !digits_ok(body, 10) {
            return None;
        }
        parse_radix(body, 10)?
    };
    Some(Value::Int(if neg { -value } else { value }))
}

fn parse_radix(digits: &str, radix: u32) -> Option<i128> {
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    if cleaned.is_empty() {
        return Some(0);
    }
    i128::from_str_radix(&cleaned, radix).ok()
}

fn resolve_float(text: &str) -> Option<Value> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    let (neg, body) = split_sign(text);
    let sign = if neg { -1.0 } else { 1.0 };
    let is_num = |s: &str| all(s, |b| b.is_ascii_digit() || b == b'_');
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if let Some(exp) = exponent {
        // PyYAML requires an explicit sign on the exponent: `1.0e+3` is a float, `1.0e3` is not.
        let (_, digits) = split_sign(exp);
        if !(exp.starts_with(['+', '-'])
            && !digits.is_empty()
            && all(digits, |b| b.is_ascii_digit()))
        {
            return None;
        }
    }
    let dot = mantissa.find('.')?;
    let (int_part, frac) = (&mantissa[..dot], &mantissa[dot + 1..]);
    if int_part.contains(':') {
        // Sexagesimal float, e.g. 1:30.5; no exponent allowed.
        let parts: Vec<&str> = int_part.split(':').collect();
        if exponent.is_some()
            || parts[0].is_empty()
            || !parts[0].as_bytes()[0].is_ascii_digit()
            || !is_num(parts[0])
            || !sexagesimal_tail(&parts[1..])
            || !is_num(frac)
        {
            return None;
        }
        let mut acc = 0.0;
        for p in &parts {
            acc = acc * 60.0 + p.replace('_', "").parse::<f64>().ok()?;
        }
        acc = acc * 60.0 + format!("0.{}", frac.replace('_', "")).parse::<f64>().ok()? * 60.0;
        return Some(Value::Float(sign * acc / 60.0));
    }
    let int_ok = if int_part.is_empty() {
        // `.5` is allowed (no sign, digits must follow).
        !neg && text.as_bytes()[0] == b'.'
            && frac.as_bytes().first().is_some_and(u8::is_ascii_digit)
    } else {
        int_part.as_bytes()[0].is_ascii_digit() && is_num(int_part)
    };
    if !int_ok || !is_num(frac) {
        return None;
    }
    let cleaned: String = body.chars().filter(|c| *c != '_').collect();
    let cleaned = if cleaned.ends_with('.') || cleaned.contains(".e") || cleaned.contains(".E") {
        cleaned.replacen('.', ".0", 1)
    } else {
        cleaned
    };
    cleaned.parse::<f64>().ok().map(|f| Value::Float(sign * f))
}

fn resolve_timestamp(text: &str) -> Option<Value> {
    let b = text.as_bytes();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if b.len() < 8 || !digits(&b[..4]) || b[4] != b'-' {
        return None;
    }
    let rest = &text[5..];
    let (month, rest) = rest.split_once('-')?;
    let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (day, time) = rest.split_at(day_len);
    let short = |s: &str| (1..=2).contains(&s.len()) && digits(s.as_bytes());
    if !short(month) || !short(day) {
        return None;
    }
    if time.is_empty() {
        // The date-only form demands two-digit month and day.
        if month.len() != 2 || day.len() != 2 {
            return None;
        }
        return Some(Value::Timestamp(text.to_string()));
    }
    let time = time
        .strip_prefix(['T', 't'])
        .unwrap_or_else(|| time.trim_start_matches([' ', '\t']));
    let mut parts = time.splitn(3, ':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if !short(h)
        || m.len() != 2
        || !digits(m.as_bytes())
        || s.len() < 2
        || !digits(&s.as_bytes()[..2])
    {
        return None;
    }
    Some(Value::Timestamp(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str) -> Value {
        let doc = parse(&format!("k: {text}\n")).unwrap();
        doc.root.unwrap().get("k").unwrap().value.clone()
    }

    #[test]
    fn resolves_scalars_like_pyyaml() {
        assert_eq!(scalar("yes"), Value::Bool(true));
        assert_eq!(scalar("Off"), Value::Bool(false));
        assert_eq!(scalar("1e3"), Value::Str("1e3".into()));
        assert_eq!(scalar("1.5e20"), Value::Str("1.5e20".into()));
        assert_eq!(scalar("1.5e+20"), Value::Float(1.5e20));
        assert_eq!(scalar("1.0"), Value::Float(1.0));
        assert_eq!(scalar("3.10"), Value::Float(3.1));
        assert_eq!(scalar("0x1F"), Value::Int(31));
        assert_eq!(scalar("010"), Value::Int(8));
        assert_eq!(scalar("1:30"), Value::Int(90));
        assert_eq!(scalar("1_000"), Value::Int(1000));
        assert_eq!(scalar("0800"), Value::Str("0800".into()));
        assert_eq!(scalar("~"), Value::Null);
        assert_eq!(scalar(""), Value::Null);
        assert_eq!(scalar("'4'"), Value::Str("4".into()));
        assert_eq!(scalar("2024-01-01"), Value::Timestamp("2024-01-01".into()));
        assert_eq!(scalar("A10G:2"), Value::Str("A10G:2".into()));
        assert_eq!(scalar("py310"), Value::Str("py310".into()));
        assert_eq!(scalar("!!str 3"), Value::Str("3".into()));
        assert_eq!(scalar("!!int \"3\""), Value::Int(3));
        assert!(matches!(scalar(".inf"), Value::Float(f) if f.is_infinite()));
    }

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
