//! otkd kernels: the numerical hot spots of OT distillation.
//!
//! Roles: each kernel = one contract, a CPU reference and (feature `cuda`) a CUDA
//! implementation, as one candle custom op. The contract lives in the kernel's module docs; the
//! CPU reference (`cpu_fwd`) is the ground truth that the CUDA implementation (`cuda_fwd`, a
//! kernel from `kernels/cuda/`, compiled at run time by NVRTC) is tested against; a backend
//! that does not exist is the named error [`KernelError::NoCudaImplementation`], never a
//! silent fallback.
//!
//! - [`sinkhorn`](mod@sinkhorn): batched, masked, log-domain entropic OT ([`sinkhorn()`]: plan,
//!   loss, marginal error and iterations in one op; [`sinkhorn_log_domain`]: the same with host
//!   statistics), plus the same maths from differentiable candle ops
//!   ([`sinkhorn_log_domain_unrolled`]) for the `--ot-unrolled` ablation.
//! - [`kd`]: the sentence-level KD losses (MSE, in-batch KL, InfoNCE) with a fused backward
//!   ([`kd_loss`]), and their composed-ops twin ([`kd_loss_composed`]).
//! - [`cuda`]: the CUDA sources and their NVRTC compilation (features `nvrtc-check`, `cuda`).
//! - [`gelu`](mod@gelu): the exact (erf) GELU of the teacher and the student, as differentiable
//!   tensor ops ([`gelu_erf`], [`bias_gelu_erf`]) and as scalars ([`gelu::gelu`],
//!   [`gelu::gelu_derivative`]) for code that loops over its own buffers.
//! - [`layer_norm`]: residual add + LayerNorm in one pass ([`AddLayerNorm`]), for the teacher.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use otkd_kernels::{sinkhorn_log_domain, SinkhornConfig};
//!
//! // One batch item, 2 teacher tokens x 3 student tokens, the last student token is padding.
//! let cost = Tensor::new(&[[[0.0f32, 1.0, 0.3], [1.0, 0.0, 0.7]]], &Device::Cpu)?;
//! let out = sinkhorn_log_domain(&cost, &[2], &[2], &SinkhornConfig::default())?;
//! let plan = out.plan.to_vec3::<f32>()?;
//! assert_eq!(plan[0][0][2], 0.0); // padding column is exactly zero
//! assert!(out.marginal_error[0] < 1e-3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(all(feature = "nvrtc-check", feature = "cuda"))]
compile_error!(
    "features `nvrtc-check` and `cuda` are exclusive: cudarc cannot load libnvrtc at run time and link it"
);

pub mod cuda;
pub mod error;
pub mod gelu;
pub mod kd;
pub mod layer_norm;
pub mod sinkhorn;

pub use error::KernelError;
pub use gelu::{bias_gelu_erf, gelu_erf};
pub use kd::{KdTerm, kd_loss, kd_loss_composed};
pub use layer_norm::AddLayerNorm;
pub use sinkhorn::{
    SinkhornConfig, SinkhornOutput, SinkhornPlan, sinkhorn, sinkhorn_log_domain, sinkhorn_log_domain_unrolled,
};
