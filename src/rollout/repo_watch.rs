//! Watches the repository directories of models on `version = "latest"` (notify) and rolls
//! out a new highest version once it is complete.
//!
//! A model being copied in must never deploy half-written, so a new version is only taken
//! when (1) the directory has been quiet for [`QUIET`], (2) `model.onnx` keeps the same
//! size and modification time across [`SETTLE`], and (3) it decodes as an ONNX model. The
//! rollout's own load, warm-up and golden checks remain the last line. Copying to a
//! temporary name and renaming into place avoids the wait entirely.

use super::Engine;
use crate::config::Config;
use crate::config::VersionSpec;
use crate::repo::ModelDir;
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// No change for this long before a new version is looked at.
pub const QUIET: Duration = Duration::from_secs(1);
/// The model file must not change across this long.
pub const SETTLE: Duration = Duration::from_millis(500);

pub struct RepoWatch {
    watcher: Mutex<notify::RecommendedWatcher>,
    /// Watched model directories, by model name.
    watched: Mutex<HashMap<String, PathBuf>>,
}

impl RepoWatch {
    /// Starts watching; changes are handled on a task until the process ends.
    pub fn start(engine: Arc<Engine>) -> notify::Result<Arc<RepoWatch>> {
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // Reading a model (this watch's own check, a worker loading it) is no change:
            // counting it as one re-checked a bad version every second and a half, forever.
            Ok(event) if event.kind.is_access() => {}
            Ok(event) => event.paths.into_iter().for_each(|p| drop(tx.send(p))),
            Err(e) => tracing::warn!("repository watch error: {e}"),
        })?;
        let watch = Arc::new(RepoWatch { watcher: Mutex::new(watcher), watched: Mutex::new(HashMap::new()) });
        watch.refresh(&engine.config());
        tokio::spawn(handle(engine, watch.clone(), rx));
        Ok(watch)
    }

    /// Watches exactly the directories of the models on `latest` in `config`.
    pub fn refresh(&self, config: &Config) {
        let wanted: HashMap<String, PathBuf> = config
            .models
            .iter()
            .filter(|m| m.version == VersionSpec::Latest)
            .map(|m| (m.name.clone(), m.dir.clone()))
            .collect();
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        for (name, dir) in watched.iter().filter(|(n, d)| wanted.get(*n) != Some(*d)) {
            let _ = watcher.unwatch(dir);
            tracing::debug!(model = %name, "stopped watching {}", dir.display());
        }
        for (name, dir) in wanted.iter().filter(|(n, d)| watched.get(*n) != Some(*d)) {
            match watcher.watch(dir, RecursiveMode::Recursive) {
                Ok(()) => tracing::info!(model = %name, "watching {} for new versions", dir.display()),
                Err(e) => tracing::warn!(model = %name, "cannot watch {}: {e}", dir.display()),
            }
        }
        *watched = wanted;
    }

    fn model_of(&self, path: &Path) -> Option<(String, PathBuf)> {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        watched.iter().find(|(_, dir)| path.starts_with(dir)).map(|(n, d)| (n.clone(), d.clone()))
    }
}

/// Collects changed paths per model, and checks a model once its directory is quiet.
async fn handle(engine: Arc<Engine>, watch: Arc<RepoWatch>, mut changes: mpsc::UnboundedReceiver<PathBuf>) {
    let mut pending: HashMap<String, PathBuf> = HashMap::new();
    loop {
        let next = tokio::time::timeout(QUIET, changes.recv()).await;
        match next {
            Ok(Some(path)) => {
                if let Some((model, dir)) = watch.model_of(&path) {
                    pending.insert(model, dir);
                }
            }
            Ok(None) => return,
            Err(_) => {
                for (model, dir) in pending.drain() {
                    if let Some(version) = complete_latest(&dir).await {
                        engine.new_latest(&model, version);
                    }
                }
            }
        }
    }
}

/// The highest version in `dir`, if its model file is complete.
async fn complete_latest(dir: &Path) -> Option<u64> {
    let model = ModelDir::new(dir);
    let version = model.resolve(VersionSpec::Latest).ok()?;
    let file = model.model_file(version);
    let before = fingerprint(&file)?;
    tokio::time::sleep(SETTLE).await;
    if fingerprint(&file)? != before {
        tracing::info!("{} is still being written; waiting", file.display());
        return None;
    }
    let bytes = tokio::fs::read(&file).await.ok()?;
    match crate::repo::check_onnx(bytes.into()) {
        Ok(()) => Some(version),
        Err(why) => {
            tracing::warn!("{} is not a complete ONNX model: {why}; not deploying it", file.display());
            None
        }
    }
}

fn fingerprint(file: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}
