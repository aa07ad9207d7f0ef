//! CPU reference of the fused KD losses: plain f32 slices, rows on rayon.
//!
//! The forward pass forms `Z = S Tᵀ/τ` (and `Y = T Tᵀ/τ` for Kl) once, then each row's
//! statistics; the backward pass forms them again (two `b x b` products are cheaper than
//! keeping them alive between passes), reads the log-sum-exps from the forward output, and
//! forms `∂loss/∂Z · T`. The three kinds of products go through candle's CPU matmul (gemm,
//! vectorised and threaded): written as plain loops they made the fused Kl loss 3x slower than
//! the composed ops. Exponentials and logarithms are `f32::exp`/`f32::ln`: `b x b` of them is
//! small next to the products.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{INFONCE, KL, MSE, ROW_STATISTICS, Term};

/// `scale · X Yᵀ` for row-major `[b, d]` matrices: `[b, b]`, row-major.
fn scaled_products(
    x: &[f32],
    y: &[f32],
    (b, d): (usize, usize),
    scale: f32,
) -> candle_core::Result<Vec<f32>> {
    let x = Tensor::from_slice(x, (b, d), &Device::Cpu)?;
    let y = Tensor::from_slice(y, (b, d), &Device::Cpu)?;
    (x.matmul(&y.t()?)? * f64::from(scale))?.flatten_all()?.to_vec1()
}

/// `log Σ exp(values)`, the maximum subtracted first; `values` is non-empty.
fn log_sum_exp(values: impl Iterator<Item = f32> + Clone) -> f32 {
    let max = values.clone().fold(f32::NEG_INFINITY, f32::max);
    max + values.map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// The packed forward output `[1 + 4·b]` (layout in [`super::KdForward`]).
pub(crate) fn forward(
    s: &[f32],
    t: &[f32],
    (b, d): (usize, usize),
    term: Term,
) -> candle_core::Result<Vec<f32>> {
    let mut out = vec![0.0f32; 1 + ROW_STATISTICS * b];
    let z =
        if term.variant == MSE { Vec::new() } else { scaled_products(s, t, (b, d), term.inv_temperature)? };
    let y =
        if term.variant == KL { scaled_products(t, t, (b, d), term.inv_temperature)? } else { Vec::new() };
    let rows: Vec<[f32; ROW_STATISTICS]> = (0..b)
        .into_par_iter()
        .map(|i| {
            let (si, ti) = (&s[i * d..(i + 1) * d], &t[i * d..(i + 1) * d]);
            let mut loss: f32 = si.iter().zip(ti).map(|(a, b)| (a - b) * (a - b)).sum();
            let (mut row_lse, mut col_lse, mut target_lse) = (0.0, 0.0, 0.0);
            if term.variant != MSE {
                let zi = &z[i * b..(i + 1) * b];
                row_lse = log_sum_exp(zi.iter().copied());
                if term.variant == KL {
                    let yi = &y[i * b..(i + 1) * b];
                    target_lse = log_sum_exp(yi.iter().copied());
                    loss += yi
                        .iter()
                        .zip(zi)
                        .map(|(&yij, &zij)| {
                            let p = (yij - target_lse).exp();
                            p * ((p + 1e-12).ln() - (zij - row_lse))
                        })
                        .sum::<f32>();
                }
                if term.variant == INFONCE {
                    col_lse = log_sum_exp((0..b).map(|j| z[j * b + i]));
                    let diagonal = zi[i];
                    loss += 0.5 * ((row_lse - diagonal) + (col_lse - diagonal));
                }
            }
            [row_lse, col_lse, target_lse, loss]
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        for (statistic, &value) in row.iter().enumerate() {
            out[1 + statistic * b + i] = value;
        }
    }
    out[0] = rows.iter().map(|row| row[3]).sum::<f32>() / b as f32;
    Ok(out)
}

/// `∂loss/∂S` for an upstream gradient of 1, `[b, d]` row-major, from the packed forward
/// output `forward`.
pub(crate) fn gradient(
    s: &[f32],
    t: &[f32],
    forward: &[f32],
    (b, d): (usize, usize),
    term: Term,
) -> candle_core::Result<Vec<f32>> {
    let inv_b = 1.0 / b as f32;
    let mse: Vec<f32> = s.iter().zip(t).map(|(a, c)| 2.0 * (a - c) * inv_b).collect();
    if term.variant == MSE {
        return Ok(mse);
    }
    let row_lse = &forward[1..1 + b];
    let col_lse = &forward[1 + b..1 + 2 * b];
    let target_lse = &forward[1 + 2 * b..1 + 3 * b];
    let z = scaled_products(s, t, (b, d), term.inv_temperature)?;
    let y =
        if term.variant == KL { scaled_products(t, t, (b, d), term.inv_temperature)? } else { Vec::new() };
    // δ_ij = ∂(b · loss)/∂Z_ij, row by row; then ∂loss/∂S = 2 (S − T)/b + 1/(b τ) δ T.
    let mut delta = vec![0.0f32; b * b];
    delta.par_chunks_mut(b).enumerate().for_each(|(i, delta_i)| {
        let zi = &z[i * b..(i + 1) * b];
        let q = zi.iter().map(|&zij| (zij - row_lse[i]).exp());
        if term.variant == KL {
            let p: Vec<f32> = y[i * b..(i + 1) * b].iter().map(|&yij| (yij - target_lse[i]).exp()).collect();
            let mass: f32 = p.iter().sum();
            for ((dij, q), &p) in delta_i.iter_mut().zip(q).zip(&p) {
                *dij = q * mass - p;
            }
        } else {
            for (j, ((dij, q), &zij)) in delta_i.iter_mut().zip(q).zip(zi).enumerate() {
                let column = (zij - col_lse[j]).exp();
                *dij = 0.5 * (q + column) - if i == j { 1.0 } else { 0.0 };
            }
        }
    });
    let delta = Tensor::from_vec(delta, (b, b), &Device::Cpu)?;
    let teacher = Tensor::from_slice(t, (b, d), &Device::Cpu)?;
    let through_z = (delta.matmul(&teacher)? * f64::from(term.inv_temperature * inv_b))?;
    let mse = Tensor::from_vec(mse, (b, d), &Device::Cpu)?;
    (mse + through_z)?.flatten_all()?.to_vec1()
}
