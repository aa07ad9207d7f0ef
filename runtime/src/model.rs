//! The int8 student: a model borrowed from its blob, and the encoder that runs in caller-provided
//! scratch memory.

use core::fmt;
use core::mem::MaybeUninit;

use heapless::VecView;

use crate::LoadError;
use crate::blob::{self, Dense, Layer, ModelConfig, Norm, Payload, Provenance};
use crate::index::{Embedding, Index, QueryTerms, lexical_config};
use crate::quant::{Int8, WORDS_PER_PASS, Wide, dot, f16s, f32s, for_each_row_dots, quantize_activations};
use crate::tokenizer::{Feature, tokenize};

/// A student loaded from a blob. It borrows the blob (which can sit in flash) and copies no
/// weight.
///
/// ```
/// use otkd_runtime::{BlobParts, Model, ModelConfig, TokenizerConfig};
///
/// let config = ModelConfig {
///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
/// };
/// let blob = BlobParts::new(config).to_bytes()?;
/// let model = Model::from_bytes(&blob)?;
/// assert_eq!(model.config(), &config);
/// assert!(model.index().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Model<'a> {
    payload: Payload<'a>,
    index: Option<Index<'a>>,
}

impl<'a> Model<'a> {
    /// Checks a whole blob (header, CRC, every length, dimension and scale; see
    /// [`blob`]) and borrows its tensors in place.
    ///
    /// ```
    /// use otkd_runtime::{LoadError, Model, FORMAT_VERSION};
    ///
    /// let mut blob = *b"OTKD\x09\0\0\0\0\0\0\0\0\0\0\0";
    /// assert_eq!(
    ///     Model::from_bytes(&blob).err(),
    ///     Some(LoadError::UnsupportedVersion { found: 9, supported: FORMAT_VERSION })
    /// );
    /// blob[4] = FORMAT_VERSION as u8;
    /// // An empty payload: its CRC is 0, but it holds no model.
    /// assert_eq!(Model::from_bytes(&blob).err(), Some(LoadError::Decode));
    /// ```
    pub fn from_bytes(blob: &'a [u8]) -> Result<Self, LoadError> {
        let payload = blob::open(blob)?;
        let index =
            payload.index.as_ref().map(|index| Index::new(index, usize::from(payload.config.out_dim)));
        #[cfg(feature = "defmt")]
        defmt::debug!(
            "otkd blob: {=usize} bytes, {=u16} layers, {=usize} documents",
            blob.len(),
            payload.config.layers,
            index.as_ref().map_or(0, Index::len)
        );
        Ok(Self { payload, index })
    }

    /// The decoded payload, for the writer (re-writing a blob with another index).
    #[cfg(feature = "std")]
    pub(crate) fn payload(&self) -> &Payload<'a> {
        &self.payload
    }

    /// The architecture.
    ///
    /// See the [type's example](Model).
    pub fn config(&self) -> &ModelConfig {
        &self.payload.config
    }

    /// What the blob says about itself: its student's language and its index's source.
    pub fn provenance(&self) -> Provenance<'a> {
        self.payload.provenance
    }

    /// The document index, when the blob has one.
    ///
    /// See [`Index`].
    pub fn index(&self) -> Option<Index<'a>> {
        self.index
    }

    /// The first `(words, columns, rows)` for which the encoder's int8 matrix kernels (several
    /// words per pass, four rows per pass) differ from a scalar loop, or `None`. A self-test for
    /// devices, where the kernels are assembly (feature `dsp`): `firmware-tests` runs it on the
    /// emulated Cortex-M4F.
    ///
    /// ```
    /// assert_eq!(otkd_runtime::Model::int8_kernel_mismatch(), None);
    /// ```
    #[doc(hidden)]
    pub fn int8_kernel_mismatch() -> Option<(usize, usize, usize)> {
        crate::quant::kernel_mismatch()
    }

    /// Bytes of the blob that hold the model's weights: int8 values, their scales, f32 biases and
    /// LayerNorm parameters (the header, config and postcard lengths are the rest, tens of bytes).
    ///
    /// ```
    /// use otkd_runtime::{BlobParts, Model, ModelConfig, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    ///     dim: 8, layers: 0, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
    /// };
    /// let blob = BlobParts::new(config).to_bytes()?;
    /// // Embeddings 64 x (8 + 2), positions 8 x (8 + 2), projection 4 x (8 + 2 + 4).
    /// assert_eq!(Model::from_bytes(&blob)?.weight_bytes(), 640 + 80 + 56);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn weight_bytes(&self) -> usize {
        let p = &self.payload;
        let matrix = |m: &blob::Matrix| m.values.len() + m.scales.len();
        let dense = |d: &Dense| matrix(&d.weight) + d.bias.len();
        let norm = |n: &Norm| n.weight.len() + n.bias.len();
        let layers = p.layers.iter().map(|l| {
            norm(&l.attention_norm)
                + [l.query, l.key, l.value, l.attention_out, l.ffn_in, l.ffn_out]
                    .iter()
                    .map(dense)
                    .sum::<usize>()
                + norm(&l.ffn_norm)
        });
        matrix(&p.embeddings) + matrix(&p.positions) + layers.sum::<usize>() + dense(&p.projection)
    }

    /// Encodes `text` into its sentence embedding, computing in `scratch`.
    ///
    /// The text is tokenized with the blob's tokenizer config (so words past `max_words` are
    /// dropped, as on the host). Fails on a text without a word ([`EncodeError::EmptyQuery`]) and
    /// when `scratch` is too small for this text's words ([`EncodeError::ScratchTooSmall`]).
    /// Deterministic: the same blob and text give the same bits on every platform.
    ///
    /// ```
    /// use otkd_runtime::{BlobParts, EncodeError, Feature, Model, ModelConfig, Scratch, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    ///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
    /// };
    /// let mut parts = BlobParts::new(config);
    /// parts.embeddings.iter_mut().enumerate().for_each(|(i, e)| *e = (i % 7) as f32 - 3.0);
    /// parts.projection.weight.iter_mut().enumerate().for_each(|(i, w)| *w = (i % 5) as f32 - 2.0);
    /// let blob = parts.to_bytes()?;
    /// let model = Model::from_bytes(&blob)?;
    ///
    /// // Room for 4 words.
    /// let mut features = heapless::Vec::<Feature, 256>::new();
    /// let mut floats = vec![0f32; Scratch::floats_len(&config, 4)];
    /// let mut int8s = vec![0i8; Scratch::int8s_len(&config, 4)];
    /// let mut scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
    ///
    /// let embedding = model.encode("ein Hund rennt", &mut scratch)?;
    /// assert_eq!(embedding.len(), 4);
    /// assert_eq!(model.encode(" ¿? ", &mut scratch), Err(EncodeError::EmptyQuery));
    /// assert_eq!(model.encode("one two three four five", &mut scratch), Err(EncodeError::ScratchTooSmall));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode(&self, text: &str, scratch: &mut Scratch<'_>) -> Result<Embedding, EncodeError> {
        let mut embedding = Embedding::new();
        self.encode_into(text, scratch, &mut embedding)?;
        Ok(embedding)
    }

    /// [`Model::encode`] into `out`, which it replaces (on an error `out` is left as it was): for
    /// a caller that keeps one [`Embedding`] (1 KiB) for every query instead of having each
    /// returned by value, which a device's stack may hold twice over while it is moved.
    ///
    /// ```
    /// use otkd_runtime::{BlobParts, Embedding, Feature, Model, ModelConfig, Scratch, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    ///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
    /// };
    /// let mut parts = BlobParts::new(config);
    /// parts.embeddings.iter_mut().enumerate().for_each(|(i, e)| *e = (i % 7) as f32 - 3.0);
    /// parts.projection.weight.iter_mut().enumerate().for_each(|(i, w)| *w = (i % 5) as f32 - 2.0);
    /// let blob = parts.to_bytes()?;
    /// let model = Model::from_bytes(&blob)?;
    /// let mut features = heapless::Vec::<Feature, 512>::new();
    /// let mut floats = vec![0f32; Scratch::floats_len(&config, 8)];
    /// let mut int8s = vec![0i8; Scratch::int8s_len(&config, 8)];
    /// let mut scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
    ///
    /// let mut embedding = Embedding::new();
    /// model.encode_into("ein Hund rennt", &mut scratch, &mut embedding)?;
    /// assert_eq!(embedding, model.encode("ein Hund rennt", &mut scratch)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_into(
        &self,
        text: &str,
        scratch: &mut Scratch<'_>,
        out: &mut Embedding,
    ) -> Result<(), EncodeError> {
        let config = &self.payload.config;
        let report = tokenize(&config.tokenizer, text, scratch.features);
        // `Scratch::features_len` leaves one spare slot: a full buffer means features were cut off
        // (checked first: with no room at all, no word is counted).
        if scratch.features.len() >= scratch.features.capacity() {
            return Err(EncodeError::ScratchTooSmall);
        }
        let words = usize::from(report.words);
        if words == 0 {
            return Err(EncodeError::EmptyQuery);
        }
        #[cfg(feature = "defmt")]
        defmt::trace!("encode: {=usize} words, {=usize} features", words, scratch.features.len());
        let mut buffers = Buffers::split(config, words, scratch.floats, scratch.int8s)?;
        self.embed_words(scratch.features, buffers.x);
        let wide = features_as_wide(scratch.features);
        for layer in self.payload.layers.iter() {
            run_layer(&layer, config, &mut buffers, wide);
        }
        // The sentence is the mean of the words' projections. The projection is affine, so that is
        // the projection of the words' mean: one product for the text instead of one per word.
        let dim = usize::from(config.dim);
        let mean = buffers.row;
        mean.fill(0.0);
        for x in buffers.x.chunks_exact(dim) {
            mean.iter_mut().zip(x).for_each(|(m, &v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= words as f32);
        let mean_q = buffers.block_q.get_mut(..dim).unwrap_or_default();
        let scale = quantize_activations(mean, mean_q);
        project(&self.payload.projection, mean_q, &[scale], buffers.embedding, wide);
        let norm = libm::sqrtf(buffers.embedding.iter().fold(0.0, |total, &v| total + v * v));
        if norm > 0.0 {
            buffers.embedding.iter_mut().for_each(|v| *v /= norm);
        }
        out.set_quantized(buffers.embedding);
        Ok(())
    }

    /// The lexical terms of `text` for [hybrid search](Index#hybrid-search), into `out`: the
    /// tokenizer's features hashed into [`LEXICAL_BUCKETS`](crate::LEXICAL_BUCKETS), of the
    /// words [`Model::encode`] reads, computed in `scratch`'s feature buffer. Fails as `encode`
    /// does on a text without a word and on a scratch too small for the text (`out` then holds
    /// no term).
    ///
    /// ```
    /// use otkd_runtime::{BlobParts, Feature, Model, ModelConfig, Scratch, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
    ///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
    /// };
    /// let blob = BlobParts::new(config).to_bytes()?;
    /// let model = Model::from_bytes(&blob)?;
    /// let mut features = heapless::Vec::<Feature, 256>::new();
    /// let (mut floats, mut int8s) = (vec![0f32; 0], vec![0i8; 0]);
    /// let mut scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
    /// // "Evo" and "evo": one word feature and one of each n-gram, all twice.
    /// let mut terms = otkd_runtime::QueryTerms::new();
    /// model.terms("Evo evo", &mut scratch, &mut terms)?;
    /// assert_eq!(terms.len(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terms(
        &self,
        text: &str,
        scratch: &mut Scratch<'_>,
        out: &mut QueryTerms,
    ) -> Result<(), EncodeError> {
        out.clear();
        let tokenizer = &self.payload.config.tokenizer;
        let report = tokenize(&lexical_config(tokenizer, tokenizer.max_words), text, scratch.features);
        if scratch.features.len() >= scratch.features.capacity() {
            return Err(EncodeError::ScratchTooSmall);
        }
        if report.words == 0 {
            return Err(EncodeError::EmptyQuery);
        }
        out.set(scratch.features);
        Ok(())
    }

    /// Each word's vector: the sum of its features' embedding rows plus its position's vector.
    ///
    /// Consecutive features of one word are added four (or two) at a time, each value kept in a
    /// register across them: the same additions in the same order as one row at a time, with a
    /// load and a store per value for four rows instead of per row.
    fn embed_words(&self, features: &[Feature], x: &mut [f32]) {
        let dim = usize::from(self.payload.config.dim);
        x.fill(0.0);
        let mut rest = features;
        while let Some(first) = rest.first() {
            let run = rest.iter().take(4).take_while(|f| f.word == first.word).count();
            let (group, tail) = rest.split_at_checked(run).unwrap_or_default();
            rest = tail;
            // Always a row each: ids are below `buckets` (the tokenizer's contract); and `x` has
            // a row per word.
            let row =
                |f: &Feature| usize::try_from(f.id).ok().and_then(|id| self.payload.embeddings.row(id, dim));
            let Some(word) = x.chunks_exact_mut(dim).nth(usize::from(first.word)) else { continue };
            let mut rows: [(&[u8], f32); 4] = [(&[], 0.0); 4];
            let mut count = 0;
            for (slot, row) in rows.iter_mut().zip(group.iter().filter_map(row)) {
                *slot = row;
                count += 1;
            }
            match (count, rows) {
                (4, rows) => add_dequantized4(word, rows),
                (2 | 3, [a, b, c, _]) => {
                    add_dequantized2(word, [a, b]);
                    if count == 3 {
                        add_dequantized(word, c.0, c.1);
                    }
                }
                (1, [a, ..]) => add_dequantized(word, a.0, a.1),
                _ => {}
            }
        }
        for (word, (row, scale)) in x.chunks_exact_mut(dim).zip(self.payload.positions.rows(dim)) {
            add_dequantized(word, row, scale);
        }
    }
}

/// The config and sizes, not the weights.
impl fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.payload.config)
            .field("weight_bytes", &self.weight_bytes())
            .field("index", &self.index)
            .finish()
    }
}

/// Why [`Model::encode`] could not encode a text.
///
/// ```
/// use otkd_runtime::EncodeError;
///
/// assert_eq!(EncodeError::EmptyQuery.to_string(), "encode: the text has no word");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The text has no word (empty, or only separators such as spaces and punctuation).
    EmptyQuery,
    /// The scratch buffers are smaller than this text's words need (see [`Scratch`]).
    ScratchTooSmall,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EmptyQuery => "encode: the text has no word",
            Self::ScratchTooSmall => "encode: the scratch memory is too small for this text",
        })
    }
}

impl core::error::Error for EncodeError {}

/// Caller-provided working memory for [`Model::encode`]: a feature buffer, f32s and int8s.
///
/// How much a text of `words` words needs is a function of the config: at least
/// [`Scratch::features_len`] features, [`Scratch::floats_len`] f32s and [`Scratch::int8s_len`]
/// int8s, [`Scratch::ram_bytes`] in all (59.6 KiB for 32 words of the micro student). Larger
/// buffers are fine; a text with more words than they allow is refused with
/// [`EncodeError::ScratchTooSmall`], never cut short.
///
/// What lives there, for `n` words: the residual stream (`n x dim` f32), every word's keys and
/// values (int8, one scale per word and head), the attention scores (`n x heads`), and the rows
/// of a block of up to four words for everything else (each weight matrix is multiplied with a
/// block of words per pass); so memory grows with `n · (dim · 6 + heads · 12)` bytes plus the
/// features, up to the block's rows. Once the words are embedded the features are not needed:
/// their buffer's memory then holds the block's inputs widened for the DSP kernels (feature
/// `dsp`; 2 bytes per value, at most `8 · max(dim, ffn)` bytes, 2 KiB for the nano preset) and is
/// left empty. A feature buffer smaller than that (a scratch sized for a word or two) gives the
/// same bits, only with more instructions.
///
/// ```
/// use otkd_runtime::{Feature, ModelConfig, Scratch};
///
/// const MICRO: ModelConfig = ModelConfig::MICRO;
/// // Statically sized for 32-word queries, e.g. in a `static` on a device.
/// const FEATURES: usize = Scratch::features_len(&MICRO, 32);
/// let mut features = heapless::Vec::<Feature, FEATURES>::new();
/// let mut floats = [0f32; Scratch::floats_len(&MICRO, 32)];
/// let mut int8s = [0i8; Scratch::int8s_len(&MICRO, 32)];
/// let scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
/// assert!(Scratch::ram_bytes(&MICRO, 32) <= 64 * 1024);
/// ```
pub struct Scratch<'s> {
    features: &'s mut VecView<Feature>,
    floats: &'s mut [f32],
    int8s: &'s mut [i8],
}

impl<'s> Scratch<'s> {
    /// Working memory made of the caller's buffers (their old contents do not matter).
    ///
    /// See the [type's example](Scratch).
    pub fn new(features: &'s mut VecView<Feature>, floats: &'s mut [f32], int8s: &'s mut [i8]) -> Self {
        Self { features, floats, int8s }
    }

    /// Capacity of the feature buffer for texts of up to `words` words: `max_features_per_window`
    /// per word, plus one spare slot that tells a full buffer from a cut-off one.
    ///
    /// ```
    /// use otkd_runtime::{ModelConfig, Scratch, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig::DEFAULT,
    ///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
    /// };
    /// assert_eq!(Scratch::features_len(&config, 32), 32 * 46 + 1);
    /// ```
    pub const fn features_len(config: &ModelConfig, words: usize) -> usize {
        words.saturating_mul(config.tokenizer.max_features_per_window()).saturating_add(1)
    }

    /// f32s needed for texts of up to `words` words.
    ///
    /// ```
    /// use otkd_runtime::{ModelConfig, Scratch, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig::DEFAULT,
    ///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
    /// };
    /// // Per word: 8 residual + 2 key scales + 2 value scales + 2 scores; then a block of 3 words
    /// // (3 x 2 query scales, 3 input scales, 3 x 16 outputs), 2 x 2 softmax terms, 8 + 4.
    /// assert_eq!(Scratch::floats_len(&config, 3), 3 * 14 + (6 + 3 + 48) + 4 + 12);
    /// // Blocks have at most four words.
    /// assert_eq!(Scratch::floats_len(&config, 5), 5 * 14 + (8 + 4 + 64) + 4 + 12);
    /// ```
    pub const fn floats_len(config: &ModelConfig, words: usize) -> usize {
        let (dim, heads, ffn) = (config.dim as usize, config.heads as usize, config.ffn as usize);
        let block = block_words(words);
        let widest = if ffn > dim { ffn } else { dim };
        let per_block = block * (heads + 1 + widest);
        let per_text = per_block + 2 * heads + dim + config.out_dim as usize;
        words.saturating_mul(dim + 3 * heads).saturating_add(per_text)
    }

    /// int8s needed for texts of up to `words` words.
    ///
    /// ```
    /// use otkd_runtime::{ModelConfig, Scratch, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig::DEFAULT,
    ///     dim: 8, layers: 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
    /// };
    /// // Per word: keys and values; then a block of 3 words' rows and feed-forward rows.
    /// assert_eq!(Scratch::int8s_len(&config, 3), 3 * 16 + 3 * (8 + 16));
    /// ```
    pub const fn int8s_len(config: &ModelConfig, words: usize) -> usize {
        let dim = config.dim as usize;
        words.saturating_mul(2 * dim).saturating_add(block_words(words) * (dim + config.ffn as usize))
    }

    /// Bytes of all three buffers for texts of up to `words` words: the RAM a query needs besides
    /// the blob and the call stack.
    ///
    /// ```
    /// use otkd_runtime::{ModelConfig, Scratch, TokenizerConfig};
    ///
    /// let micro = ModelConfig {
    ///     tokenizer: TokenizerConfig { buckets: 5632, ..TokenizerConfig::DEFAULT },
    ///     dim: 192, layers: 1, heads: 4, ffn: 384, out_dim: 384, layer_norm_eps: 1e-5,
    /// };
    /// assert_eq!(Scratch::ram_bytes(&micro, 32), 1473 * 8 + 8668 * 4 + 14592);
    /// ```
    pub const fn ram_bytes(config: &ModelConfig, words: usize) -> usize {
        Self::features_len(config, words)
            .saturating_mul(size_of::<Feature>())
            .saturating_add(Self::floats_len(config, words).saturating_mul(size_of::<f32>()))
            .saturating_add(Self::int8s_len(config, words))
    }
}

/// The scratch memory cut into the encoder's buffers for `words` words (sizes as in
/// [`Scratch::floats_len`] and [`Scratch::int8s_len`]).
struct Buffers<'s> {
    /// `words x dim`: the residual stream.
    x: &'s mut [f32],
    /// `words x heads`: the scale of each word's key, per head.
    key_scales: &'s mut [f32],
    /// `words x heads`: the scale of each word's value, per head.
    value_scales: &'s mut [f32],
    /// `words x heads`: one word's attention scores, then their softmax numerators.
    scores: &'s mut [f32],
    /// `block x heads`: the scales of a block's queries.
    query_scales: &'s mut [f32],
    /// `heads`: the softmax maxima.
    score_max: &'s mut [f32],
    /// `heads`: the softmax denominators.
    score_sum: &'s mut [f32],
    /// `dim`: one row (a LayerNorm output, an attention context; at the end the words' mean).
    row: &'s mut [f32],
    /// `block`: the scales of a block's quantized rows (`block_q` or `hidden_q`).
    block_scales: &'s mut [f32],
    /// `block x max(dim, ffn)`: a block's keys, values or queries, or feed-forward rows.
    block: &'s mut [f32],
    /// `out_dim`: the sentence embedding.
    embedding: &'s mut [f32],
    /// `words x dim`: every word's key, int8.
    keys: &'s mut [i8],
    /// `words x dim`: every word's value, int8.
    values: &'s mut [i8],
    /// `block x dim`: a block's LayerNorm outputs, queries or attention contexts (at the end the
    /// words' mean).
    block_q: &'s mut [i8],
    /// `block x ffn`: a block's feed-forward rows.
    hidden_q: &'s mut [i8],
}

impl<'s> Buffers<'s> {
    fn split(
        config: &ModelConfig,
        words: usize,
        mut floats: &'s mut [f32],
        mut int8s: &'s mut [i8],
    ) -> Result<Self, EncodeError> {
        let (dim, heads, ffn) = (usize::from(config.dim), usize::from(config.heads), usize::from(config.ffn));
        let per_word_heads = words.checked_mul(heads).ok_or(EncodeError::ScratchTooSmall)?;
        let per_word_dim = words.checked_mul(dim).ok_or(EncodeError::ScratchTooSmall)?;
        let block = block_words(words);
        Ok(Self {
            x: take(&mut floats, per_word_dim)?,
            key_scales: take(&mut floats, per_word_heads)?,
            value_scales: take(&mut floats, per_word_heads)?,
            scores: take(&mut floats, per_word_heads)?,
            query_scales: take(&mut floats, block * heads)?,
            score_max: take(&mut floats, heads)?,
            score_sum: take(&mut floats, heads)?,
            row: take(&mut floats, dim)?,
            block_scales: take(&mut floats, block)?,
            block: take(&mut floats, block * dim.max(ffn))?,
            embedding: take(&mut floats, usize::from(config.out_dim))?,
            keys: take(&mut int8s, per_word_dim)?,
            values: take(&mut int8s, per_word_dim)?,
            block_q: take(&mut int8s, block * dim)?,
            hidden_q: take(&mut int8s, block * ffn)?,
        })
    }
}

/// Words per block for a text of `words` words: [`WORDS_PER_PASS`], or fewer for a shorter text.
const fn block_words(words: usize) -> usize {
    if words < WORDS_PER_PASS { words } else { WORDS_PER_PASS }
}

/// A text's words cut into blocks of [`WORDS_PER_PASS`] and a last, shorter one: `(first word,
/// words)`. Fuller blocks cost fewer instructions per product, so six words are four and two
/// (0.81 and 1.0 instructions per product on the Cortex-M4), not three and three (0.92).
fn blocks(words: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..words).step_by(WORDS_PER_PASS).map(move |start| (start, (words - start).min(WORDS_PER_PASS)))
}

/// The first `len` elements of `rest`, which keeps the others.
fn take<'s, T>(rest: &mut &'s mut [T], len: usize) -> Result<&'s mut [T], EncodeError> {
    let (head, tail) = core::mem::take(rest).split_at_mut_checked(len).ok_or(EncodeError::ScratchTooSmall)?;
    *rest = tail;
    Ok(head)
}

/// The feature buffer's memory as [`Wide`] memory for the encoder's matrix products, once the
/// words are embedded: the features are no longer needed (the buffer is left empty), and the
/// widened inputs need at most `4 · max(dim, ffn) · 2` bytes, less than the features of the
/// words a scratch is sized for (`46 · 8` bytes per word with the default tokenizer). A smaller
/// buffer is correct, only slower on the DSP path.
fn features_as_wide(features: &mut VecView<Feature>) -> &mut Wide {
    features.clear();
    // SAFETY: every bit pattern is a valid `MaybeUninit` of any type, so the aligned middle of
    // the empty vector's spare capacity may be viewed as `MaybeUninit<u32>`s and written as such;
    // the vector is empty, so none of these bytes is read as a `Feature` (the tokenizer writes
    // whole features before the vector's length covers them).
    let (_, wide, _) = unsafe { features.spare_capacity_mut().align_to_mut::<MaybeUninit<u32>>() };
    wide
}

/// One pre-LayerNorm transformer layer over every word, in place in `b.x`.
///
/// Keys and values come from the layer's input first; then each block of words in turn is updated
/// by its attention and feed-forward branches. A word's update reads only its own row and the keys
/// and values, so updating in place computes the same as the batched layer. Each weight matrix is
/// multiplied with a block of up to [`WORDS_PER_PASS`] words per pass; every word's values are
/// those of one word at a time, bit for bit (integer sums are exact in any order, and each float
/// is computed by the same operations).
fn run_layer(layer: &Layer, config: &ModelConfig, b: &mut Buffers, wide: &mut Wide) {
    // All at least 1: the config was checked on loading (`chunks_exact` needs it).
    let (dim, heads, head_dim) = (usize::from(config.dim), usize::from(config.heads), config.head_dim());
    let ffn = usize::from(config.ffn);
    let eps = config.layer_norm_eps;
    let words = b.x.len() / dim;
    for (start, len) in blocks(words) {
        let x = b.x.get(start * dim..(start + len) * dim).unwrap_or_default();
        let inputs = b.block_q.get_mut(..len * dim).unwrap_or_default();
        let scales = b.block_scales.get_mut(..len).unwrap_or_default();
        for ((x, input), scale) in
            x.chunks_exact(dim).zip(inputs.chunks_exact_mut(dim)).zip(scales.iter_mut())
        {
            *scale = layer_norm(x, &layer.attention_norm, eps, b.row, input);
        }
        let out = b.block.get_mut(..len * dim).unwrap_or_default();
        let destinations = [
            (&layer.key, &mut *b.keys, &mut *b.key_scales),
            (&layer.value, &mut *b.values, &mut *b.value_scales),
        ];
        for (dense, quantized, quantized_scales) in destinations {
            project(dense, inputs, scales, out, wide);
            let quantized = quantized.get_mut(start * dim..(start + len) * dim).unwrap_or_default();
            let quantized_scales =
                quantized_scales.get_mut(start * heads..(start + len) * heads).unwrap_or_default();
            for ((row, q), s) in out
                .chunks_exact(dim)
                .zip(quantized.chunks_exact_mut(dim))
                .zip(quantized_scales.chunks_exact_mut(heads))
            {
                quantize_heads(row, head_dim, q, s);
            }
        }
    }
    // The host divides the query by sqrt(head_dim); scaling the score is the same.
    let score_scale = 1.0 / libm::sqrtf(head_dim as f32);
    for (start, len) in blocks(words) {
        let x = b.x.get_mut(start * dim..(start + len) * dim).unwrap_or_default();
        let inputs = b.block_q.get_mut(..len * dim).unwrap_or_default();
        let scales = b.block_scales.get_mut(..len).unwrap_or_default();
        for ((x, input), scale) in
            x.chunks_exact(dim).zip(inputs.chunks_exact_mut(dim)).zip(scales.iter_mut())
        {
            *scale = layer_norm(x, &layer.attention_norm, eps, b.row, input);
        }
        // Queries, quantized per head in place of the LayerNorm outputs.
        let out = b.block.get_mut(..len * dim).unwrap_or_default();
        project(&layer.query, inputs, scales, out, wide);
        let query_scales = b.query_scales.get_mut(..len * heads).unwrap_or_default();
        for ((row, q), s) in
            out.chunks_exact(dim).zip(inputs.chunks_exact_mut(dim)).zip(query_scales.chunks_exact_mut(heads))
        {
            quantize_heads(row, head_dim, q, s);
        }
        // Attention: each word's query against every word's key, per head; its context replaces
        // its query.
        for ((query, query_scales), scale) in
            inputs.chunks_exact_mut(dim).zip(query_scales.chunks_exact(heads)).zip(scales.iter_mut())
        {
            let keys = b.keys.chunks_exact(dim).zip(b.key_scales.chunks_exact(heads));
            for (scores, (key, key_scales)) in b.scores.chunks_exact_mut(heads).zip(keys) {
                let per_head =
                    query.chunks_exact(head_dim).zip(query_scales.iter()).zip(key.chunks_exact(head_dim));
                for ((score, ((query, &query_scale), key)), &key_scale) in
                    scores.iter_mut().zip(per_head).zip(key_scales)
                {
                    *score = dot(query, key) as f32 * (query_scale * key_scale) * score_scale;
                }
            }
            softmax_numerators(b.scores, b.score_max, b.score_sum);
            b.row.fill(0.0);
            add_attention_values(b.scores, b.score_sum, b.values, b.value_scales, head_dim, b.row);
            *scale = quantize_activations(b.row, query);
        }
        add_dense(&layer.attention_out, inputs, scales, x, wide);

        // Feed-forward.
        for ((x, input), scale) in
            x.chunks_exact(dim).zip(inputs.chunks_exact_mut(dim)).zip(scales.iter_mut())
        {
            *scale = layer_norm(x, &layer.ffn_norm, eps, b.row, input);
        }
        let hidden = b.block.get_mut(..len * ffn).unwrap_or_default();
        project(&layer.ffn_in, inputs, scales, hidden, wide);
        hidden.iter_mut().for_each(|h| *h = gelu(*h));
        let hidden_q = b.hidden_q.get_mut(..len * ffn).unwrap_or_default();
        for ((h, q), scale) in
            hidden.chunks_exact(ffn).zip(hidden_q.chunks_exact_mut(ffn)).zip(scales.iter_mut())
        {
            *scale = quantize_activations(h, q);
        }
        add_dense(&layer.ffn_out, hidden_q, scales, x, wide);
    }
}

/// `context += Σ weight · value` over the words, per head, with the softmax weight
/// `numerator / sum · value_scale` (`numerators` and `value_scales` are `words x heads`, `values`
/// `words x dim`). Four (or two) words are added per pass, in word order: the same additions as one
/// word at a time.
fn add_attention_values(
    numerators: &[f32],
    sums: &[f32],
    values: &[i8],
    value_scales: &[f32],
    head_dim: usize,
    context: &mut [f32],
) {
    let (heads, dim) = (sums.len().max(1), context.len());
    let words = numerators.len() / heads;
    let mut word = 0;
    while word < words {
        let n = match words - word {
            4.. => 4,
            2 | 3 => 2,
            _ => 1,
        };
        for (head, (context, &sum)) in context.chunks_exact_mut(head_dim).zip(sums).enumerate() {
            // Always there: `word + i < words`, and the buffers are `words` long.
            let row = |i: usize| {
                let at = (word + i) * heads + head;
                let numerator = numerators.get(at).copied().unwrap_or_default();
                let weight = numerator / sum * value_scales.get(at).copied().unwrap_or_default();
                let start = (word + i) * dim + head * head_dim;
                (values.get(start..start + head_dim).unwrap_or_default(), weight)
            };
            match n {
                4 => add_dequantized4(context, [row(0), row(1), row(2), row(3)]),
                2 => add_dequantized2(context, [row(0), row(1)]),
                _ => {
                    let (value, weight) = row(0);
                    add_dequantized(context, value, weight);
                }
            }
        }
        word += n;
    }
}

/// Replaces each score by `exp(score - max)` over the words, per head (`scores` is
/// `words x heads`), and writes each head's maximum and sum of numerators.
fn softmax_numerators(scores: &mut [f32], max: &mut [f32], sum: &mut [f32]) {
    let heads = max.len().max(1);
    max.fill(f32::NEG_INFINITY);
    for word in scores.chunks_exact(heads) {
        max.iter_mut().zip(word).for_each(|(m, &s)| *m = libm::fmaxf(*m, s));
    }
    sum.fill(0.0);
    for word in scores.chunks_exact_mut(heads) {
        for ((s, &m), total) in word.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
            *s = libm::expf(*s - m);
            *total += *s;
        }
    }
}

/// LayerNorm of `x` (gain and bias from `norm`), quantized into `out`; returns the scale.
/// `tmp` holds the f32 result.
fn layer_norm(x: &[f32], norm: &Norm, eps: f32, tmp: &mut [f32], out: &mut [i8]) -> f32 {
    let n = x.len() as f32;
    let mean = x.iter().fold(0.0, |total, &v| total + v) / n;
    let variance = x.iter().fold(0.0, |total, &v| total + (v - mean) * (v - mean)) / n;
    let inverse = 1.0 / libm::sqrtf(variance + eps);
    let params = f32s(norm.weight).zip(f32s(norm.bias));
    for ((t, &v), (weight, bias)) in tmp.iter_mut().zip(x).zip(params) {
        *t = (v - mean) * inverse * weight + bias;
    }
    quantize_activations(tmp, out)
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// Quantizes `row` per head: each `head_dim` slice gets its own scale.
fn quantize_heads(row: &[f32], head_dim: usize, out: &mut [i8], scales: &mut [f32]) {
    let heads = row.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim));
    for ((head, out), scale) in heads.zip(scales) {
        *scale = quantize_activations(head, out);
    }
}

/// `out = W · input + bias` for each of a block's inputs (see [`add_dense`]).
fn project(dense: &Dense, inputs: &[i8], input_scales: &[f32], out: &mut [f32], wide: &mut Wide) {
    out.fill(0.0);
    add_dense(dense, inputs, input_scales, out, wide);
}

/// `out += W · input + bias`, each output one `i8 x i8 -> i32` dot product scaled once, for each
/// of a block's inputs: `inputs` holds one row per scale in `input_scales` (at most
/// [`WORDS_PER_PASS`]) and `out` one output row per input, in the same order. `wide` is memory
/// for the widened inputs (see [`Wide`]).
fn add_dense(dense: &Dense, inputs: &[i8], input_scales: &[f32], out: &mut [f32], wide: &mut Wide) {
    let (values, scales, biases) = (dense.weight.values, dense.weight.scales, dense.bias);
    // The block's output rows are zipped with the weight rows' scales and biases: one bound
    // checks them all, per weight row (one iterator per word cost 20 instructions per row more
    // on the Cortex-M4).
    let params = f16s(scales).zip(f32s(biases));
    let rows = out.len() / input_scales.len().max(1);
    let mut outs = out.chunks_exact_mut(rows.max(1)).map(<[f32]>::iter_mut);
    let mut next = || outs.next().unwrap_or_default();
    match *input_scales {
        [] => {}
        [s0] => {
            let mut outputs = params.zip(next());
            for_each_row_dots::<1, _>(inputs, values, wide, |[d0]| {
                if let Some(((scale, bias), o0)) = outputs.next() {
                    add_output(o0, d0, s0 * scale, bias);
                }
            });
        }
        [s0, s1] => {
            let mut outputs = params.zip(next().zip(next()));
            for_each_row_dots::<2, _>(inputs, values, wide, |[d0, d1]| {
                if let Some(((scale, bias), (o0, o1))) = outputs.next() {
                    add_output(o0, d0, s0 * scale, bias);
                    add_output(o1, d1, s1 * scale, bias);
                }
            });
        }
        [s0, s1, s2] => {
            let mut outputs = params.zip(next().zip(next()).zip(next()));
            for_each_row_dots::<3, _>(inputs, values, wide, |[d0, d1, d2]| {
                if let Some(((scale, bias), ((o0, o1), o2))) = outputs.next() {
                    add_output(o0, d0, s0 * scale, bias);
                    add_output(o1, d1, s1 * scale, bias);
                    add_output(o2, d2, s2 * scale, bias);
                }
            });
        }
        [s0, s1, s2, s3, ref more @ ..] => {
            // Never more than four (the blocks' size); the others would be ignored.
            let inputs = inputs.get(..inputs.len() / (4 + more.len()) * 4).unwrap_or_default();
            let mut outputs = params.zip(next().zip(next()).zip(next()).zip(next()));
            for_each_row_dots::<WORDS_PER_PASS, _>(inputs, values, wide, |[d0, d1, d2, d3]| {
                if let Some(((scale, bias), (((o0, o1), o2), o3))) = outputs.next() {
                    add_output(o0, d0, s0 * scale, bias);
                    add_output(o1, d1, s1 * scale, bias);
                    add_output(o2, d2, s2 * scale, bias);
                    add_output(o3, d3, s3 * scale, bias);
                }
            });
        }
    }
}

/// `o += dot · scale + bias`: one output of [`add_dense`], `scale` the input's times the row's.
#[inline(always)]
fn add_output(o: &mut f32, dot: i32, scale: f32, bias: f32) {
    *o += dot as f32 * scale + bias;
}

/// `out += row · scale` (a dequantized int8 row).
fn add_dequantized<T: Int8>(out: &mut [f32], row: &[T], scale: f32) {
    for (o, &q) in out.iter_mut().zip(row) {
        *o += f32::from(q.byte().cast_signed()) * scale;
    }
}

/// [`add_dequantized`] of two rows in turn, in one pass.
fn add_dequantized2<T: Int8>(out: &mut [f32], [(r0, s0), (r1, s1)]: [(&[T], f32); 2]) {
    let value = |q: T| f32::from(q.byte().cast_signed());
    for ((o, &q0), &q1) in out.iter_mut().zip(r0).zip(r1) {
        *o = *o + value(q0) * s0 + value(q1) * s1;
    }
}

/// [`add_dequantized`] of four rows in turn, in one pass.
fn add_dequantized4<T: Int8>(out: &mut [f32], [(r0, s0), (r1, s1), (r2, s2), (r3, s3)]: [(&[T], f32); 4]) {
    let value = |q: T| f32::from(q.byte().cast_signed());
    for ((((o, &q0), &q1), &q2), &q3) in out.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
        *o = *o + value(q0) * s0 + value(q1) * s1 + value(q2) * s2 + value(q3) * s3;
    }
}

/// Each op of the encoder on a small example worked out by hand (or, where `libm`'s `expf` and
/// `erff` round, in f64 within a stated tolerance), so that a regression names the op.
#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;
    use crate::blob::Matrix;
    use crate::tokenizer::TokenizerConfig;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn f16_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
    }

    fn i8_bytes(values: &[i8]) -> Vec<u8> {
        values.iter().map(|v| v.cast_unsigned()).collect()
    }

    #[test]
    fn layer_norm_normalises_scales_shifts_and_quantizes() {
        // x = [0, 4, 0, 4]: mean 2, variance 4; with eps 12 the root is exactly 4, so every
        // value is exact: (x - 2) / 4 = ±0.5, times the gains, plus the biases.
        let (weight, bias) = (f32_bytes(&[1.0, 2.0, -1.0, 0.5]), f32_bytes(&[0.0, 0.25, 0.0, -1.0]));
        let norm = Norm { weight: &weight, bias: &bias };
        let (mut tmp, mut out) = ([0f32; 4], [0i8; 4]);
        let scale = layer_norm(&[0.0, 4.0, 0.0, 4.0], &norm, 12.0, &mut tmp, &mut out);
        assert_eq!(tmp, [-0.5, 1.25, 0.5, -0.75]);
        // Quantized against the largest magnitude, 1.25 -> 127: 0.5 · 127 / 1.25 = 50.8 -> 51,
        // 0.75 · 127 / 1.25 = 76.2 -> 76.
        assert_eq!(scale, 1.25 / 127.0);
        assert_eq!(out, [-51, 127, 51, -76]);

        // A row whose statistics round, with the usual eps: within f32 rounding of the f64 value.
        let x = [1.0f32, 2.0, 3.0, 4.5];
        let (weight, bias) = (f32_bytes(&[1.0; 4]), f32_bytes(&[0.0; 4]));
        layer_norm(&x, &Norm { weight: &weight, bias: &bias }, 1e-5, &mut tmp, &mut out);
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0;
        let variance = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / 4.0;
        for (&got, &v) in tmp.iter().zip(&x) {
            let want = (f64::from(v) - mean) / (variance + 1e-5).sqrt();
            assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn softmax_numerators_are_per_head_over_the_words() {
        // Three words x two heads, word-major: head 0 scores [1, 1, 1], head 1 [-1, 2, 0].
        let mut scores = [1.0, -1.0, 1.0, 2.0, 1.0, 0.0];
        let (mut max, mut sum) = ([9.0; 2], [9.0; 2]);
        softmax_numerators(&mut scores, &mut max, &mut sum);
        assert_eq!(max, [1.0, 2.0]);
        // Head 0: exp(0) three times, exactly.
        assert_eq!([scores[0], scores[2], scores[4]], [1.0; 3]);
        assert_eq!(sum[0], 3.0);
        // Head 1: exp(-3), exp(0), exp(-2) and their sum, to f32 rounding.
        let want = [(-3f64).exp(), 1.0, (-2f64).exp()];
        for (got, want) in [scores[1], scores[3], scores[5]].into_iter().zip(want) {
            assert!((f64::from(got) - want).abs() < 1e-7, "{got} vs {want}");
        }
        assert!((f64::from(sum[1]) - want.iter().sum::<f64>()).abs() < 1e-6, "{}", sum[1]);
    }

    #[test]
    fn gelu_is_the_exact_erf_gelu() {
        assert_eq!(gelu(0.0), 0.0);
        // Far out, erf is ±1 in f32: the identity and zero.
        assert_eq!(gelu(10.0), 10.0);
        assert_eq!(gelu(-10.0), 0.0);
        for x in (-60..=60).map(|i| i as f32 / 10.0) {
            let x64 = f64::from(x);
            let want = 0.5 * x64 * (1.0 + libm::erf(x64 / 2f64.sqrt()));
            assert!(
                (f64::from(gelu(x)) - want).abs() < 1e-6 * want.abs().max(1.0),
                "gelu({x}) = {}",
                gelu(x)
            );
        }
        // 2 Φ(2) = 1.954 499 7, not the tanh approximation's 1.954 597.
        assert!((gelu(2.0) - 1.954_499_7).abs() < 1e-6, "{}", gelu(2.0));
    }

    #[test]
    fn dense_is_an_int8_dot_scaled_once_plus_the_bias() {
        // Two outputs of three inputs: weight rows [1, -2, 3] (scale 0.5) and [127, -127, 0]
        // (scale 0.25), biases 0.25 and -1; input [2, 1, -1] with scale 2.
        let (values, scales) = (i8_bytes(&[1, -2, 3, 127, -127, 0]), f16_bytes(&[0.5, 0.25]));
        let bias = f32_bytes(&[0.25, -1.0]);
        let dense = Dense { weight: Matrix { values: &values, scales: &scales }, bias: &bias };
        let input = [2i8, 1, -1];
        // Dots: 2 - 2 - 3 = -3 and 254 - 127 = 127; -3 · (2 · 0.5) + 0.25 and 127 · (2 · 0.25) - 1.
        let mut out = [7.0f32; 2];
        project(&dense, &input, &[2.0], &mut out, &mut []);
        assert_eq!(out, [-2.75, 62.5]);
        // The residual form adds to what is there.
        let mut out = [1.0f32, 1.0];
        add_dense(&dense, &input, &[2.0], &mut out, &mut []);
        assert_eq!(out, [-1.75, 63.5]);
    }

    #[test]
    fn blocks_cover_every_word_once_in_order_fullest_first() {
        for words in 0..=13 {
            let blocks: Vec<_> = blocks(words).collect();
            let covered: Vec<usize> = blocks.iter().flat_map(|&(start, len)| start..start + len).collect();
            assert_eq!(covered, (0..words).collect::<Vec<_>>(), "{words} words");
            assert!(
                blocks.iter().all(|&(_, len)| (1..=WORDS_PER_PASS).contains(&len)),
                "{words}: {blocks:?}"
            );
            let full = blocks.len().saturating_sub(1);
            assert!(blocks[..full].iter().all(|&(_, len)| len == WORDS_PER_PASS), "{words}: {blocks:?}");
            assert!(block_words(words) >= blocks.iter().map(|b| b.1).max().unwrap_or(0));
        }
    }

    /// A dense layer of 7 outputs by 13 inputs with awkward values, and four inputs.
    fn awkward_dense() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<i8>) {
        let value = |i: usize| u8::try_from((i * 37 + 11) % 251).unwrap_or(0).cast_signed();
        let weights: Vec<i8> = (0..7 * 13).map(value).collect();
        let scales: Vec<f32> = (0..7).map(|i| 0.013 * (i as f32 + 1.0) / 3.0).collect();
        let biases: Vec<f32> = (0..7).map(|i| (i as f32 - 3.3) / 7.0).collect();
        let inputs: Vec<i8> = (0..WORDS_PER_PASS * 13).map(|i| value(i * 5 + 2).max(-127)).collect();
        (i8_bytes(&weights), f16_bytes(&scales), f32_bytes(&biases), inputs)
    }

    #[test]
    fn a_block_of_words_gets_each_words_dense_outputs_bit_for_bit() {
        let (values, scales, bias, inputs) = awkward_dense();
        let dense = Dense { weight: Matrix { values: &values, scales: &scales }, bias: &bias };
        let input_scales = [0.031, 1.7e-3, 0.25, 3.3];
        for words in 1..=WORDS_PER_PASS {
            let start: Vec<f32> = (0..words * 7).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut block = start.clone();
            add_dense(&dense, &inputs[..words * 13], &input_scales[..words], &mut block, &mut []);
            for word in 0..words {
                let mut one = start[word * 7..(word + 1) * 7].to_vec();
                add_dense(
                    &dense,
                    &inputs[word * 13..(word + 1) * 13],
                    &input_scales[word..=word],
                    &mut one,
                    &mut [],
                );
                let (got, want): (Vec<u32>, Vec<u32>) = block[word * 7..(word + 1) * 7]
                    .iter()
                    .zip(&one)
                    .map(|(g, w)| (g.to_bits(), w.to_bits()))
                    .unzip();
                assert_eq!(got, want, "word {word} of {words}");
            }
        }
    }

    #[test]
    fn rows_added_several_per_pass_are_added_in_turn_bit_for_bit() {
        let rows: Vec<Vec<u8>> = (0..4)
            .map(|r| (0..9).map(|i| u8::try_from((i * 53 + r * 29) % 256).unwrap()).collect())
            .collect();
        let scales = [0.013f32, -2.7, 1e-3, 0.3337];
        let start: Vec<f32> = (0..9).map(|i| (i as f32 * 0.71).cos() * 3.0).collect();
        let mut one_by_one = start.clone();
        for (row, &scale) in rows.iter().zip(&scales) {
            add_dequantized(&mut one_by_one, row, scale);
        }
        let mut four = start.clone();
        add_dequantized4(&mut four, [0, 1, 2, 3].map(|r| (&rows[r][..], scales[r])));
        let mut two_and_two = start;
        add_dequantized2(&mut two_and_two, [(&rows[0][..], scales[0]), (&rows[1][..], scales[1])]);
        add_dequantized2(&mut two_and_two, [(&rows[2][..], scales[2]), (&rows[3][..], scales[3])]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&four), bits(&one_by_one));
        assert_eq!(bits(&two_and_two), bits(&one_by_one));
    }

    #[test]
    fn attention_values_added_several_words_per_pass_match_one_word_at_a_time() {
        let (heads, head_dim) = (2, 3);
        let dim = heads * head_dim;
        let sums = [1.7f32, 2.9];
        for words in 1..=9 {
            let numerators: Vec<f32> = (0..words * heads).map(|i| (i as f32 * 0.61).sin().abs()).collect();
            let value_scales: Vec<f32> = (0..words * heads).map(|i| 0.01 + i as f32 * 1e-3).collect();
            let values: Vec<i8> =
                (0..words * dim).map(|i| u8::try_from(i * 41 % 256).unwrap().cast_signed()).collect();
            let mut got = vec![0f32; dim];
            add_attention_values(&numerators, &sums, &values, &value_scales, head_dim, &mut got);
            let mut want = vec![0f32; dim];
            for word in 0..words {
                for head in 0..heads {
                    let at = word * heads + head;
                    let weight = numerators[at] / sums[head] * value_scales[at];
                    for e in 0..head_dim {
                        want[head * head_dim + e] +=
                            weight * f32::from(values[word * dim + head * head_dim + e]);
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{words} words");
        }
    }

    /// The seeded micro student's embeddings of texts of 1, 5, 9 and 7 words (full blocks of four
    /// words, then one, two or three), pinned as the CRC-32 of their int8 values and scale bits:
    /// the values the encoder gave one word at a time, before it multiplied blocks of words.
    #[test]
    fn blocks_of_words_encode_the_bits_one_word_at_a_time_did() {
        let blob = crate::testing::micro_blob();
        let model = Model::from_bytes(&blob).unwrap();
        let mut owned = crate::testing::OwnedScratch::new(model.config(), 32);
        for (text, want) in [
            ("Jaʼa", 0xa350_f788u32),
            ("Mä anux jawira thiyan tʼijtaski", 0xedf2_bcd9),
            ("mä paya kimsa pusi phisqa suxta paqallqu kimsaqallqu llätunka", 0x7ef7_477b),
            ("Two dogs run across the snowy field today", 0x0563_4a62),
        ] {
            let embedding = model.encode(text, &mut owned.scratch()).unwrap();
            let mut bytes: Vec<u8> = embedding.values().iter().map(|v| v.cast_unsigned()).collect();
            bytes.extend(embedding.scale().to_bits().to_le_bytes());
            assert_eq!(crate::crc32(&bytes), want, "{text:?}");
        }
    }

    #[test]
    fn words_are_their_features_rows_plus_their_position() {
        // Rows of two dims, each an int8 row and its f16 scale:
        // bucket 0: [127, -1] · 0.5 = [63.5, -0.5]; bucket 1: [2, 4] · 0.25 = [0.5, 1];
        // bucket 2: [-127, 0] · 1 = [-127, 0]; position 0: [1, 0] · 0.125; position 1: [0, -8] · 0.125.
        let (embedding_values, embedding_scales) =
            (i8_bytes(&[127, -1, 2, 4, -127, 0]), f16_bytes(&[0.5, 0.25, 1.0]));
        let (position_values, position_scales) = (i8_bytes(&[1, 0, 0, -8]), f16_bytes(&[0.125, 0.125]));
        let config = ModelConfig {
            tokenizer: TokenizerConfig { buckets: 3, max_words: 2, ..TokenizerConfig::DEFAULT },
            dim: 2,
            layers: 0,
            heads: 1,
            ffn: 2,
            out_dim: 2,
            layer_norm_eps: 1e-5,
        };
        let no_dense = Dense { weight: Matrix { values: &[], scales: &[] }, bias: &[] };
        let model = Model {
            payload: Payload {
                config,
                provenance: Provenance::default(),
                embeddings: Matrix { values: &embedding_values, scales: &embedding_scales },
                positions: Matrix { values: &position_values, scales: &position_scales },
                layers: crate::blob::Layers::from_encoded(&[], 0),
                projection: no_dense,
                index: None,
            },
            index: None,
        };
        // Word 0 has buckets 0 and 1, word 1 has buckets 2 and 0.
        let features = [(0, 0), (0, 1), (1, 2), (1, 0)].map(|(word, id)| Feature { word, id });
        let mut x = [9.0f32; 4];
        model.embed_words(&features, &mut x);
        // [63.5 + 0.5 + 0.125, -0.5 + 1 + 0] and [-127 + 63.5 + 0, 0 - 0.5 - 1].
        assert_eq!(x, [64.125, 0.5, -63.5, -1.5]);
    }
}
