//! Command-line flags. These structs hold validated input only (every number range-checked
//! when parsed); [`crate::commands`] opens files and runs. Clap derives live only here: each
//! library enum a flag chooses has a CLI twin with a `From` impl, and [`TrainArgs::config`]
//! turns flags into the library's [`TrainConfig`] in one place.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::data::bitext_file::{DEFAULT_HELD_OUT, MIN_EVAL_PAIRS};
use crate::data::{BitextSpec, Lang, LangFiles, PairFiles, Split};
use crate::distill::config::{DEFAULT_RIDGE_LAMBDA, Start, TrainConfig};
use crate::distill::losses::{KdVariant, LossConfig, Method};
use crate::distill::optim::AdamWConfig;
use crate::distill::run_dir::CheckpointKind;
use crate::experiment::plan::ExperimentPreset;
use crate::student::Preset;
use crate::student::ridge::Ngrams;

/// Sentences per teacher batch when the cache must be filled (every command's default).
pub const DEFAULT_TEACHER_BATCH: u32 = 64;
/// Training pairs per step (`otkd train` and `otkd bench train`).
pub const DEFAULT_BATCH: u32 = 64;

/// A flag's copy of a library enum (same variants), so clap stays out of the library.
macro_rules! cli_enum {
    ($(#[$meta:meta])* $name:ident => $lib:ident { $($(#[$variant_meta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
        pub enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl From<$name> for $lib {
            fn from(arg: $name) -> Self {
                match arg {
                    $($name::$variant => $lib::$variant),+
                }
            }
        }
    };
}

cli_enum! {
    /// `--method`.
    MethodArg => Method {
        /// Optimal-transport token alignment + lambda x KD.
        Ot,
        /// Teacher-student KD on sentence embeddings.
        Kd,
    }
}

cli_enum! {
    /// `--kd-variant`.
    KdVariantArg => KdVariant {
        /// Embedding MSE only.
        Mse,
        /// MSE + in-batch similarity KL.
        Kl,
        /// MSE + InfoNCE over the batch, both directions.
        Infonce,
    }
}

cli_enum! {
    /// `--preset` of a student.
    PresetArg => Preset {
        /// <= 0.8 M parameters, 1 MiB of flash with 1,000 documents, 32 KiB of RAM.
        Nano,
        /// <= 1.5 M parameters (the device preset).
        Micro,
        /// <= 8 M parameters.
        Small,
    }
}

cli_enum! {
    /// `--preset` of an experiment.
    ExperimentPresetArg => ExperimentPreset {
        /// ay and cs, both starts, 2 seeds, short budgets.
        Quick,
        /// cs, ay, gn, qu x both starts x 3 seeds, a bitext sweep, de/fr/es.
        Full,
    }
}

cli_enum! {
    /// `--init` / `--inits`: where the weights start.
    StartArg => Start {
        /// The reduced-rank closed-form ridge fit.
        Ridge,
        /// Seeded random weights.
        Random,
    }
}

/// `--checkpoint`: which checkpoint of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointArg {
    /// The checkpoint with the best dev R@1, step 0 included (`checkpoint-best.safetensors`).
    Best,
    /// The last checkpoint (`checkpoint-last.safetensors`).
    Last,
}

impl From<CheckpointArg> for CheckpointKind {
    fn from(arg: CheckpointArg) -> Self {
        match arg {
            CheckpointArg::Best => CheckpointKind::BestDev,
            CheckpointArg::Last => CheckpointKind::Last,
        }
    }
}

/// otkd: distil a tiny multilingual retriever from an English teacher, with optimal transport
/// or classic knowledge distillation, and ship it to microcontrollers.
#[derive(Debug, Parser)]
#[command(name = "otkd", version, propagate_version = true)]
pub struct Cli {
    /// Inputs shared by every command.
    #[command(flatten)]
    pub inputs: Inputs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where data, teacher and cache live.
#[derive(Debug, Args)]
pub struct Inputs {
    /// Multi30k directory [env: OTKD_DATA; default: ../shared/data/multi30k]
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Teacher model directory in Hugging Face layout [env: OTKD_TEACHER; default: ../shared/models/all-MiniLM-L6-v2]
    #[arg(long, global = true, value_name = "DIR")]
    pub teacher: Option<PathBuf>,
    /// Cache directory for teacher outputs [env: OTKD_CACHE; default: .otkd-cache]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and validate the Multi30k data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Run the frozen English teacher.
    #[command(subcommand)]
    Teacher(TeacherCommand),
    /// Lower bounds on test_2016_flickr: teacher zero-shot on X, character n-gram TF-IDF and
    /// (--ridge) the closed-form ridge student.
    Baseline(BaselineArgs),
    /// Distil a student from the teacher over en-X bitext with OT or KD; dev R@1 every
    /// --eval-every steps into metrics.jsonl, test metrics of the last and best-dev checkpoints
    /// into final.json. Ctrl-C saves a checkpoint and exits; --resume continues bit for bit.
    Train(Box<TrainArgs>),
    /// Quantize a trained student to int8 and write a blob for the no_std runtime, with an index
    /// of English documents (and their CSLS hubness terms); prints the size budget.
    Export(ExportArgs),
    /// Answer a query with the int8 runtime on the host (the code the device runs): top-k
    /// document ids, scores and English captions.
    Query(QueryArgs),
    /// Retrieval metrics of a blob (int8, through the runtime) next to the f32 student, cosine
    /// and CSLS.
    EvalBlob(EvalBlobArgs),
    /// Test retrieval of a trained run (R@1/5/10, MRR; cosine and CSLS) on its own test set or
    /// any other: per language for a multilingual student.
    Eval(EvalArgs),
    /// Student embeddings of given texts (or of standard input, one per line), as `.npy` or
    /// JSON lines: from a run (f32) or a blob (the int8 runtime).
    Embed(StudentEmbedArgs),
    /// Benchmarks that print ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Answer the research question: train the grid of OT and KD runs (languages x starts x
    /// seeds x bitext sizes), then write report.md, summary.json and plots (SVG, PNG) to --out.
    /// Resumable: finished runs are kept, an interrupted one continues from its checkpoint
    /// (Ctrl-C saves; rerun the same command).
    Experiment(ExperimentArgs),
}

/// A bitext file flag: `FILE`, or `LANG=FILE` to name the language of its X side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitextArg {
    /// The language, when given as `LANG=`.
    pub lang: Option<Lang>,
    /// The file.
    pub path: PathBuf,
}

impl std::str::FromStr for BitextArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("an empty file name".into());
        }
        // `quy=pairs.tsv`; a path that merely contains '=' after a '/' keeps it.
        match s.split_once('=') {
            Some((tag, path)) if !tag.contains('/') && !path.is_empty() => {
                let lang = Lang::new(tag).map_err(|e| e.to_string())?;
                Ok(Self { lang: Some(lang), path: PathBuf::from(path) })
            }
            _ => Ok(Self { lang: None, path: PathBuf::from(s) }),
        }
    }
}

/// Where the pairs come from: Multi30k (the default) or the user's bitext files. Shared by
/// `train`, `eval`, `baseline`, `teacher encode` and `experiment`.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Your bitext (default: the Multi30k directory)")]
pub struct SourceArgs {
    /// Training bitext, one pair per line `X<TAB>English`, plain or gzip; `LANG=FILE` names its
    /// language (else --lang). Repeat, one per language, for a multilingual student.
    #[arg(long, value_name = "[LANG=]FILE")]
    pub bitext: Vec<BitextArg>,
    /// Training bitext as two line-aligned files: the language-X side (with --tgt; language from
    /// --lang).
    #[arg(long, value_name = "FILE", requires = "tgt")]
    pub src: Option<PathBuf>,
    /// The English side of --src.
    #[arg(long, value_name = "FILE", requires = "src")]
    pub tgt: Option<PathBuf>,
    /// Dev pairs (TSV, `[LANG=]FILE`); without it, --dev-size pairs of the training bitext are
    /// held out by a seeded split.
    #[arg(long, value_name = "[LANG=]FILE")]
    pub dev: Vec<BitextArg>,
    /// Dev pairs as two line-aligned files: the language-X side (with --dev-tgt).
    #[arg(long, value_name = "FILE", requires = "dev_tgt")]
    pub dev_src: Option<PathBuf>,
    /// The English side of --dev-src.
    #[arg(long, value_name = "FILE", requires = "dev_src")]
    pub dev_tgt: Option<PathBuf>,
    /// Test pairs (TSV, `[LANG=]FILE`); without it, --test-size pairs are held out.
    #[arg(long, value_name = "[LANG=]FILE")]
    pub test: Vec<BitextArg>,
    /// Test pairs as two line-aligned files: the language-X side (with --test-tgt).
    #[arg(long, value_name = "FILE", requires = "test_tgt")]
    pub test_src: Option<PathBuf>,
    /// The English side of --test-src.
    #[arg(long, value_name = "FILE", requires = "test_src")]
    pub test_tgt: Option<PathBuf>,
    /// Pairs held out for dev, per language, when no dev file is given.
    #[arg(long, default_value_t = DEFAULT_HELD_OUT, value_parser = held_out_size)]
    pub dev_size: usize,
    /// Pairs held out for test, per language, when no test file is given.
    #[arg(long, default_value_t = DEFAULT_HELD_OUT, value_parser = held_out_size)]
    pub test_size: usize,
    /// Seed of the held-out split.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
}

fn held_out_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (MIN_EVAL_PAIRS..=10_000_000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number of pairs from {MIN_EVAL_PAIRS} to 10000000")),
    }
}

impl SourceArgs {
    /// Whether any bitext flag is given (else the source is Multi30k).
    pub fn is_bitext(&self) -> bool {
        !self.bitext.is_empty() || self.src.is_some()
    }

    /// The bitext these flags name, `None` for Multi30k; `lang` (the command's `--lang`) names
    /// the language of files given without `LANG=`.
    pub fn spec(&self, lang: Option<Lang>) -> Result<Option<BitextSpec>> {
        let held_out_flags = !self.dev.is_empty()
            || self.dev_src.is_some()
            || !self.test.is_empty()
            || self.test_src.is_some();
        if !self.is_bitext() {
            if held_out_flags {
                anyhow::bail!(
                    "--dev and --test name the held-out pairs of a bitext: give --bitext or --src/--tgt too"
                );
            }
            return Ok(None);
        }
        let language = |arg_lang: Option<Lang>, flag: &str, path: &std::path::Path| -> Result<Lang> {
            let lang = arg_lang.or(lang).ok_or_else(|| {
                anyhow::anyhow!("{flag} {}: name its language with --lang or as LANG=FILE", path.display())
            })?;
            if lang.is_multilingual() {
                anyhow::bail!("{flag} {}: one language per file, not {lang}", path.display());
            }
            Ok(lang)
        };
        let mut langs: Vec<LangFiles> = Vec::new();
        for arg in &self.bitext {
            let lang = language(arg.lang, "--bitext", &arg.path)?;
            if langs.iter().any(|l| l.lang == lang) {
                anyhow::bail!("--bitext: language {lang} is given twice; one training file per language");
            }
            langs.push(LangFiles { lang, train: PairFiles::Tsv(arg.path.clone()), dev: None, test: None });
        }
        if let (Some(x), Some(en)) = (&self.src, &self.tgt) {
            let lang = language(None, "--src", x)?;
            if langs.iter().any(|l| l.lang == lang) {
                anyhow::bail!("--src: language {lang} already has a --bitext file");
            }
            langs.push(LangFiles {
                lang,
                train: PairFiles::Aligned { x: x.clone(), en: en.clone() },
                dev: None,
                test: None,
            });
        }
        let single = (langs.len() == 1).then(|| langs[0].lang);
        let mut place = |flag: &str, arg_lang: Option<Lang>, files: PairFiles, test: bool| -> Result<()> {
            let lang = arg_lang.or(single).ok_or_else(|| {
                anyhow::anyhow!("{flag} {files}: several languages train; name its language as LANG=FILE")
            })?;
            let entry = langs
                .iter_mut()
                .find(|l| l.lang == lang)
                .ok_or_else(|| anyhow::anyhow!("{flag} {files}: no training bitext is in {lang}"))?;
            let slot = if test { &mut entry.test } else { &mut entry.dev };
            if slot.replace(files).is_some() {
                anyhow::bail!("{flag}: {lang} is given two {} sets", if test { "test" } else { "dev" });
            }
            Ok(())
        };
        for arg in &self.dev {
            place("--dev", arg.lang, PairFiles::Tsv(arg.path.clone()), false)?;
        }
        if let (Some(x), Some(en)) = (&self.dev_src, &self.dev_tgt) {
            place("--dev-src", None, PairFiles::Aligned { x: x.clone(), en: en.clone() }, false)?;
        }
        for arg in &self.test {
            place("--test", arg.lang, PairFiles::Tsv(arg.path.clone()), true)?;
        }
        if let (Some(x), Some(en)) = (&self.test_src, &self.test_tgt) {
            place("--test-src", None, PairFiles::Aligned { x: x.clone(), en: en.clone() }, true)?;
        }
        Ok(Some(BitextSpec {
            langs,
            dev_size: self.dev_size,
            test_size: self.test_size,
            seed: self.split_seed,
        }))
    }
}

/// Flags of `otkd experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// The grid: quick (ay, cs; both starts; 2 seeds; under 15 minutes on 2 cores) or full (cs,
    /// ay, gn, qu x 3 seeds; a 500 / 1000 / 5000-pair sweep on ay, gn, qu (random start); de, fr, es with one
    /// seed; under 90 minutes on 2 cores).
    #[arg(long, value_enum, default_value_t = ExperimentPresetArg::Quick)]
    pub preset: ExperimentPresetArg,
    /// Keep only these languages (one the preset lacks joins its main grid); with bitext files,
    /// their languages form the main grid.
    #[arg(long, value_delimiter = ',')]
    pub langs: Option<Vec<Lang>>,
    /// Where the pairs come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Methods to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [MethodArg::Ot, MethodArg::Kd])]
    pub methods: Vec<MethodArg>,
    /// Starting weights: random, ridge (the closed-form fit), or both.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StartArg::Random, StartArg::Ridge])]
    pub inits: Vec<StartArg>,
    /// Seeds per configuration, 1 to 100 (replaces the preset's; higher-resource languages keep one).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: Option<u64>,
    /// Bitext sizes of the sweep: all or numbers of pairs, e.g. 500,1000,all (replaces the preset's).
    #[arg(long, value_delimiter = ',')]
    pub pairs: Option<Vec<PairsArg>>,
    /// Steps of every run, replacing the preset's budgets (for smoke runs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub steps: Option<u32>,
    /// Steps between dev evaluations with --steps (default: a tenth of --steps).
    #[arg(long, requires = "steps", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub eval_every: Option<u32>,
    /// Sentence-level KD term of both methods.
    #[arg(long, value_enum, default_value_t = KdVariantArg::Infonce)]
    pub kd_variant: KdVariantArg,
    /// Weight of KD's English term (0: the student never sees English).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f64)]
    pub english_weight: f64,
    /// Experiment directory [default: results/PRESET].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Teacher batch size when the cache must be filled.
    #[arg(long, default_value_t = DEFAULT_TEACHER_BATCH, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub teacher_batch: u32,
    /// Print summary.json instead of the headline.
    #[arg(long)]
    pub json: bool,
    /// Skip the last step: exporting the best student of the first language to `best.otkd` and
    /// answering example queries with the int8 runtime.
    #[arg(long)]
    pub no_export: bool,
}

/// How documents are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoringArg {
    /// Plain cosine.
    Cosine,
    /// CSLS, 2 cos(q, d) - r(d): documents that are near many queries (hubs) ranked down.
    Csls,
}

impl From<ScoringArg> for otkd_runtime::Scoring {
    fn from(s: ScoringArg) -> Self {
        match s {
            ScoringArg::Cosine => Self::Cosine,
            ScoringArg::Csls => Self::Csls,
        }
    }
}

/// Flags of `otkd export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run directory of `otkd train` (holds config.json and the checkpoints).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// The blob to write (atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Which checkpoint to export.
    #[arg(long, value_enum, default_value_t = CheckpointArg::Best)]
    pub checkpoint: CheckpointArg,
    /// Split of the run's source whose English sides form the document index (ids = 0-based
    /// lines of that split).
    #[arg(long, default_value_t = Split::Test)]
    pub index_split: Split,
    /// Your documents instead: one per line, or `id<TAB>text`; plain or gzip. English (encoded
    /// by the teacher) unless --docs-lang says otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "index_split")]
    pub docs: Option<PathBuf>,
    /// The documents are in the student's language (encoded by the student: monolingual
    /// retrieval on the device); give the language's tag.
    #[arg(long, value_name = "LANG", requires = "docs")]
    pub docs_lang: Option<Lang>,
    /// Do not write the documents' texts beside the blob (`BLOB.docs.tsv`, read by `query`).
    #[arg(long)]
    pub no_texts: bool,
    /// Write no document index.
    #[arg(long, conflicts_with_all = ["index_split", "docs"])]
    pub no_index: bool,
    /// csls stores each document's hubness term r(d) for CSLS search; cosine stores zeros.
    #[arg(long, value_enum, default_value_t = ScoringArg::Csls)]
    pub scoring: ScoringArg,
    /// Hybrid search: a lexicon of the documents' terms whose match adds to the dense score.
    /// auto: its weight chosen on the run's dev pairs (none when it does not help there); off: no
    /// lexicon; a number: that weight.
    #[arg(long, default_value = "auto", value_name = "auto|off|WEIGHT")]
    pub lexical: LexicalArg,
    /// Terms kept per document in the lexicon (its heaviest); fewer bytes, a little less recall.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub lexical_terms: Option<u32>,
    /// Print the budget as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--lexical`: whether and how an exported index gets a lexicon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LexicalArg {
    /// Weight chosen on the run's dev pairs.
    Auto,
    /// No lexicon.
    Off,
    /// This weight.
    Weight(f32),
}

impl std::str::FromStr for LexicalArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            _ => non_negative_f32(s)
                .map(Self::Weight)
                .map_err(|_| format!("{s:?} is neither \"auto\", \"off\" nor a weight >= 0")),
        }
    }
}

/// Flags of `otkd query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The blob (from `otkd export`).
    #[arg(long, value_name = "FILE")]
    pub blob: PathBuf,
    /// The query text, in the student's language; without it, queries are read from standard
    /// input, one per line (blank lines skipped).
    pub text: Option<String>,
    /// How many documents to return (1 to 100).
    #[arg(short, long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub k: u32,
    /// Ranking.
    #[arg(long, value_enum, default_value_t = ScoringArg::Csls)]
    pub scoring: ScoringArg,
    /// Print one JSON line per query: `{"query", "answers": [{"id", "score", "doc_id", "text"}]}`
    /// (ids and texts from the texts file `otkd export` writes beside the blob).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `otkd eval-blob`.
#[derive(Debug, Args)]
pub struct EvalBlobArgs {
    /// The blob (from `otkd export`), with an index of the --split English captions.
    #[arg(long, value_name = "FILE")]
    pub blob: PathBuf,
    /// Language X of the queries.
    #[arg(long)]
    pub lang: Lang,
    /// The split whose X captions are the queries (the one the index was built from).
    #[arg(long, default_value_t = Split::Test)]
    pub split: Split,
    /// Where the queries come from (with --run, the run's own source is the default).
    #[command(flatten)]
    pub source: SourceArgs,
    /// The run the blob was exported from: adds the f32 student's metrics on the same documents.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Which checkpoint of --run to compare with.
    #[arg(long, value_enum, default_value_t = CheckpointArg::Best)]
    pub checkpoint: CheckpointArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `otkd eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory of `otkd train`.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Which checkpoint.
    #[arg(long, value_enum, default_value_t = CheckpointArg::Best)]
    pub checkpoint: CheckpointArg,
    /// Languages to evaluate [default: each language the run trained on].
    #[arg(long, value_delimiter = ',')]
    pub langs: Option<Vec<Lang>>,
    /// Test pairs from elsewhere (default: the run's own source and held-out test lines).
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `otkd embed`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["run", "blob"])))]
pub struct StudentEmbedArgs {
    /// A run directory: embeddings of its f32 student.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// A blob: embeddings of the int8 runtime (what a device computes).
    #[arg(long, value_name = "FILE")]
    pub blob: Option<PathBuf>,
    /// Which checkpoint of --run.
    #[arg(long, value_enum, default_value_t = CheckpointArg::Best)]
    pub checkpoint: CheckpointArg,
    /// Texts to embed; without them, one text per line of standard input.
    pub texts: Vec<String>,
    /// Write a `[texts, dim]` float32 `.npy` here (atomically) instead of JSON lines on stdout.
    #[arg(long, value_name = "FILE")]
    pub npy: Option<PathBuf>,
}

/// `otkd data ...`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate every file (line counts, UTF-8, image ids, feature header) and print a table
    /// split x language of pairs, skipped pairs and mean words; exits non-zero on any defect.
    /// With bitext flags, check those files instead: pairs per language and split, and what
    /// was dropped.
    Check(CheckArgs),
}

/// Flags of `otkd data check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Language of bitext files given without `LANG=`.
    #[arg(long)]
    pub lang: Option<Lang>,
    /// Bitext files to check instead of the Multi30k directory.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print machine-readable JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A `--json` switch.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print machine-readable JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `otkd teacher ...`
#[derive(Debug, Subcommand)]
pub enum TeacherCommand {
    /// Encode every English caption of the given splits into the cache (sentence embeddings f32,
    /// token states f16); reports sentences per second. Entries already cached are reused.
    Encode(Box<EncodeArgs>),
    /// Print the tokens and sentence embedding of the given sentences.
    Embed(EmbedArgs),
}

/// Flags of `otkd teacher encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Splits to encode.
    #[arg(long, value_delimiter = ',', default_values_t = [Split::Train, Split::Dev, Split::Test])]
    pub splits: Vec<Split>,
    /// Language of bitext files given without `LANG=`.
    #[arg(long)]
    pub lang: Option<Lang>,
    /// Where the English sentences come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Sentences per batch (sentences of equal token length are batched together).
    #[arg(long, default_value_t = DEFAULT_TEACHER_BATCH, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `otkd teacher embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Sentences to embed.
    #[arg(required = true)]
    pub sentences: Vec<String>,
    /// Also print the last-layer token states.
    #[arg(long)]
    pub states: bool,
    /// Print JSON (full vectors) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `otkd baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Languages X to evaluate against English [default: every language of the source].
    #[arg(long, value_delimiter = ',')]
    pub langs: Option<Vec<Lang>>,
    /// Where the pairs come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Teacher batch size.
    #[arg(long, default_value_t = DEFAULT_TEACHER_BATCH, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Character n-gram range of the ridge student: auto (chosen on dev among 3-5, 2-4, 1-3 and
    /// 1-3/chars), MIN-MAX, or MIN-MAX/chars (every character a word); TF-IDF keeps 3-5.
    #[arg(long, default_value = "auto", requires = "ridge")]
    pub ngrams: NgramsArg,
    /// Also fit the closed-form ridge student (4096 hashed n-gram buckets -> the teacher's 384-d
    /// English embeddings, about 1.57 M parameters, penalty chosen on val): the bar a trained
    /// student has to clear.
    #[arg(long)]
    pub ridge: bool,
    /// Print machine-readable JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `--ngrams`: the tokenizer's character n-gram range, and whether every character is a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NgramsArg {
    /// Chosen per bitext by the closed-form ridge fit on dev
    /// ([`crate::student::ridge::choose_ngram_range`]).
    Auto,
    /// `MIN-MAX` chars, boundary marks included, `/chars` for character words.
    Fixed(Ngrams),
}

impl std::str::FromStr for NgramsArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        s.parse::<Ngrams>().map(Self::Fixed).map_err(|e| format!("neither \"auto\" nor a setting: {e}"))
    }
}

/// How many training pairs to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairsArg {
    /// Every pair.
    All,
    /// A seeded subset of this many pairs.
    Count(usize),
}

impl PairsArg {
    /// The number of pairs, `None` for all.
    pub fn count(self) -> Option<usize> {
        match self {
            PairsArg::All => None,
            PairsArg::Count(n) => Some(n),
        }
    }
}

impl std::str::FromStr for PairsArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!("{s:?} is neither \"all\" nor a positive number of pairs")),
                Ok(n) => Ok(Self::Count(n)),
            },
        }
    }
}

/// Flags of `otkd train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Distillation method: ot (Sinkhorn token alignment + lambda x KD) or kd (embedding MSE).
    #[arg(long, value_enum)]
    pub method: MethodArg,
    /// Language X (trained against English): a Multi30k code (default ay), the tag of files
    /// given without `LANG=`, or `ay+gn+qu` for one multilingual student; with several --bitext
    /// languages, the default trains on all of them.
    #[arg(long)]
    pub lang: Option<Lang>,
    /// Where the pairs come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Character n-gram range of the student's tokenizer: auto (the closed-form ridge fit on dev
    /// chooses among 3-5, 2-4, 1-3 and 1-3/chars, seconds each; 3-5 unless another is a point
    /// better), MIN-MAX, or MIN-MAX/chars (every character a word of its own: scripts in which a
    /// character is a word).
    #[arg(long, default_value = "auto")]
    pub ngrams: NgramsArg,
    /// Student size: nano (<= 0.8 M: 4608 buckets x 128, 1 layer, 16 words, output a 128-d PCA
    /// projection of the teacher's space; 1 MiB of flash with 1,000 documents), micro (<= 1.5 M
    /// parameters, the device preset: 5632 buckets x 192, 1 layer) or small (<= 8 M: 32768
    /// buckets x 192, 2 layers).
    #[arg(long, value_enum, default_value_t = PresetArg::Micro)]
    pub preset: PresetArg,
    /// Optimiser steps.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Pairs per step.
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(2..=4096))]
    pub batch: u32,
    /// Peak learning rate (AdamW; linear warmup, then cosine decay to 10%), in (0, 1].
    #[arg(long, default_value_t = 1e-3, value_parser = learning_rate)]
    pub lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub warmup: u32,
    /// AdamW weight decay (matrices only), in [0, 1).
    #[arg(long, default_value_t = 0.01, value_parser = weight_decay)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (> 0).
    #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
    pub clip_norm: f64,
    /// Seed of initialisation, bitext subset and batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training pairs: all, or a seeded subset of N (e.g. 1000, 5000) to simulate scarcer data.
    #[arg(long, default_value = "all")]
    pub pairs: PairsArg,
    /// Steps between dev (val) evaluations.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub eval_every: u32,
    /// Starting weights: ridge (the reduced-rank closed-form ridge fit of the teacher's embeddings
    /// from the training pairs, so training starts at the ridge student's accuracy) or random.
    #[arg(long, value_enum, default_value_t = StartArg::Ridge)]
    pub init: StartArg,
    /// Regularisation lambda of --init ridge, in [1e-6, 1e6].
    #[arg(long, default_value_t = DEFAULT_RIDGE_LAMBDA, value_parser = ridge_lambda)]
    pub ridge_lambda: f64,
    /// Sentence-level KD term: mse, or mse + in-batch similarity KL, or mse + InfoNCE (the
    /// default: the experiment's setting, README "Training a student").
    #[arg(long, value_enum, default_value_t = KdVariantArg::Infonce)]
    pub kd_variant: KdVariantArg,
    /// Temperature of the kl and infonce variants (> 0).
    #[arg(long, default_value_t = 0.05, value_parser = positive_f64)]
    pub temperature: f64,
    /// Weight of the English term |S(en) - T(en)|² of KD (1 in Reimers & Gurevych; 0, the
    /// default, skips the student's English pass: at the micro size it costs X -> en accuracy).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f64)]
    pub english_weight: f64,
    /// OT only: weight lambda (>= 0) of the KD sentence term added to the OT loss.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_f64)]
    pub ot_kd_weight: f64,
    /// OT only: Sinkhorn entropic regularisation epsilon, in [0.001, 10] (costs are in [0, 2]).
    #[arg(long, default_value_t = 0.05, value_parser = sinkhorn_epsilon)]
    pub epsilon: f32,
    /// OT only: Sinkhorn iteration cap, 1 to 10000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sinkhorn_iterations: u32,
    /// OT only: stop Sinkhorn once the marginal error (L1 of row sums) is below this (>= 0; 0
    /// runs every iteration).
    #[arg(long, default_value_t = 1e-3, value_parser = non_negative_f32)]
    pub sinkhorn_tolerance: f32,
    /// OT only: backpropagate through the unrolled Sinkhorn iterations (ablation) instead of
    /// holding the plan constant.
    #[arg(long)]
    pub ot_unrolled: bool,
    /// Run directory [default: runs/METHOD-LANG-PRESET-sSEED].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Teacher batch size when the cache must be filled.
    #[arg(long, default_value_t = DEFAULT_TEACHER_BATCH, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub teacher_batch: u32,
    /// Where training runs: cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Print final.json instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `--device` of `otkd train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU (candle, the reference kernels).
    Cpu,
    /// An NVIDIA GPU (candle's CUDA backend and the CUDA kernels).
    Cuda,
}

/// A finite number accepted by `ok`, else an error naming what is wanted.
fn number_in(text: &str, wanted: &str, ok: impl Fn(f64) -> bool) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && ok(v) => Ok(v),
        _ => Err(format!("{text:?} is not {wanted}")),
    }
}

fn non_negative_f64(text: &str) -> Result<f64, String> {
    number_in(text, "a finite number >= 0", |v| v >= 0.0)
}

fn non_negative_f32(text: &str) -> Result<f32, String> {
    number_in(text, "a finite number >= 0", |v| v >= 0.0 && v <= f64::from(f32::MAX)).map(|v| v as f32)
}

fn positive_f64(text: &str) -> Result<f64, String> {
    number_in(text, "a finite number > 0", |v| v > 0.0)
}

fn learning_rate(text: &str) -> Result<f64, String> {
    number_in(text, "a learning rate in (0, 1]", |v| v > 0.0 && v <= 1.0)
}

fn weight_decay(text: &str) -> Result<f64, String> {
    number_in(text, "a weight decay in [0, 1)", |v| (0.0..1.0).contains(&v))
}

fn sinkhorn_epsilon(text: &str) -> Result<f32, String> {
    // Costs are cosine distances in [0, 2]: far below 1e-3 the plan is a hard assignment that
    // Sinkhorn needs thousands of iterations to approach; above 10 it is uniform whatever the cost.
    number_in(text, "an epsilon in [0.001, 10]", |v| (1e-3..=10.0).contains(&v)).map(|v| v as f32)
}

fn ridge_lambda(text: &str) -> Result<f64, String> {
    // The features are L2-normalised counts: outside this range the fit is unregularised to
    // rounding or shrunk to zero. A factorisation that still fails is reported by the fit.
    number_in(text, "a ridge lambda in [1e-6, 1e6]", |v| (1e-6..=1e6).contains(&v))
}

impl TrainArgs {
    /// `otkd train --method METHOD` with every other flag at its default: the defaults live once,
    /// in the attributes above, and `otkd bench train` and `otkd experiment` reuse them.
    pub fn defaults(method: MethodArg) -> Self {
        let cli = Cli::try_parse_from(["otkd", "train", "--method", "kd"]).expect("the defaults parse");
        let Command::Train(mut args) = cli.command else { unreachable!("parsed a train command") };
        args.method = method;
        *args
    }

    /// The training configuration these flags ask for, in language `lang` (resolved against the
    /// source: [`TrainArgs::lang`] is only what was typed), for a teacher of width `teacher_dim`.
    pub fn config(&self, lang: Lang, teacher_dim: usize) -> Result<TrainConfig> {
        let method = self.method.into();
        let preset: Preset = self.preset.into();
        let mut student = preset.validated_config(teacher_dim)?;
        if let NgramsArg::Fixed(ngrams) = self.ngrams {
            student.tokenizer = ngrams.apply(student.tokenizer);
        }
        Ok(TrainConfig {
            method,
            lang,
            preset,
            student,
            steps: self.steps as usize,
            batch: self.batch as usize,
            optimizer: AdamWConfig {
                lr: self.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.weight_decay,
                warmup_steps: self.warmup as usize,
                total_steps: self.steps as usize,
                clip_norm: self.clip_norm,
            },
            loss: LossConfig {
                method,
                kd_variant: self.kd_variant.into(),
                temperature: self.temperature,
                english_weight: self.english_weight,
                ot_kd_weight: self.ot_kd_weight,
                epsilon: self.epsilon,
                sinkhorn_iterations: self.sinkhorn_iterations,
                sinkhorn_tolerance: self.sinkhorn_tolerance,
                ot_unrolled: self.ot_unrolled,
            },
            seed: self.seed,
            pairs: self.pairs.count(),
            eval_every: self.eval_every as usize,
            start: self.init.into(),
            ridge_lambda: self.ridge_lambda,
        })
    }
}

/// `otkd bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Teacher encoding throughput (sentences/second) at several batch sizes, on val English
    /// captions, with the ratio to batch size 1 measured in the same run.
    Teacher(BenchTeacherArgs),
    /// Training throughput (pairs/second) of kd and ot on the same student, bitext and batch,
    /// with the ot/kd cost ratio measured in the same run.
    Train(BenchTrainArgs),
    /// Query latency (encode + search over the blob's index) of the int8 runtime against the f32
    /// student on the same queries and documents, alternated, with their ratio.
    Query(BenchQueryArgs),
}

/// Which side `otkd bench query` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSides {
    /// Both, alternated.
    Both,
    /// Only the int8 runtime, once (for `valgrind --tool=callgrind`).
    Runtime,
}

/// Flags of `otkd bench query`.
#[derive(Debug, Args)]
pub struct BenchQueryArgs {
    /// The blob (from `otkd export`, with an index).
    #[arg(long, value_name = "FILE")]
    pub blob: PathBuf,
    /// The run the blob was exported from (the f32 side).
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Language of the queries (test_2016_flickr captions).
    #[arg(long, default_value_t = Lang::AY)]
    pub lang: Lang,
    /// Queries per pass (0 measures the fixed cost of loading, for instruction counts).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub queries: u32,
    /// Alternated rounds (runtime pass, then f32 pass, per round).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Sides to run.
    #[arg(long, value_enum, default_value_t = BenchSides::Both)]
    pub only: BenchSides,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `otkd bench train`.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Language X.
    #[arg(long, default_value_t = Lang::AY)]
    pub lang: Lang,
    /// Student size.
    #[arg(long, value_enum, default_value_t = PresetArg::Micro)]
    pub preset: PresetArg,
    /// Pairs per step.
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(2..=4096))]
    pub batch: u32,
    /// Steps timed per configuration (after 5 warm-up steps).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Starting weights: ridge (what `otkd train` does by default; OT then runs 25-30 Sinkhorn
    /// iterations a step) or random (about 4).
    #[arg(long, value_enum, default_value_t = StartArg::Ridge)]
    pub init: StartArg,
    /// Configurations to time, in this order (default: all), named `METHOD-VARIANT[-en1]`:
    /// kd-mse, kd-mse-en1, kd-kl, kd-kl-en1, kd-infonce, kd-infonce-en1, ot-mse, ot-mse-en1,
    /// ot-infonce, ot-infonce-en1 (`-en1`: English term at weight 1, else 0).
    #[arg(long, value_delimiter = ',', value_parser = bench_train_config)]
    pub configs: Vec<BenchTrainConfig>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One configuration of `otkd bench train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BenchTrainConfig {
    /// OT or KD.
    pub method: Method,
    /// The KD term.
    pub kd_variant: KdVariant,
    /// Whether the English term is on (weight 1) or off (0).
    pub english: bool,
}

impl BenchTrainConfig {
    /// Every configuration, in the default order.
    pub fn all() -> Vec<Self> {
        let mut out = Vec::new();
        for method in [Method::Kd, Method::Ot] {
            for kd_variant in [KdVariant::Mse, KdVariant::Kl, KdVariant::Infonce] {
                for english in [false, true] {
                    out.push(Self { method, kd_variant, english });
                }
            }
        }
        out
    }

    /// `kd-mse`, `ot-infonce-en1`, ...
    pub fn label(&self) -> String {
        let method = match self.method {
            Method::Kd => "kd",
            Method::Ot => "ot",
        };
        let variant = match self.kd_variant {
            KdVariant::Mse => "mse",
            KdVariant::Kl => "kl",
            KdVariant::Infonce => "infonce",
        };
        format!("{method}-{variant}{}", if self.english { "-en1" } else { "" })
    }
}

fn bench_train_config(text: &str) -> Result<BenchTrainConfig, String> {
    BenchTrainConfig::all()
        .into_iter()
        .find(|c| c.label() == text)
        .ok_or_else(|| format!("{text:?} is not one of kd-mse, kd-mse-en1, ..., ot-infonce-en1"))
}

/// Flags of `otkd bench teacher`.
#[derive(Debug, Args)]
pub struct BenchTeacherArgs {
    /// How many val captions to encode per measurement.
    #[arg(long, default_value_t = 1014, value_parser = clap::value_parser!(u32).range(1..=1014))]
    pub sentences: u32,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 32, 64, 128])]
    pub batch_sizes: Vec<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_languages_and_global_paths() {
        let cli =
            Cli::try_parse_from(["otkd", "baseline", "--langs", "ay,cs", "--data", "/d", "--json"]).unwrap();
        assert_eq!(cli.inputs.data, Some(PathBuf::from("/d")));
        let Command::Baseline(args) = cli.command else { panic!("not baseline") };
        assert_eq!(args.langs, Some(vec![Lang::AY, Lang::CS]));
        assert!(args.json);
    }

    #[test]
    fn train_defaults_and_pairs() {
        let cli = Cli::try_parse_from(["otkd", "train", "--method", "ot", "--pairs", "1000"]).unwrap();
        let Command::Train(args) = cli.command else { panic!("not train") };
        assert_eq!(args.method, MethodArg::Ot);
        assert_eq!(args.pairs, PairsArg::Count(1000));
        assert_eq!(args.lang, None);
        assert!(Cli::try_parse_from(["otkd", "train", "--method", "kd", "--pairs", "0"]).is_err());
        let defaults = TrainArgs::defaults(MethodArg::Ot);
        assert_eq!((defaults.method, defaults.steps, defaults.pairs), (MethodArg::Ot, 1500, PairsArg::All));
        // The experiment's settings (README "The research question").
        assert_eq!((defaults.kd_variant, defaults.english_weight), (KdVariantArg::Infonce, 0.0));
        assert!(Cli::try_parse_from(["otkd", "train", "--method", "xx"]).is_err());
    }

    #[test]
    fn experiment_flags() {
        let cli = Cli::try_parse_from([
            "otkd",
            "experiment",
            "--preset",
            "full",
            "--langs",
            "ay,gn",
            "--methods",
            "kd",
            "--inits",
            "ridge",
            "--seeds",
            "2",
            "--pairs",
            "500,all",
        ])
        .unwrap();
        let Command::Experiment(args) = cli.command else { panic!("not experiment") };
        assert_eq!(args.preset, ExperimentPresetArg::Full);
        assert_eq!(args.langs, Some(vec![Lang::AY, Lang::GN]));
        assert_eq!(
            (args.methods, args.inits, args.seeds),
            (vec![MethodArg::Kd], vec![StartArg::Ridge], Some(2))
        );
        assert_eq!(args.pairs, Some(vec![PairsArg::Count(500), PairsArg::All]));
        let cli = Cli::try_parse_from(["otkd", "experiment"]).unwrap();
        let Command::Experiment(args) = cli.command else { panic!("not experiment") };
        assert_eq!(
            (args.preset, args.kd_variant, args.english_weight),
            (ExperimentPresetArg::Quick, KdVariantArg::Infonce, 0.0)
        );
        for bad in [
            &["--seeds", "0"][..],
            &["--preset", "huge"],
            &["--methods", "ot,xx"],
            &["--inits", "zero"],
            &["--pairs", "0"],
            &["--eval-every", "5"],
            &["--steps", "0"],
            &["--english-weight", "-1"],
        ] {
            let argv: Vec<&str> = ["otkd", "experiment"].iter().chain(bad).copied().collect();
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ngram_ranges_parse_or_are_refused() {
        assert_eq!("auto".parse::<NgramsArg>(), Ok(NgramsArg::Auto));
        assert_eq!("1-3".parse::<NgramsArg>(), Ok(NgramsArg::Fixed(Ngrams::range(1, 3))));
        assert_eq!(
            "1-3/chars".parse::<NgramsArg>(),
            Ok(NgramsArg::Fixed(Ngrams { min: 1, max: 3, char_words: true }))
        );
        for bad in ["0-3", "4-2", "1-9", "3", "a-b", "", "1-3/", "1-3/words", "/chars"] {
            assert!(bad.parse::<NgramsArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_unknown_language_and_zero_batch() {
        assert!(Cli::try_parse_from(["otkd", "baseline", "--langs", "a b"]).is_err());
        assert!(Cli::try_parse_from(["otkd", "teacher", "encode", "--batch", "0"]).is_err());
    }
}
