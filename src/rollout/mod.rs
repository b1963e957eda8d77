//! The rollout engine: brings the served versions to what the config and operators ask,
//! one rollout per model at a time, each by its strategy ([`runner`]) under the health
//! gate ([`gate`]), with every step persisted ([`state`]).
//!
//! Triggers: startup (serve the last promoted versions, then roll out what the config asks
//! for if it changed), `reload` (SIGHUP or `modeld reload`), `modeld deploy`, and a new
//! version directory for a model on `version = "latest"` ([`watch`]). A version the config
//! asked for and that was reverted is not redeployed until the config names another
//! version or an operator asks for it.
//!
//! A rollout cut by a restart is rolled back, not resumed: its candidate's measured
//! windows died with the old process, so a resumed gate would judge from nothing, and the
//! restart may have been the candidate's doing. The daemon comes back on the last promoted
//! version and records the rollout as aborted.

pub mod agreement;
pub mod answers;
pub mod drift;
pub mod evidence;
pub mod gate;
pub mod phase;
pub mod plan;
mod reload;
pub mod replay;
pub mod repo_watch;
pub mod runner;
pub mod shadow;
pub mod signature;
pub mod state;
pub mod validation;

// The engine's face for the admin socket, the live view and the daemon: its commands,
// what a rollout's progress and record say, and its plans.
pub use evidence::Caller;
pub use phase::{Phase, Progress};
pub use plan::Plan;
pub use runner::Command;
pub use state::{Outcome, Record, now};

use crate::config::VersionSpec;
use crate::config::{Config, ModelConfig, Overrides, Strategy};
use crate::health::Host;
use crate::metrics::Metrics;
use crate::repo::ModelDir;
use crate::router::Router;
use crate::router::table::RoutingTable;
use crate::supervisor::Supervisor;
use arc_swap::ArcSwap;
use repo_watch::RepoWatch;
use runner::Runner;
use state::{State, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, watch};

mod shared;
mod startup;

pub use shared::{Shared, Watch};
use startup::{abort_interrupted, sample_limits, wait_ready};

/// Why the engine refused a request.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{model}': {reason}")]
    NoVersion { model: String, reason: String },
    #[error("model '{model}' is already serving version {version}")]
    AlreadyLive { model: String, version: u64 },
    #[error("model '{model}' has a rollout in progress (to version {to}); promote or roll it back first")]
    Busy { model: String, to: u64 },
    #[error("model '{0}' has no rollout in progress")]
    Idle(String),
    #[error("model '{model}': {reason}")]
    CannotRollBack { model: String, reason: String },
    #[error("model '{0}': no rollout or rollback starts while the daemon hands over to a new modeld (modeld upgrade)")]
    HandingOver(String),
}

/// What an operator asked of one rollout beyond the model's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Who asked (an operator's uid and pid), for the rollout's evidence.
    pub caller: Option<evidence::Caller>,
    /// Roll out by this strategy instead of the config's (keeping the config's gate).
    pub strategy: Option<Strategy>,
    /// Let a candidate whose signature differs from the live version's take traffic.
    pub allow_signature_change: bool,
    /// `--expect-drift`: the output drift allowed for this rollout (0: not judged).
    pub max_output_drift: Option<f64>,
}

impl Options {
    /// The model's deploy settings with these options applied.
    fn apply(&self, model: &ModelConfig) -> crate::config::DeployConfig {
        let mut deploy = self.strategy.map_or_else(|| model.deploy.clone(), |s| model.deploy.with_strategy(s));
        deploy.allow_signature_change |= self.allow_signature_change;
        if let Some(psi) = self.max_output_drift {
            deploy.max_output_drift = psi;
        }
        deploy
    }
}

/// A rollout being run.
struct Running {
    commands: mpsc::UnboundedSender<Command>,
    progress: watch::Receiver<Progress>,
}

pub struct Engine {
    shared: Arc<Shared>,
    router: Arc<Router>,
    config: ArcSwap<Config>,
    /// Command-line values that win over the file's, re-applied on each reload.
    overrides: Overrides,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    watch: OnceLock<Arc<RepoWatch>>,
    observer: Arc<dyn ReloadObserver>,
    running: Mutex<HashMap<String, Running>>,
    /// The last progress of each model's latest rollout, running or ended.
    latest: Mutex<HashMap<String, watch::Receiver<Progress>>>,
    /// Set while the daemon hands over to a new modeld: no rollout or reload starts.
    frozen: std::sync::atomic::AtomicBool,
}

/// What the engine works with, made by the daemon.
pub struct Parts {
    pub router: Arc<Router>,
    pub supervisor: Arc<Supervisor>,
    pub host: Arc<Host>,
    pub metrics: Arc<Metrics>,
    pub live: crate::config::Live,
    pub observer: Arc<dyn ReloadObserver>,
}

/// Told when the engine applies a reload: the daemon says RELOADING=1, then READY=1 with
/// the new status, to systemd. The engine calls up through this, never owning the notifier.
pub trait ReloadObserver: Send + Sync {
    fn reloading(&self);
    fn reloaded(&self, status: &str);
}

/// Who asked for a rollout (kept in its record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Reload,
    Operator,
    Watch,
}

impl Origin {
    pub(super) fn name(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Reload => "reload",
            Origin::Operator => "operator",
            Origin::Watch => "watch",
        }
    }
}

impl Engine {
    /// Loads the persisted state and starts serving: each model's last promoted version
    /// (or the config's on first start), then rollouts for what the config asks anew.
    pub fn start(config: Config, overrides: Overrides, parts: Parts) -> Arc<Engine> {
        let Parts { router, supervisor, host, metrics, live, observer } = parts;
        let store = Store::new(&config.server.state_dir);
        let mut saved = store.load_or_set_aside();
        abort_interrupted(&mut saved);
        let shared = Arc::new(Shared::new(supervisor, host, metrics, live, store, saved));
        shared.update(|_| {});
        let engine = Arc::new(Engine {
            shared,
            router,
            config: ArcSwap::from_pointee(config.clone()),
            overrides,
            reloading: tokio::sync::Mutex::new(()),
            watch: OnceLock::new(),
            observer,
            running: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            frozen: Default::default(),
        });
        for model in &config.models {
            engine.bring_up(model, &config);
        }
        engine
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Starts watching the repository for models on `version = "latest"`.
    pub fn watch_repository(self: &Arc<Self>) {
        match RepoWatch::start(self.clone()) {
            Ok(watch) => {
                let _ = self.watch.set(watch);
            }
            Err(e) => tracing::error!("cannot watch the model repository: {e}; new versions need a reload"),
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// One line on what is served and rolling out (systemd's STATUS=).
    pub fn status_line(&self) -> String {
        let rollouts: Vec<String> = self
            .in_progress()
            .iter()
            .map(|r| format!("rollout {} v{} by {}: {}", r.model, r.to, r.strategy, r.phase.describe()))
            .collect();
        summary(&self.router, &rollouts)
    }

    /// Starts a rollout of `model` to `version`, as the operator's `options` ask.
    pub fn deploy(self: &Arc<Self>, model: &str, version: u64, options: Options) -> Result<Progress, EngineError> {
        let route = self.router.model(model).map_err(|_| EngineError::UnknownModel(model.into()))?;
        if route.table().stable.as_ref().is_some_and(|p| p.version == version) {
            return Err(EngineError::AlreadyLive { model: model.into(), version });
        }
        self.start_rollout(model, version, options, Origin::Operator)
    }

    fn start_rollout(
        self: &Arc<Self>,
        name: &str,
        version: u64,
        options: Options,
        origin: Origin,
    ) -> Result<Progress, EngineError> {
        let config = self.config();
        let model = config.model(name).ok_or_else(|| EngineError::UnknownModel(name.into()))?.clone();
        ModelDir::new(&model.dir)
            .resolve(VersionSpec::Exact(version))
            .map_err(|e| EngineError::NoVersion { model: name.into(), reason: e.to_string() })?;
        let route = self.router.model(name).map_err(|_| EngineError::UnknownModel(name.into()))?;
        let mut running = self.lock_running();
        // Under the lock `freeze` sets the flag under: no rollout starts once it returned.
        if self.is_frozen() {
            return Err(EngineError::HandingOver(name.into()));
        }
        if let Some(r) = running.get(name) {
            return Err(EngineError::Busy { model: name.into(), to: r.progress.borrow().to });
        }
        let deploy = options.apply(&model);
        let table = route.table();
        let caller = options.caller.clone().unwrap_or_else(|| evidence::Caller::origin(origin.name()));
        let record = Record {
            id: self.shared.read(State::next_id),
            model: name.into(),
            from: table.stable.as_ref().map(|p| p.version),
            to: version,
            strategy: deploy.strategy.to_string(),
            origin: origin.name().into(),
            started_at: state::now(),
            ended_at: None,
            outcome: None,
            reason: None,
            phases: Vec::new(),
            validation: None,
            by: Some(caller.clone()),
            ended_by: None,
        };
        let first = Progress {
            id: record.id,
            model: name.into(),
            from: record.from,
            to: version,
            strategy: record.strategy.clone(),
            sources: None,
            gate: None,
            phase: Phase::Spawning,
        };
        let (progress_tx, progress_rx) = watch::channel(first.clone());
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        if matches!(origin, Origin::Config | Origin::Reload | Origin::Watch) {
            self.shared.update(|s| s.model(name).config_asked = Some(version));
        }
        self.shared.save_rollout(name, &record);
        // Read under the lock the autoscaler changes counts under.
        let size = rollout_size(&model, table.stable.as_deref());
        running.insert(name.into(), Running { commands: commands_tx, progress: progress_rx.clone() });
        self.lock_latest().insert(name.into(), progress_rx);
        drop(running);
        let planned = plan::plan(&model, &deploy, (record.from, version), size, config.server.request_timeout);
        let evidence = evidence::Evidence::begin(&record, caller, planned, &model, &deploy);
        let runner = Runner {
            shared: self.shared.clone(),
            route: route.clone(),
            model,
            deploy,
            record,
            stable: table.stable.clone(),
            size,
            progress: progress_tx,
            commands: commands_rx,
            paused: false,
            answers: None,
            replayer: None,
            baseline: gate::Baseline::default(),
            watched: Vec::new(),
            candidate: None,
            evidence: evidence::EvidenceLog::new(evidence, self.shared.store.clone()),
            ended_by: None,
            holding: None,
        };
        let engine = self.clone();
        let previous = table.previous.clone();
        tokio::spawn(async move {
            // A version kept warm from an earlier promotion is no longer the one to go back to.
            if let Some(previous) = previous {
                engine.shared.retire_previous(&route, &previous).await;
            }
            runner.run(|record| engine.finish(record)).await;
        });
        Ok(first)
    }

    /// Records a rollout's end: the live version when promoted, the history, and frees the
    /// model for the next rollout.
    fn finish(&self, record: Record) {
        let name = record.model.clone();
        self.shared.update(|s| {
            let m = s.model(&name);
            m.rollout = None;
            if record.outcome == Some(Outcome::Promoted) {
                m.previous = record.from;
                m.live = Some(record.to);
            }
            s.remember(record);
        });
        let keep = self.shared.read(|s| s.evidence_kept(evidence::KEPT_ROLLOUTS));
        self.shared.store.prune_evidence(&keep);
        self.lock_running().remove(&name);
    }

    /// Stops rollouts and reloads from starting, and rolls back the running ones, waiting
    /// up to `timeout` for them to end: the daemon is about to hand over to a new modeld,
    /// which serves the live versions. Refused when a hand-over already froze it.
    pub async fn freeze(&self, by: evidence::Caller, timeout: std::time::Duration) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if self.lock_running_then(|| self.frozen.swap(true, Ordering::AcqRel)) {
            return Err("an upgrade is already under way".into());
        }
        let running: Vec<String> = self.in_progress().into_iter().map(|p| p.model).collect();
        for model in &running {
            tracing::info!(model = %model, "upgrade: rolling back the rollout in progress");
            let _ = self.command(model, Command::Rollback(by.clone()));
        }
        let deadline = std::time::Instant::now() + timeout;
        while !self.in_progress().is_empty() {
            if std::time::Instant::now() > deadline {
                self.thaw();
                return Err(format!("rollouts did not end within {timeout:?} of their rollback"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Runs `f` while holding the running rollouts' lock.
    fn lock_running_then<T>(&self, f: impl FnOnce() -> T) -> T {
        let _running = self.lock_running();
        f()
    }

    /// Lets rollouts and reloads start again (the hand-over failed).
    pub fn thaw(&self) {
        self.frozen.store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sends a command to the model's running rollout.
    pub fn command(&self, model: &str, command: Command) -> Result<Progress, EngineError> {
        let running = self.lock_running();
        let r = running.get(model).ok_or_else(|| self.idle_or_unknown(model))?;
        let _ = r.commands.send(command);
        Ok(r.progress.borrow().clone())
    }

    fn idle_or_unknown(&self, model: &str) -> EngineError {
        match self.router.model(model) {
            Ok(_) => EngineError::Idle(model.into()),
            Err(_) => EngineError::UnknownModel(model.into()),
        }
    }

    /// Follows the model's latest rollout.
    pub fn follow(&self, model: &str) -> Option<watch::Receiver<Progress>> {
        self.lock_latest().get(model).cloned()
    }

    /// Progress of every rollout in progress.
    pub fn in_progress(&self) -> Vec<Progress> {
        self.lock_running().values().map(|r| r.progress.borrow().clone()).collect()
    }

    /// Runs `change` unless a rollout of `model` is in progress, under the lock a rollout
    /// starts under: a rollout sizes its candidate from the count before or after the
    /// change, never from one the change is making. None: a rollout runs.
    pub fn unless_rolling_out<T>(&self, model: &str, change: impl FnOnce() -> T) -> Option<T> {
        let running = self.lock_running();
        (!running.contains_key(model) && !self.is_frozen()).then(change)
    }

    /// Keeps the count the autoscaler set for `model`'s live version, for the next start
    /// (none: the model's count is fixed now).
    pub fn remember_workers(&self, model: &str, workers: Option<usize>) {
        self.shared.update(|s| s.model(model).workers = workers);
    }

    /// Rolls back: a running rollout reverts at once; otherwise the previous version comes
    /// back — from its warm pool in one store while it is kept, else started anew first.
    pub async fn rollback(self: &Arc<Self>, model: &str, by: evidence::Caller) -> Result<String, EngineError> {
        if self.is_frozen() {
            return Err(EngineError::HandingOver(model.into()));
        }
        if let Ok(progress) = self.command(model, Command::Rollback(by.clone())) {
            return Ok(format!("reverting the rollout to version {}", progress.to));
        }
        let route = self.router.model(model).map_err(|_| EngineError::UnknownModel(model.into()))?;
        let table = route.table();
        let cannot = |reason: &str| EngineError::CannotRollBack { model: model.into(), reason: reason.into() };
        let current = table.stable.clone().ok_or_else(|| cannot("no version is live"))?;
        let (previous, how) = match table.previous.clone() {
            Some(warm) => (warm, "from its warm pool"),
            None => {
                let version = self.shared.read(|s| s.models.get(model).and_then(|m| m.previous));
                let version = version.ok_or_else(|| cannot("there is no previous version to go back to"))?;
                let config = self.config();
                let model_config = config.model(model).ok_or_else(|| EngineError::UnknownModel(model.into()))?;
                // As many workers as the version it replaces runs now.
                let workers = rollout_size(model_config, Some(&current));
                let pool = self.shared.supervisor.start_with(model_config, version, workers);
                let timeout = model_config.device.start_timeout(self.shared.server.get().worker_start_timeout);
                if let Err(reason) = wait_ready(&pool, timeout).await {
                    self.shared.supervisor.stop(&pool).await;
                    return Err(cannot(&reason));
                }
                (pool, "started anew")
            }
        };
        route.swap(RoutingTable::stable(previous.clone()));
        let (from, to) = (current.version, previous.version);
        let reason = format!("operator rollback from version {from}");
        self.shared.record_switch(model, from, to, "rollback", by, Outcome::RolledBack, reason);
        self.shared.supervisor.stop(&current).await;
        Ok(format!("version {to} is live again ({how}); version {from} stopped"))
    }

    /// The plan for rolling `model` to `version`, doing nothing but reading the version's
    /// signature (in a short-lived process) to show how it differs from the live one's.
    pub async fn plan(&self, model: &str, version: u64, options: Options) -> Result<plan::Plan, EngineError> {
        let config = self.config();
        let m = config.model(model).ok_or_else(|| EngineError::UnknownModel(model.into()))?;
        ModelDir::new(&m.dir)
            .resolve(VersionSpec::Exact(version))
            .map_err(|e| EngineError::NoVersion { model: model.into(), reason: e.to_string() })?;
        let deploy = options.apply(m);
        let stable = self.router.model(model).ok().and_then(|r| r.table().stable.clone());
        let size = rollout_size(m, stable.as_deref());
        let mut plan =
            plan::plan(m, &deploy, (stable.as_ref().map(|p| p.version), version), size, config.server.request_timeout);
        let live = stable.is_some();
        if let Some(live) = stable.and_then(|p| p.info()) {
            let candidate = self.shared.supervisor.describe(m, version).await;
            plan.signature = Some(plan::SignaturePlan::new(&live, candidate, deploy.allow_signature_change));
        }
        let dir = ModelDir::new(&m.dir);
        let set = dir.manifest(version).ok().and_then(|manifest| manifest.validation_file(&dir.version_dir(version)));
        if let Some(path) = set {
            let line = match validation::read(&path) {
                Ok(set) if live => format!(
                    "validation set {} ({} examples): answered by both versions before any traffic",
                    path.display(),
                    set.len()
                ),
                Ok(set) => format!(
                    "validation set {} ({} examples): scored, nothing live to compare",
                    path.display(),
                    set.len()
                ),
                Err(e) => format!("REFUSED: {e}"),
            };
            plan.answers.insert(0, line);
        }
        Ok(plan)
    }

    /// One rollout's evidence, as last saved (none when it kept none or it was pruned).
    pub fn evidence(&self, id: u64) -> Option<evidence::Evidence> {
        self.shared.store.load_evidence(id).ok()
    }

    /// Ended and running rollouts, oldest first, of one model or all.
    pub fn history(&self, model: Option<&str>) -> Vec<Record> {
        self.shared.read(|s| {
            let running = s.models.values().filter_map(|m| m.rollout.clone());
            s.history.iter().cloned().chain(running).filter(|r| model.is_none_or(|m| r.model == m)).collect()
        })
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_latest(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Progress>>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one-line summary for `STATUS=`: each model's stable version and state, and the
/// rollouts in progress (described by the caller).
fn summary(router: &Router, rollouts: &[String]) -> String {
    let models: Vec<String> = router
        .models()
        .iter()
        .map(|(name, route)| match &route.table().stable {
            None => format!("{name} unavailable"),
            Some(p) => {
                let state = match &*p.phase() {
                    crate::router::Phase::Failed { .. } => "failed",
                    _ if p.is_ready() => "ready",
                    _ => "starting",
                };
                format!("{name} v{} {state}", p.version)
            }
        })
        .collect();
    let mut line = format!("{} models: {}", models.len(), models.join(", "));
    for r in rollouts {
        line.push_str("; ");
        line.push_str(r);
    }
    line
}

/// The workers a rollout sizes its candidate from: what the live version runs now (as the
/// autoscaler left it), within the model's bounds; the minimum when nothing is live.
fn rollout_size(model: &ModelConfig, stable: Option<&crate::router::Pool>) -> usize {
    stable.map_or(model.workers.min, |p| p.active().clamp(model.workers.min, model.workers.max))
}
