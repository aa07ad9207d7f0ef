//! Kernel benchmarks on a CUDA device (feature `cuda`): the fused custom ops against the same
//! maths as composed candle ops on the same device. Prints one markdown table; with
//! `OTKD_BENCH_JSON=FILE` it also writes one JSON object per row (the GPU bundle's `run.sh`
//! puts them next to the PyTorch peer's, `scripts/gpu/torch_kernels.py`).
//!
//! `cargo bench -p otkd-kernels --features cuda --bench gpu` (built by scripts/gpu-bundle.sh,
//! run by its run.sh; also scripts/gpu-check.sh).
//!
//! Each time is the median of `REPS` timed calls after `WARMUP` untimed ones, each call
//! synchronised, in microseconds per solve (one Sinkhorn solve of the whole batch, or one
//! forward + backward of a KD loss). At these sizes a solve is bound by launches, not by memory
//! traffic, so the table counts them: [`launches`] intercepts `cuLaunchKernel` (every kernel
//! candle and the custom ops launch through cudarc) and `cublasGemmStridedBatchedEx` (candle's
//! f32 matmul; each call launches one or more kernels inside cuBLAS, which the driver-level
//! counter cannot see). Only the Sinkhorn rows get a bandwidth: the bytes one solve must move
//! (read the cost, write the plan) per second, against a measured device-to-device copy.

use std::io::Write as _;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use otkd_kernels::{
    KdTerm, SinkhornConfig, kd_loss, kd_loss_composed, sinkhorn, sinkhorn_log_domain_unrolled,
};

const WARMUP: usize = 3;
const REPS: usize = 20;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Counters of kernel launches, by interposition: this executable defines the two driver and
/// cuBLAS entry points cudarc calls (the dynamic linker binds cudarc's calls to these first),
/// counts each call and forwards it to the real function found with `dlsym(RTLD_NEXT, ..)`.
mod launches {
    use std::ffi::{CStr, c_char, c_int, c_longlong, c_uint, c_void};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use cudarc::cublas::sys::{
        cublasComputeType_t, cublasGemmAlgo_t, cublasHandle_t, cublasOperation_t, cublasStatus_t,
        cudaDataType,
    };
    use cudarc::driver::sys::{CUfunction, CUresult, CUstream};

    /// `cuLaunchKernel` calls so far.
    pub static KERNELS: AtomicU64 = AtomicU64::new(0);
    /// `cublasGemmStridedBatchedEx` calls so far.
    pub static GEMMS: AtomicU64 = AtomicU64::new(0);

    unsafe extern "C" {
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    /// glibc's `RTLD_NEXT`: the next object in the search order after this executable.
    const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;

    /// The real function `name` (panics if the library that should define it is not loaded).
    fn next(name: &CStr) -> *mut c_void {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no other precondition.
        let f = unsafe { dlsym(RTLD_NEXT, name.as_ptr()) };
        assert!(!f.is_null(), "launch counter: {name:?} not found after this executable");
        f
    }

    type Launch = unsafe extern "C" fn(
        CUfunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        CUstream,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CUresult;

    /// Counts, then forwards to libcuda's `cuLaunchKernel`.
    ///
    /// # Safety
    /// The driver's contract for `cuLaunchKernel`; the arguments are passed on unchanged.
    #[allow(non_snake_case, clippy::too_many_arguments)]
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn cuLaunchKernel(
        f: CUfunction,
        grid_x: c_uint,
        grid_y: c_uint,
        grid_z: c_uint,
        block_x: c_uint,
        block_y: c_uint,
        block_z: c_uint,
        shared_bytes: c_uint,
        stream: CUstream,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> CUresult {
        static REAL: OnceLock<usize> = OnceLock::new();
        KERNELS.fetch_add(1, Ordering::Relaxed);
        let real = *REAL.get_or_init(|| next(c"cuLaunchKernel") as usize);
        // SAFETY: `real` is libcuda's cuLaunchKernel, whose signature `Launch` restates.
        unsafe {
            let real: Launch = std::mem::transmute(real);
            real(f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes, stream, params, extra)
        }
    }

    type Gemm = unsafe extern "C" fn(
        cublasHandle_t,
        cublasOperation_t,
        cublasOperation_t,
        c_int,
        c_int,
        c_int,
        *const c_void,
        *const c_void,
        cudaDataType,
        c_int,
        c_longlong,
        *const c_void,
        cudaDataType,
        c_int,
        c_longlong,
        *const c_void,
        *mut c_void,
        cudaDataType,
        c_int,
        c_longlong,
        c_int,
        cublasComputeType_t,
        cublasGemmAlgo_t,
    ) -> cublasStatus_t;

    /// Counts, then forwards to libcublas's `cublasGemmStridedBatchedEx`.
    ///
    /// # Safety
    /// cuBLAS's contract for `cublasGemmStridedBatchedEx`; the arguments are passed on unchanged.
    #[allow(non_snake_case, clippy::too_many_arguments)]
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn cublasGemmStridedBatchedEx(
        handle: cublasHandle_t,
        transa: cublasOperation_t,
        transb: cublasOperation_t,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: *const c_void,
        a: *const c_void,
        a_type: cudaDataType,
        lda: c_int,
        stride_a: c_longlong,
        b: *const c_void,
        b_type: cudaDataType,
        ldb: c_int,
        stride_b: c_longlong,
        beta: *const c_void,
        c: *mut c_void,
        c_type: cudaDataType,
        ldc: c_int,
        stride_c: c_longlong,
        batch: c_int,
        compute: cublasComputeType_t,
        algo: cublasGemmAlgo_t,
    ) -> cublasStatus_t {
        static REAL: OnceLock<usize> = OnceLock::new();
        GEMMS.fetch_add(1, Ordering::Relaxed);
        let real = *REAL.get_or_init(|| next(c"cublasGemmStridedBatchedEx") as usize);
        // SAFETY: `real` is libcublas's cublasGemmStridedBatchedEx, whose signature `Gemm` restates.
        unsafe {
            let real: Gemm = std::mem::transmute(real);
            real(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, stride_a, b, b_type, ldb, stride_b,
                beta, c, c_type, ldc, stride_c, batch, compute, algo,
            )
        }
    }

    /// `(kernel launches, cuBLAS GEMM calls)` so far.
    pub fn now() -> (u64, u64) {
        (KERNELS.load(Ordering::Relaxed), GEMMS.load(Ordering::Relaxed))
    }
}

/// One measured implementation: median µs per solve, and the launches of one solve.
#[derive(Clone, Copy)]
struct Measured {
    micros: f64,
    kernels: u64,
    gemms: u64,
}

impl Measured {
    fn launches(&self) -> String {
        if self.gemms == 0 {
            self.kernels.to_string()
        } else {
            format!("{} + {} GEMM", self.kernels, self.gemms)
        }
    }
}

/// Median time of `f` and its launches, synchronising the device after each call.
fn measure(device: &Device, reps: usize, mut f: impl FnMut() -> BenchResult<()>) -> BenchResult<Measured> {
    for _ in 0..WARMUP {
        f()?;
    }
    device.synchronize()?;
    let (kernels, gemms) = launches::now();
    f()?;
    device.synchronize()?;
    let (kernels_after, gemms_after) = launches::now();
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        samples.push(start.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(Measured {
        micros: samples[samples.len() / 2] * 1e6,
        kernels: kernels_after - kernels,
        gemms: gemms_after - gemms,
    })
}

/// Device-to-device copy bandwidth (bytes read + written per second) of a 1 GiB tensor.
fn copy_bandwidth(device: &Device) -> BenchResult<f64> {
    let elements = 256 << 20;
    let source = Tensor::zeros(elements, DType::F32, device)?;
    let seconds = measure(device, 10, || {
        source.copy()?;
        Ok(())
    })?
    .micros
        / 1e6;
    Ok(2.0 * (elements * 4) as f64 / seconds)
}

fn random_tensor(shape: &[usize], lo: f32, hi: f32, seed: u64, device: &Device) -> BenchResult<Tensor> {
    let mut state = seed | 1;
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// One table row, printed and (with `OTKD_BENCH_JSON`) written as JSON.
struct Row<'a> {
    kernel: &'a str,
    shape: String,
    fused: Measured,
    composed: Measured,
    bandwidth: Option<(f64, f64)>,
}

impl Row<'_> {
    fn print(&self, json: &mut Option<std::fs::File>) -> BenchResult<()> {
        let bandwidth = self
            .bandwidth
            .map_or("-".to_string(), |(gbs, copy)| format!("{:.0} ({:.1}%)", gbs / 1e9, 100.0 * gbs / copy));
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {} | {:.1}x | {} |",
            self.kernel,
            self.shape,
            self.fused.micros,
            self.fused.launches(),
            self.composed.micros,
            self.composed.launches(),
            self.composed.micros / self.fused.micros,
            bandwidth
        );
        if let Some(file) = json {
            writeln!(
                file,
                r#"{{"kernel":"{}","shape":"{}","fused_us":{:.3},"fused_kernels":{},"fused_gemms":{},"composed_us":{:.3},"composed_kernels":{},"composed_gemms":{},"floor_gbs":{}}}"#,
                self.kernel,
                self.shape,
                self.fused.micros,
                self.fused.kernels,
                self.fused.gemms,
                self.composed.micros,
                self.composed.kernels,
                self.composed.gemms,
                self.bandwidth.map_or("null".to_string(), |(gbs, _)| format!("{:.1}", gbs / 1e9))
            )?;
        }
        Ok(())
    }
}

fn main() -> BenchResult<()> {
    let device = match Device::new_cuda(0) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("gpu bench: no CUDA device ({e}); nothing measured");
            std::process::exit(2);
        }
    };
    let mut json = match std::env::var_os("OTKD_BENCH_JSON") {
        Some(path) => Some(std::fs::File::create(path)?),
        None => None,
    };
    let copy = copy_bandwidth(&device)?;
    println!("device-to-device copy: {:.0} GB/s (read + write)\n", copy / 1e9);
    println!(
        "| kernel | shape | fused µs/solve | fused launches | composed ops µs/solve | composed launches | composed / fused | floor GB/s (% of copy) |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    let config = SinkhornConfig { epsilon: 0.05, max_iterations: 100, tolerance: 0.0 };
    for (b, n, m) in [(256usize, 64usize, 64usize), (64, 256, 256)] {
        let cost = random_tensor(&[b, n, m], 0.0, 2.0, 0x5eed ^ (b * n) as u64, &device)?;
        let (rows, cols) = (vec![n; b], vec![m; b]);
        let fused = measure(&device, REPS, || {
            sinkhorn(&cost, &rows, &cols, &config)?;
            Ok(())
        })?;
        let composed = measure(&device, 5, || {
            sinkhorn_log_domain_unrolled(&cost, &rows, &cols, &config)?;
            Ok(())
        })?;
        let floor = 2.0 * (b * n * m * 4) as f64 / (fused.micros / 1e6);
        Row {
            kernel: "sinkhorn, 100 it",
            shape: format!("{b}x{n}x{m}"),
            fused,
            composed,
            bandwidth: Some((floor, copy)),
        }
        .print(&mut json)?;
    }

    let (b, d) = (64usize, 384usize);
    let student = Var::from_tensor(&random_tensor(&[b, d], -0.05, 0.05, 1, &device)?)?;
    let teacher = random_tensor(&[b, d], -0.05, 0.05, 2, &device)?;
    for (name, term) in [
        ("kd mse, fwd+bwd", KdTerm::Mse),
        ("kd kl, fwd+bwd", KdTerm::Kl { temperature: 0.05 }),
        ("kd infonce, fwd+bwd", KdTerm::InfoNce { temperature: 0.05 }),
    ] {
        let step = |loss: Tensor| -> BenchResult<()> {
            loss.backward()?;
            Ok(())
        };
        let fused = measure(&device, REPS, || step(kd_loss(student.as_tensor(), &teacher, term)?))?;
        let composed =
            measure(&device, REPS, || step(kd_loss_composed(student.as_tensor(), &teacher, term)?))?;
        Row { kernel: name, shape: format!("{b}x{d}"), fused, composed, bandwidth: None }.print(&mut json)?;
    }
    Ok(())
}
