use super::attention::{scores_f16_with, scores_with, weighted_sum_f16_with, weighted_sum_with};
use super::*;
use crate::TestPool;
use half::f16;

/// Deterministic pseudo-random numbers (splitmix64), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

/// A Q4_1 matrix as a GGUF file would hold it, from random scales and
/// nibbles, read through `QMatrix::read`.
fn random_q4_1(rng: &mut Rng, rows: usize, cols: usize) -> QMatrix {
    let bytes = random_q4_1_bytes(rng, rows, cols);
    QMatrix::read(
        &mut std::io::Cursor::new(bytes),
        Format::Q4_1,
        cols,
        &[(0, rows)],
    )
    .unwrap()
}

fn random_q4_1_bytes(rng: &mut Rng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..rows * cols / QK {
        let d = half::f16::from_f32(0.01 + 0.02 * rng.unit().abs());
        let m = half::f16::from_f32(-0.1 * rng.unit().abs());
        bytes.extend(d.to_bits().to_le_bytes());
        bytes.extend(m.to_bits().to_le_bytes());
        bytes.extend((0..16).map(|_| rng.next() as u8));
    }
    bytes
}

fn dequantized(m: &QMatrix) -> Vec<f32> {
    let mut out = vec![0f32; m.rows() * m.cols()];
    for (r, row) in out.chunks_exact_mut(m.cols()).enumerate() {
        m.dequantize_row(r, row);
    }
    out
}

/// `x W^T` in f32 on the dequantized weights.
fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    x.chunks_exact(cols)
        .flat_map(|xr| {
            w.chunks_exact(cols)
                .map(|wr| wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .take(rows * (x.len() / cols))
        .collect()
}

/// How far rounding the activations to 8 bits (half a step per value, a
/// step being 1/127 of its block's largest magnitude) and their scales to
/// f16 can move each element of `x W^T`.
fn rounding_bound(w: &[f32], x: &[f32], cols: usize) -> Vec<f32> {
    x.chunks_exact(cols)
        .flat_map(|xr| {
            w.chunks_exact(cols).map(move |wr| {
                let mut bound = 0f32;
                for (wb, xb) in wr.chunks(QK).zip(xr.chunks(QK)) {
                    let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                    bound += wb.iter().map(|v| v.abs()).sum::<f32>() * step * 0.5;
                    bound += wb.iter().zip(xb).map(|(a, b)| (a * b).abs()).sum::<f32>() * 2e-3;
                }
                bound + 1e-4
            })
        })
        .collect()
}

fn assert_within(got: &[f32], want: &[f32], bound: &[f32], what: &str) {
    for (i, ((g, w), b)) in got.iter().zip(want).zip(bound).enumerate() {
        assert!(
            (g - w).abs() <= *b,
            "{what}: element {i} is {g}, expected {w} within {b}"
        );
    }
}

fn product(m: &QMatrix, kernel: Kernel, x: &[f32], n: usize) -> Vec<f32> {
    let mut acts = Activations::default();
    acts.quantize(x, n);
    let mut out = vec![f32::NAN; n * m.rows()];
    // Two threads, as on the project's VMs: `TOKENS` then takes every path.
    m.matmul_with(kernel, &TestPool(2), &acts, &mut out);
    out
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * (1.0 + w.abs()),
            "{what}: element {i} is {g}, expected {w}"
        );
    }
}

/// Row counts that take every path: one token; batches of decoding
/// sequences (whole tiles and each size of remainder); prompts of one panel
/// and of two.
const TOKENS: [usize; 7] = [1, 3, 6, 8, 13, 38, 70];

#[test]
fn q4_1_products_match_f32_on_the_dequantized_weights() {
    let mut rng = Rng(7);
    let (rows, cols) = (67, 256);
    let m = random_q4_1(&mut rng, rows, cols);
    let w = dequantized(&m);
    for n in TOKENS {
        let x = rng.values(n * cols, 2.0);
        let want = reference(&w, &x, rows, cols);
        let bound = rounding_bound(&w, &x, cols);
        assert_within(
            &product(&m, Kernel::Portable, &x, n),
            &want,
            &bound,
            "portable",
        );
        for kernel in Kernel::available() {
            let what = format!("{kernel:?}");
            assert_within(&product(&m, kernel, &x, n), &want, &bound, &what);
        }
    }
}

#[test]
fn simd_kernels_agree_with_the_portable_ones() {
    let mut rng = Rng(11);
    // Nine groups, the last one partial: the 512-bit kernels take pairs and
    // leave a lone group to the 256-bit ones.
    let (rows, cols) = (69, 576);
    let q4 = random_q4_1(&mut rng, rows, cols);
    let q8 = QMatrix::quantize_q8_0(rows, cols, &rng.values(rows * cols, 0.5));
    for m in [&q4, &q8] {
        for n in TOKENS {
            let x = rng.values(n * cols, 3.0);
            // Same integer sums, and the same f32 operations in the same
            // order: the same bits.
            let portable = product(m, Kernel::Portable, &x, n);
            for kernel in Kernel::available() {
                assert_eq!(product(m, kernel, &x, n), portable, "{kernel:?}, {n} rows");
            }
        }
    }
}

#[test]
fn each_row_of_a_product_is_what_it_is_alone() {
    // A sequence in a batch must get the logits it gets alone: a row's dot
    // products may not depend on its neighbours or on the row count.
    let mut rng = Rng(5);
    let (rows, cols) = (70, 256);
    let m = random_q4_1(&mut rng, rows, cols);
    for (kernel, n) in Kernel::available()
        .into_iter()
        .flat_map(|k| TOKENS.map(|n| (k, n)))
    {
        let x = rng.values(n * cols, 2.0);
        let together = product(&m, kernel, &x, n);
        for i in 0..n {
            let alone = product(&m, kernel, &x[i * cols..(i + 1) * cols], 1);
            assert_eq!(
                &together[i * rows..(i + 1) * rows],
                &alone[..],
                "{kernel:?}, row {i} of {n}"
            );
        }
    }
}

#[test]
fn attention_kernels_agree_with_the_portable_ones() {
    let mut rng = Rng(13);
    for (hd, n) in [(64, 1), (64, 7), (128, 33), (40, 5), (12, 3)] {
        let stride = hd * 3 + 8;
        let q = rng.values(hd, 1.0);
        let keys = rng.values(n * stride, 1.0);
        let want: Vec<f32> = (0..n)
            .map(|j| {
                q.iter()
                    .zip(&keys[j * stride..])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    * 0.125
            })
            .collect();
        for kernel in [Kernel::Portable, Kernel::detect()] {
            let mut got = vec![f32::NAN; n];
            scores_with(kernel, &q, &keys, stride, 0.125, &mut got);
            assert_close(&got, &want, 1e-5, "scores");
        }
        let w = rng.values(n, 1.0);
        let want: Vec<f32> = (0..hd)
            .map(|c| (0..n).map(|j| w[j] * keys[j * stride + c]).sum())
            .collect();
        for kernel in [Kernel::Portable, Kernel::detect()] {
            let mut got = vec![f32::NAN; hd];
            weighted_sum_with(kernel, &w, &keys, stride, &mut got);
            assert_close(&got, &want, 1e-5, "weighted sum");
        }
    }
}

#[test]
fn simd_activation_quantization_is_the_portable_one() {
    let mut rng = Rng(19);
    let mut x = rng.values(32 * 40, 3.0);
    // A block of zeros, one of ties (halves), one of huge and tiny values.
    x[32..64].fill(0.0);
    for (i, v) in x[64..96].iter_mut().enumerate() {
        *v = (i as f32 - 15.5) * 127.0 / 16.5 / 2.0;
    }
    x[96] = 1e30;
    x[97] = -1e-30;
    let (mut portable, mut simd) = (vec![BlockQ8::default(); 40], vec![BlockQ8::default(); 40]);
    blocks::quantize_activations(&x, &mut portable);
    quantize_with(Kernel::detect(), &x, &mut simd);
    for (i, (p, s)) in portable.iter().zip(&simd).enumerate() {
        assert_eq!(
            (p.qs, p.d.to_bits(), p.s.to_bits(), p.sum),
            (s.qs, s.d.to_bits(), s.s.to_bits(), s.sum),
            "block {i}"
        );
    }
}

#[test]
fn f16_attention_kernels_agree_with_f32_on_the_rounded_values() {
    let mut rng = Rng(17);
    // Whole octets of keys, a remainder, fewer than eight; groups of one,
    // two, three and five queries (the SIMD kernels take them three at a
    // time); head sizes that are and are not multiples of 8.
    for (hd, n, group) in [
        (64, 16, 3),
        (64, 21, 5),
        (64, 7, 1),
        (64, 29, 3),
        (128, 3, 2),
        (40, 9, 3),
        (12, 5, 1),
    ] {
        let q = rng.values(group * hd, 1.0);
        let keys: Vec<f16> = rng
            .values(n * hd, 1.0)
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        let wide: Vec<f32> = keys.iter().map(|v| v.to_f32()).collect();
        let mut want = vec![0f32; group * n];
        for (qg, out) in q.chunks(hd).zip(want.chunks_mut(n)) {
            blocks::scores(qg, &wide, hd, 0.125, out);
        }
        // Values to prefetch, of any length, change nothing.
        let values = [&[][..], &keys[..hd], &keys[..]];
        for (kernel, values) in [Kernel::Portable, Kernel::detect()]
            .into_iter()
            .flat_map(|k| values.map(|v| (k, v)))
        {
            let mut got = vec![f32::NAN; group * n];
            scores_f16_with(kernel, &q, &keys, values, hd, 0.125, &mut got);
            assert_close(&got, &want, 1e-5, "f16 scores");
        }
        let w = rng.values(group * n, 1.0);
        let mut want = vec![0f32; group * hd];
        for (wg, out) in w.chunks(n).zip(want.chunks_mut(hd)) {
            blocks::weighted_sum(wg, &wide, hd, out);
        }
        for kernel in [Kernel::Portable, Kernel::detect()] {
            let mut got = vec![f32::NAN; group * hd];
            weighted_sum_f16_with(kernel, &w, &keys, &keys, hd, &mut got);
            assert_close(&got, &want, 1e-5, "f16 weighted sum");
        }
    }
}

#[test]
fn q8_0_quantization_round_trips_within_half_a_step() {
    let mut rng = Rng(3);
    let (rows, cols) = (5, 64);
    let values = rng.values(rows * cols, 4.0);
    let m = QMatrix::quantize_q8_0(rows, cols, &values);
    assert_eq!(m.format(), Format::Q8_0);
    for (block, want) in dequantized(&m).chunks(QK).zip(values.chunks(QK)) {
        let step = want.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        assert_close(block, want, step * 0.51 + 1e-3, "q8_0 row");
    }
    let x = rng.values(2 * cols, 1.0);
    let (w, want) = (dequantized(&m), reference(&dequantized(&m), &x, rows, cols));
    let bound = rounding_bound(&w, &x, cols);
    assert_within(
        &product(&m, Kernel::detect(), &x, 2),
        &want,
        &bound,
        "q8_0 product",
    );
}

#[test]
fn stacked_reads_and_requantized_matrices_keep_their_rows() {
    let mut rng = Rng(5);
    let (a_bytes, b_bytes) = (
        random_q4_1_bytes(&mut rng, 11, 64),
        random_q4_1_bytes(&mut rng, 2, 64),
    );
    let read = |bytes: &[u8], rows| {
        QMatrix::read(
            &mut std::io::Cursor::new(bytes),
            Format::Q4_1,
            64,
            &[(0, rows)],
        )
        .unwrap()
    };
    let (a, b) = (read(&a_bytes, 11), read(&b_bytes, 2));
    // A file holding b then a, read back as one matrix of a's rows then b's:
    // the second part starts inside a group of eight.
    let file = [b_bytes.clone(), a_bytes].concat();
    let at = b_bytes.len() as u64;
    let mut reader = std::io::Cursor::new(file);
    let stacked = QMatrix::read(&mut reader, Format::Q4_1, 64, &[(at, 11), (0, 2)]).unwrap();
    assert_eq!((stacked.rows(), stacked.cols()), (13, 64));
    let (wa, wb) = (dequantized(&a), dequantized(&b));
    assert_eq!(dequantized(&stacked), [wa.clone(), wb].concat());
    let q8 = a.to_q8_0();
    assert_eq!(q8.format(), Format::Q8_0);
    assert_close(&dequantized(&q8), &wa, 0.01, "requantized");
}

#[test]
fn a_row_that_is_not_whole_blocks_is_refused() {
    let mut reader = std::io::Cursor::new([0u8; 60]);
    let err = QMatrix::read(&mut reader, Format::Q4_1, 48, &[(0, 1)]).unwrap_err();
    assert!(err.to_string().contains("48"), "{err}");
}

#[test]
fn q8_0_weights_at_the_ends_of_their_range_multiply_exactly() {
    // -128 is a valid Q8_0 byte though llama.cpp never writes one; with
    // activations at +-127 these are the largest sums any kernel meets,
    // and the VNNI kernel's shift by 128 must come back off exactly.
    let (rows, cols) = (9, 64);
    let mut bytes = Vec::new();
    for b in 0..rows * cols / QK {
        bytes.extend(half::f16::from_f32(0.5).to_bits().to_le_bytes());
        bytes.extend((0..QK).map(|i| if (i + b) % 3 == 0 { 127u8 } else { 0x80 }));
    }
    let m = QMatrix::read(
        &mut std::io::Cursor::new(bytes),
        Format::Q8_0,
        cols,
        &[(0, rows)],
    )
    .unwrap();
    let x: Vec<f32> = (0..3 * cols)
        .map(|i| if i % 5 == 0 { 1.0 } else { -1.0 })
        .collect();
    let portable = product(&m, Kernel::Portable, &x, 3);
    let (w, want) = (dequantized(&m), reference(&dequantized(&m), &x, rows, cols));
    assert_within(&portable, &want, &rounding_bound(&w, &x, cols), "portable");
    for kernel in Kernel::available() {
        assert_eq!(product(&m, kernel, &x, 3), portable, "{kernel:?}");
    }
}
