//! The blob writer (feature `std`): a student's f32 weights, and optionally a document index, in;
//! a blob out. The host's exporter calls it, and tests build their blobs with it.

use core::fmt;

use std::collections::BTreeMap;

use crate::blob::{
    Dense, FORMAT_VERSION, HEADER_LEN, HUBNESS_SCALE, IndexBytes, Layer, Layers, LexiconBytes, MAGIC, Matrix,
    ModelConfig, Norm, Payload, Provenance, crc32,
};
use crate::tokenizer::{Feature, TokenizerConfig, tokenize};
use crate::{Model, lexical_config, quantize_row};

/// Everything a blob holds, as f32: what the host exports.
///
/// Shapes follow the host student (`host/src/student/mod.rs`): matrices are row-major, and a dense
/// layer's `weight` is `[inputs, outputs]` (`x · W`); the writer transposes it so that each output
/// is a row with its own scale. [`BlobParts::new`] gives every tensor its shape.
///
/// ```
/// use otkd_runtime::{BlobParts, Model, ModelConfig, TokenizerConfig};
///
/// let config = ModelConfig {
///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
/// };
/// let mut parts = BlobParts::new(config);
/// assert_eq!(parts.embeddings.len(), 64 * 8);
/// assert_eq!(parts.layers[0].ffn_in.weight.len(), 8 * 16);
/// parts.projection.bias[0] = 0.5;
/// let blob = parts.to_bytes()?;
/// assert_eq!(&blob[..4], b"OTKD");
/// Model::from_bytes(&blob)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BlobParts {
    /// The architecture (and tokenizer) every shape below follows.
    pub config: ModelConfig,
    /// `buckets x dim`: the hashed-feature embedding table.
    pub embeddings: Vec<f32>,
    /// `max_words x dim`: the position vectors.
    pub positions: Vec<f32>,
    /// `layers` transformer layers.
    pub layers: Vec<LayerParts>,
    /// `dim -> out_dim`.
    pub projection: DenseParts,
    /// The document index, if the blob carries one.
    pub index: Option<IndexParts>,
    /// The language tag of the queries the student reads ([`crate::Provenance::lang`]).
    pub lang: String,
    /// Where the index's documents come from ([`crate::Provenance::index_source`]).
    pub index_source: String,
}

/// A dense layer, `y = x · weight + bias`.
///
/// ```
/// let dense = otkd_runtime::DenseParts { weight: vec![0.0; 3 * 2], bias: vec![0.0; 2] };
/// assert_eq!(dense.weight.len() / dense.bias.len(), 3); // inputs
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DenseParts {
    /// `[inputs, outputs]`, row-major (the host student's layout).
    pub weight: Vec<f32>,
    /// `outputs`.
    pub bias: Vec<f32>,
}

/// A LayerNorm's gain and bias (`dim` each).
///
/// ```
/// let norm = otkd_runtime::NormParts { weight: vec![1.0; 8], bias: vec![0.0; 8] };
/// assert_eq!(norm.weight.len(), norm.bias.len());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NormParts {
    /// Gain, `dim`.
    pub weight: Vec<f32>,
    /// Bias, `dim`.
    pub bias: Vec<f32>,
}

/// One pre-LayerNorm transformer layer, with the host student's parameter names.
///
/// ```
/// use otkd_runtime::{BlobParts, ModelConfig, TokenizerConfig};
///
/// let config = ModelConfig {
///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
/// };
/// let layer = &BlobParts::new(config).layers[0];
/// assert_eq!(layer.ffn_out.weight.len(), 16 * 8);
/// assert_eq!(layer.attention_norm.weight, vec![1.0; 8]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParts {
    /// `layers.N.attention_norm`.
    pub attention_norm: NormParts,
    /// `layers.N.query`, `dim -> dim`.
    pub query: DenseParts,
    /// `layers.N.key`, `dim -> dim`.
    pub key: DenseParts,
    /// `layers.N.value`, `dim -> dim`.
    pub value: DenseParts,
    /// `layers.N.attention_out`, `dim -> dim`.
    pub attention_out: DenseParts,
    /// `layers.N.ffn_norm`.
    pub ffn_norm: NormParts,
    /// `layers.N.ffn_in`, `dim -> ffn`.
    pub ffn_in: DenseParts,
    /// `layers.N.ffn_out`, `ffn -> dim`.
    pub ffn_out: DenseParts,
}

/// A document index: per document an id, its L2-normalised embedding and its CSLS hubness term.
///
/// ```
/// let index = otkd_runtime::IndexParts {
///     ids: vec![3, 8],
///     embeddings: vec![1.0, 0.0, 0.0, 1.0], // 2 documents x out_dim 2
///     hubness: vec![0.31, 0.12],
///     lexical: None,
/// };
/// assert_eq!(index.embeddings.len(), index.ids.len() * 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct IndexParts {
    /// Document ids, returned by search.
    pub ids: Vec<u32>,
    /// `docs x out_dim`, each row L2-normalised.
    pub embeddings: Vec<f32>,
    /// `r(d)` per document: the mean cosine of the document to its K nearest reference queries
    /// (clamped to `[-1, 1]` when stored; see [`blob`](crate::blob)).
    pub hubness: Vec<f32>,
    /// The documents' lexical terms, for [hybrid search](crate::Index#hybrid-search).
    pub lexical: Option<LexiconParts>,
}

/// The documents' lexical terms for [hybrid search](crate::Index#hybrid-search), as f32.
///
/// ```
/// use otkd_runtime::{LexiconParts, TokenizerConfig};
///
/// let lexicon = LexiconParts::from_texts(&TokenizerConfig::DEFAULT, &["Evo Morales", "La Paz"], 1.5, None);
/// assert_eq!(lexicon.documents.len(), 2);
/// assert!(lexicon.documents[0].windows(2).all(|p| p[0].0 < p[1].0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LexiconParts {
    /// `α`: how much the lexical score adds to the cosine (finite, ≥ 0).
    pub weight: f32,
    /// Per document, in index order: `(term, weight)` with term ids increasing, weights ≥ 0.
    pub documents: Vec<Vec<(u16, f32)>>,
}

impl LexiconParts {
    /// The documents' terms (the tokenizer's features of each text, every word, hashed into
    /// [`LEXICAL_BUCKETS`](crate::LEXICAL_BUCKETS)) weighted `idf(t) · v_t / |v|` with
    /// `v_t = (1 + ln tf) · idf(t)` and `idf(t) = ln((1 + N) / (1 + df(t))) + 1` over these
    /// `N` texts (see [hybrid search](crate::Index#hybrid-search)); with `max_terms`, each
    /// document keeps its heaviest `max_terms` terms (ties: smaller id).
    ///
    /// See the [type's example](LexiconParts).
    pub fn from_texts(
        config: &TokenizerConfig,
        texts: &[&str],
        weight: f32,
        max_terms: Option<usize>,
    ) -> Self {
        let counts: Vec<BTreeMap<u16, u32>> = texts.iter().map(|text| term_counts(config, text)).collect();
        let mut df = BTreeMap::<u16, u32>::new();
        for &term in counts.iter().flat_map(BTreeMap::keys) {
            *df.entry(term).or_default() += 1;
        }
        let n = counts.len() as f64;
        // libm, not std's ln: the same bits on every machine (seeded test blobs are pinned).
        let idf =
            |term: &u16| libm::log((1.0 + n) / (1.0 + f64::from(df.get(term).copied().unwrap_or(0)))) + 1.0;
        let documents = counts
            .iter()
            .map(|counts| {
                let v: Vec<(u16, f64, f64)> = counts
                    .iter()
                    .map(|(term, &tf)| (*term, (1.0 + libm::log(f64::from(tf))) * idf(term), idf(term)))
                    .collect();
                let norm = v.iter().map(|(_, x, _)| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
                #[allow(clippy::cast_possible_truncation)]
                let mut terms: Vec<(u16, f32)> =
                    v.iter().map(|&(t, x, idf)| (t, (x / norm * idf) as f32)).collect();
                if let Some(keep) = max_terms.filter(|&keep| keep < terms.len()) {
                    terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    terms.truncate(keep);
                    terms.sort_by_key(|&(t, _)| t);
                }
                terms
            })
            .collect();
        Self { weight, documents }
    }
}

/// How often each lexical term occurs in `text`, every word of it: tokenized in pieces of at most
/// `PIECE_CHARS` chars cut at whitespace (features never span whitespace; a longer
/// whitespace-free run is cut, losing only the n-grams across the cut).
fn term_counts(config: &TokenizerConfig, text: &str) -> BTreeMap<u16, u32> {
    const PIECE_CHARS: usize = 2048;
    // Room for every feature of a piece: at most a window's features per stride of chars.
    const CAPACITY: usize = PIECE_CHARS * 16;
    let config = lexical_config(config, u16::MAX);
    let mut features = Box::new(heapless::Vec::<Feature, CAPACITY>::new());
    let mut counts = BTreeMap::new();
    let mut count = |piece: &str| {
        tokenize(&config, piece, features.as_mut_view());
        for feature in features.iter() {
            if let Ok(term) = u16::try_from(feature.id) {
                *counts.entry(term).or_default() += 1;
            }
        }
    };
    let (mut piece, mut piece_chars) = (String::new(), 0);
    for token in text.split_whitespace() {
        let chars: Vec<char> = token.chars().collect();
        for chunk in chars.chunks(PIECE_CHARS - 1) {
            if piece_chars + 1 + chunk.len() > PIECE_CHARS {
                count(&piece);
                piece.clear();
                piece_chars = 0;
            }
            piece.push(' ');
            piece.extend(chunk);
            piece_chars += 1 + chunk.len();
        }
    }
    count(&piece);
    counts
}

/// Why [`BlobParts::to_bytes`] could not write a blob.
///
/// ```
/// use otkd_runtime::{BlobParts, ModelConfig, TokenizerConfig, WriteError};
///
/// let config = ModelConfig {
///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
/// };
/// let mut parts = BlobParts::new(config);
/// parts.positions.pop();
/// assert_eq!(parts.to_bytes(), Err(WriteError::ShapeMismatch));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WriteError {
    /// The config would be refused on loading ([`ModelConfig::validate`] tells why).
    InvalidConfig,
    /// A tensor's length, the layer count or an index list's length does not match the config.
    ShapeMismatch,
    /// A weight, parameter, document embedding or hubness term is NaN or infinite.
    NonFinite,
    /// A row's largest magnitude needs a scale above f16's range (|value| > 65504 · 127).
    ScaleOverflow,
    /// The payload would be over `u32::MAX` bytes.
    TooLarge,
    /// postcard could not encode the payload.
    Encode,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidConfig => "blob writer: the model config is invalid",
            Self::ShapeMismatch => "blob writer: a tensor does not match the config",
            Self::NonFinite => "blob writer: a value is NaN or infinite",
            Self::ScaleOverflow => "blob writer: a row is too large for an f16 scale",
            Self::TooLarge => "blob writer: the payload is over 4 GiB",
            Self::Encode => "blob writer: postcard could not encode the payload",
        })
    }
}

impl std::error::Error for WriteError {}

impl BlobParts {
    /// Parts of the config's shapes: every weight and bias 0, LayerNorm gains 1, no index.
    /// Allocates the full sizes (`buckets x dim` and so on): check the config first.
    ///
    /// See the [type's example](BlobParts).
    pub fn new(config: ModelConfig) -> Self {
        let (dim, ffn, out) = (usize::from(config.dim), usize::from(config.ffn), usize::from(config.out_dim));
        let buckets = usize::try_from(config.tokenizer.buckets).unwrap_or(usize::MAX);
        let dense = |inputs: usize, outputs: usize| DenseParts {
            weight: vec![0.0; inputs.saturating_mul(outputs)],
            bias: vec![0.0; outputs],
        };
        let norm = || NormParts { weight: vec![1.0; dim], bias: vec![0.0; dim] };
        let layer = || LayerParts {
            attention_norm: norm(),
            query: dense(dim, dim),
            key: dense(dim, dim),
            value: dense(dim, dim),
            attention_out: dense(dim, dim),
            ffn_norm: norm(),
            ffn_in: dense(dim, ffn),
            ffn_out: dense(ffn, dim),
        };
        Self {
            config,
            embeddings: vec![0.0; buckets.saturating_mul(dim)],
            positions: vec![0.0; usize::from(config.tokenizer.max_words).saturating_mul(dim)],
            layers: (0..config.layers).map(|_| layer()).collect(),
            projection: dense(dim, out),
            index: None,
            lang: String::new(),
            index_source: String::new(),
        }
    }

    /// Quantizes the weights (and the index) and writes the blob: header, then the postcard
    /// payload (layout in [`blob`](crate::blob)). Checks every shape against the config and every
    /// value for NaN and infinity first.
    ///
    /// See the [type's example](BlobParts).
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let config = &self.config;
        config.validate().map_err(|_| WriteError::InvalidConfig)?;
        let (dim, ffn, out) = (usize::from(config.dim), usize::from(config.ffn), usize::from(config.out_dim));
        let buckets = usize::try_from(config.tokenizer.buckets).map_err(|_| WriteError::TooLarge)?;
        if self.layers.len() != usize::from(config.layers) {
            return Err(WriteError::ShapeMismatch);
        }
        let embeddings = OwnedMatrix::from_rows(&self.embeddings, buckets, dim)?;
        let positions =
            OwnedMatrix::from_rows(&self.positions, usize::from(config.tokenizer.max_words), dim)?;
        let layers = self
            .layers
            .iter()
            .map(|layer| OwnedLayer::new(layer, dim, ffn))
            .collect::<Result<Vec<_>, _>>()?;
        let projection = OwnedDense::new(&self.projection, dim, out)?;
        let index = self.index.as_ref().map(|index| OwnedIndex::new(index, out)).transpose()?;

        let mut encoded_layers = Vec::new();
        for layer in &layers {
            encoded_layers =
                postcard::to_extend(&layer.borrow(), encoded_layers).map_err(|_| WriteError::Encode)?;
        }
        let payload = Payload {
            config: *config,
            provenance: Provenance { lang: &self.lang, index_source: &self.index_source },
            embeddings: embeddings.borrow(),
            positions: positions.borrow(),
            layers: Layers::from_encoded(&encoded_layers, layers.len()),
            projection: projection.borrow(),
            index: index.as_ref().map(OwnedIndex::borrow),
        };
        seal(&payload)
    }
}

impl Model<'_> {
    /// This blob's student, its int8 weights byte for byte, with `index` instead of the index it
    /// has (`None`: no index) and `index_source` as the provenance's index source; the language tag
    /// is kept. For a host that builds a device's index from its own document embeddings without
    /// the f32 student (the Python package): the weights are not quantized a second time.
    ///
    /// ```
    /// use otkd_runtime::{BlobParts, IndexParts, Model, ModelConfig, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    ///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 2, layer_norm_eps: 1e-5,
    /// };
    /// let mut parts = BlobParts::new(config);
    /// parts.lang = "ay".into();
    /// let blob = parts.to_bytes()?;
    /// let index = IndexParts { ids: vec![7], embeddings: vec![0.6, 0.8], hubness: vec![0.25], lexical: None };
    /// let reindexed = Model::from_bytes(&blob)?.to_bytes_with_index(Some(&index), "mine")?;
    /// let model = Model::from_bytes(&reindexed)?;
    /// assert_eq!(model.index().map(|i| i.len()), Some(1));
    /// assert_eq!((model.provenance().lang, model.provenance().index_source), ("ay", "mine"));
    /// // The same index as BlobParts would write gives the same bytes.
    /// parts.index = Some(index);
    /// parts.index_source = "mine".into();
    /// assert_eq!(parts.to_bytes()?, reindexed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_bytes_with_index(
        &self,
        index: Option<&IndexParts>,
        index_source: &str,
    ) -> Result<Vec<u8>, WriteError> {
        let out = usize::from(self.config().out_dim);
        let index = index.map(|index| OwnedIndex::new(index, out)).transpose()?;
        let mut payload = self.payload().clone();
        payload.provenance.index_source = index_source;
        payload.index = index.as_ref().map(OwnedIndex::borrow);
        seal(&payload)
    }
}

/// The header and the postcard encoding of `payload`.
fn seal(payload: &Payload<'_>) -> Result<Vec<u8>, WriteError> {
    let payload = postcard::to_allocvec(payload).map_err(|_| WriteError::Encode)?;
    let len = u32::try_from(payload.len()).map_err(|_| WriteError::TooLarge)?;
    let mut blob = Vec::with_capacity(HEADER_LEN + payload.len());
    blob.extend_from_slice(&MAGIC);
    blob.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    blob.extend_from_slice(&len.to_le_bytes());
    blob.extend_from_slice(&crc32(&payload).to_le_bytes());
    blob.extend_from_slice(&payload);
    Ok(blob)
}

/// A quantized matrix being written: int8 values as bytes, f16 scales as little-endian bytes.
#[derive(Default)]
struct OwnedMatrix {
    values: Vec<u8>,
    scales: Vec<u8>,
}

impl OwnedMatrix {
    /// Row-major `rows x cols`, each row quantized as it is.
    fn from_rows(data: &[f32], rows: usize, cols: usize) -> Result<Self, WriteError> {
        if Some(data.len()) != rows.checked_mul(cols) {
            return Err(WriteError::ShapeMismatch);
        }
        let mut matrix = Self::default();
        for row in data.chunks_exact(cols) {
            matrix.push_row(row)?;
        }
        Ok(matrix)
    }

    /// A `[inputs, outputs]` weight, written transposed: one row per output.
    fn from_dense_weight(weight: &[f32], inputs: usize, outputs: usize) -> Result<Self, WriteError> {
        if Some(weight.len()) != inputs.checked_mul(outputs) {
            return Err(WriteError::ShapeMismatch);
        }
        let mut matrix = Self::default();
        let mut column = Vec::with_capacity(inputs);
        for output in 0..outputs {
            column.clear();
            column.extend(weight.iter().skip(output).step_by(outputs));
            matrix.push_row(&column)?;
        }
        Ok(matrix)
    }

    fn push_row(&mut self, row: &[f32]) -> Result<(), WriteError> {
        check_finite(row)?;
        let mut quantized = vec![0i8; row.len()];
        let scale = quantize_row(row, &mut quantized);
        if !scale.is_finite() {
            return Err(WriteError::ScaleOverflow);
        }
        self.values.extend(quantized.iter().map(|q| q.cast_unsigned()));
        self.scales.extend_from_slice(&scale.to_le_bytes());
        Ok(())
    }

    fn borrow(&self) -> Matrix<'_> {
        Matrix { values: &self.values, scales: &self.scales }
    }
}

struct OwnedDense {
    weight: OwnedMatrix,
    bias: Vec<u8>,
}

impl OwnedDense {
    fn new(parts: &DenseParts, inputs: usize, outputs: usize) -> Result<Self, WriteError> {
        Ok(Self {
            weight: OwnedMatrix::from_dense_weight(&parts.weight, inputs, outputs)?,
            bias: f32_bytes(&parts.bias, outputs)?,
        })
    }

    fn borrow(&self) -> Dense<'_> {
        Dense { weight: self.weight.borrow(), bias: &self.bias }
    }
}

struct OwnedNorm {
    weight: Vec<u8>,
    bias: Vec<u8>,
}

impl OwnedNorm {
    fn new(parts: &NormParts, dim: usize) -> Result<Self, WriteError> {
        Ok(Self { weight: f32_bytes(&parts.weight, dim)?, bias: f32_bytes(&parts.bias, dim)? })
    }

    fn borrow(&self) -> Norm<'_> {
        Norm { weight: &self.weight, bias: &self.bias }
    }
}

struct OwnedLayer {
    attention_norm: OwnedNorm,
    query: OwnedDense,
    key: OwnedDense,
    value: OwnedDense,
    attention_out: OwnedDense,
    ffn_norm: OwnedNorm,
    ffn_in: OwnedDense,
    ffn_out: OwnedDense,
}

impl OwnedLayer {
    fn new(parts: &LayerParts, dim: usize, ffn: usize) -> Result<Self, WriteError> {
        Ok(Self {
            attention_norm: OwnedNorm::new(&parts.attention_norm, dim)?,
            query: OwnedDense::new(&parts.query, dim, dim)?,
            key: OwnedDense::new(&parts.key, dim, dim)?,
            value: OwnedDense::new(&parts.value, dim, dim)?,
            attention_out: OwnedDense::new(&parts.attention_out, dim, dim)?,
            ffn_norm: OwnedNorm::new(&parts.ffn_norm, dim)?,
            ffn_in: OwnedDense::new(&parts.ffn_in, dim, ffn)?,
            ffn_out: OwnedDense::new(&parts.ffn_out, ffn, dim)?,
        })
    }

    fn borrow(&self) -> Layer<'_> {
        Layer {
            attention_norm: self.attention_norm.borrow(),
            query: self.query.borrow(),
            key: self.key.borrow(),
            value: self.value.borrow(),
            attention_out: self.attention_out.borrow(),
            ffn_norm: self.ffn_norm.borrow(),
            ffn_in: self.ffn_in.borrow(),
            ffn_out: self.ffn_out.borrow(),
        }
    }
}

struct OwnedIndex {
    docs: u32,
    documents: OwnedMatrix,
    ids: Vec<u8>,
    hubness: Vec<u8>,
    lexicon: Option<OwnedLexicon>,
}

struct OwnedLexicon {
    weight: f32,
    offsets: Vec<u8>,
    terms: Vec<u8>,
    weights: Vec<u8>,
    scales: Vec<u8>,
}

impl OwnedLexicon {
    /// Each document's weights as u8 with one f16 scale (its largest weight / 255).
    fn new(parts: &LexiconParts, docs: usize) -> Result<Self, WriteError> {
        if parts.documents.len() != docs {
            return Err(WriteError::ShapeMismatch);
        }
        if !parts.weight.is_finite() || parts.weight < 0.0 {
            return Err(WriteError::NonFinite);
        }
        let mut lexicon = Self {
            weight: parts.weight,
            offsets: 0u32.to_le_bytes().to_vec(),
            terms: vec![],
            weights: vec![],
            scales: vec![],
        };
        for document in &parts.documents {
            if document.windows(2).any(|p| matches!(p, [a, b] if a.0 >= b.0)) {
                return Err(WriteError::ShapeMismatch);
            }
            let weights: Vec<f32> = document.iter().map(|&(_, w)| w).collect();
            check_finite(&weights)?;
            if weights.iter().any(|&w| w < 0.0) {
                return Err(WriteError::NonFinite);
            }
            let largest = weights.iter().fold(0.0f32, |m, &w| m.max(w));
            let scale = half::f16::from_f32(largest / 255.0);
            let step = scale.to_f32();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let quantize =
                |w: f32| if step > 0.0 { libm::roundf(w / step).clamp(0.0, 255.0) as u8 } else { 0 };
            for &(term, w) in document {
                lexicon.terms.extend_from_slice(&term.to_le_bytes());
                lexicon.weights.push(quantize(w));
            }
            let end = u32::try_from(lexicon.weights.len()).map_err(|_| WriteError::TooLarge)?;
            lexicon.offsets.extend_from_slice(&end.to_le_bytes());
            lexicon.scales.extend_from_slice(&scale.to_le_bytes());
        }
        Ok(lexicon)
    }

    fn borrow(&self) -> LexiconBytes<'_> {
        LexiconBytes {
            weight: self.weight,
            offsets: &self.offsets,
            terms: &self.terms,
            weights: &self.weights,
            scales: &self.scales,
        }
    }
}

impl OwnedIndex {
    fn new(parts: &IndexParts, dim: usize) -> Result<Self, WriteError> {
        let docs = parts.ids.len();
        if parts.hubness.len() != docs {
            return Err(WriteError::ShapeMismatch);
        }
        check_finite(&parts.hubness)?;
        // Clamped to ±HUBNESS_SCALE first: the cast never truncates.
        #[allow(clippy::cast_possible_truncation)]
        let quantize = |r: f32| libm::roundf(r * HUBNESS_SCALE).clamp(-HUBNESS_SCALE, HUBNESS_SCALE) as i16;
        Ok(Self {
            docs: u32::try_from(docs).map_err(|_| WriteError::TooLarge)?,
            documents: OwnedMatrix::from_rows(&parts.embeddings, docs, dim)?,
            ids: parts.ids.iter().flat_map(|id| id.to_le_bytes()).collect(),
            hubness: parts.hubness.iter().flat_map(|&r| quantize(r).to_le_bytes()).collect(),
            lexicon: parts.lexical.as_ref().map(|l| OwnedLexicon::new(l, docs)).transpose()?,
        })
    }

    fn borrow(&self) -> IndexBytes<'_> {
        IndexBytes {
            docs: self.docs,
            values: &self.documents.values,
            scales: &self.documents.scales,
            ids: &self.ids,
            hubness: &self.hubness,
            lexical: self.lexicon.as_ref().map(OwnedLexicon::borrow),
        }
    }
}

/// `len` finite f32s as little-endian bytes.
fn f32_bytes(values: &[f32], len: usize) -> Result<Vec<u8>, WriteError> {
    if values.len() != len {
        return Err(WriteError::ShapeMismatch);
    }
    check_finite(values)?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn check_finite(values: &[f32]) -> Result<(), WriteError> {
    if values.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(WriteError::NonFinite) }
}
