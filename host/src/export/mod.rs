//! From a trained student to what a device runs: the student's weights and a document index in
//! the runtime's blob format (quantized by the runtime's own writer), and the host side of the
//! runtime (the same `otkd-runtime` code the device runs) for `otkd query` and `otkd eval-blob`.
//!
//! The index holds the English documents of one split as the teacher embeds them (the space the
//! student was distilled into), one id per document (its caption line), and each document's CSLS
//! hubness term `r(d)`: its mean cosine to its [`CSLS_K`] nearest language-X reference queries,
//! encoded by the f32 student ([`crate::eval::csls_reference`]: val + a seeded sample of train,
//! never the index's own split when it is test).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use otkd_runtime::{
    BlobParts, DenseParts, Embedding, EncodeError, Feature, Hit, IndexParts, LayerParts, Model, ModelConfig,
    NormParts, Scoring, Scratch,
};

use crate::distill::checkpoint;
use crate::distill::trainer::{TrainConfig, files};
use crate::eval::CSLS_K;
use crate::eval::metrics::hubness;
use crate::student::{LAYER_NORM_EPS, Student, StudentConfig, TokenizedSentence};

/// The most documents `otkd eval-blob` ranks in full.
pub const MAX_RANKED_DOCUMENTS: usize = 4096;

/// Which checkpoint of a run to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Checkpoint {
    /// The checkpoint with the best dev R@1 (`checkpoint-best.safetensors`).
    Best,
    /// The last checkpoint (`checkpoint-last.safetensors`).
    Last,
}

/// A trained student read back from its run directory.
pub struct TrainedStudent {
    /// The run's configuration (`config.json`).
    pub config: TrainConfig,
    /// The student with the checkpoint's weights.
    pub student: Student,
    /// The checkpoint file read.
    pub path: PathBuf,
}

/// Reads `config.json` and a checkpoint of the run in `run`.
pub fn load_run(run: &Path, which: Checkpoint) -> Result<TrainedStudent> {
    let config_path = run.join(files::CONFIG);
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!("reading {} (is {} a run directory?)", config_path.display(), run.display())
    })?;
    let config: TrainConfig = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a run configuration", config_path.display()))?;
    config.student.validate().with_context(|| config_path.display().to_string())?;
    let path = run.join(match which {
        Checkpoint::Best => files::BEST,
        Checkpoint::Last => files::LAST,
    });
    let saved: checkpoint::Checkpoint<serde_json::Value> = checkpoint::load(&path)?;
    let student = Student::new(config.student, config.seed)?;
    student.load_weights(&saved.tensors).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(TrainedStudent { config, student, path })
}

/// The runtime's description of a student's architecture.
pub fn model_config(config: &StudentConfig) -> Result<ModelConfig> {
    let narrow = |name: &str, v: usize| {
        u16::try_from(v).with_context(|| format!("{name} {v} does not fit a blob (u16)"))
    };
    Ok(ModelConfig {
        tokenizer: config.tokenizer,
        dim: narrow("dim", config.dim)?,
        layers: narrow("layers", config.layers)?,
        heads: narrow("heads", config.heads)?,
        ffn: narrow("ffn", config.ffn)?,
        out_dim: narrow("out_dim", config.out_dim)?,
        layer_norm_eps: LAYER_NORM_EPS,
    })
}

/// The student's weights as the blob writer takes them (f32, the student's `[in, out]` layout).
pub fn blob_parts(student: &Student) -> Result<BlobParts> {
    let config = student.config();
    let mut parts = BlobParts::new(model_config(config)?);
    let tensor = |name: &str| -> Result<Vec<f32>> {
        let var = student
            .params()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .with_context(|| format!("the student has no tensor {name:?}"))?;
        Ok(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
    };
    let dense = |name: &str| -> Result<DenseParts> {
        Ok(DenseParts { weight: tensor(&format!("{name}.weight"))?, bias: tensor(&format!("{name}.bias"))? })
    };
    let norm = |name: &str| -> Result<NormParts> {
        Ok(NormParts { weight: tensor(&format!("{name}.weight"))?, bias: tensor(&format!("{name}.bias"))? })
    };
    parts.embeddings = tensor("embeddings")?;
    parts.positions = tensor("positions")?;
    parts.layers = (0..config.layers)
        .map(|i| -> Result<LayerParts> {
            let p = |s: &str| format!("layers.{i}.{s}");
            Ok(LayerParts {
                attention_norm: norm(&p("attention_norm"))?,
                query: dense(&p("query"))?,
                key: dense(&p("key"))?,
                value: dense(&p("value"))?,
                attention_out: dense(&p("attention_out"))?,
                ffn_norm: norm(&p("ffn_norm"))?,
                ffn_in: dense(&p("ffn_in"))?,
                ffn_out: dense(&p("ffn_out"))?,
            })
        })
        .collect::<Result<_>>()?;
    parts.projection = dense("projection")?;
    Ok(parts)
}

/// A document index of `documents` (`[ids.len(), out_dim]`, the teacher's English embeddings),
/// with CSLS hubness terms from the student's embeddings of `reference` (language-X captions)
/// when `csls`, else zeros (CSLS then ranks as cosine does).
pub fn index_parts(
    student: &Student,
    documents: Vec<f32>,
    ids: Vec<u32>,
    reference: &[TokenizedSentence],
    csls: bool,
) -> Result<IndexParts> {
    let dim = student.config().out_dim;
    if documents.len() != ids.len() * dim {
        bail!("index: {} values for {} documents of width {dim}", documents.len(), ids.len());
    }
    let hubness = if csls {
        hubness(&documents, &student.embed(reference, 256)?, dim, CSLS_K)
    } else {
        vec![0.0; ids.len()]
    };
    let embeddings = normalise_rows(documents, dim);
    Ok(IndexParts { ids, embeddings, hubness })
}

fn normalise_rows(mut rows: Vec<f32>, dim: usize) -> Vec<f32> {
    for row in rows.chunks_mut(dim) {
        let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
        }
    }
    rows
}

/// The runtime on the host: a loaded blob and scratch memory for queries of up to the
/// tokenizer's `max_words` words (longer ones are cut there, as on a device).
pub struct HostRuntime<'a> {
    model: Model<'a>,
    features: heapless::Vec<Feature, 8192>,
    floats: Vec<f32>,
    int8s: Vec<i8>,
}

impl<'a> HostRuntime<'a> {
    /// Loads `blob` (checked by the runtime) and sizes the scratch memory.
    pub fn new(blob: &'a [u8]) -> Result<Self, otkd_runtime::LoadError> {
        let model = Model::from_bytes(blob)?;
        let config = *model.config();
        let words = usize::from(config.tokenizer.max_words);
        Ok(Self {
            model,
            features: heapless::Vec::new(),
            floats: vec![0.0; Scratch::floats_len(&config, words)],
            int8s: vec![0; Scratch::int8s_len(&config, words)],
        })
    }

    /// The loaded model.
    pub fn model(&self) -> &Model<'a> {
        &self.model
    }

    /// Encodes a query with the int8 runtime.
    pub fn encode(&mut self, text: &str) -> Result<Embedding, EncodeError> {
        let mut scratch = Scratch::new(self.features.as_mut_view(), &mut self.floats, &mut self.int8s);
        self.model.encode(text, &mut scratch)
    }

    /// Every document of the index, best first (ties by id), as the device ranks them.
    pub fn rank_all(&self, query: &Embedding, scoring: Scoring) -> Result<Vec<Hit>> {
        let index = self.model.index().context("the blob has no document index")?;
        if index.len() > MAX_RANKED_DOCUMENTS {
            bail!(
                "the index has {} documents; at most {MAX_RANKED_DOCUMENTS} are ranked in full",
                index.len()
            );
        }
        let hits = index
            .search::<MAX_RANKED_DOCUMENTS>(query, MAX_RANKED_DOCUMENTS, scoring)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(hits.to_vec())
    }
}

/// What an exported blob weighs and needs.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct BlobBudget {
    /// Bytes of the whole blob.
    pub total_bytes: usize,
    /// Bytes of the quantized weights (values and scales) with biases and norms.
    pub weight_bytes: usize,
    /// Bytes of the index (0 without one).
    pub index_bytes: usize,
    /// Documents in the index.
    pub documents: usize,
    /// Scratch RAM for a query of [`BUDGET_QUERY_WORDS`] words.
    pub scratch_bytes: usize,
}

/// The query length the scratch budget is stated for.
pub const BUDGET_QUERY_WORDS: usize = 32;

/// The sizes of a loaded blob.
pub fn budget(blob: &[u8]) -> Result<BlobBudget, otkd_runtime::LoadError> {
    let model = Model::from_bytes(blob)?;
    let index = model.index();
    Ok(BlobBudget {
        total_bytes: blob.len(),
        weight_bytes: model.weight_bytes(),
        index_bytes: index.as_ref().map_or(0, |i| i.stored_bytes()),
        documents: index.as_ref().map_or(0, |i| i.len()),
        scratch_bytes: Scratch::ram_bytes(model.config(), BUDGET_QUERY_WORDS),
    })
}
