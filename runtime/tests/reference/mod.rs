//! The encoder tests' oracle: the student's forward pass in f64, and texts to encode (the seeded
//! students and scratch buffers they run on are `otkd_runtime::testing`).

use otkd_runtime::{BlobParts, DenseParts, Feature, NormParts, tokenize};

/// The student's forward pass in f64 on the unquantized weights (the host's `Student::forward`
/// for one sentence): `None` for a text without words.
pub fn reference_encode(parts: &BlobParts, text: &str) -> Option<Vec<f64>> {
    let c = &parts.config;
    let (d, heads, ffn, out) = (c.dim as usize, c.heads as usize, c.ffn as usize, c.out_dim as usize);
    let head_dim = d / heads;
    let mut features = heapless::Vec::<Feature, 4096>::new();
    let words = tokenize(&c.tokenizer, text, features.as_mut_view()).words as usize;
    if words == 0 {
        return None;
    }
    let mut x = vec![vec![0f64; d]; words];
    for f in &features {
        let row = &parts.embeddings[f.id as usize * d..][..d];
        x[f.word as usize].iter_mut().zip(row).for_each(|(x, &e)| *x += f64::from(e));
    }
    for (w, row) in x.iter_mut().enumerate() {
        row.iter_mut().zip(&parts.positions[w * d..][..d]).for_each(|(x, &p)| *x += f64::from(p));
    }
    let layer_norm = |row: &[f64], n: &NormParts| -> Vec<f64> {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + f64::from(c.layer_norm_eps)).sqrt();
        row.iter()
            .zip(n.weight.iter().zip(&n.bias))
            .map(|(v, (&w, &b))| (v - mean) * inv * f64::from(w) + f64::from(b))
            .collect()
    };
    let dense = |row: &[f64], p: &DenseParts| -> Vec<f64> {
        let outputs = p.bias.len();
        (0..outputs)
            .map(|o| {
                row.iter().enumerate().map(|(i, v)| v * f64::from(p.weight[i * outputs + o])).sum::<f64>()
                    + f64::from(p.bias[o])
            })
            .collect()
    };
    for layer in &parts.layers {
        let h: Vec<Vec<f64>> = x.iter().map(|r| layer_norm(r, &layer.attention_norm)).collect();
        let q: Vec<Vec<f64>> = h.iter().map(|r| dense(r, &layer.query)).collect();
        let k: Vec<Vec<f64>> = h.iter().map(|r| dense(r, &layer.key)).collect();
        let v: Vec<Vec<f64>> = h.iter().map(|r| dense(r, &layer.value)).collect();
        for i in 0..words {
            let mut context = vec![0f64; d];
            for head in 0..heads {
                let span = head * head_dim..(head + 1) * head_dim;
                let scores: Vec<f64> = (0..words)
                    .map(|j| {
                        q[i][span.clone()].iter().zip(&k[j][span.clone()]).map(|(a, b)| a * b).sum::<f64>()
                            / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for (j, e) in exps.iter().enumerate() {
                    for c in span.clone() {
                        context[c] += e / total * v[j][c];
                    }
                }
            }
            let update = dense(&context, &layer.attention_out);
            x[i].iter_mut().zip(update).for_each(|(x, u)| *x += u);
        }
        for row in &mut x {
            let hidden: Vec<f64> = dense(&layer_norm(row, &layer.ffn_norm), &layer.ffn_in)
                .into_iter()
                .map(|h| 0.5 * h * (1.0 + libm::erf(h / 2f64.sqrt())))
                .collect();
            assert_eq!(hidden.len(), ffn);
            row.iter_mut().zip(dense(&hidden, &layer.ffn_out)).for_each(|(x, u)| *x += u);
        }
    }
    let mut mean = vec![0f64; out];
    for row in &x {
        mean.iter_mut().zip(dense(row, &parts.projection)).for_each(|(m, p)| *m += p / words as f64);
    }
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    Some(mean.into_iter().map(|v| v / norm).collect())
}

/// Cosine of an int8 embedding and an f64 vector.
pub fn cosine(embedding: &otkd_runtime::Embedding, reference: &[f64]) -> f64 {
    let e: Vec<f64> = embedding.to_f32().map(f64::from).collect();
    let dot: f64 = e.iter().zip(reference).map(|(a, b)| a * b).sum();
    dot / (e.iter().map(|v| v * v).sum::<f64>().sqrt() * reference.iter().map(|v| v * v).sum::<f64>().sqrt())
}

/// Texts in several scripts and lengths.
pub const TEXTS: &[&str] = &[
    "a dog",
    "A brown dog runs across the green field.",
    "Jaʼa, qhana!",
    "Ñande rekove ha'e peteĩ mba'e porã",
    "Muž v modrém tričku hraje na kytaru.",
    "Dos niños juegan al fútbol en la playa mientras su madre los mira",
    "一只狗在草地上奔跑",
    "x",
    "Allinllachu? Imaynalla kachkanki, wawqi? Noqaqa allinmi kachkani, añay.",
    "the the the the the the the the the the the the the the",
];
