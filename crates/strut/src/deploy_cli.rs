//! `strut push`, `strut promote`, `strut rollback` and `strut deployments
//! list|log`: thin clients of a running server's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// Where the server is and how to authenticate; shared by every command here.
#[derive(Args, Debug)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "STRUT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin API key (sent as `Authorization: Api-Key ...`).
    #[arg(long, env = "STRUT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Model directory, or its config.yaml.
    pub dir: PathBuf,
    /// Environment to point at the new deployment once it is ready.
    #[arg(long, default_value = "development")]
    pub env: String,
    /// The deployment this push replaces; default: whatever the environment
    /// points at now (read just before pushing).
    #[arg(long)]
    pub replaces: Option<String>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The deployment to promote.
    pub id: String,
    #[arg(long, default_value = "production")]
    pub env: String,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[arg(long, default_value = "production")]
    pub env: String,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Subcommand, Debug)]
pub enum DeploymentsCommand {
    /// Every deployment with its state and environments.
    List(Remote),
    /// The deploy log: pushes, promotions, rollbacks and failures.
    Log(Remote),
}

pub fn push(args: &PushArgs) -> ExitCode {
    run(async {
        let client = Client::new(&args.remote)?;
        let replaces = match &args.replaces {
            Some(id) => Some(id.clone()),
            None => {
                let env = client
                    .call(Method::GET, &format!("/admin/environments/{}", args.env))
                    .await?;
                env["current"].as_str().map(str::to_owned)
            }
        };
        let (loaded, _) = strut_server::load_validated(&args.dir)
            .with_context(|| format!("checking {}", args.dir.display()))?;
        let files = strut_server::bundle::deployment_files(&loaded)?;
        let archive = strut_server::bundle::pack(&files)?;
        let mut request = client
            .request(
                Method::POST,
                &format!("/admin/deployments?environment={}", args.env),
            )
            .header("content-type", "application/gzip")
            .body(archive);
        if let Some(id) = &replaces {
            request = request.header("if-match", format!("\"{id}\""));
        }
        let deployment = Client::send(request).await?;
        let id = deployment["id"].as_str().unwrap_or_default();
        eprintln!("pushed {id} to {}", args.env);
        println!("{id}");
        Ok(())
    })
}

pub fn promote(args: &PromoteArgs) -> ExitCode {
    run(async {
        let client = Client::new(&args.remote)?;
        let request = client
            .request(
                Method::POST,
                &format!("/admin/environments/{}/promote", args.env),
            )
            .json(&serde_json::json!({"deployment_id": args.id}));
        let done = Client::send(request).await?;
        println!(
            "{}: {} -> {}",
            args.env,
            show(&done["from"]),
            show(&done["to"])
        );
        Ok(())
    })
}

pub fn rollback(args: &RollbackArgs) -> ExitCode {
    run(async {
        let client = Client::new(&args.remote)?;
        let path = format!("/admin/environments/{}/rollback", args.env);
        let done = client.call(Method::POST, &path).await?;
        println!(
            "{}: {} -> {}",
            args.env,
            show(&done["from"]),
            show(&done["to"])
        );
        Ok(())
    })
}

pub fn deployments(command: &DeploymentsCommand) -> ExitCode {
    run(async {
        match command {
            DeploymentsCommand::List(remote) => {
                let list = Client::new(remote)?
                    .call(Method::GET, "/admin/deployments")
                    .await?;
                println!(
                    "{:<10} {:<10} {:<24} {:<26} ENVIRONMENTS",
                    "ID", "STATE", "CLASS", "CREATED"
                );
                for d in list["deployments"].as_array().into_iter().flatten() {
                    let envs: Vec<&str> = d["environments"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "{:<10} {:<10} {:<24} {:<26} {}",
                        show(&d["id"]),
                        show(&d["state"]),
                        show(&d["model_class"]),
                        show(&d["created_at"]),
                        envs.join(",")
                    );
                }
            }
            DeploymentsCommand::Log(remote) => {
                let log = Client::new(remote)?
                    .call(Method::GET, "/admin/deploy-log")
                    .await?;
                for e in log["entries"].as_array().into_iter().flatten() {
                    let error = e["error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    println!(
                        "{} {} {} {} {} -> {} {}{error}",
                        show(&e["when"]),
                        show(&e["who"]),
                        show(&e["action"]),
                        show(&e["environment"]),
                        show(&e["from"]),
                        show(&e["to"]),
                        show(&e["outcome"]),
                    );
                }
            }
        }
        Ok(())
    })
}

fn show(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

fn run(work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(work))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    fn new(remote: &Remote) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?,
            base: remote.url.trim_end_matches('/').to_owned(),
            api_key: remote.api_key.clone(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => request.header("authorization", format!("Api-Key {key}")),
            None => request,
        }
    }

    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        Self::send(self.request(method, path)).await
    }

    /// The JSON reply, or an error saying what the server said.
    async fn send(request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.context("calling the server")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"].as_str().unwrap_or("no error message");
        let code = body["code"].as_str().unwrap_or("unknown");
        match (status, body["current_deployment"].as_str()) {
            (StatusCode::CONFLICT, Some(current)) if code == "stale_push" => bail!(
                "{status} {code}: {message} (current deployment: {current}; retry with --replaces {current})"
            ),
            (StatusCode::UNAUTHORIZED, _) => {
                bail!("{status} {code}: {message} (set --api-key or STRUT_API_KEY)")
            }
            _ => bail!("{status} {code}: {message}"),
        }
    }
}
