//! A mapping read as a pydantic model: typed getters with truss's defaults, and the keys the
//! model did not consume kept or dropped as its `extra` setting says.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::values::{any_map, choice, lax_bool, lax_float, lax_int, string, string_list};
use super::{Ctx, Extra, KeyRef, join, to_json};
use crate::yaml::{Node, Value};

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
