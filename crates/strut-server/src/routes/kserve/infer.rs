//! `POST /v2/models/{name}/infer`. An embedding model is served through its
//! `Embeddings` capability; any other model gets the validated request as its
//! predict input and answers with tensors, so a custom model speaks V2
//! without routing changes.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strut_model::capabilities::Embeddings;

use super::tensor::{Datatype, RawTensor, Tensor, TensorError, kind};
use super::{check_name, embed_texts};
use crate::codec::{BodyFormat, StreamMode, read_input};
use crate::pipeline::{self, Call, Encoding, Reply};
use crate::request::RequestId;
use crate::routes::mount::{Target, route};
use crate::runner::LoadedModel;
use crate::state::PRODUCTION;
use crate::{ApiError, AppState};

pub(super) const EMBEDDING_OUTPUT: &str = "embedding";

/// The header of the protocol's binary tensor extension.
const BINARY_EXTENSION_HEADER: &str = "inference-header-content-length";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<RawTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted as the protocol allows; strut has no output options"
    )]
    parameters: Option<Map<String, Value>>,
}

/// What a model other than an embedding model must answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelReply {
    outputs: Vec<RawTensor>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// What such a model receives: validated inputs, data flat.
#[derive(Serialize)]
struct ModelInput<'a> {
    inputs: &'a [Tensor],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Map<String, Value>>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    outputs: Vec<Tensor>,
}

pub(super) async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if headers.contains_key(BINARY_EXTENSION_HEADER) {
        return ApiError::NotImplemented(
            "the binary tensor data extension is not supported; send tensors as JSON `data`".into(),
        )
        .into_response();
    }
    let routed = route(&Target::Environment(PRODUCTION.into()), &state, &headers)
        .and_then(|routed| check_name(routed.deployment(), &name).map(|()| routed));
    let routed = match routed {
        Ok(routed) => routed,
        Err(err) => return err.into_response(),
    };
    // A V2 reply is one JSON document: a streamed output is collected (and
    // then refused, as it holds no tensors).
    let encoding = Encoding::json(StreamMode::Collect);
    pipeline::serve(state, routed, id, encoding, move |call| {
        run(call, name, body)
    })
    .await
}

async fn run(call: Call, name: String, body: Body) -> Result<Reply, ApiError> {
    let model = call.model()?;
    let input = read_input(call.state.limits(), BodyFormat::Json, body).await?;
    let request = parse(input)?;
    let inputs = validate_inputs(request.inputs)?;
    let (outputs, parameters) = match model.embeddings() {
        Some(embeddings) => {
            check_requested(request.outputs.as_deref(), &[EMBEDDING_OUTPUT])?;
            let embedded = embed(&call, embeddings, &inputs).await?;
            (vec![embedded], None)
        }
        None => predict(&call, &model, &inputs, &request.parameters).await?,
    };
    let outputs = select(outputs, request.outputs.as_deref())?;
    let response = InferResponse {
        model_name: &name,
        model_version: call.deployment.id(),
        id: request
            .id
            .unwrap_or_else(|| call.ctx.request_id().to_owned()),
        parameters,
        outputs,
    };
    serde_json::to_value(response)
        .map(Reply::Json)
        .map_err(|err| ApiError::Internal(format!("encoding the V2 response: {err}")))
}

fn parse(input: Value) -> Result<InferRequest, ApiError> {
    // serde would take a struct from an array too, and say something odd.
    if !input.is_object() {
        return Err(ApiError::InvalidInferRequest(format!(
            "an inference request is a JSON object, got {}",
            kind(&input)
        )));
    }
    serde_path_to_error::deserialize(input).map_err(|err| {
        let path = err.path().to_string();
        let message = if path == "." {
            err.inner().to_string()
        } else {
            format!("{path}: {}", err.inner())
        };
        ApiError::InvalidInferRequest(format!("invalid inference request: {message}"))
    })
}

fn validate_inputs(raw: Vec<RawTensor>) -> Result<Vec<Tensor>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::InvalidInferRequest(
            "`inputs` is empty; send at least one tensor".into(),
        ));
    }
    let inputs = raw
        .into_iter()
        .map(RawTensor::validate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| match err {
            TensorError::UnknownDatatype { .. } => ApiError::UnknownDatatype(err.to_string()),
            TensorError::Invalid(message) => ApiError::InvalidTensor(message),
        })?;
    if let Some(name) = duplicate(&inputs) {
        return Err(ApiError::InvalidInferRequest(format!(
            "two inputs are named `{name}`; input names must be unique"
        )));
    }
    Ok(inputs)
}

fn duplicate(tensors: &[Tensor]) -> Option<&str> {
    let mut seen = HashSet::new();
    tensors
        .iter()
        .map(|t| t.name.as_str())
        .find(|name| !seen.insert(*name))
}

/// Fails on a requested output the model does not produce.
fn check_requested(requested: Option<&[RequestedOutput]>, known: &[&str]) -> Result<(), ApiError> {
    match requested
        .into_iter()
        .flatten()
        .find(|r| !known.contains(&r.name.as_str()))
    {
        Some(unknown) => Err(ApiError::InvalidInferRequest(format!(
            "the model has no output named `{}`; its outputs are {}",
            unknown.name,
            known
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Ok(()),
    }
}

/// The outputs the request asked for, in its order; all when it named none.
fn select(
    mut outputs: Vec<Tensor>,
    requested: Option<&[RequestedOutput]>,
) -> Result<Vec<Tensor>, ApiError> {
    let requested = match requested {
        Some(requested) if !requested.is_empty() => requested,
        _ => return Ok(outputs),
    };
    let known: Vec<&str> = outputs.iter().map(|t| t.name.as_str()).collect();
    check_requested(Some(requested), &known)?;
    let mut picked = Vec::with_capacity(requested.len());
    for wanted in requested {
        if let Some(i) = outputs.iter().position(|t| t.name == wanted.name) {
            picked.push(outputs.swap_remove(i));
        }
    }
    Ok(picked)
}

/// One BYTES tensor of texts, `[N]` or `[N, 1]`, embedded in one call (the
/// model batches) under one model slot.
async fn embed(
    call: &Call,
    embeddings: &Arc<dyn Embeddings>,
    inputs: &[Tensor],
) -> Result<Tensor, ApiError> {
    let input = match inputs {
        [input] => input,
        _ => {
            return Err(ApiError::InvalidTensor(format!(
                "the embedding model takes exactly one BYTES input of texts, got {} inputs",
                inputs.len()
            )));
        }
    };
    if input.datatype != Datatype::Bytes {
        return Err(ApiError::InvalidTensor(format!(
            "tensor `{}` is {}; the embedding model takes BYTES (texts)",
            input.name,
            input.datatype.name()
        )));
    }
    let texts: Vec<String> = match input.shape.as_slice() {
        [_] | [_, 1] => input
            .data
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        shape => {
            return Err(ApiError::InvalidTensor(format!(
                "tensor `{}` has shape {shape:?}; the embedding model takes [N] or [N, 1]",
                input.name
            )));
        }
    };
    let count = texts.len() as u64;
    let dimensions = embeddings.dimensions() as u64;
    let vectors = embed_texts(call, embeddings, texts).await?;
    Ok(Tensor {
        name: EMBEDDING_OUTPUT.into(),
        datatype: Datatype::Fp32,
        shape: vec![count, dimensions],
        parameters: None,
        data: vectors.into_iter().flatten().map(Value::from).collect(),
    })
}

/// Any other model: its normal predict pipeline, on the validated request.
async fn predict(
    call: &Call,
    model: &LoadedModel,
    inputs: &[Tensor],
    parameters: &Option<Map<String, Value>>,
) -> Result<(Vec<Tensor>, Option<Map<String, Value>>), ApiError> {
    let input = ModelInput {
        inputs,
        parameters: parameters.as_ref(),
    };
    let input = serde_json::to_value(input)
        .map_err(|err| ApiError::Internal(format!("encoding the model's input: {err}")))?;
    let reply = match call.predict(model, input, StreamMode::Collect).await? {
        Reply::Json(value) => value,
        _ => {
            return Err(ApiError::InvalidModelOutput(
                "the model streamed; V2 needs a JSON object with `outputs`".into(),
            ));
        }
    };
    let reply: ModelReply = serde_path_to_error::deserialize(reply)
        .map_err(|err| ApiError::InvalidModelOutput(format!("{}: {}", err.path(), err.inner())))?;
    let outputs = reply
        .outputs
        .into_iter()
        .map(RawTensor::validate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ApiError::InvalidModelOutput(err.to_string()))?;
    if let Some(name) = duplicate(&outputs) {
        return Err(ApiError::InvalidModelOutput(format!(
            "two outputs are named `{name}`"
        )));
    }
    Ok((outputs, reply.parameters))
}
