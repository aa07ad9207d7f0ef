//! Evaluation: retrieval metrics (cosine and hubness-corrected CSLS), the CSLS reference
//! population, and the baselines every report is read against (the closed-form ridge student
//! itself is a model: [`crate::student::ridge`]).
pub mod baseline;
pub mod metrics;

use crate::data::{Bitext, Pair, Split};
use crate::eval::metrics::{BothDirections, both_directions_csls, hubness};
use crate::rng::SplitMix64;
use crate::teacher::TeacherOutputs;

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
/// [`CSLS_TRAIN_REFERENCE`] train pairs (never test), each pair giving its X side as a reference
/// query for X -> en and its English side for en -> X. The one place this population is chosen:
/// training, the baselines, export and `eval-blob` all build it here.
pub struct CslsReference<'a> {
    /// The val pairs (none when the documents are val's own captions).
    pub val: Vec<&'a Pair>,
    /// The seeded sample of train pairs (none when the documents are train's).
    pub train: Vec<&'a Pair>,
}

impl<'a> CslsReference<'a> {
    /// Every val pair and the seeded train sample.
    pub fn new(train: &'a Bitext, val: &'a Bitext) -> Self {
        let mut order: Vec<usize> = (0..train.pairs.len()).collect();
        SplitMix64::new(0, "csls-reference").shuffle(&mut order);
        order.truncate(CSLS_TRAIN_REFERENCE);
        order.sort_unstable();
        Self { val: val.pairs.iter().collect(), train: order.iter().map(|&i| &train.pairs[i]).collect() }
    }

    /// The same without the pairs of `split`: a document never counts its own caption among
    /// the queries that measure it.
    pub fn excluding(mut self, split: Split) -> Self {
        match split {
            Split::Dev => self.val.clear(),
            Split::Train => self.train.clear(),
            _ => {}
        }
        self
    }

    /// The X sides, val first.
    pub fn x(&self) -> Vec<&'a str> {
        self.val.iter().chain(&self.train).map(|p| p.x.as_str()).collect()
    }

    /// The teacher's embeddings of the English sides, val first (`val_en` and `train_en`: the
    /// teacher outputs of each split, indexed by caption line).
    pub fn en_embeddings(&self, val_en: &TeacherOutputs, train_en: &TeacherOutputs) -> Vec<f32> {
        let lines = |pairs: &[&Pair]| pairs.iter().map(|p| p.line).collect::<Vec<_>>();
        let mut en = val_en.embeddings_of(&lines(&self.val));
        en.extend(train_en.embeddings_of(&lines(&self.train)));
        en
    }
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
