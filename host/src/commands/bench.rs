//! `otkd bench teacher` and `otkd bench train`: throughput with a ratio measured in the same run.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::{Inputs, cached_english, open_cache, open_data, open_teacher, print_json};
use crate::cli::{
    BenchTeacherArgs, BenchTrainArgs, BenchTrainConfig, DEFAULT_TEACHER_BATCH, MethodArg, TrainArgs,
};
use crate::data::{Lang, Source, Split};
use crate::distill::config::{Start, TrainConfig};
use crate::distill::data::TrainData;
use crate::distill::losses::KdVariant;
use crate::distill::trainer::Trainer;

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
    let captions = data.captions(Split::Dev, Lang::EN)?;
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
    config: String,
    method: crate::distill::losses::Method,
    kd_variant: crate::distill::losses::KdVariant,
    english_weight: f64,
    steps: usize,
    batch: usize,
    seconds: f64,
    ms_per_step: f64,
    pairs_per_second: f64,
    seconds_per_29k_pairs: f64,
    /// Mean Sinkhorn iterations per step (OT only).
    sinkhorn_iterations: Option<f64>,
    /// Seconds per step over those of the kd configuration with the same KD term (OT only, when
    /// that configuration was timed too).
    cost_relative_to_kd: Option<f64>,
}

/// Training pairs/s of each configuration, with each ot's cost relative to its kd twin.
///
/// Every configuration starts from the same weights (the ridge fit, by default, as `otkd train`
/// does: OT's Sinkhorn iteration count depends on it), runs 5 warm-up steps, then times
/// `--steps` steps of the trainer's own step (batch preparation, forward, loss, backward,
/// optimiser).
pub fn train(inputs: &Inputs, args: &BenchTrainArgs) -> Result<()> {
    use crate::distill::losses::Method;
    let data = Source::Multi30k(open_data(inputs)?);
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let (_, train_teacher, _) =
        cached_english(&teacher, &cache, &data, Split::Train, DEFAULT_TEACHER_BATCH as usize, true)?;
    let (_, val_teacher, _) =
        cached_english(&teacher, &cache, &data, Split::Dev, DEFAULT_TEACHER_BATCH as usize, false)?;
    let train = data.bitext(Split::Train, args.lang)?;
    let val = data.bitext(Split::Dev, args.lang)?;
    let configs = if args.configs.is_empty() { BenchTrainConfig::all() } else { args.configs.clone() };
    let config_for = |c: &BenchTrainConfig, start: Start| -> Result<TrainConfig> {
        let train_args =
            TrainArgs { preset: args.preset, batch: args.batch, ..TrainArgs::defaults(MethodArg::Kd) };
        let mut config = train_args.config(args.lang, teacher.dim())?;
        config.method = c.method;
        config.loss.method = c.method;
        config.loss.kd_variant = c.kd_variant;
        config.loss.english_weight = if c.english { 1.0 } else { 0.0 };
        config.start = start;
        Ok(config)
    };
    let first = BenchTrainConfig { method: Method::Ot, kd_variant: KdVariant::Mse, english: true };
    let prepared = TrainData::prepare(
        &config_for(&first, args.init.into())?,
        &train,
        train_teacher,
        (&val, &val_teacher),
        (&val, &val_teacher),
    )?;
    // The starting weights, computed once (the ridge fit takes seconds) and loaded into each run.
    let mut initial: Option<HashMap<String, candle_core::Tensor>> = None;
    let mut rows: Vec<TrainBenchRow> = Vec::new();
    for c in &configs {
        let dir = std::env::temp_dir().join(format!("otkd-bench-train-{}-{}", std::process::id(), c.label()));
        let init = if initial.is_some() { Start::Random } else { args.init.into() };
        let (mut trainer, _) = Trainer::open(config_for(c, init)?, &prepared, &dir, false)?;
        match &initial {
            Some(weights) => trainer.student().load_weights(weights).map_err(anyhow::Error::msg)?,
            None => {
                initial = Some(
                    trainer
                        .student()
                        .params()
                        .iter()
                        .map(|(n, v)| Ok((n.to_string(), v.as_tensor().copy()?)))
                        .collect::<Result<_>>()?,
                )
            }
        }
        trainer.timed_steps(0, 5)?;
        let timed = trainer.timed_steps(5, args.steps as usize)?;
        let _ = std::fs::remove_dir_all(&dir);
        let seconds = timed.seconds;
        let pairs_per_second = f64::from(args.steps) * f64::from(args.batch) / seconds;
        rows.push(TrainBenchRow {
            config: c.label(),
            method: c.method,
            kd_variant: c.kd_variant,
            english_weight: if c.english { 1.0 } else { 0.0 },
            steps: args.steps as usize,
            batch: args.batch as usize,
            seconds,
            ms_per_step: 1e3 * seconds / f64::from(args.steps),
            pairs_per_second,
            seconds_per_29k_pairs: 29_000.0 / pairs_per_second,
            sinkhorn_iterations: timed.sinkhorn_iterations,
            cost_relative_to_kd: None,
        });
    }
    let kd_seconds: HashMap<(String, u64), f64> = rows
        .iter()
        .filter(|r| r.method == Method::Kd)
        .map(|r| ((format!("{:?}", r.kd_variant), r.english_weight.to_bits()), r.seconds))
        .collect();
    for r in rows.iter_mut().filter(|r| r.method == Method::Ot) {
        r.cost_relative_to_kd = kd_seconds
            .get(&(format!("{:?}", r.kd_variant), r.english_weight.to_bits()))
            .map(|kd| r.seconds / kd);
    }
    if args.json {
        return print_json(&rows);
    }
    outln!(
        "training throughput, {} student, {}-en, batch {}, {:?} start, {} steps each, {} rayon threads",
        format!("{:?}", args.preset).to_lowercase(),
        args.lang,
        args.batch,
        args.init,
        args.steps,
        rayon::current_num_threads()
    );
    outln!("config          pairs/s  ms/step  s per 29k pairs  sinkhorn it.  cost vs kd");
    for r in &rows {
        let iterations = r.sinkhorn_iterations.map_or("-".to_string(), |i| format!("{i:.1}"));
        let cost = r.cost_relative_to_kd.map_or("-".to_string(), |c| format!("{c:.2}x"));
        outln!(
            "{:<14}  {:>7.0}  {:>7.1}  {:>15.1}  {:>12}  {:>10}",
            r.config,
            r.pairs_per_second,
            r.ms_per_step,
            r.seconds_per_29k_pairs,
            iterations,
            cost
        );
    }
    Ok(())
}
