//! The one error type of the kernels crate, and the input checks its CPU kernels share.

use candle_core::{CpuStorage, DType, Layout, Tensor};

/// Everything a kernel entry point can reject. Fields are `&'static str` names and numbers, no
/// formatted strings, so callers can match on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A tensor or slice has the wrong rank or extent (`what` names it).
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which quantity was checked, e.g. `"cost rank"` or `"row_lengths.len() (batch)"`.
        what: &'static str,
        /// The value the contract requires.
        expected: usize,
        /// The value that was passed.
        got: usize,
    },
    /// A per-item length is larger than the padded extent it indexes.
    #[error("{what}[{item}] = {length} exceeds the padded extent {max}")]
    LengthOutOfRange {
        /// `"row_lengths"` or `"col_lengths"`.
        what: &'static str,
        /// The batch item.
        item: usize,
        /// The length that was passed.
        length: usize,
        /// The padded extent (`n` for rows, `m` for columns).
        max: usize,
    },
    /// The kernel has no implementation for this dtype (Sinkhorn: f32 only).
    #[error("unsupported dtype {dtype:?} (expected f32)")]
    UnsupportedDtype {
        /// The dtype that was passed.
        dtype: DType,
    },
    /// The tensor lives on a device whose backend is not implemented yet.
    #[error("no cuda implementation for {op}")]
    NoCudaImplementation {
        /// The kernel's name, e.g. `"sinkhorn_log_domain"`.
        op: &'static str,
    },
    /// A configuration value is out of its domain.
    #[error("bad config: {field} {reason}")]
    BadConfig {
        /// The offending field.
        field: &'static str,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// An error from candle (tensor construction, copies, differentiable ops).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The check every CPU-only f32 kernel makes of its inputs: each is f32, each lives on the CPU
/// (`op` names the kernel in the error).
pub(crate) fn expect_cpu_f32(tensors: &[&Tensor], op: &'static str) -> Result<(), KernelError> {
    for t in tensors {
        if t.dtype() != DType::F32 {
            return Err(KernelError::UnsupportedDtype { dtype: t.dtype() });
        }
        if !t.device().is_cpu() {
            return Err(KernelError::NoCudaImplementation { op });
        }
    }
    Ok(())
}

/// The f32 elements a CPU kernel reads from one of its inputs (`op` names the kernel in the
/// error); the entry points make inputs contiguous f32 first, so an error here is a caller bug.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &'static str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{op}: only f32 is supported") };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous")
    };
    Ok(&data[start..end])
}
