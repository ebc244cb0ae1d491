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

use super::tensor::{Datatype, RawTensor, Tensor, TensorError, binary, kind};
use super::{check_name, embed_texts};
use crate::codec::{BodyFormat, StreamMode, read_body, read_input};
use crate::pipeline::{self, Call, Custom, CustomBody, Encoding, Reply};
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
    /// `binary_data: true` asks for this output as binary data.
    #[serde(default)]
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
    let json_length = match headers
        .get(BINARY_EXTENSION_HEADER)
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()))
    {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => {
            return ApiError::InvalidInferRequest(format!(
                "`{BINARY_EXTENSION_HEADER}` must be the JSON header's length in bytes"
            ))
            .into_response();
        }
    };
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
        run(call, name, body, json_length)
    })
    .await
}

async fn run(
    call: Call,
    name: String,
    body: Body,
    json_length: Option<usize>,
) -> Result<Reply, ApiError> {
    let model = call.model()?;
    let mut request = match json_length {
        None => parse(read_input(call.state.limits(), BodyFormat::Json, body).await?)?,
        Some(length) => {
            let bytes = read_body(body, call.state.limits().max_body_bytes).await?;
            let (json, binary) = bytes.split_at_checked(length).ok_or_else(|| {
                ApiError::InvalidInferRequest(format!(
                    "`{BINARY_EXTENSION_HEADER}` is {length} but the body has {} bytes",
                    bytes.len()
                ))
            })?;
            let json: Value = serde_json::from_slice(json)
                .map_err(|err| ApiError::InvalidJson(err.to_string()))?;
            let mut request = parse(json)?;
            attach_binary(&mut request.inputs, binary)?;
            request
        }
    };
    let binary_output = take_flag(&mut request.parameters, "binary_data_output");
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
    let binary = outputs_in_binary(&outputs, request.outputs.as_deref(), binary_output);
    let response = InferResponse {
        model_name: &name,
        model_version: call.deployment.id(),
        id: request
            .id
            .unwrap_or_else(|| call.ctx.request_id().to_owned()),
        parameters,
        outputs,
    };
    if binary.iter().any(|&b| b) {
        return binary_reply(response, &binary);
    }
    serde_json::to_value(response)
        .map(Reply::Json)
        .map_err(|err| ApiError::Internal(format!("encoding the V2 response: {err}")))
}

/// Removes a boolean request parameter, true when it was set.
fn take_flag(parameters: &mut Option<Map<String, Value>>, key: &str) -> bool {
    parameters
        .as_mut()
        .and_then(|p| p.remove(key))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// Gives each input that declares `binary_data_size` its share of the
/// binary part, decoded into JSON `data`.
fn attach_binary(inputs: &mut [RawTensor], mut binary: &[u8]) -> Result<(), ApiError> {
    for input in inputs.iter_mut() {
        let Some(size) = input
            .parameters
            .as_mut()
            .and_then(|p| p.remove("binary_data_size"))
        else {
            continue;
        };
        let invalid = |message: String| {
            ApiError::InvalidTensor(format!("tensor `{}`: {message}", input.name))
        };
        let size = size
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| invalid("`binary_data_size` must be a byte count".into()))?;
        if input.data.is_some() {
            return Err(invalid("has both `data` and `binary_data_size`".into()));
        }
        let (raw, rest) = binary.split_at_checked(size).ok_or_else(|| {
            invalid(format!(
                "`binary_data_size` is {size} but only {} bytes of binary data are left",
                binary.len()
            ))
        })?;
        binary = rest;
        let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
            ApiError::UnknownDatatype(format!(
                "tensor `{}` has datatype `{}`",
                input.name, input.datatype
            ))
        })?;
        let count = input
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(u64::try_from(d).ok()?))
            .ok_or_else(|| invalid(format!("shape {:?} is not a tensor shape", input.shape)))?;
        let data = binary::decode(datatype, count, raw).map_err(invalid)?;
        input.data = Some(Value::Array(data));
    }
    if !binary.is_empty() {
        return Err(ApiError::InvalidInferRequest(format!(
            "{} bytes of binary data belong to no input",
            binary.len()
        )));
    }
    Ok(())
}

/// Per output, whether it goes back as binary data:
/// its own `binary_data` parameter, else the request's `binary_data_output`.
fn outputs_in_binary(
    outputs: &[Tensor],
    requested: Option<&[RequestedOutput]>,
    all: bool,
) -> Vec<bool> {
    outputs
        .iter()
        .map(|t| {
            requested
                .into_iter()
                .flatten()
                .find(|r| r.name == t.name)
                .and_then(|r| r.parameters.as_ref())
                .and_then(|p| p.get("binary_data"))
                .and_then(Value::as_bool)
                .unwrap_or(all)
        })
        .collect()
}

/// The JSON header (binary outputs carry `binary_data_size`, no `data`),
/// then their bytes, with the header's length in
/// `Inference-Header-Content-Length`.
fn binary_reply(response: InferResponse<'_>, binary_outputs: &[bool]) -> Result<Reply, ApiError> {
    let mut bytes = Vec::new();
    let mut json = serde_json::to_value(&response)
        .map_err(|err| ApiError::Internal(format!("encoding the V2 response: {err}")))?;
    for ((tensor, &binary), value) in response
        .outputs
        .iter()
        .zip(binary_outputs)
        .zip(json["outputs"].as_array_mut().into_iter().flatten())
    {
        if !binary {
            continue;
        }
        let before = bytes.len();
        binary::encode(tensor.datatype, &tensor.data, &mut bytes).map_err(|err| {
            ApiError::InvalidModelOutput(format!("output `{}`: {err}", tensor.name))
        })?;
        let object = value
            .as_object_mut()
            .expect("a tensor serializes to an object");
        object.remove("data");
        object
            .entry("parameters")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("parameters is an object")
            .insert("binary_data_size".into(), (bytes.len() - before).into());
    }
    let header = serde_json::to_vec(&json)
        .map_err(|err| ApiError::Internal(format!("encoding the V2 response: {err}")))?;
    let length = header.len();
    let mut body = header;
    body.extend(bytes);
    Ok(Reply::Custom(Custom {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/octet-stream".into()),
            (BINARY_EXTENSION_HEADER.into(), length.to_string()),
        ],
        body: CustomBody::Bytes(body.into()),
    }))
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
