//! `otkd`: parse flags, run, and turn errors into exit codes in one place, as ripgrep does: 2 for
//! an error, 130 for a command stopped by Ctrl-C after saving, 0 for a closed pipe.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = otkd::cli::Cli::parse();
    match otkd::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = otkd::commands::exit_code(&err);
            match code {
                0 => {}
                2 => eprintln!("error: {err:#}"),
                _ => eprintln!("{err:#}"),
            }
            ExitCode::from(code)
        }
    }
}

/// By default glibc hands freed blocks above a few MiB back to the OS and trims the heap top, so
/// each of the teacher's and the student's tensor ops page-faults fresh zeroed memory: about a
/// fifth of encoding time went to page faults. Freed memory is kept for reuse instead: blocks
/// up to 32 MiB (glibc's maximum threshold) come from the heap, and the heap is not trimmed
/// below 1 GiB of free space.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    // A rejected value leaves glibc's default, which is correct, only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
