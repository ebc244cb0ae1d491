//! `POST /v1/embeddings` over the `Embeddings` capability: text in, vectors
//! out as JSON floats or as base64 of little-endian f32s.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde::Serialize;
use serde_json::Value;

use super::fields::{Fields, invalid, unsupported};
use super::served_name;
use crate::ApiError;
use crate::pipeline::{Call, Reply};
use crate::runner::guarded;

#[derive(Clone, Copy)]
enum Encoding {
    Float,
    Base64,
}

pub(super) async fn run(call: Call, body: Value) -> Result<Reply, ApiError> {
    // A model that answers the route itself (Truss's method) gets the body.
    let model = call.model()?;
    if let Some(routes) = Call::raw_route(&model, "embeddings") {
        return call.raw(routes, "embeddings", body).await;
    }
    let embedder = call.embeddings(&model)?;
    let mut fields = Fields::new(body)?;
    let texts = take_input(&mut fields)?;
    let requested = fields.take::<String>("model", "a string")?;
    let encoding = match fields
        .take::<String>("encoding_format", "`float` or `base64`")?
        .as_deref()
    {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
            ));
        }
    };
    let dimensions = embedder.dimensions();
    if let Some(asked) = fields.take::<u64>("dimensions", "a positive integer")?
        && asked != dimensions as u64
    {
        return Err(unsupported(
            "dimensions",
            format!(
                "this model's embeddings have {dimensions} dimensions; they cannot be shortened to {asked}"
            ),
        ));
    }
    fields.finish(&["user"], &[])?;
    let name = served_name(requested, embedder.model_id(), call.deployment.model_name())?;

    let slot = call.slot().await?;
    let count = texts.len();
    let output = guarded(embedder.embed(texts, &call.ctx)).await;
    drop(slot.permit);
    call.observe_inference(slot.taken);
    let output = output?;
    if output.embeddings.len() != count {
        return Err(ApiError::ModelFailed(format!(
            "the model returned {} embeddings for {count} inputs",
            output.embeddings.len()
        )));
    }
    let data = output
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, vector)| Embedding {
            object: "embedding",
            index,
            embedding: encode(vector, encoding),
        })
        .collect();
    Reply::document(&List {
        object: "list",
        data,
        model: name,
        usage: UsageBody {
            prompt_tokens: output.prompt_tokens,
            total_tokens: output.prompt_tokens,
        },
    })
}

/// A string or a list of strings; token ids are not taken.
fn take_input(fields: &mut Fields) -> Result<Vec<String>, ApiError> {
    const SHAPE: &str = "`input` must be a string or a list of strings";
    match fields.take_raw("input") {
        Some(Value::String(text)) => Ok(vec![text]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(invalid("input", "`input` must not be an empty list"))
        }
        Some(Value::Array(items)) => {
            if items.iter().all(|i| i.is_u64() || i.is_array()) {
                return Err(unsupported(
                    "input",
                    "token-id inputs are not supported; send text",
                ));
            }
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text),
                    _ => Err(invalid("input", SHAPE)),
                })
                .collect()
        }
        Some(_) => Err(invalid("input", SHAPE)),
        None => Err(invalid("input", "`input` is required")),
    }
}

fn encode(vector: Vec<f32>, encoding: Encoding) -> Vector {
    match encoding {
        Encoding::Float => Vector::Float(vector),
        Encoding::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            Vector::Base64(BASE64_STANDARD.encode(bytes))
        }
    }
}

#[derive(Serialize)]
struct List {
    object: &'static str,
    data: Vec<Embedding>,
    model: String,
    usage: UsageBody,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct UsageBody {
    prompt_tokens: u32,
    total_tokens: u32,
}
