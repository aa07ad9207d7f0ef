//! Dense f32 matrices from `.npy` files (the Multi30k image features), decoded by
//! `candle_core::npy` after a bound check of the header against the file's size.

use std::fmt;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::DataError;

/// A dense row-major f32 matrix read from a `.npy` file.
#[derive(Clone)]
pub struct ImageFeatures {
    /// Rows (images).
    pub rows: usize,
    /// Columns (feature dimensions).
    pub cols: usize,
    /// Row-major, `rows * cols` values.
    pub data: Vec<f32>,
}

impl ImageFeatures {
    /// Row `i` (panics if out of range).
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.rows, "row {i} out of range ({} rows)", self.rows);
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

impl fmt::Debug for ImageFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageFeatures")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

/// Reads a 2-D little-endian float16 or float32, C-order `.npy` file into f32 (no shape
/// expectation beyond being 2-D; [`super::Multi30k::test_image_features`] checks its own).
pub fn read_npy_f32(path: &Path) -> Result<ImageFeatures, DataError> {
    let bad = |reason: String| DataError::BadNpy { path: path.to_path_buf(), reason };
    let bytes = super::read_file(path)?;
    // candle allocates what the header's shape asks for before reading the data: a corrupt
    // header must not make it ask for more than the file can hold.
    let (header_end, shape) = header_shape(&bytes).map_err(bad)?;
    let data_bytes = bytes.len() - header_end;
    let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if elements.is_none_or(|n| n > data_bytes / 2) {
        return Err(bad(format!("shape {shape:?} needs more data than the file's {data_bytes} bytes")));
    }
    let tensor = Tensor::read_npy(path).map_err(|e| bad(e.to_string()))?;
    let dims = tensor.dims().to_vec();
    let [rows, cols] = dims[..] else { return Err(bad(format!("shape {dims:?} is not 2-D"))) };
    let element_size = match tensor.dtype() {
        DType::F16 | DType::F32 => tensor.dtype().size_in_bytes(),
        other => return Err(bad(format!("dtype {other:?} unsupported (only '<f2' and '<f4')"))),
    };
    let expected = rows * cols * element_size;
    if data_bytes != expected {
        return Err(DataError::NpyDataLength { path: path.to_path_buf(), bytes: data_bytes, expected });
    }
    let data = tensor
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(|e| bad(e.to_string()))?;
    Ok(ImageFeatures { rows, cols, data })
}

/// The end of the header and the integers of its `shape` tuple; the rest of the header is
/// candle's to parse.
fn header_shape(bytes: &[u8]) -> Result<(usize, Vec<usize>), String> {
    if bytes.len() < 10 || !bytes.starts_with(b"\x93NUMPY") {
        return Err("missing \\x93NUMPY magic".into());
    }
    let (length, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let end = start
        .checked_add(length)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("header length {length} runs past the end of the file"))?;
    let header = String::from_utf8_lossy(&bytes[start..end]);
    let tuple = header
        .split_once("shape")
        .and_then(|(_, rest)| rest.split_once('('))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(tuple, _)| tuple)
        .ok_or_else(|| "no shape in header".to_string())?;
    let shape = tuple
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| format!("bad dimension {d:?} in shape")))
        .collect::<Result<_, _>>()?;
    Ok((end, shape))
}
