//! `otkd-runtime`: the part of otkd that runs on the device, and the single source of truth for
//! everything the device does.
//!
//! Roles (see `../shared/DESIGN.md`, which README's "Workspace" links):
//! - **tokenizer** ([`tokenizer`]): the student's language-agnostic tokenizer (words plus hashed
//!   character n-grams, no vocabulary file). The host calls this same code, so host and device
//!   tokenize bit-identically.
//! - **blob format** ([`blob`]): a quantized student (int8 weights, one f16 scale per output row,
//!   f32 biases and norms) and an optional document index, behind a header with magic, version,
//!   length and CRC-32. [`Model::from_bytes`] checks a blob and borrows it in place (it can sit
//!   in flash); [`BlobParts::to_bytes`] writes one (feature `std`).
//! - **int8 inference** ([`Model::encode`]): the student's forward pass with `i8 x i8 -> i32`
//!   products in caller-provided [`Scratch`] memory; every float function is from `libm`, so host
//!   and device compute the same bits.
//! - **retrieval** ([`Index::search`]): top-k by cosine or by hubness-corrected CSLS
//!   ([`Scoring`]), in a fixed-capacity [`heapless::Vec`].
//!
//! The crate is `#![no_std]`, never allocates, and never panics on any input; bounded outputs go into
//! caller-provided [`heapless`] buffers and overflow is reported as a value. Features: `std` links
//! std for host callers and adds the blob writer; `defmt` adds `defmt::Format` to the error and
//! result types and logs loading and encoding (firmware only); `dsp` computes the int8 products
//! with the SMLAD/SXTB16 instructions of ARMv7E-M cores (Cortex-M4, M7, M33 with DSP; it changes
//! nothing elsewhere, and the integer sums are the same either way).
//!
//! # What the host calls
//!
//! - **Export**: fill [`BlobParts`] from the trained student (start from [`BlobParts::new`], which
//!   gives every tensor its shape; dense weights in the student's `[in, out]` layout), with an
//!   [`IndexParts`] of f32 document embeddings, ids and CSLS terms `r(d)`; then
//!   [`BlobParts::to_bytes`]. Sizes to report: the blob's length, [`Model::weight_bytes`],
//!   [`Index::stored_bytes`], and [`Scratch::ram_bytes`] for the query length promised.
//! - **Query**: [`Model::from_bytes`], a [`Scratch`] sized by [`Scratch::features_len`],
//!   [`Scratch::floats_len`] and [`Scratch::int8s_len`] for `max_words` words, [`Model::encode`],
//!   then [`Index::search`]. Every failure is a typed error with a `Display` message
//!   ([`LoadError`], [`EncodeError`], [`SearchError`], [`WriteError`]).
//! - **Evaluation** of the quantized model next to the f32 student: [`Embedding::to_f32`] and
//!   [`Embedding::cosine`]; [`quantize_row`] is the quantizer the writer uses.
//!
//! ```
//! use otkd_runtime::{BlobParts, Feature, IndexParts, Model, ModelConfig, Scoring, Scratch, TokenizerConfig};
//!
//! let config = ModelConfig {
//!     tokenizer: TokenizerConfig { buckets: 256, max_words: 16, ..TokenizerConfig::DEFAULT },
//!     dim: 16, layers: 1, heads: 2, ffn: 32, out_dim: 8, layer_norm_eps: 1e-5,
//! };
//! // Export (host): here a student whose weights are a simple pattern, and two documents.
//! let mut parts = BlobParts::new(config);
//! parts.embeddings.iter_mut().enumerate().for_each(|(i, e)| *e = ((i * 37 % 11) as f32 - 5.0) / 5.0);
//! parts.projection.weight.iter_mut().enumerate().for_each(|(i, w)| *w = ((i * 13 % 7) as f32 - 3.0) / 3.0);
//! let mut docs = vec![0.0; 2 * 8];
//! docs[0] = 1.0;
//! docs[8 + 1] = 1.0;
//! parts.index = Some(IndexParts { ids: vec![100, 101], embeddings: docs, hubness: vec![0.1, 0.2], lexical: None });
//! let blob = parts.to_bytes()?;
//!
//! // Query (host or device): load in place, encode, search.
//! let model = Model::from_bytes(&blob)?;
//! let words = usize::from(config.tokenizer.max_words);
//! let mut features = heapless::Vec::<Feature, 1024>::new();
//! let mut floats = vec![0f32; Scratch::floats_len(&config, words)];
//! let mut int8s = vec![0i8; Scratch::int8s_len(&config, words)];
//! let mut scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
//! let query = model.encode("Jaʼa, qhana!", &mut scratch)?;
//! let index = model.index().ok_or("no index")?;
//! let hits = index.search::<2>(&query, 2, Scoring::Csls)?;
//! assert_eq!(hits.len(), 2);
//! assert!(hits[0].score >= hits[1].score);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![warn(clippy::cast_possible_truncation)]

pub mod blob;
mod index;
mod model;
mod quant;
#[cfg(feature = "std")]
#[doc(hidden)]
pub mod testing;
pub mod tokenizer;
#[cfg(feature = "std")]
mod writer;

pub use blob::{
    FORMAT_VERSION, HEADER_LEN, LoadError, MAGIC, MAX_LAYERS, MAX_OUT_DIM, ModelConfig, Provenance, crc32,
};
pub use index::{
    Embedding, Hit, Index, LEXICAL_BUCKETS, LEXICAL_NGRAMS, MAX_QUERY_TERMS, Query, QueryTerms, Scoring,
    SearchError, lexical_config,
};
pub use model::{EncodeError, Model, Scratch};
pub use quant::quantize_row;
pub use tokenizer::{ConfigError, Feature, TokenizeReport, TokenizerConfig, tokenize};
#[cfg(feature = "std")]
pub use writer::{BlobParts, DenseParts, IndexParts, LayerParts, LexiconParts, NormParts, WriteError};
