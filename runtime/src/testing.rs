//! Test fixtures (feature `std`), shared by the runtime's tests, the fuzz targets and the
//! firmware's build script and harness, so that a model shape or a seeded blob is written once.
//! Not part of the API: hidden from the docs, and free to change with the tests.
//!
//! - [`SplitMix64`]: the seeded generator of every test weight;
//! - the model shapes: [`MINIMAL`] (every part at its smallest), [`SMALL`] (two layers),
//!   [`TINY`] (the firmware's default), [`MICRO`] (the host's `micro` preset);
//! - [`seeded_parts`], [`seeded_index`], [`seeded_blob`]: a student with seeded random weights
//!   and an index of seeded random unit documents, written by the runtime's own writer;
//! - [`seal`]: a valid header and CRC around any payload;
//! - [`OwnedScratch`]: heap-allocated scratch memory for a number of words.
//!
//! Integer SplitMix64 and exact float arithmetic only: a seed gives the same bytes on every
//! machine. The firmware relies on it (its default blob is generated at build time, not
//! committed), and a test pins the bytes of [`tiny_blob`] and [`micro_blob`].

use crate::{
    BlobParts, FORMAT_VERSION, Feature, IndexParts, LexiconParts, MAGIC, ModelConfig, Scratch,
    TokenizerConfig, crc32,
};

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit integer state, no float in the generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-a, a)`: 24 random bits, exact in f32, then one multiplication.
    pub fn uniform(&mut self, a: f32) -> f32 {
        // The top 24 bits: the shift leaves nothing to truncate.
        #[allow(clippy::cast_possible_truncation)]
        let bits = (self.next_u64() >> 40) as u32;
        let unit = bits as f32 / (1u32 << 24) as f32; // exact
        (unit * 2.0 - 1.0) * a
    }

    /// Fills `values` with [`SplitMix64::uniform`]`(a)` draws.
    pub fn fill(&mut self, values: &mut [f32], a: f32) {
        values.iter_mut().for_each(|v| *v = self.uniform(a));
    }

    /// `len` draws of [`SplitMix64::uniform`]`(a)`.
    pub fn vec(&mut self, len: usize, a: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(a)).collect()
    }
}

/// The smallest model with every part (a layer, two heads, an index): a blob of a few hundred
/// bytes, small enough to damage byte by byte.
pub const MINIMAL: ModelConfig = ModelConfig {
    tokenizer: TokenizerConfig { buckets: 16, max_words: 4, ..TokenizerConfig::DEFAULT },
    dim: 4,
    layers: 1,
    heads: 2,
    ffn: 4,
    out_dim: 4,
    layer_norm_eps: 1e-5,
};

/// A small student with two layers (so that one layer's output feeds another) and every branch
/// active.
pub const SMALL: ModelConfig = ModelConfig {
    tokenizer: TokenizerConfig { buckets: 512, max_words: 16, ..TokenizerConfig::DEFAULT },
    dim: 32,
    layers: 2,
    heads: 4,
    ffn: 64,
    out_dim: 48,
    layer_norm_eps: 1e-5,
};

/// The firmware's default blob's shape: small enough that a firmware build and its QEMU run take
/// seconds.
pub const TINY: ModelConfig = ModelConfig {
    tokenizer: TokenizerConfig { buckets: 512, max_words: 32, ..TokenizerConfig::DEFAULT },
    dim: 32,
    layers: 1,
    heads: 4,
    ffn: 64,
    out_dim: 32,
    layer_norm_eps: 1e-5,
};

/// Documents in [`tiny_blob`]'s index.
pub const TINY_DOCUMENTS: usize = 64;

/// The shape of the host's `micro` preset (`otkd train --preset micro`): 5632 buckets, dim 192,
/// 1 layer, 4 heads, ffn 384, out 384.
pub const MICRO: ModelConfig = ModelConfig::MICRO;

/// Documents in [`micro_blob`]'s index.
pub const MICRO_DOCUMENTS: usize = 1000;

/// The seed of [`tiny_blob`] and [`micro_blob`].
pub const SEED: u64 = 0x6f74_6b64_2d66_7721;

/// `config`'s student with weights drawn from `rng`, of roughly a trained student's scales
/// (layer outputs of about unit variance) and with the residual branches active: norm gains
/// `1 ± 0.25`, dense weights uniform in `±2/p` for the power of two `p ≥ √fan_in` (so that every
/// product is exact), biases within `±1/16`. No index.
pub fn seeded_parts(config: ModelConfig, rng: &mut SplitMix64) -> BlobParts {
    let mut parts = BlobParts::new(config);
    let (dim, ffn) = (usize::from(config.dim), usize::from(config.ffn));
    let bound = |fan_in: usize| {
        let mut p = 1usize;
        while p * p < fan_in {
            p *= 2;
        }
        2.0 / p as f32
    };
    rng.fill(&mut parts.embeddings, 0.5);
    rng.fill(&mut parts.positions, 0.125);
    for layer in &mut parts.layers {
        for norm in [&mut layer.attention_norm, &mut layer.ffn_norm] {
            norm.weight.iter_mut().for_each(|w| *w = 1.0 + rng.uniform(0.25));
            rng.fill(&mut norm.bias, 0.0625);
        }
        for dense in [&mut layer.query, &mut layer.key, &mut layer.value, &mut layer.attention_out] {
            rng.fill(&mut dense.weight, bound(dim));
            rng.fill(&mut dense.bias, 0.0625);
        }
        rng.fill(&mut layer.ffn_in.weight, bound(dim));
        rng.fill(&mut layer.ffn_in.bias, 0.0625);
        rng.fill(&mut layer.ffn_out.weight, bound(ffn));
        rng.fill(&mut layer.ffn_out.bias, 0.0625);
    }
    rng.fill(&mut parts.projection.weight, bound(dim));
    rng.fill(&mut parts.projection.bias, 0.0625);
    parts
}

/// An index of `documents` unit vectors of width `out_dim` drawn from `rng`, ids `1000 + i`,
/// hubness terms in `[0, 0.5)`.
pub fn seeded_index(out_dim: usize, documents: usize, rng: &mut SplitMix64) -> IndexParts {
    let mut embeddings = vec![0f32; documents * out_dim];
    for row in embeddings.chunks_mut(out_dim.max(1)) {
        rng.fill(row, 1.0);
        let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
        // An f64 quotient rounded once to f32: the correctly rounded result on every machine.
        #[allow(clippy::cast_possible_truncation)]
        row.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
    }
    let hubness = (0..documents).map(|_| 0.25 + rng.uniform(0.25)).collect();
    let ids = (0..documents).map(|i| 1000 + u32::try_from(i).unwrap_or(u32::MAX)).collect();
    IndexParts { ids, embeddings, hubness, lexical: None }
}

/// The blob of [`seeded_parts`] with a [`seeded_index`] of `documents` documents, both from one
/// generator seeded with `seed`.
///
/// # Panics
/// When the writer refuses `config` (a caller bug: the shapes above are valid).
pub fn seeded_blob(config: ModelConfig, documents: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut parts = seeded_parts(config, &mut rng);
    parts.index = Some(seeded_index(usize::from(config.out_dim), documents, &mut rng));
    match parts.to_bytes() {
        Ok(blob) => blob,
        // A test fixture given an invalid shape: the test is wrong, say so.
        #[allow(clippy::panic)]
        Err(e) => panic!("seeded blob of {config:?}: {e}"),
    }
}

/// Words of the [`seeded_texts`]: some of the firmware's queries' words (`queries.txt`), in
/// several scripts, so that hybrid search finds shared terms.
const LEXICON_WORDS: [&str; 24] = [
    "anux",
    "jawira",
    "wawanakax",
    "pampan",
    "warmix",
    "ch'uqi",
    "uta",
    "chachax",
    "thakhin",
    "quta",
    "wallpa",
    "plazan",
    "fiestan",
    "dogs",
    "snowy",
    "field",
    "psi",
    "pelota",
    "niño",
    "llama",
    "tunka",
    "kimsa",
    "野原",
    "🦙",
];

/// `documents` texts of 3 to 8 words drawn from `rng` among a fixed list of some of the firmware's
/// queries' words (`queries.txt`), in several scripts, so that hybrid search finds shared terms.
pub fn seeded_texts(documents: usize, rng: &mut SplitMix64) -> Vec<String> {
    let mut pick = |n: usize| usize::try_from(rng.next_u64() % n as u64).unwrap_or(0);
    (0..documents)
        .map(|_| {
            let words = 3 + pick(6);
            (0..words)
                .map(|_| LEXICON_WORDS.get(pick(LEXICON_WORDS.len())).copied().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The firmware's default blob: [`TINY`] with [`TINY_DOCUMENTS`] documents from [`SEED`], and
/// a lexicon of [`seeded_texts`] (weight 0.5, at most 16 terms per document), so that the
/// firmware's bit-exact tests cover hybrid search.
pub fn tiny_blob() -> Vec<u8> {
    let mut rng = SplitMix64::new(SEED);
    let mut parts = seeded_parts(TINY, &mut rng);
    let mut index = seeded_index(usize::from(TINY.out_dim), TINY_DOCUMENTS, &mut rng);
    let texts = seeded_texts(TINY_DOCUMENTS, &mut rng);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    index.lexical = Some(LexiconParts::from_texts(&TINY.tokenizer, &texts, 0.5, Some(16)));
    parts.index = Some(index);
    match parts.to_bytes() {
        Ok(blob) => blob,
        #[allow(clippy::panic)]
        Err(e) => panic!("seeded tiny blob: {e}"),
    }
}

/// The micro student when no trained export is given: [`MICRO`] with [`MICRO_DOCUMENTS`]
/// documents from [`SEED`].
pub fn micro_blob() -> Vec<u8> {
    seeded_blob(MICRO, MICRO_DOCUMENTS, SEED)
}

/// A blob around `payload` with a valid header and CRC, so that the checks after the CRC see it
/// (a payload over 4 GiB gets a wrong length, which the loader refuses).
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut blob = MAGIC.to_vec();
    blob.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    blob.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    blob.extend_from_slice(&crc32(payload).to_le_bytes());
    blob.extend_from_slice(payload);
    blob
}

/// Scratch memory on the heap for texts of up to a number of words.
pub struct OwnedScratch {
    features: Box<heapless::Vec<Feature, { OwnedScratch::MAX_FEATURES }>>,
    floats: Vec<f32>,
    int8s: Vec<i8>,
}

impl OwnedScratch {
    /// The feature buffer's capacity (at least [`Scratch::features_len`] for 32 words of the
    /// default tokenizer, 64 of [`MICRO`]'s).
    pub const MAX_FEATURES: usize = 8192;

    /// Buffers for `words` words of `config`.
    ///
    /// # Panics
    /// When `words` words need more than [`OwnedScratch::MAX_FEATURES`] features (a caller bug).
    pub fn new(config: &ModelConfig, words: usize) -> Self {
        let features = Scratch::features_len(config, words);
        assert!(features <= Self::MAX_FEATURES, "{words} words need {features} features");
        Self {
            features: Box::default(),
            floats: vec![0.0; Scratch::floats_len(config, words)],
            int8s: vec![0; Scratch::int8s_len(config, words)],
        }
    }

    /// The buffers as the runtime's [`Scratch`].
    pub fn scratch(&mut self) -> Scratch<'_> {
        self.features.clear();
        Scratch::new(self.features.as_mut_view(), &mut self.floats, &mut self.int8s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;

    #[test]
    fn the_generator_is_splitmix64() {
        // The reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        // The top 24 bits of the first output, 0xe220a8 = 14_819_496, over 2^23, minus 1.
        assert_eq!(SplitMix64::new(0).uniform(1.0), 6_430_888.0 / 8_388_608.0);
        assert_eq!(SplitMix64::new(0).uniform(0.5), 3_215_444.0 / 8_388_608.0);
    }

    /// The firmware's default blob is made, not committed, and the README's firmware numbers are
    /// measured on these two blobs: their bytes must be the same in every process, on every
    /// machine and in every version until a change to the generator, the writer or the format
    /// updates these pins (and the README) on purpose (format 2 added two empty provenance strings:
    /// +2 bytes; format 3 the index's lexicon: +1 byte without one, and the tiny blob has one; format 4 only
    /// its version).
    #[test]
    fn seeded_blobs_are_pinned() {
        let tiny = tiny_blob();
        assert_eq!((tiny.len(), crc32(&tiny)), (35_894, 0xe08d_4422));
        let model = Model::from_bytes(&tiny).unwrap();
        assert_eq!(*model.config(), TINY);
        assert_eq!(model.index().map(|i| i.len()), Some(TINY_DOCUMENTS));
        let micro = micro_blob();
        assert_eq!((micro.len(), crc32(&micro)), (1_879_225, 0x5e68_2f67));
    }

    /// The firmware's bit-exact tests cover hybrid search only if the tiny blob's lexicon changes
    /// rankings of its queries.
    #[test]
    fn the_tiny_lexicon_changes_rankings() {
        let blob = tiny_blob();
        let model = Model::from_bytes(&blob).unwrap();
        let index = model.index().unwrap();
        assert_eq!(index.lexical_weight(), Some(0.5));
        let mut scratch = OwnedScratch::new(&TINY, 32);
        let mut changed = 0;
        for text in [
            "Paya wawanakax pampan anatapxi",
            "Two dogs run across the snowy field.",
            "Quta patxan mä wallpa",
        ] {
            let embedding = model.encode(text, &mut scratch.scratch()).unwrap();
            let mut terms = crate::QueryTerms::new();
            model.terms(text, &mut scratch.scratch(), &mut terms).unwrap();
            let dense = index.search::<5>(&embedding, 5, crate::Scoring::Csls).unwrap();
            let query = crate::Query { embedding: &embedding, terms: Some(&terms) };
            let hybrid = index.search::<5>(query, 5, crate::Scoring::Csls).unwrap();
            changed += usize::from(dense.iter().map(|h| h.id).ne(hybrid.iter().map(|h| h.id)));
        }
        assert_eq!(changed, 3);
    }

    #[test]
    fn sealed_payloads_load_or_fail_after_the_crc() {
        let blob = tiny_blob();
        assert_eq!(seal(&blob[crate::HEADER_LEN..]), blob);
        assert_eq!(Model::from_bytes(&seal(b"")).err(), Some(crate::LoadError::Decode));
    }
}
