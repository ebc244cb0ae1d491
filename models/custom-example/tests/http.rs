//! The example model through strut's HTTP server, as a team would test theirs.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use strut_model::{InitContext, Registry};
use strut_server::{DeploymentSpec, Limits, PRODUCTION, Server};
use tower::ServiceExt;

async fn router() -> axum::Router {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut registry = Registry::new();
    strut_example_keywords::register(&mut registry);
    let spec = DeploymentSpec {
        id: "example".into(),
        model_name: "keywords".into(),
        model_class: "Keywords".into(),
        init: InitContext::new(
            json!({"model_metadata": {"max_keywords": 2}}),
            dir.join("data"),
        ),
        predict_concurrency: 1,
        stream_read_timeout: Duration::from_secs(5),
    };
    let server = Server::new(Limits::default());
    server
        .deploy(spec, &registry, &[PRODUCTION])
        .loaded()
        .await
        .expect("loads");
    server.router()
}

async fn post(router: &axum::Router, body: &str) -> (StatusCode, String) {
    let request = Request::post("/predict")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn keywords_skip_stopwords_from_the_data_dir_and_are_postprocessed() {
    let router = router().await;
    let (status, body) = post(
        &router,
        r#"{"text": "The fox and the dog; the FOX again."}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"model": "Keywords", "result": {
            "keywords": [{"word": "fox", "count": 2}, {"word": "again", "count": 1}],
            "words": 8
        }})
    );
}

#[tokio::test]
async fn streaming_yields_one_line_per_keyword() {
    let (status, body) = post(
        &router().await,
        r#"{"text": "fox fox dog", "stream": true}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fox 2\ndog 1\n"));
}

#[tokio::test]
async fn bad_input_is_rejected_by_preprocess() {
    let router = router().await;
    let (status, body) = post(&router, r#"{"text": "  ...  "}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("`text` has no words"), "{body}");
    let (status, body) = post(&router, r#"{"txt": "hello"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown field `txt`"), "{body}");
}
