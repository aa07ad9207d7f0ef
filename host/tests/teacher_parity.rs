//! The teacher against an independent float64 implementation
//! (`../shared/models/all-MiniLM-L6-v2/reference/embeddings.json`): token ids exactly,
//! sentence embeddings and token states within 1e-4.

use otkd::paths::{DEFAULT_TEACHER, TEACHER_ENV, resolve_dir};
use otkd::teacher::Teacher;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
    token_states: Option<Vec<Vec<f32>>>,
}

const TOLERANCE: f32 = 1e-4;

fn load() -> (Teacher, Reference) {
    let dir = resolve_dir(None, TEACHER_ENV, DEFAULT_TEACHER)
        .unwrap_or_else(|tried| panic!("the teacher is needed for this test; tried {tried:?}"));
    let text =
        std::fs::read_to_string(dir.join("reference/embeddings.json")).expect("reference/embeddings.json");
    (Teacher::load(&dir).expect("teacher loads"), serde_json::from_str(&text).expect("reference parses"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn teacher_matches_float64_reference() {
    let (teacher, reference) = load();
    let texts: Vec<&str> = reference.sentences.iter().map(|r| r.text.as_str()).collect();
    let tokens = teacher.tokenize(&texts).unwrap();
    for (r, t) in reference.sentences.iter().zip(&tokens) {
        assert_eq!(t.ids, r.token_ids, "token ids of {:?}", r.text);
    }

    // Batches of 8 pack sentences of different lengths together; they must agree with the
    // reference too.
    let outputs = teacher.encode(&texts, 8, true, |_| {}).unwrap();
    let states = outputs.token_states.as_ref().expect("token states were asked for");
    let mut worst = 0f32;
    for (i, r) in reference.sentences.iter().enumerate() {
        let got = &outputs.embeddings[i * 384..(i + 1) * 384];
        let diff = max_abs_diff(got, &r.embedding);
        assert!(diff <= TOLERANCE, "embedding {i} ({:?}) differs by {diff}", r.text);
        worst = worst.max(diff);
    }
    eprintln!("worst embedding difference: {worst:e}");

    for (i, r) in reference.sentences.iter().enumerate() {
        let Some(expected) = &r.token_states else { continue };
        let expected: Vec<f32> = expected.iter().flatten().copied().collect();
        // Alone in its batch, in f32.
        let alone = teacher.forward_packed(&[&tokens[i].ids]).unwrap();
        let alone: Vec<f32> = alone.flatten_all().unwrap().to_vec1().unwrap();
        let diff = max_abs_diff(&alone, &expected);
        assert!(diff <= TOLERANCE, "token states of sentence {i} differ by {diff}");
        // Packed with others and stored as f16 (about 3 significant digits of values up to ~6).
        let packed: Vec<f32> = states.sentence(i, 384).iter().map(|v| v.to_f32()).collect();
        let diff = max_abs_diff(&packed, &expected);
        assert!(diff <= 5e-3, "packed f16 token states of sentence {i} differ by {diff}");
    }
}

#[test]
fn missing_teacher_files_are_named() {
    let dir = std::env::temp_dir().join(format!("otkd-empty-teacher-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = Teacher::load(&dir).err().expect("an empty directory is no teacher").to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let err = Teacher::load(&dir).err().unwrap().to_string();
    assert!(err.contains("config.json") && err.contains("line 1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let err = Teacher::load(&dir).err().unwrap().to_string();
    assert!(err.contains("does not exist"), "{err}");
}

/// A BERT teacher directory written by the test: random weights at width 8, one layer, the
/// shared teacher's tokenizer, and the given `modules.json` and pooling config.
fn tiny_teacher(name: &str, pooling: &str, config_extra: &str) -> std::path::PathBuf {
    use candle_core::{Device, Tensor};
    let shared = resolve_dir(None, TEACHER_ENV, DEFAULT_TEACHER)
        .unwrap_or_else(|tried| panic!("the teacher's tokenizer is needed for this test; tried {tried:?}"));
    let dir = std::env::temp_dir().join(format!("otkd-tiny-teacher-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::copy(shared.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let (h, inner, vocab) = (8usize, 16usize, 30522usize);
    let model_type = if config_extra.contains("model_type") { "" } else { r#", "model_type": "bert""# };
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"vocab_size": {vocab}, "hidden_size": {h}, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": {inner}, "max_position_embeddings": 512, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "hidden_act": "gelu"{model_type}{config_extra}}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::write(dir.join("1_Pooling/config.json"), pooling).unwrap();
    let mut rng = otkd::rng::SplitMix64::new(7, "tiny-teacher");
    let mut tensors = std::collections::HashMap::new();
    let mut put = |name: &str, shape: &[usize], scale: f64| {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32).collect();
        tensors.insert(name.to_string(), Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
    };
    put("embeddings.word_embeddings.weight", &[vocab, h], 1.0);
    put("embeddings.position_embeddings.weight", &[512, h], 1.0);
    put("embeddings.token_type_embeddings.weight", &[2, h], 1.0);
    let layer = "encoder.layer.0";
    for dense in
        ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]
    {
        put(&format!("{layer}.{dense}.weight"), &[h, h], 0.5);
        put(&format!("{layer}.{dense}.bias"), &[h], 0.1);
    }
    put(&format!("{layer}.intermediate.dense.weight"), &[inner, h], 0.5);
    put(&format!("{layer}.intermediate.dense.bias"), &[inner], 0.1);
    put(&format!("{layer}.output.dense.weight"), &[h, inner], 0.5);
    put(&format!("{layer}.output.dense.bias"), &[h], 0.1);
    for norm in [
        "embeddings.LayerNorm",
        "encoder.layer.0.attention.output.LayerNorm",
        "encoder.layer.0.output.LayerNorm",
    ] {
        put(&format!("{norm}.weight"), &[h], 0.2);
        put(&format!("{norm}.bias"), &[h], 0.2);
    }
    // Gains near 1 rather than near 0.
    for (name, t) in tensors.iter_mut() {
        if name.ends_with("LayerNorm.weight") {
            *t = (t.clone() + 1.0).unwrap();
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    dir
}

fn normalised(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / norm) as f32).collect()
}

/// The pooling a sentence-transformers directory declares is the pooling used: CLS, max and
/// mean embeddings against the same pooling computed here from the teacher's token states.
#[test]
fn the_declared_pooling_is_used() {
    let sentences = ["a dog runs on the green grass", "two people", "x"];
    for mode in ["cls_token", "max_tokens", "mean_tokens"] {
        let pooling = format!(r#"{{"word_embedding_dimension": 8, "pooling_mode_{mode}": true}}"#);
        let dir = tiny_teacher(mode, &pooling, "");
        let teacher = Teacher::load(&dir).unwrap();
        let out = teacher.encode(&sentences, 2, true, |_| {}).unwrap();
        let states = out.token_states.as_ref().unwrap();
        for i in 0..sentences.len() {
            let rows: Vec<Vec<f64>> = states
                .sentence(i, 8)
                .chunks(8)
                .map(|r| r.iter().map(|v| f64::from(v.to_f32())).collect())
                .collect();
            let pooled: Vec<f64> = match mode {
                "cls_token" => rows[0].clone(),
                "max_tokens" => {
                    (0..8).map(|d| rows.iter().map(|r| r[d]).fold(f64::NEG_INFINITY, f64::max)).collect()
                }
                _ => (0..8).map(|d| rows.iter().map(|r| r[d]).sum::<f64>()).collect(),
            };
            let diff = max_abs_diff(&out.embeddings[i * 8..(i + 1) * 8], &normalised(&pooled));
            // The token states are stored as f16.
            assert!(diff < 5e-3, "{mode}, sentence {i}: differs by {diff}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// What otkd cannot run exactly is refused by name: two pooling modes, an unknown mode, no
/// `modules.json`, another architecture, relative positions.
#[test]
fn poolings_and_architectures_otkd_cannot_run_are_refused() {
    let mean = r#"{"pooling_mode_mean_tokens": true}"#;
    let cases = [
        (
            "two-modes",
            r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}"#,
            "",
            "pooling_mode_cls_token + pooling_mode_mean_tokens",
        ),
        ("sqrt", r#"{"pooling_mode_mean_sqrt_len_tokens": true}"#, "", "mean_sqrt_len_tokens"),
        ("xlmr", mean, r#", "model_type": "xlm-roberta""#, "xlm-roberta"),
        ("relative", mean, r#", "position_embedding_type": "relative_key""#, "relative_key"),
    ];
    for (name, pooling, extra, needle) in cases {
        let dir = tiny_teacher(name, pooling, extra);
        let err = Teacher::load(&dir).err().unwrap_or_else(|| panic!("{name} loaded")).to_string();
        assert!(err.contains(needle), "{name}: {err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
    let dir = tiny_teacher("no-modules", mean, "");
    std::fs::remove_file(dir.join("modules.json")).unwrap();
    let err = Teacher::load(&dir).err().unwrap().to_string();
    assert!(err.contains("modules.json") && err.contains("will not guess"), "{err}");
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
    )
    .unwrap();
    let err = Teacher::load(&dir).err().unwrap().to_string();
    assert!(err.contains("sentence_transformers.models.Dense"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
