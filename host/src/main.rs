//! `otkd`: parse flags, run, and turn errors into one exit code (2), as ripgrep does.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = otkd::cli::Cli::parse();
    match otkd::app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
