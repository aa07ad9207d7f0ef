//! A narrower retrieval space: the top principal directions of the teacher's sentence embeddings.
//!
//! A student whose output is narrower than the teacher (the `nano` preset: 128 of 384) is
//! distilled into, and its index stores documents in, the teacher's space projected by a PCA
//! basis fitted on the teacher's embeddings of the training split's English captions:
//! `normalise(B (e - m))` for a teacher embedding `e`, the mean `m` of the fitted embeddings and
//! the `k x teacher_dim` basis `B` (orthonormal rows, the top `k` eigenvectors of their
//! covariance). Queries never see it: the student outputs the projected space directly, and
//! documents are stored already projected, so the centring and the projection cost a device
//! nothing. Why: an index row costs `k + 8` bytes, so 1,000 documents take 136 KB at `k = 128`
//! instead of 392 KB (README, "The nano preset", has the R@1 it costs).
//!
//! The projection of a run lives in its run directory
//! ([`crate::distill::run_dir::RunDir::projection`]); every teacher embedding that meets the
//! student (training targets, dev and test documents, CSLS references, an exported index) goes
//! through [`Projection::embeddings`].

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::distill::checkpoint::{self, CheckpointError};
use crate::linalg::{NoConvergence, symmetric_eigen};
use crate::rng::Fnv64;
use crate::teacher::TeacherOutputs;

/// Embeddings summed per task when the covariance is accumulated (fixed blocks added in order,
/// so the basis is the same whatever the thread count).
const ROWS_PER_TASK: usize = 2048;

/// Why a projection cannot be fitted.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProjectionError {
    /// The projection would not be narrower than the teacher, or is empty.
    #[error("a projection to {dim} of {teacher_dim} dimensions (needs 1 <= dim < teacher_dim)")]
    BadWidth {
        /// Width asked for.
        dim: usize,
        /// The teacher's width.
        teacher_dim: usize,
    },
    /// Fewer embeddings than the width asked for.
    #[error("{rows} teacher embeddings cannot fit a projection to {dim} dimensions")]
    TooFewRows {
        /// Embeddings given.
        rows: usize,
        /// Width asked for.
        dim: usize,
    },
    /// The eigensolver failed.
    #[error(transparent)]
    Eigen(#[from] NoConvergence),
}

/// A PCA projection of the teacher's space (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// The teacher's width.
    pub teacher_dim: usize,
    /// The projected width (the student's `out_dim`).
    pub dim: usize,
    /// Mean of the fitted embeddings, `teacher_dim` values.
    pub mean: Vec<f32>,
    /// `[dim, teacher_dim]` row-major, orthonormal rows, by decreasing variance.
    pub basis: Vec<f32>,
    /// Share of the fitted embeddings' variance the basis keeps.
    pub explained: f64,
}

/// What the projection file records beside its two tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ProjectionState {
    teacher_dim: usize,
    dim: usize,
    explained: f64,
}

impl Projection {
    /// The top `dim` principal directions of `embeddings` (`[rows, teacher_dim]` row-major),
    /// each with the sign that makes its largest component positive.
    pub fn fit(embeddings: &[f32], teacher_dim: usize, dim: usize) -> Result<Self, ProjectionError> {
        use rayon::prelude::*;
        if dim == 0 || dim >= teacher_dim {
            return Err(ProjectionError::BadWidth { dim, teacher_dim });
        }
        let rows = embeddings.len() / teacher_dim;
        if rows <= dim {
            return Err(ProjectionError::TooFewRows { rows, dim });
        }
        let d = teacher_dim;
        let mut mean = vec![0f64; d];
        for row in embeddings.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v));
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let partials: Vec<Vec<f64>> = embeddings
            .par_chunks(ROWS_PER_TASK * d)
            .map(|block| {
                let mut scatter = vec![0f64; d * d];
                let mut centred = vec![0f64; d];
                for row in block.chunks_exact(d) {
                    centred.iter_mut().zip(row).zip(&mean).for_each(|((c, &v), m)| *c = f64::from(v) - m);
                    for (i, &ci) in centred.iter().enumerate() {
                        for (s, &cj) in scatter[i * d..=i * d + i].iter_mut().zip(&centred) {
                            *s += ci * cj;
                        }
                    }
                }
                scatter
            })
            .collect();
        let mut covariance = vec![0f64; d * d];
        for partial in &partials {
            covariance.iter_mut().zip(partial).for_each(|(c, p)| *c += p);
        }
        for i in 0..d {
            for j in 0..i {
                covariance[j * d + i] = covariance[i * d + j];
            }
        }
        let (values, vectors) = symmetric_eigen(&covariance, d)?;
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        let kept: f64 = order[..dim].iter().map(|&k| values[k].max(0.0)).sum();
        let mut basis = Vec::with_capacity(dim * d);
        for &k in &order[..dim] {
            let column: Vec<f64> = (0..d).map(|i| vectors[i * d + k]).collect();
            let largest = column.iter().copied().fold(0f64, |a, v| if v.abs() > a.abs() { v } else { a });
            let sign = if largest < 0.0 { -1.0 } else { 1.0 };
            basis.extend(column.iter().map(|&v| (sign * v) as f32));
        }
        Ok(Self {
            teacher_dim,
            dim,
            mean: mean.iter().map(|&m| m as f32).collect(),
            basis,
            explained: if total > 0.0 { kept / total } else { 0.0 },
        })
    }

    /// `B (row - shift)` for one `teacher_dim` row, in f64.
    fn project_row(&self, row: &[f32], shift: impl Fn(usize) -> f64) -> Vec<f64> {
        self.basis
            .chunks_exact(self.teacher_dim)
            .map(|b| {
                b.iter()
                    .zip(row)
                    .enumerate()
                    .map(|(i, (&b, &v))| f64::from(b) * (f64::from(v) - shift(i)))
                    .sum()
            })
            .collect()
    }

    /// Teacher sentence embeddings (`[rows, teacher_dim]`) in the projected space:
    /// `normalise(B (e - m))` per row, `[rows, dim]`.
    pub fn embeddings(&self, embeddings: &[f32]) -> Vec<f32> {
        use rayon::prelude::*;
        let mut out = vec![0f32; embeddings.len() / self.teacher_dim * self.dim];
        out.par_chunks_mut(self.dim).zip(embeddings.par_chunks_exact(self.teacher_dim)).for_each(|(o, e)| {
            let p = self.project_row(e, |i| f64::from(self.mean[i]));
            let norm = p.iter().map(|v| v * v).sum::<f64>().sqrt();
            let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            o.iter_mut().zip(&p).for_each(|(o, v)| *o = (v * inv) as f32);
        });
        out
    }

    /// One sentence's teacher token states (`[tokens, teacher_dim]`) in the projected space, for
    /// the OT term: `B (h - c m)` per token, where `c` is the norm of the tokens' mean, so that
    /// the mean of the projected tokens points where the projected sentence embedding does
    /// (`c B (e - m)` for `e` the tokens' normalised mean). Not normalised (the OT cost is a
    /// cosine).
    pub fn token_states(&self, states: &[f32]) -> Vec<f32> {
        let d = self.teacher_dim;
        let tokens = states.len() / d;
        if tokens == 0 {
            return Vec::new();
        }
        let mut pooled = vec![0f64; d];
        for row in states.chunks_exact(d) {
            pooled.iter_mut().zip(row).for_each(|(p, &v)| *p += f64::from(v));
        }
        let c = pooled.iter().map(|p| p * p).sum::<f64>().sqrt() / tokens as f64;
        states
            .chunks_exact(d)
            .flat_map(|row| self.project_row(row, |i| c * f64::from(self.mean[i])))
            .map(|v| v as f32)
            .collect()
    }

    /// `outputs` with their embeddings projected ([`Projection::embeddings`]) and no token states.
    pub fn outputs(&self, outputs: &TeacherOutputs) -> TeacherOutputs {
        TeacherOutputs { dim: self.dim, embeddings: self.embeddings(&outputs.embeddings), token_states: None }
    }

    /// A checksum of the mean and the basis (a run's checkpoints record it).
    pub fn checksum(&self) -> u64 {
        let mut h = Fnv64::default();
        for n in [self.teacher_dim, self.dim] {
            h.update(&(n as u64).to_le_bytes());
        }
        for v in self.mean.iter().chain(&self.basis) {
            h.update(&v.to_le_bytes());
        }
        h.finish()
    }

    /// Writes it to `path` atomically (safetensors, `mean` and `basis`, with a checksum).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let tensor = |values: &[f32], shape: &[usize]| {
            Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).map_err(|e| CheckpointError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })
        };
        let tensors = [
            ("mean".to_string(), tensor(&self.mean, &[self.teacher_dim])?),
            ("basis".to_string(), tensor(&self.basis, &[self.dim, self.teacher_dim])?),
        ];
        let state =
            ProjectionState { teacher_dim: self.teacher_dim, dim: self.dim, explained: self.explained };
        checkpoint::save(path, &tensors, &state)
    }

    /// Reads what [`Projection::save`] wrote (checksum, finiteness and shapes checked).
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
        let file = checkpoint::load::<ProjectionState>(path)?;
        let state = file.state;
        let values = |name: &str, len: usize| -> Result<Vec<f32>, CheckpointError> {
            let t = file.tensors.get(name).ok_or_else(|| corrupt(format!("no tensor {name:?}")))?;
            let v = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| corrupt(e.to_string()))?;
            if v.len() != len {
                return Err(corrupt(format!("tensor {name:?} has {} values, not {len}", v.len())));
            }
            Ok(v)
        };
        Ok(Self {
            teacher_dim: state.teacher_dim,
            dim: state.dim,
            mean: values("mean", state.teacher_dim)?,
            basis: values("basis", state.dim * state.teacher_dim)?,
            explained: state.explained,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Rows with most variance along a few known axes (plus noise) and an offset.
    fn rows(n: usize, d: usize) -> Vec<f32> {
        let mut rng = SplitMix64::new(7, "projection-test");
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            for i in 0..d {
                let scale = match i {
                    0 => 5.0,
                    1 => 3.0,
                    2 => 2.0,
                    _ => 0.1,
                };
                out.push(1.0 + scale * (rng.next_f64() as f32 - 0.5));
            }
        }
        out
    }

    #[test]
    fn the_basis_is_orthonormal_and_finds_the_directions_of_most_variance() {
        let (n, d, k) = (500, 8, 3);
        let p = Projection::fit(&rows(n, d), d, k).unwrap();
        for a in 0..k {
            for b in 0..k {
                let dot: f32 = (0..d).map(|i| p.basis[a * d + i] * p.basis[b * d + i]).sum();
                assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-5, "{a} {b} {dot}");
            }
            // Direction a is axis a, with a positive sign.
            assert!(p.basis[a * d + a] > 0.99, "{:?}", &p.basis[a * d..(a + 1) * d]);
        }
        assert!(p.explained > 0.99 && p.explained <= 1.0, "{}", p.explained);
        assert!(p.mean.iter().all(|m| (m - 1.0).abs() < 0.2), "{:?}", p.mean);
    }

    #[test]
    fn projected_embeddings_are_unit_rows_of_the_centred_coordinates() {
        let (n, d, k) = (300, 8, 3);
        let data = rows(n, d);
        let p = Projection::fit(&data, d, k).unwrap();
        let out = p.embeddings(&data);
        assert_eq!(out.len(), n * k);
        for (row, e) in out.chunks(k).zip(data.chunks(d)) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
            // Coordinate 0 follows the centred axis 0 (where that dominates the other axes).
            if (e[0] - p.mean[0]).abs() > 0.5 {
                assert_eq!(row[0] > 0.0, e[0] > p.mean[0]);
            }
        }
        let same = p.outputs(&TeacherOutputs { dim: d, embeddings: data.clone(), token_states: None });
        assert_eq!((same.dim, same.embeddings), (k, out));
    }

    #[test]
    fn token_states_average_to_the_projected_sentence_direction() {
        let (d, k) = (8, 3);
        let p = Projection::fit(&rows(200, d), d, k).unwrap();
        let states = rows(5, d);
        let projected = p.token_states(&states);
        assert_eq!(projected.len(), 5 * k);
        let mut pooled = vec![0f32; d];
        states.chunks(d).for_each(|r| pooled.iter_mut().zip(r).for_each(|(a, v)| *a += v / 5.0));
        let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt();
        let sentence = p.embeddings(&pooled.iter().map(|v| v / norm).collect::<Vec<_>>());
        let mut mean = vec![0f32; k];
        projected.chunks(k).for_each(|r| mean.iter_mut().zip(r).for_each(|(a, v)| *a += v / 5.0));
        let m = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
        let cos: f32 = mean.iter().zip(&sentence).map(|(a, b)| a / m * b).sum();
        assert!(cos > 0.9999, "{cos}");
    }

    #[test]
    fn bad_widths_are_refused_and_a_saved_projection_loads_equal() {
        let data = rows(50, 8);
        assert!(matches!(Projection::fit(&data, 8, 8), Err(ProjectionError::BadWidth { .. })));
        assert!(matches!(Projection::fit(&data, 8, 0), Err(ProjectionError::BadWidth { .. })));
        assert!(matches!(Projection::fit(&data[..3 * 8], 8, 4), Err(ProjectionError::TooFewRows { .. })));
        let p = Projection::fit(&data, 8, 2).unwrap();
        let path = std::env::temp_dir().join(format!("otkd-projection-{}.safetensors", std::process::id()));
        p.save(&path).unwrap();
        let back = Projection::load(&path).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.checksum(), p.checksum());
        std::fs::remove_file(path).unwrap();
    }
}
