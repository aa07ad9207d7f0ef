//! A bare-metal C firmware (`tests/c/firmware.c`, freestanding C, no libc) linked with the
//! `thumbv7em-none-eabihf` staticlib answers on QEMU's emulated Cortex-M4F (mps2-an386) bit for
//! bit like the Rust runtime on the host: the same embeddings, top-k ids and score bits, and
//! refusals, on the firmware's seeded blobs and queries. The blob sits in its own region, placed by
//! QEMU's loader, as in `firmware-tests`.
//!
//! Builds the staticlib (`cargo build -p otkd-capi --profile mcu --target thumbv7em-none-eabihf
//! --features dsp`, the command CI runs anyway), compiles the firmware with clang and links it
//! with the toolchain's `rust-lld`. Needs `clang` (`clang-14` or `clang`, or `$OTKD_CLANG`),
//! `qemu-system-arm` and the target: with `CI=true` a missing one fails this test; elsewhere it is
//! skipped with a loud message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{answer_lines, assert_lines, find_program, queries, require};

const TEST: &str = "c_firmware";
/// Where the firmware reads the blob and the job (`tests/c/firmware.c`).
const BLOB_ADDR: u32 = 0x0010_0000;
const JOB_ADDR: u32 = 0x2100_0000;

fn clang() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OTKD_CLANG") {
        return Some(PathBuf::from(path));
    }
    find_program("clang-14").or_else(|| find_program("clang"))
}

/// The toolchain's `rust-lld` (`rustc --print sysroot`, then `lib/rustlib/HOST/bin`).
fn rust_lld() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let text = |args: &[&str]| -> Option<String> {
        let out = Command::new(&rustc).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sysroot = text(&["--print", "sysroot"])?;
    let host = text(&["-vV"])?.lines().find_map(|l| l.strip_prefix("host: ").map(str::to_owned))?;
    let lld = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/rust-lld");
    lld.is_file().then_some(lld)
}

/// `cargo build -p otkd-capi --profile mcu --target thumbv7em-none-eabihf --features dsp`: the
/// staticlib's path.
fn thumb_staticlib() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "build",
            "-p",
            "otkd-capi",
            "--profile",
            "mcu",
            "--target",
            "thumbv7em-none-eabihf",
            "--features",
            "dsp",
        ])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The outer cargo's settings are for the host build.
    for var in ["CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_MAKEFLAGS"] {
        command.env_remove(var);
    }
    let output = command.output().map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the thumbv7em staticlib failed ({}); is the target installed? \
             rustup target add thumbv7em-none-eabihf",
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == "otkd_capi")
        .filter_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".a"))
                .map(PathBuf::from)
        })
        .next_back()
        .ok_or_else(|| "cargo reported no libotkd_capi.a".into())
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The job file the firmware reads: `words`, `k`, the count, then each query's length and bytes.
fn job(queries: &[String], words: usize, k: usize) -> Vec<u8> {
    let le = |n: usize| u32::try_from(n).expect("fits u32").to_le_bytes();
    let mut bytes = [le(words), le(k), le(queries.len())].concat();
    for q in queries {
        bytes.extend(le(q.len()));
        bytes.extend(q.as_bytes());
    }
    bytes
}

/// `(instructions per tick, mean encode instructions, mean CSLS search instructions)` from the
/// firmware's `calib` and `t I encode E search S` lines.
fn instructions(text: &str) -> (f64, f64, f64) {
    let numbers =
        |line: &str| -> Vec<f64> { line.split_whitespace().filter_map(|w| w.parse().ok()).collect() };
    let calib = text.lines().find(|l| l.starts_with("calib ")).map(numbers).unwrap_or_default();
    let per_tick = match calib[..] {
        [instructions, ticks] if ticks > 0.0 => instructions / ticks,
        _ => panic!("no calib line:\n{text}"),
    };
    let spans: Vec<Vec<f64>> = text.lines().filter(|l| l.starts_with("t ")).map(numbers).collect();
    let mean = |at: usize| {
        spans.iter().filter_map(|s| s.get(at)).sum::<f64>() / spans.len().max(1) as f64 * per_tick
    };
    (per_tick, mean(1), mean(2))
}

#[test]
fn c_firmware_on_the_cortex_m4f_answers_bit_for_bit_like_the_rust_runtime() {
    let (clang, lld, qemu) = (clang(), rust_lld(), find_program("qemu-system-arm"));
    let missing: Vec<&str> = [
        (clang.is_none(), "clang (apt-get install -y clang-14)"),
        (lld.is_none(), "rust-lld"),
        (qemu.is_none(), "qemu-system-arm (apt-get install -y qemu-system-arm)"),
    ]
    .into_iter()
    .filter_map(|(gone, name)| gone.then_some(name))
    .collect();
    let missing = (!missing.is_empty()).then(|| format!("needs {}", missing.join(", ")));
    if require(TEST, missing).is_none() {
        return;
    }
    let (Some(clang), Some(lld), Some(qemu)) = (clang, lld, qemu) else { return };

    let staticlib = thumb_staticlib().unwrap_or_else(|e| panic!("{e}"));
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_firmware");
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let (object, elf) = (dir.join("firmware.o"), dir.join("firmware.elf"));
    run(
        Command::new(&clang)
            .args([
                "--target=thumbv7em-none-eabihf",
                "-mcpu=cortex-m4",
                "-mfloat-abi=hard",
                "-mfpu=fpv4-sp-d16",
            ])
            .args(["-ffreestanding", "-nostdlib", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(crate_dir.join("include"))
            .arg("-c")
            .arg(crate_dir.join("tests/c/firmware.c"))
            .arg("-o")
            .arg(&object),
        "clang",
    );
    run(
        Command::new(&lld)
            .args(["-flavor", "gnu", "--gc-sections", "-T"])
            .arg(crate_dir.join("tests/c/firmware.ld"))
            .arg(&object)
            .arg(&staticlib)
            .arg("-o")
            .arg(&elf),
        "rust-lld",
    );

    let queries = queries();
    let tiny = otkd_runtime::testing::tiny_blob();
    let micro = otkd_runtime::testing::micro_blob();
    for (label, blob, words, k) in [
        ("seeded-tiny", &tiny, 32, 5),
        ("seeded-tiny-3-words", &tiny, 3, 64),
        ("seeded-micro", &micro, 32, 10),
    ] {
        let (blob_path, job_path) = (dir.join(format!("{label}.otkd")), dir.join(format!("{label}.job")));
        std::fs::write(&blob_path, blob).expect("writing the blob");
        std::fs::write(&job_path, job(&queries, words, k)).expect("writing the job");
        let started = Instant::now();
        let mut child = Command::new(&qemu)
            .args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic"])
            .args(["-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-device"])
            .arg(format!("loader,file={},addr={BLOB_ADDR:#x},force-raw=on", blob_path.display()))
            .arg("-device")
            .arg(format!("loader,file={},addr={JOB_ADDR:#x},force-raw=on", job_path.display()))
            .arg("-kernel")
            .arg(&elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting QEMU");
        while child.try_wait().expect("waiting for QEMU").is_none() {
            if started.elapsed() > Duration::from_secs(180) {
                let _ = child.kill();
                panic!("{label}: QEMU past 180 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("QEMU's output");
        // Semihosting output goes to QEMU's stdout or stderr depending on its console set-up.
        let text = [output.stdout, output.stderr].concat();
        let text = String::from_utf8(text).expect("ASCII output");
        assert!(output.status.success(), "{label}: QEMU exited with {}:\n{text}", output.status);
        let mut scratch = None;
        let printed: Vec<String> = text
            .lines()
            .filter(|l| ["info ", "q ", "done", "load "].iter().any(|p| l.starts_with(p)))
            .map(|l| match l.split_once(" scratch ") {
                Some((info, bytes)) if l.starts_with("info ") => {
                    scratch = bytes.parse::<usize>().ok();
                    info.to_owned()
                }
                _ => l.to_owned(),
            })
            .collect();
        let printed: Vec<&str> = printed.iter().map(String::as_str).collect();
        let mut want = answer_lines(blob, &queries, words, k, None);
        want.push("done".into());
        assert_lines(label, &printed, &want);
        let (per_tick, encode, search) = instructions(&text);
        common::say(&format!(
            "c_firmware {label}: {} queries on the emulated Cortex-M4F (scratch {} bytes on the target), \
             bit for bit like the Rust runtime; instructions per answered query (QEMU -icount shift=0, \
             SysTick, {per_tick:.2} instructions/tick): encode {encode:.0} + search (CSLS) {search:.0} = {:.0} \
             mean; QEMU wall {:.2} s",
            queries.len(),
            scratch.unwrap_or(0),
            encode + search,
            started.elapsed().as_secs_f64()
        ));
    }
}
