//! The one error type of the kernels crate, and the input checks its kernels share.

use candle_core::{CpuStorage, DType, Layout, Tensor};

/// Everything a kernel entry point can reject. Every variant names the kernel (`op`, e.g.
/// `"sinkhorn"`); the other fields are `&'static str` names and numbers, no formatted strings,
/// so callers can match on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A tensor or slice has the wrong rank or extent (`what` names it).
    #[error("{op}: shape mismatch in {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// The kernel.
        op: &'static str,
        /// Which quantity was checked, e.g. `"cost rank"` or `"row_lengths.len() (batch)"`.
        what: &'static str,
        /// The value the contract requires.
        expected: usize,
        /// The value that was passed.
        got: usize,
    },
    /// A per-item length is larger than the padded extent it indexes.
    #[error("{op}: {what}[{item}] = {length} exceeds the padded extent {max}")]
    LengthOutOfRange {
        /// The kernel.
        op: &'static str,
        /// `"row_lengths"` or `"col_lengths"`.
        what: &'static str,
        /// The batch item.
        item: usize,
        /// The length that was passed.
        length: usize,
        /// The padded extent (`n` for rows, `m` for columns).
        max: usize,
    },
    /// The kernel has no implementation for this dtype (all kernels: f32 only).
    #[error("{op}: unsupported dtype {dtype:?} (expected f32)")]
    UnsupportedDtype {
        /// The kernel.
        op: &'static str,
        /// The dtype that was passed.
        dtype: DType,
    },
    /// The inputs of one call live on different devices.
    #[error("{op}: inputs on different devices")]
    DeviceMismatch {
        /// The kernel.
        op: &'static str,
    },
    /// The tensor lives on a device this kernel has no implementation for in this build (a CUDA
    /// tensor without the `cuda` feature, or a CPU-only kernel given a GPU tensor).
    #[error("no cuda implementation for {op}")]
    NoCudaImplementation {
        /// The kernel's name, e.g. `"sinkhorn"`.
        op: &'static str,
    },
    /// NVRTC rejected a kernel source (CI's NVRTC check catches this before any GPU run).
    #[error("nvrtc failed to compile {module} for {arch}: {log}")]
    CudaCompile {
        /// The kernel module (`.cu` file stem).
        module: &'static str,
        /// The virtual architecture, e.g. `compute_90`.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// A configuration value is out of its domain.
    #[error("{op}: bad config: {field} {reason}")]
    BadConfig {
        /// The kernel.
        op: &'static str,
        /// The offending field.
        field: &'static str,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// An error from candle (tensor construction, copies, the op's own backend code).
    #[error("{op}: {source}")]
    Candle {
        /// The kernel.
        op: &'static str,
        /// What candle reported.
        source: candle_core::Error,
    },
}

/// Attaches the kernel's name to a candle error: `tensor_op().op("sinkhorn")?`.
pub(crate) trait InOp<T> {
    /// The result with a candle error turned into [`KernelError::Candle`] for `op`.
    fn op(self, op: &'static str) -> Result<T, KernelError>;
}

impl<T> InOp<T> for candle_core::Result<T> {
    fn op(self, op: &'static str) -> Result<T, KernelError> {
        self.map_err(|source| KernelError::Candle { op, source })
    }
}

/// The check every f32 kernel makes of its inputs: each is f32 and all share one device.
pub(crate) fn expect_f32_same_device(tensors: &[&Tensor], op: &'static str) -> Result<(), KernelError> {
    for t in tensors {
        if t.dtype() != DType::F32 {
            return Err(KernelError::UnsupportedDtype { op, dtype: t.dtype() });
        }
        if !t.device().same_device(tensors[0].device()) {
            return Err(KernelError::DeviceMismatch { op });
        }
    }
    Ok(())
}

/// [`expect_f32_same_device`] for the kernels that only exist on the CPU: a tensor elsewhere is
/// [`KernelError::NoCudaImplementation`].
pub(crate) fn expect_cpu_f32(tensors: &[&Tensor], op: &'static str) -> Result<(), KernelError> {
    expect_f32_same_device(tensors, op)?;
    if tensors.iter().any(|t| !t.device().is_cpu()) {
        return Err(KernelError::NoCudaImplementation { op });
    }
    Ok(())
}

/// The check a kernel with a CPU and a CUDA implementation makes of the device: CPU always
/// works, CUDA only in a build with the `cuda` feature; anything else is
/// [`KernelError::NoCudaImplementation`].
pub(crate) fn expect_supported_device(tensor: &Tensor, op: &'static str) -> Result<(), KernelError> {
    let supported = tensor.device().is_cpu() || (cfg!(feature = "cuda") && tensor.device().is_cuda());
    if supported { Ok(()) } else { Err(KernelError::NoCudaImplementation { op }) }
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
