//! What the runtime answers on the host, with the device's scratch sizes (shared source: the
//! firmware's build script makes the on-device tests' golden table with it, the host harness
//! compares the firmware's printed results with it).

use otkd_runtime::{Embedding, Feature, LoadError, Model, Scoring, Scratch};

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

/// The feature buffer's capacity here (at least the device's `Scratch::features_len`).
const FEATURES: usize = 8192;

/// Every query's answer by the runtime on `blob`, with scratch memory for `words` words (as the
/// firmware sizes it) and the top `k` (at most [`MAX_K`]) documents.
///
/// # Panics
/// When the blob has no index, `k` is over [`MAX_K`] or `words` needs more than 8192 features.
pub fn answers(blob: &[u8], queries: &[&str], words: usize, k: usize) -> Result<Vec<Answer>, LoadError> {
    assert!(k <= MAX_K, "k {k} > {MAX_K}");
    let model = Model::from_bytes(blob)?;
    let config = *model.config();
    assert!(Scratch::features_len(&config, words) <= FEATURES, "{words} words need too many features");
    let index = model.index().expect("the blob has no document index");
    let mut features = heapless::Vec::<Feature, FEATURES>::new();
    let mut floats = vec![0f32; Scratch::floats_len(&config, words)];
    let mut int8s = vec![0i8; Scratch::int8s_len(&config, words)];
    let mut scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
    let bits = |scoring, query: &Embedding| -> Vec<(u32, u32)> {
        let hits = index.search::<MAX_K>(query, k, scoring).expect("the index is the model's own width");
        hits.iter().map(|h| (h.id, h.score.to_bits())).collect()
    };
    Ok(queries
        .iter()
        .map(|text| match model.encode(text, &mut scratch) {
            Ok(query) => {
                Answer::Hits { cosine: bits(Scoring::Cosine, &query), csls: bits(Scoring::Csls, &query) }
            }
            Err(e) => Answer::Encode(format!("{e:?}")),
        })
        .collect())
}

/// The queries of a queries file: one per line, blank lines and `#` comment lines skipped, the
/// rest taken as they are (no trimming).
pub fn query_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect()
}
