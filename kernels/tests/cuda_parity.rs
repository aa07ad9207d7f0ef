//! The CUDA kernels against the CPU reference (feature `cuda`; each test is skipped, with a
//! message, when no CUDA device can be opened, unless `OTKD_REQUIRE_CUDA=1`, as the GPU bundle's
//! `run.sh` sets: then it fails, so a machine whose GPU cannot be opened cannot pass silently). Fresh random inputs every run (the seed is
//! printed), and every output buffer starts as NaN ([`poison_outputs`]) so that an element a
//! kernel failed to write shows up.
//!
//! Relative error = max |gpu − cpu| / max |cpu| over a tensor (norm-wise, ∞-norm), <= 1e-5.
#![cfg(feature = "cuda")]

use candle_core::{Device, Tensor, Var};
use otkd_kernels::cuda::poison_outputs;
use otkd_kernels::{KdTerm, SinkhornConfig, kd_loss, sinkhorn};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOLERANCE: f32 = 1e-5;

fn cuda_device() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => {
            poison_outputs(true);
            Some(device)
        }
        Err(e) => {
            let required = std::env::var("OTKD_REQUIRE_CUDA").is_ok_and(|v| v == "1");
            assert!(!required, "OTKD_REQUIRE_CUDA=1 but no CUDA device could be opened: {e}");
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// A seed from the clock, printed so that a failure can be replayed.
fn fresh_seed(what: &str) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
    let seed = (nanos as u64) | 1;
    eprintln!("{what}: seed {seed:#x}");
    seed
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn below(&mut self, k: usize) -> usize {
        (self.uniform(0.0, k as f32) as usize).min(k - 1)
    }
}

fn to_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()
}

fn relative_error(gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len());
    let scale = cpu.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    gpu.iter().zip(cpu).fold(0.0f32, |m, (g, c)| m.max((g - c).abs())) / scale
}

fn all_written(name: &str, values: &[f32]) {
    let nan = values.iter().filter(|v| v.is_nan()).count();
    assert_eq!(nan, 0, "{name}: {nan} of {} elements never written (still NaN)", values.len());
}

#[test]
fn sinkhorn_matches_the_cpu_reference() -> TestResult {
    let Some(gpu) = cuda_device() else { return Ok(()) };
    let mut rng = Rng(fresh_seed("sinkhorn"));
    // Shared-memory path (64 x 64, and odd sizes), global-memory path (256 x 256, 300 x 170).
    for (b, n, m) in [(256, 64, 64), (33, 17, 29), (64, 256, 256), (7, 300, 170)] {
        let cost: Vec<f32> = (0..b * n * m).map(|_| rng.uniform(0.0, 2.0)).collect();
        // Full items, random lengths, and empty ones.
        let rows: Vec<usize> = (0..b)
            .map(|k| {
                if k % 5 == 0 {
                    n
                } else if k % 11 == 3 {
                    0
                } else {
                    1 + rng.below(n)
                }
            })
            .collect();
        let cols: Vec<usize> = (0..b).map(|k| if k % 5 == 0 { m } else { 1 + rng.below(m) }).collect();
        for config in [
            SinkhornConfig { epsilon: 0.05, max_iterations: 100, tolerance: 0.0 },
            SinkhornConfig { epsilon: 0.1, max_iterations: 500, tolerance: 1e-3 },
        ] {
            let cpu_out =
                sinkhorn(&Tensor::from_slice(&cost, (b, n, m), &Device::Cpu)?, &rows, &cols, &config)?;
            let gpu_out = sinkhorn(&Tensor::from_slice(&cost, (b, n, m), &gpu)?, &rows, &cols, &config)?;
            let case = format!("b={b} n={n} m={m} {config:?}");
            let (gpu_plan, cpu_plan) = (to_vec(&gpu_out.plan)?, to_vec(&cpu_out.plan)?);
            let (gpu_loss, cpu_loss) = (to_vec(&gpu_out.loss)?, to_vec(&cpu_out.loss)?);
            let (gpu_error, cpu_error) = (to_vec(&gpu_out.marginal_error)?, to_vec(&cpu_out.marginal_error)?);
            let (gpu_iterations, cpu_iterations) =
                (to_vec(&gpu_out.iterations)?, to_vec(&cpu_out.iterations)?);
            for (name, values) in [
                ("plan", &gpu_plan),
                ("loss", &gpu_loss),
                ("error", &gpu_error),
                ("iterations", &gpu_iterations),
            ] {
                all_written(&format!("{case} {name}"), values);
            }
            let plan_error = relative_error(&gpu_plan, &cpu_plan);
            let loss_error = relative_error(&gpu_loss, &cpu_loss);
            eprintln!("{case}: plan rel. error {plan_error:.2e}, loss rel. error {loss_error:.2e}");
            assert!(plan_error <= TOLERANCE, "{case}: plan rel. error {plan_error}");
            assert!(loss_error <= TOLERANCE, "{case}: loss rel. error {loss_error}");
            for k in 0..b {
                // A marginal error at the tolerance can stop one side an iteration earlier.
                let steps = (gpu_iterations[k] - cpu_iterations[k]).abs();
                assert!(
                    steps <= 1.0,
                    "{case} item {k}: iterations {} vs {}",
                    gpu_iterations[k],
                    cpu_iterations[k]
                );
                if steps == 0.0 {
                    assert!((gpu_error[k] - cpu_error[k]).abs() <= 1e-5, "{case} item {k}: marginal error");
                }
                if config.tolerance > 0.0 && gpu_iterations[k] < config.max_iterations as f32 {
                    assert!(gpu_error[k] < config.tolerance, "{case} item {k}: stopped above tolerance");
                }
                // Columns of the GPU plan are exact after its last column update.
                if rows[k] > 0 {
                    for j in 0..cols[k] {
                        let column: f32 = (0..rows[k]).map(|i| gpu_plan[(k * n + i) * m + j]).sum();
                        let want = 1.0 / cols[k] as f32;
                        assert!(
                            (column - want).abs() <= 1e-4 * want.max(1e-2),
                            "{case} item {k} col {j}: {column}"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn kd_loss_matches_the_cpu_reference() -> TestResult {
    let Some(gpu) = cuda_device() else { return Ok(()) };
    let mut rng = Rng(fresh_seed("kd"));
    for (b, d) in [(64, 384), (5, 13), (300, 96)] {
        let mut unit = || -> candle_core::Result<Vec<f32>> {
            let raw: Vec<f32> = (0..b * d).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let t = Tensor::from_vec(raw, (b, d), &Device::Cpu)?;
            to_vec(&t.broadcast_div(&t.sqr()?.sum_keepdim(1)?.sqrt()?)?)
        };
        let (student, teacher) = (unit()?, unit()?);
        for term in [KdTerm::Mse, KdTerm::Kl { temperature: 0.05 }, KdTerm::InfoNce { temperature: 0.05 }] {
            let mut results = Vec::new();
            for device in [&Device::Cpu, &gpu] {
                let s = Var::from_slice(&student, (b, d), device)?;
                let t = Tensor::from_slice(&teacher, (b, d), device)?;
                let loss = kd_loss(s.as_tensor(), &t, term)?;
                let grad = loss.backward()?.get(s.as_tensor()).expect("student gradient").clone();
                results.push((to_vec(&loss)?, to_vec(&grad)?));
            }
            let case = format!("b={b} d={d} {term:?}");
            all_written(&format!("{case} loss"), &results[1].0);
            all_written(&format!("{case} gradient"), &results[1].1);
            let loss_error = relative_error(&results[1].0, &results[0].0);
            let grad_error = relative_error(&results[1].1, &results[0].1);
            eprintln!("{case}: loss rel. error {loss_error:.2e}, gradient rel. error {grad_error:.2e}");
            assert!(loss_error <= TOLERANCE && grad_error <= TOLERANCE, "{case}");
        }
    }
    Ok(())
}
