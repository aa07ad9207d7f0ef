//! From a trained student to what a device runs, as library calls: the student's weights and a
//! document index in the runtime's blob format (quantized by the runtime's own writer,
//! [`build_blob`], [`write_blob`]), the host side of the runtime (the same `otkd-runtime` code
//! the device runs: [`HostRuntime`], [`answer`]) and the blob measured against the f32 student
//! ([`evaluate_blob`]).
//!
//! An index holds documents as the teacher embeds them (the space the student was distilled
//! into), one id per document, and each document's CSLS hubness term `r(d)`: its mean cosine to
//! its [`CSLS_K`] nearest language-X reference queries encoded by the f32 student
//! ([`crate::eval::CslsReference`]). The caller passes the documents and the reference in.

use std::path::Path;

use anyhow::{Context, Result, bail};
use otkd_runtime::{
    BlobParts, DenseParts, Embedding, EncodeError, Feature, Hit, IndexParts, LayerParts, LexiconParts, Model,
    ModelConfig, NormParts, Query, QueryTerms, Scoring, Scratch,
};

use crate::data::Documents;
use crate::eval::CSLS_K;
use crate::eval::metrics::{RetrievalMetrics, cosine_matrix, hubness, metrics_from_ranks, ranks, ranks_csls};
use crate::paths::write_atomically;
use crate::student::{
    EMBED_BATCH, LAYER_NORM_EPS, Student, StudentConfig, TokenizedSentence, tokenize_sentence,
};

/// The most answers one query returns ([`HostRuntime::top_k`]); any number of documents is
/// searched.
pub const MAX_ANSWERS: usize = 100;

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

/// What a blob's document index is built from.
pub struct IndexInput {
    /// Document embeddings by the teacher, `[ids.len(), out_dim]` row-major.
    pub documents: Vec<f32>,
    /// One id per document.
    pub ids: Vec<u32>,
    /// Language-X reference queries whose student embeddings give each document its CSLS
    /// hubness term; `None` stores zeros (CSLS then ranks as cosine does).
    pub csls_reference: Option<Vec<TokenizedSentence>>,
    /// Where the documents come from, recorded in the blob (e.g. `multi30k test_2016_flickr en`).
    pub source: String,
    /// The documents' texts and the lexicon's weight and size, for hybrid search; `None`: a
    /// dense index only.
    pub lexical: Option<LexicalInput>,
}

/// What an index's lexicon is built from (see `otkd_runtime::Index`, hybrid search).
pub struct LexicalInput {
    /// One text per document.
    pub texts: Vec<String>,
    /// `α`, the lexical score's weight.
    pub weight: f32,
    /// Terms kept per document (the heaviest); `None`: all.
    pub max_terms: Option<usize>,
}

fn index_parts(student: &Student, input: IndexInput) -> Result<IndexParts> {
    let dim = student.config().out_dim;
    let IndexInput { documents, ids, csls_reference, lexical, .. } = input;
    if documents.len() != ids.len() * dim {
        bail!("index: {} values for {} documents of width {dim}", documents.len(), ids.len());
    }
    let lexical = lexical
        .map(|l| -> Result<LexiconParts> {
            if l.texts.len() != ids.len() {
                bail!("index: {} texts for {} documents", l.texts.len(), ids.len());
            }
            let texts: Vec<&str> = l.texts.iter().map(String::as_str).collect();
            Ok(LexiconParts::from_texts(&student.config().tokenizer, &texts, l.weight, l.max_terms))
        })
        .transpose()?;
    let hubness = match csls_reference {
        Some(reference) => hubness(&documents, &student.embed(&reference, EMBED_BATCH)?, dim, CSLS_K),
        None => vec![0.0; ids.len()],
    };
    let embeddings = normalise_rows(documents, dim);
    Ok(IndexParts { ids, embeddings, hubness, lexical })
}

/// The blob of `student` (int8 weights) for queries in `lang`, with an index of `index` when
/// given; both recorded in the blob's [`otkd_runtime::Provenance`].
pub fn build_blob(student: &Student, lang: &str, index: Option<IndexInput>) -> Result<Vec<u8>> {
    let mut parts = blob_parts(student)?;
    parts.lang = lang.to_string();
    if let Some(input) = &index {
        parts.index_source = input.source.clone();
    }
    parts.index = index.map(|input| index_parts(student, input)).transpose()?;
    parts.to_bytes().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Writes `blob` to `out` atomically and returns its budget, read back through the runtime.
pub fn write_blob(out: &Path, blob: &[u8]) -> Result<BlobBudget> {
    write_atomically(out, |tmp| std::fs::write(tmp, blob))
        .with_context(|| format!("writing {}", out.display()))?;
    budget(blob).map_err(|e| anyhow::anyhow!("the blob just written does not load: {e}"))
}

/// The texts file of a blob: `BLOB.docs.tsv` beside it.
pub fn texts_path(blob: &Path) -> std::path::PathBuf {
    let mut name = blob.file_name().unwrap_or_default().to_os_string();
    name.push(".docs.tsv");
    blob.with_file_name(name)
}

/// Writes the documents' ids and texts beside the blob (atomically), in index order, so that
/// answers can be shown with their texts on the host.
pub fn write_texts(blob: &Path, documents: &Documents) -> Result<()> {
    let path = texts_path(blob);
    write_atomically(&path, |tmp| std::fs::write(tmp, documents.to_tsv()))
        .with_context(|| format!("writing {}", path.display()))
}

/// The texts written beside a blob: `None` when there is no texts file; an error when it
/// exists but does not match the blob's index size.
pub fn read_texts(blob: &Path, documents: usize) -> Result<Option<Documents>> {
    let path = texts_path(blob);
    if !path.exists() {
        return Ok(None);
    }
    let texts = Documents::read(&path)?;
    if texts.len() != documents {
        bail!(
            "{}: {} texts for the {documents} documents of {}; export the blob again",
            path.display(),
            texts.len(),
            blob.display()
        );
    }
    Ok(Some(texts))
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
    /// Blob id -> position in the index, for texts kept in index order.
    positions: std::collections::HashMap<u32, usize>,
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
        let mut positions = std::collections::HashMap::new();
        if let Some(index) = model.index() {
            for (position, id) in index.ids().enumerate() {
                positions.entry(id).or_insert(position);
            }
        }
        Ok(Self {
            positions,
            model,
            features: heapless::Vec::new(),
            floats: vec![0.0; Scratch::floats_len(&config, words)],
            int8s: vec![0; Scratch::int8s_len(&config, words)],
        })
    }

    /// The position in the index of the document with blob id `id` (the first, if ids repeat).
    pub fn position(&self, id: u32) -> Option<usize> {
        self.positions.get(&id).copied()
    }

    /// The loaded model.
    pub fn model(&self) -> &Model<'a> {
        &self.model
    }

    /// Words of `text` past the tokenizer's `max_words`, which the runtime (on the host as on a
    /// device) drops.
    pub fn words_dropped(&self, text: &str) -> u32 {
        tokenize_sentence(&self.model.config().tokenizer, text).report.words_dropped
    }

    /// Encodes a query with the int8 runtime.
    pub fn encode(&mut self, text: &str) -> Result<Embedding, EncodeError> {
        let mut scratch = Scratch::new(self.features.as_mut_view(), &mut self.floats, &mut self.int8s);
        self.model.encode(text, &mut scratch)
    }

    /// A query as a device searches with it: its embedding and, when the index has a lexicon
    /// (hybrid search), its terms.
    pub fn query(&mut self, text: &str) -> Result<RuntimeQuery, EncodeError> {
        let embedding = self.encode(text)?;
        let terms = match self.model.index().and_then(|i| i.lexical_weight()) {
            Some(_) => {
                let mut scratch =
                    Scratch::new(self.features.as_mut_view(), &mut self.floats, &mut self.int8s);
                let mut terms = QueryTerms::new();
                self.model.terms(text, &mut scratch, &mut terms)?;
                Some(terms)
            }
            None => None,
        };
        Ok(RuntimeQuery { embedding, terms })
    }

    /// The best `k` (at most [`MAX_ANSWERS`]) documents, best first (ties by smaller id), as
    /// the device ranks them: the runtime's streaming top-k, so the index may be any size.
    pub fn top_k<'q>(&self, query: impl Into<Query<'q>>, k: usize, scoring: Scoring) -> Result<Vec<Hit>> {
        let index = self.model.index().context("the blob has no document index")?;
        if k > MAX_ANSWERS {
            bail!("{k} answers asked for; at most {MAX_ANSWERS} are returned");
        }
        let hits = index.search::<MAX_ANSWERS>(query, k, scoring).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(hits.to_vec())
    }

    /// The 1-based rank of document `target` for `query` (one more than the number of documents
    /// ranked before it) and the id of the top document, streaming over the whole index.
    pub fn rank_of<'q>(
        &self,
        query: impl Into<Query<'q>>,
        scoring: Scoring,
        target: u32,
    ) -> Result<(usize, Option<u32>)> {
        let query = query.into();
        let index = self.model.index().context("the blob has no document index")?;
        let mut target_hit = None;
        index
            .for_each_hit(query, scoring, |hit| {
                if hit.id == target {
                    target_hit = Some(hit);
                }
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let target_hit = target_hit.with_context(|| format!("document {target} is not in the index"))?;
        let (mut before, mut top): (usize, Option<Hit>) = (0, None);
        index
            .for_each_hit(query, scoring, |hit| {
                before += usize::from(hit.ranks_before(&target_hit));
                if top.is_none_or(|t| hit.ranks_before(&t)) {
                    top = Some(hit);
                }
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((before + 1, top.map(|t| t.id)))
    }
}

/// The lexical weights [`choose_lexical_weight`] tries.
pub const LEXICAL_WEIGHTS: [f32; 11] = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0];

/// The least gain in held-out R@1 for which [`choose_lexical_weight`] keeps a lexicon: it costs
/// flash (about 700 B per document against the dense index's 392 B), so it must pay. Measured
/// on Multi30k (micro KD, int8, dev, CSLS) the best weight gained 0.5-0.9 points (ay, gn, qu,
/// cs: no lexicon); on Aymara news 21.6 points.
pub const LEXICAL_MIN_GAIN: f64 = 0.01;

/// The lexical weight chosen on held-out pairs, and what it did there.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct LexicalChoice {
    /// The chosen `α` (0: the lexicon does not gain [`LEXICAL_MIN_GAIN`]).
    pub weight: f32,
    /// Held-out queries it was chosen on.
    pub queries: usize,
    /// Their R@1 through the int8 runtime with the dense score alone.
    pub dense_r1: f64,
    /// Their R@1 with the best weight.
    pub hybrid_r1: f64,
    /// The best weight, kept or not.
    pub best_weight: f32,
}

/// Chooses the lexical weight on held-out pairs: `dev` (its documents, their texts in
/// `dev.lexical`) indexed by the int8 runtime with weight 1, each of `queries` (text, document
/// position) scored densely and with its terms, and the weight of [`LEXICAL_WEIGHTS`] with the
/// best R@1 under `scoring` (ties: the smaller weight), or 0 when that gains less than
/// [`LEXICAL_MIN_GAIN`] over the dense score alone. Scores for a weight `α` are
/// `dense + α · (hybrid − dense)`, the runtime's sum up to float rounding.
pub fn choose_lexical_weight(
    student: &Student,
    mut dev: IndexInput,
    queries: &[(&str, u32)],
    scoring: Scoring,
) -> Result<LexicalChoice> {
    let Some(lexical) = dev.lexical.as_mut() else {
        bail!("choosing a lexical weight needs the documents' texts")
    };
    lexical.weight = 1.0;
    let blob = build_blob(student, "", Some(dev))?;
    let mut runtime = HostRuntime::new(&blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let documents = runtime.model().index().map_or(0, |i| i.len());
    // Per query: the target's position, then every document's dense and lexical parts.
    let mut scored = Vec::with_capacity(queries.len());
    for &(text, target) in queries {
        let query = runtime.query(text).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))?;
        let index = runtime.model().index().context("the dev blob has an index")?;
        let mut dense = Vec::with_capacity(documents);
        index
            .for_each_hit(&query.embedding, scoring, |hit| dense.push(hit.score))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut lexical = Vec::with_capacity(documents);
        index
            .for_each_hit(query.as_query(), scoring, |hit| lexical.push(hit.score - dense[lexical.len()]))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        scored.push((target as usize, dense, lexical));
    }
    let r1 = |alpha: f32| {
        let hits = scored
            .iter()
            .filter(|(target, dense, lexical)| {
                let score = |j: usize| dense[j] + alpha * lexical[j];
                let mine = score(*target);
                (0..dense.len()).all(|j| j == *target || score(j) < mine || (score(j) == mine && j > *target))
            })
            .count();
        hits as f64 / scored.len().max(1) as f64
    };
    let (best_weight, hybrid_r1) = LEXICAL_WEIGHTS
        .iter()
        .map(|&alpha| (alpha, r1(alpha)))
        .fold((0.0, f64::NEG_INFINITY), |best, (alpha, r)| if r > best.1 { (alpha, r) } else { best });
    let dense_r1 = r1(0.0);
    let weight = if hybrid_r1 - dense_r1 >= LEXICAL_MIN_GAIN { best_weight } else { 0.0 };
    Ok(LexicalChoice { weight, queries: scored.len(), dense_r1, hybrid_r1, best_weight })
}

/// A query encoded by [`HostRuntime::query`].
pub struct RuntimeQuery {
    /// Its sentence embedding.
    pub embedding: Embedding,
    /// Its lexical terms, when the index has a lexicon.
    pub terms: Option<QueryTerms>,
}

impl RuntimeQuery {
    /// What the runtime's search takes.
    pub fn as_query(&self) -> Query<'_> {
        Query { embedding: &self.embedding, terms: self.terms.as_ref() }
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
    /// Scratch RAM for a query of `scratch_words` words.
    pub scratch_bytes: usize,
    /// The query length `scratch_bytes` is for: [`BUDGET_QUERY_WORDS`], or the tokenizer's
    /// `max_words` when it keeps fewer (the `nano` preset's 16).
    pub scratch_words: usize,
}

/// The query length the scratch budget is stated for (unless the model reads fewer words).
pub const BUDGET_QUERY_WORDS: usize = 32;

/// The sizes of a loaded blob.
pub fn budget(blob: &[u8]) -> Result<BlobBudget, otkd_runtime::LoadError> {
    let model = Model::from_bytes(blob)?;
    let index = model.index();
    let words = BUDGET_QUERY_WORDS.min(usize::from(model.config().tokenizer.max_words));
    Ok(BlobBudget {
        total_bytes: blob.len(),
        weight_bytes: model.weight_bytes(),
        index_bytes: index.as_ref().map_or(0, |i| i.stored_bytes()),
        documents: index.as_ref().map_or(0, |i| i.len()),
        scratch_bytes: Scratch::ram_bytes(model.config(), words),
        scratch_words: words,
    })
}

/// One answer to a query.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Answer {
    /// Document id in the blob (its position in the index).
    pub id: u32,
    /// Its score under the chosen scoring.
    pub score: f32,
    /// The document's own id (from the documents file), when the caller has the texts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc_id: Option<String>,
    /// The document's text, when the caller has the texts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The top `k` documents of `text` through the int8 runtime, with their own ids and texts when
/// given (`texts` in index order, as the texts file keeps them: a hit is looked up by the
/// position of its blob id in the index, whatever the ids are).
pub fn answer(
    runtime: &mut HostRuntime<'_>,
    text: &str,
    k: usize,
    scoring: Scoring,
    texts: Option<&Documents>,
) -> Result<Vec<Answer>> {
    let query = runtime.query(text).map_err(|e| match e {
        EncodeError::EmptyQuery => anyhow::anyhow!("the query has no word to encode: {text:?}"),
        other => anyhow::anyhow!("{text:?}: {other}"),
    })?;
    let hits = runtime.top_k(query.as_query(), k, scoring)?;
    Ok(hits
        .iter()
        .map(|h| {
            let at = texts.and(runtime.position(h.id));
            Answer {
                id: h.id,
                score: h.score,
                doc_id: at.and_then(|i| texts?.ids.get(i).cloned()),
                text: at.and_then(|i| texts?.texts.get(i).cloned()),
            }
        })
        .collect())
}

/// One row of a blob evaluation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalRow {
    /// "int8 blob", "int8 hybrid" (the blob with its lexicon) or "f32 student".
    pub model: &'static str,
    /// "cosine" or "CSLS".
    pub scoring: &'static str,
    /// X -> en retrieval.
    pub x_to_en: RetrievalMetrics,
}

/// The f32 student a blob was exported from, on the blob's documents.
pub struct F32Side<'a> {
    /// The student.
    pub student: &'a Student,
    /// The documents as the teacher embeds them (`[documents, out_dim]`, the index's order).
    pub documents: &'a [f32],
    /// The CSLS reference queries (as the export used).
    pub csls_reference: &'a [TokenizedSentence],
}

/// A blob's retrieval, and the f32 student's when given.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BlobEvaluation {
    /// Queries.
    pub queries: usize,
    /// Documents in the index.
    pub documents: usize,
    /// The f32 rows first (when given), then the blob's, cosine then CSLS.
    pub rows: Vec<EvalRow>,
    /// Share of queries whose top document by cosine is the same for the blob and the student.
    pub top1_agreement: Option<f64>,
}

/// X -> en retrieval of `queries` (text and the id of its document) through the blob, next to
/// the f32 student when `f32` is given.
pub fn evaluate_blob(
    runtime: &mut HostRuntime<'_>,
    queries: &[(&str, u32)],
    f32_side: Option<F32Side<'_>>,
) -> Result<BlobEvaluation> {
    let documents = runtime.model().index().context("the blob has no document index")?.len();
    let mut rows = Vec::new();
    let mut int8_top1 = Vec::with_capacity(queries.len());
    for (name, scoring) in [("cosine", Scoring::Cosine), ("CSLS", Scoring::Csls)] {
        let mut query_ranks = Vec::with_capacity(queries.len());
        for (k, &(text, target)) in queries.iter().enumerate() {
            let query = runtime.query(text).map_err(|e| anyhow::anyhow!("query {}: {e}", k + 1))?;
            let (rank, top) = runtime.rank_of(query.as_query(), scoring, target)?;
            query_ranks.push(rank);
            if scoring == Scoring::Cosine {
                int8_top1.push(top.map(|id| id as usize));
            }
        }
        let model = if runtime.model().index().and_then(|i| i.lexical_weight()).is_some() {
            "int8 hybrid"
        } else {
            "int8 blob"
        };
        rows.push(EvalRow { model, scoring: name, x_to_en: metrics_from_ranks(&query_ranks) });
    }
    let mut top1_agreement = None;
    if let Some(side) = f32_side {
        let student = side.student;
        let dim = student.config().out_dim;
        let tokenizer = &student.config().tokenizer;
        let tokens: Vec<_> = queries.iter().map(|(text, _)| tokenize_sentence(tokenizer, text)).collect();
        let embedded = student.embed(&tokens, EMBED_BATCH)?;
        let targets: Vec<usize> = queries.iter().map(|&(_, t)| t as usize).collect();
        let r = hubness(side.documents, &student.embed(side.csls_reference, EMBED_BATCH)?, dim, CSLS_K);
        let f32_rows = [
            ("cosine", ranks(&embedded, side.documents, dim, &targets)),
            ("CSLS", ranks_csls(&embedded, side.documents, dim, &targets, &r)),
        ];
        for (k, (scoring, query_ranks)) in f32_rows.into_iter().enumerate() {
            rows.insert(
                k,
                EvalRow { model: "f32 student", scoring, x_to_en: metrics_from_ranks(&query_ranks) },
            );
        }
        let f32_top1: Vec<usize> = cosine_matrix(&embedded, side.documents, dim)
            .chunks(documents)
            .map(|row| (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best }))
            .collect();
        let same = f32_top1.iter().zip(&int8_top1).filter(|(a, b)| Some(**a) == **b).count();
        top1_agreement = Some(same as f64 / f32_top1.len().max(1) as f64);
    }
    Ok(BlobEvaluation { queries: queries.len(), documents, rows, top1_agreement })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::Preset;

    /// Firmware sizes its static scratch memory for the runtime's `ModelConfig::MICRO`: it must be
    /// what `--preset micro` exports for the shipped teacher's width.
    #[test]
    fn the_micro_preset_is_the_runtimes_micro_shape() {
        let config = Preset::Micro.validated_config(384).unwrap();
        assert_eq!(model_config(&config).unwrap(), ModelConfig::MICRO);
    }

    /// `--preset nano` exports exactly the runtime's `ModelConfig::NANO` (what a nano firmware
    /// sizes its scratch for), and its blob with a 1,000-document index fits 1 MiB of flash with
    /// 128 KiB to spare for the firmware; a 16-word query (all it reads) needs under 24 KiB of
    /// scratch, leaving 8 KiB of 32 for the stack.
    #[test]
    fn the_nano_preset_is_the_runtimes_nano_shape_and_fits_1_mib() {
        let config = Preset::Nano.validated_config(384).unwrap();
        assert_eq!(model_config(&config).unwrap(), ModelConfig::NANO);
        assert_eq!(config.out_dim, crate::student::NANO_OUT_DIM);
        assert!(config.projects(384) && !Preset::Micro.config(384).projects(384));
        let student = Student::new(config, 1).unwrap();
        let documents = 1000;
        let mut rng = crate::rng::SplitMix64::new(5, "nano-index");
        let index = IndexInput {
            documents: rng.normal_vec(documents * config.out_dim, 1.0),
            ids: (0..documents as u32).collect(),
            csls_reference: None,
            source: "multi30k test_2016_flickr en".into(),
            lexical: None,
        };
        let blob = build_blob(&student, "ay", Some(index)).unwrap();
        let b = budget(&blob).unwrap();
        assert_eq!((b.documents, b.scratch_words), (documents, 16));
        assert!(b.total_bytes <= (1 << 20) - (128 << 10), "{} bytes", b.total_bytes);
        // 25,720 bytes since the encoder's four-word blocks; with the firmware's stack nano's RAM
        // is over the 32 KiB goal (README, "The nano preset"). A bound against further growth.
        assert!(b.scratch_bytes <= 26 * 1024, "{} bytes", b.scratch_bytes);
        assert_eq!(b.index_bytes, documents * (config.out_dim + 8));
    }
}
