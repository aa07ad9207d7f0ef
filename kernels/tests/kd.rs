//! The fused KD losses against their composed-ops twin (`kd_loss_composed`), forward and
//! gradient, to 1e-5; both against the contract's formulas (the `kd` module docs) written out in
//! f64 loops, the gradient by central differences of that f64 loss; and the named errors.

use candle_core::{Device, Tensor, Var};
use otkd_kernels::{KdTerm, KernelError, kd_loss, kd_loss_composed};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The loss `term` of `student` against `teacher` (`[b, d]` row-major) as the contract states it,
/// in f64: `mse`, plus the in-batch KL (`p_i = softmax(T_i Tᵀ/τ)`, `q_i = softmax(S_i Tᵀ/τ)`) or
/// the two-way InfoNCE.
fn contract_loss(student: &[f64], teacher: &[f64], d: usize, term: KdTerm) -> f64 {
    let b = student.len() / d;
    fn row(m: &[f64], d: usize, i: usize) -> &[f64] {
        &m[i * d..(i + 1) * d]
    }
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(x, y)| x * y).sum::<f64>();
    let log_softmax = |v: &[f64]| -> Vec<f64> {
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        v.iter().map(|x| x - log_sum).collect()
    };
    let mse = (0..b)
        .map(|i| {
            row(student, d, i).iter().zip(row(teacher, d, i)).map(|(s, t)| (s - t) * (s - t)).sum::<f64>()
        })
        .sum::<f64>()
        / b as f64;
    // z[i][j] = S_i · T_j / τ
    let logits = |temperature: f32| -> Vec<Vec<f64>> {
        let tau = f64::from(temperature);
        (0..b).map(|i| (0..b).map(|j| dot(row(student, d, i), row(teacher, d, j)) / tau).collect()).collect()
    };
    match term {
        KdTerm::Mse => mse,
        KdTerm::Kl { temperature } => {
            let z = logits(temperature);
            let tau = f64::from(temperature);
            let kl = (0..b)
                .map(|i| {
                    let y: Vec<f64> =
                        (0..b).map(|j| dot(row(teacher, d, i), row(teacher, d, j)) / tau).collect();
                    let p: Vec<f64> = log_softmax(&y).into_iter().map(f64::exp).collect();
                    let log_q = log_softmax(&z[i]);
                    p.iter().zip(&log_q).map(|(p, lq)| p * ((p + 1e-12).ln() - lq)).sum::<f64>()
                })
                .sum::<f64>();
            mse + kl / b as f64
        }
        KdTerm::InfoNce { temperature } => {
            let z = logits(temperature);
            let rows: f64 = (0..b).map(|i| -log_softmax(&z[i])[i]).sum();
            let columns: f64 =
                (0..b).map(|j| -log_softmax(&(0..b).map(|i| z[i][j]).collect::<Vec<_>>())[j]).sum();
            mse + 0.5 * (rows + columns) / b as f64
        }
    }
}

/// `∂ contract_loss / ∂ student` by central differences (step 1e-5: the truncation error is
/// ~1e-10 times the third derivative, far below the f32 results' error).
fn contract_gradient(student: &[f64], teacher: &[f64], d: usize, term: KdTerm) -> Vec<f64> {
    const STEP: f64 = 1e-5;
    let mut moved = student.to_vec();
    (0..student.len())
        .map(|k| {
            moved[k] = student[k] + STEP;
            let up = contract_loss(&moved, teacher, d, term);
            moved[k] = student[k] - STEP;
            let down = contract_loss(&moved, teacher, d, term);
            moved[k] = student[k];
            (up - down) / (2.0 * STEP)
        })
        .collect()
}

fn f64s(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

/// The largest difference of `got` and `want`, relative to the larger of 1 and `want`'s
/// largest magnitude.
fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1f64, |m, w| m.max(w.abs()));
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max) / scale
}

/// `rows` L2-normalised rows of width `dim` from a xorshift stream.
fn unit_rows(seed: u64, rows: usize, dim: usize) -> candle_core::Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..rows * dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let t = Tensor::from_vec(values, (rows, dim), &Device::Cpu)?;
    t.broadcast_div(&t.sqr()?.sum_keepdim(1)?.sqrt()?)
}

const TERMS: [KdTerm; 5] = [
    KdTerm::Mse,
    KdTerm::Kl { temperature: 0.05 },
    KdTerm::Kl { temperature: 0.5 },
    KdTerm::InfoNce { temperature: 0.05 },
    KdTerm::InfoNce { temperature: 0.5 },
];

fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// [`kd_loss`] or [`kd_loss_composed`].
type KdLoss = fn(&Tensor, &Tensor, KdTerm) -> Result<Tensor, KernelError>;

/// `(loss, ∂loss/∂student)` of one implementation, as f64s.
fn loss_and_gradient(
    loss: KdLoss,
    student: &Var,
    teacher: &Tensor,
    term: KdTerm,
) -> Result<(f64, Vec<f64>), Box<dyn std::error::Error>> {
    let value = loss(student.as_tensor(), teacher, term)?;
    assert_eq!(value.dims(), &[] as &[usize], "a scalar");
    let gradient = value.backward()?.get(student.as_tensor()).expect("a gradient").clone();
    Ok((f64::from(value.to_scalar::<f32>()?), f64s(&gradient)?))
}

#[test]
fn fused_equals_composed_in_loss_and_gradient() -> TestResult {
    // The trainer's batch (64 x 384, the teacher's width) and a small odd one.
    for (b, d, seed) in [(64, 384, 1), (5, 13, 7)] {
        let teacher = unit_rows(seed, b, d)?;
        let student = Var::from_tensor(&unit_rows(seed + 100, b, d)?)?;
        for term in TERMS {
            let (fused, fused_gradient) = loss_and_gradient(kd_loss, &student, &teacher, term)?;
            let (composed, composed_gradient) =
                loss_and_gradient(kd_loss_composed, &student, &teacher, term)?;
            let error = relative_error(&[fused], &[composed]);
            assert!(error <= 1e-5, "{term:?} b={b}: loss {fused} vs composed {composed}, error {error}");
            let error = relative_error(&fused_gradient, &composed_gradient);
            assert!(error <= 1e-5, "{term:?} b={b}: gradient error {error}");
        }
    }
    Ok(())
}

#[test]
fn both_equal_the_contracts_formulas_in_f64() -> TestResult {
    for (b, d, seed) in [(64, 384, 1), (5, 13, 7)] {
        let teacher = unit_rows(seed, b, d)?;
        let student = Var::from_tensor(&unit_rows(seed + 100, b, d)?)?;
        let (s, t) = (f64s(student.as_tensor())?, f64s(&teacher)?);
        for term in TERMS {
            let want = contract_loss(&s, &t, d, term);
            // Central differences cost 2·b·d losses: only on the small batch.
            let want_gradient = (b * d < 100).then(|| contract_gradient(&s, &t, d, term));
            for (name, loss) in [("fused", kd_loss as KdLoss), ("composed", kd_loss_composed)] {
                let (got, gradient) = loss_and_gradient(loss, &student, &teacher, term)?;
                let error = relative_error(&[got], &[want]);
                assert!(error <= 1e-5, "{name} {term:?} b={b}: loss {got} vs {want}, error {error}");
                if let Some(want_gradient) = &want_gradient {
                    let error = relative_error(&gradient, want_gradient);
                    assert!(error <= 1e-5, "{name} {term:?} b={b}: gradient error {error}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn loss_scales_the_upstream_gradient_and_teacher_gets_none() -> TestResult {
    let (b, d) = (8, 16);
    let teacher = Var::from_tensor(&unit_rows(11, b, d)?)?;
    let student = Var::from_tensor(&unit_rows(12, b, d)?)?;
    let term = KdTerm::Kl { temperature: 0.1 };
    let once = kd_loss(student.as_tensor(), teacher.as_tensor(), term)?;
    let grads = (once.clone() * 3.0)?.backward()?;
    let scaled = grads.get(student.as_tensor()).expect("student grad").clone();
    assert!(grads.get(teacher.as_tensor()).is_none(), "the teacher is a constant");
    let plain = once.backward()?.get(student.as_tensor()).expect("student grad").clone();
    assert!(max_abs_diff(&scaled, &(plain * 3.0)?)? < 1e-6);
    Ok(())
}

#[test]
fn bad_inputs_are_named_errors() -> TestResult {
    let s = unit_rows(1, 4, 8)?;
    let wide = unit_rows(2, 4, 9)?;
    for run in [kd_loss, kd_loss_composed] {
        let err = run(&s, &wide, KdTerm::Mse).expect_err("shape");
        assert!(matches!(err, KernelError::ShapeMismatch { op: "kd_loss", .. }), "{err}");
        let err = run(&s.to_dtype(candle_core::DType::F64)?, &s, KdTerm::Mse).expect_err("dtype");
        assert!(matches!(err, KernelError::UnsupportedDtype { op: "kd_loss", .. }), "{err}");
        for temperature in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let err = run(&s, &s, KdTerm::InfoNce { temperature }).expect_err("temperature");
            assert!(
                matches!(err, KernelError::BadConfig { op: "kd_loss", field: "temperature", .. }),
                "{err}"
            );
        }
        let err = run(&s.reshape((2, 2, 8))?, &s, KdTerm::Mse).expect_err("rank");
        assert!(matches!(err, KernelError::ShapeMismatch { what: "student rank", .. }), "{err}");
        let empty = Tensor::zeros((0, 8), candle_core::DType::F32, &Device::Cpu)?;
        assert!(run(&empty, &empty, KdTerm::Mse).is_err());
    }
    assert!(kd_loss(&s, &s, KdTerm::Mse)?.to_scalar::<f32>()?.abs() < 1e-7);
    Ok(())
}
