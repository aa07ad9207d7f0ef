//! From finished runs to `summary.json`: per cell (group, language, start, bitext size, method)
//! the mean ± sd over seeds of every metric, and per OT/KD pair of cells the paired bootstrap and
//! the convergence comparison.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::convergence::{CurvePoint, convergence, first_reaching};
use super::plan::{Group, RunSpec, Start};
use super::probe::ProbeMetrics;
use super::run::{CheckpointEvaluation, LanguageAnchors, RunRecord};
use super::stats::{Bootstrap, MeanSd, holm, paired_bootstrap};
use crate::data::Lang;
use crate::distill::config::TrainConfig;
use crate::distill::losses::Method;
use crate::distill::run_dir::CheckpointKind;
use crate::eval::metrics::RetrievalMetrics;

/// Bootstrap resamples of every OT − KD test.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// Seed of the bootstrap.
pub const BOOTSTRAP_SEED: u64 = 2016;

/// R@1/5/10 and MRR over seeds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct MetricStats {
    /// R@1.
    pub r1: MeanSd,
    /// R@5.
    pub r5: MeanSd,
    /// R@10.
    pub r10: MeanSd,
    /// MRR.
    pub mrr: MeanSd,
}

impl MetricStats {
    fn of(values: &[RetrievalMetrics]) -> Self {
        let f = |g: fn(&RetrievalMetrics) -> f64| MeanSd::of(&values.iter().map(g).collect::<Vec<_>>());
        Self { r1: f(|m| m.r1), r5: f(|m| m.r5), r10: f(|m| m.r10), mrr: f(|m| m.mrr) }
    }
}

/// Probe R@1/5/10 over seeds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ProbeStats {
    /// R@1.
    pub r1: MeanSd,
    /// R@5.
    pub r5: MeanSd,
    /// R@10.
    pub r10: MeanSd,
}

impl ProbeStats {
    fn of(values: &[ProbeMetrics]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let f = |g: fn(&ProbeMetrics) -> f64| MeanSd::of(&values.iter().map(g).collect::<Vec<_>>());
        Some(Self { r1: f(|m| m.r1), r5: f(|m| m.r5), r10: f(|m| m.r10) })
    }
}

/// One checkpoint kind ("last" or "best-dev") over seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// Step of the checkpoint.
    pub step: MeanSd,
    /// Its dev X -> en R@1.
    pub dev_r1: MeanSd,
    /// Test X -> en.
    pub x_to_en: MetricStats,
    /// Test en -> X.
    pub en_to_x: MetricStats,
    /// Test X -> en R@1 ranked by CSLS (the hubness correction the exported index applies;
    /// from `final.json`).
    pub x_to_en_csls_r1: MeanSd,
    /// Image probe X -> image.
    pub probe: Option<ProbeStats>,
}

impl CheckpointStats {
    fn of(runs: &[&RunRecord], kind: CheckpointKind) -> Self {
        let evals: Vec<&CheckpointEvaluation> = runs.iter().map(|r| r.evaluation.result(kind)).collect();
        let csls: Vec<f64> = runs.iter().map(|r| r.report.result(kind).test_csls.x_to_en.r1).collect();
        let tests: Vec<_> = evals.iter().map(|e| e.test()).collect();
        Self {
            x_to_en_csls_r1: MeanSd::of(&csls),
            step: MeanSd::of(&evals.iter().map(|e| e.step as f64).collect::<Vec<_>>()),
            dev_r1: MeanSd::of(&evals.iter().map(|e| e.dev_r1).collect::<Vec<_>>()),
            x_to_en: MetricStats::of(&tests.iter().map(|t| t.x_to_en).collect::<Vec<_>>()),
            en_to_x: MetricStats::of(&tests.iter().map(|t| t.en_to_x).collect::<Vec<_>>()),
            probe: ProbeStats::of(&evals.iter().filter_map(|e| e.probe).collect::<Vec<_>>()),
        }
    }
}

/// Convergence over seeds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ConvergenceStats {
    /// Dev R@1 at step 0.
    pub start_dev_r1: MeanSd,
    /// Dev R@1 of the last evaluation.
    pub final_dev_r1: MeanSd,
    /// Steps to 90% of own final dev R@1.
    pub steps_to_90: MeanSd,
    /// Training seconds to 90%.
    pub seconds_to_90: MeanSd,
    /// Steps to 95%.
    pub steps_to_95: MeanSd,
    /// Training seconds to 95%.
    pub seconds_to_95: MeanSd,
    /// Area under the dev curve / steps.
    pub auc: MeanSd,
    /// Training seconds of the whole run.
    pub train_seconds: MeanSd,
}

/// All seeds of one configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Part of the grid.
    pub group: Group,
    /// Language X.
    pub lang: Lang,
    /// Start.
    pub start: Start,
    /// Training pairs (`None`: all).
    pub pairs: Option<usize>,
    /// Method.
    pub method: Method,
    /// Optimiser steps of each run.
    pub steps: usize,
    /// Training pairs of each run.
    pub train_pairs: usize,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Convergence.
    pub convergence: ConvergenceStats,
    /// The last checkpoint.
    pub last: CheckpointStats,
    /// The best-dev checkpoint.
    pub best_dev: CheckpointStats,
    /// Dev curve of each seed (for the plots).
    pub curves: Vec<Vec<CurvePoint>>,
}

/// OT − KD on test X -> en R@1 at one checkpoint kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccuracyTest {
    /// Which checkpoint.
    pub checkpoint: CheckpointKind,
    /// OT over seeds.
    pub ot: MeanSd,
    /// KD over seeds.
    pub kd: MeanSd,
    /// Paired bootstrap over test queries of per-query R@1 hits averaged over the paired seeds.
    pub bootstrap: Bootstrap,
    /// Holm-adjusted p-value over every test of `summary.json`.
    pub p_holm: f64,
    /// Seed-to-seed spread: sqrt of the mean of the two methods' variances.
    pub seed_sd: f64,
}

/// OT's curve against KD's final dev R@1, per seed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ReachStats {
    /// Steps for OT to first reach KD's final dev R@1 (same seed), over the seeds where it did.
    pub steps: MeanSd,
    /// Seconds, likewise.
    pub seconds: MeanSd,
    /// Seeds where OT never reached it.
    pub never: usize,
    /// Seeds compared.
    pub seeds: usize,
}

/// OT against KD in one (group, language, start, bitext size).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// Part of the grid.
    pub group: Group,
    /// Language X.
    pub lang: Lang,
    /// Start.
    pub start: Start,
    /// Training pairs.
    pub pairs: Option<usize>,
    /// Seeds present for both methods.
    pub seeds: Vec<u64>,
    /// Last and best-dev checkpoint tests.
    pub tests: Vec<AccuracyTest>,
    /// OT reaching KD's final dev R@1.
    pub ot_reaches_kd_final: ReachStats,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The preset name.
    pub preset: String,
    /// The settings every run shares (method, language, seed, steps are per run).
    pub base: TrainConfig,
    /// Runs.
    pub runs: usize,
    /// Anchors per language.
    pub anchors: Vec<LanguageAnchors>,
    /// Cells.
    pub cells: Vec<Cell>,
    /// OT − KD comparisons.
    pub comparisons: Vec<Comparison>,
    /// Bootstrap resamples and seed.
    pub bootstrap: (usize, u64),
    /// Training seconds summed over all runs.
    pub train_seconds: f64,
}

type CellKey = (Group, Lang, Start, Option<usize>);

fn curve(record: &RunRecord) -> Vec<CurvePoint> {
    record
        .metrics
        .iter()
        .map(|r| CurvePoint { step: r.step, seconds: r.elapsed_seconds, r1: r.dev_r1 })
        .collect()
}

/// Builds the summary of finished runs.
pub fn summarise(
    preset: &str,
    base: &TrainConfig,
    records: &[RunRecord],
    anchors: Vec<LanguageAnchors>,
) -> Summary {
    let mut by_cell: BTreeMap<(CellKey, u8), Vec<&RunRecord>> = BTreeMap::new();
    for r in records {
        let s: &RunSpec = &r.spec;
        let m = match s.method {
            Method::Ot => 0,
            Method::Kd => 1,
        };
        by_cell.entry(((s.group, s.lang, s.start, s.pairs), m)).or_default().push(r);
    }
    let mut cells = Vec::new();
    for (((group, lang, start, pairs), _), runs) in &by_cell {
        let convs: Vec<_> = runs.iter().filter_map(|r| convergence(&curve(r))).collect();
        let f = |g: &dyn Fn(&super::convergence::Convergence) -> f64| {
            MeanSd::of(&convs.iter().map(g).collect::<Vec<_>>())
        };
        cells.push(Cell {
            group: *group,
            lang: *lang,
            start: *start,
            pairs: *pairs,
            method: runs[0].spec.method,
            steps: runs[0].spec.budget.steps,
            train_pairs: runs[0].train_pairs,
            seeds: runs.iter().map(|r| r.spec.seed).collect(),
            convergence: ConvergenceStats {
                start_dev_r1: MeanSd::of(
                    &runs.iter().filter_map(|r| r.metrics.first().map(|m| m.dev_r1)).collect::<Vec<_>>(),
                ),
                final_dev_r1: f(&|c| c.final_r1),
                steps_to_90: f(&|c| c.to_90.step as f64),
                seconds_to_90: f(&|c| c.to_90.seconds),
                steps_to_95: f(&|c| c.to_95.step as f64),
                seconds_to_95: f(&|c| c.to_95.seconds),
                auc: f(&|c| c.auc),
                train_seconds: MeanSd::of(&runs.iter().map(|r| r.report.elapsed_seconds).collect::<Vec<_>>()),
            },
            last: CheckpointStats::of(runs, CheckpointKind::Last),
            best_dev: CheckpointStats::of(runs, CheckpointKind::BestDev),
            curves: runs.iter().map(|r| curve(r)).collect(),
        });
    }
    let mut comparisons = Vec::new();
    let keys: Vec<CellKey> = {
        let mut k: Vec<CellKey> = by_cell.keys().map(|(k, _)| *k).collect();
        k.dedup();
        k
    };
    for key in keys {
        let (Some(ot), Some(kd)) = (by_cell.get(&(key, 0)), by_cell.get(&(key, 1))) else { continue };
        let pairs: Vec<(&RunRecord, &RunRecord)> = ot
            .iter()
            .filter_map(|o| kd.iter().find(|k| k.spec.seed == o.spec.seed).map(|k| (*o, *k)))
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let mut tests = Vec::new();
        for kind in [CheckpointKind::Last, CheckpointKind::BestDev] {
            let hits = |r: &RunRecord| -> Vec<f64> {
                r.evaluation.result(kind).x_to_en_ranks.iter().map(|&x| f64::from(u8::from(x == 1))).collect()
            };
            let n = hits(pairs[0].0).len();
            let mean_hits = |side: usize| -> Vec<f64> {
                let mut acc = vec![0.0; n];
                for p in &pairs {
                    let r = if side == 0 { p.0 } else { p.1 };
                    acc.iter_mut().zip(hits(r)).for_each(|(a, h)| *a += h / pairs.len() as f64);
                }
                acc
            };
            let r1 = |r: &RunRecord| r.evaluation.result(kind).test().x_to_en.r1;
            let ot_s = MeanSd::of(&pairs.iter().map(|p| r1(p.0)).collect::<Vec<_>>());
            let kd_s = MeanSd::of(&pairs.iter().map(|p| r1(p.1)).collect::<Vec<_>>());
            tests.push(AccuracyTest {
                checkpoint: kind,
                ot: ot_s,
                kd: kd_s,
                bootstrap: paired_bootstrap(
                    &mean_hits(0),
                    &mean_hits(1),
                    BOOTSTRAP_RESAMPLES,
                    BOOTSTRAP_SEED,
                ),
                p_holm: f64::NAN,
                seed_sd: ((ot_s.sd.powi(2) + kd_s.sd.powi(2)) / 2.0).sqrt(),
            });
        }
        let (mut steps, mut seconds, mut never) = (Vec::new(), Vec::new(), 0);
        for (o, k) in &pairs {
            let kd_final = k.metrics.last().map_or(f64::NAN, |m| m.dev_r1);
            match first_reaching(&curve(o), kd_final) {
                Some(r) => {
                    steps.push(r.step as f64);
                    seconds.push(r.seconds);
                }
                None => never += 1,
            }
        }
        comparisons.push(Comparison {
            group: key.0,
            lang: key.1,
            start: key.2,
            pairs: key.3,
            seeds: pairs.iter().map(|p| p.0.spec.seed).collect(),
            tests,
            ot_reaches_kd_final: ReachStats {
                steps: MeanSd::of(&steps),
                seconds: MeanSd::of(&seconds),
                never,
                seeds: pairs.len(),
            },
        });
    }
    // Holm over every bootstrap test of the summary, read together.
    let ps: Vec<f64> = comparisons.iter().flat_map(|c| c.tests.iter().map(|t| t.bootstrap.p_value)).collect();
    let adjusted = holm(&ps);
    let mut it = adjusted.into_iter();
    for c in &mut comparisons {
        for t in &mut c.tests {
            t.p_holm = it.next().unwrap_or(f64::NAN);
        }
    }
    Summary {
        preset: preset.to_string(),
        base: base.clone(),
        runs: records.len(),
        anchors,
        cells,
        comparisons,
        bootstrap: (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED),
        train_seconds: records.iter().map(|r| r.report.elapsed_seconds).sum(),
    }
}

impl Summary {
    /// The cell of a configuration.
    pub fn cell(
        &self,
        group: Group,
        lang: Lang,
        start: Start,
        pairs: Option<usize>,
        method: Method,
    ) -> Option<&Cell> {
        self.cells.iter().find(|c| {
            c.group == group && c.lang == lang && c.start == start && c.pairs == pairs && c.method == method
        })
    }

    /// The anchors of a language.
    pub fn anchors_of(&self, lang: Lang) -> Option<&LanguageAnchors> {
        self.anchors.iter().find(|a| a.lang == lang)
    }
}
