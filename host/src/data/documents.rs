//! A user's documents: one per line, or `id<TAB>text`; plain or gzip. The same format is the
//! texts file written beside a blob, so that `query` can show what it found.

use std::collections::HashSet;
use std::path::Path;

use super::{DataError, read_text_lines};

/// Documents in index order: blob id `i` is `ids[i]` / `texts[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Documents {
    /// The user's ids (the 1-based line number when the file has none).
    pub ids: Vec<String>,
    /// The texts.
    pub texts: Vec<String>,
    /// Blank lines skipped.
    pub blank_lines: usize,
}

impl Documents {
    /// Reads a documents file. Either every non-blank line is `id<TAB>text` or none has a tab;
    /// ids must be unique and texts non-empty. Blank lines are skipped and counted.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let (lines, _) = read_text_lines(path)?;
        let mut docs = Documents::default();
        let mut with_ids: Option<bool> = None;
        let mut seen = HashSet::new();
        for (i, line) in lines.iter().enumerate() {
            let number = i + 1;
            if line.is_empty() {
                docs.blank_lines += 1;
                continue;
            }
            let has_id = line.contains('\t');
            if *with_ids.get_or_insert(has_id) != has_id {
                return Err(DataError::Documents {
                    path: path.to_path_buf(),
                    line: number,
                    reason: "mixes lines with and without an id: use `id<TAB>text` on every line or on none"
                        .into(),
                });
            }
            let (id, text) = match line.split_once('\t') {
                Some((id, text)) => (id.trim().to_string(), text.trim().to_string()),
                None => (number.to_string(), line.trim().to_string()),
            };
            if id.is_empty() || text.is_empty() {
                let reason = if id.is_empty() { "the id is empty" } else { "the text is empty" };
                return Err(DataError::Documents {
                    path: path.to_path_buf(),
                    line: number,
                    reason: reason.into(),
                });
            }
            if !seen.insert(id.clone()) {
                return Err(DataError::Documents {
                    path: path.to_path_buf(),
                    line: number,
                    reason: format!("the id {id:?} appeared before"),
                });
            }
            docs.ids.push(id);
            docs.texts.push(text);
        }
        if docs.texts.is_empty() {
            return Err(DataError::EmptyFile { path: path.to_path_buf() });
        }
        Ok(docs)
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The `id<TAB>text` lines [`Documents::read`] reads back (tabs and newlines inside a text
    /// become spaces).
    pub fn to_tsv(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        self.ids
            .iter()
            .zip(&self.texts)
            .map(|(id, text)| format!("{}\t{}\n", clean(id), clean(text)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("otkd-docs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn lines_with_and_without_ids_round_trip() {
        let plain = Documents::read(&file("plain.txt", "a dog\n\n a cat \n")).unwrap();
        assert_eq!(plain.ids, ["1", "3"]);
        assert_eq!(plain.texts, ["a dog", "a cat"]);
        assert_eq!(plain.blank_lines, 1);
        let tsv = Documents::read(&file("ids.tsv", "d7\tfirst\nd9\tsecond one\n")).unwrap();
        assert_eq!(tsv.ids, ["d7", "d9"]);
        let again = Documents::read(&file("again.tsv", &tsv.to_tsv())).unwrap();
        assert_eq!(again, tsv);
    }

    #[test]
    fn bad_documents_name_the_line() {
        for (text, line, needle) in [
            ("d1\ta\nplain\n", 2, "mixes"),
            ("d1\ta\nd1\tb\n", 2, "appeared before"),
            ("d1\t \n", 1, "text is empty"),
            ("\tx\n", 1, "id is empty"),
        ] {
            let err = Documents::read(&file("bad.tsv", text)).unwrap_err().to_string();
            assert!(err.contains(&format!("line {line}")) && err.contains(needle), "{text:?}: {err}");
        }
        let err = Documents::read(&file("empty.txt", "\n \n")).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
