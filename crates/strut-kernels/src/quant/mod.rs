//! Quantized weight matrices (GGUF Q4_1 and Q8_0 blocks, kept as stored) and
//! their products with f32 activations on the CPU, in the llama.cpp manner:
//! each activation row is quantized to 8-bit blocks once, then every weight
//! row is an integer dot product per block. candle 0.11 has no SIMD kernel
//! for Q4_1, and its quantized Llama expands the tied embedding to f32; this
//! module is what lets the CPU Llama avoid both.
//!
//! Work is spread over output rows (one token) or over tiles of activation
//! rows (a prompt) on the caller's pool (candle's own, in strut-candle), so
//! that our threads and candle's never compete for the cores.

mod blocks;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::io::{Read, Seek, SeekFrom};
use std::sync::{Mutex, OnceLock};

use blocks::{BlockQ4_1, BlockQ8, BlockQ8_0, QK};
use bytemuck::Zeroable;

use crate::Pool;

/// The GGML block formats these kernels multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_1,
    Q8_0,
}

#[derive(Debug, Clone)]
enum Blocks {
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
}

/// A `rows x cols` weight matrix, row-major, each row a run of blocks.
#[derive(Debug, Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    blocks: Blocks,
}

/// Which implementation computes the dot products; chosen once per process.
/// Private, as in `dense`: naming `Avx2` on a CPU without it would be unsound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    #[inline]
    pub(crate) fn detect() -> Self {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if x86::available() {
                return Kernel::Avx2;
            }
            Kernel::Portable
        })
    }
}

/// Activation rows quantized for a product, reused across calls.
#[derive(Debug, Default)]
pub struct Activations {
    rows: usize,
    blocks_per_row: usize,
    blocks: Vec<BlockQ8>,
}

impl Activations {
    /// Quantizes `x`, `rows` rows of equal length (a multiple of 32).
    #[inline]
    pub fn quantize(&mut self, x: &[f32], rows: usize) {
        let cols = x.len() / rows;
        assert!(
            cols.is_multiple_of(QK) && cols * rows == x.len(),
            "{rows} rows of {cols}"
        );
        self.rows = rows;
        self.blocks_per_row = cols / QK;
        self.blocks.clear();
        self.blocks
            .resize(rows * self.blocks_per_row, BlockQ8::default());
        blocks::quantize_activations(x, &mut self.blocks);
    }

    fn row(&self, i: usize) -> &[BlockQ8] {
        &self.blocks[i * self.blocks_per_row..(i + 1) * self.blocks_per_row]
    }
}

/// Activation rows per tile when a prompt is multiplied: each weight block is
/// unpacked once per tile.
const TILE: usize = 4;
/// Work items per thread for one token's product: enough for a straggling
/// core to be absorbed, few enough that claiming them costs nothing.
const ITEMS_PER_THREAD: usize = 8;
/// From this many activation rows (a prompt) work is split over tiles of
/// rows, each streaming the whole matrix; below, over weight rows.
const FEW_ROWS: usize = 32;

impl QMatrix {
    /// Reads the matrices of `format` and width `cols` that start at each
    /// `(offset, rows)` of a GGUF file, stacked into one: their blocks go
    /// straight into the final buffer, never through a copy.
    pub fn read(
        reader: &mut (impl Read + Seek),
        format: Format,
        cols: usize,
        parts: &[(u64, usize)],
    ) -> std::io::Result<Self> {
        if !cols.is_multiple_of(QK) {
            return Err(std::io::Error::other(format!(
                "a quantized row of {cols} values is not whole blocks of {QK}"
            )));
        }
        let rows = parts.iter().map(|(_, rows)| rows).sum::<usize>();
        fn fill<T: bytemuck::Pod>(
            reader: &mut (impl Read + Seek),
            mut blocks: &mut [T],
            parts: &[(u64, usize)],
            per_row: usize,
        ) -> std::io::Result<()> {
            for &(offset, rows) in parts {
                let (part, rest) = blocks.split_at_mut(rows * per_row);
                reader.seek(SeekFrom::Start(offset))?;
                reader.read_exact(bytemuck::cast_slice_mut(part))?;
                blocks = rest;
            }
            Ok(())
        }
        let (n, per_row) = (rows * cols / QK, cols / QK);
        let blocks = match format {
            Format::Q4_1 => {
                let mut v = vec![BlockQ4_1::zeroed(); n];
                fill(reader, &mut v, parts, per_row)?;
                Blocks::Q4_1(v)
            }
            Format::Q8_0 => {
                let mut v = vec![BlockQ8_0::zeroed(); n];
                fill(reader, &mut v, parts, per_row)?;
                Blocks::Q8_0(v)
            }
        };
        Ok(Self { rows, cols, blocks })
    }

    /// `rows x cols` f32 values (row-major) quantized to Q8_0.
    #[cfg(test)]
    pub fn quantize_q8_0(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert!(cols.is_multiple_of(QK) && values.len() == rows * cols);
        let blocks = values.chunks_exact(QK).map(BlockQ8_0::quantize).collect();
        Self {
            rows,
            cols,
            blocks: Blocks::Q8_0(blocks),
        }
    }

    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    #[inline]
    pub fn format(&self) -> Format {
        match self.blocks {
            Blocks::Q4_1(_) => Format::Q4_1,
            Blocks::Q8_0(_) => Format::Q8_0,
        }
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / QK
    }

    /// Row `r` as f32: an embedding lookup reads only the rows it needs.
    #[inline]
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let span = r * self.blocks_per_row()..(r + 1) * self.blocks_per_row();
        let outs = out.chunks_exact_mut(QK);
        match &self.blocks {
            Blocks::Q4_1(b) => b[span].iter().zip(outs).for_each(|(b, o)| b.dequantize(o)),
            Blocks::Q8_0(b) => b[span].iter().zip(outs).for_each(|(b, o)| b.dequantize(o)),
        }
    }

    /// The same matrix with Q8_0 blocks (more memory, a simpler kernel).
    pub fn to_q8_0(&self) -> Self {
        let mut row = vec![0f32; self.cols];
        let mut blocks = Vec::with_capacity(self.rows * self.blocks_per_row());
        for r in 0..self.rows {
            self.dequantize_row(r, &mut row);
            blocks.extend(row.chunks_exact(QK).map(BlockQ8_0::quantize));
        }
        Self {
            rows: self.rows,
            cols: self.cols,
            blocks: Blocks::Q8_0(blocks),
        }
    }

    /// `out[i][r] = x[i] · row r`, with `out` holding `x.rows` rows of
    /// `self.rows` values.
    pub fn matmul(&self, pool: &dyn Pool, x: &Activations, out: &mut [f32]) {
        self.matmul_with(Kernel::detect(), pool, x, out);
    }

    pub(crate) fn matmul_with(
        &self,
        kernel: Kernel,
        pool: &dyn Pool,
        x: &Activations,
        out: &mut [f32],
    ) {
        assert_eq!(x.blocks_per_row, self.blocks_per_row(), "inner dimensions");
        assert_eq!(out.len(), x.rows * self.rows, "output size");
        let threads = pool.threads();
        if x.rows >= FEW_ROWS.max(TILE * threads) {
            let tiles: Vec<Mutex<&mut [f32]>> =
                out.chunks_mut(TILE * self.rows).map(Mutex::new).collect();
            pool.execute_chunked(tiles.len(), &|range| {
                for t in range {
                    let mut tile = tiles[t].lock().unwrap_or_else(|e| e.into_inner());
                    self.tile(kernel, x, t * TILE, &mut tile);
                }
            });
            return;
        }
        // A few rows (one token, or a batch of decoding sequences): the
        // work is split over weight rows, and each chunk of weights meets
        // every activation row while it is in cache, four at a time, so the
        // matrix is read once whatever the number of rows.
        let chunk = self.rows.div_ceil(threads * ITEMS_PER_THREAD).max(16);
        let parts: Vec<Vec<Mutex<&mut [f32]>>> = out
            .chunks_mut(self.rows)
            .map(|row| row.chunks_mut(chunk).map(Mutex::new).collect())
            .collect();
        let n_chunks = self.rows.div_ceil(chunk);
        pool.execute_chunked(n_chunks, &|range| {
            for c in range {
                let mut outs: Vec<_> = parts
                    .iter()
                    .map(|row| row[c].lock().unwrap_or_else(|e| e.into_inner()))
                    .collect();
                let first = c * chunk;
                for j in 0..outs[0].len() {
                    let mut i = 0;
                    while i + TILE <= x.rows {
                        let acts = [0, 1, 2, 3].map(|t| x.row(i + t));
                        let v = self.dot::<TILE>(kernel, first + j, acts);
                        for (t, v) in v.into_iter().enumerate() {
                            outs[i + t][j] = v;
                        }
                        i += TILE;
                    }
                    for (i, out) in outs.iter_mut().enumerate().skip(i) {
                        out[j] = self.dot::<1>(kernel, first + j, [x.row(i)])[0];
                    }
                }
            }
        });
    }

    /// Activation rows `first..` (at most `TILE`) against every weight row.
    fn tile(&self, kernel: Kernel, x: &Activations, first: usize, out: &mut [f32]) {
        let n = out.len() / self.rows;
        for r in 0..self.rows {
            if n == TILE {
                let acts = [0, 1, 2, 3].map(|i| x.row(first + i));
                for (i, v) in self.dot::<TILE>(kernel, r, acts).into_iter().enumerate() {
                    out[i * self.rows + r] = v;
                }
            } else {
                for i in 0..n {
                    out[i * self.rows + r] = self.dot::<1>(kernel, r, [x.row(first + i)])[0];
                }
            }
        }
    }

    fn dot<const N: usize>(&self, kernel: Kernel, r: usize, acts: [&[BlockQ8]; N]) -> [f32; N] {
        let span = r * self.blocks_per_row()..(r + 1) * self.blocks_per_row();
        match (&self.blocks, kernel) {
            (Blocks::Q4_1(b), Kernel::Portable) => {
                acts.map(|a| blocks::dot_q4_1(&b[span.clone()], a))
            }
            (Blocks::Q8_0(b), Kernel::Portable) => {
                acts.map(|a| blocks::dot_q8_0(&b[span.clone()], a))
            }
            // SAFETY: `Kernel::Avx2` is only chosen when the CPU has AVX2, FMA
            // and F16C (`x86::available`).
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q4_1(b), Kernel::Avx2) => unsafe { x86::dot_q4_1::<N>(&b[span], acts) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q8_0(b), Kernel::Avx2) => unsafe { x86::dot_q8_0::<N>(&b[span], acts) },
        }
    }
}

/// Attention scores of query `q` against `out.len()` keys, `stride` apart
/// in `keys`: `out[j] = scale * (q · key j)`.
#[inline]
pub fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    scores_with(Kernel::detect(), q, keys, stride, scale, out);
}

pub(crate) fn scores_with(
    kernel: Kernel,
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(out.is_empty() || (out.len() - 1) * stride + q.len() <= keys.len());
    match kernel {
        // SAFETY: chosen only when AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if q.len().is_multiple_of(8) => unsafe {
            x86::scores(q, keys, stride, scale, out)
        },
        _ => blocks::scores(q, keys, stride, scale, out),
    }
}

/// The values, `stride` apart in `values`, weighted by `w` and summed:
/// `out = sum_j w[j] * value j`.
#[inline]
pub fn weighted_sum(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    weighted_sum_with(Kernel::detect(), w, values, stride, out);
}

pub(crate) fn weighted_sum_with(
    kernel: Kernel,
    w: &[f32],
    values: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    assert!(w.is_empty() || (w.len() - 1) * stride + out.len() <= values.len());
    match kernel {
        // SAFETY: chosen only when AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if out.len().is_multiple_of(8) => unsafe {
            x86::weighted_sum(w, values, stride, out)
        },
        _ => blocks::weighted_sum(w, values, stride, out),
    }
}

#[cfg(test)]
mod tests;
