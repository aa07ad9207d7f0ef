//! One interface over where pairs come from: the Multi30k directory or a user's bitext files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Bitext, BitextFiles, BitextSpec, DataError, Lang, Multi30k, Pair, Split};

/// Where a run's pairs came from, as written into its run directory: enough to open the same
/// pairs and held-out lines again for `eval` and `export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum SourceSpec {
    /// The Multi30k directory (`--data`, `OTKD_DATA` or the shipped default).
    Multi30k,
    /// A user's bitext files.
    Bitext {
        /// The files, languages and held-out split.
        #[serde(flatten)]
        spec: BitextSpec,
        /// [`BitextFiles::checksum`] when the run was trained.
        checksum: u64,
    },
}

impl SourceSpec {
    /// What a blob's index of a split's English side records as its source: `multi30k {split}
    /// en` (which `eval-blob` checks without opening the data), or the bitext split with the
    /// files' checksum.
    pub fn index_source(&self, split: Split) -> String {
        match self {
            SourceSpec::Multi30k => format!("multi30k {split} en"),
            SourceSpec::Bitext { checksum, .. } => {
                format!("bitext {} en {checksum:016x}", bitext_split_name(split))
            }
        }
    }
}

/// An opened source of pairs.
#[derive(Clone, Debug)]
pub enum Source {
    /// The Multi30k directory.
    Multi30k(Multi30k),
    /// A user's bitext files, read and split.
    Bitext(BitextFiles),
}

impl Source {
    /// Opens what `spec` names; `multi30k` opens the Multi30k directory when the spec asks for
    /// it. A bitext whose files changed since `spec` was written is refused: its held-out lines
    /// would no longer be the run's.
    pub fn reopen(
        spec: &SourceSpec,
        recorded_in: &Path,
        multi30k: impl FnOnce() -> anyhow::Result<Multi30k>,
    ) -> anyhow::Result<Source> {
        match spec {
            SourceSpec::Multi30k => Ok(Source::Multi30k(multi30k()?)),
            SourceSpec::Bitext { spec, checksum } => {
                let files = BitextFiles::open(spec.clone())?;
                if files.checksum() != *checksum {
                    let names: Vec<String> = spec.paths().iter().map(|p| p.display().to_string()).collect();
                    return Err(DataError::BitextChanged {
                        what: recorded_in.display().to_string(),
                        files: names.join(", "),
                    }
                    .into());
                }
                Ok(Source::Bitext(files))
            }
        }
    }

    /// What to write into a run directory to open this source again.
    pub fn spec(&self) -> SourceSpec {
        match self {
            Source::Multi30k(_) => SourceSpec::Multi30k,
            Source::Bitext(files) => {
                SourceSpec::Bitext { spec: files.spec().clone(), checksum: files.checksum() }
            }
        }
    }

    /// The languages X it pairs with English (Multi30k: all but English).
    pub fn langs(&self) -> Vec<Lang> {
        match self {
            Source::Multi30k(_) => Lang::MULTI30K.into_iter().filter(|&l| l != Lang::EN).collect(),
            Source::Bitext(files) => files.langs().iter().map(|l| l.lang).collect(),
        }
    }

    /// How reports name a split of this source (`test_2016_flickr` for Multi30k, `test` else).
    pub fn split_name(&self, split: Split) -> &'static str {
        match self {
            Source::Multi30k(_) => split.stem(),
            Source::Bitext(_) => bitext_split_name(split),
        }
    }

    /// A short description for messages (`Multi30k /data/multi30k`, `bitext pairs.tsv`).
    pub fn describe(&self) -> String {
        match self {
            Source::Multi30k(data) => format!("Multi30k {}", data.root().display()),
            Source::Bitext(files) => {
                let names: Vec<String> =
                    files.spec().paths().iter().map(|p| p.display().to_string()).collect();
                format!("bitext {}", names.join(", "))
            }
        }
    }

    /// The name of a split's English sentences in the teacher cache (`train.en` for Multi30k,
    /// as before; the cache key hashes the sentences themselves).
    pub fn cache_name(&self, split: Split) -> String {
        match self {
            Source::Multi30k(_) => format!("{split}.en"),
            Source::Bitext(_) => format!("bitext-{}.en", self.split_name(split)),
        }
    }

    /// The name of a split's X sides in `lang` in the teacher cache (the teacher read zero-shot).
    pub fn x_cache_name(&self, split: Split, lang: Lang) -> String {
        match self {
            Source::Multi30k(_) => format!("{split}.{lang}"),
            Source::Bitext(_) => format!("bitext-{}.{lang}", self.split_name(split)),
        }
    }

    /// What a blob's index of this split's English side records as its source (see
    /// [`SourceSpec::index_source`]).
    pub fn index_source(&self, split: Split) -> String {
        self.spec().index_source(split)
    }

    /// The English sentences of `split` that [`Pair::line`] indexes: what the teacher encodes
    /// (Multi30k: every caption line, empty ones included, so that lines stay image indices).
    pub fn english(&self, split: Split) -> Result<Vec<String>, DataError> {
        match self {
            Source::Multi30k(data) => data.captions(split, Lang::EN),
            Source::Bitext(files) => Ok(files.english(split)),
        }
    }

    /// The pairs of `split` in `lang`; a joined tag (`ay+gn`) gives each language's pairs in
    /// one block, in the tag's order.
    pub fn bitext(&self, split: Split, lang: Lang) -> Result<Bitext, DataError> {
        if lang.is_multilingual() {
            let parts = lang.parts().map(|part| self.bitext(split, part)).collect::<Result<_, _>>()?;
            return Ok(Bitext::concat(split, lang, parts));
        }
        match self {
            Source::Multi30k(data) => data.bitext(split, lang),
            Source::Bitext(files) => {
                let pairs = files.pairs(split, lang).ok_or_else(|| DataError::UnknownLang {
                    lang,
                    source_name: self.describe(),
                    available: self.langs().iter().map(|l| l.code()).collect::<Vec<_>>().join(", "),
                })?;
                let offset = files.offset(split, lang);
                let pairs: Vec<Pair> = pairs
                    .iter()
                    .enumerate()
                    .map(|(i, (x, en))| Pair { line: offset + i, lang, en: en.clone(), x: x.clone() })
                    .collect();
                Ok(Bitext { split, lang, total_lines: pairs.len(), pairs, skipped: Vec::new() })
            }
        }
    }
}

/// How a bitext's splits are named: `train`, `dev`, `test`.
fn bitext_split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Dev => "dev",
        Split::Test => "test",
    }
}
