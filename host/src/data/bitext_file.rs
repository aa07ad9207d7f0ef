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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("otkd-bitext-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn pairs(n: usize) -> String {
        (0..n).map(|i| format!("x{i} sentence\ten{i} sentence\n")).collect()
    }

    fn spec(lang: &str, train: PairFiles, dev: Option<PairFiles>, test: Option<PairFiles>) -> BitextSpec {
        let lang = Lang::new(lang).unwrap();
        BitextSpec { langs: vec![LangFiles { lang, train, dev, test }], dev_size: 20, test_size: 30, seed: 7 }
    }

    #[test]
    fn seeded_split_is_reproducible_disjoint_and_complete() {
        let d = dir("split");
        let path = d.join("pairs.tsv");
        std::fs::write(&path, pairs(200)).unwrap();
        let open = || BitextFiles::open(spec("quy", PairFiles::Tsv(path.clone()), None, None)).unwrap();
        let (a, b) = (open(), open());
        let [train, dev, test] = &a.langs()[0].splits;
        assert_eq!((train.len(), dev.len(), test.len()), (150, 20, 30));
        assert_eq!(a.langs()[0].splits, b.langs()[0].splits, "same seed, same split");
        let mut all: Vec<_> = train.iter().chain(dev).chain(test).cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 200, "every pair in exactly one split");
        // Another seed holds out other lines.
        let mut other = spec("quy", PairFiles::Tsv(path.clone()), None, None);
        other.seed = 8;
        assert_ne!(BitextFiles::open(other).unwrap().langs()[0].splits[2], *test);
        // The English list is what the pairs' lines index.
        let source = crate::data::Source::Bitext(a.clone());
        let lang = Lang::new("quy").unwrap();
        let english = source.english(Split::Test).unwrap();
        for p in source.bitext(Split::Test, lang).unwrap().pairs {
            assert_eq!(english[p.line], p.en);
        }
    }

    #[test]
    fn duplicates_empty_sides_and_held_out_pairs_are_dropped_and_counted() {
        let d = dir("drop");
        let train = d.join("train.tsv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let text = format!("{}a\tb\na\tb\n \tonly english\nonly x\t\n\nheld\tout\n", pairs(100));
        gz.write_all(text.as_bytes()).unwrap();
        std::fs::write(&train, gz.finish().unwrap()).unwrap();
        let dev = d.join("dev.tsv");
        std::fs::write(&dev, format!("held\tout\n{}", pairs(15).replace('x', "dx"))).unwrap();
        let files =
            BitextFiles::open(spec("ay", PairFiles::Tsv(train), Some(PairFiles::Tsv(dev)), None)).unwrap();
        let lang = &files.langs()[0];
        assert_eq!(lang.dropped, Dropped { empty_side: 3, duplicate: 1, held_out: 1 });
        assert_eq!(lang.splits[1].len(), 16);
        assert_eq!(lang.splits[0].len() + lang.splits[2].len(), 101, "a b, and 100 pairs");
        assert!(!lang.splits[0].contains(&("held".into(), "out".into())));
    }

    #[test]
    fn two_aligned_files_read_like_a_tsv() {
        let d = dir("aligned");
        let tsv = d.join("p.tsv");
        std::fs::write(&tsv, pairs(80)).unwrap();
        let (x, en) = (d.join("p.quy"), d.join("p.en"));
        std::fs::write(&x, (0..80).map(|i| format!("x{i} sentence\n")).collect::<String>()).unwrap();
        std::fs::write(&en, (0..80).map(|i| format!("en{i} sentence\r\n")).collect::<String>()).unwrap();
        let a = BitextFiles::open(spec("quy", PairFiles::Tsv(tsv), None, None)).unwrap();
        let b = BitextFiles::open(spec("quy", PairFiles::Aligned { x, en }, None, None)).unwrap();
        assert_eq!(a.langs()[0].splits, b.langs()[0].splits);
    }

    #[test]
    fn bad_files_are_named_with_their_line() {
        let d = dir("bad");
        let write = |name: &str, bytes: &[u8]| {
            let path = d.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let tsv =
            |path: PathBuf| BitextFiles::open(spec("quy", PairFiles::Tsv(path), None, None)).unwrap_err();
        let good = pairs(100);
        let cases: Vec<(DataError, &str)> = vec![
            (
                tsv(write("notab.tsv", format!("{good}no tab here\n").as_bytes())),
                "notab.tsv: line 101 has no tab",
            ),
            (tsv(write("tabs.tsv", b"a\tb\tc\n")), "tabs.tsv: line 1 has more than one tab"),
            (tsv(write("utf8.tsv", b"a\tb\n\xff\tc\n")), "utf8.tsv: line 2 is not valid UTF-8"),
            (tsv(write("empty.tsv", b"\n\n")), "empty.tsv: the file is empty"),
            (
                tsv(write("few.tsv", pairs(40).as_bytes())),
                "40 usable pairs cannot give 20 dev and 30 test pairs",
            ),
            (tsv(d.join("missing.tsv")), "file not found"),
            (
                BitextFiles::open(spec(
                    "quy",
                    PairFiles::Aligned { x: write("a.quy", b"1\n2\n3\n"), en: write("a.en", b"1\n2\n") },
                    None,
                    None,
                ))
                .unwrap_err(),
                "a.quy has 3 lines but",
            ),
            (
                BitextFiles::open(spec(
                    "quy",
                    PairFiles::Tsv(write("ok.tsv", good.as_bytes())),
                    Some(PairFiles::Tsv(write("tiny-dev.tsv", b"d\te\n"))),
                    None,
                ))
                .unwrap_err(),
                "tiny-dev.tsv (quy): 1 dev pairs; at least 10",
            ),
        ];
        for (err, needle) in cases {
            assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
        }
    }
}
