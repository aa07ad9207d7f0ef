//! `otkd train`: one distillation run, with a progress bar, Ctrl-C saving and the final table.

use std::path::PathBuf;

use anyhow::{Result, bail};
use candle_core::Device;

use super::{Inputs, cached_english, open_cache, open_data, open_teacher, print_json, progress};
use crate::cli::{DeviceArg, InitArg, PairsArg, TrainArgs};
use crate::data::{Lang, Split};
use crate::distill::losses::LossConfig;
use crate::distill::optim::AdamWConfig;
use crate::distill::trainer::{EvalRecord, FinalReport, Init, Outcome, TrainConfig, TrainData, Trainer};

/// The training configuration a command line asks for.
pub fn train_config(args: &TrainArgs, teacher_dim: usize) -> Result<TrainConfig> {
    Ok(TrainConfig {
        method: args.method,
        lang: args.lang,
        preset: args.preset,
        student: args.preset.validated_config(teacher_dim)?,
        steps: args.steps as usize,
        batch: args.batch as usize,
        optimizer: AdamWConfig {
            lr: args.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: args.weight_decay,
            warmup_steps: args.warmup as usize,
            total_steps: args.steps as usize,
            clip_norm: args.clip_norm,
        },
        loss: LossConfig {
            method: args.method,
            kd_variant: args.kd_variant,
            temperature: args.temperature,
            english_weight: args.english_weight,
            ot_kd_weight: args.ot_kd_weight,
            epsilon: args.epsilon,
            sinkhorn_iterations: args.sinkhorn_iterations,
            sinkhorn_tolerance: args.sinkhorn_tolerance,
            ot_unrolled: args.ot_unrolled,
        },
        seed: args.seed,
        pairs: match args.pairs {
            PairsArg::All => None,
            PairsArg::Count(n) => Some(n),
        },
        eval_every: args.eval_every as usize,
        init: match args.init {
            InitArg::Ridge => Init::Ridge { lambda: args.ridge_lambda },
            InitArg::Random => Init::Random,
        },
    })
}

/// Set by Ctrl-C; the training loop checks it after every step.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct TrainProgress {
    bar: indicatif::ProgressBar,
    last_r1: f64,
}

impl crate::distill::trainer::Progress for TrainProgress {
    fn step(&mut self, step: usize, loss: f64) {
        self.bar.set_position(step as u64);
        self.bar.set_message(format!("loss {loss:.4} dev R@1 {:.3}", self.last_r1));
    }

    fn eval(&mut self, record: &EvalRecord) {
        self.last_r1 = record.dev_r1;
        self.bar.set_position(record.step as u64);
        if !self.bar.is_hidden() {
            return;
        }
        eprintln!(
            "step {:>6}  dev R@1 {:.4}  MRR {:.4}  loss {}",
            record.step,
            record.dev_r1,
            record.dev_mrr,
            record.loss.map_or("-".into(), |l| format!("{l:.4}"))
        );
    }
}

pub fn run(inputs: &Inputs, args: &TrainArgs) -> Result<()> {
    let device = match args.device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda if !cfg!(feature = "cuda") => bail!(
            "--device cuda: this otkd was built without CUDA support; rebuild with `cargo build --release -p otkd-host --features cuda`"
        ),
        DeviceArg::Cuda => cuda_device()?,
    };
    if args.lang == Lang::En {
        bail!("--lang en: the student learns language X against English; pick another language");
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs")
            .join(format!("{:?}-{}-{:?}-s{}", args.method, args.lang, args.preset, args.seed).to_lowercase())
    });
    let last = out.join(crate::distill::trainer::files::LAST);
    if args.resume && !last.is_file() {
        bail!("--resume: {} does not exist; nothing to continue", last.display());
    }
    let data = open_data(inputs)?;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let config = train_config(args, teacher.dim())?;
    let batch = args.teacher_batch as usize;
    let (_, train_teacher, _) = cached_english(&teacher, &cache, &data, Split::Train, batch, true)?;
    let (_, val_teacher, _) = cached_english(&teacher, &cache, &data, Split::Val, batch, false)?;
    let (_, test_teacher, _) = cached_english(&teacher, &cache, &data, Split::Test2016Flickr, batch, false)?;
    let train_bitext = data.bitext(Split::Train, config.lang)?;
    let val_bitext = data.bitext(Split::Val, config.lang)?;
    let test_bitext = data.bitext(Split::Test2016Flickr, config.lang)?;
    for b in [&train_bitext, &val_bitext, &test_bitext] {
        if !b.skipped.is_empty() {
            eprintln!("{}.{}: skipped {} pair(s) with an empty side", b.split, b.lang, b.skipped.len());
        }
    }
    let prepared = TrainData::prepare(
        &config,
        &train_bitext,
        train_teacher,
        (&val_bitext, &val_teacher),
        (&test_bitext, &test_teacher),
    )?;
    // A fresh ridge-initialised run first solves the ridge problem (seconds).
    let fitting = (!args.resume && matches!(config.init, Init::Ridge { .. })).then(|| {
        progress::spinner(format!("fitting the ridge initialisation on {} pairs", prepared.lines.len()))
    });
    if prepared.tokenizer.lossy_sentences > 0 || prepared.tokenizer.long_runs > 0 {
        eprintln!("{}.{}: {}", Split::Train, config.lang, prepared.tokenizer);
    }
    let (trainer, start) = Trainer::open(config.clone(), &prepared, &out, args.resume)?;
    let mut trainer = trainer.on_device(&device)?;
    if let Some(spinner) = fitting {
        spinner.finish_and_clear();
    }
    if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst)) {
        eprintln!("warning: Ctrl-C will stop training without saving a checkpoint ({e})");
    }
    eprintln!(
        "training {:?} on {}-en, {} pairs, student {:?} ({} parameters) -> {}",
        config.method,
        config.lang,
        prepared.lines.len(),
        config.preset,
        trainer.student().params().count(),
        out.display()
    );
    let bar = progress::steps(config.steps, start.step);
    let mut shown = TrainProgress { bar, last_r1: f64::NAN };
    let outcome = trainer.run(start, &INTERRUPTED, &mut shown)?;
    shown.bar.finish_and_clear();
    match outcome {
        Outcome::Interrupted { step } => {
            eprintln!(
                "interrupted at step {step}; checkpoint saved in {} (continue with --resume)",
                out.display()
            );
            Ok(())
        }
        Outcome::Finished(report) if args.json => print_json(&report),
        Outcome::Finished(report) => {
            out!("{}", render_final(&report));
            Ok(())
        }
    }
}

/// The human table of a finished run.
fn render_final(report: &FinalReport) -> String {
    let c = &report.config;
    let mut out = format!(
        "{:?} {}-en, {:?} student ({} parameters), {} steps x {} pairs in {:.0} s ({:.0} pairs/s)\n",
        c.method,
        c.lang,
        c.preset,
        report.parameters,
        c.steps,
        c.batch,
        report.elapsed_seconds,
        report.pairs_per_second
    );
    out.push_str(
        "checkpoint  step  dev R@1  scoring | test X->en R@1   R@5  R@10   MRR | en->X R@1   R@5  R@10   MRR\n",
    );
    for r in &report.checkpoints {
        for (scoring, m) in [("cosine", &r.test), ("CSLS", &r.test_csls)] {
            let (a, b) = (&m.x_to_en, &m.en_to_x);
            out.push_str(&format!(
                "{:<10} {:>5}  {:>7.3}  {:<7} | {:>14.3} {:>5.3} {:>5.3} {:>5.3} | {:>9.3} {:>5.3} {:>5.3} {:>5.3}\n",
                r.label, r.step, r.dev_r1, scoring, a.r1, a.r5, a.r10, a.mrr, b.r1, b.r5, b.r10, b.mrr
            ));
        }
    }
    out
}

/// GPU 0, or an error that says why not. cudarc panics instead of returning an error when the
/// driver library is missing (`../shared/TOOLCHAIN.md`), so that panic is caught here.
fn cuda_device() -> Result<Device> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let device = std::panic::catch_unwind(|| Device::new_cuda(0));
    std::panic::set_hook(hook);
    match device {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => bail!("--device cuda: no usable GPU 0 ({e})"),
        Err(_) => bail!(
            "--device cuda: the CUDA driver library (libcuda) could not be loaded; is an NVIDIA driver installed?"
        ),
    }
}
