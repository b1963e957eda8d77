//! Keeps one worker slot of a pool filled: starts the worker, puts it into rotation when
//! ready, restarts it with exponential backoff when it exits — or when it hangs or its
//! connection breaks while it runs ([`super::liveness`]) — and fails the version when it
//! crash-loops before getting ready or cannot load.
//!
//! Workers that get ready and then keep dying (a version that crashes on every request)
//! are a crash loop of another kind: failing the version would take a serving model down
//! on what may be one poisonous client, so the slot is restarted, but with a backoff that
//! grows to [`MAX_CRASH_LOOP_BACKOFF`] (as the kubelet's CrashLoopBackOff does), and it
//! is reported crash-looping — `/health`'s model_loaded check critical with the reason,
//! `modeld_version_crash_looping` 1 — until one of its workers proves it serves again:
//! up for [`STABLE_RUN`] having answered requests.

use super::cgroup;
use super::liveness::{self, Lost, Watched};
use super::process::{self, Launcher, Spawned, Started, WorkerSpec};
use crate::metrics::Metrics;
use crate::router::conn::WorkerConn;
use crate::router::pool::{Phase, Pool, Slot};
use crate::wire::OOM_EXIT_CODE;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

/// First restart delay; doubles per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that ran this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// This many exits within [`CRASH_WINDOW`] of workers that never got ready fail the
/// version. A worker that served and then died (a crash on some input, an OOM kill, a
/// kill from outside, a hang) is restarted however often, with backoff: failing the
/// version would take a serving model down entirely; the restarts show in /health, the
/// metrics and the ModeldCrashLooping alert, and a rollout's gate reverts a candidate
/// whose workers keep dying.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// The restart delay of a slot crash-looping while serving grows up to this.
pub const MAX_CRASH_LOOP_BACKOFF: Duration = Duration::from_secs(300);

/// Everything a keeper needs, shared by the slots of one pool.
#[derive(Clone)]
pub struct Keeper {
    pub pool: Arc<Pool>,
    pub launcher: Arc<Launcher>,
    pub metrics: Arc<Metrics>,
    /// Cancelled to stop this slot's worker (drain and stop it).
    pub stop: CancellationToken,
    /// Cancelled to stop the whole pool: a failed version stops every slot.
    pub pool_stop: CancellationToken,
}

/// How a worker process ended.
struct Exit {
    reason: String,
    status: Option<std::process::ExitStatus>,
    /// It had got ready and served.
    served: bool,
    /// Requests it answered before it ended.
    answered: u64,
}

/// The exit `child.wait()` gave, of a worker that had served.
fn exited(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    match status {
        Ok(status) => Exit {
            reason: format!("worker {}", process::describe_exit(status)),
            status: Some(status),
            served: true,
            answered: 0,
        },
        Err(e) => Exit { reason: format!("could not wait for worker: {e}"), status: None, served: true, answered: 0 },
    }
}

/// How long a worker whose connection closed may take to show its exit before the
/// connection counts as broken under a live process.
const EXIT_AFTER_CLOSE: Duration = Duration::from_millis(200);

/// Recent exits, to tell a crash loop from an occasional crash.
struct Exits(VecDeque<Instant>);

impl Exits {
    /// Records an exit now; true when the crash limit is reached.
    fn record(&mut self) -> bool {
        let now = Instant::now();
        self.0.push_back(now);
        while self.0.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
            self.0.pop_front();
        }
        self.0.len() >= CRASH_LIMIT
    }
}

impl Keeper {
    /// Runs until the pool stops or fails.
    pub async fn run(self, spec: WorkerSpec) {
        let socket = match self.launcher.socket_path(&spec) {
            Ok(socket) => socket,
            Err(reason) => return self.fail(&spec, reason),
        };
        self.keep(&spec, &socket).await;
        // A worker that became another user cannot remove its socket from this directory.
        self.launcher.remove_files(&spec, &socket);
    }

    /// Starts the worker, and again after each exit, until the pool stops or fails.
    async fn keep(&self, spec: &WorkerSpec, socket: &std::path::Path) {
        let mut exits = Exits(VecDeque::new());
        let mut serving_exits = Exits(VecDeque::new());
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let Spawned { mut child, cgroup, progress } = match self.launcher.spawn(spec, socket) {
                Ok(spawned) => spawned,
                Err(e) => {
                    return self.fail(spec, format!("could not start worker {}: {e}", self.launcher.exe));
                }
            };
            let ooms_before = cgroup.as_deref().map_or(0, cgroup::oom_kills);
            self.pool.slots[spec.slot].pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
            let gpu = self.launcher.gpu_for(spec).unwrap_or(Slot::NO_GPU);
            self.pool.slots[spec.slot].gpu.store(gpu, Ordering::Relaxed);
            let exit = match self.start(spec, &mut child, socket).await {
                // Not ready, so holding no request: nothing to wait for (and a worker hung
                // while loading would answer no SIGTERM).
                None => {
                    let _ = child.kill().await;
                    return;
                }
                Some(Started::LoadFailed(reason)) => return self.fail(spec, reason),
                Some(Started::Lost { reason, status }) => Exit { reason, status, served: false, answered: 0 },
                Some(Started::Ready { conn, info }) => {
                    let label = [spec.model.as_str(), &spec.version.to_string()];
                    self.metrics.model_load_duration.with_label_values(&label).observe(started.elapsed().as_secs_f64());
                    self.metrics.plan_builds.with_label_values(&label).inc_by(u64::from(info.plans_built));
                    // At 0 from the start, so the first wrong answer is an increase.
                    let outputs = info.outputs.iter().map(|o| (o.name.as_str(), o.dtype.is_float()));
                    self.metrics.outputs_known(&spec.model, spec.version, outputs);
                    tracing::info!(model = %spec.model, version = spec.version, slot = spec.slot, pid = child.id(), "worker ready");
                    self.pool.fill(spec.slot, conn.clone(), info);
                    let pid = child.id().unwrap_or(0);
                    let exit = tokio::select! {
                        status = child.wait() => {
                            self.pool.empty(spec.slot);
                            exited(status)
                        }
                        _ = self.stop.cancelled() => return self.stop_worker(spec, &mut child).await,
                        lost = liveness::watch(Watched {
                            conn: &conn,
                            pid,
                            block: progress.as_ref(),
                            pool: &self.pool,
                            server: &self.launcher.server,
                        }) => {
                            self.lost(spec, &mut child, &conn, lost).await
                        }
                    };
                    Exit { answered: conn.answered(), ..exit }
                }
            };
            let slot = &self.pool.slots[spec.slot];
            slot.pid.store(0, Ordering::Relaxed);
            let lived = started.elapsed();
            match slot.crash_loop() {
                // A crash-looping slot is forgiven only by a worker that served for a while.
                Some(_) if lived >= STABLE_RUN && exit.answered > 0 => {
                    slot.set_crash_loop(None);
                    backoff = FIRST_BACKOFF;
                }
                Some(_) => {}
                None if lived >= STABLE_RUN => backoff = FIRST_BACKOFF,
                None => {}
            }
            let oom = exit.status.and_then(|s| s.code()) == Some(OOM_EXIT_CODE)
                || cgroup.as_deref().is_some_and(|dir| cgroup::oom_kills(dir) > ooms_before);
            let (served, answered) = (exit.served, exit.answered);
            let reason = self.record_exit(spec, exit, oom);
            if !served && exits.record() {
                return self.fail(spec, format!(
                    "crash loop: worker exited {CRASH_LIMIT} times within {CRASH_WINDOW:?} before getting ready; last: {reason}"
                ));
            }
            let proved = lived >= STABLE_RUN && answered > 0;
            if served && !proved && serving_exits.record() && slot.crash_loop().is_none() {
                let why = format!(
                    "crash loop while serving: workers died {CRASH_LIMIT} times within {CRASH_WINDOW:?} after \
                     getting ready; restarted with a backoff growing to {MAX_CRASH_LOOP_BACKOFF:?}; last: {reason}"
                );
                tracing::error!(model = %spec.model, version = spec.version, slot = spec.slot, "{why}");
                slot.set_crash_loop(Some(why));
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => return,
            }
            let most = if slot.crash_loop().is_some() { MAX_CRASH_LOOP_BACKOFF } else { MAX_BACKOFF };
            backoff = (backoff * 2).min(most);
        }
    }

    /// A worker that runs but no longer serves: out of rotation, its waiting requests
    /// handed back to be retried elsewhere, killed (to be restarted), and counted.
    async fn lost(&self, spec: &WorkerSpec, child: &mut Child, conn: &WorkerConn, lost: Lost) -> Exit {
        self.pool.empty(spec.slot);
        conn.abandon();
        let slot = &self.pool.slots[spec.slot];
        let labels = [spec.model.as_str(), &spec.version.to_string()];
        let reason = match lost {
            Lost::Disconnected => {
                // A worker that died closes its socket first: its exit is the news then.
                if let Ok(status) = tokio::time::timeout(EXIT_AFTER_CLOSE, child.wait()).await {
                    return exited(status);
                }
                slot.disconnects.fetch_add(1, Ordering::Relaxed);
                self.metrics.worker_disconnects.with_label_values(&labels).inc();
                "worker connection broke while the process lived (see the log for why); killed".to_string()
            }
            Lost::Hung(why) => {
                slot.hangs.fetch_add(1, Ordering::Relaxed);
                self.metrics.worker_hangs.with_label_values(&labels).inc();
                format!("{why}; killed")
            }
        };
        tracing::error!(model = %spec.model, version = spec.version, slot = spec.slot, "{reason}");
        let _ = child.kill().await;
        Exit { reason, status: None, served: true, answered: 0 }
    }

    /// Waits for the worker's handshake; `None` if the pool is stopped meanwhile.
    async fn start(&self, spec: &WorkerSpec, child: &mut Child, socket: &std::path::Path) -> Option<Started> {
        let timeout = self.launcher.start_timeout_for(spec);
        tokio::select! {
            started = self.launcher.handshake(child, socket, timeout) => Some(started),
            _ = self.stop.cancelled() => None,
        }
    }

    /// Logs and counts an exit (an OOM kill too); returns what it was.
    fn record_exit(&self, spec: &WorkerSpec, exit: Exit, oom: bool) -> String {
        let slot = &self.pool.slots[spec.slot];
        let version = spec.version.to_string();
        let exit = match oom {
            false => exit.reason,
            true => {
                self.pool.record_oom(spec.slot);
                self.metrics.worker_oom_kills.with_label_values(&[spec.model.as_str(), &version]).inc();
                let limit = spec.memory_limit.map_or("its".into(), |l| format!("{} MiB", l >> 20));
                format!("worker exceeded {limit} memory limit and was killed (OOM kill; {})", exit.reason)
            }
        };
        slot.restarts.fetch_add(1, Ordering::Relaxed);
        *slot.last_exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(exit.clone());
        self.metrics.worker_restarts.with_label_values(&[spec.model.as_str(), &version]).inc();
        tracing::warn!(model = %spec.model, version = spec.version, slot = spec.slot, "{exit}; restarting");
        exit
    }

    /// A worker that cannot get ready fails the version — unless it was added to a
    /// serving version (the autoscaler growing it): then only its slot gives up, the
    /// version keeps serving on the others, and the autoscaler learns why.
    fn fail(&self, spec: &WorkerSpec, reason: String) {
        let slot = &self.pool.slots[spec.slot];
        if slot.joining.swap(false, Ordering::Relaxed) && matches!(*self.pool.phase(), Phase::Running) {
            tracing::error!(
                model = %self.pool.model, version = self.pool.version, slot = spec.slot,
                "a worker added to the serving version could not get ready: {reason}; the version keeps serving on its other workers"
            );
            self.pool.join_failed(spec.slot, reason);
            return;
        }
        tracing::error!(model = %self.pool.model, version = self.pool.version, "version failed: {reason}");
        if !matches!(*self.pool.phase(), Phase::Failed { .. } | Phase::Stopping) {
            self.pool.set_phase(Phase::Failed { reason });
        }
        // The other slots of a failed version stop too.
        self.pool_stop.cancel();
    }

    /// Takes the worker out of rotation, lets it answer what it holds, then stops it.
    async fn stop_worker(&self, spec: &WorkerSpec, child: &mut Child) {
        // How long a stopping worker may take to answer its in-flight requests.
        let grace = self.launcher.grace();
        if let Some(conn) = self.pool.empty(spec.slot) {
            let deadline = Instant::now() + grace;
            while conn.outstanding() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        process::stop(child, grace).await;
    }
}
