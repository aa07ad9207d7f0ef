//! End to end across crates: train a tiny student for a few steps, export it with an index,
//! load the blob with the no_std runtime, and check that the runtime answers as the f32 student
//! does.

mod common;

use std::sync::atomic::AtomicBool;

use common::{config, data, run_dir, synthetic};
use otkd::data::Split;
use otkd::distill::losses::Method;
use otkd::distill::trainer::{EvalRecord, Outcome, Progress, Trainer};
use otkd::eval::metrics::cosine_matrix;
use otkd::export::{Checkpoint, HostRuntime, blob_parts, index_parts, load_run};
use otkd::student::tokenize_sentence;
use otkd_runtime::{LoadError, Scoring};

struct Quiet;

impl Progress for Quiet {
    fn step(&mut self, _: usize, _: f64) {}
    fn eval(&mut self, _: &EvalRecord) {}
}

#[test]
fn trained_student_exported_and_queried_through_the_runtime() {
    let config = config(Method::Kd, 40);
    let data = data(&config);
    let out = run_dir("export");
    let (mut trainer, start) = Trainer::open(config.clone(), &data, &out, false).unwrap();
    assert!(matches!(trainer.run(start, &AtomicBool::new(false), &mut Quiet).unwrap(), Outcome::Finished(_)));

    // Read back from the run directory, as `otkd export` does.
    let trained = load_run(&out, Checkpoint::Last).unwrap();
    let student = &trained.student;
    let (test, test_teacher) = synthetic(60, 3, Split::Test2016Flickr);
    let documents = test_teacher.embeddings.clone();
    let ids: Vec<u32> = (0..60).collect();
    let tokenize = |t: &str| tokenize_sentence(&student.config().tokenizer, t);
    let (dev, _) = synthetic(60, 2, Split::Val);
    let reference: Vec<_> = dev.pairs.iter().map(|p| tokenize(&p.x)).collect();
    let mut parts = blob_parts(student).unwrap();
    parts.index = Some(index_parts(student, documents.clone(), ids, &reference, true).unwrap());
    let blob = parts.to_bytes().unwrap();

    let mut runtime = HostRuntime::new(&blob).unwrap();
    let dim = student.config().out_dim;
    let queries = student.embed(&test.pairs.iter().map(|p| tokenize(&p.x)).collect::<Vec<_>>(), 64).unwrap();
    let scores = cosine_matrix(&queries, &documents, dim);
    let (mut same_top1, mut same_top5, mut runtime_hits) = (0, 0, 0);
    for (q, pair) in test.pairs.iter().enumerate() {
        let row = &scores[q * 60..(q + 1) * 60];
        let mut order: Vec<usize> = (0..60).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let query = runtime.encode(&pair.x).unwrap();
        let hits = runtime.rank_all(&query, Scoring::Cosine).unwrap();
        assert_eq!(hits.len(), 60);
        same_top1 += usize::from(hits[0].id as usize == order[0]);
        let top5: Vec<usize> = hits[..5].iter().map(|h| h.id as usize).collect();
        same_top5 += usize::from(top5 == order[..5]);
        runtime_hits += usize::from(hits[0].id as usize == pair.line);
        // The embedding the runtime computes is close to the f32 student's.
        let embedding: Vec<f32> = query.to_f32().collect();
        let f32_row = &queries[q * dim..(q + 1) * dim];
        let norm = f32_row.iter().map(|v| v * v).sum::<f32>().sqrt();
        let cosine: f32 = embedding.iter().zip(f32_row).map(|(a, b)| a * b / norm).sum();
        assert!(cosine > 0.98, "query {q}: int8 vs f32 cosine {cosine}");
    }
    assert!(same_top1 >= 57, "top-1 agrees on {same_top1} of 60 queries");
    assert!(same_top5 >= 40, "top-5 agrees in order on {same_top5} of 60 queries");
    assert!(runtime_hits >= 55, "the runtime finds the right document for {runtime_hits} of 60");

    // A blob of another format version is refused by name.
    let mut other = blob.clone();
    other[4..8].copy_from_slice(&(otkd_runtime::FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(HostRuntime::new(&other).err(), Some(LoadError::UnsupportedVersion { .. })));
    std::fs::remove_dir_all(out).unwrap();
}
