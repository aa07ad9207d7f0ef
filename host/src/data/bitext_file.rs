//! A user's bitext: per language, a TSV (`X<TAB>English`, one pair a line) or two line-aligned
//! files, plain or gzip; dev and test sets given the same way or held out by a seeded split.
//!
//! Everything is read and checked when the corpus is opened, before any work: a line without its
//! tab, invalid UTF-8, files of different lengths, an empty file, a dev or test set too small to
//! evaluate are named errors with file and line. Pairs with an empty side and exact duplicate
//! pairs are dropped and counted; a pair held out for dev or test is never also trained on.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DataError, Lang, Split, read_text_lines};
use crate::rng::{Fnv64, SplitMix64};

/// Fewest pairs of a dev or test set: R@10 over fewer documents says nothing.
pub const MIN_EVAL_PAIRS: usize = 10;

/// Default size of the held-out dev and test sets when no file is given.
pub const DEFAULT_HELD_OUT: usize = 1000;

/// Where a set of pairs is read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairFiles {
    /// One pair a line, `X<TAB>English`.
    Tsv(PathBuf),
    /// Line `i` of `x` translates line `i` of `en`.
    Aligned {
        /// The language-X side.
        x: PathBuf,
        /// The English side.
        en: PathBuf,
    },
}

impl fmt::Display for PairFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairFiles::Tsv(path) => write!(f, "{}", path.display()),
            PairFiles::Aligned { x, en } => write!(f, "{} + {}", x.display(), en.display()),
        }
    }
}

impl PairFiles {
    fn paths(&self) -> Vec<&Path> {
        match self {
            PairFiles::Tsv(path) => vec![path],
            PairFiles::Aligned { x, en } => vec![x, en],
        }
    }
}

/// One language's files: training pairs, and dev and test pairs unless held out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LangFiles {
    /// The language of the X side.
    pub lang: Lang,
    /// Training pairs (all pairs, when dev or test are held out of them).
    pub train: PairFiles,
    /// Dev pairs; `None` holds [`BitextSpec::dev_size`] out of `train`.
    pub dev: Option<PairFiles>,
    /// Test pairs; `None` holds [`BitextSpec::test_size`] out of `train`.
    pub test: Option<PairFiles>,
}

/// What a bitext corpus is made of: enough to open the same pairs, in the same splits, again
/// (it is written into a run directory so that `eval` and `export` see the run's held-out lines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitextSpec {
    /// One entry per language, in the order given.
    pub langs: Vec<LangFiles>,
    /// Pairs held out for dev where no dev file is given.
    pub dev_size: usize,
    /// Pairs held out for test where no test file is given.
    pub test_size: usize,
    /// Seed of the held-out split.
    pub seed: u64,
}

/// Pairs dropped while reading one language, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// A side is empty or whitespace.
    pub empty_side: usize,
    /// The same (X, English) pair appeared earlier.
    pub duplicate: usize,
    /// A training pair that is also a dev or test pair (given files only).
    pub held_out: usize,
}

/// `(x, en)` pairs of train, dev and test.
pub type SplitPairs = [Vec<(String, String)>; 3];

/// One language of an opened corpus.
#[derive(Clone, Debug)]
pub struct LangPairs {
    /// The language.
    pub lang: Lang,
    /// `(x, en)` pairs of train, dev and test, in file order (dev and test held out by the split
    /// keep the order of their lines too).
    pub splits: SplitPairs,
    /// What reading dropped.
    pub dropped: Dropped,
}

/// An opened bitext corpus: every language's pairs, split and checked.
#[derive(Clone, Debug)]
pub struct BitextFiles {
    spec: BitextSpec,
    langs: Vec<LangPairs>,
    checksum: u64,
}

fn index(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Dev => 1,
        Split::Test => 2,
    }
}

impl BitextFiles {
    /// Reads, checks and splits every file of `spec`.
    pub fn open(spec: BitextSpec) -> Result<Self, DataError> {
        if spec.langs.is_empty() {
            return Err(DataError::NoBitext);
        }
        let mut seen = HashSet::new();
        let mut hash = Fnv64::default();
        let mut langs = Vec::new();
        for files in &spec.langs {
            if files.lang.is_multilingual() || !seen.insert(files.lang) {
                return Err(DataError::LangTwice { lang: files.lang });
            }
            let (pairs, dropped) = open_lang(&spec, files, &mut hash)?;
            langs.push(LangPairs { lang: files.lang, splits: pairs, dropped });
        }
        Ok(Self { spec, langs, checksum: hash.finish() })
    }

    /// What the corpus was opened from.
    pub fn spec(&self) -> &BitextSpec {
        &self.spec
    }

    /// FNV-64 of every file's bytes, in spec order: a run's saved checksum that no longer
    /// matches means the files changed since.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// The languages, in the order given.
    pub fn langs(&self) -> &[LangPairs] {
        &self.langs
    }

    /// The pairs of one language and split.
    pub fn pairs(&self, split: Split, lang: Lang) -> Option<&[(String, String)]> {
        self.langs.iter().find(|l| l.lang == lang).map(|l| l.splits[index(split)].as_slice())
    }

    /// Where the pairs of `lang` in `split` start in [`BitextFiles::english`]`(split)`.
    pub fn offset(&self, split: Split, lang: Lang) -> usize {
        self.langs.iter().take_while(|l| l.lang != lang).map(|l| l.splits[index(split)].len()).sum()
    }

    /// The English sides of `split`, every language in order: row `i` is what the teacher encodes
    /// for line `i`.
    pub fn english(&self, split: Split) -> Vec<String> {
        self.langs.iter().flat_map(|l| l.splits[index(split)].iter().map(|(_, en)| en.clone())).collect()
    }
}

/// Reads, cleans and splits one language's files.
fn open_lang(
    spec: &BitextSpec,
    files: &LangFiles,
    hash: &mut Fnv64,
) -> Result<(SplitPairs, Dropped), DataError> {
    let mut dropped = Dropped::default();
    let mut read = |files: &PairFiles, dropped: &mut Dropped| -> Result<Vec<(String, String)>, DataError> {
        let pairs = read_pairs(files, hash)?;
        let mut seen = HashSet::new();
        let mut kept = Vec::with_capacity(pairs.len());
        for (x, en) in pairs {
            if x.trim().is_empty() || en.trim().is_empty() {
                dropped.empty_side += 1;
            } else if seen.insert((x.clone(), en.clone())) {
                kept.push((x, en));
            } else {
                dropped.duplicate += 1;
            }
        }
        Ok(kept)
    };
    let mut train = read(&files.train, &mut dropped)?;
    let mut given =
        |file: &Option<PairFiles>, dropped: &mut Dropped| file.as_ref().map(|f| read(f, dropped)).transpose();
    let dev_given = given(&files.dev, &mut dropped)?;
    let test_given = given(&files.test, &mut dropped)?;
    // Given held-out sets leave training: nothing is both trained on and evaluated.
    let held: HashSet<&(String, String)> = dev_given.iter().chain(&test_given).flatten().collect();
    let before = train.len();
    train.retain(|p| !held.contains(p));
    dropped.held_out = before - train.len();
    let test_set: HashSet<(String, String)> = test_given.iter().flatten().cloned().collect();
    let dev_given =
        dev_given.map(|dev| dev.into_iter().filter(|p| !test_set.contains(p)).collect::<Vec<_>>());

    let wanted =
        usize::from(dev_given.is_none()) * spec.dev_size + usize::from(test_given.is_none()) * spec.test_size;
    if wanted > 0 && wanted >= train.len() {
        return Err(DataError::HeldOutTooLarge {
            lang: files.lang,
            file: files.train.to_string(),
            pairs: train.len(),
            dev: if dev_given.is_none() { spec.dev_size } else { 0 },
            test: if test_given.is_none() { spec.test_size } else { 0 },
        });
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
    SplitMix64::new(spec.seed, &format!("held-out {}", files.lang)).shuffle(&mut order);
    let mut take = |n: usize| -> Vec<usize> {
        let mut taken: Vec<usize> = order.drain(..n).collect();
        taken.sort_unstable();
        taken
    };
    let test_lines = if test_given.is_none() { take(spec.test_size) } else { Vec::new() };
    let dev_lines = if dev_given.is_none() { take(spec.dev_size) } else { Vec::new() };
    let pick = |lines: &[usize]| lines.iter().map(|&i| train[i].clone()).collect::<Vec<_>>();
    let test = test_given.unwrap_or_else(|| pick(&test_lines));
    let dev = dev_given.unwrap_or_else(|| pick(&dev_lines));
    let held_lines: HashSet<usize> = test_lines.into_iter().chain(dev_lines).collect();
    let train: Vec<_> =
        train.into_iter().enumerate().filter(|(i, _)| !held_lines.contains(i)).map(|(_, p)| p).collect();
    for (what, set, file) in [("dev", &dev, &files.dev), ("test", &test, &files.test)] {
        if set.len() < MIN_EVAL_PAIRS {
            return Err(DataError::EvalSetTooSmall {
                what,
                lang: files.lang,
                file: file.as_ref().unwrap_or(&files.train).to_string(),
                pairs: set.len(),
            });
        }
    }
    Ok(([train, dev, test], dropped))
}

/// The `(x, en)` pairs of a TSV or two aligned files, every line kept (empty sides included).
fn read_pairs(files: &PairFiles, hash: &mut Fnv64) -> Result<Vec<(String, String)>, DataError> {
    let mut lines_of = |path: &Path| -> Result<Vec<String>, DataError> {
        let (lines, bytes) = read_text_lines(path)?;
        if lines.iter().all(|l| l.is_empty()) {
            return Err(DataError::EmptyFile { path: path.to_path_buf() });
        }
        hash.update(&bytes);
        Ok(lines)
    };
    match files {
        PairFiles::Tsv(path) => lines_of(path)?
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                if line.is_empty() {
                    return Ok((String::new(), String::new()));
                }
                let mut fields = line.split('\t');
                match (fields.next(), fields.next(), fields.next()) {
                    (Some(x), Some(en), None) => Ok((x.trim().to_string(), en.trim().to_string())),
                    (_, None, _) => Err(DataError::MissingTab { path: path.clone(), line: i + 1 }),
                    _ => Err(DataError::ExtraTab { path: path.clone(), line: i + 1 }),
                }
            })
            .collect(),
        PairFiles::Aligned { x, en } => {
            let (xs, ens) = (lines_of(x)?, lines_of(en)?);
            if xs.len() != ens.len() {
                return Err(DataError::UnalignedFiles {
                    path: x.clone(),
                    lines: xs.len(),
                    other: en.clone(),
                    other_lines: ens.len(),
                });
            }
            Ok(xs.into_iter().zip(ens).collect())
        }
    }
}

impl BitextSpec {
    /// Every file the spec reads, in order.
    pub fn paths(&self) -> Vec<&Path> {
        self.langs
            .iter()
            .flat_map(|l| [Some(&l.train), l.dev.as_ref(), l.test.as_ref()])
            .flatten()
            .flat_map(PairFiles::paths)
            .collect()
    }
}
