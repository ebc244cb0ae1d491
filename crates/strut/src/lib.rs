//! The `strut` command line as a library, so that a team embedding its own
//! model builds a binary with the same commands: register the model in a
//! [`Registry`] and hand it to [`main_with`].

mod cmd_config;
mod cmd_init;
#[cfg(feature = "candle")]
mod cmd_logits;
mod cmd_tokenizer;
mod deploy_cli;
mod logging;
mod models;
mod predict;
mod serve;

use std::process::ExitCode;

pub use models::builtin_registry;
pub use strut_model::Registry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strut",
    version,
    about = "Serve Truss-packaged models from Rust"
)]
struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "STRUT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a model directory (or its config.yaml) over HTTP.
    // Boxed: the server's settings make it much the largest command.
    Serve(Box<serve::ServeArgs>),
    /// Send one request to a running server and print the reply.
    Predict(predict::PredictArgs),
    /// Work with config.yaml files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Scaffold a new model directory.
    Init(cmd_init::InitArgs),
    /// Push a model directory to a running server as a new deployment.
    Push(deploy_cli::PushArgs),
    /// Point an environment at a deployment (production by default).
    Promote(deploy_cli::PromoteArgs),
    /// Point an environment back at its previous deployment.
    Rollback(deploy_cli::RollbackArgs),
    /// Work with the model's tokenizer.
    Tokenizer {
        #[command(subcommand)]
        command: TokenizerCommand,
    },
    /// List deployments or read the deploy log of a running server.
    Deployments {
        #[command(subcommand)]
        command: deploy_cli::DeploymentsCommand,
    },
    /// Run a built-in generation model once and print its logits after a
    /// prompt as JSON (numerical checks across devices).
    #[cfg(feature = "candle")]
    Logits(cmd_logits::LogitsArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config.yaml the way truss does, and more.
    Validate(cmd_config::ValidateArgs),
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Write the model's tokenizer as a Hugging Face tokenizer directory
    /// (tokenizer.json, tokenizer_config.json), e.g. for genai-bench's --model-tokenizer.
    Export(cmd_tokenizer::ExportArgs),
}

/// Parses the command line and runs it, serving the models in `registry`.
pub fn main_with(registry: Registry) -> ExitCode {
    // Every reqwest client (webhooks, push, predict) can then speak https.
    strut_server::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let _logging = logging::init(cli.log_format);
            serve::run(*args, registry)
        }
        Command::Predict(args) => predict::run(args),
        Command::Config {
            command: ConfigCommand::Validate(args),
        } => cmd_config::validate(&args),
        Command::Push(args) => deploy_cli::push(&args),
        Command::Promote(args) => deploy_cli::promote(&args),
        Command::Rollback(args) => deploy_cli::rollback(&args),
        Command::Deployments { command } => deploy_cli::deployments(&command),
        Command::Tokenizer {
            command: TokenizerCommand::Export(args),
        } => cmd_tokenizer::export(&args, &registry),
        #[cfg(feature = "candle")]
        Command::Logits(args) => cmd_logits::run(&args),
        Command::Init(args) => match cmd_init::init(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}
