//! Read-only endpoints: OIP server and model metadata and readiness, `/health`, `/ready`,
//! `/metrics`. Each reads live state at the moment it is asked.

use super::error::ApiError;
use super::routes::Endpoint;
use super::{Front, Reply, oip, tfserving};
use crate::health;
use crate::metrics::Metrics;
use crate::router::{HeldBy, Hint};
use hyper::StatusCode;

impl Front {
    /// A probe's or metadata endpoint's answer; `/health` and `/ready` name models and
    /// their checks only to whom [`super::auth::sees_detail`] allows (asked there alone).
    pub(super) fn probe(
        &self,
        endpoint: Endpoint,
        auth: &crate::config::Auth,
        headers: &hyper::HeaderMap,
    ) -> Result<Reply, ApiError> {
        let detail = || super::auth::sees_detail(auth, headers);
        match endpoint {
            Endpoint::ServerMetadata => Ok(Reply::ok(
                serde_json::json!({ "name": "modeld", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"] })
                    .to_string(),
            )),
            Endpoint::Live => {
                let live = self.heartbeat.is_alive();
                Ok(status_reply(live, serde_json::json!({ "live": live })))
            }
            Endpoint::ServerReady => {
                let ready = health::not_ready(&self.router).is_empty();
                Ok(status_reply(ready, serde_json::json!({ "ready": ready })))
            }
            Endpoint::ModelMetadata { model, version } => {
                let route = self.router.model(&model)?;
                let table = route.table();
                let pool = match version {
                    Some(_) => route.pick(&Hint { version, ..Hint::default() })?,
                    None => table
                        .stable
                        .clone()
                        .ok_or_else(|| ApiError::unavailable(format!("model '{model}' has no live version")))?,
                };
                let versions: Vec<u64> = table.pools().map(|p| p.version).collect();
                Ok(Reply::ok(oip::model_metadata(&pool, &versions)?))
            }
            Endpoint::OpenApi => Ok(Reply::ok(super::routes::OPENAPI.to_string())),
            Endpoint::TfStatus { model, version } => {
                let route = self.router.model(&model)?;
                Ok(Reply::ok(tfserving::status(&route.table(), &route.retired.versions(), version)?))
            }
            Endpoint::TfMetadata { model, version } => {
                let route = self.router.model(&model)?;
                let pool = match version {
                    Some(_) => route.pick(&Hint { version, ..Hint::default() })?,
                    None => route
                        .table()
                        .stable
                        .clone()
                        .ok_or_else(|| ApiError::unavailable(format!("model '{model}' has no live version")))?,
                };
                Ok(Reply::ok(tfserving::metadata(&pool)?))
            }
            Endpoint::ModelReady { model, version } => {
                let route = self.router.model(&model)?;
                let ready = match version {
                    Some(_) => route.pick(&Hint { version, ..Hint::default() })?.is_ready(),
                    None => route.table().stable.as_ref().is_some_and(|p| p.is_ready()),
                };
                Ok(status_reply(ready, serde_json::json!({ "name": model, "ready": ready })))
            }
            Endpoint::Health => {
                let report = health::report(&self.router, &self.host, self.started);
                let status = match report.status {
                    health::Overall::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::OK,
                };
                let body = match detail() {
                    true => serde_json::to_string(&report).expect("report serializes"),
                    false => serde_json::json!({ "status": report.status, "detail": NO_DETAIL }).to_string(),
                };
                Ok(Reply::json(status, body))
            }
            Endpoint::Ready => {
                let waiting = health::not_ready(&self.router);
                let ready = waiting.is_empty();
                let body = match detail() {
                    true => serde_json::json!({ "ready": ready, "not_ready": waiting }),
                    false => serde_json::json!({ "ready": ready, "detail": NO_DETAIL }),
                };
                Ok(status_reply(ready, body))
            }
            Endpoint::Metrics => {
                self.refresh_gauges();
                Ok(Reply { content_type: "text/plain; version=0.0.4", ..Reply::ok(self.metrics.render()) })
            }
            Endpoint::Infer { .. }
            | Endpoint::Predict { .. }
            | Endpoint::TfInfer { .. }
            | Endpoint::Ui(_)
            | Endpoint::UiState
            | Endpoint::UiReport { .. } => unreachable!("dispatched before probes"),
        }
    }

    /// Sets the gauges that describe current state from that state, just before a scrape.
    fn refresh_gauges(&self) {
        let m = &self.metrics;
        let gpus = self.host.gpus.readings();
        set_gpu_gauges(m, &gpus);
        for gauge in [
            &m.inflight,
            &m.workers_up,
            &m.crash_looping,
            &m.worker_rss_bytes,
            &m.health_check_status,
            &m.traffic_weight,
            &m.worker_gpu_memory_bytes,
            &m.workers_desired,
            &m.workers_actual,
            &m.scale_held,
        ] {
            gauge.reset();
        }
        for (name, route) in self.router.models().iter() {
            m.inflight.with_label_values(&[name]).set(route.in_flight() as i64);
            if let Some(scale) = route.scale() {
                m.workers_desired.with_label_values(&[name]).set(scale.desired as i64);
                m.workers_actual.with_label_values(&[name]).set(scale.actual as i64);
                let held = scale.frozen.is_some() || scale.held.as_ref().is_some_and(|h| h.by == HeldBy::Budget);
                m.scale_held.with_label_values(&[name]).set(i64::from(held));
            }
            let table = route.table();
            for pool in table.all_pools() {
                let version = pool.version.to_string();
                // Added, not set: two pools of one version (a settings change rolling out)
                // share these series.
                m.traffic_weight.with_label_values(&[name, &version]).add(i64::from(table.weight(pool)));
                m.workers_up.with_label_values(&[name, &version]).add(pool.ready_workers() as i64);
                let looping = i64::from(pool.crash_loop().is_some());
                m.crash_looping.with_label_values(&[name, &version]).add(looping);
                for (slot, worker) in pool.workers().enumerate() {
                    let rss = worker.rss_bytes as i64;
                    m.worker_rss_bytes.with_label_values(&[name, &version, &slot.to_string()]).set(rss);
                    if let Some(gpu) = gpus.processes.get(&worker.pid) {
                        let labels = [name.as_str(), &version, &slot.to_string(), &gpu.gpu.to_string()];
                        m.worker_gpu_memory_bytes.with_label_values(&labels).set(gpu.memory_bytes as i64);
                    }
                }
                for (check, verdict) in health::evaluate(pool, &self.host) {
                    m.health_check_status.with_label_values(&[name, &version, check]).set(verdict.status.gauge());
                }
            }
        }
    }
}

/// Sets the GPU series from the last readings (none without GPU telemetry). One scrape at a
/// time: the Xid counter catches up to the readings' total, which two at once would overshoot.
fn set_gpu_gauges(m: &Metrics, readings: &health::GpuReadings) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for gauge in [&m.gpu_memory_used, &m.gpu_memory_total, &m.gpu_temperature, &m.gpu_ecc_uncorrected] {
        gauge.reset();
    }
    m.gpu_utilization.reset();
    m.gpu_power.reset();
    for gpu in &readings.gpus {
        let index = gpu.index.to_string();
        let labels = [index.as_str(), gpu.name.as_str()];
        let set = |gauge: &prometheus::IntGaugeVec, value: Option<u64>| {
            if let Some(v) = value {
                gauge.with_label_values(&labels).set(v as i64);
            }
        };
        set(&m.gpu_memory_used, gpu.memory_used_bytes);
        set(&m.gpu_memory_total, gpu.memory_total_bytes);
        set(&m.gpu_temperature, gpu.temperature_celsius.map(u64::from));
        set(&m.gpu_ecc_uncorrected, gpu.ecc_uncorrected);
        if let Some(v) = gpu.utilization {
            m.gpu_utilization.with_label_values(&labels).set(v);
        }
        if let Some(v) = gpu.power_watts {
            m.gpu_power.with_label_values(&labels).set(v);
        }
        // The readings hold the running total; the counter catches up to it.
        let xids = m.gpu_xid_errors.with_label_values(&labels);
        xids.inc_by(gpu.xid_errors.saturating_sub(xids.get()));
    }
}

/// 200 when `ok`, else 503 (so load balancers and probes can act on the code alone).
/// What an open probe says instead of naming models, when tokens are on.
const NO_DETAIL: &str = "models and checks are shown to a token with the probes scope";

fn status_reply(ok: bool, body: serde_json::Value) -> Reply {
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Reply::json(status, body.to_string())
}
