//! The weights of the CPU Llama: a linear layer is a quantized matrix with
//! our kernels, a GGUF format we have no kernel for (through candle's), or a
//! dense safetensors tensor (through candle's matmul). Activations are f32
//! slices, `rows` of them, row-major.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use strut_kernels::{Activations, QMatrix};

use crate::BarrierPool;

pub enum Linear {
    Quantized(Arc<QMatrix>),
    Candle(QMatMul),
    /// `[out, in]`, in the dtype the checkpoint was loaded in.
    Dense(Tensor),
}

impl Linear {
    /// `(out, in)`.
    pub fn dims(&self) -> candle_core::Result<(usize, usize)> {
        match self {
            Linear::Quantized(m) => Ok((m.rows(), m.cols())),
            Linear::Candle(m) => match m {
                QMatMul::QTensor(t) => t.shape().dims2(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims2(),
            },
            Linear::Dense(t) => t.dims2(),
        }
    }

    /// `out = x W^T` for `rows` rows of `x`.
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        acts: &mut Activations,
        out: &mut [f32],
    ) -> candle_core::Result<()> {
        match self {
            Linear::Quantized(m) => {
                acts.quantize(x, rows);
                m.matmul(&BarrierPool, acts, out);
            }
            Linear::Candle(m) => {
                let x = Tensor::from_slice(x, (rows, x.len() / rows), &Device::Cpu)?;
                copy_out(&m.forward(&x)?, out)?;
            }
            Linear::Dense(w) => {
                let x = Tensor::from_slice(x, (rows, x.len() / rows), &Device::Cpu)?
                    .to_dtype(w.dtype())?;
                copy_out(&x.matmul(&w.t()?)?, out)?;
            }
        }
        Ok(())
    }
}

fn copy_out(y: &Tensor, out: &mut [f32]) -> candle_core::Result<()> {
    let y = y.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if y.len() != out.len() {
        candle_core::bail!(
            "a linear layer gave {} values, {} expected",
            y.len(),
            out.len()
        );
    }
    out.copy_from_slice(&y);
    Ok(())
}

/// Several linear layers of one input whose outputs sit side by side in
/// each row, as if they were one layer.
pub struct Projection {
    parts: Vec<Linear>,
    widths: Vec<usize>,
    input: usize,
    scratch: Vec<f32>,
}

impl Projection {
    /// Dense parts are stacked into one layer, so that projections of one
    /// input (q, k, v; gate, up) are one product; quantized ones arrive
    /// stacked already (see `QMatrix::read`).
    pub fn of(parts: Vec<Linear>) -> candle_core::Result<Self> {
        let dense: Option<Vec<&Tensor>> = parts
            .iter()
            .map(|p| match p {
                Linear::Dense(t) => Some(t),
                _ => None,
            })
            .collect();
        match dense {
            Some(dense) if dense.len() > 1 => {
                Self::new(vec![Linear::Dense(Tensor::cat(&dense, 0)?)])
            }
            _ => Self::new(parts),
        }
    }

    fn new(parts: Vec<Linear>) -> candle_core::Result<Self> {
        let dims = parts
            .iter()
            .map(Linear::dims)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let input = dims.first().map_or(0, |d| d.1);
        if dims.iter().any(|d| d.1 != input) {
            candle_core::bail!("projections of one input differ in width: {dims:?}");
        }
        Ok(Self {
            parts,
            widths: dims.iter().map(|d| d.0).collect(),
            input,
            scratch: Vec::new(),
        })
    }

    pub fn out_dim(&self) -> usize {
        self.widths.iter().sum()
    }

    /// `(out, in)` of the parts side by side.
    pub fn dims(&self) -> candle_core::Result<(usize, usize)> {
        Ok((self.out_dim(), self.input))
    }

    pub fn forward(
        &mut self,
        x: &[f32],
        rows: usize,
        acts: &mut Activations,
        out: &mut [f32],
    ) -> candle_core::Result<()> {
        if let [only] = self.parts.as_slice() {
            return only.forward(x, rows, acts, out);
        }
        let total = self.out_dim();
        let mut offset = 0;
        for (part, &width) in self.parts.iter().zip(&self.widths) {
            self.scratch.resize(rows * width, 0.0);
            part.forward(x, rows, acts, &mut self.scratch)?;
            for (r, chunk) in self.scratch.chunks_exact(width).enumerate() {
                out[r * total + offset..][..width].copy_from_slice(chunk);
            }
            offset += width;
        }
        Ok(())
    }
}

/// The token embedding: quantized rows are expanded one looked-up row at a
/// time, so the table stays as small as in the file (and, tied, serves as
/// the output projection too).
pub enum Embedding {
    Quantized(Arc<QMatrix>),
    Dense(Tensor),
}

impl Embedding {
    pub fn vocab(&self) -> candle_core::Result<usize> {
        match self {
            Embedding::Quantized(m) => Ok(m.rows()),
            Embedding::Dense(t) => Ok(t.dims2()?.0),
        }
    }

    pub fn dim(&self) -> candle_core::Result<usize> {
        match self {
            Embedding::Quantized(m) => Ok(m.cols()),
            Embedding::Dense(t) => Ok(t.dims2()?.1),
        }
    }

    pub fn lookup(&self, token: u32, out: &mut [f32]) -> candle_core::Result<()> {
        let vocab = self.vocab()?;
        if token as usize >= vocab {
            candle_core::bail!("token id {token} is outside the vocabulary of {vocab}");
        }
        match self {
            Embedding::Quantized(m) => m.dequantize_row(token as usize, out),
            Embedding::Dense(t) => copy_out(&t.get(token as usize)?, out)?,
        }
        Ok(())
    }

    /// The same weights as an output projection (tied embeddings).
    pub fn as_linear(&self) -> Linear {
        match self {
            Embedding::Quantized(m) => Linear::Quantized(m.clone()),
            Embedding::Dense(t) => Linear::Dense(t.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};

    use super::*;

    fn weights(rows: usize, cols: usize, seed: f32) -> Tensor {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 0.5)
            .collect();
        Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
    }

    /// `x W^T` in f32 for one layer's worth of weights, as the reference.
    fn reference(w: &Tensor, x: &[f32], rows: usize) -> Vec<f32> {
        let x = Tensor::from_slice(x, (rows, x.len() / rows), &Device::Cpu).unwrap();
        x.matmul(&w.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn layers_without_our_kernels_sit_side_by_side_in_a_projection() {
        let (cols, rows) = (256, 3);
        let (wa, wb) = (weights(8, cols, 0.0), weights(5, cols, 1.0));
        let x: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        // A k-quant (candle's kernel) beside a dense layer: not stackable.
        let qb = QTensor::quantize(&wb, GgmlDType::Q4K).unwrap();
        let wb_seen = qb.dequantize(&Device::Cpu).unwrap();
        let mut projection = Projection::of(vec![
            Linear::Dense(wa.clone()),
            Linear::Candle(QMatMul::from_qtensor(qb).unwrap()),
        ])
        .unwrap();
        assert_eq!(projection.out_dim(), 13);
        let mut out = vec![f32::NAN; rows * 13];
        projection
            .forward(&x, rows, &mut Activations::default(), &mut out)
            .unwrap();
        let (want_a, want_b) = (reference(&wa, &x, rows), reference(&wb_seen, &x, rows));
        for r in 0..rows {
            let row = &out[r * 13..(r + 1) * 13];
            for (got, want) in row[..8].iter().zip(&want_a[r * 8..(r + 1) * 8]) {
                assert!(
                    (got - want).abs() < 1e-4,
                    "dense part of row {r}: {got} vs {want}"
                );
            }
            // candle quantizes the activations to 8 bits for a k-quant.
            for (got, want) in row[8..].iter().zip(&want_b[r * 5..(r + 1) * 5]) {
                assert!(
                    (got - want).abs() < 0.05 * (1.0 + want.abs()),
                    "k-quant part of row {r}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn dense_parts_are_stacked_into_one_product() {
        let parts = vec![
            Linear::Dense(weights(4, 64, 0.0)),
            Linear::Dense(weights(2, 64, 2.0)),
        ];
        let projection = Projection::of(parts).unwrap();
        assert_eq!(projection.parts.len(), 1);
        assert_eq!(projection.out_dim(), 6);
    }

    #[test]
    fn embedding_rows_come_out_as_stored_and_bad_ids_are_refused() {
        let table = weights(10, 32, 0.5);
        let embedding = Embedding::Dense(table.clone());
        let mut row = vec![0f32; 32];
        embedding.lookup(7, &mut row).unwrap();
        assert_eq!(row, table.get(7).unwrap().to_vec1::<f32>().unwrap());
        let err = embedding.lookup(10, &mut row).unwrap_err();
        assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    }
}
