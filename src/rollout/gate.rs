//! The health gate: judges a candidate from its own traffic by the same checks `/health`
//! reports, and against the stable version it would replace, as Flagger's and Argo
//! Rollouts' analyses do.
//!
//! - **Fail**: any of the candidate's error_rate, latency, availability, oom, memory,
//!   model_loaded, and on a GPU gpu_memory and gpu_errors checks is critical (the
//!   deployment protocol's rollback triggers: error rate > 5 %, P95 > 1 s, availability
//!   < 95 %, any OOM kill; GPU memory is held to the same as host memory); or, compared with
//!   stable, its error rate is higher by more than `max_error_rate_increase`, its share of
//!   requests refused as invalid for it higher by more than `max_client_error_increase`,
//!   or its P95 above stable's by `max_latency_ratio` (and by at least 10 ms, so noise on
//!   fast models does not fail them); or, in the shadow phase, it agrees with stable on
//!   fewer than `min_agreement` of the compared requests.
//! - **Inconclusive**: too few requests to judge the rates, or (in the shadow phase) too
//!   few copies answered or compared — never a pass.
//! - **Pass**: otherwise.
//!
//! In the shadow phase the candidate answers only copies of requests stable answered
//! successfully, so stable's error and refusal rates on those same requests are zero: the
//! candidate is held to that, not to stable's rates on all its traffic.
//!
//! The runner reverts only after `consecutive_breaches` failed evaluations in a row.

use crate::config::DeployConfig;
use crate::health::{self, Host, Status};
use crate::router::mirror::ShadowCounts;
use crate::router::pool::Pool;
use crate::window::Snapshot;
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
const GATING: [&str; 8] =
    ["error_rate", "latency", "availability", "oom", "memory", "model_loaded", "gpu_memory", "gpu_errors"];

/// What the gate judges from, read at one moment.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The candidate's window.
    pub mine: Snapshot,
    /// Requests the candidate's window needs before its rates mean anything.
    pub min_samples: u64,
    /// Stable's window, when it has enough requests to compare with.
    pub stable: Option<Snapshot>,
    /// The shadow phase's counts, while the candidate is in it.
    pub shadow: Option<ShadowCounts>,
}

/// Judges `candidate` now: its critical checks, then [`judge`] on its window against
/// `stable`'s (and the shadow's counts, in the shadow phase).
pub fn evaluate(
    candidate: &Pool,
    stable: Option<&Pool>,
    host: &Host,
    deploy: &DeployConfig,
    shadow: Option<ShadowCounts>,
) -> Verdict {
    let checks = health::evaluate(candidate, host);
    for name in GATING {
        if let Some(check) = checks.get(name).filter(|c| c.status == Status::Critical) {
            return Verdict::Fail(format!("{name} critical: {} (threshold {})", check.value, check.threshold));
        }
    }
    let stable = stable.map(|p| (p.window.snapshot(), p.health().min_samples));
    let evidence = Evidence {
        mine: candidate.window.snapshot(),
        min_samples: candidate.health().min_samples,
        stable: stable.filter(|(s, min)| s.requests >= *min).map(|(s, _)| s),
        shadow,
    };
    judge(&evidence, deploy)
}

/// The comparison rules, on windows already read.
pub fn judge(e: &Evidence, deploy: &DeployConfig) -> Verdict {
    let mine = &e.mine;
    if mine.requests < e.min_samples {
        return Verdict::Inconclusive(format!("{} requests in the window, {} needed", mine.requests, e.min_samples));
    }
    // Stable's rates on the requests the candidate answered: zero in the shadow phase
    // (it answered every copy), its whole window's otherwise.
    let baseline = match (&e.shadow, &e.stable) {
        (Some(_), _) => Some((0.0, 0.0)),
        (None, Some(s)) => Some((s.error_rate(), s.refusal_rate())),
        (None, None) => None,
    };
    if let Some((errors, refusals)) = baseline {
        if let Some(fail) = exceeds("error rate", mine.error_rate(), errors, deploy.max_error_rate_increase) {
            return fail;
        }
        let refused = exceeds("refused as invalid", mine.refusal_rate(), refusals, deploy.max_client_error_increase);
        if let Some(fail) = refused {
            return fail;
        }
    }
    if let Some(s) = &e.stable
        && let (Some(p_mine), Some(p_theirs)) = (mine.p95, s.p95)
        && p_mine.as_secs_f64() > p_theirs.as_secs_f64() * deploy.max_latency_ratio
        && p_mine > p_theirs + LATENCY_SLACK
    {
        return Verdict::Fail(format!(
            "P95 {p_mine:?} against stable's {p_theirs:?} (at most {}x allowed)",
            deploy.max_latency_ratio
        ));
    }
    match &e.shadow {
        Some(counts) => judge_shadow(counts, e.min_samples, deploy),
        None => Verdict::Pass,
    }
}

/// Fails when `mine` exceeds `theirs` by more than `allowed` (fractions).
fn exceeds(what: &str, mine: f64, theirs: f64, allowed: f64) -> Option<Verdict> {
    (mine > theirs + allowed).then(|| {
        Verdict::Fail(format!(
            "{what} {:.2}% against stable's {:.2}% (at most {:.2} points more allowed)",
            mine * 100.0,
            theirs * 100.0,
            allowed * 100.0
        ))
    })
}

/// The shadow phase's own rules: agreement with stable, and enough copies answered.
fn judge_shadow(counts: &ShadowCounts, min_samples: u64, deploy: &DeployConfig) -> Verdict {
    let judging_agreement = deploy.min_agreement > 0.0;
    if judging_agreement
        && counts.compared >= min_samples
        && let Some(agreement) = counts.agreement()
        && agreement < deploy.min_agreement
    {
        return Verdict::Fail(format!(
            "agrees with stable on {:.1}% of {} compared requests (at least {:.1}% required)",
            agreement * 100.0,
            counts.compared,
            deploy.min_agreement * 100.0
        ));
    }
    let needed = deploy.shadow_requests.max(min_samples);
    if counts.answered < needed {
        return Verdict::Inconclusive(format!("{} mirrored requests answered, {needed} needed", counts.answered));
    }
    if judging_agreement && counts.compared < min_samples {
        return Verdict::Inconclusive(format!(
            "{} answers could be compared with stable's, {min_samples} needed to judge agreement",
            counts.compared
        ));
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, failed: u64, invalid: u64, p95_ms: u64) -> Snapshot {
        let p = Some(Duration::from_millis(p95_ms));
        Snapshot { covered: Duration::from_secs(60), requests, failed, unavailable: 0, invalid, p50: p, p95: p, p99: p }
    }

    fn evidence(mine: Snapshot, stable: Option<Snapshot>) -> Evidence {
        Evidence { mine, min_samples: 20, stable, shadow: None }
    }

    fn fails(v: &Verdict, with: &str) -> bool {
        matches!(v, Verdict::Fail(r) if r.contains(with))
    }

    #[test]
    fn too_few_requests_are_inconclusive_never_a_pass() {
        let d = DeployConfig::default();
        let v = judge(&evidence(window(19, 0, 0, 1), Some(window(1000, 0, 0, 1))), &d);
        assert_eq!(v, Verdict::Inconclusive("19 requests in the window, 20 needed".into()));
    }

    #[test]
    fn error_rates_are_compared_with_stables_plus_the_allowed_increase() {
        let d = DeployConfig::default();
        let stable = Some(window(1000, 10, 0, 1));
        assert_eq!(judge(&evidence(window(100, 3, 0, 1), stable.clone()), &d), Verdict::Pass, "3% vs 1% + 2 points");
        let v = judge(&evidence(window(100, 4, 0, 1), stable), &d);
        assert!(fails(&v, "error rate 4.00% against stable's 1.00% (at most 2.00 points more allowed)"), "{v:?}");
        // Without stable to compare with, only the critical checks (not judged here) fail.
        assert_eq!(judge(&evidence(window(100, 4, 0, 1), None), &d), Verdict::Pass);
    }

    #[test]
    fn refusals_for_the_version_are_compared_like_errors() {
        let d = DeployConfig::default();
        // Clients send 5% garbage that any version refuses: the candidate refusing as much
        // is not its fault.
        let stable = Some(window(1000, 0, 50, 1));
        assert_eq!(judge(&evidence(window(100, 0, 6, 1), stable.clone()), &d), Verdict::Pass);
        // A fifth of the same traffic refused is.
        let v = judge(&evidence(window(100, 0, 20, 1), stable), &d);
        assert!(fails(&v, "refused as invalid 20.00% against stable's 5.00%"), "{v:?}");
        let tolerant = DeployConfig { max_client_error_increase: 0.5, ..DeployConfig::default() };
        assert_eq!(judge(&evidence(window(100, 0, 20, 1), Some(window(1000, 0, 50, 1))), &tolerant), Verdict::Pass);
    }

    #[test]
    fn latency_fails_past_the_ratio_and_the_slack() {
        let d = DeployConfig::default();
        let v = judge(&evidence(window(100, 0, 0, 50), Some(window(1000, 0, 0, 20))), &d);
        assert!(fails(&v, "P95"), "{v:?}");
        // 2.5x but only 3 ms slower: noise on a fast model.
        let v = judge(&evidence(window(100, 0, 0, 5), Some(window(1000, 0, 0, 2))), &d);
        assert_eq!(v, Verdict::Pass);
    }

    fn shadow(answered: u64, compared: u64, agreed: u64) -> Option<ShadowCounts> {
        Some(ShadowCounts { mirrored: answered, dropped: 0, answered, compared, agreed })
    }

    #[test]
    fn the_shadow_holds_the_candidate_to_zero_errors_and_refusals() {
        let d = DeployConfig::default();
        // Stable fails 10% of all its traffic, but none of the requests it answered.
        let e =
            Evidence { shadow: shadow(100, 100, 100), ..evidence(window(100, 5, 0, 1), Some(window(1000, 100, 0, 1))) };
        assert!(fails(&judge(&e, &d), "error rate 5.00% against stable's 0.00%"));
        let e = Evidence { shadow: shadow(100, 100, 100), ..evidence(window(100, 0, 20, 1), None) };
        assert!(fails(&judge(&e, &d), "refused as invalid 20.00%"));
    }

    #[test]
    fn the_shadow_needs_agreement_and_enough_answers() {
        let d = DeployConfig::default();
        let with = |counts| Evidence { shadow: counts, ..evidence(window(100, 0, 0, 1), Some(window(1000, 0, 0, 1))) };
        assert_eq!(judge(&with(shadow(100, 100, 95)), &d), Verdict::Pass);
        let v = judge(&with(shadow(100, 100, 12)), &d);
        assert!(fails(&v, "agrees with stable on 12.0% of 100 compared requests (at least 50.0% required)"), "{v:?}");
        // Disagreement is judged only once min_samples were compared.
        assert!(matches!(judge(&with(shadow(19, 19, 0)), &d), Verdict::Inconclusive(_)));
        let counted = DeployConfig { shadow_requests: 500, ..DeployConfig::default() };
        assert_eq!(
            judge(&with(shadow(100, 100, 100)), &counted),
            Verdict::Inconclusive("100 mirrored requests answered, 500 needed".into())
        );
        // Answers that could not be compared leave agreement unjudged: inconclusive, unless
        // the operator turned agreement off.
        assert!(matches!(judge(&with(shadow(100, 0, 0)), &d), Verdict::Inconclusive(_)));
        let off = DeployConfig { min_agreement: 0.0, ..DeployConfig::default() };
        assert_eq!(judge(&with(shadow(100, 0, 0)), &off), Verdict::Pass);
        assert_eq!(judge(&with(shadow(100, 100, 0)), &off), Verdict::Pass);
    }
}
