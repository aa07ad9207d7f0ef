//! Evaluation: retrieval metrics, the baselines every report is read against, and the
//! closed-form ridge student.
pub mod baseline;
pub mod metrics;
pub mod ridge;
