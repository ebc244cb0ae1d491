//! One value read with pydantic v2's lax-mode coercions; each records a diagnostic and gives
//! `None` when the value does not fit.

use serde_json::{Map, Value as Json};

use super::{Ctx, index, show, to_json};
use crate::yaml::{Node, Value};

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
