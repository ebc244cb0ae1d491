use strut_model::{AsyncModel, ModelError, Output, RequestContext, Value, async_trait};

/// Returns its input unchanged. Async, because it never blocks: the server
/// answers it on the runtime with no thread hop, which makes it the model to
/// measure the server's own overhead with.
pub struct Echo;

impl Echo {
    pub const CLASS: &'static str = "Echo";
}

#[async_trait]
impl AsyncModel for Echo {
    async fn predict(&self, input: Value, _ctx: &RequestContext) -> Result<Output, ModelError> {
        Ok(Output::Json(input))
    }
}
