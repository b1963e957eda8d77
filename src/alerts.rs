//! `modeld alerts render`: Prometheus alerting rules from the same thresholds `/health`
//! uses, so an alert fires on what the daemon itself calls a breach.
//!
//! One group per model (its thresholds may differ) plus a daemon group: error rate, P95 and
//! P99 latency, availability, OOM kills, crash loops and failed versions, and the daemon
//! being down. Rates are taken over the model's health window (at least `2 × scrape
//! interval` is needed; with the default 60 s window, scrape every 15 s or less) and only
//! alert with at least `min_samples` requests in the window, as the health checks do.
//! The output is YAML; strings are double-quoted with JSON escaping, which YAML reads as
//! is. Depends only on [`crate::config`].

use crate::config::{Config, HealthConfig, Levels, ModelConfig};
use std::fmt::Write;
use std::time::Duration;

/// Alerting on restarts: more than this many in [`RESTART_WINDOW`] is a crash loop in the
/// making (the supervisor fails a version at 5 exits in 60 s).
const RESTARTS: u32 = 3;
const RESTART_WINDOW: &str = "5m";

struct Rule {
    name: String,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: String,
}

/// The rules file for `config`; `job` is the Prometheus job that scrapes modeld.
pub fn render(config: &Config, job: &str) -> String {
    let mut out = String::from(
        "# Prometheus alerting rules for modeld, rendered by `modeld alerts render` from the\n\
         # [health] thresholds of the config. Re-render after changing them.\n\
         groups:\n",
    );
    group(&mut out, "modeld-daemon", &daemon_rules(job));
    for model in &config.models {
        group(&mut out, &format!("modeld-model-{}", model.name), &model_rules(model));
    }
    out
}

fn group(out: &mut String, name: &str, rules: &[Rule]) {
    let _ = writeln!(out, "  - name: {}\n    rules:", quote(name));
    for r in rules {
        let _ = writeln!(out, "      - alert: {}", r.name);
        let _ = writeln!(out, "        expr: {}", quote(&r.expr));
        let _ = writeln!(out, "        for: {}", r.for_);
        let _ = writeln!(out, "        labels:\n          severity: {}", r.severity);
        let _ = writeln!(out, "        annotations:\n          summary: {}", quote(&r.summary));
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn daemon_rules(job: &str) -> Vec<Rule> {
    vec![Rule {
        name: "ModeldDown".into(),
        expr: format!("up{{job={}}} == 0", quote(job)),
        for_: "1m",
        severity: "critical",
        summary: "modeld on {{ $labels.instance }} is down or not answering /metrics".into(),
    }]
}

/// A Prometheus range for a duration (`60s`, `2s`, `500ms`).
fn range(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        _ => format!("{}ms", d.as_millis()),
    }
}

fn model_rules(m: &ModelConfig) -> Vec<Rule> {
    let h = &m.health;
    let w = range(h.window);
    let sel = format!("model={}", quote(&m.name));
    let total = format!("sum by (model, version) (increase(modeld_requests_total{{{sel}}}[{w}]))");
    let enough = format!("{total} >= {}", h.min_samples);
    let share = |codes: &str| {
        format!("sum by (model, version) (increase(modeld_requests_total{{{sel},{codes}}}[{w}])) / {total}")
    };
    let failed = share("code=~\"5..\",code!~\"503|504\"");
    let unavailable = share("code=~\"503|504\"");
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (model, version, le) (rate(modeld_request_duration_seconds_bucket{{{sel}}}[{w}])))"
        )
    };
    let mut rules = Vec::new();
    let mut levels = |name: &str, value: &str, op: &str, levels: Levels<f64>, what: &str| {
        for (severity, threshold) in [("warning", levels.warning), ("critical", levels.critical)] {
            let Some(t) = threshold else { continue };
            rules.push(Rule {
                name: format!("Modeld{name}{}", capitalise(severity)),
                expr: format!("({value}) {op} {t} and ({enough})"),
                for_: "1m",
                severity: if severity == "warning" { "warning" } else { "critical" },
                summary: format!("{{{{ $labels.model }}}} v{{{{ $labels.version }}}}: {what} {op} {t} over {w}"),
            });
        }
    };
    levels("ErrorRate", &failed, ">", h.error_rate, "error rate (share of 5xx)");
    levels("Availability", &format!("1 - {unavailable}"), "<", h.availability, "availability (share without 503/504)");
    levels("LatencyP95", &quantile("0.95"), ">", seconds(h.p95_latency), "P95 latency in seconds");
    levels("LatencyP99", &quantile("0.99"), ">", seconds(h.p99_latency), "P99 latency in seconds");
    rules.extend(resource_rules(&m.name, h, &sel));
    rules
}

fn resource_rules(name: &str, h: &HealthConfig, sel: &str) -> Vec<Rule> {
    let w = range(h.window);
    vec![
        Rule {
            name: "ModeldOOMKill".into(),
            expr: format!("increase(modeld_worker_oom_kills_total{{{sel}}}[{w}]) > 0"),
            for_: "0m",
            severity: "critical",
            summary: format!("{name} v{{{{ $labels.version }}}}: a worker was killed for exceeding its memory limit"),
        },
        Rule {
            name: "ModeldCrashLooping".into(),
            expr: format!("increase(modeld_worker_restarts_total{{{sel}}}[{RESTART_WINDOW}]) > {RESTARTS}"),
            for_: "0m",
            severity: "warning",
            summary: format!(
                "{name} v{{{{ $labels.version }}}}: workers restarted more than {RESTARTS} times in {RESTART_WINDOW}"
            ),
        },
        Rule {
            name: "ModeldVersionDown".into(),
            expr: format!("modeld_health_check_status{{{sel},check=\"model_loaded\"}} == 2"),
            for_: "1m",
            severity: "critical",
            summary: format!("{name} v{{{{ $labels.version }}}}: no worker ready, or the version failed"),
        },
    ]
}

fn seconds(levels: Levels<Duration>) -> Levels<f64> {
    Levels { warning: levels.warning.map(|d| d.as_secs_f64()), critical: levels.critical.map(|d| d.as_secs_f64()) }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
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
    fn rules_use_the_model_thresholds() {
        let mut model = ModelConfig {
            name: "iris".into(),
            dir: "/m/iris".into(),
            version: crate::repo::VersionSpec::Latest,
            workers: 1,
            threads: 1,
            memory_limit: None,
            health: HealthConfig::default(),
            deploy: Default::default(),
            batching: Default::default(),
            intra_op_threads: 1,
            busy_poll: std::time::Duration::ZERO,
        };
        model.health.error_rate.critical = Some(0.1);
        let rules = model_rules(&model);
        let critical = rules.iter().find(|r| r.name == "ModeldErrorRateCritical").unwrap();
        assert!(critical.expr.contains(") > 0.1 and ("), "{}", critical.expr);
        assert!(critical.expr.contains(">= 20"), "{}", critical.expr);
        assert!(rules.iter().any(|r| r.name == "ModeldLatencyP99Critical"));
        // No P99 warning threshold by default, so no rule for it.
        assert!(!rules.iter().any(|r| r.name == "ModeldLatencyP99Warning"));
    }
}
