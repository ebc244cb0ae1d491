//! Quantized weight matrices (GGUF Q4_1 and Q8_0 blocks, never expanded) and
//! their products with f32 activations on the CPU, in the llama.cpp manner:
//! each activation row is quantized to 8-bit blocks once, then every weight
//! row is an integer dot product per block. candle 0.11 has no SIMD kernel
//! for Q4_1, and its quantized Llama expands the tied embedding to f32; this
//! module is what lets the CPU Llama avoid both.
//!
//! Matrices are kept in groups of eight interleaved rows (see `blocks`),
//! whatever the CPU, and work is spread over groups on the caller's pool
//! (candle's own, in strut-candle), so that our threads and candle's never
//! compete for the cores.

mod attention;
mod blocks;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::io::{Read, Seek, SeekFrom};
use std::sync::OnceLock;

use blocks::{BlockQ4_1x8, BlockQ8, BlockQ8_0, BlockQ8_0x8, QK, ROWS};

use crate::Pool;

pub use attention::{scores, scores_f16, weighted_sum, weighted_sum_f16};

/// The GGML block formats these kernels multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_1,
    Q8_0,
}

/// Groups of eight rows, interleaved (`blocks::interleave_q4_1`), group
/// after group, each group a run of `cols / 32` blocks.
#[derive(Debug, Clone)]
enum Blocks {
    Q4_1(Vec<BlockQ4_1x8>),
    Q8_0(Vec<BlockQ8_0x8>),
}

/// A `rows x cols` weight matrix, kept in groups of eight interleaved rows.
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
    /// AVX2 everywhere but the quantized products, which use AVX-512 VNNI.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// As `Vnni`, with the quantized products at 512 bits: two groups a
    /// register.
    #[cfg(target_arch = "x86_64")]
    Vnni512,
}

impl Kernel {
    #[inline]
    pub(crate) fn detect() -> Self {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| *Self::available().last().unwrap_or(&Kernel::Portable))
    }

    /// Whether its products take groups two at a time.
    fn takes_pairs(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self == Kernel::Vnni512;
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The kernel for a group without a partner: the 256-bit one of the
    /// same bits for the 512-bit one, itself for the others.
    fn for_one_group(self) -> Self {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni512 => Kernel::Vnni,
            other => other,
        }
    }

    /// Every kernel this CPU can run, slowest first.
    pub(crate) fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::available() {
                kernels.push(Kernel::Avx2);
            }
            if vnni::available() {
                kernels.push(Kernel::Vnni);
            }
            if vnni::available_512() {
                kernels.push(Kernel::Vnni512);
            }
        }
        kernels
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
        // Every field of every block is written below: clearing first
        // would store each block twice (2% of a batched step in `perf`).
        self.blocks
            .resize(rows * self.blocks_per_row, BlockQ8::default());
        quantize_with(Kernel::detect(), x, &mut self.blocks);
    }

    fn row(&self, i: usize) -> &[BlockQ8] {
        &self.blocks[i * self.blocks_per_row..(i + 1) * self.blocks_per_row]
    }
}

/// Activation rows that meet a group's blocks at once: each group's
/// unpacked weights serve eight rows before the next tile. AVX2's 16
/// registers do not hold eight rows' sums at once, and still a step of
/// eight sequences ran 5 to 7% faster than with tiles of four on a Zen 3,
/// both formats eight (3 to 5% with Q4_1 alone).
/// With VNNI, eight rows keep one chain of sums each, 5% faster than four
/// with two; at 512 bits, two chains each (32 registers hold them).
const TILE: usize = 8;
/// The 256-bit VNNI Q8_0 kernel's: its even/odd chains gained nothing from
/// eight.
const VNNI_Q8_TILE: usize = 4;
/// Activation rows a work item runs through its groups before the next
/// ones: a prompt's rows beyond this would push its weights out of L1.
const PANEL: usize = 64;
/// Work items per thread: enough for a straggling core to be absorbed, few
/// enough that claiming them costs nothing.
const ITEMS_PER_THREAD: usize = 8;

impl QMatrix {
    /// Reads the matrices of `format` and width `cols` that start at each
    /// `(offset, rows)` of a GGUF file, stacked into one and interleaved
    /// eight rows at a time, so that loading needs no second copy of a
    /// matrix.
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
        let per_row = cols / QK;
        let blocks = match format {
            Format::Q4_1 => Blocks::Q4_1(read_groups(
                reader,
                parts,
                per_row,
                blocks::interleave_q4_1,
            )?),
            Format::Q8_0 => Blocks::Q8_0(read_groups(
                reader,
                parts,
                per_row,
                blocks::interleave_q8_0,
            )?),
        };
        Ok(Self { rows, cols, blocks })
    }

    /// `rows x cols` f32 values (row-major) quantized to Q8_0.
    #[cfg(test)]
    pub fn quantize_q8_0(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert!(cols.is_multiple_of(QK) && values.len() == rows * cols);
        let blocks: Vec<_> = values.chunks_exact(QK).map(BlockQ8_0::quantize).collect();
        Self {
            rows,
            cols,
            blocks: Blocks::Q8_0(blocks::interleave_q8_0(&blocks, cols / QK)),
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

    /// The blocks of group `g` (rows `8g..8g + 8`).
    fn group(&self, g: usize) -> std::ops::Range<usize> {
        g * self.blocks_per_row()..(g + 1) * self.blocks_per_row()
    }

    /// Row `r` as f32: an embedding lookup reads only the rows it needs.
    #[inline]
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (span, l) = (self.group(r / ROWS), r % ROWS);
        let outs = out.chunks_exact_mut(QK);
        match &self.blocks {
            Blocks::Q4_1(b) => (b[span].iter().zip(outs)).for_each(|(b, o)| b.row(l).dequantize(o)),
            Blocks::Q8_0(b) => (b[span].iter().zip(outs)).for_each(|(b, o)| b.row(l).dequantize(o)),
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
            blocks: Blocks::Q8_0(blocks::interleave_q8_0(&blocks, self.blocks_per_row())),
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
        // Work is split over groups of weight rows; each group meets the
        // activation rows `TILE` at a time while its blocks are in cache, so
        // the matrix is read once per `PANEL` rows, whatever the number of
        // rows. Each output goes through the same operations whichever
        // tile it falls in, so a row's products never depend on how many
        // rows came with it.
        let groups = self.rows.div_ceil(ROWS);
        // Groups a kernel call takes: the 512-bit kernel two, so items
        // hold whole pairs.
        let pair = kernel.takes_pairs();
        let step = if pair { 2 } else { 1 };
        let chunk = groups.div_ceil(pool.threads() * ITEMS_PER_THREAD).max(2);
        let chunk = chunk.next_multiple_of(step);
        let tile = match (&self.blocks, kernel) {
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q8_0(_), Kernel::Vnni) => VNNI_Q8_TILE,
            _ => TILE,
        };
        // Shared by the items rather than split into a locked slice per
        // (row, item): building those was ~2% of a batched step, on the
        // thread the other waits for.
        let shared = SharedOut(out.as_mut_ptr(), out.len());
        pool.execute_chunked(groups.div_ceil(chunk), &|range| {
            for c in range {
                let mine = c * chunk..((c + 1) * chunk).min(groups);
                for panel in (0..x.rows).step_by(PANEL) {
                    let end = (panel + PANEL).min(x.rows);
                    for g in mine.clone().step_by(step) {
                        // A lone last group goes through the 256-bit kernel:
                        // the same bits.
                        let (kernel, two) = match g + 1 < mine.end && pair {
                            true => (kernel, true),
                            false => (kernel.for_one_group(), false),
                        };
                        let mut i = panel;
                        while i < end {
                            let n = (end - i).min(tile);
                            match n {
                                8 => self.put::<8>(kernel, two, g, x, i, shared),
                                7 => self.put::<7>(kernel, two, g, x, i, shared),
                                6 => self.put::<6>(kernel, two, g, x, i, shared),
                                5 => self.put::<5>(kernel, two, g, x, i, shared),
                                4 => self.put::<4>(kernel, two, g, x, i, shared),
                                3 => self.put::<3>(kernel, two, g, x, i, shared),
                                2 => self.put::<2>(kernel, two, g, x, i, shared),
                                _ => self.put::<1>(kernel, two, g, x, i, shared),
                            }
                            i += n;
                        }
                    }
                }
            }
        });
    }

    /// Group `g` (and `g + 1` where `two`) against activation rows
    /// `first..first + N`, written to the groups' columns of those rows of
    /// `out`.
    fn put<const N: usize>(
        &self,
        kernel: Kernel,
        two: bool,
        g: usize,
        x: &Activations,
        first: usize,
        out: SharedOut,
    ) {
        let acts: [&[BlockQ8]; N] = std::array::from_fn(|i| x.row(first + i));
        if two {
            for (i, lanes) in self.dot_pair::<N>(kernel, g, acts).iter().enumerate() {
                let (a, b) = lanes.split_at(ROWS);
                self.store(out, first + i, g, a.try_into().expect("eight lanes"));
                self.store(out, first + i, g + 1, b.try_into().expect("eight lanes"));
            }
        } else {
            for (i, lanes) in self.dot::<N>(kernel, g, acts).iter().enumerate() {
                self.store(out, first + i, g, lanes);
            }
        }
    }

    /// Group `g`'s lanes of activation row `row`, to their place in `out`.
    #[inline]
    fn store(&self, out: SharedOut, row: usize, g: usize, lanes: &[f32; ROWS]) {
        let width = (self.rows - g * ROWS).min(ROWS);
        let at = row * self.rows + g * ROWS;
        assert!(at + width <= out.1, "a group's outputs lie inside `out`");
        // SAFETY: inside `out` (just checked), which `matmul_with` holds as
        // `&mut` until every item has returned; group `g` belongs to one
        // item (`mine`) and meets each row once, so no other write touches
        // these columns of this row.
        unsafe {
            let dst = out.0.add(at);
            match width {
                // A whole group as one fixed-size store, not a `memcpy`.
                ROWS => dst.cast::<[f32; ROWS]>().write_unaligned(*lanes),
                _ => std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, width),
            }
        }
    }

    /// Groups `g` and `g + 1` at once.
    fn dot_pair<const N: usize>(
        &self,
        kernel: Kernel,
        g: usize,
        acts: [&[BlockQ8]; N],
    ) -> [[f32; 2 * ROWS]; N] {
        match (&self.blocks, kernel) {
            // SAFETY: `Kernel::Vnni512` is only chosen when the CPU has what
            // `Kernel::Vnni` needs and AVX-512BW (`vnni::available_512`).
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q4_1(b), Kernel::Vnni512) => unsafe {
                vnni::dot_q4_1x16::<N>([&b[self.group(g)], &b[self.group(g + 1)]], acts)
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q8_0(b), Kernel::Vnni512) => unsafe {
                vnni::dot_q8_0x16::<N>([&b[self.group(g)], &b[self.group(g + 1)]], acts)
            },
            _ => unreachable!("pairs of groups only go to the 512-bit kernels"),
        }
    }

    fn dot<const N: usize>(
        &self,
        kernel: Kernel,
        g: usize,
        acts: [&[BlockQ8]; N],
    ) -> [[f32; ROWS]; N] {
        let span = self.group(g);
        match (&self.blocks, kernel) {
            (Blocks::Q4_1(b), Kernel::Portable) => {
                acts.map(|a| blocks::dot_q4_1x8(&b[span.clone()], a))
            }
            (Blocks::Q8_0(b), Kernel::Portable) => {
                acts.map(|a| blocks::dot_q8_0x8(&b[span.clone()], a))
            }
            // SAFETY: `Kernel::Avx2` is only chosen when the CPU has AVX2, FMA
            // and F16C (`x86::available`).
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q4_1(b), Kernel::Avx2) => unsafe { x86::dot_q4_1x8::<N>(&b[span], acts) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q8_0(b), Kernel::Avx2) => unsafe { x86::dot_q8_0x8::<N>(&b[span], acts) },
            // SAFETY: `Kernel::Vnni` is only chosen when the CPU has AVX2, FMA,
            // F16C, AVX-512F, VL and VNNI (`vnni::available`).
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q4_1(b), Kernel::Vnni | Kernel::Vnni512) => unsafe {
                vnni::dot_q4_1x8::<N>(&b[span], acts)
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q8_0(b), Kernel::Vnni | Kernel::Vnni512) => unsafe {
                vnni::dot_q8_0x8::<N>(&b[span], acts)
            },
        }
    }
}

/// `matmul_with`'s output, written by several threads at disjoint places:
/// the pointer and the length.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32, usize);
// SAFETY: every work item writes only its own groups' columns (`put`), and
// `matmul_with` holds `&mut out` until all items have finished.
unsafe impl Send for SharedOut {}
// SAFETY: as for `Send`: shared between items that write disjoint places.
unsafe impl Sync for SharedOut {}

/// `blocks::quantize_activations`, with the CPU's SIMD where it has it: the
/// same bits either way.
fn quantize_with(kernel: Kernel, x: &[f32], out: &mut [BlockQ8]) {
    match kernel {
        // SAFETY: both are chosen only when AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Vnni | Kernel::Vnni512 => unsafe {
            x86::quantize_activations(x, out)
        },
        _ => blocks::quantize_activations(x, out),
    }
}

/// The rows of `parts` (blocks of type `T`, `per_row` to a row), eight at a
/// time through `pack`, whose groups are appended in order.
fn read_groups<T: bytemuck::Pod, P>(
    reader: &mut (impl Read + Seek),
    parts: &[(u64, usize)],
    per_row: usize,
    pack: fn(&[T], usize) -> Vec<P>,
) -> std::io::Result<Vec<P>> {
    let rows: usize = parts.iter().map(|(_, rows)| rows).sum();
    let mut out = Vec::with_capacity(rows.div_ceil(ROWS) * per_row);
    let mut group: Vec<T> = Vec::with_capacity(ROWS * per_row);
    for &(offset, rows) in parts {
        reader.seek(SeekFrom::Start(offset))?;
        let mut left = rows;
        while left > 0 {
            let take = (ROWS - group.len() / per_row).min(left);
            let start = group.len();
            group.resize(start + take * per_row, T::zeroed());
            reader.read_exact(bytemuck::cast_slice_mut(&mut group[start..]))?;
            left -= take;
            if group.len() == ROWS * per_row {
                out.extend(pack(&group, per_row));
                group.clear();
            }
        }
    }
    if !group.is_empty() {
        out.extend(pack(&group, per_row));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
