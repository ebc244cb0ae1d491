//! `runtime`: concurrency, streaming timeout, transport and platform settings.

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::diagnostics::Diagnostic;
use crate::extract::{self, Ctx, Extra, Obj};
use crate::yaml::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runtime {
    /// truss enforces no lower bound; the validator rejects values below 1.
    pub predict_concurrency: i64,
    /// Seconds allowed between streamed chunks. truss accepts negatives; we clamp them to 0
    /// here and the validator rejects them, so a server never runs with one.
    #[serde(skip)]
    pub streaming_read_timeout: u64,
    pub enable_tracing_data: bool,
    pub enable_debug_logs: bool,
    pub transport: Transport,
    pub is_websocket_endpoint: bool,
    pub health_checks: HealthChecks,
    pub oidc: Oidc,
    pub remote_ssh: RemoteSsh,
    pub egress_restrictions: Option<EgressRestrictions>,
    pub truss_server_version_override: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
    /// The timeout as written, before clamping; the dump shows it as truss does.
    #[serde(rename = "streaming_read_timeout")]
    pub streaming_read_timeout_raw: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Transport {
    Http,
    Websocket {
        ping_interval_seconds: Option<f64>,
        ping_timeout_seconds: Option<f64>,
    },
    Grpc,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HealthChecks {
    pub restart_check_delay_seconds: Option<i64>,
    pub restart_threshold_seconds: Option<i64>,
    pub stop_traffic_threshold_seconds: Option<i64>,
    pub startup_threshold_seconds: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Oidc {
    /// Three-valued: unset means the operator's default.
    pub enabled: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RemoteSsh {
    pub enabled: bool,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EgressRestrictions {
    pub ip_allow_list: Option<Vec<String>>,
    pub fqdn_allow_list: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            predict_concurrency: 1,
            streaming_read_timeout: 60,
            enable_tracing_data: false,
            enable_debug_logs: false,
            transport: Transport::Http,
            is_websocket_endpoint: false,
            health_checks: HealthChecks::default(),
            oidc: Oidc::default(),
            remote_ssh: RemoteSsh::default(),
            egress_restrictions: None,
            truss_server_version_override: None,
            extra: Map::new(),
            streaming_read_timeout_raw: 60,
        }
    }
}

const LEGACY_WORKERS: &str = "After truss 0.9.49 only 1 worker per server is allowed. For concurrency utilize asyncio, autoscaling replicas and as a last resort thread/process pools inside the truss model.";

pub fn parse(ctx: &mut Ctx, mut o: Obj) -> Runtime {
    let mut r = Runtime::default();
    // `num_workers` is checked but not consumed: it stays an unknown key, as in truss.
    if let Some(n) = o.peek("num_workers") {
        let is_one =
            matches!(n.value, Value::Int(1) | Value::Bool(true)) || n.value == Value::Float(1.0);
        if !is_one {
            ctx.error(
                "legacy_num_workers",
                &o.key_path("num_workers"),
                n.line,
                LEGACY_WORKERS,
                "remove `num_workers` and raise `predict_concurrency` instead",
            );
        }
    }
    r.predict_concurrency = o.int(ctx, "predict_concurrency", 1);
    r.streaming_read_timeout_raw = o.int(ctx, "streaming_read_timeout", 60);
    r.streaming_read_timeout = u64::try_from(r.streaming_read_timeout_raw).unwrap_or(0);
    r.enable_tracing_data = o.bool(ctx, "enable_tracing_data", false);
    r.enable_debug_logs = o.bool(ctx, "enable_debug_logs", false);
    let legacy_ws = o
        .peek("is_websocket_endpoint")
        .is_some_and(|n| truthy(&n.value));
    let transport_given = o.peek("transport").is_some_and(|n| n.value != Value::Null);
    r.transport = if !transport_given && legacy_ws {
        o.get("transport");
        ctx.note(
            Diagnostic::warning(
                "deprecated_websocket_flag",
                o.key_path("is_websocket_endpoint"),
                "`is_websocket_endpoint` is deprecated",
                "use `transport: {kind: websocket}`",
            )
            .at_line(Some(o.line_of("is_websocket_endpoint"))),
        );
        Transport::Websocket {
            ping_interval_seconds: None,
            ping_timeout_seconds: None,
        }
    } else {
        parse_transport(ctx, &mut o)
    };
    let ws_flag = o.opt_bool(ctx, "is_websocket_endpoint");
    if ws_flag == Some(true) && !matches!(r.transport, Transport::Websocket { .. }) {
        r.transport = Transport::Websocket {
            ping_interval_seconds: None,
            ping_timeout_seconds: None,
        };
    }
    r.is_websocket_endpoint = matches!(r.transport, Transport::Websocket { .. });
    if let Ok(Some(mut h)) = o.obj(ctx, "health_checks", "HealthChecks") {
        r.health_checks = HealthChecks {
            restart_check_delay_seconds: h.opt_int(ctx, "restart_check_delay_seconds"),
            restart_threshold_seconds: h.opt_int(ctx, "restart_threshold_seconds"),
            stop_traffic_threshold_seconds: h.opt_int(ctx, "stop_traffic_threshold_seconds"),
            startup_threshold_seconds: h.opt_int(ctx, "startup_threshold_seconds"),
            extra: h.finish(ctx, Extra::Keep),
        };
    }
    if let Ok(Some(mut x)) = o.obj(ctx, "oidc", "OIDC") {
        r.oidc = Oidc {
            enabled: x.opt_bool(ctx, "enabled"),
            extra: x.finish(ctx, Extra::Keep),
        };
    }
    if let Ok(Some(mut x)) = o.obj(ctx, "remote_ssh", "RemoteSSH") {
        r.remote_ssh = RemoteSsh {
            enabled: x.bool(ctx, "enabled", false),
            extra: x.finish(ctx, Extra::Keep),
        };
    }
    if let Some(mut x) = o.opt_obj(ctx, "egress_restrictions", "EgressRestrictions") {
        let ips = x.opt_str_list(ctx, "ip_allow_list");
        for (i, ip) in ips.iter().flatten().enumerate() {
            if let Err(e) = check_ipv4_network(ip) {
                let path = extract::index(&x.key_path("ip_allow_list"), i);
                ctx.error(
                    "invalid_value",
                    &path,
                    x.line_of("ip_allow_list"),
                    format!("Invalid IP or CIDR '{ip}': {e}"),
                    "an IPv4 address or CIDR range, e.g. 10.0.0.0/8",
                );
            }
        }
        let fqdns = x.opt_str_list(ctx, "fqdn_allow_list");
        for (i, name) in fqdns.iter().flatten().enumerate() {
            if !valid_fqdn(name) {
                let path = extract::index(&x.key_path("fqdn_allow_list"), i);
                ctx.error(
                    "invalid_value",
                    &path,
                    x.line_of("fqdn_allow_list"),
                    format!("Invalid FQDN '{name}'."),
                    "a host name such as huggingface.co; `*` may stand for part of a label",
                );
            }
        }
        r.egress_restrictions = Some(EgressRestrictions {
            ip_allow_list: ips,
            fqdn_allow_list: fqdns,
            extra: x.finish(ctx, Extra::Keep),
        });
    }
    r.truss_server_version_override = o.opt_str(ctx, "truss_server_version_override");
    if let Some(v) = &r.truss_server_version_override
        && !looks_like_version(v)
    {
        let line = o.line_of("truss_server_version_override");
        ctx.error(
            "invalid_value",
            &o.key_path("truss_server_version_override"),
            line,
            format!("Invalid version string: `{v}` - must be parsable as semver, e.g. '0.9.0'."),
            "",
        );
    }
    r.extra = o.finish(ctx, Extra::Keep);
    r
}

/// Python truthiness, for the legacy flag truss tests with a bare `if`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) | Value::Timestamp(s) => !s.is_empty(),
        Value::Seq(s) => !s.is_empty(),
        Value::Map(m) => !m.is_empty(),
    }
}

fn parse_transport(ctx: &mut Ctx, o: &mut Obj) -> Transport {
    let Ok(Some(mut t)) = o.obj(ctx, "transport", "Transport") else {
        return Transport::Http;
    };
    let kind = match t.get("kind") {
        // An empty mapping means http; otherwise the tag is required.
        None if t.node.as_map().is_some_and(<[_]>::is_empty) => "http",
        None => {
            ctx.error(
                "missing_field",
                &t.key_path("kind"),
                t.node.line,
                "transport needs a `kind`",
                "kind: http, websocket or grpc",
            );
            "http"
        }
        Some(n) => match n.as_str() {
            Some(k @ ("http" | "websocket" | "grpc")) => k,
            _ => {
                ctx.error(
                    "invalid_choice",
                    &t.key_path("kind"),
                    n.line,
                    format!("Input tag {} found using 'kind' does not match any of the expected tags: 'http', 'websocket', 'grpc'", extract::show("", n)),
                    "",
                );
                "http"
            }
        },
    };
    let transport = match kind {
        "websocket" => Transport::Websocket {
            ping_interval_seconds: t.opt_float(ctx, "ping_interval_seconds"),
            ping_timeout_seconds: t.opt_float(ctx, "ping_timeout_seconds"),
        },
        "grpc" => Transport::Grpc,
        _ => Transport::Http,
    };
    // Transport options are plain pydantic models: unknown keys are dropped.
    t.finish(ctx, Extra::Ignore);
    transport
}

fn check_ipv4_network(s: &str) -> Result<(), &'static str> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err("IPv6 is not supported.");
    }
    if addr.parse::<std::net::Ipv4Addr>().is_err() {
        return Err("does not appear to be an IPv4 or IPv6 network");
    }
    match prefix.map(str::parse::<u8>) {
        None | Some(Ok(0..=32)) => Ok(()),
        _ => Err("invalid prefix length"),
    }
}

fn valid_fqdn(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            let ok_char = |c: &u8| c.is_ascii_alphanumeric() || *c == b'*' || *c == b'-';
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(ok_char)
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// A PEP 440 version, loosely: release digits with optional pre/post/dev/local parts.
fn looks_like_version(v: &str) -> bool {
    let v = v.trim().trim_start_matches(['v', 'V']);
    let (public, local) = v.split_once('+').unwrap_or((v, ""));
    let release_len = public
        .bytes()
        .take_while(|c| c.is_ascii_digit() || *c == b'.')
        .count();
    let release = public[..release_len].trim_end_matches('.');
    let rest = public[release.len()..].to_ascii_lowercase();
    let release_ok = !release.is_empty()
        && release
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let rest_ok = rest.is_empty()
        || rest
            .trim_start_matches(['.', '-', '_'])
            .split(['.', '-', '_'])
            .all(|seg| {
                let letters = seg.trim_end_matches(|c: char| c.is_ascii_digit());
                matches!(
                    letters,
                    "a" | "b"
                        | "c"
                        | "rc"
                        | "alpha"
                        | "beta"
                        | "pre"
                        | "preview"
                        | "post"
                        | "dev"
                        | "r"
                        | "rev"
                )
            });
    let local_ok = local.is_empty()
        || local
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.');
    release_ok && rest_ok && local_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_packaging() {
        for ok in [
            "0.9.0",
            "0.18.35",
            "1.0rc1",
            "0.9.50.dev3",
            "1.0.post1",
            "v1.2",
        ] {
            assert!(looks_like_version(ok), "{ok}");
        }
        for bad in ["abc", "", "1..2", "latest"] {
            assert!(!looks_like_version(bad), "{bad}");
        }
    }

    #[test]
    fn ip_lists_are_ipv4_only() {
        assert!(check_ipv4_network("10.0.0.0/8").is_ok());
        assert!(check_ipv4_network("1.2.3.4").is_ok());
        assert_eq!(check_ipv4_network("::1"), Err("IPv6 is not supported."));
        assert!(check_ipv4_network("10.0.0.0/33").is_err());
        assert!(valid_fqdn("*.baseten.co"));
        assert!(!valid_fqdn("bad..name"));
    }
}
