//! The `kvbench` binary: errors reach the user here, once, with their context chain, and exit 2.

use std::process::ExitCode;

use clap::Parser;

/// Set to 1 to see where an error was raised (the backtraces candle and anyhow capture).
const BACKTRACE_VAR: &str = "KVBENCH_BACKTRACE";

fn main() -> ExitCode {
    let backtraces = std::env::var_os(BACKTRACE_VAR).is_some_and(|v| v != "0");
    // `RUST_BACKTRACE=1`, common among Rust users, makes candle append a backtrace to the text of
    // its errors. The library-backtrace variable takes precedence for captured backtraces and
    // leaves panics' alone; a value the user set is kept. Set before any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", if backtraces { "1" } else { "0" });
    }
    let cli = kvbench::cli::Cli::parse();
    match kvbench::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if backtraces => {
            eprintln!("error: {e:?}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
