//! The student encoder, trained on the host with candle.
//!
//! Input is the runtime tokenizer's hashed features, so the device computes the same words:
//! word vector = sum of its feature embeddings (an embedding bag) + a learned position vector,
//! then pre-LayerNorm transformer layers and a projection to the teacher's width. One output row
//! per word ("token states", for the OT loss); the sentence embedding is their mean,
//! L2-normalised. Every operation is one the int8 runtime can do: gather, sum, mean, matmul, add,
//! layer norm, softmax, GELU.
//!
//! The residual branches and the positions start at zero, so a fresh student is linear in its
//! features: its sentence embedding is `normalise(counts(x) E P)`, a low-rank linear map of the
//! sentence's feature counts. [`Student::init_from_ridge`] sets `E P` to the reduced-rank ridge
//! fit of the teacher's embeddings, and training starts where the closed-form student ends.

use std::borrow::Cow;

use candle_core::{D, DType, Device, Tensor, Var};
use otkd_runtime::{Feature, TokenizeReport, TokenizerConfig, tokenize};
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

pub mod fused;
pub mod ridge;

/// Masked attention logits: finite, so gradients stay finite even for an all-padding row.
const MASKED_LOGIT: f64 = -1e4;
/// Sentences per batch when embedding many (evaluation, CSLS references, indexes).
pub const EMBED_BATCH: usize = 256;
/// LayerNorm epsilon of the student.
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// Named model sizes. Parameter budgets: `nano` <= 0.8 M (1 MiB of flash with a 1,000-document
/// index), `micro` <= 1.5 M (the device preset), `small` <= 8 M.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// <= 0.8 M parameters, for 1 MiB of flash and 32 KiB of RAM (nRF52840-class parts): 4608
    /// buckets x 128, 1 layer, 4 heads, FFN 256, 16 words, and an output of
    /// [`NANO_OUT_DIM`] = 128, a PCA projection of the teacher's space
    /// ([`crate::teacher::projection`]) in which documents are indexed (136 bytes each instead of
    /// 392). About 0.74 M parameters; the runtime's `ModelConfig::NANO`.
    ///
    /// Why 4608 buckets: at rank 128 the ridge start's val X -> en R@1 moves by noise between 4096
    /// and 5632 buckets (ay 0.896-0.897, qu 0.804-0.818, gn 0.936-0.947), and 4608 leaves the
    /// blob with 1,000 documents at 872 KiB, so the firmware (67 KiB) fits the same 1 MiB.
    Nano,
    /// <= 1.5 M parameters: 5632 buckets x 192, 1 layer, 4 heads, FFN 384 (about 1.46 M).
    ///
    /// Why this shape: the width is the rank of the student's linear path, and at this budget
    /// rank pays more than buckets. Ridge-initialised (step 0) val X -> en R@1, ay / cs:
    /// 8192 x 128 0.887 / 0.968, 5632 x 192 0.891 / 0.975, 4352 x 224 0.891 / 0.970.
    Micro,
    /// <= 8 M parameters: 32768 buckets x 192, 2 layers, 4 heads, FFN 768 (about 7.3 M).
    Small,
}

impl Preset {
    /// The architecture of this preset, projecting to `out_dim` (the teacher's width).
    ///
    /// `nano` projects to [`NANO_OUT_DIM`] (or the teacher's width, when that is narrower): its
    /// targets are the teacher's embeddings in a PCA projection ([`StudentConfig::projects`]).
    pub fn config(self, out_dim: usize) -> StudentConfig {
        let (buckets, dim, layers, heads, ffn) = match self {
            Preset::Nano => (4608, 128, 1, 4, 256),
            Preset::Micro => (5632, 192, 1, 4, 384),
            Preset::Small => (32768, 192, 2, 4, 768),
        };
        let (out_dim, max_words) = match self {
            Preset::Nano => (out_dim.min(NANO_OUT_DIM), NANO_MAX_WORDS),
            Preset::Micro | Preset::Small => (out_dim, TokenizerConfig::DEFAULT.max_words),
        };
        let tokenizer = TokenizerConfig { buckets, max_words, ..TokenizerConfig::DEFAULT };
        StudentConfig {
            tokenizer,
            dim,
            layers,
            heads,
            ffn,
            max_words: usize::from(tokenizer.max_words),
            out_dim,
        }
    }

    /// [`Preset::config`], validated and checked against the budget.
    pub fn validated_config(self, out_dim: usize) -> Result<StudentConfig, StudentConfigError> {
        let config = self.config(out_dim);
        config.validate()?;
        let parameters = config.parameters();
        if parameters > self.budget() {
            let fits = [Preset::Micro, Preset::Small]
                .into_iter()
                .find(|p| p.config(out_dim).parameters() <= p.budget());
            return Err(StudentConfigError::OverBudget {
                preset: self,
                parameters,
                budget: self.budget(),
                out_dim,
                fits,
            });
        }
        Ok(config)
    }

    /// The largest parameter count this preset may have.
    pub fn budget(self) -> usize {
        match self {
            Preset::Nano => 800_000,
            Preset::Micro => 1_500_000,
            Preset::Small => 8_000_000,
        }
    }
}

/// The output width of the `nano` preset: the top 128 principal directions of the teacher's
/// sentence embeddings. Why 128: an index row costs `out_dim + 8` bytes, and the encoder's rank
/// is at most its width (128 here), so a wider output would add index bytes without rank.
pub const NANO_OUT_DIM: usize = 128;

/// Words the `nano` student reads (its tokenizer's `max_words`): a 32-word query needs 40 KiB of
/// scratch at this width (46 features of 8 bytes per word alone take 11.8 KiB), over the 32 KiB
/// of RAM the preset is for; 16 words need 21 KiB. 4-8% of the Multi30k test captions in ay, gn,
/// qu and cs have more words (or 16-char windows); they are cut, on the host as on the device.
pub const NANO_MAX_WORDS: u16 = 16;

/// The architecture of a student.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudentConfig {
    /// The runtime tokenizer's settings (its bucket count is the embedding table's height).
    pub tokenizer: TokenizerConfig,
    /// Width inside the encoder.
    pub dim: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Words per sentence (positions learned).
    pub max_words: usize,
    /// Output width: the teacher's (384), or a PCA projection of it (`nano`: 128).
    pub out_dim: usize,
}

/// Why a [`StudentConfig`] cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StudentConfigError {
    /// The tokenizer's settings are invalid.
    #[error("student config: {0}")]
    Tokenizer(otkd_runtime::ConfigError),
    /// A width or count is zero.
    #[error("student config: {0} must be > 0")]
    Zero(&'static str),
    /// The heads do not divide the width.
    #[error("student config: {heads} heads do not divide the width {dim}")]
    HeadsDoNotDivideWidth {
        /// Attention heads.
        heads: usize,
        /// Width.
        dim: usize,
    },
    /// The learned positions do not match the tokenizer's word cap.
    #[error("student config: {max_words} positions, but the tokenizer keeps up to {tokenizer} words")]
    PositionsMismatch {
        /// Positions of the student.
        max_words: usize,
        /// `max_words` of the tokenizer.
        tokenizer: usize,
    },
    /// The preset's architecture is over its parameter budget (its projection to a wide
    /// teacher's width counts: at 768, micro needs 1.54 M of its 1.5 M).
    #[error(
        "a {out_dim}-wide teacher makes the {preset:?} student {parameters} parameters, over its budget of {budget}; {}",
        fits.map_or("no preset fits a teacher this wide".to_string(), |p| format!("--preset {} fits", format!("{p:?}").to_lowercase()))
    )]
    OverBudget {
        /// The preset.
        preset: Preset,
        /// Parameters of the architecture.
        parameters: usize,
        /// The preset's budget.
        budget: usize,
        /// The teacher's width the student projects to.
        out_dim: usize,
        /// The smallest preset within its budget at that width.
        fits: Option<Preset>,
    },
}

impl StudentConfig {
    /// Checks the architecture: the tokenizer is valid, every width is > 0, the heads divide the
    /// width and there is one learned position per word the tokenizer keeps.
    pub fn validate(&self) -> Result<(), StudentConfigError> {
        self.tokenizer.validate().map_err(StudentConfigError::Tokenizer)?;
        for (name, value) in
            [("dim", self.dim), ("heads", self.heads), ("ffn", self.ffn), ("out_dim", self.out_dim)]
        {
            if value == 0 {
                return Err(StudentConfigError::Zero(name));
            }
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(StudentConfigError::HeadsDoNotDivideWidth { heads: self.heads, dim: self.dim });
        }
        let tokenizer = usize::from(self.tokenizer.max_words);
        if self.max_words != tokenizer {
            return Err(StudentConfigError::PositionsMismatch { max_words: self.max_words, tokenizer });
        }
        Ok(())
    }

    /// Whether a student of this architecture, distilled from a teacher `teacher_dim` wide, is
    /// trained into a PCA projection of the teacher's space (its output is narrower).
    pub fn projects(&self, teacher_dim: usize) -> bool {
        self.out_dim < teacher_dim
    }

    /// Number of trainable scalars of a student of this architecture.
    pub fn parameters(&self) -> usize {
        let (d, f) = (self.dim, self.ffn);
        let layer = 2 * (2 * d) + 4 * (d * d + d) + (d * f + f) + (f * d + d);
        self.tokenizer.buckets as usize * d
            + self.max_words * d
            + self.layers * layer
            + d * self.out_dim
            + self.out_dim
    }
}

/// One sentence through the runtime tokenizer.
#[derive(Clone, Debug, Default)]
pub struct TokenizedSentence {
    /// Features grouped by word.
    pub features: Vec<Feature>,
    /// Number of words.
    pub words: usize,
    /// What the tokenizer's caps dropped.
    pub report: TokenizeReport,
}

/// What the tokenizer's caps did to a list of sentences, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenizerTotals {
    /// Sentences tokenized.
    pub sentences: usize,
    /// Sentences that lost words or features to a cap.
    pub lossy_sentences: usize,
    /// Words dropped past `max_words`.
    pub words_dropped: u64,
    /// Features dropped past a cap.
    pub features_dropped: u64,
    /// Runs longer than a window, cut into overlapping windows (nothing lost).
    pub long_runs: u64,
}

impl TokenizerTotals {
    /// The totals of `sentences`.
    pub fn of(sentences: &[TokenizedSentence]) -> Self {
        Self::of_reports(&sentences.iter().map(|s| s.report).collect::<Vec<_>>())
    }

    /// The totals of the sentences with these reports.
    pub fn of_reports(reports: &[TokenizeReport]) -> Self {
        reports.iter().fold(Self::default(), |t, r| Self {
            sentences: t.sentences + 1,
            lossy_sentences: t.lossy_sentences + usize::from(!r.is_lossless()),
            words_dropped: t.words_dropped + u64::from(r.words_dropped),
            features_dropped: t.features_dropped + u64::from(r.features_dropped),
            long_runs: t.long_runs + u64::from(r.long_runs),
        })
    }
}

impl std::fmt::Display for TokenizerTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} sentences lost words or features to the tokenizer's caps ({} words, {} features \
             dropped); {} long runs cut into windows",
            self.lossy_sentences, self.sentences, self.words_dropped, self.features_dropped, self.long_runs
        )
    }
}

/// Tokenizes with the runtime tokenizer (the code the device runs).
pub fn tokenize_sentence(config: &TokenizerConfig, text: &str) -> TokenizedSentence {
    let mut out = heapless::Vec::<Feature, 4096>::new();
    let report = tokenize(config, text, out.as_mut_view());
    TokenizedSentence { features: out.to_vec(), words: usize::from(report.words), report }
}

/// Sentences read by index, tokenized: held tokenized (a slice of [`TokenizedSentence`]) or held
/// as text and tokenized when read ([`TokenizedTexts`]).
pub trait Sentences: Sync {
    /// Number of sentences.
    fn len(&self) -> usize;
    /// Whether there is no sentence.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sentence `i`, tokenized.
    ///
    /// # Panics
    /// If `i >= len()`.
    fn sentence(&self, i: usize) -> Cow<'_, TokenizedSentence>;
}

impl Sentences for [TokenizedSentence] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn sentence(&self, i: usize) -> Cow<'_, TokenizedSentence> {
        Cow::Borrowed(&self[i])
    }
}

/// Texts kept in one string and tokenized each time a sentence is read. A corpus held
/// tokenized costs 8 bytes a feature (2-4 KB a caption, half the training memory at 200k
/// pairs); its text costs a byte a character, and tokenizing a caption again takes microseconds,
/// against the milliseconds of the training step that reads it.
#[derive(Clone, Debug)]
pub struct TokenizedTexts {
    tokenizer: TokenizerConfig,
    text: String,
    /// Where each text ends in `text`.
    ends: Vec<usize>,
}

impl TokenizedTexts {
    /// `texts`, to be tokenized with `tokenizer`.
    pub fn new<'t>(tokenizer: TokenizerConfig, texts: impl IntoIterator<Item = &'t str>) -> Self {
        let (mut text, mut ends) = (String::new(), Vec::new());
        for t in texts {
            text.push_str(t);
            ends.push(text.len());
        }
        text.shrink_to_fit();
        Self { tokenizer, text, ends }
    }

    /// Text `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn text(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// What the tokenizer's caps do to the texts (tokenizing each once, in parallel).
    pub fn totals(&self) -> TokenizerTotals {
        use rayon::prelude::*;
        let reports: Vec<TokenizeReport> =
            (0..self.ends.len()).into_par_iter().map(|i| self.sentence(i).report).collect();
        TokenizerTotals::of_reports(&reports)
    }
}

impl Sentences for TokenizedTexts {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn sentence(&self, i: usize) -> Cow<'_, TokenizedSentence> {
        Cow::Owned(tokenize_sentence(&self.tokenizer, self.text(i)))
    }
}

/// The largest table [`Student::init_from_ridge`] fits directly: its `XᵀX` takes
/// `8 x 8192²` bytes = 512 MiB and factors in seconds.
pub const MAX_RIDGE_BUCKETS: usize = 8192;

/// Why [`Student::init_from_ridge`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The table is larger than [`MAX_RIDGE_BUCKETS`] and not a multiple of it.
    #[error("ridge initialisation: {buckets} buckets is neither <= {MAX_RIDGE_BUCKETS} nor a multiple of it")]
    BucketsNotFoldable {
        /// The table's bucket count.
        buckets: usize,
    },
    /// No training sentence to fit.
    #[error("ridge initialisation: no training sentences")]
    NoSentences,
    /// The ridge fit failed.
    #[error(transparent)]
    Ridge(#[from] crate::student::ridge::RidgeError),
    /// Setting the weights failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A sentence as the student's linear path sees it: how often each feature id (modulo
/// `buckets`) occurs, sorted by id, L2-normalised (empty for a sentence without features).
/// Only the direction matters: the sentence embedding is normalised at the end.
pub fn feature_counts(sentence: &TokenizedSentence, buckets: usize) -> Vec<(u32, f32)> {
    let counts =
        crate::student::ridge::count_ids(sentence.features.iter().map(|f| f.id % buckets as u32).collect());
    let norm = counts.iter().map(|&(_, c)| f64::from(c) * f64::from(c)).sum::<f64>().sqrt();
    counts.into_iter().map(|(id, c)| (id, (f64::from(c) / norm) as f32)).collect()
}

/// Ordered, named trainable tensors. The order is fixed, so norms, optimizer steps and files are
/// computed identically on every run.
#[derive(Default)]
pub struct ParamStore {
    names: Vec<String>,
    vars: Vec<Var>,
}

impl ParamStore {
    fn add(&mut self, name: String, tensor: Tensor) -> candle_core::Result<Var> {
        let var = Var::from_tensor(&tensor)?;
        self.names.push(name);
        self.vars.push(var.clone());
        Ok(var)
    }

    /// `(name, variable)` in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.names.iter().map(String::as_str).zip(&self.vars)
    }

    /// The variables in creation order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Total number of scalars.
    pub fn count(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }
}

struct Init<'a> {
    store: &'a mut ParamStore,
    rng: SplitMix64,
    /// Where the variables live (the values are drawn on the host either way).
    device: &'a Device,
}

impl Init<'_> {
    fn normal(&mut self, name: String, shape: (usize, usize), std: f64) -> candle_core::Result<Var> {
        let data = self.rng.normal_vec(shape.0 * shape.1, std);
        self.store.add(name, Tensor::from_vec(data, shape, self.device)?)
    }

    fn zeros(&mut self, name: String, shape: (usize, usize)) -> candle_core::Result<Var> {
        self.store.add(name, Tensor::zeros(shape, DType::F32, self.device)?)
    }

    fn constant(&mut self, name: String, len: usize, value: f32) -> candle_core::Result<Var> {
        self.store.add(name, Tensor::from_vec(vec![value; len], len, self.device)?)
    }

    fn dense(&mut self, name: &str, fan_in: usize, fan_out: usize) -> candle_core::Result<Dense> {
        let weight =
            self.normal(format!("{name}.weight"), (fan_in, fan_out), 1.0 / (fan_in as f64).sqrt())?;
        Ok(Dense { weight, bias: self.constant(format!("{name}.bias"), fan_out, 0.0)? })
    }

    /// A dense layer that outputs zeros until it is trained (the end of a residual branch).
    fn dense_zero(&mut self, name: &str, fan_in: usize, fan_out: usize) -> candle_core::Result<Dense> {
        let weight = self.zeros(format!("{name}.weight"), (fan_in, fan_out))?;
        Ok(Dense { weight, bias: self.constant(format!("{name}.bias"), fan_out, 0.0)? })
    }

    fn norm(&mut self, name: &str, dim: usize) -> candle_core::Result<Norm> {
        Ok(Norm {
            weight: self.constant(format!("{name}.weight"), dim, 1.0)?,
            bias: self.constant(format!("{name}.bias"), dim, 0.0)?,
        })
    }
}

/// `[in, out]` weight, so activations multiply it without a transpose.
struct Dense {
    weight: Var,
    bias: Var,
}

impl Dense {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(self.weight.as_tensor())?.broadcast_add(self.bias.as_tensor())
    }
}

struct Norm {
    weight: Var,
    bias: Var,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // The fused candle layer norm has no backward pass; this one is built from ops.
        candle_nn::ops::layer_norm_slow(x, self.weight.as_tensor(), self.bias.as_tensor(), LAYER_NORM_EPS)
    }
}

struct Layer {
    attention_norm: Norm,
    query: Dense,
    key: Dense,
    value: Dense,
    attention_out: Dense,
    ffn_norm: Norm,
    ffn_in: Dense,
    ffn_out: Dense,
}

impl Layer {
    /// `x`: `[batch, words, dim]`; `attention_bias`: `[batch, 1, 1, words]` (0 or a large negative).
    fn forward(&self, x: &Tensor, attention_bias: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
        let (batch, words, dim) = x.dims3()?;
        let head_dim = dim / heads;
        let flat = x.reshape((batch * words, dim))?;
        let h = self.attention_norm.forward(&flat)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, words, heads, head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = split((self.query.forward(&h)? / (head_dim as f64).sqrt())?)?;
        let k = split(self.key.forward(&h)?)?;
        let v = split(self.value.forward(&h)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(attention_bias)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch * words, dim))?;
        let flat = (flat + self.attention_out.forward(&context)?)?;
        let ffn = self.ffn_out.forward(
            &otkd_kernels::gelu_erf(&self.ffn_in.forward(&self.ffn_norm.forward(&flat)?)?)
                .map_err(candle_core::Error::wrap)?,
        )?;
        (flat + ffn)?.reshape((batch, words, dim))
    }
}

/// A batch of tokenized sentences as tensors, padded to its longest sentence.
pub struct StudentBatch {
    feature_ids: Tensor,
    feature_slots: Tensor,
    word_mask: Tensor,
    attention_bias: Tensor,
    /// Words per sentence (0 for a sentence with no word).
    pub lengths: Vec<usize>,
    /// Padded word count.
    pub words: usize,
}

impl StudentBatch {
    /// Packs sentences; words past `max_words` were already dropped by the tokenizer.
    pub fn new(sentences: &[&TokenizedSentence], max_words: usize) -> candle_core::Result<Self> {
        let batch = sentences.len();
        let words = sentences.iter().map(|s| s.words).max().unwrap_or(0).clamp(1, max_words);
        let total: usize = sentences.iter().map(|s| s.features.len()).sum();
        let (mut ids, mut slots) = (Vec::with_capacity(total), Vec::with_capacity(total));
        let mut mask = vec![0f32; batch * words];
        let mut lengths = Vec::with_capacity(batch);
        for (b, s) in sentences.iter().enumerate() {
            for f in &s.features {
                let w = usize::from(f.word);
                if w < words {
                    ids.push(f.id);
                    slots.push((b * words + w) as u32);
                }
            }
            let len = s.words.min(words);
            mask[b * words..b * words + len].iter_mut().for_each(|m| *m = 1.0);
            lengths.push(len);
        }
        let bias: Vec<f32> = mask.iter().map(|&m| if m > 0.0 { 0.0 } else { MASKED_LOGIT as f32 }).collect();
        let n = ids.len();
        let cpu = &Device::Cpu;
        Ok(Self {
            feature_ids: Tensor::from_vec(ids, n, cpu)?,
            feature_slots: Tensor::from_vec(slots, n, cpu)?,
            word_mask: Tensor::from_vec(mask, (batch, words), cpu)?,
            attention_bias: Tensor::from_vec(bias, (batch, 1, 1, words), cpu)?,
            lengths,
            words,
        })
    }

    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether the batch holds no sentence.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}

/// What the student computes for a batch.
pub struct StudentOutput {
    /// `[batch, words, out_dim]`, one row per word (padding rows are not meaningful).
    pub token_states: Tensor,
    /// `[batch, out_dim]`, L2-normalised mean of the real words' states (zero for an empty sentence).
    pub sentence: Tensor,
}

/// The student encoder.
pub struct Student {
    config: StudentConfig,
    params: ParamStore,
    embeddings: Var,
    positions: Var,
    layers: Vec<Layer>,
    projection: Dense,
}

impl Student {
    /// A freshly initialised student; the same seed gives the same weights.
    pub fn new(config: StudentConfig, seed: u64) -> candle_core::Result<Self> {
        Self::new_on(config, seed, &Device::Cpu)
    }

    /// [`Student::new`] with its weights on `device` (the same values on every device).
    pub fn new_on(config: StudentConfig, seed: u64, device: &Device) -> candle_core::Result<Self> {
        let mut params = ParamStore::default();
        let mut init = Init { store: &mut params, rng: SplitMix64::new(seed, "student-init"), device };
        let d = config.dim;
        let embeddings = init.normal("embeddings".into(), (config.tokenizer.buckets as usize, d), 0.1)?;
        let positions = init.zeros("positions".into(), (config.max_words, d))?;
        let layers = (0..config.layers)
            .map(|i| {
                let p = |s: &str| format!("layers.{i}.{s}");
                Ok(Layer {
                    attention_norm: init.norm(&p("attention_norm"), d)?,
                    query: init.dense(&p("query"), d, d)?,
                    key: init.dense(&p("key"), d, d)?,
                    value: init.dense(&p("value"), d, d)?,
                    attention_out: init.dense_zero(&p("attention_out"), d, d)?,
                    ffn_norm: init.norm(&p("ffn_norm"), d)?,
                    ffn_in: init.dense(&p("ffn_in"), d, config.ffn)?,
                    ffn_out: init.dense_zero(&p("ffn_out"), config.ffn, d)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let projection = init.dense("projection", d, config.out_dim)?;
        Ok(Self { config, params, embeddings, positions, layers, projection })
    }

    /// The architecture.
    pub fn config(&self) -> &StudentConfig {
        &self.config
    }

    /// Where the weights live.
    pub fn device(&self) -> &Device {
        self.embeddings.device()
    }

    /// The trainable tensors, in a fixed order.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Tokenizes with this student's tokenizer settings.
    pub fn tokenize(&self, text: &str) -> TokenizedSentence {
        tokenize_sentence(&self.config.tokenizer, text)
    }

    /// Runs the encoder on a batch.
    pub fn forward(&self, batch: &StudentBatch) -> candle_core::Result<StudentOutput> {
        let (n, words, d) = (batch.len(), batch.words, self.config.dim);
        let device = self.device();
        let gathered = self.embeddings.as_tensor().index_select(&batch.feature_ids.to_device(device)?, 0)?;
        let bags = Tensor::zeros((n * words, d), DType::F32, device)?
            .index_add(&batch.feature_slots.to_device(device)?, &gathered, 0)?
            .reshape((n, words, d))?;
        let mut x = bags.broadcast_add(&self.positions.as_tensor().narrow(0, 0, words)?)?;
        let attention_bias = batch.attention_bias.to_device(device)?;
        for layer in &self.layers {
            x = layer.forward(&x, &attention_bias, self.config.heads)?;
        }
        let token_states =
            self.projection.forward(&x.reshape((n * words, d))?)?.reshape((n, words, self.config.out_dim))?;
        let mask = batch.word_mask.to_device(device)?.unsqueeze(2)?;
        let counts: Vec<f32> = batch.lengths.iter().map(|&l| l.max(1) as f32).collect();
        let counts = Tensor::from_vec(counts, (n, 1), device)?;
        let mean = token_states.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&counts)?;
        // sqrt(|mean|² + 1e-12): finite gradient for an empty sentence's zero mean.
        let norm = (mean.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
        Ok(StudentOutput { sentence: mean.broadcast_div(&norm)?, token_states })
    }

    /// Sentence embeddings of many tokenized sentences, `[n, out_dim]` row-major, without gradients.
    ///
    /// On the CPU it runs the hand-written pass ([`fused::forward`]), which computes what
    /// [`Student::forward`] does without building a graph: evaluation embeds the dev set every
    /// few hundred steps and the test and CSLS reference sets at the end, and through candle's
    /// ops that took as long as the training of a short run. On a GPU it is [`Student::forward`].
    pub fn embed(&self, sentences: &[TokenizedSentence], batch_size: usize) -> candle_core::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(sentences.len() * self.config.out_dim);
        let refs: Vec<&TokenizedSentence> = sentences.iter().collect();
        if !self.device().is_cpu() {
            for chunk in refs.chunks(batch_size.max(1)) {
                let batch = StudentBatch::new(chunk, self.config.max_words)?;
                out.extend(self.forward(&batch)?.sentence.detach().flatten_all()?.to_vec1::<f32>()?);
            }
            return Ok(out);
        }
        let mut tape = fused::Tape::default();
        fused::with_params(self.params.vars(), |p| {
            for chunk in refs.chunks(batch_size.max(1)) {
                let batch = fused::PackedBatch::new(chunk, self.config.max_words);
                out.extend(fused::forward(&self.config, p, &batch, &mut tape, false).sentence);
            }
        })?;
        Ok(out)
    }

    /// Starts the student where the closed-form ridge student ends, at the student's own size:
    /// the embeddings and projection become the reduced-rank ridge fit
    /// ([`crate::student::ridge::fit_low_rank`], rank = the encoder width) from the feature counts of
    /// `sentences` to `targets(s)` (the teacher's embedding of sentence `s`'s English side).
    /// Everything else keeps its initial value; with the residual branches and positions still at
    /// zero, the sentence embeddings are then exactly the low-rank ridge student's.
    ///
    /// Tables above [`MAX_RIDGE_BUCKETS`] are fitted with the ids folded modulo it (the
    /// tokenizer's ids are hashes modulo the bucket count, so a bucket count that divides the
    /// table's sees the same features merged) and every bucket starts from its fold's row.
    ///
    /// The map is rescaled (`E a`, `P / a`, which leaves `E P` as it is) so that word vectors
    /// have unit mean square like the LayerNorm'd vectors the layers see.
    pub fn init_from_ridge<'a>(
        &self,
        sentences: &(impl Sentences + ?Sized),
        targets: impl Fn(usize) -> &'a [f32] + Sync,
        lambda: f64,
    ) -> Result<(), InitError> {
        use rayon::prelude::*;
        let buckets = self.config.tokenizer.buckets as usize;
        let fit_buckets = buckets.min(MAX_RIDGE_BUCKETS);
        if !buckets.is_multiple_of(fit_buckets) {
            return Err(InitError::BucketsNotFoldable { buckets });
        }
        if sentences.is_empty() {
            return Err(InitError::NoSentences);
        }
        let (d, out) = (self.config.dim, self.config.out_dim);
        let rows = crate::student::ridge::RowsFrom {
            len: sentences.len(),
            row: |s: usize| feature_counts(&sentences.sentence(s), fit_buckets),
        };
        let map = crate::student::ridge::fit_low_rank(&rows, fit_buckets, targets, out, lambda, d.min(out))?;
        let mut embeddings = vec![0f32; buckets * d];
        for (b, row) in embeddings.chunks_exact_mut(d).enumerate() {
            let fold = b % fit_buckets;
            row[..map.rank].copy_from_slice(&map.embeddings[fold * map.rank..(fold + 1) * map.rank]);
        }
        let mut projection = vec![0f32; d * out];
        projection[..map.rank * out].copy_from_slice(&map.projection);
        // Mean square of the word vectors over the sentences: each word's square in parallel (a
        // block of sentences at a time), summed in sentence order.
        let word_squares = |s: usize| -> Vec<f64> {
            let sentence = sentences.sentence(s);
            let (mut word, mut squares) = (vec![0f64; d], Vec::new());
            let mut features = sentence.features.iter().peekable();
            while let Some(f) = features.next() {
                let row = &embeddings[f.id as usize * d..(f.id as usize + 1) * d];
                word.iter_mut().zip(row).for_each(|(w, &e)| *w += f64::from(e));
                if features.peek().is_none_or(|next| next.word != f.word) {
                    squares.push(word.iter().map(|w| w * w).sum::<f64>() / d as f64);
                    word.iter_mut().for_each(|w| *w = 0.0);
                }
            }
            squares
        };
        let (mut square, mut words) = (0f64, 0usize);
        const SENTENCES_PER_BLOCK: usize = 8192;
        for first in (0..sentences.len()).step_by(SENTENCES_PER_BLOCK) {
            let block = first..(first + SENTENCES_PER_BLOCK).min(sentences.len());
            let squares: Vec<Vec<f64>> = block.into_par_iter().map(word_squares).collect();
            for q in squares.iter().flatten() {
                square += q;
                words += 1;
            }
        }
        let scale = if square > 0.0 { (words as f64 / square).sqrt() as f32 } else { 1.0 };
        embeddings.iter_mut().for_each(|e| *e *= scale);
        projection.iter_mut().for_each(|p| *p /= scale);
        let device = self.device();
        self.embeddings.set(&Tensor::from_vec(embeddings, (buckets, d), device)?)?;
        self.projection.weight.set(&Tensor::from_vec(projection, (d, out), device)?)?;
        self.projection.bias.set(&Tensor::zeros(out, DType::F32, device)?)?;
        Ok(())
    }

    /// Replaces every weight with the tensor of the same name (e.g. from a checkpoint).
    pub fn load_weights(&self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<(), String> {
        for (name, var) in self.params.iter() {
            let t = tensors.get(name).ok_or_else(|| format!("tensor {name:?} missing"))?;
            if t.dims() != var.dims() {
                return Err(format!(
                    "tensor {name:?} has shape {:?}, the model needs {:?}",
                    t.dims(),
                    var.dims()
                ));
            }
            let t = t.to_dtype(DType::F32).map_err(|e| e.to_string())?;
            let finite = t
                .flatten_all()
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(|e| e.to_string())?
                .iter()
                .all(|v| v.is_finite());
            if !finite {
                return Err(format!("tensor {name:?} holds NaN or Inf"));
            }
            var.set(&t.to_device(var.device()).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenized_texts_read_as_the_tokenizer_reads_each_text() {
        let tokenizer = TokenizerConfig { max_words: 3, ..TokenizerConfig::DEFAULT };
        let texts = ["Un perro corre.", "", "dos hombres juegan al fútbol", "ñandú"];
        let held = TokenizedTexts::new(tokenizer, texts);
        assert_eq!(held.len(), texts.len());
        let tokenized: Vec<TokenizedSentence> =
            texts.iter().map(|t| tokenize_sentence(&tokenizer, t)).collect();
        for (i, (text, want)) in texts.iter().zip(&tokenized).enumerate() {
            assert_eq!(held.text(i), *text);
            let got = held.sentence(i);
            assert_eq!((&got.features, got.words, got.report), (&want.features, want.words, want.report));
        }
        assert_eq!(held.totals(), TokenizerTotals::of(&tokenized));
        assert_eq!(held.totals().words_dropped, 2, "the third text lost two words to max_words 3");
        assert!(TokenizedTexts::new(tokenizer, []).is_empty());
    }

    #[test]
    fn a_wide_teacher_is_refused_by_micro_with_the_preset_that_fits() {
        assert!(Preset::Micro.validated_config(384).is_ok());
        let err = Preset::Micro.validated_config(768).unwrap_err().to_string();
        assert!(err.contains("768-wide teacher") && err.contains("--preset small fits"), "{err}");
        assert!(Preset::Small.validated_config(768).is_ok());
    }

    #[test]
    fn presets_fit_their_parameter_budgets() {
        for preset in [Preset::Micro, Preset::Small] {
            let config = preset.validated_config(384).unwrap();
            let student = Student::new(config, 0).unwrap();
            assert_eq!(config.parameters(), student.params().count());
            let count = student.params().count();
            assert!(count <= preset.budget(), "{preset:?}: {count} > {}", preset.budget());
            assert!(count > preset.budget() / 2, "{preset:?} wastes its budget: {count}");
        }
    }

    #[test]
    fn embeddings_are_unit_length_and_padding_does_not_change_them() {
        let student = Student::new(Preset::Micro.config(384), 1).unwrap();
        let short = student.tokenize("a dog");
        let long = student.tokenize("a brown dog runs across the green field");
        let alone = student.embed(std::slice::from_ref(&short), 8).unwrap();
        let padded = student.embed(&[short, long], 8).unwrap();
        let norm: f32 = alone.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        let diff = alone.iter().zip(&padded[..384]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "padding changed the embedding by {diff}");
    }

    #[test]
    fn embed_matches_the_candle_forward() {
        let student = Student::new(Preset::Micro.config(384), 2).unwrap();
        let texts = ["a dog", "", "a brown dog runs across the green field", "zwei Männer am Strand"];
        let sentences: Vec<_> = texts.iter().map(|t| student.tokenize(t)).collect();
        let refs: Vec<_> = sentences.iter().collect();
        let batch = StudentBatch::new(&refs, student.config().max_words).unwrap();
        let want: Vec<f32> =
            student.forward(&batch).unwrap().sentence.flatten_all().unwrap().to_vec1().unwrap();
        let got = student.embed(&sentences, 3).unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "embed differs from the candle forward by {diff}");
    }

    #[test]
    fn empty_sentence_gives_a_finite_zero_embedding() {
        let student = Student::new(Preset::Micro.config(384), 1).unwrap();
        let empty = student.tokenize("  ... ");
        assert_eq!(empty.words, 0);
        let emb = student.embed(&[empty], 4).unwrap();
        assert!(emb.iter().all(|v| v.is_finite() && v.abs() < 1e-3));
    }

    #[test]
    fn ridge_initialisation_reproduces_a_linear_teacher() {
        // Targets that are a rank-4 linear function of the feature counts: a student of width 8
        // initialised from the ridge fit reproduces them; a random one does not.
        let config = StudentConfig {
            tokenizer: TokenizerConfig { buckets: 512, ..TokenizerConfig::DEFAULT },
            dim: 8,
            layers: 1,
            heads: 2,
            ffn: 16,
            max_words: 16,
            out_dim: 12,
        };
        let mut rng = SplitMix64::new(9, "ridge-init-test");
        let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().collect();
        let vocabulary: Vec<String> =
            (0..40).map(|_| (0..3 + rng.below(5)).map(|_| letters[rng.below(26)]).collect()).collect();
        let sentences: Vec<TokenizedSentence> = (0..400)
            .map(|_| {
                let words: Vec<&str> =
                    (0..2 + rng.below(6)).map(|_| vocabulary[rng.below(40)].as_str()).collect();
                tokenize_sentence(&config.tokenizer, &words.join(" "))
            })
            .collect();
        let (a, b) = (rng.normal_vec(512 * 4, 1.0), rng.normal_vec(4 * 12, 1.0));
        let targets: Vec<f32> = sentences
            .iter()
            .flat_map(|s| {
                let counts = feature_counts(s, 512);
                let inner: Vec<f32> =
                    (0..4).map(|k| counts.iter().map(|&(id, c)| c * a[id as usize * 4 + k]).sum()).collect();
                let out: Vec<f32> = (0..12).map(|d| (0..4).map(|k| inner[k] * b[k * 12 + d]).sum()).collect();
                let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
                out.into_iter().map(move |v| v / norm)
            })
            .collect();
        let mean_cosine = |student: &Student| -> f32 {
            let emb = student.embed(&sentences, 64).unwrap();
            emb.chunks(12)
                .zip(targets.chunks(12))
                .map(|(e, t)| e.iter().zip(t).map(|(x, y)| x * y).sum::<f32>())
                .sum::<f32>()
                / sentences.len() as f32
        };
        let student = Student::new(config, 3).unwrap();
        let random = mean_cosine(&student);
        student.init_from_ridge(&sentences[..], |s| &targets[s * 12..(s + 1) * 12], 1e-4).unwrap();
        let fitted = mean_cosine(&student);
        let first_init =
            student.params().vars()[0].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        student.init_from_ridge(&sentences[..], |s| &targets[s * 12..(s + 1) * 12], 1e-4).unwrap();
        let second_init =
            student.params().vars()[0].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(first_init, second_init, "the ridge initialisation is deterministic");
        assert!(random < 0.5 && fitted > 0.98, "mean cosine: random {random}, ridge-initialised {fitted}");
        assert!(matches!(
            student.init_from_ridge(&[] as &[TokenizedSentence], |_| &targets[..12], 1e-4),
            Err(InitError::NoSentences)
        ));
    }

    #[test]
    fn invalid_architectures_are_named() {
        let good = Preset::Micro.config(384);
        let cases = [
            (StudentConfig { heads: 5, ..good }, "5 heads do not divide the width 192"),
            (StudentConfig { dim: 0, ..good }, "dim must be > 0"),
            (StudentConfig { max_words: 32, ..good }, "32 positions"),
            (
                StudentConfig { tokenizer: TokenizerConfig { buckets: 0, ..good.tokenizer }, ..good },
                "buckets must be > 0",
            ),
        ];
        for (config, message) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let a = Student::new(Preset::Micro.config(384), 5).unwrap();
        let b = Student::new(Preset::Micro.config(384), 5).unwrap();
        let c = Student::new(Preset::Micro.config(384), 6).unwrap();
        let first =
            |s: &Student| s.params().vars()[0].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(first(&a), first(&b));
        assert_ne!(first(&a), first(&c));
    }
}
