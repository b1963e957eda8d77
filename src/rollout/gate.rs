//! The health gate: judges a candidate from its own traffic by the same checks `/health`
//! reports, and against the stable version it would replace, as Flagger's and Argo
//! Rollouts' analyses do.
//!
//! - **Fail**: any of the candidate's error_rate, latency, availability, oom, memory or
//!   model_loaded checks is critical (the deployment protocol's rollback triggers:
//!   error rate > 5 %, P95 > 1 s, availability < 95 %, any OOM kill); or, with enough
//!   traffic on both, its error rate exceeds stable's by more than
//!   `max_error_rate_increase`, or its P95 exceeds stable's by `max_latency_ratio` (and by
//!   at least 10 ms, so noise on fast models does not fail them).
//! - **Inconclusive**: too few requests to judge the rates — never a pass.
//! - **Pass**: otherwise.
//!
//! The runner reverts only after `consecutive_breaches` failed evaluations in a row.

use crate::config::DeployConfig;
use crate::health::{self, Host, Status};
use crate::router::pool::Pool;
use std::time::Duration;

/// A latency difference below this never fails a candidate by comparison.
const LATENCY_SLACK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
}

/// The checks whose critical status fails a candidate.
const GATING: [&str; 6] = ["error_rate", "latency", "availability", "oom", "memory", "model_loaded"];

/// Judges `candidate` now, against `stable` when it has traffic to compare with.
pub fn evaluate(candidate: &Pool, stable: Option<&Pool>, host: &Host, deploy: &DeployConfig) -> Verdict {
    let checks = health::evaluate(candidate, host);
    for name in GATING {
        if let Some(check) = checks.get(name).filter(|c| c.status == Status::Critical) {
            return Verdict::Fail(format!("{name} critical: {} (threshold {})", check.value, check.threshold));
        }
    }
    let mine = candidate.window.snapshot();
    if mine.requests < candidate.health.min_samples {
        return Verdict::Inconclusive(format!(
            "{} requests in the window, {} needed",
            mine.requests, candidate.health.min_samples
        ));
    }
    if let Some(stable) = stable {
        let theirs = stable.window.snapshot();
        if theirs.requests >= stable.health.min_samples {
            if mine.error_rate() > theirs.error_rate() + deploy.max_error_rate_increase {
                return Verdict::Fail(format!(
                    "error rate {:.2}% against stable's {:.2}% (at most {:.2} points more allowed)",
                    mine.error_rate() * 100.0,
                    theirs.error_rate() * 100.0,
                    deploy.max_error_rate_increase * 100.0
                ));
            }
            if let (Some(p_mine), Some(p_theirs)) = (mine.p95, theirs.p95)
                && p_mine.as_secs_f64() > p_theirs.as_secs_f64() * deploy.max_latency_ratio
                && p_mine > p_theirs + LATENCY_SLACK
            {
                return Verdict::Fail(format!(
                    "P95 {:?} against stable's {:?} (at most {}x allowed)",
                    p_mine, p_theirs, deploy.max_latency_ratio
                ));
            }
        }
    }
    Verdict::Pass
}
