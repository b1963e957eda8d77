//! Bringing a model up when the daemon starts or a reload adds it: its last promoted
//! version (or the config's), a fall back to older versions while `latest`'s newest cannot
//! serve, and the record of rollouts a restart cut.

use super::state::{self, Outcome, Record, State};
use super::{Engine, Options, Origin};
use crate::config::{Config, ModelConfig, VersionSpec};
use crate::repo::ModelDir;
use crate::router::ModelRoute;
use crate::router::pool::Pool;
use crate::router::table::RoutingTable;
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// Starts serving a model that has no route yet: its last promoted version when it
    /// still exists, else what the config asks; then a rollout if the config asks anew.
    pub(super) fn bring_up(self: &Arc<Self>, model: &ModelConfig, config: &Config) {
        let dir = ModelDir::new(&model.dir);
        let desired = dir.resolve(model.version);
        let saved = self.shared.read(|s| s.models.get(&model.name).cloned().unwrap_or_default());
        let live = saved.live.filter(|v| dir.resolve(VersionSpec::Exact(*v)).is_ok());
        let (serve, pending) = match (live, &desired) {
            (Some(live), Ok(want)) if *want != live && saved.config_asked != Some(*want) => (Some(live), Some(*want)),
            (Some(live), _) => (Some(live), None),
            (None, Ok(want)) => (Some(*want), None),
            (None, Err(_)) => (None, None),
        };
        let table = match serve {
            Some(version) => {
                self.shared.update(|s| {
                    let m = s.model(&model.name);
                    m.live = Some(version);
                    if m.config_asked.is_none() {
                        m.config_asked = desired.as_ref().ok().copied();
                    }
                });
                let workers = match (model.workers.autoscaled(), saved.workers) {
                    (true, Some(n)) => n.clamp(model.workers.min, model.workers.max),
                    (false, Some(_)) => {
                        // Fixed now: a later return to autoscaling starts from min, not a
                        // stale count.
                        self.shared.update(|s| s.model(&model.name).workers = None);
                        model.workers.min
                    }
                    (_, None) => model.workers.min,
                };
                let pool = self.shared.supervisor.start_with(model, version, workers);
                if model.version == VersionSpec::Latest && live.is_none() {
                    self.fall_back_if_it_cannot_serve(model.clone(), pool.clone());
                }
                RoutingTable::stable(pool)
            }
            None => {
                let reason = desired.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::error!(model = %model.name, "cannot serve: {reason}");
                RoutingTable::unavailable(reason)
            }
        };
        let limit = config.server.max_inflight_per_model;
        let sample = sample_limits(&model.deploy);
        self.router.insert(Arc::new(ModelRoute::new(&model.name, limit, sample, table)));
        if let Some(want) = pending {
            tracing::info!(model = %model.name, version = want, "the config asks for a version not yet rolled out");
            if let Err(e) = self.start_rollout(&model.name, want, Options::default(), Origin::Config) {
                tracing::error!("{e}");
            }
        }
    }

    /// `version = "latest"` on a first start serves the newest version that loads: when
    /// the newest fails (corrupt, failing its golden examples), the next older one is
    /// started in its place, and so on; each failure is logged once with its reason. The
    /// newest stays what the config asked for, so neither a reload nor the repository
    /// watch retries it until a newer one appears.
    fn fall_back_if_it_cannot_serve(self: &Arc<Self>, model: ModelConfig, first: Arc<Pool>) {
        let engine = self.clone();
        tokio::spawn(async move {
            let timeout = model.device.start_timeout(engine.shared.server.get().worker_start_timeout);
            let mut pool = first;
            while let Err(reason) = wait_ready(&pool, timeout).await {
                let Ok(route) = engine.router.model(&model.name) else { return };
                if !route.table().stable.as_ref().is_some_and(|p| Arc::ptr_eq(p, &pool)) {
                    return; // replaced meanwhile (a rollout, a reload)
                }
                let versions = ModelDir::new(&model.dir).versions().unwrap_or_default();
                let Some(older) = versions.into_iter().filter(|v| *v < pool.version).max() else {
                    tracing::error!(model = %model.name, "{reason}; no older version to fall back to");
                    return;
                };
                tracing::error!(model = %model.name, "{reason}; serving version {older}, the next newest, instead");
                engine.shared.metrics.latest_skipped.with_label_values(&[&model.name, &pool.version.to_string()]).inc();
                let next = engine.shared.supervisor.start(&model, older);
                route.swap(RoutingTable::stable(next.clone()));
                engine.shared.update(|s| s.model(&model.name).live = Some(older));
                engine.shared.supervisor.stop(&pool).await;
                pool = next;
            }
        });
    }
}

/// What a model's sample of live requests may hold, as its deploy settings say (nothing
/// when replay is off).
pub(super) fn sample_limits(deploy: &crate::config::DeployConfig) -> crate::router::sample::Limits {
    match deploy.replay {
        true => crate::router::sample::Limits { requests: deploy.replay_sample, bytes: deploy.replay_memory },
        false => crate::router::sample::Limits::OFF,
    }
}

/// Records rollouts the last process did not finish as aborted (rolled back by restart).
pub(super) fn abort_interrupted(state: &mut State) {
    let interrupted: Vec<Record> = state.models.values_mut().filter_map(|m| m.rollout.take()).collect();
    for mut record in interrupted {
        tracing::warn!(model = %record.model, to = record.to, "a rollout was cut by a restart; serving the last promoted version");
        record.outcome = Some(Outcome::Aborted);
        record.reason = Some("the daemon restarted mid-rollout; the last promoted version serves".into());
        record.ended_at = Some(state::now());
        state.remember(record);
    }
}

pub(super) async fn wait_ready(pool: &Pool, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let crate::router::pool::Phase::Failed { reason } = &*pool.phase() {
            return Err(format!("version {} failed to start: {reason}", pool.version));
        }
        if pool.is_ready() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("version {} did not get ready within the start timeout ({timeout:?})", pool.version));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
