//! Distillation: what defines a run ([`config`]), its material ([`data`]), the two losses (OT
//! and KD), the optimiser, checkpoints, the run directory ([`run_dir`]) and the training loop
//! ([`trainer`]).
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod losses;
pub mod optim;
pub mod run_dir;
pub mod trainer;
