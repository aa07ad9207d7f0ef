//! The firmware on an emulated Cortex-M4F (QEMU mps2-an386), bit-exact with the host runtime.
//! The firmware does not contain the blob: QEMU's loader places it in the firmware's blob region
//! (memory.x's `BLOB`), as `probe-rs download` would on a board; an erased region, a corrupted
//! blob and one longer than the region are refused by name, with a clean exit.
//!
//! Needs `qemu-system-arm`, `defmt-print` and the `thumbv7em-none-eabihf` target: with `CI=true`
//! a missing tool fails these tests; elsewhere they are skipped with a loud message.

use std::time::Duration;

use otkd_firmware_harness::answers::{self, Answer};
use otkd_firmware_harness::{
    Build, DEVICE_WORDS, ESTIMATE_HZ, K, Report, Run, blob_region, build, build_with_features, code,
    contains, corrupt_blob, count_tests, parse, require_tools, run, sections,
};
use otkd_runtime::Model;
use otkd_runtime::testing::{TINY, micro_blob, tiny_blob};

/// Prints past libtest's output capture (straight to stderr, as `print!` is captured), so that the
/// measurements and the `firmware: N passed, 0 failed` line show in a plain `cargo test` log.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// QEMU's time limit per run (the micro configuration runs in seconds).
const LIMIT: Duration = Duration::from_secs(180);

fn queries_text() -> String {
    let path = otkd_firmware_harness::firmware_dir().join("queries.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the query program and the on-device tests of `build`, checks every query's outcome, ids
/// and score bits against the host, and prints the measurements. Returns the report.
fn check_bit_exact(name: &str, tools: &otkd_firmware_harness::Tools, build: &Build) -> Report {
    let text = queries_text();
    let queries = answers::query_lines(&text);
    let model = Model::from_bytes(&build.blob).expect("the blob loads on the host");
    let config = *model.config();
    let words = DEVICE_WORDS.min(usize::from(config.tokenizer.max_words));
    let expected = answers::answers(&build.blob, &queries, words, K).expect("the blob loads on the host");

    for elf in [&build.program, &build.on_device_tests] {
        let bytes = std::fs::read(elf).expect("built");
        assert!(
            !contains(&bytes, &build.blob[..build.blob.len().min(256)]),
            "{name}: {} contains the blob; it must only be in the blob region",
            elf.display()
        );
    }
    let program =
        run(tools, &build.program, Some(&build.blob_file), LIMIT).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        program.code,
        Some(code::OK),
        "{name}: the firmware exited with {:?}:\n{}",
        program.code,
        program.log()
    );
    let report = parse(&program.lines).unwrap_or_else(|e| panic!("{name}: {e}\n{}", program.log()));
    assert!(report.done, "{name}: no @done line:\n{}", program.log());
    assert_eq!(report.queries.len(), queries.len(), "{name}: queries answered\n{}", program.log());
    if let Some((i, (device, host))) =
        report.queries.iter().zip(&expected).enumerate().find(|(_, (device, host))| device.answer() != **host)
    {
        panic!(
            "{name}: query {i} ({:?}) differs:\n  device: {:?}\n  host:   {host:?}",
            queries[i],
            device.answer()
        );
    }

    // The host CLI's runtime (`otkd::export::HostRuntime`, `otkd query`) sizes its scratch for
    // the blob's full `max_words`: every query the device answered must rank the same with it.
    let full = answers::answers(&build.blob, &queries, usize::from(config.tokenizer.max_words), K)
        .expect("the blob loads on the host");
    for (i, (device, host)) in expected.iter().zip(&full).enumerate() {
        if matches!(device, Answer::Hits { .. }) {
            assert_eq!(device, host, "{name}: query {i} ({:?}): full-size scratch differs", queries[i]);
        }
    }

    let on_device = run(tools, &build.on_device_tests, Some(&build.blob_file), LIMIT)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let (passed, failed) = count_tests(&on_device.lines);
    say!("{name}: firmware: {passed} passed, {failed} failed");
    assert!(
        on_device.code == Some(code::OK) && failed == 0 && passed > 0,
        "{name}: on-device tests (exit {:?}):\n{}",
        on_device.code,
        on_device.log()
    );

    print_measurements(name, build, &program, &report, &expected);
    report
}

fn print_measurements(name: &str, build: &Build, program: &Run, report: &Report, expected: &[Answer]) {
    let elf = std::fs::read(&build.program).expect("the ELF was just run");
    let sizes = sections(&elf).expect("the firmware is an ELF32");
    let per_tick = report.instructions_per_tick();
    let answered: Vec<_> = report.queries.iter().filter(|q| q.encode_error.is_none()).collect();
    let mean = |f: &dyn Fn(&otkd_firmware_harness::Printed) -> u64| {
        answered.iter().map(|q| f(q) as f64).sum::<f64>() / answered.len().max(1) as f64 * per_tick
    };
    let encode = mean(&|q| q.encode_ticks);
    let cosine = mean(&|q| q.search_ticks[0]);
    let csls = mean(&|q| q.search_ticks[1]);
    let max_query =
        answered.iter().map(|q| q.encode_ticks + q.search_ticks[1]).max().unwrap_or(0) as f64 * per_tick;
    let refused: Vec<String> = expected
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Answer::Encode(e) => Some(format!("{i}: {e}")),
            Answer::Hits { .. } => None,
        })
        .collect();
    let ram = sizes.static_ram() + report.stack.0;
    let (start, end) = blob_region(&elf).expect("the firmware has a blob region");
    say!(
        "{name}: blob {} bytes in its own region ({} bytes at {start:#010x}); firmware flash {} bytes \
         ({:.1} KiB: text {} + rodata {} + data {}; flash in all {:.2} MiB); \
         RAM {} bytes ({:.1} KiB: data {} + bss {} incl. scratch + measured stack {})",
        build.blob.len(),
        end - start,
        sizes.flash(),
        sizes.flash() as f64 / 1024.0,
        sizes.text,
        sizes.rodata,
        sizes.data,
        (sizes.flash() + build.blob.len() as u64) as f64 / 1048576.0,
        ram,
        ram as f64 / 1024.0,
        sizes.data,
        sizes.bss,
        report.stack.0
    );
    say!(
        "{name}: instructions per query (QEMU -icount shift=0, SysTick, {per_tick:.2} instructions/tick \
         calibrated): encode {encode:.0} + search {cosine:.0} (cosine) / {csls:.0} (CSLS) = {:.0} mean, {max_query:.0} max; \
         estimated at 168 MHz and 1 instruction/cycle: {:.2} ms mean, {:.2} ms max (an estimate, not a \
         measurement on hardware); load (CRC + checks) {:.0} instructions",
        encode + csls,
        (encode + csls) / ESTIMATE_HZ * 1e3,
        max_query / ESTIMATE_HZ * 1e3,
        report.load_ticks as f64 * per_tick
    );
    say!(
        "{name}: {} queries, {} answered, refused as reported outcomes: [{}]; QEMU wall {:.2} s, build {:.1} s",
        expected.len(),
        answered.len(),
        refused.join(", "),
        program.seconds,
        build.seconds
    );
    assert!(sizes.flash() <= 4 << 20 && ram <= 4 << 20, "{name}: does not fit mps2-an386 (4 MiB + 4 MiB)");
}

#[test]
fn seeded_tiny_blob_is_bit_exact_with_the_host() {
    let Some(tools) = require_tools("seeded_tiny_blob_is_bit_exact_with_the_host") else { return };
    let build = build("seeded-tiny", &tiny_blob()).unwrap_or_else(|e| panic!("{e}"));
    let report = check_bit_exact("seeded-tiny", &tools, &build);
    assert!(report.queries.iter().any(|q| q.encode_error.as_deref() == Some("EmptyQuery")));
}

/// A blob whose tokenizer makes every character a word (`--ngrams 1-3/chars`, chosen for scripts
/// in which a character is a word): the device tokenizes, encodes and searches as the host does.
#[test]
fn seeded_char_words_blob_is_bit_exact_with_the_host() {
    let Some(tools) = require_tools("seeded_char_words_blob_is_bit_exact_with_the_host") else { return };
    let tokenizer =
        otkd_runtime::TokenizerConfig { min_ngram: 1, max_ngram: 3, ..TINY.tokenizer }.with_char_words();
    let blob = otkd_runtime::testing::seeded_blob(
        otkd_runtime::ModelConfig { tokenizer, ..TINY },
        otkd_runtime::testing::TINY_DOCUMENTS,
        otkd_runtime::testing::SEED,
    );
    assert!(Model::from_bytes(&blob).expect("loads").config().tokenizer.has_char_words());
    let build = build("seeded-char-words", &blob).unwrap_or_else(|e| panic!("{e}"));
    check_bit_exact("seeded-char-words", &tools, &build);
}

/// The `micro` preset with a 1000-document index: a trained export when `OTKD_FIRMWARE_MICRO_BLOB`
/// names one (`otkd export --run DIR --out model.otkd`), else a seeded random micro model.
#[test]
fn micro_blob_with_1000_documents_is_bit_exact_with_the_host() {
    let Some(tools) = require_tools("micro_blob_with_1000_documents_is_bit_exact_with_the_host") else {
        return;
    };
    let (label, blob) = match std::env::var("OTKD_FIRMWARE_MICRO_BLOB") {
        Ok(path) => ("trained-micro", std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))),
        Err(_) => ("seeded-micro", micro_blob()),
    };
    let build = build(label, &blob).unwrap_or_else(|e| panic!("{e}"));
    check_bit_exact(label, &tools, &build);
}

/// The `nano` preset (`ModelConfig::NANO`: 1 MiB of flash, 32 KiB of RAM) with a 1000-document
/// index, on a firmware whose static scratch is sized for it (feature `nano`): a trained export
/// when `OTKD_FIRMWARE_NANO_BLOB` names one (`otkd export` of a `--preset nano` run), else a
/// seeded random nano model. The firmware and the blob must fit 1 MiB of flash, and the RAM
/// (static data, the scratch memory included, and the measured stack) 32 KiB.
#[test]
fn nano_blob_with_1000_documents_is_bit_exact_with_the_host_in_1_mib_of_flash() {
    let test = "nano_blob_with_1000_documents_is_bit_exact_with_the_host_in_1_mib_of_flash";
    let Some(tools) = require_tools(test) else { return };
    let (label, blob) = match std::env::var("OTKD_FIRMWARE_NANO_BLOB") {
        Ok(path) => ("trained-nano", std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))),
        Err(_) => (
            "seeded-nano",
            otkd_runtime::testing::seeded_blob(
                otkd_runtime::ModelConfig::NANO,
                otkd_runtime::testing::MICRO_DOCUMENTS,
                otkd_runtime::testing::SEED,
            ),
        ),
    };
    assert_eq!(*Model::from_bytes(&blob).expect("loads").config(), otkd_runtime::ModelConfig::NANO);
    assert!(blob.len() <= 1 << 20, "{label}: {} bytes are over 1 MiB", blob.len());
    let build = build_with_features(label, &blob, &["nano"]).unwrap_or_else(|e| panic!("{e}"));
    let report = check_bit_exact(label, &tools, &build);
    let sizes = sections(&std::fs::read(&build.program).expect("built")).expect("an ELF32");
    let ram = sizes.static_ram() + report.stack.0;
    // Measured 31,840 bytes: bss 27,812 (scratch 25,720, hybrid search's query terms 2 KiB) and
    // a stack of 4,028 (README, "The nano preset").
    assert!(ram <= 32 << 10, "{label}: {ram} bytes of RAM (static + measured stack) are over 32 KiB");
    let flash = sizes.flash() + blob.len() as u64;
    assert!(flash <= 1 << 20, "{label}: firmware and blob take {flash} bytes of flash, over 1 MiB");
}

/// Runs the query program of the seeded tiny build with `blob` in its region (`None`: nothing
/// placed) and checks that it refuses it with the `LoadError` named `want` and a clean exit.
fn check_refused(test: &str, blob: Option<&[u8]>, want: &str) {
    let Some(tools) = require_tools(test) else { return };
    let build = build("seeded-tiny", &tiny_blob()).unwrap_or_else(|e| panic!("{e}"));
    let path = build.program.with_file_name(format!("{test}.otkd"));
    if let Some(blob) = blob {
        std::fs::write(&path, blob).expect("writing the blob file");
    }
    let result =
        run(&tools, &build.program, blob.map(|_| path.as_path()), LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(result.code, Some(code::HARD_FAULT), "{test}: hard fault:\n{}", result.log());
    assert_eq!(result.code, Some(code::LOAD_ERROR), "{test}: exit code {:?}:\n{}", result.code, result.log());
    let report = parse(&result.lines).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.load_error.as_deref(), Some(want), "{test}:\n{}", result.log());
    say!("{test}: @load-error {} (exit {:?})", want, result.code);
}

#[test]
fn corrupted_blob_is_reported_as_bad_crc_without_a_fault() {
    check_refused("corrupted_blob", Some(&corrupt_blob(&tiny_blob())), "BadCrc");
}

/// Nothing flashed: QEMU's RAM reads as zeros.
#[test]
fn empty_region_is_reported_as_bad_magic_without_a_fault() {
    check_refused("empty_region", None, "BadMagic");
}

/// Erased flash reads as 0xff: its "header" declares a 4 GiB payload, which the region bounds.
#[test]
fn erased_region_is_reported_as_bad_magic_without_a_fault() {
    check_refused("erased_region", Some(&[0xff; 64 << 10]), "BadMagic");
}

/// A blob whose header declares more than the region holds: the firmware reads no byte past the
/// region.
#[test]
fn blob_longer_than_its_region_is_reported_as_truncated() {
    let mut blob = tiny_blob();
    blob[8..12].copy_from_slice(&(3u32 << 20).to_le_bytes()); // + 16 header bytes > the 3 MiB region
    check_refused("blob_longer_than_region", Some(&blob), "Truncated");
}
