//! `strut logits`: one forward pass of a directory's built-in generation
//! model, its logits after the prompt printed as JSON. For numerical checks
//! across devices and against other implementations (scripts/gpu-check.sh
//! compares CUDA, CPU and PyTorch with it); serving never needs it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use strut_candle::probe::{ProbeInput, last_logits};
use strut_model::InitContext;
use strut_server::load_validated;

#[derive(clap::Args)]
pub struct LogitsArgs {
    /// The model directory (or its config.yaml); a `LlamaGenerator` model.
    #[arg(default_value = ".")]
    pub model: PathBuf,
    /// Token ids, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "prompt",
        required_unless_present = "prompt"
    )]
    pub tokens: Vec<u32>,
    /// Text, tokenized by the model's tokenizer.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Run on the CPU whatever `resources` asks for (the reference to
    /// compare a GPU run with).
    #[arg(long)]
    pub cpu: bool,
    /// Overrides `model_metadata.candle.dtype` (f32, f16, bf16).
    #[arg(long)]
    pub dtype: Option<String>,
}

pub fn run(args: &LogitsArgs) -> ExitCode {
    match logits(args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn logits(args: &LogitsArgs) -> anyhow::Result<Value> {
    let (loaded, _warnings) = load_validated(&args.model)?;
    let class = &loaded.config.model_class_name;
    if class != strut_candle::LlamaGenerator::CLASS_NAME {
        bail!(
            "`strut logits` runs the built-in {} models; this directory's is `{class}`",
            strut_candle::LlamaGenerator::CLASS_NAME
        );
    }
    let mut config = loaded.to_json();
    if args.cpu {
        config["resources"]["accelerator"] = Value::Null;
        config["resources"]["use_gpu"] = json!(false);
    }
    if let Some(dtype) = &args.dtype {
        config["model_metadata"]["candle"]["dtype"] = json!(dtype);
    }
    let ctx = InitContext::new(config, loaded.data_dir());
    let input = match &args.prompt {
        Some(text) => ProbeInput::Text(text.clone()),
        None => ProbeInput::Tokens(args.tokens.clone()),
    };
    let out = last_logits(&ctx, input).context("running the model")?;
    Ok(json!({
        "device": out.device,
        "dtype": out.dtype,
        "tokens": out.tokens,
        "logits": out.logits,
    }))
}
