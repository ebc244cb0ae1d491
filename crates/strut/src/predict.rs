use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// JSON input, or `@FILE` to read it from a file. Without it, the config's
    /// `model_metadata.example_model_input` is sent.
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
    /// The server's base URL.
    #[arg(long, env = "STRUT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Route to call under the URL.
    #[arg(long, default_value = "/predict")]
    pub route: String,
    /// Model directory or config.yaml holding the example input.
    #[arg(long, default_value = "config.yaml")]
    pub config: PathBuf,
}

pub fn run(args: PredictArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(predict(&args)))
    {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn input(args: &PredictArgs) -> anyhow::Result<Value> {
    let text = match args.data.as_deref() {
        Some(data) => match data.strip_prefix('@') {
            Some(file) => {
                std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
            }
            None => data.to_owned(),
        },
        None => {
            let loaded = strut_config::load(&args.config).with_context(|| {
                format!("no -d given, and {} cannot be read", args.config.display())
            })?;
            match loaded.config.model_metadata.get("example_model_input") {
                Some(example) => return Ok(example.clone()),
                None => bail!(
                    "no -d given, and {} has no model_metadata.example_model_input",
                    loaded.path.display()
                ),
            }
        }
    };
    serde_json::from_str(&text).context("the input is not valid JSON")
}

/// Prints the reply as it arrives, so streams show up chunk by chunk.
async fn predict(args: &PredictArgs) -> anyhow::Result<bool> {
    let body = input(args)?;
    let url = format!("{}{}", args.url.trim_end_matches('/'), args.route);
    let response = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let ok = response.status().is_success();
    if !ok {
        eprintln!("{} {}", response.status(), url);
    }
    let mut stream = response.bytes_stream();
    let mut out = std::io::stdout().lock();
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("reading the reply")?;
        out.write_all(&chunk)?;
        out.flush()?;
        last = chunk.last().copied();
    }
    if last.is_some_and(|b| b != b'\n') {
        writeln!(out)?;
    }
    Ok(ok)
}
