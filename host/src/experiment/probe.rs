//! The multimodal probe: a ridge map from the teacher's sentence space to ImageNet ResNet-50
//! image features, fitted once on half of the test images (the teacher's embeddings of their
//! English captions as inputs) and applied to every student's X embeddings of the captions of
//! the other half, which then retrieve their image among that half's images (X -> image R@1/5/10).
//! The halves are swapped and the two results averaged. Every student is read through the same
//! two maps, so the probe compares students; it is a probe (1000 images, ImageNet features, a
//! linear map), not an image-retrieval benchmark.
//!
//! The map is centred: the fitting half's mean image feature is subtracted from the targets and
//! from the documents, so cosine scores compare deviations from the mean image. Its ridge penalty
//! is chosen inside the fitting half (two folds of 250 images, English captions as queries),
//! never on the half it is evaluated on.

use serde::{Deserialize, Serialize};

use crate::eval::metrics::{metrics_from_ranks, ranks};
use crate::linalg::solve_spd;

/// Ridge penalties tried inside the fitting half.
pub const PROBE_LAMBDAS: [f64; 5] = [0.01, 0.1, 1.0, 10.0, 100.0];

/// X -> image retrieval through the probe, averaged over the two halves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeMetrics {
    /// Recall at 1.
    pub r1: f64,
    /// Recall at 5.
    pub r5: f64,
    /// Recall at 10.
    pub r10: f64,
    /// Queries over both halves.
    pub queries: usize,
}

/// One fitted half: a map `W` (`[in_dim, out_dim]`) and the fitting half's mean image.
#[derive(Clone, Debug)]
struct HalfMap {
    w: Vec<f32>,
    mean: Vec<f32>,
    lambda: f64,
}

/// The two maps of the probe and the images they are evaluated on.
#[derive(Clone, Debug)]
pub struct ImageProbe {
    in_dim: usize,
    out_dim: usize,
    /// Image features, row = test line.
    images: Vec<f32>,
    /// Lines of the two halves.
    halves: [Vec<usize>; 2],
    /// `maps[h]` was fitted on half `h` and is evaluated on half `1 - h`.
    maps: [HalfMap; 2],
}

impl ImageProbe {
    /// Fits the probe: `teacher_en` holds the teacher's embeddings of the English captions, one
    /// row of `in_dim` per test line, and `images` the image features, one row of `out_dim` per
    /// line. The first half of the lines is one half, the rest the other.
    ///
    /// # Panics
    /// If the row counts differ or there are fewer than 8 lines.
    pub fn fit(teacher_en: &[f32], in_dim: usize, images: &[f32], out_dim: usize) -> anyhow::Result<Self> {
        let n = teacher_en.len() / in_dim;
        assert_eq!(images.len() / out_dim, n, "probe: {n} captions, {} images", images.len() / out_dim);
        assert!(n >= 8, "probe: {n} images are too few");
        let halves = [(0..n / 2).collect::<Vec<_>>(), (n / 2..n).collect::<Vec<_>>()];
        let fit_half = |lines: &[usize]| -> anyhow::Result<HalfMap> {
            // Penalty: two folds inside this half, English captions retrieving their images.
            let (a, b) = lines.split_at(lines.len() / 2);
            let mut best = (f64::NEG_INFINITY, PROBE_LAMBDAS[0]);
            for &lambda in &PROBE_LAMBDAS {
                let mut r1 = 0.0;
                for (fit, eval) in [(a, b), (b, a)] {
                    let map = fit_map(teacher_en, in_dim, images, out_dim, fit, lambda)?;
                    let q: Vec<f32> = eval
                        .iter()
                        .flat_map(|&l| teacher_en[l * in_dim..(l + 1) * in_dim].to_vec())
                        .collect();
                    r1 += retrieve(
                        &map,
                        &q,
                        in_dim,
                        images,
                        out_dim,
                        eval,
                        &(0..eval.len()).collect::<Vec<_>>(),
                    )
                    .r1;
                }
                if r1 > best.0 {
                    best = (r1, lambda);
                }
            }
            fit_map(teacher_en, in_dim, images, out_dim, lines, best.1)
        };
        let maps = [fit_half(&halves[0])?, fit_half(&halves[1])?];
        Ok(Self { in_dim, out_dim, images: images.to_vec(), halves, maps })
    }

    /// The ridge penalties chosen for the two halves.
    pub fn lambdas(&self) -> [f64; 2] {
        [self.maps[0].lambda, self.maps[1].lambda]
    }

    /// X -> image retrieval of `x` (`[queries, in_dim]`, a student's embeddings of test captions)
    /// whose captions are test lines `lines`: each query is mapped with the map fitted on the
    /// other half and ranks its image among the images of its own half; averaged over halves
    /// (weighted by queries).
    pub fn evaluate(&self, x: &[f32], lines: &[usize]) -> ProbeMetrics {
        assert_eq!(
            x.len(),
            lines.len() * self.in_dim,
            "probe: {} queries, {} lines",
            x.len() / self.in_dim,
            lines.len()
        );
        let mut all_ranks = Vec::with_capacity(lines.len());
        for h in 0..2 {
            let (eval, map) = (&self.halves[1 - h], &self.maps[h]);
            let position = |line: usize| eval.iter().position(|&l| l == line);
            let (mut q, mut targets) = (Vec::new(), Vec::new());
            for (k, &line) in lines.iter().enumerate() {
                if let Some(t) = position(line) {
                    q.extend_from_slice(&x[k * self.in_dim..(k + 1) * self.in_dim]);
                    targets.push(t);
                }
            }
            all_ranks.extend(ranks_for(map, &q, self.in_dim, &self.images, self.out_dim, eval, &targets));
        }
        let m = metrics_from_ranks(&all_ranks);
        ProbeMetrics { r1: m.r1, r5: m.r5, r10: m.r10, queries: m.queries }
    }
}

/// Centred ridge map fitted on `lines`: `(XᵀX + lambda I) W = Xᵀ(Y − mean)`.
fn fit_map(
    x: &[f32],
    in_dim: usize,
    y: &[f32],
    out_dim: usize,
    lines: &[usize],
    lambda: f64,
) -> anyhow::Result<HalfMap> {
    let mut mean = vec![0f64; out_dim];
    for &l in lines {
        mean.iter_mut().zip(&y[l * out_dim..(l + 1) * out_dim]).for_each(|(m, &v)| *m += f64::from(v));
    }
    mean.iter_mut().for_each(|m| *m /= lines.len() as f64);
    let mut a = vec![0f64; in_dim * in_dim];
    // Right-hand sides transposed: rhs_t[o][i] = Σ_l x[l][i] (y[l][o] − mean[o]).
    let mut rhs_t = vec![0f64; out_dim * in_dim];
    for &l in lines {
        let xr = &x[l * in_dim..(l + 1) * in_dim];
        let yr = &y[l * out_dim..(l + 1) * out_dim];
        for i in 0..in_dim {
            let xi = f64::from(xr[i]);
            for j in 0..=i {
                a[i * in_dim + j] += xi * f64::from(xr[j]);
            }
        }
        for (o, &yv) in yr.iter().enumerate() {
            let c = f64::from(yv) - mean[o];
            let row = &mut rhs_t[o * in_dim..(o + 1) * in_dim];
            row.iter_mut().zip(xr).for_each(|(r, &xi)| *r += f64::from(xi) * c);
        }
    }
    for i in 0..in_dim {
        a[i * in_dim + i] += lambda;
    }
    solve_spd(&mut a, in_dim, &mut rhs_t).map_err(|e| anyhow::anyhow!("image probe ridge fit: {e}"))?;
    // W[i][o] = rhs_t[o][i].
    let w = crate::linalg::transpose(&rhs_t, out_dim, in_dim).into_iter().map(|v| v as f32).collect();
    Ok(HalfMap { w, mean: mean.into_iter().map(|m| m as f32).collect(), lambda })
}

/// 1-based ranks of `targets` (positions in `docs_lines`) for queries `q` mapped through `map`,
/// against the centred images of `docs_lines`.
fn ranks_for(
    map: &HalfMap,
    q: &[f32],
    in_dim: usize,
    images: &[f32],
    out_dim: usize,
    docs_lines: &[usize],
    targets: &[usize],
) -> Vec<usize> {
    if targets.is_empty() {
        return Vec::new();
    }
    let nq = q.len() / in_dim;
    let mut mapped = vec![0f32; nq * out_dim];
    for (k, row) in mapped.chunks_exact_mut(out_dim).enumerate() {
        for (i, &qi) in q[k * in_dim..(k + 1) * in_dim].iter().enumerate() {
            if qi != 0.0 {
                row.iter_mut().zip(&map.w[i * out_dim..(i + 1) * out_dim]).for_each(|(r, &w)| *r += qi * w);
            }
        }
    }
    let docs: Vec<f32> = docs_lines
        .iter()
        .flat_map(|&l| images[l * out_dim..(l + 1) * out_dim].iter().zip(&map.mean).map(|(v, m)| v - m))
        .collect();
    ranks(&mapped, &docs, out_dim, targets)
}

fn retrieve(
    map: &HalfMap,
    q: &[f32],
    in_dim: usize,
    images: &[f32],
    out_dim: usize,
    docs_lines: &[usize],
    targets: &[usize],
) -> crate::eval::metrics::RetrievalMetrics {
    metrics_from_ranks(&ranks_for(map, q, in_dim, images, out_dim, docs_lines, targets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn a_linear_world_is_retrieved_and_noise_is_not() {
        // Images are an exact linear function of 8-d caption vectors (plus an offset the centring
        // removes): the probe maps the captions to their images and finds nearly all of them.
        // Queries of pure noise land near chance (R@1 about 1/20 per half).
        let (n, d, o) = (40, 8, 12);
        let x = SplitMix64::new(1, "x").normal_vec(n * d, 1.0);
        let a = SplitMix64::new(2, "a").normal_vec(d * o, 1.0);
        let mut y = vec![0f32; n * o];
        for l in 0..n {
            for j in 0..o {
                y[l * o + j] = 5.0 + (0..d).map(|i| x[l * d + i] * a[i * o + j]).sum::<f32>();
            }
        }
        let probe = ImageProbe::fit(&x, d, &y, o).unwrap();
        let lines: Vec<usize> = (0..n).collect();
        let good = probe.evaluate(&x, &lines);
        assert_eq!(good.queries, n);
        assert!(good.r1 > 0.9, "{good:?}");
        let noise = SplitMix64::new(3, "noise").normal_vec(n * d, 1.0);
        let bad = probe.evaluate(&noise, &lines);
        assert!(bad.r1 < 0.4, "{bad:?}");
        // A missing line (a skipped pair) is simply not a query.
        let some = probe.evaluate(&x[d..], &lines[1..]);
        assert_eq!(some.queries, n - 1);
    }
}
