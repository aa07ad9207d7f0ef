//! `otkd teacher encode` and `otkd teacher embed`.

use anyhow::{Result, bail};
use serde::Serialize;

use super::{Inputs, cached_english, open_cache, open_source, open_teacher, print_json};
use crate::cli::{EmbedArgs, EncodeArgs};
use crate::teacher::cache::CacheStatus;

#[derive(Serialize)]
struct EncodeSummary {
    split: String,
    sentences: usize,
    cached: bool,
    sentences_per_second: Option<f64>,
}

/// Encodes the English sides of the asked splits into the cache.
pub fn encode(inputs: &Inputs, args: &EncodeArgs) -> Result<()> {
    let data = open_source(inputs, &args.source, args.lang)?;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let mut summary = Vec::new();
    for &split in &args.splits {
        let name = data.cache_name(split);
        let (captions, _, status) =
            cached_english(&teacher, &cache, &data, split, args.batch as usize, true)?;
        let sentences_per_second = match status {
            CacheStatus::Hit => None,
            CacheStatus::Encoded { sentences_per_second } => Some(sentences_per_second),
        };
        if !args.json {
            match sentences_per_second {
                None => outln!("{name}: {} sentences, already cached", captions.len()),
                Some(rate) => {
                    outln!("{name}: {} sentences encoded, {rate:.0} sentences/s", captions.len())
                }
            }
        }
        summary.push(EncodeSummary {
            split: data.split_name(split).to_string(),
            sentences: captions.len(),
            cached: sentences_per_second.is_none(),
            sentences_per_second,
        });
    }
    if args.json {
        print_json(&summary)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Embedded {
    text: String,
    tokens: Vec<String>,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_states: Option<Vec<Vec<f32>>>,
}

/// Prints the teacher's tokens and embedding (and token states) of the given sentences.
pub fn embed(inputs: &Inputs, args: &EmbedArgs) -> Result<()> {
    if let Some(i) = args.sentences.iter().position(|s| s.trim().is_empty()) {
        bail!("sentence {} is empty: nothing to embed", i + 1);
    }
    let teacher = open_teacher(inputs)?;
    let tokens = teacher.tokenize(&args.sentences)?;
    let outputs = teacher.encode(&args.sentences, 32, args.states, |_| {})?;
    let dim = outputs.dim;
    let embedded: Vec<Embedded> = args
        .sentences
        .iter()
        .zip(tokens)
        .enumerate()
        .map(|(i, (text, t))| Embedded {
            text: text.clone(),
            tokens: t.tokens,
            token_ids: t.ids,
            embedding: outputs.embeddings[i * dim..(i + 1) * dim].to_vec(),
            token_states: outputs.token_states.as_ref().map(|s| {
                s.sentence(i, dim).chunks(dim).map(|row| row.iter().map(|v| v.to_f32()).collect()).collect()
            }),
        })
        .collect();
    if args.json {
        return print_json(&embedded);
    }
    for e in &embedded {
        outln!("{}", e.text);
        outln!("  tokens ({}): {}", e.tokens.len(), e.tokens.join(" "));
        let head: Vec<String> = e.embedding.iter().take(6).map(|v| format!("{v:+.5}")).collect();
        outln!("  embedding [{dim}]: {} ...", head.join(" "));
        if let Some(states) = &e.token_states {
            for (token, row) in e.tokens.iter().zip(states) {
                let head: Vec<String> = row.iter().take(4).map(|v| format!("{v:+.3}")).collect();
                outln!("    {token:>12}: {} ...", head.join(" "));
            }
        }
    }
    Ok(())
}
