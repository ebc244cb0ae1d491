//! Truss's predict path: preprocess outside the model slot, predict in it,
//! postprocess after it is released; a streamed output holds the slot until
//! its last chunk.

use std::sync::Arc;

use serde_json::Value;
use strut_model::capabilities::RawRoutes;
use strut_model::{Output, Response, ResponseBody};

use super::{Call, Custom, CustomBody, Reply};
use crate::ApiError;
use crate::codec::StreamMode;
use crate::runner::{LoadedModel, guarded};
use crate::streaming;

impl Call {
    /// The pipeline after decoding, shared by every protocol and the async
    /// worker. `mode` says what becomes of a streamed output.
    pub(crate) async fn predict(
        &self,
        model: &LoadedModel,
        input: Value,
        mode: StreamMode,
    ) -> Result<Reply, ApiError> {
        let input = model.preprocess(input, &self.ctx).await?;
        let slot = self.slot().await?;
        let output = model.predict(input, &self.ctx).await;
        self.observe_inference(slot.taken);
        match output? {
            Output::Json(value) => {
                drop(slot);
                Ok(Reply::Json(model.postprocess(value, &self.ctx).await?))
            }
            Output::Stream(chunks) => {
                let gap = self.deployment.spec().stream_read_timeout;
                let stream = streaming::hold_while_streaming(
                    streaming::byte_stream(chunks, gap),
                    slot.permit,
                );
                let first_byte = self
                    .deployment
                    .series(self.state.metrics())
                    .first_byte_seconds
                    .clone();
                let stream = crate::metrics::time_first_chunk(
                    stream,
                    Result::is_ok,
                    first_byte,
                    self.arrived,
                );
                if mode == StreamMode::Collect {
                    Ok(Reply::Collected(streaming::collect(stream).await?))
                } else {
                    Ok(Reply::Stream(stream))
                }
            }
            // The model chose the reply itself: no postprocess (Truss refuses
            // one with a Response), the slot held while a body streams.
            Output::Response(response) => Ok(custom(self, response, Some(slot.permit))),
        }
    }
}

/// A model's own response as a reply; `hold` lives as long as its body.
fn custom<H: Send + 'static>(call: &Call, response: Response, hold: Option<H>) -> Reply {
    let body = match response.body {
        ResponseBody::Bytes(bytes) => CustomBody::Bytes(bytes),
        ResponseBody::Stream(chunks) => {
            let gap = call.deployment.spec().stream_read_timeout;
            let stream = streaming::byte_stream(chunks, gap);
            CustomBody::Stream(streaming::hold_while_streaming(stream, hold))
        }
    };
    Reply::Custom(Custom {
        status: response.status,
        headers: response.headers,
        body,
    })
}

impl Call {
    /// A route the model answers itself: the body goes through as it came,
    /// and a stream comes back as the model framed it. As in Truss these
    /// take no model slot and no pre/postprocess: the model's own engine
    /// schedules them.
    pub(crate) async fn raw(
        &self,
        routes: Arc<dyn RawRoutes>,
        route: &str,
        body: Value,
    ) -> Result<Reply, ApiError> {
        let started = std::time::Instant::now();
        let output = guarded(routes.call(route, body, &self.ctx)).await;
        self.observe_inference(started);
        match output? {
            Output::Json(value) => Ok(Reply::Json(value)),
            Output::Stream(chunks) => {
                let gap = self.deployment.spec().stream_read_timeout;
                Ok(Reply::Framed(streaming::byte_stream(chunks, gap)))
            }
            Output::Response(response) => Ok(custom(self, response, None::<()>)),
        }
    }
}
