//! `modeld serve`, and the internal commands the daemon runs as its child processes:
//! `worker` (one model version) and `describe` (a version's signature).

use super::config_failed;
use modeld::config::{self, Overrides};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Loads and checks the config, then runs the daemon until it is told to stop.
pub fn serve(path: PathBuf, overrides: Overrides) -> ExitCode {
    // Before any thread starts: it reads and unsets the environment.
    let activated = match modeld::daemon::activation::Activated::take() {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("modeld: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (config, report) = match config::load_checked(&path, &overrides, Some(&modeld::repo::check_version)) {
        Ok(loaded) => loaded,
        Err(e) => return config_failed(e),
    };
    modeld::logging::init(&config.server.log_level);
    for line in report.to_string().lines() {
        tracing::warn!("{line}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modeld: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(modeld::daemon::serve(config, overrides, activated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One model version's worker process, started by `serve`.
pub fn worker(args: modeld::worker::WorkerArgs) -> ExitCode {
    modeld::logging::init(&std::env::var("MODELD_LOG").unwrap_or_else(|_| "info".into()));
    match modeld::worker::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
    }
}

/// Loads a version directory and writes its signature as a wire frame.
pub fn describe(dir: &Path, user: Option<&str>, engine: &modeld::worker::EngineArgs) -> ExitCode {
    modeld::logging::init(&std::env::var("MODELD_LOG").unwrap_or_else(|_| "warn".into()));
    ExitCode::from(modeld::worker::describe(dir, user, engine) as u8)
}
