//! Convergence of one run, read from its dev curve (`metrics.jsonl`): steps and training seconds
//! to reach a fraction of the run's own final dev R@1, the area under the dev curve normalised by
//! steps, and the first step at which a curve reaches another run's final value.

use serde::{Deserialize, Serialize};

/// One point of a dev curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Optimiser steps done.
    pub step: usize,
    /// Training seconds so far (evaluation excluded).
    pub seconds: f64,
    /// Dev X -> en R@1.
    pub r1: f64,
}

/// Where a curve first reaches a value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reached {
    /// Step of the first evaluation at or above the value.
    pub step: usize,
    /// Its training seconds.
    pub seconds: f64,
}

/// The first evaluation with `r1 >= target` (curves are only known at evaluations), or `None`.
pub fn first_reaching(curve: &[CurvePoint], target: f64) -> Option<Reached> {
    curve.iter().find(|p| p.r1 >= target).map(|p| Reached { step: p.step, seconds: p.seconds })
}

/// Convergence measures of one run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// Dev R@1 of the last evaluation (the run's own final value).
    pub final_r1: f64,
    /// First evaluation at or above 90% of `final_r1`.
    pub to_90: Reached,
    /// First evaluation at or above 95% of `final_r1`.
    pub to_95: Reached,
    /// Trapezoidal area under dev R@1 over steps, divided by the steps it spans: the mean dev
    /// R@1 over training (1 would be perfect from step 0).
    pub auc: f64,
}

/// Convergence of a curve sorted by step with at least one point, or `None` for an empty curve.
/// The last point always reaches 90% and 95% of itself, so both are always found.
pub fn convergence(curve: &[CurvePoint]) -> Option<Convergence> {
    let last = curve.last()?;
    let final_r1 = last.r1;
    let reach = |f: f64| {
        first_reaching(curve, f * final_r1).unwrap_or(Reached { step: last.step, seconds: last.seconds })
    };
    Some(Convergence { final_r1, to_90: reach(0.90), to_95: reach(0.95), auc: auc(curve) })
}

/// Trapezoidal area under R@1 over steps divided by the step span; a single point gives its value.
pub fn auc(curve: &[CurvePoint]) -> f64 {
    match curve {
        [] => f64::NAN,
        [only] => only.r1,
        [first, .., last] => {
            let span = (last.step - first.step) as f64;
            let area: f64 =
                curve.windows(2).map(|w| (w[1].step - w[0].step) as f64 * (w[0].r1 + w[1].r1) / 2.0).sum();
            if span > 0.0 { area / span } else { last.r1 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(usize, f64, f64)]) -> Vec<CurvePoint> {
        points.iter().map(|&(step, seconds, r1)| CurvePoint { step, seconds, r1 }).collect()
    }

    #[test]
    fn steps_and_seconds_to_fractions_of_the_final_value_by_hand() {
        // Final 0.80: 90% = 0.72, 95% = 0.76. The first point >= 0.72 is step 200 (0.75), the
        // first >= 0.76 is step 300 (0.78); a later dip does not matter.
        let c = curve(&[
            (0, 0.0, 0.10),
            (100, 5.0, 0.60),
            (200, 10.0, 0.75),
            (300, 15.0, 0.78),
            (400, 20.0, 0.80),
        ]);
        let conv = convergence(&c).unwrap();
        assert_eq!(conv.final_r1, 0.80);
        assert_eq!(conv.to_90, Reached { step: 200, seconds: 10.0 });
        assert_eq!(conv.to_95, Reached { step: 300, seconds: 15.0 });
        // AUC: trapezoids 100·(0.10+0.60)/2 = 35, 100·(0.60+0.75)/2 = 67.5, 100·(0.75+0.78)/2
        // = 76.5, 100·(0.78+0.80)/2 = 79; sum 258 over 400 steps = 0.645.
        assert!((conv.auc - 0.645).abs() < 1e-12, "{}", conv.auc);
    }

    #[test]
    fn a_run_that_starts_converged_needs_zero_steps() {
        // Ridge start: 0.90 at step 0, final 0.91: 90% = 0.819 and 95% = 0.8645 both reached at 0.
        let c = curve(&[(0, 0.0, 0.90), (50, 2.0, 0.92), (100, 4.0, 0.91)]);
        let conv = convergence(&c).unwrap();
        assert_eq!((conv.to_90.step, conv.to_95.step), (0, 0));
        // AUC: 50·(0.90+0.92)/2 + 50·(0.92+0.91)/2 = 45.5 + 45.75 = 91.25 over 100 = 0.9125.
        assert!((conv.auc - 0.9125).abs() < 1e-12);
    }

    #[test]
    fn reaching_another_runs_final_value_or_never() {
        // OT curve against KD's final 0.70: first OT point >= 0.70 is step 150; against 0.90 never.
        let ot = curve(&[(0, 0.0, 0.1), (50, 1.0, 0.5), (100, 2.0, 0.69), (150, 3.0, 0.71), (200, 4.0, 0.8)]);
        assert_eq!(first_reaching(&ot, 0.70), Some(Reached { step: 150, seconds: 3.0 }));
        assert_eq!(first_reaching(&ot, 0.90), None);
        assert!(convergence(&[]).is_none());
        assert_eq!(auc(&curve(&[(0, 0.0, 0.4)])), 0.4);
    }
}
