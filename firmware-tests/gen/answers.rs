//! What the runtime answers on the host, with the device's scratch sizes (shared source: the
//! firmware's build script makes the on-device tests' golden table with it, the host harness
//! compares the firmware's printed results with it).

use otkd_runtime::testing::OwnedScratch;
use otkd_runtime::{LoadError, Model, Query, Scoring};

/// One query's outcome: the top-k of both scorings as `(id, score bits)`, or the encode error's
/// name (`EmptyQuery`, `ScratchTooSmall`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Both rankings, best first, scores as `f32::to_bits`.
    Hits {
        /// `Scoring::Cosine`.
        cosine: Vec<(u32, u32)>,
        /// `Scoring::Csls`.
        csls: Vec<(u32, u32)>,
    },
    /// `Model::encode` failed; the `EncodeError` variant's name.
    Encode(String),
}

/// The largest top-k this module answers.
pub const MAX_K: usize = 64;

/// Every query's answer by the runtime on `blob`, with scratch memory for `words` words (as the
/// firmware sizes it) and the top `k` (at most [`MAX_K`]) documents.
///
/// # Panics
/// When the blob has no index, `k` is over [`MAX_K`] or `words` words need more than
/// [`OwnedScratch::MAX_FEATURES`] features.
pub fn answers(blob: &[u8], queries: &[&str], words: usize, k: usize) -> Result<Vec<Answer>, LoadError> {
    assert!(k <= MAX_K, "k {k} > {MAX_K}");
    let model = Model::from_bytes(blob)?;
    let config = *model.config();
    let index = model.index().expect("the blob has no document index");
    let mut scratch = OwnedScratch::new(&config, words);
    let bits = |scoring, query: Query<'_>| -> Vec<(u32, u32)> {
        let hits = index.search::<MAX_K>(query, k, scoring).expect("the index is the model's own width");
        hits.iter().map(|h| (h.id, h.score.to_bits())).collect()
    };
    Ok(queries
        .iter()
        .map(|text| {
            // As the firmware: the embedding, then (an index with a lexicon) the text's terms.
            let embedding = model.encode(text, &mut scratch.scratch())?;
            let terms = match index.lexical_weight() {
                Some(_) => {
                    let mut terms = otkd_runtime::QueryTerms::new();
                    model.terms(text, &mut scratch.scratch(), &mut terms)?;
                    Some(terms)
                }
                None => None,
            };
            let query = Query { embedding: &embedding, terms: terms.as_ref() };
            Ok(Answer::Hits { cosine: bits(Scoring::Cosine, query), csls: bits(Scoring::Csls, query) })
        })
        .map(|answer| answer.unwrap_or_else(|e: otkd_runtime::EncodeError| Answer::Encode(format!("{e:?}"))))
        .collect())
}

/// The queries of a queries file: one per line, blank lines and `#` comment lines skipped, the
/// rest taken as they are (no trimming).
pub fn query_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect()
}
