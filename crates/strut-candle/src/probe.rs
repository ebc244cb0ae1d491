//! One forward pass outside the server, for numerical checks across devices
//! and against other implementations (`strut logits`): the directory's
//! generation model loaded as `serve` loads it (device, dtype, weights), and
//! its logits after the given tokens, whole.

use strut_model::{InitContext, ModelError};

use crate::llama::{self, Step};
use crate::params::CandleParams;
use crate::weights::{Sources, Wanted};

pub struct Logits {
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub dtype: String,
    /// The prompt as tokens (the input, or the tokenizer's reading of it).
    pub tokens: Vec<u32>,
    /// Over the vocabulary, after the last token.
    pub logits: Vec<f32>,
}

/// What to run: token ids, or text for the model's tokenizer.
pub enum ProbeInput {
    Tokens(Vec<u32>),
    Text(String),
}

pub fn last_logits(ctx: &InitContext, input: ProbeInput) -> Result<Logits, ModelError> {
    let params = CandleParams::from_context(ctx)?;
    let placement = crate::device::select(&ctx.config, &params)?;
    let (sources, gguf_file) = Sources::from_context(ctx, &params)?;
    let wanted = gguf_file.map_or(Wanted::Safetensors, Wanted::Gguf);
    let resolved = sources.resolve(&wanted)?;
    let requantize = llama::Requantize::parse(params.requantize.as_deref())?;
    let mut loaded = llama::load(&resolved, &placement.device, placement.dtype, requantize)?;
    let tokens = match input {
        ProbeInput::Tokens(tokens) => tokens,
        ProbeInput::Text(text) => loaded
            .tokenizer
            .encode(text, true)
            .map_err(|err| ModelError::internal(format!("tokenizing the prompt: {err}")))?
            .get_ids()
            .to_vec(),
    };
    let vocab = loaded.tokenizer.get_vocab_size(true);
    if tokens.is_empty() {
        return Err(ModelError::invalid_input("no tokens to run"));
    }
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(ModelError::invalid_input(format!(
            "token {bad} is outside the vocabulary ({vocab} tokens)"
        )));
    }
    let mut state = loaded.weights.new_state();
    let mut steps = [Step {
        state: &mut state,
        tokens: &tokens,
        logits: true,
        all_rows: false,
    }];
    let logits = loaded
        .weights
        .forward(&mut steps, &placement.device)
        .map_err(crate::internal("the forward pass"))?
        .pop()
        .flatten()
        .ok_or_else(|| ModelError::internal("the forward pass returned no logits"))?;
    Ok(Logits {
        device: crate::device::name(&placement.device),
        dtype: placement.dtype.as_str().to_owned(),
        tokens,
        logits,
    })
}
