//! `modeld plan`: the phases a rollout would go through, with their durations from the
//! config, without doing anything. Recreate says it has downtime. The candidate's
//! signature is compared with the live version's, and a breaking difference shown with
//! whether the rollout would refuse it.

use super::signature::{self, Difference};
use crate::config::{DeployConfig, ModelConfig, Strategy};
use crate::wire::ModelInfo;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub model: String,
    pub from: Option<u64>,
    pub to: u64,
    pub strategy: String,
    /// Whether requests may find no version serving for a while.
    pub downtime: bool,
    pub phases: Vec<PlannedPhase>,
    /// The shortest the rollout can take if every gate passes at once.
    pub minimum_seconds: f64,
    /// The candidate's signature against the live version's (absent with none live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignaturePlan>,
    /// How the gate would read the candidate's answers: its validation set, drift,
    /// replays.
    #[serde(default)]
    pub answers: Vec<String>,
    /// How the candidate is sized and, for an autoscaled model, the policy in force.
    #[serde(default)]
    pub workers: String,
}

/// What the signature check would find.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignaturePlan {
    pub differences: Vec<Difference>,
    /// A breaking difference would stop the rollout before any traffic.
    pub refused: bool,
    /// The candidate's signature could not be read (it would fail to start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SignaturePlan {
    pub fn new(live: &ModelInfo, candidate: Result<ModelInfo, String>, allow_change: bool) -> SignaturePlan {
        match candidate {
            Ok(candidate) => {
                let differences = signature::compare(live, &candidate);
                let refused = !allow_change && signature::breaking(&differences).is_some();
                SignaturePlan { differences, refused, error: None }
            }
            Err(e) => SignaturePlan { differences: Vec::new(), refused: true, error: Some(e) },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedPhase {
    pub name: String,
    #[serde(default)]
    pub seconds: Option<f64>,
    pub detail: String,
}

fn phase(name: impl Into<String>, duration: Option<Duration>, detail: impl Into<String>) -> PlannedPhase {
    PlannedPhase { name: name.into(), seconds: duration.map(|d| d.as_secs_f64()), detail: detail.into() }
}

/// The plan for rolling `model` from `from` to `to` with `deploy`.
pub fn plan(
    model: &ModelConfig,
    deploy: &DeployConfig,
    (from, to): (Option<u64>, u64),
    size: usize,
    request_timeout: Duration,
) -> Plan {
    let n = size;
    let d = deploy;
    let gate =
        format!("health gate every {:?}; {} failed checks in a row revert", d.check_every, d.consecutive_breaches);
    let spawn = phase(
        "spawn",
        None,
        format!("start {n} worker(s) of v{to}: load, warm-up, golden examples; no traffic until ready"),
    );
    let promote = |extra: &str| phase("promote", None, format!("v{to} becomes stable in one routing store{extra}"));
    let shadow = d.shadows(from.is_some()).then(|| {
        let agreement = match d.min_agreement > 0.0 {
            false => "agreement not checked".to_string(),
            true => format!("must agree with the live version on at least {}% of them", d.min_agreement * 100.0),
        };
        phase(
            "shadow",
            Some(d.shadow),
            format!("v{to} answers a mirrored copy of live requests, its answers discarded: judged by the health gate, and {agreement}; no user request reaches it"),
        )
    });
    let keep = match d.keep_previous.is_zero() {
        true => "; the old version is drained and stopped".to_string(),
        false => format!("; the old version stays warm for {:?} for instant rollback", d.keep_previous),
    };
    let mut phases = vec![];
    let mut downtime = false;
    match d.strategy {
        Strategy::Canary => {
            phases.push(spawn);
            phases.extend(shadow);
            for (i, w) in d.steps.iter().enumerate() {
                phases.push(phase(
                    format!("step {}/{}", i + 1, d.steps.len()),
                    Some(d.bake),
                    format!("{w}% of traffic to v{to}; {gate}"),
                ));
            }
            phases.push(promote(&keep));
        }
        Strategy::BlueGreen => {
            phases.push(spawn);
            phases.extend(shadow);
            phases.push(phase(
                "switch",
                None,
                format!("100% of traffic to v{to} in one store; the old version stays warm"),
            ));
            phases.push(phase("bake", Some(d.bake), format!("{gate}; a breach switches back at once")));
            phases.push(promote(&keep));
        }
        Strategy::Rolling => {
            let batch = (d.max_surge + d.max_unavailable).max(1);
            let steps = n.div_ceil(batch);
            if let Some(mut shadow) = shadow {
                shadow.detail = format!("with its first {batch} worker(s) up: {}", shadow.detail);
                phases.push(shadow);
            }
            for i in 0..steps {
                phases.push(phase(
                    format!("step {}/{steps}", i + 1),
                    Some(d.bake),
                    format!(
                        "stop {} old worker(s), start {} of v{to} (at most {} running, at least {} serving); traffic follows ready workers; {gate}",
                        d.max_unavailable,
                        batch,
                        n + d.max_surge,
                        n.saturating_sub(d.max_unavailable)
                    ),
                ));
            }
            phases.push(promote(""));
        }
        Strategy::Recreate => {
            downtime = true;
            phases.push(phase(
                "stop old",
                None,
                format!("DOWNTIME: drain and stop every worker of v{}; requests in the gap wait up to {request_timeout:?} (server.request_timeout) for v{to}", from.map_or("-".into(), |v| v.to_string())),
            ));
            phases.push(spawn);
            phases.push(phase(
                "bake",
                Some(d.bake),
                format!("{gate}; a breach starts the old version again (more downtime)"),
            ));
            phases.push(promote(""));
        }
        Strategy::AbTest => {
            phases.push(spawn);
            phases.extend(shadow);
            let sticky =
                d.sticky_header.as_ref().map_or("split per request".into(), |h| format!("sticky by the {h} header"));
            phases.push(phase("test", Some(d.duration), format!("{}% of traffic to v{to}, {sticky}; {gate}", d.split)));
            phases.push(phase(
                "decide",
                None,
                "both versions keep serving until `modeld promote MODEL --version V` names the winner",
            ));
        }
    }
    let minimum_seconds = phases.iter().filter_map(|p| p.seconds).sum();
    Plan {
        model: model.name.clone(),
        from,
        to,
        strategy: d.strategy.to_string(),
        downtime,
        phases,
        minimum_seconds,
        signature: None,
        answers: answer_checks(d, from.is_some()),
        workers: workers_line(model, d, from, size),
    }
}

/// How the candidate is sized, and the autoscaler's part, in the plan's words.
fn workers_line(model: &ModelConfig, d: &DeployConfig, from: Option<u64>, size: usize) -> String {
    let shadow = match d.shadows(from.is_some()) {
        true => ", all of them from its shadow phase on (a copy of every live request)",
        false => "",
    };
    let sized = match (d.strategy, model.workers.autoscaled()) {
        (Strategy::Canary, true) => {
            format!("the candidate runs its step's share of {size} worker(s){shadow}, all {size} before promotion")
        }
        (Strategy::AbTest, true) => {
            format!("arm B runs {}% of {size} worker(s){shadow}, all {size} if promoted", d.split)
        }
        _ => format!("the candidate runs {size} worker(s), as the live version does now"),
    };
    match model.workers.autoscaled() {
        false => format!("workers: {sized}"),
        true => format!(
            "workers: {sized}; autoscaling is frozen during the rollout and resumes on the promoted version: {}",
            model.scale.summary(model.workers)
        ),
    }
}

/// What the gate would read of the answers beside the rates, in the plan's words.
fn answer_checks(d: &DeployConfig, live: bool) -> Vec<String> {
    if !live {
        return vec!["answers: the output contract of model.toml; nothing live to compare them with".into()];
    }
    let drift = match d.max_output_drift > 0.0 {
        true => format!(
            "drift: reverted when a feature of its answers moves from the live version's by a PSI over {} (and \
             beyond chance), judged once each version gave {} answers{}",
            d.max_output_drift,
            d.drift_min_samples,
            match d.strategy {
                Strategy::AbTest => "; versions meant to answer differently: deploy with --expect-drift",
                _ => "",
            }
        ),
        false => "drift: measured and reported, not judged (--expect-drift or max_output_drift = 0)".into(),
    };
    let replay = match d.replay {
        true => "replay: recent live requests are replayed to it where traffic is too thin to judge it".into(),
        false => "replay: off (replay = false); a quiet model may end inconclusive".into(),
    };
    vec!["answers: the output contract of model.toml, on every answer".into(), drift, replay]
}

/// The plan as text.
impl Plan {
    /// What `modeld plan` prints.
    pub fn render(&self) -> String {
        render(self)
    }
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let from = plan.from.map_or("(none)".into(), |v| format!("v{v}"));
    let _ = writeln!(out, "{}: {from} -> v{} by {}", plan.model, plan.to, plan.strategy);
    if plan.downtime {
        let _ = writeln!(out, "WARNING: this strategy has downtime");
    }
    for (i, p) in plan.phases.iter().enumerate() {
        let time = p
            .seconds
            .map_or(String::new(), |s| format!(" ({})", humantime::format_duration(Duration::from_secs_f64(s))));
        let _ = writeln!(out, "{:>2}. {}{time}: {}", i + 1, p.name, p.detail);
    }
    let _ = writeln!(out, "at least {}", humantime::format_duration(Duration::from_secs_f64(plan.minimum_seconds)));
    if let Some(signature) = &plan.signature {
        render_signature(&mut out, signature, &from);
    }
    for line in &plan.answers {
        let _ = writeln!(out, "{line}");
    }
    if !plan.workers.is_empty() {
        let _ = writeln!(out, "{}", plan.workers);
    }
    out
}

fn render_signature(out: &mut String, s: &SignaturePlan, from: &str) {
    if let Some(e) = &s.error {
        let _ = writeln!(out, "signature: could not be read, the version would fail to start: {e}");
        return;
    }
    if s.differences.is_empty() {
        let _ = writeln!(out, "signature: same inputs and outputs as {from}");
        return;
    }
    let _ = writeln!(out, "signature differs from {from}:");
    for d in &s.differences {
        let _ = writeln!(out, "  - {}{}", d.text, if d.breaking { " (breaking)" } else { "" });
    }
    if s.refused {
        let _ = writeln!(
            out,
            "REFUSED: the rollout would stop before any traffic; if the change is meant, deploy with --allow-signature-change (or allow_signature_change = true in [model.deploy])"
        );
    } else if s.differences.iter().any(|d| d.breaking) {
        let _ =
            writeln!(out, "allowed: allow_signature_change lets this version take traffic; clients of {from} may fail");
    }
}
