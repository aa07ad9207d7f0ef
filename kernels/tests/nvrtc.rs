//! Every CUDA source compiles with NVRTC, for every architecture CI checks, without warnings,
//! and exports its `extern "C"` entries. Needs no GPU: libnvrtc only (feature `nvrtc-check`,
//! library from `LD_LIBRARY_PATH`; `scripts/nvrtc-check.sh` sets both up).
//!
//! Where the check cannot run (a build without the feature, or no libnvrtc), the test prints
//! why and passes, unless `OTKD_REQUIRE_NVRTC=1` (set by CI's NVRTC step): then it fails, so a
//! broken CI set-up cannot pass silently. With `OTKD_PTX_DIR=DIR` it writes each PTX to
//! `DIR/<module>.<arch>.ptx` for ptxas's resource report.

/// Whether the caller demands the check (CI's NVRTC step).
fn required() -> bool {
    std::env::var("OTKD_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

/// Skips with a printed reason, or fails when the check is required.
fn skip(reason: &str) {
    assert!(!required(), "OTKD_REQUIRE_NVRTC=1 but the NVRTC check cannot run: {reason}");
    eprintln!("skipped: {reason}");
}

#[cfg(any(feature = "nvrtc-check", feature = "cuda"))]
#[test]
fn every_kernel_compiles_with_nvrtc_without_warnings() {
    use otkd_kernels::cuda::{CHECKED_ARCHITECTURES, SOURCES, compile, nvrtc_available};

    if !nvrtc_available() {
        return skip("libnvrtc not found on LD_LIBRARY_PATH (scripts/nvrtc-check.sh installs it)");
    }
    let ptx_dir = std::env::var_os("OTKD_PTX_DIR").map(std::path::PathBuf::from);
    for source in SOURCES {
        for arch in CHECKED_ARCHITECTURES {
            let start = std::time::Instant::now();
            let compiled = compile(source, arch).unwrap_or_else(|e| panic!("{e}"));
            eprintln!(
                "{} {arch}: {} bytes of PTX in {:.2?}",
                source.module,
                compiled.ptx.len(),
                start.elapsed()
            );
            assert!(compiled.log.is_empty(), "{} {arch}: NVRTC warnings:\n{}", source.module, compiled.log);
            let target = format!(".target sm_{}", arch.trim_start_matches("compute_"));
            assert!(compiled.ptx.contains(&target), "{} {arch}: PTX lacks `{target}`", source.module);
            for entry in source.entries {
                assert!(
                    compiled.ptx.contains(&format!(".entry {entry}(")),
                    "{} {arch}: no extern \"C\" entry {entry}",
                    source.module
                );
            }
            if let Some(dir) = &ptx_dir {
                let path = dir.join(format!("{}.{arch}.ptx", source.module));
                std::fs::write(&path, &compiled.ptx).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}

#[cfg(any(feature = "nvrtc-check", feature = "cuda"))]
#[test]
fn a_broken_source_is_a_named_compile_error() {
    use otkd_kernels::cuda::{KernelSource, compile, nvrtc_available};

    if !nvrtc_available() {
        return skip("libnvrtc not found on LD_LIBRARY_PATH");
    }
    let broken = KernelSource {
        module: "broken",
        source: "extern \"C\" __global__ void broken_f32() { undefined_fn(); }",
        entries: &["broken_f32"],
    };
    let err = compile(&broken, "compute_90").expect_err("must not compile");
    let message = err.to_string();
    assert!(message.contains("broken") && message.contains("undefined_fn"), "{message}");
}

#[cfg(not(any(feature = "nvrtc-check", feature = "cuda")))]
#[test]
fn every_kernel_compiles_with_nvrtc_without_warnings() {
    skip("built without the `nvrtc-check` feature (run scripts/nvrtc-check.sh)");
}
