//! `otkd export`, `otkd query` and `otkd eval-blob`: the student leaves the host, and the host
//! runs the device's code on it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use otkd_runtime::{EncodeError, Scoring};
use serde::Serialize;

use super::{Inputs, cached_english, open_cache, open_data, open_teacher, print_json};
use crate::cli::{EvalBlobArgs, ExportArgs, QueryArgs};
use crate::data::{Lang, Multi30k, Split};
use crate::eval::metrics::{RetrievalMetrics, hubness, metrics_from_ranks, ranks, ranks_csls};
use crate::eval::{CSLS_K, csls_reference};
use crate::export::{
    BlobBudget, Checkpoint, HostRuntime, TrainedStudent, blob_parts, budget, index_parts, load_run,
};
use crate::paths::write_atomically;
use crate::student::tokenize_sentence;

/// Queries longer than this are refused: the device's tokenizer keeps its first `max_words`
/// words anyway, and a text this long is not a query.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Teacher batch size when English captions must be encoded.
const TEACHER_BATCH: usize = 64;

/// Quantizes a run's student, adds the index, writes the blob and prints its budget.
pub fn export(inputs: &Inputs, args: &ExportArgs) -> Result<()> {
    let index = if args.no_index {
        None
    } else {
        Some(IndexSource { data: open_data(inputs)?, split: args.index_split, scoring: args.scoring.into() })
    };
    let (budget, trained) = write_blob(inputs, &args.run, args.checkpoint, index.as_ref(), &args.out)?;
    if args.json {
        return print_json(&budget);
    }
    outln!(
        "{} from {} ({:?} {}-en)",
        args.out.display(),
        trained.path.display(),
        trained.config.method,
        trained.config.lang
    );
    print_budget(&budget)
}

/// Where a blob's document index comes from.
pub struct IndexSource {
    /// The corpus.
    pub data: Multi30k,
    /// Whose English captions are the documents (ids: 0-based caption lines).
    pub split: Split,
    /// CSLS stores each document's hubness term; cosine stores zeros.
    pub scoring: Scoring,
}

/// Quantizes the student of `run` (its `which` checkpoint), adds the index when asked, and
/// writes the blob to `out` atomically; returns its budget and the student it holds.
pub fn write_blob(
    inputs: &Inputs,
    run: &Path,
    which: Checkpoint,
    index: Option<&IndexSource>,
    out: &Path,
) -> Result<(BlobBudget, TrainedStudent)> {
    let trained = load_run(run, which)?;
    let student = &trained.student;
    let mut parts = blob_parts(student)?;
    if let Some(source) = index {
        let data = &source.data;
        let teacher = open_teacher(inputs)?;
        let cache = open_cache(inputs, &teacher)?;
        let (captions, english, _) =
            cached_english(&teacher, &cache, data, source.split, TEACHER_BATCH, false)?;
        let lang = trained.config.lang;
        let (train, val) = (data.bitext(Split::Train, lang)?, data.bitext(Split::Val, lang)?);
        let (val_ref, train_ref) = csls_reference(&train, &val);
        // The reference never holds the index's own captions.
        let reference: Vec<_> = [(Split::Val, val_ref), (Split::Train, train_ref)]
            .into_iter()
            .filter(|(split, _)| *split != source.split)
            .flat_map(|(_, pairs)| pairs)
            .map(|p| tokenize_sentence(&student.config().tokenizer, &p.x))
            .collect();
        let ids = (0..captions.len())
            .map(|l| u32::try_from(l).context("too many documents"))
            .collect::<Result<_>>()?;
        parts.index =
            Some(index_parts(student, english.embeddings, ids, &reference, source.scoring == Scoring::Csls)?);
    }
    let bytes = parts.to_bytes().map_err(|e| anyhow::anyhow!("{e}"))?;
    write_atomically(out, |tmp| std::fs::write(tmp, &bytes))
        .with_context(|| format!("writing {}", out.display()))?;
    let budget = budget(&bytes).map_err(|e| anyhow::anyhow!("the blob just written does not load: {e}"))?;
    Ok((budget, trained))
}

/// The budget lines of a blob (weights, index, total, scratch RAM).
pub fn print_budget(b: &BlobBudget) -> Result<()> {
    let kib = |bytes: usize| bytes as f64 / 1024.0;
    outln!("weights  {:>9} bytes ({:.0} KiB)", b.weight_bytes, kib(b.weight_bytes));
    outln!("index    {:>9} bytes ({:.0} KiB, {} documents)", b.index_bytes, kib(b.index_bytes), b.documents);
    outln!(
        "blob     {:>9} bytes ({:.0} KiB; header and framing included)",
        b.total_bytes,
        kib(b.total_bytes)
    );
    outln!(
        "scratch  {:>9} bytes ({:.1} KiB of RAM for a {}-word query)",
        b.scratch_bytes,
        kib(b.scratch_bytes),
        crate::export::BUDGET_QUERY_WORDS
    );
    Ok(())
}

/// Reads a blob file, naming it in every error.
fn read_blob(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading blob {}", path.display()))
}

fn load<'a>(path: &Path, bytes: &'a [u8]) -> Result<HostRuntime<'a>> {
    HostRuntime::new(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// One answer of `otkd query` (and of the experiment's example queries).
#[derive(Serialize)]
pub struct Answer {
    /// Document id (the caption's 0-based line).
    pub id: u32,
    /// Its score under the chosen scoring.
    pub score: f32,
    /// The English caption, when the captions are at hand.
    pub caption: Option<String>,
}

/// The top `k` documents of `text` through the int8 runtime, with their captions when given.
pub fn answer(
    runtime: &mut HostRuntime<'_>,
    text: &str,
    k: usize,
    scoring: Scoring,
    captions: Option<&[String]>,
) -> Result<Vec<Answer>> {
    let embedding = runtime.encode(text).map_err(|e| match e {
        EncodeError::EmptyQuery => anyhow::anyhow!("the query has no word to encode: {text:?}"),
        other => anyhow::anyhow!("{text:?}: {other}"),
    })?;
    let mut hits = runtime.rank_all(&embedding, scoring)?;
    hits.truncate(k);
    Ok(hits
        .iter()
        .map(|h| Answer {
            id: h.id,
            score: h.score,
            caption: captions.and_then(|c| c.get(h.id as usize).cloned()),
        })
        .collect())
}

/// Encodes a query with the int8 runtime and prints the top-k documents.
pub fn query(inputs: &Inputs, args: &QueryArgs) -> Result<()> {
    if args.text.len() > MAX_QUERY_BYTES {
        bail!("the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted", args.text.len());
    }
    let bytes = read_blob(&args.blob)?;
    let mut runtime = load(&args.blob, &bytes)?;
    // Captions are a convenience: without the data the ids and scores still print.
    let captions = open_data(inputs).and_then(|d| Ok(d.captions(args.captions_split, Lang::En)?));
    if let Err(e) = &captions {
        eprintln!("note: no captions to show ({e:#})");
    }
    let answers = answer(
        &mut runtime,
        &args.text,
        args.k as usize,
        args.scoring.into(),
        captions.as_ref().ok().map(Vec::as_slice),
    )?;
    if args.json {
        return print_json(&answers);
    }
    for a in &answers {
        outln!("{:>6}  {:+.4}  {}", a.id, a.score, a.caption.as_deref().unwrap_or(""));
    }
    Ok(())
}

/// One row of `otkd eval-blob`.
#[derive(Serialize)]
struct EvalRow {
    model: &'static str,
    scoring: &'static str,
    x_to_en: RetrievalMetrics,
}

/// Test X -> en retrieval of the blob through the runtime, next to the f32 student.
pub fn eval_blob(inputs: &Inputs, args: &EvalBlobArgs) -> Result<()> {
    let bytes = read_blob(&args.blob)?;
    let mut runtime = load(&args.blob, &bytes)?;
    let index = runtime
        .model()
        .index()
        .with_context(|| format!("{}: the blob has no document index", args.blob.display()))?;
    let documents = index.len();
    let data = open_data(inputs)?;
    let bitext = data.bitext(args.split, args.lang)?;
    if let Some(p) = bitext.pairs.iter().find(|p| p.line >= documents) {
        bail!(
            "{}: {} {} line {} has no document in the index ({documents} documents): export the index from the same split",
            args.blob.display(),
            args.split,
            args.lang,
            p.line + 1
        );
    }
    let mut rows = Vec::new();
    let mut int8_top1 = Vec::with_capacity(bitext.pairs.len());
    for (name, scoring) in [("cosine", Scoring::Cosine), ("CSLS", Scoring::Csls)] {
        let mut ranks = Vec::with_capacity(bitext.pairs.len());
        for pair in &bitext.pairs {
            let query = runtime
                .encode(&pair.x)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", args.split, pair.line + 1))?;
            let hits = runtime.rank_all(&query, scoring)?;
            let rank = hits.iter().position(|h| h.id as usize == pair.line).map_or(documents, |r| r + 1);
            ranks.push(rank);
            if scoring == Scoring::Cosine {
                int8_top1.push(hits.first().map(|h| h.id as usize));
            }
        }
        rows.push(EvalRow { model: "int8 blob", scoring: name, x_to_en: metrics_from_ranks(&ranks) });
    }
    let mut agreement = None;
    if let Some(run) = &args.run {
        let trained = load_run(run, args.checkpoint)?;
        let teacher = open_teacher(inputs)?;
        let cache = open_cache(inputs, &teacher)?;
        let (_, english, _) = cached_english(&teacher, &cache, &data, args.split, TEACHER_BATCH, false)?;
        let student = &trained.student;
        let dim = student.config().out_dim;
        let docs = &english.embeddings[..documents * dim];
        let tokenize = |t: &str| tokenize_sentence(&student.config().tokenizer, t);
        let queries = student.embed(&bitext.pairs.iter().map(|p| tokenize(&p.x)).collect::<Vec<_>>(), 256)?;
        let targets = bitext.lines();
        let (train, val) = (data.bitext(Split::Train, args.lang)?, data.bitext(Split::Val, args.lang)?);
        let (val_ref, train_ref) = csls_reference(&train, &val);
        let reference: Vec<_> = [(Split::Val, val_ref), (Split::Train, train_ref)]
            .into_iter()
            .filter(|(split, _)| *split != args.split)
            .flat_map(|(_, pairs)| pairs)
            .map(|p| tokenize(&p.x))
            .collect();
        let r = hubness(docs, &student.embed(&reference, 256)?, dim, CSLS_K);
        let cosine_ranks = ranks(&queries, docs, dim, &targets);
        rows.insert(
            0,
            EvalRow { model: "f32 student", scoring: "cosine", x_to_en: metrics_from_ranks(&cosine_ranks) },
        );
        rows.insert(
            1,
            EvalRow {
                model: "f32 student",
                scoring: "CSLS",
                x_to_en: metrics_from_ranks(&ranks_csls(&queries, docs, dim, &targets, &r)),
            },
        );
        // Top-1 agreement: the f32 student's best document by cosine against the blob's.
        let f32_top1: Vec<usize> = crate::eval::metrics::cosine_matrix(&queries, docs, dim)
            .chunks(documents)
            .map(|row| (0..documents).fold(0, |best, j| if row[j] > row[best] { j } else { best }))
            .collect();
        let same = f32_top1.iter().zip(&int8_top1).filter(|(a, b)| Some(**a) == **b).count();
        agreement = Some(same as f64 / f32_top1.len().max(1) as f64);
    }
    if args.json {
        #[derive(Serialize)]
        struct Report {
            queries: usize,
            documents: usize,
            rows: Vec<EvalRow>,
            top1_agreement: Option<f64>,
        }
        return print_json(&Report {
            queries: bitext.pairs.len(),
            documents,
            rows,
            top1_agreement: agreement,
        });
    }
    outln!("{} {}-en: {} queries against {documents} documents", args.split, args.lang, bitext.pairs.len());
    outln!("model        scoring  X->en R@1    R@5   R@10    MRR");
    for r in &rows {
        let m = &r.x_to_en;
        outln!(
            "{:<11}  {:<7}  {:>9.3}  {:>5.3}  {:>5.3}  {:>5.3}",
            r.model,
            r.scoring,
            m.r1,
            m.r5,
            m.r10,
            m.mrr
        );
    }
    if let Some(a) = agreement {
        outln!("top-1 agreement of the blob with the f32 student (cosine): {:.1}%", 100.0 * a);
    }
    Ok(())
}
