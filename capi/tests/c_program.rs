//! A C program (`tests/c/otkd_query.c`) compiled against `include/otkd.h` and the host staticlib
//! answers bit for bit like the Rust runtime: the same embeddings (int8 values and scale bits), the
//! same top-k ids and score bits by cosine and CSLS, the same refusals, on the firmware's seeded
//! blobs and queries; and every error path gives its status code.
//!
//! Needs a C compiler (`$CC`, else `cc`): with `CI=true` a missing one fails this test; elsewhere
//! it is skipped with a loud message.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{answer_lines, assert_lines, host_scratch_size, in_ci, queries};
use otkd_runtime::BlobParts;

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

/// What the C program must print for `blob`: the Rust runtime's answers (`common::answer_lines`,
/// with the host's scratch size), then the status of each error path it tries, then `done`.
fn expected(blob: &[u8], queries: &[String], words: usize, k: usize) -> Vec<String> {
    let has_index = otkd_runtime::Model::from_bytes(blob).expect("the blob loads").index().is_some();
    let mut lines = answer_lines(blob, queries, words, k, Some(host_scratch_size(blob, words)));
    let searchable = if has_index { "OTKD_ERR_DIMENSION_MISMATCH" } else { "OTKD_ERR_NO_INDEX" };
    for (check, status) in [
        ("null-model", "OTKD_ERR_NULL"),
        ("not-loaded", "OTKD_ERR_NOT_LOADED"),
        ("null-text", "OTKD_ERR_NULL"),
        ("bad-utf8", "OTKD_ERR_BAD_UTF8"),
        ("empty-text", "OTKD_ERR_EMPTY_QUERY"),
        ("tiny-scratch", "OTKD_ERR_SCRATCH_TOO_SMALL"),
        ("encode", "OTKD_OK"),
        ("bad-scoring", "OTKD_ERR_BAD_ARGUMENT"),
        ("k-too-large", "OTKD_ERR_BAD_ARGUMENT"),
        ("wrong-width", searchable),
        ("null-blob", "OTKD_ERR_NULL"),
        ("too-short", "OTKD_ERR_LOAD_TOO_SHORT"),
        ("truncated", "OTKD_ERR_LOAD_TRUNCATED"),
        ("region", "OTKD_OK"),
        ("region-info", "OTKD_OK"),
        ("erased", "OTKD_ERR_LOAD_BAD_MAGIC"),
        ("failed-load-unloads", "OTKD_ERR_NOT_LOADED"),
        ("corrupt", "OTKD_ERR_LOAD_BAD_CRC"),
        ("version", "OTKD_ERR_LOAD_UNSUPPORTED_VERSION"),
        ("unknown-status", "OTKD_UNKNOWN"),
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
    assert_lines(label, &printed, &want);
    let answered = want.iter().filter(|l| l.contains(" embedding ")).count();
    let refused = want.iter().filter(|l| l.contains(" error ")).count();
    common::say(&format!(
        "c_program {label}: {} queries ({answered} encoded, {refused} refused), {} checks: the C program \
         matches the Rust runtime bit for bit",
        queries.len(),
        want.iter().filter(|l| l.starts_with("check ")).count()
    ));
}

#[test]
fn c_program_answers_bit_for_bit_like_the_rust_runtime() {
    let Some(program) = compile() else { return };
    let tiny = otkd_runtime::testing::tiny_blob();
    check(&program, "seeded-tiny", &tiny, 32, 5);
    // Scratch for 3 words: longer queries are refused, as by the runtime with the same sizes;
    // k = 64 is every document.
    check(&program, "seeded-tiny-3-words", &tiny, 3, 64);
    check(&program, "seeded-micro", &otkd_runtime::testing::micro_blob(), 32, 10);
    let no_index = BlobParts::new(otkd_runtime::testing::TINY).to_bytes().expect("a valid config");
    check(&program, "no-index", &no_index, 32, 5);
}
