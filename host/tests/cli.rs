//! The `otkd` binary on bad input: a clear error naming the file, line or field, exit code 2,
//! never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn otkd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otkd"))
        .args(args)
        .env_remove("OTKD_DATA")
        .env_remove("OTKD_TEACHER")
        .env_remove("OTKD_CACHE")
        .output()
        .expect("otkd runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit status {:?}; stderr: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otkd-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_gz(path: &Path, lines: &[&str]) {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    for line in lines {
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap();
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["data", "check", "--help"],
        &["teacher", "encode", "--help"],
        &["teacher", "embed", "--help"],
        &["baseline", "--help"],
        &["train", "--help"],
        &["bench", "teacher", "--help"],
        &["bench", "train", "--help"],
        &["export", "--help"],
        &["query", "--help"],
        &["eval-blob", "--help"],
        &["experiment", "--help"],
    ] {
        let out = otkd(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
    let train_help = String::from_utf8_lossy(&otkd(&["train", "--help"]).stdout).into_owned();
    assert!(train_help.contains("1.5 M") && train_help.contains("8 M"), "presets state their budgets");
}

#[test]
fn missing_data_directory_is_named() {
    let out = otkd(&["data", "check", "--data", "/nonexistent/multi30k"]);
    assert_clean_failure(&out, &["/nonexistent/multi30k"]);
}

#[test]
fn misaligned_data_file_is_named_with_both_files() {
    let dir = temp_dir("misaligned");
    std::fs::create_dir_all(dir.join("task1")).unwrap();
    write_gz(&dir.join("task1/val.en.gz"), &["a dog", "a cat", "a man"]);
    write_gz(&dir.join("task1/val.ay.gz"), &["anu", "phisi"]);
    let out = otkd(&["data", "check", "--data", dir.to_str().unwrap()]);
    assert_clean_failure(&out, &["defect"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("val.ay.gz") && report.contains("val.en.gz"), "{report}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_teacher_and_empty_query_are_named() {
    let out = otkd(&["teacher", "embed", "--teacher", "/nonexistent/teacher", "a dog"]);
    assert_clean_failure(&out, &["/nonexistent/teacher"]);
    let out = otkd(&["teacher", "embed", "a dog", "  "]);
    assert_clean_failure(&out, &["sentence 2 is empty"]);
}

#[test]
fn resume_without_a_checkpoint_names_the_file() {
    let dir = temp_dir("resume");
    let out = otkd(&["train", "--method", "kd", "--resume", "--steps", "1", "--out", dir.to_str().unwrap()]);
    assert_clean_failure(&out, &["checkpoint-last.safetensors"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn out_of_range_numbers_are_rejected_before_any_work() {
    // Each flag is named in the message; nothing is loaded (the data path does not exist).
    for (flag, value) in [
        ("--clip-norm", "-1"),
        ("--clip-norm", "0"),
        ("--lr", "0"),
        ("--lr", "NaN"),
        ("--lr", "5"),
        ("--temperature", "0"),
        ("--epsilon", "0"),
        ("--sinkhorn-iterations", "0"),
        ("--sinkhorn-tolerance", "-1"),
        ("--teacher-batch", "0"),
        ("--weight-decay", "1.5"),
        ("--ot-kd-weight", "-0.5"),
        ("--ridge-lambda", "0"),
        ("--english-weight", "inf"),
        ("--steps", "0"),
    ] {
        let arg = format!("{flag}={value}");
        let out = otkd(&["train", "--method", "ot", "--data", "/nonexistent", &arg]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && !err.contains("/nonexistent"), "{flag} {value}: {err}");
    }
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_otkd"))
        .args(["data", "check"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before otkd writes its table, as `otkd data check | head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

#[test]
fn cuda_without_cuda_support_is_named() {
    let out = otkd(&["train", "--method", "kd", "--device", "cuda", "--data", "/nonexistent"]);
    assert_clean_failure(&out, &["--device cuda", "--features cuda"]);
}

#[test]
fn train_out_that_is_a_file_is_refused_before_loading() {
    let dir = temp_dir("out-file");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = otkd(&["train", "--method", "kd", "--data", "/nonexistent", "--out", file.to_str().unwrap()]);
    assert_clean_failure(&out, &["--out", "not a directory"]);
    assert!(!stderr(&out).contains("/nonexistent"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = otkd(&["train", "--method", "kd", "--pairs", "none"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--pairs"), "{}", stderr(&out));
    let out = otkd(&["baseline", "--langs", "xx"]);
    assert_eq!(out.status.code(), Some(2));
    for lexical in ["banana", "-1", "NaN"] {
        let out = otkd(&["export", "--run", "r", "--out", "b", &format!("--lexical={lexical}")]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("--lexical") && stderr(&out).contains("auto"), "{}", stderr(&out));
    }
}

/// A small valid model (8-word tokenizer, width 8, 4-d output) with the given index.
fn tiny_parts(index: otkd_runtime::IndexParts) -> otkd_runtime::BlobParts {
    use otkd_runtime::{BlobParts, ModelConfig, TokenizerConfig};
    let config = ModelConfig {
        tokenizer: TokenizerConfig { buckets: 64, max_words: 8, ..TokenizerConfig::DEFAULT },
        dim: 8,
        layers: 1,
        heads: 2,
        ffn: 16,
        out_dim: 4,
        layer_norm_eps: 1e-5,
    };
    let mut parts = BlobParts::new(config);
    parts.embeddings.iter_mut().enumerate().for_each(|(i, e)| *e = ((i * 37 % 11) as f32 - 5.0) / 5.0);
    parts.projection.weight.iter_mut().enumerate().for_each(|(i, w)| *w = ((i * 13 % 7) as f32 - 3.0) / 3.0);
    parts.index = Some(index);
    parts
}

/// A small valid blob with a two-document index, written to `dir/name`.
fn tiny_blob(dir: &Path, name: &str) -> PathBuf {
    let mut parts = tiny_parts(otkd_runtime::IndexParts {
        ids: vec![0, 1],
        embeddings: vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        hubness: vec![0.1, 0.2],
        lexical: None,
    });
    parts.lang = "ay".into();
    parts.index_source = "multi30k test_2016_flickr en".into();
    let path = dir.join(name);
    std::fs::write(&path, parts.to_bytes().unwrap()).unwrap();
    path
}

#[test]
fn texts_are_found_by_the_position_of_any_id() {
    let dir = temp_dir("ids");
    let mut parts = tiny_parts(otkd_runtime::IndexParts {
        ids: vec![7, 3],
        embeddings: vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        hubness: vec![0.0, 0.0],
        lexical: None,
    });
    parts.lang = "ay".into();
    let blob = dir.join("ids.otkd");
    std::fs::write(&blob, parts.to_bytes().unwrap()).unwrap();
    std::fs::write(dir.join("ids.otkd.docs.tsv"), "doc-seven\tfirst text\ndoc-three\tsecond text\n").unwrap();
    let out = otkd(&["query", "--blob", blob.to_str().unwrap(), "-k", "2", "--json", "jaʼa qhana"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for answer in line["answers"].as_array().unwrap() {
        let (doc_id, text) = match answer["id"].as_u64() {
            Some(7) => ("doc-seven", "first text"),
            Some(3) => ("doc-three", "second text"),
            other => panic!("id {other:?}"),
        };
        assert_eq!((answer["doc_id"].as_str(), answer["text"].as_str()), (Some(doc_id), Some(text)));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn query_answers_and_refuses_bad_queries_and_blobs() {
    let dir = temp_dir("query");
    let blob = tiny_blob(&dir, "tiny.otkd");
    let blob_arg = blob.to_str().unwrap();
    // A good query: two answers, ids and scores (captions may be absent).
    let out = otkd(&["query", "--blob", blob_arg, "-k", "2", "--json", "jaʼa qhana"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["query"], "jaʼa qhana");
    assert_eq!(line["answers"].as_array().unwrap().len(), 2);

    // Words past the tokenizer's max_words (8 in this blob) are dropped, as on a device: said.
    let out = otkd(&["query", "--blob", blob_arg, "a b c d e f g h i j"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 word(s) past the first 8"), "{}", stderr(&out));

    // The blob records its language: evaluating it with another language's queries is refused
    // before any data is read.
    let out = otkd(&["eval-blob", "--blob", blob_arg, "--lang", "qu", "--data", "/nonexistent"]);
    assert_clean_failure(&out, &["reads ay queries, not --lang qu"]);
    let out =
        otkd(&["eval-blob", "--blob", blob_arg, "--lang", "ay", "--split", "val", "--data", "/nonexistent"]);
    assert_clean_failure(&out, &["not the --split val captions"]);

    let out = otkd(&["query", "--blob", blob_arg, " ¿? "]);
    assert_clean_failure(&out, &["no word"]);
    let long = "a ".repeat(50_000);
    let out = otkd(&["query", "--blob", blob_arg, &long]);
    assert_clean_failure(&out, &["100000 bytes"]);
    let out = otkd(&["query", "--blob", "/nonexistent/model.otkd", "a dog"]);
    assert_clean_failure(&out, &["/nonexistent/model.otkd"]);

    // A blob of another format version (e.g. for another tokenizer) names both versions.
    let mut bytes = std::fs::read(&blob).unwrap();
    let found = otkd_runtime::FORMAT_VERSION + 1;
    bytes[4..8].copy_from_slice(&found.to_le_bytes());
    let other = dir.join("other.otkd");
    std::fs::write(&other, &bytes).unwrap();
    let out = otkd(&["query", "--blob", other.to_str().unwrap(), "a dog"]);
    assert_clean_failure(
        &out,
        &["other.otkd", &found.to_string(), &otkd_runtime::FORMAT_VERSION.to_string()],
    );
    // A truncated blob.
    std::fs::write(&other, &bytes[..bytes.len() / 2]).unwrap();
    let out = otkd(&["query", "--blob", other.to_str().unwrap(), "a dog"]);
    assert_clean_failure(&out, &["other.otkd"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_experiment_flags_are_rejected_before_any_work() {
    // Each is a usage error naming the flag; the data directory (which does not exist) is never
    // opened.
    for (flag, value) in [
        ("--preset", "huge"),
        ("--seeds", "0"),
        ("--seeds", "101"),
        ("--methods", "ot,xx"),
        ("--inits", "zero"),
        ("--pairs", "0"),
        ("--pairs", "some"),
        ("--langs", "xx"),
        ("--langs", "a b"),
        ("--steps", "0"),
        ("--english-weight", "-1"),
        ("--kd-variant", "cosine"),
    ] {
        let arg = format!("{flag}={value}");
        let out = otkd(&["experiment", "--data", "/nonexistent", &arg]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && !err.contains("/nonexistent"), "{flag} {value}: {err}");
    }
    // --eval-every needs --steps.
    let out = otkd(&["experiment", "--eval-every", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--steps"), "{}", stderr(&out));
    // English is the pivot, not a student language: refused before any data is read.
    let out = otkd(&["experiment", "--data", "/nonexistent", "--langs", "ay,en"]);
    assert_clean_failure(&out, &["pivot"]);
    assert!(!stderr(&out).contains("/nonexistent"));
}

fn otkd_with_stdin(args: &[&str], input: &str) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_otkd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Queries from standard input, one JSON line each, against an index of 5,000 documents (more
/// than the 4,096 an earlier host ranked in full): the runtime's streaming top-k has no cap.
#[test]
fn stdin_queries_against_a_5000_document_index() {
    let dir = temp_dir("stdin");
    let documents = 5000;
    let embeddings: Vec<f32> =
        (0..documents * 4).map(|i| ((i * 7919 % 201) as f32 - 100.0) / 100.0).collect();
    let index = otkd_runtime::IndexParts {
        ids: (0..documents as u32).collect(),
        embeddings,
        hubness: vec![0.0; documents],
        lexical: None,
    };
    let parts = tiny_parts(index);
    let blob = dir.join("big.otkd");
    std::fs::write(&blob, parts.to_bytes().unwrap()).unwrap();
    let out = otkd_with_stdin(
        &["query", "--blob", blob.to_str().unwrap(), "-k", "3", "--json", "--data", "/nonexistent"],
        "jaʼa qhana\n\nuta\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one line per non-blank query");
    assert_eq!((lines[0]["query"].as_str(), lines[1]["query"].as_str()), (Some("jaʼa qhana"), Some("uta")));
    for line in &lines {
        let answers = line["answers"].as_array().unwrap();
        assert_eq!(answers.len(), 3);
        let scores: Vec<f64> = answers.iter().map(|a| a["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(answers.iter().all(|a| a["id"].as_u64().unwrap() < documents as u64));
    }
    // A bad line is named by its number.
    let out = otkd_with_stdin(
        &["query", "--blob", blob.to_str().unwrap(), "--data", "/nonexistent"],
        "uta\n ¿? \n",
    );
    assert_clean_failure(&out, &["stdin line 2", "no word"]);
    std::fs::remove_dir_all(dir).unwrap();
}
