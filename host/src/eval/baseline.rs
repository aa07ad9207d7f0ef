//! The lower bounds every report shows: the teacher used zero-shot on language X, and a character
//! n-gram TF-IDF cosine baseline fitted on the training bitext.

use std::collections::HashMap;

use serde::Serialize;

use crate::data::{Bitext, Lang};
use crate::eval::metrics::{BothDirections, both_directions, metrics_from_ranks, paired_ranks};
use crate::rng::Fnv64;

/// Character n-gram lengths of the TF-IDF baseline (within word boundaries, like scikit-learn's `char_wb`).
pub const TFIDF_NGRAMS: std::ops::RangeInclusive<usize> = 3..=5;

/// One language's baseline results on test_2016_flickr.
#[derive(Clone, Debug, Serialize)]
pub struct LanguageBaselines {
    /// Language code.
    pub lang: Lang,
    /// Evaluated pairs (empty translations skipped).
    pub pairs: usize,
    /// Pairs skipped because a side was empty.
    pub skipped: usize,
    /// The English teacher applied to X as if it were English.
    pub teacher_zero_shot: BothDirections,
    /// Character n-gram TF-IDF cosine, fitted on train X + en.
    pub tfidf: BothDirections,
    /// The closed-form ridge student (`--ridge`): hashed n-gram features -> teacher embeddings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ridge: Option<RidgeBaseline>,
}

/// The ridge student's result.
#[derive(Clone, Debug, Serialize)]
pub struct RidgeBaseline {
    /// Parameters of the linear map.
    pub parameters: usize,
    /// Ridge penalty chosen on val.
    pub lambda: f32,
    /// test_2016_flickr retrieval (queries ridge(X), documents teacher(en)), cosine.
    pub test: BothDirections,
    /// The same, ranked by CSLS.
    pub test_csls: BothDirections,
}

/// A fitted TF-IDF model: inverse document frequencies of hashed character n-grams.
pub struct CharTfidf {
    idf: HashMap<u64, f32>,
}

impl CharTfidf {
    /// Fits the inverse document frequencies on `documents` (smooth idf, as scikit-learn).
    pub fn fit<S: AsRef<str>>(documents: &[S]) -> Self {
        let mut df: HashMap<u64, u32> = HashMap::new();
        for doc in documents {
            let mut grams = char_ngrams(doc.as_ref());
            grams.sort_unstable();
            grams.dedup();
            for g in grams {
                *df.entry(g).or_default() += 1;
            }
        }
        let n = documents.len() as f32;
        let idf = df.into_iter().map(|(g, d)| (g, ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)).collect();
        Self { idf }
    }

    /// The L2-normalised sparse vector of a document (sublinear tf); n-grams unseen in fitting are dropped.
    pub fn transform(&self, document: &str) -> Vec<(u64, f32)> {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for g in char_ngrams(document) {
            *counts.entry(g).or_default() += 1;
        }
        let mut v: Vec<(u64, f32)> = counts
            .into_iter()
            .filter_map(|(g, c)| self.idf.get(&g).map(|idf| (g, (1.0 + (c as f32).ln()) * idf)))
            .collect();
        let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|(_, w)| *w /= norm);
        }
        v.sort_unstable_by_key(|&(g, _)| g);
        v
    }

    /// Cosine scores `[queries, documents]` row-major between two lists of texts.
    pub fn scores<S: AsRef<str>>(&self, queries: &[S], documents: &[S]) -> Vec<f32> {
        let mut postings: HashMap<u64, Vec<(usize, f32)>> = HashMap::new();
        for (d, doc) in documents.iter().enumerate() {
            for (g, w) in self.transform(doc.as_ref()) {
                postings.entry(g).or_default().push((d, w));
            }
        }
        let n = documents.len();
        let mut scores = vec![0f32; queries.len() * n];
        for (q, query) in queries.iter().enumerate() {
            let row = &mut scores[q * n..(q + 1) * n];
            for (g, w) in self.transform(query.as_ref()) {
                for &(d, dw) in postings.get(&g).map_or(&[][..], Vec::as_slice) {
                    row[d] += w * dw;
                }
            }
        }
        scores
    }
}

/// Hashed character n-grams of each lowercased whitespace word, padded with spaces (`char_wb`).
fn char_ngrams(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let chars: Vec<char> =
            std::iter::once(' ').chain(word.chars().flat_map(char::to_lowercase)).chain([' ']).collect();
        for n in TFIDF_NGRAMS {
            for window in chars.windows(n) {
                let mut h = Fnv64::default();
                for c in window {
                    h.update(&u32::from(*c).to_le_bytes());
                }
                out.push(h.finish());
            }
        }
    }
    out
}

/// TF-IDF retrieval on a test bitext, in both directions, fitted on a training bitext of the same language.
pub fn tfidf_both_directions(train: &Bitext, test: &Bitext) -> BothDirections {
    let fit_docs: Vec<&str> = train.pairs.iter().flat_map(|p| [p.x.as_str(), p.en.as_str()]).collect();
    let model = CharTfidf::fit(&fit_docs);
    let x: Vec<&str> = test.pairs.iter().map(|p| p.x.as_str()).collect();
    let en: Vec<&str> = test.pairs.iter().map(|p| p.en.as_str()).collect();
    let scores = model.scores(&x, &en);
    let n = x.len();
    let (x_to_en, en_to_x) = paired_ranks(&scores, n);
    BothDirections { x_to_en: metrics_from_ranks(&x_to_en), en_to_x: metrics_from_ranks(&en_to_x) }
}

/// Zero-shot teacher retrieval from already computed embeddings of the test pairs.
pub fn teacher_zero_shot(x_embeddings: &[f32], en_embeddings: &[f32], dim: usize) -> BothDirections {
    both_directions(x_embeddings, en_embeddings, dim)
}

/// A human table of baseline results, one row per language and method.
pub fn render_table(rows: &[LanguageBaselines]) -> String {
    let mut out = String::from(
        "lang  pairs  method             X->en R@1   R@5  R@10   MRR | en->X R@1   R@5  R@10   MRR\n",
    );
    for r in rows {
        let ridge = r.ridge.iter().flat_map(|b| [("ridge student", &b.test), ("ridge, CSLS", &b.test_csls)]);
        for (method, m) in
            [("teacher zero-shot", &r.teacher_zero_shot), ("char TF-IDF", &r.tfidf)].into_iter().chain(ridge)
        {
            out.push_str(&format!(
                "{:<4}  {:>5}  {:<17}  {:>9.3} {:>5.3} {:>5.3} {:>5.3} | {:>9.3} {:>5.3} {:>5.3} {:>5.3}\n",
                r.lang.code(),
                r.pairs,
                method,
                m.x_to_en.r1,
                m.x_to_en.r5,
                m.x_to_en.r10,
                m.x_to_en.mrr,
                m.en_to_x.r1,
                m.en_to_x.r5,
                m.en_to_x.r10,
                m.en_to_x.mrr
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfidf_prefers_shared_ngrams_and_ignores_case() {
        let model = CharTfidf::fit(&["a dog runs", "a cat sleeps", "the dog sleeps"]);
        let scores = model.scores(&["DOG runs"], &["a cat sleeps", "a dog runs"]);
        assert!(scores[1] > scores[0], "{scores:?}");
        let self_score = model.scores(&["a dog runs"], &["a dog runs"])[0];
        assert!((self_score - 1.0).abs() < 1e-5, "{self_score}");
    }

    #[test]
    fn unseen_ngrams_give_zero_vectors() {
        let model = CharTfidf::fit(&["abc"]);
        assert!(model.transform("xyz qqq").is_empty());
    }
}
