//! Shared by the fuzz targets: fixed models, resealing, and the encode/search oracle.
#![allow(dead_code)] // each target uses part of it

use otkd_runtime::{
    BlobParts, EncodeError, FORMAT_VERSION, Feature, IndexParts, MAGIC, Model, ModelConfig, Scoring, Scratch,
    TokenizerConfig, crc32, tokenize,
};

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
    model_blob(config, 20)
}

/// The model whose payload the `from_bytes` target edits: as small as a model with every part
/// gets (about 600 bytes), so that each edit lands somewhere that matters.
pub fn tiny_model() -> Vec<u8> {
    let config = ModelConfig {
        tokenizer: TokenizerConfig {
            buckets: 32,
            max_words: 4,
            max_features_per_word: 8,
            ..TokenizerConfig::DEFAULT
        },
        dim: 4,
        layers: 1,
        heads: 2,
        ffn: 4,
        out_dim: 4,
        layer_norm_eps: 1e-5,
    };
    model_blob(config, 3)
}

/// A model of `config` with pseudo-random weights (every branch active) and `docs` documents.
fn model_blob(config: ModelConfig, docs: u32) -> Vec<u8> {
    let mut state = 0x6f74_6b64_u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    };
    let mut fill = |values: &mut Vec<f32>, scale: f32| values.iter_mut().for_each(|v| *v = next() * scale);
    let mut parts = BlobParts::new(config);
    fill(&mut parts.embeddings, 0.5);
    fill(&mut parts.positions, 0.1);
    for layer in &mut parts.layers {
        for dense in [
            &mut layer.query,
            &mut layer.key,
            &mut layer.value,
            &mut layer.attention_out,
            &mut layer.ffn_in,
            &mut layer.ffn_out,
        ] {
            fill(&mut dense.weight, 0.4);
            fill(&mut dense.bias, 0.05);
        }
    }
    fill(&mut parts.projection.weight, 0.25);
    let mut embeddings = vec![0.0; docs as usize * usize::from(config.out_dim)];
    fill(&mut embeddings, 0.2);
    parts.index =
        Some(IndexParts { ids: (0..docs).rev().collect(), embeddings, hubness: vec![0.1; docs as usize] });
    parts.to_bytes().expect("the fixed model is valid")
}

/// A blob around `payload` with a valid header and CRC, so that the checks after the CRC see it.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut blob = MAGIC.to_vec();
    blob.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    blob.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    blob.extend_from_slice(&crc32(payload).to_le_bytes());
    blob.extend_from_slice(payload);
    blob
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
