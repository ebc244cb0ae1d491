//! `Caller`: a test generator whose chat template (it has none; it says so
//! through `tool_syntax`) writes Hermes tool calls. It answers with the
//! last message's text after `say:`, three characters a token, so a test
//! scripts exactly what the model "generates", tool calls included.

use std::sync::Arc;

use strut_model::capabilities::{
    FinishReason, GenerateRequest, GenerationEvent, GenerationStream, Prompt, TextGeneration,
    ToolSyntax, Usage,
};
use strut_model::{AsyncModel, ModelError, Output, Registry, RequestContext, Value, async_trait};

use super::models::TalkProbe;

struct Caller(Arc<TalkProbe>);

#[async_trait]
impl AsyncModel for Caller {
    async fn predict(&self, input: Value, _: &RequestContext) -> Result<Output, ModelError> {
        Ok(Output::Json(input))
    }

    fn text_generation(&self) -> Option<Arc<dyn TextGeneration>> {
        Some(Arc::new(Caller(self.0.clone())))
    }
}

#[async_trait]
impl TextGeneration for Caller {
    fn model_id(&self) -> &str {
        "test-caller"
    }

    fn context_length(&self) -> usize {
        4096
    }

    fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        Ok(vec![0; script(prompt).len().max(1)])
    }

    fn tool_syntax(&self) -> Option<ToolSyntax> {
        Some(ToolSyntax::Hermes)
    }

    async fn generate(
        &self,
        request: GenerateRequest,
        _ctx: &RequestContext,
    ) -> Result<GenerationStream, ModelError> {
        self.0.requests.lock().unwrap().push(request.clone());
        let chars: Vec<char> = script(&request.prompt).chars().collect();
        let mut events: Vec<Result<GenerationEvent, ModelError>> = chars
            .chunks(3)
            .map(|piece| {
                Ok(GenerationEvent::Token {
                    id: 0,
                    text: piece.iter().collect(),
                    logprob: None,
                })
            })
            .collect();
        events.push(Ok(GenerationEvent::Finished {
            reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 1,
                completion_tokens: chars.len().div_ceil(3) as u32,
            },
            prompt_logprobs: None,
        }));
        Ok(Box::pin(futures::stream::iter(events)))
    }
}

/// What follows `say:` in the last message.
fn script(prompt: &Prompt) -> String {
    let last = match prompt {
        Prompt::Text(text) => text.as_str(),
        Prompt::Chat { messages, .. } => messages.last().map_or("", |m| m.content.as_str()),
    };
    last.split_once("say:")
        .map_or_else(String::new, |(_, said)| said.to_owned())
}

pub fn register(registry: &mut Registry, probe: &Arc<TalkProbe>) {
    let probe = probe.clone();
    registry.register_async("Caller", move |_| Ok(Caller(probe.clone())));
}
