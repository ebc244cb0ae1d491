//! `model_metadata` (example input, tags) and `secrets`.

use serde_json::Value as Json;

use crate::diagnostics::Diagnostic;
use crate::load::LoadedConfig;
use crate::schema::{BaseModel, InferenceStack};
use crate::yaml::{Node, Value};

/// Tags people use to mean a deployment environment.
const ENVIRONMENT_TAGS: &[&str] = &[
    "production",
    "prod",
    "staging",
    "stage",
    "dev",
    "development",
];

pub(super) fn check(loaded: &LoadedConfig, out: &mut Vec<Diagnostic>) {
    example_input(loaded, out);
    tags(loaded, out);
    secrets(loaded, out);
}

fn raw<'a>(loaded: &'a LoadedConfig, path: &[&str]) -> Option<&'a Node> {
    path.iter()
        .try_fold(loaded.raw.as_ref()?, |node, key| node.get(key))
}

fn example_input(loaded: &LoadedConfig, out: &mut Vec<Diagnostic>) {
    const PATH: &str = "model_metadata.example_model_input";
    let Some(node) = raw(loaded, &["model_metadata", "example_model_input"]) else {
        out.push(
            Diagnostic::warning(
                "missing_example_input",
                PATH,
                "no example_model_input: the playground and `strut predict` have no sample input to send",
                "add one under model_metadata, e.g.\n  model_metadata:\n    example_model_input: {\"prompt\": \"What is the meaning of life?\"}",
            )
            .at_line(super::resources::line_of(loaded, "model_metadata")),
        );
        return;
    };
    let problem = match &node.value {
        Value::Null => Some("is null, so there is nothing to send".to_string()),
        Value::Str(s) if s.trim_start().starts_with(['{', '[']) => serde_json::from_str::<Json>(s)
            .err()
            .map(|e| format!("is a string that looks like JSON but does not parse ({e})")),
        _ => not_json(node).map(|why| format!("is not JSON data: {why}")),
    };
    if let Some(problem) = problem {
        out.push(
            Diagnostic::warning(
                "invalid_example_input",
                PATH,
                format!("example_model_input {problem}"),
                "write it as plain YAML mappings, lists, strings, numbers and booleans",
            )
            .at_line(Some(node.line)),
        );
    }
}

/// Why a YAML value has no faithful JSON form.
fn not_json(node: &Node) -> Option<String> {
    match &node.value {
        Value::Timestamp(t) => Some(format!(
            "`{t}` (line {}) is read as a date; quote it",
            node.line
        )),
        Value::Float(f) if !f.is_finite() => Some(format!(
            "line {} holds {f}, which JSON cannot carry",
            node.line
        )),
        Value::Seq(items) => items.iter().find_map(not_json),
        Value::Map(entries) => entries.iter().find_map(|(k, v)| match k.value {
            Value::Str(_) => not_json(v),
            _ => Some(format!(
                "key `{}` (line {}) is not a string",
                crate::yaml::scalar_text(&k.value),
                k.line
            )),
        }),
        _ => None,
    }
}

fn tags(loaded: &LoadedConfig, out: &mut Vec<Diagnostic>) {
    let c = &loaded.config;
    let Some(tags) = c.model_metadata.get("tags") else {
        trt_openai_tag(loaded, &[], out);
        return;
    };
    let line = raw(loaded, &["model_metadata", "tags"]).map(|n| n.line);
    let Some(list) = tags.as_array() else {
        out.push(
            Diagnostic::warning(
                "invalid_tags",
                "model_metadata.tags",
                "tags should be a list of strings",
                "e.g. tags: [llm, openai-compatible]",
            )
            .at_line(line),
        );
        return;
    };
    let names: Vec<&str> = list.iter().filter_map(Json::as_str).collect();
    for (i, tag) in list.iter().enumerate() {
        let Some(t) = tag.as_str() else { continue };
        if ENVIRONMENT_TAGS.contains(&t.trim().to_ascii_lowercase().as_str()) {
            out.push(
                Diagnostic::warning(
                    "environment_tag",
                    format!("model_metadata.tags[{i}]"),
                    format!("tag `{t}` reads like a deployment environment, but tags are searchable metadata only: they do not route traffic or keep dev apart from prod"),
                    "remove the tag and promote deployments between environments (e.g. `strut promote ID --env production`)",
                )
                .at_line(line),
            );
        }
    }
    trt_openai_tag(loaded, &names, out);
}

/// truss warns when a TRT-LLM v1 decoder makes no choice about OpenAI compatibility.
fn trt_openai_tag(loaded: &LoadedConfig, tags: &[&str], out: &mut Vec<Diagnostic>) {
    let Some(t) = &loaded.config.trt_llm else {
        return;
    };
    if t.inference_stack != InferenceStack::V1
        || matches!(
            t.build.base_model,
            BaseModel::Encoder | BaseModel::EncoderBert
        )
    {
        return;
    }
    let compatible = tags.contains(&"openai-compatible");
    let legacy = tags.contains(&"force-legacy-api-non-openai-compatible");
    // Both tags at once is a load error (schema/mod.rs), as in truss.
    if !compatible && !legacy {
        out.push(Diagnostic::warning(
            "trt_llm_openai_tag",
            "model_metadata.tags",
            "TRT-LLM decoder models should declare `openai-compatible` in model_metadata.tags; the engine builder will require a choice",
            "add `openai-compatible` to model_metadata.tags",
        ));
    }
}

fn secrets(loaded: &LoadedConfig, out: &mut Vec<Diagnostic>) {
    for (name, value) in &loaded.config.secrets {
        // Whatever it holds, the value is never repeated in a message.
        if value.as_deref().is_some_and(|v| !v.trim().is_empty()) {
            out.push(
                Diagnostic::warning(
                    "secret_literal_value",
                    format!("secrets.{name}"),
                    format!("secret `{name}` has a value written in config.yaml; a secret's value belongs in the secret store, never in the config, which is copied into images and repositories"),
                    format!("write `{name}: null` here and store the value as a secret named `{name}`"),
                )
                .at_line(super::resources::line_of(loaded, &format!("secrets.{name}"))),
            );
        }
    }
}
