//! Evaluation: retrieval metrics (cosine and hubness-corrected CSLS), the baselines every report
//! is read against, and the closed-form ridge student.
pub mod baseline;
pub mod metrics;
pub mod ridge;

use crate::data::{Bitext, Pair};
use crate::eval::metrics::{BothDirections, both_directions_csls, hubness};
use crate::rng::SplitMix64;

/// Neighbours averaged in the CSLS hubness term `r(d)`.
///
/// Chosen on val with the closed-form ridge student (`host/examples/csls_choice.rs`, table in
/// the README): for ay and qu, val X -> en R@1 peaks at K = 10 with a 5,000-caption reference
/// (ay 0.905 -> 0.928, qu 0.825 -> 0.860), and K from 5 to 20 with 1,000 to 29,000 reference
/// captions stays within about a point of that.
pub const CSLS_K: usize = 10;

/// Training captions (a seeded sample) added to the val captions in the CSLS reference population.
pub const CSLS_TRAIN_REFERENCE: usize = 5000;

/// The reference population of CSLS: queries of the query language whose nearest neighbours
/// measure how much of a hub each document is. Every val pair and a seeded sample of
/// [`CSLS_TRAIN_REFERENCE`] train pairs (never test): `(val pairs, train pairs)`, each pair
/// giving its X side as a reference query for X -> en and its English side for en -> X.
pub fn csls_reference<'a>(train: &'a Bitext, val: &'a Bitext) -> (Vec<&'a Pair>, Vec<&'a Pair>) {
    let mut order: Vec<usize> = (0..train.pairs.len()).collect();
    SplitMix64::new(0, "csls-reference").shuffle(&mut order);
    order.truncate(CSLS_TRAIN_REFERENCE);
    order.sort_unstable();
    (val.pairs.iter().collect(), order.iter().map(|&i| &train.pairs[i]).collect())
}

/// Test retrieval of paired embeddings (`x` and `en`, row `i` a pair) ranked by CSLS with
/// [`CSLS_K`] neighbours: English documents' hubness among the X reference queries `reference_x`,
/// X documents' hubness among the English reference queries `reference_en`.
pub fn csls_both_directions(
    x: &[f32],
    en: &[f32],
    reference_x: &[f32],
    reference_en: &[f32],
    dim: usize,
) -> BothDirections {
    let r_en = hubness(en, reference_x, dim, CSLS_K);
    let r_x = hubness(x, reference_en, dim, CSLS_K);
    both_directions_csls(x, en, dim, &r_en, &r_x)
}
