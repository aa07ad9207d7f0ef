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
//! - [`cpu::sinkhorn_log_domain`]: the reference, on `f32` slices, batch items on rayon.
//! - [`sinkhorn_log_domain`]: the checked tensor entry point; dispatches on the device (CPU:
//!   the reference; anything else: [`KernelError::NoCudaImplementation`] until the CUDA issue).
//! - [`sinkhorn_log_domain_unrolled`]: the same maths from differentiable candle ops, with a
//!   fixed number of iterations, for backpropagating through the solver.

pub mod cpu;

use candle_core::{DType, Device, Tensor};

use crate::KernelError;

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
        let bad = |field, reason| Err(KernelError::BadConfig { field, reason });
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

/// Checks rank, dtype and lengths; returns `(b, n, m)`.
fn check_inputs(
    cost: &Tensor,
    row_lengths: &[usize],
    col_lengths: &[usize],
) -> Result<(usize, usize, usize), KernelError> {
    if cost.rank() != 3 {
        return Err(KernelError::ShapeMismatch { what: "cost rank", expected: 3, got: cost.rank() });
    }
    if cost.dtype() != DType::F32 {
        return Err(KernelError::UnsupportedDtype { dtype: cost.dtype() });
    }
    let (b, n, m) = cost.dims3()?;
    for (what, lengths, max) in [("row_lengths", row_lengths, n), ("col_lengths", col_lengths, m)] {
        if lengths.len() != b {
            let what = if what == "row_lengths" {
                "row_lengths.len() (batch size)"
            } else {
                "col_lengths.len() (batch size)"
            };
            return Err(KernelError::ShapeMismatch { what, expected: b, got: lengths.len() });
        }
        if let Some((item, &length)) = lengths.iter().enumerate().find(|&(_, &l)| l > max) {
            return Err(KernelError::LengthOutOfRange { what, item, length, max });
        }
    }
    Ok((b, n, m))
}

/// Solves the batched, masked OT problem (see the [module docs](self)) and returns the plan,
/// iterations and marginal error per item.
///
/// `cost`: `[b, n, m]` f32 on any layout (a non-contiguous cost is copied once); it may be part
/// of a gradient graph, but the plan is computed from its values and carries no gradient.
/// `row_lengths.len() == col_lengths.len() == b`, each `<= n` / `<= m`.
///
/// Checks config, shape, dtype and lengths first ([`KernelError::BadConfig`],
/// [`KernelError::ShapeMismatch`], [`KernelError::UnsupportedDtype`],
/// [`KernelError::LengthOutOfRange`]), then dispatches on `cost.device()`: CPU runs
/// [`cpu::sinkhorn_log_domain`]; any other device is [`KernelError::NoCudaImplementation`].
pub fn sinkhorn_log_domain(
    cost: &Tensor,
    row_lengths: &[usize],
    col_lengths: &[usize],
    config: &SinkhornConfig,
) -> Result<SinkhornPlan, KernelError> {
    config.validate()?;
    let (b, n, m) = check_inputs(cost, row_lengths, col_lengths)?;
    match cost.device() {
        Device::Cpu => {
            let values = cost.flatten_all()?.to_vec1::<f32>()?;
            let mut plan = vec![0.0f32; b * n * m];
            let per_item =
                cpu::sinkhorn_log_domain(&values, (b, n, m), row_lengths, col_lengths, config, &mut plan);
            let (iterations, marginal_error) = per_item.into_iter().unzip();
            let plan = Tensor::from_vec(plan, (b, n, m), cost.device())?;
            Ok(SinkhornPlan { plan, iterations, marginal_error })
        }
        _ => Err(KernelError::NoCudaImplementation { op: "sinkhorn_log_domain" }),
    }
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
    let (b, n, m) = check_inputs(cost, row_lengths, col_lengths)?;
    let device = cost.device();

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
    Ok(mask.where_cond(&logits, &masked)?.exp()?)
}

/// Log-sum-exp over `dim`, kept as a size-1 dim. The subtracted maximum is detached: its
/// gradient contributions cancel exactly, so this is the true LSE gradient (softmax).
fn lse_keepdim(x: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    x.broadcast_sub(&max)?.exp()?.sum_keepdim(dim)?.log()? + max
}
