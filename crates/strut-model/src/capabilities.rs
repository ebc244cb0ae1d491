//! Capabilities beyond free-form predict. Protocol routes (OpenAI, KServe V2,
//! Cog) are adapters over these, so any model that offers one is served by
//! those routes without touching routing code.

use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};

pub use crate::tools::{ParsedCall, Piece, Splitter, Tool, ToolCall, ToolSyntax};
use crate::{ModelError, Output, RequestContext};

/// What to generate from: raw text, or chat messages that the model renders
/// with its own chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    Text(String),
    Chat {
        messages: Vec<ChatMessage>,
        /// Functions the model may call, rendered by its chat template; only
        /// sent to a model with a [`TextGeneration::tool_syntax`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tools: Vec<Tool>,
    },
}

impl Prompt {
    /// A chat without tools.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        Prompt::Chat {
            messages,
            tools: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// The calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// Sampling parameters, with OpenAI's meaning for each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Upper bound on generated tokens; `None` means up to the context length.
    pub max_tokens: Option<u32>,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: Option<u32>,
    pub repetition_penalty: f32,
    pub seed: Option<u64>,
    /// Generation stops before any of these strings; they are not returned.
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks need exact lengths).
    pub ignore_eos: bool,
    /// No end-of-sequence token before this many tokens (vLLM's
    /// `min_tokens`): the model's end tokens are masked until then. Stop
    /// sequences still apply.
    pub min_tokens: u32,
    /// Report each generated token's log-probability, with this many of the
    /// most likely alternatives (0 to 20; OpenAI's `top_logprobs`); `None`
    /// reports none.
    pub logprobs: Option<u32>,
    /// Output that must match a JSON schema, a regex or a grammar, enforced
    /// while decoding (OpenAI's `response_format`, vLLM's `guided_*`). A
    /// model that cannot enforce it says so in
    /// [`TextGeneration::supports_constraints`], and the server refuses it.
    pub constraint: Option<Constraint>,
    /// Report the prompt's own tokens' log-probabilities too (each under
    /// the tokens before it), with this many alternatives: OpenAI's `echo`
    /// with `logprobs`. A model that cannot says so in
    /// [`TextGeneration::supports_prompt_logprobs`].
    pub prompt_logprobs: Option<u32>,
}

/// What structured output a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    JsonSchema {
        schema: serde_json::Value,
    },
    Regex {
        pattern: String,
    },
    /// A Lark grammar (llguidance's dialect; vLLM's `guided_grammar`).
    Grammar {
        lark: String,
    },
}

impl Constraint {
    /// Names the constraint in error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "the JSON object format",
            Constraint::JsonSchema { .. } => "the JSON schema",
            Constraint::Regex { .. } => "the regex",
            Constraint::Grammar { .. } => "the grammar",
        }
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            repetition_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            ignore_eos: false,
            min_tokens: 0,
            logprobs: None,
            constraint: None,
            prompt_logprobs: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    /// The prompt as this model's [`TextGeneration::tokenize`] gave it, when
    /// the caller has tokenized it already (the server does, to check the
    /// context): a model generates from these rather than tokenizing again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<Vec<u32>>,
    #[serde(default)]
    pub params: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// One step of a generation. `Token::text` always holds complete UTF-8: a
/// character split across tokens arrives with the token that completes it
/// (so a token's text can be empty). `logprob` is there when the request's
/// [`SamplingParams::logprobs`] asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GenerationEvent {
    Token {
        id: u32,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprob: Option<TokenLogprob>,
    },
    Finished {
        reason: FinishReason,
        usage: Usage,
        /// When [`SamplingParams::prompt_logprobs`] asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_logprobs: Option<PromptLogprobs>,
    },
}

/// The prompt's tokens: the first (nothing precedes it, so it has no
/// log-probability), then each of the others under the ones before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLogprobs {
    pub first: TokenText,
    pub rest: Vec<TokenLogprob>,
}

/// A generated token's log-probability under the model's own distribution
/// (before temperature, penalties or masks, as vLLM reports by default), and
/// the most likely tokens at that step, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: TokenText,
    pub logprob: f32,
    pub top: Vec<(TokenText, f32)>,
}

/// A vocabulary entry as text, and its exact bytes: a token that is part of
/// a multi-byte character has no text of its own (OpenAI's `bytes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenText {
    pub text: String,
    pub bytes: Vec<u8>,
}

pub type GenerationStream = Pin<Box<dyn Stream<Item = Result<GenerationEvent, ModelError>> + Send>>;

/// Text generation: a prompt and sampling parameters in, a stream of tokens
/// ending with exactly one `Finished` event out.
#[async_trait]
pub trait TextGeneration: Send + Sync {
    /// The name clients use for this model (OpenAI's `model` field).
    fn model_id(&self) -> &str;
    /// Maximum prompt plus generated tokens.
    fn context_length(&self) -> usize;
    /// Renders a chat in the model's own template and tokenizes it. The
    /// server does it once per request, checks the context with the result
    /// and passes it on in [`GenerateRequest::prompt_tokens`].
    fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError>;
    /// How many tokens the prompt takes.
    fn count_prompt_tokens(&self, prompt: &Prompt) -> Result<usize, ModelError> {
        self.tokenize(prompt).map(|tokens| tokens.len())
    }
    /// Whether [`SamplingParams::constraint`] is enforced; a model that
    /// says no gets a 400 for constrained requests rather than free text.
    fn supports_constraints(&self) -> bool {
        false
    }
    /// Whether [`SamplingParams::prompt_logprobs`] is honoured.
    fn supports_prompt_logprobs(&self) -> bool {
        false
    }
    /// The syntax this model writes tool calls in, when its chat template
    /// renders tools; `None` refuses requests that offer tools.
    fn tool_syntax(&self) -> Option<ToolSyntax> {
        None
    }
    async fn generate(
        &self,
        request: GenerateRequest,
        ctx: &RequestContext,
    ) -> Result<GenerationStream, ModelError>;
    /// The tokenizer as Hugging Face `tokenizers` files, so that clients
    /// (benchmarks building prompts of N tokens) count exactly as the model
    /// does. `None` when the model's tokenizer has no such form.
    fn tokenizer_files(&self) -> Option<TokenizerFiles> {
        None
    }
}

/// What `AutoTokenizer.from_pretrained(dir)` reads from a directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerFiles {
    /// `tokenizer.json`.
    pub tokenizer: String,
    /// `tokenizer_config.json`: at least `tokenizer_class`, plus special
    /// tokens and the chat template when the model has them.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedOutput {
    /// One vector per input, in input order.
    pub embeddings: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// Sentence embeddings: texts in, one vector per text out.
#[async_trait]
pub trait Embeddings: Send + Sync {
    fn model_id(&self) -> &str;
    fn dimensions(&self) -> usize;
    async fn embed(
        &self,
        texts: Vec<String>,
        ctx: &RequestContext,
    ) -> Result<EmbedOutput, ModelError>;
}

/// Routes a model answers itself, from the request body as it came: Truss's
/// `chat_completions`, `completions` and `embeddings` methods. The protocol
/// passes the JSON through and sends back what the model returns (a JSON
/// value, or a stream of chunks the model has framed itself).
#[async_trait]
pub trait RawRoutes: Send + Sync {
    /// Whether the model answers `route` (`chat_completions`, `completions`,
    /// `embeddings`).
    fn answers(&self, route: &str) -> bool;
    async fn call(
        &self,
        route: &str,
        body: serde_json::Value,
        ctx: &RequestContext,
    ) -> Result<Output, ModelError>;
}
