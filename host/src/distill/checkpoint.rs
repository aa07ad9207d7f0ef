//! Training checkpoints: one safetensors file holding the student's weights, the optimiser's
//! moments and, in the header metadata, the run's configuration and progress as JSON. One file,
//! written atomically, so a crash can never pair weights with another step's state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Serialize, de::DeserializeOwned};

use crate::paths::write_atomically;

/// Metadata key of the JSON state.
const STATE_KEY: &str = "otkd.state";

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
    let metadata = HashMap::from([(STATE_KEY.to_string(), json)]);
    let data: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_atomically(path, |tmp| {
        safetensors::serialize_to_file(data, Some(metadata), tmp).map_err(std::io::Error::other)
    })
    .map_err(io)
}

/// Reads a checkpoint written by [`save`]; every tensor must be finite.
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
    let state = serde_json::from_str(json).map_err(|e| corrupt(format!("state: {e}")))?;
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| corrupt(e.to_string()))?;
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
}
