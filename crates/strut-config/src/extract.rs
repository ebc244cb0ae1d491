//! Reading typed values out of the YAML tree with pydantic's rules.
//!
//! truss's models are pydantic v2 models in lax mode: a string is not accepted where an int
//! is wanted unless it parses ("4" -> 4), an int is never accepted where a string is wanted,
//! `null` is only accepted for optional fields, and unknown keys are kept (`extra="allow"`).
//! Every helper here records a diagnostic with the key path and falls back to the default,
//! so one pass reports every problem and still yields a usable config for the report.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::diagnostics::Diagnostic;
use crate::yaml::{Node, Value};

/// A key that the schema does not define, with where it sits.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRef {
    pub path: String,
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Ctx {
    pub errors: Vec<Diagnostic>,
    /// Unknown keys truss keeps and rejects at push time (`validate_forbid_extra`).
    pub unknown: Vec<KeyRef>,
    /// Unknown keys truss drops silently (models that are not `ConfigModel`s).
    pub ignored: Vec<KeyRef>,
    /// Warnings truss itself logs while loading (deprecations, reserved names).
    pub notes: Vec<Diagnostic>,
}

impl Ctx {
    pub fn error(
        &mut self,
        code: &str,
        path: &str,
        line: usize,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.errors
            .push(Diagnostic::error(code, path, message, hint).at_line(Some(line)));
    }

    pub fn note(&mut self, d: Diagnostic) {
        self.notes.push(d);
    }

    fn type_error(&mut self, path: &str, node: &Node, expected: &str, hint: &str) {
        let message = format!(
            "expected {expected}, got {} {}",
            node.value.type_name(),
            show(path, node)
        );
        self.error("invalid_type", path, node.line, message, hint);
    }
}

/// What happens to keys a model does not define.
#[derive(Clone, Copy, PartialEq)]
pub enum Extra {
    /// `ConfigModel`: kept in the dump, reported as unknown (an error in strict mode).
    Keep,
    /// Plain pydantic `BaseModel`, or a model whose serialiser drops them: ignored.
    Ignore,
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A short rendering of a value for messages. Values under `secrets` are never shown.
pub fn show(path: &str, node: &Node) -> String {
    if path == "secrets" || path.starts_with("secrets.") {
        return "(value hidden)".into();
    }
    let text = match &node.value {
        Value::Str(s) => format!("{s:?}"),
        Value::Seq(_) => "[...]".into(),
        Value::Map(_) => "{...}".into(),
        other => crate::pyfmt::repr(other),
    };
    if text.chars().count() > 60 {
        format!("`{}…`", text.chars().take(60).collect::<String>())
    } else {
        format!("`{text}`")
    }
}

/// YAML to JSON as pydantic's `mode="json"` dump prints it: dates become ISO strings,
/// non-string keys their text, non-finite floats null (JSON cannot hold them).
pub fn to_json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => i64::try_from(*i)
            .map(Json::from)
            .unwrap_or_else(|_| Json::from(*i as f64)),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Str(s) => Json::String(s.clone()),
        Value::Timestamp(t) => Json::String(t.replacen(' ', "T", 1)),
        Value::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                map.insert(crate::yaml::scalar_text(&k.value), to_json(v));
            }
            Json::Object(map)
        }
    }
}

/// A mapping being read as a model: tracks which keys the model consumed.
pub struct Obj<'a> {
    pub path: String,
    pub node: &'a Node,
    entries: &'a [(Node, Node)],
    taken: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    /// `None` (with an error recorded) when `node` is not a mapping.
    pub fn new(ctx: &mut Ctx, node: &'a Node, path: &str, model: &str) -> Option<Obj<'a>> {
        match &node.value {
            Value::Map(entries) => Some(Obj {
                path: path.to_string(),
                node,
                entries,
                taken: Vec::new(),
            }),
            _ => {
                ctx.type_error(path, node, &format!("a mapping ({model})"), "");
                None
            }
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value under `key` (the last one, as in a Python dict) and marks it consumed.
    pub fn get(&mut self, key: &'a str) -> Option<&'a Node> {
        self.taken.push(key);
        self.peek(key)
    }

    pub fn peek(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn line_of(&self, key: &str) -> usize {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k.line)
            .unwrap_or(self.node.line)
    }

    /// A required key; records "field required" when absent.
    pub fn required(&mut self, ctx: &mut Ctx, key: &'a str) -> Option<&'a Node> {
        let found = self.get(key);
        if found.is_none() {
            let path = self.key_path(key);
            ctx.error(
                "missing_field",
                &path,
                self.node.line,
                format!("`{key}` is required"),
                format!("add `{key}` under `{}`", self.path),
            );
        }
        found
    }

    /// Handles the keys nobody consumed; returns them for the dump when kept.
    pub fn finish(self, ctx: &mut Ctx, extra: Extra) -> Map<String, Json> {
        let mut out = Map::new();
        for (k, v) in self.entries {
            let name = crate::yaml::scalar_text(&k.value);
            if self.taken.iter().any(|t| *t == name) || out.contains_key(&name) {
                continue;
            }
            let key_ref = KeyRef {
                path: join(&self.path, &name),
                line: k.line,
            };
            match extra {
                Extra::Keep => {
                    ctx.unknown.push(key_ref);
                    // The last duplicate wins, as in the dict truss builds.
                    let last = self.peek(&name).unwrap_or(v);
                    out.insert(name, to_json(last));
                }
                Extra::Ignore => ctx.ignored.push(key_ref),
            }
        }
        out
    }

    pub fn str(&mut self, ctx: &mut Ctx, key: &'a str, default: &str) -> String {
        match self.get(key) {
            None => default.to_string(),
            Some(node) => {
                string(ctx, node, &self.key_path(key)).unwrap_or_else(|| default.to_string())
            }
        }
    }

    pub fn opt_str(&mut self, ctx: &mut Ctx, key: &'a str) -> Option<String> {
        let node = self.get(key)?;
        if node.value == Value::Null {
            return None;
        }
        string(ctx, node, &self.key_path(key))
    }

    pub fn int(&mut self, ctx: &mut Ctx, key: &'a str, default: i64) -> i64 {
        match self.get(key) {
            None => default,
            Some(node) => lax_int(ctx, node, &self.key_path(key)).unwrap_or(default),
        }
    }

    pub fn opt_int(&mut self, ctx: &mut Ctx, key: &'a str) -> Option<i64> {
        let node = self.get(key)?;
        if node.value == Value::Null {
            return None;
        }
        lax_int(ctx, node, &self.key_path(key))
    }

    /// pydantic `strict=True` int (no strings, floats or booleans), within `min..=max`.
    pub fn strict_int(
        &mut self,
        ctx: &mut Ctx,
        key: &'a str,
        default: i64,
        min: i64,
        max: i64,
    ) -> i64 {
        self.opt_strict_int_inner(ctx, key, false, min, max)
            .unwrap_or(default)
    }

    pub fn opt_strict_int(
        &mut self,
        ctx: &mut Ctx,
        key: &'a str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        self.opt_strict_int_inner(ctx, key, true, min, max)
    }

    fn opt_strict_int_inner(
        &mut self,
        ctx: &mut Ctx,
        key: &'a str,
        nullable: bool,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let node = self.get(key)?;
        let path = self.key_path(key);
        let v = match node.value {
            Value::Null if nullable => return None,
            Value::Int(i) => i64::try_from(i).ok()?,
            _ => {
                ctx.type_error(
                    &path,
                    node,
                    "an integer (written without quotes or decimals)",
                    "",
                );
                return None;
            }
        };
        in_range(ctx, node, &path, v, min, max)
    }

    pub fn bool(&mut self, ctx: &mut Ctx, key: &'a str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(node) => lax_bool(ctx, node, &self.key_path(key)).unwrap_or(default),
        }
    }

    pub fn opt_bool(&mut self, ctx: &mut Ctx, key: &'a str) -> Option<bool> {
        let node = self.get(key)?;
        if node.value == Value::Null {
            return None;
        }
        lax_bool(ctx, node, &self.key_path(key))
    }

    pub fn float(&mut self, ctx: &mut Ctx, key: &'a str, default: f64) -> f64 {
        match self.get(key) {
            None => default,
            Some(node) => lax_float(ctx, node, &self.key_path(key)).unwrap_or(default),
        }
    }

    pub fn opt_float(&mut self, ctx: &mut Ctx, key: &'a str) -> Option<f64> {
        let node = self.get(key)?;
        if node.value == Value::Null {
            return None;
        }
        lax_float(ctx, node, &self.key_path(key))
    }

    pub fn str_list(&mut self, ctx: &mut Ctx, key: &'a str) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some(node) => string_list(ctx, node, &self.key_path(key)).unwrap_or_default(),
        }
    }

    pub fn opt_str_list(&mut self, ctx: &mut Ctx, key: &'a str) -> Option<Vec<String>> {
        let node = self.get(key)?;
        if node.value == Value::Null {
            return None;
        }
        string_list(ctx, node, &self.key_path(key))
    }

    /// `dict[str, Any]`.
    pub fn any_map(&mut self, ctx: &mut Ctx, key: &'a str) -> Map<String, Json> {
        match self.get(key) {
            None => Map::new(),
            Some(node) => any_map(ctx, node, &self.key_path(key)).unwrap_or_default(),
        }
    }

    pub fn opt_any_map(&mut self, ctx: &mut Ctx, key: &'a str) -> Option<Map<String, Json>> {
        let node = self.get(key)?;
        if node.value == Value::Null {
            return None;
        }
        any_map(ctx, node, &self.key_path(key))
    }

    /// `dict[str, str]`, or `dict[str, Optional[str]]` with `nullable`.
    pub fn str_map(
        &mut self,
        ctx: &mut Ctx,
        key: &'a str,
        nullable: bool,
    ) -> BTreeMap<String, Option<String>> {
        let Some(node) = self.get(key) else {
            return BTreeMap::new();
        };
        let path = self.key_path(key);
        let Value::Map(entries) = &node.value else {
            ctx.type_error(&path, node, "a mapping", "");
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let Some(name) = k.as_str() else {
                ctx.type_error(
                    &join(&path, &crate::yaml::scalar_text(&k.value)),
                    k,
                    "a string key",
                    "quote the key",
                );
                continue;
            };
            let child = join(&path, name);
            let value = match v.value {
                Value::Null if nullable => None,
                _ => match string(ctx, v, &child) {
                    Some(s) => Some(s),
                    None => continue,
                },
            };
            out.insert(name.to_string(), value);
        }
        out
    }

    /// An optional nested model: absent or null gives `None`.
    pub fn opt_obj(&mut self, ctx: &mut Ctx, key: &'a str, model: &str) -> Option<Obj<'a>> {
        let node = self.get(key)?;
        if node.value == Value::Null {
            return None;
        }
        Obj::new(ctx, node, &self.key_path(key), model)
    }

    /// A nested model with a default: absent gives `Ok(None)` (use the default); null or a
    /// non-mapping is an error, reported as `Err(())`.
    pub fn obj(&mut self, ctx: &mut Ctx, key: &'a str, model: &str) -> Result<Option<Obj<'a>>, ()> {
        match self.get(key) {
            None => Ok(None),
            Some(node) => Obj::new(ctx, node, &self.key_path(key), model)
                .map(Some)
                .ok_or(()),
        }
    }

    /// A string-valued enum.
    pub fn choice<T: Copy>(
        &mut self,
        ctx: &mut Ctx,
        key: &'a str,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        let Some(node) = self.get(key) else {
            return default;
        };
        let path = self.key_path(key);
        choice(ctx, node, &path, options).unwrap_or(default)
    }
}

pub fn choice<T: Copy>(ctx: &mut Ctx, node: &Node, path: &str, options: &[(&str, T)]) -> Option<T> {
    let valid: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    if let Some(s) = node.as_str()
        && let Some((_, v)) = options.iter().find(|(n, _)| *n == s)
    {
        return Some(*v);
    }
    let close = node
        .as_str()
        .and_then(|s| valid.iter().find(|v| v.eq_ignore_ascii_case(s)));
    let hint = match close {
        Some(v) => format!("values are case-sensitive: write `{v}`"),
        None => String::new(),
    };
    ctx.error(
        "invalid_choice",
        path,
        node.line,
        format!("{} is not one of: {}", show(path, node), valid.join(", ")),
        hint,
    );
    None
}

pub fn string(ctx: &mut Ctx, node: &Node, path: &str) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Timestamp(_) => {
            let hint = if path.starts_with("secrets.") {
                "quote the value".to_string()
            } else {
                let key = path.rsplit('.').next().unwrap_or(path);
                let text = crate::pyfmt::repr(&node.value);
                format!("quote it, as truss does not turn numbers into strings: {key}: \"{text}\"")
            };
            ctx.type_error(path, node, "a string", &hint);
            None
        }
        _ => {
            ctx.type_error(path, node, "a string", "");
            None
        }
    }
}

fn in_range(ctx: &mut Ctx, node: &Node, path: &str, v: i64, min: i64, max: i64) -> Option<i64> {
    if v < min || v > max {
        let range = match (min, max) {
            (i64::MIN, hi) => format!("at most {hi}"),
            (lo, i64::MAX) => format!("at least {lo}"),
            (lo, hi) => format!("between {lo} and {hi}"),
        };
        ctx.error(
            "out_of_range",
            path,
            node.line,
            format!("{v} is out of range; must be {range}"),
            "",
        );
        return None;
    }
    Some(v)
}

/// pydantic lax int: ints, booleans, integral floats and strings that parse as such.
pub fn lax_int(ctx: &mut Ctx, node: &Node, path: &str) -> Option<i64> {
    let parsed = match &node.value {
        Value::Int(i) => i64::try_from(*i).ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
        Value::Float(f) if f.is_finite() => {
            ctx.error(
                "invalid_type",
                path,
                node.line,
                format!(
                    "expected an integer, got a number with a fractional part {}",
                    show(path, node)
                ),
                "",
            );
            return None;
        }
        Value::Str(s) => parse_int_str(s),
        _ => None,
    };
    if parsed.is_none() {
        ctx.type_error(path, node, "an integer", "");
    }
    parsed
}

fn parse_int_str(s: &str) -> Option<i64> {
    let t = s.trim();
    let cleaned: String = t.chars().filter(|c| *c != '_').collect();
    if t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    if let Ok(i) = cleaned.parse::<i64>() {
        return Some(i);
    }
    // "4.0" is accepted as 4; "4.5" is not.
    let (int_part, frac) = cleaned.split_once('.')?;
    if !frac.is_empty() && frac.bytes().all(|b| b == b'0') {
        return int_part.parse().ok();
    }
    None
}

pub fn lax_bool(ctx: &mut Ctx, node: &Node, path: &str) -> Option<bool> {
    let parsed = match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        Value::Float(f) if *f == 0.0 => Some(false),
        Value::Float(f) if *f == 1.0 => Some(true),
        Value::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            _ => None,
        },
        _ => None,
    };
    if parsed.is_none() {
        ctx.type_error(path, node, "a boolean (true or false)", "");
    }
    parsed
}

pub fn lax_float(ctx: &mut Ctx, node: &Node, path: &str) -> Option<f64> {
    let parsed = match &node.value {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Str(s) => crate::quantity::py_float(s),
        _ => None,
    };
    if parsed.is_none() {
        ctx.type_error(path, node, "a number", "");
    }
    parsed
}

pub fn string_list(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<String>> {
    let Value::Seq(items) = &node.value else {
        ctx.type_error(path, node, "a list", "");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(s) = string(ctx, item, &index(path, i)) {
            out.push(s);
        }
    }
    Some(out)
}

pub fn any_map(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Map<String, Json>> {
    match to_json(node) {
        Json::Object(map) if matches!(node.value, Value::Map(_)) => Some(map),
        _ => {
            ctx.type_error(path, node, "a mapping", "");
            None
        }
    }
}

/// Iterates a list of models; `None` when the node is not a list.
pub fn seq<'a>(ctx: &mut Ctx, node: &'a Node, path: &str) -> Option<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            ctx.type_error(path, node, "a list", "");
            None
        }
    }
}
