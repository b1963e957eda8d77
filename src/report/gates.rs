//! The deployment protocol's three quality gates — pre-deployment validation, execution,
//! post-deployment validation — as checklists whose ticks come from what the rollout
//! measured, each with its value and the threshold it was held to. A check nothing
//! measured says so; it is never ticked.

use super::Subject;
use crate::rollout::evidence::{Evidence, Figures, PhaseRecord};
use crate::rollout::state::Outcome;
use serde::{Deserialize, Serialize};

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    Passed,
    Failed,
    /// Nothing was measured that could tick it.
    NotMeasured,
}

impl Mark {
    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Passed => "[x]",
            Mark::Failed => "[ ] FAILED",
            Mark::NotMeasured => "[ ] not measured",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub mark: Mark,
    pub what: String,
    pub value: String,
    pub threshold: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub name: String,
    pub checks: Vec<Check>,
}

impl Gate {
    /// Passed when every measured check passed and one at least was measured.
    pub fn mark(&self) -> Mark {
        if self.checks.iter().any(|c| c.mark == Mark::Failed) {
            Mark::Failed
        } else if self.checks.iter().any(|c| c.mark == Mark::Passed) {
            Mark::Passed
        } else {
            Mark::NotMeasured
        }
    }
}

fn check(mark: Mark, what: &str, value: impl Into<String>, threshold: impl Into<String>) -> Check {
    Check { mark, what: what.into(), value: value.into(), threshold: threshold.into() }
}

fn not_measured(what: &str, why: &str) -> Check {
    check(Mark::NotMeasured, what, why, "")
}

fn passes(ok: bool) -> Mark {
    if ok { Mark::Passed } else { Mark::Failed }
}

/// The thresholds the rollout ran with, read from its config.
#[derive(Debug, Default)]
pub struct Thresholds {
    /// Fractions.
    pub error_rate: Option<f64>,
    pub availability: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub min_agreement: f64,
    pub max_output_drift: f64,
    pub memory_limit: Option<u64>,
    pub keep_previous_seconds: f64,
}

impl Thresholds {
    pub fn of(evidence: &Evidence) -> Thresholds {
        let c = &evidence.config;
        let fraction = |v: &serde_json::Value| v.as_f64().map(|p| p / 100.0);
        let ms = |v: &serde_json::Value| {
            v.as_str().and_then(|t| humantime::parse_duration(t).ok()).map(|d| d.as_secs_f64() * 1000.0)
        };
        let secs = |v: &serde_json::Value| {
            v.as_str().and_then(|t| humantime::parse_duration(t).ok()).map_or(0.0, |d| d.as_secs_f64())
        };
        let h = &c["health"];
        let d = &c["deploy"];
        Thresholds {
            error_rate: fraction(&h["error_rate"]["critical"]),
            availability: fraction(&h["availability"]["critical"]),
            p95_ms: ms(&h["p95_latency"]["critical"]),
            p99_ms: ms(&h["p99_latency"]["critical"]),
            min_agreement: fraction(&d["min_agreement"]).unwrap_or(0.0),
            max_output_drift: d["max_output_drift"].as_f64().unwrap_or(0.0),
            memory_limit: c["memory_limit"].as_u64(),
            keep_previous_seconds: secs(&d["keep_previous"]),
        }
    }
}

pub fn percent(f: f64) -> String {
    format!("{:.2}%", f * 100.0)
}

pub fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

/// The three gates for a rollout.
pub fn gates(s: &Subject) -> Vec<Gate> {
    let Some(e) = &s.evidence else {
        let none = || {
            vec![not_measured("evidence", "this rollout kept no evidence (older than the evidence files, or pruned)")]
        };
        return ["Pre-deployment validation", "Execution", "Post-deployment validation"]
            .into_iter()
            .map(|name| Gate { name: name.into(), checks: none() })
            .collect();
    };
    let t = Thresholds::of(e);
    vec![
        Gate { name: "Pre-deployment validation".into(), checks: pre_deployment(s, e) },
        Gate { name: "Execution".into(), checks: execution(e, &t) },
        Gate { name: "Post-deployment validation".into(), checks: post_deployment(s, e, &t) },
    ]
}

fn pre_deployment(s: &Subject, e: &Evidence) -> Vec<Check> {
    let candidate = e.versions.iter().find(|v| v.role == "candidate");
    let loaded = candidate.and_then(|c| c.device.as_ref().map(|d| (c, d)));
    let mut checks = vec![match loaded {
        Some((c, device)) => check(
            Mark::Passed,
            "the new version loads and warms up",
            format!("v{} ready on {device} ({})", c.version, c.engine.as_deref().unwrap_or("-")),
            "its workers report ready",
        ),
        None => check(
            Mark::Failed,
            "the new version loads and warms up",
            s.record.reason.clone().unwrap_or_else(|| "it never got ready".into()),
            "its workers report ready",
        ),
    }];
    checks.push(match (candidate.map_or(0, |c| c.golden_examples), loaded) {
        (0, _) => not_measured("golden examples pass", "model.toml declares none"),
        (n, Some(_)) => check(Mark::Passed, "golden examples pass", format!("{n} of {n} matched"), "every one"),
        (n, None) => {
            check(Mark::Failed, "golden examples pass", format!("{n} declared; the version did not load"), "every one")
        }
    });
    checks.push(match &e.signature {
        None if s.record.from.is_none() => {
            not_measured("the signature keeps the live version's clients", "nothing was live")
        }
        None => not_measured("the signature keeps the live version's clients", "the version did not load"),
        Some(text) => check(
            passes(!text.contains("refused")),
            "the signature keeps the live version's clients",
            text.clone(),
            "no breaking difference, unless allowed",
        ),
    });
    checks.push(match &s.record.validation {
        None => not_measured("the validation set scores as well as the live version", "no validation set"),
        Some(v) => check(
            passes(v.passed),
            "the validation set scores as well as the live version",
            v.verdict.clone(),
            v.path.clone(),
        ),
    });
    checks
}

/// The phases that held the candidate under the gate (shadow and steps).
fn judged(e: &Evidence) -> impl Iterator<Item = &PhaseRecord> {
    e.phases.iter().filter(|p| p.planned_seconds.is_some())
}

fn execution(e: &Evidence, t: &Thresholds) -> Vec<Check> {
    let mut checks = Vec::new();
    let shadow = e.phases.iter().find(|p| p.name == "shadow");
    checks.push(match shadow.and_then(|p| p.answers.as_ref()).and_then(|a| a.agreement.map(|g| (g, a.compared))) {
        _ if t.min_agreement == 0.0 => {
            not_measured("the shadow agrees with the live version", "min_agreement is 0 (off)")
        }
        Some((agreement, compared)) => check(
            passes(agreement >= t.min_agreement),
            "the shadow agrees with the live version",
            format!("{} of {compared} compared", percent(agreement)),
            format!("at least {}", percent(t.min_agreement)),
        ),
        None => not_measured("the shadow agrees with the live version", "no shadow phase, or nothing compared"),
    });
    let answers: Vec<_> = judged(e).filter_map(|p| p.answers.as_ref()).collect();
    let largest = answers
        .iter()
        .filter_map(|a| a.largest_psi.map(|psi| (psi, a.psi_feature.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let drifted = answers.iter().any(|a| a.drifted);
    checks.push(match largest {
        _ if t.max_output_drift == 0.0 => {
            not_measured("its answers stay close to the live version's", "drift not judged (--expect-drift)")
        }
        Some((psi, feature)) => check(
            passes(!drifted),
            "its answers stay close to the live version's",
            format!(
                "largest PSI {psi:.3} ({}){}",
                feature.unwrap_or_default(),
                if psi > t.max_output_drift && !drifted {
                    ", within what chance gives at its sample sizes"
                } else {
                    ""
                }
            ),
            format!("PSI at most {}, beyond chance", t.max_output_drift),
        ),
        None => not_measured("its answers stay close to the live version's", "too few answers to compare"),
    });
    let windows: Vec<(&PhaseRecord, &Figures)> =
        judged(e).filter_map(|p| p.candidate.as_ref().map(|f| (p, f))).collect();
    if windows.is_empty() {
        checks.push(not_measured("error rate, latency and availability in every phase", "no phase ran under the gate"));
        return checks;
    }
    for (p, f) in windows {
        checks.push(window_check(&format!("{} (weight {}%)", p.name, p.weight.unwrap_or(0)), f, t));
    }
    let planned: Vec<&str> = e
        .planned
        .phases
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| n.starts_with("step") || *n == "shadow" || *n == "bake" || *n == "test")
        .collect();
    let ran: Vec<&str> = judged(e).map(|p| p.name.as_str()).collect();
    let all = planned.iter().all(|n| ran.contains(n));
    checks.push(check(passes(all), "every planned phase ran", ran.join(", "), planned.join(", ")));
    checks
}

/// One phase's window against the critical thresholds.
fn window_check(what: &str, f: &Figures, t: &Thresholds) -> Check {
    let error_ok = t.error_rate.is_none_or(|c| f.error_rate <= c);
    let availability_ok = t.availability.is_none_or(|c| f.availability >= c);
    let p95_ok = t.p95_ms.is_none_or(|c| f.p95_ms.is_none_or(|v| v <= c));
    let memory_ok = t.memory_limit.is_none_or(|l| f.rss_bytes <= l);
    let value = format!(
        "{} requests, errors {}, availability {}, P95 {}, P99 {}, memory {} MiB",
        f.requests,
        percent(f.error_rate),
        percent(f.availability),
        ms(f.p95_ms),
        ms(f.p99_ms),
        super::markdown::mib(f.rss_bytes)
    );
    let threshold = format!(
        "errors ≤ {}, availability ≥ {}, P95 ≤ {}{}",
        t.error_rate.map_or("-".into(), percent),
        t.availability.map_or("-".into(), percent),
        ms(t.p95_ms),
        t.memory_limit.map_or(String::new(), |l| format!(", memory ≤ {} MiB", l >> 20))
    );
    let measured = f.requests > 0;
    let mark = match measured {
        false => Mark::NotMeasured,
        true => passes(error_ok && availability_ok && p95_ok && memory_ok),
    };
    check(mark, &format!("the new version's window in {what}"), value, threshold)
}

fn post_deployment(s: &Subject, e: &Evidence, t: &Thresholds) -> Vec<Check> {
    let promoted = s.record.outcome == Some(Outcome::Promoted);
    let mut checks = vec![check(
        passes(promoted),
        "the new version was promoted",
        s.record.outcome.map_or("still running".into(), |o| o.name().to_string())
            + &s.record.reason.as_ref().map_or(String::new(), |r| format!(": {r}")),
        "promoted",
    )];
    let last = judged(e).filter_map(|p| p.candidate.as_ref()).last();
    checks.push(match last {
        Some(f) if promoted => window_check("its last phase", f, t),
        _ => not_measured("the new version's window in its last phase", "it was not promoted"),
    });
    let undone = s.undone_later();
    checks.push(match (promoted, undone.first()) {
        (false, _) => not_measured("it stayed live after the promotion", "it was not promoted"),
        (true, Some(r)) => check(
            Mark::Failed,
            "it stayed live after the promotion",
            format!(
                "{} #{} at {}: {}",
                r.strategy,
                r.id,
                super::when(r.started_at),
                r.reason.clone().unwrap_or_default()
            ),
            format!("no revert while the old version was kept warm ({})", super::took(t.keep_previous_seconds)),
        ),
        (true, None) => check(
            Mark::Passed,
            "it stayed live after the promotion",
            "no revert or rollback since",
            format!("watched while the old version was kept warm ({})", super::took(t.keep_previous_seconds)),
        ),
    });
    let back = match (s.record.from, t.keep_previous_seconds > 0.0) {
        (None, _) => not_measured("a way back exists", "nothing was live before"),
        (Some(v), true) => check(
            Mark::Passed,
            "a way back exists",
            format!("v{v} kept warm for {}", super::took(t.keep_previous_seconds)),
            "`modeld rollback` in one routing store",
        ),
        (Some(v), false) => check(
            Mark::Passed,
            "a way back exists",
            format!("v{v} started anew by `modeld rollback`"),
            "its files are still in the repository",
        ),
    };
    checks.push(back);
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::answers::Sources;
    use crate::rollout::evidence::{AnswerFigures, Caller, VersionFiles};
    use crate::rollout::plan::Plan;

    fn figures(requests: u64, error_rate: f64, p95: f64) -> Figures {
        Figures {
            version: 2,
            seconds: 60.0,
            requests,
            rate_per_second: 10.0,
            errors: 0,
            refused: 0,
            unavailable: 0,
            error_rate,
            refusal_rate: 0.0,
            availability: 1.0,
            p50_ms: Some(1.0),
            p95_ms: Some(p95),
            p99_ms: Some(p95),
            rss_bytes: 64 << 20,
            cpu_cores: None,
        }
    }

    fn phase(name: &str, candidate: Figures, agreement: Option<f64>) -> PhaseRecord {
        PhaseRecord {
            name: name.into(),
            weight: Some(10),
            planned_seconds: Some(60.0),
            started_at: 1.0,
            ended_at: Some(61.0),
            candidate: Some(candidate),
            stable: None,
            answers: Some(AnswerFigures {
                sources: Sources::default(),
                shadow: None,
                agreement,
                compared: 100,
                largest_psi: Some(0.02),
                psi_feature: Some("output 'p' p(a)".into()),
                drifted: false,
            }),
            verdict: None,
        }
    }

    fn subject(phases: Vec<PhaseRecord>, outcome: Outcome) -> Subject {
        let config = serde_json::json!({
            "health": {"error_rate": {"critical": 5.0}, "availability": {"critical": 95.0}, "p95_latency": {"critical": "1s"}, "p99_latency": {"critical": "1s"}},
            "deploy": {"min_agreement": 50.0, "max_output_drift": 0.25, "keep_previous": "10m"},
        });
        let mut candidate = VersionFiles::read(std::path::Path::new("/nonexistent"), 2, "candidate");
        candidate.device = Some("cpu".into());
        candidate.engine = Some("tract".into());
        let evidence = Evidence {
            schema: 1,
            id: 1,
            model: "m".into(),
            caller: Caller::origin("reload"),
            planned: Plan {
                model: "m".into(),
                from: Some(1),
                to: 2,
                strategy: "canary".into(),
                downtime: false,
                phases: vec![],
                minimum_seconds: 0.0,
                signature: None,
                answers: vec![],
                workers: String::new(),
            },
            config,
            versions: vec![candidate],
            signature: Some("the same inputs and outputs as v1".into()),
            phases,
            evaluations: vec![],
            evaluations_left_out: 0,
            ended: None,
        };
        let record = super::super::tests::record(1, "canary", Some(1), 2, Some(outcome));
        Subject { record, evidence: Some(evidence), history: vec![] }
    }

    #[test]
    fn ticks_come_from_what_was_measured() {
        let s = subject(
            vec![phase("shadow", figures(100, 0.0, 5.0), Some(0.98)), phase("step 1/1", figures(300, 0.01, 8.0), None)],
            Outcome::Promoted,
        );
        let gates = gates(&s);
        assert_eq!(gates.iter().map(|g| g.mark()).collect::<Vec<_>>(), [Mark::Passed, Mark::Passed, Mark::Passed]);
        let shadow = &gates[1].checks[0];
        assert_eq!((shadow.value.as_str(), shadow.threshold.as_str()), ("98.00% of 100 compared", "at least 50.00%"));
        // Golden examples and a validation set nobody declared are not ticked.
        assert_eq!(gates[0].checks[1].mark, Mark::NotMeasured);
        assert_eq!(gates[0].checks[3].mark, Mark::NotMeasured);
    }

    #[test]
    fn a_measurement_past_its_threshold_fails_its_gate() {
        let s = subject(
            vec![
                phase("shadow", figures(100, 0.0, 5.0), Some(0.3)),
                phase("step 1/1", figures(300, 0.2, 1500.0), None),
            ],
            Outcome::Reverted,
        );
        let gates = gates(&s);
        assert_eq!(gates[1].mark(), Mark::Failed);
        assert_eq!(gates[1].checks[0].mark, Mark::Failed, "agreement 30% under 50%");
        let window = gates[1].checks.iter().find(|c| c.what.contains("step 1/1")).unwrap();
        assert_eq!(window.mark, Mark::Failed);
        assert!(window.value.contains("errors 20.00%") && window.value.contains("P95 1500.0 ms"), "{}", window.value);
        assert_eq!(gates[2].checks[0].mark, Mark::Failed, "not promoted");
        let none = Subject { evidence: None, ..s };
        assert!(gates_marks(&none).iter().all(|m| *m == Mark::NotMeasured));
    }

    fn gates_marks(s: &Subject) -> Vec<Mark> {
        gates(s).iter().map(|g| g.mark()).collect()
    }
}
