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
use crate::distill::checkpoint;
use crate::distill::losses::Method;
use crate::distill::trainer::{
    EvalRecord, FinalReport, Init, Outcome, Progress, TrainConfig, TrainData, Trainer, files,
};
use crate::eval::metrics::{BothDirections, both_directions, both_directions_ranks, metrics_from_ranks};
use crate::paths::write_atomically;
use crate::student::Student;

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
    /// "last" or "best-dev".
    pub label: String,
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
    /// The last checkpoint, then the best-dev one.
    pub checkpoints: Vec<CheckpointEvaluation>,
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

/// Reads a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    write_atomically(path, |tmp| std::fs::write(tmp, &json))
        .with_context(|| format!("writing {}", path.display()))
}

/// The directory of a run inside the experiment directory.
pub fn run_dir(out: &Path, spec: &RunSpec) -> PathBuf {
    out.join("runs").join(spec.id())
}

/// Seconds per step measured in this invocation, per method.
#[derive(Default)]
struct Pace {
    by_method: HashMap<u8, (usize, f64)>,
}

impl Pace {
    fn add(&mut self, method: Method, steps: usize, seconds: f64) {
        let e = self.by_method.entry(method as u8).or_default();
        e.0 += steps;
        e.1 += seconds;
    }

    fn seconds_per_step(&self, method: Method) -> Option<f64> {
        let rate = |(s, t): (usize, f64)| (s > 0).then(|| t / s as f64);
        self.by_method.get(&(method as u8)).copied().and_then(rate).or_else(|| {
            let (s, t) = self.by_method.values().fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            rate((s, t))
        })
    }

    /// Time left for `remaining` (run, steps still to do).
    fn eta(&self, remaining: &[(Method, usize)]) -> Option<f64> {
        remaining.iter().map(|&(m, steps)| self.seconds_per_step(m).map(|r| r * steps as f64)).sum()
    }
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
    // Steps each run still needs (finished runs: none).
    let mut left: Vec<usize> = specs
        .iter()
        .map(|s| {
            let dir = run_dir(out, s);
            if dir.join(files::FINAL).exists() {
                0
            } else {
                checkpoint::load::<serde_json::Value>(&dir.join(files::LAST))
                    .ok()
                    .and_then(|c| c.state["step"].as_u64())
                    .map_or(s.budget.steps, |done| s.budget.steps.saturating_sub(done as usize))
            }
        })
        .collect();
    for (index, spec) in specs.iter().enumerate() {
        let dir = run_dir(out, spec);
        let config = spec.config(base);
        let final_path = dir.join(files::FINAL);
        if final_path.exists() {
            let report: FinalReport = read_json(&final_path)?;
            if report.config != config {
                bail!(
                    "{} holds a finished run with another configuration; use another --out for a different grid",
                    dir.display()
                );
            }
            let evaluation = match read_json::<RunEvaluation>(&dir.join(EVALUATION)) {
                Ok(e) => e,
                Err(_) => {
                    observer.note(&format!("evaluating {}", spec.id()));
                    let prepared = materials.prepare(&config)?;
                    let probe = materials.probe()?;
                    evaluate_run(&dir, &config, &prepared, probe.as_deref())?
                }
            };
            observer.skipped(index, specs.len(), spec);
            let metrics = crate::distill::trainer::read_metrics(&dir.join(files::METRICS))?;
            let train_pairs = read_json::<Vec<usize>>(&dir.join(files::TRAIN_LINES))?.len();
            records.push(RunRecord { spec: *spec, report, metrics, evaluation, train_pairs });
            continue;
        }
        // The pace counts everything a run costs (preparation, ridge fit, evaluations), so the
        // estimate of the time left is in wall-clock seconds.
        let clock = Instant::now();
        let resume = dir.join(files::LAST).exists();
        let prepared = materials.prepare(&config)?;
        let (mut trainer, start) = Trainer::open(config.clone(), &prepared.data, &dir, resume)
            .with_context(|| format!("run {}", spec.id()))?;
        let from = start.step;
        let remaining: Vec<(Method, usize)> =
            specs.iter().zip(&left).skip(index).map(|(s, &l)| (s.method, l)).collect();
        observer.start_run(index, specs.len(), spec, from, pace.eta(&remaining));
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
                let evaluation = evaluate_run(&dir, &config, &prepared, probe.as_deref())?;
                pace.add(spec.method, step_now - from, clock.elapsed().as_secs_f64());
                let metrics = crate::distill::trainer::read_metrics(&dir.join(files::METRICS))?;
                let train_pairs = prepared.data.lines.len();
                records.push(RunRecord { spec: *spec, report: *report, metrics, evaluation, train_pairs });
            }
        }
    }
    Ok(Execution::Done(records))
}

/// Test ranks and probe of a finished run's last and best-dev checkpoints, saved to
/// `evaluation.json`.
pub fn evaluate_run(
    dir: &Path,
    config: &TrainConfig,
    prepared: &Prepared,
    probe: Option<&ImageProbe>,
) -> Result<RunEvaluation> {
    let report: FinalReport = read_json(&dir.join(files::FINAL))?;
    let mut checkpoints = Vec::new();
    for (file, result) in [(files::LAST, &report.checkpoints[0]), (files::BEST, &report.checkpoints[1])] {
        let ckpt: checkpoint::Checkpoint<serde_json::Value> = checkpoint::load(&dir.join(file))?;
        let student = Student::new(config.student, config.seed)?;
        student
            .load_weights(&ckpt.tensors)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(file).display()))?;
        let (x_to_en_ranks, en_to_x_ranks, probe) = test_ranks(&student, prepared, probe)?;
        checkpoints.push(CheckpointEvaluation {
            label: result.label.clone(),
            step: result.step,
            dev_r1: result.dev_r1,
            x_to_en_ranks,
            en_to_x_ranks,
            probe,
        });
    }
    let evaluation = RunEvaluation { checkpoints };
    write_json(&dir.join(EVALUATION), &evaluation)?;
    Ok(evaluation)
}

type Ranks = (Vec<usize>, Vec<usize>, Option<ProbeMetrics>);

fn test_ranks(student: &Student, prepared: &Prepared, probe: Option<&ImageProbe>) -> Result<Ranks> {
    let test = &prepared.data.test;
    let x = student.embed(&test.x, 256)?;
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
    let lambda = match base.init {
        Init::Ridge { lambda } => lambda,
        Init::Random => 0.1,
    };
    config.init = Init::Ridge { lambda };
    let prepared = materials.prepare(&config)?;
    let probe = materials.probe()?;
    let data: &TrainData = &prepared.data;
    let dim = config.student.out_dim;
    let dev_r1 = |s: &Student| -> Result<f64> {
        Ok(both_directions(&s.embed(&data.dev.x, 256)?, &data.dev.en, dim).x_to_en.r1)
    };
    let untrained = Student::new(config.student, 0)?;
    let (ua, ub, untrained_probe) = test_ranks(&untrained, &prepared, probe.as_deref())?;
    let ridge = Student::new(config.student, 0)?;
    ridge.init_from_ridge(&data.x, |s| data.teacher.embedding(data.lines[s]), lambda)?;
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
