//! AdamW with a warmup-then-cosine learning-rate schedule and global gradient-norm clipping.
//! Written here rather than taken from candle-nn so that its state can be checkpointed and a
//! resumed run continues bit for bit.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Device, InplaceOp1, Layout, Tensor, Var};
use rayon::prelude::*;
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
///
/// The update runs in place on each variable's storage, one pass per tensor (a candle
/// [`InplaceOp1`]), with the moments kept as plain buffers: the same f32 arithmetic, operation
/// for operation, as the candle-op formulation it replaced, without its dozen temporary tensors
/// of every parameter's size per step. A variable on a GPU is copied to the host, updated there
/// by the same code and copied back.
pub struct AdamW {
    config: AdamWConfig,
    vars: Vec<Var>,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
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

/// One tensor's update, applied in place (see [`AdamW`]).
struct Update<'a> {
    grad: &'a [f32],
    first: RefCell<&'a mut [f32]>,
    second: RefCell<&'a mut [f32]>,
    /// `clip, beta1, 1 - beta1, beta2, 1 - beta2, 1 / bias1, 1 / bias2, eps, 1 - lr decay, lr`,
    /// each rounded to f32 as candle's scalar ops round them.
    k: [f32; 10],
}

/// Elements per rayon task of the update.
const UPDATE_CHUNK: usize = 64 * 1024;

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "otkd-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("adamw: f32 parameters only") };
        if !layout.is_contiguous() {
            candle_core::bail!("adamw: contiguous parameters only");
        }
        let start = layout.start_offset();
        self.apply(&mut data[start..start + layout.shape().elem_count()])
    }
}

impl Update<'_> {
    /// The update of one parameter's values `w`.
    fn apply(&self, w: &mut [f32]) -> candle_core::Result<()> {
        let (mut first, mut second) = (self.first.borrow_mut(), self.second.borrow_mut());
        if w.len() != self.grad.len() || w.len() != first.len() || w.len() != second.len() {
            candle_core::bail!("adamw: gradient or moments of the wrong size");
        }
        let [clip, b1, ob1, b2, ob2, ib1, ib2, eps, keep, lr] = self.k;
        w.par_chunks_mut(UPDATE_CHUNK)
            .zip(self.grad.par_chunks(UPDATE_CHUNK))
            .zip(first.par_chunks_mut(UPDATE_CHUNK))
            .zip(second.par_chunks_mut(UPDATE_CHUNK))
            .for_each(|(((w, g), m), v)| {
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = g * clip;
                    *m = *m * b1 + g * ob1;
                    *v = *v * b2 + (g * g) * ob2;
                    let update = (*m * ib1) / ((*v * ib2).sqrt() + eps);
                    *w = *w * keep - update * lr;
                }
            });
        Ok(())
    }
}

impl AdamW {
    /// A fresh optimiser (zero moments, step 0).
    pub fn new(vars: &[Var], config: AdamWConfig) -> candle_core::Result<Self> {
        let zeros: Vec<Vec<f32>> = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        Ok(Self { config, vars: vars.to_vec(), first: zeros.clone(), second: zeros, step: 0 })
    }

    /// Applies one update from `grads`; variables without a gradient are left unchanged.
    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<StepInfo> {
        let grads = self
            .vars
            .iter()
            .map(|var| grads.get(var.as_tensor()).map(|g| g.flatten_all()?.to_vec1::<f32>()).transpose())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let grads: Vec<Option<&[f32]>> = grads.iter().map(|g| g.as_deref()).collect();
        self.step_with(&grads)
    }

    /// Applies one update from one gradient per variable (in order, each of the variable's
    /// size; `None`: no gradient, the variable is left unchanged).
    pub fn step_with(&mut self, grads: &[Option<&[f32]>]) -> candle_core::Result<StepInfo> {
        if grads.len() != self.vars.len() {
            candle_core::bail!("adamw: {} gradients for {} variables", grads.len(), self.vars.len());
        }
        let sum_sq: f64 = grads
            .iter()
            .flatten()
            .map(|g| {
                g.par_chunks(UPDATE_CHUNK)
                    .map(|c| c.iter().map(|&v| f64::from(v * v)).sum::<f64>())
                    .sum::<f64>()
            })
            .sum();
        let grad_norm = sum_sq.sqrt();
        let clip = if grad_norm > self.config.clip_norm { self.config.clip_norm / grad_norm } else { 1.0 };
        let c = &self.config;
        let lr = c.lr_at(self.step);
        self.step += 1;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads[i] else { continue };
            let decay = if var.rank() > 1 { c.weight_decay } else { 0.0 };
            let k = [
                clip,
                c.beta1,
                1.0 - c.beta1,
                c.beta2,
                1.0 - c.beta2,
                1.0 / bias1,
                1.0 / bias2,
                c.eps,
                1.0 - lr * decay,
                lr,
            ]
            .map(|v| v as f32);
            let update = Update {
                grad,
                first: RefCell::new(self.first[i].as_mut_slice()),
                second: RefCell::new(self.second[i].as_mut_slice()),
                k,
            };
            if var.device().is_cpu() {
                var.as_tensor().inplace_op1(&update)?;
            } else {
                // A student on a GPU is updated on the host: the same f32 arithmetic on every
                // device, and for the micro student 6 MB across the bus each way per step.
                let mut w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                update.apply(&mut w)?;
                var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
            }
        }
        Ok(StepInfo { grad_norm, lr })
    }

    /// The same optimiser state driving `vars` instead (the same parameters moved to another
    /// device: same count and shapes, in the same order).
    pub fn rebind(&mut self, vars: &[Var]) -> candle_core::Result<()> {
        let same =
            vars.len() == self.vars.len() && vars.iter().zip(&self.vars).all(|(a, b)| a.dims() == b.dims());
        if !same {
            candle_core::bail!("adamw: rebinding to variables of other shapes");
        }
        self.vars = vars.to_vec();
        Ok(())
    }

    /// Moments as named tensors (`{name}.m`, `{name}.v`), for a checkpoint.
    pub fn state_tensors(&self, names: &[&str]) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let shape = self.vars[i].shape();
            out.insert(
                format!("optimizer.{name}.m"),
                Tensor::from_slice(&self.first[i], shape, &Device::Cpu)?,
            );
            out.insert(
                format!("optimizer.{name}.v"),
                Tensor::from_slice(&self.second[i], shape, &Device::Cpu)?,
            );
        }
        Ok(out)
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        names: &[&str],
        tensors: &HashMap<String, Tensor>,
        step: usize,
    ) -> Result<(), String> {
        for (i, name) in names.iter().enumerate() {
            let dims = self.vars[i].dims().to_vec();
            for (suffix, slot) in [("m", &mut self.first[i]), ("v", &mut self.second[i])] {
                let key = format!("optimizer.{name}.{suffix}");
                let t = tensors.get(&key).ok_or_else(|| format!("tensor {key:?} missing"))?;
                if t.dims() != dims.as_slice() {
                    return Err(format!("tensor {key:?} has shape {:?}, expected {:?}", t.dims(), dims));
                }
                *slot = t
                    .to_dtype(candle_core::DType::F32)
                    .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                    .map_err(|e| format!("tensor {key:?}: {e}"))?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
