//! Kernel benchmarks on a CUDA device (feature `cuda`): the fused custom ops against the same
//! maths as composed candle ops on the same device, and the Sinkhorn kernel's effective memory
//! bandwidth against a measured device-to-device copy. Prints one markdown table.
//!
//! `cargo bench -p otkd-kernels --features cuda --bench gpu` (called by scripts/gpu-check.sh).
//!
//! Each time is the median of `REPS` timed calls after `WARMUP` untimed ones, each call
//! synchronised. Two bandwidths for Sinkhorn, both against the measured copy bandwidth:
//! - "floor": the bytes one pass must move (read the cost once, write the plan once) / time;
//! - "sweeps": the bytes the algorithm reads (the cost twice per iteration, a row and a column
//!   sweep) plus the plan written, / time: what a kernel limited by memory traffic would reach
//!   (the kernel reads the sweeps from shared memory or L2, not HBM).

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use otkd_kernels::{
    KdTerm, SinkhornConfig, kd_loss, kd_loss_composed, sinkhorn, sinkhorn_log_domain_unrolled,
};

const WARMUP: usize = 3;
const REPS: usize = 20;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Median seconds of `f`, synchronising the device after each call.
fn time(device: &Device, reps: usize, mut f: impl FnMut() -> BenchResult<()>) -> BenchResult<f64> {
    for _ in 0..WARMUP {
        f()?;
    }
    device.synchronize()?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        samples.push(start.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Device-to-device copy bandwidth (bytes read + written per second) of a 1 GiB tensor.
fn copy_bandwidth(device: &Device) -> BenchResult<f64> {
    let elements = 256 << 20;
    let source = Tensor::zeros(elements, DType::F32, device)?;
    let seconds = time(device, 10, || {
        source.copy()?;
        Ok(())
    })?;
    Ok(2.0 * (elements * 4) as f64 / seconds)
}

fn random_tensor(shape: &[usize], lo: f32, hi: f32, seed: u64, device: &Device) -> BenchResult<Tensor> {
    let mut state = seed | 1;
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

fn main() -> BenchResult<()> {
    let device = match Device::new_cuda(0) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("gpu bench: no CUDA device ({e}); nothing measured");
            std::process::exit(2);
        }
    };
    let copy = copy_bandwidth(&device)?;
    println!("device-to-device copy: {:.0} GB/s (read + write)\n", copy / 1e9);
    println!(
        "| kernel | shape | fused (ms) | composed ops (ms) | fused speed-up | floor GB/s (% of copy) | sweeps GB/s (% of copy) |"
    );
    println!("|---|---|---|---|---|---|---|");

    let config = SinkhornConfig { epsilon: 0.05, max_iterations: 100, tolerance: 0.0 };
    for (b, n, m) in [(256usize, 64usize, 64usize), (64, 256, 256)] {
        let cost = random_tensor(&[b, n, m], 0.0, 2.0, 0x5eed ^ (b * n) as u64, &device)?;
        let (rows, cols) = (vec![n; b], vec![m; b]);
        let fused = time(&device, REPS, || {
            sinkhorn(&cost, &rows, &cols, &config)?;
            Ok(())
        })?;
        let composed = time(&device, 5, || {
            sinkhorn_log_domain_unrolled(&cost, &rows, &cols, &config)?;
            Ok(())
        })?;
        let matrix = (b * n * m * 4) as f64;
        let floor = 2.0 * matrix / fused;
        let sweeps = (2.0 * f64::from(config.max_iterations) + 1.0) * matrix / fused;
        println!(
            "| sinkhorn, 100 it | {b} x {n} x {m} | {:.3} | {:.3} | {:.1}x | {:.0} ({:.1}%) | {:.0} ({:.1}%) |",
            fused * 1e3,
            composed * 1e3,
            composed / fused,
            floor / 1e9,
            100.0 * floor / copy,
            sweeps / 1e9,
            100.0 * sweeps / copy
        );
    }

    let (b, d) = (64usize, 384usize);
    let student = Var::from_tensor(&random_tensor(&[b, d], -0.05, 0.05, 1, &device)?)?;
    let teacher = random_tensor(&[b, d], -0.05, 0.05, 2, &device)?;
    for term in [KdTerm::Mse, KdTerm::Kl { temperature: 0.05 }, KdTerm::InfoNce { temperature: 0.05 }] {
        let step = |loss: Tensor| -> BenchResult<()> {
            loss.backward()?;
            Ok(())
        };
        let fused = time(&device, REPS, || step(kd_loss(student.as_tensor(), &teacher, term)?))?;
        let composed = time(&device, REPS, || step(kd_loss_composed(student.as_tensor(), &teacher, term)?))?;
        println!(
            "| kd {term:?}, forward + backward | {b} x {d} | {:.3} | {:.3} | {:.1}x | - | - |",
            fused * 1e3,
            composed * 1e3,
            composed / fused
        );
    }
    Ok(())
}
