//! The JSON shapes `predict` accepts, checked field by field so a client
//! learns exactly which field is wrong.

use serde_json::{Map, Value};
use strut_model::ModelError;
use strut_model::capabilities::{ChatMessage, GenerateRequest, Prompt, SamplingParams};

fn object(input: &Value) -> Result<&Map<String, Value>, ModelError> {
    input.as_object().ok_or_else(|| {
        ModelError::invalid_input(format!(
            "the input must be a JSON object, got {}",
            kind(input)
        ))
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn reject_unknown(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), ModelError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(ModelError::invalid_input(format!(
            "unknown field `{key}`; accepted fields: {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn wrong(field: &str, expected: &str, got: &Value) -> ModelError {
    ModelError::invalid_input(format!("`{field}` must be {expected}, got {}", kind(got)))
}

/// `{"texts": [..]}` or `{"text": ".."}`.
pub fn embed_texts(input: &Value) -> Result<Vec<String>, ModelError> {
    let map = object(input)?;
    reject_unknown(map, &["text", "texts"])?;
    match (map.get("text"), map.get("texts")) {
        (Some(_), Some(_)) => Err(ModelError::invalid_input(
            "give either `text` or `texts`, not both",
        )),
        (Some(Value::String(text)), None) => Ok(vec![text.clone()]),
        (Some(other), None) => Err(wrong("text", "a string", other)),
        (None, Some(Value::Array(items))) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong(&format!("texts[{i}]"), "a string", other)),
            })
            .collect(),
        (None, Some(other)) => Err(wrong("texts", "an array of strings", other)),
        (None, None) => Err(ModelError::invalid_input(
            "the input needs `text` (a string) or `texts` (an array of strings)",
        )),
    }
}

const GENERATE_FIELDS: [&str; 12] = [
    "prompt",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "stop",
    "ignore_eos",
    "min_tokens",
    "stream",
];

/// `{"prompt": ".."}` or `{"messages": [{"role", "content"}]}` plus
/// sampling fields and `"stream"`.
pub fn generate_request(input: &Value) -> Result<(GenerateRequest, bool), ModelError> {
    let map = object(input)?;
    reject_unknown(map, &GENERATE_FIELDS)?;
    let prompt = match (map.get("prompt"), map.get("messages")) {
        (Some(_), Some(_)) => {
            return Err(ModelError::invalid_input(
                "give either `prompt` or `messages`, not both",
            ));
        }
        (Some(Value::String(p)), None) => Prompt::Text(p.clone()),
        (Some(other), None) => return Err(wrong("prompt", "a string", other)),
        (None, Some(Value::Array(items))) => Prompt::chat(messages(items)?),
        (None, Some(other)) => {
            return Err(wrong(
                "messages",
                "an array of {role, content} objects",
                other,
            ));
        }
        (None, None) => {
            return Err(ModelError::invalid_input(
                "the input needs `prompt` (a string) or `messages` (an array)",
            ));
        }
    };
    let mut params = SamplingParams::default();
    let float = |name: &str| -> Result<Option<f32>, ModelError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64().map(|v| v as f32)),
            Some(other) => Err(wrong(name, "a number", other)),
        }
    };
    let uint = |name: &str| -> Result<Option<u64>, ModelError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                ModelError::invalid_input(format!(
                    "`{name}` must be a non-negative integer, got {n}"
                ))
            }),
            Some(other) => Err(wrong(name, "a non-negative integer", other)),
        }
    };
    let boolean = |name: &str| -> Result<Option<bool>, ModelError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong(name, "true or false", other)),
        }
    };
    if let Some(n) = uint("max_tokens")? {
        params.max_tokens = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    if let Some(t) = float("temperature")? {
        params.temperature = t;
    }
    if let Some(p) = float("top_p")? {
        params.top_p = p;
    }
    if let Some(k) = uint("top_k")? {
        params.top_k = Some(u32::try_from(k).unwrap_or(u32::MAX));
    }
    if let Some(r) = float("repetition_penalty")? {
        params.repetition_penalty = r;
    }
    params.seed = uint("seed")?;
    params.ignore_eos = boolean("ignore_eos")?.unwrap_or(false);
    if let Some(m) = uint("min_tokens")? {
        params.min_tokens = u32::try_from(m).unwrap_or(u32::MAX);
    }
    params.stop = match map.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| wrong(&format!("stop[{i}]"), "a string", v))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(wrong("stop", "a string or an array of strings", other)),
    };
    let stream = boolean("stream")?.unwrap_or(false);
    let request = GenerateRequest {
        prompt,
        prompt_tokens: None,
        params,
    };
    Ok((request, stream))
}

fn messages(items: &[Value]) -> Result<Vec<ChatMessage>, ModelError> {
    if items.is_empty() {
        return Err(ModelError::invalid_input("`messages` must not be empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| match item.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(wrong(&format!("messages[{i}].{name}"), "a string", other)),
                None => Err(ModelError::invalid_input(format!(
                    "messages[{i}] has no `{name}`"
                ))),
            };
            Ok(ChatMessage::new(field("role")?, field("content")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err_embed(v: Value) -> String {
        embed_texts(&v).unwrap_err().message().to_owned()
    }

    fn err_gen(v: Value) -> String {
        generate_request(&v).unwrap_err().message().to_owned()
    }

    #[test]
    fn embed_inputs() {
        assert_eq!(embed_texts(&json!({"text": "a"})).unwrap(), ["a"]);
        assert_eq!(
            embed_texts(&json!({"texts": ["a", "b"]})).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            err_embed(json!({"texts": ["a", 3]})),
            "`texts[1]` must be a string, got a number"
        );
        assert_eq!(
            err_embed(json!({"text": ["a"]})),
            "`text` must be a string, got an array"
        );
        assert!(err_embed(json!({"input": "a"})).contains("unknown field `input`"));
        assert!(err_embed(json!("a")).contains("JSON object"));
        assert!(err_embed(json!({})).contains("needs `text`"));
    }

    #[test]
    fn generate_inputs() {
        let (req, stream) = generate_request(&json!({
            "prompt": "hi", "max_tokens": 5, "temperature": 0, "top_k": 3, "stop": "\n",
            "seed": 9, "stream": true, "ignore_eos": true
        }))
        .unwrap();
        assert!(stream);
        assert_eq!(req.prompt, Prompt::Text("hi".into()));
        assert_eq!(req.params.max_tokens, Some(5));
        assert_eq!(req.params.temperature, 0.0);
        assert_eq!(req.params.top_k, Some(3));
        assert_eq!(req.params.stop, ["\n"]);
        assert_eq!(req.params.seed, Some(9));
        assert!(req.params.ignore_eos);
        let (req, stream) =
            generate_request(&json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert!(!stream);
        assert!(matches!(req.prompt, Prompt::Chat { messages: m, .. } if m[0].content == "x"));
    }

    #[test]
    fn generate_input_errors_name_the_field() {
        assert_eq!(
            err_gen(json!({"prompt": 1})),
            "`prompt` must be a string, got a number"
        );
        assert_eq!(
            err_gen(json!({"prompt": "x", "max_tokens": -1})),
            "`max_tokens` must be a non-negative integer, got -1"
        );
        assert_eq!(
            err_gen(json!({"prompt": "x", "temperature": "hot"})),
            "`temperature` must be a number, got a string"
        );
        assert_eq!(
            err_gen(json!({"messages": [{"role": "user"}]})),
            "messages[0] has no `content`"
        );
        assert!(err_gen(json!({"messages": []})).contains("must not be empty"));
        assert!(
            err_gen(json!({"prompt": "x", "max_new_tokens": 3}))
                .contains("unknown field `max_new_tokens`")
        );
        assert!(
            err_gen(json!({"prompt": "x", "stream": "yes"}))
                .contains("`stream` must be true or false")
        );
    }
}
