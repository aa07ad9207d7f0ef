//! The two distillation losses (definitions in DESIGN.md).
//!
//! - **KD** (Reimers & Gurevych 2020): `w‖S(en) − T(en)‖² + ‖S(x) − T(en)‖²` per pair (squared L2
//!   distance of the normalised sentence embeddings, averaged over the batch; `w` = 1 in the
//!   paper, a flag here). Variants add an in-batch term: similarity KL or InfoNCE, both at a
//!   temperature.
//! - **OT** (OPTICAL-style): cost `C_ij = 1 − cos(t_i, s_j)` between the teacher's English token
//!   states and the student's word states for language X; the entropic plan `P*` from
//!   log-domain Sinkhorn is held constant, loss = `Σ P* ⊙ C` per pair, averaged; plus λ × the KD
//!   term so both methods share a retrieval head. `--ot-unrolled` backpropagates through the
//!   Sinkhorn iterations instead.

use candle_core::{D, Tensor};
use otkd_kernels::{KdTerm, KernelError, SinkhornConfig, sinkhorn, sinkhorn_log_domain_unrolled};
use serde::{Deserialize, Serialize};

/// Training method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Optimal-transport token alignment + λ × KD.
    Ot,
    /// Teacher-student KD on sentence embeddings.
    Kd,
}

/// The sentence-level KD term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KdVariant {
    /// Embedding MSE only.
    Mse,
    /// MSE + KL(softmax(T·Tᵀ/τ) ‖ softmax(S(x)·Tᵀ/τ)) over the batch.
    Kl,
    /// MSE + InfoNCE of S(x) against T(en) over the batch, both directions.
    Infonce,
}

/// Loss settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// OT or KD.
    pub method: Method,
    /// The KD term.
    pub kd_variant: KdVariant,
    /// Temperature of the KL and InfoNCE variants.
    pub temperature: f64,
    /// Weight `w` of the English term `‖S(en) − T(en)‖²` of KD (0: the student never sees
    /// English, and the step skips the English forward pass).
    pub english_weight: f64,
    /// Weight λ of the KD term in the OT loss.
    pub ot_kd_weight: f64,
    /// Sinkhorn ε.
    pub epsilon: f32,
    /// Sinkhorn iteration cap.
    pub sinkhorn_iterations: u32,
    /// Sinkhorn marginal-error tolerance.
    pub sinkhorn_tolerance: f32,
    /// Backpropagate through the Sinkhorn iterations (ablation).
    pub ot_unrolled: bool,
}

impl LossConfig {
    /// The Sinkhorn settings.
    pub fn sinkhorn(&self) -> SinkhornConfig {
        SinkhornConfig {
            epsilon: self.epsilon,
            max_iterations: self.sinkhorn_iterations,
            tolerance: self.sinkhorn_tolerance,
        }
    }
}

/// One step's loss and its parts.
pub struct LossValue {
    /// What is minimised.
    pub total: Tensor,
    /// The KD term's value.
    pub kd: f32,
    /// The OT term's value (OT only).
    pub ot: Option<f32>,
    /// Mean Sinkhorn iterations over the batch (OT only).
    pub sinkhorn_iterations: Option<f32>,
    /// Largest final marginal error over the batch (OT only).
    pub sinkhorn_marginal_error: Option<f32>,
}

/// KD on sentence embeddings `[b, d]` (all L2-normalised); `english` is the student's English
/// embeddings and their weight, `None` for no English term. One fused kernel per term
/// ([`otkd_kernels::kd_loss`]: forward and backward in one op).
pub fn kd_loss(
    student_x: &Tensor,
    teacher_en: &Tensor,
    english: Option<(&Tensor, f64)>,
    variant: KdVariant,
    temperature: f64,
) -> Result<Tensor, KernelError> {
    let temperature = temperature as f32;
    let term = match variant {
        KdVariant::Mse => KdTerm::Mse,
        KdVariant::Kl => KdTerm::Kl { temperature },
        KdVariant::Infonce => KdTerm::InfoNce { temperature },
    };
    let x = otkd_kernels::kd_loss(student_x, teacher_en, term)?;
    match english {
        None => Ok(x),
        Some((student_en, weight)) => {
            let en = otkd_kernels::kd_loss(student_en, teacher_en, KdTerm::Mse)?;
            let combined = || -> candle_core::Result<Tensor> { x + (en * weight)? };
            combined().map_err(|source| KernelError::Candle { op: "kd", source })
        }
    }
}

/// Cosine cost `1 − cos` between `[b, n, d]` teacher and `[b, m, d]` student states: `[b, n, m]`.
pub fn cosine_cost(teacher: &Tensor, student: &Tensor) -> candle_core::Result<Tensor> {
    let unit = |x: &Tensor| -> candle_core::Result<Tensor> {
        // sqrt(|x|² + 1e-12), not |x| + eps: the square root's gradient at an all-zero row
        // (padding, or a fresh student's empty word) would be infinite.
        x.broadcast_div(&(x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?)
    };
    let similarity = unit(teacher)?.matmul(&unit(student)?.transpose(1, 2)?.contiguous()?)?;
    similarity.affine(-1.0, 1.0)
}

/// `Σ P ⊙ C` per item, averaged over the items that have tokens on both sides.
pub fn transport_cost(plan: &Tensor, cost: &Tensor, nonempty_items: usize) -> candle_core::Result<Tensor> {
    (plan * cost)?.sum_all()? / nonempty_items.max(1) as f64
}

/// The OT term and the solver's statistics.
pub struct OtTerm {
    /// `Σ P ⊙ C`, averaged over non-empty items.
    pub loss: Tensor,
    /// Iterations per item.
    pub iterations: Vec<u32>,
    /// Final marginal error per item.
    pub marginal_error: Vec<f32>,
}

/// OT distillation between padded teacher states `[b, n, d]` (`teacher_lengths` real rows) and
/// student states `[b, m, d]` (`student_lengths` real rows).
pub fn ot_term(
    teacher: &Tensor,
    teacher_lengths: &[usize],
    student: &Tensor,
    student_lengths: &[usize],
    config: &LossConfig,
) -> anyhow::Result<OtTerm> {
    let cost = cosine_cost(teacher, student)?;
    let nonempty = teacher_lengths.iter().zip(student_lengths).filter(|(a, b)| **a > 0 && **b > 0).count();
    let solver = config.sinkhorn();
    if config.ot_unrolled {
        let plan = sinkhorn_log_domain_unrolled(&cost, teacher_lengths, student_lengths, &solver)?;
        let loss = transport_cost(&plan, &cost, nonempty)?;
        // The statistics of the same fixed number of iterations, from the kernel (its plan equals
        // the unrolled one to ~1e-6).
        let fixed = SinkhornConfig { tolerance: 0.0, ..solver };
        let (iterations, marginal_error) =
            sinkhorn(&cost.detach(), teacher_lengths, student_lengths, &fixed)?.statistics_to_host()?;
        return Ok(OtTerm { loss, iterations, marginal_error });
    }
    let solved = sinkhorn(&cost, teacher_lengths, student_lengths, &solver)?;
    let loss = (solved.loss.sum_all()? / nonempty.max(1) as f64)?;
    let (iterations, marginal_error) = solved.statistics_to_host()?;
    Ok(OtTerm { loss, iterations, marginal_error })
}

/// The OT term's value, solver statistics and gradient with respect to the student's states.
pub struct OtGradient {
    /// `Σ P ⊙ C`, averaged over non-empty items.
    pub loss: f32,
    /// `[b, m, d]`: the gradient of `loss` with respect to the student's states.
    pub grad: Vec<f32>,
    /// Iterations per item.
    pub iterations: Vec<u32>,
    /// Final marginal error per item.
    pub marginal_error: Vec<f32>,
}

/// [`ot_term`] (plan held constant) computed by hand, with its gradient, on row-major buffers:
/// teacher `[b, n, d]`, student `[b, m, d]`. The same maths as the candle ops (unit rows by
/// `sqrt(|x|² + 1e-12)`, `C = 1 − t̂·ŝ`, Sinkhorn on `C`), without a graph: with the plan
/// constant, `∂L/∂ŝ_j = −Σ_i P_ij t̂_i / items` and `∂L/∂s_j = (g − ŝ_j (ŝ_j·g)) / N_j`.
#[allow(clippy::too_many_arguments)]
pub fn ot_term_with_gradient(
    teacher: &[f32],
    teacher_lengths: &[usize],
    student: &[f32],
    student_lengths: &[usize],
    (n, m, d): (usize, usize, usize),
    config: &LossConfig,
) -> anyhow::Result<OtGradient> {
    use rayon::prelude::*;
    let b = teacher_lengths.len();
    anyhow::ensure!(teacher.len() == b * n * d && student.len() == b * m * d, "ot term: shapes");
    let unit = |x: &[f32]| -> (Vec<f32>, Vec<f32>) {
        let norms: Vec<f32> =
            x.chunks_exact(d).map(|r| (r.iter().map(|v| v * v).sum::<f32>() + 1e-12).sqrt()).collect();
        let mut u = x.to_vec();
        u.chunks_exact_mut(d).zip(&norms).for_each(|(r, &s)| r.iter_mut().for_each(|v| *v /= s));
        (u, norms)
    };
    let (t_hat, _) = unit(teacher);
    let (s_hat, s_norm) = unit(student);
    let mut cost = vec![0f32; b * n * m];
    cost.par_chunks_mut(n * m).enumerate().for_each(|(k, c)| {
        crate::linalg::matmul(
            c,
            &t_hat[k * n * d..(k + 1) * n * d],
            false,
            &s_hat[k * m * d..(k + 1) * m * d],
            true,
            n,
            d,
            m,
            false,
        );
        c.iter_mut().for_each(|v| *v = 1.0 - *v);
    });
    let nonempty = teacher_lengths.iter().zip(student_lengths).filter(|(a, b)| **a > 0 && **b > 0).count();
    let cost_tensor = Tensor::from_slice(&cost, (b, n, m), &candle_core::Device::Cpu)?;
    let solved = sinkhorn(&cost_tensor, teacher_lengths, student_lengths, &config.sinkhorn())?;
    let plan = solved.plan.flatten_all()?.to_vec1::<f32>()?;
    let (iterations, marginal_error) = solved.statistics_to_host()?;
    let items = nonempty.max(1) as f32;
    let loss = plan.iter().zip(&cost).map(|(p, c)| p * c).sum::<f32>() / items;
    let mut grad = vec![0f32; b * m * d];
    grad.par_chunks_mut(m * d).enumerate().for_each(|(k, g)| {
        // g_hat[j] = −Σ_i P_ij t̂_i / items: Pᵀ T̂, scaled.
        crate::linalg::matmul(
            g,
            &plan[k * n * m..(k + 1) * n * m],
            true,
            &t_hat[k * n * d..(k + 1) * n * d],
            false,
            m,
            n,
            d,
            false,
        );
        for (j, row) in g.chunks_exact_mut(d).enumerate() {
            let s = &s_hat[(k * m + j) * d..(k * m + j + 1) * d];
            let norm = s_norm[k * m + j];
            row.iter_mut().for_each(|v| *v *= -1.0 / items);
            let dot = row.iter().zip(s).map(|(a, b)| a * b).sum::<f32>();
            row.iter_mut().zip(s).for_each(|(v, &u)| *v = (*v - u * dot) / norm);
        }
    });
    Ok(OtGradient { loss, grad, iterations, marginal_error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn random(seed: u64, shape: &[usize]) -> Vec<f32> {
        crate::rng::SplitMix64::new(seed, "loss-test").normal_vec(shape.iter().product(), 1.0)
    }

    /// Central finite differences of `f` at `x` against candle's gradient, on every element.
    fn check_gradient(x: &[f32], shape: &[usize], f: impl Fn(&Tensor) -> Tensor) {
        let var = Var::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap();
        let grads = f(var.as_tensor()).backward().unwrap();
        let analytic: Vec<f32> =
            grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-2f32;
        for i in 0..x.len() {
            let eval = |delta: f32| {
                let mut y = x.to_vec();
                y[i] += delta;
                let t = Tensor::from_vec(y, shape, &Device::Cpu).unwrap();
                f64::from(f(&t).to_scalar::<f32>().unwrap())
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * f64::from(h));
            let a = f64::from(analytic[i]);
            assert!(
                (a - numeric).abs() <= 2e-2 * (1.0 + numeric.abs()),
                "element {i}: analytic {a}, numeric {numeric}"
            );
        }
    }

    fn unit_rows(v: Vec<f32>, rows: usize, dim: usize) -> Tensor {
        let t = Tensor::from_vec(v, (rows, dim), &Device::Cpu).unwrap();
        t.broadcast_div(&t.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap()
    }

    #[test]
    fn kd_gradients_match_finite_differences() {
        let (b, d) = (3, 5);
        let teacher = unit_rows(random(1, &[b, d]), b, d);
        let student_en = unit_rows(random(2, &[b, d]), b, d);
        for variant in [KdVariant::Mse, KdVariant::Kl, KdVariant::Infonce] {
            check_gradient(&random(3, &[b, d]), &[b, d], |x| {
                kd_loss(x, &teacher, Some((&student_en, 0.7)), variant, 0.5).unwrap()
            });
        }
    }

    #[test]
    fn kd_mse_is_zero_at_the_teacher_and_positive_elsewhere() {
        let t = unit_rows(random(4, &[4, 6]), 4, 6);
        let zero =
            kd_loss(&t, &t, Some((&t, 1.0)), KdVariant::Mse, 0.05).unwrap().to_scalar::<f32>().unwrap();
        assert!(zero.abs() < 1e-6);
        let s = unit_rows(random(5, &[4, 6]), 4, 6);
        let value =
            |english| kd_loss(&s, &t, english, KdVariant::Mse, 0.05).unwrap().to_scalar::<f32>().unwrap();
        let (x_only, both) = (value(None), value(Some((&s, 1.0))));
        assert!(x_only > 0.1 && (both - 2.0 * x_only).abs() < 1e-5, "x only {x_only}, both {both}");
    }

    #[test]
    fn ot_gradient_with_the_plan_held_constant_matches_finite_differences() {
        let (b, n, m, d) = (2, 3, 4, 5);
        let teacher = Tensor::from_vec(random(6, &[b, n, d]), (b, n, d), &Device::Cpu).unwrap();
        let student = random(7, &[b, m, d]);
        let student_t = Tensor::from_vec(student.clone(), (b, m, d), &Device::Cpu).unwrap();
        let cost = cosine_cost(&teacher, &student_t).unwrap();
        let plan = sinkhorn(&cost, &[3, 2], &[4, 3], &SinkhornConfig::default()).unwrap().plan;
        check_gradient(&student, &[b, m, d], |s| {
            transport_cost(&plan, &cosine_cost(&teacher, s).unwrap(), 2).unwrap()
        });
    }

    #[test]
    fn hand_written_ot_gradient_matches_candle_autograd() {
        let (b, n, m, d) = (3, 4, 5, 6);
        let teacher = random(12, &[b, n, d]);
        let student = random(13, &[b, m, d]);
        let (tl, sl) = ([4, 2, 0], [5, 3, 2]);
        let config = LossConfig {
            method: Method::Ot,
            kd_variant: KdVariant::Mse,
            temperature: 0.05,
            english_weight: 0.0,
            ot_kd_weight: 1.0,
            epsilon: 0.05,
            sinkhorn_iterations: 100,
            sinkhorn_tolerance: 1e-3,
            ot_unrolled: false,
        };
        let fast = ot_term_with_gradient(&teacher, &tl, &student, &sl, (n, m, d), &config).unwrap();
        let t = Tensor::from_vec(teacher, (b, n, d), &Device::Cpu).unwrap();
        let s = Var::from_vec(student, (b, m, d), &Device::Cpu).unwrap();
        let slow = ot_term(&t, &tl, s.as_tensor(), &sl, &config).unwrap();
        let grads = slow.loss.backward().unwrap();
        let want: Vec<f32> = grads.get(s.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let value = slow.loss.to_scalar::<f32>().unwrap();
        assert!((fast.loss - value).abs() < 1e-5 * (1.0 + value.abs()), "{} vs {value}", fast.loss);
        assert_eq!(fast.iterations, slow.iterations);
        let diff = fast.grad.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-5 * scale, "max difference {diff} (largest gradient {scale})");
    }

    #[test]
    fn unrolled_ot_gradient_matches_finite_differences() {
        let (b, n, m, d) = (1, 3, 3, 4);
        let teacher = Tensor::from_vec(random(8, &[b, n, d]), (b, n, d), &Device::Cpu).unwrap();
        let config = SinkhornConfig { epsilon: 0.5, max_iterations: 20, tolerance: 0.0 };
        check_gradient(&random(9, &[b, m, d]), &[b, m, d], |s| {
            let cost = cosine_cost(&teacher, s).unwrap();
            let plan = sinkhorn_log_domain_unrolled(&cost, &[3], &[3], &config).unwrap();
            transport_cost(&plan, &cost, 1).unwrap()
        });
    }

    #[test]
    fn aligned_tokens_cost_less_than_shuffled_ones() {
        let (n, d) = (4, 8);
        let t = random(10, &[n, d]);
        let teacher = Tensor::from_vec(t.clone(), (1, n, d), &Device::Cpu).unwrap();
        let mut shuffled = t.clone();
        shuffled.rotate_left(d);
        let config = LossConfig {
            method: Method::Ot,
            kd_variant: KdVariant::Mse,
            temperature: 0.05,
            english_weight: 1.0,
            ot_kd_weight: 1.0,
            epsilon: 0.05,
            sinkhorn_iterations: 200,
            sinkhorn_tolerance: 1e-4,
            ot_unrolled: false,
        };
        // The same tokens in another order: OT aligns them, so the cost stays near zero.
        let permuted = Tensor::from_vec(shuffled, (1, n, d), &Device::Cpu).unwrap();
        let aligned = ot_term(&teacher, &[n], &permuted, &[n], &config).unwrap();
        let other = Tensor::from_vec(random(11, &[n, d]), (1, n, d), &Device::Cpu).unwrap();
        let unrelated = ot_term(&teacher, &[n], &other, &[n], &config).unwrap();
        let (a, u) = (aligned.loss.to_scalar::<f32>().unwrap(), unrelated.loss.to_scalar::<f32>().unwrap());
        assert!(a < 0.1 && u > 0.5, "aligned {a}, unrelated {u}");
        assert!(aligned.marginal_error[0] < 1e-4);
    }
}
