//! CPU reference of the batched, masked, log-domain Sinkhorn solver.
//!
//! This is the ground truth for every other implementation (the unrolled candle version and,
//! later, CUDA). It works on plain `f32` slices; batch items run in parallel on rayon.
//!
//! Internally the potentials are kept scaled by `1/ε` (`u = f/ε`, `v = g/ε`), against the scaled
//! negative cost `k = -C/ε` of the real block. Each iteration is
//!
//! ```text
//! u_i = log a_i - LSE_j(v_j + k_ij)      (row update,    f = ε u)
//! v_j = log b_j - LSE_i(u_i + k_ij)      (column update, g = ε v)
//! ```
//!
//! with `a_i = 1/n_b`, `b_j = 1/m_b`. Every log-sum-exp subtracts its maximum first.
//!
//! Performance: the item's `k` is kept twice, row-major and transposed (inner stride padded to
//! `LANES`), so both updates are sweeps whose inner loops run element-wise over contiguous
//! memory (one max pass, one sum pass, no horizontal reduction); `exp` is `exp_f32`, a
//! branch-free Cephes-style polynomial (relative error < 3e-7 against `f32::exp`, exactly 0
//! below the f32 range), so those loops vectorise. Sums are accumulated in `f32` (each term is in
//! `[0, 1]`, at most a few hundred terms). Scratch buffers are per rayon job and reused across
//! items; nothing is allocated inside the iteration loop. The marginal error costs no extra
//! pass: the row log-sum-exp that the next row update needs also gives the current row sums,
//! `r_i = exp(u_i + LSE_j(v_j + k_ij))`.

use rayon::prelude::*;

use super::SinkhornConfig;

/// What the solver reports for one batch item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemResult {
    /// Iterations used (0 for an empty item).
    pub iterations: u32,
    /// Final marginal error (see [`super`]; 0 for an empty item).
    pub marginal_error: f32,
    /// The transport cost `Σ_ij P_ij C_ij` over the real block (0 for an empty item).
    pub loss: f32,
}

/// Solves every batch item of `cost` (row-major `[b, n, m]`, `shape = (b, n, m)`) and writes the
/// plans into `plan` (same layout). Returns iterations, marginal error and loss per batch item.
///
/// Item `k` uses only its real block `cost[k, ..row_lengths[k], ..col_lengths[k]]`; padding
/// entries of `cost` are never read (they may hold NaN), and padding entries of `plan` are set
/// to exactly `0.0`. An item with zero real rows or columns gets an all-zero plan and zeros.
/// The marginal error is the one defined in [`super`] (row L1 deviation after a column update).
///
/// # Panics
///
/// Caller bugs only (the public [`super::sinkhorn_log_domain`] checks all of them first):
/// `cost.len()` or `plan.len()` is not `b * n * m`, a lengths slice is not `b` long, a length
/// exceeds `n` / `m`, or `config` fails [`SinkhornConfig::validate`].
pub fn sinkhorn_log_domain(
    cost: &[f32],
    shape: (usize, usize, usize),
    row_lengths: &[usize],
    col_lengths: &[usize],
    config: &SinkhornConfig,
    plan: &mut [f32],
) -> Vec<ItemResult> {
    let (b, n, m) = shape;
    let item = n * m;
    assert_eq!(cost.len(), b * item, "cost.len() must be b * n * m");
    assert_eq!(plan.len(), b * item, "plan.len() must be b * n * m");
    assert_eq!(row_lengths.len(), b, "row_lengths.len() must be b");
    assert_eq!(col_lengths.len(), b, "col_lengths.len() must be b");
    assert!(
        row_lengths.iter().all(|&r| r <= n) && col_lengths.iter().all(|&c| c <= m),
        "row/col lengths must not exceed n/m"
    );
    if let Err(e) = config.validate() {
        panic!("invalid SinkhornConfig: {e}");
    }
    if item == 0 {
        // Every item is empty; there is no plan entry to write.
        return vec![EMPTY; b];
    }
    plan.par_chunks_mut(item)
        .zip(cost.par_chunks(item))
        .zip(row_lengths.par_iter().zip(col_lengths.par_iter()))
        .map_init(Scratch::default, |scratch, ((plan, cost), (&rows, &cols))| {
            let item = Item { cost, m, rows, cols, config };
            solve_item(&item, plan, scratch)
        })
        .collect()
}

/// The result of an item without real rows or columns.
const EMPTY: ItemResult = ItemResult { iterations: 0, marginal_error: 0.0, loss: 0.0 };

/// Vector width the scratch strides are padded to: the baseline x86-64 (SSE2) loop vectoriser
/// runs 2 x 4 lanes per step, so inner lengths that are multiples of 8 leave no scalar tail.
/// (A 256-bit AVX2 build was slower for these short rows: its 32-lane steps fall into the tail.)
const LANES: usize = 8;

/// Per-thread buffers, grown to the largest item seen and reused.
#[derive(Default)]
struct Scratch {
    /// `k = -C/ε`, real block, row-major `[rows, cols]` with row stride `cols` rounded up to
    /// [`LANES`].
    k: Vec<f32>,
    /// The same, transposed `[cols, rows]`, row stride `rows` rounded up to [`LANES`].
    kt: Vec<f32>,
    u: Vec<f32>,
    v: Vec<f32>,
    row_lse: Vec<f32>,
    col_lse: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

fn resize(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.clear();
    buffer.resize(len, 0.0);
    buffer
}

/// One batch item: `cost` is its `[n, m]` slice (row stride `m`), `rows x cols` the real block.
struct Item<'a> {
    cost: &'a [f32],
    m: usize,
    rows: usize,
    cols: usize,
    config: &'a SinkhornConfig,
}

/// Solves one batch item into its `[n, m]` `plan` slice.
fn solve_item(item: &Item<'_>, plan: &mut [f32], scratch: &mut Scratch) -> ItemResult {
    let Item { cost, m, rows, cols, config } = *item;
    plan.fill(0.0);
    if rows == 0 || cols == 0 {
        return EMPTY;
    }
    let inv_eps = 1.0 / config.epsilon;
    // Inner strides rounded up to whole vector lanes; the extra lanes hold k = 0 and compute
    // finite values that are never read, so the inner loops have no scalar remainder.
    let (row_stride, col_stride) = (rows.next_multiple_of(LANES), cols.next_multiple_of(LANES));
    let k = resize(&mut scratch.k, rows * col_stride);
    let kt = resize(&mut scratch.kt, cols * row_stride);
    for i in 0..rows {
        for j in 0..cols {
            let kij = -cost[i * m + j] * inv_eps;
            k[i * col_stride + j] = kij;
            kt[j * row_stride + i] = kij;
        }
    }
    let (k, kt) = (&*k, &*kt);
    let u = resize(&mut scratch.u, rows);
    let v = resize(&mut scratch.v, cols);
    let row_lse = resize(&mut scratch.row_lse, row_stride);
    let col_lse = resize(&mut scratch.col_lse, col_stride);
    let len = row_stride.max(col_stride);
    let max = resize(&mut scratch.max, len);
    let sum = resize(&mut scratch.sum, len);

    let a = 1.0 / rows as f32;
    let log_a = -(rows as f32).ln();
    let log_b = -(cols as f32).ln();
    let mut iterations = 0u32;
    let error = loop {
        // LSE_j(v_j + k_ij) for the current v: the next row update needs it, and it also gives
        // the row sums of the current plan, r_i = exp(u_i + row_lse_i), for free.
        lse_sweep(kt, v, row_lse, &mut max[..row_stride], &mut sum[..row_stride]);
        if iterations > 0 {
            let error: f32 = u.iter().zip(row_lse.iter()).map(|(&u, &l)| (exp_f32(u + l) - a).abs()).sum();
            if error < config.tolerance || iterations >= config.max_iterations {
                break error;
            }
        }
        for (u, &l) in u.iter_mut().zip(row_lse.iter()) {
            *u = log_a - l;
        }
        lse_sweep(k, u, col_lse, &mut max[..col_stride], &mut sum[..col_stride]);
        for (v, &l) in v.iter_mut().zip(col_lse.iter()) {
            *v = log_b - l;
        }
        iterations += 1;
    };

    // P_ij = exp(u_i + v_j + k_ij) on the real block (padding stays 0), and Σ P_ij C_ij.
    let mut loss = 0.0f32;
    for (i, &ui) in u.iter().enumerate() {
        let out = &mut plan[i * m..i * m + cols];
        for ((p, &vj), &kij) in out.iter_mut().zip(v.iter()).zip(&k[i * col_stride..]) {
            *p = exp_f32(ui + vj + kij);
        }
        loss += out.iter().zip(&cost[i * m..i * m + cols]).map(|(p, c)| p * c).sum::<f32>();
    }
    ItemResult { iterations, marginal_error: error, loss }
}

/// `out[x] = LSE_o(pot[o] + mat[o * inner + x])` for a row-major `mat` of shape
/// `[pot.len(), inner]` (`inner = out.len()`, a multiple of [`LANES`]), swept along `o` so the
/// inner loops are
/// element-wise over contiguous `x`. `pot` is non-empty.
#[inline(always)]
fn lse_sweep(mat: &[f32], pot: &[f32], out: &mut [f32], max: &mut [f32], sum: &mut [f32]) {
    let inner = out.len();
    debug_assert!(inner.is_multiple_of(LANES));
    let rows = mat.chunks_exact(inner).zip(pot);
    max.fill(f32::NEG_INFINITY);
    for (row, &p) in rows.clone() {
        for (mx, &x) in max.iter_mut().zip(row) {
            *mx = max_f32(*mx, p + x);
        }
    }
    sum.fill(0.0);
    for (row, &p) in rows {
        for ((s, &mx), &x) in sum.iter_mut().zip(max.iter()).zip(row) {
            *s += exp_f32(p + x - mx);
        }
    }
    for ((o, &mx), &s) in out.iter_mut().zip(max.iter()).zip(sum.iter()) {
        *o = mx + s.ln();
    }
}

/// `max` for non-NaN inputs, as a plain compare-select (`f32::max` adds NaN handling that
/// costs extra instructions per lane).
#[inline(always)]
fn max_f32(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `exp(x)` for finite `x`, branch-free so that loops over it vectorise: Cephes `expf` range
/// reduction `x = n ln 2 + r`, a degree-6 polynomial in `r`, and `2^n` built from its bits.
/// Relative error < 3e-7 against `f32::exp`; inputs below `ln(f32::MIN_POSITIVE)` (≈ -87.3)
/// give exactly 0, and inputs above 88.7 are clamped (not reached by the solver, whose
/// exponents are <= ~0).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const MIN_X: f32 = -87.336_55;
    const MAX_X: f32 = 88.376_26;
    let xc = max_f32(x, MIN_X);
    let xc = if xc < MAX_X { xc } else { MAX_X };
    // t = n + 1.5 * 2^23 exactly, so its bits are 0x4B40_0000 + n (two's complement in the low
    // 22 bits): integer ops give 2^n without a float -> int conversion.
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    let scale = f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(0x4B40_0000)) << 23);
    if x < MIN_X { 0.0 } else { y * scale }
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_matches_std() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_f32(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
            x += 1.37e-3;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-88.0), 0.0);
        assert_eq!(exp_f32(-1e9), 0.0);
        assert!(exp_f32(88.3).is_finite() && exp_f32(1e9).is_finite());
    }
}
