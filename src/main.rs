//! The `kvbench` binary: errors reach the user here, once, with their context chain, and exit 2.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kvbench::cli::Cli::parse();
    match kvbench::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
