//! Shared by the runtime's integration tests: random students, an f64 reference encoder, and
//! owned scratch buffers.
#![allow(dead_code)] // each test file uses part of it

use otkd_runtime::{
    BlobParts, DenseParts, Feature, IndexParts, ModelConfig, NormParts, Scratch, TokenizerConfig, tokenize,
};

/// SplitMix64: a tiny deterministic generator for test weights.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform() * scale).collect()
    }
}

/// A small student with every branch active.
pub fn small_config() -> ModelConfig {
    ModelConfig {
        tokenizer: TokenizerConfig { buckets: 512, max_words: 16, ..TokenizerConfig::DEFAULT },
        dim: 32,
        layers: 2,
        heads: 4,
        ffn: 64,
        out_dim: 48,
        layer_norm_eps: 1e-5,
    }
}

/// The micro preset of the host (`host/src/student.rs`), projecting to 384.
pub fn micro_config() -> ModelConfig {
    ModelConfig {
        tokenizer: TokenizerConfig { buckets: 5632, ..TokenizerConfig::DEFAULT },
        dim: 192,
        layers: 1,
        heads: 4,
        ffn: 384,
        out_dim: 384,
        layer_norm_eps: 1e-5,
    }
}

/// Random weights of roughly the scales a trained student has (unit-variance layer outputs), with
/// the residual branches active.
pub fn random_parts(config: ModelConfig, seed: u64) -> BlobParts {
    let mut rng = Rng::new(seed);
    let mut parts = BlobParts::new(config);
    // sqrt(3) * U(-1, 1) has unit variance.
    let dense = |rng: &mut Rng, d: &mut DenseParts| {
        let inputs = d.weight.len() / d.bias.len();
        d.weight = rng.vec(d.weight.len(), 3f32.sqrt() / (inputs as f32).sqrt());
        d.bias = rng.vec(d.bias.len(), 0.05);
    };
    let norm = |rng: &mut Rng, n: &mut NormParts| {
        n.weight = n.weight.iter().map(|_| 1.0 + 0.2 * rng.uniform()).collect();
        n.bias = rng.vec(n.bias.len(), 0.05);
    };
    parts.embeddings = rng.vec(parts.embeddings.len(), 0.3);
    parts.positions = rng.vec(parts.positions.len(), 0.1);
    for layer in &mut parts.layers {
        norm(&mut rng, &mut layer.attention_norm);
        for d in [&mut layer.query, &mut layer.key, &mut layer.value, &mut layer.attention_out] {
            dense(&mut rng, d);
        }
        norm(&mut rng, &mut layer.ffn_norm);
        dense(&mut rng, &mut layer.ffn_in);
        dense(&mut rng, &mut layer.ffn_out);
    }
    dense(&mut rng, &mut parts.projection);
    parts
}

/// An index of `docs` random unit vectors with ids `1000 + i` and hubness terms in [0, 0.5).
pub fn random_index(out_dim: usize, docs: usize, seed: u64) -> IndexParts {
    let mut rng = Rng::new(seed);
    let mut embeddings = rng.vec(docs * out_dim, 1.0);
    for row in embeddings.chunks_mut(out_dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    IndexParts {
        ids: (0..docs as u32).map(|i| 1000 + i).collect(),
        embeddings,
        hubness: (0..docs).map(|_| 0.25 + 0.25 * rng.uniform()).collect(),
    }
}

/// The student's forward pass in f64 on the unquantized weights (the host's `Student::forward`
/// for one sentence): `None` for a text without words.
pub fn reference_encode(parts: &BlobParts, text: &str) -> Option<Vec<f64>> {
    let c = &parts.config;
    let (d, heads, ffn, out) = (c.dim as usize, c.heads as usize, c.ffn as usize, c.out_dim as usize);
    let head_dim = d / heads;
    let mut features = heapless::Vec::<Feature, 4096>::new();
    let words = tokenize(&c.tokenizer, text, features.as_mut_view()).words as usize;
    if words == 0 {
        return None;
    }
    let mut x = vec![vec![0f64; d]; words];
    for f in &features {
        let row = &parts.embeddings[f.id as usize * d..][..d];
        x[f.word as usize].iter_mut().zip(row).for_each(|(x, &e)| *x += f64::from(e));
    }
    for (w, row) in x.iter_mut().enumerate() {
        row.iter_mut().zip(&parts.positions[w * d..][..d]).for_each(|(x, &p)| *x += f64::from(p));
    }
    let layer_norm = |row: &[f64], n: &NormParts| -> Vec<f64> {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + f64::from(c.layer_norm_eps)).sqrt();
        row.iter()
            .zip(n.weight.iter().zip(&n.bias))
            .map(|(v, (&w, &b))| (v - mean) * inv * f64::from(w) + f64::from(b))
            .collect()
    };
    let dense = |row: &[f64], p: &DenseParts| -> Vec<f64> {
        let outputs = p.bias.len();
        (0..outputs)
            .map(|o| {
                row.iter().enumerate().map(|(i, v)| v * f64::from(p.weight[i * outputs + o])).sum::<f64>()
                    + f64::from(p.bias[o])
            })
            .collect()
    };
    for layer in &parts.layers {
        let h: Vec<Vec<f64>> = x.iter().map(|r| layer_norm(r, &layer.attention_norm)).collect();
        let q: Vec<Vec<f64>> = h.iter().map(|r| dense(r, &layer.query)).collect();
        let k: Vec<Vec<f64>> = h.iter().map(|r| dense(r, &layer.key)).collect();
        let v: Vec<Vec<f64>> = h.iter().map(|r| dense(r, &layer.value)).collect();
        for i in 0..words {
            let mut context = vec![0f64; d];
            for head in 0..heads {
                let span = head * head_dim..(head + 1) * head_dim;
                let scores: Vec<f64> = (0..words)
                    .map(|j| {
                        q[i][span.clone()].iter().zip(&k[j][span.clone()]).map(|(a, b)| a * b).sum::<f64>()
                            / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for (j, e) in exps.iter().enumerate() {
                    for c in span.clone() {
                        context[c] += e / total * v[j][c];
                    }
                }
            }
            let update = dense(&context, &layer.attention_out);
            x[i].iter_mut().zip(update).for_each(|(x, u)| *x += u);
        }
        for row in &mut x {
            let hidden: Vec<f64> = dense(&layer_norm(row, &layer.ffn_norm), &layer.ffn_in)
                .into_iter()
                .map(|h| 0.5 * h * (1.0 + libm::erf(h / 2f64.sqrt())))
                .collect();
            assert_eq!(hidden.len(), ffn);
            row.iter_mut().zip(dense(&hidden, &layer.ffn_out)).for_each(|(x, u)| *x += u);
        }
    }
    let mut mean = vec![0f64; out];
    for row in &x {
        mean.iter_mut().zip(dense(row, &parts.projection)).for_each(|(m, p)| *m += p / words as f64);
    }
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    Some(mean.into_iter().map(|v| v / norm).collect())
}

/// Cosine of an int8 embedding and an f64 vector.
pub fn cosine(embedding: &otkd_runtime::Embedding, reference: &[f64]) -> f64 {
    let e: Vec<f64> = embedding.to_f32().map(f64::from).collect();
    let dot: f64 = e.iter().zip(reference).map(|(a, b)| a * b).sum();
    dot / (e.iter().map(|v| v * v).sum::<f64>().sqrt() * reference.iter().map(|v| v * v).sum::<f64>().sqrt())
}

/// Owned scratch buffers sized for `words` words.
pub struct OwnedScratch {
    features: Box<heapless::Vec<Feature, 4096>>,
    floats: Vec<f32>,
    int8s: Vec<i8>,
}

impl OwnedScratch {
    pub fn new(config: &ModelConfig, words: usize) -> Self {
        assert!(Scratch::features_len(config, words) <= 4096);
        Self {
            features: Box::default(),
            floats: vec![0.0; Scratch::floats_len(config, words)],
            int8s: vec![0; Scratch::int8s_len(config, words)],
        }
    }

    pub fn scratch(&mut self) -> Scratch<'_> {
        Scratch::new(self.features.as_mut_view(), &mut self.floats, &mut self.int8s)
    }
}

/// Texts in several scripts and lengths.
pub const TEXTS: &[&str] = &[
    "a dog",
    "A brown dog runs across the green field.",
    "Jaʼa, qhana!",
    "Ñande rekove ha'e peteĩ mba'e porã",
    "Muž v modrém tričku hraje na kytaru.",
    "Dos niños juegan al fútbol en la playa mientras su madre los mira",
    "一只狗在草地上奔跑",
    "x",
    "Allinllachu? Imaynalla kachkanki, wawqi? Noqaqa allinmi kachkani, añay.",
    "the the the the the the the the the the the the the the",
];
