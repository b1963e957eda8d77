//! Every Prometheus metric modeld exports, defined in this one place: name (with the
//! `modeld_` prefix and the unit in the name), help text, labels and buckets.
//!
//! Counters and histograms are updated where the event happens (the front records each
//! request, the supervisor each restart and load); gauges that describe current state
//! (in-flight requests, workers up) are set from that state when `/metrics` is scraped,
//! so they can never drift from it.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: 0.5 ms to 10 s, dense where model serving lives.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0];
/// Model load buckets in seconds.
const LOAD_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub inflight: IntGaugeVec,
    pub workers_up: IntGaugeVec,
    pub worker_restarts: IntCounterVec,
    pub model_load_duration: HistogramVec,
    pub build_info: GaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "modeld_requests_total",
                    "Requests answered, by model, version, protocol and HTTP status code.",
                ),
                &["model", "version", "protocol", "code"],
            )
            .expect("valid metric"),
            request_duration: HistogramVec::new(
                HistogramOpts::new("modeld_request_duration_seconds", "Time from request received to response ready.")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["model", "version", "protocol"],
            )
            .expect("valid metric"),
            inflight: IntGaugeVec::new(
                Opts::new("modeld_inflight_requests", "Requests admitted and not yet answered, by model."),
                &["model"],
            )
            .expect("valid metric"),
            workers_up: IntGaugeVec::new(
                Opts::new("modeld_workers_up", "Workers ready to serve, by model and version."),
                &["model", "version"],
            )
            .expect("valid metric"),
            worker_restarts: IntCounterVec::new(
                Opts::new("modeld_worker_restarts_total", "Workers restarted after they exited, by model and version."),
                &["model", "version"],
            )
            .expect("valid metric"),
            model_load_duration: HistogramVec::new(
                HistogramOpts::new(
                    "modeld_model_load_duration_seconds",
                    "Time from worker spawn to ready (load, warm-up, golden checks).",
                )
                .buckets(LOAD_BUCKETS.to_vec()),
                &["model", "version"],
            )
            .expect("valid metric"),
            build_info: GaugeVec::new(
                Opts::new("modeld_build_info", "Always 1; labels give the modeld version."),
                &["version"],
            )
            .expect("valid metric"),
            registry,
        };
        m.register_all();
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.inflight.clone()),
            Box::new(self.workers_up.clone()),
            Box::new(self.worker_restarts.clone()),
            Box::new(self.model_load_duration.clone()),
            Box::new(self.build_info.clone()),
        ];
        for c in collectors {
            self.registry.register(c).expect("metric names are unique");
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
