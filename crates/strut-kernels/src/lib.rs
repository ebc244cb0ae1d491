//! strut's CPU kernels, and the only `unsafe` code of the workspace, each
//! piece behind a safe API:
//!
//! - [`Dense`]: f32 linear layers with weights packed once, multiplied by a
//!   register-tile kernel (AVX-512 where the CPU has it);
//! - [`ops`]: the element-wise parts of a BERT layer (layer norm, GELU,
//!   softmax) and Llama's SwiGLU, built baseline, AVX2 and AVX-512;
//! - [`QMatrix`]: GGUF Q4_1 / Q8_0 matrices kept in their blocks, in groups
//!   of eight interleaved rows, multiplied in the llama.cpp manner (AVX2, or
//!   AVX-512 VNNI's `dpbusd` where the CPU has it),
//!   and attention's [`scores`] and [`weighted_sum`] over f32 keys and
//!   values, [`scores_f16`] and [`weighted_sum_f16`] over an f16 KV cache
//!   (filled by [`extend_f16`]);
//! - [`MappedFile`]: a read-only map of a weights file;
//! - [`release_free_memory`]: the heap's free pages back to the system.
//!
//! SIMD versions are chosen at run time from the CPU's features; each has a
//! portable version, the fallback and the oracle its tests compare with.
//! Work is spread over a caller's [`Pool`], so that a backend's threads and
//! ours never compete for the cores.

// The workspace denies `unsafe_code`; this crate is its one exception, so
// that intrinsics, raw output tiles and file maps stay in one audited place.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod dense;
mod heap;
mod mmap;
pub mod ops;
mod quant;

use std::ops::Range;
use std::sync::Mutex;

pub use dense::{Dense, Packed};
pub use half::f16;
pub use heap::release_free_memory;
pub use mmap::MappedFile;
pub use quant::{Activations, Format, QMatrix, scores, scores_f16, weighted_sum, weighted_sum_f16};

/// The threads a kernel spreads its work over.
pub trait Pool {
    /// How many threads run work items, the caller's included.
    fn threads(&self) -> usize;

    /// Calls `f` on ranges that together cover `0..n_items` exactly once,
    /// from any of the pool's threads, and returns when all are done.
    fn execute_chunked(&self, n_items: usize, f: &(dyn Fn(Range<usize>) + Sync));
}

/// Runs `f(chunk index, chunk)` over `chunk`-sized pieces of `buf` on `pool`.
pub fn par_chunks(
    pool: &dyn Pool,
    buf: &mut [f32],
    chunk: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let pieces: Vec<Mutex<&mut [f32]>> = buf.chunks_mut(chunk).map(Mutex::new).collect();
    pool.execute_chunked(pieces.len(), &|range| {
        for i in range {
            let mut piece = pieces[i].lock().unwrap_or_else(|e| e.into_inner());
            f(i, &mut piece);
        }
    });
}

/// Weights that do not fit the layer they were given for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

/// A pool of real threads for the tests, so that disjoint writes from
/// several threads are exercised as in production.
#[cfg(test)]
pub(crate) struct TestPool(pub usize);

#[cfg(test)]
impl Pool for TestPool {
    fn threads(&self) -> usize {
        self.0
    }

    fn execute_chunked(&self, n_items: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let chunk = n_items.div_ceil(self.0 * 8).max(1);
        let cursor = AtomicUsize::new(0);
        let work = || {
            loop {
                let start = cursor.fetch_add(chunk, Ordering::Relaxed);
                if start >= n_items {
                    break;
                }
                f(start..n_items.min(start + chunk));
            }
        };
        std::thread::scope(|s| {
            for _ in 1..self.0 {
                s.spawn(work);
            }
            work();
        });
    }
}

/// Appends `src` to `dst` rounded to f16 (to nearest even), with the CPU's
/// conversion instructions where it has them.
pub fn extend_f16(dst: &mut Vec<f16>, src: &[f32]) {
    use half::slice::HalfFloatSliceExt;
    let start = dst.len();
    dst.resize(start + src.len(), f16::ZERO);
    dst[start..].convert_from_f32_slice(src);
}
