//! Logs to stderr for journald or a terminal: colours only on a terminal, one event per
//! line, the level filter from the config (or `MODELD_LOG` for workers).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `filter` is a level or an `EnvFilter` directive.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_target(false)
        .try_init();
}
