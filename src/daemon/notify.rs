//! Telling systemd how the daemon is (sd_notify(3), through the pure-Rust `sd-notify`
//! crate: one datagram to `$NOTIFY_SOCKET`, no libsystemd).
//!
//! - `READY=1` once every model's stable version is ready or has definitively failed;
//! - `STATUS=` a one-line summary (models, versions, rollouts), whenever it changes;
//! - `RELOADING=1` + `MONOTONIC_USEC=` while a reload is applied, then `READY=1` again;
//! - `WATCHDOG=1` from the supervisor's event loop at half of `WatchdogSec`, so a stalled
//!   loop stops the pings and systemd restarts the daemon;
//! - `STOPPING=1` when a stop begins;
//! - `MAINPID=` when the daemon hands over to a new modeld ([`super::handover`]): from
//!   then on systemd watches the new one. A daemon being handed over to stays silent
//!   until the old one has said so (systemd takes notifications from the main process
//!   only), then says `READY=1`.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.

use crate::rollout::ReloadObserver;
use crate::router::{Phase, Router};
use sd_notify::NotifyState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    /// Silent while another daemon is systemd's main process (this one taking over).
    muted: AtomicBool,
}

impl Notifier {
    /// `muted`: this daemon is taking over from another, which is still the main process.
    pub fn from_env(muted: bool) -> Notifier {
        let watchdog = watchdog_of(std::env::var("WATCHDOG_USEC").ok(), std::env::var("WATCHDOG_PID").ok());
        Notifier { enabled: std::env::var_os("NOTIFY_SOCKET").is_some(), watchdog, muted: AtomicBool::new(muted) }
    }

    /// This daemon is now systemd's main process: it speaks, starting with `READY=1`.
    pub fn unmute(&self, status: &str) {
        self.muted.store(false, Ordering::Release);
        self.ready(status);
    }

    /// Makes `pid` systemd's main process of the service (the daemon taking over).
    pub fn main_pid(&self, pid: u32) {
        self.send(&[NotifyState::MainPid(pid), NotifyState::Status("handed over to a new modeld")]);
        self.muted.store(true, Ordering::Release);
    }

    fn send(&self, states: &[NotifyState]) {
        if self.enabled
            && !self.muted.load(Ordering::Acquire)
            && let Err(e) = sd_notify::notify(false, states)
        {
            tracing::warn!("sd_notify failed: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(e) => tracing::warn!("cannot read the monotonic clock for RELOADING=1: {e}"),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// How often the event loop must ping: half of `WatchdogSec`, as sd_watchdog_enabled(3)
    /// advises.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }
}

/// The watchdog interval systemd set, as sd_watchdog_enabled(3) reads it: `WATCHDOG_USEC`,
/// for this process unless `WATCHDOG_PID` names another. (A daemon handed over to is
/// started without `WATCHDOG_PID`, which named its predecessor; sd-notify's own reader
/// wants the variable present.)
fn watchdog_of(usec: Option<String>, pid: Option<String>) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    match pid.map(|p| p.parse::<u32>()) {
        Some(Ok(pid)) if pid != std::process::id() => None,
        Some(Err(_)) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

impl ReloadObserver for Notifier {
    fn reloading(&self) {
        Notifier::reloading(self);
    }

    fn reloaded(&self, status: &str) {
        self.ready(status);
    }
}

/// Whether start-up is over: every model's stable version ready or definitively failed.
pub fn settled(router: &Router) -> bool {
    router.models().values().all(|route| match &route.table().stable {
        None => true,
        Some(pool) => pool.is_ready() || matches!(*pool.phase(), Phase::Failed { .. }),
    })
}

/// The models whose stable version failed to start, with why ("iris v2: ...").
pub fn failed(router: &Router) -> Vec<String> {
    let mut failed = Vec::new();
    for (name, route) in router.models().iter() {
        if let Some(pool) = &route.table().stable
            && let Phase::Failed { reason } = &*pool.phase()
        {
            failed.push(format!("{name} v{}: {reason}", pool.version));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_this_process_s_unless_another_is_named() {
        let own = std::process::id().to_string();
        let every = Some(Duration::from_secs(4));
        assert_eq!(watchdog_of(Some("4000000".into()), Some(own)), every);
        assert_eq!(watchdog_of(Some("4000000".into()), None), every, "a daemon handed over to");
        assert_eq!(watchdog_of(Some("4000000".into()), Some("1".into())), None, "another process's");
        assert_eq!(watchdog_of(None, None), None);
        assert_eq!(watchdog_of(Some("0".into()), None), None);
    }
}
