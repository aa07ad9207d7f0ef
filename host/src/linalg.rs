//! Dense linear algebra: in f64 for the ridge fits, a blocked, rayon-parallel Cholesky
//! factorisation and triangular solves (an AVX2+FMA micro-kernel where the CPU has one) and a
//! Jacobi eigensolver for symmetric matrices; in f32 for the hand-written training pass and the
//! OT term, [`matmul`] over slices through `gemm` (the kernel behind candle's CPU matmul).

use rayon::prelude::*;

/// Transpose of a row-major `rows x cols` matrix.
pub fn transpose<T: Copy + Default + Send + Sync>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::default(); rows * cols];
    t.par_chunks_mut(rows.max(1)).enumerate().for_each(|(j, out)| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = a[i * cols + j];
        }
    });
    t
}

/// The matrix is not (numerically) symmetric positive definite: pivot `index` was not > 0.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("matrix is not positive definite (pivot {index} is not > 0)")]
pub struct NotPositiveDefinite {
    /// The first pivot that was not > 0.
    pub index: usize,
}

/// Solves `A X = B` for a symmetric positive definite `n x n` row-major `a` (only its lower
/// triangle is read; it is overwritten by its Cholesky factor) and `k` right-hand sides given
/// transposed, `rhs_t` = `Bᵀ` (`[k, n]`), which is overwritten by `Xᵀ`.
pub fn solve_spd(a: &mut [f64], n: usize, rhs_t: &mut [f64]) -> Result<(), NotPositiveDefinite> {
    cholesky(a, n, BLOCK)?;
    solve_lower(a, n, rhs_t, BLOCK);
    solve_upper(a, n, rhs_t, BLOCK);
    Ok(())
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

/// Eigen-decomposition of the symmetric `n x n` row-major `a` by cyclic Jacobi rotations:
/// `(values, vectors)` with eigenvector `k` in column `k` of the row-major `vectors`. Exact to
/// rounding and simple; meant for the `dim x dim` (384) matrices of the reduced-rank ridge fit.
pub fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
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

/// `c[m×n] (+)= op(a) · op(b)`, all row-major: `a` is `m×k` (or `k×m` when `ta`), `b` is `k×n`
/// (or `n×k` when `tb`).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    m: usize,
    k: usize,
    n: usize,
    add: bool,
) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "matmul shapes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !add {
            c[..m * n].iter_mut().for_each(|v| *v = 0.0);
        }
        return;
    }
    let (a_cs, a_rs) = if ta { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if tb { (k as isize, 1) } else { (1, n as isize) };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index the strides reach inside the slices; `c` does not
    // alias `a` or `b` (a `&mut` and two `&`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            add,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
