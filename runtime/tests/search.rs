//! Index search: ranking, ties, CSLS, capacities and scores.

use otkd_runtime::testing::{MINIMAL, OwnedScratch, SplitMix64, seeded_index};
use otkd_runtime::{
    BlobParts, Embedding, EncodeError, Hit, IndexParts, LexiconParts, Model, ModelConfig, Query, QueryTerms,
    Scoring, SearchError, TokenizerConfig,
};

fn blob_with_index(out_dim: u16, index: IndexParts) -> Vec<u8> {
    // No layer: only the index matters here.
    let config = ModelConfig { layers: 0, heads: 1, out_dim, ..MINIMAL };
    let mut parts = BlobParts::new(config);
    parts.index = Some(index);
    parts.to_bytes().unwrap()
}

fn ids<const K: usize>(hits: &heapless::Vec<Hit, K>) -> Vec<u32> {
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn equal_scores_rank_by_id() {
    let index = IndexParts {
        ids: vec![30, 10, 20, 5],
        embeddings: [0.6, 0.8].repeat(4),
        hubness: vec![0.3; 4],
        lexical: None,
    };
    let blob = blob_with_index(2, index);
    let index = Model::from_bytes(&blob).unwrap().index().unwrap();
    let query = Embedding::from_f32(&[0.8, 0.6]).unwrap();
    for scoring in [Scoring::Cosine, Scoring::Csls] {
        assert_eq!(ids(&index.search::<8>(&query, 8, scoring).unwrap()), [5, 10, 20, 30]);
        assert_eq!(ids(&index.search::<2>(&query, 8, scoring).unwrap()), [5, 10]);
        assert_eq!(ids(&index.search::<8>(&query, 3, scoring).unwrap()), [5, 10, 20]);
    }
}

#[test]
fn csls_demotes_hubs_as_worked_out_by_hand() {
    // Query e1. A = e1: cos 1.0, r 0.9, CSLS 2.0 - 0.9 = 1.1
    //           B = (0.8, 0.6): cos 0.8, r 0.2, CSLS 1.6 - 0.2 = 1.4
    //           C = (0.6, 0.8): cos 0.6, r 0.0, CSLS 1.2 - 0.0 = 1.2
    let index = IndexParts {
        ids: vec![1, 2, 3],
        embeddings: vec![1.0, 0.0, 0.8, 0.6, 0.6, 0.8],
        hubness: vec![0.9, 0.2, 0.0],
        lexical: None,
    };
    let blob = blob_with_index(2, index);
    let index = Model::from_bytes(&blob).unwrap().index().unwrap();
    let query = Embedding::from_f32(&[1.0, 0.0]).unwrap();
    let cosine = index.search::<3>(&query, 3, Scoring::Cosine).unwrap();
    assert_eq!(ids(&cosine), [1, 2, 3]);
    for (hit, expected) in cosine.iter().zip([1.0, 0.8, 0.6]) {
        assert!((hit.score - expected).abs() < 0.01, "{hit:?}");
    }
    let csls = index.search::<3>(&query, 3, Scoring::Csls).unwrap();
    assert_eq!(ids(&csls), [2, 3, 1]);
    for (hit, expected) in csls.iter().zip([1.4, 1.2, 1.1]) {
        assert!((hit.score - expected).abs() < 0.02, "{hit:?}");
    }
}

#[test]
fn capacities_and_empty_cases() {
    let blob = blob_with_index(8, seeded_index(8, 5, &mut SplitMix64::new(1)));
    let index = Model::from_bytes(&blob).unwrap().index().unwrap();
    let query = Embedding::from_f32(&[0.5; 8]).unwrap();
    assert_eq!(index.search::<10>(&query, 10, Scoring::Cosine).unwrap().len(), 5);
    assert_eq!(index.search::<10>(&query, 0, Scoring::Cosine).unwrap().len(), 0);
    assert_eq!(index.search::<0>(&query, 3, Scoring::Cosine).unwrap().len(), 0);
    let wrong_width = Embedding::from_f32(&[0.5; 7]).unwrap();
    assert_eq!(index.search::<3>(&wrong_width, 3, Scoring::Csls), Err(SearchError::DimensionMismatch));

    let empty =
        blob_with_index(8, IndexParts { ids: vec![], embeddings: vec![], hubness: vec![], lexical: None });
    let index = Model::from_bytes(&empty).unwrap().index().unwrap();
    assert!(index.is_empty());
    assert!(index.search::<3>(&query, 3, Scoring::Csls).unwrap().is_empty());
}

#[test]
fn top_k_equals_a_full_sort_of_the_integer_scores() {
    let (dim, docs) = (48, 300);
    let parts = seeded_index(dim, docs, &mut SplitMix64::new(2));
    let blob = blob_with_index(dim as u16, parts.clone());
    let index = Model::from_bytes(&blob).unwrap().index().unwrap();
    let mut rng = SplitMix64::new(3);
    for _ in 0..20 {
        let query = Embedding::from_f32(&rng.vec(dim, 1.0)).unwrap();
        for scoring in [Scoring::Cosine, Scoring::Csls] {
            // The same arithmetic, written out: integer dot, then the two scales, then CSLS.
            let mut all: Vec<Hit> = parts
                .embeddings
                .chunks(dim)
                .zip(&parts.ids)
                .zip(&parts.hubness)
                .map(|((doc, &id), &r)| {
                    let mut q = vec![0i8; dim];
                    let scale = otkd_runtime::quantize_row(doc, &mut q).to_f32();
                    let dot: i32 =
                        q.iter().zip(query.values()).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
                    let cosine = dot as f32 * (query.scale() * scale);
                    let stored_r = (r * 32767.0).round() / 32767.0;
                    let score = if scoring == Scoring::Csls { 2.0 * cosine - stored_r } else { cosine };
                    Hit { id, score }
                })
                .collect();
            all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
            let hits = index.search::<10>(&query, 10, scoring).unwrap();
            assert_eq!(hits.as_slice(), &all[..10]);
        }
    }
}

/// A model of `texts` as documents: one-word-ish student (no layer), the given unit embeddings
/// and a lexicon of the texts with weight `alpha`.
fn hybrid_blob(embeddings: Vec<f32>, texts: &[&str], alpha: f32) -> Vec<u8> {
    let config = ModelConfig { layers: 0, heads: 1, out_dim: 2, ..MINIMAL };
    let mut parts = BlobParts::new(config);
    let ids = (0..texts.len() as u32).map(|i| 100 + i).collect();
    let lexical = Some(LexiconParts::from_texts(&config.tokenizer, texts, alpha, None));
    parts.index = Some(IndexParts { ids, embeddings, hubness: vec![0.0; texts.len()], lexical });
    parts.to_bytes().unwrap()
}

fn terms_of(model: &Model, text: &str) -> QueryTerms {
    let mut scratch = OwnedScratch::new(model.config(), 16);
    let mut terms = QueryTerms::new();
    model.terms(text, &mut scratch.scratch(), &mut terms).unwrap();
    terms
}

#[test]
fn hybrid_search_adds_the_lexical_match_to_the_dense_score() {
    // Document 100 is nearest the query's embedding; 101 shares its words.
    let texts = ["a red bicycle", "Evo Morales en La Paz", "the weather in Oruro"];
    let blob = hybrid_blob(vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0], &texts, 1.0);
    let model = Model::from_bytes(&blob).unwrap();
    let index = model.index().unwrap();
    assert_eq!(index.lexical_weight(), Some(1.0));
    let embedding = Embedding::from_f32(&[1.0, 0.0]).unwrap();
    let terms = terms_of(&model, "Evo Morales jutawa");
    let dense = index.search::<3>(&embedding, 3, Scoring::Cosine).unwrap();
    assert_eq!(ids(&dense), [100, 101, 102]);
    let query = Query { embedding: &embedding, terms: Some(&terms) };
    let hybrid = index.search::<3>(query, 3, Scoring::Cosine).unwrap();
    assert_eq!(hybrid[0].id, 101);
    // Documents without a shared term keep their dense score bit for bit.
    let unshared = |hits: &heapless::Vec<Hit, 3>, id| hits.iter().find(|h| h.id == id).unwrap().score;
    assert_eq!(unshared(&hybrid, 100).to_bits(), unshared(&dense, 100).to_bits());
    // The lexical part is the TF-IDF cosine with idf on the document side (within u8 steps).
    let lexical = unshared(&hybrid, 101) - unshared(&dense, 101);
    let parts = LexiconParts::from_texts(&MINIMAL.tokenizer, &texts, 1.0, None);
    let expected: f32 = terms
        .terms()
        .zip(terms.weights())
        .filter_map(|(t, w)| parts.documents[1].iter().find(|(d, _)| *d == t).map(|(_, dw)| w * dw))
        .sum();
    assert!(expected > 0.1 && (lexical - expected).abs() < 0.01 * expected, "{lexical} vs {expected}");
    // CSLS ranks 2 · (cosine + α · lexical) - r(d).
    let csls = index.search::<3>(query, 3, Scoring::Csls).unwrap();
    assert_eq!((csls[0].id, csls[0].score), (101, 2.0 * hybrid[0].score));
}

#[test]
fn hybrid_search_without_terms_or_weight_ranks_as_dense() {
    let texts = ["uno", "dos", "tres"];
    let embeddings = vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
    let blob = hybrid_blob(embeddings.clone(), &texts, 0.0);
    let model = Model::from_bytes(&blob).unwrap();
    let index = model.index().unwrap();
    let embedding = Embedding::from_f32(&[0.6, 0.8]).unwrap();
    let terms = terms_of(&model, "tres");
    let dense = index.search::<3>(&embedding, 3, Scoring::Csls).unwrap();
    let weightless =
        index.search::<3>(Query { embedding: &embedding, terms: Some(&terms) }, 3, Scoring::Csls).unwrap();
    assert_eq!(dense, weightless);
    let empty = QueryTerms::default();
    let strong = hybrid_blob(embeddings, &texts, 5.0);
    let index = Model::from_bytes(&strong).unwrap().index().unwrap();
    let no_terms =
        index.search::<3>(Query { embedding: &embedding, terms: Some(&empty) }, 3, Scoring::Csls).unwrap();
    assert_eq!(dense, no_terms);
    assert_eq!(
        index.search::<3>(Query { embedding: &embedding, terms: Some(&terms) }, 3, Scoring::Csls).unwrap()[0]
            .id,
        102
    );
}

#[test]
fn query_terms_count_repeats_and_an_empty_query_is_refused() {
    let blob = hybrid_blob(vec![1.0, 0.0], &["x"], 1.0);
    let model = Model::from_bytes(&blob).unwrap();
    let once = terms_of(&model, "pelota");
    let twice = terms_of(&model, "pelota pelota");
    assert_eq!(once.terms().collect::<Vec<_>>(), twice.terms().collect::<Vec<_>>());
    // A repeated word scales every weight alike, and the norm removes it.
    assert!(once.weights().zip(twice.weights()).all(|(a, b)| (a - b).abs() < 1e-6));
    let norm: f32 = once.weights().map(|w| w * w).sum();
    assert!((norm - 1.0).abs() < 1e-5 && once.len() == 1 + 6 + 5 + 4 && once.dropped() == 0);
    let mut scratch = OwnedScratch::new(model.config(), 16);
    let mut terms = twice;
    assert_eq!(model.terms(" ¿? ", &mut scratch.scratch(), &mut terms), Err(EncodeError::EmptyQuery));
    assert!(terms.is_empty());
}

#[test]
fn lexical_terms_have_their_own_ngram_range_whatever_the_models() {
    // A model trained with 1-3-grams gets the same query terms as one with 3-5: terms are
    // LEXICAL_NGRAMS-grams of the model's words, on the device as in the writer's lexicon.
    let three_five = ModelConfig { layers: 0, heads: 1, out_dim: 2, ..MINIMAL };
    let one_three = ModelConfig {
        tokenizer: TokenizerConfig { min_ngram: 1, max_ngram: 3, ..three_five.tokenizer },
        ..three_five
    };
    let model_of = |config: ModelConfig| BlobParts::new(config).to_bytes().unwrap();
    let (a, b) = (model_of(three_five), model_of(one_three));
    let terms = |blob: &[u8], text| {
        let t = terms_of(&Model::from_bytes(blob).unwrap(), text);
        t.terms().zip(t.weights()).collect::<Vec<_>>()
    };
    assert_eq!(terms(&a, "Evo Morales"), terms(&b, "Evo Morales"));
    // `<evo>` and `<morales>`: a word feature each and their 3-, 4- and 5-grams.
    assert_eq!(terms(&a, "Evo Morales").len(), (1 + 3 + 2 + 1) + (1 + 7 + 6 + 5));
    // Character words stay character words: each char its word feature and `<c>`.
    let chars = model_of(ModelConfig { tokenizer: one_three.tokenizer.with_char_words(), ..three_five });
    let t = terms(&chars, "狗跑狗");
    assert_eq!(t.len(), 4);
    let doc = LexiconParts::from_texts(&one_three.tokenizer.with_char_words(), &["狗跑"], 1.0, None);
    assert_eq!(doc.documents[0].len(), 4);
    assert!(doc.documents[0].iter().all(|(id, _)| t.iter().any(|(q, _)| q == id)));
}
