//! strut's end-to-end suite: one test binary (cheaper to link) whose modules
//! drive the server library in-process, on real sockets, and the `strut`
//! binary as a process.

mod admin_api;
mod async_api;
mod async_crash;
mod async_queue;
mod async_webhooks;
mod candle_http;
mod cli;
mod cog_api;
mod common;
mod config_cli;
mod connections;
mod container;
mod deploy_cli;
mod deployments;
mod kserve_api;
mod lifecycle;
mod logits_cli;
mod manifests;
mod metrics;
mod openai_api;
#[cfg(feature = "otel")]
mod otel;
#[cfg(unix)]
mod python_models;
#[cfg(unix)]
mod replicas;
#[cfg(unix)]
mod shared_deployments;
mod streaming;
mod tokenizer_cli;
mod truss_http;
