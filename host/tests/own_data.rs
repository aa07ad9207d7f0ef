//! A user's own bitext and documents through the `otkd` binary, on small files made from the
//! shipped Multi30k captions: train, eval, export with documents, query, embed; the same run
//! through the Multi30k layout and through TSV files gives the same `final.json`; bad files are
//! named errors before the teacher loads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use otkd::data::{Lang, Multi30k, Split, resolve_data_dir};

fn otkd(args: &[&str], cache: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_otkd"))
        .args(args)
        .arg("--cache")
        .arg(cache)
        .env_remove("OTKD_DATA")
        .env_remove("OTKD_CACHE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("otkd runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otkd-own-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first `n` Multi30k pairs of a split whose two sides are non-empty and distinct pairs.
fn multi30k_pairs(split: Split, n: usize) -> Vec<(String, String)> {
    let data = Multi30k::open(resolve_data_dir(None).expect("the shipped Multi30k data")).unwrap();
    let mut seen = std::collections::HashSet::new();
    data.bitext(split, Lang::AY)
        .unwrap()
        .pairs
        .into_iter()
        .map(|p| (p.x, p.en))
        .filter(|p| seen.insert(p.clone()))
        .take(n)
        .collect()
}

fn tsv(path: &Path, pairs: &[(String, String)]) {
    std::fs::write(path, pairs.iter().map(|(x, en)| format!("{x}\t{en}\n")).collect::<String>()).unwrap();
}

/// `final.json` without the wall-clock fields.
fn final_report(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("final.json")).unwrap();
    let mut report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let object = report.as_object_mut().unwrap();
    object.remove("elapsed_seconds");
    object.remove("pairs_per_second");
    report
}

const TRAIN: [&str; 12] = [
    "--method",
    "kd",
    "--steps",
    "12",
    "--batch",
    "16",
    "--eval-every",
    "6",
    "--init",
    "random",
    "--seed",
    "3",
];

#[test]
fn own_bitext_trains_evaluates_exports_and_answers() {
    let dir = temp_dir("path");
    let cache = dir.join("cache");
    let pairs = multi30k_pairs(Split::Train, 160);
    let bitext = dir.join("pairs.tsv");
    tsv(&bitext, &pairs);
    // `data check` reads and splits the files as training will, and counts.
    let check = ok(otkd(
        &[
            "data",
            "check",
            "--bitext",
            &format!("quy-test={}", bitext.display()),
            "--dev-size",
            "30",
            "--test-size",
            "30",
            "--json",
        ],
        &cache,
        None,
    ));
    let rows: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(
        (rows[0]["train"].as_u64(), rows[0]["dev"].as_u64(), rows[0]["test"].as_u64()),
        (Some(100), Some(30), Some(30))
    );
    let run = dir.join("run");
    let mut args = vec!["train", "--bitext", bitext.to_str().unwrap(), "--lang", "quy-test"];
    args.extend(["--dev-size", "30", "--test-size", "30", "--out", run.to_str().unwrap(), "--json"]);
    args.extend(TRAIN);
    let stdout = ok(otkd(&args, &cache, None));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["config"]["lang"], "quy-test");
    assert_eq!(report["best"]["test"]["x_to_en"]["queries"], 30);

    // A resumed run must read the same pairs: other held-out sizes are refused before any work.
    let mut resume =
        vec!["train", "--method", "kd", "--bitext", bitext.to_str().unwrap(), "--lang", "quy-test"];
    resume.extend(["--dev-size", "31", "--test-size", "30", "--out", run.to_str().unwrap(), "--resume"]);
    let out = otkd(&resume, &cache, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("trained on other pairs"), "{err}");

    // `eval` of the run on its own held-out test lines reproduces final.json.
    let eval: serde_json::Value =
        serde_json::from_str(&ok(otkd(&["eval", "--run", run.to_str().unwrap(), "--json"], &cache, None)))
            .unwrap();
    assert_eq!(eval[0]["lang"], "quy-test");
    assert_eq!(eval[0]["test"], report["best"]["test"]);
    assert_eq!(eval[0]["test_csls"], report["best"]["test_csls"]);

    // Documents of the user's own, with ids: the blob answers with their ids and texts.
    let docs = dir.join("docs.tsv");
    let texts: Vec<&str> = pairs.iter().take(50).map(|(_, en)| en.as_str()).collect();
    std::fs::write(
        &docs,
        texts.iter().enumerate().map(|(i, t)| format!("doc-{i}\t{t}\n")).collect::<String>(),
    )
    .unwrap();
    let blob = dir.join("model.otkd");
    let out = ok(otkd(
        &[
            "export",
            "--run",
            run.to_str().unwrap(),
            "--docs",
            docs.to_str().unwrap(),
            "--out",
            blob.to_str().unwrap(),
            "--json",
        ],
        &cache,
        None,
    ));
    let budget: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(budget["documents"], 50);
    // `--lexical auto` chose the lexicon's weight on the run's 30 dev pairs (0: no lexicon).
    let choice = &budget["lexical_choice"];
    assert_eq!(choice["queries"], 30);
    assert!(choice["hybrid_r1"].as_f64().unwrap() >= choice["dense_r1"].as_f64().unwrap());
    assert_eq!(budget["lexical_weight"].is_null(), choice["weight"] == 0.0);
    // A given weight, and at most 8 terms per document: 4 + 51 · 4 + 50 · 2 bytes of framing
    // and at most 8 postings of 3 bytes per document over the dense index.
    let export = |lexical: &[&str]| -> serde_json::Value {
        let other = dir.join("lexical.otkd");
        let mut args = vec!["export", "--run", run.to_str().unwrap(), "--docs", docs.to_str().unwrap()];
        args.extend(["--out", other.to_str().unwrap(), "--json"]);
        args.extend(lexical);
        serde_json::from_str(&ok(otkd(&args, &cache, None))).unwrap()
    };
    let dense = export(&["--lexical", "off"]);
    assert!(dense["lexical_weight"].is_null() && dense["lexical_choice"].is_null());
    let hybrid = export(&["--lexical", "0.5", "--lexical-terms", "8"]);
    assert_eq!(hybrid["lexical_weight"], 0.5);
    let extra = hybrid["index_bytes"].as_u64().unwrap() - dense["index_bytes"].as_u64().unwrap();
    assert!(extra > 4 + 51 * 4 + 50 * 2 + 50 * 3 && extra <= 4 + 51 * 4 + 50 * 2 + 50 * 8 * 3, "{extra}");
    let queries = format!("{}\n\n{}\n", pairs[0].0, pairs[1].0);
    let out =
        ok(otkd(&["query", "--blob", blob.to_str().unwrap(), "-k", "2", "--json"], &cache, Some(&queries)));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one JSON line per non-blank query");
    for (line, (x, _)) in lines.iter().zip(&pairs) {
        assert_eq!(line["query"], x.as_str());
        let top = &line["answers"][0];
        let id = top["id"].as_u64().unwrap() as usize;
        assert_eq!(top["doc_id"], format!("doc-{id}"));
        assert_eq!(top["text"], texts[id]);
    }

    // Embeddings of the int8 runtime and of the f32 student agree closely.
    let embed = |model: &str, path: &Path| -> Vec<f64> {
        let out = ok(otkd(&["embed", model, path.to_str().unwrap(), &pairs[2].0], &cache, None));
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        line["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    let (int8, f32) = (embed("--blob", &blob), embed("--run", &run));
    let dot: f64 = int8.iter().zip(&f32).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!(dot / norm(&int8) / norm(&f32) > 0.98, "int8 vs f32 cosine {}", dot / norm(&int8) / norm(&f32));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn multi30k_layout_and_tsv_files_give_the_same_run() {
    let dir = temp_dir("same");
    let cache = dir.join("cache");
    // A Multi30k-shaped directory of the first distinct pairs, and the same pairs as TSVs.
    let data = dir.join("multi30k");
    std::fs::create_dir_all(data.join("task1")).unwrap();
    let mut tsvs = Vec::new();
    for (split, n) in [(Split::Train, 120), (Split::Dev, 40), (Split::Test, 40)] {
        let pairs = multi30k_pairs(split, n);
        for (lang, side) in [("ay", 0), ("en", 1)] {
            let path = data.join("task1").join(format!("{}.{lang}.gz", split.stem()));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for p in &pairs {
                use std::io::Write;
                writeln!(gz, "{}", if side == 0 { &p.0 } else { &p.1 }).unwrap();
            }
            std::fs::write(path, gz.finish().unwrap()).unwrap();
        }
        let path = dir.join(format!("{}.tsv", split.stem()));
        tsv(&path, &pairs);
        tsvs.push(path);
    }
    let (multi30k_run, tsv_run) = (dir.join("run-multi30k"), dir.join("run-tsv"));
    let mut args = vec![
        "train",
        "--lang",
        "ay",
        "--data",
        data.to_str().unwrap(),
        "--out",
        multi30k_run.to_str().unwrap(),
    ];
    args.extend(TRAIN);
    ok(otkd(&args, &cache, None));
    let mut args = vec!["train", "--lang", "ay", "--out", tsv_run.to_str().unwrap()];
    args.extend(["--bitext", tsvs[0].to_str().unwrap(), "--dev", tsvs[1].to_str().unwrap()]);
    args.extend(["--test", tsvs[2].to_str().unwrap()]);
    args.extend(TRAIN);
    ok(otkd(&args, &cache, None));
    assert_eq!(final_report(&multi30k_run), final_report(&tsv_run));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_bitext_is_named_before_the_teacher_loads() {
    let dir = temp_dir("bad");
    let cache = dir.join("cache");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let good = write("good.tsv", b"a b\tc d\n");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--bitext".into(), write("notab.tsv", b"a\tb\nno tab\n"), "--lang".into(), "quy".into()],
            "notab.tsv: line 2 has no tab",
        ),
        (
            vec!["--bitext".into(), write("utf8.tsv", b"a\tb\n\xfe\tb\n"), "--lang".into(), "quy".into()],
            "line 2 is not valid UTF-8",
        ),
        (
            vec!["--bitext".into(), write("empty.tsv", b""), "--lang".into(), "quy".into()],
            "empty.tsv: the file is empty",
        ),
        (
            vec![
                "--src".into(),
                write("s.quy", b"a\nb\n"),
                "--tgt".into(),
                write("s.en", b"a\n"),
                "--lang".into(),
                "quy".into(),
            ],
            "s.quy has 2 lines but",
        ),
        (vec!["--bitext".into(), good.clone()], "name its language with --lang or as LANG=FILE"),
        (vec!["--bitext".into(), good.clone(), "--lang".into(), "not a tag".into()], "invalid language tag"),
        (
            vec!["--bitext".into(), good.clone(), "--lang".into(), "quy".into()],
            "cannot give 1000 dev and 1000 test pairs",
        ),
        (vec!["--dev".into(), good.clone()], "give --bitext or --src/--tgt too"),
        (
            vec!["--bitext".into(), format!("quy={good}"), "--bitext".into(), format!("quy={good}")],
            "given twice",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["train", "--method", "kd", "--teacher", "/nonexistent-teacher"];
        args.extend(flags.iter().map(String::as_str));
        let out = otkd(&args, &cache, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{flags:?}: {err}");
        assert!(!err.contains("nonexistent-teacher"), "checked before the teacher: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
