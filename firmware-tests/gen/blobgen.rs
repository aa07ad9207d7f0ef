//! Deterministic seeded blobs for the firmware (shared source: the firmware's build script and the
//! host harness both `#[path]`-include this file, so they make the same bytes).
//!
//! A blob here is a student with seeded uniform random weights and an index of seeded random unit
//! documents, written by the runtime's own writer ([`otkd_runtime::BlobParts`]). Integer
//! SplitMix64 and exact float arithmetic only: the bytes are the same on every machine.

use otkd_runtime::{BlobParts, IndexParts, ModelConfig, TokenizerConfig};

/// The default blob's shape: small enough that a firmware build and its QEMU run take seconds.
pub const TINY: ModelConfig = ModelConfig {
    tokenizer: TokenizerConfig { buckets: 512, max_words: 32, ..TokenizerConfig::DEFAULT },
    dim: 32,
    layers: 1,
    heads: 4,
    ffn: 64,
    out_dim: 32,
    layer_norm_eps: 1e-5,
};

/// Documents in the default blob's index.
pub const TINY_DOCUMENTS: usize = 64;

/// The `micro` preset's shape (the host's `otkd train --preset micro`): 5632 buckets, dim 192,
/// 1 layer, 4 heads, ffn 384, out 384.
pub const MICRO: ModelConfig = ModelConfig {
    tokenizer: TokenizerConfig { buckets: 5632, ..TokenizerConfig::DEFAULT },
    dim: 192,
    layers: 1,
    heads: 4,
    ffn: 384,
    out_dim: 384,
    layer_norm_eps: 1e-5,
};

/// Documents in the micro configuration's index.
pub const MICRO_DOCUMENTS: usize = 1000;

/// The seed of every generated blob.
pub const SEED: u64 = 0x6f74_6b64_2d66_7721;

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit integer state, no float in the generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-a, a)`: 24 random bits, exact in f32, then one multiplication.
    fn uniform(&mut self, a: f32) -> f32 {
        let bits = (self.next() >> 40) as u32; // 24 bits
        let unit = bits as f32 / (1u32 << 24) as f32; // exact
        (unit * 2.0 - 1.0) * a
    }

    fn fill(&mut self, values: &mut [f32], a: f32) {
        values.iter_mut().for_each(|v| *v = self.uniform(a));
    }
}

/// A blob of `config`'s shape with seeded random weights and `documents` seeded random unit
/// documents (ids `1000 + i`, hubness terms in `[0, 0.5)`).
///
/// # Panics
/// When the writer refuses `config` (a caller bug: the constants above are valid).
pub fn seeded_blob(config: ModelConfig, documents: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut parts = BlobParts::new(config);
    let (dim, ffn, out) = (usize::from(config.dim), usize::from(config.ffn), usize::from(config.out_dim));
    // 1/p for the power of two p >= sqrt(fan_in): every product is exact.
    let scale = |fan_in: usize| {
        let mut p = 1usize;
        while p * p < fan_in {
            p *= 2;
        }
        1.0 / p as f32
    };
    rng.fill(&mut parts.embeddings, 0.5);
    rng.fill(&mut parts.positions, 0.125);
    for layer in &mut parts.layers {
        for norm in [&mut layer.attention_norm, &mut layer.ffn_norm] {
            norm.weight.iter_mut().for_each(|w| *w = 1.0 + rng.uniform(0.25));
            rng.fill(&mut norm.bias, 0.0625);
        }
        for dense in [&mut layer.query, &mut layer.key, &mut layer.value, &mut layer.attention_out] {
            rng.fill(&mut dense.weight, 2.0 * scale(dim));
            rng.fill(&mut dense.bias, 0.0625);
        }
        rng.fill(&mut layer.ffn_in.weight, 2.0 * scale(dim));
        rng.fill(&mut layer.ffn_in.bias, 0.0625);
        rng.fill(&mut layer.ffn_out.weight, 2.0 * scale(ffn));
        rng.fill(&mut layer.ffn_out.bias, 0.0625);
    }
    rng.fill(&mut parts.projection.weight, 2.0 * scale(dim));
    rng.fill(&mut parts.projection.bias, 0.0625);

    let mut embeddings = vec![0f32; documents * out];
    for row in embeddings.chunks_mut(out) {
        rng.fill(row, 1.0);
        let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
    }
    let hubness = (0..documents).map(|_| 0.25 + rng.uniform(0.25)).collect();
    let ids = (0..documents).map(|i| 1000 + u32::try_from(i).unwrap_or(u32::MAX)).collect();
    parts.index = Some(IndexParts { ids, embeddings, hubness });
    match parts.to_bytes() {
        Ok(blob) => blob,
        Err(e) => panic!("seeded blob of {config:?}: {e}"),
    }
}

/// The committed default: [`TINY`] with [`TINY_DOCUMENTS`] documents from [`SEED`].
pub fn default_blob() -> Vec<u8> {
    seeded_blob(TINY, TINY_DOCUMENTS, SEED)
}

/// The micro configuration when no trained export is given: [`MICRO`] with [`MICRO_DOCUMENTS`]
/// documents from [`SEED`].
pub fn seeded_micro_blob() -> Vec<u8> {
    seeded_blob(MICRO, MICRO_DOCUMENTS, SEED)
}

/// The blob a name stands for: `seeded-tiny` (the default), `seeded-micro`, or else a path.
pub fn resolve(name: &str) -> Result<Vec<u8>, String> {
    match name {
        "seeded-tiny" | "" => Ok(default_blob()),
        "seeded-micro" => Ok(seeded_micro_blob()),
        path => std::fs::read(path).map_err(|e| format!("reading the blob {path}: {e}")),
    }
}
