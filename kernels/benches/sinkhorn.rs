//! Times one training-step-sized Sinkhorn call: b = 64, n = 16, m = 14, exactly 100 iterations
//! (tolerance 0), through the CPU reference and the tensor entry point.
//!
//! `cargo bench -p otkd-kernels --bench sinkhorn` (release profile).

use std::hint::black_box;
use std::time::Instant;

use candle_core::{Device, Tensor};
use otkd_kernels::{SinkhornConfig, sinkhorn::cpu, sinkhorn_log_domain};

fn main() {
    let (b, n, m) = (64usize, 16usize, 14usize);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let cost: Vec<f32> = (0..b * n * m)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0
        })
        .collect();
    // Realistic padding: lengths vary per item.
    let rows: Vec<usize> = (0..b).map(|k| n - k % 5).collect();
    let cols: Vec<usize> = (0..b).map(|k| m - k % 4).collect();
    let config = SinkhornConfig { tolerance: 0.0, ..SinkhornConfig::default() };
    let mut plan = vec![0.0f32; b * n * m];

    let reps = 200;
    for _ in 0..10 {
        cpu::sinkhorn_log_domain(&cost, (b, n, m), &rows, &cols, &config, &mut plan);
    }
    let start = Instant::now();
    for _ in 0..reps {
        black_box(cpu::sinkhorn_log_domain(black_box(&cost), (b, n, m), &rows, &cols, &config, &mut plan));
    }
    let per_call = start.elapsed().as_secs_f64() * 1e3 / f64::from(reps);
    println!("cpu::sinkhorn_log_domain  b={b} n={n} m={m} 100 it: {per_call:.3} ms/call");

    let tensor = Tensor::from_vec(cost, (b, n, m), &Device::Cpu).expect("cost tensor");
    let start = Instant::now();
    for _ in 0..reps {
        black_box(sinkhorn_log_domain(&tensor, &rows, &cols, &config).expect("sinkhorn"));
    }
    let per_call = start.elapsed().as_secs_f64() * 1e3 / f64::from(reps);
    println!("sinkhorn_log_domain (tensor) b={b} n={n} m={m} 100 it: {per_call:.3} ms/call");
}
