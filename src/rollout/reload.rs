//! Applying a new config (SIGHUP, `modeld reload`) and new repository versions: models
//! added start, removed ones stop, and a model whose desired version or settings changed
//! rolls out — unless the config names a version already tried (and reverted) for it.

use super::{Engine, Options, Origin};
use crate::config::{Config, ModelConfig};
use crate::repo::ModelDir;
use std::sync::Arc;

impl Engine {
    /// Re-reads the config file and applies it (SIGHUP, `modeld reload`), telling systemd
    /// it is reloading meanwhile. An invalid file is refused whole, with the report, and
    /// the running config stays.
    pub async fn reload_file(self: &Arc<Self>) -> Result<Vec<String>, String> {
        self.notifier.reloading();
        let result = self.apply_file().await;
        self.notifier.ready(&self.status_line());
        result
    }

    async fn apply_file(self: &Arc<Self>) -> Result<Vec<String>, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.config().path.clone();
        let (config, warnings) = crate::config::load(&path, &self.overrides).map_err(|e| e.to_string())?;
        let mut lines: Vec<String> =
            warnings.problems.iter().map(|p| format!("warning: {}: {}", p.key, p.message)).collect();
        lines.extend(self.reload(config.clone()).await);
        if let Some(watch) = self.watch.get() {
            watch.refresh(&config);
        }
        Ok(lines)
    }

    /// Applies a new config: models added start, removed ones stop, changed ones roll out.
    /// Returns what it did, one line per model that changed.
    pub async fn reload(self: &Arc<Self>, new: Config) -> Vec<String> {
        let old = self.config();
        let mut report = Vec::new();
        if old.server.listen != new.server.listen || old.server.run_dir != new.server.run_dir {
            report.push("server.listen and server.run_dir take effect on restart only".into());
        }
        self.config.store(Arc::new(new.clone()));
        for model in &new.models {
            let line = match old.model(&model.name) {
                None => {
                    self.bring_up(model, &new);
                    format!("{}: added", model.name)
                }
                Some(before) => self.reload_model(before, model),
            };
            report.push(line);
        }
        for gone in old.models.iter().filter(|m| new.model(&m.name).is_none()) {
            report.push(format!("{}: removed", gone.name));
            if let Ok(route) = self.router.model(&gone.name) {
                self.router.remove(&gone.name);
                for pool in route.table().all_pools() {
                    self.shared.supervisor.stop(pool).await;
                }
            }
        }
        report
    }

    fn reload_model(self: &Arc<Self>, before: &ModelConfig, model: &ModelConfig) -> String {
        let name = &model.name;
        let desired = match ModelDir::new(&model.dir).resolve(model.version) {
            Ok(v) => v,
            Err(e) => return format!("{name}: unchanged ({e})"),
        };
        let route = self.router.model(name).ok();
        let live = route.as_ref().and_then(|r| r.table().stable.as_ref().map(|p| p.version));
        let settings_changed = worker_settings_changed(before, model);
        let thresholds = before.health != model.health;
        if thresholds && let Some(route) = &route {
            // Thresholds live in the supervisor: every pool is judged by the new ones from
            // now on, and no worker restarts for them.
            for pool in route.table().all_pools() {
                pool.set_health(model.health.clone());
            }
        }
        let asked = self.shared.read(|s| s.models.get(name).and_then(|m| m.config_asked));
        let new_ask = Some(desired) != live && Some(desired) != asked;
        if !new_ask && !settings_changed {
            return match (Some(desired) != live, thresholds) {
                (true, _) => format!(
                    "{name}: version {desired} was already tried (see history); not redeployed until asked again"
                ),
                (false, true) => format!("{name}: health thresholds applied (no worker restarted)"),
                (false, false) => format!("{name}: unchanged"),
            };
        }
        match self.start_rollout(name, desired, Options::default(), Origin::Reload) {
            Ok(p) => format!("{name}: rollout {} started to version {desired} by {}", p.id, p.strategy),
            Err(e) => format!("{name}: not rolled out: {e}"),
        }
    }

    /// A new version appeared for a model on `version = "latest"`.
    pub fn new_latest(self: &Arc<Self>, model: &str, version: u64) {
        let asked = self.shared.read(|s| s.models.get(model).and_then(|m| m.config_asked));
        let live = self.router.model(model).ok().and_then(|r| r.table().stable.as_ref().map(|p| p.version));
        if Some(version) == asked || Some(version) == live {
            return;
        }
        match self.start_rollout(model, version, Options::default(), Origin::Watch) {
            Ok(p) => tracing::info!(model, version, id = p.id, "new version in the repository: rolling out"),
            Err(e) => tracing::warn!("new version {version} of {model} not rolled out: {e}"),
        }
    }
}

/// Whether the model's workers would run differently: any setting but the version (asked
/// for separately), the deploy section (how to roll out, not what) and the health
/// thresholds (applied by the supervisor, see [`Engine::reload_model`]). Derived from the
/// whole config so that a setting added later is never forgotten here.
fn worker_settings_changed(before: &ModelConfig, model: &ModelConfig) -> bool {
    let same_except_worker_settings = ModelConfig {
        version: model.version,
        deploy: model.deploy.clone(),
        health: model.health.clone(),
        ..before.clone()
    };
    same_except_worker_settings != *model
}
