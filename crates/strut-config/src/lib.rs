//! Truss-compatible `config.yaml` loading and validation.
//!
//! [`load`] reads a config the way truss 0.18 does (same YAML dialect, same defaults, same
//! accept/reject decisions) into a typed [`TrussConfig`]; [`validate`] adds the checks that
//! catch mistakes truss lets through (unpinned requirements, a GPU that cannot hold the
//! weights, secrets pasted into the file, …) as [`Diagnostic`]s with stable codes.

pub mod accelerators;
mod diagnostics;
mod extract;
pub mod hub;
mod load;
pub mod memory;
mod pyfmt;
pub mod quantity;
mod rules;
pub mod schema;
pub mod yaml;

pub use accelerators::{Accelerator, Gpu};
pub use diagnostics::{Diagnostic, Normalized, Report, Severity};
pub use extract::KeyRef;
pub use load::{LoadError, LoadedConfig, config_path, load};
pub use rules::{ValidateOptions, validate, validate_path, validate_str};
pub use schema::{
    BaseImage, Build, DockerServer, ExternalDataItem, ModelRepo, Resources, Runtime, TrtLlmConfig,
    TrussConfig, WeightsSource,
};
