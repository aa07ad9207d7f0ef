//! CPU timings of the KD losses, forward + backward, at the trainer's batch (64 x 384): the
//! fused op against the same maths as composed candle ops (what the trainer ran before).
//! Alternated ABAB; each side: the best of its two rounds, each round a median of 200 calls.
//!
//! `cargo bench -p otkd-kernels --bench kd` (release profile).

mod common;

use std::hint::black_box;

use candle_core::{Device, Tensor, Var};
use common::{BenchResult, median_ms};
use otkd_kernels::{KdTerm, kd_loss, kd_loss_composed};

fn main() -> BenchResult {
    let (b, d) = (64usize, 384usize);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut unit = || -> candle_core::Result<Tensor> {
        let values: Vec<f32> = (0..b * d)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let t = Tensor::from_vec(values, (b, d), &Device::Cpu)?;
        t.broadcast_div(&t.sqr()?.sum_keepdim(1)?.sqrt()?)
    };
    let student = Var::from_tensor(&unit()?)?;
    let teacher = unit()?;
    let reps = 200;
    for term in [KdTerm::Mse, KdTerm::Kl { temperature: 0.05 }, KdTerm::InfoNce { temperature: 0.05 }] {
        let (mut fused, mut composed) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            fused.push(median_ms(reps, || {
                black_box(kd_loss(student.as_tensor(), &teacher, term)?.backward()?);
                Ok(())
            })?);
            composed.push(median_ms(reps, || {
                black_box(kd_loss_composed(student.as_tensor(), &teacher, term)?.backward()?);
                Ok(())
            })?);
        }
        let best = |samples: &[f64]| samples.iter().copied().fold(f64::MAX, f64::min);
        let (f, c) = (best(&fused), best(&composed));
        println!(
            "kd {term:?} b={b} d={d} forward+backward: fused {f:.3} ms, composed {c:.3} ms ({:.1}x)",
            c / f
        );
    }
    Ok(())
}
