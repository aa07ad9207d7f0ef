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
mod experiment;
mod export;
pub mod progress;
mod teacher;
mod train;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{BenchCommand, Cli, Command, DataCommand, Inputs, TeacherCommand};
use otkd_runtime::Scoring;

use crate::data::{Lang, Multi30k, Split, resolve_data_dir};
use crate::eval::CslsReference;
use crate::export::IndexInput;
use crate::paths::{DEFAULT_TEACHER, TEACHER_ENV, cache_dir, resolve_dir};
use crate::student::{Student, tokenize_sentence};
use crate::teacher::cache::{CacheStatus, TeacherCache};
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
        Command::Data(DataCommand::Check(flags)) => data::check(&cli.inputs, flags.json),
        Command::Teacher(TeacherCommand::Encode(args)) => teacher::encode(&cli.inputs, &args),
        Command::Teacher(TeacherCommand::Embed(args)) => teacher::embed(&cli.inputs, &args),
        Command::Baseline(args) => baseline::run(&cli.inputs, &args),
        Command::Train(args) => train::run(&cli.inputs, &args),
        Command::Export(args) => export::export(&cli.inputs, &args),
        Command::Query(args) => export::query(&cli.inputs, &args),
        Command::EvalBlob(args) => export::eval_blob(&cli.inputs, &args),
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

/// English captions of a split, encoded through the cache (with token states if asked).
fn cached_english(
    teacher: &Teacher,
    cache: &TeacherCache,
    data: &Multi30k,
    split: Split,
    batch: usize,
    keep_token_states: bool,
) -> Result<(Vec<String>, TeacherOutputs, CacheStatus)> {
    let captions = data.captions(split, Lang::En)?;
    let bar = progress::bar(captions.len(), &format!("{split}.en"));
    let (outputs, status) = cache
        .load_or_encode(teacher, &format!("{split}.en"), &captions, keep_token_states, batch, |done| {
            bar.set_position(done as u64)
        })
        .with_context(|| format!("encoding {split} English captions"))?;
    bar.finish_and_clear();
    Ok((captions, outputs, status))
}

/// An index of the English captions of a Multi30k `split` (ids: 0-based caption lines) for
/// `student`, with CSLS terms from `lang`'s reference queries (never the split's own captions)
/// when `scoring` is CSLS; and the captions.
fn multi30k_index(
    inputs: &Inputs,
    data: &Multi30k,
    split: Split,
    lang: Lang,
    student: &Student,
    scoring: Scoring,
) -> Result<(IndexInput, Vec<String>)> {
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let (captions, english, _) =
        cached_english(&teacher, &cache, data, split, crate::cli::DEFAULT_TEACHER_BATCH as usize, false)?;
    let csls_reference = if scoring == Scoring::Csls {
        let (train, val) = (data.bitext(Split::Train, lang)?, data.bitext(Split::Val, lang)?);
        let reference = CslsReference::new(&train, &val).excluding(split);
        let tokenizer = &student.config().tokenizer;
        Some(reference.x().iter().map(|text| tokenize_sentence(tokenizer, text)).collect())
    } else {
        None
    };
    let ids =
        (0..captions.len()).map(|l| u32::try_from(l).context("too many documents")).collect::<Result<_>>()?;
    let source = format!("multi30k {split} en");
    Ok((IndexInput { documents: english.embeddings, ids, csls_reference, source }, captions))
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
