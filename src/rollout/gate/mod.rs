//! The health gate: judges a candidate from its own traffic by the same checks `/health`
//! reports, against the stable version it would replace, as Flagger's and Argo
//! Rollouts' analyses do, and by what its answers say.
//!
//! - **Fail**: any of the candidate's error_rate, latency, availability, oom, memory,
//!   model_loaded, and on a GPU gpu_memory and gpu_errors checks is critical (the
//!   deployment protocol's rollback triggers: error rate > 5 %, P95 > 1 s, availability
//!   < 95 %, any OOM kill; GPU memory is held to the same as host memory) — an answer
//!   that breaks its output contract (NaN, probabilities that are none) is an error; or,
//!   compared with stable, its error rate is higher by more than
//!   `max_error_rate_increase`, its share of requests refused as invalid for it higher by
//!   more than `max_client_error_increase`, or its P95 above stable's by
//!   `max_latency_ratio` (and by at least 10 ms, so noise on fast models does not fail
//!   them) — in the shadow, the two workers' inference times on the same copies; or it
//!   agrees with stable on fewer than `min_agreement` of the requests both answered
//!   (shadow copies, replays); or a feature of its answers drifted from stable's
//!   by a PSI over `max_output_drift` beyond what chance allows ([`super::drift`]).
//! - **Inconclusive**: too few requests to judge the rates, too few copies answered or
//!   compared, or too few answers on either side to judge drift — never a pass.
//! - **Pass**: otherwise.
//!
//! Stable's rates are its window's, or, when its window holds too few requests (a quiet
//! model; the last canary step, where stable takes none), its last window that held
//! enough ([`Baseline`]). Requests the candidate answered as shadow copies or replays are
//! ones stable answered successfully, so stable's error and refusal rates on those are
//! zero: the candidate is held to that share of zero and, for the rest, to stable's rates.
//!
//! The runner reverts only after `consecutive_breaches` failed evaluations in a row.

mod view;

use super::answers::{Answers, Pairs};
use super::drift::{self, DriftReading};
use super::phase::GateCheck;
use crate::config::DeployConfig;
use crate::health::check::words;
use crate::health::{self, Check, Host, Status};
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

/// The checks whose critical status fails a candidate, causes before their effects: an
/// OOM kill or a crash loop shows as unavailable or failed requests too, and the reason
/// names what happened rather than what it did to the rates.
pub const GATING: [&str; 8] =
    ["oom", "model_loaded", "memory", "gpu_memory", "gpu_errors", "error_rate", "latency", "availability"];

/// What the gate judges from, read at one moment.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The candidate's window.
    pub mine: Snapshot,
    /// Requests the candidate's window needs before its rates mean anything.
    pub min_samples: u64,
    /// Stable's window to compare with, when it (or its last full one) held enough.
    pub stable: Option<Snapshot>,
    /// The shadow phase's counts, while the candidate is in it.
    pub shadow: Option<ShadowCounts>,
    /// Of the candidate's window, the requests that were replays.
    pub replayed: u64,
    /// Replays compared with stable's answers to them.
    pub pairs: Pairs,
    /// The drift of its answers from stable's, when judged.
    pub drift: Option<DriftReading>,
}

/// Stable's window as the gate compares with it: the current one when it holds
/// `min_samples`, else the last one that did.
#[derive(Debug, Default)]
pub struct Baseline {
    last_full: Option<Snapshot>,
}

impl Baseline {
    pub fn read(&mut self, stable: &Pool) -> Option<Snapshot> {
        let now = stable.window.snapshot();
        if now.requests >= stable.health().min_samples {
            self.last_full = Some(now);
        }
        self.last_full.clone()
    }
}

/// What the runner knows of a candidate beyond its pool.
#[derive(Default)]
pub struct Seen<'a> {
    pub shadow: Option<ShadowCounts>,
    pub answers: Option<&'a Answers>,
    pub baseline: Option<Snapshot>,
}

/// A verdict with the checks it was drawn from, each value beside its threshold, as
/// followers (the terminal view, `/ui`) show them.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub verdict: Verdict,
    pub checks: Vec<GateCheck>,
}

/// Judges `candidate` now: its critical checks, then [`judge`] on its window against
/// stable's (and what its answers say).
pub fn evaluate(candidate: &Pool, host: &Host, deploy: &DeployConfig, seen: Seen) -> Judgement {
    let health = health::evaluate(candidate, host);
    let judged_drift = deploy.max_output_drift > 0.0;
    let evidence = Evidence {
        mine: candidate.window.snapshot(),
        min_samples: candidate.health().min_samples,
        stable: seen.baseline,
        shadow: seen.shadow,
        replayed: seen.answers.map_or(0, Answers::replayed_in_window),
        pairs: seen.answers.map(Answers::replay_pairs).unwrap_or_default(),
        drift: seen.answers.filter(|_| judged_drift).map(|a| a.drift_now(deploy.drift_min_samples as usize)),
    };
    let checks = view::checks(&health, &evidence, deploy, &candidate.health());
    let verdict = critical_of(&health, candidate).unwrap_or_else(|| judge(&evidence, deploy));
    Judgement { verdict, checks }
}

/// A failing verdict when any of the candidate's gating checks is critical.
pub fn critical(pool: &Pool, host: &Host) -> Option<Verdict> {
    critical_of(&health::evaluate(pool, host), pool)
}

/// The first critical gating check, in words; for the error rate, with what the worker
/// said of the last request it failed (a broken output contract, NaN, a model error).
fn critical_of(checks: &std::collections::BTreeMap<&'static str, Check>, pool: &Pool) -> Option<Verdict> {
    GATING.iter().find_map(|name| {
        let check = checks.get(name).filter(|c| c.status == Status::Critical)?;
        let last = match *name {
            "error_rate" => pool.last_failure().map_or(String::new(), |m| format!("; the last failure: {m}")),
            _ => String::new(),
        };
        Some(Verdict::Fail(format!(
            "{name} critical: {} (threshold {}){last}",
            words(&check.value),
            words(&check.threshold)
        )))
    })
}

/// The comparison rules, on windows and answers already read.
pub fn judge(e: &Evidence, deploy: &DeployConfig) -> Verdict {
    let mine = &e.mine;
    if mine.requests < e.min_samples {
        return Verdict::Inconclusive(format!("{} requests in the window, {} needed", mine.requests, e.min_samples));
    }
    if let Some(fail) = compare_rates(e, deploy).or_else(|| compare_latency(e, deploy)) {
        return fail;
    }
    if let Some(fail) = disagreement(e, deploy).or_else(|| drifted(e, deploy)) {
        return fail;
    }
    let shadow = e.shadow.as_ref().map(|counts| shadow_short(counts, e, deploy));
    match shadow.flatten().or_else(|| drift_short(e, deploy)) {
        Some(why) => Verdict::Inconclusive(why),
        None => Verdict::Pass,
    }
}

/// Errors and refusals against stable's rates on the live share of the window (zero on
/// the copies and replays).
fn compare_rates(e: &Evidence, deploy: &DeployConfig) -> Option<Verdict> {
    let (errors, refusals) = stable_rates(e)?;
    exceeds("error rate", e.mine.error_rate(), errors, deploy.max_error_rate_increase)
        .or_else(|| exceeds("refused as invalid", e.mine.refusal_rate(), refusals, deploy.max_client_error_increase))
}

/// The error and refusal rates stable is held to have on the candidate's window: its own
/// on the live share, zero on the copies and replays (none without a stable window,
/// unless the whole window was copies).
fn stable_rates(e: &Evidence) -> Option<(f64, f64)> {
    let mine = &e.mine;
    let copied = match e.shadow {
        Some(_) => mine.requests,
        None => e.replayed.min(mine.requests),
    };
    let live_share = 1.0 - copied as f64 / mine.requests.max(1) as f64;
    match &e.stable {
        Some(s) => Some((s.error_rate() * live_share, s.refusal_rate() * live_share)),
        None if live_share == 0.0 => Some((0.0, 0.0)),
        None => None,
    }
}

fn compare_latency(e: &Evidence, deploy: &DeployConfig) -> Option<Verdict> {
    let p = LatencyPair::of(e)?;
    let what = if p.on_copies { "inference P95 on the copies" } else { "P95" };
    (p.mine > allowed_p95(p.stable, deploy)).then(|| {
        Verdict::Fail(format!(
            "{what} {:?} against stable's {:?} (at most {}x allowed)",
            p.mine, p.stable, deploy.max_latency_ratio
        ))
    })
}

/// The P95s the latency comparison reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct LatencyPair {
    pub(super) mine: Duration,
    pub(super) stable: Duration,
    /// Both workers' inference times on the same shadow copies, rather than windows.
    pub(super) on_copies: bool,
}

impl LatencyPair {
    /// In the shadow, both workers' inference times on the same copies, once `min_samples`
    /// were timed (a copy's round trip waits for cores the live request did not,
    /// [`crate::router::mirror`]); else — outside the shadow, or a shadow fed mostly by
    /// replays, which run while the candidate is idle — the candidate's window against
    /// stable's.
    pub(super) fn of(e: &Evidence) -> Option<LatencyPair> {
        let on_copies = e.shadow.as_ref().filter(|c| c.timed >= e.min_samples).and_then(ShadowCounts::inference_p95s);
        match on_copies {
            Some((mine, stable)) => Some(LatencyPair { mine, stable, on_copies: true }),
            None => Some(LatencyPair { mine: e.mine.p95?, stable: e.stable.as_ref()?.p95?, on_copies: false }),
        }
    }
}

/// The P95 a candidate may reach beside stable's: `max_latency_ratio` times it, and never
/// less than it plus [`LATENCY_SLACK`].
fn allowed_p95(stable: Duration, deploy: &DeployConfig) -> Duration {
    stable.mul_f64(deploy.max_latency_ratio).max(stable + LATENCY_SLACK)
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

/// Agreement with stable on the requests both answered: the shadow's copies in the
/// shadow phase, the replays in later phases; judged once `min_samples` were compared.
fn disagreement(e: &Evidence, deploy: &DeployConfig) -> Option<Verdict> {
    let (compared, agreed, what) = compared(e);
    let agreement = agreed as f64 / compared.max(1) as f64;
    let judged = deploy.min_agreement > 0.0 && compared >= e.min_samples;
    (judged && agreement < deploy.min_agreement).then(|| {
        Verdict::Fail(format!(
            "agrees with stable on {:.1}% of {compared} {what} (at least {:.1}% required)",
            agreement * 100.0,
            deploy.min_agreement * 100.0
        ))
    })
}

/// The answers compared with stable's and agreed, and what they were.
fn compared(e: &Evidence) -> (u64, u64, &'static str) {
    match &e.shadow {
        Some(counts) => (counts.compared + e.pairs.compared, counts.agreed + e.pairs.agreed, "compared requests"),
        None => (e.pairs.compared, e.pairs.agreed, "replayed requests"),
    }
}

/// The feature of the candidate's answers that drifted most beyond what chance allows.
fn drifted(e: &Evidence, deploy: &DeployConfig) -> Option<Verdict> {
    let reading = e.drift.as_ref()?;
    let breach = reading.breach(deploy.max_output_drift)?;
    let mix = reading.class_mix(&breach.feature.output).filter(|_| breach.feature.name != "top class");
    Some(Verdict::Fail(format!(
        "{}{} (deploy with --expect-drift, or raise max_output_drift, if the change is meant)",
        drift::describe(breach, deploy.max_output_drift),
        mix.map_or(String::new(), |m| format!("; top-class mix: {m}"))
    )))
}

/// Why the shadow phase cannot pass yet: too few copies (and replays) answered, or
/// compared.
fn shadow_short(counts: &ShadowCounts, e: &Evidence, deploy: &DeployConfig) -> Option<String> {
    let min_samples = e.min_samples;
    let needed = deploy.shadow_requests.max(min_samples);
    let answered = counts.answered + e.replayed;
    if answered < needed {
        return Some(format!("{answered} mirrored or replayed requests answered, {needed} needed"));
    }
    let compared = counts.compared + e.pairs.compared;
    (deploy.min_agreement > 0.0 && compared < min_samples)
        .then(|| format!("{compared} answers could be compared with stable's, {min_samples} needed to judge agreement"))
}

/// Why drift cannot be judged yet: too few answers on a side.
fn drift_short(e: &Evidence, deploy: &DeployConfig) -> Option<String> {
    let reading = e.drift.as_ref()?;
    (reading.samples < deploy.drift_min_samples as usize).then(|| {
        format!(
            "{} answers of each version to compare their distributions, {} needed to judge drift",
            reading.samples, deploy.drift_min_samples
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A candidate on GPU 0 whose worker (pid 4242) holds `used` of its 100 bytes, with
    /// `xids` errors seen on GPU `on`.
    fn on_a_gpu(used: u64, xids: u64, on: u32) -> (Pool, Host, tokio::net::UnixStream) {
        use crate::gpu::{GpuInfo, GpuReading, Inventory, ProcessGpu, Readings, Telemetry};
        let pool = Pool::new(crate::router::pool::PoolSpec {
            model: "m".into(),
            version: 2,
            workers: 1,
            ..Default::default()
        });
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let info = crate::wire::ModelInfo {
            load_mode: "test".into(),
            plans_built: 0,
            device: "cuda:0 (test GPU)".into(),
            inputs: vec![],
            outputs: vec![],
            labels: None,
        };
        pool.fill(0, crate::router::conn::WorkerConn::start(ours), info);
        pool.slots[0].pid.store(4242, std::sync::atomic::Ordering::Relaxed);
        pool.slots[0].gpu.store(0, std::sync::atomic::Ordering::Relaxed);
        let gpu = |index| GpuReading { index, memory_total_bytes: Some(100), ..GpuReading::default() };
        let mut readings = Readings::default();
        readings.gpus = vec![gpu(0), gpu(1)];
        readings.processes = [(4242, ProcessGpu { gpu: 0, memory_bytes: used })].into();
        readings.record_errors(on, xids);
        let info = |index| GpuInfo { index, name: "test GPU".into(), uuid: format!("GPU-{index}") };
        let inventory = Inventory { driver: "580".into(), gpus: vec![info(0), info(1)] };
        let host = Host::new(std::sync::Arc::new(Telemetry::fixed(inventory, readings)));
        (pool, host, theirs)
    }

    #[tokio::test]
    async fn a_candidate_exhausting_its_gpu_or_hit_by_its_gpus_errors_fails() {
        let deploy = DeployConfig::default();
        let (pool, host, _worker) = on_a_gpu(97, 0, 0);
        let judged = evaluate(&pool, &host, &deploy, Seen::default());
        assert!(fails(&judged.verdict, "gpu_memory critical"), "{:?}", judged.verdict);
        let (pool, host, _worker) = on_a_gpu(10, 1, 0);
        let judged = evaluate(&pool, &host, &deploy, Seen::default());
        assert!(fails(&judged.verdict, "gpu_errors critical"), "{:?}", judged.verdict);
        // An error on a GPU the version does not use, and memory to spare: not held
        // against it (no requests yet: inconclusive).
        let (pool, host, _worker) = on_a_gpu(10, 1, 1);
        let judged = evaluate(&pool, &host, &deploy, Seen::default());
        assert!(matches!(judged.verdict, Verdict::Inconclusive(_)), "{:?}", judged.verdict);
        assert!(judged.checks.iter().all(|c| c.name != "gpu_errors" && c.name != "gpu_memory"), "{:?}", judged.checks);
    }

    fn window(requests: u64, failed: u64, invalid: u64, p95_ms: u64) -> Snapshot {
        let p = Some(Duration::from_millis(p95_ms));
        Snapshot { covered: Duration::from_secs(60), requests, failed, unavailable: 0, invalid, p50: p, p95: p, p99: p }
    }

    fn evidence(mine: Snapshot, stable: Option<Snapshot>) -> Evidence {
        Evidence { mine, min_samples: 20, stable, shadow: None, replayed: 0, pairs: Pairs::default(), drift: None }
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
        Some(ShadowCounts { mirrored: answered, dropped: 0, answered, compared, agreed, ..ShadowCounts::default() })
    }

    /// Shadow counts with `timed` copies whose inference P95s were `mine` and `theirs` ms.
    fn timed(timed: u64, mine: u64, theirs: u64) -> Option<ShadowCounts> {
        Some(ShadowCounts {
            timed,
            candidate_p95_us: Some(mine * 1000),
            stable_p95_us: Some(theirs * 1000),
            ..shadow(100, 100, 100).unwrap()
        })
    }

    #[test]
    fn in_the_shadow_latency_is_the_workers_inference_on_the_same_copies() {
        let d = DeployConfig::default();
        // The copies' round trips (50 ms) queued for cores against stable's live 2 ms; the
        // two workers ran the model as fast as each other.
        let slow_trips =
            |counts| Evidence { shadow: counts, ..evidence(window(100, 0, 0, 50), Some(window(1000, 0, 0, 2))) };
        assert_eq!(judge(&slow_trips(timed(100, 3, 3)), &d), Verdict::Pass);
        // The candidate's own inference 20x stable's on the same inputs fails.
        let v = judge(&slow_trips(timed(100, 60, 3)), &d);
        assert!(fails(&v, "inference P95 on the copies 60ms against stable's 3ms"), "{v:?}");
        // Too few copies timed (a shadow fed by replays): the windows are compared.
        assert!(fails(&judge(&slow_trips(timed(19, 3, 3)), &d), "P95 50ms against stable's 2ms"));
        // Outside the shadow, the windows are compared as before.
        assert!(fails(&judge(&slow_trips(None), &d), "P95 50ms against stable's 2ms"));
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
            Verdict::Inconclusive("100 mirrored or replayed requests answered, 500 needed".into())
        );
        // Answers that could not be compared leave agreement unjudged: inconclusive, unless
        // the operator turned agreement off.
        assert!(matches!(judge(&with(shadow(100, 0, 0)), &d), Verdict::Inconclusive(_)));
        let off = DeployConfig { min_agreement: 0.0, ..DeployConfig::default() };
        assert_eq!(judge(&with(shadow(100, 0, 0)), &off), Verdict::Pass);
        assert_eq!(judge(&with(shadow(100, 100, 0)), &off), Verdict::Pass);
    }

    #[test]
    fn stables_last_full_window_is_the_baseline_when_its_window_runs_thin() {
        use crate::router::pool::PoolSpec;
        use crate::window::Outcome;
        let stable = Pool::new(PoolSpec { workers: 1, ..PoolSpec::default() });
        let mut baseline = Baseline::default();
        assert_eq!(baseline.read(&stable), None, "never full: no baseline");
        for i in 0..40 {
            let outcome = if i % 10 == 0 { Outcome::Failed } else { Outcome::Served };
            stable.window.record(outcome, Duration::from_millis(1));
        }
        let full = baseline.read(&stable).expect("40 requests are enough");
        assert_eq!((full.requests, full.failed), (40, 4));
        // The last canary step takes all traffic from stable: its window empties.
        stable.window.resize(Duration::from_secs(30));
        assert_eq!(stable.window.snapshot().requests, 0);
        assert_eq!(baseline.read(&stable), Some(full.clone()), "the last full window stays the baseline");
        // And the comparison still holds with it: 15% errors against its 10% + 2 points.
        let v = judge(&evidence(window(100, 15, 0, 1), Some(full)), &DeployConfig::default());
        assert!(fails(&v, "error rate 15.00% against stable's 10.00%"), "{v:?}");
    }

    #[test]
    fn replayed_requests_hold_the_candidate_to_zero_errors_for_their_share() {
        let d = DeployConfig::default();
        let stable = Some(window(1000, 100, 0, 1));
        // Live only: 8% against stable's 10% passes.
        assert_eq!(judge(&evidence(window(100, 8, 0, 1), stable.clone()), &d), Verdict::Pass);
        // Half replayed: stable answered those well, so the baseline is 5%; 8% > 5% + 2.
        let e = Evidence { replayed: 50, ..evidence(window(100, 8, 0, 1), stable) };
        assert!(fails(&judge(&e, &d), "error rate 8.00% against stable's 5.00%"));
        // No stable window at all, everything replayed: held to zero.
        let e = Evidence { replayed: 100, ..evidence(window(100, 0, 5, 1), None) };
        assert!(fails(&judge(&e, &d), "refused as invalid 5.00% against stable's 0.00%"));
        // No stable window and live traffic: only the critical checks (not judged here).
        let e = Evidence { replayed: 50, ..evidence(window(100, 4, 0, 1), None) };
        assert_eq!(judge(&e, &d), Verdict::Pass);
    }

    #[test]
    fn replays_are_held_to_agreement_after_the_shadow() {
        let d = DeployConfig::default();
        let with = |compared, agreed| Evidence {
            pairs: Pairs { compared, agreed },
            ..evidence(window(100, 0, 0, 1), Some(window(1000, 0, 0, 1)))
        };
        assert_eq!(judge(&with(30, 29), &d), Verdict::Pass);
        let v = judge(&with(30, 10), &d);
        assert!(fails(&v, "agrees with stable on 33.3% of 30 replayed requests"), "{v:?}");
        assert_eq!(judge(&with(19, 0), &d), Verdict::Pass, "too few compared to judge");
    }

    fn reading(psi: f64, chance_psi: f64, samples: usize) -> DriftReading {
        use super::drift::{BinShift, Feature, FeatureDrift};
        let feature = FeatureDrift {
            feature: Feature { output: "y".into(), name: "value".into() },
            psi,
            chance_psi,
            stable_samples: samples,
            candidate_samples: samples,
            paired: 0,
            paired_shift: false,
            moved: vec![BinShift { bin: "[1.0000, 2.0000)".into(), stable_share: 0.1, candidate_share: 0.4 }],
        };
        DriftReading { features: if samples >= 50 { vec![feature] } else { vec![] }, samples }
    }

    #[test]
    fn drift_over_the_limit_and_beyond_chance_fails_and_too_few_answers_wait() {
        let d = DeployConfig::default();
        let with =
            |drift| Evidence { drift: Some(drift), ..evidence(window(100, 0, 0, 1), Some(window(1000, 0, 0, 1))) };
        let v = judge(&with(reading(1.8, 0.2, 200)), &d);
        let want = "output 'y' value drifted from stable's: PSI 1.80 (limit 0.25) over 200 and 200 answers, 0 of \
                    them to the same requests; chance alone stays under 0.20 at these sizes; bins that moved most: \
                    [1.0000, 2.0000) 10.0% → 40.0%";
        assert!(fails(&v, want), "{v:?}");
        assert!(fails(&v, "--expect-drift"), "{v:?}");
        assert_eq!(judge(&with(reading(0.4, 0.5, 200)), &d), Verdict::Pass, "over the limit, but chance explains it");
        assert_eq!(judge(&with(reading(0.2, 0.1, 200)), &d), Verdict::Pass, "beyond chance, but under the limit");
        let v = judge(&with(reading(0.0, 0.0, 30)), &d);
        assert_eq!(
            v,
            Verdict::Inconclusive(
                "30 answers of each version to compare their distributions, 50 needed to judge drift".into()
            )
        );
        let off = DeployConfig { max_output_drift: 0.0, ..DeployConfig::default() };
        // evaluate() reads no drift when it is off; judge() sees none then.
        assert_eq!(judge(&evidence(window(100, 0, 0, 1), None), &off), Verdict::Pass);
    }
}
