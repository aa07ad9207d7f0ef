//! Residual add followed by LayerNorm, `LN(x + residual)`, in one pass: the step that closes
//! every sublayer of a post-LN transformer (the teacher's BERT).
//!
//! # Contract
//!
//! Inputs: `x` and `residual`, f32, the same shape `[.., n]`; the op holds the LayerNorm's
//! `weight` and `bias` (`n` values each) and `eps`. Output: the same shape, each row
//! `(s - mean(s)) / sqrt(var(s) + eps) * weight + bias` with `s = x + residual` and the biased
//! variance, within 1e-5 of candle's `layer_norm(x + residual)` for rows of moderate values.
//! Forward only (the teacher is frozen).
//!
//! Why a kernel: as separate candle ops the add is one more sweep over the activations and one
//! more allocation, twelve times per teacher forward.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let norm = otkd_kernels::AddLayerNorm::new(vec![1.0, 1.0], vec![0.0, 0.5], 1e-5)?;
//! let x = Tensor::new(&[[1.0f32, 2.0]], &Device::Cpu)?;
//! let residual = Tensor::new(&[[1.0f32, 0.0]], &Device::Cpu)?;
//! // s = [2, 2]: zero variance, so the output is the bias.
//! let y = norm.forward(&x, &residual)?.to_vec2::<f32>()?;
//! assert!((y[0][0] - 0.0).abs() < 1e-3 && (y[0][1] - 0.5).abs() < 1e-3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::KernelError;
use crate::error::InOp;

/// Rows per rayon task (of the teacher's width 384: ~64 KiB of input).
const ROWS_PER_TASK: usize = 32;

/// `LN(x + residual)` with fixed LayerNorm parameters (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct AddLayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl AddLayerNorm {
    /// The op for a LayerNorm with these parameters; `weight` and `bias` must have one length
    /// and `eps` must be finite and > 0.
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, eps: f32) -> Result<Self, KernelError> {
        if weight.len() != bias.len() {
            return Err(KernelError::ShapeMismatch {
                op: "add_layer_norm",
                what: "bias length",
                expected: weight.len(),
                got: bias.len(),
            });
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(KernelError::BadConfig {
                op: "add_layer_norm",
                field: "eps",
                reason: "must be finite and > 0",
            });
        }
        Ok(Self { weight, bias, eps })
    }

    /// `LN(x + residual)`; both f32 on the CPU, of one shape whose last dimension is the
    /// LayerNorm's width.
    pub fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor, KernelError> {
        crate::error::expect_cpu_f32(&[x, residual], "add_layer_norm")?;
        let width = x.dims().last().copied().unwrap_or(0);
        if width != self.weight.len() {
            return Err(KernelError::ShapeMismatch {
                op: "add_layer_norm",
                what: "input width",
                expected: self.weight.len(),
                got: width,
            });
        }
        if x.dims() != residual.dims() {
            return Err(KernelError::ShapeMismatch {
                op: "add_layer_norm",
                what: "residual elements",
                expected: x.elem_count(),
                got: residual.elem_count(),
            });
        }
        let fused = || x.contiguous()?.apply_op2_no_bwd(&residual.contiguous()?, self);
        fused().op("add_layer_norm")
    }

    fn normalise_row(&self, out: &mut [f32], x: &[f32], residual: &[f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(x).zip(residual) {
            *o = a + b;
        }
        let n = out.len() as f32;
        let mean = out.iter().sum::<f32>() / n;
        let variance = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (variance + self.eps).sqrt();
        for ((o, &w), &b) in out.iter_mut().zip(&self.weight).zip(&self.bias) {
            *o = (*o - mean) * inv * w + b;
        }
    }
}

impl CustomOp2 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "otkd-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        r_storage: &CpuStorage,
        r_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::error::contiguous_f32(x_storage, x_layout, "add_layer_norm")?;
        let r = crate::error::contiguous_f32(r_storage, r_layout, "add_layer_norm")?;
        let width = self.weight.len().max(1);
        let task = ROWS_PER_TASK * width;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(task).zip(x.par_chunks(task)).zip(r.par_chunks(task)).for_each(|((o, x), r)| {
            for ((o, x), r) in o.chunks_exact_mut(width).zip(x.chunks_exact(width)).zip(r.chunks_exact(width))
            {
                self.normalise_row(o, x, r);
            }
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn random(len: usize, seed: u32) -> Vec<f32> {
        // A small LCG: the tests need varied values, not statistical quality.
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            })
            .collect()
    }

    #[test]
    fn matches_candles_layer_norm_of_the_sum() {
        let (rows, width) = (70, 384);
        let x = Tensor::from_vec(random(rows * width, 1), (rows, width), &Device::Cpu).unwrap();
        let r = Tensor::from_vec(random(rows * width, 2), (rows, width), &Device::Cpu).unwrap();
        let (w, b) = (random(width, 3), random(width, 4));
        let fused = AddLayerNorm::new(w.clone(), b.clone(), 1e-12).unwrap().forward(&x, &r).unwrap();
        let (w, b) = (
            Tensor::new(w.as_slice(), &Device::Cpu).unwrap(),
            Tensor::new(b.as_slice(), &Device::Cpu).unwrap(),
        );
        let reference = candle_nn::ops::layer_norm(&(&x + &r).unwrap(), &w, &b, 1e-12).unwrap();
        let diff = (fused - reference).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "max abs difference {diff}");
    }

    #[test]
    fn rejects_bad_shapes_and_parameters() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            AddLayerNorm::new(vec![1.0; 3], vec![0.0; 2], 1e-5),
            Err(KernelError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            AddLayerNorm::new(vec![1.0; 3], vec![0.0; 3], 0.0),
            Err(KernelError::BadConfig { .. })
        ));
        let norm = AddLayerNorm::new(vec![1.0; 4], vec![0.0; 4], 1e-5).unwrap();
        assert!(matches!(norm.forward(&x, &x), Err(KernelError::ShapeMismatch { .. })));
        let norm = AddLayerNorm::new(vec![1.0; 3], vec![0.0; 3], 1e-5).unwrap();
        let other = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(norm.forward(&x, &other), Err(KernelError::ShapeMismatch { .. })));
        let ints = Tensor::zeros((2, 3), DType::U32, &Device::Cpu).unwrap();
        assert!(matches!(norm.forward(&ints, &ints), Err(KernelError::UnsupportedDtype { .. })));
    }
}
