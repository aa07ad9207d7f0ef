//! otkd host library: data, teacher, teacher cache, retrieval metrics and baselines.
//! The `otkd` binary (main.rs) only parses flags and calls [`app::run`].
pub mod app;
pub mod baseline;
pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod losses;
pub mod metrics;
pub mod optim;
pub mod paths;
pub mod ridge;
pub mod rng;
pub mod student;
pub mod teacher;
pub mod train;
