//! The cache of teacher outputs: one safetensors file per sentence list (e.g. `train.en`), keyed
//! by a hash of the teacher's files, the sentences and the encoding options, written atomically
//! and reused across runs. Each entry stores an FNV-64 checksum of its contents: flipped bits that
//! leave the values finite would otherwise become teacher targets without a word; an entry whose
//! checksum does not match is re-encoded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::paths::write_atomically;
use crate::rng::Fnv64;
use crate::teacher::{Teacher, TeacherError, TeacherOutputs, TokenStates};

/// Bumped whenever the file layout or the teacher's numerics change, so old entries miss.
const FORMAT_VERSION: &str = "otkd-teacher-cache-v2";

/// Errors of the cache itself (a corrupt entry is not an error: it is re-encoded).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A teacher file could not be read for hashing.
    #[error("reading {path} to key the cache: {source}")]
    HashInput {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the cache entry failed.
    #[error("writing cache entry {path}: {source}")]
    Write {
        /// The entry.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The teacher failed.
    #[error(transparent)]
    Teacher(#[from] TeacherError),
}

/// Whether [`TeacherCache::load_or_encode`] found the entry or computed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CacheStatus {
    /// The entry existed and was read.
    Hit,
    /// The entry was computed and written.
    Encoded {
        /// Sentences per second of the encoding.
        sentences_per_second: f64,
    },
}

/// A directory of cached teacher outputs.
#[derive(Clone, Debug)]
pub struct TeacherCache {
    dir: PathBuf,
    model_key: u64,
}

impl TeacherCache {
    /// Opens (lazily creates) a cache for `teacher` under `dir`; hashes the teacher's files once.
    pub fn new(dir: impl Into<PathBuf>, teacher: &Teacher) -> Result<Self, CacheError> {
        let mut h = Fnv64::default();
        h.update_str(FORMAT_VERSION);
        for name in ["config.json", "tokenizer.json", "model.safetensors"] {
            let path = teacher.dir().join(name);
            let bytes = std::fs::read(&path).map_err(|source| CacheError::HashInput { path, source })?;
            h.update(&bytes);
        }
        // The pooling is read from other files (modules.json, the pooling config).
        h.update_str(&format!("{:?}", teacher.pooling()));
        Ok(Self { dir: dir.into(), model_key: h.finish() })
    }

    /// The entry file for a named sentence list.
    pub fn entry_path<S: AsRef<str>>(&self, name: &str, sentences: &[S], keep_token_states: bool) -> PathBuf {
        let mut h = Fnv64::default();
        h.update(&self.model_key.to_le_bytes());
        h.update(&[u8::from(keep_token_states)]);
        h.update(&(sentences.len() as u64).to_le_bytes());
        for s in sentences {
            h.update_str(s.as_ref());
        }
        self.dir.join(format!("teacher-{name}-{:016x}.safetensors", h.finish()))
    }

    /// Returns the cached outputs for `sentences`, encoding and storing them on a miss.
    /// `progress` receives the number of sentences encoded so far.
    pub fn load_or_encode<S: AsRef<str> + Sync>(
        &self,
        teacher: &Teacher,
        name: &str,
        sentences: &[S],
        keep_token_states: bool,
        batch_size: usize,
        progress: impl FnMut(usize),
    ) -> Result<(TeacherOutputs, CacheStatus), CacheError> {
        let path = self.entry_path(name, sentences, keep_token_states);
        if path.is_file() {
            match read_entry(&path, sentences.len(), keep_token_states) {
                Ok(outputs) => return Ok((outputs, CacheStatus::Hit)),
                Err(reason) => {
                    eprintln!("warning: cache entry {} is unusable ({reason}); re-encoding", path.display())
                }
            }
        }
        let start = std::time::Instant::now();
        let outputs = teacher.encode(sentences, batch_size, keep_token_states, progress)?;
        let sentences_per_second = sentences.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
        write_entry(&path, &outputs).map_err(|source| CacheError::Write { path: path.clone(), source })?;
        Ok((outputs, CacheStatus::Encoded { sentences_per_second }))
    }
}

/// FNV-64 over the little-endian bytes of the embeddings, then the offsets and token states.
fn checksum(embeddings: &[f32], states: Option<&TokenStates>) -> u64 {
    let mut h = Fnv64::default();
    for v in embeddings {
        h.update(&v.to_le_bytes());
    }
    if let Some(states) = states {
        for &o in &states.offsets {
            h.update(&(o as u64).to_le_bytes());
        }
        for v in &states.states {
            h.update(&v.to_bits().to_le_bytes());
        }
    }
    h.finish()
}

fn write_entry(path: &Path, outputs: &TeacherOutputs) -> std::io::Result<()> {
    let n = outputs.embeddings.len() / outputs.dim;
    let to_io = |e: candle_core::Error| std::io::Error::other(e.to_string());
    let mut tensors = HashMap::new();
    tensors.insert(
        "embeddings".to_string(),
        Tensor::from_slice(&outputs.embeddings, (n, outputs.dim), &Device::Cpu).map_err(to_io)?,
    );
    if let Some(states) = &outputs.token_states {
        let offsets: Vec<i64> = states.offsets.iter().map(|&o| o as i64).collect();
        let total = states.offsets[n];
        tensors.insert("offsets".to_string(), Tensor::from_vec(offsets, n + 1, &Device::Cpu).map_err(to_io)?);
        tensors.insert(
            "token_states".to_string(),
            Tensor::from_slice(&states.states, (total, outputs.dim), &Device::Cpu).map_err(to_io)?,
        );
    }
    let sum = checksum(&outputs.embeddings, outputs.token_states.as_ref()).to_le_bytes().to_vec();
    tensors.insert("checksum".to_string(), Tensor::from_vec(sum, 8, &Device::Cpu).map_err(to_io)?);
    write_atomically(path, |tmp| candle_core::safetensors::save(&tensors, tmp).map_err(to_io))
}

fn read_entry(path: &Path, sentences: usize, keep_token_states: bool) -> Result<TeacherOutputs, String> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| e.to_string())?;
    let get = |name: &str| tensors.get(name).ok_or_else(|| format!("tensor {name:?} missing"));
    let embeddings = get("embeddings")?;
    let (n, dim) = embeddings.dims2().map_err(|e| e.to_string())?;
    if n != sentences {
        return Err(format!("{n} embeddings for {sentences} sentences"));
    }
    let embeddings: Vec<f32> =
        embeddings.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| e.to_string())?;
    if embeddings.iter().any(|v| !v.is_finite()) {
        return Err("non-finite embedding".into());
    }
    let token_states = if keep_token_states {
        let offsets: Vec<i64> = get("offsets")?.to_vec1().map_err(|e| e.to_string())?;
        let states = get("token_states")?;
        let (total, states_dim) = states.dims2().map_err(|e| e.to_string())?;
        let offsets: Vec<usize> = offsets.iter().map(|&o| o.max(0) as usize).collect();
        // Every sentence has at least its [CLS] and [SEP] rows.
        let rows_ok = offsets.windows(2).all(|w| w[0] + 2 <= w[1]);
        if offsets.len() != n + 1 || offsets[0] != 0 || !rows_ok || offsets[n] != total || states_dim != dim {
            return Err("token state offsets do not match the states".into());
        }
        let states: Vec<half::f16> =
            states.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| e.to_string())?;
        Some(TokenStates { offsets, states })
    } else {
        None
    };
    let stored: Vec<u8> = get("checksum")?.to_vec1().map_err(|e| e.to_string())?;
    let computed = checksum(&embeddings, token_states.as_ref());
    if stored.as_slice() != computed.to_le_bytes() {
        return Err("checksum mismatch: the file changed after it was written".into());
    }
    Ok(TeacherOutputs { dim, embeddings, token_states })
}
