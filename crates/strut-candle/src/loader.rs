//! Reading weights into device memory, once. Every byte of a weight file goes
//! through this module, which counts file opens and bytes read: the proof
//! that predict never touches the files again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::safetensors::{Load, SliceSafetensors};
use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use strut_kernels::MappedFile;
use strut_model::{ModelError, Telemetry};

use crate::device::Placement;

static FILE_OPENS: AtomicU64 = AtomicU64::new(0);
static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Totals over the whole process of weight files opened and bytes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightReads {
    pub file_opens: u64,
    pub bytes_read: u64,
}

pub fn weight_reads() -> WeightReads {
    WeightReads {
        file_opens: FILE_OPENS.load(Ordering::SeqCst),
        bytes_read: BYTES_READ.load(Ordering::SeqCst),
    }
}

fn open(path: &Path) -> Result<File, ModelError> {
    FILE_OPENS.fetch_add(1, Ordering::SeqCst);
    File::open(path).map_err(|err| {
        ModelError::internal(format!("opening weights {}", path.display())).with_source(err)
    })
}

/// A bar on a terminal; nothing in logs or CI.
fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("loading {what}"));
    bar
}

/// Loads every tensor of the (possibly sharded) safetensors files onto
/// `device`, converting floating-point tensors to `dtype`. Tensors are copied
/// out of the memory map one at a time, so peak memory is the model plus one
/// tensor, and the maps are dropped before returning.
pub fn load_safetensors(
    shards: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let maps = shards
        .iter()
        .map(|shard| {
            MappedFile::map(&open(shard)?).map_err(|err| {
                ModelError::internal(format!("mapping {}", shard.display())).with_source(err)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let files = maps
        .iter()
        .zip(shards)
        .map(|(map, shard)| {
            SliceSafetensors::new(map).map_err(|err| {
                ModelError::internal(format!("{} is not safetensors: {err}", shard.display()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tensors: Vec<_> = files.iter().flat_map(SliceSafetensors::tensors).collect();
    let estimate: u64 = tensors
        .iter()
        .map(|(_, view)| {
            let elems: usize = view.shape().iter().product();
            let to = match DType::try_from(view.dtype()) {
                Ok(d) if d.is_float() => dtype.size_in_bytes(),
                Ok(d) => d.size_in_bytes(),
                Err(_) => 1,
            };
            (elems * to) as u64
        })
        .sum();
    check_memory(estimate, device)?;
    let bar = progress(
        tensors.iter().map(|(_, v)| v.data().len() as u64).sum(),
        "safetensors",
    );
    let mut out = HashMap::with_capacity(tensors.len());
    // A name in several shards: the last one wins, as with candle's loader.
    for (name, view) in &tensors {
        let bytes = view.data().len() as u64;
        let tensor = view
            .load(device)
            .map_err(crate::internal("reading a tensor"))?;
        let tensor = if tensor.dtype().is_float() && tensor.dtype() != dtype {
            tensor
                .to_dtype(dtype)
                .map_err(crate::internal("converting a tensor"))?
        } else {
            tensor
        };
        BYTES_READ.fetch_add(bytes, Ordering::SeqCst);
        bar.inc(bytes);
        out.insert(name.clone(), tensor);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// A reader that counts the bytes it hands out and moves a progress bar.
pub struct CountingReader {
    file: File,
    bar: ProgressBar,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        BYTES_READ.fetch_add(n as u64, Ordering::SeqCst);
        self.bar.inc(n as u64);
        Ok(n)
    }
}

impl Seek for CountingReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Drop for CountingReader {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Opens a GGUF file and reads its header, after checking that its tensors
/// fit in the device's free memory.
pub fn open_gguf(
    path: &Path,
    device: &Device,
) -> Result<(gguf_file::Content, CountingReader), ModelError> {
    let file = open(path)?;
    let size = file.metadata()?.len();
    let mut reader = CountingReader {
        file,
        bar: progress(size, "gguf"),
    };
    let content = gguf_file::Content::read(&mut reader).map_err(|err| {
        ModelError::internal(format!(
            "{} is not a readable GGUF file: {err}",
            path.display()
        ))
    })?;
    let tensor_bytes: u64 = content
        .tensor_infos
        .values()
        .map(|info| {
            let elems = info.shape.elem_count();
            (elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64
        })
        .sum();
    check_memory(tensor_bytes, device)?;
    Ok((content, reader))
}

/// Fails when the weights cannot fit in the device's free memory.
pub fn check_memory(weights_bytes: u64, device: &Device) -> Result<(), ModelError> {
    let Some(free) = free_memory(device) else {
        tracing::debug!("free memory unknown on this platform; not checked");
        return Ok(());
    };
    fits(
        weights_bytes,
        free,
        if device.is_cpu() { "RAM" } else { "GPU memory" },
    )
}

pub fn fits(weights_bytes: u64, free_bytes: u64, what: &str) -> Result<(), ModelError> {
    if weights_bytes > free_bytes {
        return Err(ModelError::internal(format!(
            "the weights need {} but only {} of {what} is free",
            mib(weights_bytes),
            mib(free_bytes)
        )));
    }
    Ok(())
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn free_memory(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => free_ram(),
        #[cfg(feature = "cuda")]
        // Not compiled in CI (no CUDA toolkit there): cudarc 0.19's
        // `CudaContext::mem_get_info` binds the context before asking.
        Device::Cuda(dev) => dev
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64),
        _ => None,
    }
}

/// `MemAvailable`, lowered to the cgroup's remaining allowance in a container.
pub(crate) fn free_ram() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })?
        * 1024;
    let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .zip(read("/sys/fs/cgroup/memory.current"))
        .map(|(max, current)| max.saturating_sub(current));
    Some(cgroup.map_or(available, |c| c.min(available)))
}

/// Resident set size of this process, from `/proc/self/status`.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// What `load` reports once the weights are in place.
#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    pub seconds: f64,
    pub weights_bytes: u64,
    pub resident_bytes: Option<u64>,
}

impl LoadReport {
    /// Logs the load and reports where the weights went to the server's
    /// metrics (`strut_model_device_info`): which device serves is never a
    /// guess.
    pub fn finish(
        model: &str,
        started: Instant,
        weights_bytes: u64,
        placement: &Placement,
        telemetry: &Telemetry,
    ) -> Self {
        let report = LoadReport {
            seconds: started.elapsed().as_secs_f64(),
            weights_bytes,
            resident_bytes: resident_memory(),
        };
        tracing::info!(
            model,
            device = %crate::device::name(&placement.device),
            dtype = placement.dtype.as_str(),
            load_seconds = format!("{:.2}", report.seconds),
            weights = mib(weights_bytes),
            resident = report.resident_bytes.map(mib).unwrap_or_else(|| "unknown".into()),
            "model loaded"
        );
        telemetry.placement(
            &crate::device::name(&placement.device),
            placement.dtype.as_str(),
        );
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_check_names_both_numbers() {
        assert!(fits(10, 20, "RAM").is_ok());
        let err = fits(3 * 1024 * 1024, 1024 * 1024, "RAM").unwrap_err();
        assert_eq!(
            err.message(),
            "the weights need 3.0 MiB but only 1.0 MiB of RAM is free"
        );
    }

    #[test]
    fn reads_free_and_resident_memory_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(free_ram().unwrap() > 0);
            assert!(resident_memory().unwrap() > 0);
        }
    }
}
