//! What limits a linear student of hashed n-grams on Multi30k: val X -> en R@1 of the ridge fit
//! (sqrt-count features, lambda 0.1) as the training pairs grow (seeded subsets of 1/8, 1/4, 1/2
//! and all pairs), and, on all pairs, as the rank of the map falls to the widths a small encoder
//! can afford (the reduced-rank fit that initialises the student). Each row also gives the R@1
//! ranked by CSLS (K = 10, a seeded reference of 5,000 train captions), the hubness correction the
//! exported index applies.
//!
//! ```sh
//! cargo run --release -p otkd-host --example ridge_limits -- ay,cs 8192
//! ```
//! Arguments: languages (default `ay`) and hash buckets (default 8192). Reads the data, the
//! teacher and the cache from the same places as `otkd` (flags aside: `OTKD_DATA`,
//! `OTKD_TEACHER`, `OTKD_CACHE`).

mod common;

use anyhow::{Context, Result};
use otkd::data::{Bitext, Split};
use otkd::eval::metrics::{hubness, metrics_from_ranks, ranks_csls, retrieval};
use otkd::eval::{CSLS_K, CSLS_TRAIN_REFERENCE};
use otkd::rng::SplitMix64;
use otkd::student::ridge::{RidgeConfig, RidgeStudent, fit, fit_low_rank, sentence_features};
use otkd::teacher::TeacherOutputs;
use otkd_runtime::TokenizerConfig;

const LAMBDA: f32 = 0.1;
const RANKS: [usize; 4] = [64, 96, 128, 192];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let langs = common::languages(args.next())?;
    let buckets: u32 = args.next().map_or(Ok(8192), |b| b.parse()).context("buckets")?;
    let tokenizer = TokenizerConfig { buckets, ..TokenizerConfig::DEFAULT };

    let (data, train_en, val_en) = common::multi30k_english()?;
    let dim = train_en.dim;

    println!("lang  buckets  pairs  rank  val X->en R@1  CSLS");
    for lang in langs {
        let (train, val) = (data.bitext(Split::Train, lang)?, data.bitext(Split::Dev, lang)?);
        let mut order: Vec<usize> = (0..train.pairs.len()).collect();
        SplitMix64::new(0, "pairs").shuffle(&mut order);
        let n = order.len();
        for pairs in [n / 8, n / 4, n / 2, n] {
            let subset = Bitext {
                pairs: order[..pairs].iter().map(|&i| train.pairs[i].clone()).collect(),
                ..train.clone()
            };
            let config = RidgeConfig { tokenizer, lambdas: vec![LAMBDA] };
            let student = fit(&config, &subset, &train_en, &val, &val_en, |_| {})?.student;
            let (r1, csls) = val_r1(&student, &train, &val, &val_en);
            println!("{lang:<4}  {buckets:>7}  {pairs:>5}  full  {r1:>13.4}  {csls:.4}");
        }
        let rows: Vec<Vec<(u32, f32)>> = train.x().iter().map(|t| sentence_features(&tokenizer, t)).collect();
        let lines = train.lines();
        for rank in RANKS {
            let map = fit_low_rank(
                &rows[..],
                buckets as usize,
                |s| train_en.embedding(lines[s]),
                dim,
                f64::from(LAMBDA),
                rank,
            )?;
            // W = E P, so that the ridge student's embedding computes the map.
            let projection = &map.projection;
            let weights: Vec<f32> = map
                .embeddings
                .chunks(rank)
                .flat_map(|e| {
                    (0..dim).map(move |d| (0..rank).map(|k| e[k] * projection[k * dim + d]).sum::<f32>())
                })
                .collect();
            let student = RidgeStudent { tokenizer, lambda: LAMBDA, weights, dim };
            let (r1, csls) = val_r1(&student, &train, &val, &val_en);
            println!("{lang:<4}  {buckets:>7}  {n:>5}  {rank:>4}  {r1:>13.4}  {csls:.4}");
        }
    }
    Ok(())
}

/// Val X -> en R@1 by cosine and by CSLS (reference: seeded train captions of X, as many as
/// `otkd export` uses; val is the evaluation here, so it stays out).
fn val_r1(student: &RidgeStudent, train: &Bitext, val: &Bitext, val_en: &TeacherOutputs) -> (f64, f64) {
    let dim = student.dim;
    let x = student.embed(&val.x());
    let documents = val_en.embeddings_of(&val.lines());
    let targets: Vec<usize> = (0..val.pairs.len()).collect();
    let mut order: Vec<usize> = (0..train.pairs.len()).collect();
    SplitMix64::new(0, "reference").shuffle(&mut order);
    let reference: Vec<&str> =
        order.iter().take(CSLS_TRAIN_REFERENCE).map(|&i| train.pairs[i].x.as_str()).collect();
    let r = hubness(&documents, &student.embed(&reference), dim, CSLS_K);
    let csls = metrics_from_ranks(&ranks_csls(&x, &documents, dim, &targets, &r)).r1;
    (retrieval(&x, &documents, dim, &targets).r1, csls)
}
