//! What the C API's tests share: the firmware's queries (its seeded blobs are the runtime's test
//! fixture, `otkd_runtime::testing`), and the Rust runtime's
//! answers in the lines the C programs print.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use otkd_capi::{OTKD_OK, OtkdModel, STATUS_NAMES, encode_status, otkd_load, otkd_scratch_size};
use otkd_runtime::{Feature, Model, Scoring, Scratch};

/// Prints past libtest's output capture (straight to stderr, as `eprintln!` is captured), so that
/// the results show in a plain `cargo test` log.
pub fn say(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// The name `otkd_status_name` gives a code.
pub fn name(status: i32) -> String {
    STATUS_NAMES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("OTKD_UNKNOWN".into(), |(_, name)| name.to_string_lossy().into_owned())
}

/// True when running in CI (`CI` set to anything but `false`/`0`/empty).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `program` on PATH (or in cargo's bin directory).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    {
        dirs.push(home.join("bin"));
    }
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

/// `Some(())` to go on; `None` after a loud skip message outside CI; a panic in CI.
pub fn require(test: &str, missing: Option<String>) -> Option<()> {
    match missing {
        None => Some(()),
        Some(message) if in_ci() => panic!("{test}: {message}"),
        Some(message) => {
            eprintln!("\n==== SKIPPED {test}: {message} (CI=true makes this a failure) ====\n");
            None
        }
    }
}

/// The queries of the firmware's `queries.txt` (blank and `#` lines skipped, as the firmware does).
pub fn queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-tests/queries.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

/// Bytes `otkd_scratch_size` gives for `words` words of `blob` on this (the host) target.
pub fn host_scratch_size(blob: &[u8], words: usize) -> usize {
    let mut bytes = 0usize;
    // SAFETY: a blob that outlives the handle, and pointers to live values.
    unsafe {
        let mut handle = Box::new(std::mem::MaybeUninit::<OtkdModel>::uninit());
        assert_eq!(otkd_load(blob.as_ptr(), blob.len(), handle.as_mut_ptr()), OTKD_OK);
        assert_eq!(otkd_scratch_size(handle.as_ptr(), words, &mut bytes), OTKD_OK);
    }
    bytes
}

/// The Rust runtime's answers to `queries` on `blob`, with scratch memory for `words` words and
/// the top `k`, in the lines the C programs print: `info ...` (with ` scratch N` when `scratch`
/// is given), then per query `q I error NAME`, or `q I embedding LEN SCALE_BITS V...` and the
/// `q I cosine ID:BITS ...` and `q I csls ...` lines.
pub fn answer_lines(
    blob: &[u8],
    queries: &[String],
    words: usize,
    k: usize,
    scratch: Option<usize>,
) -> Vec<String> {
    let model = Model::from_bytes(blob).expect("the blob loads");
    let config = *model.config();
    let words = words.min(usize::from(config.tokenizer.max_words));
    let index = model.index();
    let mut lines = vec![format!(
        "info dim {} layers {} out_dim {} max_words {} documents {}{}",
        config.dim,
        config.layers,
        config.out_dim,
        config.tokenizer.max_words,
        index.map_or(0, |i| i.len()),
        scratch.map_or(String::new(), |s| format!(" scratch {s}"))
    )];
    let mut features = heapless::Vec::<Feature, 8192>::new();
    let mut floats = vec![0f32; Scratch::floats_len(&config, words)];
    let mut int8s = vec![0i8; Scratch::int8s_len(&config, words)];
    let mut scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
    for (i, text) in queries.iter().enumerate() {
        let embedding = match model.encode(text, &mut scratch) {
            Ok(embedding) => embedding,
            Err(e) => {
                lines.push(format!("q {i} error {}", name(encode_status(e))));
                continue;
            }
        };
        let values: Vec<String> = embedding.values().iter().map(i8::to_string).collect();
        lines.push(format!(
            "q {i} embedding {} {} {}",
            embedding.len(),
            embedding.scale().to_bits(),
            values.join(" ")
        ));
        for (label, scoring) in [("cosine", Scoring::Cosine), ("csls", Scoring::Csls)] {
            match index {
                None => lines.push(format!("q {i} {label}-error OTKD_ERR_NO_INDEX")),
                Some(index) => {
                    let hits = index.search::<64>(&embedding, k, scoring).expect("the model's own width");
                    let hits: Vec<String> =
                        hits.iter().map(|h| format!(" {}:{}", h.id, h.score.to_bits())).collect();
                    lines.push(format!("q {i} {label}{}", hits.concat()));
                }
            }
        }
    }
    lines
}

/// Compares what a C program printed with what it must print, line by line.
pub fn assert_lines(label: &str, printed: &[&str], want: &[String]) {
    for (i, (c, rust)) in printed.iter().zip(want).enumerate() {
        assert_eq!(c, rust, "{label}: line {i} differs (left: the C program, right: the Rust runtime)");
    }
    assert_eq!(printed.len(), want.len(), "{label}: lines printed");
}
