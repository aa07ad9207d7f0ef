//! AdamW with a warmup-then-cosine learning-rate schedule and global gradient-norm clipping.
//! Written here rather than taken from candle-nn so that its state can be checkpointed and a
//! resumed run continues bit for bit.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

/// Optimiser settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (not applied to vectors: biases, norms).
    pub weight_decay: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Total steps; the rate decays by a cosine from the end of warmup to 10% of the peak here.
    pub total_steps: usize,
    /// Largest global gradient L2 norm; larger gradients are scaled down to it.
    pub clip_norm: f64,
}

impl AdamWConfig {
    /// The learning rate at `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = 0.1;
        self.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
    }
}

/// AdamW over an ordered list of variables.
pub struct AdamW {
    config: AdamWConfig,
    vars: Vec<Var>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    step: usize,
}

/// What one optimiser step did.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

impl AdamW {
    /// A fresh optimiser (zero moments, step 0).
    pub fn new(vars: &[Var], config: AdamWConfig) -> candle_core::Result<Self> {
        let zeros = vars.iter().map(|v| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { config, vars: vars.to_vec(), first: zeros.clone(), second: zeros, step: 0 })
    }

    /// Applies one update from `grads`; variables without a gradient are left unchanged.
    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<StepInfo> {
        let mut sum_sq = 0f64;
        for var in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sum_sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
        }
        let grad_norm = sum_sq.sqrt();
        let clip = if grad_norm > self.config.clip_norm { self.config.clip_norm / grad_norm } else { 1.0 };
        let c = &self.config;
        let lr = c.lr_at(self.step);
        self.step += 1;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            // Detached: otherwise the moments would hold this step's graph, and through the
            // previous moments every earlier step's graph too.
            let g = (g.detach() * clip)?;
            self.first[i] = ((&self.first[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            self.second[i] = ((&self.second[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&self.first[i] / bias1)? / ((&self.second[i] / bias2)?.sqrt()? + c.eps)?)?;
            let decay = if var.rank() > 1 { c.weight_decay } else { 0.0 };
            let w = ((var.as_tensor().detach() * (1.0 - lr * decay))? - (update * lr)?)?;
            var.set(&w)?;
        }
        Ok(StepInfo { grad_norm, lr })
    }

    /// Moments as named tensors (`{name}.m`, `{name}.v`), for a checkpoint.
    pub fn state_tensors(&self, names: &[&str]) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            out.insert(format!("optimizer.{name}.m"), self.first[i].clone());
            out.insert(format!("optimizer.{name}.v"), self.second[i].clone());
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        names: &[&str],
        tensors: &HashMap<String, Tensor>,
        step: usize,
    ) -> Result<(), String> {
        for (i, name) in names.iter().enumerate() {
            for (suffix, slot) in [("m", &mut self.first[i]), ("v", &mut self.second[i])] {
                let key = format!("optimizer.{name}.{suffix}");
                let t = tensors.get(&key).ok_or_else(|| format!("tensor {key:?} missing"))?;
                if t.dims() != slot.dims() {
                    return Err(format!(
                        "tensor {key:?} has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    ));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn config() -> AdamWConfig {
        AdamWConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 2,
            total_steps: 10,
            clip_norm: 1.0,
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        let c = config();
        assert!((c.lr_at(0) - 0.05).abs() < 1e-12);
        assert!((c.lr_at(1) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(2) - 0.1).abs() < 1e-12);
        assert!(c.lr_at(6) < 0.1 && c.lr_at(6) > 0.01);
        assert!((c.lr_at(10) - 0.01).abs() < 1e-12);
        assert!((c.lr_at(100) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn minimises_a_quadratic_and_clips() {
        let x = Var::from_vec(vec![3f32, -4.0], 2, &Device::Cpu).unwrap();
        let mut opt =
            AdamW::new(std::slice::from_ref(&x), AdamWConfig { total_steps: 300, ..config() }).unwrap();
        let first = opt.step(&x.as_tensor().sqr().unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
        assert!((first.grad_norm - 10.0).abs() < 1e-4, "{}", first.grad_norm);
        for _ in 0..299 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
    }
}
