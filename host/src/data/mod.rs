//! Multi30k loader and validator (layout and known defects: `shared/data/multi30k/README.md`).
//!
//! Line `i` of every file of one split describes the same image. Captions are gzip'd UTF-8, one
//! caption a line; an empty (or whitespace-only) line means "no translation" and is kept as `""`
//! by [`Multi30k::captions`]; [`Multi30k::bitext`] skips such pairs (recording their line) and never
//! pairs a caption with a neighbour's.
//!
//! The loaders check what they need to stay aligned (both sides of a bitext have the same line
//! count, the feature file has the right shape); [`Multi30k::check`] additionally compares every
//! file with the canonical Multi30k sizes and collects every defect it finds.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Rows × columns of the ResNet-50 test feature matrix.
pub const TEST_FEATURE_SHAPE: [usize; 2] = [1000, 2048];

/// File name of the test image features, under `features/`.
pub const TEST_FEATURES_FILE: &str = "test_2016_flickr.resnet50-avgpool.npy";

// ---------------------------------------------------------------------------------------------
// Languages and splits
// ---------------------------------------------------------------------------------------------

/// A Multi30k language (README table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lang {
    /// English, the teacher's language.
    #[serde(rename = "en")]
    En,
    /// German (human translation).
    #[serde(rename = "de")]
    De,
    /// French (human translation).
    #[serde(rename = "fr")]
    Fr,
    /// Spanish (machine translation).
    #[serde(rename = "es")]
    Es,
    /// Czech (human translation).
    #[serde(rename = "cs")]
    Cs,
    /// Aymara (machine translation).
    #[serde(rename = "ay")]
    Ay,
    /// Guarani (machine translation).
    #[serde(rename = "gn")]
    Gn,
    /// Quechua (machine translation).
    #[serde(rename = "qu")]
    Qu,
}

impl Lang {
    /// All languages, English (the pivot) first, in README order.
    pub const ALL: [Lang; 8] =
        [Lang::En, Lang::De, Lang::Fr, Lang::Es, Lang::Cs, Lang::Ay, Lang::Gn, Lang::Qu];

    /// ISO 639-1 code as used in the file names (`"ay"`).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Fr => "fr",
            Lang::Es => "es",
            Lang::Cs => "cs",
            Lang::Ay => "ay",
            Lang::Gn => "gn",
            Lang::Qu => "qu",
        }
    }

    /// English name (`"Aymara"`).
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::De => "German",
            Lang::Fr => "French",
            Lang::Es => "Spanish",
            Lang::Cs => "Czech",
            Lang::Ay => "Aymara",
            Lang::Gn => "Guarani",
            Lang::Qu => "Quechua",
        }
    }

    /// Resource class from the README table: `"pivot"` (en), `"high-resource"` (de, fr, es),
    /// `"medium-resource"` (cs), `"low-resource"` (ay, gn, qu).
    pub fn resource(self) -> &'static str {
        match self {
            Lang::En => "pivot",
            Lang::De | Lang::Fr | Lang::Es => "high-resource",
            Lang::Cs => "medium-resource",
            Lang::Ay | Lang::Gn | Lang::Qu => "low-resource",
        }
    }

    /// True for the NLLB-200 machine translations (es, ay, gn, qu): treat their numbers as synthetic.
    pub fn machine_translated(self) -> bool {
        matches!(self, Lang::Es | Lang::Ay | Lang::Gn | Lang::Qu)
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Error of [`Lang::from_str`] / [`Split::from_str`]; the message lists the valid values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseEnumError(String);

impl FromStr for Lang {
    type Err = ParseEnumError;

    /// Accepts the code or the English name, case-insensitively (`"ay"`, `"Aymara"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Lang::ALL
            .into_iter()
            .find(|l| t.eq_ignore_ascii_case(l.code()) || t.eq_ignore_ascii_case(l.name()))
            .ok_or_else(|| {
                let codes: Vec<&str> = Lang::ALL.iter().map(|l| l.code()).collect();
                ParseEnumError(format!("unknown language {s:?}; valid codes: {}", codes.join(", ")))
            })
    }
}

/// A Multi30k split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Split {
    /// 29,000 training captions.
    #[serde(rename = "train")]
    Train,
    /// 1,014 validation (dev) captions.
    #[serde(rename = "val")]
    Val,
    /// The 1,000 captions of the 2016 Flickr test set.
    #[serde(rename = "test_2016_flickr")]
    Test2016Flickr,
}

impl Split {
    /// Every split, in file order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test2016Flickr];

    /// File stem: `"train"`, `"val"`, `"test_2016_flickr"`.
    pub fn stem(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test2016Flickr => "test_2016_flickr",
        }
    }

    /// Canonical line count: 29000, 1014, 1000.
    pub fn expected_lines(self) -> usize {
        match self {
            Split::Train => 29000,
            Split::Val => 1014,
            Split::Test2016Flickr => 1000,
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
            "val" | "dev" => Ok(Split::Val),
            "test_2016_flickr" | "test" => Ok(Split::Test2016Flickr),
            _ => Err(ParseEnumError(format!(
                "unknown split {s:?}; valid: train, val (or dev), test_2016_flickr (or test)"
            ))),
        }
    }
}

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
    /// The `.npy` header cannot be parsed or is not f16/f32 little-endian C order.
    #[error("{path}: bad .npy header: {reason}")]
    BadNpyHeader {
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
}

// ---------------------------------------------------------------------------------------------
// Data types
// ---------------------------------------------------------------------------------------------

/// One aligned caption pair.
#[derive(Clone, Debug)]
pub struct Pair {
    /// 0-based line index in the split's files (= the image's index).
    pub line: usize,
    /// The English caption.
    pub en: String,
    /// The caption in language X.
    pub x: String,
}

/// English–X caption pairs of one split, empty lines on either side skipped.
#[derive(Clone, Debug)]
pub struct Bitext {
    /// The split.
    pub split: Split,
    /// Language X.
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
}

/// A dense row-major f32 matrix read from a `.npy` file.
#[derive(Clone)]
pub struct ImageFeatures {
    /// Rows (images).
    pub rows: usize,
    /// Columns (feature dimensions).
    pub cols: usize,
    /// Row-major, `rows * cols` values.
    pub data: Vec<f32>,
}

impl ImageFeatures {
    /// Row `i` (panics if out of range).
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.rows, "row {i} out of range ({} rows)", self.rows);
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

impl fmt::Debug for ImageFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageFeatures")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

/// One split × language row of [`CheckReport`].
#[derive(Clone, Debug, Serialize)]
pub struct CheckRow {
    /// The split.
    pub split: Split,
    /// The language.
    pub lang: Lang,
    /// Lines of the file.
    pub lines: usize,
    /// Pairs with English with both sides non-empty.
    pub pairs: usize,
    /// Lines skipped for an empty side.
    pub skipped: usize,
    /// Mean whitespace-separated words of the non-empty X captions.
    pub mean_words: f64,
}

/// Result of [`Multi30k::check`].
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The data directory checked.
    pub root: PathBuf,
    /// One row per split x language.
    pub rows: Vec<CheckRow>,
    /// Display of every [`DataError`] met.
    pub defects: Vec<String>,
    /// Lines of each `image_splits/{stem}.txt` that could be read.
    pub image_ids: Vec<(Split, usize)>,
    /// Shape of the test features if they could be read.
    pub features: Option<(usize, usize)>,
}

impl CheckReport {
    /// True when no defect was found.
    pub fn is_ok(&self) -> bool {
        self.defects.is_empty()
    }

    /// Human-readable table (split × language: lines, pairs, skipped, mean words), then the
    /// image splits, the features and the defects.
    pub fn render_table(&self) -> String {
        use fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "Multi30k data: {}", self.root.display());
        let _ = writeln!(
            s,
            "{:<17} {:<4} {:<8} {:<16} {:>6} {:>6} {:>7} {:>10}",
            "split", "lang", "name", "kind", "lines", "pairs", "skipped", "mean words"
        );
        for r in &self.rows {
            let kind = if r.lang.machine_translated() {
                format!("{} (MT)", r.lang.resource())
            } else {
                r.lang.resource().to_string()
            };
            let _ = writeln!(
                s,
                "{:<17} {:<4} {:<8} {:<16} {:>6} {:>6} {:>7} {:>10.2}",
                r.split.stem(),
                r.lang.code(),
                r.lang.name(),
                kind,
                r.lines,
                r.pairs,
                r.skipped,
                r.mean_words
            );
        }
        if !self.image_ids.is_empty() {
            let parts: Vec<String> =
                self.image_ids.iter().map(|(sp, n)| format!("{} {n}", sp.stem())).collect();
            let _ = writeln!(s, "image splits: {}", parts.join(", "));
        }
        match self.features {
            Some((r, c)) => {
                let _ = writeln!(s, "test image features: {r} x {c}");
            }
            None => {
                let _ = writeln!(s, "test image features: unavailable");
            }
        }
        if self.defects.is_empty() {
            let _ = writeln!(s, "defects: none");
        } else {
            let _ = writeln!(s, "defects ({}):", self.defects.len());
            for d in &self.defects {
                let _ = writeln!(s, "  - {d}");
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            DataError::MissingFile { path: path.to_path_buf() }
        } else {
            DataError::Io { path: path.to_path_buf(), source: e }
        }
    })
}

fn read_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read_file(path)?;
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip { path: path.to_path_buf(), source: e })?;
    Ok(out)
}

/// Splits on `\n` (a final newline does not start a new line), decodes each line as UTF-8
/// (1-based line number on failure), strips a trailing `\r` and a leading BOM, and maps
/// whitespace-only lines to `""`.
fn split_lines(path: &Path, bytes: &[u8]) -> Result<Vec<String>, DataError> {
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

/// Pairs two aligned caption lists (`en.len() == x.len()` is the caller's duty).
fn pair_up(split: Split, lang: Lang, en: &[String], x: &[String]) -> Bitext {
    debug_assert_eq!(en.len(), x.len());
    let mut pairs = Vec::with_capacity(en.len());
    let mut skipped = Vec::new();
    for (line, (e, t)) in en.iter().zip(x).enumerate() {
        if e.is_empty() || t.is_empty() {
            skipped.push(line);
        } else {
            pairs.push(Pair { line, en: e.clone(), x: t.clone() });
        }
    }
    Bitext { split, lang, pairs, skipped, total_lines: en.len() }
}

fn mean_words(captions: &[String]) -> f64 {
    let (mut n, mut words) = (0usize, 0usize);
    for c in captions.iter().filter(|c| !c.is_empty()) {
        n += 1;
        words += c.split_whitespace().count();
    }
    if n == 0 { 0.0 } else { words as f64 / n as f64 }
}

// ----- .npy -----------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum PyVal {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the header dict of a `.npy` file: `{'descr': '<f2', 'fortran_order': False, 'shape': (1000, 2048), }`.
fn parse_npy_dict(h: &str) -> Result<Vec<(String, PyVal)>, String> {
    let s = h.trim();
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("header is not a dict: {s:?}"))?;
    let mut items = Vec::new();
    let mut rest = inner.trim_start();
    let parse_str = |r: &str| -> Result<(String, usize), String> {
        let q = r.chars().next().ok_or("unexpected end of header")?;
        if q != '\'' && q != '"' {
            return Err(format!("expected a quoted string at {r:?}"));
        }
        let end = r[1..].find(q).ok_or_else(|| format!("unterminated string at {r:?}"))?;
        Ok((r[1..1 + end].to_string(), end + 2))
    };
    while !rest.is_empty() {
        let (key, used) = parse_str(rest)?;
        rest = rest[used..].trim_start();
        rest = rest.strip_prefix(':').ok_or_else(|| format!("expected ':' after key {key:?}"))?.trim_start();
        let val;
        if rest.starts_with('\'') || rest.starts_with('"') {
            let (v, used) = parse_str(rest)?;
            val = PyVal::Str(v);
            rest = &rest[used..];
        } else if let Some(r) = rest.strip_prefix("True") {
            val = PyVal::Bool(true);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("False") {
            val = PyVal::Bool(false);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('(') {
            let end = r.find(')').ok_or_else(|| format!("unterminated tuple for key {key:?}"))?;
            let mut dims = Vec::new();
            for part in r[..end].split(',') {
                let p = part.trim();
                if p.is_empty() {
                    continue;
                }
                let p = p.strip_suffix('L').unwrap_or(p);
                dims.push(p.parse::<usize>().map_err(|_| format!("bad dimension {p:?} in shape"))?);
            }
            val = PyVal::Tuple(dims);
            rest = &r[end + 1..];
        } else {
            return Err(format!("unsupported value for key {key:?}: {rest:?}"));
        }
        items.push((key, val));
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected ',' or '}}' at {rest:?}"));
        }
    }
    Ok(items)
}

/// Reads a 2-D little-endian float16 or float32, C-order `.npy` file into f32 (no shape
/// expectation beyond being 2-D; see [`Multi30k::test_image_features`] for the checked one).
pub fn read_npy_f32(path: &Path) -> Result<ImageFeatures, DataError> {
    let bytes = read_file(path)?;
    parse_npy_f32(path, &bytes)
}

fn parse_npy_f32(path: &Path, bytes: &[u8]) -> Result<ImageFeatures, DataError> {
    let bad = |reason: String| DataError::BadNpyHeader { path: path.to_path_buf(), reason };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing \\x93NUMPY magic".into()));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("file ends inside the header length".into()));
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad(format!("header length {hlen} runs past the end of the file")))?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not ASCII/UTF-8".into()))?;
    let items = parse_npy_dict(header).map_err(bad)?;
    let get = |k: &str| items.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let elem = match get("descr") {
        Some(PyVal::Str(d)) if d == "<f2" => 2usize,
        Some(PyVal::Str(d)) if d == "<f4" => 4usize,
        Some(PyVal::Str(d)) => {
            return Err(bad(format!("descr {d:?} unsupported (only '<f2' and '<f4')")));
        }
        _ => return Err(bad("missing or malformed 'descr'".into())),
    };
    match get("fortran_order") {
        Some(PyVal::Bool(false)) => {}
        Some(PyVal::Bool(true)) => return Err(bad("fortran_order True is unsupported".into())),
        _ => return Err(bad("missing or malformed 'fortran_order'".into())),
    }
    let shape = match get("shape") {
        Some(PyVal::Tuple(s)) => s.clone(),
        _ => return Err(bad("missing or malformed 'shape'".into())),
    };
    if shape.len() != 2 {
        return Err(bad(format!("shape {shape:?} is not 2-D")));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let data = &bytes[end..];
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(elem))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    if data.len() != expected {
        return Err(DataError::NpyDataLength { path: path.to_path_buf(), bytes: data.len(), expected });
    }
    let values: Vec<f32> = if elem == 2 {
        data.chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect()
    } else {
        data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    Ok(ImageFeatures { rows, cols, data: values })
}

// ---------------------------------------------------------------------------------------------
// The dataset
// ---------------------------------------------------------------------------------------------

/// A Multi30k data directory (containing `task1/`, `image_splits/`, `features/`).
#[derive(Clone, Debug)]
pub struct Multi30k {
    root: PathBuf,
}

impl Multi30k {
    /// Opens `root`, which must be a directory containing `task1/`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(DataError::MissingDir { path: root, tried: Vec::new() });
        }
        let task1 = root.join("task1");
        if !task1.is_dir() {
            return Err(DataError::MissingDir { path: task1, tried: Vec::new() });
        }
        Ok(Multi30k { root })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `task1/{stem}.{code}.gz`.
    pub fn captions_path(&self, split: Split, lang: Lang) -> PathBuf {
        self.root.join("task1").join(format!("{}.{}.gz", split.stem(), lang.code()))
    }

    /// `image_splits/{stem}.txt`.
    pub fn image_ids_path(&self, split: Split) -> PathBuf {
        self.root.join("image_splits").join(format!("{}.txt", split.stem()))
    }

    /// `features/test_2016_flickr.resnet50-avgpool.npy`.
    pub fn test_features_path(&self) -> PathBuf {
        self.root.join("features").join(TEST_FEATURES_FILE)
    }

    /// One caption per line of `task1/{stem}.{code}.gz`; an empty or whitespace-only line is kept
    /// as `""` (missing translation). The line count is not compared with the canonical size
    /// (see [`Multi30k::check`]).
    pub fn captions(&self, split: Split, lang: Lang) -> Result<Vec<String>, DataError> {
        let path = self.captions_path(split, lang);
        let bytes = read_gz(&path)?;
        split_lines(&path, &bytes)
    }

    /// English–`lang` pairs of `split` (for `lang == En`, pairs are (en, en)). The two files must
    /// have the same line count; pairs where either side is empty are skipped and recorded.
    pub fn bitext(&self, split: Split, lang: Lang) -> Result<Bitext, DataError> {
        let en = self.captions(split, Lang::En)?;
        if lang == Lang::En {
            return Ok(pair_up(split, lang, &en, &en));
        }
        let x = self.captions(split, lang)?;
        if x.len() != en.len() {
            return Err(DataError::LineCountMismatch {
                split,
                path: self.captions_path(split, lang),
                lines: x.len(),
                expected_path: self.captions_path(split, Lang::En),
                expected_lines: en.len(),
            });
        }
        Ok(pair_up(split, lang, &en, &x))
    }

    /// Flickr30k image file name of each line (`image_splits/{stem}.txt`, trimmed; an empty line
    /// is kept as `""` so that positions stay aligned, and reported by [`Multi30k::check`]).
    pub fn image_ids(&self, split: Split) -> Result<Vec<String>, DataError> {
        let path = self.image_ids_path(split);
        let bytes = read_file(&path)?;
        Ok(split_lines(&path, &bytes)?.into_iter().map(|s| s.trim().to_string()).collect())
    }

    /// ResNet-50 features of the test images, shape must be exactly `[1000, 2048]`
    /// (row i = line i of test_2016_flickr); float16 or float32 on disk, f32 in memory.
    pub fn test_image_features(&self) -> Result<ImageFeatures, DataError> {
        let path = self.test_features_path();
        let f = read_npy_f32(&path)?;
        let expected = TEST_FEATURE_SHAPE.to_vec();
        if [f.rows, f.cols] != TEST_FEATURE_SHAPE {
            return Err(DataError::NpyShape { path, shape: vec![f.rows, f.cols], expected });
        }
        Ok(f)
    }

    /// Validates every file against the layout and the canonical sizes, collecting all defects.
    pub fn check(&self) -> CheckReport {
        let mut defects: Vec<String> = Vec::new();
        let mut rows = Vec::new();
        let mut push = |e: DataError| defects.push(e.to_string());

        for split in Split::ALL {
            let expected = split.expected_lines();
            let en = match self.captions(split, Lang::En) {
                Ok(v) => Some(v),
                Err(e) => {
                    push(e);
                    None
                }
            };
            for lang in Lang::ALL {
                let x = if lang == Lang::En {
                    match &en {
                        Some(v) => v.clone(),
                        None => continue,
                    }
                } else {
                    match self.captions(split, lang) {
                        Ok(v) => v,
                        Err(e) => {
                            push(e);
                            continue;
                        }
                    }
                };
                if x.len() != expected {
                    push(DataError::UnexpectedLineCount {
                        split,
                        path: self.captions_path(split, lang),
                        lines: x.len(),
                        expected,
                    });
                }
                let Some(en) = &en else { continue };
                if x.len() != en.len() {
                    // Both files were already reported against the canonical size unless one of
                    // them has it; name the pair so that the misalignment is explicit.
                    push(DataError::LineCountMismatch {
                        split,
                        path: self.captions_path(split, lang),
                        lines: x.len(),
                        expected_path: self.captions_path(split, Lang::En),
                        expected_lines: en.len(),
                    });
                    continue;
                }
                let b = pair_up(split, lang, en, &x);
                rows.push(CheckRow {
                    split,
                    lang,
                    lines: x.len(),
                    pairs: b.pairs.len(),
                    skipped: b.skipped.len(),
                    mean_words: mean_words(&x),
                });
            }
        }

        let mut image_ids = Vec::new();
        for split in Split::ALL {
            let path = self.image_ids_path(split);
            let ids = match self.image_ids(split) {
                Ok(v) => v,
                Err(e) => {
                    push(e);
                    continue;
                }
            };
            image_ids.push((split, ids.len()));
            if ids.len() != split.expected_lines() {
                push(DataError::UnexpectedLineCount {
                    split,
                    path: path.clone(),
                    lines: ids.len(),
                    expected: split.expected_lines(),
                });
            }
            let empty: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_empty()).collect();
            if let Some(&first) = empty.first() {
                push(DataError::EmptyImageIds {
                    path: path.clone(),
                    count: empty.len(),
                    first_line: first + 1,
                });
            }
            let mut seen = HashSet::new();
            let mut dups = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if !id.is_empty() && !seen.insert(id.as_str()) {
                    dups.push(i);
                }
            }
            if let Some(&first) = dups.first() {
                push(DataError::DuplicateImageIds {
                    path,
                    count: dups.len(),
                    first: ids[first].clone(),
                    first_line: first + 1,
                });
            }
        }

        let features = match self.test_image_features() {
            Ok(f) => {
                let mut bad = f.data.iter().enumerate().filter(|(_, v)| !v.is_finite());
                if let Some((first, _)) = bad.next() {
                    push(DataError::NonFiniteFeatures {
                        path: self.test_features_path(),
                        count: 1 + bad.count(),
                        row: first / f.cols,
                        col: first % f.cols,
                    });
                }
                Some((f.rows, f.cols))
            }
            Err(e) => {
                push(e);
                None
            }
        };

        CheckReport { root: self.root.clone(), rows, defects, image_ids, features }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A fresh fixture directory with `task1/`, removed on drop.
    struct Fixture {
        root: PathBuf,
    }

    impl Fixture {
        fn new(tag: &str) -> Self {
            let root = std::env::temp_dir().join(format!(
                "otkd-data-test-{}-{}-{tag}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&root);
            for d in ["task1", "image_splits", "features"] {
                fs::create_dir_all(root.join(d)).unwrap();
            }
            Fixture { root }
        }

        fn gz(&self, split: Split, lang: Lang, bytes: &[u8]) -> PathBuf {
            let path = self.root.join("task1").join(format!("{}.{}.gz", split.stem(), lang.code()));
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(bytes).unwrap();
            fs::write(&path, enc.finish().unwrap()).unwrap();
            path
        }

        fn lines(&self, split: Split, lang: Lang, lines: &[&str]) -> PathBuf {
            let mut s = lines.join("\n");
            s.push('\n');
            self.gz(split, lang, s.as_bytes())
        }

        fn npy(&self, bytes: &[u8]) -> PathBuf {
            let path = self.root.join("features").join(TEST_FEATURES_FILE);
            fs::write(&path, bytes).unwrap();
            path
        }

        fn data(&self) -> Multi30k {
            Multi30k::open(&self.root).unwrap()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn npy_bytes(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        let pre = if version == 1 { 10 } else { 12 };
        while !(pre + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.push(version);
        out.push(0);
        if version == 1 {
            out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f2_data(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes()).collect()
    }

    #[test]
    fn lang_and_split_names() {
        assert_eq!(Lang::ALL.len(), 8);
        for l in Lang::ALL {
            assert_eq!(l.code().parse::<Lang>().unwrap(), l);
            assert_eq!(l.name().parse::<Lang>().unwrap(), l);
            assert_eq!(l.to_string(), l.code());
        }
        assert_eq!("AY".parse::<Lang>().unwrap(), Lang::Ay);
        assert_eq!(Lang::Ay.name(), "Aymara");
        assert_eq!(Lang::Ay.resource(), "low-resource");
        assert_eq!(Lang::Cs.resource(), "medium-resource");
        assert_eq!(Lang::Es.resource(), "high-resource");
        assert!(Lang::Es.machine_translated() && !Lang::De.machine_translated());
        let err = "xx".parse::<Lang>().unwrap_err().to_string();
        assert!(err.contains("en, de, fr, es, cs, ay, gn, qu"), "{err}");

        for s in Split::ALL {
            assert_eq!(s.stem().parse::<Split>().unwrap(), s);
            assert_eq!(s.to_string(), s.stem());
        }
        assert_eq!("test".parse::<Split>().unwrap(), Split::Test2016Flickr);
        assert_eq!("dev".parse::<Split>().unwrap(), Split::Val);
        assert!("tst".parse::<Split>().is_err());
        assert_eq!(
            [Split::Train, Split::Val, Split::Test2016Flickr].map(|s| s.expected_lines()),
            [29000, 1014, 1000]
        );
        assert_eq!(
            serde_json::to_string(&(Split::Test2016Flickr, Lang::Gn)).unwrap(),
            r#"["test_2016_flickr","gn"]"#
        );
    }

    #[test]
    fn captions_strip_cr_and_keep_empty_lines() {
        let f = Fixture::new("cr");
        f.gz(Split::Val, Lang::De, b"\xef\xbb\xbfa b\r\n  \r\n\nc d e\r\nlast");
        let c = f.data().captions(Split::Val, Lang::De).unwrap();
        assert_eq!(c, vec!["a b", "", "", "c d e", "last"]);
    }

    #[test]
    fn unequal_line_counts_name_both_files() {
        let f = Fixture::new("mismatch");
        let en = f.lines(Split::Val, Lang::En, &["a", "b", "c"]);
        let de = f.lines(Split::Val, Lang::De, &["x", "y"]);
        let err = f.data().bitext(Split::Val, Lang::De).unwrap_err();
        match &err {
            DataError::LineCountMismatch { split, path, lines, expected_path, expected_lines } => {
                assert_eq!(*split, Split::Val);
                assert_eq!(path, &de);
                assert_eq!(*lines, 2);
                assert_eq!(expected_path, &en);
                assert_eq!(*expected_lines, 3);
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("val.de.gz") && msg.contains("val.en.gz"), "{msg}");
    }

    #[test]
    fn invalid_utf8_reports_line() {
        let f = Fixture::new("utf8");
        let p = f.gz(Split::Train, Lang::Fr, b"ok\nfine\nbad \xff\xfe here\nok\n");
        let err = f.data().captions(Split::Train, Lang::Fr).unwrap_err();
        match &err {
            DataError::InvalidUtf8 { path, line } => {
                assert_eq!(path, &p);
                assert_eq!(*line, 3);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("line 3"));
    }

    #[test]
    fn missing_file_and_dir() {
        let f = Fixture::new("missing");
        let err = f.data().captions(Split::Train, Lang::Qu).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingFile { path } if path.ends_with("task1/train.qu.gz")),
            "{err:?}"
        );
        let err = f.data().image_ids(Split::Val).unwrap_err();
        assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
        let err = f.data().test_image_features().unwrap_err();
        assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
        // Root without task1/.
        let err = Multi30k::open(f.root.join("features")).unwrap_err();
        assert!(matches!(err, DataError::MissingDir { .. }), "{err:?}");
        let err = Multi30k::open(f.root.join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn corrupt_gzip_is_an_error_naming_the_file() {
        let f = Fixture::new("gz");
        let path = f.root.join("task1").join("val.cs.gz");
        fs::write(&path, b"this is not gzip at all").unwrap();
        let err = f.data().captions(Split::Val, Lang::Cs).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
        assert!(err.to_string().contains("val.cs.gz"));
        // Truncated stream.
        f.lines(Split::Val, Lang::Es, &["some caption text", "another one"]);
        let gz = fs::read(f.root.join("task1/val.es.gz")).unwrap();
        fs::write(f.root.join("task1/val.es.gz"), &gz[..gz.len() - 10]).unwrap();
        let err = f.data().captions(Split::Val, Lang::Es).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    }

    #[test]
    fn empty_lines_are_skipped_never_paired_with_a_neighbour() {
        let f = Fixture::new("skip");
        f.lines(Split::Test2016Flickr, Lang::En, &["e0", "e1", "e2", "", "e4"]);
        f.lines(Split::Test2016Flickr, Lang::Ay, &["a0", "", "a2", "a3", "a4"]);
        let b = f.data().bitext(Split::Test2016Flickr, Lang::Ay).unwrap();
        assert_eq!(b.total_lines, 5);
        assert_eq!(b.skipped, vec![1, 3]);
        let got: Vec<(usize, &str, &str)> =
            b.pairs.iter().map(|p| (p.line, p.en.as_str(), p.x.as_str())).collect();
        assert_eq!(got, vec![(0, "e0", "a0"), (2, "e2", "a2"), (4, "e4", "a4")]);
        // Every pair is from one line.
        for p in &b.pairs {
            assert_eq!(&p.en[1..], &p.x[1..]);
        }
        // English with itself.
        let e = f.data().bitext(Split::Test2016Flickr, Lang::En).unwrap();
        assert_eq!(e.skipped, vec![3]);
        assert!(e.pairs.iter().all(|p| p.en == p.x));
        assert_eq!(e.lines(), vec![0, 1, 2, 4]);
    }

    #[test]
    fn npy_good_v1_f2_and_v2_f4() {
        let vals = [1.0f32, -2.5, 0.0, 3.25, 0.5, 7.0];
        let f = Fixture::new("npy");
        let p = f.npy(&npy_bytes(
            1,
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }",
            &f2_data(&vals),
        ));
        let m = read_npy_f32(&p).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.data, vals);
        assert_eq!(m.row(1), &[3.25, 0.5, 7.0]);
        let f4: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p =
            f.npy(&npy_bytes(2, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3, 2)}", &f4));
        let m = read_npy_f32(&p).unwrap();
        assert_eq!((m.rows, m.cols), (3, 2));
        assert_eq!(m.data, vals);
        // Right format but wrong shape for the test features.
        let err = f.data().test_image_features().unwrap_err();
        match err {
            DataError::NpyShape { shape, expected, .. } => {
                assert_eq!(shape, vec![3, 2]);
                assert_eq!(expected, vec![1000, 2048]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn npy_bad_headers() {
        let f = Fixture::new("npybad");
        let data = f2_data(&[0.0; 6]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\x93NUMPX\x01\x00\x10\x00{}".to_vec(), "magic"),
            (npy_bytes(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", &data), "descr"),
            (npy_bytes(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", &data), "<i8"),
            (
                npy_bytes(1, "{'descr': '<f2', 'fortran_order': True, 'shape': (2, 3), }", &data),
                "fortran_order",
            ),
            (npy_bytes(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (6,), }", &data), "2-D"),
            (npy_bytes(1, "{'descr': '<f2', 'fortran_order': False, }", &data), "shape"),
            (npy_bytes(9, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", &data), "version"),
            (b"\x93NUMPY\x01\x00\xff\x00{'descr'".to_vec(), "past the end"),
        ];
        for (bytes, needle) in cases {
            let p = f.npy(&bytes);
            let err = read_npy_f32(&p).unwrap_err();
            assert!(matches!(err, DataError::BadNpyHeader { .. }), "{needle}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{needle}: {msg}");
            assert!(msg.contains(TEST_FEATURES_FILE), "{msg}");
        }
        // Data shorter than the shape implies.
        let p = f.npy(&npy_bytes(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 4), }", &data));
        let err = read_npy_f32(&p).unwrap_err();
        assert!(matches!(err, DataError::NpyDataLength { bytes: 12, expected: 16, .. }), "{err:?}");
    }

    #[test]
    fn check_collects_all_defects() {
        let f = Fixture::new("check");
        // val: en 3 lines, de 2 lines (mismatch), fr fine; everything else missing.
        f.lines(Split::Val, Lang::En, &["a b", "c", "d e f"]);
        f.lines(Split::Val, Lang::De, &["x", "y"]);
        f.lines(Split::Val, Lang::Fr, &["u v", "", "w"]);
        f.gz(Split::Val, Lang::Cs, b"ok\n\xff\n");
        fs::write(f.root.join("image_splits/val.txt"), "1.jpg\n\n1.jpg\n").unwrap();
        let r = f.data().check();
        assert!(!r.is_ok());
        let joined = r.defects.join("\n");
        assert!(joined.contains("val.de.gz has 2 lines but"), "{joined}");
        assert!(joined.contains("val.cs.gz: line 2 is not valid UTF-8"), "{joined}");
        assert!(joined.contains("train.en.gz"), "{joined}");
        assert!(joined.contains("test_2016_flickr.qu.gz"), "{joined}");
        assert!(joined.contains("empty image id"), "{joined}");
        assert!(joined.contains("duplicated image id"), "{joined}");
        assert!(joined.contains(TEST_FEATURES_FILE), "{joined}");
        let fr = r.rows.iter().find(|row| row.split == Split::Val && row.lang == Lang::Fr).unwrap();
        assert_eq!((fr.lines, fr.pairs, fr.skipped), (3, 2, 1));
        assert!((fr.mean_words - 1.5).abs() < 1e-12);
        assert!(r.rows.iter().all(|row| row.lang != Lang::De));
        assert_eq!(r.image_ids, vec![(Split::Val, 3)]);
        assert_eq!(r.features, None);
        let t = r.render_table();
        assert!(t.contains("French") && t.contains("defects ("), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rows"][1]["split"], "val");
        assert_eq!(json["rows"][1]["lang"], "fr");
    }

    #[test]
    fn resolve_prefers_explicit_and_lists_tried() {
        let f = Fixture::new("resolve");
        let got = resolve_data_dir(Some(&f.root)).unwrap();
        assert_eq!(got, fs::canonicalize(&f.root).unwrap());
        let missing = f.root.join("absent");
        let err = resolve_data_dir(Some(&missing)).unwrap_err();
        match &err {
            DataError::MissingDir { tried, .. } => assert_eq!(tried, &vec![missing.clone()]),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("tried"));
    }

    /// The shared Multi30k copy: missing data fails the test with the paths tried, as a missing
    /// teacher fails the teacher's parity test.
    fn real_data() -> Multi30k {
        resolve_data_dir(None).and_then(Multi30k::open).unwrap_or_else(|e| {
            panic!("the shared Multi30k copy is needed for this test (set OTKD_DATA): {e}")
        })
    }

    #[test]
    fn real_data_loads_and_checks() {
        let d = real_data();
        for split in Split::ALL {
            for lang in Lang::ALL {
                let c = d.captions(split, lang).unwrap();
                assert_eq!(c.len(), split.expected_lines(), "{split} {lang}");
            }
            assert_eq!(d.image_ids(split).unwrap().len(), split.expected_lines());
        }
        for lang in [Lang::Ay, Lang::Gn, Lang::Qu] {
            let b = d.bitext(Split::Test2016Flickr, lang).unwrap();
            assert_eq!(b.pairs.len(), 999, "{lang}");
            assert_eq!(b.skipped, vec![904], "{lang}");
            assert_eq!(b.total_lines, 1000);
            assert!(b.pairs.iter().all(|p| p.line != 904));
        }
        let de = d.bitext(Split::Test2016Flickr, Lang::De).unwrap();
        assert_eq!((de.pairs.len(), de.skipped.len()), (1000, 0));
        let f = d.test_image_features().unwrap();
        assert_eq!((f.rows, f.cols), (1000, 2048));
        assert!(f.data.iter().all(|v| v.is_finite()));
        let r = d.check();
        assert!(r.is_ok(), "{}", r.render_table());
        assert_eq!(r.rows.len(), 24);
        assert_eq!(r.features, Some((1000, 2048)));
    }
}
