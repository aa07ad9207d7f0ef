//! The timing harness the CPU benchmarks share.

use std::time::Instant;

/// What a benchmark step returns.
pub type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Median wall time in milliseconds of `reps` calls of `f`, after one warm-up call.
pub fn median_ms(reps: usize, mut f: impl FnMut() -> BenchResult) -> BenchResult<f64> {
    f()?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}
