//! CPU reference of the fused KD losses: plain f32 slices, rows on rayon.
//!
//! The forward pass forms `Z = S Tᵀ/τ` (and `Y = T Tᵀ/τ` for Kl) once, then each row's
//! statistics; the backward pass forms them again (two `b x b` products are cheaper than
//! keeping them alive between passes) and reads the log-sum-exps from the forward output.
//! Exponentials and logarithms are `f32::exp`/`f32::ln`: `b x b` of them is small next to the
//! products.

use rayon::prelude::*;

use super::{INFONCE, KL, MSE, ROW_STATISTICS, Term};

/// `a · b`, in 8 independent partial sums so that the loop vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut partial = [0.0f32; LANES];
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (x, y) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for ((p, &x), &y) in partial.iter_mut().zip(x).zip(y) {
            *p += x * y;
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    partial.iter().sum::<f32>() + tail
}

/// `scale · X Yᵀ` for row-major `[b, d]` matrices: `[b, b]`, row-major.
fn scaled_products(x: &[f32], y: &[f32], (b, d): (usize, usize), scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; b * b];
    out.par_chunks_mut(b).zip(x.par_chunks(d)).for_each(|(row, xi)| {
        for (o, yj) in row.iter_mut().zip(y.chunks_exact(d)) {
            *o = dot(xi, yj) * scale;
        }
    });
    out
}

/// `log Σ exp(values)`, the maximum subtracted first; `values` is non-empty.
fn log_sum_exp(values: impl Iterator<Item = f32> + Clone) -> f32 {
    let max = values.clone().fold(f32::NEG_INFINITY, f32::max);
    max + values.map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// The packed forward output `[1 + 4·b]` (layout in [`super::KdForward`]).
pub(crate) fn forward(s: &[f32], t: &[f32], (b, d): (usize, usize), term: Term) -> Vec<f32> {
    let mut out = vec![0.0f32; 1 + ROW_STATISTICS * b];
    let z =
        if term.variant == MSE { Vec::new() } else { scaled_products(s, t, (b, d), term.inv_temperature) };
    let y = if term.variant == KL { scaled_products(t, t, (b, d), term.inv_temperature) } else { Vec::new() };
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
    out
}

/// `∂loss/∂S` for an upstream gradient of 1, `[b, d]` row-major, from the packed forward
/// output `forward`.
pub(crate) fn gradient(
    s: &[f32],
    t: &[f32],
    forward: &[f32],
    (b, d): (usize, usize),
    term: Term,
) -> Vec<f32> {
    let row_lse = &forward[1..1 + b];
    let col_lse = &forward[1 + b..1 + 2 * b];
    let target_lse = &forward[1 + 2 * b..1 + 3 * b];
    let z =
        if term.variant == MSE { Vec::new() } else { scaled_products(s, t, (b, d), term.inv_temperature) };
    let y = if term.variant == KL { scaled_products(t, t, (b, d), term.inv_temperature) } else { Vec::new() };
    let inv_b = 1.0 / b as f32;
    let mut grad = vec![0.0f32; b * d];
    grad.par_chunks_mut(d).enumerate().for_each(|(i, gi)| {
        let (si, ti) = (&s[i * d..(i + 1) * d], &t[i * d..(i + 1) * d]);
        for ((g, &a), &c) in gi.iter_mut().zip(si).zip(ti) {
            *g = 2.0 * (a - c) * inv_b;
        }
        if term.variant == MSE {
            return;
        }
        // δ_ij = ∂(b · loss)/∂Z_ij, then ∂loss/∂S_i = 1/(b τ) Σ_j δ_ij T_j.
        let zi = &z[i * b..(i + 1) * b];
        let q = zi.iter().map(|&zij| (zij - row_lse[i]).exp());
        let delta: Vec<f32> = if term.variant == KL {
            let p: Vec<f32> = y[i * b..(i + 1) * b].iter().map(|&yij| (yij - target_lse[i]).exp()).collect();
            let mass: f32 = p.iter().sum();
            q.zip(&p).map(|(q, &p)| q * mass - p).collect()
        } else {
            q.zip(zi)
                .enumerate()
                .map(|(j, (q, &zij))| {
                    let column = (zij - col_lse[j]).exp();
                    0.5 * (q + column) - if i == j { 1.0 } else { 0.0 }
                })
                .collect()
        };
        let scale = term.inv_temperature * inv_b;
        for (&dij, tj) in delta.iter().zip(t.chunks_exact(d)) {
            let w = dij * scale;
            for (g, &x) in gi.iter_mut().zip(tj) {
                *g += w * x;
            }
        }
    });
    grad
}
