//! The int8 encoder against an f64 reference of the same forward pass, and its edge cases.

mod reference;

use otkd_runtime::testing::{MICRO, OwnedScratch, SMALL, SplitMix64, seeded_parts};
use otkd_runtime::{EncodeError, Feature, Model, Scratch};
use reference::{TEXTS, cosine, reference_encode};

#[test]
fn int8_encoder_matches_the_f32_forward_pass() {
    for seed in 0..3 {
        let parts = seeded_parts(SMALL, &mut SplitMix64::new(seed));
        let blob = parts.to_bytes().unwrap();
        let model = Model::from_bytes(&blob).unwrap();
        let mut scratch = OwnedScratch::new(model.config(), 16);
        for text in TEXTS {
            let embedding = model.encode(text, &mut scratch.scratch()).unwrap();
            let reference = reference_encode(&parts, text).unwrap();
            let cos = cosine(&embedding, &reference);
            assert!(cos > 0.99, "seed {seed}, {text:?}: cosine {cos}");
        }
    }
}

#[test]
fn micro_student_matches_the_f32_forward_pass() {
    let parts = seeded_parts(MICRO, &mut SplitMix64::new(7));
    let blob = parts.to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut scratch = OwnedScratch::new(model.config(), 32);
    for text in &TEXTS[..4] {
        let cos = cosine(
            &model.encode(text, &mut scratch.scratch()).unwrap(),
            &reference_encode(&parts, text).unwrap(),
        );
        assert!(cos > 0.99, "{text:?}: cosine {cos}");
    }
}

#[test]
fn embeddings_are_unit_length_and_deterministic() {
    let blob = seeded_parts(SMALL, &mut SplitMix64::new(1)).to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut scratch = OwnedScratch::new(model.config(), 16);
    for text in TEXTS {
        let first = model.encode(text, &mut scratch.scratch()).unwrap();
        // Dirty scratch from another text must not matter.
        model.encode("something else entirely", &mut scratch.scratch()).unwrap();
        let second = model.encode(text, &mut scratch.scratch()).unwrap();
        assert_eq!(first, second);
        let norm = first.to_f32().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 0.01, "{text:?}: norm {norm}");
    }
}

#[test]
fn texts_without_words_are_refused() {
    let blob = seeded_parts(SMALL, &mut SplitMix64::new(2)).to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut scratch = OwnedScratch::new(model.config(), 16);
    for text in ["", " ", " ... ", "¿¡!?", "\n\t\r", "「」、。"] {
        assert_eq!(model.encode(text, &mut scratch.scratch()), Err(EncodeError::EmptyQuery), "{text:?}");
    }
}

#[test]
fn scratch_sizes_are_exact() {
    let config = SMALL;
    let blob = seeded_parts(config, &mut SplitMix64::new(3)).to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    // Five words of one window each (16 chars): every word gives the most features a word can.
    let long_word = "abcdefghijklmnop";
    let text = [long_word; 5].join(" ");
    let words = 5;
    let (features_len, floats_len, int8s_len) = (
        Scratch::features_len(&config, words),
        Scratch::floats_len(&config, words),
        Scratch::int8s_len(&config, words),
    );
    let mut features = heapless::Vec::<Feature, 4096>::new();
    let mut floats = vec![0f32; floats_len];
    let mut int8s = vec![0i8; int8s_len];
    let expected =
        model.encode(&text, &mut Scratch::new(features.as_mut_view(), &mut floats, &mut int8s)).unwrap();
    // The encoder reuses the feature buffer's memory once the words are embedded (it is left
    // empty): the tokenizer counts the features.
    assert!(features.is_empty());
    otkd_runtime::tokenize(&config.tokenizer, &text, features.as_mut_view());
    assert_eq!(features.len(), features_len - 1, "every word gives max_features_per_window");

    // Exactly the stated sizes work; one less of anything does not.
    let mut exact = heapless::Vec::<Feature, 4096>::new();
    let exact = &mut exact.as_mut_view();
    let mut exact_features = heapless::Vec::<Feature, { 5 * 46 + 1 }>::new();
    assert_eq!(exact_features.capacity(), features_len);
    let result =
        model.encode(&text, &mut Scratch::new(exact_features.as_mut_view(), &mut floats, &mut int8s));
    assert_eq!(result.as_ref(), Ok(&expected));
    let mut short_features = heapless::Vec::<Feature, { 5 * 46 }>::new();
    let short = model.encode(&text, &mut Scratch::new(short_features.as_mut_view(), &mut floats, &mut int8s));
    assert_eq!(short, Err(EncodeError::ScratchTooSmall));
    let short = model.encode(&text, &mut Scratch::new(exact, &mut floats[..floats_len - 1], &mut int8s));
    assert_eq!(short, Err(EncodeError::ScratchTooSmall));
    let short = model.encode(&text, &mut Scratch::new(exact, &mut floats, &mut int8s[..int8s_len - 1]));
    assert_eq!(short, Err(EncodeError::ScratchTooSmall));
    // Bigger buffers give the same bits.
    let mut floats = vec![7f32; floats_len + 100];
    let mut int8s = vec![7i8; int8s_len + 100];
    assert_eq!(model.encode(&text, &mut Scratch::new(exact, &mut floats, &mut int8s)), Ok(expected));
}

#[test]
fn texts_longer_than_the_scratch_are_refused_and_long_texts_fit_max_words() {
    let config = SMALL;
    let blob = seeded_parts(config, &mut SplitMix64::new(4)).to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut four_words = OwnedScratch::new(&config, 4);
    assert!(model.encode("one two three four", &mut four_words.scratch()).is_ok());
    assert_eq!(
        model.encode("one two three four five", &mut four_words.scratch()),
        Err(EncodeError::ScratchTooSmall)
    );
    // A 100 kB text: the tokenizer keeps max_words words, which a max_words scratch holds, and the
    // result is that of its first max_words words.
    let mut full = OwnedScratch::new(&config, usize::from(config.tokenizer.max_words));
    let huge = "llama wasi uta ".repeat(100_000 / 15);
    let first_words = huge.split_whitespace().take(16).collect::<Vec<_>>().join(" ");
    assert_eq!(
        model.encode(&huge, &mut full.scratch()).unwrap(),
        model.encode(&first_words, &mut full.scratch()).unwrap()
    );
}

#[test]
fn zero_weights_give_a_zero_embedding_not_nan() {
    let config = SMALL;
    let blob = otkd_runtime::BlobParts::new(config).to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut scratch = OwnedScratch::new(&config, 16);
    let embedding = model.encode("a dog", &mut scratch.scratch()).unwrap();
    assert_eq!(embedding.len(), usize::from(config.out_dim));
    assert!(embedding.values().iter().all(|&v| v == 0));
    assert_eq!(embedding.scale(), 0.0);
}

#[test]
fn a_feature_buffer_without_room_is_too_small_not_empty() {
    let config = SMALL;
    let blob = seeded_parts(config, &mut SplitMix64::new(5)).to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut floats = vec![0f32; Scratch::floats_len(&config, 16)];
    let mut int8s = vec![0i8; Scratch::int8s_len(&config, 16)];
    let mut none = heapless::Vec::<Feature, 0>::new();
    let result = model.encode("a dog", &mut Scratch::new(none.as_mut_view(), &mut floats, &mut int8s));
    assert_eq!(result, Err(EncodeError::ScratchTooSmall));
    let debug = format!("{model:?}");
    assert!(debug.contains("weight_bytes") && debug.len() < 1000, "{debug}");
}
