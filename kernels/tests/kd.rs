//! The fused KD losses against the trainer's definitions (`host/src/losses.rs`, written here
//! again with candle and candle-nn ops), forward and gradient, to 1e-5; the composed twin
//! likewise; and the named errors.

use candle_core::{D, Device, Tensor, Var};
use otkd_kernels::{KdTerm, KernelError, kd_loss, kd_loss_composed};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The trainer's `kd_loss` (host/src/losses.rs), verbatim but for the enum.
fn trainer_kd_loss(
    student_x: &Tensor,
    teacher_en: &Tensor,
    english: Option<(&Tensor, f64)>,
    term: KdTerm,
) -> candle_core::Result<Tensor> {
    let squared = |s: &Tensor| -> candle_core::Result<Tensor> { (s - teacher_en)?.sqr()?.sum(1)?.mean(0) };
    let mut mse = squared(student_x)?;
    if let Some((student_en, weight)) = english {
        mse = (mse + (squared(student_en)? * weight)?)?;
    }
    match term {
        KdTerm::Mse => Ok(mse),
        KdTerm::Kl { temperature } => {
            let temperature = f64::from(temperature);
            let target =
                candle_nn::ops::softmax(&(teacher_en.matmul(&teacher_en.t()?)? / temperature)?, D::Minus1)?;
            let logits = (student_x.matmul(&teacher_en.t()?)? / temperature)?;
            let log_q = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let log_p = (target.clone() + 1e-12)?.log()?;
            let kl = (target * (log_p - log_q)?)?.sum(1)?.mean(0)?;
            mse + kl
        }
        KdTerm::InfoNce { temperature } => {
            let logits = (student_x.matmul(&teacher_en.t()?)? / f64::from(temperature))?;
            let n = logits.dim(0)?;
            let targets = Tensor::arange(0u32, n as u32, logits.device())?;
            let forward = candle_nn::loss::cross_entropy(&logits, &targets)?;
            let backward = candle_nn::loss::cross_entropy(&logits.t()?, &targets)?;
            mse + ((forward + backward)? * 0.5)?
        }
    }
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

/// Relative to the larger of 1 and the reference's magnitude.
fn relative(diff: f32, reference: &Tensor) -> candle_core::Result<f32> {
    let scale = reference.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    Ok(diff / scale)
}

#[test]
fn fused_and_composed_equal_the_trainers_loss_and_gradient() -> TestResult {
    // The trainer's batch (64 x 384, the teacher's width) and a small odd one.
    for (b, d, seed) in [(64, 384, 1), (5, 13, 7)] {
        let teacher = unit_rows(seed, b, d)?;
        let student = Var::from_tensor(&unit_rows(seed + 100, b, d)?)?;
        for term in TERMS {
            let reference = trainer_kd_loss(student.as_tensor(), &teacher, None, term)?;
            let reference_grad = reference.backward()?.get(student.as_tensor()).expect("grad").clone();
            for (name, loss) in [
                ("fused", kd_loss(student.as_tensor(), &teacher, term)?),
                ("composed", kd_loss_composed(student.as_tensor(), &teacher, term)?),
            ] {
                assert_eq!(loss.dims(), &[] as &[usize], "{name}: a scalar");
                let error = relative(max_abs_diff(&loss, &reference)?, &reference)?;
                assert!(error <= 1e-5, "{name} {term:?} b={b}: loss error {error}");
                let grad = loss.backward()?.get(student.as_tensor()).expect("grad").clone();
                let error = relative(max_abs_diff(&grad, &reference_grad)?, &reference_grad)?;
                assert!(error <= 1e-5, "{name} {term:?} b={b}: gradient error {error}");
            }
        }
    }
    Ok(())
}

#[test]
fn the_english_term_is_a_weighted_mse_call() -> TestResult {
    let (b, d) = (16, 32);
    let teacher = unit_rows(3, b, d)?;
    let student_x = unit_rows(4, b, d)?;
    let student_en = unit_rows(5, b, d)?;
    let term = KdTerm::InfoNce { temperature: 0.05 };
    let reference = trainer_kd_loss(&student_x, &teacher, Some((&student_en, 0.7)), term)?;
    let fused =
        (kd_loss(&student_x, &teacher, term)? + (kd_loss(&student_en, &teacher, KdTerm::Mse)? * 0.7)?)?;
    let error = relative(max_abs_diff(&fused, &reference)?, &reference)?;
    assert!(error <= 1e-5, "loss error {error}");
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
