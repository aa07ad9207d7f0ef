//! otkd host library: everything the `otkd` command does, one module per stage of the data flow
//! in `DESIGN.md`:
//!
//! - [`data`]: Multi30k loading and checks (bitext pairs, skipped empty lines, image features);
//! - [`teacher`]: the frozen English teacher on candle and the checksummed cache of its outputs;
//! - [`student`]: the student encoder over the runtime tokenizer's hashed features, and the
//!   closed-form ridge student that initialises it;
//! - [`distill`]: a run's configuration and material, the OT and KD losses, the optimiser,
//!   checkpoints, the run directory ([`distill::run_dir`], the one owner of its files) and the
//!   training loop;
//! - [`eval`]: retrieval metrics, the CSLS reference population and the baselines;
//! - [`export`]: the student and a document index as a blob, and the runtime on the host;
//! - [`experiment`]: the OT-vs-KD grid, its statistics, report and plots (`otkd experiment`);
//! - [`linalg`]: dense linear algebra (f64 for the ridge fits, f32 matrix products);
//! - [`commands`]: one module per CLI command (no command imports another), and [`cli`], the
//!   flags they take and the one place flags become configurations.
//!
//! [`paths`] resolves input directories and writes files atomically; [`rng`] is the seeded
//! generator every random choice goes through and the stable hash of caches and checksums. The
//! `otkd` binary (`main.rs`) parses flags, calls [`commands::run`] and turns errors into exit
//! codes.
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
#[doc(hidden)]
pub mod testing;
