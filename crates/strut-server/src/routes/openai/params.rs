//! The request fields chat and completions share: the model, sampling and
//! streaming.

use serde::Deserialize;
use serde_json::Value;
use strut_model::capabilities::{Constraint, SamplingParams};

use super::fields::{Fields, invalid};
use crate::ApiError;

/// OpenAI's limit on stop sequences.
const MAX_STOP: usize = 4;

/// Candidates per request: OpenAI's limit is 128; each takes a place in
/// the model's batch, so strut keeps it to a batch's default size.
pub(super) const MAX_N: u32 = 16;

pub(super) struct Options {
    pub model: Option<String>,
    pub params: SamplingParams,
    pub stream: bool,
    pub include_usage: bool,
    /// Candidates to generate (`n`), 1 to 16.
    pub n: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

pub(super) fn take(fields: &mut Fields) -> Result<Options, ApiError> {
    let model = fields.take::<String>("model", "a string")?;
    let n = match fields.take::<u32>("n", "a positive integer")? {
        None => 1,
        Some(n) if (1..=MAX_N).contains(&n) => n,
        Some(n) => {
            return Err(invalid(
                "n",
                format!("`n` must be between 1 and {MAX_N}, got {n}"),
            ));
        }
    };
    let mut params = SamplingParams {
        max_tokens: max_tokens(fields)?,
        ..SamplingParams::default()
    };
    temperature_and_top_p(fields, &mut params)?;
    // OpenAI's seed is any 64-bit integer; the bits are what matter.
    params.seed = fields
        .take::<i64>("seed", "an integer")?
        .map(|s| u64::from_ne_bytes(s.to_ne_bytes()));
    params.stop = stop(fields)?;
    params.ignore_eos = fields
        .take::<bool>("ignore_eos", "true or false")?
        .unwrap_or(false);
    // vLLM's extensions, which clients written for it send: top_k -1 or 0
    // is no limit.
    params.top_k = match fields.take::<i64>("top_k", "an integer")? {
        Some(k) if k < -1 => {
            return Err(invalid(
                "top_k",
                format!("`top_k` must be -1 or 0 (no limit) or a positive integer, got {k}"),
            ));
        }
        k => k.and_then(|k| u32::try_from(k).ok()).filter(|&k| k > 0),
    };
    if let Some(r) = fields.take::<f32>("repetition_penalty", "a positive number")? {
        if !(r.is_finite() && r > 0.0) {
            return Err(invalid(
                "repetition_penalty",
                format!("`repetition_penalty` must be > 0, got {r}"),
            ));
        }
        params.repetition_penalty = r;
    }
    if let Some(m) = fields.take::<u32>("min_tokens", "a non-negative integer")? {
        if params.max_tokens.is_some_and(|max| m > max) {
            return Err(invalid(
                "min_tokens",
                format!("`min_tokens` ({m}) must not exceed the maximum number of tokens"),
            ));
        }
        params.min_tokens = m;
    }
    params.constraint = constraint(fields)?;
    let stream = fields
        .take::<bool>("stream", "true or false")?
        .unwrap_or(false);
    let options = fields.take::<StreamOptions>(
        "stream_options",
        r#"an object such as {"include_usage": true}"#,
    )?;
    if options.is_some() && !stream {
        return Err(invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    Ok(Options {
        model,
        params,
        stream,
        include_usage: options.and_then(|o| o.include_usage).unwrap_or(false),
        n,
    })
}

/// `temperature` (0 to 2) and `top_p` (0 to 1], as every OpenAI generation
/// route takes them.
pub(super) fn temperature_and_top_p(
    fields: &mut Fields,
    params: &mut SamplingParams,
) -> Result<(), ApiError> {
    if let Some(t) = fields.take::<f32>("temperature", "a number between 0 and 2")? {
        if !(0.0..=2.0).contains(&t) {
            return Err(invalid(
                "temperature",
                format!("`temperature` must be between 0 and 2, got {t}"),
            ));
        }
        params.temperature = t;
    }
    if let Some(p) = fields.take::<f32>("top_p", "a number in (0, 1]")? {
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid(
                "top_p",
                format!("`top_p` must be in (0, 1], got {p}"),
            ));
        }
        params.top_p = p;
    }
    Ok(())
}

/// Structured output: OpenAI's `response_format`, or vLLM's `guided_json`,
/// `guided_regex` and `guided_grammar` (Lark); one at most.
fn constraint(fields: &mut Fields) -> Result<Option<Constraint>, ApiError> {
    let mut found: Vec<(&str, Constraint)> = Vec::new();
    if let Some(format) = fields.take_raw("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => found.push(("response_format", Constraint::JsonObject)),
            Some("json_schema") => {
                let param = "response_format.json_schema.schema";
                match format.get("json_schema").and_then(|j| j.get("schema")) {
                    Some(schema @ (Value::Object(_) | Value::Bool(_))) => found.push((
                        "response_format",
                        Constraint::JsonSchema {
                            schema: schema.clone(),
                        },
                    )),
                    _ => {
                        return Err(invalid(
                            param,
                            format!("`{param}` is required: the JSON schema the output must match"),
                        ));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    "response_format.type",
                    "`response_format.type` must be text, json_object or json_schema",
                ));
            }
        }
    }
    match fields.take_raw("guided_json") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            let schema = serde_json::from_str(&text).map_err(|err| {
                invalid("guided_json", format!("`guided_json` is not JSON: {err}"))
            })?;
            found.push(("guided_json", Constraint::JsonSchema { schema }));
        }
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
            found.push(("guided_json", Constraint::JsonSchema { schema }));
        }
        Some(_) => {
            return Err(invalid(
                "guided_json",
                "`guided_json` must be a JSON schema (an object, or its text)",
            ));
        }
    }
    if let Some(pattern) = fields.take::<String>("guided_regex", "a regular expression")? {
        found.push(("guided_regex", Constraint::Regex { pattern }));
    }
    if let Some(lark) = fields.take::<String>("guided_grammar", "a Lark grammar")? {
        found.push(("guided_grammar", Constraint::Grammar { lark }));
    }
    match found.len() {
        0 | 1 => Ok(found.pop().map(|(_, c)| c)),
        _ => Err(invalid(
            found[1].0,
            format!(
                "`{}` and `{}` both constrain the output; send one",
                found[0].0, found[1].0
            ),
        )),
    }
}

/// `max_completion_tokens` is the current name, `max_tokens` the older one;
/// either may come, and both only when they agree.
fn max_tokens(fields: &mut Fields) -> Result<Option<u32>, ApiError> {
    const EXPECTED: &str = "a positive integer";
    let current = fields.take::<u32>("max_completion_tokens", EXPECTED)?;
    let older = fields.take::<u32>("max_tokens", EXPECTED)?;
    let (param, value) = match (current, older) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(
                "max_completion_tokens",
                format!("`max_completion_tokens` ({a}) and `max_tokens` ({b}) differ; send one"),
            ));
        }
        (Some(a), _) => ("max_completion_tokens", a),
        (None, Some(b)) => ("max_tokens", b),
        (None, None) => return Ok(None),
    };
    if value == 0 {
        return Err(invalid(param, format!("`{param}` must be at least 1")));
    }
    Ok(Some(value))
}

fn stop(fields: &mut Fields) -> Result<Vec<String>, ApiError> {
    let stops = match fields.take_raw("stop") {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(()),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| invalid("stop", "`stop` must be a string or a list of strings"))?,
        Some(_) => {
            return Err(invalid(
                "stop",
                "`stop` must be a string or a list of strings",
            ));
        }
    };
    if stops.iter().any(String::is_empty) {
        return Err(invalid("stop", "`stop` sequences must not be empty"));
    }
    if stops.len() > MAX_STOP {
        return Err(invalid(
            "stop",
            format!(
                "`stop` takes at most {MAX_STOP} sequences, got {}",
                stops.len()
            ),
        ));
    }
    Ok(stops)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn options(body: Value) -> Result<Options, ApiError> {
        take(&mut Fields::new(body).unwrap())
    }

    #[test]
    fn defaults_follow_openai() {
        let o = options(json!({})).unwrap();
        assert_eq!(o.params, SamplingParams::default());
        assert!(!o.stream && !o.include_usage && o.model.is_none());
    }

    #[test]
    fn every_honoured_field_reaches_the_params() {
        let o = options(json!({
            "model": "m", "max_completion_tokens": 7, "max_tokens": 7, "temperature": 0,
            "top_p": 0.5, "seed": -1, "stop": "\n", "ignore_eos": true, "top_k": -1,
            "stream": true, "stream_options": {"include_usage": true}, "n": 1
        }))
        .unwrap();
        let p = o.params;
        assert_eq!(
            (p.max_tokens, p.temperature, p.top_p, p.seed, p.top_k),
            (Some(7), 0.0, 0.5, Some(u64::MAX), None)
        );
        assert_eq!(p.stop, vec!["\n".to_owned()]);
        assert!(p.ignore_eos && o.stream && o.include_usage);
        assert_eq!(o.model.as_deref(), Some("m"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (json!({"n": 17}), "n"),
            (json!({"n": 0}), "n"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"max_completion_tokens": -3}),
                "max_completion_tokens",
            ),
            (
                json!({"max_tokens": 3, "max_completion_tokens": 4}),
                "max_completion_tokens",
            ),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"stop": ["a", ""]}), "stop"),
            (json!({"stop": [1]}), "stop"),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (
                json!({"stream": true, "stream_options": {"other": 1}}),
                "stream_options",
            ),
            (json!({"min_tokens": 3, "max_tokens": 2}), "min_tokens"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"top_k": -5}), "top_k"),
        ];
        for (body, expected) in cases {
            match options(body.clone()) {
                Err(
                    ApiError::InvalidField { param, .. } | ApiError::UnsupportedField { param, .. },
                ) => {
                    assert_eq!(param, expected, "{body}");
                }
                other => panic!("{body}: {:?}", other.err()),
            }
        }
    }
}
