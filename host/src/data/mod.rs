//! Bitext in: the Multi30k source (the shipped default and the benchmark), a user's bitext files,
//! language tags, and the checks that keep both sides of every pair aligned.
//!
//! Every command reads its pairs through a [`Source`]: for a split and a language it gives the
//! [`Bitext`] (the pairs) and the English sentence list the pairs' `line` index into (what the
//! teacher encodes once and caches). Every defect is a [`DataError`] that names the file and,
//! where it applies, the 1-based line.

pub mod bitext_file;
mod documents;
mod lang;
pub mod multi30k;
pub mod npy;
mod source;

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use bitext_file::{BitextFiles, BitextSpec, LangFiles, PairFiles};
pub use documents::Documents;
pub use lang::{Lang, MAX_TAG_CHARS, ParseLangError};
pub use multi30k::{CheckReport, Multi30k, TEST_FEATURE_SHAPE, TEST_FEATURES_FILE};
pub use npy::{ImageFeatures, read_npy_f32};
pub use source::{Source, SourceSpec};

/// The part of a corpus a pair belongs to. Displayed with Multi30k's file stems (`val`,
/// `test_2016_flickr`); [`Source::split_name`] names them for any source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Split {
    /// Training pairs (Multi30k: 29,000 captions).
    #[serde(rename = "train")]
    Train,
    /// Dev pairs, for choosing (Multi30k: the 1,014 `val` captions).
    #[serde(rename = "val")]
    Dev,
    /// Test pairs, for reporting (Multi30k: the 1,000 captions of the 2016 Flickr test set).
    #[serde(rename = "test_2016_flickr")]
    Test,
}

impl Split {
    /// Every split, in file order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    /// Multi30k file stem: `"train"`, `"val"`, `"test_2016_flickr"`.
    pub fn stem(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "val",
            Split::Test => "test_2016_flickr",
        }
    }

    /// Canonical Multi30k line count: 29000, 1014, 1000.
    pub fn expected_lines(self) -> usize {
        match self {
            Split::Train => 29000,
            Split::Dev => 1014,
            Split::Test => 1000,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stem())
    }
}

impl FromStr for Split {
    type Err = ParseEnumError;

    /// Accepts the stem (case-insensitive) and the aliases `dev` (val) and `test` (test_2016_flickr).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "dev" => Ok(Split::Dev),
            "test_2016_flickr" | "test" => Ok(Split::Test),
            _ => Err(ParseEnumError(format!(
                "unknown split {s:?}; valid: train, val (or dev), test_2016_flickr (or test)"
            ))),
        }
    }
}

/// Error of [`Split::from_str`]; the message lists the valid values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseEnumError(String);

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn tried_suffix(tried: &[PathBuf]) -> String {
    if tried.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        format!(" (tried: {})", list.join(", "))
    }
}

/// Every defect the loader can meet; each names the file (and the 1-based line where it applies).
/// Fields: `path` is the file or directory concerned, `line`/`first_line` are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A directory is missing; `tried` lists the candidates of [`resolve_data_dir`] (else empty).
    #[error("directory not found: {path}{}", tried_suffix(.tried))]
    MissingDir {
        /// The directory.
        path: PathBuf,
        /// Every candidate tried.
        tried: Vec<PathBuf>,
    },
    /// A file is missing.
    #[error("file not found: {path}")]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A `.gz` file is not valid gzip.
    #[error("gzip decode error in {path}: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{path}: line {line} is not valid UTF-8")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
    },
    /// Two files of one split differ in length (`path` should have as many lines as `expected_path`).
    #[error(
        "{split}: {path} has {lines} lines but {expected_path} has {expected_lines}; the files are not aligned"
    )]
    LineCountMismatch {
        /// The split.
        split: Split,
        /// The file of the other length.
        path: PathBuf,
        /// Its lines.
        lines: usize,
        /// The file it must align with (English).
        expected_path: PathBuf,
        /// That file's lines.
        expected_lines: usize,
    },
    /// A file's length differs from the canonical Multi30k size of its split (reported by `check`).
    #[error("{split}: {path} has {lines} lines, expected {expected}")]
    UnexpectedLineCount {
        /// The split.
        split: Split,
        /// The file.
        path: PathBuf,
        /// Its lines.
        lines: usize,
        /// The canonical count.
        expected: usize,
    },
    /// Image-id lines are empty.
    #[error("{path}: {count} empty image id line(s), first at line {first_line}")]
    EmptyImageIds {
        /// The image split file.
        path: PathBuf,
        /// Empty lines.
        count: usize,
        /// The first, 1-based.
        first_line: usize,
    },
    /// Image ids repeat within a split.
    #[error("{path}: {count} duplicated image id(s), first {first:?} at line {first_line}")]
    DuplicateImageIds {
        /// The image split file.
        path: PathBuf,
        /// Duplicated ids.
        count: usize,
        /// The first duplicated id.
        first: String,
        /// Its line, 1-based.
        first_line: usize,
    },
    /// The `.npy` file cannot be decoded (header, format version, dtype or order).
    #[error("{path}: bad .npy file: {reason}")]
    BadNpy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The `.npy` array has another shape.
    #[error("{path}: .npy shape {shape:?}, expected {expected:?}")]
    NpyShape {
        /// The file.
        path: PathBuf,
        /// Its shape.
        shape: Vec<usize>,
        /// The expected shape.
        expected: Vec<usize>,
    },
    /// The `.npy` data is shorter or longer than its header says.
    #[error("{path}: .npy data has {bytes} bytes, the header implies {expected}")]
    NpyDataLength {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        bytes: usize,
        /// Bytes the header implies.
        expected: usize,
    },
    /// Image features hold NaN or infinities.
    #[error("{path}: {count} non-finite value(s), first at row {row}, column {col} (0-based)")]
    NonFiniteFeatures {
        /// The file.
        path: PathBuf,
        /// Non-finite values.
        count: usize,
        /// Row of the first.
        row: usize,
        /// Column of the first.
        col: usize,
    },
    /// A bitext file has no non-empty line.
    #[error("{path}: the file is empty")]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A TSV line has no tab between its two sides.
    #[error("{path}: line {line} has no tab; expected `X<TAB>English`")]
    MissingTab {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
    },
    /// A TSV line has more than one tab, so its sides are ambiguous.
    #[error("{path}: line {line} has more than one tab; expected `X<TAB>English`")]
    ExtraTab {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
    },
    /// The two files of an aligned pair differ in length.
    #[error("{path} has {lines} lines but {other} has {other_lines}; the files are not line-aligned")]
    UnalignedFiles {
        /// The language-X file.
        path: PathBuf,
        /// Its lines.
        lines: usize,
        /// The English file.
        other: PathBuf,
        /// Its lines.
        other_lines: usize,
    },
    /// A documents file line is unusable.
    #[error("{path}: line {line}: {reason}")]
    Documents {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No bitext file was given.
    #[error("no bitext: give --bitext FILE or --src FILE --tgt FILE")]
    NoBitext,
    /// One language was given twice (or a joined tag where one language is expected).
    #[error("language {lang} is given twice (or is not one language); give each language its files once")]
    LangTwice {
        /// The language.
        lang: Lang,
    },
    /// The held-out dev and test sets would leave no training pairs.
    #[error(
        "{file} ({lang}): {pairs} usable pairs cannot give {dev} dev and {test} test pairs and still train; lower --dev-size / --test-size or give --dev / --test files"
    )]
    HeldOutTooLarge {
        /// The language.
        lang: Lang,
        /// The training file(s).
        file: String,
        /// Usable pairs.
        pairs: usize,
        /// Dev pairs asked.
        dev: usize,
        /// Test pairs asked.
        test: usize,
    },
    /// A dev or test set is too small to evaluate.
    #[error("{file} ({lang}): {pairs} {what} pairs; at least {min} are needed to evaluate", min = bitext_file::MIN_EVAL_PAIRS)]
    EvalSetTooSmall {
        /// `"dev"` or `"test"`.
        what: &'static str,
        /// The language.
        lang: Lang,
        /// Where the set came from.
        file: String,
        /// Pairs in it.
        pairs: usize,
    },
    /// The source has no pairs in this language.
    #[error("{source_name} has no {lang} pairs (it has: {available})")]
    UnknownLang {
        /// The language asked for.
        lang: Lang,
        /// The source.
        source_name: String,
        /// Its languages.
        available: String,
    },
    /// A run's bitext files changed since it was trained, so its held-out lines would differ.
    #[error(
        "{what}: the bitext files ({files}) changed since the run was trained; restore them or train again"
    )]
    BitextChanged {
        /// The run directory or file that recorded them.
        what: String,
        /// The files.
        files: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Data types
// ---------------------------------------------------------------------------------------------

/// One aligned pair.
#[derive(Clone, Debug)]
pub struct Pair {
    /// 0-based index in the split's English sentence list ([`Source::english`]): the row of its
    /// teacher outputs (Multi30k: the caption line, = the image's index).
    pub line: usize,
    /// Language of the X side (one language, also in a multilingual bitext).
    pub lang: Lang,
    /// The English caption.
    pub en: String,
    /// The caption in language X.
    pub x: String,
}

/// English–X pairs of one split, empty lines on either side skipped; a multilingual bitext holds
/// each language's pairs in one block, in the order of the tag's languages.
#[derive(Clone, Debug)]
pub struct Bitext {
    /// The split.
    pub split: Split,
    /// Language X (a joined tag for a multilingual bitext).
    pub lang: Lang,
    /// The pairs with both sides non-empty, in line order.
    pub pairs: Vec<Pair>,
    /// 0-based line indices skipped because the English or the X side is empty.
    pub skipped: Vec<usize>,
    /// Lines in each of the two files.
    pub total_lines: usize,
}

impl Bitext {
    /// English sides, in pair order.
    pub fn en(&self) -> Vec<&str> {
        self.pairs.iter().map(|p| p.en.as_str()).collect()
    }

    /// X sides, in pair order.
    pub fn x(&self) -> Vec<&str> {
        self.pairs.iter().map(|p| p.x.as_str()).collect()
    }

    /// 0-based line index of each pair.
    pub fn lines(&self) -> Vec<usize> {
        self.pairs.iter().map(|p| p.line).collect()
    }

    /// The pair ranges of each language, in order (one range for a single language): a
    /// multilingual set is evaluated per language, since its languages share English documents.
    pub fn blocks(&self) -> Vec<std::ops::Range<usize>> {
        let mut blocks: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, pair) in self.pairs.iter().enumerate() {
            match blocks.last_mut() {
                Some(last) if self.pairs[last.start].lang == pair.lang => last.end = i + 1,
                _ => blocks.push(i..i + 1),
            }
        }
        blocks
    }

    /// Concatenates single-language bitexts of one split into a multilingual one.
    pub fn concat(split: Split, lang: Lang, parts: Vec<Bitext>) -> Bitext {
        let mut out = Bitext { split, lang, pairs: Vec::new(), skipped: Vec::new(), total_lines: 0 };
        for part in parts {
            out.pairs.extend(part.pairs);
            out.skipped.extend(part.skipped);
            out.total_lines += part.total_lines;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            DataError::MissingFile { path: path.to_path_buf() }
        } else {
            DataError::Io { path: path.to_path_buf(), source: e }
        }
    })
}

pub(crate) fn read_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    gunzip(path, &read_file(path)?)
}

fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip { path: path.to_path_buf(), source: e })?;
    Ok(out)
}

/// The lines of a text file, plain or gzip (told by its magic bytes, not its name), as
/// [`split_lines`] gives them; and the file's bytes as stored (for checksums).
pub(crate) fn read_text_lines(path: &Path) -> Result<(Vec<String>, Vec<u8>), DataError> {
    let raw = read_file(path)?;
    let lines = if raw.starts_with(&[0x1f, 0x8b]) {
        split_lines(path, &gunzip(path, &raw)?)?
    } else {
        split_lines(path, &raw)?
    };
    Ok((lines, raw))
}

/// Splits on `\n` (a final newline does not start a new line), decodes each line as UTF-8
/// (1-based line number on failure), strips a trailing `\r` and a leading BOM, and maps
/// whitespace-only lines to `""`.
pub(crate) fn split_lines(path: &Path, bytes: &[u8]) -> Result<Vec<String>, DataError> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut line = std::str::from_utf8(raw)
            .map_err(|_| DataError::InvalidUtf8 { path: path.to_path_buf(), line: i + 1 })?;
        if i == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.trim().is_empty() {
            out.push(String::new());
        } else {
            out.push(line.to_string());
        }
    }
    Ok(out)
}

/// Resolves the data directory: `--data`, else a non-empty `OTKD_DATA` (authoritative: an error
/// if it is not a directory), else `../shared/data/multi30k` relative to the current directory,
/// then to the workspace root ([`crate::paths::candidates`]). Errors with
/// [`DataError::MissingDir`] listing every candidate tried.
pub fn resolve_data_dir(flag: Option<&Path>) -> Result<PathBuf, DataError> {
    use crate::paths::{DATA_ENV, DEFAULT_DATA, resolve_dir};
    resolve_dir(flag, DATA_ENV, DEFAULT_DATA)
        .map(|dir| fs::canonicalize(&dir).unwrap_or(dir))
        .map_err(|tried| DataError::MissingDir { path: tried[0].clone(), tried })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------
