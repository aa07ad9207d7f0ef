//! A C program (`tests/c/otkd_query.c`) compiled against `include/otkd.h` and the host staticlib
//! answers bit for bit like the Rust runtime: the same embeddings (int8 values and scale bits), the
//! same top-k ids and score bits by cosine and CSLS, the same refusals, on the firmware's seeded
//! blobs and queries; and every error path gives its status code.
//!
//! Needs a C compiler (`$CC`, else `cc`): with `CI=true` a missing one fails this test; elsewhere
//! it is skipped with a loud message.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use otkd_capi::{OTKD_OK, OtkdModel, STATUS_NAMES, encode_status, otkd_load, otkd_scratch_size};
use otkd_runtime::{BlobParts, Feature, Model, Scoring, Scratch};

#[path = "../../firmware-tests/gen/blobgen.rs"]
#[allow(dead_code)]
mod blobgen;

fn name(status: i32) -> String {
    STATUS_NAMES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("OTKD_UNKNOWN".into(), |(_, name)| name.to_string_lossy().into_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `target/<profile>/`: the test executable is in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// The host staticlib cargo built with this test: `cargo test` leaves it in `deps/` under the
/// same hash as the rlib the test links, uplifting it to `target/<profile>/` only for
/// `cargo build`; so the newest of those.
fn staticlib() -> PathBuf {
    let profile = profile_dir();
    let deps = std::fs::read_dir(profile.join("deps")).expect("target/<profile>/deps");
    let candidates = deps
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libotkd_capi-") && n.ends_with(".a"))
        })
        .chain(Some(profile.join("libotkd_capi.a")));
    candidates
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("libotkd_capi.a: cargo builds it with this test (crate-type staticlib)")
}

/// The C program, compiled and linked against the header and the host staticlib; `None` (after a
/// loud message) when there is no C compiler outside CI.
fn compile() -> Option<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let staticlib = staticlib();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otkd_query");
    let mut command = Command::new(&cc);
    command
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c/otkd_query.c"))
        .arg(&staticlib)
        // What `rustc --print native-static-libs` names for a std staticlib on Linux.
        .args(["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc", "-o"])
        .arg(&out);
    match command.output() {
        Ok(output) if output.status.success() => Some(out),
        Ok(output) => panic!("{cc} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr)),
        Err(e) if !in_ci() => {
            eprintln!(
                "\n==== SKIPPED c_program: no C compiler ({cc}: {e}); CI=true makes this a failure ====\n"
            );
            None
        }
        Err(e) => panic!("no C compiler ({cc}: {e})"),
    }
}

/// The queries of the firmware's `queries.txt` (blank and `#` lines skipped, as the firmware does).
fn queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-tests/queries.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

/// What the C program must print for `blob`, computed with the Rust runtime (and, for the scratch
/// size, this crate's own function).
fn expected(blob: &[u8], queries: &[String], words: usize, k: usize) -> Vec<String> {
    let model = Model::from_bytes(blob).expect("the blob loads");
    let config = *model.config();
    let words = words.min(usize::from(config.tokenizer.max_words));
    let index = model.index();
    let mut scratch_len = 0usize;
    // SAFETY: a blob that outlives `handle`, and pointers to locals.
    unsafe {
        let mut handle = Box::new(std::mem::MaybeUninit::<OtkdModel>::uninit());
        assert_eq!(otkd_load(blob.as_ptr(), blob.len(), handle.as_mut_ptr()), OTKD_OK);
        assert_eq!(otkd_scratch_size(handle.as_ptr(), words, &mut scratch_len), OTKD_OK);
    }
    let mut lines = vec![format!(
        "info dim {} layers {} out_dim {} max_words {} documents {} scratch {scratch_len}",
        config.dim,
        config.layers,
        config.out_dim,
        config.tokenizer.max_words,
        index.map_or(0, |i| i.len())
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
    let searchable =
        |status: &str| if index.is_some() { status.to_owned() } else { "OTKD_ERR_NO_INDEX".into() };
    for (check, status) in [
        ("null-model", "OTKD_ERR_NULL".into()),
        ("not-loaded", "OTKD_ERR_NOT_LOADED".into()),
        ("null-text", "OTKD_ERR_NULL".into()),
        ("bad-utf8", "OTKD_ERR_BAD_UTF8".into()),
        ("empty-text", "OTKD_ERR_EMPTY_QUERY".into()),
        ("tiny-scratch", "OTKD_ERR_SCRATCH_TOO_SMALL".into()),
        ("encode", "OTKD_OK".into()),
        ("bad-scoring", "OTKD_ERR_BAD_ARGUMENT".into()),
        ("k-too-large", "OTKD_ERR_BAD_ARGUMENT".into()),
        ("wrong-width", searchable("OTKD_ERR_DIMENSION_MISMATCH")),
        ("null-blob", "OTKD_ERR_NULL".into()),
        ("too-short", "OTKD_ERR_LOAD_TOO_SHORT".into()),
        ("truncated", "OTKD_ERR_LOAD_TRUNCATED".into()),
        ("region", "OTKD_OK".into()),
        ("region-info", "OTKD_OK".into()),
        ("erased", "OTKD_ERR_LOAD_BAD_MAGIC".into()),
        ("failed-load-unloads", "OTKD_ERR_NOT_LOADED".into()),
        ("corrupt", "OTKD_ERR_LOAD_BAD_CRC".into()),
        ("version", "OTKD_ERR_LOAD_UNSUPPORTED_VERSION".into()),
        ("unknown-status", "OTKD_UNKNOWN".into()),
    ] {
        lines.push(format!("check {check} {status}"));
    }
    lines.push("done".into());
    lines
}

/// Runs the C program on `blob` and compares its output with [`expected`], line by line.
fn check(program: &Path, label: &str, blob: &[u8], words: usize, k: usize) {
    let queries = queries();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let blob_path = dir.join(format!("{label}.otkd"));
    std::fs::write(&blob_path, blob).expect("writing the blob");
    let mut child = Command::new(program)
        .arg(&blob_path)
        .arg(words.to_string())
        .arg(k.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the C program");
    let mut stdin = child.stdin.take().expect("piped");
    let input: String = queries.iter().map(|q| format!("{q}\n")).collect();
    stdin.write_all(input.as_bytes()).expect("writing the queries");
    drop(stdin);
    let output = child.wait_with_output().expect("the C program ends");
    assert!(
        output.status.success(),
        "{label}: the C program exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).expect("ASCII output");
    let printed: Vec<&str> = printed.lines().collect();
    let want = expected(blob, &queries, words, k);
    for (i, (c, rust)) in printed.iter().zip(&want).enumerate() {
        assert_eq!(c, rust, "{label}: line {i} differs (left: the C program, right: the Rust runtime)");
    }
    assert_eq!(printed.len(), want.len(), "{label}: lines printed");
    let answered = want.iter().filter(|l| l.contains(" embedding ")).count();
    let refused = want.iter().filter(|l| l.contains(" error ")).count();
    eprintln!(
        "c_program {label}: {} queries ({answered} encoded, {refused} refused), {} checks: the C program \
         matches the Rust runtime bit for bit",
        queries.len(),
        want.iter().filter(|l| l.starts_with("check ")).count()
    );
}

#[test]
fn c_program_answers_bit_for_bit_like_the_rust_runtime() {
    let Some(program) = compile() else { return };
    let tiny = blobgen::default_blob();
    check(&program, "seeded-tiny", &tiny, 32, 5);
    // Scratch for 3 words: longer queries are refused, as by the runtime with the same sizes;
    // k = 64 is every document.
    check(&program, "seeded-tiny-3-words", &tiny, 3, 64);
    check(&program, "seeded-micro", &blobgen::seeded_micro_blob(), 32, 10);
    let no_index = BlobParts::new(blobgen::TINY).to_bytes().expect("a valid config");
    check(&program, "no-index", &no_index, 32, 5);
}
