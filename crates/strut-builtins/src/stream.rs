use std::time::Duration;

use serde::Deserialize;
use strut_model::{Chunk, Model, ModelError, Output, RequestContext, Value};

/// A blocking streaming example: yields `n` chunks `"{prefix}-{i}\n"`, sleeping
/// `delay_ms` before each, and stops early when the request is cancelled.
pub struct Stream;

impl Stream {
    pub const CLASS: &'static str = "Stream";
    const MAX_CHUNKS: u32 = 100_000;
    const MAX_DELAY_MS: u64 = 60_000;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamInput {
    #[serde(default = "default_n")]
    pub n: u32,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_n() -> u32 {
    20
}

fn default_prefix() -> String {
    "chunk".into()
}

impl Model for Stream {
    fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        // serde would read a struct from an array too (`[1, 2]` as n and
        // delay_ms): only the documented shape is accepted.
        if !input.is_object() {
            return Err(ModelError::invalid_input(
                r#"the input must be an object such as {"n": 5, "delay_ms": 100}"#,
            ));
        }
        let input: StreamInput = serde_json::from_value(input)
            .map_err(|e| ModelError::invalid_input(format!("invalid input: {e}")))?;
        if input.n > Self::MAX_CHUNKS {
            return Err(ModelError::invalid_input(format!(
                "n must be at most {}, got {}",
                Self::MAX_CHUNKS,
                input.n
            )));
        }
        if input.delay_ms > Self::MAX_DELAY_MS {
            return Err(ModelError::invalid_input(format!(
                "delay_ms must be at most {}, got {}",
                Self::MAX_DELAY_MS,
                input.delay_ms
            )));
        }
        let ctx = ctx.clone();
        let delay = Duration::from_millis(input.delay_ms);
        let chunks = (0..input.n).map_while(move |i| {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            if ctx.is_cancelled() {
                ctx.log()
                    .info(format!("cancelled after {i} of {} chunks", input.n));
                return None;
            }
            ctx.log().debug(format!("chunk {}/{}", i + 1, input.n));
            Some(Ok(Chunk::text(format!("{}-{i}\n", input.prefix))))
        });
        Ok(Output::from_chunks(chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strut_model::{ChunkStream, json};

    fn collect(out: Output) -> String {
        let Output::Stream(ChunkStream::Blocking(iter)) = out else {
            panic!("expected a stream")
        };
        iter.map(|c| String::from_utf8(c.unwrap().as_bytes().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn yields_numbered_chunks() {
        let out = Stream
            .predict(json!({"n": 3}), &RequestContext::detached("r"))
            .unwrap();
        assert_eq!(collect(out), "chunk-0\nchunk-1\nchunk-2\n");
    }

    #[test]
    fn stops_when_cancelled() {
        let ctx = RequestContext::detached("r");
        let out = Stream.predict(json!({"n": 5}), &ctx).unwrap();
        ctx.cancellation().cancel();
        assert_eq!(collect(out), "");
    }

    #[test]
    fn rejects_unknown_fields_and_large_n() {
        let ctx = RequestContext::detached("r");
        for shape in [json!([1, 2]), json!(3), json!("n")] {
            let err = Stream.predict(shape.clone(), &ctx).unwrap_err();
            assert!(err.message().contains("must be an object"), "{shape}");
        }
        let err = Stream.predict(json!({"count": 3}), &ctx).unwrap_err();
        assert!(
            err.message().contains("unknown field `count`"),
            "{}",
            err.message()
        );
        let err = Stream.predict(json!({"n": 1_000_000}), &ctx).unwrap_err();
        assert!(
            err.message().contains("n must be at most"),
            "{}",
            err.message()
        );
    }
}
