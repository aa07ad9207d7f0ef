//! The student's training pass written by hand for the CPU: one forward that keeps what the
//! backward needs (a tape) and one backward that writes every parameter's gradient, with
//! preallocated buffers and large matrix products in `gemm` (the kernel behind candle's CPU matmul).
//!
//! Why: a training step through candle's autograd is a few hundred small ops, each allocating
//! its output (about 50 MB of fresh memory a step) and most of them single-threaded; in a profile
//! of `otkd bench train` they, not the arithmetic, took most of the step.
//!
//! # Contract
//!
//! [`forward`] computes what [`Student::forward`](super::Student::forward) computes, for the rows
//! that carry a word: the token state of every real word and the sentence embeddings. Padding
//! rows are never computed: sentences are packed one after the other (no row of one sentence
//! ever sees another's, as in the masked candle path where a padded key gets exactly zero
//! attention), and their token states are returned as zeros. Nothing the losses compute depends
//! on a padding row (Sinkhorn's plan is exactly zero there and the sentence mean masks them), so
//! the gradient the candle path sends into them is zero too.
//! [`backward`] adds to `grads` (in [`ParamStore`](super::ParamStore) order) the gradient of
//! `Σ d_tokens ⊙ tokens + Σ d_sentence ⊙ sentence`. Both are tested against candle's autograd
//! of the candle student (the reference) to ~1e-5 relative.

use crate::linalg::matmul;
use candle_core::{CpuStorage, Storage, Var};
use otkd_kernels::gelu::{gelu, gelu_derivative};
use rayon::prelude::*;

use super::{LAYER_NORM_EPS, StudentConfig, TokenizedSentence};

/// Tensors per transformer layer in the parameter order.
const PER_LAYER: usize = 16;

/// Sentences packed without padding: sentence `b` owns rows `offsets[b]..offsets[b + 1]`, one
/// per word.
#[derive(Clone, Debug, Default)]
pub struct PackedBatch {
    /// Words per sentence.
    pub lengths: Vec<usize>,
    /// First row of each sentence, and the row count at the end.
    offsets: Vec<usize>,
    /// `(bucket, row)` of every feature, in row order.
    features: Vec<(u32, u32)>,
    /// Word position of every row.
    positions: Vec<u32>,
    /// Padded width of the candle path's batch (longest sentence, at least 1).
    pub words: usize,
}

impl PackedBatch {
    /// Packs sentences; words at or past `max_words` are dropped, as in
    /// [`StudentBatch::new`](super::StudentBatch::new).
    pub fn new(sentences: &[&TokenizedSentence], max_words: usize) -> Self {
        let mut batch = PackedBatch {
            words: sentences.iter().map(|s| s.words).max().unwrap_or(0).clamp(1, max_words),
            ..Self::default()
        };
        batch.offsets.push(0);
        for s in sentences {
            let start = *batch.offsets.last().unwrap_or(&0);
            let len = s.words.min(max_words);
            for f in &s.features {
                let w = usize::from(f.word);
                if w < len {
                    batch.features.push((f.id, (start + w) as u32));
                }
            }
            batch.positions.extend(0..len as u32);
            batch.lengths.push(len);
            batch.offsets.push(start + len);
        }
        batch
    }

    /// Real rows (words) in the batch.
    pub fn rows(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Sentences in the batch.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether the batch holds no sentence.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}

/// Activations of one layer that the backward pass reads.
#[derive(Default)]
struct LayerTape {
    xhat1: Vec<f32>,
    rstd1: Vec<f32>,
    h1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    xhat2: Vec<f32>,
    rstd2: Vec<f32>,
    h2: Vec<f32>,
    pre: Vec<f32>,
    act: Vec<f32>,
}

/// What [`forward`] keeps for [`backward`]; reused from step to step (buffers keep their
/// capacity, so a step allocates nothing once they have grown).
#[derive(Default)]
pub struct Tape {
    layers: Vec<LayerTape>,
    /// Input of the projection, `[rows, dim]`.
    last: Vec<f32>,
    /// Token states, packed `[rows, out]`.
    tokens: Vec<f32>,
    /// Unnormalised sentence means `[n, out]` and their norms.
    mean: Vec<f32>,
    norm: Vec<f32>,
    // Scratch of the backward pass.
    dx: Vec<f32>,
    dh: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dctx: Vec<f32>,
    dwide: Vec<f32>,
    dtokens: Vec<f32>,
}

/// The student's output for a packed batch.
pub struct Output {
    /// `[n, words, out]` row-major, zero on padding rows (the candle path's layout); empty unless
    /// asked for.
    pub token_states: Vec<f32>,
    /// `[n, out]`, L2-normalised.
    pub sentence: Vec<f32>,
}

/// `buf` resized to `len` and zeroed, keeping its capacity.
fn zeroed(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.clear();
    buf.resize(len, 0.0);
    buf
}

/// `acc[j] += Σ_rows x[row, j]`.
fn add_column_sums(acc: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(acc.len()) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
    }
}

/// `x[row] += bias` for every row.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
    }
}

/// LayerNorm of every row of `x` (as candle-nn's `layer_norm_slow`): `y = xhat · g + b`.
fn layer_norm(x: &[f32], g: &[f32], b: &[f32], y: &mut [f32], xhat: &mut [f32], rstd: &mut [f32]) {
    let d = g.len();
    for (((x, y), xhat), r) in
        x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(xhat.chunks_exact_mut(d)).zip(rstd.iter_mut())
    {
        let mean = x.iter().sum::<f32>() / d as f32;
        let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let std = (var + LAYER_NORM_EPS).sqrt();
        *r = 1.0 / std;
        for (((y, xh), &v), (&g, &b)) in y.iter_mut().zip(xhat.iter_mut()).zip(x).zip(g.iter().zip(b)) {
            *xh = (v - mean) / std;
            *y = *xh * g + b;
        }
    }
}

/// Backward of [`layer_norm`]: adds the input gradient to `dx` and the parameters' to `dg`, `db`.
fn layer_norm_backward(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    g: &[f32],
    dx: &mut [f32],
    dg: &mut [f32],
    db: &mut [f32],
) {
    let d = g.len();
    for (((dy, xhat), &r), dx) in
        dy.chunks_exact(d).zip(xhat.chunks_exact(d)).zip(rstd).zip(dx.chunks_exact_mut(d))
    {
        let (mut mean_dxhat, mut mean_dxhat_xhat) = (0f32, 0f32);
        for j in 0..d {
            let dxhat = dy[j] * g[j];
            mean_dxhat += dxhat;
            mean_dxhat_xhat += dxhat * xhat[j];
            dg[j] += dy[j] * xhat[j];
            db[j] += dy[j];
        }
        mean_dxhat /= d as f32;
        mean_dxhat_xhat /= d as f32;
        for j in 0..d {
            dx[j] += r * (dy[j] * g[j] - mean_dxhat - xhat[j] * mean_dxhat_xhat);
        }
    }
}

/// `buf` cut into consecutive pieces of `sizes[i]` elements.
fn split_mut(mut buf: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    for size in sizes {
        let (head, tail) = buf.split_at_mut(size);
        out.push(head);
        buf = tail;
    }
    out
}

/// Per-sentence attention sizes: rows `offsets[b]..`, probabilities `heads · len²` each.
fn prob_sizes(batch: &PackedBatch, heads: usize) -> impl Iterator<Item = usize> + '_ {
    batch.lengths.iter().map(move |&l| heads * l * l)
}

/// Softmax attention of every head of every sentence over its own words: `ctx` and `probs`.
#[allow(clippy::too_many_arguments)]
fn attention(
    batch: &PackedBatch,
    heads: usize,
    d: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ctx: &mut [f32],
    probs: &mut [f32],
) {
    let hd = d / heads;
    let ctx_parts = split_mut(ctx, batch.lengths.iter().map(|&l| l * d));
    let prob_parts = split_mut(probs, prob_sizes(batch, heads));
    ctx_parts.into_par_iter().zip(prob_parts).enumerate().for_each(|(b, (ctx, probs))| {
        let (start, len) = (batch.offsets[b], batch.lengths[b]);
        let (q, k, v) = (&q[start * d..], &k[start * d..], &v[start * d..]);
        for h in 0..heads {
            let c0 = h * hd;
            for i in 0..len {
                let p = &mut probs[(h * len + i) * len..(h * len + i + 1) * len];
                let qi = &q[i * d + c0..i * d + c0 + hd];
                let mut max = f32::NEG_INFINITY;
                for (j, p) in p.iter_mut().enumerate() {
                    let kj = &k[j * d + c0..j * d + c0 + hd];
                    *p = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>();
                    max = max.max(*p);
                }
                let mut sum = 0f32;
                for p in p.iter_mut() {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                let out = &mut ctx[i * d + c0..i * d + c0 + hd];
                for (j, p) in p.iter_mut().enumerate() {
                    *p /= sum;
                    let vj = &v[j * d + c0..j * d + c0 + hd];
                    out.iter_mut().zip(vj).for_each(|(o, &x)| *o += *p * x);
                }
            }
        }
    });
}

/// Backward of [`attention`]: `dq`, `dk`, `dv` (overwritten) from `dctx`.
#[allow(clippy::too_many_arguments)]
fn attention_backward(
    batch: &PackedBatch,
    heads: usize,
    d: usize,
    (q, k, v, probs): (&[f32], &[f32], &[f32], &[f32]),
    dctx: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let hd = d / heads;
    let sizes = || batch.lengths.iter().map(|&l| l * d);
    let parts = split_mut(dq, sizes()).into_iter().zip(split_mut(dk, sizes())).zip(split_mut(dv, sizes()));
    let mut prob_starts = Vec::with_capacity(batch.len());
    let mut at = 0;
    for size in prob_sizes(batch, heads) {
        prob_starts.push(at);
        at += size;
    }
    parts.collect::<Vec<_>>().into_par_iter().enumerate().for_each(|(b, ((dq, dk), dv))| {
        let (start, len) = (batch.offsets[b], batch.lengths[b]);
        let (q, k, v, dctx) = (&q[start * d..], &k[start * d..], &v[start * d..], &dctx[start * d..]);
        let probs = &probs[prob_starts[b]..];
        dq.iter_mut().chain(dk.iter_mut()).chain(dv.iter_mut()).for_each(|x| *x = 0.0);
        let mut ds = vec![0f32; len];
        for h in 0..heads {
            let c0 = h * hd;
            for i in 0..len {
                let p = &probs[(h * len + i) * len..(h * len + i + 1) * len];
                let dci = &dctx[i * d + c0..i * d + c0 + hd];
                let mut dot = 0f32;
                for j in 0..len {
                    let vj = &v[j * d + c0..j * d + c0 + hd];
                    ds[j] = dci.iter().zip(vj).map(|(a, b)| a * b).sum::<f32>();
                    dot += p[j] * ds[j];
                    let dvj = &mut dv[j * d + c0..j * d + c0 + hd];
                    dvj.iter_mut().zip(dci).for_each(|(o, &g)| *o += p[j] * g);
                }
                let qi = &q[i * d + c0..i * d + c0 + hd];
                for j in 0..len {
                    let s = p[j] * (ds[j] - dot);
                    let kj = &k[j * d + c0..j * d + c0 + hd];
                    let dqi = &mut dq[i * d + c0..i * d + c0 + hd];
                    dqi.iter_mut().zip(kj).for_each(|(o, &x)| *o += s * x);
                    let dkj = &mut dk[j * d + c0..j * d + c0 + hd];
                    dkj.iter_mut().zip(qi).for_each(|(o, &x)| *o += s * x);
                }
            }
        }
    });
}

/// Runs `f` on the parameters' values (in [`ParamStore`](super::ParamStore) order), read in place.
pub fn with_params<R>(vars: &[Var], f: impl FnOnce(&[&[f32]]) -> R) -> candle_core::Result<R> {
    let guards: Vec<_> = vars.iter().map(|v| v.as_tensor().storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(vars.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(CpuStorage::F32(data)) = &**storage else {
            candle_core::bail!("fused student: parameters must be f32 on the CPU");
        };
        if !layout.is_contiguous() {
            candle_core::bail!("fused student: parameters must be contiguous");
        }
        let start = layout.start_offset();
        slices.push(&data[start..start + layout.shape().elem_count()]);
    }
    Ok(f(&slices))
}

/// The student's forward pass on `batch` with parameters `p`, recording `tape`. Without
/// `keep_token_states` the padded token states are not laid out (`Output::token_states` is
/// empty): embedding alone needs only the sentences.
pub fn forward(
    config: &StudentConfig,
    p: &[&[f32]],
    batch: &PackedBatch,
    tape: &mut Tape,
    keep_token_states: bool,
) -> Output {
    let (d, f, o, heads) = (config.dim, config.ffn, config.out_dim, config.heads);
    let rows = batch.rows();
    let n = batch.len();
    let (embeddings, positions) = (p[0], p[1]);
    let mut x = std::mem::take(&mut tape.last);
    zeroed(&mut x, rows * d);
    for (r, &w) in batch.positions.iter().enumerate() {
        x[r * d..(r + 1) * d].copy_from_slice(&positions[w as usize * d..(w as usize + 1) * d]);
    }
    for &(id, row) in &batch.features {
        let (id, row) = (id as usize, row as usize);
        let (dst, src) = (&mut x[row * d..(row + 1) * d], &embeddings[id * d..(id + 1) * d]);
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
    }
    tape.layers.resize_with(config.layers, LayerTape::default);
    let scale = 1.0 / ((d / heads) as f64).sqrt();
    let probs_len: usize = prob_sizes(batch, heads).sum();
    for (l, t) in tape.layers.iter_mut().enumerate() {
        let w = &p[2 + PER_LAYER * l..2 + PER_LAYER * (l + 1)];
        zeroed(&mut t.rstd1, rows);
        zeroed(&mut t.xhat1, rows * d);
        zeroed(&mut t.h1, rows * d);
        layer_norm(&x, w[0], w[1], &mut t.h1, &mut t.xhat1, &mut t.rstd1);
        for (out, (wm, bias)) in
            [(&mut t.q, (w[2], w[3])), (&mut t.k, (w[4], w[5])), (&mut t.v, (w[6], w[7]))]
        {
            let out = zeroed(out, rows * d);
            matmul(out, &t.h1, false, wm, false, rows, d, d, false);
            add_bias(out, bias);
        }
        // As `(h Wq + bq) / sqrt(head_dim)` in candle: a multiplication by the f32 reciprocal.
        t.q.iter_mut().for_each(|v| *v *= scale as f32);
        zeroed(&mut t.ctx, rows * d);
        zeroed(&mut t.probs, probs_len);
        attention(batch, heads, d, &t.q, &t.k, &t.v, &mut t.ctx, &mut t.probs);
        matmul(&mut x, &t.ctx, false, w[8], false, rows, d, d, true);
        add_bias(&mut x, w[9]);
        zeroed(&mut t.rstd2, rows);
        zeroed(&mut t.xhat2, rows * d);
        zeroed(&mut t.h2, rows * d);
        layer_norm(&x, w[10], w[11], &mut t.h2, &mut t.xhat2, &mut t.rstd2);
        let pre = zeroed(&mut t.pre, rows * f);
        matmul(pre, &t.h2, false, w[12], false, rows, d, f, false);
        add_bias(pre, w[13]);
        let act = zeroed(&mut t.act, rows * f);
        act.iter_mut().zip(&t.pre).for_each(|(a, &z)| *a = gelu(z));
        matmul(&mut x, &t.act, false, w[14], false, rows, f, d, true);
        add_bias(&mut x, w[15]);
    }
    let (proj_w, proj_b) = (p[2 + PER_LAYER * config.layers], p[3 + PER_LAYER * config.layers]);
    let tokens = zeroed(&mut tape.tokens, rows * o);
    matmul(tokens, &x, false, proj_w, false, rows, d, o, false);
    add_bias(tokens, proj_b);
    tape.last = x;
    let words = batch.words;
    let mut token_states = if keep_token_states { vec![0f32; n * words * o] } else { Vec::new() };
    let mean = zeroed(&mut tape.mean, n * o);
    let norm = zeroed(&mut tape.norm, n);
    let mut sentence = vec![0f32; n * o];
    for b in 0..n {
        let (start, len) = (batch.offsets[b], batch.lengths[b]);
        let src = &tape.tokens[start * o..(start + len) * o];
        if keep_token_states {
            token_states[b * words * o..(b * words + len) * o].copy_from_slice(src);
        }
        let m = &mut mean[b * o..(b + 1) * o];
        add_column_sums(m, src);
        let count = len.max(1) as f32;
        m.iter_mut().for_each(|v| *v /= count);
        norm[b] = (m.iter().map(|v| v * v).sum::<f32>() + 1e-12).sqrt();
        sentence[b * o..(b + 1) * o].iter_mut().zip(m.iter()).for_each(|(s, &v)| *s = v / norm[b]);
    }
    Output { token_states, sentence }
}

/// Adds to `grads` (one buffer per parameter, in order, each of the parameter's size) the
/// gradient of `Σ d_tokens ⊙ token_states + Σ d_sentence ⊙ sentence` at the [`forward`] pass
/// recorded in `tape` (a missing gradient is zero; `d_tokens` is `[n, words, out]` and its
/// padding rows are ignored).
pub fn backward(
    config: &StudentConfig,
    p: &[&[f32]],
    batch: &PackedBatch,
    tape: &mut Tape,
    d_tokens: Option<&[f32]>,
    d_sentence: Option<&[f32]>,
    grads: &mut [Vec<f32>],
) {
    let (d, f, o, heads) = (config.dim, config.ffn, config.out_dim, config.heads);
    let rows = batch.rows();
    let words = batch.words;
    let Tape { layers, last, mean, norm, dx, dh, dq, dk, dv, dctx, dwide, dtokens, .. } = tape;
    let dt = zeroed(dtokens, rows * o);
    for b in 0..batch.len() {
        let (start, len) = (batch.offsets[b], batch.lengths[b]);
        let dst = &mut dt[start * o..(start + len) * o];
        if let Some(g) = d_tokens {
            dst.copy_from_slice(&g[b * words * o..(b * words + len) * o]);
        }
        if let Some(ds) = d_sentence {
            // s = m / N, N = sqrt(|m|² + 1e-12): dm = ds / N − m (m·ds) / N³, spread over the words.
            let (m, ds) = (&mean[b * o..(b + 1) * o], &ds[b * o..(b + 1) * o]);
            let nb = norm[b];
            let dot = m.iter().zip(ds).map(|(a, b)| a * b).sum::<f32>();
            let count = len.max(1) as f32;
            let dm: Vec<f32> =
                m.iter().zip(ds).map(|(&m, &g)| (g / nb - m * dot / (nb * nb * nb)) / count).collect();
            for row in dst.chunks_exact_mut(o) {
                row.iter_mut().zip(&dm).for_each(|(a, &g)| *a += g);
            }
        }
    }
    let pw = 2 + PER_LAYER * config.layers;
    matmul(&mut grads[pw], last, true, dt, false, d, rows, o, true);
    add_column_sums(&mut grads[pw + 1], dt);
    let dx = zeroed(dx, rows * d);
    matmul(dx, dt, false, p[pw], true, rows, o, d, false);
    let scale = (1.0 / ((d / heads) as f64).sqrt()) as f32;
    for (l, t) in layers.iter().enumerate().rev() {
        let w = &p[2 + PER_LAYER * l..2 + PER_LAYER * (l + 1)];
        let g = |i: usize| 2 + PER_LAYER * l + i;
        // FFN branch: x += act(h2 Wi + bi) Wf + bf.
        add_column_sums(&mut grads[g(15)], dx);
        matmul(&mut grads[g(14)], &t.act, true, dx, false, f, rows, d, true);
        let dwide = zeroed(dwide, rows * f);
        matmul(dwide, dx, false, w[14], true, rows, d, f, false);
        dwide.iter_mut().zip(&t.pre).for_each(|(g, &z)| *g *= gelu_derivative(z));
        matmul(&mut grads[g(12)], &t.h2, true, dwide, false, d, rows, f, true);
        add_column_sums(&mut grads[g(13)], dwide);
        let dh2 = zeroed(dh, rows * d);
        matmul(dh2, dwide, false, w[12], true, rows, f, d, false);
        {
            let (left, right) = grads.split_at_mut(g(11));
            layer_norm_backward(dh2, &t.xhat2, &t.rstd2, w[10], dx, &mut left[g(10)], &mut right[0]);
        }
        // Attention branch: x += attention(h1) Wo + bo.
        add_column_sums(&mut grads[g(9)], dx);
        matmul(&mut grads[g(8)], &t.ctx, true, dx, false, d, rows, d, true);
        let dctx = zeroed(dctx, rows * d);
        matmul(dctx, dx, false, w[8], true, rows, d, d, false);
        let (dq, dk, dv) = (zeroed(dq, rows * d), zeroed(dk, rows * d), zeroed(dv, rows * d));
        attention_backward(batch, heads, d, (&t.q, &t.k, &t.v, &t.probs), dctx, dq, dk, dv);
        dq.iter_mut().for_each(|v| *v *= scale);
        let dh1 = zeroed(dh, rows * d);
        for (grad, wi) in [(&*dq, 2), (&*dk, 4), (&*dv, 6)] {
            matmul(&mut grads[g(wi)], &t.h1, true, grad, false, d, rows, d, true);
            add_column_sums(&mut grads[g(wi + 1)], grad);
            matmul(dh1, grad, false, w[wi], true, rows, d, d, true);
        }
        let (left, right) = grads.split_at_mut(g(1));
        layer_norm_backward(dh1, &t.xhat1, &t.rstd1, w[0], dx, &mut left[g(0)], &mut right[0]);
    }
    for (r, &w) in batch.positions.iter().enumerate() {
        let dst = &mut grads[1][w as usize * d..(w as usize + 1) * d];
        dst.iter_mut().zip(&dx[r * d..(r + 1) * d]).for_each(|(a, &b)| *a += b);
    }
    let de = &mut grads[0];
    for &(id, row) in &batch.features {
        let (id, row) = (id as usize, row as usize);
        let dst = &mut de[id * d..(id + 1) * d];
        dst.iter_mut().zip(&dx[row * d..(row + 1) * d]).for_each(|(a, &b)| *a += b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::student::{Preset, Student, StudentBatch, tokenize_sentence};
    use candle_core::{Device, Tensor};

    /// A student whose every weight is random (the fresh student's zero branches would hide
    /// half of the gradients).
    fn random_student(config: StudentConfig) -> Student {
        let student = Student::new(config, 3).unwrap();
        let mut rng = SplitMix64::new(4, "fused-test");
        for (name, var) in student.params().iter() {
            let std = if name.contains("norm.weight") { 0.2 } else { 0.1 };
            let mut values = rng.normal_vec(var.elem_count(), std);
            if name.contains("norm.weight") {
                values.iter_mut().for_each(|v| *v += 1.0);
            }
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
        student
    }

    fn relative_error(a: &[f32], b: &[f32]) -> f64 {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
        (diff / norm.max(1e-30)).sqrt()
    }

    #[test]
    fn forward_and_gradients_match_candle_autograd() {
        let config = Preset::Micro.config(384);
        let student = random_student(config);
        let texts = [
            "a brown dog runs across the green field",
            "two men",
            "",
            "uka warmixa wawanakapampix parkin sarnaqaski ukhamarak mä jach'a anu",
            "a",
        ];
        let sentences: Vec<_> = texts.iter().map(|t| tokenize_sentence(&config.tokenizer, t)).collect();
        let refs: Vec<_> = sentences.iter().collect();
        let batch = StudentBatch::new(&refs, config.max_words).unwrap();
        let packed = PackedBatch::new(&refs, config.max_words);
        assert_eq!(packed.words, batch.words);
        let (n, words, o) = (refs.len(), batch.words, config.out_dim);
        let mut rng = SplitMix64::new(5, "fused-test-upstream");
        let mut d_tokens = rng.normal_vec(n * words * o, 1.0);
        // Padding rows get no gradient from the losses (see the module docs).
        for (b, &len) in batch.lengths.iter().enumerate() {
            d_tokens[(b * words + len) * o..(b + 1) * words * o].iter_mut().for_each(|v| *v = 0.0);
        }
        let d_sentence = rng.normal_vec(n * o, 1.0);

        let reference = student.forward(&batch).unwrap();
        let cpu = &Device::Cpu;
        let loss = ((&reference.token_states
            * Tensor::from_vec(d_tokens.clone(), (n, words, o), cpu).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
            + (&reference.sentence * Tensor::from_vec(d_sentence.clone(), (n, o), cpu).unwrap())
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();

        let vars = student.params().vars();
        let mut tape = Tape::default();
        let mut fused: Vec<Vec<f32>> = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        let out = with_params(vars, |p| {
            let out = forward(&config, p, &packed, &mut tape, true);
            backward(&config, p, &packed, &mut tape, Some(&d_tokens), Some(&d_sentence), &mut fused);
            out
        })
        .unwrap();
        let want_sentence: Vec<f32> = reference.sentence.flatten_all().unwrap().to_vec1().unwrap();
        let err = relative_error(&out.sentence, &want_sentence);
        assert!(err < 1e-5, "sentence: relative error {err}");
        let mut want_tokens: Vec<f32> = reference.token_states.flatten_all().unwrap().to_vec1().unwrap();
        for (b, &len) in batch.lengths.iter().enumerate() {
            want_tokens[(b * words + len) * o..(b + 1) * words * o].iter_mut().for_each(|v| *v = 0.0);
        }
        let err = relative_error(&out.token_states, &want_tokens);
        assert!(err < 1e-5, "token states: relative error {err}");
        let mut failed = Vec::new();
        for ((name, var), got) in student.params().iter().zip(&fused) {
            let want: Vec<f32> =
                grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let norm = want.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            let err = relative_error(got, &want);
            eprintln!("{name}: |grad| {norm:.3e}, relative error {err:.2e}");
            // The key bias's true gradient is zero (softmax ignores a per-query constant), so
            // both sides are rounding noise there: compared in absolute terms.
            let ok = if name.ends_with("key.bias") { norm < 1e-4 && err * norm < 1e-4 } else { err < 2e-5 };
            if !ok {
                failed.push(name.to_string());
            }
        }
        assert!(failed.is_empty(), "gradients differ from candle's: {failed:?}");
    }
}
