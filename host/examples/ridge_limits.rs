//! What limits a linear student of hashed n-grams on Multi30k: val X -> en R@1 of the ridge fit
//! (sqrt-count features, lambda 0.1) as the training pairs grow (seeded subsets of 1/8, 1/4, 1/2
//! and all pairs), and, on all pairs, as the rank of the map falls to the widths a small encoder
//! can afford (the reduced-rank fit that initialises the student).
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
use otkd::eval::metrics::retrieval;
use otkd::eval::ridge::{RidgeConfig, RidgeStudent, fit, fit_low_rank, sentence_features};
use otkd::rng::SplitMix64;
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

    println!("lang  buckets  pairs  rank  val X->en R@1");
    for lang in langs {
        let (train, val) = (data.bitext(Split::Train, lang)?, data.bitext(Split::Val, lang)?);
        let mut order: Vec<usize> = (0..train.pairs.len()).collect();
        SplitMix64::new(0, "pairs").shuffle(&mut order);
        let n = order.len();
        for pairs in [n / 8, n / 4, n / 2, n] {
            let subset = Bitext {
                pairs: order[..pairs].iter().map(|&i| train.pairs[i].clone()).collect(),
                ..train.clone()
            };
            let config = RidgeConfig { tokenizer, lambdas: vec![LAMBDA] };
            let r1 = fit(&config, &subset, &train_en, &val, &val_en, |_| {})?.val_r1_by_lambda[0].1;
            println!("{lang:<4}  {buckets:>7}  {pairs:>5}  full  {r1:.4}");
        }
        let rows: Vec<Vec<(u32, f32)>> = train.x().iter().map(|t| sentence_features(&tokenizer, t)).collect();
        let lines = train.lines();
        let documents = val_en.embeddings_of(&val.lines());
        let targets: Vec<usize> = (0..val.pairs.len()).collect();
        for rank in RANKS {
            let map = fit_low_rank(
                rows.clone(),
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
            let r1 = retrieval(&student.embed(&val.x()), &documents, dim, &targets).r1;
            println!("{lang:<4}  {buckets:>7}  {n:>5}  {rank:>4}  {r1:.4}");
        }
    }
    Ok(())
}
