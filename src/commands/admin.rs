//! What the operator commands share (`status`, `deploy`, `rollback` and the others that
//! talk to a running daemon): which daemon ([`Target`]), the output format, and finding
//! the daemon's admin socket before running one.

use crate::DEFAULT_CONFIG;
use modeld::config::{self, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

/// Which daemon the operator commands talk to.
#[derive(clap::Args)]
pub struct Target {
    /// The daemon's config, to find its admin socket (server.admin_socket).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The admin socket itself (wins over --config).
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf, String> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        match config::load(&self.config, &Overrides::default()) {
            Ok((config, _)) => Ok(config.server.admin_socket),
            Err(e) => Err(format!("cannot find the admin socket from {}: {e}; pass --socket", self.config.display())),
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

impl Output {
    pub fn json(self) -> bool {
        matches!(self, Output::Json)
    }
}

/// Runs an operator command against the daemon the target names.
pub fn with_socket(target: &Target, run: impl FnOnce(&std::path::Path) -> ExitCode) -> ExitCode {
    match target.socket() {
        Ok(socket) => run(&socket),
        Err(e) => {
            eprintln!("modeld: {e}");
            ExitCode::FAILURE
        }
    }
}
