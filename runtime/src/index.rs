//! Sentence embeddings and the on-device document index with cosine and CSLS search.

use core::cmp::Ordering;
use core::fmt;

use heapless::CapacityError;

use crate::blob::{HUBNESS_SCALE, IndexBytes, LexiconBytes, MAX_OUT_DIM};
use crate::quant::{dot, f16s, for_each_row_dot, quantize_activations, wide_len};
use crate::tokenizer::{Feature, TokenizerConfig};

/// Lexical terms are the tokenizer's features hashed into this many buckets (instead of the
/// model's `buckets`): enough that two different n-grams of a query and a document rarely share
/// an id, and small enough that a term id is a `u16`.
///
/// ```
/// assert_eq!(otkd_runtime::LEXICAL_BUCKETS, 65536);
/// ```
pub const LEXICAL_BUCKETS: u32 = 1 << 16;

/// The most distinct terms a [`QueryTerms`] keeps; the rest are counted in
/// [`QueryTerms::dropped`] (a 16-word query has at most about 200, a 32-word one about 400: the
/// terms take 2 KiB of a device's RAM, so they are capped where short queries fit whole).
///
/// ```
/// assert!(otkd_runtime::MAX_QUERY_TERMS >= 200);
/// ```
pub const MAX_QUERY_TERMS: usize = 256;

/// Bits of the query-term filter (a power of two): a document's term is looked up among the
/// query's terms only when its bit is set, so most postings cost one bit test.
const FILTER_BITS: usize = 4096;

/// The widest query embedding [`Index::for_each_hit`] widens once for every document on the DSP
/// path (the micro preset's 384; 768 bytes of stack): a wider one is multiplied row by row.
const WIDEST_WIDENED_QUERY: usize = 384;

/// The character n-gram range of lexical terms, whatever the model's: the range of the char
/// TF-IDF baseline, which matches words best. Measured on Global Voices Aymara (hybrid, int8, dev
/// R@1 cosine / CSLS): with a student whose tokenizer chose 1-3, terms of its own range 0.630 /
/// 0.671, terms of 3-5 0.646 / 0.682.
///
/// ```
/// assert_eq!(otkd_runtime::LEXICAL_NGRAMS, (3, 5));
/// ```
pub const LEXICAL_NGRAMS: (u8, u8) = (3, 5);

/// The tokenizer configuration of lexical terms: the model's words (character words if the
/// model has them) and at most as many features per word, [`LEXICAL_NGRAMS`],
/// [`LEXICAL_BUCKETS`] buckets and at most `max_words` words (a query: the model's own; a
/// document: as many as it has).
///
/// ```
/// use otkd_runtime::{lexical_config, TokenizerConfig, LEXICAL_BUCKETS};
///
/// let model = TokenizerConfig { min_ngram: 1, max_ngram: 3, ..TokenizerConfig::DEFAULT };
/// let config = lexical_config(&model, 64);
/// assert_eq!((config.buckets, config.min_ngram, config.max_ngram), (LEXICAL_BUCKETS, 3, 5));
/// assert!(lexical_config(&model.with_char_words(), 64).has_char_words());
/// ```
pub const fn lexical_config(model: &TokenizerConfig, max_words: u16) -> TokenizerConfig {
    // No more features per word than the model's words have, so a query's terms fit the scratch
    // memory sized for its encoding (at most the model's u16 cap: no truncation).
    #[allow(clippy::cast_possible_truncation)]
    let per_word = model.max_features_per_window() as u16;
    let terms = TokenizerConfig {
        buckets: LEXICAL_BUCKETS,
        max_words,
        min_ngram: LEXICAL_NGRAMS.0,
        max_ngram: LEXICAL_NGRAMS.1,
        max_features_per_word: per_word,
        ..*model
    };
    if model.has_char_words() { terms.with_char_words() } else { terms }
}

/// A sentence embedding: L2-normalised, then quantized to int8 with one f32 scale (the form the
/// index's documents have, so a score is one integer dot product and one float product).
///
/// ```
/// use otkd_runtime::Embedding;
///
/// let e = Embedding::from_f32(&[0.6, -0.8])?;
/// assert_eq!(e.values(), &[95, -127]);
/// let back: Vec<f32> = e.to_f32().collect();
/// assert!((back[0] - 0.6).abs() < 0.01 && (back[1] + 0.8).abs() < 1e-6);
/// # Ok::<(), heapless::CapacityError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    values: heapless::Vec<i8, MAX_OUT_DIM>,
    scale: f32,
}

impl Default for Embedding {
    /// [`Embedding::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Embedding {
    /// An empty embedding (no value, scale 0): memory for [`Model::encode_into`](crate::Model::encode_into)
    /// to write into, e.g. one the caller keeps for every query.
    ///
    /// ```
    /// assert!(otkd_runtime::Embedding::new().is_empty());
    /// ```
    pub const fn new() -> Self {
        Self { values: heapless::Vec::new(), scale: 0.0 }
    }

    /// Quantizes a vector (normalise it first: scores are dot products). Fails when it has more
    /// than [`MAX_OUT_DIM`] values.
    ///
    /// ```
    /// use otkd_runtime::{Embedding, MAX_OUT_DIM};
    ///
    /// assert!(Embedding::from_f32(&[1.0; 384]).is_ok());
    /// assert!(Embedding::from_f32(&[1.0; MAX_OUT_DIM + 1]).is_err());
    /// ```
    pub fn from_f32(values: &[f32]) -> Result<Self, CapacityError> {
        if values.len() > MAX_OUT_DIM {
            return Err(CapacityError::default());
        }
        Ok(Self::quantize(values))
    }

    /// An embedding from its int8 values and scale as [`Embedding::values`] and
    /// [`Embedding::scale`] gave them (e.g. one that crossed a C API or was stored): the same
    /// embedding, bit for bit. Fails when there are more than [`MAX_OUT_DIM`] values.
    ///
    /// ```
    /// use otkd_runtime::Embedding;
    ///
    /// let e = Embedding::from_f32(&[0.6, -0.8])?;
    /// assert_eq!(Embedding::from_quantized(e.values(), e.scale())?, e);
    /// # Ok::<(), heapless::CapacityError>(())
    /// ```
    pub fn from_quantized(values: &[i8], scale: f32) -> Result<Self, CapacityError> {
        Ok(Self { values: heapless::Vec::from_slice(values)?, scale })
    }

    /// [`Embedding::from_f32`] of at most the first [`MAX_OUT_DIM`] values.
    pub(crate) fn quantize(values: &[f32]) -> Self {
        let mut embedding = Self::new();
        embedding.set_quantized(values);
        embedding
    }

    /// Replaces the embedding by [`Embedding::quantize`] of `values`, in place.
    pub(crate) fn set_quantized(&mut self, values: &[f32]) {
        self.values.clear();
        // Within capacity: cannot fail.
        let _ = self.values.resize(values.len().min(MAX_OUT_DIM), 0);
        self.scale = quantize_activations(values, &mut self.values);
    }

    /// The int8 values.
    ///
    /// ```
    /// let e = otkd_runtime::Embedding::from_f32(&[0.0, 1.0])?;
    /// assert_eq!(e.values(), &[0, 127]);
    /// # Ok::<(), heapless::CapacityError>(())
    /// ```
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// The scale: value `i` is `values()[i] as f32 * scale()`.
    ///
    /// ```
    /// let e = otkd_runtime::Embedding::from_f32(&[0.0, 1.0])?;
    /// assert_eq!(e.scale(), 1.0 / 127.0);
    /// # Ok::<(), heapless::CapacityError>(())
    /// ```
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Number of values (the model's `out_dim`).
    ///
    /// ```
    /// let e = otkd_runtime::Embedding::from_f32(&[0.5; 384])?;
    /// assert_eq!(e.len(), 384);
    /// # Ok::<(), heapless::CapacityError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True for an embedding of no value.
    ///
    /// ```
    /// assert!(otkd_runtime::Embedding::from_f32(&[])?.is_empty());
    /// # Ok::<(), heapless::CapacityError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values as f32 (`values()[i] · scale()`).
    ///
    /// ```
    /// let e = otkd_runtime::Embedding::from_f32(&[0.0, -2.0])?;
    /// assert_eq!(e.to_f32().collect::<Vec<_>>(), [0.0, -2.0]);
    /// # Ok::<(), heapless::CapacityError>(())
    /// ```
    pub fn to_f32(&self) -> impl Iterator<Item = f32> + '_ {
        self.values.iter().map(|&q| f32::from(q) * self.scale)
    }

    /// The cosine of two embeddings of unit length: their dot product, `Σ qᵢ q'ᵢ` in integers,
    /// times both scales.
    ///
    /// ```
    /// use otkd_runtime::Embedding;
    ///
    /// let a = Embedding::from_f32(&[0.6, 0.8])?;
    /// assert!((a.cosine(&a) - 1.0).abs() < 0.01);
    /// # Ok::<(), heapless::CapacityError>(())
    /// ```
    pub fn cosine(&self, other: &Embedding) -> f32 {
        dot(&self.values, &other.values) as f32 * (self.scale * other.scale)
    }
}

/// A query's lexical terms for [hybrid search](Index#hybrid-search): its distinct term ids in
/// increasing order, each weighted `1 + ln(tf)` (`tf`: how often the query has it), the weights
/// divided by their L2 norm. Filled by [`Model::terms`](crate::Model::terms) from the query's
/// text; 2 KiB, so a device keeps one in static memory ([`QueryTerms::new`] is `const`).
///
/// ```
/// use otkd_runtime::{Feature, QueryTerms};
///
/// let mut features = [3, 9, 3].map(|id| Feature { word: 0, id });
/// let mut terms = QueryTerms::new();
/// terms.set(&mut features);
/// assert!(terms.terms().eq([3, 9]));
/// let w: Vec<f32> = terms.weights().collect();
/// assert!(w[0] > w[1] && (w[0] * w[0] + w[1] * w[1] - 1.0).abs() < 1e-6);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QueryTerms {
    terms: heapless::Vec<u16, MAX_QUERY_TERMS>,
    weights: heapless::Vec<f32, MAX_QUERY_TERMS>,
    filter: [u32; FILTER_BITS / 32],
    dropped: u32,
}

impl Default for QueryTerms {
    fn default() -> Self {
        Self::new()
    }
}

impl QueryTerms {
    /// No term.
    ///
    /// ```
    /// static TERMS: otkd_runtime::QueryTerms = otkd_runtime::QueryTerms::new();
    /// assert!(TERMS.is_empty());
    /// ```
    pub const fn new() -> Self {
        Self {
            terms: heapless::Vec::new(),
            weights: heapless::Vec::new(),
            filter: [0; FILTER_BITS / 32],
            dropped: 0,
        }
    }

    /// Replaces the terms with those of hashed features whose ids are below [`LEXICAL_BUCKETS`]
    /// (others are counted as dropped); `features` is sorted by id in place. Past
    /// [`MAX_QUERY_TERMS`] distinct terms, the largest ids are dropped, but still count in the
    /// norm.
    ///
    /// See the [type's example](QueryTerms).
    pub fn set(&mut self, features: &mut [Feature]) {
        features.sort_unstable_by_key(|f| f.id);
        self.clear();
        let out = self;
        let runs = || {
            features.chunk_by(|a, b| a.id == b.id).filter_map(|run| {
                let tf = run.len() as f32;
                run.first().map(|f| (f.id, 1.0 + libm::logf(tf)))
            })
        };
        let norm = libm::sqrtf(runs().fold(0.0, |total, (_, w)| total + w * w));
        for (id, weight) in runs() {
            let Ok(term) = u16::try_from(id) else {
                out.dropped = out.dropped.saturating_add(1);
                continue;
            };
            if out.terms.push(term).is_err() || out.weights.push(weight / norm).is_err() {
                out.dropped = out.dropped.saturating_add(1);
                continue;
            }
            let bit = usize::from(term) % FILTER_BITS;
            if let Some(word) = out.filter.get_mut(bit / 32) {
                *word |= 1 << (bit % 32);
            }
        }
    }

    /// Removes every term, in place (a device's terms are 2 KiB: no temporary copy).
    ///
    /// ```
    /// use otkd_runtime::{Feature, QueryTerms};
    /// let mut terms = QueryTerms::new();
    /// terms.set(&mut [Feature { word: 0, id: 7 }]);
    /// terms.clear();
    /// assert!(terms.is_empty() && terms.dropped() == 0);
    /// ```
    pub fn clear(&mut self) {
        self.terms.clear();
        self.weights.clear();
        self.filter.fill(0);
        self.dropped = 0;
    }

    /// The term ids, increasing.
    ///
    /// See the [type's example](QueryTerms).
    pub fn terms(&self) -> impl Iterator<Item = u16> + '_ {
        self.terms.iter().copied()
    }

    /// The terms' weights, in the order of [`QueryTerms::terms`].
    ///
    /// See the [type's example](QueryTerms).
    pub fn weights(&self) -> impl Iterator<Item = f32> + '_ {
        self.weights.iter().copied()
    }

    /// Number of terms kept.
    ///
    /// ```
    /// assert_eq!(otkd_runtime::QueryTerms::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// True when no term was kept (a query then ranks by its embedding alone).
    ///
    /// ```
    /// assert!(otkd_runtime::QueryTerms::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Distinct terms not kept: past [`MAX_QUERY_TERMS`], or ids of [`LEXICAL_BUCKETS`] and above.
    ///
    /// ```
    /// use otkd_runtime::{Feature, QueryTerms};
    /// let mut terms = QueryTerms::new();
    /// terms.set(&mut [Feature { word: 0, id: 70_000 }]);
    /// assert_eq!(terms.dropped(), 1);
    /// ```
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The weight of `term`, if the query has it.
    fn weight_of(&self, term: u16) -> Option<f32> {
        let bit = usize::from(term) % FILTER_BITS;
        let word = self.filter.get(bit / 32)?;
        if word & (1 << (bit % 32)) == 0 {
            return None;
        }
        let at = self.terms.binary_search(&term).ok()?;
        self.weights.get(at).copied()
    }

    /// `Σ w_q(t) · weights[p]` over the postings `p` whose term `t` the query has, in posting
    /// order (so every platform adds the same floats in the same order).
    fn score(&self, terms: &[[u8; 2]], weights: &[u8]) -> f32 {
        terms
            .iter()
            .zip(weights)
            .filter_map(|(term, &weight)| {
                Some(self.weight_of(u16::from_le_bytes(*term))? * f32::from(weight))
            })
            .fold(0.0, |total, x| total + x)
    }
}

/// What [`Index::search`] ranks documents for: a query's embedding and, for hybrid search, its
/// lexical terms. A bare `&Embedding` converts into a query without terms.
///
/// ```
/// use otkd_runtime::{Embedding, Query, QueryTerms};
///
/// let embedding = Embedding::from_f32(&[1.0, 0.0])?;
/// let terms = QueryTerms::default();
/// let query = Query { embedding: &embedding, terms: Some(&terms) };
/// assert!(Query::from(&embedding).terms.is_none() && query.terms.is_some());
/// # Ok::<(), heapless::CapacityError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Query<'q> {
    /// The query's sentence embedding.
    pub embedding: &'q Embedding,
    /// The query's lexical terms; `None` (or an index without a lexicon): dense scores only.
    pub terms: Option<&'q QueryTerms>,
}

impl<'q> From<&'q Embedding> for Query<'q> {
    fn from(embedding: &'q Embedding) -> Self {
        Self { embedding, terms: None }
    }
}

/// How [`Index::search`] ranks documents.
///
/// ```
/// use otkd_runtime::Scoring;
///
/// assert_ne!(Scoring::Cosine, Scoring::Csls);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Scoring {
    /// `cos(q, d)`.
    Cosine,
    /// Cross-domain similarity local scaling (Conneau et al. 2018): `2 cos(q, d) - r(d)`, where
    /// `r(d)` (stored per document) is the mean cosine of `d` to its nearest reference queries;
    /// it demotes hubs, documents that are near every query.
    Csls,
}

/// One search result.
///
/// ```
/// use otkd_runtime::Hit;
///
/// let hit = Hit { id: 7, score: 0.5 };
/// assert_eq!(hit.id, 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hit {
    /// The document id given to the exporter.
    pub id: u32,
    /// The document's score under the chosen [`Scoring`] (higher is better).
    pub score: f32,
}

/// Why [`Index::search`] could not run.
///
/// ```
/// use otkd_runtime::SearchError;
///
/// assert_eq!(SearchError::DimensionMismatch, SearchError::DimensionMismatch.clone());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SearchError {
    /// The query's width differs from the index's (an embedding of another model).
    DimensionMismatch,
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DimensionMismatch => "search: the query's width differs from the index's",
        })
    }
}

impl core::error::Error for SearchError {}

/// The document index of a blob, borrowed in place: per document an int8 embedding with an f16
/// scale, an id and the CSLS hubness term, and optionally its lexical terms (layout in
/// [`blob`](crate::blob)).
///
/// # Hybrid search
///
/// An index with a lexicon ([`Index::lexical_weight`] is `Some(α)`) adds a lexical match to the
/// dense score, for the names, numbers and loanwords that a query and a document share but a
/// small student rarely learns. A query's terms are the tokenizer's features of its text hashed
/// into [`LEXICAL_BUCKETS`] ([`Model::terms`](crate::Model::terms), [`QueryTerms`]); a document
/// stores, per term `t`, `idf(t) · v_t / |v|` with `v_t = (1 + ln tf) · idf(t)` and
/// `idf(t) = ln((1 + N) / (1 + df(t))) + 1` over the index's `N` documents (computed at export).
/// So `lexical(q, d) = Σ w_q(t) · w_d(t)` is the TF-IDF cosine with the idf on the document side
/// only, and the device needs no vocabulary: measured on Aymara news this matched the two-sided
/// TF-IDF cosine (dev R@1 0.658 vs 0.657 in a hybrid). A document's score then uses
/// `s = cos(q, d) + α · lexical(q, d)` where [`Scoring`] uses the cosine.
///
/// ```
/// use otkd_runtime::{BlobParts, IndexParts, Model, ModelConfig, Scoring, TokenizerConfig};
///
/// let config = ModelConfig {
///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 2, layer_norm_eps: 1e-5,
/// };
/// let mut parts = BlobParts::new(config);
/// parts.index = Some(IndexParts {
///     ids: vec![10, 11],
///     embeddings: vec![1.0, 0.0, 0.0, 1.0],
///     hubness: vec![0.0, 0.0],
///     lexical: None,
/// });
/// let blob = parts.to_bytes()?;
/// let model = Model::from_bytes(&blob)?;
/// let index = model.index().expect("exported with an index");
/// assert_eq!(index.len(), 2);
/// let query = otkd_runtime::Embedding::from_f32(&[0.0, 1.0])?;
/// let hits = index.search::<1>(&query, 1, Scoring::Cosine)?;
/// assert_eq!(hits[0].id, 11);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct Index<'a> {
    dim: usize,
    values: &'a [u8],
    scales: &'a [u8],
    ids: &'a [u8],
    hubness: &'a [u8],
    lexicon: Option<LexiconBytes<'a>>,
}

impl<'a> Index<'a> {
    /// The index of a checked blob, whose documents are `dim` wide.
    pub(crate) fn new(bytes: &IndexBytes<'a>, dim: usize) -> Self {
        Self {
            dim,
            values: bytes.values,
            scales: bytes.scales,
            ids: bytes.ids,
            hubness: bytes.hubness,
            lexicon: bytes.lexical,
        }
    }

    /// `α`, the weight of the lexical score in [hybrid search](Index#hybrid-search); `None` for
    /// an index without a lexicon.
    ///
    /// ```
    /// # use otkd_runtime::{BlobParts, IndexParts, Model, ModelConfig, TokenizerConfig};
    /// # let config = ModelConfig {
    /// #     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    /// #     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 2, layer_norm_eps: 1e-5,
    /// # };
    /// # let mut parts = BlobParts::new(config);
    /// # parts.index = Some(IndexParts { ids: vec![5], embeddings: vec![1.0, 0.0], hubness: vec![0.0], lexical: None });
    /// # let blob = parts.to_bytes()?;
    /// let index = Model::from_bytes(&blob)?.index().unwrap();
    /// assert_eq!(index.lexical_weight(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lexical_weight(&self) -> Option<f32> {
        self.lexicon.map(|l| l.weight)
    }

    /// Number of documents.
    ///
    /// See the [type's example](Index).
    pub fn len(&self) -> usize {
        self.ids.len() / 4
    }

    /// True when the index holds no document.
    ///
    /// See the [type's example](Index).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The documents' ids, in index order: the id of the document at each position (what a
    /// texts file kept in index order is looked up by).
    ///
    /// ```
    /// # use otkd_runtime::{BlobParts, IndexParts, Model, ModelConfig, TokenizerConfig};
    /// # let config = ModelConfig {
    /// #     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    /// #     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 2, layer_norm_eps: 1e-5,
    /// # };
    /// # let mut parts = BlobParts::new(config);
    /// # parts.index = Some(IndexParts { ids: vec![5, 9], embeddings: vec![1.0, 0.0, 0.0, 1.0], hubness: vec![0.0, 0.0], lexical: None });
    /// # let blob = parts.to_bytes()?;
    /// let index = Model::from_bytes(&blob)?.index().unwrap();
    /// assert!(index.ids().eq([5, 9]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.as_chunks::<4>().0.iter().map(|b| u32::from_le_bytes(*b))
    }

    /// Bytes of the blob the index occupies (values, scales, ids, hubness terms, and the lexicon if
    /// any).
    ///
    /// See the [type's example](Index): 2 documents of width 2 take `2·2 + 2·2 + 2·4 + 2·2` bytes.
    ///
    /// ```
    /// # use otkd_runtime::{BlobParts, IndexParts, Model, ModelConfig, TokenizerConfig};
    /// # let config = ModelConfig {
    /// #     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    /// #     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 2, layer_norm_eps: 1e-5,
    /// # };
    /// # let mut parts = BlobParts::new(config);
    /// # parts.index = Some(IndexParts { ids: vec![10, 11], embeddings: vec![1.0, 0.0, 0.0, 1.0], hubness: vec![0.0; 2], lexical: None });
    /// # let blob = parts.to_bytes()?;
    /// # let index = Model::from_bytes(&blob)?.index().unwrap();
    /// assert_eq!(index.stored_bytes(), 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stored_bytes(&self) -> usize {
        let lexicon = self
            .lexicon
            .map_or(0, |l| 4 + l.offsets.len() + l.terms.len() + l.weights.len() + l.scales.len());
        self.values.len() + self.scales.len() + self.ids.len() + self.hubness.len() + lexicon
    }

    /// The `min(k, K)` best documents for `query`, best first; equal scores rank by smaller id.
    ///
    /// A score is `Σ qᵢ dᵢ` over the int8 values (an exact integer) times the query's and the
    /// document's scales (the cosine; in [hybrid search](Index#hybrid-search) plus `α` times the
    /// lexical score); for [`Scoring::Csls`] then `2 · cosine - r(d)`. `query` is a [`Query`] or
    /// a bare `&Embedding`. Fails when the query's width is not the index's.
    ///
    /// ```
    /// # use otkd_runtime::{BlobParts, IndexParts, Model, ModelConfig, TokenizerConfig};
    /// use otkd_runtime::{Embedding, Scoring};
    /// # let config = ModelConfig {
    /// #     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    /// #     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 2, layer_norm_eps: 1e-5,
    /// # };
    /// # let mut parts = BlobParts::new(config);
    /// // Two documents equally near the query; document 5 is a hub (r = 0.5).
    /// # parts.index = Some(IndexParts { ids: vec![5, 9], embeddings: vec![0.6, 0.8, 0.8, 0.6], hubness: vec![0.5, 0.1], lexical: None });
    /// # let blob = parts.to_bytes()?;
    /// # let index = Model::from_bytes(&blob)?.index().unwrap();
    /// let query = Embedding::from_f32(&[0.7071, 0.7071])?;
    /// let cosine = index.search::<2>(&query, 2, Scoring::Cosine)?;
    /// assert_eq!([cosine[0].id, cosine[1].id], [5, 9]); // a tie: smaller id first
    /// let csls = index.search::<2>(&query, 2, Scoring::Csls)?;
    /// assert_eq!([csls[0].id, csls[1].id], [9, 5]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn search<'q, const K: usize>(
        &self,
        query: impl Into<Query<'q>>,
        k: usize,
        scoring: Scoring,
    ) -> Result<heapless::Vec<Hit, K>, SearchError> {
        let query = query.into();
        let k = k.min(K);
        let mut hits = heapless::Vec::<Hit, K>::new();
        if query.embedding.len() != self.dim {
            return Err(SearchError::DimensionMismatch);
        }
        if k == 0 {
            return Ok(hits);
        }
        self.for_each_hit(query, scoring, |hit| {
            if hits.len() == k {
                if !hits.last().is_some_and(|last| hit.ranks_before(last)) {
                    return;
                }
                hits.pop();
            }
            let at = hits.partition_point(|h| h.ranks_before(&hit));
            // Below capacity (`len < k <= K`) and `at <= len`: cannot fail.
            let _ = hits.insert(at, hit);
        })?;
        Ok(hits)
    }

    /// Calls `visit` with every document's [`Hit`] for `query`, in index order, without
    /// storing any: what [`Index::search`] ranks, for callers that need more than a top-k (the
    /// rank of one document among any number). Fails when the query's width is not the index's.
    ///
    /// ```
    /// # use otkd_runtime::{BlobParts, IndexParts, Model, ModelConfig, TokenizerConfig};
    /// use otkd_runtime::{Embedding, Scoring};
    /// # let config = ModelConfig {
    /// #     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    /// #     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 2, layer_norm_eps: 1e-5,
    /// # };
    /// # let mut parts = BlobParts::new(config);
    /// # parts.index = Some(IndexParts { ids: vec![5, 9], embeddings: vec![0.6, 0.8, 0.8, 0.6], hubness: vec![0.5, 0.1], lexical: None });
    /// # let blob = parts.to_bytes()?;
    /// # let index = Model::from_bytes(&blob)?.index().unwrap();
    /// let query = Embedding::from_f32(&[1.0, 0.0])?;
    /// let mut ids = [0u32; 2];
    /// let mut n = 0;
    /// index.for_each_hit(&query, Scoring::Cosine, |hit| {
    ///     ids[n] = hit.id;
    ///     n += 1;
    /// })?;
    /// assert_eq!(ids, [5, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_each_hit<'q>(
        &self,
        query: impl Into<Query<'q>>,
        scoring: Scoring,
        mut visit: impl FnMut(Hit),
    ) -> Result<(), SearchError> {
        let Query { embedding: query, terms } = query.into();
        if query.len() != self.dim {
            return Err(SearchError::DimensionMismatch);
        }
        let ids = self.ids();
        let hubness =
            self.hubness.as_chunks::<2>().0.iter().map(|b| f32::from(i16::from_le_bytes(*b)) / HUBNESS_SCALE);
        let mut documents = f16s(self.scales).zip(ids).zip(hubness);
        let mut lexical = match (self.lexicon, terms) {
            (Some(lexicon), Some(terms)) if !terms.is_empty() => Some(LexicalScores::new(lexicon, terms)),
            _ => None,
        };
        // The query widened once for every document (DSP path): 2 bytes per value, on the stack.
        let mut wide = [core::mem::MaybeUninit::uninit(); wide_len(WIDEST_WIDENED_QUERY)];
        for_each_row_dot(&query.values, self.values, &mut wide, |dot| {
            let Some(((scale, id), hubness)) = documents.next() else { return };
            let mut cosine = dot as f32 * (query.scale * scale);
            if let Some(lexical) = lexical.as_mut() {
                cosine += lexical.next_document();
            }
            let score = match scoring {
                Scoring::Cosine => cosine,
                Scoring::Csls => 2.0 * cosine - hubness,
            };
            visit(Hit { id, score });
        });
        Ok(())
    }
}

/// The weighted lexical scores of one query for the index's documents, in index order.
struct LexicalScores<'a, 'q> {
    terms: &'q QueryTerms,
    weight: f32,
    offsets: &'a [[u8; 4]],
    postings: &'a [[u8; 2]],
    weights: &'a [u8],
    scales: &'a [[u8; 2]],
    document: usize,
}

impl<'a, 'q> LexicalScores<'a, 'q> {
    fn new(lexicon: LexiconBytes<'a>, terms: &'q QueryTerms) -> Self {
        Self {
            terms,
            weight: lexicon.weight,
            offsets: lexicon.offsets.as_chunks::<4>().0,
            postings: lexicon.terms.as_chunks::<2>().0,
            weights: lexicon.weights,
            scales: lexicon.scales.as_chunks::<2>().0,
            document: 0,
        }
    }

    /// `α · lexical(q, d)` of the next document (loading checked the offsets: 0 past the end).
    fn next_document(&mut self) -> f32 {
        let d = self.document;
        self.document += 1;
        let offset = |i: usize| self.offsets.get(i).map(|b| u32::from_le_bytes(*b) as usize);
        let (Some(start), Some(end), Some(scale)) = (offset(d), offset(d + 1), self.scales.get(d)) else {
            return 0.0;
        };
        let (Some(terms), Some(weights)) = (self.postings.get(start..end), self.weights.get(start..end))
        else {
            return 0.0;
        };
        let scale = f16s(scale.as_slice()).next().unwrap_or(0.0);
        self.weight * (self.terms.score(terms, weights) * scale)
    }
}

/// The sizes, not the documents.
impl fmt::Debug for Index<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index").field("documents", &self.len()).field("dim", &self.dim).finish()
    }
}

impl Hit {
    /// Whether `self` ranks before `other`: higher score first, equal scores by smaller id.
    /// `total_cmp` makes it a total order, NaN included.
    ///
    /// ```
    /// use otkd_runtime::Hit;
    /// let (a, b) = (Hit { id: 7, score: 0.5 }, Hit { id: 3, score: 0.5 });
    /// assert!(b.ranks_before(&a) && !a.ranks_before(&b));
    /// ```
    pub fn ranks_before(&self, other: &Hit) -> bool {
        match self.score.total_cmp(&other.score) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.id < other.id,
        }
    }
}
