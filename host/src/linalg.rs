//! Dense linear algebra: in f64 for the ridge fits, a Cholesky solve and a symmetric
//! eigensolver on `faer` (sequential, so results do not depend on the thread count); in f32 for
//! the hand-written training pass and the OT term, [`matmul`] over slices through `gemm` (the
//! kernel behind candle's CPU matmul).

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::evd;
use faer::{Mat, MatMut, MatRef, Par};
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
///
/// faer's Cholesky factorisation and triangular solves, sequential ([`Par::Seq`]): the same bits
/// on every run and for any number of threads. Measured against the hand-written blocked
/// Cholesky it replaced, on a ridge-shaped system (4096 x 4096, 384 right-hand sides, 2 cores):
/// 0.9 instead of 1.6-1.8 CPU-seconds, solutions within 3e-16, and no f32 weight changed.
pub fn solve_spd(a: &mut [f64], n: usize, rhs_t: &mut [f64]) -> Result<(), NotPositiveDefinite> {
    assert_eq!(a.len(), n * n, "solve_spd: a is not n x n");
    assert!(n > 0 && rhs_t.len().is_multiple_of(n), "solve_spd: rhs_t is not [k, n]");
    let k = rhs_t.len() / n;
    // A row-major view of the buffer: faer reads and overwrites its lower triangle in place.
    let mut factor = MatMut::from_row_major_slice_mut(a, n, n);
    let par = Par::Seq;
    let mut scratch =
        MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(n, par, Default::default()));
    llt::factor::cholesky_in_place(
        factor.as_mut(),
        Default::default(),
        par,
        MemStack::new(&mut scratch),
        Default::default(),
    )
    .map_err(|llt::factor::LltError::NonPositivePivot { index }| NotPositiveDefinite { index })?;
    let solution = MatMut::from_column_major_slice_mut(rhs_t, n, k);
    let mut scratch = MemBuffer::new(llt::solve::solve_in_place_scratch::<f64>(n, k, par));
    llt::solve::solve_in_place(factor.as_ref(), solution, par, MemStack::new(&mut scratch));
    Ok(())
}

/// The eigensolver did not converge.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("the symmetric eigensolver did not converge")]
pub struct NoConvergence;

/// Eigen-decomposition of the symmetric `n x n` row-major `a` (its lower triangle is read):
/// `(values, vectors)` with eigenvector `k` in column `k` of the row-major `vectors`, values in
/// ascending order. faer's self-adjoint eigensolver, sequential ([`Par::Seq`]) so that its bits
/// do not depend on the number of threads (its parallel mode's do): for the 384 x 384 matrix of
/// the reduced-rank ridge fit, 0.01-0.03 s instead of 1.7-2.9 s for the Jacobi rotations it
/// replaced, eigenvalues within 8e-15 of the largest.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>), NoConvergence> {
    assert_eq!(a.len(), n * n, "symmetric_eigen: a is not n x n");
    let matrix = MatRef::from_row_major_slice(a, n, n);
    let mut values = Diag::<f64>::zeros(n);
    let mut vectors = Mat::<f64>::zeros(n, n);
    let par = Par::Seq;
    let mut scratch = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        n,
        evd::ComputeEigenvectors::Yes,
        par,
        Default::default(),
    ));
    evd::self_adjoint_evd(
        matrix,
        values.as_mut(),
        Some(vectors.as_mut()),
        par,
        MemStack::new(&mut scratch),
        Default::default(),
    )
    .map_err(|_| NoConvergence)?;
    let values = (0..n).map(|i| values[i]).collect();
    let vectors = (0..n * n).map(|ik| vectors[(ik / n, ik % n)]).collect();
    Ok((values, vectors))
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
    fn solve_spd_solves_a_known_system() {
        let mut rng = SplitMix64::new(1, "ridge-cholesky");
        for (n, k) in [(37, 5), (70, 11), (9, 3), (300, 70)] {
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
            solve_spd(&mut l, n, &mut b).unwrap();
            for (got, want) in b.iter().zip(&x) {
                assert!((got - want).abs() < 1e-9, "n {n}: got {got}, want {want}");
            }
        }
    }

    #[test]
    fn solve_spd_rejects_an_indefinite_matrix() {
        let mut a = vec![1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let mut b = vec![1.0, 1.0, 1.0];
        assert_eq!(solve_spd(&mut a, 3, &mut b), Err(NotPositiveDefinite { index: 1 }));
    }

    #[test]
    fn results_do_not_change_between_runs() {
        let n = 64;
        let a = spd(n, &mut SplitMix64::new(5, "repeat"));
        let solve = || {
            let (mut l, mut b) = (a.clone(), (0..n).map(|i| i as f64).collect::<Vec<_>>());
            solve_spd(&mut l, n, &mut b).unwrap();
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(solve(), solve());
        let eigen = || symmetric_eigen(&a, n).unwrap().0.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(eigen(), eigen());
    }

    #[test]
    fn symmetric_eigen_diagonalises() {
        let n = 12;
        let a = spd(n, &mut SplitMix64::new(4, "eigen"));
        let (values, vectors) = symmetric_eigen(&a, n).unwrap();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "ascending: {values:?}");
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
