//! `otkd bench query`: what a query costs on the device's code path (the int8 runtime) next to
//! the f32 student (`Student::embed`, the hand-written forward pass), on the same queries and
//! documents.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use otkd_runtime::Scoring;
use serde::Serialize;

use super::{Inputs, cached_english, in_student_space, open_cache, open_data, open_teacher, print_json};
use crate::cli::{BenchQueryArgs, BenchSides, DEFAULT_TEACHER_BATCH};
use crate::data::{Source, Split};
use crate::distill::run_dir::RunDir;
use crate::eval::metrics::cosine_matrix;
use crate::export::HostRuntime;
use crate::student::tokenize_sentence;

/// Documents returned per query on both sides.
const TOP_K: usize = 10;

#[derive(Serialize)]
struct QueryBench {
    queries: usize,
    documents: usize,
    rounds: u32,
    runtime_median_us: f64,
    student_median_us: Option<f64>,
    student_over_runtime: Option<f64>,
}

/// Times encode + top-10 search per query, alternating the runtime and the f32 student.
pub fn run(inputs: &Inputs, args: &BenchQueryArgs) -> Result<()> {
    let bytes = std::fs::read(&args.blob).with_context(|| format!("reading blob {}", args.blob.display()))?;
    let mut runtime =
        HostRuntime::new(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.blob.display()))?;
    let documents = runtime.model().index().map(|i| i.len()).context("the blob has no document index")?;
    let data = Source::Multi30k(open_data(inputs)?);
    let queries: Vec<String> = data
        .bitext(Split::Test, args.lang)?
        .pairs
        .into_iter()
        .take(args.queries as usize)
        .map(|p| p.x)
        .collect();
    let mut runtime_pass = |times: &mut Vec<f64>| -> Result<()> {
        for q in &queries {
            let start = Instant::now();
            let query = runtime.query(q).map_err(|e| anyhow::anyhow!("{q:?}: {e}"))?;
            let index = runtime.model().index().context("no index")?;
            let hits = index
                .search::<TOP_K>(query.as_query(), TOP_K, Scoring::Cosine)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            std::hint::black_box(hits);
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(())
    };
    let mut runtime_times = Vec::new();
    if args.only == BenchSides::Runtime {
        runtime_pass(&mut runtime_times)?;
        return report(args, queries.len(), documents, &mut runtime_times, None);
    }
    let run = args.run.as_ref().context("--run is needed for the f32 side (or pass --only runtime)")?;
    let trained = RunDir::new(run).load_student(crate::distill::run_dir::CheckpointKind::BestDev)?;
    let student = trained.student;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let (_, english, _) =
        cached_english(&teacher, &cache, &data, Split::Test, DEFAULT_TEACHER_BATCH as usize, false)?;
    let english = in_student_space(trained.projection.as_ref(), english);
    let dim = student.config().out_dim;
    if english.len() < documents {
        bail!("the blob indexes {documents} documents; test_2016_flickr has {}", english.len());
    }
    let docs = &english.embeddings[..documents * dim];
    let student_pass = |times: &mut Vec<f64>| -> Result<()> {
        for q in &queries {
            let start = Instant::now();
            let sentence = tokenize_sentence(&student.config().tokenizer, q);
            let embedding = student.embed(std::slice::from_ref(&sentence), 1)?;
            let scores = cosine_matrix(&embedding, docs, dim);
            let mut order: Vec<usize> = (0..documents).collect();
            order.select_nth_unstable_by(TOP_K.min(documents.max(1)) - 1, |&a, &b| {
                scores[b].total_cmp(&scores[a])
            });
            std::hint::black_box(&order[..TOP_K.min(documents)]);
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(())
    };
    let mut student_times = Vec::new();
    for _ in 0..args.rounds {
        runtime_pass(&mut runtime_times)?;
        student_pass(&mut student_times)?;
    }
    report(args, queries.len(), documents, &mut runtime_times, Some(&mut student_times))
}

fn median(times: &mut [f64]) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn report(
    args: &BenchQueryArgs,
    queries: usize,
    documents: usize,
    runtime: &mut [f64],
    student: Option<&mut Vec<f64>>,
) -> Result<()> {
    let runtime_us = median(runtime) * 1e6;
    let student_us = student.map(|s| median(s) * 1e6);
    let result = QueryBench {
        queries,
        documents,
        rounds: if args.only == BenchSides::Runtime { 1 } else { args.rounds },
        runtime_median_us: runtime_us,
        student_median_us: student_us,
        student_over_runtime: student_us.map(|s| s / runtime_us.max(1e-9)),
    };
    if args.json {
        return print_json(&result);
    }
    outln!(
        "{queries} {} queries x {} rounds, top-{TOP_K} of {documents} documents",
        args.lang,
        result.rounds
    );
    outln!("int8 runtime   median {runtime_us:>9.1} us per query (encode + search)");
    if let (Some(s), Some(r)) = (student_us, result.student_over_runtime) {
        outln!("f32 student    median {s:>9.1} us per query (batch of 1)");
        outln!("f32 / runtime  {r:.2}x");
    }
    Ok(())
}
