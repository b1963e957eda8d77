//! What the live view at `/ui` shows ([`crate::front::ui`] serves it): every model with
//! its versions, roles, weights and health checks, its latest rollout as followers see it
//! (phase, the gate's checks against their thresholds, what it waits for), its recent
//! rollout history with links to each report, and the charts' points ([`timeline`]),
//! sampled once a second by [`sample`].

pub mod timeline;

use crate::front::{ApiError, Board};
use crate::health::{self, Host, VersionHealth, words};
use crate::rollout::{Engine, Outcome, Progress, Record, now};
use crate::router::Router;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timeline::{Point, RECENT, Series, Timeline};
use tokio_util::sync::CancellationToken;

/// How many of a model's past rollouts the view lists.
const HISTORY: usize = 10;

pub struct Console {
    pub router: Arc<Router>,
    pub engine: Arc<Engine>,
    pub host: Arc<Host>,
    pub started: Instant,
    pub timeline: Timeline,
}

/// One model as the page draws it.
#[derive(Serialize)]
struct ModelView {
    name: String,
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    versions: Vec<VersionView>,
    /// The latest rollout, running or ended.
    rollout: Option<Progress>,
    history: Vec<PastRollout>,
    series: Vec<Series>,
}

#[derive(Serialize)]
struct VersionView {
    version: u64,
    role: &'static str,
    weight: u8,
    state: &'static str,
    workers_ready: usize,
    workers: usize,
    restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    checks: Vec<CheckView>,
}

/// A health check with its value and threshold in words.
#[derive(Serialize)]
struct CheckView {
    name: &'static str,
    status: health::Status,
    value: String,
    threshold: String,
}

#[derive(Serialize)]
struct PastRollout {
    id: u64,
    from: Option<u64>,
    to: u64,
    strategy: String,
    origin: String,
    started_at: f64,
    ended_at: Option<f64>,
    outcome: Option<Outcome>,
    reason: Option<String>,
    by: Option<String>,
    report: String,
}

impl Console {
    /// Every model shown (all without `shown`), read once: versions with their weights
    /// and checks, the latest rollout, the history and the charts' points since `since`.
    fn models(&self, since: Option<f64>, shown: Option<&[String]>) -> Vec<ModelView> {
        let report = health::report(&self.router, &self.host, self.started);
        let routes = self.router.models();
        let shown = routes.iter().filter(|(name, _)| shown.is_none_or(|s| s.contains(name)));
        shown
            .filter_map(|(name, route)| {
                let health = report.models.get(name)?;
                // The table is read while the phase is held: the runner changes both in one
                // moment, so a step's weight and the table's agree.
                let follow = self.engine.follow(name);
                let phase = follow.as_ref().map(|p| p.borrow());
                let table = route.table();
                let rollout = phase.map(|p| p.clone());
                let versions = table
                    .all_pools()
                    .filter_map(|pool| {
                        let v = health.versions.get(&health::version_key(&table, pool))?;
                        Some(version_view(pool.version, table.weight(pool), v))
                    })
                    .collect();
                let history = self.engine.history(Some(name));
                Some(ModelView {
                    name: name.clone(),
                    ready: health.ready,
                    reason: health.reason.clone(),
                    versions,
                    rollout,
                    history: history.iter().rev().take(HISTORY).map(past).collect(),
                    series: self.timeline.of(name, since),
                })
            })
            .collect()
    }

    /// Samples every version's last seconds into the timeline.
    fn sample(&self) {
        let t = now();
        let mut sample = Vec::new();
        for (name, route) in self.router.models().iter() {
            let table = route.table();
            let rollout = self.engine.follow(name).map(|p| p.borrow().clone()).filter(|p| !p.phase.is_done());
            for pool in table.all_pools() {
                let w = pool.window.recent(RECENT);
                let gate = rollout.as_ref().filter(|p| p.to == pool.version).and_then(|p| p.gate.as_ref());
                let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
                let point = Point {
                    t,
                    rate: w.throughput(),
                    p95: ms(w.p95),
                    p99: ms(w.p99),
                    errors: (w.requests > 0).then(|| w.error_rate()),
                    weight: table.weight(pool),
                    agreement: gate.and_then(|g| g.agreement),
                    psi: gate.and_then(|g| g.psi),
                };
                sample.push((name.clone(), pool.version, point));
            }
        }
        self.timeline.add(sample);
    }
}

impl Board for Console {
    fn state(&self, since: Option<f64>, shown: Option<&[String]>) -> Value {
        let models = self.models(since, shown);
        json!({
            "now": now(),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "keep_seconds": timeline::KEEP.as_secs(),
            "models": models,
        })
    }

    fn report(&self, model: &str, id: u64) -> Result<String, ApiError> {
        let history = self.engine.history(Some(model));
        if history.is_empty() && self.router.model(model).is_err() {
            return Err(ApiError::not_found(format!("unknown model '{model}'")));
        }
        let which = crate::report::Which::Id(id);
        let subject = crate::report::Subject::pick(model, which, history, |id| self.engine.evidence(id))
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        Ok(crate::report::html::report(&subject))
    }
}

fn version_view(version: u64, weight: u8, v: &VersionHealth) -> VersionView {
    VersionView {
        version,
        role: v.role,
        weight,
        state: v.state,
        workers_ready: v.workers.ready,
        workers: v.workers.configured,
        restarts: v.workers.restarts,
        reason: v.reason.clone(),
        checks: v
            .checks
            .iter()
            .map(|(name, c)| CheckView {
                name,
                status: c.status,
                value: words(&c.value),
                threshold: words(&c.threshold),
            })
            .collect(),
    }
}

fn past(r: &Record) -> PastRollout {
    PastRollout {
        id: r.id,
        from: r.from,
        to: r.to,
        strategy: r.strategy.clone(),
        origin: r.origin.clone(),
        started_at: r.started_at,
        ended_at: r.ended_at,
        outcome: r.outcome,
        reason: r.reason.clone(),
        by: r.by.as_ref().map(|c| c.describe()),
        report: format!("/ui/report/{}/{}", r.model, r.id),
    }
}

/// Samples the timeline once a second until `stop`.
pub async fn sample(console: Arc<Console>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => console.sample(),
            _ = stop.cancelled() => return,
        }
    }
}
