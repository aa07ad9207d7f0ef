//! `include/otkd.h` is what cbindgen makes of `src/lib.rs` now: runs the `cbindgen` program
//! (`cargo install cbindgen --version 0.29.4 --locked`) and compares.
//! `OTKD_BLESS=1 cargo test -p otkd-capi --test header` writes the header instead.
//!
//! cbindgen is a program here, not a dev-dependency: as a library it added about 2m50s of CPU to
//! a build of this crate's tests, and its `syn` features would rebuild `syn` and every proc-macro
//! of the workspace's test build. Without the program this test fails when `CI=true` and is
//! skipped with a loud message otherwise.

mod common;

use std::path::Path;
use std::process::Command;

use common::{find_program, require};

#[test]
fn header_is_up_to_date() {
    let cbindgen = find_program("cbindgen");
    let missing = cbindgen.is_none().then(|| {
        "the cbindgen program is not installed: cargo install cbindgen --version 0.29.4 --locked".to_string()
    });
    let (Some(()), Some(cbindgen)) = (require("header_is_up_to_date", missing), cbindgen) else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otkd.h");
    let output = Command::new(&cbindgen)
        .arg("--config")
        .arg(dir.join("cbindgen.toml"))
        .arg("--output")
        .arg(&generated)
        .arg(dir.join("src/lib.rs"))
        .output()
        .expect("running cbindgen");
    assert!(output.status.success(), "cbindgen failed: {}", String::from_utf8_lossy(&output.stderr));
    let generated = std::fs::read(&generated).expect("cbindgen wrote the header");
    let path = dir.join("include/otkd.h");
    if std::env::var_os("OTKD_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing include/otkd.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/otkd.h is not what cbindgen makes of src/lib.rs; regenerate it with \
         `OTKD_BLESS=1 cargo test -p otkd-capi --test header` and commit it.\n--- generated:\n{}",
        String::from_utf8_lossy(&generated)
    );
}
