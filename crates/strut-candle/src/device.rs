//! Device and dtype choice, made once at load from the Truss `resources`
//! section. A GPU deployment that cannot get its GPU fails fast instead of
//! quietly serving from the CPU, unless the config opts into the fallback.

use candle_core::{DType, Device};
use serde_json::Value;
use strut_model::ModelError;

use crate::params::CandleParams;

#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    pub dtype: DType,
}

/// What `resources` asks for: `None` for CPU, or the accelerator's name.
pub fn requested_gpu(config: &Value) -> Option<String> {
    let resources = config.get("resources")?;
    match resources.get("accelerator") {
        Some(Value::String(acc)) if !acc.trim().is_empty() && acc != "null" => {
            return Some(acc.clone());
        }
        _ => {}
    }
    (resources.get("use_gpu") == Some(&Value::Bool(true))).then(|| "use_gpu: true".to_owned())
}

pub fn select(config: &Value, params: &CandleParams) -> Result<Placement, ModelError> {
    let device = match requested_gpu(config) {
        None => Device::Cpu,
        Some(accelerator) => match cuda_device() {
            Ok(device) => {
                if gpu_count(&accelerator) > 1 {
                    tracing::warn!(
                        accelerator,
                        "the model runs on CUDA device 0 only; other GPUs stay unused"
                    );
                }
                device
            }
            Err(reason) if params.allow_cpu_fallback => {
                tracing::warn!(accelerator, reason, "no usable GPU: falling back to CPU");
                Device::Cpu
            }
            Err(reason) => {
                return Err(ModelError::internal(format!(
                    "config.yaml asks for a GPU (resources: {accelerator}) but {reason}; \
                     set `model_metadata.candle.allow_cpu_fallback: true` to run on CPU instead"
                )));
            }
        },
    };
    let dtype = match params.dtype.as_deref() {
        Some(name) => parse_dtype(name)?,
        None if device.is_cuda() => DType::BF16,
        None => DType::F32,
    };
    if device.is_cpu() && dtype != DType::F32 {
        tracing::warn!(?dtype, "half precision on CPU is slow and less accurate");
    }
    Ok(Placement { device, dtype })
}

/// The device as logs and metrics name it: `cpu`, `cuda:0`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Whether CUDA device 0 can be opened by this binary on this host.
pub fn cuda_available() -> bool {
    cuda_device().is_ok()
}

fn cuda_device() -> Result<Device, String> {
    if !candle_core::utils::cuda_is_available() {
        return Err("this binary was built without CUDA (rebuild with `--features cuda`)".into());
    }
    // Creating the device is the real runtime check: it fails without a
    // driver or a visible GPU.
    Device::new_cuda(0).map_err(|err| format!("CUDA device 0 is not usable: {err}"))
}

/// `A10G:2` asks for two GPUs; a bare name for one.
fn gpu_count(accelerator: &str) -> usize {
    accelerator
        .rsplit_once(':')
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(1)
}

fn parse_dtype(name: &str) -> Result<DType, ModelError> {
    match name.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(ModelError::internal(format!(
            "unsupported dtype `{other}` in model_metadata.candle.dtype (use f32, f16 or bf16)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_gpu_request_from_resources() {
        assert_eq!(requested_gpu(&json!({})), None);
        assert_eq!(
            requested_gpu(&json!({"resources": {"accelerator": null, "use_gpu": false}})),
            None
        );
        assert_eq!(
            requested_gpu(&json!({"resources": {"accelerator": "A10G:2"}})).unwrap(),
            "A10G:2"
        );
        assert!(requested_gpu(&json!({"resources": {"use_gpu": true}})).is_some());
        assert_eq!(gpu_count("A10G:2"), 2);
        assert_eq!(gpu_count("H100"), 1);
    }

    #[test]
    fn cpu_defaults_to_f32_and_dtype_can_be_configured() {
        let placement = select(&json!({}), &CandleParams::default()).unwrap();
        assert!(placement.device.is_cpu());
        assert_eq!(placement.dtype, DType::F32);
        let params = CandleParams {
            dtype: Some("bf16".into()),
            ..Default::default()
        };
        assert_eq!(select(&json!({}), &params).unwrap().dtype, DType::BF16);
        let params = CandleParams {
            dtype: Some("int3".into()),
            ..Default::default()
        };
        assert!(
            select(&json!({}), &params)
                .unwrap_err()
                .message()
                .contains("int3")
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn gpu_config_fails_without_cuda_unless_fallback_is_allowed() {
        let config = json!({"resources": {"accelerator": "T4", "use_gpu": true}});
        let err = select(&config, &CandleParams::default()).unwrap_err();
        assert!(
            err.message().contains("asks for a GPU"),
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("--features cuda"),
            "{}",
            err.message()
        );
        let params = CandleParams {
            allow_cpu_fallback: true,
            ..Default::default()
        };
        assert!(select(&config, &params).unwrap().device.is_cpu());
    }
}
