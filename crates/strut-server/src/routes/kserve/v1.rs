//! KServe V1's predict: `{"instances": [...]}` in, `{"predictions": [...]}`
//! out, each instance one run of the model's predict pipeline. Any other body
//! is Truss's, passed to predict as it is, on the same path.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::future::try_join_all;
use serde_json::{Value, json};

use super::embed_texts;
use super::tensor::kind;
use crate::codec::{StreamMode, read_input};
use crate::pipeline::{self, Call, Encoding, Reply};
use crate::request::RequestId;
use crate::routes::mount::{Target, route};
use crate::runner::LoadedModel;
use crate::state::PRODUCTION;
use crate::{ApiError, AppState};

/// `POST /v1/models/{name}:predict` on the production deployment.
pub(in crate::routes) async fn predict(
    state: AppState,
    id: RequestId,
    headers: HeaderMap,
    query: Option<String>,
    body: Body,
) -> Response {
    let encoding = Encoding::of_request(&headers);
    let routed = match route(&Target::Environment(PRODUCTION.into()), &state, &headers) {
        Ok(routed) => routed,
        Err(err) => return err.into_response(),
    };
    // Truss's own predict path: its models read the request here too.
    let meta = crate::request::meta_for(routed.deployment(), &headers, query.as_deref());
    drop(headers);
    pipeline::serve(state, routed, id, encoding, move |call| {
        run(call.with_request(meta), encoding, body)
    })
    .await
}

/// A V1 predict body: KServe's instances, or Truss's own input.
enum Form {
    Instances(Vec<Value>),
    Truss(Value),
}

async fn run(call: Call, encoding: Encoding, body: Body) -> Result<Reply, ApiError> {
    let model = call.model()?;
    let input = read_input(call.state.limits(), encoding.format, body).await?;
    let instances = match classify(input)? {
        Form::Instances(instances) => instances,
        Form::Truss(input) => return call.predict(&model, input, encoding.mode).await,
    };
    let texts: Option<Vec<String>> = instances
        .iter()
        .map(|i| i.as_str().map(str::to_owned))
        .collect();
    let predictions = match (model.embeddings(), texts) {
        (Some(embeddings), Some(texts)) => json!(embed_texts(&call, embeddings, texts).await?),
        _ => {
            let runs = instances
                .into_iter()
                .map(|instance| prediction(&call, &model, instance));
            Value::Array(try_join_all(runs).await?)
        }
    };
    Ok(Reply::Json(json!({"predictions": predictions})))
}

/// The V1 form is an object of exactly `instances`, optionally with
/// `parameters`; a Truss model's own input rarely looks like that.
fn classify(input: Value) -> Result<Form, ApiError> {
    let Value::Object(mut body) = input else {
        return Ok(Form::Truss(input));
    };
    if !body.keys().all(|k| k == "instances" || k == "parameters") {
        return Ok(Form::Truss(Value::Object(body)));
    }
    let Some(instances) = body.remove("instances") else {
        return Ok(Form::Truss(Value::Object(body)));
    };
    check_parameters(body.remove("parameters"))?;
    match instances {
        Value::Array(instances) if !instances.is_empty() => Ok(Form::Instances(instances)),
        Value::Array(_) => Err(ApiError::InvalidInferRequest(
            "`instances` is empty; send at least one instance".into(),
        )),
        other => Err(ApiError::InvalidInferRequest(format!(
            "`instances` must be an array, got {}",
            kind(&other)
        ))),
    }
}

/// Each instance is a predict input of its own, so request-wide parameters
/// would have nowhere to go; refusing them beats dropping them silently.
fn check_parameters(parameters: Option<Value>) -> Result<(), ApiError> {
    match parameters {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) if map.is_empty() => Ok(()),
        Some(Value::Object(_)) => Err(ApiError::InvalidInferRequest(
            "V1 `parameters` are not supported: each instance is the model's whole input, so \
             put options in every instance"
                .into(),
        )),
        Some(other) => Err(ApiError::InvalidInferRequest(format!(
            "`parameters` must be an object, got {}",
            kind(&other)
        ))),
    }
}

/// One instance through preprocess, a model slot, predict and postprocess;
/// a streamed output is collected into a string.
async fn prediction(call: &Call, model: &LoadedModel, instance: Value) -> Result<Value, ApiError> {
    call.predict(model, instance, StreamMode::Collect)
        .await?
        .into_value(false)
        .await
}
