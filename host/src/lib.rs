//! otkd host library, one module per stage of the data flow in `DESIGN.md`.
pub mod cli;
pub mod commands;
pub mod data;
pub mod distill;
pub mod eval;
pub mod linalg;
pub mod paths;
pub mod rng;
pub mod student;
pub mod teacher;
