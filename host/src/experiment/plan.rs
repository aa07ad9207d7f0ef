//! The run grid of an experiment: which languages, starts, methods, seeds and bitext sizes, and
//! the step budget of each run.
//!
//! Step budgets were chosen from throughput measured on the 2-core development machine (see
//! [`Budget`]); every run uses the same settings otherwise (the base configuration the command
//! passes, recorded in `summary.json`).

use serde::{Deserialize, Serialize};

use crate::data::Lang;
pub use crate::distill::config::Start;
use crate::distill::config::TrainConfig;
use crate::distill::losses::Method;

/// The named grids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentPreset {
    /// ay and cs, both starts, 2 seeds, short budgets (under 15 minutes on 2 cores).
    Quick,
    /// cs, ay, gn, qu x both starts x 3 seeds; a random-start bitext sweep (500 / 1k / 5k pairs) on ay, gn,
    /// qu x 3 seeds; de, fr, es with one seed (about an hour on 2 cores).
    Full,
}

/// Which part of the grid a run belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// The main comparison: all training pairs, every seed.
    Main,
    /// The bitext-size sweep.
    Sweep,
    /// Higher-resource languages for comparison.
    HighResource,
}

/// Steps and evaluation interval of runs from one start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Optimiser steps.
    pub steps: usize,
    /// Steps between dev evaluations.
    pub eval_every: usize,
}

/// One training run of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Part of the grid.
    pub group: Group,
    /// Language X.
    pub lang: Lang,
    /// Starting weights.
    pub start: Start,
    /// Training pairs (`None`: all).
    pub pairs: Option<usize>,
    /// Seed.
    pub seed: u64,
    /// OT or KD.
    pub method: Method,
    /// Steps and evaluation interval.
    pub budget: Budget,
}

impl RunSpec {
    /// The run's directory name under `runs/`: `ay-random-all-ot-s0`.
    pub fn id(&self) -> String {
        let pairs = self.pairs.map_or("all".to_string(), |n| n.to_string());
        let method = match self.method {
            Method::Ot => "ot",
            Method::Kd => "kd",
        };
        format!("{}-{}-{pairs}-{method}-s{}", self.lang, self.start, self.seed)
    }

    /// The training configuration: `base` with this run's method, language, start, seed,
    /// subset and budget (warmup at most a fifth of the steps); a ridge start uses `base`'s ridge
    /// lambda.
    pub fn config(&self, base: &TrainConfig) -> TrainConfig {
        let mut c = base.clone();
        c.method = self.method;
        c.loss.method = self.method;
        c.lang = self.lang;
        c.steps = self.budget.steps;
        c.eval_every = self.budget.eval_every;
        c.optimizer.total_steps = self.budget.steps;
        c.optimizer.warmup_steps = base.optimizer.warmup_steps.min(self.budget.steps / 5);
        c.seed = self.seed;
        c.pairs = self.pairs;
        c.start = self.start;
        c
    }
}

/// What the command line asks for on top of a preset.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRequest {
    /// The named grid.
    pub preset: ExperimentPreset,
    /// Keep only these languages (a listed language the preset lacks joins the main grid).
    pub langs: Option<Vec<Lang>>,
    /// Methods.
    pub methods: Vec<Method>,
    /// Starts.
    pub starts: Vec<Start>,
    /// Seeds per configuration (replaces the preset's counts; the higher-resource group keeps one).
    pub seeds: Option<u64>,
    /// Bitext sizes of the sweep (`None` in the list: all pairs, which is the main grid). For a
    /// preset without a sweep, the sweep runs on the main languages.
    pub pairs: Option<Vec<Option<usize>>>,
    /// Replaces every budget (tests and smoke runs).
    pub budget_override: Option<Budget>,
}

/// Budgets of a preset.
///
/// How they were chosen (2-core development machine, micro student, batch 64, `--kd-variant
/// infonce --english-weight 0`): 1500 training steps take 27 s (KD) and 39 s (OT) on ay
/// (alone), 45 s and 58 s on cs (a build beside it), plus about 25 s per run to load, tokenize,
/// fit and evaluate. From a random start a KD student on all ay pairs climbs to dev R@1 0.60 at
/// step 250, 0.80 at 1000, 0.85 at 2000 and 0.86 at 2750, still rising slowly: 1500-2000 steps
/// show which method climbs faster and where each flattens. From the ridge start both methods
/// begin at the closed-form optimum and move less than a point within 300 steps (1500-step runs
/// end within a point too).
///
/// - quick: 2 languages x 2 seeds x both methods x (1500 random + 300 ridge steps): measured
///   276 s of training and 555 s wall in all.
/// - full: main grid 4 languages x 3 seeds x (2000 random + 300 ridge); the sweep (500 / 1k / 5k
///   pairs, from the random start only: the ridge start is a fit of the same pairs, read in the
///   main grid) 3 languages x 3 sizes x 3 seeds x 600 steps (at 500 pairs, 38 epochs); de, fr,
///   es with one seed as the main grid: estimated 45 minutes of training; measured 3,063 s of
///   training and 5,460 s wall, with other builds sharing the machine for about half of it.
pub fn budget(preset: ExperimentPreset, start: Start, pairs: Option<usize>) -> Budget {
    match (preset, start, pairs) {
        (ExperimentPreset::Quick, Start::Random, _) => Budget { steps: 1500, eval_every: 100 },
        (ExperimentPreset::Quick, Start::Ridge, _) => Budget { steps: 300, eval_every: 50 },
        (ExperimentPreset::Full, Start::Random, None) => Budget { steps: 2000, eval_every: 100 },
        (ExperimentPreset::Full, Start::Random, Some(_)) => Budget { steps: 600, eval_every: 60 },
        (ExperimentPreset::Full, Start::Ridge, _) => Budget { steps: 300, eval_every: 30 },
    }
}

/// One part of the grid: group, languages, bitext sizes, seed count, starts.
type GroupPlan = (Group, Vec<Lang>, Vec<Option<usize>>, u64, Vec<Start>);

/// The runs of a request, in execution order: group, language, start, bitext size, seed, then
/// method (so the two methods of one seed finish close together).
pub fn plan(request: &PlanRequest) -> Vec<RunSpec> {
    use ExperimentPreset::*;
    let (main_langs, main_seeds, sweep_langs, sweep_sizes, high, high_seeds): (
        Vec<Lang>,
        u64,
        Vec<Lang>,
        Vec<usize>,
        Vec<Lang>,
        u64,
    ) = match request.preset {
        Quick => (vec![Lang::AY, Lang::CS], 2, vec![], vec![], vec![], 1),
        Full => (
            vec![Lang::CS, Lang::AY, Lang::GN, Lang::QU],
            3,
            vec![Lang::AY, Lang::GN, Lang::QU],
            vec![500, 1000, 5000],
            vec![Lang::DE, Lang::FR, Lang::ES],
            1,
        ),
    };
    let keep = |l: &Lang| request.langs.as_ref().is_none_or(|ls| ls.contains(l));
    let mut main: Vec<Lang> = main_langs.iter().copied().filter(keep).collect();
    if let Some(ls) = &request.langs {
        for l in ls {
            if !main.contains(l) && !high.contains(l) && !sweep_langs.contains(l) {
                main.push(*l);
            }
        }
    }
    let sizes: Vec<usize> = match &request.pairs {
        Some(list) => list.iter().flatten().copied().collect(),
        None => sweep_sizes,
    };
    let sweep: Vec<Lang> = if request.pairs.is_some() && sweep_langs.is_empty() {
        main.clone()
    } else {
        sweep_langs.into_iter().filter(keep).collect()
    };
    let high: Vec<Lang> = high.into_iter().filter(keep).collect();
    let seeds = |preset_count: u64| request.seeds.unwrap_or(preset_count);
    // The full sweep runs from the random start only (see [`budget`]).
    let sweep_starts: Vec<Start> = match request.preset {
        Full => request.starts.iter().copied().filter(|s| *s == Start::Random).collect(),
        Quick => request.starts.clone(),
    };
    let mut groups: Vec<GroupPlan> = vec![
        (Group::Main, main, vec![None], seeds(main_seeds), request.starts.clone()),
        (Group::Sweep, sweep, sizes.into_iter().map(Some).collect(), seeds(main_seeds), sweep_starts),
        (Group::HighResource, high, vec![None], high_seeds.min(seeds(high_seeds)), request.starts.clone()),
    ];
    // A language of the main grid that is also swept keeps its all-pairs runs in the main grid.
    groups.retain(|g| !g.1.is_empty() && !g.2.is_empty());
    let mut runs = Vec::new();
    for (group, langs, sizes, seed_count, starts) in groups {
        for &lang in &langs {
            for &start in &starts {
                for &pairs in &sizes {
                    for seed in 0..seed_count {
                        for &method in &request.methods {
                            let budget = request
                                .budget_override
                                .unwrap_or_else(|| budget(request.preset, start, pairs));
                            runs.push(RunSpec { group, lang, start, pairs, seed, method, budget });
                        }
                    }
                }
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(preset: ExperimentPreset) -> PlanRequest {
        PlanRequest {
            preset,
            langs: None,
            methods: vec![Method::Ot, Method::Kd],
            starts: vec![Start::Random, Start::Ridge],
            seeds: None,
            pairs: None,
            budget_override: None,
        }
    }

    #[test]
    fn preset_grids_have_the_documented_sizes() {
        // quick: 2 languages x 2 starts x 2 seeds x 2 methods = 16.
        let quick = plan(&request(ExperimentPreset::Quick));
        assert_eq!(quick.len(), 16);
        // full: main 4 x 2 x 3 x 2 = 48; sweep 3 languages x 1 start (random) x 3 sizes x 3 seeds
        // x 2 = 54; higher-resource 3 x 2 x 1 x 2 = 12; total 114.
        let full = plan(&request(ExperimentPreset::Full));
        let count = |g| full.iter().filter(|r| r.group == g).count();
        assert_eq!((count(Group::Main), count(Group::Sweep), count(Group::HighResource)), (48, 54, 12));
        let mut ids: Vec<String> = full.iter().map(RunSpec::id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), full.len(), "run ids are unique");
    }

    #[test]
    fn overrides_narrow_the_grid() {
        let mut r = request(ExperimentPreset::Quick);
        r.langs = Some(vec![Lang::GN]);
        r.methods = vec![Method::Kd];
        r.starts = vec![Start::Ridge];
        r.seeds = Some(3);
        r.pairs = Some(vec![Some(500), None]);
        let runs = plan(&r);
        // Main: gn x ridge x 3 seeds; sweep on the main languages (quick has none): 500 x 3 seeds.
        assert_eq!(runs.len(), 6);
        assert!(runs.iter().all(|s| s.lang == Lang::GN && s.method == Method::Kd));
        assert_eq!(runs.iter().filter(|s| s.pairs == Some(500)).count(), 3);
        assert_eq!(runs[0].id(), "gn-ridge-all-kd-s0");
    }
}
