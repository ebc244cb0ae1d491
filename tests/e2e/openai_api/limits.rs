//! The server's limits on OpenAI routes: body size and the request
//! deadline, answered in OpenAI's shape; a request past its deadline stops
//! the model.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use strut_server::{Limits, PRODUCTION, Server};

use super::{assert_error, post, registry};
use crate::common;
use crate::common::models::TalkProbe;
use crate::lifecycle::wait_for;

#[tokio::test]
async fn body_size_and_deadline_are_enforced() {
    let probe = Arc::new(TalkProbe::default());
    let limits = Limits {
        max_body_bytes: 512,
        request_timeout: Duration::from_millis(300),
        ..common::limits()
    };
    let server = Server::new(limits);
    let deployment = server.deploy(common::spec("Talker", 1), &registry(&probe), &[PRODUCTION]);
    deployment.loaded().await.unwrap();
    let router = server.router();

    let big = json!({"messages": [{"role": "user", "content": "x".repeat(600)}]});
    let reply = post(&router, "/v1/chat/completions", &big).await;
    assert_error(&reply, 413, "payload_too_large", None);

    // 40 tokens at 50 ms each cannot be done in 300 ms.
    let slow = json!({"messages": [{"role": "user", "content": "slow"}],
                      "max_tokens": 40, "ignore_eos": true});
    let reply = post(&router, "/v1/chat/completions", &slow).await;
    assert_error(&reply, 504, "timeout", None);
    wait_for(
        || probe.cancelled.load(Ordering::SeqCst) == 1,
        "the generation stops at the deadline",
    )
    .await;
    assert_eq!(deployment.admission().in_flight(), 0);
}
