//! The one place that maps Unix signals to what the daemon should do: HUP → reload,
//! TERM → graceful stop, INT → fast stop (as nginx and systemd expect).

use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Re-read the config and apply it (SIGHUP, `systemctl reload`).
    Reload,
    /// Stop accepting, finish in-flight requests within the grace period, stop workers,
    /// exit 0 (SIGTERM, `systemctl stop`).
    GracefulStop,
    /// Stop now without waiting for requests (SIGINT, Ctrl-C).
    FastStop,
}

pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; from here on these signals no longer kill the process.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn next(&mut self) -> Intent {
        tokio::select! {
            _ = self.hup.recv() => Intent::Reload,
            _ = self.term.recv() => Intent::GracefulStop,
            _ = self.int.recv() => Intent::FastStop,
        }
    }
}
