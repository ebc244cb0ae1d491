use axum::Json;
use axum::routing::post;
use serde_json::Value;

async fn echo(Json(body): Json<Value>) -> Json<Value> {
    Json(body)
}

#[tokio::main]
async fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8089".into());
    let app = axum::Router::new().route("/predict", post(echo));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
