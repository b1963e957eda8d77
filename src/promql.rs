//! PromQL for modeld's health checks, over its own metric names: one definition of each
//! check as a query, used by the alerting rules (`modeld alerts render`) and by a
//! cluster's rollout analysis (`modeld k8s render`), so both judge what `/health` and the
//! rollout gate judge.
//!
//! Each query is per model and version (`sum by (model, version)`) over a window: the
//! error rate (5xx other than 503/504, as a fraction), availability (the fraction answered
//! without 503/504), a latency quantile in seconds, and OOM kills. [`Queries::enough`]
//! holds only where the window has `min_samples` requests, the checks' guard against
//! judging too little traffic. Depends only on [`crate::metrics`].

use crate::metrics::names;
use std::time::Duration;

/// Queries over one selector (`model="iris"`, perhaps with a version) and window.
pub struct Queries {
    selector: String,
    window: String,
}

impl Queries {
    /// `selector` is the inside of a label matcher, such as `model="iris"`.
    pub fn new(selector: impl Into<String>, window: Duration) -> Queries {
        Queries { selector: selector.into(), window: range(window) }
    }

    /// The window as Prometheus writes it.
    pub fn window(&self) -> &str {
        &self.window
    }

    /// Requests answered in the window.
    pub fn total(&self) -> String {
        self.count("")
    }

    /// The total, where it is at least `min_samples` (empty otherwise).
    pub fn enough(&self, min_samples: u64) -> String {
        format!("{} >= {min_samples}", self.total())
    }

    /// Share of requests the version failed: 5xx other than 503 and 504.
    pub fn error_rate(&self) -> String {
        format!("{} / {}", self.count(r#",code=~"5..",code!~"503|504""#), self.total())
    }

    /// Share of requests answered without 503 (not ready, over the bound) or 504 (timeout).
    pub fn availability(&self) -> String {
        format!("1 - {} / {}", self.count(r#",code=~"503|504""#), self.total())
    }

    /// The `q` quantile (0.95) of request latency in seconds, from the histogram.
    pub fn latency_quantile(&self, q: f64) -> String {
        format!(
            "histogram_quantile({q}, sum by (model, version, le) (rate({}_bucket{{{}}}[{}])))",
            names::REQUEST_DURATION_SECONDS,
            self.selector,
            self.window
        )
    }

    /// Workers killed for exceeding their memory limit in the window.
    pub fn oom_kills(&self) -> String {
        format!(
            "sum by (model, version) (increase({}{{{}}}[{}]))",
            names::WORKER_OOM_KILLS_TOTAL,
            self.selector,
            self.window
        )
    }

    /// Answers the version's workers failed for their values (NaN, a broken output
    /// contract) in the window, per version.
    pub fn wrong_answers(&self) -> String {
        let per = |metric: &str| {
            format!("sum by (model, version) (increase({metric}{{{}}}[{}])) > 0", self.selector, self.window)
        };
        format!("({}) or ({})", per(names::OUTPUT_CONTRACT_VIOLATIONS_TOTAL), per(names::NONFINITE_OUTPUTS_TOTAL))
    }

    /// Worker restarts over `window`.
    pub fn restarts(&self, window: &str) -> String {
        format!("increase({}{{{}}}[{window}])", names::WORKER_RESTARTS_TOTAL, self.selector)
    }

    /// Whether a health check is critical (2) now.
    pub fn check_critical(&self, check: &str) -> String {
        format!("{}{{{},check=\"{check}\"}} == 2", names::HEALTH_CHECK_STATUS, self.selector)
    }

    fn count(&self, codes: &str) -> String {
        format!(
            "sum by (model, version) (increase({}{{{}{codes}}}[{}]))",
            names::REQUESTS_TOTAL,
            self.selector,
            self.window
        )
    }
}

/// A Prometheus range for a duration (`60s`, `1500ms`).
pub fn range(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        _ => format!("{}ms", d.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_print_as_prometheus_durations() {
        assert_eq!(range(Duration::from_secs(60)), "60s");
        assert_eq!(range(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn queries_read_modeld_metrics_per_model_and_version() {
        let q = Queries::new(r#"model="iris""#, Duration::from_secs(60));
        assert_eq!(
            q.error_rate(),
            r#"sum by (model, version) (increase(modeld_requests_total{model="iris",code=~"5..",code!~"503|504"}[60s])) / sum by (model, version) (increase(modeld_requests_total{model="iris"}[60s]))"#
        );
        assert!(q.latency_quantile(0.95).starts_with("histogram_quantile(0.95, sum by (model, version, le)"));
        assert!(q.enough(20).ends_with(">= 20"));
    }
}
