//! One module per CLI command: each resolves its inputs, calls library code, shows progress and
//! prints a table or JSON. Every function returns an error for `main.rs` to turn into an exit code.

/// `writeln!` to stdout, returning the I/O error (a closed pipe ends the command quietly in
/// `main.rs`, as in ripgrep, instead of panicking as `println!` does).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// `write!` to stdout, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod baseline;
mod bench;
mod bench_query;
mod data;
mod embed;
mod eval;
mod experiment;
mod export;
pub mod progress;
mod teacher;
mod train;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{BenchCommand, Cli, Command, DataCommand, Inputs, SourceArgs, TeacherCommand};
use otkd_runtime::Scoring;

use crate::data::{BitextFiles, Documents, Lang, Multi30k, Source, Split, resolve_data_dir};
use crate::distill::run_dir::RunDir;
use crate::eval::CslsReference;
use std::path::Path;

use crate::export::{HostRuntime, IndexInput};
use crate::paths::{DEFAULT_TEACHER, TEACHER_ENV, cache_dir, resolve_dir};
use crate::student::{Student, TokenizedSentence, tokenize_sentence};
use crate::teacher::cache::{CacheStatus, TeacherCache};
use crate::teacher::projection::Projection;
use crate::teacher::{Teacher, TeacherOutputs};

/// A command stopped by Ctrl-C after saving its progress: not a success (a script's
/// `otkd train ... && otkd export ...` must not ship a half-trained student), not a failure
/// either; `main.rs` exits with [`Interrupted::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("interrupted: {what}")]
pub struct Interrupted {
    /// What was saved and how to continue.
    pub what: String,
}

impl Interrupted {
    /// The exit code of an interrupted command: 130, as a shell reports a process ended by
    /// SIGINT.
    pub const EXIT_CODE: u8 = 130;
}

/// The exit code of a command that returned `err`: 0 for a write to a closed pipe (`otkd ... |
/// head` is not a failure), [`Interrupted::EXIT_CODE`] for Ctrl-C after saving, 2 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if is_closed_pipe(err) {
        0
    } else if err.is::<Interrupted>() {
        Interrupted::EXIT_CODE
    } else {
        2
    }
}

/// Whether `err` is a write to a closed pipe (`otkd ... | head`): not a failure of the command.
fn is_closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Check(args)) => data::check(&cli.inputs, &args),
        Command::Teacher(TeacherCommand::Encode(args)) => teacher::encode(&cli.inputs, &args),
        Command::Teacher(TeacherCommand::Embed(args)) => teacher::embed(&cli.inputs, &args),
        Command::Baseline(args) => baseline::run(&cli.inputs, &args),
        Command::Train(args) => train::run(&cli.inputs, &args),
        Command::Export(args) => export::export(&cli.inputs, &args),
        Command::Query(args) => export::query(&args),
        Command::EvalBlob(args) => export::eval_blob(&cli.inputs, &args),
        Command::Eval(args) => eval::run(&cli.inputs, &args),
        Command::Embed(args) => embed::run(&args),
        Command::Bench(BenchCommand::Teacher(args)) => bench::teacher(&cli.inputs, &args),
        Command::Bench(BenchCommand::Train(args)) => bench::train(&cli.inputs, &args),
        Command::Bench(BenchCommand::Query(args)) => bench_query::run(&cli.inputs, &args),
        Command::Experiment(args) => experiment::run(&cli.inputs, &args),
    }
}

fn open_data(inputs: &Inputs) -> Result<Multi30k> {
    let root = resolve_data_dir(inputs.data.as_deref())?;
    Ok(Multi30k::open(root)?)
}

/// The source the flags name: the user's bitext files (read, checked and split now, before any
/// work; what was dropped is reported), else the Multi30k directory. `lang` is the command's
/// `--lang`, the language of files given without `LANG=`.
fn open_source(inputs: &Inputs, flags: &SourceArgs, lang: Option<Lang>) -> Result<Source> {
    let Some(spec) = flags.spec(lang)? else { return Ok(Source::Multi30k(open_data(inputs)?)) };
    let files = BitextFiles::open(spec)?;
    for l in files.langs() {
        let [train, dev, test] = l.splits.each_ref().map(Vec::len);
        let d = l.dropped;
        eprintln!(
            "{}: {train} train, {dev} dev, {test} test pairs; dropped {} with an empty side, {} duplicate(s), {} also in dev/test",
            l.lang, d.empty_side, d.duplicate, d.held_out
        );
    }
    Ok(Source::Bitext(files))
}

/// The source of a trained run: the flags' when any bitext flag is given, else the one its run
/// directory records (Multi30k for runs that record none).
fn run_source(inputs: &Inputs, run: &RunDir, flags: &SourceArgs) -> Result<Source> {
    if flags.is_bitext() {
        return open_source(inputs, flags, None);
    }
    Source::reopen(&run.source()?, run.path(), || open_data(inputs))
}

fn open_teacher(inputs: &Inputs) -> Result<Teacher> {
    let dir = resolve_dir(inputs.teacher.as_deref(), TEACHER_ENV, DEFAULT_TEACHER).map_err(|tried| {
        anyhow::anyhow!(
            "teacher directory not found; tried {} (pass --teacher DIR or set {TEACHER_ENV})",
            tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })?;
    Ok(Teacher::load(&dir)?)
}

fn open_cache(inputs: &Inputs, teacher: &Teacher) -> Result<TeacherCache> {
    Ok(TeacherCache::new(cache_dir(inputs.cache.as_deref()), teacher)?)
}

fn print_json(value: &impl Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The English sentences of a split of `source`, encoded through the cache (with token states
/// if asked).
fn cached_english(
    teacher: &Teacher,
    cache: &TeacherCache,
    source: &Source,
    split: Split,
    batch: usize,
    keep_token_states: bool,
) -> Result<(Vec<String>, TeacherOutputs, CacheStatus)> {
    let sentences = source.english(split)?;
    let name = source.cache_name(split);
    let (outputs, status) = cached_texts(teacher, cache, &name, &sentences, batch, keep_token_states)?;
    Ok((sentences, outputs, status))
}

/// Teacher outputs in a trained student's output space: projected by its run's projection
/// (embeddings only), or as they are.
fn in_student_space(projection: Option<&Projection>, outputs: TeacherOutputs) -> TeacherOutputs {
    match projection {
        Some(p) => p.outputs(&outputs),
        None => outputs,
    }
}

/// Any English texts, encoded through the cache under `name`, with a progress bar.
fn cached_texts(
    teacher: &Teacher,
    cache: &TeacherCache,
    name: &str,
    texts: &[String],
    batch: usize,
    keep_token_states: bool,
) -> Result<(TeacherOutputs, CacheStatus)> {
    let bar = progress::bar(texts.len(), name);
    let encoded = cache
        .load_or_encode(teacher, name, texts, keep_token_states, batch, |done| bar.set_position(done as u64))
        .with_context(|| format!("encoding {name} with the teacher"))?;
    bar.finish_and_clear();
    Ok(encoded)
}

/// Tokenized CSLS reference queries of `lang` for `student`, never from `excluded` (a split
/// whose own sentences are the documents).
fn csls_reference_queries(
    source: &Source,
    lang: Lang,
    excluded: Option<Split>,
    student: &Student,
) -> Result<Vec<TokenizedSentence>> {
    let (train, dev) = (source.bitext(Split::Train, lang)?, source.bitext(Split::Dev, lang)?);
    let mut reference = CslsReference::new(&train, &dev);
    if let Some(split) = excluded {
        reference = reference.excluding(split);
    }
    let tokenizer = &student.config().tokenizer;
    Ok(reference.x().iter().map(|text| tokenize_sentence(tokenizer, text)).collect())
}

/// An index of the English sides of a `split` of `source` (ids: 0-based lines of the split) for
/// `student` (the teacher's embeddings in its output space: through `projection`, when it has
/// one), with CSLS terms from `lang`'s reference queries (never the split's own) when `scoring`
/// is CSLS; and the documents (ids and texts, for the texts file).
fn split_index(
    inputs: &Inputs,
    source: &Source,
    split: Split,
    lang: Lang,
    (student, projection): (&Student, Option<&Projection>),
    scoring: Scoring,
) -> Result<(IndexInput, Documents)> {
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let (sentences, english, _) =
        cached_english(&teacher, &cache, source, split, crate::cli::DEFAULT_TEACHER_BATCH as usize, false)?;
    let csls_reference = (scoring == Scoring::Csls)
        .then(|| csls_reference_queries(source, lang, Some(split), student))
        .transpose()?;
    let ids = (0..sentences.len())
        .map(|l| u32::try_from(l).context("too many documents"))
        .collect::<Result<_>>()?;
    let documents = Documents {
        ids: (0..sentences.len()).map(|l| l.to_string()).collect(),
        texts: sentences,
        blank_lines: 0,
    };
    let english = in_student_space(projection, english);
    let index = IndexInput {
        documents: english.embeddings,
        ids,
        csls_reference,
        source: source.index_source(split),
        lexical: None,
    };
    Ok((index, documents))
}

/// Reads a blob file, naming it in every error.
fn read_blob(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading blob {}", path.display()))
}

fn load_blob<'a>(path: &Path, bytes: &'a [u8]) -> Result<HostRuntime<'a>> {
    HostRuntime::new(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_exit_codes_in_one_place() {
        let interrupted = anyhow::Error::from(Interrupted { what: "step 7".into() });
        assert_eq!(exit_code(&interrupted), 130);
        let pipe =
            anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("printing");
        assert_eq!(exit_code(&pipe), 0);
        assert_eq!(exit_code(&anyhow::anyhow!("bad input")), 2);
    }
}
