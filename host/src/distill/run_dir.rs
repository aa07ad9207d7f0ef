//! The run directory: one owner for its file names, its record types, reading and writing them,
//! and loading a trained student back. Every other module goes through [`RunDir`].
//!
//! A run directory holds `config.json` (the [`TrainConfig`]), `train_lines.json` (the seeded
//! bitext subset), `metrics.jsonl` (one [`EvalRecord`] per dev evaluation),
//! `checkpoint-last.safetensors` (weights, optimiser and progress: a resume continues from it
//! bit for bit), `checkpoint-best.safetensors` (best dev R@1, step 0 included), for a student
//! narrower than the teacher `projection.safetensors` (the PCA projection of the teacher's space
//! it is distilled into, [`Projection`]) and, at the end,
//! `final.json` (a [`FinalReport`]: test metrics of the last and the best-dev checkpoint).
//!
//! The checkpoints are the source of truth: each records the configuration, a checksum of the
//! training lines and the dev history, so a hand-edited `config.json` or `train_lines.json` is
//! refused by name, and a resume rewrites `metrics.jsonl` from the checkpoint (no gaps).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::SourceSpec;
use crate::distill::checkpoint::{self, Checkpoint};
use crate::distill::config::TrainConfig;
use crate::eval::metrics::BothDirections;
use crate::paths::write_atomically;
use crate::rng::Fnv64;
use crate::student::Student;
use crate::teacher::projection::Projection;

/// File names inside a run directory.
pub mod files {
    /// The run's configuration.
    pub const CONFIG: &str = "config.json";
    /// The seeded subset of training lines.
    pub const TRAIN_LINES: &str = "train_lines.json";
    /// Dev evaluations.
    pub const METRICS: &str = "metrics.jsonl";
    /// Latest state.
    pub const LAST: &str = "checkpoint-last.safetensors";
    /// Best dev R@1.
    pub const BEST: &str = "checkpoint-best.safetensors";
    /// Test results.
    pub const FINAL: &str = "final.json";
    /// Where the pairs came from ([`crate::data::SourceSpec`]).
    pub const SOURCE: &str = "data.json";
    /// How the tokenizer's n-gram range was chosen (`--ngrams auto`).
    pub const NGRAMS: &str = "ngrams.json";
    /// The PCA projection of the teacher's space a narrower student is distilled into.
    pub const PROJECTION: &str = "projection.safetensors";
}

/// Which checkpoint of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointKind {
    /// The latest state (`checkpoint-last.safetensors`).
    Last,
    /// The best dev R@1 so far, the untrained step 0 included (`checkpoint-best.safetensors`).
    BestDev,
}

impl CheckpointKind {
    /// Its file name.
    pub fn file(self) -> &'static str {
        match self {
            CheckpointKind::Last => files::LAST,
            CheckpointKind::BestDev => files::BEST,
        }
    }
}

impl std::fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckpointKind::Last => "last",
            CheckpointKind::BestDev => "best-dev",
        })
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Optimiser steps done.
    pub step: usize,
    /// Training wall-clock seconds so far (evaluation excluded).
    pub elapsed_seconds: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean loss since the previous evaluation (absent at step 0).
    pub loss: Option<f64>,
    /// Mean KD term since the previous evaluation.
    pub kd: Option<f64>,
    /// Mean OT term since the previous evaluation (OT only).
    pub ot: Option<f64>,
    /// Mean Sinkhorn iterations used (OT only).
    pub sinkhorn_iterations: Option<f64>,
    /// Mean final marginal error (OT only).
    pub sinkhorn_marginal_error: Option<f64>,
    /// Dev X->en R@1.
    pub dev_r1: f64,
    /// Dev X->en MRR.
    pub dev_mrr: f64,
}

/// The dev result of the best checkpoint so far.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestDev {
    /// Step of the checkpoint.
    pub step: usize,
    /// Dev X->en R@1.
    pub r1: f64,
    /// Dev X->en MRR.
    pub mrr: f64,
}

/// Loss statistics accumulated between two evaluations (saved, so a resumed run reports the
/// same means as an uninterrupted one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Steps since the last evaluation.
    pub steps: usize,
    /// Sum of the total loss.
    pub loss: f64,
    /// Sum of the KD term.
    pub kd: f64,
    /// Sum of the OT term.
    pub ot: f64,
    /// Sum of the per-step mean Sinkhorn iterations.
    pub sinkhorn_iterations: f64,
    /// Sum of the per-step mean marginal errors.
    pub sinkhorn_marginal_error: f64,
}

/// The progress a checkpoint records beside its tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The run's configuration.
    pub config: TrainConfig,
    /// [`lines_checksum`] of the training lines.
    pub train_lines_checksum: u64,
    /// [`Projection::checksum`] of the run's teacher projection (`projection.safetensors`), when
    /// the student is narrower than the teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<u64>,
    /// Optimiser steps done.
    pub step: usize,
    /// Training seconds so far.
    pub elapsed_seconds: f64,
    /// The best dev result so far.
    pub best: Option<BestDev>,
    /// Loss statistics since the last evaluation.
    pub interval: Interval,
    /// Every dev evaluation so far: `metrics.jsonl` is rewritten from it on resume.
    pub history: Vec<EvalRecord>,
}

/// Test results of one checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointResult {
    /// Its step.
    pub step: usize,
    /// Its dev X->en R@1.
    pub dev_r1: f64,
    /// Test retrieval, both directions (documents: teacher English embeddings).
    pub test: BothDirections,
    /// The same ranked by CSLS.
    pub test_csls: BothDirections,
}

/// `final.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalReport {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Student parameters.
    pub parameters: usize,
    /// Training wall-clock seconds.
    pub elapsed_seconds: f64,
    /// Training pairs per second (both sides encoded per pair).
    pub pairs_per_second: f64,
    /// The last checkpoint.
    pub last: CheckpointResult,
    /// The best-dev checkpoint.
    pub best: CheckpointResult,
}

impl FinalReport {
    /// The result of `kind`.
    pub fn result(&self, kind: CheckpointKind) -> &CheckpointResult {
        match kind {
            CheckpointKind::Last => &self.last,
            CheckpointKind::BestDev => &self.best,
        }
    }
}

/// A trained student read back from its run directory.
pub struct TrainedStudent {
    /// The run's configuration (checked against the checkpoint's).
    pub config: TrainConfig,
    /// The student with the checkpoint's weights.
    pub student: Student,
    /// The projection of the teacher's space its output lives in (`None`: the teacher's own).
    pub projection: Option<Projection>,
    /// The checkpoint file read.
    pub path: PathBuf,
}

/// Checksum of a run's training lines, recorded in its checkpoints.
pub fn lines_checksum(lines: &[usize]) -> u64 {
    let mut h = Fnv64::default();
    for &line in lines {
        h.update(&(line as u64).to_le_bytes());
    }
    h.finish()
}

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run directory at `path` (nothing is read).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of one of its files ([`files`]).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The path of a checkpoint.
    pub fn checkpoint_path(&self, kind: CheckpointKind) -> PathBuf {
        self.file(kind.file())
    }

    /// Whether it holds a run (a checkpoint or a final report).
    pub fn holds_run(&self) -> bool {
        self.checkpoint_path(CheckpointKind::Last).exists() || self.file(files::FINAL).exists()
    }

    /// Whether the run finished (`final.json` exists).
    pub fn is_finished(&self) -> bool {
        self.file(files::FINAL).exists()
    }

    /// Starts a new run: writes `config.json` and `train_lines.json`, removes old metrics.
    pub fn create(&self, config: &TrainConfig, lines: &[usize]) -> Result<()> {
        std::fs::create_dir_all(&self.path).with_context(|| format!("creating {}", self.path.display()))?;
        write_json(&self.file(files::CONFIG), config)?;
        write_json(&self.file(files::TRAIN_LINES), &lines)?;
        let metrics = self.file(files::METRICS);
        if metrics.exists() {
            std::fs::remove_file(&metrics).with_context(|| format!("removing {}", metrics.display()))?;
        }
        Ok(())
    }

    /// `config.json`, validated.
    pub fn config(&self) -> Result<TrainConfig> {
        let path = self.file(files::CONFIG);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("reading {} (is {} a run directory?)", path.display(), self.path.display())
        })?;
        let config: TrainConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run configuration", path.display()))?;
        config.student.validate().with_context(|| path.display().to_string())?;
        Ok(config)
    }

    /// Records where the run's pairs come from; a resumed run must come from the same.
    pub fn record_source(&self, spec: &SourceSpec) -> Result<()> {
        let path = self.file(files::SOURCE);
        if path.exists() {
            let saved = self.source()?;
            if &saved != spec {
                anyhow::bail!(
                    "{}: the run was trained on other pairs ({}); rerun with the same data flags",
                    path.display(),
                    serde_json::to_string(&saved)?
                );
            }
            return Ok(());
        }
        write_json(&path, spec)
    }

    /// Records how `--ngrams auto` chose the tokenizer's n-gram range (the range itself is in
    /// `config.json`).
    pub fn record_ngram_choice(&self, choice: &crate::student::ridge::NgramChoice) -> Result<()> {
        write_json(&self.file(files::NGRAMS), choice)
    }

    /// Where the run's pairs came from (`data.json`; Multi30k for a run that records none).
    pub fn source(&self) -> Result<SourceSpec> {
        let path = self.file(files::SOURCE);
        if !path.exists() {
            return Ok(SourceSpec::Multi30k);
        }
        read_json(&path)
    }

    /// `train_lines.json`.
    pub fn train_lines(&self) -> Result<Vec<usize>> {
        read_json(&self.file(files::TRAIN_LINES))
    }

    /// Saves a checkpoint atomically.
    pub fn save_checkpoint(
        &self,
        kind: CheckpointKind,
        tensors: &[(String, Tensor)],
        state: &CheckpointState,
    ) -> Result<()> {
        Ok(checkpoint::save(&self.checkpoint_path(kind), tensors, state)?)
    }

    /// Reads a checkpoint (checksum and finiteness checked) and checks that `config.json` and
    /// `train_lines.json` are the files it was trained with.
    pub fn load_checkpoint(&self, kind: CheckpointKind) -> Result<Checkpoint<CheckpointState>> {
        let path = self.checkpoint_path(kind);
        let ckpt: Checkpoint<CheckpointState> = checkpoint::load(&path)?;
        let config = self.config()?;
        if config != ckpt.state.config {
            bail!(
                "{} does not match {}: the configuration was changed after training (checkpoint: {})",
                self.file(files::CONFIG).display(),
                path.display(),
                serde_json::to_string(&ckpt.state.config)?
            );
        }
        let lines = self.train_lines()?;
        if lines_checksum(&lines) != ckpt.state.train_lines_checksum {
            bail!(
                "{} does not match {}: the training lines were changed after training",
                self.file(files::TRAIN_LINES).display(),
                path.display()
            );
        }
        Ok(ckpt)
    }

    /// The progress recorded in `checkpoint-last` without its tensors checked (for estimates).
    pub fn last_step(&self) -> Option<usize> {
        checkpoint::load::<CheckpointState>(&self.checkpoint_path(CheckpointKind::Last))
            .ok()
            .map(|c| c.state.step)
    }

    /// The student of a checkpoint.
    pub fn load_student(&self, kind: CheckpointKind) -> Result<TrainedStudent> {
        let ckpt = self.load_checkpoint(kind)?;
        let path = self.checkpoint_path(kind);
        let config = ckpt.state.config;
        let student = Student::new(config.student, config.seed)?;
        student.load_weights(&ckpt.tensors).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let projection = match ckpt.state.projection {
            None => None,
            Some(sum) => {
                let projection = self.projection()?;
                if projection.checksum() != sum || projection.dim != config.student.out_dim {
                    bail!(
                        "{} does not match {}: the projection was changed after training",
                        self.file(files::PROJECTION).display(),
                        path.display()
                    );
                }
                Some(projection)
            }
        };
        Ok(TrainedStudent { config, student, projection, path })
    }

    /// Writes the run's teacher projection (`projection.safetensors`).
    pub fn save_projection(&self, projection: &Projection) -> Result<()> {
        Ok(projection.save(&self.file(files::PROJECTION))?)
    }

    /// The run's teacher projection (`projection.safetensors`, checksum checked).
    pub fn projection(&self) -> Result<Projection> {
        Ok(Projection::load(&self.file(files::PROJECTION))?)
    }

    /// Appends one evaluation to `metrics.jsonl`.
    pub fn append_metrics(&self, record: &EvalRecord) -> Result<()> {
        let path = self.file(files::METRICS);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{}", serde_json::to_string(record)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Replaces `metrics.jsonl` with `records` (a resume: the checkpoint's history), and says so
    /// when the file held something else (a torn or missing line, later steps).
    pub fn rewrite_metrics(&self, records: &[EvalRecord]) -> Result<()> {
        let path = self.file(files::METRICS);
        let text: String =
            records.iter().map(|r| Ok(serde_json::to_string(r)? + "\n")).collect::<Result<_>>()?;
        if let Ok(old) = std::fs::read_to_string(&path)
            && old != text
        {
            eprintln!(
                "{}: rewritten from the checkpoint's {} evaluation(s) (it held later, torn or missing records)",
                path.display(),
                records.len()
            );
        }
        write_atomically(&path, |tmp| std::fs::write(tmp, &text))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `metrics.jsonl`; a malformed line is an error naming its number.
    pub fn metrics(&self) -> Result<Vec<EvalRecord>> {
        let path = self.file(files::METRICS);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))
            })
            .collect()
    }

    /// Writes `final.json`.
    pub fn write_final(&self, report: &FinalReport) -> Result<()> {
        write_json(&self.file(files::FINAL), report)
    }

    /// Reads `final.json`.
    pub fn final_report(&self) -> Result<FinalReport> {
        read_json(&self.file(files::FINAL))
    }
}

/// Reads a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Writes a JSON file atomically, naming it in errors.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    write_atomically(path, |tmp| std::fs::write(tmp, &json))
        .with_context(|| format!("writing {}", path.display()))
}
