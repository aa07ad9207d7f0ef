//! The frozen English teacher: all-MiniLM-L6-v2 (BERT, 6 layers, width 384) on candle.
//!
//! Loads any directory in Hugging Face layout (`config.json`, `model.safetensors`, `tokenizer.json`).
//! A batch is packed, not padded: the tokens of all its sentences are one `[tokens, hidden]`
//! matrix, so every per-token layer (the matmuls, LayerNorm, GELU: nearly all the work) runs
//! once over the whole batch with no pad positions, and attention runs per run of equal-length
//! sentences (sorted by length, a batch holds a few such runs), so no attention mask is needed.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

/// Longest input the teacher sees, in WordPiece tokens including `[CLS]` and `[SEP]`.
/// `tokenizer.json` fixes 128; the model card's `max_seq_length` is 256.
pub const MAX_TOKENS: usize = 256;

/// Errors while loading or running the teacher; each names the file or input it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// The teacher directory does not exist.
    #[error("teacher directory {0} does not exist (pass --teacher DIR or set OTKD_TEACHER)")]
    MissingDir(PathBuf),
    /// A file the teacher needs is missing from its directory.
    #[error(
        "teacher file {0} is missing (a Hugging Face model directory needs config.json, model.safetensors, tokenizer.json)"
    )]
    MissingFile(PathBuf),
    /// `config.json` could not be read or does not describe a BERT model otkd can run.
    #[error("teacher config {path}: {reason}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `tokenizer.json` could not be loaded.
    #[error("teacher tokenizer {path}: {reason}")]
    BadTokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizers library reported.
        reason: String,
    },
    /// The weights could not be loaded (missing tensor, wrong shape, corrupt file).
    #[error("teacher weights {path}: {source}")]
    BadWeights {
        /// The safetensors file.
        path: PathBuf,
        /// The underlying error.
        source: candle_core::Error,
    },
    /// Tokenizing an input failed.
    #[error("tokenizing sentence {index}: {reason}")]
    Tokenize {
        /// Index of the sentence in the input list.
        index: usize,
        /// What the tokenizers library reported.
        reason: String,
    },
    /// A tensor operation failed during encoding.
    #[error("teacher forward pass: {0}")]
    Forward(#[from] candle_core::Error),
    /// The sentence-transformers description (`modules.json`, the pooling config) is missing,
    /// unreadable or asks for what otkd cannot compute exactly.
    #[error("teacher {path}: {reason}")]
    BadPooling {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// How token states become a sentence embedding (sentence-transformers' `Pooling` module); the
/// embedding is then L2-normalised, the space otkd distils into and retrieves in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean of every token's state (`[CLS]` and `[SEP]` included, as sentence-transformers).
    Mean,
    /// The `[CLS]` token's state.
    Cls,
    /// The element-wise maximum over the tokens.
    Max,
}

impl Pooling {
    /// Reads the pooling of a sentence-transformers directory: `modules.json` names a
    /// `sentence_transformers.models.Pooling` module whose `config.json` sets exactly one of
    /// `pooling_mode_mean_tokens`, `pooling_mode_cls_token`, `pooling_mode_max_tokens`. Anything
    /// else (no `modules.json`, another pooling mode, modules otkd does not run such as `Dense`)
    /// is refused by name rather than run differently.
    pub fn read(dir: &Path) -> Result<Self, TeacherError> {
        let modules_path = dir.join("modules.json");
        let bad = |path: &Path, reason: String| TeacherError::BadPooling { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(&modules_path).map_err(|e| {
            bad(
                &modules_path,
                format!("{e}; otkd reads the pooling of a sentence-transformers directory from it and will not guess"),
            )
        })?;
        #[derive(Deserialize)]
        struct Module {
            path: String,
            #[serde(rename = "type")]
            kind: String,
        }
        let modules: Vec<Module> =
            serde_json::from_str(&text).map_err(|e| bad(&modules_path, e.to_string()))?;
        let mut pooling_dir = None;
        for module in &modules {
            match module.kind.as_str() {
                "sentence_transformers.models.Transformer" | "sentence_transformers.models.Normalize" => {}
                "sentence_transformers.models.Pooling" => pooling_dir = Some(dir.join(&module.path)),
                other => {
                    return Err(bad(
                        &modules_path,
                        format!(
                            "module {other:?} is not supported (otkd runs Transformer, Pooling and Normalize)"
                        ),
                    ));
                }
            }
        }
        let pooling_path = pooling_dir
            .ok_or_else(|| bad(&modules_path, "no sentence_transformers.models.Pooling module".into()))?
            .join("config.json");
        let text = std::fs::read_to_string(&pooling_path).map_err(|e| bad(&pooling_path, e.to_string()))?;
        let config: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| bad(&pooling_path, e.to_string()))?;
        let on: Vec<&str> = config
            .iter()
            .filter(|(k, v)| k.starts_with("pooling_mode_") && v.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
            .collect();
        match on.as_slice() {
            ["pooling_mode_mean_tokens"] => Ok(Pooling::Mean),
            ["pooling_mode_cls_token"] => Ok(Pooling::Cls),
            ["pooling_mode_max_tokens"] => Ok(Pooling::Max),
            [] => Err(bad(&pooling_path, "no pooling mode is on".into())),
            modes => Err(bad(
                &pooling_path,
                format!(
                    "pooling {} is not supported (otkd runs exactly one of mean_tokens, cls_token, max_tokens)",
                    modes.join(" + ")
                ),
            )),
        }
    }

    /// The pooled (not yet normalised) embedding of one sentence's `[tokens, dim]` states.
    fn pool(self, states: &[f32], dim: usize) -> Vec<f64> {
        let mut pooled = vec![0f64; dim];
        let mut tokens = states.chunks_exact(dim);
        match self {
            Pooling::Mean => {
                for token in tokens {
                    pooled.iter_mut().zip(token).for_each(|(p, &t)| *p += f64::from(t));
                }
            }
            Pooling::Cls => {
                if let Some(first) = tokens.next() {
                    pooled.iter_mut().zip(first).for_each(|(p, &t)| *p = f64::from(t));
                }
            }
            Pooling::Max => {
                pooled.fill(f64::NEG_INFINITY);
                for token in tokens {
                    pooled.iter_mut().zip(token).for_each(|(p, &t)| *p = p.max(f64::from(t)));
                }
            }
        }
        pooled
    }
}

/// The subset of `config.json` the encoder needs.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// WordPiece vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Number of learned absolute positions.
    pub max_position_embeddings: usize,
    /// Number of token types (segment ids).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12 for MiniLM).
    pub layer_norm_eps: f64,
    /// Activation; only the exact (erf) GELU is supported.
    pub hidden_act: String,
    /// `bert` (the family otkd runs; others are refused).
    #[serde(default)]
    pub model_type: Option<String>,
    /// `absolute` (learned positions from 0, as BERT); XLM-R-style offsets are refused.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

/// A linear layer stored as `[in, out]` so a 2-D activation multiplies it without a transpose.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> candle_core::Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        Ok(Self { weight_t: weight.t()?.contiguous()?, bias: vb.get(out_dim, "bias")? })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps: eps as f32 })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// A LayerNorm that closes a sublayer: residual add and normalisation in one kernel.
fn residual_norm(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<otkd_kernels::AddLayerNorm> {
    let (weight, bias) = (vb.get(dim, "weight")?.to_vec1::<f32>()?, vb.get(dim, "bias")?.to_vec1::<f32>()?);
    otkd_kernels::AddLayerNorm::new(weight, bias, eps as f32).map_err(candle_core::Error::wrap)
}

struct Layer {
    /// Query, key and value in one `[hidden, 3 * hidden]` matmul; the query columns are
    /// pre-scaled by 1/sqrt(head_dim), so the scores need no extra pass.
    query_key_value: Dense,
    attention_out: Dense,
    /// `LN(attention_out + input)`.
    attention_norm: otkd_kernels::AddLayerNorm,
    intermediate: Dense,
    output: Dense,
    /// `LN(ffn_out + input)`.
    output_norm: otkd_kernels::AddLayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let attn = vb.pp("attention");
        let scale = 1.0 / ((h / c.num_attention_heads) as f64).sqrt();
        let query = Dense::load(attn.pp("self").pp("query"), h, h)?;
        let key = Dense::load(attn.pp("self").pp("key"), h, h)?;
        let value = Dense::load(attn.pp("self").pp("value"), h, h)?;
        let query_key_value = Dense {
            weight_t: Tensor::cat(&[&(query.weight_t * scale)?, &key.weight_t, &value.weight_t], 1)?,
            bias: Tensor::cat(&[&(query.bias * scale)?, &key.bias, &value.bias], 0)?,
        };
        Ok(Self {
            query_key_value,
            attention_out: Dense::load(attn.pp("output").pp("dense"), h, h)?,
            attention_norm: residual_norm(attn.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: Dense::load(vb.pp("intermediate").pp("dense"), h, c.intermediate_size)?,
            output: Dense::load(vb.pp("output").pp("dense"), c.intermediate_size, h)?,
            output_norm: residual_norm(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        })
    }

    /// `x`: `[tokens, hidden]`, the packed tokens of the sentences `runs` describe.
    fn forward(&self, x: &Tensor, runs: &[Run], heads: usize) -> candle_core::Result<Tensor> {
        let hidden = x.dim(1)?;
        let head_dim = hidden / heads;
        let qkv = self.query_key_value.forward(x)?;
        let contexts = runs
            .iter()
            .map(|run| {
                // [sentences, tokens, 3, heads, head_dim] -> [3, sentences, heads, tokens, head_dim]
                let qkv = qkv
                    .narrow(0, run.start, run.sentences * run.tokens)?
                    .reshape((run.sentences, run.tokens, 3, heads, head_dim))?
                    .permute((2, 0, 3, 1, 4))?
                    .contiguous()?;
                let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
                let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
                probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((run.sentences * run.tokens, hidden))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let context = if contexts.len() == 1 { contexts[0].clone() } else { Tensor::cat(&contexts, 0)? };
        let x = self
            .attention_norm
            .forward(&self.attention_out.forward(&context)?, x)
            .map_err(candle_core::Error::wrap)?;
        let pre_activation = x.matmul(&self.intermediate.weight_t)?;
        let activation = otkd_kernels::bias_gelu_erf(&pre_activation, &self.intermediate.bias)
            .map_err(candle_core::Error::wrap)?;
        let ffn = self.output.forward(&activation)?;
        self.output_norm.forward(&ffn, &x).map_err(candle_core::Error::wrap)
    }
}

/// Consecutive sentences of one length inside a packed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// Row of the run's first token.
    start: usize,
    /// Number of sentences.
    sentences: usize,
    /// Tokens per sentence.
    tokens: usize,
}

/// The runs of equal-length sentences of a packed batch, in order.
fn runs(ids: &[&[u32]]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut start = 0;
    for s in ids {
        match runs.last_mut() {
            Some(run) if run.tokens == s.len() => run.sentences += 1,
            _ => runs.push(Run { start, sentences: 1, tokens: s.len() }),
        }
        start += s.len();
    }
    runs
}

/// One tokenized sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeacherTokens {
    /// WordPiece ids, `[CLS]` first and `[SEP]` last.
    pub ids: Vec<u32>,
    /// The WordPiece strings of `ids`.
    pub tokens: Vec<String>,
}

/// Teacher outputs for a list of sentences, in input order.
#[derive(Clone, Debug)]
pub struct TeacherOutputs {
    /// Width of embeddings and token states (384).
    pub dim: usize,
    /// L2-normalised pooled sentence embeddings ([`Pooling`]), `[sentences, dim]` row-major.
    pub embeddings: Vec<f32>,
    /// Last-layer token states (including `[CLS]` and `[SEP]`), when asked for.
    pub token_states: Option<TokenStates>,
}

impl TeacherOutputs {
    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.embeddings.len() / self.dim.max(1)
    }

    /// Whether there is no sentence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sentence embedding of caption `line`.
    ///
    /// # Panics
    /// If `line >= self.len()` (lines come from the same caption file as these outputs).
    pub fn embedding(&self, line: usize) -> &[f32] {
        &self.embeddings[line * self.dim..(line + 1) * self.dim]
    }

    /// The embeddings of caption `lines`, concatenated: `[lines.len(), dim]` row-major.
    ///
    /// # Panics
    /// As [`TeacherOutputs::embedding`].
    pub fn embeddings_of(&self, lines: &[usize]) -> Vec<f32> {
        lines.iter().flat_map(|&line| self.embedding(line).iter().copied()).collect()
    }
}

/// Variable-length token states of many sentences, concatenated: in memory (fresh from
/// [`Teacher::encode`]) or on disk (a teacher cache entry, read a sentence at a time, so a corpus's
/// states, gigabytes at 200k sentences, are never all resident).
#[derive(Clone, Debug)]
pub struct TokenStates {
    /// `offsets[i]..offsets[i + 1]` are the rows of sentence `i`; `offsets.len() == sentences + 1`.
    pub offsets: Vec<usize>,
    /// `[total_tokens, dim]` row-major, stored as f16 (the values reach about ±6; f16 keeps ~3 digits).
    rows: Rows,
}

#[derive(Clone, Debug)]
enum Rows {
    Memory(Vec<half::f16>),
    File(Arc<StatesFile>),
}

/// The token states of a cache entry: little-endian f16 rows at `start` in `file`.
#[derive(Debug)]
struct StatesFile {
    file: File,
    start: u64,
}

impl TokenStates {
    /// Token states held in memory: `states` is `[offsets[last], dim]` row-major.
    pub fn new(offsets: Vec<usize>, states: Vec<half::f16>) -> Self {
        Self { offsets, rows: Rows::Memory(states) }
    }

    /// Token states read from `file` on demand: the rows, little-endian f16, start at byte
    /// `start`. The file must not change while these live (cache entries are replaced by
    /// rename, never rewritten in place, so an open entry keeps its contents).
    pub(crate) fn on_disk(offsets: Vec<usize>, file: File, start: u64) -> Self {
        Self { offsets, rows: Rows::File(Arc::new(StatesFile { file, start })) }
    }

    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there is no sentence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the rows are read from a cache entry on disk rather than held in memory.
    pub fn is_on_disk(&self) -> bool {
        matches!(self.rows, Rows::File(_))
    }

    /// The `[tokens, dim]` rows of sentence `i`: borrowed when in memory, read when on disk.
    ///
    /// # Panics
    /// If `i >= self.len()`, or if reading the cache entry fails (see [`TokenStates::read_sentence`]).
    pub fn sentence(&self, i: usize, dim: usize) -> Cow<'_, [half::f16]> {
        self.read_sentence(i, dim).unwrap_or_else(|e| {
            panic!("reading the token states of sentence {i} from the teacher cache: {e}")
        })
    }

    /// [`TokenStates::sentence`] with the error of a failed read returned.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn read_sentence(&self, i: usize, dim: usize) -> std::io::Result<Cow<'_, [half::f16]>> {
        let rows = self.offsets[i] * dim..self.offsets[i + 1] * dim;
        match &self.rows {
            Rows::Memory(states) => Ok(Cow::Borrowed(&states[rows])),
            Rows::File(f) => {
                let mut bytes = vec![0u8; rows.len() * 2];
                read_exact_at(&f.file, &mut bytes, f.start + rows.start as u64 * 2)?;
                Ok(Cow::Owned(
                    bytes
                        .chunks_exact(2)
                        .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                        .collect(),
                ))
            }
        }
    }
}

/// Reads `buf.len()` bytes at `pos` without moving a shared cursor (so clones may read at once).
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, pos)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], pos + done as u64)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

/// The frozen English teacher.
pub struct Teacher {
    tokenizer: Tokenizer,
    pooling: Pooling,
    config: BertConfig,
    word_embeddings: candle_nn::Embedding,
    position_embeddings: Tensor,
    token_type_embedding: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    device: Device,
    dir: PathBuf,
}

impl Teacher {
    /// Loads the teacher from a Hugging Face model directory.
    pub fn load(dir: &Path) -> Result<Self, TeacherError> {
        if !dir.is_dir() {
            return Err(TeacherError::MissingDir(dir.to_path_buf()));
        }
        let file = |name: &str| -> Result<PathBuf, TeacherError> {
            let path = dir.join(name);
            if path.is_file() { Ok(path) } else { Err(TeacherError::MissingFile(path)) }
        };
        let config_path = file("config.json")?;
        let weights_path = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;

        let bad_config = |reason: String| TeacherError::BadConfig { path: config_path.clone(), reason };
        let text = std::fs::read_to_string(&config_path).map_err(|e| bad_config(e.to_string()))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| bad_config(e.to_string()))?;
        if config.model_type.as_deref().is_some_and(|t| t != "bert") {
            return Err(bad_config(format!(
                "model_type {:?} is not supported (otkd runs the BERT family)",
                config.model_type.as_deref().unwrap_or_default()
            )));
        }
        if config.position_embedding_type.as_deref().is_some_and(|t| t != "absolute") {
            return Err(bad_config(format!(
                "position_embedding_type {:?} is not supported (only absolute positions from 0)",
                config.position_embedding_type.as_deref().unwrap_or_default()
            )));
        }
        let pooling = Pooling::read(dir)?;
        if config.hidden_act != "gelu" {
            return Err(bad_config(format!(
                "hidden_act {:?} is not supported (only \"gelu\", erf)",
                config.hidden_act
            )));
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(bad_config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            TeacherError::BadTokenizer { path: tokenizer_path.clone(), reason: e.to_string() }
        })?;
        // tokenizer.json pads and truncates at 128; padding would leak into the mean pool.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| TeacherError::BadTokenizer {
                path: tokenizer_path.clone(),
                reason: e.to_string(),
            })?;

        let device = Device::Cpu;
        let bad_weights = |source| TeacherError::BadWeights { path: weights_path.clone(), source };
        // SAFETY: the file is mapped read-only and not modified while the teacher lives
        // (the model directory is treated as immutable input).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, &device) }
            .map_err(bad_weights)?;
        let load = || -> candle_core::Result<_> {
            let h = config.hidden_size;
            let emb = vb.pp("embeddings");
            let word = emb.pp("word_embeddings").get((config.vocab_size, h), "weight")?;
            let position_embeddings =
                emb.pp("position_embeddings").get((config.max_position_embeddings, h), "weight")?;
            let token_type_embedding =
                emb.pp("token_type_embeddings").get((config.type_vocab_size, h), "weight")?.get(0)?;
            let embedding_norm = Norm::load(emb.pp("LayerNorm"), h, config.layer_norm_eps)?;
            let layers = (0..config.num_hidden_layers)
                .map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i), &config))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok((
                candle_nn::Embedding::new(word, h),
                position_embeddings,
                token_type_embedding,
                embedding_norm,
                layers,
            ))
        };
        let (word_embeddings, position_embeddings, token_type_embedding, embedding_norm, layers) =
            load().map_err(bad_weights)?;
        Ok(Self {
            tokenizer,
            pooling,
            config,
            word_embeddings,
            position_embeddings,
            token_type_embedding,
            embedding_norm,
            layers,
            device,
            dir: dir.to_path_buf(),
        })
    }

    /// The directory the teacher was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How token states become its sentence embedding.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Width of the teacher's states and embeddings.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// WordPiece-tokenizes sentences (`[CLS] … [SEP]`, truncated at [`MAX_TOKENS`]).
    pub fn tokenize<S: AsRef<str> + Sync>(
        &self,
        sentences: &[S],
    ) -> Result<Vec<TeacherTokens>, TeacherError> {
        use rayon::prelude::*;
        sentences
            .par_iter()
            .enumerate()
            .map(|(index, s)| {
                let enc = self.wordpiece(index, s.as_ref())?;
                Ok(TeacherTokens { ids: enc.get_ids().to_vec(), tokens: enc.get_tokens().to_vec() })
            })
            .collect()
    }

    /// Last-layer states of a batch of sentences, packed: `[total tokens, dim]`, the rows of
    /// sentence 0, then of sentence 1, and so on. Any lengths; sentences of equal length next to
    /// each other share their attention matmuls, so callers sort by length. Every sentence needs
    /// at least one token (the tokenizer always adds `[CLS]` and `[SEP]`).
    pub fn forward_packed(&self, ids: &[&[u32]]) -> Result<Tensor, TeacherError> {
        let flat: Vec<u32> = ids.iter().flat_map(|s| s.iter().copied()).collect();
        let positions: Vec<u32> = ids.iter().flat_map(|s| 0..s.len() as u32).collect();
        let total = flat.len();
        let ids_tensor = Tensor::from_vec(flat, total, &self.device)?;
        let positions = Tensor::from_vec(positions, total, &self.device)?;
        let x = self
            .word_embeddings
            .forward(&ids_tensor)?
            .add(&self.position_embeddings.index_select(&positions, 0)?)?
            .broadcast_add(&self.token_type_embedding)?;
        let mut x = self.embedding_norm.forward(&x)?;
        let runs = runs(ids);
        for layer in &self.layers {
            x = layer.forward(&x, &runs, self.config.num_attention_heads)?;
        }
        Ok(x)
    }

    /// The WordPiece ids of sentences (as [`Teacher::tokenize`], without the token strings).
    pub fn token_ids<S: AsRef<str> + Sync>(&self, sentences: &[S]) -> Result<Vec<Vec<u32>>, TeacherError> {
        use rayon::prelude::*;
        sentences
            .par_iter()
            .enumerate()
            .map(|(index, s)| Ok(self.wordpiece(index, s.as_ref())?.get_ids().to_vec()))
            .collect()
    }

    /// The WordPiece encoding of sentence `index` of a list (the index names it in errors).
    fn wordpiece(&self, index: usize, sentence: &str) -> Result<tokenizers::Encoding, TeacherError> {
        self.tokenizer
            .encode(sentence, true)
            .map_err(|e| TeacherError::Tokenize { index, reason: e.to_string() })
    }

    /// Encodes sentences in packed batches of `batch_size` sentences of similar length.
    /// `progress` is called with the number of sentences finished after each batch.
    pub fn encode<S: AsRef<str> + Sync>(
        &self,
        sentences: &[S],
        batch_size: usize,
        keep_token_states: bool,
        mut progress: impl FnMut(usize),
    ) -> Result<TeacherOutputs, TeacherError> {
        let ids = self.token_ids(sentences)?;
        let ids: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.encode_ids(&ids, batch_size, keep_token_states, &mut progress)
    }

    /// [`Teacher::encode`] for already tokenized sentences.
    pub fn encode_ids(
        &self,
        ids: &[&[u32]],
        batch_size: usize,
        keep_token_states: bool,
        progress: &mut dyn FnMut(usize),
    ) -> Result<TeacherOutputs, TeacherError> {
        let dim = self.dim();
        let n = ids.len();
        let mut offsets = vec![0usize; n + 1];
        for (i, s) in ids.iter().enumerate() {
            offsets[i + 1] = offsets[i] + s.len();
        }
        let mut states = if keep_token_states { vec![half::f16::ZERO; offsets[n] * dim] } else { Vec::new() };
        let embeddings = self.encode_each(ids, batch_size, progress, |i, sentence| {
            if keep_token_states {
                let dst = &mut states[offsets[i] * dim..offsets[i + 1] * dim];
                for (d, s) in dst.iter_mut().zip(sentence) {
                    *d = half::f16::from_f32(*s);
                }
            }
            Ok::<(), TeacherError>(())
        })?;
        let token_states = keep_token_states.then(|| TokenStates::new(offsets, states));
        Ok(TeacherOutputs { dim, embeddings, token_states })
    }

    /// Encodes tokenized sentences batch by batch and returns their embeddings (`[sentences,
    /// dim]`, in input order). Each sentence's last-layer states (`[tokens, dim]`, f32) go to
    /// `sink` with the sentence's index as its batch finishes, not in input order (batches group
    /// sentences of similar length), and are not kept: the caller stores what it needs, so the
    /// states of a corpus need not be in memory at once.
    pub(crate) fn encode_each<E: From<TeacherError>>(
        &self,
        ids: &[&[u32]],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
        mut sink: impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<Vec<f32>, E> {
        let dim = self.dim();
        let n = ids.len();
        let mut embeddings = vec![0f32; n * dim];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (ids[i].len(), i));
        let mut done = 0;
        for batch in order.chunks(batch_size.max(1)) {
            let batch_ids: Vec<&[u32]> = batch.iter().map(|&i| ids[i]).collect();
            let hidden: Vec<f32> = self
                .forward_packed(&batch_ids)?
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(TeacherError::from)?;
            let mut row = 0;
            for &i in batch {
                let len = ids[i].len();
                let sentence = &hidden[row * dim..(row + len) * dim];
                row += len;
                // Pooled, then L2-normalised, in f64.
                let pooled = self.pooling.pool(sentence, dim);
                let norm = pooled.iter().map(|p| p * p).sum::<f64>().sqrt();
                let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
                for (e, p) in embeddings[i * dim..(i + 1) * dim].iter_mut().zip(&pooled) {
                    *e = (p * scale) as f32;
                }
                sink(i, sentence)?;
            }
            done += batch.len();
            progress(done);
        }
        Ok(embeddings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_a_packed_batch_at_every_length_change() {
        let (a, b, c) = ([1u32, 2, 3], [4u32, 5, 6], [7u32, 8]);
        let batch: [&[u32]; 4] = [&a, &b, &c, &a];
        assert_eq!(
            runs(&batch),
            vec![
                Run { start: 0, sentences: 2, tokens: 3 },
                Run { start: 6, sentences: 1, tokens: 2 },
                Run { start: 8, sentences: 1, tokens: 3 },
            ]
        );
        assert!(runs(&[]).is_empty());
    }
}
