//! otkd host library: everything the `otkd` command does, one module per stage of the data flow
//! in `DESIGN.md`:
//!
//! - [`data`]: Multi30k loading and checks (bitext pairs, skipped empty lines, image features);
//! - [`teacher`]: the frozen English teacher on candle and the checksummed cache of its outputs;
//! - [`student`]: the student encoder over the runtime tokenizer's hashed features;
//! - [`distill`]: the OT and KD losses, the optimiser, checkpoints and the training loop;
//! - [`eval`]: retrieval metrics, the baselines and the closed-form ridge student;
//! - [`experiment`]: the OT-vs-KD grid, its statistics, report and plots (`otkd experiment`);
//! - [`linalg`]: the dense f64 linear algebra of the ridge fits;
//! - [`commands`]: one module per CLI command, and [`cli`], the flags they take.
//!
//! `paths` resolves input directories and writes files atomically; `rng` is the seeded generator
//! every random choice goes through. The `otkd` binary (`main.rs`) parses flags, calls
//! [`commands::run`] and turns errors into the exit code.
#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod data;
pub mod distill;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod linalg;
pub mod paths;
pub mod rng;
pub mod student;
pub mod teacher;
