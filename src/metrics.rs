//! Every Prometheus metric modeld exports, defined in this one place: name (with the
//! `modeld_` prefix and the unit in the name), help text, labels and buckets.
//!
//! Counters exist from the start of what they count (a version's at its start, see
//! [`Metrics::version_started`]), so Prometheus's `increase()` sees the first event.
//! Counters and histograms are updated where the event happens (the front records each
//! request, the supervisor each restart, OOM kill, load and CPU sample); gauges that
//! describe current state (in-flight requests, workers up, memory, health checks) are set
//! from that state when `/metrics` is scraped, so they can never drift from it.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: 0.5 ms to 10 s, dense where model serving lives.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0];
/// Queue buckets in seconds: waiting is usually short, so finer at the bottom.
const QUEUE_BUCKETS: &[f64] = &[0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];
/// Model load buckets in seconds.
const LOAD_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Batch size buckets (rows per inference run).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Every metric's name, for the queries rendered from the config (`modeld alerts render`,
/// `modeld k8s render`) as much as for the registry: a renamed metric cannot leave a
/// query behind.
pub mod names {
    pub const BATCH_SIZE: &str = "modeld_batch_size";
    pub const BUILD_INFO: &str = "modeld_build_info";
    pub const GPU_ECC_UNCORRECTED_ERRORS: &str = "modeld_gpu_ecc_uncorrected_errors";
    pub const GPU_MEMORY_TOTAL_BYTES: &str = "modeld_gpu_memory_total_bytes";
    pub const GPU_MEMORY_USED_BYTES: &str = "modeld_gpu_memory_used_bytes";
    pub const GPU_POWER_WATTS: &str = "modeld_gpu_power_watts";
    pub const GPU_TEMPERATURE_CELSIUS: &str = "modeld_gpu_temperature_celsius";
    pub const GPU_UTILIZATION_RATIO: &str = "modeld_gpu_utilization_ratio";
    pub const GPU_XID_ERRORS_TOTAL: &str = "modeld_gpu_xid_errors_total";
    pub const WORKER_GPU_MEMORY_BYTES: &str = "modeld_worker_gpu_memory_bytes";
    pub const HEALTH_CHECK_STATUS: &str = "modeld_health_check_status";
    pub const INFERENCE_DURATION_SECONDS: &str = "modeld_inference_duration_seconds";
    pub const INFLIGHT_REQUESTS: &str = "modeld_inflight_requests";
    pub const LATEST_SKIPPED_TOTAL: &str = "modeld_latest_skipped_total";
    pub const MODEL_LOAD_DURATION_SECONDS: &str = "modeld_model_load_duration_seconds";
    pub const NONFINITE_OUTPUTS_TOTAL: &str = "modeld_nonfinite_outputs_total";
    pub const OUTPUT_CONTRACT_VIOLATIONS_TOTAL: &str = "modeld_output_contract_violations_total";
    pub const PLAN_BUILDS_TOTAL: &str = "modeld_plan_builds_total";
    pub const QUEUE_DURATION_SECONDS: &str = "modeld_queue_duration_seconds";
    pub const REQUEST_DURATION_SECONDS: &str = "modeld_request_duration_seconds";
    pub const REPLAYED_REQUESTS_TOTAL: &str = "modeld_replayed_requests_total";
    pub const REQUESTS_TOTAL: &str = "modeld_requests_total";
    pub const ROLLOUT_PHASE: &str = "modeld_rollout_phase";
    pub const SHADOW_REQUESTS_TOTAL: &str = "modeld_shadow_requests_total";
    pub const TRAFFIC_WEIGHT_PERCENT: &str = "modeld_traffic_weight_percent";
    pub const WORKER_CPU_SECONDS_TOTAL: &str = "modeld_worker_cpu_seconds_total";
    pub const WORKER_DISCONNECTS_TOTAL: &str = "modeld_worker_disconnects_total";
    pub const WORKER_HANGS_TOTAL: &str = "modeld_worker_hangs_total";
    pub const WORKER_OOM_KILLS_TOTAL: &str = "modeld_worker_oom_kills_total";
    pub const WORKER_RESTARTS_TOTAL: &str = "modeld_worker_restarts_total";
    pub const WORKER_RSS_BYTES: &str = "modeld_worker_rss_bytes";
    pub const WORKERS_UP: &str = "modeld_workers_up";
    pub const WORKERS_DESIRED: &str = "modeld_workers_desired";
    pub const WORKERS_ACTUAL: &str = "modeld_workers_actual";
    pub const SCALE_EVENTS_TOTAL: &str = "modeld_scale_events_total";
    pub const SCALE_HELD: &str = "modeld_scale_held";
    pub const VERSION_CRASH_LOOPING: &str = "modeld_version_crash_looping";
}

const MODEL_VERSION: &[&str] = &["model", "version"];
/// The `protocol` label of `modeld_requests_total`: the Open Inference Protocol,
/// `/predict`, TF Serving's REST API.
pub const OIP: &str = "oip";
pub const PREDICT: &str = "predict";
pub const TFSERVING: &str = "tfserving";
pub const PROTOCOLS: [&str; 3] = [OIP, PREDICT, TFSERVING];
/// Codes whose request counters exist from a version's start: the ones alerts read.
const START_CODES: [&str; 5] = ["200", "400", "500", "503", "504"];
const WORKER: &[&str] = &["model", "version", "slot"];
const GPU: &[&str] = &["gpu", "name"];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub queue_duration: HistogramVec,
    pub inference_duration: HistogramVec,
    pub batch_size: HistogramVec,
    pub inflight: IntGaugeVec,
    pub workers_up: IntGaugeVec,
    /// Autoscaled models: the count decided, the live version's ready workers, whether
    /// the budget or a rollout holds the count, and the changes made.
    pub workers_desired: IntGaugeVec,
    pub workers_actual: IntGaugeVec,
    pub scale_held: IntGaugeVec,
    pub scale_events: IntCounterVec,
    pub crash_looping: IntGaugeVec,
    pub worker_restarts: IntCounterVec,
    pub worker_oom_kills: IntCounterVec,
    pub worker_hangs: IntCounterVec,
    pub worker_disconnects: IntCounterVec,
    pub latest_skipped: IntCounterVec,
    pub nonfinite_outputs: IntCounterVec,
    pub contract_violations: IntCounterVec,
    pub shadow_requests: IntCounterVec,
    pub replayed_requests: IntCounterVec,
    pub worker_rss_bytes: IntGaugeVec,
    pub worker_cpu_seconds: prometheus::CounterVec,
    pub model_load_duration: HistogramVec,
    pub plan_builds: IntCounterVec,
    pub health_check_status: IntGaugeVec,
    pub rollout_phase: IntGaugeVec,
    pub traffic_weight: IntGaugeVec,
    pub build_info: GaugeVec,
    /// Per GPU (`gpu` index, `name`), from NVML; no series without GPU telemetry.
    pub gpu_memory_used: IntGaugeVec,
    pub gpu_memory_total: IntGaugeVec,
    pub gpu_utilization: GaugeVec,
    pub gpu_temperature: IntGaugeVec,
    pub gpu_power: GaugeVec,
    pub gpu_ecc_uncorrected: IntGaugeVec,
    pub gpu_xid_errors: IntCounterVec,
    pub worker_gpu_memory_bytes: IntGaugeVec,
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid metric")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn float_gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            requests: counter(
                names::REQUESTS_TOTAL,
                "Inference requests answered, by model, version, protocol and HTTP status code.",
                &["model", "version", "protocol", "code"],
            ),
            request_duration: histogram(
                names::REQUEST_DURATION_SECONDS,
                "Time from an inference request received to its response ready.",
                LATENCY_BUCKETS,
                &["model", "version", "protocol"],
            ),
            queue_duration: histogram(
                names::QUEUE_DURATION_SECONDS,
                "Time a request waited in its worker for an inference thread.",
                QUEUE_BUCKETS,
                MODEL_VERSION,
            ),
            inference_duration: histogram(
                names::INFERENCE_DURATION_SECONDS,
                "Time a worker spent running the model for a request.",
                LATENCY_BUCKETS,
                MODEL_VERSION,
            ),
            batch_size: histogram(
                names::BATCH_SIZE,
                "Rows per inference run (a request's, or a merged batch's), one observation per run.",
                BATCH_BUCKETS,
                MODEL_VERSION,
            ),
            inflight: gauge(names::INFLIGHT_REQUESTS, "Requests admitted and not yet answered, by model.", &["model"]),
            workers_up: gauge(names::WORKERS_UP, "Workers ready to serve, by model and version.", MODEL_VERSION),
            workers_desired: gauge(
                names::WORKERS_DESIRED,
                "Autoscaled models: the workers the autoscaler decided on for the live version, by model.",
                &["model"],
            ),
            workers_actual: gauge(
                names::WORKERS_ACTUAL,
                "Autoscaled models: the live version's workers ready to serve, by model.",
                &["model"],
            ),
            scale_held: gauge(
                names::SCALE_HELD,
                "Autoscaled models: 1 while the host budget or the host's free memory keeps the count below what the model decided, or a rollout freezes it; 0 otherwise.",
                &["model"],
            ),
            scale_events: counter(
                names::SCALE_EVENTS_TOTAL,
                "Changes the autoscaler made to a model's worker count, by model and direction (up, down); a replaced crashed worker is none.",
                &["model", "direction"],
            ),
            crash_looping: gauge(
                names::VERSION_CRASH_LOOPING,
                "1 while a version's workers keep dying soon after getting ready (on requests), restarted with a growing backoff; 0 otherwise.",
                MODEL_VERSION,
            ),
            worker_restarts: counter(
                names::WORKER_RESTARTS_TOTAL,
                "Workers restarted after they exited, by model and version.",
                MODEL_VERSION,
            ),
            worker_oom_kills: counter(
                names::WORKER_OOM_KILLS_TOTAL,
                "Workers killed for exceeding their memory limit, by model and version.",
                MODEL_VERSION,
            ),
            worker_hangs: counter(
                names::WORKER_HANGS_TOTAL,
                "Workers killed and restarted for hanging (holding requests without a reply or a ping answer), by model and version.",
                MODEL_VERSION,
            ),
            latest_skipped: counter(
                names::LATEST_SKIPPED_TOTAL,
                "Newest versions a model on version = \"latest\" skipped because they could not serve (failed or \
                 hung while loading), the version before them serving on, by model and the version skipped.",
                MODEL_VERSION,
            ),
            worker_disconnects: counter(
                names::WORKER_DISCONNECTS_TOTAL,
                "Workers killed and restarted because their connection broke while the process lived, by model and version.",
                MODEL_VERSION,
            ),
            nonfinite_outputs: counter(
                names::NONFINITE_OUTPUTS_TOTAL,
                "Requests failed because an output held NaN or ±Inf its model.toml does not allow, by model, version and output.",
                &["model", "version", "output"],
            ),
            contract_violations: counter(
                names::OUTPUT_CONTRACT_VIOLATIONS_TOTAL,
                "Requests failed because an output broke what its model.toml declares (probability rows that are no distribution, rows not as wide as the labels), by model, version and output.",
                &["model", "version", "output"],
            ),
            shadow_requests: counter(
                names::SHADOW_REQUESTS_TOTAL,
                "Copies of live requests for a candidate in its shadow phase, by model, candidate version and outcome: mirrored or dropped (queue full) as offered; agreed or disagreed with stable once compared.",
                &["model", "version", "outcome"],
            ),
            replayed_requests: counter(
                names::REPLAYED_REQUESTS_TOTAL,
                "Recent live requests replayed to a candidate because live traffic was too thin to judge it, by model, candidate version and outcome: agreed or disagreed with stable's answer, uncompared, or failed.",
                &["model", "version", "outcome"],
            ),
            worker_rss_bytes: gauge(names::WORKER_RSS_BYTES, "Resident memory of each worker process.", WORKER),
            worker_cpu_seconds: prometheus::CounterVec::new(
                Opts::new(names::WORKER_CPU_SECONDS_TOTAL, "CPU time used by worker processes (user + system)."),
                WORKER,
            )
            .expect("valid metric"),
            model_load_duration: histogram(
                names::MODEL_LOAD_DURATION_SECONDS,
                "Time from worker spawn to ready (load, warm-up, golden checks).",
                LOAD_BUCKETS,
                MODEL_VERSION,
            ),
            plan_builds: counter(
                names::PLAN_BUILDS_TOTAL,
                "Optimized plans built for new input shapes (at load, and on first use of a shape).",
                MODEL_VERSION,
            ),
            health_check_status: gauge(
                names::HEALTH_CHECK_STATUS,
                "Each health check of each live version: 0 ok, 1 warning, 2 critical, -1 insufficient data.",
                &["model", "version", "check"],
            ),
            rollout_phase: gauge(
                names::ROLLOUT_PHASE,
                "1 for the phase each model's latest rollout is in (or ended in), 0 for the others.",
                &["model", "phase"],
            ),
            traffic_weight: gauge(
                names::TRAFFIC_WEIGHT_PERCENT,
                "Percent of a model's unpinned traffic each live version receives.",
                MODEL_VERSION,
            ),
            build_info: float_gauge(names::BUILD_INFO, "Always 1; labels give the modeld version.", &["version"]),
            gpu_memory_used: gauge(names::GPU_MEMORY_USED_BYTES, "GPU memory in use, by every process.", GPU),
            gpu_memory_total: gauge(names::GPU_MEMORY_TOTAL_BYTES, "GPU memory in all.", GPU),
            gpu_utilization: float_gauge(
                names::GPU_UTILIZATION_RATIO,
                "Share of NVML's last sample period in which a kernel ran on the GPU.",
                GPU,
            ),
            gpu_temperature: gauge(names::GPU_TEMPERATURE_CELSIUS, "GPU core temperature.", GPU),
            gpu_power: float_gauge(names::GPU_POWER_WATTS, "GPU power draw.", GPU),
            gpu_ecc_uncorrected: gauge(
                names::GPU_ECC_UNCORRECTED_ERRORS,
                "Uncorrected ECC errors since the driver loaded (volatile count).",
                GPU,
            ),
            gpu_xid_errors: counter(names::GPU_XID_ERRORS_TOTAL, "Critical Xid errors the driver reported.", GPU),
            worker_gpu_memory_bytes: gauge(
                names::WORKER_GPU_MEMORY_BYTES,
                "GPU memory each worker holds, as NVML reads it.",
                &["model", "version", "slot", "gpu"],
            ),
            registry: Registry::new(),
        };
        m.register_all();
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.queue_duration.clone()),
            Box::new(self.inference_duration.clone()),
            Box::new(self.batch_size.clone()),
            Box::new(self.inflight.clone()),
            Box::new(self.workers_up.clone()),
            Box::new(self.workers_desired.clone()),
            Box::new(self.workers_actual.clone()),
            Box::new(self.scale_held.clone()),
            Box::new(self.scale_events.clone()),
            Box::new(self.crash_looping.clone()),
            Box::new(self.worker_restarts.clone()),
            Box::new(self.worker_oom_kills.clone()),
            Box::new(self.worker_hangs.clone()),
            Box::new(self.worker_disconnects.clone()),
            Box::new(self.latest_skipped.clone()),
            Box::new(self.nonfinite_outputs.clone()),
            Box::new(self.contract_violations.clone()),
            Box::new(self.shadow_requests.clone()),
            Box::new(self.replayed_requests.clone()),
            Box::new(self.worker_rss_bytes.clone()),
            Box::new(self.worker_cpu_seconds.clone()),
            Box::new(self.model_load_duration.clone()),
            Box::new(self.plan_builds.clone()),
            Box::new(self.health_check_status.clone()),
            Box::new(self.rollout_phase.clone()),
            Box::new(self.traffic_weight.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.gpu_memory_used.clone()),
            Box::new(self.gpu_memory_total.clone()),
            Box::new(self.gpu_utilization.clone()),
            Box::new(self.gpu_temperature.clone()),
            Box::new(self.gpu_power.clone()),
            Box::new(self.gpu_ecc_uncorrected.clone()),
            Box::new(self.gpu_xid_errors.clone()),
            Box::new(self.worker_gpu_memory_bytes.clone()),
        ];
        for c in collectors {
            self.registry.register(c).expect("metric names are unique");
        }
    }

    /// The time a version's requests waited for an inference thread, summed, and how many
    /// requests (what `modeld_queue_duration_seconds` has counted so far).
    pub fn queued_so_far(&self, model: &str, version: u64) -> (f64, u64) {
        let h = self.queue_duration.with_label_values(&[model, &version.to_string()]);
        (h.get_sample_sum(), h.get_sample_count())
    }

    /// Creates a starting version's counters at 0 (restarts, OOM kills, requests by the
    /// codes alerts read). A counter that first appears at 1 shows Prometheus no increase,
    /// so the first OOM kill or the first 5xx of a version would never fire an alert.
    pub fn version_started(&self, model: &str, version: u64) {
        let version = version.to_string();
        self.worker_restarts.with_label_values(&[model, &version]);
        self.worker_oom_kills.with_label_values(&[model, &version]);
        self.worker_hangs.with_label_values(&[model, &version]);
        self.worker_disconnects.with_label_values(&[model, &version]);
        for protocol in PROTOCOLS {
            for code in START_CODES {
                self.requests.with_label_values(&[model, &version, protocol, code]);
            }
        }
    }

    /// Counts an answer the worker failed for the values of `output`: NaN or ±Inf, or
    /// (`broke_contract`) what model.toml declares of it.
    pub fn wrong_answer(&self, model: &str, version: u64, output: &str, broke_contract: bool) {
        let counter = if broke_contract { &self.contract_violations } else { &self.nonfinite_outputs };
        counter.with_label_values(&[model, &version.to_string(), output]).inc();
    }

    /// Creates the per-output counters of wrong answers at 0 for a version whose workers
    /// report these outputs (name, whether floating-point).
    pub fn outputs_known<'a>(&self, model: &str, version: u64, outputs: impl Iterator<Item = (&'a str, bool)>) {
        let version = version.to_string();
        for (name, float) in outputs {
            if float {
                self.nonfinite_outputs.with_label_values(&[model, &version, name]);
            }
            self.contract_violations.with_label_values(&[model, &version, name]);
        }
    }

    /// Marks `phase` as the phase of `model`'s latest rollout.
    pub fn set_rollout_phase(&self, model: &str, phase: &str, all: &[&str]) {
        for p in all {
            self.rollout_phase.with_label_values(&[model, p]).set(i64::from(*p == phase));
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
