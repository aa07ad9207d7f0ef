//! Index search: ranking, ties, CSLS, capacities and scores.

use otkd_runtime::testing::{MINIMAL, SplitMix64, seeded_index};
use otkd_runtime::{BlobParts, Embedding, Hit, IndexParts, Model, ModelConfig, Scoring, SearchError};

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
    let index =
        IndexParts { ids: vec![30, 10, 20, 5], embeddings: [0.6, 0.8].repeat(4), hubness: vec![0.3; 4] };
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

    let empty = blob_with_index(8, IndexParts { ids: vec![], embeddings: vec![], hubness: vec![] });
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
