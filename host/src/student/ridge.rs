//! The closed-form ridge student: a linear map from the student's hashed n-gram features to the
//! teacher's English sentence embeddings, fitted in closed form (`otkd baseline --ridge`).
//!
//! A sentence in language X becomes a sparse bag over the runtime tokenizer's hash buckets
//! ([`sentence_features`]); the student is one matrix `W` (`[buckets, dim]`, 4096 x 384 = 1.57 M
//! parameters by default) with `embed(x) = normalise(features(x) W)`. `W` minimises
//! `||X W - Y||^2 + lambda ||W||^2` over the training pairs, where row `s` of `X` is the features
//! of the X side of pair `s` and row `s` of `Y` the teacher's embedding of its English side. It is
//! the bar a learned student has to clear: the same input features, no training loop.
//!
//! The fit accumulates `XᵀX` (`buckets x buckets`) and `XᵀY` sparsely in f64 from blocks of
//! sentences featurised as they come ([`SparseRowSource`]: one block's features in memory, not a
//! corpus's), then for every `lambda` of the grid solves `(XᵀX + lambda I) W = XᵀY` with a
//! blocked Cholesky factorisation (rayon-parallel, an AVX2+FMA micro-kernel where the CPU has one)
//! and keeps the `lambda` with the best val X -> en R@1.

use std::ops::Range;
use std::time::Instant;

use otkd_runtime::{Feature, TokenizerConfig, tokenize};
use rayon::prelude::*;

use crate::data::Bitext;
use crate::eval::metrics::{BothDirections, both_directions, metrics_from_ranks, ranks};
use crate::linalg::{NotPositiveDefinite, solve_spd, symmetric_eigen, transpose};
use crate::teacher::TeacherOutputs;

/// Hash buckets of the default ridge student: 4096 x 384 = 1.57 M parameters.
pub const DEFAULT_BUCKETS: u32 = 4096;

/// Capacity of the tokenizer buffer: 64 words x 48 features, the default caps, never overflow it.
/// With larger caps the features past it are dropped (the tokenizer counts them).
const MAX_SENTENCE_FEATURES: usize = 3072;

/// Settings of a ridge fit.
#[derive(Clone, Debug, PartialEq)]
pub struct RidgeConfig {
    /// The runtime tokenizer's settings; `buckets` is the height of `W`.
    pub tokenizer: TokenizerConfig,
    /// The regularisation grid; the fit keeps the value with the best val X -> en R@1
    /// (ties: the better val MRR, then the first in grid order). Every value must be finite and > 0.
    pub lambdas: Vec<f32>,
}

impl Default for RidgeConfig {
    /// 4096 buckets, the default tokenizer otherwise, and `lambdas = [0.03, 0.1, 0.3, 1]`: on
    /// Multi30k val R@1 peaks at 0.1 (ay) and is flat from 0.01 to 0.3 (cs), and falls from 1 on.
    fn default() -> Self {
        Self {
            tokenizer: TokenizerConfig { buckets: DEFAULT_BUCKETS, ..TokenizerConfig::DEFAULT },
            lambdas: vec![0.03, 0.1, 0.3, 1.0],
        }
    }
}

/// A fitted ridge student.
#[derive(Clone, Debug)]
pub struct RidgeStudent {
    /// The tokenizer the features come from.
    pub tokenizer: TokenizerConfig,
    /// The regularisation the weights were fitted with.
    pub lambda: f32,
    /// `[buckets, dim]` row-major.
    pub weights: Vec<f32>,
    /// Output width (the teacher's).
    pub dim: usize,
}

impl RidgeStudent {
    /// Embeds `texts`: `[texts.len(), dim]` row-major, every row L2-normalised (a text without
    /// features gives a zero row).
    pub fn embed(&self, texts: &[&str]) -> Vec<f32> {
        let mut out = vec![0.0f32; texts.len() * self.dim];
        out.par_chunks_mut(self.dim.max(1)).zip(texts.par_iter()).for_each(|(row, text)| {
            self.embed_features(&sentence_features(&self.tokenizer, text), row);
        });
        out
    }

    /// `row = normalise(features W)`.
    fn embed_features(&self, features: &[(u32, f32)], row: &mut [f32]) {
        let dim = self.dim;
        let mut acc = vec![0.0f64; dim];
        for &(id, v) in features {
            let w = &self.weights[id as usize * dim..(id as usize + 1) * dim];
            for (a, &w) in acc.iter_mut().zip(w) {
                *a += f64::from(v) * f64::from(w);
            }
        }
        let norm = acc.iter().map(|a| a * a).sum::<f64>().sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for (r, a) in row.iter_mut().zip(&acc) {
            *r = (a * inv) as f32;
        }
    }

    /// Number of scalars in `W`.
    pub fn parameters(&self) -> usize {
        self.weights.len()
    }
}

/// The result of [`fit`]: the student with the chosen `lambda`, and val X -> en R@1 for every
/// `lambda` of the grid, in grid order.
#[derive(Clone, Debug)]
pub struct RidgeFit {
    /// The student fitted with the chosen `lambda`.
    pub student: RidgeStudent,
    /// `(lambda, val X -> en R@1)` for every `lambda` of the grid.
    pub val_r1_by_lambda: Vec<(f32, f64)>,
}

/// The sparse feature vector of a sentence: `(bucket, value)` sorted by bucket, buckets
/// distinct, L2 norm 1 (empty for a text without words).
///
/// Every feature the runtime tokenizer emits (word features and char n-grams, duplicates within
/// and across words counted) adds 1 to its bucket; the value is `sqrt(count)`, then the row is
/// L2-normalised. Why: on Multi30k (4096 buckets, best `lambda` of each) val X -> en R@1 was
/// ay 0.903 / cs 0.972 with sqrt counts, 0.897 / 0.973 with raw counts, 0.899 / 0.972 with
/// `1 + ln(count)`, 0.889 / 0.973 with each word's features scaled to unit norm and 0.881 / 0.970
/// with each word's features averaged (short function words then weigh as much as content
/// words). The square root damps n-grams that repeat (frequent short words, suffixes) without
/// discarding the repetition; it needs no statistics of a corpus, so a sentence's features depend
/// on that sentence only.
pub fn sentence_features(cfg: &TokenizerConfig, text: &str) -> Vec<(u32, f32)> {
    let mut buf = heapless::Vec::<Feature, MAX_SENTENCE_FEATURES>::new();
    tokenize(cfg, text, buf.as_mut_view());
    let counts = count_ids(buf.iter().map(|f| f.id).collect());
    // sqrt(count)² = count, so the norm is the square root of the number of features.
    let norm = f64::from(counts.iter().map(|&(_, c)| c).sum::<u32>()).sqrt();
    counts.into_iter().map(|(id, c)| (id, (f64::from(c).sqrt() / norm) as f32)).collect()
}

/// `(id, occurrences)` of the distinct ids, sorted by id.
pub fn count_ids(mut ids: Vec<u32>) -> Vec<(u32, u32)> {
    ids.sort_unstable();
    let mut counts: Vec<(u32, u32)> = Vec::with_capacity(ids.len());
    for id in ids {
        match counts.last_mut() {
            Some((last, c)) if *last == id => *c += 1,
            _ => counts.push((id, 1)),
        }
    }
    counts
}

/// Rows of a sparse design matrix (row `s`: `(bucket, value)` pairs, ids sorted and distinct),
/// made a block (8,192 rows) at a time: a fit holds one block's rows and their postings,
/// never a whole corpus's (at 200k joined caption pairs those were ~6 KB a pair).
pub trait SparseRowSource: Sync {
    /// Number of rows.
    fn len(&self) -> usize;
    /// Whether there is no row.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Rows `range`, in order.
    fn rows(&self, range: Range<usize>) -> Vec<Vec<(u32, f32)>>;
}

impl SparseRowSource for [Vec<(u32, f32)>] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn rows(&self, range: Range<usize>) -> Vec<Vec<(u32, f32)>> {
        self[range].to_vec()
    }
}

/// Rows computed from their index by `row` (in parallel within a block), e.g. the features of a
/// sentence tokenized when its block comes.
pub struct RowsFrom<F> {
    /// Number of rows.
    pub len: usize,
    /// Row `s`.
    pub row: F,
}

impl<F: Fn(usize) -> Vec<(u32, f32)> + Sync> SparseRowSource for RowsFrom<F> {
    fn len(&self) -> usize {
        self.len
    }

    fn rows(&self, range: Range<usize>) -> Vec<Vec<(u32, f32)>> {
        range.into_par_iter().map(&self.row).collect()
    }
}

/// Rows per block of a [`SparseRowSource`]: a multiple of [`GRAM_ROWS_PER_TASK`], so that the
/// blocked sums add the same numbers in the same order as one pass over all rows.
const ROWS_PER_BLOCK: usize = 4 * GRAM_ROWS_PER_TASK;

/// The blocks of `x`, in order: the first row of each and its rows in compressed form.
fn blocks(x: &(impl SparseRowSource + ?Sized)) -> impl Iterator<Item = (usize, SparseRows)> + '_ {
    (0..x.len())
        .step_by(ROWS_PER_BLOCK)
        .map(|start| (start, SparseRows::from_rows(x.rows(start..(start + ROWS_PER_BLOCK).min(x.len())))))
}

/// Sparse rows in compressed form: row `s` is `ids[offsets[s]..offsets[s + 1]]` with `values`.
struct SparseRows {
    offsets: Vec<usize>,
    ids: Vec<u32>,
    values: Vec<f32>,
}

impl SparseRows {
    fn from_rows(rows: Vec<Vec<(u32, f32)>>) -> Self {
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        let total = rows.iter().map(Vec::len).sum();
        let (mut ids, mut values) = (Vec::with_capacity(total), Vec::with_capacity(total));
        for row in rows {
            for (id, v) in row {
                ids.push(id);
                values.push(v);
            }
            offsets.push(ids.len());
        }
        Self { offsets, ids, values }
    }

    fn of_texts(cfg: &TokenizerConfig, texts: &[&str]) -> Self {
        Self::from_rows(texts.par_iter().map(|t| sentence_features(cfg, t)).collect())
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn row(&self, s: usize) -> (&[u32], &[f32]) {
        let r = self.offsets[s]..self.offsets[s + 1];
        (&self.ids[r.clone()], &self.values[r])
    }
}

/// The sufficient statistics of a ridge problem: the lower triangle of `XᵀX` (`n x n` row-major,
/// the upper triangle unused) and `(XᵀY)ᵀ` (`[dim, n]`), both in f64.
struct Normal {
    n: usize,
    dim: usize,
    gram: Vec<f64>,
    rhs_t: Vec<f64>,
    /// Rows summed.
    rows: usize,
    /// Non-zero features over all rows.
    nonzeros: usize,
}

/// Accumulates [`Normal`] from sparse rows (ids `< n`, each row's ids sorted and distinct), a
/// block at a time, and targets `y(s)` (`dim` values each). Parallel over rows of `XᵀX`: row `i`
/// sums `x_si x_s` over the rows `s` that contain bucket `i`, so each thread writes its own rows
/// and keeps them in cache. Every entry adds its terms in row order, block after block: the sums
/// are those of one pass over all rows, bit for bit.
fn normal_equations<'a>(
    x: &(impl SparseRowSource + ?Sized),
    n: usize,
    dim: usize,
    y: impl Fn(usize) -> &'a [f32] + Sync,
) -> Normal {
    let mut gram = vec![0.0f64; n * n];
    let mut rhs = vec![0.0f64; n * dim];
    let mut nonzeros = 0;
    for (first, block) in blocks(x) {
        nonzeros += block.ids.len();
        add_normal(&block, &mut gram, &mut rhs, n, dim, |s| y(first + s));
    }
    Normal { n, dim, gram, rhs_t: transpose(&rhs, n, dim), rows: x.len(), nonzeros }
}

/// Adds the rows of `x` to `gram` (`XᵀX`, lower triangle) and `rhs` (`XᵀY`, `[n, dim]`).
fn add_normal<'a>(
    x: &SparseRows,
    gram: &mut [f64],
    rhs: &mut [f64],
    n: usize,
    dim: usize,
    y: impl Fn(usize) -> &'a [f32] + Sync,
) {
    // Postings: for every bucket, the (row, value) pairs that contain it.
    let mut starts = vec![0usize; n + 1];
    for &id in &x.ids {
        starts[id as usize + 1] += 1;
    }
    for i in 0..n {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut post = vec![(0u32, 0.0f32); x.ids.len()];
    for s in 0..x.len() {
        let (ids, vals) = x.row(s);
        for (&id, &v) in ids.iter().zip(vals) {
            post[fill[id as usize]] = (s as u32, v);
            fill[id as usize] += 1;
        }
    }
    gram.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for &(s, v) in &post[starts[i]..starts[i + 1]] {
            let v = f64::from(v);
            let (ids, vals) = x.row(s as usize);
            for (&j, &u) in ids.iter().zip(vals) {
                if j as usize > i {
                    break;
                }
                row[j as usize] += v * f64::from(u);
            }
        }
    });
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    rhs.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
        let postings = &post[starts[i]..starts[i + 1]];
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { rhs_row_avx2(row, postings, &y) };
            return;
        }
        rhs_row(row, postings, &y);
    });
}

/// Row `i` of `XᵀY`: the sum of `v y(s)` over the postings `(s, v)` of bucket `i`.
#[inline(always)]
fn rhs_row<'a>(row: &mut [f64], postings: &[(u32, f32)], y: &impl Fn(usize) -> &'a [f32]) {
    for &(s, v) in postings {
        let v = f64::from(v);
        for (r, &t) in row.iter_mut().zip(y(s as usize)) {
            *r += v * f64::from(t);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rhs_row_avx2<'a>(row: &mut [f64], postings: &[(u32, f32)], y: &impl Fn(usize) -> &'a [f32]) {
    rhs_row(row, postings, y)
}

impl Normal {
    /// `W` (`[n, dim]`, f32) solving `(XᵀX + lambda I) W = XᵀY`.
    fn solve(&self, lambda: f64) -> Result<Vec<f32>, RidgeError> {
        Self { gram: self.gram.clone(), rhs_t: self.rhs_t.clone(), ..*self }.solve_once(lambda)
    }

    /// [`Normal::solve`] in place of the statistics (a fit with one `lambda` needs no copy of
    /// `XᵀX`: 254 MB at 5632 buckets).
    fn solve_once(self, lambda: f64) -> Result<Vec<f32>, RidgeError> {
        let (n, mut a, mut w_t) = (self.n, self.gram, self.rhs_t);
        for i in 0..n {
            a[i * n + i] += lambda;
        }
        solve_spd(&mut a, n, &mut w_t)
            .map_err(|source| RidgeError::NotPositiveDefinite { lambda, source })?;
        drop(a);
        let w = transpose(&w_t, self.dim, n);
        Ok(w.into_iter().map(|v| v as f32).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Fit and evaluation
// ---------------------------------------------------------------------------------------------

/// Why a ridge fit could not run.
#[derive(Debug, thiserror::Error)]
pub enum RidgeError {
    /// The lambda grid is empty or holds a value that is not finite and > 0.
    #[error("ridge: every lambda must be finite and > 0, and the grid not empty (got {0:?})")]
    BadLambdas(Vec<f32>),
    /// A rank outside `1..=dim`.
    #[error("ridge: rank {rank} is not in 1..={dim}")]
    BadRank {
        /// The rank asked for.
        rank: usize,
        /// The output width.
        dim: usize,
    },
    /// No training pair.
    #[error("ridge: no training pairs")]
    NoPairs,
    /// A pair's caption line has no teacher embedding.
    #[error("ridge: caption line {line} has no teacher embedding ({rows} rows)")]
    MissingTeacherRow {
        /// The 0-based caption line.
        line: usize,
        /// Rows the teacher outputs hold.
        rows: usize,
    },
    /// The eigensolver of the reduced-rank fit did not converge.
    #[error("ridge: reduced-rank fit: {0}")]
    Eigen(crate::linalg::NoConvergence),
    /// `XᵀX + lambda I` was not numerically positive definite (lambda far too small).
    #[error("ridge: lambda {lambda}: {source}")]
    NotPositiveDefinite {
        /// The lambda of the failed solve.
        lambda: f64,
        /// The failed pivot.
        source: NotPositiveDefinite,
    },
}

/// Checks that every line has a row in `outputs`.
fn check_rows(outputs: &TeacherOutputs, lines: &[usize]) -> Result<(), RidgeError> {
    let rows = outputs.len();
    match lines.iter().find(|&&l| l >= rows) {
        Some(&line) => Err(RidgeError::MissingTeacherRow { line, rows }),
        None => Ok(()),
    }
}

/// Fits `W = argmin ||X W - Y||^2 + lambda ||W||^2` on the train pairs (`X` from the X side,
/// `Y` the teacher's English embeddings of the same caption lines) for every `lambda` of the
/// grid, and keeps the one with the best val X -> en R@1. `progress` receives one line per stage.
pub fn fit(
    config: &RidgeConfig,
    train: &Bitext,
    train_en: &TeacherOutputs,
    val: &Bitext,
    val_en: &TeacherOutputs,
    mut progress: impl FnMut(&str),
) -> Result<RidgeFit, RidgeError> {
    if config.lambdas.is_empty() || !config.lambdas.iter().all(|l| l.is_finite() && *l > 0.0) {
        return Err(RidgeError::BadLambdas(config.lambdas.clone()));
    }
    if train.pairs.is_empty() {
        return Err(RidgeError::NoPairs);
    }
    let dim = train_en.dim;
    let tok = config.tokenizer;
    let n = tok.buckets as usize;
    let start = Instant::now();
    let texts = train.x();
    let x = RowsFrom { len: texts.len(), row: |s: usize| sentence_features(&tok, texts[s]) };
    let train_lines = train.lines();
    check_rows(train_en, &train_lines)?;
    check_rows(val_en, &val.lines())?;
    let normal = normal_equations(&x, n, dim, |s| train_en.embedding(train_lines[s]));
    progress(&format!(
        "ridge: {} train pairs, {} features/sentence, XᵀX and XᵀY in {:.1}s",
        normal.rows,
        normal.nonzeros / normal.rows.max(1),
        start.elapsed().as_secs_f64()
    ));
    let val_x = SparseRows::of_texts(&tok, &val.x());
    let val_docs = val_en.embeddings_of(&val.lines());
    let targets: Vec<usize> = (0..val_x.len()).collect();
    let mut best: Option<(RidgeStudent, f64, f64)> = None;
    let mut val_r1_by_lambda = Vec::with_capacity(config.lambdas.len());
    for &lambda in &config.lambdas {
        let t = Instant::now();
        let weights = normal.solve(f64::from(lambda))?;
        let student = RidgeStudent { tokenizer: tok, lambda, weights, dim };
        let mut queries = vec![0.0f32; val_x.len() * dim];
        queries.par_chunks_mut(dim).enumerate().for_each(|(s, row)| {
            let (ids, vals) = val_x.row(s);
            let f: Vec<(u32, f32)> = ids.iter().copied().zip(vals.iter().copied()).collect();
            student.embed_features(&f, row);
        });
        let m = metrics_from_ranks(&ranks(&queries, &val_docs, dim, &targets));
        progress(&format!(
            "ridge: lambda {lambda}: val X->en R@1 {:.4} MRR {:.4} (solved in {:.1}s)",
            m.r1,
            m.mrr,
            t.elapsed().as_secs_f64()
        ));
        val_r1_by_lambda.push((lambda, m.r1));
        if best.as_ref().is_none_or(|(_, r1, mrr)| (m.r1, m.mrr) > (*r1, *mrr)) {
            best = Some((student, m.r1, m.mrr));
        }
    }
    let Some((student, _, _)) = best else { return Err(RidgeError::BadLambdas(config.lambdas.clone())) };
    Ok(RidgeFit { student, val_r1_by_lambda })
}

/// A tokenizer setting [`choose_ngram_range`] tries: the character n-gram range and whether
/// every character is a word ([`TokenizerConfig::with_char_words`]). Written `3-5` or
/// `1-3/chars` (flags, reports, `ngrams.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ngrams {
    /// Shortest n-gram, in chars, boundary marks included.
    pub min: u8,
    /// Longest n-gram.
    pub max: u8,
    /// Every character a word of its own.
    pub char_words: bool,
}

impl Ngrams {
    /// `min`-`max` over ordinary words.
    pub const fn range(min: u8, max: u8) -> Self {
        Self { min, max, char_words: false }
    }

    /// `tokenizer` with this setting. Ordinary words keep `tokenizer`'s per-word cap (its
    /// window); character words set the cap of a one-char word.
    pub fn apply(self, tokenizer: TokenizerConfig) -> TokenizerConfig {
        let ranged = TokenizerConfig { min_ngram: self.min, max_ngram: self.max, ..tokenizer };
        if self.char_words { ranged.with_char_words() } else { ranged }
    }

    /// The setting `tokenizer` has.
    pub fn of(tokenizer: &TokenizerConfig) -> Self {
        Self { min: tokenizer.min_ngram, max: tokenizer.max_ngram, char_words: tokenizer.has_char_words() }
    }
}

/// `3-5`, `1-3/chars`.
impl std::fmt::Display for Ngrams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}{}", self.min, self.max, if self.char_words { "/chars" } else { "" })
    }
}

impl std::str::FromStr for Ngrams {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a range MIN-MAX with 1 <= MIN <= MAX <= {}, e.g. 3-5, or MIN-MAX/chars \
                 (every character a word), e.g. 1-3/chars",
                otkd_runtime::tokenizer::MAX_NGRAM
            )
        };
        let (range, char_words) = match s.strip_suffix("/chars") {
            Some(range) => (range, true),
            None => (s, false),
        };
        let (min, max) = range.split_once('-').ok_or_else(bad)?;
        let (min, max) = (min.parse::<u8>().map_err(|_| bad())?, max.parse::<u8>().map_err(|_| bad())?);
        if min == 0 || min > max || max > otkd_runtime::tokenizer::MAX_NGRAM {
            return Err(bad());
        }
        Ok(Self { min, max, char_words })
    }
}

/// The settings [`choose_ngram_range`] tries, today's default first.
pub const NGRAM_CANDIDATES: [Ngrams; 4] = [
    Ngrams::range(3, 5),
    Ngrams::range(2, 4),
    Ngrams::range(1, 3),
    Ngrams { min: 1, max: 3, char_words: true },
];

/// How much better another setting's val R@1 must be to replace 3-5: a point, the run-to-run
/// noise of these numbers (on Multi30k gn, 1-3 beat 3-5 by 0.001, one query of 1,014).
pub const NGRAM_MARGIN: f64 = 0.01;

/// The tokenizer setting chosen for a bitext, and the val X -> en R@1 of every candidate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NgramChoice {
    /// The chosen setting.
    pub chosen: Ngrams,
    /// `(setting, val X -> en R@1)` of each candidate, in [`NGRAM_CANDIDATES`] order.
    pub val_r1: Vec<(Ngrams, f64)>,
}

/// `1-3/chars (ridge dev R@1: 3-5 0.180, 2-4 0.446, 1-3 0.793, 1-3/chars 0.930)`.
impl std::fmt::Display for NgramChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tried: Vec<String> =
            self.val_r1.iter().map(|(setting, r1)| format!("{setting} {r1:.3}")).collect();
        write!(f, "{} (ridge dev R@1: {})", self.chosen, tried.join(", "))
    }
}

/// Chooses the tokenizer's character n-gram range, and whether every character is a word, for a
/// bitext: the closed-form ridge student ([`RidgeConfig::default`]'s buckets, one `lambda`) is
/// fitted with each of [`NGRAM_CANDIDATES`] and the best val X -> en R@1 wins if it beats
/// today's 3-5 by [`NGRAM_MARGIN`]; else 3-5 stays. Why: in a script where one or two
/// characters make a word, 3-5-grams mostly span word boundaries and miss the words, and in one
/// where a character is a word the characters are the words (seconds per candidate).
pub fn choose_ngram_range(
    lambda: f32,
    train: &Bitext,
    train_en: &TeacherOutputs,
    val: &Bitext,
    val_en: &TeacherOutputs,
) -> Result<NgramChoice, RidgeError> {
    let mut val_r1 = Vec::new();
    for candidate in NGRAM_CANDIDATES {
        let base = RidgeConfig::default();
        let config = RidgeConfig { tokenizer: candidate.apply(base.tokenizer), lambdas: vec![lambda] };
        let fit = fit(&config, train, train_en, val, val_en, |_| {})?;
        val_r1.push((candidate, fit.val_r1_by_lambda[0].1));
    }
    let today = val_r1[0];
    let mut best = today;
    for &candidate in &val_r1[1..] {
        if candidate.1 > best.1 {
            best = candidate;
        }
    }
    let chosen = if best.1 >= today.1 + NGRAM_MARGIN { best.0 } else { today.0 };
    Ok(NgramChoice { chosen, val_r1 })
}

/// Test retrieval of a fitted student: X -> en ranks the teacher's English embeddings of the
/// test captions for each ridge(X) query; en -> X the reverse.
pub fn evaluate(
    student: &RidgeStudent,
    test: &Bitext,
    test_en: &TeacherOutputs,
) -> Result<BothDirections, RidgeError> {
    check_rows(test_en, &test.lines())?;
    let x = student.embed(&test.x());
    let en = test_en.embeddings_of(&test.lines());
    Ok(both_directions(&x, &en, student.dim))
}

// ---------------------------------------------------------------------------------------------
// Reduced-rank fit: the learned student's initialisation
// ---------------------------------------------------------------------------------------------

/// Training rows per task when [`fit_low_rank`] sums the fitted values' Gram matrix.
const GRAM_ROWS_PER_TASK: usize = 2048;

/// A rank-`rank` linear map `W = E P` from `buckets` sparse features to `dim` outputs.
#[derive(Clone, Debug)]
pub struct LowRankMap {
    /// `E`, `[buckets, rank]` row-major.
    pub embeddings: Vec<f32>,
    /// `P`, `[rank, dim]` row-major, orthonormal rows.
    pub projection: Vec<f32>,
    /// Inner width.
    pub rank: usize,
    /// Output width.
    pub dim: usize,
}

/// Reduced-rank ridge regression: the rank-`rank` map that best reproduces, in squared error,
/// the ridge fit `W` (`lambda`) from `rows` (sparse, ids `< buckets`, each row's ids sorted and
/// distinct; made a block at a time, twice) to `targets(s)` (`dim` values each).
///
/// `P` is the top `rank` principal directions of the fitted values `X W` and `E = W Pᵀ`, so
/// `X E P` is the projection of `X W` onto them (Izenman 1975). Why: the learned student is a bag
/// of `[buckets, rank]` embeddings followed by a projection to `dim`; started from this map it
/// starts where the closed-form ridge student ends, at its own size (on Multi30k ay, 8192 buckets,
/// rank 128: val X -> en R@1 0.887, against 0.90 for the full-rank 8192 x 384 map).
///
/// # Panics
/// If an id is `>= buckets` (rows come from [`sentence_features`] or the student's feature
/// counts with the same bucket count).
pub fn fit_low_rank<'a>(
    rows: &(impl SparseRowSource + ?Sized),
    buckets: usize,
    targets: impl Fn(usize) -> &'a [f32] + Sync,
    dim: usize,
    lambda: f64,
    rank: usize,
) -> Result<LowRankMap, RidgeError> {
    if !(1..=dim).contains(&rank) {
        return Err(RidgeError::BadRank { rank, dim });
    }
    if !(lambda.is_finite() && lambda > 0.0) {
        return Err(RidgeError::BadLambdas(vec![lambda as f32]));
    }
    if rows.is_empty() {
        return Err(RidgeError::NoPairs);
    }
    let w = normal_equations(rows, buckets, dim, targets).solve_once(lambda)?;
    // (X W)ᵀ (X W): partial sums over fixed blocks of rows, added in block order, so the result
    // (and the student it initialises) is the same on every run whatever the thread count. The
    // rows are made again, a block at a time.
    let mut fitted_gram = vec![0.0f64; dim * dim];
    for (_, x) in blocks(rows) {
        let rows: Vec<usize> = (0..x.len()).collect();
        let partials: Vec<Vec<f64>> = rows
            .par_chunks(GRAM_ROWS_PER_TASK)
            .map(|block| {
                let (mut gram, mut fitted) = (vec![0.0f64; dim * dim], vec![0.0f64; dim]);
                for &s in block {
                    fitted.iter_mut().for_each(|v| *v = 0.0);
                    let (ids, vals) = x.row(s);
                    for (&id, &v) in ids.iter().zip(vals) {
                        let w_row = &w[id as usize * dim..(id as usize + 1) * dim];
                        for (f, &wv) in fitted.iter_mut().zip(w_row) {
                            *f += f64::from(v) * f64::from(wv);
                        }
                    }
                    for (i, &fi) in fitted.iter().enumerate() {
                        for (g, &fj) in gram[i * dim..=i * dim + i].iter_mut().zip(&fitted) {
                            *g += fi * fj;
                        }
                    }
                }
                gram
            })
            .collect();
        for partial in &partials {
            fitted_gram.iter_mut().zip(partial).for_each(|(g, p)| *g += p);
        }
    }
    let mut symmetric = fitted_gram;
    for i in 0..dim {
        for j in 0..i {
            symmetric[j * dim + i] = symmetric[i * dim + j];
        }
    }
    let (values, vectors) = symmetric_eigen(&symmetric, dim).map_err(RidgeError::Eigen)?;
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    // Row k of P: the k-th principal direction.
    let projection: Vec<f64> = order[..rank]
        .iter()
        .flat_map(|&k| (0..dim).map(move |i| (i, k)))
        .map(|(i, k)| vectors[i * dim + k])
        .collect();
    let embeddings: Vec<f32> = w
        .par_chunks(dim)
        .flat_map_iter(|w_row| {
            let projection = &projection;
            (0..rank).map(move |k| {
                let p = &projection[k * dim..(k + 1) * dim];
                w_row.iter().zip(p).map(|(&a, &b)| f64::from(a) * b).sum::<f64>() as f32
            })
        })
        .collect();
    Ok(LowRankMap { embeddings, projection: projection.iter().map(|&v| v as f32).collect(), rank, dim })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Lang, Pair, Split};
    use crate::rng::SplitMix64;

    #[test]
    fn normal_equations_recover_a_known_map() {
        // Random sparse rows over 48 buckets, targets from a known map: with a tiny lambda the
        // ridge solution is the map.
        let (n, dim, rows) = (48, 6, 400);
        let mut rng = SplitMix64::new(2, "ridge-map");
        let truth: Vec<f32> = rng.normal_vec(n * dim, 1.0);
        let rows: Vec<Vec<(u32, f32)>> = (0..rows)
            .map(|_| {
                let mut ids: Vec<u32> = (0..8).map(|_| rng.below(n) as u32).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter().map(|id| (id, rng.next_f64() as f32 + 0.1)).collect()
            })
            .collect();
        let x = SparseRows::from_rows(rows.clone());
        let y: Vec<f32> = (0..x.len())
            .flat_map(|s| {
                let (ids, vals) = x.row(s);
                (0..dim)
                    .map(|d| {
                        ids.iter().zip(vals).map(|(&i, &v)| v * truth[i as usize * dim + d]).sum::<f32>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let normal = normal_equations(&rows[..], n, dim, |s| &y[s * dim..(s + 1) * dim]);
        let w = normal.solve(1e-6).unwrap();
        for (got, want) in w.iter().zip(&truth) {
            assert!((got - want).abs() < 1e-3, "got {got}, want {want}");
        }
        // A large lambda shrinks it.
        let shrunk = normal.solve(1e3).unwrap();
        let norm = |w: &[f32]| w.iter().map(|v| v * v).sum::<f32>();
        assert!(norm(&shrunk) < 0.5 * norm(&truth));
    }

    /// `count` sparse rows of up to `per_row` distinct features below `n`, positive values.
    fn sparse_rows(rng: &mut SplitMix64, count: usize, n: usize, per_row: usize) -> Vec<Vec<(u32, f32)>> {
        (0..count)
            .map(|_| {
                let mut ids: Vec<u32> = (0..per_row).map(|_| rng.below(n) as u32).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter().map(|id| (id, rng.next_f64() as f32 + 0.1)).collect()
            })
            .collect()
    }

    #[test]
    fn blocked_normal_equations_are_one_pass_s_bit_for_bit() {
        // More rows than a block: the blocked sums must equal one pass over all rows.
        let (n, dim, count) = (40, 3, 2 * ROWS_PER_BLOCK + 123);
        let mut rng = SplitMix64::new(9, "ridge-blocks");
        let rows = sparse_rows(&mut rng, count, n, 6);
        let y = rng.normal_vec(count * dim, 1.0);
        let target = |s: usize| &y[s * dim..(s + 1) * dim];
        let blocked = normal_equations(&rows[..], n, dim, target);
        let (mut gram, mut rhs) = (vec![0.0f64; n * n], vec![0.0f64; n * dim]);
        add_normal(&SparseRows::from_rows(rows.clone()), &mut gram, &mut rhs, n, dim, target);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&blocked.gram), bits(&gram));
        assert_eq!(bits(&blocked.rhs_t), bits(&transpose(&rhs, n, dim)));
        assert_eq!((blocked.rows, blocked.nonzeros), (count, rows.iter().map(Vec::len).sum()));
    }

    #[test]
    fn low_rank_fit_recovers_a_low_rank_map_and_truncates_a_full_one() {
        let (n, dim, rows) = (40, 6, 500);
        let mut rng = SplitMix64::new(3, "low-rank");
        let x = sparse_rows(&mut rng, rows, n, 8);
        let targets_of = |w: &[f32]| -> Vec<f32> {
            x.iter()
                .flat_map(|row| {
                    (0..dim).map(|d| row.iter().map(|&(i, v)| v * w[i as usize * dim + d]).sum::<f32>())
                })
                .collect()
        };
        // W = A B with A [n, 2], B [2, dim]: rank 2 reproduces it.
        let (a, b) = (rng.normal_vec(n * 2, 1.0), rng.normal_vec(2 * dim, 1.0));
        let truth: Vec<f32> =
            (0..n * dim).map(|t| (0..2).map(|k| a[(t / dim) * 2 + k] * b[k * dim + t % dim]).sum()).collect();
        let y = targets_of(&truth);
        let fit = fit_low_rank(&x[..], n, |s| &y[s * dim..(s + 1) * dim], dim, 1e-6, 2).unwrap();
        assert_eq!((fit.embeddings.len(), fit.projection.len()), (n * 2, 2 * dim));
        for i in 0..n {
            for d in 0..dim {
                let got: f32 = (0..2).map(|k| fit.embeddings[i * 2 + k] * fit.projection[k * dim + d]).sum();
                assert!(
                    (got - truth[i * dim + d]).abs() < 1e-3,
                    "W[{i}][{d}]: {got} vs {}",
                    truth[i * dim + d]
                );
            }
        }
        for k in 0..2 {
            for l in 0..2 {
                let dot: f32 =
                    (0..dim).map(|d| fit.projection[k * dim + d] * fit.projection[l * dim + d]).sum();
                assert!((dot - f32::from(u8::from(k == l))).abs() < 1e-5);
            }
        }
        // A full-rank map: the squared error of the fitted values grows as the rank falls.
        let full = rng.normal_vec(n * dim, 1.0);
        let y = targets_of(&full);
        let error = |rank: usize| -> f32 {
            let fit = fit_low_rank(&x[..], n, |s| &y[s * dim..(s + 1) * dim], dim, 1e-6, rank).unwrap();
            let w: Vec<f32> = (0..n * dim)
                .map(|t| {
                    (0..rank)
                        .map(|k| fit.embeddings[(t / dim) * rank + k] * fit.projection[k * dim + t % dim])
                        .sum()
                })
                .collect();
            targets_of(&w).iter().zip(&y).map(|(p, t)| (p - t).powi(2)).sum()
        };
        let errors: Vec<f32> = (1..=dim).map(error).collect();
        assert!(errors.windows(2).all(|e| e[1] < e[0]), "{errors:?}");
        assert!(errors[dim - 1] < 1e-3 * errors[0], "{errors:?}");
    }

    fn bitext(split: Split, texts: &[String]) -> Bitext {
        Bitext {
            split,
            lang: Lang::CS,
            pairs: texts
                .iter()
                .enumerate()
                .map(|(line, x)| Pair { line, lang: Lang::CS, en: String::new(), x: x.clone() })
                .collect(),
            skipped: Vec::new(),
            total_lines: texts.len(),
        }
    }

    /// Sentences of 3 to 6 words from a vocabulary of random words, with teacher embeddings
    /// `normalise(sum of per-word vectors + noise)`.
    fn synthetic(
        rng: &mut SplitMix64,
        words: &[(String, Vec<f32>)],
        count: usize,
        noise: f64,
        dim: usize,
    ) -> (Vec<String>, TeacherOutputs) {
        let mut texts = Vec::new();
        let mut en = Vec::new();
        for _ in 0..count {
            let len = 3 + rng.below(4);
            let mut v = rng.normal_vec(dim, noise);
            let mut text = Vec::new();
            for _ in 0..len {
                let (word, vector) = &words[rng.below(words.len())];
                text.push(word.as_str());
                v.iter_mut().zip(vector).for_each(|(a, b)| *a += b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            en.extend(v.iter().map(|a| a / norm));
            texts.push(text.join(" "));
        }
        (texts, TeacherOutputs { dim, embeddings: en, token_states: None })
    }

    fn vocabulary(rng: &mut SplitMix64, size: usize, dim: usize) -> Vec<(String, Vec<f32>)> {
        (0..size)
            .map(|_| {
                let word: String =
                    (0..4 + rng.below(5)).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
                (word, rng.normal_vec(dim, 1.0))
            })
            .collect()
    }

    #[test]
    fn the_ngram_range_follows_the_script() {
        let dim = 16;
        let mut rng = SplitMix64::new(5, "ngram-choice");
        // A logographic language: every word one character, written without spaces.
        let logograms: Vec<(String, Vec<f32>)> = (0..200u32)
            .map(|i| (char::from_u32(0x4E00 + i * 37).unwrap().to_string(), rng.normal_vec(dim, 1.0)))
            .collect();
        let unspaced = |(texts, en): (Vec<String>, TeacherOutputs)| {
            (texts.iter().map(|t| t.replace(' ', "")).collect::<Vec<_>>(), en)
        };
        let (train, train_en) = unspaced(synthetic(&mut rng, &logograms, 3000, 0.0, dim));
        let (val, val_en) = unspaced(synthetic(&mut rng, &logograms, 300, 0.0, dim));
        let choice = choose_ngram_range(
            0.1,
            &bitext(Split::Train, &train),
            &train_en,
            &bitext(Split::Dev, &val),
            &val_en,
        )
        .unwrap();
        // Words of one character, written without spaces: the characters are the words.
        assert!(choice.chosen.char_words, "{choice:?}");
        let best = choice.val_r1.iter().map(|c| c.1).fold(0.0, f64::max);
        let first_best = choice.val_r1.iter().find(|c| c.1 == best).unwrap().0;
        assert_eq!(choice.chosen, first_best, "the best, the earlier on ties: {choice:?}");
        assert!(best > choice.val_r1[0].1 + NGRAM_MARGIN, "{choice:?}");
    }

    #[test]
    fn fit_learns_a_linear_map_from_text() {
        let dim = 16;
        let mut rng = SplitMix64::new(3, "ridge-text");
        let words = vocabulary(&mut rng, 60, dim);
        let (train, train_en) = synthetic(&mut rng, &words, 1500, 0.0, dim);
        let (val, val_en) = synthetic(&mut rng, &words, 200, 0.0, dim);
        let (test, test_en) = synthetic(&mut rng, &words, 200, 0.0, dim);
        let config = RidgeConfig {
            tokenizer: TokenizerConfig { buckets: 1024, ..TokenizerConfig::DEFAULT },
            lambdas: vec![0.01],
        };
        let mut messages = 0;
        let f = fit(
            &config,
            &bitext(Split::Train, &train),
            &train_en,
            &bitext(Split::Dev, &val),
            &val_en,
            |_| messages += 1,
        )
        .unwrap();
        assert!(messages >= 2);
        assert_eq!(f.student.parameters(), 1024 * dim);
        let test_refs: Vec<&str> = test.iter().map(String::as_str).collect();
        let pred = f.student.embed(&test_refs);
        let mean_cos = pred
            .chunks(dim)
            .zip(test_en.embeddings.chunks(dim))
            .map(|(p, t)| p.iter().zip(t).map(|(a, b)| a * b).sum::<f32>())
            .sum::<f32>()
            / test.len() as f32;
        assert!(mean_cos > 0.9, "mean test cosine {mean_cos}");
        let r = evaluate(&f.student, &bitext(Split::Test, &test), &test_en).unwrap();
        assert!(r.x_to_en.r1 > 0.9 && r.en_to_x.r1 > 0.9, "{r:?}");
    }

    #[test]
    fn the_grid_keeps_the_lambda_with_the_best_val_r1() {
        // Noisy targets and about as many sentences as features: a tiny lambda interpolates the
        // noise, a moderate one generalises.
        let dim = 16;
        let mut rng = SplitMix64::new(4, "ridge-grid");
        let words = vocabulary(&mut rng, 300, dim);
        let (train, train_en) = synthetic(&mut rng, &words, 600, 3.0, dim);
        let (val, val_en) = synthetic(&mut rng, &words, 300, 0.0, dim);
        let config = RidgeConfig {
            tokenizer: TokenizerConfig { buckets: 1024, ..TokenizerConfig::DEFAULT },
            lambdas: vec![1e-4, 1.0],
        };
        let (train_bitext, val_bitext) = (bitext(Split::Train, &train), bitext(Split::Dev, &val));
        let fit_with =
            |c: &RidgeConfig| fit(c, &train_bitext, &train_en, &val_bitext, &val_en, |_| {}).unwrap();
        let f = fit_with(&config);
        let [(_, tiny), (_, moderate)] = f.val_r1_by_lambda[..] else { panic!("two lambdas") };

        assert!(moderate > tiny + 0.05, "val R@1: lambda 1e-4 {tiny}, lambda 1 {moderate}");
        assert_eq!(f.student.lambda, 1.0);
        // The same grid in the other order keeps the same lambda.
        let reversed = RidgeConfig { lambdas: vec![1.0, 1e-4], ..config };
        let g = fit_with(&reversed);
        assert_eq!(g.student.lambda, 1.0);
        assert_eq!(g.student.weights, f.student.weights);
    }

    #[test]
    fn sentence_features_are_normalised_sorted_and_deterministic() {
        let cfg = RidgeConfig::default().tokenizer;
        let text = "Dos hombres juegan al fútbol en el parque, dos perros miran.";
        let f = sentence_features(&cfg, text);
        assert!(f.len() > 20);
        assert_eq!(f, sentence_features(&cfg, text));
        assert!(f.windows(2).all(|w| w[0].0 < w[1].0), "ids sorted and distinct");
        assert!(f.iter().all(|&(id, v)| id < cfg.buckets && v > 0.0));
        let norm: f32 = f.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5, "squared norm {norm}");
        // Repeated words change the weights, not the support.
        let g = sentence_features(&cfg, "dos dos hombres");
        let h = sentence_features(&cfg, "dos hombres");
        assert_eq!(g.iter().map(|x| x.0).collect::<Vec<_>>(), h.iter().map(|x| x.0).collect::<Vec<_>>());
        assert_ne!(g, h);
        assert!(sentence_features(&cfg, "  ,.; ").is_empty());
    }
}
