//! The glue between flags and library code: resolves inputs, opens files, shows progress,
//! prints tables or JSON. Every function returns an error for main.rs to turn into an exit code.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::baseline::{self, LanguageBaselines};
use crate::cache::{CacheStatus, TeacherCache};
use crate::cli::{
    BaselineArgs, BenchCommand, BenchTeacherArgs, BenchTrainArgs, Cli, Command, DataCommand, EmbedArgs,
    EncodeArgs, InitArg, Inputs, PairsArg, TeacherCommand, TrainArgs,
};
use crate::data::{Lang, Multi30k, Split, resolve_data_dir};
use crate::losses::LossConfig;
use crate::optim::AdamWConfig;
use crate::paths::{DEFAULT_TEACHER, TEACHER_ENV, cache_dir, resolve_dir};
use crate::teacher::Teacher;
use crate::train::{EvalRecord, FinalReport, Init, Outcome, TrainConfig, TrainData, Trainer};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Check(flags)) => data_check(&cli.inputs, flags.json),
        Command::Teacher(TeacherCommand::Encode(args)) => teacher_encode(&cli.inputs, &args),
        Command::Teacher(TeacherCommand::Embed(args)) => teacher_embed(&cli.inputs, &args),
        Command::Baseline(args) => run_baseline(&cli.inputs, &args),
        Command::Train(args) => run_train(&cli.inputs, &args),
        Command::Bench(BenchCommand::Teacher(args)) => bench_teacher(&cli.inputs, &args),
        Command::Bench(BenchCommand::Train(args)) => bench_train(&cli.inputs, &args),
    }
}

fn open_data(inputs: &Inputs) -> Result<Multi30k> {
    let root = resolve_data_dir(inputs.data.as_deref())?;
    Ok(Multi30k::open(root)?)
}

fn open_teacher(inputs: &Inputs) -> Result<Teacher> {
    let dir = resolve_dir(inputs.teacher.as_deref(), TEACHER_ENV, DEFAULT_TEACHER).map_err(|tried| {
        anyhow::anyhow!(
            "teacher directory not found; tried {} (pass --teacher DIR or set {TEACHER_ENV})",
            tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })?;
    Ok(Teacher::load(&dir)?)
}

fn open_cache(inputs: &Inputs, teacher: &Teacher) -> Result<TeacherCache> {
    Ok(TeacherCache::new(cache_dir(inputs.cache.as_deref()), teacher)?)
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_message(what.to_string());
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn data_check(inputs: &Inputs, json: bool) -> Result<()> {
    let data = open_data(inputs)?;
    let report = data.check();
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.render_table());
    }
    if !report.is_ok() {
        bail!("{} defect(s) in {}", report.defects.len(), data.root().display());
    }
    Ok(())
}

/// English captions of a split, encoded through the cache with token states.
pub fn cached_english(
    teacher: &Teacher,
    cache: &TeacherCache,
    data: &Multi30k,
    split: Split,
    batch: usize,
    keep_token_states: bool,
) -> Result<(Vec<String>, crate::teacher::TeacherOutputs, CacheStatus)> {
    let captions = data.captions(split, Lang::En)?;
    let bar = progress_bar(captions.len(), &format!("{split}.en"));
    let (outputs, status) = cache
        .load_or_encode(teacher, &format!("{split}.en"), &captions, keep_token_states, batch, |done| {
            bar.set_position(done as u64)
        })
        .with_context(|| format!("encoding {split} English captions"))?;
    bar.finish_and_clear();
    Ok((captions, outputs, status))
}

#[derive(Serialize)]
struct EncodeSummary {
    split: String,
    sentences: usize,
    cached: bool,
    sentences_per_second: Option<f64>,
}

fn teacher_encode(inputs: &Inputs, args: &EncodeArgs) -> Result<()> {
    let data = open_data(inputs)?;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let mut summary = Vec::new();
    for &split in &args.splits {
        let (captions, _, status) =
            cached_english(&teacher, &cache, &data, split, args.batch as usize, true)?;
        let sentences_per_second = match status {
            CacheStatus::Hit => None,
            CacheStatus::Encoded { sentences_per_second } => Some(sentences_per_second),
        };
        if !args.json {
            match sentences_per_second {
                None => println!("{split}.en: {} sentences, already cached", captions.len()),
                Some(rate) => {
                    println!("{split}.en: {} sentences encoded, {rate:.0} sentences/s", captions.len())
                }
            }
        }
        summary.push(EncodeSummary {
            split: split.to_string(),
            sentences: captions.len(),
            cached: sentences_per_second.is_none(),
            sentences_per_second,
        });
    }
    if args.json {
        print_json(&summary)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Embedded {
    text: String,
    tokens: Vec<String>,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_states: Option<Vec<Vec<f32>>>,
}

fn teacher_embed(inputs: &Inputs, args: &EmbedArgs) -> Result<()> {
    if let Some(i) = args.sentences.iter().position(|s| s.trim().is_empty()) {
        bail!("sentence {} is empty: nothing to embed", i + 1);
    }
    let teacher = open_teacher(inputs)?;
    let tokens = teacher.tokenize(&args.sentences)?;
    let outputs = teacher.encode(&args.sentences, 32, args.states, |_| {})?;
    let dim = outputs.dim;
    let embedded: Vec<Embedded> = args
        .sentences
        .iter()
        .zip(tokens)
        .enumerate()
        .map(|(i, (text, t))| Embedded {
            text: text.clone(),
            tokens: t.tokens,
            token_ids: t.ids,
            embedding: outputs.embeddings[i * dim..(i + 1) * dim].to_vec(),
            token_states: outputs.token_states.as_ref().map(|s| {
                s.sentence(i, dim).chunks(dim).map(|row| row.iter().map(|v| v.to_f32()).collect()).collect()
            }),
        })
        .collect();
    if args.json {
        return print_json(&embedded);
    }
    for e in &embedded {
        println!("{}", e.text);
        println!("  tokens ({}): {}", e.tokens.len(), e.tokens.join(" "));
        let head: Vec<String> = e.embedding.iter().take(6).map(|v| format!("{v:+.5}")).collect();
        println!("  embedding [{dim}]: {} ...", head.join(" "));
        if let Some(states) = &e.token_states {
            for (token, row) in e.tokens.iter().zip(states) {
                let head: Vec<String> = row.iter().take(4).map(|v| format!("{v:+.3}")).collect();
                println!("    {token:>12}: {} ...", head.join(" "));
            }
        }
    }
    Ok(())
}

fn run_baseline(inputs: &Inputs, args: &BaselineArgs) -> Result<()> {
    let data = open_data(inputs)?;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let batch = args.batch as usize;
    let (_, en_test, _) = cached_english(&teacher, &cache, &data, Split::Test2016Flickr, batch, false)?;
    let dim = en_test.dim;
    let ridge_inputs = if args.ridge {
        let (_, train_en, _) = cached_english(&teacher, &cache, &data, Split::Train, batch, false)?;
        let (_, val_en, _) = cached_english(&teacher, &cache, &data, Split::Val, batch, false)?;
        Some((train_en, val_en))
    } else {
        None
    };
    let mut rows = Vec::new();
    for &lang in &args.langs {
        if lang == Lang::En {
            bail!("--langs: en is the pivot language; pick another language to compare against it");
        }
        let test = data.bitext(Split::Test2016Flickr, lang)?;
        let train = data.bitext(Split::Train, lang)?;
        let x_texts = test.x();
        let bar = progress_bar(x_texts.len(), &format!("test.{lang}"));
        let (x_out, _) = cache.load_or_encode(
            &teacher,
            &format!("{}.{lang}", Split::Test2016Flickr),
            &x_texts,
            false,
            batch,
            |d| bar.set_position(d as u64),
        )?;
        bar.finish_and_clear();
        let en_rows: Vec<f32> = test
            .lines()
            .iter()
            .flat_map(|&l| en_test.embeddings[l * dim..(l + 1) * dim].iter().copied())
            .collect();
        let teacher_zero_shot = baseline::teacher_zero_shot(&x_out.embeddings, &en_rows, dim);
        let tfidf = baseline::tfidf_both_directions(&train, &test);
        if !test.skipped.is_empty() && !args.json {
            eprintln!(
                "{lang}: skipped {} test pair(s) with an empty side (lines {:?}, 1-based)",
                test.skipped.len(),
                test.skipped.iter().map(|l| l + 1).collect::<Vec<_>>()
            );
        }
        let ridge = match &ridge_inputs {
            Some((train_en, val_en)) => {
                let val = data.bitext(Split::Val, lang)?;
                let config = crate::ridge::RidgeConfig::default();
                let fit = crate::ridge::fit(
                    &config,
                    &train,
                    &train_en.embeddings,
                    &val,
                    &val_en.embeddings,
                    dim,
                    |_| {},
                );
                Some(baseline::RidgeBaseline {
                    parameters: fit.student.parameters(),
                    lambda: fit.student.lambda,
                    test: crate::ridge::evaluate(&fit.student, &test, &en_test.embeddings),
                })
            }
            None => None,
        };
        rows.push(LanguageBaselines {
            lang,
            pairs: test.pairs.len(),
            skipped: test.skipped.len(),
            teacher_zero_shot,
            tfidf,
            ridge,
        });
    }
    if args.json {
        print_json(&rows)
    } else {
        print!("{}", baseline::render_table(&rows));
        Ok(())
    }
}

#[derive(Serialize)]
struct BenchRow {
    batch_size: u32,
    sentences: usize,
    seconds: f64,
    sentences_per_second: f64,
    ratio_to_batch_1: Option<f64>,
}

fn bench_teacher(inputs: &Inputs, args: &BenchTeacherArgs) -> Result<()> {
    let data = open_data(inputs)?;
    let teacher = open_teacher(inputs)?;
    let captions = data.captions(Split::Val, Lang::En)?;
    let sentences = &captions[..(args.sentences as usize).min(captions.len())];
    // Warm-up: page in the weights and let the allocator settle.
    teacher.encode(&sentences[..sentences.len().min(64)], 64, false, |_| {})?;
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut batch_1_rate = None;
    for &batch_size in &args.batch_sizes {
        let start = Instant::now();
        teacher.encode(sentences, batch_size as usize, false, |_| {})?;
        let seconds = start.elapsed().as_secs_f64();
        let rate = sentences.len() as f64 / seconds;
        if batch_size == 1 {
            batch_1_rate = Some(rate);
        }
        rows.push(BenchRow {
            batch_size,
            sentences: sentences.len(),
            seconds,
            sentences_per_second: rate,
            ratio_to_batch_1: None,
        });
    }
    for row in &mut rows {
        row.ratio_to_batch_1 = batch_1_rate.map(|b| row.sentences_per_second / b);
    }
    if args.json {
        return print_json(&rows);
    }
    println!(
        "teacher encoding, {} val captions, {} rayon threads",
        sentences.len(),
        rayon::current_num_threads()
    );
    println!("batch  sentences/s  seconds  vs batch 1");
    for r in &rows {
        let ratio = r.ratio_to_batch_1.map_or("-".to_string(), |x| format!("{x:.2}x"));
        println!("{:>5}  {:>11.1}  {:>7.2}  {:>10}", r.batch_size, r.sentences_per_second, r.seconds, ratio);
    }
    Ok(())
}

/// The training configuration a command line asks for.
pub fn train_config(args: &TrainArgs, teacher_dim: usize) -> TrainConfig {
    TrainConfig {
        method: args.method,
        lang: args.lang,
        preset: args.preset,
        student: args.preset.config(teacher_dim),
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
    }
}

/// Set by Ctrl-C; the training loop checks it after every step.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct TrainProgress {
    bar: ProgressBar,
    last_r1: f64,
}

impl crate::train::Progress for TrainProgress {
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

fn run_train(inputs: &Inputs, args: &TrainArgs) -> Result<()> {
    if args.lang == Lang::En {
        bail!("--lang en: the student learns language X against English; pick another language");
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs")
            .join(format!("{:?}-{}-{:?}-s{}", args.method, args.lang, args.preset, args.seed).to_lowercase())
    });
    let last = out.join(crate::train::files::LAST);
    if args.resume && !last.is_file() {
        bail!("--resume: {} does not exist; nothing to continue", last.display());
    }
    let data = open_data(inputs)?;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let config = train_config(args, teacher.dim());
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
        let spinner = ProgressBar::new_spinner()
            .with_message(format!("fitting the ridge initialisation on {} pairs", prepared.lines.len()));
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner
    });
    let (mut trainer, start) = Trainer::open(config.clone(), &prepared, &out, args.resume)?;
    if let Some(spinner) = fitting {
        spinner.finish_and_clear();
    }
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst));
    eprintln!(
        "training {:?} on {}-en, {} pairs, student {:?} ({} parameters) -> {}",
        config.method,
        config.lang,
        prepared.lines.len(),
        config.preset,
        trainer.student().params().count(),
        out.display()
    );
    let bar = ProgressBar::new(config.steps as u64).with_position(start.step as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut progress = TrainProgress { bar, last_r1: f64::NAN };
    let outcome = trainer.run(start, &INTERRUPTED, &mut progress)?;
    progress.bar.finish_and_clear();
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
            print!("{}", render_final(&report));
            Ok(())
        }
    }
}

/// The human table of a finished run.
pub fn render_final(report: &FinalReport) -> String {
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
        "checkpoint  step  dev R@1 | test X->en R@1   R@5  R@10   MRR | en->X R@1   R@5  R@10   MRR\n",
    );
    for r in &report.checkpoints {
        let (a, b) = (&r.test.x_to_en, &r.test.en_to_x);
        out.push_str(&format!(
            "{:<10} {:>5}  {:>7.3} | {:>14.3} {:>5.3} {:>5.3} {:>5.3} | {:>9.3} {:>5.3} {:>5.3} {:>5.3}\n",
            r.label, r.step, r.dev_r1, a.r1, a.r5, a.r10, a.mrr, b.r1, b.r5, b.r10, b.mrr
        ));
    }
    out
}

#[derive(Serialize)]
struct TrainBenchRow {
    method: crate::losses::Method,
    steps: usize,
    batch: usize,
    seconds: f64,
    pairs_per_second: f64,
    seconds_per_29k_pairs: f64,
    cost_relative_to_kd: f64,
}

fn bench_train(inputs: &Inputs, args: &BenchTrainArgs) -> Result<()> {
    use crate::losses::Method;
    let data = open_data(inputs)?;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let (_, train_teacher, _) = cached_english(&teacher, &cache, &data, Split::Train, 64, true)?;
    let (_, val_teacher, _) = cached_english(&teacher, &cache, &data, Split::Val, 64, false)?;
    let train = data.bitext(Split::Train, args.lang)?;
    let val = data.bitext(Split::Val, args.lang)?;
    let config_for = |method| {
        let train_args = TrainArgs {
            lang: args.lang,
            preset: args.preset,
            batch: args.batch,
            // Step time does not depend on where the weights start; skip the ridge fit.
            init: InitArg::Random,
            ..TrainArgs::defaults(method)
        };
        train_config(&train_args, teacher.dim())
    };
    let prepared = TrainData::prepare(
        &config_for(Method::Ot),
        &train,
        train_teacher,
        (&val, &val_teacher),
        (&val, &val_teacher),
    )?;
    let mut rows: Vec<TrainBenchRow> = Vec::new();
    for method in [Method::Kd, Method::Ot] {
        let dir = std::env::temp_dir().join(format!("otkd-bench-train-{}-{method:?}", std::process::id()));
        let (mut trainer, _) = Trainer::open(config_for(method), &prepared, &dir, false)?;
        trainer.timed_steps(5)?;
        let seconds = trainer.timed_steps(args.steps as usize)?;
        let _ = std::fs::remove_dir_all(&dir);
        let pairs_per_second = (args.steps * args.batch) as f64 / seconds;
        let kd_seconds = rows.first().map_or(seconds, |r| r.seconds);
        rows.push(TrainBenchRow {
            method,
            steps: args.steps as usize,
            batch: args.batch as usize,
            seconds,
            pairs_per_second,
            seconds_per_29k_pairs: 29_000.0 / pairs_per_second,
            cost_relative_to_kd: seconds / kd_seconds,
        });
    }
    if args.json {
        return print_json(&rows);
    }
    println!(
        "training throughput, {} student, {}-en, batch {}, {} rayon threads",
        format!("{:?}", args.preset).to_lowercase(),
        args.lang,
        args.batch,
        rayon::current_num_threads()
    );
    println!("method  pairs/s  s per 29k pairs  cost vs kd");
    for r in &rows {
        println!(
            "{:<6}  {:>7.0}  {:>15.1}  {:>9.2}x",
            format!("{:?}", r.method).to_lowercase(),
            r.pairs_per_second,
            r.seconds_per_29k_pairs,
            r.cost_relative_to_kd
        );
    }
    Ok(())
}
