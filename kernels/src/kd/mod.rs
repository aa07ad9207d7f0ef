//! Sentence-level knowledge-distillation losses, forward and backward fused.
//!
//! # Contract
//!
//! Inputs: student embeddings `S` and teacher embeddings `T`, both `[b, d]` f32 (for otkd the
//! rows are L2-normalised sentence embeddings, `b >= 1`). The teacher is a constant: the loss
//! is differentiable in `S` only (the frozen teacher's outputs come from a cache). With
//! `Z = S Tᵀ / τ` and `Y = T Tᵀ / τ`:
//!
//! ```text
//! mse      = 1/b Σ_i ‖S_i − T_i‖²
//! Mse      : mse
//! Kl       : mse + 1/b Σ_i Σ_j p_ij (log(p_ij + 1e-12) − log_softmax(Z_i)_j),  p_i = softmax(Y_i)
//! InfoNce  : mse + ½ (1/b Σ_i −log_softmax(Z_i)_i + 1/b Σ_j −log_softmax(Z_{·j})_j)
//! ```
//!
//! The trainer's KD losses are this op (`kd_loss` in `host/src/distill/losses.rs` calls
//! [`kd_loss`]); the English term of KD (`w ‖S(en) − T(en)‖²`) is a second call with
//! [`KdTerm::Mse`], scaled by `w`.
//!
//! Gradient (`∂/∂S_i`, upstream gradient `g`): `g/b · (2 (S_i − T_i) + 1/τ Σ_j δ_ij T_j)` with
//! `δ_ij = q_ij Σ_k p_ik − p_ij` (Kl) or `δ_ij = ½ (q_ij + c_ij) − [i = j]` (InfoNce), where
//! `q_i = softmax(Z_i)` and `c_·j = softmax(Z_{·j})` (column softmax).
//!
//! # Implementations
//!
//! - [`kd_loss`]: the fused custom op (`CustomOp2` on `(S, T)` with an explicit backward). On
//!   the CPU, [`cpu`] (the reference: row-parallel on rayon); on a CUDA device (feature
//!   `cuda`), `kernels/cuda/kd.cu`: one launch for the per-row statistics, one to reduce them,
//!   one for the whole gradient.
//! - [`kd_loss_composed`]: the same maths from candle ops (the `_slow` twin the fused op is
//!   tested and benchmarked against).

pub mod cpu;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, Layout, Shape, Tensor};

use crate::KernelError;
use crate::error::{InOp, expect_f32_same_device, expect_supported_device};

/// The name the KD entry points report in errors.
const OP: &str = "kd_loss";

/// Which KD loss (see the [module docs](self)); the in-batch terms include the MSE term, as in
/// the trainer's `--kd-variant`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KdTerm {
    /// Embedding MSE only.
    Mse,
    /// MSE + KL(softmax(T·Tᵀ/τ) ‖ softmax(S·Tᵀ/τ)) over the batch.
    Kl {
        /// τ (> 0, finite).
        temperature: f32,
    },
    /// MSE + InfoNCE of S against T over the batch, both directions.
    InfoNce {
        /// τ (> 0, finite).
        temperature: f32,
    },
}

/// The loss as the kernels see it: a variant code (shared with `kd.cu`) and `1/τ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Term {
    /// `KD_MSE` = 0, `KD_KL` = 1, `KD_INFONCE` = 2 (the `#define`s of `kd.cu`).
    pub(crate) variant: i32,
    /// `1/τ` (unused by Mse).
    pub(crate) inv_temperature: f32,
}

pub(crate) const MSE: i32 = 0;
pub(crate) const KL: i32 = 1;
pub(crate) const INFONCE: i32 = 2;

impl KdTerm {
    fn kernel_term(self) -> Result<Term, KernelError> {
        let (variant, temperature) = match self {
            KdTerm::Mse => return Ok(Term { variant: MSE, inv_temperature: 0.0 }),
            KdTerm::Kl { temperature } => (KL, temperature),
            KdTerm::InfoNce { temperature } => (INFONCE, temperature),
        };
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(KernelError::BadConfig {
                op: OP,
                field: "temperature",
                reason: "must be finite and > 0",
            });
        }
        Ok(Term { variant, inv_temperature: 1.0 / temperature })
    }
}

/// Per-row statistics in the packed forward output, after the loss: the row log-sum-exp of
/// `Z`, the column log-sum-exp of `Z`, the row log-sum-exp of `Y`, the row's loss.
pub(crate) const ROW_STATISTICS: usize = 4;

/// The fused forward op on `(S, T)`. Output `[1 + 4·b]`: the loss, then `[4, b]` row statistics
/// (see [`ROW_STATISTICS`]; the ones a term does not use are 0), which the backward pass reads
/// instead of recomputing them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KdForward {
    pub(crate) term: Term,
    /// `(b, d)`.
    pub(crate) shape: (usize, usize),
}

impl CustomOp2 for KdForward {
    fn name(&self) -> &'static str {
        "otkd-kd-loss"
    }

    fn cpu_fwd(
        &self,
        s_storage: &CpuStorage,
        s_layout: &Layout,
        t_storage: &CpuStorage,
        t_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = crate::error::contiguous_f32(s_storage, s_layout, OP)?;
        let t = crate::error::contiguous_f32(t_storage, t_layout, OP)?;
        let out = cpu::forward(s, t, self.shape, self.term)?;
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_storage: &candle_core::CudaStorage,
        s_layout: &Layout,
        t_storage: &candle_core::CudaStorage,
        t_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::kd_forward(self, s_storage, s_layout, t_storage, t_layout)
    }

    /// `∂loss/∂S` from [`KdGradient`] (one fused pass), times the loss's upstream gradient; the
    /// teacher gets none (a constant). Gradients reaching the statistics are ignored: [`kd_loss`]
    /// hands out only the loss.
    fn bwd(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gradient = student.apply_op3_no_bwd(teacher, res, &KdGradient { forward: *self })?;
        Ok((Some(gradient.broadcast_mul(&grad_res.narrow(0, 0, 1)?)?), None))
    }
}

/// `∂loss/∂S` (for an upstream gradient of 1) from `(S, T, forward output)`: `[b, d]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KdGradient {
    pub(crate) forward: KdForward,
}

impl CustomOp3 for KdGradient {
    fn name(&self) -> &'static str {
        "otkd-kd-loss-gradient"
    }

    fn cpu_fwd(
        &self,
        s_storage: &CpuStorage,
        s_layout: &Layout,
        t_storage: &CpuStorage,
        t_layout: &Layout,
        f_storage: &CpuStorage,
        f_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = crate::error::contiguous_f32(s_storage, s_layout, OP)?;
        let t = crate::error::contiguous_f32(t_storage, t_layout, OP)?;
        let forward = crate::error::contiguous_f32(f_storage, f_layout, OP)?;
        let KdForward { term, shape } = self.forward;
        Ok((CpuStorage::F32(cpu::gradient(s, t, forward, shape, term)?), Shape::from(shape)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_storage: &candle_core::CudaStorage,
        s_layout: &Layout,
        t_storage: &candle_core::CudaStorage,
        t_layout: &Layout,
        f_storage: &candle_core::CudaStorage,
        f_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::kd_gradient(self, s_storage, s_layout, t_storage, t_layout, f_storage, f_layout)
    }
}

/// Checks dtype, device, shapes; returns `(b, d)`.
fn check_inputs(student: &Tensor, teacher: &Tensor) -> Result<(usize, usize), KernelError> {
    expect_f32_same_device(&[student, teacher], OP)?;
    if student.rank() != 2 {
        return Err(KernelError::ShapeMismatch {
            op: OP,
            what: "student rank",
            expected: 2,
            got: student.rank(),
        });
    }
    let (b, d) = student.dims2().op(OP)?;
    if teacher.dims() != [b, d] {
        let what = "teacher elements (must equal the student's [b, d])";
        return Err(KernelError::ShapeMismatch { op: OP, what, expected: b * d, got: teacher.elem_count() });
    }
    if b == 0 {
        return Err(KernelError::ShapeMismatch { op: OP, what: "batch size (>= 1)", expected: 1, got: 0 });
    }
    Ok((b, d))
}

/// The KD loss `term` of `student` against `teacher` (both `[b, d]` f32, `b >= 1`), as a scalar
/// differentiable in `student` (see the [module docs](self)): one fused op forward, one fused
/// op backward.
///
/// The trainer's KD term with an English weight `w` is
/// `kd_loss(s_x, t, term)? + w · kd_loss(s_en, t, KdTerm::Mse)?`.
///
/// Errors (all naming the op `"kd_loss"`): [`KernelError::UnsupportedDtype`],
/// [`KernelError::DeviceMismatch`], [`KernelError::ShapeMismatch`], [`KernelError::BadConfig`]
/// (temperature), [`KernelError::NoCudaImplementation`].
pub fn kd_loss(student: &Tensor, teacher: &Tensor, term: KdTerm) -> Result<Tensor, KernelError> {
    let (b, d) = check_inputs(student, teacher)?;
    let term = term.kernel_term()?;
    expect_supported_device(student, OP)?;
    let op = KdForward { term, shape: (b, d) };
    let fused = || -> candle_core::Result<Tensor> {
        let packed = student.contiguous()?.apply_op2(&teacher.contiguous()?, op)?;
        packed.narrow(0, 0, 1)?.reshape(())
    };
    fused().op(OP)
}

/// [`kd_loss`] written as composed candle ops (softmaxes from `exp`/`log`/`max`), on any device:
/// the reference the fused op is tested and benchmarked against. Same checks and errors.
pub fn kd_loss_composed(student: &Tensor, teacher: &Tensor, term: KdTerm) -> Result<Tensor, KernelError> {
    check_inputs(student, teacher)?;
    let kernel_term = term.kernel_term()?;
    let composed = || -> candle_core::Result<Tensor> {
        let mse = (student - teacher)?.sqr()?.sum(1)?.mean(0)?;
        if kernel_term.variant == MSE {
            return Ok(mse);
        }
        let inv_temperature = f64::from(kernel_term.inv_temperature);
        let logits = (student.matmul(&teacher.t()?)? * inv_temperature)?;
        let extra = if kernel_term.variant == KL {
            let target = softmax(&(teacher.matmul(&teacher.t()?)? * inv_temperature)?)?;
            let log_p = (&target + 1e-12)?.log()?;
            (target * (log_p - log_softmax(&logits)?)?)?.sum(1)?.mean(0)?
        } else {
            let forward = log_softmax(&logits)?;
            let backward = log_softmax(&logits.t()?.contiguous()?)?;
            let diagonal = |x: &Tensor| -> candle_core::Result<Tensor> {
                let eye = Tensor::eye(x.dim(0)?, x.dtype(), x.device())?;
                (x * eye)?.sum_all()
            };
            let b = logits.dim(0)? as f64;
            ((diagonal(&forward)? + diagonal(&backward)?)? * (-0.5 / b))?
        };
        mse + extra
    };
    composed().op(OP)
}

/// Row-wise log-softmax with the maximum subtracted (detached: its gradient cancels).
fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Row-wise softmax.
fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    log_softmax(x)?.exp()
}
