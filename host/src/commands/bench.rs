//! `otkd bench teacher` and `otkd bench train`: throughput with a ratio measured in the same run.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::train::train_config;
use super::{Inputs, cached_english, open_cache, open_data, open_teacher, print_json};
use crate::cli::{BenchTeacherArgs, BenchTrainArgs, InitArg, TrainArgs};
use crate::data::{Lang, Split};
use crate::distill::trainer::{TrainData, Trainer};

#[derive(Serialize)]
struct BenchRow {
    batch_size: u32,
    sentences: usize,
    seconds: f64,
    sentences_per_second: f64,
    ratio_to_batch_1: Option<f64>,
}

/// Teacher sentences/s at each batch size, with the ratio to batch 1.
pub fn teacher(inputs: &Inputs, args: &BenchTeacherArgs) -> Result<()> {
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
    outln!(
        "teacher encoding, {} val captions, {} rayon threads",
        sentences.len(),
        rayon::current_num_threads()
    );
    outln!("batch  sentences/s  seconds  vs batch 1");
    for r in &rows {
        let ratio = r.ratio_to_batch_1.map_or("-".to_string(), |x| format!("{x:.2}x"));
        outln!("{:>5}  {:>11.1}  {:>7.2}  {:>10}", r.batch_size, r.sentences_per_second, r.seconds, ratio);
    }
    Ok(())
}

#[derive(Serialize)]
struct TrainBenchRow {
    method: crate::distill::losses::Method,
    steps: usize,
    batch: usize,
    seconds: f64,
    pairs_per_second: f64,
    seconds_per_29k_pairs: f64,
    cost_relative_to_kd: f64,
}

/// Training pairs/s of kd and ot, with ot's cost relative to kd.
pub fn train(inputs: &Inputs, args: &BenchTrainArgs) -> Result<()> {
    use crate::distill::losses::Method;
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
        &config_for(Method::Ot)?,
        &train,
        train_teacher,
        (&val, &val_teacher),
        (&val, &val_teacher),
    )?;
    let mut rows: Vec<TrainBenchRow> = Vec::new();
    for method in [Method::Kd, Method::Ot] {
        let dir = std::env::temp_dir().join(format!("otkd-bench-train-{}-{method:?}", std::process::id()));
        let (mut trainer, _) = Trainer::open(config_for(method)?, &prepared, &dir, false)?;
        trainer.timed_steps(5)?;
        let seconds = trainer.timed_steps(args.steps as usize)?;
        let _ = std::fs::remove_dir_all(&dir);
        let pairs_per_second = f64::from(args.steps) * f64::from(args.batch) / seconds;
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
    outln!(
        "training throughput, {} student, {}-en, batch {}, {} rayon threads",
        format!("{:?}", args.preset).to_lowercase(),
        args.lang,
        args.batch,
        rayon::current_num_threads()
    );
    outln!("method  pairs/s  s per 29k pairs  cost vs kd");
    for r in &rows {
        outln!(
            "{:<6}  {:>7.0}  {:>15.1}  {:>9.2}x",
            format!("{:?}", r.method).to_lowercase(),
            r.pairs_per_second,
            r.seconds_per_29k_pairs,
            r.cost_relative_to_kd
        );
    }
    Ok(())
}
