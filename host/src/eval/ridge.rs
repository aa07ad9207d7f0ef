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
//! The fit accumulates `XᵀX` (`buckets x buckets`) and `XᵀY` sparsely in f64, then for every
//! `lambda` of the grid solves `(XᵀX + lambda I) W = XᵀY` with a blocked Cholesky factorisation
//! (rayon-parallel, an AVX2+FMA micro-kernel where the CPU has one) and keeps the `lambda` with
//! the best val X -> en R@1.

use std::time::Instant;

use otkd_runtime::{Feature, TokenizerConfig, tokenize};
use rayon::prelude::*;

use crate::data::Bitext;
use crate::eval::metrics::{BothDirections, both_directions, metrics_from_ranks, ranks};

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
}

/// Accumulates [`Normal`] from sparse rows (ids `< n`, each row's ids sorted and distinct) and
/// targets `y(s)` (`dim` values each). Parallel over rows of `XᵀX`: row `i` sums `x_si x_s` over
/// the rows `s` that contain bucket `i`, so each thread writes its own rows and keeps them in
/// cache.
fn normal_equations<'a>(
    x: &SparseRows,
    n: usize,
    dim: usize,
    y: impl Fn(usize) -> &'a [f32] + Sync,
) -> Normal {
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
    let mut gram = vec![0.0f64; n * n];
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
    let mut rhs = vec![0.0f64; n * dim];
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
    Normal { n, dim, gram, rhs_t: transpose(&rhs, n, dim) }
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

/// Transpose of a row-major `rows x cols` matrix.
fn transpose<T: Copy + Default + Send + Sync>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::default(); rows * cols];
    t.par_chunks_mut(rows.max(1)).enumerate().for_each(|(j, out)| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = a[i * cols + j];
        }
    });
    t
}

impl Normal {
    /// `W` (`[n, dim]`, f32) solving `(XᵀX + lambda I) W = XᵀY`.
    fn solve(&self, lambda: f64) -> Result<Vec<f32>, NotPositiveDefinite> {
        let n = self.n;
        let mut a = self.gram.clone();
        for i in 0..n {
            a[i * n + i] += lambda;
        }
        cholesky(&mut a, n, BLOCK)?;
        let mut w_t = self.rhs_t.clone();
        solve_lower(&a, n, &mut w_t, BLOCK);
        solve_upper(&a, n, &mut w_t, BLOCK);
        let w = transpose(&w_t, self.dim, n);
        Ok(w.into_iter().map(|v| v as f32).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Dense linear algebra: blocked Cholesky and triangular solves
// ---------------------------------------------------------------------------------------------

/// The matrix is not (numerically) symmetric positive definite: pivot `index` was not > 0.
#[derive(Clone, Copy, Debug, PartialEq)]
struct NotPositiveDefinite {
    index: usize,
}

/// Columns per block of the Cholesky factorisation and of the triangular solves.
const BLOCK: usize = 128;
/// Rows of one micro-tile.
const MR: usize = 4;
/// Columns of one micro-tile.
const NR: usize = 8;
/// Rows of `C` one parallel task updates (their packed `A` stays in L2).
const MC: usize = 64;
/// Depth of one pass over packed panels (a packed `B` micro-panel stays in L1).
const KC: usize = 256;
/// Columns of one parallel task in the panel solve.
const PANEL_COLS: usize = 256;

/// `rows x depth` matrix `get(i, p)` packed in groups of `R` rows: group `g`, depth `p`, lane
/// `r` at `[(g * depth + p) * R + r]`, padded with zeros.
fn pack<const R: usize>(rows: usize, depth: usize, get: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    let groups = rows.div_ceil(R);
    let mut out = vec![0.0f64; groups * depth * R];
    out.par_chunks_mut((depth * R).max(1)).enumerate().for_each(|(g, panel)| {
        for (p, lanes) in panel.chunks_exact_mut(R).enumerate() {
            for (r, v) in lanes.iter_mut().enumerate() {
                let i = g * R + r;
                if i < rows {
                    *v = get(i, p);
                }
            }
        }
    });
    out
}

/// One micro-tile: `acc[r][c] = sum_p a[p][r] b[p][c]` over packed micro-panels.
#[inline(always)]
fn micro_kernel<const FMA: bool>(a: &[f64], b: &[f64]) -> [[f64; NR]; MR] {
    let mut acc = [[0.0f64; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for r in 0..MR {
            for c in 0..NR {
                acc[r][c] = if FMA { ap[r].mul_add(bp[c], acc[r][c]) } else { acc[r][c] + ap[r] * bp[c] };
            }
        }
    }
    acc
}

/// The arguments of [`sub_product`] for one task.
struct Product<'a> {
    /// Packed `A` (`m x depth`, groups of [`MR`]).
    a: &'a [f64],
    /// Packed `B` (`ncols x depth`, groups of [`NR`]).
    b: &'a [f64],
    depth: usize,
    ncols: usize,
    /// Leading dimension of `C` and its first column.
    ldc: usize,
    c0: usize,
    /// Only the tiles that meet the lower triangle (`j <= i`).
    lower: bool,
}

/// `C -= A Bᵀ` for the rows `row0..row0 + rows` of `C` (`c` starts at row `row0`).
#[inline(always)]
fn product_rows<const FMA: bool>(pr: &Product<'_>, c: &mut [f64], row0: usize, rows: usize) {
    let (depth, ldc, c0) = (pr.depth, pr.ldc, pr.c0);
    let col_tiles = pr.ncols.div_ceil(NR);
    let mut p0 = 0;
    while p0 < depth {
        let p1 = (p0 + KC).min(depth);
        for h in 0..col_tiles {
            let b = &pr.b[(h * depth + p0) * NR..(h * depth + p1) * NR];
            let cols = NR.min(pr.ncols - h * NR);
            for g in (0..rows.div_ceil(MR)).map(|g| g + row0 / MR) {
                if pr.lower && h * NR > g * MR + MR - 1 {
                    continue;
                }
                let a = &pr.a[(g * depth + p0) * MR..(g * depth + p1) * MR];
                let acc = micro_kernel::<FMA>(a, b);
                let live = MR.min(row0 + rows - g * MR);
                for (r, acc) in acc.iter().enumerate().take(live) {
                    let at = (g * MR + r - row0) * ldc + c0 + h * NR;
                    for (cv, &s) in c[at..at + cols].iter_mut().zip(acc) {
                        *cv -= s;
                    }
                }
            }
        }
        p0 = p1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn product_rows_fma(pr: &Product<'_>, c: &mut [f64], row0: usize, rows: usize) {
    product_rows::<true>(pr, c, row0, rows)
}

/// `C -= A Bᵀ` where `C` is `m x ncols` at column `c0` of the row-major `c` (leading dimension
/// `ldc`, row 0 of `C` = row 0 of `c`), parallel over blocks of [`MC`] rows.
fn sub_product(c: &mut [f64], m: usize, pr: &Product<'_>) {
    #[cfg(target_arch = "x86_64")]
    let fma = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    c.par_chunks_mut(MC * pr.ldc).take(m.div_ceil(MC)).enumerate().for_each(|(t, chunk)| {
        let row0 = t * MC;
        let rows = MC.min(m - row0);
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { product_rows_fma(pr, chunk, row0, rows) };
            return;
        }
        product_rows::<false>(pr, chunk, row0, rows)
    });
}

/// In-place lower Cholesky factorisation `A = L Lᵀ` of the symmetric `n x n` row-major `a`
/// (only its lower triangle is read; `L` replaces it, the upper triangle is left undefined).
/// Right-looking, `block` columns at a time: factor the diagonal block, solve the panel below
/// it, update the trailing lower triangle with the packed micro-kernel.
fn cholesky(a: &mut [f64], n: usize, block: usize) -> Result<(), NotPositiveDefinite> {
    assert_eq!(a.len(), n * n);
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + block).min(n);
        let nb = k1 - k0;
        // Diagonal block, unblocked (earlier blocks' updates are already subtracted).
        for j in k0..k1 {
            let d = a[j * n + j] - (k0..j).map(|p| a[j * n + p] * a[j * n + p]).sum::<f64>();
            if d.is_nan() || d <= 0.0 {
                return Err(NotPositiveDefinite { index: j });
            }
            let ljj = d.sqrt();
            a[j * n + j] = ljj;
            for i in j + 1..k1 {
                let s = a[i * n + j] - (k0..j).map(|p| a[i * n + p] * a[j * n + p]).sum::<f64>();
                a[i * n + j] = s / ljj;
            }
        }
        if k1 == n {
            break;
        }
        let m = n - k1;
        // Panel: L21 = A21 L11⁻ᵀ, solved column by column on a transposed copy, in chunks of
        // PANEL_COLS rows of A21: chunk c holds panel[c][p][w] = A[k1 + c * PANEL_COLS + w][k0 + p].
        let (top, bottom) = a.split_at_mut(k1 * n);
        let diag = |i: usize, j: usize| top[(k0 + i) * n + k0 + j];
        let mut panel = vec![0.0f64; nb * m.div_ceil(PANEL_COLS) * PANEL_COLS];
        panel.par_chunks_mut(nb * PANEL_COLS).enumerate().for_each(|(c, chunk)| {
            let w_len = PANEL_COLS.min(m - c * PANEL_COLS);
            for w in 0..w_len {
                let row = &bottom[(c * PANEL_COLS + w) * n + k0..(c * PANEL_COLS + w) * n + k1];
                for (p, &v) in row.iter().enumerate() {
                    chunk[p * PANEL_COLS + w] = v;
                }
            }
            for p in 0..nb {
                let (done, rest) = chunk.split_at_mut((p + 1) * PANEL_COLS);
                let xp = &mut done[p * PANEL_COLS..];
                let inv = 1.0 / diag(p, p);
                xp.iter_mut().for_each(|v| *v *= inv);
                for (q, xq) in rest.chunks_exact_mut(PANEL_COLS).enumerate() {
                    let l = diag(p + 1 + q, p);
                    for (v, &x) in xq.iter_mut().zip(xp.iter()) {
                        *v -= l * x;
                    }
                }
            }
        });
        let at = |i: usize, p: usize| panel[((i / PANEL_COLS) * nb + p) * PANEL_COLS + i % PANEL_COLS];
        bottom.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (p, v) in row[k0..k1].iter_mut().enumerate() {
                *v = at(i, p);
            }
        });
        // Trailing update: A22 -= L21 L21ᵀ (lower triangle).
        let pa = pack::<MR>(m, nb, at);
        let pb = pack::<NR>(m, nb, at);
        let pr = Product { a: &pa, b: &pb, depth: nb, ncols: m, ldc: n, c0: k1, lower: true };
        sub_product(bottom, m, &pr);
        k0 = k1;
    }
    Ok(())
}

/// Solves `L Z = B` in place for every row of `rhs_t` (`[k, n]`: one right-hand side per row),
/// with `L` the lower factor in `l` (`n x n` row-major).
fn solve_lower(l: &[f64], n: usize, rhs_t: &mut [f64], block: usize) {
    let k = rhs_t.len() / n.max(1);
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + block).min(n);
        if k0 > 0 {
            // Z[:, k0..k1] -= Z[:, 0..k0] L[k0..k1, 0..k0]ᵀ
            let pa = pack::<MR>(k, k0, |i, p| rhs_t[i * n + p]);
            let pb = pack::<NR>(k1 - k0, k0, |j, p| l[(k0 + j) * n + p]);
            let pr = Product { a: &pa, b: &pb, depth: k0, ncols: k1 - k0, ldc: n, c0: k0, lower: false };
            sub_product(rhs_t, k, &pr);
        }
        rhs_t.par_chunks_mut(n).for_each(|z| {
            for i in k0..k1 {
                let s = z[i] - (k0..i).map(|q| l[i * n + q] * z[q]).sum::<f64>();
                z[i] = s / l[i * n + i];
            }
        });
        k0 = k1;
    }
}

/// Solves `Lᵀ W = Z` in place for every row of `rhs_t` (`[k, n]`), `L` as in [`solve_lower`].
fn solve_upper(l: &[f64], n: usize, rhs_t: &mut [f64], block: usize) {
    let k = rhs_t.len() / n.max(1);
    let mut k1 = n;
    while k1 > 0 {
        let k0 = k1.saturating_sub(block);
        if k1 < n {
            // W[:, k0..k1] -= W[:, k1..n] L[k1..n, k0..k1]
            let depth = n - k1;
            let pa = pack::<MR>(k, depth, |i, p| rhs_t[i * n + k1 + p]);
            let pb = pack::<NR>(k1 - k0, depth, |j, p| l[(k1 + p) * n + k0 + j]);
            let pr = Product { a: &pa, b: &pb, depth, ncols: k1 - k0, ldc: n, c0: k0, lower: false };
            sub_product(rhs_t, k, &pr);
        }
        // The diagonal block transposed, so that the substitution reads it by rows.
        let nb = k1 - k0;
        let lt: Vec<f64> = (0..nb * nb).map(|t| l[(k0 + t % nb) * n + k0 + t / nb]).collect();
        rhs_t.par_chunks_mut(n).for_each(|w| {
            for r in (0..nb).rev() {
                let row = &lt[r * nb..(r + 1) * nb];
                let s = w[k0 + r] - (r + 1..nb).map(|q| row[q] * w[k0 + q]).sum::<f64>();
                w[k0 + r] = s / row[r];
            }
        });
        k1 = k0;
    }
}

// ---------------------------------------------------------------------------------------------
// Fit and evaluation
// ---------------------------------------------------------------------------------------------

/// Rows `lines` of the row-major `[_, dim]` `embeddings`, concatenated.
fn select_rows(embeddings: &[f32], dim: usize, lines: &[usize]) -> Vec<f32> {
    let rows = embeddings.len() / dim;
    let mut out = Vec::with_capacity(lines.len() * dim);
    for &line in lines {
        assert!(line < rows, "line {line} has no teacher embedding ({rows} rows)");
        out.extend_from_slice(&embeddings[line * dim..(line + 1) * dim]);
    }
    out
}

/// Fits `W = argmin ||X W - Y||^2 + lambda ||W||^2` on the train pairs (`X` from the X side,
/// `Y` the teacher's English embeddings of the same lines: `train_en` is `[lines, dim]` indexed
/// by [`crate::data::Pair::line`]) for every `lambda` of the grid, and keeps the one with the
/// best val X -> en R@1 (`val_en` likewise). `progress` receives one line per stage.
///
/// # Panics
/// If the grid is empty or holds a value that is not finite and > 0, if `dim` is 0, or if a
/// pair's line has no row in its embeddings.
pub fn fit(
    config: &RidgeConfig,
    train: &Bitext,
    train_en: &[f32],
    val: &Bitext,
    val_en: &[f32],
    dim: usize,
    mut progress: impl FnMut(&str),
) -> RidgeFit {
    assert!(dim > 0, "ridge: dim must be positive");
    assert!(!config.lambdas.is_empty(), "ridge: empty lambda grid");
    assert!(
        config.lambdas.iter().all(|l| l.is_finite() && *l > 0.0),
        "ridge: every lambda must be finite and > 0, got {:?}",
        config.lambdas
    );
    let tok = config.tokenizer;
    let n = tok.buckets as usize;
    let start = Instant::now();
    let x = SparseRows::of_texts(&tok, &train.x());
    let train_lines = train.lines();
    let rows = train_en.len() / dim;
    assert!(train_lines.iter().all(|&l| l < rows), "ridge: a train line has no teacher embedding");
    let normal =
        normal_equations(&x, n, dim, |s| &train_en[train_lines[s] * dim..(train_lines[s] + 1) * dim]);
    progress(&format!(
        "ridge: {} train pairs, {} features/sentence, XᵀX and XᵀY in {:.1}s",
        x.len(),
        x.ids.len() / x.len().max(1),
        start.elapsed().as_secs_f64()
    ));
    let val_x = SparseRows::of_texts(&tok, &val.x());
    let val_docs = select_rows(val_en, dim, &val.lines());
    let targets: Vec<usize> = (0..val_x.len()).collect();
    let mut best: Option<(RidgeStudent, f64, f64)> = None;
    let mut val_r1_by_lambda = Vec::with_capacity(config.lambdas.len());
    for &lambda in &config.lambdas {
        let t = Instant::now();
        let weights =
            normal.solve(f64::from(lambda)).expect("XᵀX + lambda I is positive definite for lambda > 0");
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
    let (student, _, _) = best.expect("the grid is not empty");
    RidgeFit { student, val_r1_by_lambda }
}

/// Test retrieval of a fitted student: X -> en ranks the teacher's English embeddings
/// (`test_en`, `[lines, dim]` by line) for each ridge(X) query; en -> X the reverse.
///
/// # Panics
/// If a pair's line has no row in `test_en`.
pub fn evaluate(student: &RidgeStudent, test: &Bitext, test_en: &[f32]) -> BothDirections {
    let x = student.embed(&test.x());
    let en = select_rows(test_en, student.dim, &test.lines());
    both_directions(&x, &en, student.dim)
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
/// distinct) to `targets(s)` (`dim` values each).
///
/// `P` is the top `rank` principal directions of the fitted values `X W` and `E = W Pᵀ`, so
/// `X E P` is the projection of `X W` onto them (Izenman 1975). Why: the learned student is a bag
/// of `[buckets, rank]` embeddings followed by a projection to `dim`; started from this map it
/// starts where the closed-form ridge student ends, at its own size (on Multi30k ay, 8192 buckets,
/// rank 128: val X -> en R@1 0.887, against 0.90 for the full-rank 8192 x 384 map).
///
/// # Panics
/// If `rank` is 0 or above `dim`, if `lambda` is not finite and > 0, or if an id is `>= buckets`.
pub fn fit_low_rank<'a>(
    rows: Vec<Vec<(u32, f32)>>,
    buckets: usize,
    targets: impl Fn(usize) -> &'a [f32] + Sync,
    dim: usize,
    lambda: f64,
    rank: usize,
) -> LowRankMap {
    assert!((1..=dim).contains(&rank), "low-rank fit: rank {rank} not in 1..={dim}");
    assert!(lambda.is_finite() && lambda > 0.0, "low-rank fit: lambda {lambda} must be finite and > 0");
    let x = SparseRows::from_rows(rows);
    let w = normal_equations(&x, buckets, dim, targets)
        .solve(lambda)
        .expect("XᵀX + lambda I is positive definite for lambda > 0");
    // (X W)ᵀ (X W): partial sums over fixed blocks of rows, added in block order, so the result
    // (and the student it initialises) is the same on every run whatever the thread count.
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
    let mut fitted_gram = vec![0.0f64; dim * dim];
    for partial in &partials {
        fitted_gram.iter_mut().zip(partial).for_each(|(g, p)| *g += p);
    }
    let mut symmetric = fitted_gram;
    for i in 0..dim {
        for j in 0..i {
            symmetric[j * dim + i] = symmetric[i * dim + j];
        }
    }
    let (values, vectors) = symmetric_eigen(symmetric, dim);
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
    LowRankMap { embeddings, projection: projection.iter().map(|&v| v as f32).collect(), rank, dim }
}

/// Eigen-decomposition of the symmetric `n x n` row-major `a` by cyclic Jacobi rotations:
/// `(values, vectors)` with eigenvector `k` in column `k` of the row-major `vectors`. Exact to
/// rounding and simple; meant for the `dim x dim` (384) matrices of [`fit_low_rank`].
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..64 {
        let off: f64 =
            (0..n).map(|i| (0..n).filter(|&j| j != i).map(|j| a[i * n + j].powi(2)).sum::<f64>()).sum();
        if off <= 1e-24 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.5.1).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + theta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Lang, Pair, Split};
    use crate::rng::SplitMix64;

    /// A random `n x n` SPD matrix `M Mᵀ + 0.1 n I` (full, row-major).
    fn spd(n: usize, rng: &mut SplitMix64) -> Vec<f64> {
        let m: Vec<f64> = (0..n * n).map(|_| rng.next_f64() - 0.5).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|p| m[i * n + p] * m[j * n + p]).sum::<f64>();
            }
            a[i * n + i] += n as f64 * 0.1;
        }
        a
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        let mut rng = SplitMix64::new(1, "ridge-cholesky");
        // Sizes that are not multiples of the block, micro-tile or chunk sizes.
        for (n, k, block) in [(37, 5, 8), (70, 11, 16), (9, 3, BLOCK), (300, 70, 32)] {
            let a = spd(n, &mut rng);
            let x: Vec<f64> = (0..k * n).map(|_| rng.next_f64() * 2.0 - 1.0).collect(); // [k, n]
            let mut b: Vec<f64> =
                (0..k * n).map(|t| (0..n).map(|j| a[(t % n) * n + j] * x[(t / n) * n + j]).sum()).collect();
            let mut l = a.clone();
            // Garbage in the upper triangle must not matter.
            for i in 0..n {
                for j in i + 1..n {
                    l[i * n + j] = f64::NAN;
                }
            }
            cholesky(&mut l, n, block).unwrap();
            for i in 0..n {
                for j in 0..=i {
                    let llt: f64 = (0..=j).map(|p| l[i * n + p] * l[j * n + p]).sum();
                    assert!((llt - a[i * n + j]).abs() < 1e-9, "L Lᵀ differs from A at ({i}, {j})");
                }
            }
            solve_lower(&l, n, &mut b, block);
            solve_upper(&l, n, &mut b, block);
            for (got, want) in b.iter().zip(&x) {
                assert!((got - want).abs() < 1e-9, "n {n}: got {got}, want {want}");
            }
        }
    }

    #[test]
    fn cholesky_rejects_an_indefinite_matrix() {
        let mut a = vec![1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(cholesky(&mut a, 3, 2), Err(NotPositiveDefinite { index: 1 }));
    }

    #[test]
    fn normal_equations_recover_a_known_map() {
        // Random sparse rows over 48 buckets, targets from a known map: with a tiny lambda the
        // ridge solution is the map.
        let (n, dim, rows) = (48, 6, 400);
        let mut rng = SplitMix64::new(2, "ridge-map");
        let truth: Vec<f32> = rng.normal_vec(n * dim, 1.0);
        let x = SparseRows::from_rows(
            (0..rows)
                .map(|_| {
                    let mut ids: Vec<u32> = (0..8).map(|_| rng.below(n) as u32).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids.into_iter().map(|id| (id, rng.next_f64() as f32 + 0.1)).collect()
                })
                .collect(),
        );
        let y: Vec<f32> = (0..rows)
            .flat_map(|s| {
                let (ids, vals) = x.row(s);
                (0..dim)
                    .map(|d| {
                        ids.iter().zip(vals).map(|(&i, &v)| v * truth[i as usize * dim + d]).sum::<f32>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let normal = normal_equations(&x, n, dim, |s| &y[s * dim..(s + 1) * dim]);
        let w = normal.solve(1e-6).unwrap();
        for (got, want) in w.iter().zip(&truth) {
            assert!((got - want).abs() < 1e-3, "got {got}, want {want}");
        }
        // A large lambda shrinks it.
        let shrunk = normal.solve(1e3).unwrap();
        let norm = |w: &[f32]| w.iter().map(|v| v * v).sum::<f32>();
        assert!(norm(&shrunk) < 0.5 * norm(&truth));
    }

    #[test]
    fn symmetric_eigen_diagonalises() {
        let n = 12;
        let a = spd(n, &mut SplitMix64::new(4, "eigen"));
        let (values, vectors) = symmetric_eigen(a.clone(), n);
        for k in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * vectors[j * n + k]).sum();
                assert!((av - values[k] * vectors[i * n + k]).abs() < 1e-8, "A v != lambda v at ({i}, {k})");
            }
            for l in 0..n {
                let dot: f64 = (0..n).map(|i| vectors[i * n + k] * vectors[i * n + l]).sum();
                assert!((dot - f64::from(u8::from(k == l))).abs() < 1e-10, "V not orthonormal at ({k}, {l})");
            }
        }
    }

    #[test]
    fn low_rank_fit_recovers_a_low_rank_map_and_truncates_a_full_one() {
        let (n, dim, rows) = (40, 6, 500);
        let mut rng = SplitMix64::new(3, "low-rank");
        let x: Vec<Vec<(u32, f32)>> = (0..rows)
            .map(|_| {
                let mut ids: Vec<u32> = (0..8).map(|_| rng.below(n) as u32).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter().map(|id| (id, rng.next_f64() as f32 + 0.1)).collect()
            })
            .collect();
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
        let fit = fit_low_rank(x.clone(), n, |s| &y[s * dim..(s + 1) * dim], dim, 1e-6, 2);
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
            let fit = fit_low_rank(x.clone(), n, |s| &y[s * dim..(s + 1) * dim], dim, 1e-6, rank);
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
            lang: Lang::Cs,
            pairs: texts
                .iter()
                .enumerate()
                .map(|(line, x)| Pair { line, en: String::new(), x: x.clone() })
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
    ) -> (Vec<String>, Vec<f32>) {
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
        (texts, en)
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
            &bitext(Split::Val, &val),
            &val_en,
            dim,
            |_| messages += 1,
        );
        assert!(messages >= 2);
        assert_eq!(f.student.parameters(), 1024 * dim);
        let test_refs: Vec<&str> = test.iter().map(String::as_str).collect();
        let pred = f.student.embed(&test_refs);
        let mean_cos = pred
            .chunks(dim)
            .zip(test_en.chunks(dim))
            .map(|(p, t)| p.iter().zip(t).map(|(a, b)| a * b).sum::<f32>())
            .sum::<f32>()
            / test.len() as f32;
        assert!(mean_cos > 0.9, "mean test cosine {mean_cos}");
        let r = evaluate(&f.student, &bitext(Split::Test2016Flickr, &test), &test_en);
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
        let (train_bitext, val_bitext) = (bitext(Split::Train, &train), bitext(Split::Val, &val));
        let fit_with = |c: &RidgeConfig| fit(c, &train_bitext, &train_en, &val_bitext, &val_en, dim, |_| {});
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

    /// Multi30k and the teacher's English embeddings of train, val and test (through the cache).
    struct Multi30kEnglish {
        data: crate::data::Multi30k,
        train: Vec<f32>,
        val: Vec<f32>,
        test: Vec<f32>,
        dim: usize,
    }

    fn multi30k_english() -> anyhow::Result<Multi30kEnglish> {
        use crate::data::{Multi30k, resolve_data_dir};
        use crate::paths::{
            CACHE_ENV, DEFAULT_CACHE, DEFAULT_TEACHER, TEACHER_ENV, resolve_dir, workspace_root,
        };
        use crate::teacher::Teacher;
        use crate::teacher::cache::TeacherCache;

        let data = Multi30k::open(resolve_data_dir(None)?)?;
        let teacher_dir = resolve_dir(None, TEACHER_ENV, DEFAULT_TEACHER)
            .map_err(|tried| anyhow::anyhow!("teacher not found (tried {tried:?})"))?;
        let teacher = Teacher::load(&teacher_dir)?;
        let cache_dir = std::env::var_os(CACHE_ENV)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(DEFAULT_CACHE));
        let cache = TeacherCache::new(cache_dir, &teacher)?;
        let english = |split: Split| -> anyhow::Result<Vec<f32>> {
            let captions = data.captions(split, Lang::En)?;
            Ok(cache
                .load_or_encode(&teacher, &format!("{split}.en"), &captions, false, 64, |_| {})?
                .0
                .embeddings)
        };
        let (train, val, test) =
            (english(Split::Train)?, english(Split::Val)?, english(Split::Test2016Flickr)?);
        Ok(Multi30kEnglish { data, train, val, test, dim: teacher.dim() })
    }

    /// The real numbers: fits on Multi30k train, picks lambda on val, reports test R@1 for ay
    /// and cs (the English captions are encoded through the teacher cache on the first run).
    /// `cargo test --release -p otkd-host --lib ridge::tests::multi30k -- --ignored --nocapture`
    #[test]
    #[ignore = "needs Multi30k and the teacher model; minutes on the first run"]
    fn multi30k_ay_cs() -> anyhow::Result<()> {
        let Multi30kEnglish { data, train: train_en, val: val_en, test: test_en, dim } = multi30k_english()?;
        for lang in [Lang::Ay, Lang::Cs] {
            let start = Instant::now();
            let f = fit(
                &RidgeConfig::default(),
                &data.bitext(Split::Train, lang)?,
                &train_en,
                &data.bitext(Split::Val, lang)?,
                &val_en,
                dim,
                |m| eprintln!("{lang}: {m}"),
            );
            let seconds = start.elapsed().as_secs_f64();
            let r = evaluate(&f.student, &data.bitext(Split::Test2016Flickr, lang)?, &test_en);
            println!(
                "{lang}: lambda {} ({} parameters, fit {seconds:.1}s): test X->en R@1 {:.4} MRR {:.4}, \
                 en->X R@1 {:.4} MRR {:.4} over {} pairs",
                f.student.lambda,
                f.student.parameters(),
                r.x_to_en.r1,
                r.x_to_en.mrr,
                r.en_to_x.r1,
                r.en_to_x.mrr,
                r.x_to_en.queries
            );
            assert!(r.x_to_en.r1 > 0.8, "{lang}: test X->en R@1 {}", r.x_to_en.r1);
        }
        Ok(())
    }

    /// What limits a linear student of hashed n-grams on Multi30k: val X -> en R@1 of the ridge
    /// fit (sqrt-count features, lambda 0.1) as the training pairs grow (a seeded subset) and as
    /// the rank of the map falls to the widths a small encoder can afford.
    /// `LANGS=ay,cs BUCKETS=8192 cargo test --release -p otkd-host --lib ridge::tests::multi30k_limits -- --ignored --nocapture`
    #[test]
    #[ignore = "needs Multi30k and the teacher model; minutes"]
    fn multi30k_limits() -> anyhow::Result<()> {
        let english = multi30k_english()?;
        let dim = english.dim;
        let buckets: u32 = std::env::var("BUCKETS").map_or(Ok(8192), |b| b.parse())?;
        let tok = TokenizerConfig { buckets, ..TokenizerConfig::DEFAULT };
        let langs = std::env::var("LANGS").unwrap_or_else(|_| "ay".into());
        for lang in langs.split(',') {
            let lang: Lang = lang.parse().map_err(anyhow::Error::msg)?;
            let (train, val) =
                (english.data.bitext(Split::Train, lang)?, english.data.bitext(Split::Val, lang)?);
            let val_x = SparseRows::of_texts(&tok, &val.x());
            let val_docs = select_rows(&english.val, dim, &val.lines());
            let targets: Vec<usize> = (0..val_x.len()).collect();
            let val_r1 = |w: Vec<f32>| -> f64 {
                let student = RidgeStudent { tokenizer: tok, lambda: 0.1, weights: w, dim };
                let mut queries = vec![0.0f32; val_x.len() * dim];
                queries.par_chunks_mut(dim).enumerate().for_each(|(s, row)| {
                    let (ids, vals) = val_x.row(s);
                    let f: Vec<(u32, f32)> = ids.iter().copied().zip(vals.iter().copied()).collect();
                    student.embed_features(&f, row);
                });
                metrics_from_ranks(&ranks(&queries, &val_docs, dim, &targets)).r1
            };
            let (texts, lines) = (train.x(), train.lines());
            let mut order: Vec<usize> = (0..texts.len()).collect();
            SplitMix64::new(0, "pairs").shuffle(&mut order);
            for pairs in [texts.len() / 8, texts.len() / 4, texts.len() / 2, texts.len()] {
                let subset = &order[..pairs];
                let rows: Vec<Vec<(u32, f32)>> =
                    subset.par_iter().map(|&i| sentence_features(&tok, texts[i])).collect();
                let x = SparseRows::from_rows(rows.clone());
                let y = |s: usize| &english.train[lines[subset[s]] * dim..(lines[subset[s]] + 1) * dim];
                let full = val_r1(normal_equations(&x, buckets as usize, dim, y).solve(0.1).unwrap());
                println!("{lang} {buckets} buckets, {pairs} pairs: full rank val R@1 {full:.4}");
                if pairs == texts.len() {
                    for rank in [64, 96, 128, 192] {
                        let map = fit_low_rank(rows.clone(), buckets as usize, y, dim, 0.1, rank);
                        let w: Vec<f32> = map
                            .embeddings
                            .par_chunks(rank)
                            .flat_map_iter(|e| {
                                let p = &map.projection;
                                (0..dim).map(move |d| (0..rank).map(|k| e[k] * p[k * dim + d]).sum::<f32>())
                            })
                            .collect();
                        println!(
                            "{lang} {buckets} buckets, {pairs} pairs: rank {rank} val R@1 {:.4}",
                            val_r1(w)
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
