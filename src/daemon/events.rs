//! The supervisor's event loop: beats the heartbeat and systemd's watchdog, tells systemd
//! when start-up is over and what the daemon is doing, reloads on SIGHUP, hands over to a
//! new modeld when asked ([`super::handover`]), and returns how the daemon ends.

use super::handover::{self, Predecessor, Sockets, Successor};
use super::notify::{self, Notifier};
use crate::admin::UpgradeAsked;
use crate::config::Live;
use crate::health::Heartbeat;
use crate::rollout::Engine;
use crate::supervisor::{Intent, Signals};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the event loop proves it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Beyond the models' start, what a new daemon gets to start itself.
const UPGRADE_MARGIN: Duration = Duration::from_secs(30);
/// How long rollouts in progress get to end once rolled back for an upgrade.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(60);

/// How the daemon ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM: finish in-flight requests, stop the workers.
    GracefulStop,
    /// SIGINT: stop now.
    FastStop,
    /// A new modeld took over: finish in-flight requests, stop the workers, leave the
    /// sockets and files it shares in place.
    HandedOver,
    /// Taking over from another daemon, this one could not start every model's live
    /// version: it stops as `HandedOver` does, and the other one keeps serving.
    Declined,
}

impl Ending {
    /// What brought the daemon to stop, as its log says it.
    pub fn cause(&self) -> &'static str {
        match self {
            Ending::GracefulStop => "SIGTERM",
            Ending::FastStop => "SIGINT",
            Ending::HandedOver => "handed over",
            Ending::Declined => "declined to take over",
        }
    }
}

pub struct Events<'a> {
    pub signals: &'a mut Signals,
    pub heartbeat: &'a Heartbeat,
    pub engine: &'a Arc<Engine>,
    pub notifier: &'a Arc<Notifier>,
}

/// What handing over, either way, needs.
pub struct Upgrading<'a> {
    pub upgrades: mpsc::Receiver<UpgradeAsked>,
    pub sockets: Sockets,
    /// The binary an upgrade starts unless it names another: the path this one ran from.
    pub binary: PathBuf,
    /// The daemon handing over to this one, until this one is ready.
    pub predecessor: Option<Predecessor>,
    /// Cancelled when this daemon takes over, and its HTTP and admin sockets serve.
    pub serving: CancellationToken,
    pub live: &'a Live,
}

/// Where a start-up that settled leaves the daemon.
enum Ready {
    /// A daemon of its own: it serves.
    Alone,
    /// Taking over: waiting for the old daemon's word (true: this one is main now).
    Waiting(JoinHandle<bool>),
    /// Taking over, it could not start every live version: it declined.
    Declined,
}

/// An upgrade under way: the new daemon starting, and who asked.
struct Pending {
    started: JoinHandle<Result<Successor, String>>,
    reply: oneshot::Sender<Result<String, String>>,
}

impl Events<'_> {
    pub async fn run(self, mut upgrading: Upgrading<'_>) -> Ending {
        let every = self.notifier.watchdog_every().map_or(HEARTBEAT_EVERY, |w| w.min(HEARTBEAT_EVERY));
        let mut tick = tokio::time::interval(every);
        let mut ready = false;
        let mut last_status = String::new();
        let mut pending: Option<Pending> = None;
        // Taking over: the wait for the old daemon's word that this one is main.
        let mut takeover: Option<JoinHandle<bool>> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    self.notifier.watchdog();
                    let status = self.engine.status_line();
                    if !ready && notify::settled(self.engine.router()) {
                        ready = true;
                        tracing::info!("start-up done: {status}");
                        match self.ready(upgrading.predecessor.take(), &status).await {
                            Ready::Alone => {}
                            Ready::Declined => return Ending::Declined,
                            Ready::Waiting(wait) => takeover = Some(wait),
                        }
                    } else if status != last_status {
                        self.notifier.status(&status);
                    }
                    last_status = status;
                }
                intent = self.signals.next() => match intent {
                    // On its own task: the loop keeps beating while rollouts start.
                    Intent::Reload => drop(tokio::spawn(reload(self.engine.clone()))),
                    Intent::GracefulStop => return self.stopping(Ending::GracefulStop, pending),
                    Intent::FastStop => return self.stopping(Ending::FastStop, pending),
                },
                main = async { takeover.as_mut().expect("polled only when taking over").await }, if takeover.is_some() => {
                    takeover = None;
                    if !main.unwrap_or(false) {
                        tracing::error!("upgrade: the old modeld went away without handing over; this one stops");
                        return Ending::Declined;
                    }
                    upgrading.serving.cancel();
                    self.notifier.unmute(&last_status);
                }
                Some(asked) = upgrading.upgrades.recv() => match pending {
                    Some(_) => drop(asked.reply.send(Err("an upgrade is already under way".into()))),
                    None => pending = Some(self.upgrade(asked, &upgrading)),
                },
                started = async { (&mut pending.as_mut().expect("polled only when pending").started).await },
                    if pending.is_some() =>
                {
                    let reply = pending.take().expect("pending").reply;
                    match started.unwrap_or_else(|e| Err(format!("the upgrade task failed: {e}"))) {
                        Ok(successor) => {
                            self.step_aside(successor, reply).await;
                            return Ending::HandedOver;
                        }
                        Err(why) => {
                            tracing::error!("upgrade refused: {why}");
                            self.engine.thaw();
                            let _ = reply.send(Err(why));
                        }
                    }
                }
            }
        }
    }

    /// Start-up is over: tell systemd, or, taking over from another daemon, tell that one
    /// and wait for its word — unless a model's live version failed here: then decline.
    async fn ready(&self, predecessor: Option<Predecessor>, status: &str) -> Ready {
        let Some(predecessor) = predecessor else {
            self.notifier.ready(status);
            return Ready::Alone;
        };
        let failed = notify::failed(self.engine.router());
        if !failed.is_empty() {
            let why = failed.join("; ");
            tracing::error!("upgrade: declining to take over, as this modeld could not start {why}");
            predecessor.decline(&why).await;
            return Ready::Declined;
        }
        Ready::Waiting(tokio::spawn(predecessor.ready_then_main()))
    }

    /// A stop: an upgrade under way is abandoned (its new daemon killed) and its asker told.
    fn stopping(&self, ending: Ending, pending: Option<Pending>) -> Ending {
        if let Some(pending) = pending {
            pending.started.abort();
            let _ = pending.reply.send(Err("the daemon was told to stop; the upgrade is abandoned".into()));
        }
        self.notifier.stopping();
        ending
    }

    /// Rolls back what is rolling out and starts the new daemon, on a task of its own.
    fn upgrade(&self, asked: UpgradeAsked, upgrading: &Upgrading) -> Pending {
        let vetted = match &asked.binary {
            Some(named) => handover::vet_binary(named, asked.caller.uid),
            None => Ok(()),
        };
        let binary = asked.binary.unwrap_or_else(|| upgrading.binary.clone());
        tracing::info!(binary = %binary.display(), by = ?asked.caller, "upgrade asked");
        let (engine, sockets) = (self.engine.clone(), upgrading.sockets);
        let in_force = self.engine.config();
        let timeout = upgrade_timeout(&in_force, upgrading.live.get().worker_start_timeout);
        let config = in_force.path.clone();
        let started = tokio::spawn(async move {
            vetted?;
            handover::check_config(&binary, &config).await?;
            engine.freeze(asked.caller, ROLLBACK_TIMEOUT).await?;
            handover::start_successor(&binary, sockets, timeout).await
        });
        Pending { started, reply: asked.reply }
    }

    /// The new daemon is ready: it becomes systemd's main process and is told so; this
    /// one answers who asked, then stops as on SIGTERM, leaving the sockets in place.
    async fn step_aside(&self, successor: Successor, reply: oneshot::Sender<Result<String, String>>) {
        let said = format!(
            "handed over to the new modeld, PID {} (its models ready {:.1} s after it started); PID {} finishes \
             its in-flight requests and exits",
            successor.pid,
            successor.ready_after.as_secs_f64(),
            std::process::id()
        );
        tracing::info!("upgrade: {said}");
        self.notifier.main_pid(successor.pid);
        successor.crown().await;
        let _ = reply.send(Ok(said));
    }
}

/// How long a new daemon gets to be ready: the longest any model's workers get to start
/// (GPU models get longer), and a margin for the daemon's own start.
fn upgrade_timeout(config: &crate::config::Config, worker_start_timeout: Duration) -> Duration {
    let longest = config.models.iter().map(|m| m.device.start_timeout(worker_start_timeout)).max();
    longest.unwrap_or(worker_start_timeout) + UPGRADE_MARGIN
}

/// SIGHUP: re-reads the config and applies it, or refuses it whole and keeps the live one
/// (the refusal is logged where every reload's is).
async fn reload(engine: Arc<Engine>) {
    if let Ok(lines) = engine.reload_file().await {
        tracing::info!("SIGHUP: config applied:\n{}", lines.join("\n"));
    }
}
