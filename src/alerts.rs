//! `modeld alerts render`: Prometheus alerting rules from the same thresholds `/health`
//! uses, so an alert fires on what the daemon itself calls a breach.
//!
//! One group per model (its thresholds may differ) plus a daemon group: error rate, P95 and
//! P99 latency, availability, OOM kills, crash loops and failed versions, wrong answers
//! (NaN, a broken output contract), and the daemon being down. Rates are taken over the model's health window (at least `2 × scrape
//! interval` is needed; with the default 60 s window, scrape every 15 s or less) and only
//! alert with at least `min_samples` requests in the window, as the health checks do.
//! The output is YAML; strings are double-quoted with JSON escaping, which YAML reads as
//! is. Depends on [`crate::config`] and the queries of [`crate::promql`].

use crate::config::{Config, Levels, ModelConfig};
use crate::promql::Queries;
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

fn model_rules(m: &ModelConfig) -> Vec<Rule> {
    let h = &m.health;
    let q = Queries::new(format!("model={}", quote(&m.name)), h.window);
    let w = q.window().to_string();
    let enough = q.enough(h.min_samples);
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
    levels("ErrorRate", &q.error_rate(), ">", h.error_rate, "error rate (share of 5xx)");
    levels("Availability", &q.availability(), "<", h.availability, "availability (share without 503/504)");
    levels("LatencyP95", &q.latency_quantile(0.95), ">", seconds(h.p95_latency), "P95 latency in seconds");
    levels("LatencyP99", &q.latency_quantile(0.99), ">", seconds(h.p99_latency), "P99 latency in seconds");
    rules.extend(resource_rules(&m.name, &q));
    rules
}

fn resource_rules(name: &str, q: &Queries) -> Vec<Rule> {
    vec![
        Rule {
            name: "ModeldOOMKill".into(),
            expr: format!("{} > 0", q.oom_kills()),
            for_: "0m",
            severity: "critical",
            summary: format!("{name} v{{{{ $labels.version }}}}: a worker was killed for exceeding its memory limit"),
        },
        Rule {
            name: "ModeldCrashLooping".into(),
            expr: format!("{} > {RESTARTS}", q.restarts(RESTART_WINDOW)),
            for_: "0m",
            severity: "warning",
            summary: format!(
                "{name} v{{{{ $labels.version }}}}: workers restarted more than {RESTARTS} times in {RESTART_WINDOW}"
            ),
        },
        Rule {
            name: "ModeldVersionDown".into(),
            expr: q.check_critical("model_loaded"),
            for_: "1m",
            severity: "critical",
            summary: format!(
                "{name} v{{{{ $labels.version }}}}: no worker ready, the version failed, or its workers die on \
                 the requests they get"
            ),
        },
        Rule {
            name: "ModeldWrongAnswers".into(),
            expr: q.wrong_answers(),
            for_: "0m",
            severity: "critical",
            summary: format!(
                "{name} v{{{{ $labels.version }}}}: answers failed for their values (NaN, or what model.toml \
                 declares of an output)"
            ),
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
    fn rules_use_the_model_thresholds() {
        let mut model = ModelConfig {
            name: "iris".into(),
            dir: "/m/iris".into(),
            version: crate::config::VersionSpec::Latest,
            workers: crate::config::Workers::fixed(1),
            scale: Default::default(),
            threads: 1,
            memory_limit: None,
            health: crate::config::HealthConfig::default(),
            deploy: Default::default(),
            batching: Default::default(),
            intra_op_threads: 1,
            busy_poll: std::time::Duration::ZERO,
            engine: Default::default(),
            device: Default::default(),
            onnxruntime: Default::default(),
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
