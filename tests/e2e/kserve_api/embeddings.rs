//! The real MiniLM model through V1 and V2: one BYTES tensor of texts in,
//! one FP32 `[N, 384]` tensor out, the same vectors as `/predict` gives.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::expect_error;
use crate::common::{self, body_json, post_json, send};

const NAME: &str = "all-minilm-l6-v2";
const INFER: &str = "/v2/models/all-minilm-l6-v2/infer";
const TEXTS: [&str; 2] = ["The weather is lovely today.", "It's so sunny outside!"];

async fn minilm() -> axum::Router {
    common::serve_model_dir("models/minilm").await.0
}

async fn ok(router: &axum::Router, path: &str, body: &Value) -> Value {
    let response = send(router, post_json(path, &body.to_string())).await;
    let status = response.status();
    let reply = body_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body} -> {reply}");
    reply
}

fn texts(shape: Value, data: Value) -> Value {
    json!({"inputs": [{"name": "sentences", "shape": shape, "datatype": "BYTES", "data": data}]})
}

fn vectors(value: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(value.clone()).unwrap()
}

fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "{what}");
        let gap = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        assert!(gap < 1e-6, "{what}: rows differ by {gap}");
    }
}

#[tokio::test]
async fn minilm_embeds_through_v1_and_v2_with_the_same_vectors() {
    let router = minilm().await;
    let metadata = body_json(send(&router, super::get(&format!("/v2/models/{NAME}"))).await).await;
    assert_eq!(
        (&metadata["inputs"], &metadata["outputs"]),
        (
            &json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}]),
            &json!([{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}])
        )
    );

    let reply = ok(&router, INFER, &texts(json!([2]), json!(TEXTS))).await;
    assert_eq!(reply["model_name"], NAME);
    let output = &reply["outputs"][0];
    assert_eq!(
        (&output["name"], &output["datatype"], &output["shape"]),
        (&json!("embedding"), &json!("FP32"), &json!([2, 384]))
    );
    let flat: Vec<f64> = serde_json::from_value(output["data"].clone()).unwrap();
    assert_eq!(flat.len(), 2 * 384);
    let rows: Vec<Vec<f64>> = flat.chunks(384).map(<[f64]>::to_vec).collect();
    for row in &rows {
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit norm: {norm}");
    }
    let cosine: f64 = rows[0].iter().zip(&rows[1]).map(|(a, b)| a * b).sum();
    assert!(
        (cosine - 0.6660).abs() < 1e-3,
        "sentence-transformers' figure: {cosine}"
    );

    let truss = ok(&router, "/predict", &json!({"texts": TEXTS})).await;
    assert_close(&rows, &vectors(&truss["embeddings"]), "V2 and /predict");
    let v1 = ok(
        &router,
        "/v1/models/isvc:predict",
        &json!({"instances": TEXTS}),
    )
    .await;
    assert_close(&rows, &vectors(&v1["predictions"]), "V2 and V1");
    // [N, 1] and nested data are the same texts; the filter may name the output.
    let mut column = texts(json!([2, 1]), json!([[TEXTS[0]], [TEXTS[1]]]));
    column["outputs"] = json!([{"name": "embedding"}]);
    let reply = ok(&router, INFER, &column).await;
    assert_eq!(reply["outputs"][0]["data"], output["data"]);

    // V1 instances that are not all texts are the model's own inputs.
    let own = ok(
        &router,
        "/v1/models/isvc:predict",
        &json!({"instances": [{"text": TEXTS[0]}]}),
    )
    .await;
    assert_close(
        &vectors(&own["predictions"][0]["embeddings"]),
        &rows[..1],
        "V1 objects",
    );
}

#[tokio::test]
async fn minilm_refuses_tensors_it_cannot_embed() {
    let router = minilm().await;
    let cases = [
        (
            json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}),
            "invalid_tensor",
            "`x` is FP32; the embedding model takes BYTES",
        ),
        (
            json!({"inputs": [
                {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["b"]}
            ]}),
            "invalid_tensor",
            "exactly one BYTES input",
        ),
        (
            texts(json!([1, 2]), json!([["a", "b"]])),
            "invalid_tensor",
            "takes [N] or [N, 1]",
        ),
        (
            texts(json!([1]), json!([""])),
            "invalid_input",
            "text 0 is empty",
        ),
        (texts(json!([0]), json!([])), "invalid_input", "no texts"),
        (
            texts(json!([3]), json!(["a", "b"])),
            "invalid_tensor",
            "needs 3 elements but data has 2",
        ),
    ];
    for (request, code, message) in cases {
        let response = send(&router, post_json(INFER, &request.to_string())).await;
        let body = expect_error(response, 400, code).await;
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(message),
            "{request}: expected `{message}` in `{error}`"
        );
    }
    let mut unknown = texts(json!([1]), json!(["a"]));
    unknown["outputs"] = json!([{"name": "logits"}]);
    let response = send(&router, post_json(INFER, &unknown.to_string())).await;
    let body = expect_error(response, 400, "invalid_infer_request").await;
    assert!(
        body["error"].as_str().unwrap().contains("`logits`"),
        "{body}"
    );
}
