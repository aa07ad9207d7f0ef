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
