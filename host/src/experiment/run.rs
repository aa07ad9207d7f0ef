//! Resumable execution of the grid. Each run is an ordinary training run directory
//! `runs/<id>/` (so `otkd train --resume` semantics apply): a run with `final.json` is not redone,
//! one with a checkpoint resumes from it, and after training the test set's per-query ranks and
//! the image probe of the last and best-dev checkpoints are saved beside it in `evaluation.json`.
//!
//! Expensive preparation (teacher outputs, tokenized bitext) comes from a [`Materials`] that the
//! caller shares across runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::plan::RunSpec;
use super::probe::{ImageProbe, ProbeMetrics};
use crate::data::Lang;
use crate::distill::config::{Start, TrainConfig};
use crate::distill::data::TrainData;
use crate::distill::losses::Method;
use crate::distill::run_dir::{CheckpointKind, EvalRecord, FinalReport, RunDir, read_json, write_json};
use crate::distill::trainer::{Outcome, Progress, Trainer};
use crate::eval::metrics::{BothDirections, both_directions, both_directions_ranks, metrics_from_ranks};
use crate::student::{EMBED_BATCH, Student};

/// Per-run evaluation file written beside `final.json`.
pub const EVALUATION: &str = "evaluation.json";

/// Training material of one run, shared between runs that need the same.
#[derive(Clone)]
pub struct Prepared {
    /// Tokenized bitext, teacher outputs, dev and test sets.
    pub data: Rc<TrainData>,
    /// Test caption line of each test pair (for the image probe).
    pub test_lines: Rc<Vec<usize>>,
}

/// Anchors that need more than a student: the teacher used on X, and char n-gram TF-IDF.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExternalAnchors {
    /// The English teacher applied to X as if it were English (test).
    pub teacher_zero_shot: Option<BothDirections>,
    /// Character n-gram TF-IDF fitted on the training bitext (test).
    pub tfidf: Option<BothDirections>,
    /// The probe read with the teacher's embeddings of X.
    pub teacher_zero_shot_probe: Option<ProbeMetrics>,
    /// The probe read with the teacher's embeddings of the English captions (its ceiling).
    pub teacher_english_probe: Option<ProbeMetrics>,
}

/// Where the experiment gets its inputs; the command implements it over Multi30k and the teacher
/// cache, tests over a synthetic bitext.
pub trait Materials {
    /// Training material for a run's configuration (its language, subset and seed).
    fn prepare(&mut self, config: &TrainConfig) -> Result<Prepared>;
    /// Teacher zero-shot and TF-IDF for a language.
    fn external_anchors(&mut self, lang: Lang) -> Result<ExternalAnchors>;
    /// The image probe, when image features exist.
    fn probe(&mut self) -> Result<Option<Rc<ImageProbe>>>;
}

/// What the experiment shows while it runs.
pub trait Observer {
    /// Run `index` (0-based) of `total` starts (or resumes at `from_step`); `eta_seconds` is the
    /// estimate of the time left for the whole experiment, when there is one.
    fn start_run(
        &mut self,
        index: usize,
        total: usize,
        spec: &RunSpec,
        from_step: usize,
        eta_seconds: Option<f64>,
    );
    /// The current run's step and evaluation callbacks.
    fn progress(&mut self) -> &mut dyn Progress;
    /// The current run ended (finished or interrupted).
    fn end_run(&mut self);
    /// A run found finished and not redone.
    fn skipped(&mut self, index: usize, total: usize, spec: &RunSpec);
    /// A phase without a bar (anchors, evaluation).
    fn note(&mut self, message: &str);
}

/// Test ranks and probe of one checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointEvaluation {
    /// Which checkpoint.
    pub kind: CheckpointKind,
    /// Its step.
    pub step: usize,
    /// Its dev X -> en R@1.
    pub dev_r1: f64,
    /// Test X -> en rank of every test pair (1-based), in test pair order.
    pub x_to_en_ranks: Vec<usize>,
    /// Test en -> X ranks.
    pub en_to_x_ranks: Vec<usize>,
    /// The image probe (X -> image).
    pub probe: Option<ProbeMetrics>,
}

impl CheckpointEvaluation {
    /// Test metrics from the ranks.
    pub fn test(&self) -> BothDirections {
        BothDirections {
            x_to_en: metrics_from_ranks(&self.x_to_en_ranks),
            en_to_x: metrics_from_ranks(&self.en_to_x_ranks),
        }
    }
}

/// `evaluation.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunEvaluation {
    /// The last checkpoint.
    pub last: CheckpointEvaluation,
    /// The best-dev checkpoint.
    pub best: CheckpointEvaluation,
}

impl RunEvaluation {
    /// The evaluation of `kind`.
    pub fn result(&self, kind: CheckpointKind) -> &CheckpointEvaluation {
        match kind {
            CheckpointKind::Last => &self.last,
            CheckpointKind::BestDev => &self.best,
        }
    }
}

/// A finished run, as the report reads it.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// What was run.
    pub spec: RunSpec,
    /// Its `final.json`.
    pub report: FinalReport,
    /// Its dev curve (`metrics.jsonl`).
    pub metrics: Vec<EvalRecord>,
    /// Its `evaluation.json`.
    pub evaluation: RunEvaluation,
    /// Training pairs it used (`train_lines.json`).
    pub train_pairs: usize,
}

/// Anchors of one language: every table's reference rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LanguageAnchors {
    /// Language X.
    pub lang: Lang,
    /// Teacher zero-shot, TF-IDF and the teacher's probe rows.
    pub external: ExternalAnchors,
    /// The closed-form reduced-rank ridge student at the student's own size (the ridge start
    /// before any step, all pairs): dev X -> en R@1 and test.
    pub ridge_dev_r1: f64,
    /// Its test metrics.
    pub ridge_test: BothDirections,
    /// Its probe.
    pub ridge_probe: Option<ProbeMetrics>,
    /// The untrained student (random start, seed 0, step 0): dev X -> en R@1.
    pub untrained_dev_r1: f64,
    /// Its test metrics.
    pub untrained_test: BothDirections,
    /// Its probe.
    pub untrained_probe: Option<ProbeMetrics>,
}

/// How the execution ended.
pub enum Execution {
    /// Every run finished.
    Done(Vec<RunRecord>),
    /// Ctrl-C: the current run saved its checkpoint; rerunning continues.
    Interrupted {
        /// The run that was interrupted.
        run: String,
        /// Its step.
        step: usize,
    },
}

/// The directory of a run inside the experiment directory.
pub fn run_dir(out: &Path, spec: &RunSpec) -> PathBuf {
    out.join("runs").join(spec.id())
}

/// The pace measured in this invocation, for the estimate of the time left: training seconds
/// per step per method (as the trainer measures them), and the seconds a run spends outside its
/// steps per evaluation (preparation, dev evaluations, the final test evaluation).
#[derive(Default)]
struct Pace {
    by_method: HashMap<u8, (usize, f64)>,
    other: (usize, f64),
}

impl Pace {
    /// A run that did `steps` steps in `train_seconds` of training, `evaluations` dev
    /// evaluations, and took `wall_seconds` in all.
    fn add(
        &mut self,
        method: Method,
        steps: usize,
        train_seconds: f64,
        evaluations: usize,
        wall_seconds: f64,
    ) {
        let e = self.by_method.entry(method as u8).or_default();
        e.0 += steps;
        e.1 += train_seconds;
        // One unit more than the evaluations: the preparation and the final test evaluation.
        self.other.0 += evaluations + 1;
        self.other.1 += (wall_seconds - train_seconds).max(0.0);
    }

    fn seconds_per_step(&self, method: Method) -> Option<f64> {
        let rate = |(s, t): (usize, f64)| (s > 0).then(|| t / s as f64);
        self.by_method.get(&(method as u8)).copied().and_then(rate).or_else(|| {
            let (s, t) = self.by_method.values().fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            rate((s, t))
        })
    }

    fn seconds_per_unit(&self) -> Option<f64> {
        (self.other.0 > 0).then(|| self.other.1 / self.other.0 as f64)
    }

    /// Time left for `remaining` runs (method, steps still to do, evaluations still to do) and
    /// `anchors` languages whose anchors are still to compute (each about as much work as
    /// [`ANCHOR_UNITS`] evaluation units: preparation, a ridge fit, two test evaluations and the
    /// teacher's anchors).
    fn eta(&self, remaining: &[(Method, usize, usize)], anchors: usize) -> Option<f64> {
        let unit = self.seconds_per_unit()?;
        let runs: Option<f64> = remaining
            .iter()
            .filter(|&&(_, steps, _)| steps > 0)
            .map(|&(m, steps, evals)| {
                self.seconds_per_step(m).map(|r| r * steps as f64 + unit * (evals + 1) as f64)
            })
            .sum();
        Some(runs? + unit * (ANCHOR_UNITS * anchors) as f64)
    }
}

/// Evaluation units one language's anchors cost, for the estimate of the time left.
const ANCHOR_UNITS: usize = 4;

/// Dev evaluations a run of `spec` still does after step `done`.
fn evaluations_left(spec: &RunSpec, done: usize) -> usize {
    let every = spec.budget.eval_every.max(1);
    let steps = spec.budget.steps;
    // Evaluations at multiples of `every` and at the last step, after `done`; step 0 if fresh.
    let at_multiples = steps / every - done.min(steps) / every;
    let at_end = usize::from(!steps.is_multiple_of(every) && done < steps);
    at_multiples + at_end + usize::from(done == 0)
}

/// Runs every spec not yet finished under `out/runs/`, then returns all runs' records.
pub fn execute(
    out: &Path,
    specs: &[RunSpec],
    base: &TrainConfig,
    materials: &mut dyn Materials,
    interrupt: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<Execution> {
    let mut records = Vec::with_capacity(specs.len());
    let mut pace = Pace::default();
    let mut anchor_langs: Vec<Lang> = specs.iter().map(|s| s.lang).collect();
    anchor_langs.sort_by_key(|l| l.to_string());
    anchor_langs.dedup();
    let anchors_left =
        anchor_langs.iter().filter(|l| !out.join("anchors").join(format!("{l}.json")).exists()).count();
    // Steps each run still needs (finished runs: none).
    let mut left: Vec<usize> = specs
        .iter()
        .map(|s| {
            let dir = RunDir::new(run_dir(out, s));
            if dir.is_finished() {
                0
            } else {
                dir.last_step().map_or(s.budget.steps, |done| s.budget.steps.saturating_sub(done))
            }
        })
        .collect();
    for (index, spec) in specs.iter().enumerate() {
        let dir = RunDir::new(run_dir(out, spec));
        let config = spec.config(base);
        if dir.is_finished() {
            let report = dir.final_report()?;
            if report.config != config {
                bail!(
                    "{} holds a finished run with another configuration; use another --out for a different grid",
                    dir.path().display()
                );
            }
            let evaluation = match read_json::<RunEvaluation>(&dir.file(EVALUATION)) {
                Ok(e) => e,
                Err(_) => {
                    observer.note(&format!("evaluating {}", spec.id()));
                    let prepared = materials.prepare(&config)?;
                    let probe = materials.probe()?;
                    evaluate_run(&dir, &prepared, probe.as_deref())?
                }
            };
            observer.skipped(index, specs.len(), spec);
            let metrics = dir.metrics()?;
            let train_pairs = dir.train_lines()?.len();
            records.push(RunRecord { spec: *spec, report, metrics, evaluation, train_pairs });
            continue;
        }
        // The pace counts everything a run costs (preparation, ridge fit, evaluations), so the
        // estimate of the time left is in wall-clock seconds.
        let clock = Instant::now();
        let resume = dir.checkpoint_path(CheckpointKind::Last).exists();
        let prepared = materials.prepare(&config)?;
        let (mut trainer, start) = Trainer::open(config.clone(), &prepared.data, dir.path(), resume)
            .with_context(|| format!("run {}", spec.id()))?;
        let (from, start_elapsed) = (start.step, start.elapsed);
        let remaining: Vec<(Method, usize, usize)> = specs
            .iter()
            .zip(&left)
            .skip(index)
            .map(|(s, &l)| (s.method, l, evaluations_left(s, s.budget.steps - l)))
            .collect();
        observer.start_run(index, specs.len(), spec, from, pace.eta(&remaining, anchors_left));
        let outcome = trainer.run(start, interrupt, observer.progress());
        observer.end_run();
        let outcome = outcome.with_context(|| format!("run {}", spec.id()))?;
        let step_now = match &outcome {
            Outcome::Finished(_) => spec.budget.steps,
            Outcome::Interrupted { step } => *step,
        };
        left[index] = 0;
        match outcome {
            Outcome::Interrupted { step } => return Ok(Execution::Interrupted { run: spec.id(), step }),
            Outcome::Finished(report) => {
                let probe = materials.probe()?;
                let evaluation = evaluate_run(&dir, &prepared, probe.as_deref())?;
                pace.add(
                    spec.method,
                    step_now - from,
                    report.elapsed_seconds - start_elapsed,
                    evaluations_left(spec, from),
                    clock.elapsed().as_secs_f64(),
                );
                let metrics = dir.metrics()?;
                let train_pairs = prepared.data.lines.len();
                records.push(RunRecord { spec: *spec, report: *report, metrics, evaluation, train_pairs });
            }
        }
    }
    Ok(Execution::Done(records))
}

/// Test ranks and probe of a finished run's last and best-dev checkpoints, saved to
/// `evaluation.json`.
pub fn evaluate_run(dir: &RunDir, prepared: &Prepared, probe: Option<&ImageProbe>) -> Result<RunEvaluation> {
    let report = dir.final_report()?;
    let evaluate = |kind: CheckpointKind| -> Result<CheckpointEvaluation> {
        let result = report.result(kind);
        let trained = dir.load_student(kind)?;
        let (x_to_en_ranks, en_to_x_ranks, probe) = test_ranks(&trained.student, prepared, probe)?;
        Ok(CheckpointEvaluation {
            kind,
            step: result.step,
            dev_r1: result.dev_r1,
            x_to_en_ranks,
            en_to_x_ranks,
            probe,
        })
    };
    let evaluation =
        RunEvaluation { last: evaluate(CheckpointKind::Last)?, best: evaluate(CheckpointKind::BestDev)? };
    write_json(&dir.file(EVALUATION), &evaluation)?;
    Ok(evaluation)
}

type Ranks = (Vec<usize>, Vec<usize>, Option<ProbeMetrics>);

fn test_ranks(student: &Student, prepared: &Prepared, probe: Option<&ImageProbe>) -> Result<Ranks> {
    let test = &prepared.data.test;
    let x = student.embed(&test.x, EMBED_BATCH)?;
    let (a, b) = both_directions_ranks(&x, &test.en, student.config().out_dim);
    let probe = probe.map(|p| p.evaluate(&x, &prepared.test_lines));
    Ok((a, b, probe))
}

/// The anchors of `lang`, cached in `out/anchors/<lang>.json`. `base` gives the student's size;
/// the ridge anchor uses all training pairs.
pub fn anchors(
    out: &Path,
    lang: Lang,
    base: &TrainConfig,
    materials: &mut dyn Materials,
) -> Result<LanguageAnchors> {
    let path = out.join("anchors").join(format!("{lang}.json"));
    if let Ok(cached) = read_json::<LanguageAnchors>(&path) {
        return Ok(cached);
    }
    let mut config = base.clone();
    config.lang = lang;
    config.pairs = None;
    config.seed = 0;
    config.start = Start::Ridge;
    let lambda = config.ridge_lambda;
    let prepared = materials.prepare(&config)?;
    let probe = materials.probe()?;
    let data: &TrainData = &prepared.data;
    let dim = config.student.out_dim;
    let dev_r1 = |s: &Student| -> Result<f64> {
        Ok(both_directions(&s.embed(&data.dev.x, EMBED_BATCH)?, &data.dev.en, dim).x_to_en.r1)
    };
    let untrained = Student::new(config.student, 0)?;
    let (ua, ub, untrained_probe) = test_ranks(&untrained, &prepared, probe.as_deref())?;
    let ridge = Student::new(config.student, 0)?;
    ridge.init_from_ridge(&data.x, |s| data.targets.embedding(data.lines[s]), lambda)?;
    let (ra, rb, ridge_probe) = test_ranks(&ridge, &prepared, probe.as_deref())?;
    let both = |a: &[usize], b: &[usize]| BothDirections {
        x_to_en: metrics_from_ranks(a),
        en_to_x: metrics_from_ranks(b),
    };
    let anchors = LanguageAnchors {
        lang,
        external: materials.external_anchors(lang)?,
        ridge_dev_r1: dev_r1(&ridge)?,
        ridge_test: both(&ra, &rb),
        ridge_probe,
        untrained_dev_r1: dev_r1(&untrained)?,
        untrained_test: both(&ua, &ub),
        untrained_probe,
    };
    std::fs::create_dir_all(out.join("anchors"))?;
    write_json(&path, &anchors)?;
    Ok(anchors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::plan::{Budget, Group, Start};

    fn spec(steps: usize, eval_every: usize) -> RunSpec {
        RunSpec {
            group: Group::Main,
            lang: Lang::AY,
            start: Start::Random,
            pairs: None,
            seed: 0,
            method: Method::Kd,
            budget: Budget { steps, eval_every },
        }
    }

    #[test]
    fn evaluations_left_count_step_0_the_multiples_and_the_last_step() {
        assert_eq!(evaluations_left(&spec(300, 50), 0), 7);
        assert_eq!(evaluations_left(&spec(300, 50), 120), 4);
        assert_eq!(evaluations_left(&spec(310, 100), 0), 5);
        assert_eq!(evaluations_left(&spec(310, 100), 310), 0);
    }

    #[test]
    fn the_estimate_counts_steps_evaluations_and_anchors() {
        let mut pace = Pace::default();
        assert_eq!(pace.eta(&[(Method::Kd, 100, 3)], 1), None, "nothing measured yet");
        // 100 steps in 10 s of training; 3 evaluations and 8 s outside training: 2 s a unit.
        pace.add(Method::Kd, 100, 10.0, 3, 18.0);
        let eta = pace.eta(&[(Method::Kd, 200, 5), (Method::Ot, 0, 0)], 2).unwrap();
        // 200 steps at 0.1 s (OT falls back to the measured rate; it has no steps left), 6 units
        // of the first run, 2 anchors of 4 units.
        assert!((eta - (20.0 + 12.0 + 16.0)).abs() < 1e-9, "{eta}");
    }
}
