//! `otkd embed`: student embeddings of texts, from a run's f32 student or a blob's int8 runtime.

use anyhow::{Context, Result, bail};

use super::{load_blob, read_blob};
use crate::cli::StudentEmbedArgs;
use crate::distill::run_dir::RunDir;
use crate::paths::write_atomically;
use crate::student::{EMBED_BATCH, tokenize_sentence};

pub fn run(args: &StudentEmbedArgs) -> Result<()> {
    let texts = if args.texts.is_empty() { stdin_lines()? } else { args.texts.clone() };
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        bail!("text {} is empty: there is nothing to embed", i + 1);
    }
    let (dim, rows) = match (&args.run, &args.blob) {
        (Some(run), _) => {
            let trained = RunDir::new(run).load_student(args.checkpoint.into())?;
            let tokenizer = &trained.student.config().tokenizer;
            let tokens: Vec<_> = texts.iter().map(|t| tokenize_sentence(tokenizer, t)).collect();
            (trained.student.config().out_dim, trained.student.embed(&tokens, EMBED_BATCH)?)
        }
        (None, Some(blob)) => {
            let bytes = read_blob(blob)?;
            let mut runtime = load_blob(blob, &bytes)?;
            let dim = usize::from(runtime.model().config().out_dim);
            let mut rows = Vec::with_capacity(texts.len() * dim);
            for (i, text) in texts.iter().enumerate() {
                let embedding =
                    runtime.encode(text).map_err(|e| anyhow::anyhow!("text {} ({text:?}): {e}", i + 1))?;
                rows.extend(embedding.to_f32());
            }
            (dim, rows)
        }
        (None, None) => unreachable!("clap requires --run or --blob"),
    };
    match &args.npy {
        Some(path) => {
            let tensor = candle_core::Tensor::from_vec(rows, (texts.len(), dim), &candle_core::Device::Cpu)?;
            write_atomically(path, |tmp| {
                tensor.write_npy(tmp).map_err(|e| std::io::Error::other(e.to_string()))
            })
            .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{}: {} x {dim} float32", path.display(), texts.len());
        }
        None => {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                text: &'a str,
                embedding: &'a [f32],
            }
            for (text, embedding) in texts.iter().zip(rows.chunks(dim)) {
                outln!("{}", serde_json::to_string(&Line { text, embedding })?);
            }
        }
    }
    Ok(())
}

/// One text per non-blank line of standard input.
fn stdin_lines() -> Result<Vec<String>> {
    use std::io::BufRead as _;
    let mut texts = Vec::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.with_context(|| format!("reading standard input line {}", number + 1))?;
        if !line.trim().is_empty() {
            texts.push(line);
        }
    }
    Ok(texts)
}
