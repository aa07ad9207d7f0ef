//! Test fixtures (for this crate's tests and the workspace's end-to-end suite in `tests/`, as
//! candle's `test_utils`; hidden from the docs, small, and without dependencies of its own: a
//! feature with a self dev-dependency would build a second copy of the library for tests, which
//! lost the `cuda` feature in the GPU bundle's executables): a small synthetic bitext with teacher outputs, a
//! tiny training configuration, its prepared data and a fresh temporary run directory. Not part
//! of the library's interface.

use std::path::PathBuf;

use crate::data::{Bitext, Lang, Pair, Split};
use crate::distill::config::{Start, TrainConfig};
use crate::distill::data::TrainData;
use crate::distill::losses::{KdVariant, LossConfig, Method};
use crate::distill::optim::AdamWConfig;
use crate::rng::SplitMix64;
use crate::student::{Preset, StudentConfig};
use crate::teacher::{TeacherOutputs, TokenStates};
use otkd_runtime::TokenizerConfig;

/// The synthetic teacher's width.
pub const DIM: usize = 16;
const WORDS: [&str; 24] = [
    "dog", "cat", "man", "woman", "child", "ball", "red", "blue", "green", "runs", "sits", "jumps", "park",
    "street", "water", "grass", "big", "small", "old", "young", "bike", "car", "tree", "house",
];

/// English sentences of 3-6 words; language X spells each word backwards with a suffix (a
/// regular "translation" the student can learn from character n-grams). The teacher's token
/// states are fixed random word vectors and its embedding their normalised mean.
pub fn synthetic(pairs: usize, seed: u64, split: Split) -> (Bitext, TeacherOutputs) {
    let mut rng = SplitMix64::new(seed, "synthetic");
    let word_vectors = SplitMix64::new(99, "words").normal_vec(WORDS.len() * DIM, 1.0);
    let (mut list, mut embeddings, mut states, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), vec![0]);
    for line in 0..pairs {
        let words: Vec<usize> = (0..3 + rng.below(4)).map(|_| rng.below(WORDS.len())).collect();
        let en = words.iter().map(|&w| WORDS[w]).collect::<Vec<_>>().join(" ");
        let x = words
            .iter()
            .map(|&w| format!("{}ka", WORDS[w].chars().rev().collect::<String>()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut mean = [0f32; DIM];
        // [CLS], the words, [SEP]: the trainer drops the first and last row.
        let rows: Vec<&[f32]> = std::iter::once(&word_vectors[..DIM])
            .chain(words.iter().map(|&w| &word_vectors[w * DIM..(w + 1) * DIM]))
            .chain(std::iter::once(&word_vectors[..DIM]))
            .collect();
        for row in &rows {
            mean.iter_mut().zip(*row).for_each(|(m, v)| *m += v);
            states.extend(row.iter().map(|&v| half::f16::from_f32(v)));
        }
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
        embeddings.extend(mean.iter().map(|v| v / norm));
        offsets.push(offsets.last().unwrap() + rows.len());
        list.push(Pair { line, lang: Lang::AY, en, x });
    }
    let bitext = Bitext { split, lang: Lang::AY, pairs: list, skipped: vec![], total_lines: pairs };
    let outputs =
        TeacherOutputs { dim: DIM, embeddings, token_states: Some(TokenStates::new(offsets, states)) };
    (bitext, outputs)
}

/// A tiny student (16-word tokenizer, width 32, one layer) trained `steps` steps on 150 of the
/// synthetic training pairs, batch 16, from a random start.
pub fn config(method: Method, steps: usize) -> TrainConfig {
    let tokenizer = TokenizerConfig { buckets: 2048, max_words: 16, ..TokenizerConfig::DEFAULT };
    TrainConfig {
        method,
        lang: Lang::AY,
        preset: Preset::Micro,
        student: StudentConfig {
            tokenizer,
            dim: 32,
            layers: 1,
            heads: 2,
            ffn: 64,
            max_words: 16,
            out_dim: DIM,
        },
        steps,
        batch: 16,
        optimizer: AdamWConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 5,
            total_steps: steps,
            clip_norm: 1.0,
        },
        loss: LossConfig {
            method,
            kd_variant: KdVariant::Mse,
            temperature: 0.05,
            ot_kd_weight: 1.0,
            epsilon: 0.05,
            sinkhorn_iterations: 100,
            sinkhorn_tolerance: 1e-3,
            ot_unrolled: false,
            english_weight: 1.0,
        },
        seed: 3,
        pairs: Some(150),
        eval_every: 10,
        start: Start::Random,
        ridge_lambda: 0.1,
    }
}

/// The prepared synthetic material: 200 training, 60 dev and 60 test pairs.
pub fn data(config: &TrainConfig) -> TrainData {
    let (train, train_teacher) = synthetic(200, 1, Split::Train);
    let (dev, dev_teacher) = synthetic(60, 2, Split::Dev);
    let (test, test_teacher) = synthetic(60, 3, Split::Test);
    TrainData::prepare(config, &train, train_teacher, (&dev, &dev_teacher), (&test, &test_teacher)).unwrap()
}

/// An empty temporary run directory path, unique to this process and `name`.
pub fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otkd-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
