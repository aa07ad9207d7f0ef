//! What defines a training run: method, language, student, budget, optimiser, loss and start.
//! Stored in `config.json` and in every checkpoint, so a run directory can be checked against
//! the run that wrote it.

use serde::{Deserialize, Serialize};

use crate::data::Lang;
use crate::distill::losses::{LossConfig, Method};
use crate::distill::optim::AdamWConfig;
use crate::student::{Preset, StudentConfig};

/// The ridge regularisation a ridge start uses unless told otherwise.
pub const DEFAULT_RIDGE_LAMBDA: f64 = 0.1;

/// Everything that defines a run; stored in `config.json` and in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// OT or KD.
    pub method: Method,
    /// Language X (paired with English).
    pub lang: Lang,
    /// Named student size.
    pub preset: Preset,
    /// The student's architecture (from the preset).
    pub student: StudentConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Pairs per step.
    pub batch: usize,
    /// Optimiser and schedule.
    pub optimizer: AdamWConfig,
    /// Loss settings.
    pub loss: LossConfig,
    /// Seed of initialisation, subset and batch order.
    pub seed: u64,
    /// Training pairs used (`None`: all).
    pub pairs: Option<usize>,
    /// Steps between dev evaluations.
    pub eval_every: usize,
    /// Where the weights start.
    pub start: Start,
    /// Ridge `lambda` of [`Start::Ridge`] (unused by a random start).
    pub ridge_lambda: f64,
}

/// Where a student's weights start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Seeded random weights: convergence is a real question.
    Random,
    /// The closed-form reduced-rank ridge fit of the teacher's embeddings from the training
    /// pairs' X side ([`crate::student::Student::init_from_ridge`]): both methods begin near
    /// their optimum.
    Ridge,
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Start::Random => "random",
            Start::Ridge => "ridge",
        })
    }
}

/// Why a run cannot start or continue. The values are the library's; a command phrases them
/// with its flags.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// More training pairs were asked for than exist.
    #[error("{asked} training pairs asked for; only {available} exist for {lang}")]
    TooFewPairs {
        /// Pairs asked for.
        asked: usize,
        /// Pairs in the bitext.
        available: usize,
        /// The language.
        lang: Lang,
    },
    /// Fewer training pairs than a batch holds: every batch would repeat pairs, and the in-batch
    /// KD terms would compare a pair with itself.
    #[error("{pairs} training pair(s) cannot fill a batch of {batch}")]
    FewerPairsThanBatch {
        /// Training pairs.
        pairs: usize,
        /// Batch size.
        batch: usize,
    },
    /// The output directory already holds a run and no resume was asked for.
    #[error("{dir} already holds a run")]
    RunExists {
        /// The run directory.
        dir: std::path::PathBuf,
    },
    /// A resume was asked for, but the directory holds no checkpoint.
    #[error("{path} does not exist; there is no run to continue")]
    NothingToResume {
        /// The missing checkpoint.
        path: std::path::PathBuf,
    },
    /// A resume was asked for with another configuration than the checkpoint's.
    #[error("{path} was written with another configuration (saved: {saved})")]
    ConfigMismatch {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// Its configuration as JSON.
        saved: String,
    },
    /// The output path exists and is not a directory.
    #[error("{path} exists and is not a directory")]
    OutIsNotADirectory {
        /// The path.
        path: std::path::PathBuf,
    },
}
