//! `otkd export`, `otkd query` and `otkd eval-blob`: flags in, library calls of
//! [`crate::export`], tables or JSON out.

use anyhow::{Context, Result, bail};

use otkd_runtime::Scoring;

use super::{
    Inputs, cached_texts, csls_reference_queries, in_student_space, load_blob, open_cache, open_source,
    open_teacher, print_json, read_blob, run_source, split_index,
};
use crate::cli::{EvalBlobArgs, ExportArgs, LexicalArg, QueryArgs, SourceArgs};
use crate::data::{Documents, Lang, Source, SourceSpec, Split};
use crate::distill::run_dir::RunDir;
use crate::export::{
    BlobBudget, F32Side, IndexInput, LexicalChoice, LexicalInput, answer, build_blob, choose_lexical_weight,
    evaluate_blob, read_texts, write_blob, write_texts,
};
use crate::student::{EMBED_BATCH, Preset, Student, tokenize_sentence};
use crate::teacher::projection::Projection;

/// Bytes of the blob region of the board crate (`board/nucleo-f429zi/memory.x`): a blob past
/// this does not fit the device it targets.
pub const DEVICE_BLOB_REGION_BYTES: usize = 1920 * 1024;

/// Flash the `nano` preset is for (nRF52840-class parts): its blob with a 1,000-document index
/// fits (about 872 KiB, with room for the firmware); `export` warns past it.
pub const NANO_FLASH_BYTES: usize = 1 << 20;

/// Queries longer than this are refused: the device's tokenizer keeps its first `max_words`
/// words anyway, and a text this long is not a query.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Quantizes a run's student, adds the index, writes the blob (and its texts file) and prints
/// its budget.
pub fn export(inputs: &Inputs, args: &ExportArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let trained = run.load_student(args.checkpoint.into())?;
    let lang = trained.config.lang;
    let scoring = args.scoring.into();
    let student = (&trained.student, trained.projection.as_ref());
    let source = if args.no_index { None } else { Some(run_source(inputs, &run, &SourceArgs::default())?) };
    let indexed = match &source {
        None => None,
        Some(source) => Some(match &args.docs {
            Some(path) => {
                let documents = Documents::read(path)?;
                if documents.blank_lines > 0 {
                    eprintln!("{}: skipped {} blank line(s)", path.display(), documents.blank_lines);
                }
                let index = docs_index(inputs, source, &documents, args.docs_lang, lang, student, scoring)
                    .with_context(|| format!("indexing {}", path.display()))?;
                (index, documents)
            }
            None => split_index(inputs, source, args.index_split, lang, student, scoring)?,
        }),
    };
    let described = indexed.as_ref().map_or("none".to_string(), |(index, _)| index.source.clone());
    let (mut index, documents) = indexed.unzip();
    let mut choice = None;
    if let (Some(index), Some(documents), Some(source)) =
        (index.as_mut(), documents.as_ref(), source.as_ref())
    {
        let max_terms = args.lexical_terms.map(|n| n as usize);
        let weight = match args.lexical {
            LexicalArg::Off => 0.0,
            LexicalArg::Weight(weight) => weight,
            LexicalArg::Auto => {
                let chosen = lexical_weight_on_dev(inputs, source, lang, student, scoring, max_terms)
                    .context("choosing the lexical weight on the run's dev pairs (--lexical auto)")?;
                choice = Some(chosen);
                chosen.weight
            }
        };
        if weight > 0.0 {
            index.lexical = Some(LexicalInput { texts: documents.texts.clone(), weight, max_terms });
        }
    }
    let blob = build_blob(&trained.student, lang.code(), index)?;
    let budget = write_blob(&args.out, &blob)?;
    let lexical_weight =
        otkd_runtime::Model::from_bytes(&blob).ok().and_then(|m| m.index().and_then(|i| i.lexical_weight()));
    if let Some(documents) = documents.filter(|_| !args.no_texts) {
        write_texts(&args.out, &documents)?;
    }
    if trained.config.preset == Preset::Nano && budget.total_bytes > NANO_FLASH_BYTES {
        eprintln!(
            "warning: {} bytes are over the nano preset's 1 MiB of flash ({NANO_FLASH_BYTES} bytes); index fewer documents",
            budget.total_bytes
        );
    }
    if budget.total_bytes > DEVICE_BLOB_REGION_BYTES {
        eprintln!(
            "warning: {} bytes do not fit the board's blob region ({} KiB, board/nucleo-f429zi/memory.x); index fewer documents or use a smaller preset",
            budget.total_bytes,
            DEVICE_BLOB_REGION_BYTES / 1024
        );
    }
    if args.json {
        #[derive(serde::Serialize)]
        struct Exported {
            #[serde(flatten)]
            budget: BlobBudget,
            lexical_weight: Option<f32>,
            lexical_choice: Option<LexicalChoice>,
        }
        return print_json(&Exported { budget, lexical_weight, lexical_choice: choice });
    }
    outln!(
        "{} from {} ({:?} {}-en; index: {described})",
        args.out.display(),
        trained.path.display(),
        trained.config.method,
        lang
    );
    if let Some(c) = choice {
        outln!(
            "lexical weight {} chosen on {} dev queries (int8 R@1 {:.3} dense, {:.3} with weight {}){}",
            c.weight,
            c.queries,
            c.dense_r1,
            c.hybrid_r1,
            c.best_weight,
            if c.weight == 0.0 {
                format!(": under {} point(s) gained, no lexicon", crate::export::LEXICAL_MIN_GAIN * 100.0)
            } else {
                String::new()
            }
        );
    }
    print_budget(&budget)
}

/// `--lexical auto`: the weight of the best int8 R@1 on the run's dev pairs, with an index of
/// the dev split's English sides (see [`choose_lexical_weight`]).
fn lexical_weight_on_dev(
    inputs: &Inputs,
    source: &Source,
    lang: Lang,
    student: (&Student, Option<&Projection>),
    scoring: Scoring,
    max_terms: Option<usize>,
) -> Result<LexicalChoice> {
    let (mut dev, texts) = split_index(inputs, source, Split::Dev, lang, student, scoring)?;
    dev.lexical = Some(LexicalInput { texts: texts.texts, weight: 1.0, max_terms });
    let bitext = source.bitext(Split::Dev, lang)?;
    let queries: Vec<(&str, u32)> = bitext.pairs.iter().map(|p| (p.x.as_str(), p.line as u32)).collect();
    choose_lexical_weight(student.0, dev, &queries, scoring)
}

/// An index of the user's documents: English ones encoded by the teacher (the space the student
/// was distilled into: through `projection`, when the student has one), ones in the student's
/// language (`docs_lang`) by the student itself; CSLS terms from the run's reference queries.
fn docs_index(
    inputs: &Inputs,
    source: &Source,
    documents: &Documents,
    docs_lang: Option<Lang>,
    lang: Lang,
    (student, projection): (&Student, Option<&Projection>),
    scoring: Scoring,
) -> Result<IndexInput> {
    let embeddings = match docs_lang {
        None | Some(Lang::EN) => {
            let teacher = open_teacher(inputs)?;
            let cache = open_cache(inputs, &teacher)?;
            let batch = crate::cli::DEFAULT_TEACHER_BATCH as usize;
            let english = cached_texts(&teacher, &cache, "docs.en", &documents.texts, batch, false)?.0;
            in_student_space(projection, english).embeddings
        }
        Some(docs_lang) if lang.includes(docs_lang) => {
            let tokenizer = &student.config().tokenizer;
            let tokens: Vec<_> = documents.texts.iter().map(|t| tokenize_sentence(tokenizer, t)).collect();
            student.embed(&tokens, EMBED_BATCH)?
        }
        Some(other) => bail!(
            "--docs-lang {other}: the student reads {lang} (and the teacher English); documents in {other} cannot be encoded"
        ),
    };
    let csls_reference = (scoring == Scoring::Csls)
        .then(|| csls_reference_queries(source, lang, None, student))
        .transpose()?;
    let ids = (0..documents.len())
        .map(|i| u32::try_from(i).context("too many documents"))
        .collect::<Result<_>>()?;
    let what = docs_lang.map_or("en".to_string(), |l| l.to_string());
    Ok(IndexInput {
        documents: embeddings,
        ids,
        csls_reference,
        source: format!("documents {what}"),
        lexical: None,
    })
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
        b.scratch_words
    );
    Ok(())
}

/// Encodes each query with the int8 runtime and prints its top-k documents: the text given, or
/// every line of standard input.
pub fn query(args: &QueryArgs) -> Result<()> {
    let bytes = read_blob(&args.blob)?;
    let mut runtime = load_blob(&args.blob, &bytes)?;
    let documents = runtime.model().index().map_or(0, |index| index.len());
    let texts = read_texts(&args.blob, documents)?;
    if texts.is_none() {
        eprintln!(
            "note: no texts file ({}); answers show ids only",
            crate::export::texts_path(&args.blob).display()
        );
    }
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
        let answers = answer(&mut runtime, text, args.k as usize, args.scoring.into(), texts.as_ref())
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
            let doc_id = a.doc_id.as_deref().unwrap_or("");
            outln!("{:>6}  {:+.4}  {doc_id:<8}  {}", a.id, a.score, a.text.as_deref().unwrap_or(""));
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
    let mut runtime = load_blob(&args.blob, &bytes)?;
    let documents = runtime
        .model()
        .index()
        .with_context(|| format!("{}: the blob has no document index", args.blob.display()))?
        .len();
    let provenance = runtime.model().provenance();
    let reads = Lang::new(provenance.lang).ok();
    if !provenance.lang.is_empty() && !reads.is_some_and(|l| l.includes(args.lang)) {
        bail!(
            "{}: the blob's student reads {} queries, not --lang {}",
            args.blob.display(),
            provenance.lang,
            args.lang
        );
    }
    // Which documents the index must hold is known before any data is opened.
    let spec = match (&args.run, args.source.is_bitext()) {
        (_, true) => None,
        (Some(run), false) => Some(RunDir::new(run).source()?),
        (None, false) => Some(SourceSpec::Multi30k),
    };
    let check = |expected: String| -> Result<()> {
        if !provenance.index_source.is_empty() && provenance.index_source != expected {
            bail!(
                "{}: the blob's index holds {:?}, not the --split {} captions ({expected:?})",
                args.blob.display(),
                provenance.index_source,
                args.split
            );
        }
        Ok(())
    };
    if let Some(spec) = &spec {
        check(spec.index_source(args.split))?;
    }
    let data = match &args.run {
        Some(run) => run_source(inputs, &RunDir::new(run), &args.source)?,
        None => open_source(inputs, &args.source, Some(args.lang))?,
    };
    check(data.index_source(args.split))?;
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
            let student = (&trained.student, trained.projection.as_ref());
            let (index, _) =
                split_index(inputs, &data, args.split, trained.config.lang, student, Scoring::Csls)?;
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
    outln!(
        "{} {}-en: {} queries against {documents} documents",
        data.split_name(args.split),
        args.lang,
        evaluation.queries
    );
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
