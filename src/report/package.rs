//! The evidence package's layout, as the deployment protocol lists its deliverables:
//!
//! ```text
//! reports/deployment_report.md      what was deployed, plan against actual, verdicts, gates
//! reports/deployment_report.html    the same, with charts
//! reports/validation_results.json   the results as a versioned document (and its schema)
//! rollback/rollback-plan.md         the triggers with this model's thresholds, the commands
//! rollback/rollback-script.sh       runnable; refuses when nothing can be rolled back
//! rollback/rollback-history.json    every revert and rollback of the model
//! monitoring/health-checks.yaml     the thresholds in force for the model
//! monitoring/alert-rules.yaml       `modeld alerts render` for the config
//! monitoring/metrics-config.yaml    a Prometheus scrape config for this daemon
//! serving/serving-config.json       the model's effective config
//! manifests/                        `modeld k8s render` for the model (with --k8s)
//! ```

use super::Subject;
use crate::config::Config;
use crate::rollout::state::Outcome;
use serde_json::json;
use std::path::{Path, PathBuf};

/// One file of the package.
pub struct File {
    pub path: PathBuf,
    pub text: String,
    pub executable: bool,
}

fn file(path: &str, text: String) -> File {
    File { path: PathBuf::from(path), text, executable: false }
}

/// What the package needs beside the rollout: the config now (for alert rules, the scrape
/// config and manifests) and where it was read.
pub struct Setting<'a> {
    pub config: &'a Config,
    pub config_path: &'a Path,
    /// The daemon's admin socket, for the rollback commands.
    pub admin_socket: &'a Path,
    /// Render the cluster's manifests for the model too.
    pub k8s: bool,
}

/// Every file of the package.
pub fn files(s: &Subject, setting: &Setting) -> Result<Vec<File>, String> {
    let model = &s.record.model;
    let mut files = vec![
        file("reports/deployment_report.md", super::markdown::report(s)),
        file("reports/deployment_report.html", super::html::report(s)),
        file("reports/validation_results.json", pretty(&super::results::document(s))),
        file("reports/validation_results.schema.json", super::results::SCHEMA_TEXT.to_string()),
        file("rollback/rollback-plan.md", rollback_plan(s, setting)),
        File { path: "rollback/rollback-script.sh".into(), text: rollback_script(s, setting), executable: true },
        file("rollback/rollback-history.json", pretty(&rollback_history(s))),
        file("monitoring/health-checks.yaml", health_checks(s, setting)),
        file("monitoring/alert-rules.yaml", crate::alerts::render(setting.config, JOB)),
        file("monitoring/metrics-config.yaml", metrics_config(setting)),
        file("serving/serving-config.json", pretty(&serving_config(s, setting))),
    ];
    if setting.k8s {
        files.extend(manifests(model, setting)?);
    }
    Ok(files)
}

/// The Prometheus job the alert rules and the scrape config name.
const JOB: &str = "modeld";

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).expect("values serialize") + "\n"
}

/// Writes the package under `dir`.
pub fn write(files: &[File], dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.text)?;
        if f.executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

fn rollback_plan(s: &Subject, setting: &Setting) -> String {
    let r = &s.record;
    let socket = setting.admin_socket.display().to_string();
    let h = s.evidence.as_ref().map(|e| &e.config["health"]);
    let d = s.evidence.as_ref().map(|e| &e.config["deploy"]);
    let value =
        |v: Option<&serde_json::Value>| v.map_or("-".to_string(), |v| v.to_string().trim_matches('"').to_string());
    let mut out = format!("# Rollback plan: {} v{} (rollout #{})\n\n", r.model, r.to, r.id);
    out.push_str("## What reverts by itself\n\n");
    out.push_str(&format!(
        "During a rollout the health gate reverts the new version after {} failed evaluations in a row, judged \
         every {}, when:\n\n",
        value(d.map(|d| &d["consecutive_breaches"])),
        value(d.map(|d| &d["check_every"]))
    ));
    for (what, v) in [
        (
            "its error rate (5xx) is above",
            h.map(|h| &h["error_rate"]["critical"]).map(|v| format!("{}%", value(Some(v)))),
        ),
        ("its P95 latency is above", h.map(|h| value(Some(&h["p95_latency"]["critical"])))),
        ("its P99 latency is above", h.map(|h| value(Some(&h["p99_latency"]["critical"])))),
        (
            "its availability is below",
            h.map(|h| &h["availability"]["critical"]).map(|v| format!("{}%", value(Some(v)))),
        ),
        (
            "its error rate exceeds the live version's by more than (points)",
            d.map(|d| value(Some(&d["max_error_rate_increase"]))),
        ),
        ("its P95 exceeds the live version's by more than (times)", d.map(|d| value(Some(&d["max_latency_ratio"])))),
        ("it agrees with the live version on less than (%)", d.map(|d| value(Some(&d["min_agreement"])))),
        ("a feature of its answers drifts by a PSI above", d.map(|d| value(Some(&d["max_output_drift"])))),
    ] {
        out.push_str(&format!("- {what} {}\n", v.unwrap_or_else(|| "-".into())));
    }
    out.push_str(
        "- a worker is killed for its memory, its workers die on requests, or an answer breaks its output contract\n",
    );
    out.push_str(&format!(
        "\nAfter a promotion, while the old version is kept warm (keep_previous {}), the same critical checks \
         bring it back by themselves.\n\n",
        value(d.map(|d| &d["keep_previous"]))
    ));
    out.push_str("## Rolling back by hand\n\n");
    match (r.outcome, r.from) {
        (Some(Outcome::Promoted), Some(from)) => out.push_str(&format!(
            "v{} is live after this rollout; v{from} was live before it. To go back:\n\n```sh\nmodeld rollback {} --socket {socket}\n\
             # or, with the script beside this file (it checks first):\nsh rollback/rollback-script.sh\n```\n\n\
             The old version comes back from its warm pool in one routing store while it is kept, else it is \
             started anew first (its workers must get ready). To keep it from coming back on the next reload, \
             set `version = {from}` for the model in the config, then `systemctl reload modeld`.\n",
            r.to, r.model
        )),
        (Some(Outcome::Promoted), None) => out.push_str("Nothing was live before this rollout: there is no version to roll back to.\n"),
        (Some(outcome), _) => out.push_str(&format!(
            "This rollout ended {}: v{} never became the live version, so there is nothing of it to roll back. \
             The version live before it serves.\n",
            outcome.name(),
            r.to
        )),
        (None, _) => out.push_str(&format!(
            "This rollout is still running: `modeld rollback {} --socket {socket}` reverts it at once.\n",
            r.model
        )),
    }
    out.push_str("\n## If the daemon itself misbehaves\n\n```sh\nsystemctl status modeld\njournalctl -u modeld --since -1h\nsystemctl restart modeld   # serves the last promoted version; a rollout in progress is rolled back\n```\n");
    out
}

/// A shell script that rolls the model back to the version live before this rollout, and
/// refuses when that is not what is live now.
fn rollback_script(s: &Subject, setting: &Setting) -> String {
    let r = &s.record;
    let socket = setting.admin_socket.display().to_string();
    let refuse = |why: String| {
        format!(
            "#!/bin/sh\n# Rollback of {} after rollout #{}: {why}\nset -eu\necho \"modeld rollback refused: {why}\" >&2\nexit 1\n",
            r.model, r.id
        )
    };
    let (Some(Outcome::Promoted), Some(from)) = (r.outcome, r.from) else {
        return refuse(match r.outcome {
            Some(Outcome::Promoted) => format!("nothing was live before v{} to roll back to", r.to),
            Some(o) => {
                format!("rollout #{} ended {}; v{} never became live, nothing to roll back", r.id, o.name(), r.to)
            }
            None => format!("rollout #{} is still running; use modeld rollback {} to revert it", r.id, r.model),
        });
    };
    format!(
        r#"#!/bin/sh
# Rolls {model} back from v{to} to v{from}, the version live before rollout #{id}.
# Refuses unless v{to} is the live version now. MODELD and MODELD_SOCKET override the
# binary and the admin socket.
set -eu
modeld=${{MODELD:-modeld}}
socket=${{MODELD_SOCKET:-{socket}}}
# `modeld status`: MODEL VERSION ROLE ... one line per version.
live=$("$modeld" status --socket "$socket" | awk -v model={model_arg} '$1 == model && $3 == "stable" {{ print $2 }}')
if [ "$live" != "{to}" ]; then
    echo "modeld rollback refused: {model} serves v${{live:-nothing}}, not v{to}; nothing of rollout #{id} to roll back" >&2
    exit 1
fi
"$modeld" rollback {model_arg} --socket "$socket"
"#,
        model = r.model,
        model_arg = shell_word(&r.model),
        to = r.to,
        from = from,
        id = r.id,
    )
}

/// `word` quoted for sh.
fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

fn rollback_history(s: &Subject) -> serde_json::Value {
    let undone: Vec<&crate::rollout::state::Record> = s
        .history
        .iter()
        .filter(|r| matches!(r.outcome, Some(Outcome::Reverted | Outcome::RolledBack | Outcome::Aborted)))
        .collect();
    json!({ "model": s.record.model, "reverts_and_rollbacks": undone })
}

fn health_checks(s: &Subject, setting: &Setting) -> String {
    let health = match (&s.evidence, setting.config.model(&s.record.model)) {
        (Some(e), _) => e.config["health"].clone(),
        (None, Some(m)) => crate::config::describe::health(&m.health),
        (None, None) => json!({}),
    };
    let doc = json!({
        "model": s.record.model,
        "source": "the thresholds the rollout ran with; /health and the rollout gate judge by them",
        "checks": health,
        "probes": {
            "liveness": "/v2/health/live",
            "readiness": "/ready",
            "health": "/health (503 when a check is critical)",
        },
    });
    format!("# Health checks in force for {}.\n{}", s.record.model, crate::yaml::document(&doc))
}

fn metrics_config(setting: &Setting) -> String {
    let target = setting.config.server.listen.to_string();
    let window = setting.config.health.window;
    // Two scrapes per window at least, as rate() over the window needs.
    let interval = (window / 4).max(std::time::Duration::from_secs(5));
    let doc = json!({
        "global": {
            "scrape_interval": crate::promql::range(interval),
            "evaluation_interval": crate::promql::range(interval),
        },
        "rule_files": ["alert-rules.yaml"],
        "scrape_configs": [{
            "job_name": JOB,
            "metrics_path": "/metrics",
            "static_configs": [{ "targets": [target] }],
        }],
    });
    format!(
        "# Prometheus scrape config for the daemon of {} (listen {target}); the alert rules beside it.\n\
         # With tokens on, add `authorization: {{credentials_file: ...}}` holding a token with the \"probes\" scope.\n{}",
        setting.config_path.display(),
        crate::yaml::document(&doc)
    )
}

fn serving_config(s: &Subject, setting: &Setting) -> serde_json::Value {
    let model = match (&s.evidence, setting.config.model(&s.record.model)) {
        (Some(e), _) => e.config.clone(),
        (None, Some(m)) => crate::config::describe::model(m, &m.deploy),
        (None, None) => serde_json::Value::Null,
    };
    json!({
        "model": model,
        "server": {
            "listen": setting.config.server.listen.to_string(),
            "request_timeout": humantime::format_duration(setting.config.server.request_timeout).to_string(),
            "max_inflight_per_model": setting.config.server.max_inflight_per_model,
            "max_body_bytes": setting.config.server.max_body_bytes,
        },
        "config_file": setting.config_path.display().to_string(),
    })
}

#[cfg(not(feature = "k8s"))]
fn manifests(_model: &str, _setting: &Setting) -> Result<Vec<File>, String> {
    Err("--k8s: this modeld was built without its k8s feature".into())
}

#[cfg(feature = "k8s")]
fn manifests(model: &str, setting: &Setting) -> Result<Vec<File>, String> {
    use crate::k8s::{self, Models, Options, Rollouts};
    let mut config = setting.config.clone();
    config.models.retain(|m| m.name == model);
    if config.models.is_empty() {
        return Err(format!("--k8s: model '{model}' is not in {}", setting.config_path.display()));
    }
    let options = Options {
        name: "modeld".into(),
        namespace: "default".into(),
        image: concat!("modeld:", env!("CARGO_PKG_VERSION")).into(),
        model: Some(model.to_string()),
        models: Models::Image,
        rollouts: Rollouts::Kubernetes,
        load_balancer: false,
        prometheus: "http://prometheus.monitoring.svc:9090".into(),
        out_hint: "manifests".into(),
        probe_token: None,
        istio_gateway: None,
    };
    let rendered = k8s::render(config, options).map_err(|e| format!("--k8s: {e}"))?;
    let mut files: Vec<File> = rendered
        .objects
        .iter()
        .map(|o| file(&format!("manifests/{}", o.file), crate::yaml::document(&o.value)))
        .collect();
    files.push(file("manifests/RUNBOOK.md", rendered.runbook.clone()));
    Ok(files)
}
