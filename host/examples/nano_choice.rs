//! How narrow the `nano` preset's retrieval space can be: val X -> en R@1 of the student's ridge
//! start (the reduced-rank ridge fit a fresh student computes exactly, `Student::init_from_ridge`:
//! the student's own feature counts, lambda 0.1) when the targets and the documents are the
//! teacher's embeddings in a PCA projection to `k` dimensions (`otkd::teacher::projection`), at
//! 5632 buckets and encoder rank 128 (nano's width), next to the teacher's own 384 dimensions at
//! rank 128 and at micro's 192. An index row costs `k + 8` bytes. Also the cost of nano's 16-word
//! cap (the tokenizer's `max_words`) against the default 64, and of fewer buckets, at `k = 128`.
//!
//! ```sh
//! cargo run --release -p otkd-host --example nano_choice -- ay,gn,qu,cs            # every row
//! cargo run --release -p otkd-host --example nano_choice -- ay,gn,qu,cs buckets    # k = 128, 16 words
//! ```
//! Reads the data, the teacher and the cache from the same places as `otkd` (`OTKD_DATA`,
//! `OTKD_TEACHER`, `OTKD_CACHE`).

mod common;

use anyhow::Result;
use otkd::data::{Bitext, Split};
use otkd::eval::metrics::{hubness, metrics_from_ranks, ranks_csls, retrieval};
use otkd::eval::{CSLS_K, CSLS_TRAIN_REFERENCE};
use otkd::rng::SplitMix64;
use otkd::student::ridge::fit_low_rank;
use otkd::student::{TokenizedSentence, feature_counts, tokenize_sentence};
use otkd::teacher::TeacherOutputs;
use otkd::teacher::projection::Projection;
use otkd_runtime::TokenizerConfig;

const LAMBDA: f64 = 0.1;

fn main() -> Result<()> {
    let langs = common::languages(std::env::args().nth(1))?;
    let (data, train_en, val_en) = common::multi30k_english()?;
    let teacher_dim = train_en.dim;
    // (k, rank, max_words, buckets): k = teacher_dim is no projection.
    let all = [
        (teacher_dim, 192, 64, 5632),
        (teacher_dim, 128, 64, 5632),
        (teacher_dim, 128, 16, 5632),
        (192, 128, 16, 5632),
        (128, 128, 16, 5632),
        (128, 128, 64, 5632),
        (96, 96, 16, 5632),
        (64, 64, 16, 5632),
        (128, 128, 16, 5120),
        (128, 128, 16, 4608),
        (128, 128, 16, 4096),
    ];
    // `buckets` as a second argument: only the rows of the bucket sweep.
    let sweep = std::env::args().nth(2).is_some_and(|a| a == "buckets");
    let rows: Vec<_> = all.iter().filter(|r| !sweep || (r.0, r.2) == (128, 16)).collect();
    println!("lang  k    rank  words  buckets  index bytes (1000 docs)  val X->en R@1  CSLS");
    for lang in langs {
        let (train, val) = (data.bitext(Split::Train, lang)?, data.bitext(Split::Dev, lang)?);
        for &&(k, rank, words, buckets) in &rows {
            let (targets, documents) = if k == teacher_dim {
                (train_en.clone(), val_en.clone())
            } else {
                let p = Projection::fit(&train_en.embeddings, teacher_dim, k)?;
                (p.outputs(&train_en), p.outputs(&val_en))
            };
            let tokenizer = TokenizerConfig { buckets, max_words: words, ..TokenizerConfig::DEFAULT };
            let (r1, csls) = ridge_start(&tokenizer, rank, &train, &targets, &val, &documents)?;
            let index = 1000 * (k + 8);
            println!(
                "{lang:<4}  {k:<3}  {rank:>4}  {words:>5}  {buckets:>7}  {index:>23}  {r1:>13.4}  {csls:.4}"
            );
        }
    }
    Ok(())
}

/// Val X -> en R@1, cosine and CSLS, of the rank-`rank` ridge map from the student's feature
/// counts to `targets` (the CSLS reference: seeded train captions of X, as `otkd export` uses).
fn ridge_start(
    tokenizer: &TokenizerConfig,
    rank: usize,
    train: &Bitext,
    targets: &TeacherOutputs,
    val: &Bitext,
    val_docs: &TeacherOutputs,
) -> Result<(f64, f64)> {
    let dim = targets.dim;
    let buckets = tokenizer.buckets as usize;
    let tokens = |texts: Vec<&str>| -> Vec<TokenizedSentence> {
        texts.iter().map(|t| tokenize_sentence(tokenizer, t)).collect()
    };
    let train_tokens = tokens(train.x());
    let lines = train.lines();
    let rows: Vec<Vec<(u32, f32)>> = train_tokens.iter().map(|s| feature_counts(s, buckets)).collect();
    let map = fit_low_rank(&rows[..], buckets, |s| targets.embedding(lines[s]), dim, LAMBDA, rank)?;
    // The student's sentence embedding at its ridge start: normalise(counts E P).
    let embed = |sentences: &[TokenizedSentence]| -> Vec<f32> {
        let mut out = Vec::with_capacity(sentences.len() * dim);
        for s in sentences {
            let mut inner = vec![0f64; rank];
            for (id, v) in feature_counts(s, buckets) {
                let e = &map.embeddings[id as usize * rank..(id as usize + 1) * rank];
                inner.iter_mut().zip(e).for_each(|(a, &e)| *a += f64::from(v) * f64::from(e));
            }
            let row: Vec<f64> = (0..dim)
                .map(|d| (0..rank).map(|r| inner[r] * f64::from(map.projection[r * dim + d])).sum())
                .collect();
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            out.extend(row.iter().map(|v| (v / norm) as f32));
        }
        out
    };
    let x = embed(&tokens(val.x()));
    let documents = val_docs.embeddings_of(&val.lines());
    let targets_idx: Vec<usize> = (0..val.pairs.len()).collect();
    let mut order: Vec<usize> = (0..train.pairs.len()).collect();
    SplitMix64::new(0, "reference").shuffle(&mut order);
    let reference: Vec<&str> =
        order.iter().take(CSLS_TRAIN_REFERENCE).map(|&i| train.pairs[i].x.as_str()).collect();
    let r = hubness(&documents, &embed(&tokens(reference)), dim, CSLS_K);
    let csls = metrics_from_ranks(&ranks_csls(&x, &documents, dim, &targets_idx, &r)).r1;
    Ok((retrieval(&x, &documents, dim, &targets_idx).r1, csls))
}
