//! End to end across crates: train a tiny student for a few steps (otkd-host), export it with
//! an index (the host's export library over the runtime's writer), load the blob with the no_std
//! runtime, and check that the runtime answers as the f32 student does; then the bad inputs that
//! cross those boundaries (a changed checkpoint, a corrupt or foreign blob).

use std::sync::atomic::AtomicBool;

use otkd::data::Split;
use otkd::distill::losses::Method;
use otkd::distill::run_dir::{CheckpointKind, EvalRecord, RunDir, files};
use otkd::distill::trainer::{Outcome, Progress, Trainer};
use otkd::eval::metrics::cosine_matrix;
use otkd::export::{HostRuntime, IndexInput, answer, build_blob, write_blob};
use otkd::student::tokenize_sentence;
use otkd::testing::{config, data, run_dir, synthetic};
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
    let trained = RunDir::new(&out).load_student(CheckpointKind::Last).unwrap();
    let student = &trained.student;
    let (test, test_teacher) = synthetic(60, 3, Split::Test);
    let documents = test_teacher.embeddings.clone();
    let ids: Vec<u32> = (0..60).collect();
    let tokenize = |t: &str| tokenize_sentence(&student.config().tokenizer, t);
    let (dev, _) = synthetic(60, 2, Split::Dev);
    let reference: Vec<_> = dev.pairs.iter().map(|p| tokenize(&p.x)).collect();
    let source = "synthetic test en".to_string();
    let index = IndexInput {
        documents: documents.clone(),
        ids,
        csls_reference: Some(reference),
        source,
        lexical: None,
    };
    let blob = build_blob(student, "ay", Some(index)).unwrap();
    let budget = write_blob(&out.join("model.otkd"), &blob).unwrap();
    assert_eq!((budget.total_bytes, budget.documents), (blob.len(), 60));
    assert_eq!(std::fs::read(out.join("model.otkd")).unwrap(), blob);

    let mut runtime = HostRuntime::new(&blob).unwrap();
    let provenance = runtime.model().provenance();
    assert_eq!((provenance.lang, provenance.index_source), ("ay", "synthetic test en"));
    let dim = student.config().out_dim;
    let queries = student.embed(&test.pairs.iter().map(|p| tokenize(&p.x)).collect::<Vec<_>>(), 64).unwrap();
    let scores = cosine_matrix(&queries, &documents, dim);
    let (mut same_top1, mut same_top5, mut runtime_hits) = (0, 0, 0);
    for (q, pair) in test.pairs.iter().enumerate() {
        let row = &scores[q * 60..(q + 1) * 60];
        let mut order: Vec<usize> = (0..60).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let query = runtime.encode(&pair.x).unwrap();
        let hits = runtime.top_k(&query, 60, Scoring::Cosine).unwrap();
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

    // `answer` (what `otkd query` prints) is the runtime's ranking, texts attached by id.
    let texts = otkd::data::Documents {
        ids: test.pairs.iter().map(|p| format!("doc-{}", p.line)).collect(),
        texts: test.pairs.iter().map(|p| p.en.clone()).collect(),
        blank_lines: 0,
    };
    let answers = answer(&mut runtime, &test.pairs[0].x, 3, Scoring::Csls, Some(&texts)).unwrap();
    assert_eq!(answers.len(), 3);
    let top = answers[0].id as usize;
    assert_eq!(answers[0].text.as_deref(), Some(texts.texts[top].as_str()));
    assert_eq!(answers[0].doc_id.as_deref(), Some(texts.ids[top].as_str()));

    // A blob of another format version is refused by name.
    let mut other = blob.clone();
    other[4..8].copy_from_slice(&(otkd_runtime::FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(HostRuntime::new(&other).err(), Some(LoadError::UnsupportedVersion { .. })));
    // One flipped payload bit fails the CRC; a cut blob is refused, not read past its end.
    let mut flipped = blob.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    assert!(matches!(HostRuntime::new(&flipped).err(), Some(LoadError::BadCrc)));
    assert!(HostRuntime::new(&blob[..blob.len() - 1]).is_err());
    std::fs::remove_dir_all(out).unwrap();
}

/// A checkpoint changed after training never reaches a blob: the export's load refuses it.
#[test]
fn a_changed_checkpoint_is_not_exported() {
    let config = config(Method::Kd, 10);
    let data = data(&config);
    let out = run_dir("export-changed");
    let (mut trainer, start) = Trainer::open(config, &data, &out, false).unwrap();
    trainer.run(start, &AtomicBool::new(false), &mut Quiet).unwrap();
    let best = out.join(files::BEST);
    let mut bytes = std::fs::read(&best).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&best, &bytes).unwrap();
    let err = RunDir::new(&out).load_student(CheckpointKind::BestDev).err().unwrap();
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
    std::fs::remove_dir_all(out).unwrap();
}
