//! `otkd train`: one distillation run, with a progress bar, Ctrl-C saving and the final table.

use std::path::PathBuf;

use anyhow::{Result, bail};
use candle_core::Device;

use super::{
    Inputs, Interrupted, cached_english, open_cache, open_source, open_teacher, print_json, progress,
};
use crate::cli::{DeviceArg, NgramsArg, TrainArgs};
use crate::data::{Lang, Source, Split};
use crate::distill::config::{Start, TrainError};
use crate::distill::data::TrainData;
use crate::distill::run_dir::{CheckpointKind, EvalRecord, FinalReport, RunDir};
use crate::distill::trainer::{Outcome, Trainer};
use crate::student::ridge::{Ngrams, choose_ngram_range};

/// A library error phrased with the flags of `otkd train` (and `experiment`).
pub(super) fn with_flags(err: anyhow::Error) -> anyhow::Error {
    let Some(e) = err.downcast_ref::<TrainError>() else { return err };
    let message = match e {
        TrainError::TooFewPairs { asked, available, lang } => {
            format!("--pairs {asked}: only {available} training pairs exist for {lang}")
        }
        TrainError::FewerPairsThanBatch { pairs, batch } => format!(
            "--pairs {pairs} is smaller than --batch {batch}: every batch would repeat pairs and the in-batch loss compare a pair with itself; lower --batch or use more pairs"
        ),
        TrainError::RunExists { dir } => {
            format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                dir.display()
            )
        }
        TrainError::NothingToResume { path } => {
            format!("--resume: {} does not exist; nothing to continue", path.display())
        }
        TrainError::ConfigMismatch { path, saved } => format!(
            "--resume: {} was written with another configuration; rerun with the same flags (saved: {saved})",
            path.display()
        ),
        TrainError::OutIsNotADirectory { path } => {
            format!("--out {}: exists and is not a directory", path.display())
        }
    };
    anyhow::anyhow!(message)
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

/// The language a run trains: `--lang` (which the source must have; Multi30k's default is ay),
/// else every language of the bitext files, joined.
fn training_lang(source: &Source, flag: Option<Lang>) -> Result<Lang> {
    let available = source.langs();
    let lang = match (flag, source) {
        (Some(lang), _) => lang,
        (None, Source::Multi30k(_)) => Lang::AY,
        (None, Source::Bitext(_)) => Lang::joined(&available)?,
    };
    if lang.includes(Lang::EN) {
        bail!("--lang {lang}: the student learns language X against English; pick another language");
    }
    if let Some(missing) = lang.parts().find(|l| !available.contains(l)) {
        bail!(
            "--lang {lang}: {} has no {missing} pairs (it has: {})",
            source.describe(),
            available.iter().map(|l| l.code()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(lang)
}

pub fn run(inputs: &Inputs, args: &TrainArgs) -> Result<()> {
    let device = match args.device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda if !cfg!(feature = "cuda") => bail!(
            "--device cuda: this otkd was built without CUDA support; rebuild with `cargo build --release -p otkd-host --features cuda`"
        ),
        DeviceArg::Cuda => cuda_device()?,
    };
    if let Some(out) = args.out.as_ref().filter(|out| out.exists() && !out.is_dir()) {
        return Err(with_flags(TrainError::OutIsNotADirectory { path: out.clone() }.into()));
    }
    // Bitext files are read and checked before the teacher loads: a bad line fails in a second.
    let source = open_source(inputs, &args.source, args.lang)?;
    let lang = training_lang(&source, args.lang)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs")
            .join(format!("{:?}-{}-{:?}-s{}", args.method, lang, args.preset, args.seed).to_lowercase())
    });
    // Checked before the seconds of loading that follow.
    if out.exists() && !out.is_dir() {
        return Err(with_flags(TrainError::OutIsNotADirectory { path: out }.into()));
    }
    let dir = RunDir::new(&out);
    let last = dir.checkpoint_path(CheckpointKind::Last);
    if args.resume && !last.is_file() {
        return Err(with_flags(TrainError::NothingToResume { path: last }.into()));
    }
    if !args.resume && dir.holds_run() {
        return Err(with_flags(TrainError::RunExists { dir: out }.into()));
    }
    if args.resume {
        dir.record_source(&source.spec())?;
    }
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let config = args.config(lang, teacher.dim())?;
    let batch = args.teacher_batch as usize;
    let (_, train_teacher, _) = cached_english(&teacher, &cache, &source, Split::Train, batch, true)?;
    let (_, val_teacher, _) = cached_english(&teacher, &cache, &source, Split::Dev, batch, false)?;
    let (_, test_teacher, _) = cached_english(&teacher, &cache, &source, Split::Test, batch, false)?;
    let train_bitext = source.bitext(Split::Train, config.lang)?;
    let val_bitext = source.bitext(Split::Dev, config.lang)?;
    let test_bitext = source.bitext(Split::Test, config.lang)?;
    for b in [&train_bitext, &val_bitext, &test_bitext] {
        if !b.skipped.is_empty() {
            eprintln!("{}.{}: skipped {} pair(s) with an empty side", b.split, b.lang, b.skipped.len());
        }
    }
    let mut config = config;
    let ngram_choice = match args.ngrams {
        NgramsArg::Fixed(_) => None,
        // A resumed run keeps the setting it was trained with.
        NgramsArg::Auto if args.resume => {
            let saved = dir.config()?.student.tokenizer;
            config.student.tokenizer = Ngrams::of(&saved).apply(config.student.tokenizer);
            None
        }
        NgramsArg::Auto => {
            let spinner = progress::spinner(
                "choosing the tokenizer: closed-form ridge on dev for 3-5, 2-4, 1-3, 1-3/chars".into(),
            );
            let choice = choose_ngram_range(
                config.ridge_lambda as f32,
                &train_bitext,
                &train_teacher,
                &val_bitext,
                &val_teacher,
            )?;
            spinner.finish_and_clear();
            eprintln!("n-grams {choice}");
            config.student.tokenizer = choice.chosen.apply(config.student.tokenizer);
            Some(choice)
        }
    };
    let prepared = TrainData::prepare(
        &config,
        &train_bitext,
        train_teacher,
        (&val_bitext, &val_teacher),
        (&test_bitext, &test_teacher),
    )
    .map_err(with_flags)?;
    // The prepared data holds what training reads of the pairs (their texts, tokenized a batch at
    // a time); the pairs themselves (~330 bytes each) would stay through the ridge fit and training.
    drop(train_bitext);
    // A fresh ridge-initialised run first solves the ridge problem (seconds).
    let fitting = (!args.resume && config.start == Start::Ridge).then(|| {
        progress::spinner(format!("fitting the ridge initialisation on {} pairs", prepared.lines.len()))
    });
    if prepared.tokenizer.lossy_sentences > 0 || prepared.tokenizer.long_runs > 0 {
        eprintln!("{}.{}: {}", Split::Train, config.lang, prepared.tokenizer);
    }
    let (trainer, start) = Trainer::open(config.clone(), &prepared, &out, args.resume).map_err(with_flags)?;
    dir.record_source(&source.spec())?;
    if let Some(choice) = &ngram_choice {
        dir.record_ngram_choice(choice)?;
    }
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
        Outcome::Interrupted { step } => Err(Interrupted {
            what: format!("step {step}; checkpoint saved in {} (continue with --resume)", out.display()),
        }
        .into()),
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
    for kind in [CheckpointKind::Last, CheckpointKind::BestDev] {
        let r = report.result(kind);
        for (scoring, m) in [("cosine", &r.test), ("CSLS", &r.test_csls)] {
            out.push_str(&format!(
                "{:<10} {:>5}  {:>7.3}  {:<7} | {}\n",
                kind.to_string(),
                r.step,
                r.dev_r1,
                scoring,
                m.cells(14)
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
