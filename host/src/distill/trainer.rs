//! The training loop shared by both methods: same student, bitext, optimiser and step budget;
//! only the loss differs. It keeps the loop and the two step paths; the run directory it writes
//! belongs to [`crate::distill::run_dir`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};

use crate::distill::config::{Start, TrainConfig, TrainError};
use crate::distill::data::{EvalSet, TrainData};
use crate::distill::losses::{Method, kd_loss, ot_term, ot_term_with_gradient};
use crate::distill::optim::{AdamW, StepInfo};
use crate::distill::run_dir::{
    BestDev, CheckpointKind, CheckpointResult, CheckpointState, EvalRecord, FinalReport, Interval, RunDir,
    lines_checksum,
};
use crate::eval::metrics::{BothDirections, both_directions};
use crate::rng::SplitMix64;
use crate::student::{
    EMBED_BATCH, Sentences, Student, StudentBatch, StudentOutput, TokenizedSentence, TokenizedTexts, fused,
};
use crate::teacher::projection::Projection;

/// One step's Sinkhorn statistics into `interval`: the means over the batch's items.
fn set_sinkhorn(interval: &mut Interval, iterations: &[u32], marginal_error: &[f32]) {
    let mean = |sum: f64, n: usize| sum / n.max(1) as f64;
    interval.sinkhorn_iterations = mean(iterations.iter().map(|&i| f64::from(i)).sum(), iterations.len());
    interval.sinkhorn_marginal_error =
        mean(marginal_error.iter().map(|&e| f64::from(e)).sum(), marginal_error.len());
}

/// How a call to [`Trainer::run`] ended.
pub enum Outcome {
    /// All steps done; `final.json` written.
    Finished(Box<FinalReport>),
    /// Interrupted; the last checkpoint holds the progress (`--resume` continues).
    Interrupted {
        /// Steps done.
        step: usize,
    },
}

/// Callbacks for progress display.
pub trait Progress {
    /// After every optimiser step.
    fn step(&mut self, step: usize, loss: f64);
    /// After every dev evaluation.
    fn eval(&mut self, record: &EvalRecord);
}

/// A training run: the student, its optimiser and the run directory it writes.
pub struct Trainer<'a> {
    config: TrainConfig,
    data: &'a TrainData,
    student: Student,
    optimizer: AdamW,
    dir: RunDir,
    path: StepPath,
    fused: FusedState,
}

/// How a training step computes its gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPath {
    /// The hand-written student pass ([`crate::student::fused`]) around candle's graph of the
    /// loss: the CPU's path (the default there).
    Fused,
    /// One candle graph from the student's inputs to the loss, differentiated by candle's
    /// autograd, with the Sinkhorn and KD custom ops: the path of a GPU (where candle's ops and
    /// the CUDA kernels run it), and on the CPU the reference the fused path is tested against.
    Graph,
}

/// Buffers of the hand-written training pass ([`crate::student::fused`]), kept across steps.
#[derive(Default)]
struct FusedState {
    tape_x: fused::Tape,
    tape_en: fused::Tape,
    grads: Vec<Vec<f32>>,
}

/// One student pass of a step: its packed batch and its outputs as leaf variables of the loss
/// graph (their gradients start the hand-written backward pass).
struct Pass {
    batch: fused::PackedBatch,
    tokens: Var,
    sentence: Var,
}

/// A step's loss, before its backward pass.
enum StepForward {
    Fused(Box<FusedForward>),
    /// The whole step's graph (see [`StepPath::Graph`]).
    Graph(Tensor),
}

/// A fused step's loss: the graph of the loss from the student's outputs, and those outputs.
struct FusedForward {
    total: Tensor,
    x: Pass,
    en: Option<Pass>,
    /// The OT term's gradient with respect to `x`'s token states, when written by hand (it is
    /// not in `total`'s graph).
    ot_gradient: Option<Vec<f32>>,
}

impl<'a> Trainer<'a> {
    /// A new run in `out` (must not hold a run), or the run in `out` continued when `resume`.
    pub fn open(
        config: TrainConfig,
        data: &'a TrainData,
        out: &Path,
        resume: bool,
    ) -> Result<(Self, RunStart)> {
        if out.exists() && !out.is_dir() {
            return Err(TrainError::OutIsNotADirectory { path: out.to_path_buf() }.into());
        }
        let student = Student::new(config.student, config.seed)?;
        let optimizer = AdamW::new(student.params().vars(), config.optimizer)?;
        let mut trainer = Self {
            config,
            data,
            student,
            optimizer,
            dir: RunDir::new(out),
            path: StepPath::Fused,
            fused: FusedState::default(),
        };
        let last = trainer.dir.checkpoint_path(CheckpointKind::Last);
        if resume {
            if !last.is_file() {
                return Err(TrainError::NothingToResume { path: last }.into());
            }
            let ckpt = trainer.dir.load_checkpoint(CheckpointKind::Last)?;
            if ckpt.state.config != trainer.config {
                let saved = serde_json::to_string(&ckpt.state.config)?;
                return Err(TrainError::ConfigMismatch { path: last, saved }.into());
            }
            if ckpt.state.projection != data.projection.as_ref().map(Projection::checksum) {
                bail!(
                    "{}: the teacher projection fitted now differs from the checkpoint's (another teacher or bitext?)",
                    last.display()
                );
            }
            if ckpt.state.train_lines_checksum != lines_checksum(&data.lines) {
                bail!(
                    "{}: the training lines selected now differ from the checkpoint's (another bitext?)",
                    last.display()
                );
            }
            trainer
                .student
                .load_weights(&ckpt.tensors)
                .map_err(|e| anyhow::anyhow!("{}: {e}", last.display()))?;
            let names: Vec<String> = trainer.param_names().iter().map(|n| n.to_string()).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            trainer
                .optimizer
                .load_state(&names, &ckpt.tensors, ckpt.state.step)
                .map_err(|e| anyhow::anyhow!("{}: {e}", last.display()))?;
            trainer.dir.rewrite_metrics(&ckpt.state.history)?;
            let state = ckpt.state;
            return Ok((
                trainer,
                RunStart {
                    step: state.step,
                    elapsed: state.elapsed_seconds,
                    best: state.best,
                    interval: state.interval,
                    history: state.history,
                },
            ));
        }
        if trainer.dir.holds_run() {
            return Err(TrainError::RunExists { dir: out.to_path_buf() }.into());
        }
        if trainer.config.start == Start::Ridge {
            let lambda = trainer.config.ridge_lambda;
            trainer.student.init_from_ridge(&data.x, |s| data.targets.embedding(data.lines[s]), lambda)?;
        }
        trainer.dir.create(&trainer.config, &data.lines)?;
        if let Some(projection) = &data.projection {
            trainer.dir.save_projection(projection)?;
        }
        Ok((trainer, RunStart::default()))
    }

    fn checkpoint_state(&self, step: usize, elapsed_seconds: f64, run: &RunStart) -> CheckpointState {
        CheckpointState {
            config: self.config.clone(),
            train_lines_checksum: lines_checksum(&self.data.lines),
            projection: self.data.projection.as_ref().map(Projection::checksum),
            step,
            elapsed_seconds,
            best: run.best,
            interval: run.interval,
            history: run.history.clone(),
        }
    }

    fn param_names(&self) -> Vec<&str> {
        self.student.params().iter().map(|(n, _)| n).collect()
    }

    /// The student being trained.
    pub fn student(&self) -> &Student {
        &self.student
    }

    /// The same run with the student (and its optimiser) on `device`; a device other than the
    /// CPU trains by [`StepPath::Graph`]. Checkpoints stay device-independent.
    pub fn on_device(mut self, device: &Device) -> Result<Self> {
        if device.same_device(self.student.device()) {
            return Ok(self);
        }
        let student = Student::new_on(self.config.student, self.config.seed, device)?;
        let weights =
            self.student.params().iter().map(|(n, v)| (n.to_string(), v.as_tensor().clone())).collect();
        student
            .load_weights(&weights)
            .map_err(|e| anyhow::anyhow!("moving the student to {device:?}: {e}"))?;
        self.optimizer.rebind(student.params().vars())?;
        self.student = student;
        if !device.is_cpu() {
            self.path = StepPath::Graph;
        }
        Ok(self)
    }

    /// The same run with steps computed by `path`.
    pub fn with_step_path(mut self, path: StepPath) -> Result<Self> {
        if path == StepPath::Fused && !self.student.device().is_cpu() {
            bail!("the fused training step runs on the CPU only; a GPU trains by the graph path");
        }
        self.path = path;
        Ok(self)
    }

    fn save(&self, kind: CheckpointKind, state: &CheckpointState) -> Result<()> {
        let with_optimizer = kind == CheckpointKind::Last;
        let path = self.dir.checkpoint_path(kind);
        for (name, var) in self.student.params().iter() {
            let finite = var.as_tensor().flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite());
            if !finite {
                bail!(
                    "weight {name:?} became NaN or Inf by step {}; not saving it over {}",
                    state.step,
                    path.display()
                );
            }
        }
        let mut tensors: Vec<(String, Tensor)> = self
            .student
            .params()
            .iter()
            .map(|(n, v)| Ok((n.to_string(), v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<_>>()?;
        if with_optimizer {
            let mut moments: Vec<_> =
                self.optimizer.state_tensors(&self.param_names())?.into_iter().collect();
            moments.sort_by(|a, b| a.0.cmp(&b.0));
            tensors.extend(moments);
        }
        self.dir.save_checkpoint(kind, &tensors, state)
    }

    /// Dev X->en R@1 and MRR of the current student.
    fn evaluate_dev(&self) -> Result<(f64, f64)> {
        let m = evaluate(&self.student, &self.data.dev)?;
        Ok((m.x_to_en.r1, m.x_to_en.mrr))
    }

    /// The student's forward pass of one side of the batch (hand-written, recording `tape`).
    fn pass(&self, sentences: &TokenizedTexts, indices: &[usize], tape: &mut fused::Tape) -> Result<Pass> {
        let config = &self.config.student;
        let batch: Vec<_> = indices.iter().map(|&i| sentences.sentence(i)).collect();
        let refs: Vec<&TokenizedSentence> = batch.iter().map(|s| &**s).collect();
        let batch = fused::PackedBatch::new(&refs, config.max_words);
        let out = fused::with_params(self.student.params().vars(), |p| {
            fused::forward(config, p, &batch, tape, true)
        })?;
        let (n, o) = (batch.len(), config.out_dim);
        let tokens = Var::from_vec(out.token_states, (n, batch.words, o), &Device::Cpu)?;
        let sentence = Var::from_vec(out.sentence, (n, o), &Device::Cpu)?;
        Ok(Pass { batch, tokens, sentence })
    }

    fn step_loss(&mut self, step: usize) -> Result<(StepForward, Interval)> {
        let (n, batch) = (self.data.x.len(), self.config.batch);
        let indices: Vec<usize> =
            (0..batch).map(|k| batch_index(self.config.seed, n, step * batch + k)).collect();
        match self.path {
            StepPath::Fused => self.step_loss_fused(&indices),
            StepPath::Graph => self.step_loss_graph(&indices),
        }
    }

    /// The KD term of the batch `indices` from the student's sentence embeddings of X (and of
    /// English, when the English term is on), with its value.
    fn kd_term(&self, indices: &[usize], x: &Tensor, en: Option<&Tensor>) -> Result<(Tensor, f64)> {
        let data = self.data;
        let lines: Vec<usize> = indices.iter().map(|&i| data.lines[i]).collect();
        let teacher_en = Tensor::from_vec(
            data.targets.embeddings_of(&lines),
            (indices.len(), data.targets.dim),
            x.device(),
        )?;
        let loss = self.config.loss;
        let kd = kd_loss(
            x,
            &teacher_en,
            en.map(|en| (en, loss.english_weight)),
            loss.kd_variant,
            loss.temperature,
        )?;
        let value = f64::from(kd.to_scalar::<f32>()?);
        Ok((kd, value))
    }

    fn step_loss_fused(&mut self, indices: &[usize]) -> Result<(StepForward, Interval)> {
        let data = self.data;
        let batch = indices.len();
        let mut tape = std::mem::take(&mut self.fused.tape_x);
        let x = self.pass(&data.x, indices, &mut tape);
        self.fused.tape_x = tape;
        let x = x?;
        let loss_cfg = self.config.loss;
        let en = if loss_cfg.english_weight > 0.0 {
            let mut tape = std::mem::take(&mut self.fused.tape_en);
            let en = self.pass(&data.en, indices, &mut tape);
            self.fused.tape_en = tape;
            Some(en?)
        } else {
            None
        };
        let (kd, kd_value) =
            self.kd_term(indices, x.sentence.as_tensor(), en.as_ref().map(|en| en.sentence.as_tensor()))?;
        let mut interval = Interval { steps: 1, kd: kd_value, ..Interval::default() };
        let mut ot_gradient = None;
        let total = match self.config.method {
            Method::Kd => kd,
            Method::Ot => {
                let (states, longest, lengths) = self.teacher_token_states(indices)?;
                let dim = data.targets.dim;
                let (iterations, marginal_error, total) = if loss_cfg.ot_unrolled {
                    let states = Tensor::from_vec(states, (batch, longest, dim), &Device::Cpu)?;
                    let ot = ot_term(&states, &lengths, x.tokens.as_tensor(), &x.batch.lengths, &loss_cfg)?;
                    interval.ot = f64::from(ot.loss.to_scalar::<f32>()?);
                    (ot.iterations, ot.marginal_error, (ot.loss + (kd * loss_cfg.ot_kd_weight)?)?)
                } else {
                    // Plan held constant: the OT term's gradient is written by hand and joins the
                    // token states' gradient in the backward pass; the graph holds only the KD term.
                    let tokens = x.tokens.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                    let shape = (longest, x.batch.words, self.config.student.out_dim);
                    let ot = ot_term_with_gradient(
                        &states,
                        &lengths,
                        &tokens,
                        &x.batch.lengths,
                        shape,
                        &loss_cfg,
                    )?;
                    interval.ot = f64::from(ot.loss);
                    ot_gradient = Some(ot.grad);
                    (ot.iterations, ot.marginal_error, (kd * loss_cfg.ot_kd_weight)?)
                };
                set_sinkhorn(&mut interval, &iterations, &marginal_error);
                total
            }
        };
        let graph_loss = f64::from(total.to_scalar::<f32>()?);
        interval.loss = graph_loss + if ot_gradient.is_some() { interval.ot } else { 0.0 };
        Ok((StepForward::Fused(Box::new(FusedForward { total, x, en, ot_gradient })), interval))
    }

    fn step_loss_graph(&mut self, indices: &[usize]) -> Result<(StepForward, Interval)> {
        let data = self.data;
        let config = &self.config.student;
        let forward = |sentences: &TokenizedTexts| -> Result<(StudentBatch, StudentOutput)> {
            let batch: Vec<_> = indices.iter().map(|&i| sentences.sentence(i)).collect();
            let refs: Vec<&TokenizedSentence> = batch.iter().map(|s| &**s).collect();
            let batch = StudentBatch::new(&refs, config.max_words)?;
            let out = self.student.forward(&batch)?;
            Ok((batch, out))
        };
        let (x_batch, x) = forward(&data.x)?;
        let loss_cfg = self.config.loss;
        let en = if loss_cfg.english_weight > 0.0 { Some(forward(&data.en)?.1) } else { None };
        let (kd, kd_value) = self.kd_term(indices, &x.sentence, en.as_ref().map(|en| &en.sentence))?;
        let mut interval = Interval { steps: 1, kd: kd_value, ..Interval::default() };
        let total = match self.config.method {
            Method::Kd => kd,
            Method::Ot => {
                let (states, longest, lengths) = self.teacher_token_states(indices)?;
                let shape = (indices.len(), longest, data.targets.dim);
                let states = Tensor::from_vec(states, shape, self.student.device())?;
                let ot = ot_term(&states, &lengths, &x.token_states, &x_batch.lengths, &loss_cfg)?;
                interval.ot = f64::from(ot.loss.to_scalar::<f32>()?);
                set_sinkhorn(&mut interval, &ot.iterations, &ot.marginal_error);
                (ot.loss + (kd * loss_cfg.ot_kd_weight)?)?
            }
        };
        interval.loss = f64::from(total.to_scalar::<f32>()?);
        Ok((StepForward::Graph(total), interval))
    }

    /// The backward pass of a step and the optimiser's update. Fused: candle's autograd through
    /// the loss down to the student's outputs, then the hand-written pass through the student.
    /// Graph: candle's autograd through everything.
    fn step_update(&mut self, forward: StepForward) -> Result<StepInfo> {
        let FusedForward { total, x, en, ot_gradient } = match forward {
            StepForward::Graph(total) => return Ok(self.optimizer.step(&total.backward()?)?),
            StepForward::Fused(fused) => *fused,
        };
        let grads = total.backward()?;
        let vars = self.student.params().vars();
        let fused = &mut self.fused;
        fused.grads.resize_with(vars.len(), Vec::new);
        for (g, v) in fused.grads.iter_mut().zip(vars) {
            g.clear();
            g.resize(v.elem_count(), 0.0);
        }
        let gradient = |var: &Var| -> Result<Option<Vec<f32>>> {
            Ok(grads.get(var.as_tensor()).map(|g| g.flatten_all()?.to_vec1::<f32>()).transpose()?)
        };
        let config = &self.config.student;
        for (pass, tape) in [(Some(&x), &mut fused.tape_x), (en.as_ref(), &mut fused.tape_en)] {
            let Some(pass) = pass else { continue };
            let (mut d_tokens, d_sentence) = (gradient(&pass.tokens)?, gradient(&pass.sentence)?);
            if std::ptr::eq(pass, &x)
                && let Some(ot) = &ot_gradient
            {
                match &mut d_tokens {
                    Some(d) => d.iter_mut().zip(ot).for_each(|(a, &b)| *a += b),
                    None => d_tokens = Some(ot.clone()),
                }
            }
            fused::with_params(vars, |p| {
                fused::backward(
                    config,
                    p,
                    &pass.batch,
                    tape,
                    d_tokens.as_deref(),
                    d_sentence.as_deref(),
                    &mut fused.grads,
                )
            })?;
        }
        let grads: Vec<Option<&[f32]>> = fused.grads.iter().map(|g| Some(g.as_slice())).collect();
        Ok(self.optimizer.step_with(&grads)?)
    }

    /// Teacher token states of the batch without `[CLS]` and `[SEP]` (they carry no word), in the
    /// student's output space (through the run's projection, if any), padded to
    /// `[batch, longest, out_dim]`, and the real lengths.
    fn teacher_token_states(&self, indices: &[usize]) -> Result<(Vec<f32>, usize, Vec<usize>)> {
        let teacher = &self.data.teacher;
        let states = teacher.token_states.as_ref().context("teacher token states missing")?;
        let (teacher_dim, dim) = (teacher.dim, self.data.targets.dim);
        let lengths: Vec<usize> = indices
            .iter()
            .map(|&i| {
                let line = self.data.lines[i];
                (states.offsets[line + 1] - states.offsets[line]).saturating_sub(2)
            })
            .collect();
        let longest = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = vec![0f32; indices.len() * longest * dim];
        for (b, (&i, &len)) in indices.iter().zip(&lengths).enumerate() {
            let rows = states
                .read_sentence(self.data.lines[i], teacher_dim)
                .context("reading teacher token states")?;
            let words = rows.get(teacher_dim..(len + 1) * teacher_dim).unwrap_or(&[]);
            let dst = padded[b * longest * dim..].iter_mut();
            match &self.data.projection {
                None => dst.zip(words).for_each(|(d, s)| *d = s.to_f32()),
                Some(p) => {
                    let words: Vec<f32> = words.iter().map(|s| s.to_f32()).collect();
                    dst.zip(p.token_states(&words)).for_each(|(d, s)| *d = s);
                }
            }
        }
        Ok((padded, longest, lengths))
    }

    /// Runs `steps` optimiser steps from step `first` with no evaluation or checkpoint, for
    /// benchmarks.
    pub fn timed_steps(&mut self, first: usize, steps: usize) -> Result<TimedSteps> {
        let start = Instant::now();
        let mut iterations = 0.0;
        for step in first..first + steps {
            let (forward, stats) = self.step_loss(step)?;
            self.step_update(forward)?;
            iterations += stats.sinkhorn_iterations;
        }
        Ok(TimedSteps {
            seconds: start.elapsed().as_secs_f64(),
            sinkhorn_iterations: (self.config.method == Method::Ot).then(|| iterations / steps.max(1) as f64),
        })
    }

    /// Trains until the step budget is spent or `interrupt` is set.
    pub fn run(
        &mut self,
        start: RunStart,
        interrupt: &AtomicBool,
        progress: &mut dyn Progress,
    ) -> Result<Outcome> {
        let mut run = start;
        // The step `checkpoint-last` holds, for the error message if the loss diverges.
        let mut saved = (run.step > 0).then_some(run.step);
        let clock = Instant::now();
        let mut eval_seconds = 0.0;
        let elapsed = run.elapsed;
        let elapsed_now = |eval_seconds: f64| elapsed + clock.elapsed().as_secs_f64() - eval_seconds;
        if run.step == 0 {
            // Step 0 is a candidate for the best checkpoint: a run that only gets worse (too
            // high a learning rate) must not export a worse student than it started with.
            let t = Instant::now();
            let (r1, mrr) = self.evaluate_dev()?;
            eval_seconds += t.elapsed().as_secs_f64();
            let record = EvalRecord {
                step: 0,
                elapsed_seconds: 0.0,
                lr: 0.0,
                loss: None,
                kd: None,
                ot: None,
                sinkhorn_iterations: None,
                sinkhorn_marginal_error: None,
                dev_r1: r1,
                dev_mrr: mrr,
            };
            run.best = Some(BestDev { step: 0, r1, mrr });
            run.history.push(record.clone());
            self.save(CheckpointKind::BestDev, &self.checkpoint_state(0, 0.0, &run))?;
            self.dir.append_metrics(&record)?;
            progress.eval(&record);
        }
        while run.step < self.config.steps {
            let (forward, stats) = self.step_loss(run.step)?;
            if !stats.loss.is_finite() {
                let last = self.dir.checkpoint_path(CheckpointKind::Last);
                let kept = match saved {
                    Some(saved) => format!("{} still holds step {saved}", last.display()),
                    None => format!("no checkpoint was saved yet in {}", self.dir.path().display()),
                };
                bail!(
                    "the loss became {} at step {} (kd {}, ot {}); stopped without saving: {kept}",
                    stats.loss,
                    run.step + 1,
                    stats.kd,
                    stats.ot,
                );
            }
            let lr = self.step_update(forward)?.lr;
            run.step += 1;
            let step = run.step;
            run.interval = add(run.interval, stats);
            progress.step(step, stats.loss);

            let interrupted = interrupt.load(Ordering::SeqCst);
            if step.is_multiple_of(self.config.eval_every) || step == self.config.steps {
                let t = Instant::now();
                let (r1, mrr) = self.evaluate_dev()?;
                eval_seconds += t.elapsed().as_secs_f64();
                let interval = run.interval;
                let mean = |v: f64| v / interval.steps.max(1) as f64;
                let is_ot = self.config.method == Method::Ot;
                let record = EvalRecord {
                    step,
                    elapsed_seconds: elapsed_now(eval_seconds),
                    lr,
                    loss: Some(mean(interval.loss)),
                    kd: Some(mean(interval.kd)),
                    ot: is_ot.then(|| mean(interval.ot)),
                    sinkhorn_iterations: is_ot.then(|| mean(interval.sinkhorn_iterations)),
                    sinkhorn_marginal_error: is_ot.then(|| mean(interval.sinkhorn_marginal_error)),
                    dev_r1: r1,
                    dev_mrr: mrr,
                };
                run.interval = Interval::default();
                run.history.push(record.clone());
                if run.best.is_none_or(|b| r1 > b.r1) {
                    run.best = Some(BestDev { step, r1, mrr });
                    self.save(
                        CheckpointKind::BestDev,
                        &self.checkpoint_state(step, record.elapsed_seconds, &run),
                    )?;
                }
                self.dir.append_metrics(&record)?;
                self.save(CheckpointKind::Last, &self.checkpoint_state(step, record.elapsed_seconds, &run))?;
                saved = Some(step);
                progress.eval(&record);
            } else if interrupted {
                self.save(
                    CheckpointKind::Last,
                    &self.checkpoint_state(step, elapsed_now(eval_seconds), &run),
                )?;
                saved = Some(step);
            }
            if interrupted && step < self.config.steps {
                return Ok(Outcome::Interrupted { step });
            }
        }
        let report = self.finish()?;
        Ok(Outcome::Finished(Box::new(report)))
    }

    /// Test retrieval of `student`, cosine and CSLS.
    fn test_both_scorings(&self, student: &Student) -> Result<(BothDirections, BothDirections)> {
        test_both_scorings(student, &self.data.test, &self.data.csls_reference)
    }

    /// Test metrics of the last and the best-dev checkpoints, written to `final.json`.
    fn finish(&self) -> Result<FinalReport> {
        let last = self.dir.load_checkpoint(CheckpointKind::Last)?;
        let best_dev = last.state.best.context("no dev evaluation recorded")?;
        let last_dev = last.state.history.last().map_or(0.0, |r| r.dev_r1);
        let (test, test_csls) = self.test_both_scorings(&self.student)?;
        let last_result = CheckpointResult { step: last.state.step, dev_r1: last_dev, test, test_csls };
        let best = self.dir.load_student(CheckpointKind::BestDev)?;
        let (test, test_csls) = self.test_both_scorings(&best.student)?;
        let best_result = CheckpointResult { step: best_dev.step, dev_r1: best_dev.r1, test, test_csls };
        let elapsed_seconds = last.state.elapsed_seconds;
        let report = FinalReport {
            config: self.config.clone(),
            parameters: self.student.params().count(),
            elapsed_seconds,
            pairs_per_second: self.config.steps as f64 * self.config.batch as f64 / elapsed_seconds.max(1e-9),
            last: last_result,
            best: best_result,
        };
        self.dir.write_final(&report)?;
        Ok(report)
    }
}

/// What [`Trainer::timed_steps`] measured.
#[derive(Clone, Copy, Debug)]
pub struct TimedSteps {
    /// Wall-clock seconds of the steps.
    pub seconds: f64,
    /// Mean Sinkhorn iterations per step (OT only; the mean over the batch's items).
    pub sinkhorn_iterations: Option<f64>,
}

/// Where a run starts: fresh (all zero) or from a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct RunStart {
    /// Steps already done.
    pub step: usize,
    /// Seconds already spent.
    pub elapsed: f64,
    /// Best dev result so far.
    pub best: Option<BestDev>,
    interval: Interval,
    history: Vec<EvalRecord>,
}

fn add(a: Interval, b: Interval) -> Interval {
    Interval {
        steps: a.steps + b.steps,
        loss: a.loss + b.loss,
        kd: a.kd + b.kd,
        ot: a.ot + b.ot,
        sinkhorn_iterations: a.sinkhorn_iterations + b.sinkhorn_iterations,
        sinkhorn_marginal_error: a.sinkhorn_marginal_error + b.sinkhorn_marginal_error,
    }
}

/// The training pair at global sample position `position`: epochs are seeded permutations, so
/// the batch of any step is known without replaying the ones before (resume needs only the step).
fn batch_index(seed: u64, pairs: usize, position: usize) -> usize {
    thread_local! {
        static EPOCH: std::cell::RefCell<(u64, usize, usize, Vec<usize>)> = const { std::cell::RefCell::new((0, 0, usize::MAX, Vec::new())) };
    }
    let epoch = position / pairs;
    EPOCH.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != seed || cached.1 != pairs || cached.2 != epoch {
            let mut order: Vec<usize> = (0..pairs).collect();
            SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), "batch-order")
                .shuffle(&mut order);
            *cached = (seed, pairs, epoch, order);
        }
        cached.3[position % pairs]
    })
}

/// Retrieval of the test or dev pairs: X queries by the student against teacher English
/// documents, per language block, averaged.
pub fn evaluate(student: &Student, set: &EvalSet) -> Result<BothDirections> {
    let dim = student.config().out_dim;
    let x = student.embed(&set.x, EMBED_BATCH)?;
    let rows = |v: &[f32], r: &std::ops::Range<usize>| v[r.start * dim..r.end * dim].to_vec();
    let parts: Vec<_> =
        set.blocks.iter().map(|r| both_directions(&rows(&x, r), &rows(&set.en, r), dim)).collect();
    Ok(BothDirections::mean(&parts))
}

/// Test retrieval of `student` on `set`, cosine and CSLS (hubness among `reference`'s queries),
/// per language block, averaged.
pub fn test_both_scorings(
    student: &Student,
    set: &EvalSet,
    reference: &EvalSet,
) -> Result<(BothDirections, BothDirections)> {
    let dim = student.config().out_dim;
    let x = student.embed(&set.x, EMBED_BATCH)?;
    let reference_x = student.embed(&reference.x, EMBED_BATCH)?;
    let rows = |v: &[f32], r: &std::ops::Range<usize>| v[r.start * dim..r.end * dim].to_vec();
    let (mut cosine, mut csls) = (Vec::new(), Vec::new());
    for r in &set.blocks {
        let (x, en) = (rows(&x, r), rows(&set.en, r));
        csls.push(crate::eval::csls_both_directions(&x, &en, &reference_x, &reference.en, dim));
        cosine.push(both_directions(&x, &en, dim));
    }
    Ok((BothDirections::mean(&cosine), BothDirections::mean(&csls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_order_is_a_permutation_per_epoch_and_changes_between_epochs() {
        let first: Vec<usize> = (0..10).map(|p| batch_index(1, 10, p)).collect();
        let second: Vec<usize> = (10..20).map(|p| batch_index(1, 10, p)).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(first, second);
        assert_eq!(batch_index(1, 10, 3), first[3], "recomputing an epoch gives the same order");
    }
}
