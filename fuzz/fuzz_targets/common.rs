//! Shared by the fuzz targets: their fixed models (seeded by the runtime's test fixture,
//! `otkd_runtime::testing`) and the encode/search oracle.
#![allow(dead_code)] // each target uses part of it

use otkd_runtime::testing;
use otkd_runtime::{EncodeError, Feature, Model, ModelConfig, Scoring, Scratch, TokenizerConfig, tokenize};

/// Feature capacity of the fuzz scratch: `max_words x max_features_per_word + 1` of the fixed model.
const FEATURES: usize = 4096;
/// Scratch above this many bytes is not allocated (a fuzzed config can ask for gigabytes).
const MAX_SCRATCH_BYTES: usize = 16 << 20;

/// The model of the `encode` target: 2 layers, 4 heads, the default tokenizer (64 words of up to 48
/// features) over 1024 buckets, 20 documents.
pub fn small_model() -> Vec<u8> {
    let config = ModelConfig {
        tokenizer: TokenizerConfig { buckets: 1024, ..TokenizerConfig::DEFAULT },
        dim: 16,
        layers: 2,
        heads: 4,
        ffn: 32,
        out_dim: 24,
        layer_norm_eps: 1e-5,
    };
    testing::seeded_blob(config, 20, testing::SEED)
}

/// The model whose payload the `from_bytes` target edits: as small as a model with every part
/// gets (`testing::MINIMAL` and 3 documents, about 600 bytes), so that each edit lands somewhere
/// that matters.
pub fn tiny_model() -> Vec<u8> {
    testing::seeded_blob(testing::MINIMAL, 3, testing::SEED)
}

/// Encodes `text` and searches the index, checking what must hold for any model and text:
/// with scratch for `max_words` words only a text without words fails; with scratch for 3 words
/// the result is the same or `ScratchTooSmall`; hits are sorted, at most `k`, scores by total order.
pub fn exercise(model: &Model, text: &str) {
    let config = model.config();
    let max_words = usize::from(config.tokenizer.max_words);
    let full_fits = Scratch::features_len(config, max_words) <= FEATURES
        && Scratch::ram_bytes(config, max_words) <= MAX_SCRATCH_BYTES;
    let words = if full_fits { max_words } else { 3 };
    let mut features = Box::new(heapless::Vec::<Feature, FEATURES>::new());
    let mut floats = vec![0f32; Scratch::floats_len(config, words)];
    let mut int8s = vec![0i8; Scratch::int8s_len(config, words)];
    let full = model.encode(text, &mut Scratch::new(features.as_mut_view(), &mut floats, &mut int8s));
    if full_fits {
        let mut tokens = Box::new(heapless::Vec::<Feature, FEATURES>::new());
        let has_words = tokenize(&config.tokenizer, text, tokens.as_mut_view()).words > 0;
        match &full {
            Ok(embedding) => {
                assert!(has_words);
                assert_eq!(embedding.len(), usize::from(config.out_dim));
            }
            Err(error) => assert_eq!((*error, has_words), (EncodeError::EmptyQuery, false)),
        }
        let mut floats = vec![0f32; Scratch::floats_len(config, 3)];
        let mut int8s = vec![0i8; Scratch::int8s_len(config, 3)];
        let small = model.encode(text, &mut Scratch::new(features.as_mut_view(), &mut floats, &mut int8s));
        assert!(small == full || small == Err(EncodeError::ScratchTooSmall), "{small:?} vs {full:?}");
    }
    let (Ok(query), Some(index)) = (full, model.index()) else { return };
    for scoring in [Scoring::Cosine, Scoring::Csls] {
        let hits = index.search::<5>(&query, 5, scoring).expect("the query has the index's width");
        assert_eq!(hits.len(), index.len().min(5));
        assert!(hits.windows(2).all(|w| w[0].score.total_cmp(&w[1].score).is_ge()));
    }
}
