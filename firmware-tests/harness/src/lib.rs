//! The host side of otkd's firmware tests: builds the firmware (`firmware-tests/`, its own
//! workspace, target `thumbv7em-none-eabihf`) with a given blob, runs its ELFs in QEMU
//! (`mps2-an386`, Cortex-M4F) under a time limit, decodes their defmt output with `defmt-print`,
//! and parses what the firmware printed: per query the top-k ids and score bits, the stack
//! high-water mark and SysTick ticks (instructions under `-icount shift=0`). It also reads the
//! ELF's section sizes (flash and RAM) and symbols (the blob region), and makes corrupted blobs.
//!
//! The firmware does not contain the blob: [`run`] has QEMU's loader place a blob file in the
//! firmware's blob region (`memory.x`'s `BLOB`, found by its symbols with [`blob_region`]), or
//! nothing (an erased region).
//!
//! Roles: [`tools`] (QEMU and defmt-print, or how to install them), [`build`] (cargo, once per
//! blob), [`run`] (QEMU + defmt-print), [`parse`] ([`Report`]), [`sections`] ([`Sizes`]),
//! [`blob_region`], [`corrupt_blob`]. The host's answers are the firmware's own reference ([`answers`],
//! shared by `#[path]` with its build script), the exit codes the firmware's own ([`code`], shared
//! by `#[path]` with the firmware), and the seeded blobs the runtime's test fixture
//! (`otkd_runtime::testing`, as in the build script).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "../../gen/answers.rs"]
pub mod answers;
#[path = "../../src/code.rs"]
pub mod code;

/// Words the firmware's scratch memory holds (its build script's `WORDS`), before the blob's own
/// `max_words` cap.
pub const DEVICE_WORDS: usize = 32;
/// Documents the firmware reports per query and scoring (its build script's `K`).
pub const K: usize = 5;
/// The core clock the Cortex-M4F is assumed to run at for time estimates.
pub const ESTIMATE_HZ: f64 = 168e6;

/// The firmware's folder.
pub fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the firmware's builds and this harness's files go (gitignored).
pub fn target_dir() -> PathBuf {
    firmware_dir().join("target")
}

/// The external programs the harness runs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `qemu-system-arm`.
    pub qemu: PathBuf,
    /// `defmt-print`.
    pub defmt_print: PathBuf,
}

/// How to install what is missing.
pub const INSTALL: &str = "install QEMU with `apt-get install -y qemu-system-arm` (Debian/Ubuntu), \
     defmt-print with `cargo install defmt-print --version 1.2.0 --locked`, and the target with \
     `rustup target add thumbv7em-none-eabihf` (.ci/run does all three)";

fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    {
        dirs.push(home.join("bin"));
    }
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

/// QEMU and defmt-print, or a message naming what is missing and how to install it.
pub fn tools() -> Result<Tools, String> {
    match (find("qemu-system-arm"), find("defmt-print")) {
        (Some(qemu), Some(defmt_print)) => Ok(Tools { qemu, defmt_print }),
        (qemu, defmt) => {
            let missing: Vec<&str> = [(qemu.is_none(), "qemu-system-arm"), (defmt.is_none(), "defmt-print")]
                .into_iter()
                .filter_map(|(gone, name)| gone.then_some(name))
                .collect();
            Err(format!("firmware tests need {} (not found on PATH): {INSTALL}", missing.join(" and ")))
        }
    }
}

/// True when running in CI (`CI` set to anything but `false`/`0`/empty).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The tools, or: in CI a panic (a missing tool never passes there), elsewhere a loud skip
/// message and `None`.
///
/// # Panics
/// In CI, when a tool is missing.
pub fn require_tools(test: &str) -> Option<Tools> {
    match tools() {
        Ok(tools) => Some(tools),
        Err(message) if in_ci() => panic!("{test}: {message}"),
        Err(message) => {
            eprintln!("\n==== SKIPPED {test}: {message}. (Not skipped when CI=true: there it fails.) ====\n");
            None
        }
    }
}

/// The ELFs of one firmware build, copied out of cargo's target dir so that later builds with
/// other blobs do not overwrite them, and the blob file QEMU places in their blob region.
#[derive(Clone, Debug)]
pub struct Build {
    /// The query program (`src/main.rs`).
    pub program: PathBuf,
    /// The on-device defmt-test suite (`tests/on_device.rs`).
    pub on_device_tests: PathBuf,
    /// The blob the on-device tests' golden answers were made for (not embedded in either ELF).
    pub blob: Vec<u8>,
    /// That blob as a file, for QEMU's loader.
    pub blob_file: PathBuf,
    /// Wall time of the cargo build.
    pub seconds: f64,
}

static BUILDS: Mutex<Option<HashMap<String, Build>>> = Mutex::new(None);

/// Builds the firmware (release) with `blob` embedded (written to a file and passed as
/// `OTKD_FIRMWARE_BLOB`), once per `label` per process.
pub fn build(label: &str, blob: &[u8]) -> Result<Build, String> {
    build_with_features(label, blob, &[])
}

/// [`build`] with the firmware's cargo `features` (e.g. `nano`: static scratch memory sized for
/// the `nano` preset).
pub fn build_with_features(label: &str, blob: &[u8], features: &[&str]) -> Result<Build, String> {
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let builds = builds.get_or_insert_with(HashMap::new);
    if let Some(build) = builds.get(label) {
        return Ok(build.clone());
    }
    let dir = target_dir().join("harness").join(label);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let blob_path = dir.join("blob.otkd");
    std::fs::write(&blob_path, blob).map_err(|e| format!("{}: {e}", blob_path.display()))?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let mut command = Command::new(cargo);
    command
        .current_dir(firmware_dir())
        .args(["build", "--release", "--bins", "--tests", "--message-format=json-render-diagnostics"])
        .args(if features.is_empty() {
            Vec::new()
        } else {
            vec!["--features".to_string(), features.join(",")]
        })
        .arg("--target-dir")
        .arg(target_dir())
        .env("OTKD_FIRMWARE_BLOB", &blob_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The outer cargo's settings are for the host workspace, not for the thumbv7em build.
    for var in
        ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_MAKEFLAGS"]
    {
        command.env_remove(var);
    }
    let output = command.output().map_err(|e| format!("running cargo for the firmware: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the firmware failed ({}); is the target installed? {INSTALL}",
            output.status
        ));
    }
    let mut program = None;
    let mut tests = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(exe), Some(name)) = (message["executable"].as_str(), message["target"]["name"].as_str())
        else {
            continue;
        };
        match name {
            "otkd-firmware" => program = Some(PathBuf::from(exe)),
            "on_device" => tests = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    let copy = |from: Option<PathBuf>, name: &str| -> Result<PathBuf, String> {
        let from = from.ok_or_else(|| format!("cargo reported no {name} executable"))?;
        let to = dir.join(name);
        std::fs::copy(&from, &to).map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))?;
        Ok(to)
    };
    let build = Build {
        program: copy(program, "otkd-firmware")?,
        on_device_tests: copy(tests, "on_device")?,
        blob: blob.to_vec(),
        blob_file: blob_path,
        seconds: started.elapsed().as_secs_f64(),
    };
    builds.insert(label.to_owned(), build.clone());
    Ok(build)
}

/// One QEMU run.
#[derive(Clone, Debug)]
pub struct Run {
    /// QEMU's exit code (the firmware's semihosting exit code); `None` when killed at the limit.
    pub code: Option<i32>,
    /// The decoded log, one line per defmt message (`LEVEL message`).
    pub lines: Vec<String>,
    /// Wall time of the QEMU run.
    pub seconds: f64,
}

impl Run {
    /// The log as one text, for failure messages.
    pub fn log(&self) -> String {
        self.lines.join("\n")
    }
}

/// Runs `elf` on mps2-an386 with semihosting and `-icount shift=0`, with the file `blob` placed
/// at the start of its blob region by QEMU's loader (`None`: nothing placed, the region reads as
/// zeros), kills it after `limit`, and decodes its defmt frames with defmt-print.
pub fn run(tools: &Tools, elf: &Path, blob: Option<&Path>, limit: Duration) -> Result<Run, String> {
    let mut loader = Vec::new();
    if let Some(blob) = blob {
        let bytes = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
        let (start, end) = blob_region(&bytes)?;
        let len = std::fs::metadata(blob).map_err(|e| format!("{}: {e}", blob.display()))?.len();
        if len > end - start {
            return Err(format!("{}: {len} bytes, over the blob region's {}", blob.display(), end - start));
        }
        loader.push("-device".to_owned());
        loader.push(format!("loader,file={},addr={start:#x},force-raw=on", blob.display()));
    }
    // One file per run: tests run the same ELF in parallel (with different blobs).
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let raw_path = elf.with_extension(format!("run{n}.defmt"));
    let raw_file = std::fs::File::create(&raw_path).map_err(|e| format!("{}: {e}", raw_path.display()))?;
    let started = Instant::now();
    let mut qemu = Command::new(&tools.qemu)
        .args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-icount", "shift=0"])
        .args(&loader)
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(raw_file)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", tools.qemu.display()))?;
    let code = loop {
        if let Some(status) = qemu.try_wait().map_err(|e| format!("waiting for QEMU: {e}"))? {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let raw = std::fs::read(&raw_path).map_err(|e| format!("{}: {e}", raw_path.display()))?;
    let mut decoder = Command::new(&tools.defmt_print)
        .args(["--log-format", "{L} {s}", "-e"])
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", tools.defmt_print.display()))?;
    decoder.stdin.take().ok_or("defmt-print has no stdin")?.write_all(&raw).map_err(|e| e.to_string())?;
    let decoded = decoder.wait_with_output().map_err(|e| format!("defmt-print: {e}"))?;
    if !decoded.status.success() {
        return Err(format!("defmt-print failed: {}", String::from_utf8_lossy(&decoded.stderr)));
    }
    let lines = String::from_utf8_lossy(&decoded.stdout).lines().map(str::to_owned).collect();
    Ok(Run { code, lines, seconds })
}

/// One query's outcome as the firmware printed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Printed {
    /// `(id, score bits)` by cosine.
    pub cosine: Vec<(u32, u32)>,
    /// `(id, score bits)` by CSLS.
    pub csls: Vec<(u32, u32)>,
    /// The `EncodeError` name, when the query was refused.
    pub encode_error: Option<String>,
    /// SysTick ticks of the encoding.
    pub encode_ticks: u64,
    /// SysTick ticks of the cosine and the CSLS search.
    pub search_ticks: [u64; 2],
}

impl Printed {
    /// As the host reference states it.
    pub fn answer(&self) -> answers::Answer {
        match &self.encode_error {
            Some(e) => answers::Answer::Encode(e.clone()),
            None => answers::Answer::Hits { cosine: self.cosine.clone(), csls: self.csls.clone() },
        }
    }
}

/// What the query program printed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `(instructions, ticks)` of the calibration loop.
    pub calibration: (u64, u64),
    /// Ticks of `Model::from_bytes` (header, CRC over the blob, every check).
    pub load_ticks: u64,
    /// Per query, in order.
    pub queries: Vec<Printed>,
    /// `(deepest stack use, stack region)` in bytes.
    pub stack: (u64, u64),
    /// The `@load-error` name, when the blob was refused.
    pub load_error: Option<String>,
    /// The `@done` line was printed.
    pub done: bool,
}

impl Report {
    /// Instructions per SysTick tick, from the calibration loop.
    pub fn instructions_per_tick(&self) -> f64 {
        self.calibration.0 as f64 / self.calibration.1.max(1) as f64
    }
}

fn numbers(list: &str) -> Result<Vec<u64>, String> {
    let inner = list.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|e| format!("{s:?}: {e}")))
        .collect()
}

/// Parses the `@` lines of the query program's log.
pub fn parse(lines: &[String]) -> Result<Report, String> {
    let mut report = Report::default();
    for line in lines {
        let Some(at) = line.find('@') else { continue };
        let body = &line[at + 1..];
        let words: Vec<&str> = body.split_whitespace().collect();
        let bad = || format!("unparsed firmware line: {line:?}");
        let int =
            |i: usize| -> Result<u64, String> { words.get(i).and_then(|w| w.parse().ok()).ok_or_else(bad) };
        match words.first().copied() {
            Some("calib") => report.calibration = (int(2)?, int(4)?),
            Some("blob") => report.load_ticks = int(5)?,
            Some("load-error") => report.load_error = Some(words.get(1).ok_or_else(bad)?.to_string()),
            Some("stack") => report.stack = (int(2)?, int(4)?),
            Some("done") => report.done = true,
            Some("q") => {
                let i = usize::try_from(int(1)?).map_err(|_| bad())?;
                if report.queries.len() <= i {
                    report.queries.resize(i + 1, Printed::default());
                }
                let printed = &mut report.queries[i];
                let kind = words.get(2).copied().ok_or_else(bad)?;
                if kind == "encode-error" {
                    printed.encode_error = Some(words.get(3).ok_or_else(bad)?.to_string());
                    printed.encode_ticks = int(5)?;
                    continue;
                }
                let ids_at = body.find("ids [").ok_or_else(bad)? + 4;
                let bits_at = body.find("bits [").ok_or_else(bad)? + 5;
                let ids = numbers(&body[ids_at..body[ids_at..].find(']').ok_or_else(bad)? + ids_at + 1])?;
                let bits = numbers(&body[bits_at..body[bits_at..].find(']').ok_or_else(bad)? + bits_at + 1])?;
                let tail: Vec<&str> =
                    body[body.rfind("encode-ticks").ok_or_else(bad)?..].split_whitespace().collect();
                let tick = |j: usize| -> Result<u64, String> {
                    tail.get(j).and_then(|w| w.parse().ok()).ok_or_else(bad)
                };
                let pairs = ids
                    .iter()
                    .zip(&bits)
                    .map(|(&id, &b)| {
                        Ok((u32::try_from(id).map_err(|_| bad())?, u32::try_from(b).map_err(|_| bad())?))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                printed.encode_ticks = tick(1)?;
                match kind {
                    "cosine" => {
                        printed.cosine = pairs;
                        printed.search_ticks[0] = tick(3)?;
                    }
                    "csls" => {
                        printed.csls = pairs;
                        printed.search_ticks[1] = tick(3)?;
                    }
                    _ => return Err(bad()),
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

/// What an ELF occupies, from its section headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizes {
    /// `.text` (with the vector table).
    pub text: u64,
    /// `.rodata` (the blob and the queries included).
    pub rodata: u64,
    /// `.data` (in RAM, with its initial values in flash).
    pub data: u64,
    /// `.bss` and `.uninit` (the static scratch memory included).
    pub bss: u64,
}

impl Sizes {
    /// Bytes of flash: text, rodata and data's initial values.
    pub fn flash(&self) -> u64 {
        self.text + self.rodata + self.data
    }

    /// Bytes of static RAM: data and bss (the stack comes on top).
    pub fn static_ram(&self) -> u64 {
        self.data + self.bss
    }
}

fn le(bytes: &[u8], at: usize, n: usize) -> Result<u64, String> {
    let slice = bytes.get(at..at + n).ok_or("ELF: truncated")?;
    Ok(slice.iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// Section sizes of a 32-bit little-endian ELF (what `llvm-size -A` lists).
pub fn sections(elf: &[u8]) -> Result<Sizes, String> {
    if elf.get(..6) != Some(b"\x7fELF\x01\x01".as_slice()) {
        return Err("not a 32-bit little-endian ELF".into());
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (le(elf, 0x20, 4)?, le(elf, 0x2e, 2)?, le(elf, 0x30, 2)?, le(elf, 0x32, 2)?);
    let header = |i: u64| -> Result<[u64; 6], String> {
        let at = usize::try_from(shoff + i * shentsize).map_err(|e| e.to_string())?;
        let mut fields = [0; 6];
        for (k, f) in fields.iter_mut().enumerate() {
            *f = le(elf, at + 4 * k, 4)?;
        }
        Ok(fields) // name, type, flags, addr, offset, size
    };
    let names = header(shstrndx)?;
    let mut sizes = Sizes::default();
    for i in 0..shnum {
        let [name, _kind, flags, _addr, _offset, size] = header(i)?;
        if flags & 0x2 == 0 {
            continue; // not SHF_ALLOC: debug info, defmt's table
        }
        let start = usize::try_from(names[4] + name).map_err(|e| e.to_string())?;
        let end = elf[start..].iter().position(|&b| b == 0).ok_or("ELF: unterminated name")? + start;
        match &elf[start..end] {
            b".vector_table" | b".text" => sizes.text += size,
            b".rodata" => sizes.rodata += size,
            b".data" => sizes.data += size,
            b".bss" | b".uninit" => sizes.bss += size,
            _ => {}
        }
    }
    Ok(sizes)
}

/// The value of the symbol `name` in a 32-bit little-endian ELF's symbol table.
pub fn symbol(elf: &[u8], name: &str) -> Result<u64, String> {
    if elf.get(..6) != Some(b"\x7fELF\x01\x01".as_slice()) {
        return Err("not a 32-bit little-endian ELF".into());
    }
    let (shoff, shentsize, shnum) = (le(elf, 0x20, 4)?, le(elf, 0x2e, 2)?, le(elf, 0x30, 2)?);
    let field = |section: u64, k: u64| -> Result<u64, String> {
        le(elf, usize::try_from(shoff + section * shentsize + 4 * k).map_err(|e| e.to_string())?, 4)
    };
    let string = |table: u64, at: u64| -> Result<&[u8], String> {
        let start = usize::try_from(field(table, 4)? + at).map_err(|e| e.to_string())?;
        let rest = elf.get(start..).ok_or("ELF: string past the end")?;
        Ok(&rest[..rest.iter().position(|&b| b == 0).ok_or("ELF: unterminated string")?])
    };
    for section in 0..shnum {
        if field(section, 1)? != 2 {
            continue; // not SHT_SYMTAB
        }
        let (offset, size, strings) = (field(section, 4)?, field(section, 5)?, field(section, 6)?);
        for entry in (offset..offset + size).step_by(16) {
            let at = usize::try_from(entry).map_err(|e| e.to_string())?;
            if string(strings, le(elf, at, 4)?)? == name.as_bytes() {
                return le(elf, at + 4, 4);
            }
        }
    }
    Err(format!("ELF: no symbol {name}"))
}

/// `(start, end)` of the firmware's blob region: memory.x's `_otkd_blob_start`, `_otkd_blob_end`.
pub fn blob_region(elf: &[u8]) -> Result<(u64, u64), String> {
    let (start, end) = (symbol(elf, "_otkd_blob_start")?, symbol(elf, "_otkd_blob_end")?);
    if end <= start {
        return Err(format!("empty blob region {start:#x}..{end:#x}"));
    }
    Ok((start, end))
}

/// A copy of `blob` with one payload bit flipped (at its middle): the blob as if its flash had
/// been corrupted.
pub fn corrupt_blob(blob: &[u8]) -> Vec<u8> {
    let mut copy = blob.to_vec();
    copy[otkd_runtime::HEADER_LEN + (blob.len() - otkd_runtime::HEADER_LEN) / 2] ^= 0x10;
    copy
}

/// Whether `needle` (non-empty) occurs in `haystack`: e.g. a blob's bytes in a firmware ELF.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `defmt-test`'s log as `(passed, failed)`: every `(i/N) running` line is a test started; the last
/// one failed unless `all tests passed!` follows.
pub fn count_tests(log: &[String]) -> (usize, usize) {
    let started = log.iter().filter(|l| l.contains(") running `") || l.contains(") running '")).count();
    if log.iter().any(|l| l.contains("all tests passed!")) {
        (started, 0)
    } else {
        (started.saturating_sub(1), 1)
    }
}
