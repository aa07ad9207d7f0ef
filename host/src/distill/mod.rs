//! Distillation: the two losses (OT and KD), the optimiser, checkpoints and the training loop.
pub mod checkpoint;
pub mod losses;
pub mod optim;
pub mod trainer;
