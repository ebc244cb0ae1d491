//! Reading typed values out of the YAML tree with pydantic's rules.
//!
//! truss's models are pydantic v2 models in lax mode: a string is not accepted where an int
//! is wanted unless it parses ("4" -> 4), an int is never accepted where a string is wanted,
//! `null` is only accepted for optional fields, and unknown keys are kept (`extra="allow"`).
//! Every helper here records a diagnostic with the key path and falls back to the default,
//! so one pass reports every problem and still yields a usable config for the report.
//!
//! [`Obj`] reads a mapping as a model (obj.rs); the free functions read one value (values.rs).

mod obj;
mod values;

use serde_json::{Map, Value as Json};

use crate::diagnostics::Diagnostic;
use crate::yaml::{Node, Value};

pub use obj::Obj;
pub use values::{choice, lax_bool, lax_float, lax_int, seq, string, string_list};

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
