//! Dense f32 linear layers with weights packed once at load, for the CPU
//! BERT. candle's matmul goes through `gemm`, which re-packs the constant
//! weight matrix on every call and cannot fuse the bias; BERT's forward is
//! ~95% these products, so they are written out here, BLIS-style: weights
//! in panels of `NR` output columns (`[k][NR]`), activations in blocks of
//! `MR` rows (`[k][MR]`), and a register-tile kernel that keeps `MR x NR`
//! sums in registers over the whole `k`.

use std::sync::OnceLock;

use crate::ops::Activation;
use crate::{Pool, ShapeError};

/// Output columns per weight panel: two AVX-512 registers.
const NR: usize = 32;
/// Activation rows per tile: 12 x 2 accumulators leave registers for the
/// weights and the broadcast.
const MR: usize = 12;
/// Activation rows handled per work item: a block of them (at `k` 1536,
/// ~1.2 MB packed) stays in L2 while the item's weight panels go by.
const ROWS_PER_ITEM: usize = 16 * MR;

/// Which build of the dense and element-wise kernels runs; chosen once per
/// process. Private: a caller naming a kernel its CPU lacks would run
/// instructions it does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    #[inline]
    pub(crate) fn detect() -> Self {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            // Every feature that `ops`' AVX-512 build enables, not only the
            // tile's AVX-512F: hosts with F have had the rest since Skylake,
            // but a Xeon Phi has F without BW, DQ or VL.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx512;
            }
            Kernel::Portable
        })
    }
}

/// `y = x W^T + b` with `W` given as `[out, in]` (PyTorch's layout).
pub struct Dense {
    out: usize,
    inp: usize,
    /// `panels x in x NR`, zero past `out`.
    panels: Vec<f32>,
    /// Padded to whole panels.
    bias: Vec<f32>,
}

/// Activations packed for one product, reused across calls.
#[derive(Default)]
pub struct Packed {
    rows: usize,
    data: Vec<f32>,
}

impl Packed {
    /// `x` (`rows x k`, row-major) as blocks of `MR` rows, each `[k][MR]`,
    /// the last block zero-padded.
    pub fn pack(&mut self, pool: &dyn Pool, x: &[f32], rows: usize) {
        let k = x.len() / rows.max(1);
        let blocks = rows.div_ceil(MR);
        self.rows = rows;
        // No clearing: the padding rows of the last block only ever reach
        // accumulator rows that are not stored.
        self.data.resize(blocks * k * MR, 0.0);
        crate::par_chunks(pool, &mut self.data, (k * MR).max(1), |b, block| {
            for r in 0..MR.min(rows - b * MR) {
                let row = &x[(b * MR + r) * k..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    block[kk * MR + r] = v;
                }
            }
        });
    }
}

impl Dense {
    /// The weight `[out, in]` row-major, given as parts stacked by rows
    /// (query, key and value make one layer), read straight from the
    /// checkpoint's buffers; `bias` has `out` entries.
    pub fn new(parts: &[&[f32]], bias: &[f32], inp: usize) -> Result<Self, ShapeError> {
        let out = bias.len();
        let weights: usize = parts.iter().map(|p| p.len()).sum();
        if weights != out * inp || out == 0 {
            return Err(ShapeError(format!(
                "a {out} x {inp} layer got {weights} weights"
            )));
        }
        let n_panels = out.div_ceil(NR);
        let mut panels = vec![0.0; n_panels * inp * NR];
        let rows = parts.iter().flat_map(|p| p.chunks_exact(inp));
        for (o, row) in rows.enumerate() {
            let panel = &mut panels[(o / NR) * inp * NR..][..inp * NR];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * NR + o % NR] = v;
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(n_panels * NR, 0.0);
        Ok(Self {
            out,
            inp,
            panels,
            bias: padded,
        })
    }

    #[inline]
    pub fn out_features(&self) -> usize {
        self.out
    }

    #[inline]
    pub fn in_features(&self) -> usize {
        self.inp
    }

    /// `y` (`x.rows x out`) `= act(x W^T + b)`, spread over `pool` in items
    /// of (a block of rows, one panel), so that a straggling core's share is
    /// picked up by the others. The activation runs on each tile while it is
    /// still in L1.
    pub fn forward(&self, pool: &dyn Pool, x: &Packed, y: &mut [f32], act: Option<Activation>) {
        self.forward_with(Kernel::detect(), pool, x, y, act)
    }

    pub(crate) fn forward_with(
        &self,
        kernel: Kernel,
        pool: &dyn Pool,
        x: &Packed,
        y: &mut [f32],
        act: Option<Activation>,
    ) {
        assert_eq!(y.len(), x.rows * self.out, "output size");
        assert_eq!(
            x.data.len(),
            x.rows.div_ceil(MR) * self.inp * MR,
            "packed input size"
        );
        let n_panels = self.out.div_ceil(NR);
        let groups = x.rows.div_ceil(ROWS_PER_ITEM);
        let out = SharedOut(y.as_mut_ptr());
        let item = |i: usize| {
            let (g, p) = (i / n_panels, i % n_panels);
            let cols = NR.min(self.out - p * NR);
            let panel = &self.panels[p * self.inp * NR..][..self.inp * NR];
            let bias = &self.bias[p * NR..][..NR];
            let first = g * ROWS_PER_ITEM;
            for row0 in (first..x.rows.min(first + ROWS_PER_ITEM)).step_by(MR) {
                let rows = MR.min(x.rows - row0);
                let block = &x.data[(row0 / MR) * self.inp * MR..][..self.inp * MR];
                let tile = Tile {
                    y: out,
                    first: row0 * self.out + p * NR,
                    stride: self.out,
                    rows,
                    cols,
                };
                tile_product(kernel, block, panel, bias, tile, act);
            }
        };
        pool.execute_chunked(groups * n_panels, &|range| range.for_each(item));
    }
}

/// The output buffer, written by several threads at disjoint tiles.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every work item writes only its own tile (its rows x its panel's
// columns), and `forward` holds `&mut y` until all items have finished.
unsafe impl Send for SharedOut {}
// SAFETY: as for `Send`: shared between items that write disjoint tiles.
unsafe impl Sync for SharedOut {}

/// Where one `rows x cols` tile goes in the output.
#[derive(Clone, Copy)]
struct Tile {
    y: SharedOut,
    first: usize,
    stride: usize,
    rows: usize,
    cols: usize,
}

fn tile_product(
    kernel: Kernel,
    block: &[f32],
    panel: &[f32],
    bias: &[f32],
    tile: Tile,
    act: Option<Activation>,
) {
    let k = block.len() / MR;
    debug_assert!(panel.len() == k * NR && bias.len() == NR);
    // SAFETY: the tile lies inside `y` (rows < x.rows, columns < out) and no
    // other item writes it.
    let row = |r: usize| unsafe {
        std::slice::from_raw_parts_mut(tile.y.0.add(tile.first + r * tile.stride), tile.cols)
    };
    match kernel {
        // SAFETY: chosen only when AVX-512F was detected; the slices have the
        // lengths checked above, and the tile's rows lie inside `y` as above.
        // The sums go straight from registers to `y`: a staging array was
        // a 1.5 KB memset per tile, 6% of a batch.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe {
            x86::tile(
                k,
                block,
                panel,
                bias,
                (row(0).as_mut_ptr(), tile.stride),
                tile.rows,
                tile.cols,
            )
        },
        Kernel::Portable => {
            let mut acc = [[0f32; NR]; MR];
            portable_tile(k, block, panel, bias, &mut acc);
            for (r, sums) in acc.iter().enumerate().take(tile.rows) {
                row(r).copy_from_slice(&sums[..tile.cols]);
            }
        }
    }
    if let Some(act) = act {
        for r in 0..tile.rows {
            crate::ops::activate(row(r), act);
        }
    }
}

fn portable_tile(k: usize, block: &[f32], panel: &[f32], bias: &[f32], acc: &mut [[f32; NR]; MR]) {
    for row in acc.iter_mut() {
        row.copy_from_slice(bias);
    }
    for (xs, ws) in block.chunks_exact(MR).zip(panel.chunks_exact(NR)).take(k) {
        for (row, &x) in acc.iter_mut().zip(xs) {
            for (a, &w) in row.iter_mut().zip(ws) {
                *a += x * w;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// Steps of `k` between a prefetch and the load it serves.
    const PREFETCH: usize = 8;

    /// The `MR x NR` register tile over the whole `k`: per step, two loads
    /// of weights, `MR` broadcasts and `2 MR` FMAs; then its first `rows`
    /// rows and `cols` columns are stored at `dst` (row stride given).
    ///
    /// # Safety
    /// AVX-512F must be available; `block` holds `k * MR` and `panel`
    /// `k * NR` values, `bias` `NR`; `dst` has room for the rows and columns
    /// stored.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(
        k: usize,
        block: &[f32],
        panel: &[f32],
        bias: &[f32],
        (dst, stride): (*mut f32, usize),
        rows: usize,
        cols: usize,
    ) {
        assert!(block.len() >= k * MR && panel.len() >= k * NR && bias.len() >= NR);
        assert!(rows <= MR && cols <= NR);
        let (x, w) = (block.as_ptr(), panel.as_ptr());
        // SAFETY: the whole body: reads stay inside the slices asserted
        // above, writes inside the caller's tile (this function's contract).
        unsafe {
            let b0 = _mm512_loadu_ps(bias.as_ptr());
            let b1 = _mm512_loadu_ps(bias.as_ptr().add(16));
            let mut acc = [[b0, b1]; MR];
            for kk in 0..k {
                // The panel streams from L2; ask for it a few steps early (past
                // its end this is a no-op, hence wrapping arithmetic).
                let ahead = w.wrapping_add((kk + PREFETCH) * NR) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                let w0 = _mm512_loadu_ps(w.add(kk * NR));
                let w1 = _mm512_loadu_ps(w.add(kk * NR + 16));
                let xs = x.add(kk * MR);
                for (r, a) in acc.iter_mut().enumerate() {
                    let xr = _mm512_set1_ps(*xs.add(r));
                    a[0] = _mm512_fmadd_ps(xr, w0, a[0]);
                    a[1] = _mm512_fmadd_ps(xr, w1, a[1]);
                }
            }
            let mask = if cols >= NR {
                u32::MAX
            } else {
                (1u32 << cols) - 1
            };
            let (m0, m1) = (mask as u16, (mask >> 16) as u16);
            for (r, a) in acc.iter().enumerate().take(rows) {
                let row = dst.add(r * stride);
                _mm512_mask_storeu_ps(row, m0, a[0]);
                _mm512_mask_storeu_ps(row.add(16), m1, a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestPool;

    fn naive(x: &[f32], rows: usize, w: &[f32], b: &[f32], out: usize) -> Vec<f32> {
        let inp = x.len() / rows;
        let mut y = vec![0.0; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let dot: f64 = (0..inp)
                    .map(|k| x[r * inp + k] as f64 * w[o * inp + k] as f64)
                    .sum();
                y[r * out + o] = dot as f32 + b[o];
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn kernels() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        if Kernel::detect() != Kernel::Portable {
            all.push(Kernel::detect());
        }
        all
    }

    #[test]
    fn matches_a_naive_product_at_ragged_shapes() {
        // Rows that leave a partial tile and a partial item, columns that
        // leave a partial panel, and k not a multiple of anything.
        for &(rows, out, inp) in &[(1, 32, 8), (13, 40, 7), (200, 96, 33), (25, 1, 64)] {
            let (x, w, b) = (values(rows * inp, 1), values(out * inp, 2), values(out, 3));
            let want = naive(&x, rows, &w, &b, out);
            let (top, bottom) = w.split_at(inp * (out / 2));
            let dense = Dense::new(&[top, bottom], &b, inp).unwrap();
            let mut packed = Packed::default();
            packed.pack(&TestPool(2), &x, rows);
            for kernel in kernels() {
                let mut y = vec![f32::NAN; rows * out];
                dense.forward_with(kernel, &TestPool(3), &packed, &mut y, None);
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-4,
                        "{kernel:?} {rows}x{out}x{inp} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_weights_of_the_wrong_size() {
        let err = Dense::new(&[&[0.0; 10]], &[0.0; 2], 4).err().unwrap();
        assert!(err.to_string().contains("2 x 4 layer got 10"), "{err}");
    }
}
