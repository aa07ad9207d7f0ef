//! Training checkpoints: one safetensors file holding the student's weights, the optimiser's
//! moments and, in the header metadata, the run's configuration and progress as JSON and a
//! checksum of both. One file, written atomically, so a crash can never pair weights with another
//! step's state; the checksum refuses a file changed afterwards (one flipped byte of a weight
//! otherwise loads as a valid, wrong student).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Serialize, de::DeserializeOwned};

use crate::paths::write_atomically;
use crate::rng::Fnv64;

/// Metadata key of the JSON state.
const STATE_KEY: &str = "otkd.state";
/// Metadata key of the checksum ([`checksum`]) of the tensors and the state.
const CHECKSUM_KEY: &str = "otkd.checksum";

/// Errors reading or writing a checkpoint; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid otkd checkpoint.
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A checkpoint as read back.
pub struct Checkpoint<S> {
    /// Named tensors (weights and optimiser moments).
    pub tensors: HashMap<String, Tensor>,
    /// The JSON state.
    pub state: S,
}

/// Writes `tensors` and `state` to `path` atomically.
pub fn save<S: Serialize>(
    path: &Path,
    tensors: &[(String, Tensor)],
    state: &S,
) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io { path: path.to_path_buf(), source };
    let json = serde_json::to_string(state).map_err(|e| io(std::io::Error::other(e)))?;
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let sum = checksum(&named, &json).map_err(|e| io(std::io::Error::other(e)))?;
    let metadata =
        HashMap::from([(STATE_KEY.to_string(), json), (CHECKSUM_KEY.to_string(), format!("{sum:016x}"))]);
    let data = named;
    write_atomically(path, |tmp| {
        safetensors::serialize_to_file(data, Some(metadata), tmp).map_err(std::io::Error::other)
    })
    .map_err(io)
}

/// FNV-1a over the state's JSON and every tensor's name, shape and f32 values, in name order.
fn checksum(tensors: &[(&str, &Tensor)], state_json: &str) -> candle_core::Result<u64> {
    let mut sorted: Vec<&(&str, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut h = Fnv64::default();
    h.update_str(state_json);
    for (name, tensor) in sorted {
        h.update_str(name);
        for &d in tensor.dims() {
            h.update(&(d as u64).to_le_bytes());
        }
        let values = tensor.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        h.update(&bytes);
    }
    Ok(h.finish())
}

/// Reads a checkpoint written by [`save`]: the checksum must match and every tensor be finite.
pub fn load<S: DeserializeOwned>(path: &Path) -> Result<Checkpoint<S>, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
    let bytes =
        std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| corrupt(format!("no {STATE_KEY:?} metadata")))?;
    let stored = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CHECKSUM_KEY))
        .ok_or_else(|| corrupt(format!("no {CHECKSUM_KEY:?} metadata (written by an older otkd?)")))?;
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| corrupt(e.to_string()))?;
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let computed = checksum(&named, json).map_err(|e| corrupt(e.to_string()))?;
    if *stored != format!("{computed:016x}") {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored}, contents {computed:016x}): the file changed after it was written"
        )));
    }
    let state = serde_json::from_str(json).map_err(|e| corrupt(format!("state: {e}")))?;
    for (name, t) in &tensors {
        let values = t
            .flatten_all()
            .and_then(|f| f.to_dtype(candle_core::DType::F32))
            .and_then(|f| f.to_vec1::<f32>())
            .map_err(|e| corrupt(format!("tensor {name:?}: {e}")))?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(corrupt(format!("tensor {name:?} holds {} at element {i}", values[i])));
        }
    }
    Ok(Checkpoint { tensors, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("otkd-ckpt-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trips_tensors_and_state() {
        let path = temp("ok.safetensors");
        let t = Tensor::from_vec(vec![1f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
        save(&path, &[("w".into(), t)], &("step", 7u32)).unwrap();
        let back: Checkpoint<(String, u32)> = load(&path).unwrap();
        assert_eq!(back.state, ("step".to_string(), 7));
        assert_eq!(back.tensors["w"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn nan_and_truncation_are_named_errors() {
        let path = temp("nan.safetensors");
        let t = Tensor::from_vec(vec![1f32, f32::NAN], 2, &Device::Cpu).unwrap();
        save(&path, &[("layers.0.query.weight".into(), t)], &0u32).unwrap();
        let err = load::<u32>(&path).err().unwrap().to_string();
        assert!(err.contains("layers.0.query.weight") && err.contains("NaN"), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load::<u32>(&path).err().unwrap().to_string();
        assert!(err.contains("corrupt"), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_flipped_byte_is_refused_by_the_checksum() {
        let path = temp("flip.safetensors");
        let t = Tensor::from_vec(vec![0.25f32; 64], 64, &Device::Cpu).unwrap();
        save(&path, &[("w".into(), t)], &3u32).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // The last byte is the high byte of the last weight: 0.25 becomes another finite value.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = load::<u32>(&path).err().unwrap().to_string();
        assert!(err.contains("checksum mismatch") && err.contains(path.to_str().unwrap()), "{err}");
        std::fs::remove_file(path).unwrap();
    }
}
