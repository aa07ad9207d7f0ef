//! Contract tests for the Sinkhorn kernel: closed forms, marginals, masking, numerics, the
//! unrolled twin against the reference, gradients, and the named errors.
//!
//! Each `fn(&Device)` body is stamped per backend by `test_device!`: `_cpu` always, `_cuda`
//! with the `cuda` feature (skipped, with a message, when no CUDA device can be opened, unless
//! `OTKD_REQUIRE_CUDA=1`: then the `_cuda` arm fails, as in `cuda_parity.rs`).

use candle_core::{DType, Device, Tensor, Var};
use otkd_kernels::sinkhorn::cpu;
use otkd_kernels::{
    KernelError, SinkhornConfig, SinkhornPlan, sinkhorn, sinkhorn_log_domain, sinkhorn_log_domain_unrolled,
};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

macro_rules! test_device {
    ($fn_name:ident, $cpu_name:ident, $cuda_name:ident) => {
        #[test]
        fn $cpu_name() -> TestResult {
            $fn_name(&Device::Cpu)
        }

        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda_name() -> TestResult {
            match Device::new_cuda(0) {
                Ok(device) => $fn_name(&device),
                Err(e) => {
                    let required = std::env::var("OTKD_REQUIRE_CUDA").is_ok_and(|v| v == "1");
                    assert!(!required, "OTKD_REQUIRE_CUDA=1 but no CUDA device could be opened: {e}");
                    eprintln!("skipped: no CUDA device ({e})");
                    Ok(())
                }
            }
        }
    };
}

/// xorshift64, uniform in [lo, hi).
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn below(&mut self, k: usize) -> usize {
        (self.next_f32(0.0, k as f32) as usize).min(k - 1)
    }
}

fn random_cost(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.next_f32(0.0, 2.0)).collect()
}

fn solve(
    cost: &[f32],
    shape: (usize, usize, usize),
    rows: &[usize],
    cols: &[usize],
    config: &SinkhornConfig,
    device: &Device,
) -> TestResult<(Vec<f32>, SinkhornPlan)> {
    let tensor = Tensor::from_slice(cost, shape, device)?;
    let out = sinkhorn_log_domain(&tensor, rows, cols, config)?;
    assert_eq!(out.plan.dims3()?, shape);
    assert_eq!(out.plan.dtype(), DType::F32);
    assert!(!out.plan.is_variable());
    let plan = out.plan.flatten_all()?.to_vec1::<f32>()?;
    Ok((plan, out))
}

/// Row and column sums of item `k`'s real block.
fn marginals(
    plan: &[f32],
    (n, m): (usize, usize),
    k: usize,
    rows: usize,
    cols: usize,
) -> (Vec<f32>, Vec<f32>) {
    let p = |i: usize, j: usize| plan[(k * n + i) * m + j];
    let r = (0..rows).map(|i| (0..cols).map(|j| p(i, j)).sum()).collect();
    let c = (0..cols).map(|j| (0..rows).map(|i| p(i, j)).sum()).collect();
    (r, c)
}

fn one_by_one(device: &Device) -> TestResult {
    let (plan, out) = solve(&[0.7], (1, 1, 1), &[1], &[1], &SinkhornConfig::default(), device)?;
    assert!((plan[0] - 1.0).abs() < 1e-6, "plan {plan:?}");
    assert_eq!(out.iterations, vec![1]);
    assert!(out.marginal_error[0] < 1e-6);
    Ok(())
}
test_device!(one_by_one, one_by_one_cpu, one_by_one_cuda);

fn uniform_cost_gives_product_plan(device: &Device) -> TestResult {
    let (n, m) = (5, 7);
    let (plan, out) = solve(&vec![0.4; n * m], (1, n, m), &[n], &[m], &SinkhornConfig::default(), device)?;
    for &p in &plan {
        assert!((p - 1.0 / 35.0).abs() < 1e-6, "{p}");
    }
    assert_eq!(out.iterations, vec![1], "the product plan is a fixed point after one iteration");
    Ok(())
}
test_device!(
    uniform_cost_gives_product_plan,
    uniform_cost_gives_product_plan_cpu,
    uniform_cost_gives_product_plan_cuda
);

fn permutation_cost_gives_near_permutation(device: &Device) -> TestResult {
    let n = 6;
    let perm = [3usize, 0, 5, 1, 4, 2];
    let mut cost = vec![1.0f32; n * n];
    for (i, &j) in perm.iter().enumerate() {
        cost[i * n + j] = 0.0;
    }
    let config = SinkhornConfig { epsilon: 0.01, ..SinkhornConfig::default() };
    let (plan, out) = solve(&cost, (1, n, n), &[n], &[n], &config, device)?;
    for (i, &j) in perm.iter().enumerate() {
        let p = plan[i * n + j];
        assert!(p > 0.99 / n as f32, "row {i}: {p}");
    }
    assert!(out.marginal_error[0] < config.tolerance);
    Ok(())
}
test_device!(
    permutation_cost_gives_near_permutation,
    permutation_cost_gives_near_permutation_cpu,
    permutation_cost_gives_near_permutation_cuda
);

fn marginals_within_tolerance(device: &Device) -> TestResult {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (b, n, m) = (12, 16, 14);
    let cost = random_cost(&mut rng, b * n * m);
    let rows: Vec<usize> = (0..b).map(|_| 1 + rng.below(n)).collect();
    let cols: Vec<usize> = (0..b).map(|_| 1 + rng.below(m)).collect();
    // Uniform random costs in [0, 2] are a hard case for ε = 0.05 (one item here needs ~460
    // iterations), so allow enough iterations to converge.
    let config = SinkhornConfig { max_iterations: 2000, ..SinkhornConfig::default() };
    let (plan, out) = solve(&cost, (b, n, m), &rows, &cols, &config, device)?;
    for k in 0..b {
        let (r, c) = marginals(&plan, (n, m), k, rows[k], cols[k]);
        let (a, bb) = (1.0 / rows[k] as f32, 1.0 / cols[k] as f32);
        // Columns are exact after the final column update.
        for cj in &c {
            assert!((cj - bb).abs() < 1e-5 * bb.max(1e-2) + 1e-6, "item {k}: col {cj} vs {bb}");
        }
        // The reported error is the row L1 deviation, and it converged below tolerance.
        let l1: f32 = r.iter().map(|ri| (ri - a).abs()).sum();
        assert!((l1 - out.marginal_error[k]).abs() < 1e-5, "item {k}: {l1} vs {}", out.marginal_error[k]);
        assert!(out.marginal_error[k] < config.tolerance, "item {k}: {}", out.marginal_error[k]);
        assert!(out.iterations[k] >= 1 && out.iterations[k] < config.max_iterations);
        let total: f32 = r.iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "item {k}: mass {total}");
    }
    Ok(())
}
test_device!(marginals_within_tolerance, marginals_within_tolerance_cpu, marginals_within_tolerance_cuda);

fn finite_for_tiny_epsilon(device: &Device) -> TestResult {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let (b, n, m) = (16, 20, 18);
    let cost = random_cost(&mut rng, b * n * m);
    let mut rows: Vec<usize> = (0..b).map(|_| 1 + rng.below(n)).collect();
    let mut cols: Vec<usize> = (0..b).map(|_| 1 + rng.below(m)).collect();
    (rows[0], cols[0], rows[1], cols[1]) = (n, m, 1, m);
    for epsilon in [1e-3, 2e-3, 1e-2] {
        for max_iterations in [1, 100, 500] {
            let config = SinkhornConfig { epsilon, max_iterations, tolerance: 0.0 };
            let (plan, out) = solve(&cost, (b, n, m), &rows, &cols, &config, device)?;
            assert!(plan.iter().all(|p| p.is_finite() && *p >= 0.0), "eps {epsilon}");
            for k in 0..b {
                assert!(out.marginal_error[k].is_finite() && out.marginal_error[k] <= 2.0 + 1e-4);
                assert_eq!(out.iterations[k], max_iterations);
                let (_, c) = marginals(&plan, (n, m), k, rows[k], cols[k]);
                let bb = 1.0 / cols[k] as f32;
                for cj in c {
                    assert!((cj - bb).abs() < 1e-4, "eps {epsilon} item {k}: col {cj} vs {bb}");
                }
            }
            let unrolled = sinkhorn_log_domain_unrolled(
                &Tensor::from_slice(&cost, (b, n, m), device)?,
                &rows,
                &cols,
                &SinkhornConfig { max_iterations: max_iterations.min(100), ..config },
            )?;
            let values = unrolled.flatten_all()?.to_vec1::<f32>()?;
            assert!(values.iter().all(|p| p.is_finite()), "unrolled eps {epsilon}");
        }
    }
    Ok(())
}
test_device!(finite_for_tiny_epsilon, finite_for_tiny_epsilon_cpu, finite_for_tiny_epsilon_cuda);

fn padding_is_zero_and_real_block_is_the_unpadded_solution(device: &Device) -> TestResult {
    let mut rng = Rng(42);
    let (n, m) = (9, 11);
    let sizes = [(9, 11), (4, 7), (1, 5), (6, 1), (3, 3)];
    let b = sizes.len();
    // Padding holds NaN: the solver must never read it.
    let mut padded = vec![f32::NAN; b * n * m];
    let mut blocks = Vec::new();
    for (k, &(r, c)) in sizes.iter().enumerate() {
        let block = random_cost(&mut rng, r * c);
        for i in 0..r {
            padded[(k * n + i) * m..(k * n + i) * m + c].copy_from_slice(&block[i * c..(i + 1) * c]);
        }
        blocks.push(block);
    }
    let rows: Vec<usize> = sizes.iter().map(|s| s.0).collect();
    let cols: Vec<usize> = sizes.iter().map(|s| s.1).collect();
    let config = SinkhornConfig::default();
    let (plan, out) = solve(&padded, (b, n, m), &rows, &cols, &config, device)?;
    // The unrolled twin never lets the NaN padding reach the real block either.
    let unrolled = sinkhorn_log_domain_unrolled(
        &Tensor::from_slice(&padded, (b, n, m), device)?,
        &rows,
        &cols,
        &config,
    )?
    .flatten_all()?
    .to_vec1::<f32>()?;
    for (k, &(r, c)) in sizes.iter().enumerate() {
        for i in 0..n {
            for j in 0..m {
                let p = plan[(k * n + i) * m + j];
                if i >= r || j >= c {
                    assert_eq!(p.to_bits(), 0.0f32.to_bits(), "item {k} ({i},{j}) padding = {p}");
                }
            }
        }
        let (alone, alone_out) = solve(&blocks[k], (1, r, c), &[r], &[c], &config, device)?;
        let tol0 = SinkhornConfig { tolerance: 0.0, ..config };
        let (alone0, _) = solve(&blocks[k], (1, r, c), &[r], &[c], &tol0, device)?;
        for i in 0..n {
            for j in 0..m {
                let q = unrolled[(k * n + i) * m + j];
                if i >= r || j >= c {
                    assert_eq!(q.to_bits(), 0.0f32.to_bits(), "unrolled item {k} ({i},{j})");
                } else {
                    let p = alone0[i * c + j];
                    assert!((p - q).abs() < 1e-5, "unrolled item {k} ({i},{j}): {q} vs {p}");
                }
            }
        }
        assert_eq!(alone_out.iterations[0], out.iterations[k]);
        assert!((alone_out.marginal_error[0] - out.marginal_error[k]).abs() < 1e-6);
        for i in 0..r {
            for j in 0..c {
                let (p, q) = (plan[(k * n + i) * m + j], alone[i * c + j]);
                assert!((p - q).abs() < 1e-7, "item {k} ({i},{j}): {p} vs {q}");
            }
        }
    }
    Ok(())
}
test_device!(
    padding_is_zero_and_real_block_is_the_unpadded_solution,
    padding_is_zero_and_real_block_is_the_unpadded_solution_cpu,
    padding_is_zero_and_real_block_is_the_unpadded_solution_cuda
);

fn empty_items_give_zero_plans(device: &Device) -> TestResult {
    let mut rng = Rng(7);
    let (b, n, m) = (4, 5, 6);
    let cost = random_cost(&mut rng, b * n * m);
    let (rows, cols) = ([0, 5, 3, 0], [6, 0, 6, 0]);
    let (plan, out) = solve(&cost, (b, n, m), &rows, &cols, &SinkhornConfig::default(), device)?;
    for k in [0, 1, 3] {
        assert!(plan[k * n * m..(k + 1) * n * m].iter().all(|&p| p == 0.0));
        assert_eq!((out.iterations[k], out.marginal_error[k]), (0, 0.0));
    }
    assert!(out.iterations[2] > 0);
    let (r, _) = marginals(&plan, (n, m), 2, 3, 6);
    assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-4);

    let unrolled = sinkhorn_log_domain_unrolled(
        &Tensor::from_slice(&cost, (b, n, m), device)?,
        &rows,
        &cols,
        &SinkhornConfig::default(),
    )?
    .flatten_all()?
    .to_vec1::<f32>()?;
    for k in [0, 1, 3] {
        assert!(unrolled[k * n * m..(k + 1) * n * m].iter().all(|&p| p == 0.0));
    }
    // Degenerate extents: n = 0 is a batch of empty items.
    let out = sinkhorn_log_domain(
        &Tensor::zeros((3, 0, 4), DType::F32, device)?,
        &[0; 3],
        &[2, 0, 4],
        &SinkhornConfig::default(),
    )?;
    assert_eq!(out.iterations, vec![0; 3]);
    Ok(())
}
test_device!(empty_items_give_zero_plans, empty_items_give_zero_plans_cpu, empty_items_give_zero_plans_cuda);

fn iterations_and_error_are_reported(device: &Device) -> TestResult {
    let mut rng = Rng(99);
    let (b, n, m) = (3, 8, 10);
    let cost = random_cost(&mut rng, b * n * m);
    let (rows, cols) = ([8, 5, 8], [10, 10, 3]);
    // Capped at 2 iterations with tolerance 0: exactly 2, and a non-zero error.
    let config = SinkhornConfig { max_iterations: 2, tolerance: 0.0, epsilon: 0.02 };
    let (_, capped) = solve(&cost, (b, n, m), &rows, &cols, &config, device)?;
    assert_eq!(capped.iterations, vec![2; 3]);
    assert!(capped.marginal_error.iter().all(|&e| e > 1e-3), "{:?}", capped.marginal_error);
    // With a tolerance the solver stops early, below it, and later for a stricter tolerance.
    let loose = SinkhornConfig { max_iterations: 5000, tolerance: 1e-2, epsilon: 0.05 };
    let strict = SinkhornConfig { tolerance: 1e-5, ..loose };
    let (_, l) = solve(&cost, (b, n, m), &rows, &cols, &loose, device)?;
    let (_, s) = solve(&cost, (b, n, m), &rows, &cols, &strict, device)?;
    for k in 0..b {
        assert!(l.marginal_error[k] < 1e-2 && s.marginal_error[k] < 1e-5, "{l:?} {s:?}");
        assert!(l.iterations[k] > 2 && l.iterations[k] < s.iterations[k], "{l:?} {s:?}");
        assert!(s.iterations[k] < 5000);
    }
    Ok(())
}
test_device!(
    iterations_and_error_are_reported,
    iterations_and_error_are_reported_cpu,
    iterations_and_error_are_reported_cuda
);

fn unrolled_matches_reference(device: &Device) -> TestResult {
    let mut rng = Rng(0x5eed);
    let (b, n, m) = (6, 16, 14);
    let cost = random_cost(&mut rng, b * n * m);
    let rows = [16, 3, 0, 16, 1, 9];
    let cols = [14, 14, 5, 2, 1, 13];
    for (epsilon, max_iterations) in [(0.05, 100), (0.01, 50), (0.2, 7)] {
        let config = SinkhornConfig { epsilon, max_iterations, tolerance: 0.0 };
        let (reference, out) = solve(&cost, (b, n, m), &rows, &cols, &config, device)?;
        assert!(
            out.iterations.iter().zip(&rows).all(|(&it, &r)| it == if r == 0 { 0 } else { max_iterations })
        );
        let unrolled = sinkhorn_log_domain_unrolled(
            &Tensor::from_slice(&cost, (b, n, m), device)?,
            &rows,
            &cols,
            &config,
        )?
        .flatten_all()?
        .to_vec1::<f32>()?;
        let max_diff = reference.iter().zip(&unrolled).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        eprintln!("eps {epsilon}: max |ref - unrolled| = {max_diff:e}");
        assert!(max_diff < 1e-4, "eps {epsilon}: max |ref - unrolled| = {max_diff}");
        // Padding is exactly zero in both.
        for k in 0..b {
            for i in 0..n {
                for j in 0..m {
                    let at = (k * n + i) * m + j;
                    if i >= rows[k] || j >= cols[k] {
                        assert_eq!((reference[at], unrolled[at]), (0.0, 0.0), "item {k} ({i},{j})");
                    }
                }
            }
        }
    }
    Ok(())
}
test_device!(unrolled_matches_reference, unrolled_matches_reference_cpu, unrolled_matches_reference_cuda);

fn unrolled_gradients_are_finite(device: &Device) -> TestResult {
    let mut rng = Rng(0xfeed);
    let (b, n, m) = (4, 7, 6);
    let cost = Var::from_tensor(&Tensor::from_vec(random_cost(&mut rng, b * n * m), (b, n, m), device)?)?;
    let (rows, cols) = ([7, 3, 0, 5], [6, 2, 4, 6]);
    for epsilon in [0.05, 1e-2] {
        let config = SinkhornConfig { epsilon, max_iterations: 50, tolerance: 0.0 };
        let plan = sinkhorn_log_domain_unrolled(cost.as_tensor(), &rows, &cols, &config)?;
        let loss = (&plan * cost.as_tensor())?.sum_all()?;
        let grads = loss.backward()?;
        let grad = grads.get(cost.as_tensor()).expect("gradient w.r.t. the cost");
        assert_eq!(grad.dims3()?, (b, n, m));
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        assert!(g.iter().all(|x| x.is_finite()), "eps {epsilon}");
        for k in 0..b {
            for i in 0..n {
                for j in 0..m {
                    let x = g[(k * n + i) * m + j];
                    if i >= rows[k] || j >= cols[k] {
                        assert_eq!(x, 0.0, "padding gradient at item {k} ({i},{j})");
                    }
                }
            }
        }
        assert!(g.iter().any(|&x| x != 0.0));
        // The unrolled gradient differs from the envelope one (P itself): the solver's
        // dependence on C contributes.
        let p = plan.flatten_all()?.to_vec1::<f32>()?;
        let diff = g.iter().zip(&p).map(|(g, p)| (g - p).abs()).fold(0.0f32, f32::max);
        assert!(diff > 1e-6, "eps {epsilon}: gradient equals the plan");
    }
    // The reference takes a tracked cost too and returns an untracked plan.
    let out = sinkhorn_log_domain(cost.as_tensor(), &rows, &cols, &SinkhornConfig::default())?;
    assert!(!out.plan.is_variable());
    Ok(())
}
test_device!(
    unrolled_gradients_are_finite,
    unrolled_gradients_are_finite_cpu,
    unrolled_gradients_are_finite_cuda
);

fn non_contiguous_cost_is_accepted(device: &Device) -> TestResult {
    let mut rng = Rng(3);
    let (b, n, m) = (3, 4, 5);
    let transposed =
        Tensor::from_vec(random_cost(&mut rng, b * n * m), (b, m, n), device)?.transpose(1, 2)?;
    assert!(!transposed.is_contiguous());
    let config = SinkhornConfig::default();
    let (rows, cols) = ([4, 2, 3], [5, 5, 1]);
    let a = sinkhorn_log_domain(&transposed, &rows, &cols, &config)?.plan;
    let b2 = sinkhorn_log_domain(&transposed.contiguous()?, &rows, &cols, &config)?.plan;
    let diff = (a - b2)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    Ok(())
}
test_device!(
    non_contiguous_cost_is_accepted,
    non_contiguous_cost_is_accepted_cpu,
    non_contiguous_cost_is_accepted_cuda
);

fn bad_inputs_are_named_errors(device: &Device) -> TestResult {
    let ok = SinkhornConfig::default();
    let cost = Tensor::zeros((2, 3, 4), DType::F32, device)?;
    type Solver = fn(&Tensor, &[usize], &[usize], &SinkhornConfig) -> Result<(), KernelError>;
    let solvers: [(&str, Solver); 2] = [
        ("reference", |c, r, l, cfg| sinkhorn_log_domain(c, r, l, cfg).map(drop)),
        ("unrolled", |c, r, l, cfg| sinkhorn_log_domain_unrolled(c, r, l, cfg).map(drop)),
    ];
    for (name, solve) in solvers {
        let rank2 = Tensor::zeros((3, 4), DType::F32, device)?;
        assert!(
            matches!(
                solve(&rank2, &[3], &[4], &ok),
                Err(KernelError::ShapeMismatch { what: "cost rank", expected: 3, got: 2, .. })
            ),
            "{name}"
        );
        let f64_cost = Tensor::zeros((2, 3, 4), DType::F64, device)?;
        assert!(
            matches!(
                solve(&f64_cost, &[3, 3], &[4, 4], &ok),
                Err(KernelError::UnsupportedDtype { dtype: DType::F64, .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                solve(&cost, &[3], &[4, 4], &ok),
                Err(KernelError::ShapeMismatch { expected: 2, got: 1, .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                solve(&cost, &[3, 3], &[4, 4, 4], &ok),
                Err(KernelError::ShapeMismatch { expected: 2, got: 3, .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                solve(&cost, &[3, 4], &[4, 4], &ok),
                Err(KernelError::LengthOutOfRange { what: "row_lengths", item: 1, length: 4, max: 3, .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                solve(&cost, &[3, 3], &[5, 4], &ok),
                Err(KernelError::LengthOutOfRange { what: "col_lengths", item: 0, length: 5, max: 4, .. })
            ),
            "{name}"
        );
        for (config, field) in [
            (SinkhornConfig { epsilon: 0.0, ..ok }, "epsilon"),
            (SinkhornConfig { epsilon: -0.1, ..ok }, "epsilon"),
            (SinkhornConfig { epsilon: f32::NAN, ..ok }, "epsilon"),
            (SinkhornConfig { max_iterations: 0, ..ok }, "max_iterations"),
            (SinkhornConfig { tolerance: -1e-3, ..ok }, "tolerance"),
            (SinkhornConfig { tolerance: f32::INFINITY, ..ok }, "tolerance"),
        ] {
            let err = solve(&cost, &[3, 3], &[4, 4], &config);
            assert!(
                matches!(err, Err(KernelError::BadConfig { field: f, .. }) if f == field),
                "{name} {field}: {err:?}"
            );
        }
        assert!(solve(&cost, &[3, 0], &[4, 4], &ok).is_ok(), "{name}");
    }
    Ok(())
}
test_device!(bad_inputs_are_named_errors, bad_inputs_are_named_errors_cpu, bad_inputs_are_named_errors_cuda);

fn the_op_reports_loss_and_statistics_and_differentiates_the_loss(device: &Device) -> TestResult {
    let mut rng = Rng(0xabc);
    let (b, n, m) = (4, 9, 7);
    let values = random_cost(&mut rng, b * n * m);
    let (rows, cols) = ([9, 4, 0, 1], [7, 7, 3, 5]);
    let config = SinkhornConfig { max_iterations: 300, ..SinkhornConfig::default() };
    let cost = Var::from_tensor(&Tensor::from_slice(&values, (b, n, m), device)?)?;
    let out = sinkhorn(cost.as_tensor(), &rows, &cols, &config)?;
    assert!(!out.plan.is_variable() && out.loss.dims() == [b]);
    // The loss is Σ P ⊙ C per item, the statistics are those of sinkhorn_log_domain.
    let expected = (&out.plan * cost.as_tensor())?.sum((1, 2))?;
    let loss = out.loss.to_vec1::<f32>()?;
    for (k, (l, e)) in loss.iter().zip(expected.to_vec1::<f32>()?).enumerate() {
        assert!((l - e).abs() <= 1e-6 * e.abs().max(1.0), "item {k}: {l} vs {e}");
    }
    let reference = sinkhorn_log_domain(cost.as_tensor(), &rows, &cols, &config)?;
    let (iterations, errors) = out.statistics_to_host()?;
    assert_eq!(iterations, reference.iterations);
    assert_eq!(errors, reference.marginal_error);
    let iterations_tensor: Vec<u32> = out.iterations.to_vec1::<f32>()?.iter().map(|&i| i as u32).collect();
    assert_eq!(iterations_tensor, iterations);
    assert_eq!(out.marginal_error.to_vec1::<f32>()?, errors);
    // ∂(Σ_k w_k loss_k)/∂C_k = w_k P_k: the plan is a constant.
    let weights = Tensor::new(&[1.0f32, -2.0, 3.0, 0.5], device)?;
    let grads = (&out.loss * &weights)?.sum_all()?.backward()?;
    let grad = grads.get(cost.as_tensor()).expect("gradient w.r.t. the cost");
    let want = out.plan.broadcast_mul(&weights.reshape((b, 1, 1))?)?;
    assert_eq!((grad - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.0);
    Ok(())
}
test_device!(
    the_op_reports_loss_and_statistics_and_differentiates_the_loss,
    the_op_reports_loss_and_statistics_and_differentiates_the_loss_cpu,
    the_op_reports_loss_and_statistics_and_differentiates_the_loss_cuda
);

#[test]
fn errors_display_their_fields() {
    let e = KernelError::LengthOutOfRange { op: "sinkhorn", what: "row_lengths", item: 3, length: 9, max: 8 };
    assert_eq!(e.to_string(), "sinkhorn: row_lengths[3] = 9 exceeds the padded extent 8");
    let e = KernelError::NoCudaImplementation { op: "sinkhorn_log_domain" };
    assert_eq!(e.to_string(), "no cuda implementation for sinkhorn_log_domain");
    assert_eq!(
        SinkhornConfig::default(),
        SinkhornConfig { epsilon: 0.05, max_iterations: 100, tolerance: 1e-3 }
    );
}

#[test]
fn cpu_reference_on_slices() {
    let (b, n, m) = (2, 3, 2);
    let cost = [0.0, 1.0, 1.0, 0.0, 0.5, 0.5, /* item 1 */ 0.3, 0.3, 0.3, 0.3, 0.3, 0.3];
    let mut plan = [f32::NAN; 12];
    let out =
        cpu::sinkhorn_log_domain(&cost, (b, n, m), &[3, 2], &[2, 2], &SinkhornConfig::default(), &mut plan);
    assert_eq!(out.len(), 2);
    assert!(plan.iter().all(|p| p.is_finite()));
    // Item 1 is uniform over its 2x2 real block; its third row is padding.
    assert_eq!(&plan[6..10], &[0.25; 4]);
    assert_eq!(&plan[10..], &[0.0, 0.0]);
    // Item 0: the off-diagonal-free rows push mass onto the zero-cost entries.
    assert!(plan[0] > plan[1] && plan[3] > plan[2]);
}

#[test]
#[should_panic(expected = "plan.len()")]
fn cpu_reference_panics_on_caller_bugs() {
    let mut plan = [0.0f32; 3];
    cpu::sinkhorn_log_domain(&[0.0; 4], (1, 2, 2), &[2], &[2], &SinkhornConfig::default(), &mut plan);
}
