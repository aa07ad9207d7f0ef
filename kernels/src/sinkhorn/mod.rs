//! Batched, masked, log-domain entropic optimal transport (Sinkhorn).
//!
//! # Contract
//!
//! Input: a cost tensor `C` of shape `[b, n, m]` (f32; for otkd `C_ij = 1 - cos(h_t,i, h_s,j)`
//! between teacher token `i` and student token `j`), and per batch item `k` the number of real
//! rows `row_lengths[k] = n_k <= n` and real columns `col_lengths[k] = m_k <= m`. Padding is a
//! suffix: the real block of item `k` is `C[k, ..n_k, ..m_k]`. Padding entries of `C` are never
//! read, so they may hold anything (even NaN).
//!
//! Marginals are uniform over the real tokens, `a_i = 1/n_k`, `b_j = 1/m_k`. With potentials
//! `f`, `g` (starting at 0) each iteration does a row update then a column update:
//!
//! ```text
//! f_i = ε log a_i - ε LSE_j((g_j - C_ij)/ε)
//! g_j = ε log b_j - ε LSE_i((f_i - C_ij)/ε)
//! P_ij = exp((f_i + g_j - C_ij)/ε)
//! ```
//!
//! **Marginal error.** After a column update the column sums of `P` are exact (`Σ_i P_ij = b_j`
//! up to rounding), so the error is the L1 deviation of the row sums:
//! `err = Σ_i |Σ_j P_ij - a_i|` over the real rows, which lies in `[0, 2]`. It is measured after
//! every iteration; the solver stops after the first iteration with `err < tolerance`, or after
//! `max_iterations`. `tolerance = 0` therefore always runs exactly `max_iterations` iterations.
//! The returned plan is the one the error was measured on (the state after the last column
//! update).
//!
//! Output: the plan `[b, n, m]` with exact zeros outside each real block, and per item the
//! iterations used and the final marginal error. A batch item with zero real rows or zero real
//! columns (e.g. an empty translation) is not an error: its plan is all zeros, with 0 iterations
//! and error 0; the caller should leave it out of any per-item mean.
//!
//! Numerics: each log-sum-exp subtracts its maximum, potentials are kept scaled by `1/ε`, so
//! for costs in `[0, 2]` the solver is finite for ε down to 1e-3 (and below). Costs in the real
//! block must be finite.
//!
//! # Implementations
//!
//! - [`sinkhorn`]: the custom op (candle `CustomOp1` on the cost): one call returns the plan,
//!   the loss `Σ P ⊙ C` per item (differentiable in the cost, with the plan held constant), the
//!   marginal error and the iterations. On the CPU it runs [`cpu::sinkhorn_log_domain`], the
//!   reference (batch items on rayon); on a CUDA device (feature `cuda`) one fused kernel, one
//!   block per item (`kernels/cuda/sinkhorn.cu`). Other devices:
//!   [`KernelError::NoCudaImplementation`].
//! - [`sinkhorn_log_domain`]: the same solver returning the plan and host-side statistics
//!   ([`SinkhornPlan`]), the entry point the trainer used before the custom op.
//! - [`sinkhorn_log_domain_unrolled`]: the same maths from differentiable candle ops, with a
//!   fixed number of iterations, for backpropagating through the solver. It is also the
//!   "composed ops" twin the CUDA kernel is benchmarked against.

pub mod cpu;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::KernelError;
use crate::error::{InOp, expect_supported_device};

/// The name [`sinkhorn`] and [`sinkhorn_log_domain`] report in errors.
const OP: &str = "sinkhorn";
/// The name [`sinkhorn_log_domain_unrolled`] reports in errors.
const OP_UNROLLED: &str = "sinkhorn_unrolled";

/// Solver settings. [`Default`] is ε = 0.05, 100 iterations, tolerance 1e-3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornConfig {
    /// Entropic regularisation ε (> 0, finite), in cost units.
    pub epsilon: f32,
    /// Maximum number of (row update, column update) iterations (>= 1).
    pub max_iterations: u32,
    /// Stop once the marginal error (see the [module docs](self)) is below this (>= 0, finite;
    /// 0 = always run `max_iterations`). Ignored by [`sinkhorn_log_domain_unrolled`].
    pub tolerance: f32,
}

impl Default for SinkhornConfig {
    fn default() -> Self {
        Self { epsilon: 0.05, max_iterations: 100, tolerance: 1e-3 }
    }
}

impl SinkhornConfig {
    /// Checks every field's domain; the entry points call this first.
    pub fn validate(&self) -> Result<(), KernelError> {
        let bad = |field, reason| Err(KernelError::BadConfig { op: OP, field, reason });
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad("epsilon", "must be finite and > 0");
        }
        if self.max_iterations == 0 {
            return bad("max_iterations", "must be >= 1");
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return bad("tolerance", "must be finite and >= 0");
        }
        Ok(())
    }
}

/// The result of [`sinkhorn_log_domain`].
#[derive(Clone, Debug)]
pub struct SinkhornPlan {
    /// The transport plan, `[b, n, m]` f32 on the cost's device, not tracked for gradients
    /// (treat it as a constant: loss = `Σ P ⊙ C`). Exactly zero outside each real block.
    pub plan: Tensor,
    /// Iterations used per batch item (0 for an empty item).
    pub iterations: Vec<u32>,
    /// Final marginal error per batch item (see the [module docs](self); 0 for an empty item).
    pub marginal_error: Vec<f32>,
}

/// Finite stand-in for `-inf` in the masked logits of the unrolled solver: `exp` of it is 0 and
/// every gradient through it is 0, while sums of a few of them stay finite in f32.
const MASKED_LOGIT: f32 = -1e9;

/// Checks rank, dtype and lengths (errors name `op`); returns `(b, n, m)`.
fn check_inputs(
    cost: &Tensor,
    row_lengths: &[usize],
    col_lengths: &[usize],
    op: &'static str,
) -> Result<(usize, usize, usize), KernelError> {
    if cost.rank() != 3 {
        return Err(KernelError::ShapeMismatch { op, what: "cost rank", expected: 3, got: cost.rank() });
    }
    if cost.dtype() != DType::F32 {
        return Err(KernelError::UnsupportedDtype { op, dtype: cost.dtype() });
    }
    let (b, n, m) = cost.dims3().op(op)?;
    for (what, lengths, max) in [("row_lengths", row_lengths, n), ("col_lengths", col_lengths, m)] {
        if lengths.len() != b {
            let what = if what == "row_lengths" {
                "row_lengths.len() (batch size)"
            } else {
                "col_lengths.len() (batch size)"
            };
            return Err(KernelError::ShapeMismatch { op, what, expected: b, got: lengths.len() });
        }
        if let Some((item, &length)) = lengths.iter().enumerate().find(|&(_, &l)| l > max) {
            return Err(KernelError::LengthOutOfRange { op, what, item, length, max });
        }
    }
    Ok((b, n, m))
}

/// Statistics per item in the packed output of [`SinkhornOp`], after the plan: loss, marginal
/// error, iterations (`[3, b]`, row-major).
pub(crate) const STATISTICS: usize = 3;

/// The custom op behind [`sinkhorn`]. Input: the contiguous cost `[b, n, m]`. Output: one flat
/// f32 buffer `[b·n·m + 3·b]`: the plan, then per item the loss `Σ P ⊙ C`, the marginal error
/// and the iterations (whole numbers as f32). One buffer because a candle custom op has one
/// output; [`sinkhorn`] splits it into zero-copy views (every part starts at a contiguous
/// offset).
#[derive(Clone, Debug)]
pub(crate) struct SinkhornOp {
    /// `(b, n, m)`.
    pub(crate) shape: (usize, usize, usize),
    /// Real rows per item.
    pub(crate) row_lengths: Vec<u32>,
    /// Real columns per item.
    pub(crate) col_lengths: Vec<u32>,
    /// Solver settings (validated).
    pub(crate) config: SinkhornConfig,
}

impl SinkhornOp {
    /// Elements of the packed output.
    pub(crate) fn output_len(&self) -> usize {
        let (b, n, m) = self.shape;
        b * n * m + STATISTICS * b
    }
}

impl CustomOp1 for SinkhornOp {
    fn name(&self) -> &'static str {
        "otkd-sinkhorn"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let cost = crate::error::contiguous_f32(storage, layout, OP)?;
        let (b, n, m) = self.shape;
        let rows: Vec<usize> = self.row_lengths.iter().map(|&r| r as usize).collect();
        let cols: Vec<usize> = self.col_lengths.iter().map(|&c| c as usize).collect();
        let mut out = vec![0.0f32; self.output_len()];
        let (plan, statistics) = out.split_at_mut(b * n * m);
        let items = cpu::sinkhorn_log_domain(cost, self.shape, &rows, &cols, &self.config, plan);
        for (k, item) in items.iter().enumerate() {
            statistics[k] = item.loss;
            statistics[b + k] = item.marginal_error;
            statistics[2 * b + k] = item.iterations as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(self.output_len())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::sinkhorn_fwd(self, storage, layout)
    }

    /// The loss is `Σ P ⊙ C` with the plan held constant (the envelope gradient):
    /// `∂loss_k/∂C_k = P_k`. Gradients reaching the plan or the statistics are ignored:
    /// [`sinkhorn`] hands those out detached.
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, n, m) = self.shape;
        let plan = res.narrow(0, 0, b * n * m)?.reshape((b, n, m))?;
        let grad_loss = grad_res.narrow(0, b * n * m, b)?.reshape((b, 1, 1))?;
        Ok(Some(plan.broadcast_mul(&grad_loss)?))
    }
}

/// The result of [`sinkhorn`]: tensors on the cost's device (nothing is copied to the host).
#[derive(Clone, Debug)]
pub struct SinkhornOutput {
    /// The transport plan `[b, n, m]`, detached (a constant). Exactly zero outside each real
    /// block.
    pub plan: Tensor,
    /// `Σ_ij P_ij C_ij` per item, `[b]` (0 for an empty item). Differentiable in the cost with
    /// the plan held constant: `∂loss_k/∂C_k = P_k`.
    pub loss: Tensor,
    /// Final marginal error per item, `[b]`, detached (see the [module docs](self)).
    pub marginal_error: Tensor,
    /// Iterations used per item, `[b]`, detached; whole numbers stored as f32.
    pub iterations: Tensor,
    /// `[2·b]`: the marginal errors then the iterations, for one device-to-host copy.
    statistics: Tensor,
}

impl SinkhornOutput {
    /// Iterations and marginal errors per item, copied to the host in one transfer.
    pub fn statistics_to_host(&self) -> Result<(Vec<u32>, Vec<f32>), KernelError> {
        let values = self.statistics.to_vec1::<f32>().op(OP)?;
        let (errors, iterations) = values.split_at(values.len() / 2);
        Ok((iterations.iter().map(|&i| i as u32).collect(), errors.to_vec()))
    }
}

/// Solves the batched, masked OT problem (see the [module docs](self)) as one custom op, and
/// returns the plan, the loss per item (differentiable in `cost`), the marginal error and the
/// iterations, all on `cost`'s device.
///
/// `cost`: `[b, n, m]` f32 on any layout (a non-contiguous cost is copied once); it may be part
/// of a gradient graph. `row_lengths.len() == col_lengths.len() == b`, each `<= n` / `<= m`.
///
/// The trainer's OT term is `output.loss.sum_all() / nonempty_items`: the value and gradient of
/// `Σ P ⊙ C` with a detached plan, without another pass over the plan.
///
/// Checks config, shape, dtype, lengths and device first ([`KernelError::BadConfig`],
/// [`KernelError::ShapeMismatch`], [`KernelError::UnsupportedDtype`],
/// [`KernelError::LengthOutOfRange`], [`KernelError::NoCudaImplementation`]); every error names
/// the op `"sinkhorn"`.
pub fn sinkhorn(
    cost: &Tensor,
    row_lengths: &[usize],
    col_lengths: &[usize],
    config: &SinkhornConfig,
) -> Result<SinkhornOutput, KernelError> {
    config.validate()?;
    let (b, n, m) = check_inputs(cost, row_lengths, col_lengths, OP)?;
    expect_supported_device(cost, OP)?;
    // Lengths are <= n, m (checked), the extents of a tensor, so they fit u32 on every device.
    let to_u32 = |lengths: &[usize]| lengths.iter().map(|&l| l as u32).collect();
    let op = SinkhornOp {
        shape: (b, n, m),
        row_lengths: to_u32(row_lengths),
        col_lengths: to_u32(col_lengths),
        config: *config,
    };
    let plan_len = b * n * m;
    let split = || -> candle_core::Result<SinkhornOutput> {
        let packed = cost.contiguous()?.apply_op1(op)?;
        let statistics = packed.narrow(0, plan_len + b, 2 * b)?.detach();
        Ok(SinkhornOutput {
            plan: packed.narrow(0, 0, plan_len)?.reshape((b, n, m))?.detach(),
            loss: packed.narrow(0, plan_len, b)?,
            marginal_error: statistics.narrow(0, 0, b)?,
            iterations: statistics.narrow(0, b, b)?,
            statistics,
        })
    };
    split().op(OP)
}

/// Solves the batched, masked OT problem (see the [module docs](self)) and returns the plan,
/// iterations and marginal error per item: [`sinkhorn`] on a detached cost, with the
/// statistics copied to the host.
///
/// `cost`: `[b, n, m]` f32 on any layout; it may be part of a gradient graph, but the plan is
/// computed from its values and carries no gradient. Same checks and errors as [`sinkhorn`].
pub fn sinkhorn_log_domain(
    cost: &Tensor,
    row_lengths: &[usize],
    col_lengths: &[usize],
    config: &SinkhornConfig,
) -> Result<SinkhornPlan, KernelError> {
    let output = sinkhorn(&cost.detach(), row_lengths, col_lengths, config)?;
    let (iterations, marginal_error) = output.statistics_to_host()?;
    Ok(SinkhornPlan { plan: output.plan, iterations, marginal_error })
}

/// The same maths as [`sinkhorn_log_domain`], built from differentiable candle ops on the
/// cost's device, for the `--ot-unrolled` ablation: the returned `[b, n, m]` plan is part of the
/// gradient graph of `cost`.
///
/// Always runs exactly `config.max_iterations` iterations (the tolerance is ignored, so the
/// graph is fixed); it equals the reference run with `tolerance = 0` to ~1e-6. Masked logits
/// use a large finite negative value instead of `-inf` (via `where_cond`, so padding never
/// reaches the potentials), which keeps every gradient finite; padding entries of the plan are
/// exactly 0 and get zero gradient. Empty items give an all-zero plan. Same checks and errors as
/// [`sinkhorn_log_domain`].
///
/// The graph holds O(`max_iterations` · b · n · m) values; backward costs about twice the
/// forward.
pub fn sinkhorn_log_domain_unrolled(
    cost: &Tensor,
    row_lengths: &[usize],
    col_lengths: &[usize],
    config: &SinkhornConfig,
) -> Result<Tensor, KernelError> {
    config.validate()?;
    let (b, n, m) = check_inputs(cost, row_lengths, col_lengths, OP_UNROLLED)?;
    let device = cost.device();
    let composed = || -> candle_core::Result<Tensor> {
        let mut mask = vec![0u8; b * n * m];
        let mut log_a = vec![0.0f32; b * n];
        let mut log_b = vec![0.0f32; b * m];
        for (k, (&rows, &cols)) in row_lengths.iter().zip(col_lengths).enumerate() {
            if rows == 0 || cols == 0 {
                continue; // fully masked; log marginals stay 0 (finite)
            }
            for i in 0..rows {
                mask[(k * n + i) * m..(k * n + i) * m + cols].fill(1);
            }
            log_a[k * n..k * n + rows].fill(-(rows as f32).ln());
            log_b[k * m..k * m + cols].fill(-(cols as f32).ln());
        }
        let mask = Tensor::from_vec(mask, (b, n, m), device)?;
        let masked = Tensor::full(MASKED_LOGIT, (b, n, m), device)?;
        let log_a = Tensor::from_vec(log_a, (b, n, 1), device)?;
        let log_b = Tensor::from_vec(log_b, (b, 1, m), device)?;

        // Scaled potentials u = f/ε, v = g/ε; k = -C/ε.
        let k = cost.affine(-1.0 / f64::from(config.epsilon), 0.0)?;
        let mut u = Tensor::zeros((b, n, 1), DType::F32, device)?;
        let mut v = Tensor::zeros((b, 1, m), DType::F32, device)?;
        for _ in 0..config.max_iterations {
            let x = mask.where_cond(&k.broadcast_add(&v)?, &masked)?;
            u = (&log_a - lse_keepdim(&x, 2)?)?;
            let y = mask.where_cond(&k.broadcast_add(&u)?, &masked)?;
            v = (&log_b - lse_keepdim(&y, 1)?)?;
        }
        let logits = k.broadcast_add(&u)?.broadcast_add(&v)?;
        mask.where_cond(&logits, &masked)?.exp()
    };
    composed().op(OP_UNROLLED)
}

/// Log-sum-exp over `dim`, kept as a size-1 dim. The subtracted maximum is detached: its
/// gradient contributions cancel exactly, so this is the true LSE gradient (softmax).
fn lse_keepdim(x: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    x.broadcast_sub(&max)?.exp()?.sum_keepdim(dim)?.log()? + max
}
