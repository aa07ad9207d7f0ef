//! The blob: a quantized student (and optionally a document index) in one byte string that the
//! device reads in place, from flash.
//!
//! # Layout
//!
//! A fixed 16-byte header, all integers little endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic [`MAGIC`], `b"OTKD"` |
//! | 4 | 4 | format version, `u32` ([`FORMAT_VERSION`]) |
//! | 8 | 4 | payload length in bytes, `u32`; the blob ends exactly where the payload does |
//! | 12 | 4 | CRC-32 ([`crc32`]: IEEE 802.3, as zlib and PNG) of the payload, `u32` |
//!
//! The header is fixed-width rather than postcard so that every future version can read the
//! magic and the version of any blob and refuse it by name.
//!
//! The payload is the postcard encoding of these fields, in this order (postcard: integers wider
//! than a byte are varints, `f32` is 4 bytes little endian, a byte string is a varint length and
//! the bytes, a sequence is a varint count and the elements, an `Option` is a 0 or 1 byte and the
//! value):
//!
//! 1. **config** ([`ModelConfig`]): the tokenizer's fields in the order of
//!    [`TokenizerConfig`] (so changing that struct changes the format and
//!    needs a new version), then `dim`, `layers`, `heads`, `ffn`, `out_dim` (`u16`) and
//!    `layer_norm_eps` (`f32`).
//! 2. **provenance** ([`Provenance`]): two UTF-8 strings (a varint length and the bytes each):
//!    `lang`, the language tag of the queries the student reads, and `index_source`, where the
//!    index's documents come from (both empty when the writer did not say), so that a host can
//!    refuse to evaluate a blob against another language's queries.
//! 3. **embeddings**: a *matrix* of `buckets` rows by `dim` (the hashed-feature table; row = bucket).
//! 4. **positions**: a *matrix* of `max_words` rows by `dim` (one learned vector per word position).
//! 5. **layers**: a sequence of `layers` (at most [`MAX_LAYERS`]) *layers*.
//! 6. **projection**: a *dense* layer, `out_dim` rows by `dim`.
//! 7. **index**: an `Option` of an *index*.
//!
//! where
//!
//! - a *matrix* of `rows x cols` is two byte strings: `values`, `rows · cols` int8 (two's
//!   complement bytes), row-major; and `scales`, `rows` f16 (2 bytes little endian each). Row `r`
//!   is `values[r] · scales[r]` (see [`quantize_row`](crate::quantize_row)).
//! - a *dense* layer is a *matrix* whose rows are its **output** units (the transpose of the
//!   host student's `[in, out]` weight, so each output is one contiguous int8 dot product and has
//!   its own scale), then `bias`: a byte string of `rows` f32.
//! - a *norm* (LayerNorm) is two byte strings of `dim` f32: `weight` (gain) and `bias`.
//! - a *layer* is, in order: `attention_norm` (*norm*), `query`, `key`, `value`, `attention_out`
//!   (*dense*, `dim x dim` each), `ffn_norm` (*norm*), `ffn_in` (*dense*, `ffn x dim`),
//!   `ffn_out` (*dense*, `dim x ffn`).
//! - an *index* is `docs` (`u32`), then four byte strings: `values` (`docs · out_dim` int8, one
//!   document per row, each the quantized L2-normalised embedding of the document), `scales`
//!   (`docs` f16), `ids` (`docs` u32, the caller's document ids) and `hubness` (`docs` i16: the CSLS
//!   term `r(d)`, see below), then `lexical`: an `Option` of a *lexicon*.
//! - a *lexicon* (the documents' terms, for [hybrid search](crate::Index#hybrid-search)) is
//!   `weight` (`f32`, finite and ≥ 0: how much the lexical score adds to the dense one), then four
//!   byte strings: `offsets` (`docs + 1` u32: document `d`'s postings are `offsets[d]..offsets[d + 1]`,
//!   starting at 0 and never decreasing), `terms` (u16 per posting: a term id in
//!   `0..`[`LEXICAL_BUCKETS`](crate::LEXICAL_BUCKETS), strictly increasing within a document),
//!   `weights` (u8 per posting) and `scales` (`docs` f16, finite and ≥ 0): posting `p` of document
//!   `d` weighs `weights[p] · scales[d]`.
//!
//! Biases and LayerNorm parameters are f32 because the runtime computes with them in f32 exactly
//! as stored (they are a few KiB); they are bytes, not `f32` sequences, because serde can borrow
//! only `&[u8]`, and bytes need no alignment.
//!
//! **Hubness term.** `r(d)`, the mean cosine of document `d` to its K nearest neighbours in a
//! reference population of encoded queries, lies in `[-1, 1]`; it is stored as
//! `round(r(d) · 32767)` clamped to `±32767` and read back as `q / 32767` (steps of 3.05e-5, far
//! below the differences CSLS ranks by). Choosing K and the reference population is the exporter's
//! job; an index exported without them stores 0, and CSLS then ranks as cosine does.
//!
//! # Loading
//!
//! [`Model::from_bytes`](crate::Model::from_bytes) checks, in order: the header (length, magic,
//! version, payload length, CRC), the postcard decoding (every length inside is checked against
//! the bytes left) with no trailing bytes, the config ([`ModelConfig::validate`]), then every
//! tensor's byte length against the config (products computed with overflow checks) and every
//! scale and f32 parameter for NaN and infinity. The tensors are then borrowed, never copied.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::quant::{f16s, f32s};
use crate::tokenizer::TokenizerConfig;

/// The first four bytes of every blob.
///
/// ```
/// assert_eq!(&otkd_runtime::MAGIC, b"OTKD");
/// ```
pub const MAGIC: [u8; 4] = *b"OTKD";

/// The blob format this runtime reads and writes.
///
/// ```
/// assert_eq!(otkd_runtime::FORMAT_VERSION, 4);
/// ```
///
/// Version 2 added the [`Provenance`] strings after the config, version 3 the index's lexicon,
/// version 4 lexical terms of their own n-gram range ([`LEXICAL_NGRAMS`](crate::LEXICAL_NGRAMS)),
/// whatever the model's: a version-3 lexicon of a model trained with another range would be
/// searched with terms it does not hold.
pub const FORMAT_VERSION: u32 = 4;

/// Bytes before the payload: magic, version, payload length, CRC-32.
///
/// ```
/// assert_eq!(otkd_runtime::HEADER_LEN, 16);
/// ```
pub const HEADER_LEN: usize = 16;

/// The most transformer layers a blob may hold (a limit of the format: a loaded model keeps its
/// layers as their encoded bytes, so it costs no memory).
///
/// ```
/// use otkd_runtime::{LoadError, ModelConfig, TokenizerConfig, MAX_LAYERS};
///
/// let config = ModelConfig {
///     tokenizer: TokenizerConfig::DEFAULT,
///     dim: 8, layers: MAX_LAYERS as u16 + 1, heads: 2, ffn: 16, out_dim: 4, layer_norm_eps: 1e-5,
/// };
/// assert_eq!(config.validate(), Err(LoadError::TooManyLayers));
/// ```
pub const MAX_LAYERS: usize = 8;

/// The widest output (sentence embedding) a blob may have: an [`Embedding`](crate::Embedding)
/// has this fixed capacity.
///
/// ```
/// assert!(otkd_runtime::MAX_OUT_DIM >= 384);
/// ```
pub const MAX_OUT_DIM: usize = 1024;

/// Stored hubness terms are `round(r(d) · HUBNESS_SCALE)` as i16 (see the module docs).
pub(crate) const HUBNESS_SCALE: f32 = 32767.0;

/// CRC-32 (IEEE 802.3, reflected polynomial `0xEDB88320`, the CRC of zlib, PNG and Ethernet).
///
/// ```
/// assert_eq!(otkd_runtime::crc32(b"123456789"), 0xCBF4_3926);
/// ```
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        let [low, ..] = crc.to_le_bytes();
        // The table has 256 entries and the index is a byte.
        #[allow(clippy::indexing_slicing)]
        let entry = CRC_TABLE[usize::from(low ^ b)];
        entry ^ (crc >> 8)
    })
}

/// The blob at the start of `region`, a memory area that may be larger than the blob (a flash
/// region reserved for it): the first `16 + payload length` bytes as the header declares them,
/// bounded by the region. Nothing past that length is read. When the header is cut off or
/// declares more than the region holds, the whole region is returned, so that
/// [`Model::from_bytes`](crate::Model::from_bytes) names the error (`TooShort`, `BadMagic` for
/// erased flash, `Truncated`); the header is not checked here.
///
/// ```
/// use otkd_runtime::{LoadError, Model, blob::in_region};
///
/// let mut region = [0xffu8; 64]; // erased flash
/// assert_eq!(in_region(&region).len(), 64);
/// assert_eq!(Model::from_bytes(in_region(&region)).err(), Some(LoadError::BadMagic));
/// // A header declaring a 20-byte payload: the blob is its first 36 bytes.
/// region[..16].copy_from_slice(b"OTKD\0\0\0\0\x14\0\0\0\0\0\0\0");
/// region[4] = otkd_runtime::FORMAT_VERSION as u8;
/// assert_eq!(in_region(&region).len(), 36);
/// // One declaring more than the region holds: the region, which is too short.
/// region[8] = 0x40;
/// assert_eq!(Model::from_bytes(in_region(&region)).err(), Some(LoadError::Truncated));
/// ```
pub fn in_region(region: &[u8]) -> &[u8] {
    let declared = region
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .and_then(|b| usize::try_from(u32::from_le_bytes(b)).ok())
        .and_then(|payload| payload.checked_add(HEADER_LEN));
    declared.and_then(|len| region.get(..len)).unwrap_or(region)
}

/// CRC-32 of every byte value, computed at compile time (1 KiB of flash).
// Evaluated by the compiler: `i < 256` fits a u32, and a bad index would fail the build.
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The architecture of a student, stored at the head of its blob.
///
/// The encoder: each word's vector is the sum of its features' rows of the embedding table plus
/// its position's vector; then `layers` pre-LayerNorm transformer layers (`heads`-head
/// self-attention, then an exact-erf GELU feed-forward of width `ffn`, each added to the
/// residual); then a projection to `out_dim` per word, the mean over the words and an L2
/// normalisation. No final LayerNorm. Positions are `tokenizer.max_words` long.
///
/// ```
/// use otkd_runtime::{ModelConfig, TokenizerConfig};
///
/// let micro = ModelConfig {
///     tokenizer: TokenizerConfig { buckets: 5632, ..TokenizerConfig::DEFAULT },
///     dim: 192, layers: 1, heads: 4, ffn: 384, out_dim: 384, layer_norm_eps: 1e-5,
/// };
/// micro.validate()?;
/// assert_eq!(micro.head_dim(), 48);
/// # Ok::<(), otkd_runtime::LoadError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The tokenizer's settings; `buckets` is the embedding table's height, `max_words` the
    /// number of positions.
    pub tokenizer: TokenizerConfig,
    /// Width inside the encoder.
    pub dim: u16,
    /// Transformer layers (0 is allowed: the encoder is then linear in the features).
    pub layers: u16,
    /// Attention heads per layer; divides `dim`.
    pub heads: u16,
    /// Feed-forward width.
    pub ffn: u16,
    /// Output (sentence embedding) width.
    pub out_dim: u16,
    /// LayerNorm epsilon, added to the variance.
    pub layer_norm_eps: f32,
}

impl ModelConfig {
    /// The shape of the host's `micro` preset (`otkd train --preset micro`, the device preset):
    /// 5632 buckets of the default tokenizer, dim 192, 1 layer, 4 heads, ffn 384, out 384 (the
    /// teacher's width). Firmware sizes its static scratch memory for it.
    ///
    /// ```
    /// use otkd_runtime::{ModelConfig, Scratch};
    /// assert!(ModelConfig::MICRO.validate().is_ok());
    /// assert!(Scratch::ram_bytes(&ModelConfig::MICRO, 32) <= 64 * 1024);
    /// ```
    pub const MICRO: ModelConfig = ModelConfig {
        tokenizer: TokenizerConfig { buckets: 5632, ..TokenizerConfig::DEFAULT },
        dim: 192,
        layers: 1,
        heads: 4,
        ffn: 384,
        out_dim: 384,
        layer_norm_eps: 1e-5,
    };

    /// The shape of the host's `nano` preset (`otkd train --preset nano`), for 1 MiB of flash and
    /// 32 KiB of RAM: 4608 buckets of the default tokenizer keeping 16 words, dim 128, 1 layer,
    /// 4 heads, ffn 256, out 128 (a PCA projection of the teacher's 384, in which the index
    /// stores its documents already projected). With 1,000 documents the blob is about 872 KiB
    /// (the firmware fits beside it); a 16-word query needs 25 KiB of scratch.
    ///
    /// ```
    /// use otkd_runtime::{ModelConfig, Scratch};
    /// assert!(ModelConfig::NANO.validate().is_ok());
    /// let words = usize::from(ModelConfig::NANO.tokenizer.max_words);
    /// assert_eq!(Scratch::ram_bytes(&ModelConfig::NANO, words), 25_720);
    /// ```
    pub const NANO: ModelConfig = ModelConfig {
        tokenizer: TokenizerConfig { buckets: 4608, max_words: 16, ..TokenizerConfig::DEFAULT },
        dim: 128,
        layers: 1,
        heads: 4,
        ffn: 256,
        out_dim: 128,
        layer_norm_eps: 1e-5,
    };

    /// Checks what loading checks before any tensor: a valid tokenizer config, no zero width,
    /// `heads` dividing `dim`, at most [`MAX_LAYERS`] layers and [`MAX_OUT_DIM`] outputs, and a
    /// finite positive epsilon.
    ///
    /// ```
    /// use otkd_runtime::{LoadError, ModelConfig, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig::DEFAULT,
    ///     dim: 10, layers: 1, heads: 4, ffn: 16, out_dim: 8, layer_norm_eps: 1e-5,
    /// };
    /// assert_eq!(config.validate(), Err(LoadError::HeadsDoNotDivideDim));
    /// ```
    pub const fn validate(&self) -> Result<(), LoadError> {
        if self.tokenizer.validate().is_err() {
            Err(LoadError::BadTokenizerConfig)
        } else if self.dim == 0 || self.heads == 0 || self.ffn == 0 || self.out_dim == 0 {
            Err(LoadError::ZeroDimension)
        } else if !self.dim.is_multiple_of(self.heads) {
            Err(LoadError::HeadsDoNotDivideDim)
        } else if self.layers as usize > MAX_LAYERS {
            Err(LoadError::TooManyLayers)
        } else if self.out_dim as usize > MAX_OUT_DIM {
            Err(LoadError::OutDimTooLarge)
        } else if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            Err(LoadError::BadLayerNormEps)
        } else {
            Ok(())
        }
    }

    /// Width of one attention head, `dim / heads` (0 when `heads` is 0).
    ///
    /// ```
    /// use otkd_runtime::{ModelConfig, TokenizerConfig};
    ///
    /// let config = ModelConfig {
    ///     tokenizer: TokenizerConfig::DEFAULT,
    ///     dim: 192, layers: 1, heads: 4, ffn: 384, out_dim: 384, layer_norm_eps: 1e-5,
    /// };
    /// assert_eq!(config.head_dim(), 48);
    /// ```
    pub const fn head_dim(&self) -> usize {
        match (self.dim as usize).checked_div(self.heads as usize) {
            Some(width) => width,
            None => 0,
        }
    }
}

/// Why a blob was refused.
///
/// ```
/// use otkd_runtime::{LoadError, Model};
///
/// assert_eq!(Model::from_bytes(b"OTKD").err(), Some(LoadError::TooShort));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LoadError {
    /// The blob is shorter than its 16-byte header.
    TooShort,
    /// The blob does not start with [`MAGIC`].
    BadMagic,
    /// The blob is of another format version than this runtime reads.
    UnsupportedVersion {
        /// The version the blob declares.
        found: u32,
        /// The version this runtime reads, [`FORMAT_VERSION`].
        supported: u32,
    },
    /// The blob has fewer bytes than its header declares.
    Truncated,
    /// Bytes follow the declared payload, or the model inside it.
    TrailingBytes,
    /// The payload's CRC-32 differs from the header's.
    BadCrc,
    /// The payload is not a postcard encoding of the format (a length past the end, a bad varint, …).
    Decode,
    /// The tokenizer config is invalid (see [`TokenizerConfig::validate`]).
    BadTokenizerConfig,
    /// `dim`, `heads`, `ffn` or `out_dim` is 0.
    ZeroDimension,
    /// `heads` does not divide `dim`.
    HeadsDoNotDivideDim,
    /// More than [`MAX_LAYERS`] layers.
    TooManyLayers,
    /// `out_dim` is above [`MAX_OUT_DIM`].
    OutDimTooLarge,
    /// The LayerNorm epsilon is not a finite positive number.
    BadLayerNormEps,
    /// A tensor's size, computed from the config, overflows `usize`.
    SizeOverflow,
    /// A tensor's byte length (or the layer count) does not match the config.
    ShapeMismatch,
    /// A scale or an f32 parameter is NaN or infinite.
    NonFinite,
    /// The index's lexicon is inconsistent: offsets that decrease or do not end at the postings'
    /// count, terms not strictly increasing within a document, or a negative weight or scale.
    BadLexicon,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::UnsupportedVersion { found, supported } => {
                return write!(f, "blob: format version {found}, but this runtime reads version {supported}");
            }
            Self::TooShort => "blob: shorter than its 16-byte header",
            Self::BadMagic => "blob: not an otkd blob (bad magic)",
            Self::Truncated => "blob: truncated (fewer bytes than the header declares)",
            Self::TrailingBytes => "blob: bytes after the model",
            Self::BadCrc => "blob: CRC mismatch (corrupted payload)",
            Self::Decode => "blob: the payload does not decode",
            Self::BadTokenizerConfig => "blob: invalid tokenizer config",
            Self::ZeroDimension => "blob: a model dimension is 0",
            Self::HeadsDoNotDivideDim => "blob: heads do not divide dim",
            Self::TooManyLayers => "blob: too many layers",
            Self::OutDimTooLarge => "blob: output width too large",
            Self::BadLayerNormEps => "blob: LayerNorm epsilon is not finite and positive",
            Self::SizeOverflow => "blob: a tensor size overflows",
            Self::ShapeMismatch => "blob: a tensor does not match the config",
            Self::NonFinite => "blob: a scale or parameter is NaN or infinite",
            Self::BadLexicon => "blob: the index's lexicon is inconsistent",
        };
        f.write_str(text)
    }
}

impl core::error::Error for LoadError {}

/// A quantized matrix borrowed from the blob (see the [module docs](self) for the layout).
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Matrix<'a> {
    /// `rows · cols` int8, row-major.
    pub values: &'a [u8],
    /// `rows` f16, little endian.
    pub scales: &'a [u8],
}

impl<'a> Matrix<'a> {
    /// Every row's int8 values (`cols` of them) with its scale.
    pub fn rows(&self, cols: usize) -> impl Iterator<Item = (&'a [u8], f32)> + 'a {
        self.values.chunks_exact(cols.max(1)).zip(f16s(self.scales))
    }

    /// Row `row` with its scale.
    pub fn row(&self, row: usize, cols: usize) -> Option<(&'a [u8], f32)> {
        let values = self.values.chunks_exact(cols.max(1)).nth(row)?;
        let scale = f16s(self.scales.get(row.checked_mul(2)?..)?).next()?;
        Some((values, scale))
    }

    fn check(&self, rows: usize, cols: usize) -> Result<(), LoadError> {
        let values = rows.checked_mul(cols).ok_or(LoadError::SizeOverflow)?;
        let scales = rows.checked_mul(2).ok_or(LoadError::SizeOverflow)?;
        if self.values.len() != values || self.scales.len() != scales {
            return Err(LoadError::ShapeMismatch);
        }
        finite(f16s(self.scales))
    }
}

/// A dense layer: `weight` rows are output units.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Dense<'a> {
    #[serde(borrow)]
    pub weight: Matrix<'a>,
    /// One f32 per output, little endian.
    pub bias: &'a [u8],
}

impl Dense<'_> {
    fn check(&self, outputs: usize, inputs: usize) -> Result<(), LoadError> {
        self.weight.check(outputs, inputs)?;
        check_f32s(self.bias, outputs)
    }
}

/// LayerNorm gain and bias, f32 little endian.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Norm<'a> {
    pub weight: &'a [u8],
    pub bias: &'a [u8],
}

impl Norm<'_> {
    fn check(&self, dim: usize) -> Result<(), LoadError> {
        check_f32s(self.weight, dim)?;
        check_f32s(self.bias, dim)
    }
}

/// One pre-LayerNorm transformer layer.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Layer<'a> {
    #[serde(borrow)]
    pub attention_norm: Norm<'a>,
    #[serde(borrow)]
    pub query: Dense<'a>,
    #[serde(borrow)]
    pub key: Dense<'a>,
    #[serde(borrow)]
    pub value: Dense<'a>,
    #[serde(borrow)]
    pub attention_out: Dense<'a>,
    #[serde(borrow)]
    pub ffn_norm: Norm<'a>,
    #[serde(borrow)]
    pub ffn_in: Dense<'a>,
    #[serde(borrow)]
    pub ffn_out: Dense<'a>,
}

/// The document index as stored.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct IndexBytes<'a> {
    pub docs: u32,
    /// `docs · out_dim` int8.
    pub values: &'a [u8],
    /// `docs` f16.
    pub scales: &'a [u8],
    /// `docs` u32.
    pub ids: &'a [u8],
    /// `docs` i16: `r(d) · 32767`.
    pub hubness: &'a [u8],
    #[serde(borrow)]
    pub lexical: Option<LexiconBytes<'a>>,
}

/// The documents' terms as stored (see the [module docs](self)).
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct LexiconBytes<'a> {
    /// How much the lexical score adds to the dense one.
    pub weight: f32,
    /// `docs + 1` u32.
    pub offsets: &'a [u8],
    /// One u16 per posting.
    pub terms: &'a [u8],
    /// One u8 per posting.
    pub weights: &'a [u8],
    /// `docs` f16.
    pub scales: &'a [u8],
}

impl LexiconBytes<'_> {
    /// Checks every length and that each document's postings are a range of sorted unique terms,
    /// so that search can merge them with a query's without checking again.
    fn check(&self, docs: usize) -> Result<(), LoadError> {
        let offsets_len =
            docs.checked_add(1).and_then(|n| n.checked_mul(4)).ok_or(LoadError::SizeOverflow)?;
        let postings = self.weights.len();
        if self.offsets.len() != offsets_len
            || self.scales.len() != docs.saturating_mul(2)
            || self.terms.len() != postings.checked_mul(2).ok_or(LoadError::SizeOverflow)?
        {
            return Err(LoadError::ShapeMismatch);
        }
        finite(f16s(self.scales).chain(core::iter::once(self.weight)))?;
        if self.weight < 0.0 || f16s(self.scales).any(|s| s < 0.0) {
            return Err(LoadError::BadLexicon);
        }
        let offsets = self.offsets.as_chunks::<4>().0.iter().map(|b| u32::from_le_bytes(*b) as usize);
        let terms = self.terms.as_chunks::<2>().0;
        let mut start = 0;
        for (i, end) in offsets.enumerate() {
            if (i == 0 && end != 0) || end < start {
                return Err(LoadError::BadLexicon);
            }
            let document = terms.get(start..end).ok_or(LoadError::BadLexicon)?;
            if document
                .windows(2)
                .any(|pair| matches!(pair, [a, b] if u16::from_le_bytes(*a) >= u16::from_le_bytes(*b)))
            {
                return Err(LoadError::BadLexicon);
            }
            start = end;
        }
        if start != postings {
            return Err(LoadError::BadLexicon);
        }
        Ok(())
    }
}

/// What a blob says about itself: the language its student reads and the source of its index.
///
/// ```
/// use otkd_runtime::{BlobParts, Model, ModelConfig, TokenizerConfig};
///
/// let config = ModelConfig {
///     tokenizer: TokenizerConfig { buckets: 16, max_words: 4, ..TokenizerConfig::DEFAULT },
///     dim: 4, layers: 1, heads: 1, ffn: 8, out_dim: 4, layer_norm_eps: 1e-5,
/// };
/// let mut parts = BlobParts::new(config);
/// parts.lang = "ay".into();
/// let blob = parts.to_bytes()?;
/// let model = Model::from_bytes(&blob)?;
/// assert_eq!((model.provenance().lang, model.provenance().index_source), ("ay", ""));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance<'a> {
    /// The language tag of the queries the student reads (empty: not recorded).
    pub lang: &'a str,
    /// Where the index's documents come from (empty: not recorded, or no index).
    pub index_source: &'a str,
}

/// The payload, in format order (written by its `Serialize`, read field by field by [`open`]).
#[derive(Clone, Serialize)]
pub(crate) struct Payload<'a> {
    pub config: ModelConfig,
    pub provenance: Provenance<'a>,
    pub embeddings: Matrix<'a>,
    pub positions: Matrix<'a>,
    pub layers: Layers<'a>,
    pub projection: Dense<'a>,
    pub index: Option<IndexBytes<'a>>,
}

/// The layers as stored: the postcard encoding of the sequence's elements, each [`Layer`]
/// decoded when it is used ([`Layers::iter`]; a few hundred instructions per layer and query).
/// A loaded model so takes a dozen bytes for its layers, not a list of [`MAX_LAYERS`] layers of
/// 176 bytes each (on a 32-bit device) that loading copied several times over the stack.
#[derive(Clone, Copy)]
pub(crate) struct Layers<'a> {
    /// `len` encoded layers, nothing else.
    bytes: &'a [u8],
    len: usize,
}

impl<'a> Layers<'a> {
    /// Encoded layers (`len` of them, exactly `bytes`): for the writer.
    #[cfg(any(test, feature = "std"))]
    pub fn from_encoded(bytes: &'a [u8], len: usize) -> Self {
        Self { bytes, len }
    }

    /// Reads a sequence of at most [`MAX_LAYERS`] layers from the front of `rest` and moves
    /// `rest` past it; `Decode` when it does not decode (as a list of that capacity refused more).
    fn take(rest: &mut &'a [u8]) -> Result<Self, LoadError> {
        let len: usize = take(rest)?;
        if len > MAX_LAYERS {
            return Err(LoadError::Decode);
        }
        let start = *rest;
        for _ in 0..len {
            take::<Layer>(rest)?;
        }
        let bytes = start.get(..start.len() - rest.len()).ok_or(LoadError::Decode)?;
        Ok(Self { bytes, len })
    }

    /// How many layers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Each layer, decoded, in order (all of them: [`open`] decoded each once).
    pub fn iter(&self) -> impl Iterator<Item = Layer<'a>> + 'a {
        let mut rest = self.bytes;
        (0..self.len).map_while(move |_| take::<Layer>(&mut rest).ok())
    }
}

impl Serialize for Layers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for layer in self.iter() {
            seq.serialize_element(&layer)?;
        }
        seq.end()
    }
}

/// Decodes a `T` from the front of `rest` and moves `rest` past it.
fn take<'a, T: Deserialize<'a>>(rest: &mut &'a [u8]) -> Result<T, LoadError> {
    let (value, tail) = postcard::take_from_bytes::<T>(rest).map_err(|_| LoadError::Decode)?;
    *rest = tail;
    Ok(value)
}

/// Reads and checks a whole blob (see the [module docs](self)); the tensors stay borrowed.
pub(crate) fn open(blob: &[u8]) -> Result<Payload<'_>, LoadError> {
    let (header, payload) = blob.split_first_chunk::<HEADER_LEN>().ok_or(LoadError::TooShort)?;
    let [m0, m1, m2, m3, v0, v1, v2, v3, l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    if [m0, m1, m2, m3] != MAGIC {
        return Err(LoadError::BadMagic);
    }
    let version = u32::from_le_bytes([v0, v1, v2, v3]);
    if version != FORMAT_VERSION {
        return Err(LoadError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let declared = usize::try_from(u32::from_le_bytes([l0, l1, l2, l3])).map_err(|_| LoadError::Truncated)?;
    let payload = match payload.len().cmp(&declared) {
        core::cmp::Ordering::Less => return Err(LoadError::Truncated),
        core::cmp::Ordering::Greater => return Err(LoadError::TrailingBytes),
        core::cmp::Ordering::Equal => payload,
    };
    if crc32(payload) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Err(LoadError::BadCrc);
    }
    let mut rest = payload;
    let decoded = Payload {
        config: take(&mut rest)?,
        provenance: take(&mut rest)?,
        embeddings: take(&mut rest)?,
        positions: take(&mut rest)?,
        layers: Layers::take(&mut rest)?,
        projection: take(&mut rest)?,
        index: take(&mut rest)?,
    };
    if !rest.is_empty() {
        return Err(LoadError::TrailingBytes);
    }
    decoded.check()?;
    Ok(decoded)
}

impl Payload<'_> {
    fn check(&self) -> Result<(), LoadError> {
        let config = &self.config;
        config.validate()?;
        let (dim, ffn, out) = (usize::from(config.dim), usize::from(config.ffn), usize::from(config.out_dim));
        let buckets = usize::try_from(config.tokenizer.buckets).map_err(|_| LoadError::SizeOverflow)?;
        self.embeddings.check(buckets, dim)?;
        self.positions.check(usize::from(config.tokenizer.max_words), dim)?;
        if self.layers.len() != usize::from(config.layers) {
            return Err(LoadError::ShapeMismatch);
        }
        for layer in self.layers.iter() {
            layer.attention_norm.check(dim)?;
            for dense in [layer.query, layer.key, layer.value, layer.attention_out] {
                dense.check(dim, dim)?;
            }
            layer.ffn_norm.check(dim)?;
            layer.ffn_in.check(ffn, dim)?;
            layer.ffn_out.check(dim, ffn)?;
        }
        self.projection.check(out, dim)?;
        if let Some(index) = &self.index {
            let docs = usize::try_from(index.docs).map_err(|_| LoadError::SizeOverflow)?;
            Matrix { values: index.values, scales: index.scales }.check(docs, out)?;
            let ids = docs.checked_mul(4).ok_or(LoadError::SizeOverflow)?;
            if index.ids.len() != ids || index.hubness.len() != docs.saturating_mul(2) {
                return Err(LoadError::ShapeMismatch);
            }
            if let Some(lexical) = &index.lexical {
                lexical.check(docs)?;
            }
        }
        Ok(())
    }
}

fn check_f32s(bytes: &[u8], len: usize) -> Result<(), LoadError> {
    if bytes.len() != len.checked_mul(4).ok_or(LoadError::SizeOverflow)? {
        return Err(LoadError::ShapeMismatch);
    }
    finite(f32s(bytes))
}

fn finite(mut values: impl Iterator<Item = f32>) -> Result<(), LoadError> {
    if values.all(f32::is_finite) { Ok(()) } else { Err(LoadError::NonFinite) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MICRO, MINIMAL, seal};
    use crate::{BlobParts, IndexParts};

    fn tiny_blob() -> Vec<u8> {
        let mut parts = BlobParts::new(MINIMAL);
        parts.index = Some(IndexParts {
            ids: vec![1, 2],
            embeddings: vec![0.5; 8],
            hubness: vec![0.1, -0.2],
            lexical: None,
        });
        parts.index.as_mut().unwrap().lexical = Some(crate::LexiconParts {
            weight: 1.5,
            documents: vec![vec![(1, 0.5), (7, 0.25), (9, 0.0)], vec![(3, 1.0)]],
        });
        parts.to_bytes().unwrap()
    }

    /// Loads the tiny blob after `change` to its decoded payload, re-encoded and resealed, so that
    /// only the checks after the CRC can refuse it.
    fn load_changed(change: impl FnOnce(&mut Payload<'static>)) -> Result<(), LoadError> {
        let blob: &'static [u8] = Box::leak(tiny_blob().into_boxed_slice());
        let mut payload = open(blob).unwrap();
        change(&mut payload);
        open(&seal(&postcard::to_allocvec(&payload).unwrap())).map(drop)
    }

    fn leak(bytes: Vec<u8>) -> &'static [u8] {
        Box::leak(bytes.into_boxed_slice())
    }

    /// `p`'s first layer changed by `change` (the layers re-encoded into leaked bytes).
    fn change_layer(p: &mut Payload<'static>, change: impl FnOnce(&mut Layer<'static>)) {
        let mut layers: Vec<Layer<'static>> = p.layers.iter().collect();
        change(&mut layers[0]);
        let bytes = layers.iter().flat_map(|layer| postcard::to_allocvec(layer).unwrap()).collect();
        p.layers = Layers::from_encoded(leak(bytes), layers.len());
    }

    #[test]
    fn crc_matches_the_standard_check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn unchanged_payload_reseals_to_a_valid_blob() {
        assert_eq!(load_changed(|_| {}), Ok(()));
        assert_eq!(seal(&tiny_blob()[HEADER_LEN..]), tiny_blob());
    }

    #[test]
    fn weights_are_borrowed_in_place() {
        let blob = tiny_blob();
        let payload = open(&blob).unwrap();
        let range = blob.as_ptr_range();
        for slice in [
            payload.embeddings.values,
            payload.layers.iter().next().unwrap().ffn_out.bias,
            payload.index.unwrap().ids,
        ] {
            assert!(range.contains(&slice.as_ptr()), "not inside the blob");
        }
    }

    #[test]
    fn config_encoding_is_pinned() {
        // A change here (e.g. a new TokenizerConfig field) changes the format: bump FORMAT_VERSION.
        assert_eq!(
            postcard::to_allocvec(&MICRO).unwrap(),
            [
                0x80, 0x2c, 0xe4, 0xd6, 0xd1, 0xfb, 0x06, 0x03, 0x05, 0x40, 0x30, 0xc0, 0x01, 0x01, 0x04,
                0x80, 0x03, 0x80, 0x03, 0xac, 0xc5, 0x27, 0x37
            ]
        );
    }

    #[test]
    fn zero_and_inconsistent_dimensions_are_refused() {
        assert_eq!(load_changed(|p| p.config.dim = 0), Err(LoadError::ZeroDimension));
        assert_eq!(load_changed(|p| p.config.heads = 0), Err(LoadError::ZeroDimension));
        assert_eq!(load_changed(|p| p.config.ffn = 0), Err(LoadError::ZeroDimension));
        assert_eq!(load_changed(|p| p.config.out_dim = 0), Err(LoadError::ZeroDimension));
        assert_eq!(load_changed(|p| p.config.tokenizer.buckets = 0), Err(LoadError::BadTokenizerConfig));
        assert_eq!(load_changed(|p| p.config.tokenizer.max_words = 0), Err(LoadError::BadTokenizerConfig));
        assert_eq!(load_changed(|p| p.config.heads = 3), Err(LoadError::HeadsDoNotDivideDim));
        assert_eq!(load_changed(|p| p.config.layers = 9), Err(LoadError::TooManyLayers));
        assert_eq!(load_changed(|p| p.config.out_dim = 1025), Err(LoadError::OutDimTooLarge));
        for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
            assert_eq!(load_changed(|p| p.config.layer_norm_eps = eps), Err(LoadError::BadLayerNormEps));
        }
        // Valid configs that do not match the tensors.
        assert_eq!(load_changed(|p| p.config.layers = 0), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| p.config.dim = 8), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| p.config.ffn = 8), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| p.config.tokenizer.max_words = 5), Err(LoadError::ShapeMismatch));
    }

    #[test]
    fn huge_declared_sizes_are_refused() {
        assert_eq!(load_changed(|p| p.config.tokenizer.buckets = u32::MAX), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| p.config.dim = u16::MAX), Err(LoadError::HeadsDoNotDivideDim));
        assert_eq!(
            load_changed(|p| {
                p.config.dim = 65534;
                p.config.tokenizer.buckets = u32::MAX;
            }),
            Err(LoadError::ShapeMismatch)
        );
        assert_eq!(
            load_changed(|p| p.index.as_mut().unwrap().docs = u32::MAX),
            Err(LoadError::ShapeMismatch)
        );
        // Products that overflow usize (reachable from a config on 32-bit devices).
        let empty = Matrix { values: &[], scales: &[] };
        assert_eq!(empty.check(usize::MAX, 2), Err(LoadError::SizeOverflow));
        assert_eq!(empty.check(usize::MAX / 2 + 1, 1), Err(LoadError::SizeOverflow));
        assert_eq!(check_f32s(&[], usize::MAX / 2), Err(LoadError::SizeOverflow));
        // A byte string whose declared length runs past the payload.
        let mut payload = postcard::to_allocvec(&MINIMAL).unwrap();
        payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]);
        assert_eq!(open(&seal(&payload)).err(), Some(LoadError::Decode));
    }

    #[test]
    fn mismatched_tensors_are_refused() {
        assert_eq!(
            load_changed(|p| p.embeddings.values = &p.embeddings.values[1..]),
            Err(LoadError::ShapeMismatch)
        );
        assert_eq!(load_changed(|p| p.positions.scales = &[]), Err(LoadError::ShapeMismatch));
        assert_eq!(
            load_changed(|p| change_layer(p, |l| l.key.bias = &l.key.bias[4..])),
            Err(LoadError::ShapeMismatch)
        );
        assert_eq!(
            load_changed(|p| change_layer(p, |l| l.ffn_norm.weight = &[])),
            Err(LoadError::ShapeMismatch)
        );
        assert_eq!(load_changed(|p| p.projection.weight.values = &[]), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| p.index.as_mut().unwrap().hubness = &[]), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| p.index.as_mut().unwrap().ids = &[0; 4]), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| p.index = None), Ok(()));
    }

    #[test]
    fn inconsistent_lexicons_are_refused() {
        fn lexicon<'p>(p: &'p mut Payload<'static>) -> &'p mut LexiconBytes<'static> {
            p.index.as_mut().unwrap().lexical.as_mut().unwrap()
        }
        assert_eq!(load_changed(|p| lexicon(p).weight = -1.0), Err(LoadError::BadLexicon));
        assert_eq!(load_changed(|p| lexicon(p).weight = f32::NAN), Err(LoadError::NonFinite));
        // Document 0 holds terms 1, 7, 9: swapped to 7, 1, 9, then a repeated 7.
        assert_eq!(
            load_changed(|p| lexicon(p).terms = &[7, 0, 1, 0, 9, 0, 3, 0]),
            Err(LoadError::BadLexicon)
        );
        assert_eq!(
            load_changed(|p| lexicon(p).terms = &[1, 0, 7, 0, 7, 0, 3, 0]),
            Err(LoadError::BadLexicon)
        );
        // Offsets 0, 3, 4: not starting at 0, decreasing, not ending at the postings' count.
        let offsets = |o: [u32; 3]| leak(o.iter().flat_map(|x| x.to_le_bytes()).collect());
        assert_eq!(load_changed(|p| lexicon(p).offsets = offsets([1, 3, 4])), Err(LoadError::BadLexicon));
        assert_eq!(load_changed(|p| lexicon(p).offsets = offsets([0, 3, 2])), Err(LoadError::BadLexicon));
        assert_eq!(load_changed(|p| lexicon(p).offsets = offsets([0, 3, 3])), Err(LoadError::BadLexicon));
        assert_eq!(load_changed(|p| lexicon(p).offsets = offsets([0, 9, 4])), Err(LoadError::BadLexicon));
        assert_eq!(load_changed(|p| lexicon(p).weights = &[1, 2, 3]), Err(LoadError::ShapeMismatch));
        assert_eq!(load_changed(|p| lexicon(p).scales = &[0, 0]), Err(LoadError::ShapeMismatch));
        let negative = leak([half::f16::from_f32(-1.0).to_le_bytes(), [0, 0]].concat());
        assert_eq!(load_changed(|p| lexicon(p).scales = negative), Err(LoadError::BadLexicon));
        assert_eq!(load_changed(|p| p.index.as_mut().unwrap().lexical = None), Ok(()));
    }

    #[test]
    fn non_finite_scales_and_parameters_are_refused() {
        let nan_scale = |scales: &[u8]| {
            let mut bytes = scales.to_vec();
            bytes[..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
            leak(bytes)
        };
        assert_eq!(
            load_changed(|p| p.embeddings.scales = nan_scale(p.embeddings.scales)),
            Err(LoadError::NonFinite)
        );
        assert_eq!(
            load_changed(|p| change_layer(p, |l| l.query.weight.scales = nan_scale(l.query.weight.scales))),
            Err(LoadError::NonFinite)
        );
        assert_eq!(
            load_changed(|p| {
                let index = p.index.as_mut().unwrap();
                index.scales = nan_scale(index.scales);
            }),
            Err(LoadError::NonFinite)
        );
        let infinite = leak([f32::INFINITY; 4].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(
            load_changed(|p| change_layer(p, |l| l.attention_norm.bias = infinite)),
            Err(LoadError::NonFinite)
        );
        assert_eq!(load_changed(|p| p.projection.bias = infinite), Err(LoadError::NonFinite));
    }

    #[test]
    fn payload_framing_errors_are_refused() {
        let blob = tiny_blob();
        let mut payload = blob[HEADER_LEN..].to_vec();
        payload.push(0);
        assert_eq!(open(&seal(&payload)).err(), Some(LoadError::TrailingBytes));
        assert_eq!(open(&seal(&[])).err(), Some(LoadError::Decode));
        let mut bad_magic = blob.clone();
        bad_magic[..4].copy_from_slice(b"OTKE");
        assert_eq!(open(&bad_magic).err(), Some(LoadError::BadMagic));
    }

    #[test]
    fn every_error_has_a_message() {
        let errors = [
            LoadError::TooShort,
            LoadError::BadMagic,
            LoadError::UnsupportedVersion { found: 7, supported: FORMAT_VERSION },
            LoadError::Truncated,
            LoadError::TrailingBytes,
            LoadError::BadCrc,
            LoadError::Decode,
            LoadError::BadTokenizerConfig,
            LoadError::ZeroDimension,
            LoadError::HeadsDoNotDivideDim,
            LoadError::TooManyLayers,
            LoadError::OutDimTooLarge,
            LoadError::BadLayerNormEps,
            LoadError::SizeOverflow,
            LoadError::ShapeMismatch,
            LoadError::NonFinite,
        ];
        let messages: std::collections::HashSet<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), errors.len(), "messages are distinct");
        assert!(messages.iter().all(|m| m.starts_with("blob: ")));
    }
}
