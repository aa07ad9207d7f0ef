//! CPU Sinkhorn timings.
//!
//! Without arguments: one training-step-sized call, b = 64, n = 16, m = 14, exactly 100
//! iterations (tolerance 0), through the CPU reference and through the custom op.
//!
//! With `--inputs DIR` (used by `scripts/pot-bench.py`): for every `DIR/cost-B-N-M.f32` (raw
//! little-endian f32, `[B, N, M]`), solves it with ε = `--epsilon` (default 0.05) and exactly
//! `--iterations` (default 100) iterations through the custom op, prints
//! `otkd B N M <median ms>` over `--reps` calls (default 20), and writes the plan to
//! `DIR/otkd-plan-B-N-M.f32`.
//!
//! `cargo bench -p otkd-kernels --bench sinkhorn [-- --inputs DIR]` (release profile).

mod common;

use std::hint::black_box;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{BenchResult, median_ms};
use otkd_kernels::{SinkhornConfig, sinkhorn, sinkhorn::cpu};

fn training_step_shape() -> BenchResult {
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
    let per_call = median_ms(reps, || {
        black_box(cpu::sinkhorn_log_domain(black_box(&cost), (b, n, m), &rows, &cols, &config, &mut plan));
        Ok(())
    })?;
    println!("cpu::sinkhorn_log_domain  b={b} n={n} m={m} 100 it: {per_call:.3} ms/call (median of {reps})");
    let tensor = Tensor::from_vec(cost, (b, n, m), &Device::Cpu)?;
    let per_call = median_ms(reps, || {
        black_box(sinkhorn(&tensor, &rows, &cols, &config)?);
        Ok(())
    })?;
    println!("sinkhorn (custom op)      b={b} n={n} m={m} 100 it: {per_call:.3} ms/call (median of {reps})");
    Ok(())
}

fn solve_inputs(dir: &Path, config: &SinkhornConfig, reps: usize) -> BenchResult {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cost-") && n.ends_with(".f32"))
        })
        .collect();
    files.sort();
    for path in files {
        let stem = path.file_stem().and_then(|s| s.to_str()).ok_or("bad file name")?;
        let dims: Vec<usize> =
            stem.trim_start_matches("cost-").split('-').map(str::parse).collect::<Result<_, _>>()?;
        let [b, n, m] = dims[..] else { return Err(format!("{stem}: expected cost-B-N-M").into()) };
        let bytes = std::fs::read(&path)?;
        let values: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let cost = Tensor::from_vec(values, (b, n, m), &Device::Cpu)?;
        let (rows, cols) = (vec![n; b], vec![m; b]);
        let ms = median_ms(reps, || {
            black_box(sinkhorn(&cost, &rows, &cols, config)?);
            Ok(())
        })?;
        println!("otkd {b} {n} {m} {ms:.4}");
        let plan = sinkhorn(&cost, &rows, &cols, config)?.plan.flatten_all()?.to_vec1::<f32>()?;
        let out: Vec<u8> = plan.iter().flat_map(|p| p.to_le_bytes()).collect();
        std::fs::write(dir.join(format!("otkd-plan-{b}-{n}-{m}.f32")), out)?;
    }
    Ok(())
}

fn main() -> BenchResult {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let Some(dir) = value("--inputs") else { return training_step_shape() };
    let epsilon = value("--epsilon").map_or(Ok(0.05), |v| v.parse())?;
    let max_iterations = value("--iterations").map_or(Ok(100), |v| v.parse())?;
    let reps = value("--reps").map_or(Ok(20), |v| v.parse())?;
    let config = SinkhornConfig { epsilon, max_iterations, tolerance: 0.0 };
    solve_inputs(Path::new(dir), &config, reps)
}
