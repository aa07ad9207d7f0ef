//! The Multi30k source (layout and known defects: `shared/data/multi30k/README.md`).
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
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::npy::{ImageFeatures, read_npy_f32};
use super::{Bitext, DataError, Lang, Pair, Split, read_file, read_gz, split_lines};

/// Rows × columns of the ResNet-50 test feature matrix.
pub const TEST_FEATURE_SHAPE: [usize; 2] = [1000, 2048];

/// File name of the test image features, under `features/`.
pub const TEST_FEATURES_FILE: &str = "test_2016_flickr.resnet50-avgpool.npy";

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

/// Pairs two aligned caption lists (`en.len() == x.len()` is the caller's duty).
fn pair_up(split: Split, lang: Lang, en: &[String], x: &[String]) -> Bitext {
    debug_assert_eq!(en.len(), x.len());
    let mut pairs = Vec::with_capacity(en.len());
    let mut skipped = Vec::new();
    for (line, (e, t)) in en.iter().zip(x).enumerate() {
        if e.is_empty() || t.is_empty() {
            skipped.push(line);
        } else {
            pairs.push(Pair { line, lang, en: e.clone(), x: t.clone() });
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
        let en = self.captions(split, Lang::EN)?;
        if lang == Lang::EN {
            return Ok(pair_up(split, lang, &en, &en));
        }
        let x = self.captions(split, lang)?;
        if x.len() != en.len() {
            return Err(DataError::LineCountMismatch {
                split,
                path: self.captions_path(split, lang),
                lines: x.len(),
                expected_path: self.captions_path(split, Lang::EN),
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
            let en = match self.captions(split, Lang::EN) {
                Ok(v) => Some(v),
                Err(e) => {
                    push(e);
                    None
                }
            };
            for lang in Lang::MULTI30K {
                let x = if lang == Lang::EN {
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
                        expected_path: self.captions_path(split, Lang::EN),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::resolve_data_dir;
    use std::fs;
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
        for l in Lang::MULTI30K {
            assert_eq!(l.code().parse::<Lang>().unwrap(), l);
            assert_eq!(l.name().parse::<Lang>().unwrap(), l);
            assert_eq!(l.to_string(), l.code());
        }
        for s in Split::ALL {
            assert_eq!(s.stem().parse::<Split>().unwrap(), s);
            assert_eq!(s.to_string(), s.stem());
        }
        assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
        assert_eq!("dev".parse::<Split>().unwrap(), Split::Dev);
        assert!("tst".parse::<Split>().is_err());
        assert_eq!([Split::Train, Split::Dev, Split::Test].map(|s| s.expected_lines()), [29000, 1014, 1000]);
        assert_eq!(serde_json::to_string(&(Split::Test, Lang::GN)).unwrap(), r#"["test_2016_flickr","gn"]"#);
    }

    #[test]
    fn captions_strip_cr_and_keep_empty_lines() {
        let f = Fixture::new("cr");
        f.gz(Split::Dev, Lang::DE, b"\xef\xbb\xbfa b\r\n  \r\n\nc d e\r\nlast");
        let c = f.data().captions(Split::Dev, Lang::DE).unwrap();
        assert_eq!(c, vec!["a b", "", "", "c d e", "last"]);
    }

    #[test]
    fn unequal_line_counts_name_both_files() {
        let f = Fixture::new("mismatch");
        let en = f.lines(Split::Dev, Lang::EN, &["a", "b", "c"]);
        let de = f.lines(Split::Dev, Lang::DE, &["x", "y"]);
        let err = f.data().bitext(Split::Dev, Lang::DE).unwrap_err();
        match &err {
            DataError::LineCountMismatch { split, path, lines, expected_path, expected_lines } => {
                assert_eq!(*split, Split::Dev);
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
        let p = f.gz(Split::Train, Lang::FR, b"ok\nfine\nbad \xff\xfe here\nok\n");
        let err = f.data().captions(Split::Train, Lang::FR).unwrap_err();
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
        let err = f.data().captions(Split::Train, Lang::QU).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingFile { path } if path.ends_with("task1/train.qu.gz")),
            "{err:?}"
        );
        let err = f.data().image_ids(Split::Dev).unwrap_err();
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
        let err = f.data().captions(Split::Dev, Lang::CS).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
        assert!(err.to_string().contains("val.cs.gz"));
        // Truncated stream.
        f.lines(Split::Dev, Lang::ES, &["some caption text", "another one"]);
        let gz = fs::read(f.root.join("task1/val.es.gz")).unwrap();
        fs::write(f.root.join("task1/val.es.gz"), &gz[..gz.len() - 10]).unwrap();
        let err = f.data().captions(Split::Dev, Lang::ES).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    }

    #[test]
    fn empty_lines_are_skipped_never_paired_with_a_neighbour() {
        let f = Fixture::new("skip");
        f.lines(Split::Test, Lang::EN, &["e0", "e1", "e2", "", "e4"]);
        f.lines(Split::Test, Lang::AY, &["a0", "", "a2", "a3", "a4"]);
        let b = f.data().bitext(Split::Test, Lang::AY).unwrap();
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
        let e = f.data().bitext(Split::Test, Lang::EN).unwrap();
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
        let p = f.npy(&npy_bytes(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", &f4));
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
            (npy_bytes(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", &data), "bad .npy"),
            (
                npy_bytes(1, "{'descr': '<f2', 'fortran_order': True, 'shape': (2, 3), }", &data),
                "fortran order",
            ),
            (npy_bytes(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (6,), }", &data), "2-D"),
            (npy_bytes(1, "{'descr': '<f2', 'fortran_order': False, }", &data), "shape"),
            (npy_bytes(9, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", &data), "version"),
            (b"\x93NUMPY\x01\x00\xff\x00{'descr'".to_vec(), "past the end"),
        ];
        for (bytes, needle) in cases {
            let p = f.npy(&bytes);
            let err = read_npy_f32(&p).unwrap_err();
            assert!(matches!(err, DataError::BadNpy { .. }), "{needle}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{needle}: {msg}");
            assert!(msg.contains(TEST_FEATURES_FILE), "{msg}");
        }
        // Data shorter than the shape implies: refused before anything is allocated for it, also
        // for a shape no file could hold.
        for shape in ["(2, 4)", "(4294967296, 4294967296)"] {
            let header = format!("{{'descr': '<f2', 'fortran_order': False, 'shape': {shape}, }}");
            let err = read_npy_f32(&f.npy(&npy_bytes(1, &header, &data))).unwrap_err();
            assert!(err.to_string().contains("needs more data than the file's 12 bytes"), "{err}");
        }
        // Data longer than the shape implies.
        let mut longer = data.clone();
        longer.extend_from_slice(&[0; 4]);
        let p = f.npy(&npy_bytes(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", &longer));
        let err = read_npy_f32(&p).unwrap_err();
        assert!(matches!(err, DataError::NpyDataLength { bytes: 16, expected: 12, .. }), "{err:?}");
    }

    #[test]
    fn check_collects_all_defects() {
        let f = Fixture::new("check");
        // val: en 3 lines, de 2 lines (mismatch), fr fine; everything else missing.
        f.lines(Split::Dev, Lang::EN, &["a b", "c", "d e f"]);
        f.lines(Split::Dev, Lang::DE, &["x", "y"]);
        f.lines(Split::Dev, Lang::FR, &["u v", "", "w"]);
        f.gz(Split::Dev, Lang::CS, b"ok\n\xff\n");
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
        let fr = r.rows.iter().find(|row| row.split == Split::Dev && row.lang == Lang::FR).unwrap();
        assert_eq!((fr.lines, fr.pairs, fr.skipped), (3, 2, 1));
        assert!((fr.mean_words - 1.5).abs() < 1e-12);
        assert!(r.rows.iter().all(|row| row.lang != Lang::DE));
        assert_eq!(r.image_ids, vec![(Split::Dev, 3)]);
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
            for lang in Lang::MULTI30K {
                let c = d.captions(split, lang).unwrap();
                assert_eq!(c.len(), split.expected_lines(), "{split} {lang}");
            }
            assert_eq!(d.image_ids(split).unwrap().len(), split.expected_lines());
        }
        for lang in [Lang::AY, Lang::GN, Lang::QU] {
            let b = d.bitext(Split::Test, lang).unwrap();
            assert_eq!(b.pairs.len(), 999, "{lang}");
            assert_eq!(b.skipped, vec![904], "{lang}");
            assert_eq!(b.total_lines, 1000);
            assert!(b.pairs.iter().all(|p| p.line != 904));
        }
        let de = d.bitext(Split::Test, Lang::DE).unwrap();
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
