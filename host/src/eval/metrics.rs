//! Retrieval metrics: exact cosine search, R@1/5/10 and MRR (DESIGN.md "Evaluation protocol").
//!
//! Ranks are 1-based. Rank of a query's correct document = 1 + number of documents with a strictly
//! higher score + number of documents with an equal score and a smaller index (ties broken by
//! document index, deterministically). Scores are cosine similarities in f32; a zero vector has
//! score 0 with everything; a NaN score (from NaN inputs) counts as lower than any other score.
//! Metrics are fractions in [0, 1] (multiply by 100 for percentages).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// R@1, R@5, R@10 and MRR as fractions in [0, 1], over `queries` queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Recall at 1: the fraction of queries whose answer ranks first.
    pub r1: f64,
    /// Recall at 5.
    pub r5: f64,
    /// Recall at 10.
    pub r10: f64,
    /// Mean reciprocal rank.
    pub mrr: f64,
    /// Number of queries.
    pub queries: usize,
}

/// Both retrieval directions over paired embeddings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct BothDirections {
    /// Language-X queries against English documents.
    pub x_to_en: RetrievalMetrics,
    /// English queries against language-X documents.
    pub en_to_x: RetrievalMetrics,
}

impl BothDirections {
    /// The table cells of both directions, `X->en R@1 R@5 R@10 MRR | en->X R@1 R@5 R@10 MRR`,
    /// the first cell `first_width` wide (under its header's text).
    pub fn cells(&self, first_width: usize) -> String {
        let (a, b) = (&self.x_to_en, &self.en_to_x);
        format!(
            "{:>first_width$.3} {:>5.3} {:>5.3} {:>5.3} | {:>9.3} {:>5.3} {:>5.3} {:>5.3}",
            a.r1, a.r5, a.r10, a.mrr, b.r1, b.r5, b.r10, b.mrr
        )
    }

    /// The mean of several evaluations (each metric averaged, queries summed): a multilingual
    /// set scored per language. The mean of one is itself.
    ///
    /// # Panics
    /// If `parts` is empty.
    pub fn mean(parts: &[BothDirections]) -> BothDirections {
        assert!(!parts.is_empty(), "the mean of no evaluation");
        let n = parts.len() as f64;
        let mean = |pick: fn(&BothDirections) -> &RetrievalMetrics| RetrievalMetrics {
            r1: parts.iter().map(|p| pick(p).r1).sum::<f64>() / n,
            r5: parts.iter().map(|p| pick(p).r5).sum::<f64>() / n,
            r10: parts.iter().map(|p| pick(p).r10).sum::<f64>() / n,
            mrr: parts.iter().map(|p| pick(p).mrr).sum::<f64>() / n,
            queries: parts.iter().map(|p| pick(p).queries).sum(),
        };
        BothDirections { x_to_en: mean(|p| &p.x_to_en), en_to_x: mean(|p| &p.en_to_x) }
    }
}

/// Documents are packed in blocks of this many, transposed (`[dim][DBLOCK]`), so that the inner
/// loop multiplies one query component with `DBLOCK` documents at once (vectorises, no
/// horizontal sums).
const DBLOCK: usize = 16;
/// Queries scored together against each document block (register blocking).
const QBLOCK: usize = 4;
/// Query rows handled by one parallel task (the document matrix streams once per task).
const QROWS: usize = 32;
/// Largest n×n score matrix `both_directions` keeps in memory (64 MiB of f32).
const MAX_SHARED_MATRIX: usize = 16 << 20;

/// L2-normalised copy of `rows` (row-major, `dim` columns); zero rows stay zero.
fn normalise(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows.len()];
    out.par_chunks_mut(dim).zip(rows.par_chunks(dim)).for_each(|(o, r)| {
        let norm = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
        if norm > 0.0 {
            let inv = 1.0 / norm;
            for (o, &v) in o.iter_mut().zip(r) {
                *o = (v as f64 * inv) as f32;
            }
        }
    });
    out
}

/// Normalised documents packed as `ceil(n / DBLOCK)` blocks of `dim` rows of `DBLOCK` values
/// (document `DBLOCK * b + l`, component `k` at `[b * dim + k][l]`; padding documents are zero).
fn pack_documents(docs: &[f32], dim: usize) -> Vec<[f32; DBLOCK]> {
    let n = docs.len() / dim;
    let nb = n.div_ceil(DBLOCK);
    let mut packed = vec![[0.0f32; DBLOCK]; nb * dim];
    packed.par_chunks_mut(dim).enumerate().for_each(|(b, blk)| {
        let j0 = b * DBLOCK;
        for (l, doc) in docs[j0 * dim..n.min(j0 + DBLOCK) * dim].chunks_exact(dim).enumerate() {
            for (row, &v) in blk.iter_mut().zip(doc) {
                row[l] = v;
            }
        }
    });
    packed
}

/// Scores of `Q` queries (each `dim` long) against one packed document block. Every score is
/// the sequential sum `((0 + q0 d0) + q1 d1) + ...` in f32, whichever kernel computes it, so
/// that scores are bit-identical across kernels and symmetric in query and document.
#[inline(always)]
fn block_scores<const Q: usize>(q: [&[f32]; Q], blk: &[[f32; DBLOCK]]) -> [[f32; DBLOCK]; Q] {
    let q = q.map(|r| &r[..blk.len()]);
    let mut acc = [[0.0f32; DBLOCK]; Q];
    for (k, d) in blk.iter().enumerate() {
        for b in 0..Q {
            let v = q[b][k];
            for l in 0..DBLOCK {
                acc[b][l] += v * d[l];
            }
        }
    }
    acc
}

/// Fills `out` (`qrows.len() / dim` rows of `n` scores) with the cosine scores of the normalised
/// query rows against the packed normalised documents.
#[inline(always)]
fn score_rows_generic(qrows: &[f32], packed: &[[f32; DBLOCK]], dim: usize, n: usize, out: &mut [f32]) {
    let q: Vec<&[f32]> = qrows.chunks_exact(dim).collect();
    for (b, blk) in packed.chunks_exact(dim).enumerate() {
        let j0 = b * DBLOCK;
        let w = DBLOCK.min(n - j0);
        let mut store = |row: usize, s: &[f32; DBLOCK]| {
            out[row * n + j0..row * n + j0 + w].copy_from_slice(&s[..w]);
        };
        let mut k = 0;
        while k + QBLOCK <= q.len() {
            let s = block_scores::<QBLOCK>([q[k], q[k + 1], q[k + 2], q[k + 3]], blk);
            for (i, si) in s.iter().enumerate() {
                store(k + i, si);
            }
            k += QBLOCK;
        }
        while k < q.len() {
            let [s] = block_scores::<1>([q[k]], blk);
            store(k, &s);
            k += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_rows_avx2(qrows: &[f32], packed: &[[f32; DBLOCK]], dim: usize, n: usize, out: &mut [f32]) {
    // Same code compiled for AVX2 (no FMA: results are bit-identical to the generic path).
    score_rows_generic(qrows, packed, dim, n, out)
}

fn score_rows(qrows: &[f32], packed: &[[f32; DBLOCK]], dim: usize, n: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { score_rows_avx2(qrows, packed, dim, n, out) };
        return;
    }
    score_rows_generic(qrows, packed, dim, n, out)
}

#[inline(always)]
fn key(s: f32) -> f32 {
    if s.is_nan() { f32::NEG_INFINITY } else { s }
}

/// 1-based rank of document `t` in one row of scores (ties broken by index).
fn rank_in_row(scores: &[f32], t: usize) -> usize {
    let st = key(scores[t]);
    let mut above = 0usize;
    for (j, &s) in scores.iter().enumerate() {
        let s = key(s);
        above += (s > st || (s == st && j < t)) as usize;
    }
    1 + above
}

fn check_inputs(queries: &[f32], documents: &[f32], dim: usize, targets: &[usize]) -> usize {
    assert!(dim > 0, "retrieval: dim must be positive");
    assert_eq!(
        queries.len() % dim,
        0,
        "retrieval: queries length {} is not a multiple of dim {dim}",
        queries.len()
    );
    assert_eq!(
        documents.len() % dim,
        0,
        "retrieval: documents length {} is not a multiple of dim {dim}",
        documents.len()
    );
    let nq = queries.len() / dim;
    let n = documents.len() / dim;
    assert_eq!(targets.len(), nq, "retrieval: {} targets for {nq} queries", targets.len());
    if let Some(&t) = targets.iter().find(|&&t| t >= n) {
        panic!("retrieval: target {t} out of range ({n} documents)");
    }
    n
}

/// Exact cosine search of `queries` `[q, dim]` against `documents` `[n, dim]` (row-major);
/// query `i`'s one correct document is `targets[i]`. Returns the 1-based rank of each target.
///
/// Panics if the lengths are inconsistent or a target is out of range.
pub fn ranks(queries: &[f32], documents: &[f32], dim: usize, targets: &[usize]) -> Vec<usize> {
    let n = check_inputs(queries, documents, dim, targets);
    let nq = targets.len();
    if nq == 0 {
        return Vec::new();
    }
    let q = normalise(queries, dim);
    let packed = pack_documents(&normalise(documents, dim), dim);
    let mut out = vec![0usize; nq];
    out.par_chunks_mut(QROWS).zip(q.par_chunks(QROWS * dim)).zip(targets.par_chunks(QROWS)).for_each_init(
        Vec::new,
        |buf: &mut Vec<f32>, ((out, qrows), tg)| {
            buf.resize(tg.len() * n, 0.0);
            score_rows(qrows, &packed, dim, n, buf);
            for ((o, &t), row) in out.iter_mut().zip(tg).zip(buf.chunks_exact(n)) {
                *o = rank_in_row(row, t);
            }
        },
    );
    out
}

/// R@1, R@5, R@10 and MRR of 1-based ranks (all zero for no queries).
pub fn metrics_from_ranks(ranks: &[usize]) -> RetrievalMetrics {
    let q = ranks.len();
    if q == 0 {
        return RetrievalMetrics::default();
    }
    assert!(ranks.iter().all(|&r| r >= 1), "ranks are 1-based");
    let frac = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / q as f64;
    RetrievalMetrics {
        r1: frac(1),
        r5: frac(5),
        r10: frac(10),
        mrr: ranks.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / q as f64,
        queries: q,
    }
}

/// [`ranks`] then [`metrics_from_ranks`].
pub fn retrieval(queries: &[f32], documents: &[f32], dim: usize, targets: &[usize]) -> RetrievalMetrics {
    metrics_from_ranks(&ranks(queries, documents, dim, targets))
}

/// Per-query ranks of both directions over paired embeddings (row i of `x` and of `en` are a
/// pair; targets = identity): `(x_to_en, en_to_x)`.
pub fn both_directions_ranks(x: &[f32], en: &[f32], dim: usize) -> (Vec<usize>, Vec<usize>) {
    assert!(dim > 0, "retrieval: dim must be positive");
    assert_eq!(x.len(), en.len(), "both_directions: x and en must have the same shape");
    let n = x.len() / dim;
    let ident: Vec<usize> = (0..n).collect();
    check_inputs(x, en, dim, &ident);
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    if n.saturating_mul(n) > MAX_SHARED_MATRIX {
        return (ranks(x, en, dim, &ident), ranks(en, x, dim, &ident));
    }
    // One score matrix S[i][j] = cos(x_i, en_j): rows give x→en, columns give en→x (the dot
    // arithmetic is symmetric, so this equals scoring en against x).
    paired_ranks(&cosine_matrix(x, en, dim), n)
}

/// Ranks of both directions from an `n x n` row-major score matrix of paired items, where
/// `scores[i * n + j]` scores query `i` of language X against document `j` in English and pair
/// `i` is the correct answer: `(x_to_en, en_to_x)`, the ranks along rows and along columns
/// (1-based, ties broken by index, NaN scores last).
///
/// # Panics
/// If `scores.len() != n * n`.
pub fn paired_ranks(s: &[f32], n: usize) -> (Vec<usize>, Vec<usize>) {
    (row_ranks(s, n), column_ranks(s, n))
}

/// Rank of the diagonal entry within each row of the `n x n` row-major `s`.
fn row_ranks(s: &[f32], n: usize) -> Vec<usize> {
    assert_eq!(s.len(), n * n, "{} scores for {n} x {n} pairs", s.len());
    (0..n).into_par_iter().map(|i| rank_in_row(&s[i * n..(i + 1) * n], i)).collect()
}

/// Rank of the diagonal entry within each column of the `n x n` row-major `s`, by column
/// blocks so that each pass reads contiguous row segments.
fn column_ranks(s: &[f32], n: usize) -> Vec<usize> {
    assert_eq!(s.len(), n * n, "{} scores for {n} x {n} pairs", s.len());
    const COLS: usize = 64;
    let mut en_to_x = vec![0usize; n];
    en_to_x.par_chunks_mut(COLS).enumerate().for_each(|(b, out)| {
        let c0 = b * COLS;
        let w = out.len();
        let diag: Vec<f32> = (0..w).map(|k| key(s[(c0 + k) * n + c0 + k])).collect();
        let mut above = vec![0usize; w];
        for i in 0..n {
            let row = &s[i * n + c0..i * n + c0 + w];
            for k in 0..w {
                let v = key(row[k]);
                let j = c0 + k;
                above[k] += (v > diag[k] || (v == diag[k] && i < j)) as usize;
            }
        }
        for (o, a) in out.iter_mut().zip(above) {
            *o = 1 + a;
        }
    });
    en_to_x
}

/// Both retrieval directions over paired embeddings (row i of `x` and row i of `en` are a pair;
/// skipped pairs are simply absent).
pub fn both_directions(x: &[f32], en: &[f32], dim: usize) -> BothDirections {
    let (a, b) = both_directions_ranks(x, en, dim);
    BothDirections { x_to_en: metrics_from_ranks(&a), en_to_x: metrics_from_ranks(&b) }
}

/// The cosine scores of every row of `queries` against every row of `documents`
/// (`[queries, documents]` row-major; rows are normalised first, zero rows score 0).
pub fn cosine_matrix(queries: &[f32], documents: &[f32], dim: usize) -> Vec<f32> {
    assert!(dim > 0, "cosine_matrix: dim must be positive");
    let n = documents.len() / dim;
    let q = normalise(queries, dim);
    let packed = pack_documents(&normalise(documents, dim), dim);
    let mut s = vec![0.0f32; (queries.len() / dim) * n];
    if n > 0 {
        s.par_chunks_mut(QROWS * n)
            .zip(q.par_chunks(QROWS * dim))
            .for_each(|(out, qrows)| score_rows(qrows, &packed, dim, n, out));
    }
    s
}

/// The hubness term of CSLS (Conneau et al. 2018) for every document: `r(d)`, the mean cosine of
/// document `d` to its `k` nearest neighbours among `reference` queries (rows of the query
/// language, never the test queries themselves). A document that is close to many queries (a
/// hub) gets a large `r(d)` and is ranked down by `2 cos(q, d) - r(d)`.
///
/// With fewer than `k` reference rows, the mean is over all of them; with none, `r(d)` is 0.
pub fn hubness(documents: &[f32], reference: &[f32], dim: usize, k: usize) -> Vec<f32> {
    let refs = reference.len() / dim.max(1);
    let k = k.min(refs);
    if k == 0 {
        return vec![0.0; documents.len() / dim.max(1)];
    }
    let scores = cosine_matrix(documents, reference, dim);
    scores
        .par_chunks(refs)
        .map(|row| {
            let mut row = row.to_vec();
            row.select_nth_unstable_by(k - 1, |a, b| key(*b).total_cmp(&key(*a)));
            (row[..k].iter().map(|&v| f64::from(key(v).max(-1.0))).sum::<f64>() / k as f64) as f32
        })
        .collect()
}

/// [`ranks`] by CSLS: `2 cos(q, d) - hubness[d]`.
///
/// # Panics
/// As [`ranks`], and if `hubness` does not have one value per document.
pub fn ranks_csls(
    queries: &[f32],
    documents: &[f32],
    dim: usize,
    targets: &[usize],
    hubness: &[f32],
) -> Vec<usize> {
    let n = check_inputs(queries, documents, dim, targets);
    assert_eq!(hubness.len(), n, "ranks_csls: one hubness term per document");
    let cos = cosine_matrix(queries, documents, dim);
    cos.par_chunks(n.max(1))
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let scores: Vec<f32> = row.iter().zip(hubness).map(|(&c, &r)| 2.0 * c - r).collect();
            rank_in_row(&scores, t)
        })
        .collect()
}

/// How documents are ranked for a query.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Scoring {
    /// Plain cosine similarity.
    Cosine,
    /// CSLS: `2 cos(q, d) - r(d)`, with `r(d)` over `k` nearest reference queries ([`hubness`]).
    Csls {
        /// Neighbours averaged in `r(d)`.
        k: usize,
    },
}

/// Both retrieval directions over paired embeddings ranked by CSLS: X -> en subtracts
/// `r_en` (each English document's hubness among language-X reference queries), en -> X
/// subtracts `r_x` (each X document's hubness among English reference queries).
///
/// # Panics
/// If the shapes disagree (`x` and `en` paired rows, one `r` per document).
pub fn both_directions_csls(x: &[f32], en: &[f32], dim: usize, r_en: &[f32], r_x: &[f32]) -> BothDirections {
    assert_eq!(x.len(), en.len(), "both_directions_csls: x and en must have the same shape");
    let n = x.len() / dim.max(1);
    assert!(r_en.len() == n && r_x.len() == n, "both_directions_csls: one hubness term per document");
    let cos = cosine_matrix(x, en, dim);
    let x_to_en: Vec<f32> = cos.iter().enumerate().map(|(t, &c)| 2.0 * c - r_en[t % n.max(1)]).collect();
    let en_to_x: Vec<f32> = cos.iter().enumerate().map(|(t, &c)| 2.0 * c - r_x[t / n.max(1)]).collect();
    BothDirections {
        x_to_en: metrics_from_ranks(&row_ranks(&x_to_en, n)),
        en_to_x: metrics_from_ranks(&column_ranks(&en_to_x, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Naive reference: f64 cosine, full sort-free count with the same tie rule.
    fn naive_ranks(q: &[f32], d: &[f32], dim: usize, t: &[usize]) -> Vec<usize> {
        let cos = |a: &[f32], b: &[f32]| {
            let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
        };
        q.chunks(dim)
            .zip(t)
            .map(|(qi, &ti)| {
                let s: Vec<f64> = d.chunks(dim).map(|dj| cos(qi, dj)).collect();
                1 + (0..s.len()).filter(|&j| s[j] > s[ti] || (s[j] == s[ti] && j < ti)).count()
            })
            .collect()
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn hubness_and_csls_by_hand() {
        // Documents e0 = (1, 0), e1 = (0, 1); reference queries (1, 0) twice and (0, 1) once.
        let docs = [1.0, 0.0, 0.0, 1.0];
        let reference = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        // k = 1: each document's nearest reference query is itself: r = 1 for both.
        assert_eq!(hubness(&docs, &reference, 2, 1), vec![1.0, 1.0]);
        // k = 2: e0 -> (1 + 1) / 2 = 1; e1 -> (1 + 0) / 2 = 0.5.
        assert_eq!(hubness(&docs, &reference, 2, 2), vec![1.0, 0.5]);
        // k larger than the reference: all rows. No reference: zeros.
        assert_eq!(hubness(&docs, &reference, 2, 10), vec![2.0 / 3.0, 1.0 / 3.0]);
        assert_eq!(hubness(&docs, &[], 2, 10), vec![0.0, 0.0]);

        // Query x0 = (0.8, 0.6) is paired with e1 but closer to e0 (a hub): cosine ranks e1
        // second; CSLS with r = (1, 0.5): 2 * 0.8 - 1 = 0.6 < 2 * 0.6 - 0.5 = 0.7, so e1 first.
        // Query x1 = (0, 1) is paired with e0: cos 0 vs 1, CSLS -1 vs 1.5: rank 2 either way.
        let x = [0.8, 0.6, 0.0, 1.0];
        let en = [0.0, 1.0, 1.0, 0.0];
        let cosine = both_directions(&x, &en, 2);
        assert_eq!((cosine.x_to_en.r1, cosine.x_to_en.mrr), (0.0, 0.5));
        let csls = both_directions_csls(&x, &en, 2, &[0.5, 1.0], &[0.0, 0.0]);
        assert_eq!((csls.x_to_en.r1, csls.x_to_en.mrr), (0.5, 0.75));
        // With r_x = 0, en -> X CSLS ranks like cosine.
        assert_eq!(csls.en_to_x, cosine.en_to_x);
    }

    #[test]
    fn three_by_three_known_ranks() {
        // Documents: e0, e1, (1,1)/sqrt2. Queries (dim 2):
        //  q0 = (1, 0.1): cos to d0 .995, d2 .774, d1 .0995 -> target d0 rank 1
        //  q1 = (1, 0):   cos to d0 1, d2 .707, d1 0        -> target d1 rank 3
        //  q2 = (0.2, 1): cos to d1 .981, d2 .832, d0 .196  -> target d2 rank 2
        let d = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let q = [1.0, 0.1, 1.0, 0.0, 0.2, 1.0];
        let r = ranks(&q, &d, 2, &[0, 1, 2]);
        assert_eq!(r, vec![1, 3, 2]);
        let m = retrieval(&q, &d, 2, &[0, 1, 2]);
        assert_eq!(m.queries, 3);
        assert!(close(m.r1, 1.0 / 3.0));
        assert!(close(m.r5, 1.0));
        assert!(close(m.mrr, (1.0 + 1.0 / 3.0 + 0.5) / 3.0));
    }

    #[test]
    fn ties_break_by_document_index() {
        // Documents 0 and 1 identical, 2 a power-of-two multiple (normalises to the same bits).
        let d = [1.0, 2.0, 1.0, 2.0, 2.0, 4.0, -1.0, 0.0];
        let q = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
        // target 0: ties with 1 and 2 but has the smallest index -> rank 1
        // target 1: tie with 0 (smaller index) -> rank 2
        // target 2: ties with 0 and 1 -> rank 3
        // target 3: lowest score -> rank 4
        assert_eq!(ranks(&q, &d, 2, &[0, 1, 2, 3]), vec![1, 2, 3, 4]);
    }

    #[test]
    fn metrics_arithmetic() {
        let m = metrics_from_ranks(&[1, 2, 5, 6, 10, 11, 100, 1]);
        assert_eq!(m.queries, 8);
        assert!(close(m.r1, 2.0 / 8.0));
        assert!(close(m.r5, 4.0 / 8.0));
        assert!(close(m.r10, 6.0 / 8.0));
        let mrr = (1.0 + 0.5 + 0.2 + 1.0 / 6.0 + 0.1 + 1.0 / 11.0 + 0.01 + 1.0) / 8.0;
        assert!(close(m.mrr, mrr));
        assert_eq!(metrics_from_ranks(&[]), RetrievalMetrics::default());
    }

    #[test]
    fn zero_vectors_score_zero() {
        // d0 = 0 (score 0 with all), d1 = (1,0), d2 = (-1,0).
        let d = [0.0, 0.0, 1.0, 0.0, -1.0, 0.0];
        // q0 = (1,0): d1 1, d0 0, d2 -1
        // q1 = (0,0): all scores 0 -> rank = 1 + target index
        let q = [1.0, 0.0, 0.0, 0.0];
        assert_eq!(ranks(&q, &d, 2, &[0, 2]), vec![2, 3]);
        assert_eq!(ranks(&q, &d, 2, &[2, 1]), vec![3, 2]);
        let r = ranks(&q, &d, 2, &[1, 0]);
        assert_eq!(r, vec![1, 1]);
    }

    #[test]
    fn non_identity_targets_and_rectangular() {
        // 2 queries, 4 documents, dim 3.
        let d = [
            1.0, 0.0, 0.0, // d0
            0.0, 1.0, 0.0, // d1
            0.0, 0.0, 1.0, // d2
            0.6, 0.8, 0.0, // d3
        ];
        // q0 = (0, 1, 0.1): d1 .995, d3 .796, d2 .0995, d0 0
        // q1 = (1, 0.2, 0): d0 .981, d3 .745, d1 .196, d2 0
        let q = [0.0, 1.0, 0.1, 1.0, 0.2, 0.0];
        assert_eq!(ranks(&q, &d, 3, &[3, 1]), vec![2, 3]);
        assert_eq!(ranks(&q, &d, 3, &[2, 2]), vec![3, 4]);
        assert_eq!(ranks(&q, &d, 3, &[1, 0]), vec![1, 1]);
    }

    #[test]
    fn matches_naive_reference_on_random_data() {
        // dim not a multiple of 8, query count not a multiple of the block sizes.
        let (nq, n, dim) = (37, 53, 19);
        let q = lcg(nq * dim, 1);
        let mut d = lcg(n * dim, 2);
        // A duplicate document to exercise exact ties.
        let (a, b) = d.split_at_mut(10 * dim);
        b[..dim].copy_from_slice(&a[3 * dim..4 * dim]);
        let t: Vec<usize> = (0..nq).map(|i| (i * 7 + 3) % n).collect();
        let mut t2 = t.clone();
        t2[0] = 10;
        t2[1] = 3;
        let mut qq = q.clone();
        qq[..dim].copy_from_slice(&d[10 * dim..11 * dim]);
        qq[dim..2 * dim].copy_from_slice(&d[10 * dim..11 * dim]);
        assert_eq!(ranks(&q, &d, dim, &t), naive_ranks(&q, &d, dim, &t));
        let r = ranks(&qq, &d, dim, &t2);
        assert_eq!(r, naive_ranks(&qq, &d, dim, &t2));
        // Query == doc 3 == doc 10: target 10 is behind doc 3; target 3 is first.
        assert_eq!((r[0], r[1]), (2, 1));
    }

    #[test]
    fn both_directions_equals_two_retrievals() {
        let (n, dim) = (45, 13);
        let x = lcg(n * dim, 7);
        let mut en = lcg(n * dim, 8);
        // Make pairs related so that ranks vary.
        for (e, v) in en.iter_mut().zip(&x) {
            *e = 0.7 * *e + *v;
        }
        // A duplicate x row: exact ties among the en->x direction's documents.
        let row5: Vec<f32> = x[5 * dim..6 * dim].to_vec();
        let mut x2 = x.clone();
        x2[9 * dim..10 * dim].copy_from_slice(&row5);
        let ident: Vec<usize> = (0..n).collect();
        let (a, b) = both_directions_ranks(&x2, &en, dim);
        assert_eq!(a, ranks(&x2, &en, dim, &ident));
        assert_eq!(b, ranks(&en, &x2, dim, &ident));
        assert_eq!(b, naive_ranks(&en, &x2, dim, &ident));
        let m = both_directions(&x2, &en, dim);
        assert_eq!(m.x_to_en, metrics_from_ranks(&a));
        assert_eq!(m.en_to_x, metrics_from_ranks(&b));
        // Identical embeddings: every query finds itself first.
        let m = both_directions(&x, &x, dim);
        assert!(close(m.x_to_en.r1, 1.0) && close(m.en_to_x.mrr, 1.0));
        assert_eq!(m.x_to_en.queries, n);
    }

    #[test]
    fn dispatched_kernel_matches_generic_bit_for_bit() {
        // 7 queries (one 4-block + 3 singles), 37 documents (partial last block), dim 29.
        let (nq, n, dim) = (7, 37, 29);
        let q = normalise(&lcg(nq * dim, 3), dim);
        let packed = pack_documents(&normalise(&lcg(n * dim, 4), dim), dim);
        let mut a = vec![0.0f32; nq * n];
        let mut b = vec![1.0f32; nq * n];
        score_rows(&q, &packed, dim, n, &mut a);
        score_rows_generic(&q, &packed, dim, n, &mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        // And each score is the plain sequential dot product.
        let d = normalise(&lcg(n * dim, 4), dim);
        for i in 0..nq {
            for j in 0..n {
                let mut s = 0.0f32;
                for k in 0..dim {
                    s += q[i * dim + k] * d[j * dim + k];
                }
                assert_eq!(s.to_bits(), a[i * n + j].to_bits(), "({i}, {j})");
            }
        }
    }

    #[test]
    fn nan_scores_rank_last() {
        let d = [f32::NAN, 0.0, 1.0, 0.0];
        let q = [1.0, 0.0];
        assert_eq!(ranks(&q, &d, 2, &[0]), vec![2]);
        assert_eq!(ranks(&q, &d, 2, &[1]), vec![1]);
    }

    #[test]
    fn empty_inputs() {
        assert!(ranks(&[], &[1.0, 2.0], 2, &[]).is_empty());
        let m = both_directions(&[], &[], 4);
        assert_eq!(m.x_to_en.queries, 0);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn target_out_of_range_panics() {
        ranks(&[1.0, 0.0], &[1.0, 0.0], 2, &[1]);
    }
}
