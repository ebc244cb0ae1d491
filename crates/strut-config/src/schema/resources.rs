//! `resources`: cpu, memory and the accelerator.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value as Json};

use crate::accelerators::{Accelerator, Gpu};
use crate::extract::{Ctx, Extra, Obj};
use crate::quantity;
use crate::yaml::{Node, Value};

pub const DEFAULT_CPU: &str = "1";
pub const DEFAULT_MEMORY: &str = "2Gi";

#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub cpu: String,
    pub memory: String,
    pub accelerator: Option<Accelerator>,
    pub instance_type: Option<String>,
    pub node_count: Option<i64>,
    pub fabric: Option<Fabric>,
    pub extra: Map<String, Json>,
    /// The accelerator as written when it was a string, for checks truss skips
    /// (`H100:2:3` is silently read as one H100).
    pub accelerator_raw: Option<String>,
    /// `use_gpu` as written: truss drops it on input and derives it from the accelerator.
    pub use_gpu_input: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fabric {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_rdma: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: DEFAULT_CPU.into(),
            memory: DEFAULT_MEMORY.into(),
            accelerator: None,
            instance_type: None,
            node_count: None,
            fabric: None,
            extra: Map::new(),
            accelerator_raw: None,
            use_gpu_input: None,
        }
    }
}

impl Resources {
    /// truss's computed field: an accelerator is set (even with count 0, a truss quirk).
    pub fn use_gpu(&self) -> bool {
        self.accelerator.is_some()
    }

    /// The accelerator as truss serialises it (`A10G:2`), `None` without one.
    pub fn accelerator_string(&self) -> Option<String> {
        self.accelerator
            .as_ref()
            .and_then(Accelerator::truss_string)
    }
}

impl Serialize for Resources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("cpu", &self.cpu)?;
        m.serialize_entry("memory", &self.memory)?;
        m.serialize_entry("accelerator", &self.accelerator_string())?;
        m.serialize_entry("use_gpu", &self.use_gpu())?;
        // truss omits these when unset (its serializer pops falsy values).
        if let Some(it) = self.instance_type.as_ref().filter(|s| !s.is_empty()) {
            m.serialize_entry("instance_type", it)?;
        }
        if let Some(n) = self.node_count.filter(|n| *n != 0) {
            m.serialize_entry("node_count", &n)?;
        }
        if let Some(f) = &self.fabric {
            m.serialize_entry("fabric", f)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

pub fn parse(ctx: &mut Ctx, mut o: Obj) -> Resources {
    // `use_gpu` is stripped before validation, so any value is accepted and none is kept.
    let use_gpu_input = o.get("use_gpu").and_then(|n| match n.value {
        Value::Bool(b) => Some(b),
        _ => None,
    });
    let mut r = Resources {
        use_gpu_input,
        ..Resources::default()
    };
    r.cpu = o.str(ctx, "cpu", DEFAULT_CPU);
    if let Err(msg) = quantity::check_cpu(&r.cpu) {
        let line = o.line_of("cpu");
        ctx.error(
            "invalid_cpu",
            &o.key_path("cpu"),
            line,
            msg,
            "use a number of cores as a string (\"4\", \"0.5\") or millicores (\"500m\")",
        );
        r.cpu = DEFAULT_CPU.into();
    }
    r.memory = o.str(ctx, "memory", DEFAULT_MEMORY);
    if let Err(msg) = quantity::check_memory(&r.memory) {
        let line = o.line_of("memory");
        let units: Vec<&str> = quantity::MEMORY_UNITS.iter().map(|(u, _)| *u).collect();
        ctx.error(
            "invalid_memory",
            &o.key_path("memory"),
            line,
            msg,
            format!(
                "a number with one of the units {} (e.g. \"2Gi\")",
                units.join(", ")
            ),
        );
        r.memory = DEFAULT_MEMORY.into();
    }
    if let Some(node) = o.get("accelerator") {
        let path = o.key_path("accelerator");
        r.accelerator = parse_accelerator(ctx, node, &path);
        if let Value::Str(s) = &node.value {
            r.accelerator_raw = Some(s.clone());
        }
    }
    r.instance_type = o.opt_str(ctx, "instance_type");
    r.node_count = o.opt_strict_int(ctx, "node_count", 1, i64::MAX);
    if let Some(mut f) = o.opt_obj(ctx, "fabric", "FabricRequirement") {
        r.fabric = Some(Fabric {
            use_rdma: f.opt_bool(ctx, "use_rdma"),
            preferences: f.opt_str_list(ctx, "preferences"),
            extra: f.finish(ctx, Extra::Keep),
        });
    }
    r.extra = o.finish(ctx, Extra::Keep);
    r
}

fn parse_accelerator(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Accelerator> {
    match &node.value {
        Value::Null => None,
        Value::Str(s) => parse_accelerator_str(ctx, node, path, s),
        Value::Map(_) => {
            let mut o = Obj::new(ctx, node, path, "AcceleratorSpec")?;
            let gpu = o.get("accelerator").and_then(|n| match n.value {
                Value::Null => None,
                _ => gpu_name(
                    ctx,
                    n,
                    &crate::extract::join(path, "accelerator"),
                    n.as_str().unwrap_or(""),
                ),
            });
            let count = match o.get("count") {
                None => 1,
                Some(n) => {
                    let p = crate::extract::join(path, "count");
                    match crate::extract::lax_int(ctx, n, &p) {
                        Some(c) if c >= 0 => u32::try_from(c).unwrap_or(u32::MAX),
                        Some(c) => {
                            ctx.error(
                                "invalid_accelerator_count",
                                &p,
                                n.line,
                                format!("{c} is out of range; must be at least 0"),
                                "",
                            );
                            1
                        }
                        None => 1,
                    }
                }
            };
            // truss serialises the spec back to a string, so extra keys here vanish.
            o.finish(ctx, Extra::Ignore);
            gpu.map(|gpu| Accelerator { gpu, count })
        }
        _ => {
            ctx.error(
                "invalid_type",
                path,
                node.line,
                format!("expected a string like \"A10G:2\", a mapping {{accelerator, count}} or null, got {}", node.value.type_name()),
                "write the accelerator as TYPE or TYPE:COUNT, e.g. accelerator: A10G:2",
            );
            None
        }
    }
}

fn parse_accelerator_str(ctx: &mut Ctx, node: &Node, path: &str, s: &str) -> Option<Accelerator> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts[0].is_empty() {
        ctx.error(
            "invalid_accelerator",
            path,
            node.line,
            "Accelerator type cannot be empty.",
            format!("use one of: {}", Gpu::valid_list()),
        );
        return None;
    }
    let gpu = gpu_name(ctx, node, path, parts[0])?;
    let mut count = 1;
    // truss reads a count only when there are exactly two parts; `H100:2:3` is reported by
    // the validator (`malformed_accelerator`) since truss accepts it.
    if parts.len() == 2 {
        let c = parts[1];
        match c.parse::<u32>() {
            Ok(n) if n > 0 && c.bytes().all(|b| b.is_ascii_digit()) => count = n,
            _ => {
                ctx.error(
                    "invalid_accelerator_count",
                    path,
                    node.line,
                    format!("Invalid count: '{c}'. Must be positive integer."),
                    format!(
                        "write {}:N with N a whole number of GPUs, e.g. {}:2",
                        gpu, gpu
                    ),
                );
                return None;
            }
        }
    }
    Some(Accelerator { gpu, count })
}

fn gpu_name(ctx: &mut Ctx, node: &Node, path: &str, name: &str) -> Option<Gpu> {
    if let Some(g) = Gpu::parse(name) {
        return Some(g);
    }
    let hint = if let Some(g) = Gpu::all().find(|g| g.name().eq_ignore_ascii_case(name)) {
        format!("accelerator types are case-sensitive: write `{g}`")
    } else if let Some(g) = Gpu::all().find(|g| {
        !name.is_empty()
            && g.name()
                .to_ascii_uppercase()
                .starts_with(&name.to_ascii_uppercase())
    }) {
        format!("did you mean `{g}`?")
    } else {
        String::new()
    };
    ctx.error(
        "unsupported_accelerator",
        path,
        node.line,
        format!(
            "unsupported accelerator type `{name}`; valid: {}",
            Gpu::valid_list()
        ),
        hint,
    );
    None
}
