//! `otkd-runtime`: the part of otkd that runs on the device, and the single source of truth for
//! everything the device does.
//!
//! Roles (see `DESIGN.md`):
//! - **tokenizer** ([`tokenizer`]): the student's language-agnostic tokenizer (words plus hashed
//!   character n-grams, no vocabulary file). The host calls this same code, so host and device
//!   tokenize bit-identically.
//! - **blob format**, **int8 inference** and **retrieval** with fixed-capacity containers: to come.
//!
//! The crate is `#![no_std]`, never allocates, and never panics on any input; bounded outputs go into
//! caller-provided [`heapless`] buffers and overflow is reported as a value. The `std` feature only
//! links std for host callers.
//!
//! ```
//! use otkd_runtime::{tokenize, Feature, TokenizerConfig};
//!
//! let config = TokenizerConfig::DEFAULT;
//! config.validate()?;
//! let mut out = heapless::Vec::<Feature, 256>::new();
//! let report = tokenize(&config, "Jaʼa, qhana!", out.as_mut_view());
//! assert_eq!(report.words, 2);
//! assert!(report.is_lossless());
//! # Ok::<(), otkd_runtime::ConfigError>(())
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![warn(clippy::cast_possible_truncation, clippy::indexing_slicing)]

pub mod tokenizer;

pub use tokenizer::{ConfigError, Feature, TokenizeReport, TokenizerConfig, tokenize};
