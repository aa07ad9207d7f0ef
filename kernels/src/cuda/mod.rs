//! The CUDA side of the kernels.
//!
//! - [`SOURCES`]: every kernel source (`kernels/cuda/*.cu`, included with `include_str!`) and
//!   its `extern "C"` entry points, in every build, so tools and tests can list them.
//! - `compile` (features `nvrtc-check` or `cuda`, so not linked here): NVRTC compilation of one
//!   source for one virtual architecture, returning the PTX and NVRTC's log. CI calls it through
//!   `tests/nvrtc.rs` for `compute_80` and `compute_90` without a GPU.
//! - (feature `cuda`) the launches behind the custom ops' `cuda_fwd`: the PTX is compiled once
//!   per (source, compute capability) per process and loaded once per device (candle's module
//!   cache), then launched through cudarc on the device's stream.

#[cfg(feature = "cuda")]
mod launch;

#[cfg(feature = "cuda")]
pub use launch::poison_outputs;
#[cfg(feature = "cuda")]
pub(crate) use launch::{kd_forward, kd_gradient, sinkhorn_fwd};

/// The header every kernel source includes.
const COMMON_HEADER: &str = include_str!("../../cuda/common.cuh");
/// The include line the sources use for [`COMMON_HEADER`].
const COMMON_INCLUDE: &str = "#include \"common.cuh\"";

/// One `.cu` file: a module of kernels.
#[derive(Debug)]
pub struct KernelSource {
    /// The module's name (the file stem), also the key of its loaded module on a device.
    pub module: &'static str,
    /// The `.cu` text as written (it includes `common.cuh`).
    pub source: &'static str,
    /// Its `extern "C" __global__` entry points, `<op>_<dtype>`.
    pub entries: &'static [&'static str],
}

/// Batched log-domain Sinkhorn (`kernels/cuda/sinkhorn.cu`).
pub const SINKHORN: KernelSource = KernelSource {
    module: "otkd_sinkhorn",
    source: include_str!("../../cuda/sinkhorn.cu"),
    entries: &["sinkhorn_smem_f32", "sinkhorn_gmem_f32"],
};

/// The fused KD losses (`kernels/cuda/kd.cu`).
pub const KD: KernelSource = KernelSource {
    module: "otkd_kd",
    source: include_str!("../../cuda/kd.cu"),
    entries: &["kd_rows_f32", "kd_reduce_f32", "kd_grad_f32"],
};

/// Every kernel source of the crate.
pub const SOURCES: [&KernelSource; 2] = [&SINKHORN, &KD];

/// The virtual architectures CI compiles every source for (A100 and H100/H200).
pub const CHECKED_ARCHITECTURES: [&str; 2] = ["compute_80", "compute_90"];

impl KernelSource {
    /// The translation unit NVRTC compiles: the source with its `#include "common.cuh"` line
    /// replaced by the header's text (NVRTC is given no include path, so that the compiled
    /// program depends on nothing but the crate).
    pub fn translation_unit(&self) -> String {
        self.source.replacen(COMMON_INCLUDE, COMMON_HEADER, 1)
    }
}

/// NVRTC's output for one source and architecture.
#[cfg(any(feature = "nvrtc-check", feature = "cuda"))]
#[derive(Debug)]
pub struct Compiled {
    /// The PTX text.
    pub ptx: String,
    /// NVRTC's log (warnings); empty for a clean compile.
    pub log: String,
}

/// Whether libnvrtc can be loaded (with the `nvrtc-check` feature it is loaded at run time
/// from `LD_LIBRARY_PATH`; with `cuda` it is linked, so this is always true).
#[cfg(any(feature = "nvrtc-check", feature = "cuda"))]
pub fn nvrtc_available() -> bool {
    #[cfg(feature = "nvrtc-check")]
    {
        // SAFETY: only tries to dlopen the library by its usual names.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }
    }
    #[cfg(not(feature = "nvrtc-check"))]
    {
        true
    }
}

/// Compiles `source` with NVRTC for the virtual architecture `arch` (e.g. `"compute_90"`).
/// A compile error is [`crate::KernelError::CudaCompile`] with NVRTC's log; a clean compile's
/// log is empty, warnings appear in [`Compiled::log`].
///
/// # Panics
///
/// With the `nvrtc-check` feature, when libnvrtc cannot be loaded (cudarc panics); check
/// [`nvrtc_available`] first.
#[cfg(any(feature = "nvrtc-check", feature = "cuda"))]
pub fn compile(source: &KernelSource, arch: &str) -> Result<Compiled, crate::KernelError> {
    use cudarc::nvrtc::result;
    use std::ffi::{CStr, CString};

    let failure =
        |log: String| crate::KernelError::CudaCompile { module: source.module, arch: arch.to_owned(), log };
    let text = |raw: Vec<std::ffi::c_char>| {
        // SAFETY: NVRTC returns a NUL-terminated string.
        unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().trim_end().to_owned()
    };
    let program_text =
        CString::new(source.translation_unit()).map_err(|_| failure("source contains NUL".into()))?;
    let name =
        CString::new(format!("{}.cu", source.module)).map_err(|_| failure("name contains NUL".into()))?;
    let program =
        result::create_program(&program_text, Some(&name)).map_err(|e| failure(format!("{e:?}")))?;
    let options = [format!("--gpu-architecture={arch}"), "--std=c++17".to_owned()];
    // SAFETY: `program` is a live NVRTC program; the log and PTX are read before it is destroyed.
    let outcome = unsafe { result::compile_program(program, &options) };
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(program) }.map(text).unwrap_or_default();
    let ptx = match outcome {
        // SAFETY: as above; the compile succeeded, so there is PTX.
        Ok(()) => unsafe { result::get_ptx(program) }.map(text).map_err(|e| failure(format!("{e:?}"))),
        Err(e) => Err(failure(format!("{e:?}: {log}"))),
    };
    // SAFETY: destroyed once, after its last use.
    unsafe { result::destroy_program(program) }.map_err(|e| failure(format!("{e:?}")))?;
    Ok(Compiled { ptx: ptx?, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_stamped_in_its_source() {
        for source in SOURCES {
            assert!(source.source.contains(COMMON_INCLUDE), "{} includes the common header", source.module);
            assert!(!source.translation_unit().contains(COMMON_INCLUDE));
            for entry in source.entries {
                assert!(entry.ends_with("_f32"), "{entry}: entries are named <op>_<dtype>");
                assert!(source.source.contains(entry), "{} has no entry {entry}", source.module);
            }
        }
    }
}
