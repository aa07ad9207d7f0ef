//! `otkd export`, `otkd query` and `otkd eval-blob`: flags in, library calls of
//! [`crate::export`], tables or JSON out.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Inputs, multi30k_index, open_data, print_json};
use crate::cli::{EvalBlobArgs, ExportArgs, QueryArgs};
use crate::data::Lang;
use crate::distill::run_dir::RunDir;
use crate::export::{BlobBudget, F32Side, HostRuntime, answer, build_blob, evaluate_blob, write_blob};

/// Queries longer than this are refused: the device's tokenizer keeps its first `max_words`
/// words anyway, and a text this long is not a query.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Quantizes a run's student, adds the index, writes the blob and prints its budget.
pub fn export(inputs: &Inputs, args: &ExportArgs) -> Result<()> {
    let trained = RunDir::new(&args.run).load_student(args.checkpoint.into())?;
    let index = if args.no_index {
        None
    } else {
        let data = open_data(inputs)?;
        let scoring = args.scoring.into();
        Some(
            multi30k_index(inputs, &data, args.index_split, trained.config.lang, &trained.student, scoring)?
                .0,
        )
    };
    let blob = build_blob(&trained.student, trained.config.lang.code(), index)?;
    let budget = write_blob(&args.out, &blob)?;
    if args.json {
        return print_json(&budget);
    }
    outln!(
        "{} from {} ({:?} {}-en; index: {})",
        args.out.display(),
        trained.path.display(),
        trained.config.method,
        trained.config.lang,
        if args.no_index { "none".to_string() } else { format!("multi30k {} en", args.index_split) }
    );
    print_budget(&budget)
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
pub(super) fn read_blob(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading blob {}", path.display()))
}

pub(super) fn load<'a>(path: &Path, bytes: &'a [u8]) -> Result<HostRuntime<'a>> {
    HostRuntime::new(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Encodes each query with the int8 runtime and prints its top-k documents: the text given, or
/// every line of standard input.
pub fn query(inputs: &Inputs, args: &QueryArgs) -> Result<()> {
    let bytes = read_blob(&args.blob)?;
    let mut runtime = load(&args.blob, &bytes)?;
    // Captions are a convenience: without the data the ids and scores still print.
    let captions = open_data(inputs).and_then(|d| Ok(d.captions(args.captions_split, Lang::En)?));
    if let Err(e) = &captions {
        eprintln!("note: no captions to show ({e:#})");
    }
    let captions = captions.as_ref().ok().map(Vec::as_slice);
    let mut ask = |text: &str, line: Option<usize>| -> Result<()> {
        let at = line.map_or(String::new(), |l| format!("stdin line {l}: "));
        if text.len() > MAX_QUERY_BYTES {
            bail!("{at}the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted", text.len());
        }
        let dropped = runtime.words_dropped(text);
        if dropped > 0 {
            eprintln!(
                "warning: {at}the query has {dropped} word(s) past the first {}; the runtime (as on a device) ignores them",
                runtime.model().config().tokenizer.max_words
            );
        }
        let answers = answer(&mut runtime, text, args.k as usize, args.scoring.into(), captions)
            .map_err(|e| if at.is_empty() { e } else { e.context(at.trim_end_matches(": ").to_string()) })?;
        if args.json {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                query: &'a str,
                answers: &'a [crate::export::Answer],
            }
            outln!("{}", serde_json::to_string(&Line { query: text, answers: &answers })?);
            return Ok(());
        }
        if line.is_some() {
            outln!("{text}");
        }
        for a in &answers {
            outln!("{:>6}  {:+.4}  {}", a.id, a.score, a.caption.as_deref().unwrap_or(""));
        }
        Ok(())
    };
    match &args.text {
        Some(text) => ask(text, None),
        None => {
            use std::io::BufRead as _;
            for (number, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.with_context(|| format!("reading standard input line {}", number + 1))?;
                if !line.trim().is_empty() {
                    ask(&line, Some(number + 1))?;
                }
            }
            Ok(())
        }
    }
}

/// Test X -> en retrieval of the blob through the runtime, next to the f32 student.
pub fn eval_blob(inputs: &Inputs, args: &EvalBlobArgs) -> Result<()> {
    let bytes = read_blob(&args.blob)?;
    let mut runtime = load(&args.blob, &bytes)?;
    let documents = runtime
        .model()
        .index()
        .with_context(|| format!("{}: the blob has no document index", args.blob.display()))?
        .len();
    let provenance = runtime.model().provenance();
    if !provenance.lang.is_empty() && provenance.lang != args.lang.code() {
        bail!(
            "{}: the blob's student reads {} queries, not --lang {}",
            args.blob.display(),
            provenance.lang,
            args.lang
        );
    }
    let expected_source = format!("multi30k {} en", args.split);
    if !provenance.index_source.is_empty() && provenance.index_source != expected_source {
        bail!(
            "{}: the blob's index holds {:?}, not the --split {} captions",
            args.blob.display(),
            provenance.index_source,
            args.split
        );
    }
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
    let queries: Vec<(&str, u32)> = bitext.pairs.iter().map(|p| (p.x.as_str(), p.line as u32)).collect();
    let evaluation = match &args.run {
        None => evaluate_blob(&mut runtime, &queries, None)?,
        Some(run) => {
            let trained = RunDir::new(run).load_student(args.checkpoint.into())?;
            let (index, _) = multi30k_index(
                inputs,
                &data,
                args.split,
                args.lang,
                &trained.student,
                otkd_runtime::Scoring::Csls,
            )?;
            let dim = trained.student.config().out_dim;
            let side = F32Side {
                student: &trained.student,
                documents: &index.documents[..documents * dim],
                csls_reference: index.csls_reference.as_deref().unwrap_or_default(),
            };
            evaluate_blob(&mut runtime, &queries, Some(side))?
        }
    };
    if args.json {
        return print_json(&evaluation);
    }
    outln!("{} {}-en: {} queries against {documents} documents", args.split, args.lang, evaluation.queries);
    outln!("model        scoring  X->en R@1    R@5   R@10    MRR");
    for r in &evaluation.rows {
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
    if let Some(a) = evaluation.top1_agreement {
        outln!("top-1 agreement of the blob with the f32 student (cosine): {:.1}%", 100.0 * a);
    }
    Ok(())
}
