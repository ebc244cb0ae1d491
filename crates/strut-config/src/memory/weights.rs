//! Weight sizes from file headers: safetensors and GGUF. Only headers are read, never the
//! tensor data, so a multi-gigabyte checkpoint costs a few kilobytes of I/O.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// What a set of weight files holds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WeightStats {
    pub bytes: u64,
    /// Number of parameters (tensor elements).
    pub params: u64,
}

impl std::ops::AddAssign for WeightStats {
    fn add_assign(&mut self, other: Self) {
        self.bytes += other.bytes;
        self.params += other.params;
    }
}

/// A safetensors header is a little-endian u64 length then that much JSON; we refuse
/// absurd lengths rather than allocate them.
const MAX_HEADER: u64 = 100 << 20;

pub fn safetensors(path: &Path) -> io::Result<WeightStats> {
    let mut f = BufReader::new(File::open(path)?);
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len == 0 || len > MAX_HEADER {
        return Err(bad("safetensors header length out of range"));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(&format!("safetensors header is not JSON: {e}")))?;
    let tensors = json
        .as_object()
        .ok_or_else(|| bad("safetensors header is not an object"))?;
    let mut stats = WeightStats::default();
    for (name, t) in tensors {
        if name == "__metadata__" {
            continue;
        }
        let shape = t
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("tensor without shape"))?;
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)))
            .ok_or_else(|| bad("bad tensor shape"))?;
        let dtype = t.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        // data_offsets are exact; the dtype size is the fallback for headers that omit them.
        let bytes = match t.get("data_offsets").and_then(|o| o.as_array()).map(|o| {
            (
                o.first().and_then(|v| v.as_u64()),
                o.get(1).and_then(|v| v.as_u64()),
            )
        }) {
            Some((Some(a), Some(b))) if b >= a => b - a,
            _ => {
                (elements as f64
                    * safetensors_dtype_bytes(dtype).ok_or_else(|| bad("unknown dtype"))?)
                    as u64
            }
        };
        stats += WeightStats {
            bytes,
            params: elements,
        };
    }
    Ok(stats)
}

fn safetensors_dtype_bytes(dtype: &str) -> Option<f64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8.0,
        "F32" | "I32" | "U32" => 4.0,
        "F16" | "BF16" | "I16" | "U16" => 2.0,
        "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "I8" | "U8" | "BOOL" => 1.0,
        "F6_E2M3" | "F6_E3M2" => 0.75,
        "F4" => 0.5,
        _ => return None,
    })
}

/// GGUF: magic, version, tensor and metadata counts, metadata entries (skipped), then one
/// info record per tensor (name, dims, ggml type, offset). Sizes follow from the types'
/// block layouts.
pub fn gguf(path: &Path) -> io::Result<WeightStats> {
    let mut r = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        return Err(bad("not a GGUF file"));
    }
    let version = read_u32(&mut r)?;
    if !(2..=3).contains(&version) {
        return Err(bad("unsupported GGUF version"));
    }
    let n_tensors = read_u64(&mut r)?;
    let n_kv = read_u64(&mut r)?;
    for _ in 0..n_kv {
        skip_string(&mut r)?;
        let ty = read_u32(&mut r)?;
        skip_value(&mut r, ty, 0)?;
    }
    let mut stats = WeightStats::default();
    for _ in 0..n_tensors {
        skip_string(&mut r)?;
        let n_dims = read_u32(&mut r)?;
        if n_dims > 8 {
            return Err(bad("too many tensor dimensions"));
        }
        let mut elements = 1u64;
        for _ in 0..n_dims {
            elements = elements
                .checked_mul(read_u64(&mut r)?)
                .ok_or_else(|| bad("tensor too large"))?;
        }
        let ty = read_u32(&mut r)?;
        let _offset = read_u64(&mut r)?;
        let (block, block_bytes) =
            ggml_block(ty).ok_or_else(|| bad(&format!("unknown ggml type {ty}")))?;
        stats += WeightStats {
            bytes: elements.div_ceil(block) * block_bytes,
            params: elements,
        };
    }
    Ok(stats)
}

/// (elements per block, bytes per block) of ggml tensor types, from ggml's type traits.
fn ggml_block(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(())
}

fn skip_string(r: &mut impl Read) -> io::Result<()> {
    let len = read_u64(r)?;
    if len > MAX_HEADER {
        return Err(bad("GGUF string too long"));
    }
    skip(r, len)
}

/// Skips one metadata value of GGUF type `ty` (arrays recurse, bounded).
fn skip_value(r: &mut impl Read, ty: u32, depth: u32) -> io::Result<()> {
    match ty {
        0 | 1 | 7 => skip(r, 1), // u8, i8, bool
        2 | 3 => skip(r, 2),     // u16, i16
        4..=6 => skip(r, 4),     // u32, i32, f32
        10..=12 => skip(r, 8),   // u64, i64, f64
        8 => skip_string(r),
        9 if depth < 4 => {
            let inner = read_u32(r)?;
            let n = read_u64(r)?;
            for _ in 0..n {
                skip_value(r, inner, depth + 1)?;
            }
            Ok(())
        }
        _ => Err(bad("unknown GGUF metadata type")),
    }
}

/// Weight files under `dir` (recursively, bounded), grouped so that one model is counted
/// once: a sharded set (`-00001-of-00003`) is one group, and where several GGUF variants
/// sit side by side only the smallest is taken, since a server loads one of them.
pub fn scan_dir(dir: &Path) -> Option<(WeightStats, usize)> {
    let mut safetensors_files = Vec::new();
    let mut gguf_files = Vec::new();
    collect(dir, 0, &mut safetensors_files, &mut gguf_files);
    let mut total = WeightStats::default();
    let mut count = 0;
    let has_sharded_model = safetensors_files
        .iter()
        .any(|p| file_name(p).starts_with("model"));
    for p in &safetensors_files {
        // Mistral repos ship the same weights twice (consolidated and model-*).
        if has_sharded_model && file_name(p).starts_with("consolidated") {
            continue;
        }
        if let Ok(s) = safetensors(p) {
            total += s;
            count += 1;
        }
    }
    let mut groups: std::collections::BTreeMap<String, (WeightStats, usize)> = Default::default();
    for p in &gguf_files {
        if let Ok(s) = gguf(p) {
            let g = groups.entry(shard_stem(&file_name(p))).or_default();
            g.0 += s;
            g.1 += 1;
        }
    }
    if let Some((s, n)) = groups.into_values().min_by_key(|(s, _)| s.bytes) {
        total += s;
        count += n;
    }
    (count > 0).then_some((total, count))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `model-00001-of-00003.gguf` -> `model`.
fn shard_stem(name: &str) -> String {
    let stem = name.trim_end_matches(".gguf");
    match stem.rfind("-of-") {
        Some(i) => stem[..i]
            .rsplit_once('-')
            .map_or(stem, |(a, _)| a)
            .to_string(),
        None => stem.to_string(),
    }
}

fn collect(dir: &Path, depth: u32, st: &mut Vec<PathBuf>, gg: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries.into_iter().take(10_000) {
        if p.is_dir() {
            if depth < 4 {
                collect(&p, depth + 1, st, gg);
            }
        } else if p.extension().is_some_and(|e| e == "safetensors") {
            st.push(p);
        } else if p.extension().is_some_and(|e| e == "gguf") {
            gg.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_group() {
        assert_eq!(shard_stem("model-00001-of-00003.gguf"), "model");
        assert_eq!(
            shard_stem("gemma-3-27b-it-q4_0.gguf"),
            "gemma-3-27b-it-q4_0"
        );
    }
}
