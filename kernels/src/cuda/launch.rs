//! Launches behind the custom ops' `cuda_fwd` (feature `cuda`; built on the GPU machine only,
//! since candle's CUDA backend needs nvcc at build time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Shape};
use cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg};

use super::{KD, KernelSource, SINKHORN};
use crate::kd::{KdForward, KdGradient, ROW_STATISTICS};
use crate::sinkhorn::SinkhornOp;

/// Threads per block of every kernel (the `__launch_bounds__` of the sources).
const THREADS: u32 = 256;
/// Dynamic shared memory every GPU since compute 7.0 gives a block without an opt-in.
const SHARED_LIMIT: usize = 48 * 1024;
/// `OTKD_REDUCE_SCRATCH` of `common.cuh`.
const REDUCE_SCRATCH: usize = 64;

/// Whether op outputs start as NaN instead of uninitialised memory ([`poison_outputs`]).
static POISON: AtomicBool = AtomicBool::new(false);

/// Makes every output buffer of the CUDA ops start as NaN (a host-to-device copy per
/// allocation) instead of uninitialised memory, so that tests can check that a kernel wrote
/// every element. Off by default; for tests only.
pub fn poison_outputs(enabled: bool) {
    POISON.store(enabled, Ordering::Relaxed);
}

/// An output buffer of `len` floats that the kernels about to run overwrite completely.
fn output(device: &CudaDevice, len: usize) -> candle_core::Result<CudaSlice<f32>> {
    if POISON.load(Ordering::Relaxed) {
        return device.clone_htod(&vec![f32::NAN; len]);
    }
    // SAFETY: every caller's kernels write all `len` elements before anything reads them (the
    // SAFETY comment at each call says how); poisoned runs of the parity tests check it.
    unsafe { device.alloc::<f32>(len) }
}

/// PTX per (module, compute capability), compiled once per process: NVRTC takes ~0.1-0.5 s.
fn ptx(source: &'static KernelSource, capability: (i32, i32)) -> candle_core::Result<Arc<str>> {
    type Cache = Mutex<HashMap<(&'static str, (i32, i32)), Arc<str>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let key = (source.module, capability);
    if let Some(ptx) = cache.lock().expect("ptx cache poisoned").get(&key) {
        return Ok(ptx.clone());
    }
    let arch = format!("compute_{}{}", capability.0, capability.1);
    let compiled = super::compile(source, &arch).map_err(candle_core::Error::wrap)?;
    let ptx: Arc<str> = compiled.ptx.into();
    cache.lock().expect("ptx cache poisoned").insert(key, ptx.clone());
    Ok(ptx)
}

/// The entry `entry` of `source` on `device`; candle keeps the loaded module per device.
/// Launch it on `device.cuda_stream()`, the stream candle's own kernels use.
fn function(
    device: &CudaDevice,
    source: &'static KernelSource,
    entry: &str,
) -> candle_core::Result<CudaFunction> {
    let capability = device.cuda_stream().context().compute_capability().w()?;
    let ptx = ptx(source, capability)?;
    Ok(device.get_or_load_custom_func(entry, source.module, &ptx)?.into_cuda_function())
}

/// The contiguous f32 elements of an input (`op` names the kernel in the error).
fn contiguous<'a>(
    storage: &'a CudaStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<CudaView<'a, f32>> {
    let slice: &CudaSlice<f32> = storage.as_cuda_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => candle_core::bail!("{op}: inputs must be contiguous"),
    }
}

/// `value` as the kernels' `int`, or a named error.
fn int(value: usize, what: &str, op: &str) -> candle_core::Result<i32> {
    i32::try_from(value).map_err(|_| candle_core::Error::Msg(format!("{op}: {what} = {value} exceeds i32")))
}

pub(crate) fn sinkhorn_fwd(
    op: &SinkhornOp,
    storage: &CudaStorage,
    layout: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    const OP: &str = "sinkhorn";
    let device = storage.device().clone();
    let cost = contiguous(storage, layout, OP)?;
    let (b, n, m) = op.shape;
    let out_len = op.output_len();
    // Fully written: each block writes its whole n x m plan slab (zeros outside the real block)
    // and its three statistics; with b = 0 there are none.
    let mut out = output(&device, out_len)?;
    if b > 0 {
        let potentials = 2 * n + m + REDUCE_SCRATCH;
        let staged = (potentials + n * m) * size_of::<f32>();
        let (entry, shared) = if staged <= SHARED_LIMIT {
            ("sinkhorn_smem_f32", staged)
        } else if potentials * size_of::<f32>() <= SHARED_LIMIT {
            ("sinkhorn_gmem_f32", potentials * size_of::<f32>())
        } else {
            candle_core::bail!(
                "{OP}: n = {n}, m = {m} is too large for the CUDA kernel (potentials over 48 KiB)"
            )
        };
        let rows = device.clone_htod(&op.row_lengths)?;
        let cols = device.clone_htod(&op.col_lengths)?;
        let func = function(&device, &SINKHORN, entry)?;
        let stream = device.cuda_stream();
        let config = LaunchConfig {
            grid_dim: (int(b, "batch", OP)? as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let (batch, n, m) = (int(b, "batch", OP)?, int(n, "n", OP)?, int(m, "m", OP)?);
        let (epsilon, max_iterations, tolerance) =
            (op.config.epsilon, op.config.max_iterations, op.config.tolerance);
        let mut builder = stream.launch_builder(&func);
        builder.arg(&cost).arg(&rows).arg(&cols).arg(&mut out);
        builder.arg(&batch).arg(&n).arg(&m).arg(&epsilon).arg(&max_iterations).arg(&tolerance);
        // SAFETY: the arguments match `sinkhorn_{smem,gmem}_f32` in order and type (const
        // float*, const unsigned* x2, float*, int x3, float, unsigned, float); `cost` holds
        // b*n*m floats, the lengths b values each <= n / m (checked by `sinkhorn`), `out`
        // b*n*m + 3b floats; the shared memory size is the one the kernel's layout needs.
        unsafe { builder.launch(config) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, device), Shape::from(out_len)))
}

pub(crate) fn kd_forward(
    op: &KdForward,
    s_storage: &CudaStorage,
    s_layout: &Layout,
    t_storage: &CudaStorage,
    t_layout: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    const OP: &str = "kd_loss";
    let device = s_storage.device().clone();
    let (s, t) = (contiguous(s_storage, s_layout, OP)?, contiguous(t_storage, t_layout, OP)?);
    let (b, d) = op.shape;
    let shared = (3 * b + REDUCE_SCRATCH) * size_of::<f32>();
    if shared > SHARED_LIMIT {
        candle_core::bail!("{OP}: batch {b} is too large for the CUDA kernel (rows over 48 KiB)")
    }
    let out_len = 1 + ROW_STATISTICS * b;
    // Fully written: kd_rows_f32 writes out[1..] (four statistics per row, b >= 1 rows), then
    // kd_reduce_f32 writes out[0].
    let mut out = output(&device, out_len)?;
    let (batch, dim) = (int(b, "batch", OP)?, int(d, "dimension", OP)?);
    let (inv_temperature, variant) = (op.term.inv_temperature, op.term.variant);
    let stream = device.cuda_stream();
    let rows = function(&device, &KD, "kd_rows_f32")?;
    let mut builder = stream.launch_builder(&rows);
    builder.arg(&s).arg(&t).arg(&mut out).arg(&batch).arg(&dim).arg(&inv_temperature).arg(&variant);
    let config = LaunchConfig {
        grid_dim: (batch as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: shared as u32,
    };
    // SAFETY: arguments match kd_rows_f32 (const float* x2, float*, int x2, float, int); s and t
    // hold b*d floats, out 1 + 4b; shared memory is z_row, y_row, z_col (b each) + scratch.
    unsafe { builder.launch(config) }.w()?;
    let reduce = function(&device, &KD, "kd_reduce_f32")?;
    let mut builder = stream.launch_builder(&reduce);
    builder.arg(&mut out).arg(&batch);
    let config = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: arguments match kd_reduce_f32 (float*, int); out holds 1 + 4b floats, written by
    // the launch before it on the same stream.
    unsafe { builder.launch(config) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(out, device), Shape::from(out_len)))
}

pub(crate) fn kd_gradient(
    op: &KdGradient,
    s_storage: &CudaStorage,
    s_layout: &Layout,
    t_storage: &CudaStorage,
    t_layout: &Layout,
    f_storage: &CudaStorage,
    f_layout: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    const OP: &str = "kd_loss";
    let device = s_storage.device().clone();
    let (s, t) = (contiguous(s_storage, s_layout, OP)?, contiguous(t_storage, t_layout, OP)?);
    let forward = contiguous(f_storage, f_layout, OP)?;
    let (b, d) = op.forward.shape;
    let shared = (2 * b + REDUCE_SCRATCH) * size_of::<f32>();
    if shared > SHARED_LIMIT {
        candle_core::bail!("{OP}: batch {b} is too large for the CUDA kernel (rows over 48 KiB)")
    }
    // Fully written: block i of kd_grad_f32 writes row i, all d columns.
    let mut grad = output(&device, b * d)?;
    let (batch, dim) = (int(b, "batch", OP)?, int(d, "dimension", OP)?);
    let (inv_temperature, variant) = (op.forward.term.inv_temperature, op.forward.term.variant);
    let func = function(&device, &KD, "kd_grad_f32")?;
    let stream = device.cuda_stream();
    let mut builder = stream.launch_builder(&func);
    builder.arg(&s).arg(&t).arg(&forward).arg(&mut grad);
    builder.arg(&batch).arg(&dim).arg(&inv_temperature).arg(&variant);
    let config = LaunchConfig {
        grid_dim: (batch as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: shared as u32,
    };
    // SAFETY: arguments match kd_grad_f32 (const float* x3, float*, int x2, float, int); s, t
    // and grad hold b*d floats, forward 1 + 4b (the forward op's output); shared memory is
    // delta and p (b each) + scratch.
    unsafe { builder.launch(config) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(grad, device), Shape::from((b, d))))
}
