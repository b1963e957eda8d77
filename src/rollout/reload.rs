//! Applying a new config (SIGHUP, `modeld reload`) and new repository versions: models
//! added start, removed ones stop, and a model whose desired version or settings changed
//! rolls out — unless the config names a version already tried (and reverted) for it.

use super::{Engine, Options, Origin};
use crate::config::{Config, ModelConfig, ServerConfig};
use crate::repo::ModelDir;
use std::sync::Arc;

impl Engine {
    /// Re-reads the config file and applies it (SIGHUP, `modeld reload`), telling systemd
    /// it is reloading meanwhile. An invalid file is refused whole, with the report, and
    /// the running config stays.
    pub async fn reload_file(self: &Arc<Self>) -> Result<Vec<String>, String> {
        if self.is_frozen() {
            return Err("no reload while the daemon hands over to a new modeld (modeld upgrade)".into());
        }
        self.observer.reloading();
        let result = self.apply_file().await;
        self.observer.reloaded(&self.status_line());
        result
    }

    async fn apply_file(self: &Arc<Self>) -> Result<Vec<String>, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.config().path.clone();
        let (config, warnings) = crate::config::load_checked(&path, &self.overrides, Some(&crate::repo::check_version))
            .map_err(|e| {
                // In the daemon's own log too, not only in the answer to `modeld reload`
                // (ExecReload's output is easy to miss).
                tracing::error!("reload: refusing the new config; the running config stays in force:\n{e}");
                e.to_string()
            })?;
        let mut lines: Vec<String> =
            warnings.problems.iter().map(|p| format!("warning: {}: {}", p.key, p.message)).collect();
        lines.extend(self.reload(config.clone()).await);
        if let Some(watch) = self.watch.get() {
            watch.refresh(&config);
        }
        Ok(lines)
    }

    /// Applies a new config: `[server]` keys at once (or reported as needing a restart),
    /// models added start, removed ones stop, changed ones roll out. Returns what it did,
    /// one line per key or model that changed.
    pub async fn reload(self: &Arc<Self>, new: Config) -> Vec<String> {
        let old = self.config();
        let mut report = self.apply_server(&old.server, &new.server);
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

    /// Puts the new `[server]` in force: what the front and supervisor read at each use
    /// applies at once, the in-flight bound is resized on every model, the log level is
    /// swapped; what only a restart can change is said so, in the answer and the log.
    fn apply_server(&self, old: &ServerConfig, new: &ServerConfig) -> Vec<String> {
        self.shared.server.set(new.clone());
        if new.max_inflight_per_model != old.max_inflight_per_model {
            for route in self.router.models().values() {
                route.set_limit(new.max_inflight_per_model);
            }
        }
        let mut lines = Vec::new();
        if new.log_level != old.log_level
            && let Err(e) = crate::logging::set_filter(&new.log_level)
        {
            lines.push(format!("server.log_level: not applied: {e}"));
        }
        for change in server_changes(old, new) {
            match change.restart {
                true => tracing::warn!("{}", change.text),
                false => tracing::info!("{}", change.text),
            }
            lines.push(change.text);
        }
        lines
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
        if let Some(route) = &route {
            route.sample.set_limits(super::sample_limits(&model.deploy));
        }
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

/// One `[server]` key a reload changed, and whether it waits for a restart.
struct Change {
    text: String,
    restart: bool,
}

/// Every `[server]` key that differs, each either applied or needing a restart: the
/// struct is taken apart field by field, so a key added later cannot be forgotten here.
fn server_changes(old: &ServerConfig, new: &ServerConfig) -> Vec<Change> {
    let ServerConfig {
        listen,
        admin_socket,
        admin_group,
        worker_user,
        onnxruntime_library,
        run_dir,
        state_dir,
        repository,
        max_body_bytes,
        request_timeout,
        header_read_timeout,
        max_inflight_per_model,
        shutdown_grace,
        worker_start_timeout,
        worker_hang_timeout,
        log_level,
        auth,
        budget,
    } = new;
    use std::time::Duration;
    let path = |p: &std::path::PathBuf| p.display().to_string();
    let group = |g: &Option<crate::config::AdminGroup>| g.as_ref().map_or("(none)".into(), |g| g.name.clone());
    let library = |p: &Option<std::path::PathBuf>| p.as_ref().map_or("(none)".into(), |p| p.display().to_string());
    let user = |u: &Option<crate::config::WorkerUser>| u.as_ref().map_or("(none)".into(), |u| u.name.clone());
    let duration = |d: &Duration| format!("{d:?}");
    let shown = |v: &dyn ToString| v.to_string();
    let requests = Some("applied to requests from now on");
    let started = Some("applied to workers started from now on");
    [
        change("server.listen", &old.listen, listen, |a| shown(a), None),
        change("server.admin_socket", &old.admin_socket, admin_socket, path, None),
        change("server.admin_group", &old.admin_group, admin_group, group, None),
        change("server.worker_user", &old.worker_user, worker_user, user, started),
        change("server.onnxruntime_library", &old.onnxruntime_library, onnxruntime_library, library, started),
        change("server.run_dir", &old.run_dir, run_dir, path, None),
        change("server.state_dir", &old.state_dir, state_dir, path, None),
        change(
            "server.repository",
            &old.repository,
            repository,
            path,
            Some("applied: models whose directory moved roll out from it"),
        ),
        change("server.max_body", &old.max_body_bytes, max_body_bytes, |b| shown(b), requests),
        change("server.request_timeout", &old.request_timeout, request_timeout, duration, requests),
        change(
            "server.header_read_timeout",
            &old.header_read_timeout,
            header_read_timeout,
            duration,
            Some("applied to connections from now on"),
        ),
        change(
            "server.max_inflight_per_model",
            &old.max_inflight_per_model,
            max_inflight_per_model,
            |n| shown(n),
            Some("applied to every model (a smaller bound takes hold as requests in flight finish)"),
        ),
        change(
            "server.shutdown_grace",
            &old.shutdown_grace,
            shutdown_grace,
            duration,
            Some("applied to the next stop"),
        ),
        change("server.worker_start_timeout", &old.worker_start_timeout, worker_start_timeout, duration, started),
        change(
            "server.worker_hang_timeout",
            &old.worker_hang_timeout,
            worker_hang_timeout,
            duration,
            Some("applied to every worker from now on"),
        ),
        change(
            "server.log_level",
            &old.log_level,
            log_level,
            |l| l.clone(),
            Some("applied to the daemon now and to workers started from now on"),
        ),
        change("[auth]", &old.auth, auth, tokens, Some("applied to requests from now on, on open connections too")),
        change(
            "[server.budget]",
            &old.budget,
            budget,
            |b| b.to_string(),
            Some("applied to the autoscaler's next decision"),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The tokens, by name (never their hashes), and whether probes are open.
fn tokens(auth: &crate::config::Auth) -> String {
    let names: Vec<&str> = auth.tokens.iter().map(|t| t.name.as_str()).collect();
    let probes = if auth.open_probes { "open probes" } else { "probes need a token" };
    format!("{} token(s) [{}], {probes}", names.len(), names.join(", "))
}

/// `key` (`server.listen`) when it changed: both values, and how it takes effect (`None`:
/// only on a restart).
fn change<T: PartialEq>(
    name: &str,
    old: &T,
    new: &T,
    show: impl Fn(&T) -> String,
    applied: Option<&str>,
) -> Option<Change> {
    (old != new).then(|| {
        let how = applied.unwrap_or("takes effect on restart only (the daemon keeps the old value)");
        Change { text: format!("{name}: {} -> {}: {how}", show(old), show(new)), restart: applied.is_none() }
    })
}

/// Whether the model's workers would run differently: any setting but the version (asked
/// for separately), the deploy section (how to roll out, not what), the health
/// thresholds (applied by the supervisor, see [`Engine::reload_model`]) and `[model.scale]`
/// (read by the autoscaler at each decision). Derived from the
/// whole config so that a setting added later is never forgotten here.
fn worker_settings_changed(before: &ModelConfig, model: &ModelConfig) -> bool {
    let same_except_worker_settings = ModelConfig {
        version: model.version,
        deploy: model.deploy.clone(),
        health: model.health.clone(),
        // The autoscaler reads its targets and behaviour at each decision.
        scale: model.scale.clone(),
        ..before.clone()
    };
    same_except_worker_settings != *model
}
