//! `GET /openapi.json`: an OpenAPI 3.0 document of strut's Cog routes.
//!
//! Cog derives its schema from the predictor's Python signature when the
//! image is built. A strut model has no signature to read, so `Input` comes
//! from the model's `model_metadata.example_model_input`: one property per
//! field of the example, typed by its value, all optional (an example shows
//! what may be sent, not what must). Without an example object, `Input` is a
//! free-form object. `Output` is free-form: whether a model streams is
//! decided per request.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::authorize_inference;
use crate::AppState;
use crate::state::PRODUCTION;

pub(super) async fn document(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let deployment =
        match authorize_inference(&state, &headers).and_then(|()| state.environment(PRODUCTION)) {
            Ok(deployment) => deployment,
            Err(err) => return err.into_response(),
        };
    let example = deployment
        .spec()
        .init
        .config
        .pointer("/model_metadata/example_model_input");
    axum::Json(build(deployment.model_name(), example)).into_response()
}

fn build(model_name: &str, example: Option<&Value>) -> Value {
    let json_body = |schema: &str| json!({"application/json": {"schema": reference(schema)}});
    let prediction = |status: &str| {
        json!({"description": status, "content": {
            "application/json": {"schema": reference("PredictionResponse")},
            "text/event-stream": {"schema": {"type": "string",
                "description": "Server-sent events: start, output, log, completed"}},
        }})
    };
    let create = |summary: &str, operation_id: &str| {
        json!({
            "summary": summary,
            "operationId": operation_id,
            "parameters": [{
                "name": "prefer", "in": "header", "required": false,
                "description": "`respond-async` queues the prediction and answers 202 at once",
                "schema": {"type": "string"},
            }],
            "requestBody": {"required": false, "content": json_body("PredictionRequest")},
            "responses": {
                "200": prediction("The finished prediction, or its events with `Accept: text/event-stream`"),
                "202": {"description": "Queued (`Prefer: respond-async`), or already known under this id",
                        "content": json_body("PredictionResponse")},
                "409": {"description": "Every prediction slot is busy", "content": json_body("Error")},
                "422": {"description": "Invalid input", "content": json_body("PredictionResponse")},
                "503": {"description": "The model is not ready", "content": json_body("Error")},
            },
        })
    };
    let id_parameter = json!({
        "name": "prediction_id", "in": "path", "required": true, "schema": {"type": "string"},
    });
    let mut put = create(
        "Create a prediction under a given id (idempotent)",
        "predict_idempotent",
    );
    put["parameters"]
        .as_array_mut()
        .expect("parameters is a list")
        .push(id_parameter.clone());
    put["responses"]["422"] = json!({
        "description": "Invalid input, or a body `id` other than the path's",
        "content": json_body("HTTPValidationError"),
    });
    json!({
        "openapi": "3.0.2",
        "info": {
            "title": model_name,
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Cog's predictions API, served by strut",
        },
        "paths": {
            "/health-check": {"get": {
                "summary": "Readiness in the `status` field (always 200)",
                "operationId": "healthcheck",
                "responses": {"200": {"description": "Health", "content": json_body("HealthCheck")}},
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi_schema",
                "responses": {"200": {"description": "OpenAPI 3.0 document",
                    "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
            "/predictions": {"post": create("Create a prediction", "predict")},
            "/predictions/{prediction_id}": {"put": put},
            "/predictions/{prediction_id}/cancel": {"post": {
                "summary": "Cancel a queued or running prediction",
                "operationId": "cancel",
                "parameters": [id_parameter],
                "responses": {
                    "200": {"description": "Found: canceled, or signalled to stop",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "404": {"description": "No such prediction",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                },
            }},
        },
        "components": {"schemas": schemas(example)},
    })
}

fn reference(schema: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{schema}")})
}

fn schemas(example: Option<&Value>) -> Value {
    json!({
        "Input": input_schema(example),
        "Output": {"title": "Output"},
        "Status": {"title": "Status", "type": "string",
                   "enum": ["starting", "processing", "succeeded", "failed", "canceled"]},
        "WebhookEvent": {"title": "WebhookEvent", "type": "string",
                         "enum": ["start", "output", "logs", "completed"]},
        "PredictionRequest": {"title": "PredictionRequest", "type": "object", "properties": {
            "id": {"type": "string", "description": "Made by the server when absent"},
            "input": reference("Input"),
            "webhook": {"type": "string", "format": "uri"},
            "webhook_events_filter": {"type": "array", "items": reference("WebhookEvent"),
                                      "default": ["start", "output", "logs", "completed"]},
        }},
        "PredictionResponse": {"title": "PredictionResponse", "type": "object", "properties": {
            "id": {"type": "string"},
            "input": reference("Input"),
            "output": reference("Output"),
            "status": reference("Status"),
            "logs": {"type": "string"},
            "error": {"type": "string", "nullable": true},
            "created_at": {"type": "string", "format": "date-time", "nullable": true},
            "started_at": {"type": "string", "format": "date-time", "nullable": true},
            "completed_at": {"type": "string", "format": "date-time", "nullable": true},
            "metrics": {"type": "object", "properties": {"predict_time": {"type": "number"}}},
        }},
        "HealthCheck": {"title": "HealthCheck", "type": "object", "properties": {
            "status": {"type": "string",
                       "enum": ["STARTING", "READY", "BUSY", "SETUP_FAILED", "UNHEALTHY"]},
            "setup": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["starting", "succeeded", "failed"]},
            }},
        }},
        "Error": {"title": "Error", "type": "object", "properties": {
            "error": {"type": "string"},
            "status": {"type": "string"},
            "code": {"type": "string", "description": "strut's stable error code"},
        }},
        "HTTPValidationError": {"title": "HTTPValidationError", "type": "object", "properties": {
            "detail": {"type": "array", "items": {"type": "object", "properties": {
                "loc": {"type": "array", "items": {"type": "string"}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
            }}},
        }},
    })
}

fn input_schema(example: Option<&Value>) -> Value {
    let mut schema = match example {
        Some(example @ Value::Object(_)) => {
            let mut schema = of_example(example);
            schema["example"] = example.clone();
            schema
        }
        _ => json!({"type": "object"}),
    };
    schema["title"] = json!("Input");
    schema
}

/// The schema an example value suggests: its type, and an object's fields
/// (optional) or an array's items (by the first one) in turn.
fn of_example(value: &Value) -> Value {
    match value {
        // Any type may be sent where the example has null.
        Value::Null => json!({"nullable": true}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_f64() => json!({"type": "number"}),
        Value::Number(_) => json!({"type": "integer"}),
        Value::String(_) => json!({"type": "string"}),
        Value::Array(items) => json!({
            "type": "array",
            "items": items.first().map_or_else(|| json!({}), of_example),
        }),
        Value::Object(fields) => {
            let properties: Map<String, Value> = fields
                .iter()
                .map(|(name, value)| {
                    let mut property = of_example(value);
                    property["title"] = json!(title(name));
                    (name.clone(), property)
                })
                .collect();
            json!({"type": "object", "properties": properties})
        }
    }
}

/// Cog's titles: `max_new_tokens` reads "Max New Tokens".
fn title(name: &str) -> String {
    name.split('_')
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_fields_are_typed_by_their_example_and_optional() {
        let example = json!({"prompt": "hi", "max_new_tokens": 3, "temperature": 0.7,
                             "stream": false, "stop": ["a"], "extra": {"k": null}});
        let input = input_schema(Some(&example));
        let properties = &input["properties"];
        let types: Vec<_> = ["prompt", "max_new_tokens", "temperature", "stream", "stop"]
            .iter()
            .map(|f| properties[f]["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["string", "integer", "number", "boolean", "array"]);
        assert_eq!(properties["stop"]["items"]["type"], "string");
        assert_eq!(properties["max_new_tokens"]["title"], "Max New Tokens");
        assert_eq!(properties["extra"]["properties"]["k"]["nullable"], true);
        assert!(input.get("required").is_none());
        assert_eq!(input["example"], example);
    }

    #[test]
    fn without_an_example_object_input_is_free_form() {
        for example in [None, Some(json!("text")), Some(json!([1]))] {
            let input = input_schema(example.as_ref());
            assert_eq!(input, json!({"title": "Input", "type": "object"}));
        }
    }
}
