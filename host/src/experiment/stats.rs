//! Statistics over seeds and queries: mean ± sd, a t-based 95% confidence interval of a mean, a
//! seeded paired bootstrap over queries for the difference of two systems, and Holm's
//! correction when several tests are read together.

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// Mean, sample standard deviation and 95% CI of the mean of a few values (seeds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Arithmetic mean (NaN for no values).
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator; 0 for one value).
    pub sd: f64,
    /// Number of values.
    pub n: usize,
    /// 95% confidence interval of the mean, `mean ± t(0.975, n − 1) · sd / √n` (absent for
    /// fewer than two values).
    pub ci95: Option<(f64, f64)>,
}

impl MeanSd {
    /// Summary of `values`.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self { mean: f64::NAN, sd: f64::NAN, n, ci95: None };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let ci95 = (n > 1).then(|| {
            let half = t975(n - 1) * sd / (n as f64).sqrt();
            (mean - half, mean + half)
        });
        Self { mean, sd, n, ci95 }
    }

    /// `0.812 ± 0.004`, with `digits` decimals (`-` for no values).
    pub fn show(&self, digits: usize) -> String {
        if self.n == 0 {
            return "-".into();
        }
        if self.n == 1 {
            return format!("{:.digits$}", self.mean);
        }
        format!("{:.digits$} ± {:.digits$}", self.mean, self.sd)
    }
}

/// The 0.975 quantile of Student's t distribution with `df` degrees of freedom (two-sided 95%).
/// Tabulated to three decimals up to 30, then the normal quantile 1.96 (within 0.05 of it).
///
/// # Panics
/// If `df == 0`.
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042,
    ];
    assert!(df > 0, "t975: zero degrees of freedom");
    TABLE.get(df - 1).copied().unwrap_or(1.96)
}

/// A paired bootstrap over queries of the mean difference `a − b`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Observed mean difference over the queries.
    pub difference: f64,
    /// Percentile 95% interval of the resampled mean differences (2.5% and 97.5%).
    pub ci95: (f64, f64),
    /// Two-sided p-value of "no difference": `(1 + #{|d* − d| ≥ |d|}) / (1 + resamples)`, where
    /// `d*` are the resampled means (the bootstrap distribution shifted to the null).
    pub p_value: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Queries.
    pub queries: usize,
}

/// Paired bootstrap over queries: `a[q]` and `b[q]` are the two systems' scores of query `q`
/// (e.g. 1 for a hit at rank 1, else 0; or a hit rate averaged over seeds). Queries are drawn
/// with replacement `resamples` times from a generator seeded with `seed`.
///
/// # Panics
/// If `a` and `b` differ in length, are empty, or `resamples == 0`.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Bootstrap {
    assert_eq!(a.len(), b.len(), "paired_bootstrap: {} and {} queries", a.len(), b.len());
    assert!(!a.is_empty() && resamples > 0, "paired_bootstrap: no queries or no resamples");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let observed = d.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64::new(seed, "paired-bootstrap");
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| d[rng.below(n)]).sum::<f64>() / n as f64).collect();
    // A tolerance so that resamples equal to the observed value up to rounding count as equal.
    let eps = 1e-12;
    let extreme = means.iter().filter(|&&m| (m - observed).abs() >= observed.abs() - eps).count();
    means.sort_by(f64::total_cmp);
    Bootstrap {
        difference: observed,
        ci95: (quantile_sorted(&means, 0.025), quantile_sorted(&means, 0.975)),
        p_value: (1 + extreme) as f64 / (1 + resamples) as f64,
        resamples,
        queries: n,
    }
}

/// The `p` quantile of sorted values, by linear interpolation between order statistics
/// (position `p · (n − 1)`).
///
/// # Panics
/// If `sorted` is empty.
pub fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of nothing");
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Holm's step-down adjusted p-values (family-wise error control when several tests are read
/// together), in the input order: sort ascending, `adj(i) = max_{j ≤ i} min(1, (m − j) p(j))`.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn mean_sd_and_ci_by_hand() {
        // 1, 2, 3: mean 2, sd sqrt(((1)+(0)+(1))/2) = 1, CI 2 ± 4.303 · 1/√3 = 2 ± 2.48433...
        let m = MeanSd::of(&[1.0, 2.0, 3.0]);
        assert!(close(m.mean, 2.0) && close(m.sd, 1.0) && m.n == 3);
        let (lo, hi) = m.ci95.unwrap();
        let half = 4.303 / 3f64.sqrt();
        assert!(close(lo, 2.0 - half) && close(hi, 2.0 + half), "{lo} {hi}");
        // Two values 0.80, 0.84: mean 0.82, sd = 0.04/√2 = 0.028284..., CI 0.82 ± 12.706 · 0.02.
        let m = MeanSd::of(&[0.80, 0.84]);
        assert!(close(m.sd, 0.04 / 2f64.sqrt()));
        let (lo, hi) = m.ci95.unwrap();
        assert!(close(hi - 0.82, 12.706 * 0.02) && close(0.82 - lo, 12.706 * 0.02));
        // One value: sd 0, no CI; none: NaN.
        let one = MeanSd::of(&[0.5]);
        assert!(one.sd == 0.0 && one.ci95.is_none() && one.show(2) == "0.50");
        assert!(MeanSd::of(&[]).mean.is_nan());
        assert_eq!(MeanSd::of(&[1.0, 3.0]).show(1), "2.0 ± 1.4");
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(100), 1.96);
    }

    #[test]
    fn identical_systems_have_p_one_and_a_ci_at_zero() {
        // Every per-query difference is 0: every resampled mean is 0, |0 − 0| ≥ |0| always, so
        // p = (1 + B) / (1 + B) = 1, and the interval is [0, 0], which contains 0.
        let hits = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let b = paired_bootstrap(&hits, &hits, 1000, 7);
        assert_eq!(b.difference, 0.0);
        assert_eq!(b.p_value, 1.0);
        assert!(b.ci95.0 <= 0.0 && b.ci95.1 >= 0.0);
    }

    #[test]
    fn a_system_that_wins_every_query_excludes_zero() {
        // a hits every query, b none: every difference is 1, every resampled mean is 1, the
        // interval is [1, 1], and no resample is as far from 1 as 0 is: p = 1 / (1 + B).
        let a = vec![1.0; 50];
        let b = vec![0.0; 50];
        let boot = paired_bootstrap(&a, &b, 999, 1);
        assert_eq!(boot.difference, 1.0);
        assert_eq!(boot.ci95, (1.0, 1.0));
        assert!(close(boot.p_value, 1.0 / 1000.0));
    }

    #[test]
    fn bootstrap_is_seeded_and_centred_on_the_observed_difference() {
        // a wins 6 of 20 queries, b wins 2, they tie on 12: observed difference (6 − 2)/20 = 0.2.
        let mut a = vec![0.0; 20];
        let mut b = vec![0.0; 20];
        a[..6].iter_mut().for_each(|v| *v = 1.0);
        b[6..8].iter_mut().for_each(|v| *v = 1.0);
        let one = paired_bootstrap(&a, &b, 2000, 3);
        let two = paired_bootstrap(&a, &b, 2000, 3);
        assert_eq!(one, two, "same seed, same answer");
        assert!(close(one.difference, 0.2));
        assert!(one.ci95.0 < 0.2 && one.ci95.1 > 0.2 && one.ci95.0 >= -0.2 && one.ci95.1 <= 0.6);
        assert!(one.p_value > 0.0 && one.p_value < 1.0);
    }

    #[test]
    fn quantiles_interpolate() {
        // Positions: p (n − 1) = 0.5 · 4 = 2 -> 3; 0.25 · 4 = 1 -> 2; 0.1 · 4 = 0.4 -> 1.4.
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!(close(quantile_sorted(&v, 0.5), 3.0));
        assert!(close(quantile_sorted(&v, 0.25), 2.0));
        assert!(close(quantile_sorted(&v, 0.1), 1.4));
    }

    #[test]
    fn holm_by_hand() {
        // p = 0.01, 0.04, 0.03 (m = 3). Sorted 0.01, 0.03, 0.04: 3·0.01 = 0.03, 2·0.03 = 0.06,
        // 1·0.04 = 0.04 -> running max 0.06. In input order: 0.03, 0.06, 0.06.
        let adj = holm(&[0.01, 0.04, 0.03]);
        assert!(close(adj[0], 0.03) && close(adj[1], 0.06) && close(adj[2], 0.06), "{adj:?}");
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }
}
