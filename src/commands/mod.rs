//! The bodies of the binary's subcommands, one file per group; `main.rs` holds the
//! command line's definition and dispatches to them. The binary's own modules, beside
//! the library's (`modeld::*`), which they call.

pub mod admin;
pub mod check;
pub mod daemon;
pub mod probe;
pub mod render;
pub mod token;

use modeld::config::ConfigError;
use std::process::ExitCode;

/// Prints why the config could not be loaded (every problem, with its location) and
/// gives the exit status for it.
pub fn config_failed(e: ConfigError) -> ExitCode {
    match e {
        ConfigError::Invalid(report) => {
            eprint!("{report}");
            let n = report.errors().count();
            eprintln!("{}: {n} error{} found", report.file, if n == 1 { "" } else { "s" });
        }
        other => eprintln!("modeld: {other}"),
    }
    ExitCode::from(2)
}
