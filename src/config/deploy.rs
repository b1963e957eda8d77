//! `[model.deploy]`: the rollout strategy for a model's new versions and its settings,
//! with defaults per strategy, checked like the rest of the config.

use super::raw::RawDeploy;
use super::report::{KeyPath, Locator, Problem};
use super::validate::parse_duration;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    BlueGreen,
    Canary,
    Rolling,
    Recreate,
    AbTest,
}

impl Strategy {
    pub const ALL: [Strategy; 5] =
        [Strategy::BlueGreen, Strategy::Canary, Strategy::Rolling, Strategy::Recreate, Strategy::AbTest];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue_green",
            Strategy::Canary => "canary",
            Strategy::Rolling => "rolling",
            Strategy::Recreate => "recreate",
            Strategy::AbTest => "ab_test",
        }
    }

    pub fn parse(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the gate does when a step ends without enough traffic to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInconclusive {
    /// Fail the rollout (and revert) after `inconclusive_timeout`.
    Fail,
    /// Hold the step until traffic comes or an operator decides.
    Pause,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeployConfig {
    pub strategy: Strategy,
    /// Canary traffic percentages, increasing, ending at 100.
    pub steps: Vec<u8>,
    /// Time at each canary or rolling step, or the blue-green bake.
    pub bake: Duration,
    /// How long the previous version stays warm after promotion, for instant rollback.
    pub keep_previous: Duration,
    pub max_surge: usize,
    pub max_unavailable: usize,
    /// A/B: percent of traffic to the new version.
    pub split: u8,
    /// A/B: how long the test runs before it waits for `modeld promote`.
    pub duration: Duration,
    /// A/B: requests with the same value of this header always reach the same arm.
    pub sticky_header: Option<String>,
    /// How often the gate evaluates the candidate.
    pub check_every: Duration,
    /// Failed evaluations in a row that revert the candidate.
    pub consecutive_breaches: u32,
    pub on_inconclusive: OnInconclusive,
    pub inconclusive_timeout: Duration,
    /// A candidate whose error rate exceeds stable's by more than this (a fraction) fails.
    pub max_error_rate_increase: f64,
    /// A candidate whose P95 exceeds stable's by more than this factor fails.
    pub max_latency_ratio: f64,
    /// A candidate whose share of requests refused as invalid for it (shape, datatype,
    /// names) exceeds stable's by more than this (a fraction) fails: a version that
    /// refuses what its predecessor took is failing its clients.
    pub max_client_error_increase: f64,
    /// Let a candidate whose inputs or outputs differ from the live version's take
    /// traffic (refused before any request otherwise).
    pub allow_signature_change: bool,
    /// How long the candidate answers a mirrored copy of live traffic, its answers
    /// discarded and compared with stable's, before any user request reaches it (zero: no
    /// shadow phase).
    pub shadow: Duration,
    /// Mirrored requests the shadow phase must compare before it can pass (0: the health
    /// window's min_samples).
    pub shadow_requests: u64,
    /// In the shadow phase, the share of compared requests on which the candidate must
    /// agree with stable (top class for classifiers, within `agreement_tolerance` for
    /// other outputs); 0 turns the check off.
    pub min_agreement: f64,
    /// Largest relative difference (a fraction) between the candidate's and stable's
    /// non-class outputs that still counts as agreeing.
    pub agreement_tolerance: f64,
    /// Largest population stability index of any feature of the candidate's answers
    /// against stable's (beyond what chance allows at the sample sizes); 0 turns the
    /// check off.
    pub max_output_drift: f64,
    /// Answers each side needs before drift is judged (fewer: inconclusive).
    pub drift_min_samples: u64,
    /// Keep a sample of recent live requests and replay it to a candidate when live
    /// traffic is too thin to judge it.
    pub replay: bool,
    /// Requests the sample keeps, at most.
    pub replay_sample: usize,
    /// Bytes the sample keeps, at most.
    pub replay_memory: usize,
    /// A candidate whose accuracy on the validation set is lower than the live
    /// version's by more than this (a fraction: 0.02 is 2 points) is refused.
    pub max_accuracy_drop: f64,
    /// A candidate whose mean absolute error on a regression validation set exceeds the
    /// live version's by more than this share of it is refused.
    pub max_validation_error_increase: f64,
    /// Which of the keys whose default depends on the strategy the config set itself.
    pub explicit: Explicit,
}

/// The keys whose default differs by strategy, when the config gives them: a rollout by
/// another strategy (`modeld deploy --strategy`) keeps these and takes its own defaults
/// for the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explicit {
    pub bake: bool,
    pub keep_previous: bool,
    pub shadow: bool,
}

impl DeployConfig {
    /// Whether a rollout runs a shadow phase: one is configured and a live version is
    /// there to mirror.
    pub fn shadows(&self, live: bool) -> bool {
        live && !self.shadow.is_zero()
    }

    /// The defaults for a strategy.
    pub fn defaults(strategy: Strategy) -> DeployConfig {
        let bake = match strategy {
            Strategy::BlueGreen => Duration::from_secs(300),
            Strategy::Canary => Duration::from_secs(60),
            Strategy::Rolling | Strategy::Recreate | Strategy::AbTest => Duration::from_secs(30),
        };
        DeployConfig {
            strategy,
            steps: vec![10, 25, 50, 100],
            bake,
            keep_previous: match strategy {
                Strategy::BlueGreen => Duration::from_secs(600),
                _ => Duration::ZERO,
            },
            max_surge: 1,
            max_unavailable: 0,
            split: 50,
            duration: Duration::from_secs(3600),
            sticky_header: None,
            check_every: Duration::from_millis(500),
            consecutive_breaches: 2,
            on_inconclusive: OnInconclusive::Fail,
            inconclusive_timeout: Duration::from_secs(600),
            max_error_rate_increase: 0.02,
            max_latency_ratio: 2.0,
            max_client_error_increase: 0.02,
            allow_signature_change: false,
            // Recreate stops the old version before the new one starts: nothing to mirror.
            shadow: match strategy {
                Strategy::Recreate => Duration::ZERO,
                _ => Duration::from_secs(30),
            },
            shadow_requests: 0,
            min_agreement: 0.5,
            agreement_tolerance: 0.1,
            max_output_drift: 0.25,
            drift_min_samples: 50,
            replay: true,
            replay_sample: 500,
            replay_memory: 64 << 20,
            max_accuracy_drop: 0.02,
            max_validation_error_increase: 0.1,
            explicit: Explicit::default(),
        }
    }

    /// These settings for a rollout by `strategy`: every key the config set is kept (the
    /// gate's limits, check_every, sticky_header, ...); the keys whose default depends on
    /// the strategy take `strategy`'s default unless the config set them.
    pub fn with_strategy(&self, strategy: Strategy) -> DeployConfig {
        if strategy == self.strategy {
            return self.clone();
        }
        let defaults = DeployConfig::defaults(strategy);
        let pick = |set: bool, ours: Duration, theirs: Duration| if set { ours } else { theirs };
        let shadow = match strategy {
            Strategy::Recreate => Duration::ZERO,
            _ => pick(self.explicit.shadow, self.shadow, defaults.shadow),
        };
        DeployConfig {
            strategy,
            bake: pick(self.explicit.bake, self.bake, defaults.bake),
            keep_previous: pick(self.explicit.keep_previous, self.keep_previous, defaults.keep_previous),
            shadow,
            ..self.clone()
        }
    }
}

impl Default for DeployConfig {
    fn default() -> DeployConfig {
        DeployConfig::defaults(Strategy::Canary)
    }
}

/// Builds the model's deploy settings, recording problems under `path`.
pub fn build(
    raw: &RawDeploy,
    workers: usize,
    path: &KeyPath,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> DeployConfig {
    let mut err = |key: &str, message: String| problems.push(at.error(&path.key(key), message));
    let strategy = match raw.strategy.as_deref() {
        None => Strategy::Canary,
        Some(name) => Strategy::parse(name).unwrap_or_else(|| {
            let known: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
            err("strategy", format!("'{name}' is not a strategy (one of {})", known.join(", ")));
            Strategy::Canary
        }),
    };
    let mut d = DeployConfig::defaults(strategy);
    let mut duration = |key: &str, value: &Option<String>, target: &mut Duration, zero_ok: bool| {
        if value.as_deref().is_some_and(|v| zero_ok && humantime::parse_duration(v).is_ok_and(|d| d.is_zero())) {
            *target = Duration::ZERO;
            return;
        }
        match parse_duration(value, *target) {
            Ok(v) => *target = v,
            Err(m) => err(key, m),
        }
    };
    duration("bake", &raw.bake, &mut d.bake, false);
    duration("keep_previous", &raw.keep_previous, &mut d.keep_previous, true);
    match raw.shadow.as_deref() {
        Some("off") => d.shadow = Duration::ZERO,
        _ => duration("shadow", &raw.shadow, &mut d.shadow, true),
    }
    d.explicit =
        Explicit { bake: raw.bake.is_some(), keep_previous: raw.keep_previous.is_some(), shadow: raw.shadow.is_some() };
    duration("duration", &raw.duration, &mut d.duration, false);
    duration("check_every", &raw.check_every, &mut d.check_every, false);
    duration("inconclusive_timeout", &raw.inconclusive_timeout, &mut d.inconclusive_timeout, false);
    if let Some(steps) = &raw.steps {
        match check_steps(steps) {
            Ok(steps) => d.steps = steps,
            Err(m) => err("steps", m),
        }
    }
    let mut count = |key: &str, value: Option<i64>, target: &mut usize| {
        if let Some(v) = value {
            match usize::try_from(v) {
                Ok(v) if v <= workers => *target = v,
                _ => err(key, format!("must be between 0 and the model's {workers} workers, got {v}")),
            }
        }
    };
    count("max_surge", raw.max_surge, &mut d.max_surge);
    count("max_unavailable", raw.max_unavailable, &mut d.max_unavailable);
    if d.max_surge == 0 && d.max_unavailable == 0 {
        err("max_surge", "max_surge and max_unavailable cannot both be 0: nothing could be replaced".into());
    }
    if let Some(split) = raw.split {
        match u8::try_from(split) {
            Ok(s) if (1..=99).contains(&s) => d.split = s,
            _ => err("split", format!("must be a percent between 1 and 99, got {split}")),
        }
    }
    if let Some(header) = &raw.sticky_header {
        match header.parse::<hyper::header::HeaderName>() {
            Ok(name) => d.sticky_header = Some(name.as_str().to_string()),
            Err(_) => err("sticky_header", format!("'{header}' is not a valid HTTP header name")),
        }
    }
    if let Some(n) = raw.consecutive_breaches {
        match u32::try_from(n) {
            Ok(n) if (1..=100).contains(&n) => d.consecutive_breaches = n,
            _ => err("consecutive_breaches", format!("must be between 1 and 100, got {n}")),
        }
    }
    match raw.on_inconclusive.as_deref() {
        None => {}
        Some("fail") => d.on_inconclusive = OnInconclusive::Fail,
        Some("pause") => d.on_inconclusive = OnInconclusive::Pause,
        Some(other) => err("on_inconclusive", format!("'{other}' is not one of fail, pause")),
    }
    if let Some(p) = raw.max_error_rate_increase {
        match p {
            p if (0.0..=100.0).contains(&p) => d.max_error_rate_increase = p / 100.0,
            p => err("max_error_rate_increase", format!("must be percentage points between 0 and 100, got {p}")),
        }
    }
    let mut percent = |key: &str, value: Option<f64>, target: &mut f64| match value {
        None => {}
        Some(p) if (0.0..=100.0).contains(&p) => *target = p / 100.0,
        Some(p) => err(key, format!("must be a percent between 0 and 100, got {p}")),
    };
    percent("max_client_error_increase", raw.max_client_error_increase, &mut d.max_client_error_increase);
    percent("min_agreement", raw.min_agreement, &mut d.min_agreement);
    percent("agreement_tolerance", raw.agreement_tolerance, &mut d.agreement_tolerance);
    percent("max_accuracy_drop", raw.max_accuracy_drop, &mut d.max_accuracy_drop);
    percent("max_validation_error_increase", raw.max_validation_error_increase, &mut d.max_validation_error_increase);
    if let Some(limit) = raw.max_output_drift {
        match limit {
            l if l >= 0.0 && l.is_finite() => d.max_output_drift = l,
            l => err("max_output_drift", format!("must be a PSI of 0 or more (0 turns the check off), got {l}")),
        }
    }
    if let Some(n) = raw.drift_min_samples {
        match u64::try_from(n) {
            Ok(n) if n >= 10 => d.drift_min_samples = n,
            _ => {
                err("drift_min_samples", format!("must be at least 10 (a PSI of fewer answers means nothing), got {n}"))
            }
        }
    }
    if let Some(replay) = raw.replay {
        d.replay = replay;
    }
    if let Some(n) = raw.replay_sample {
        match usize::try_from(n) {
            Ok(n) if n <= 100_000 => d.replay_sample = n,
            _ => err("replay_sample", format!("must be between 0 and 100000 requests, got {n}")),
        }
    }
    if let Some(size) = &raw.replay_memory {
        match super::validate::parse_size(size) {
            Ok(bytes) => d.replay_memory = bytes,
            Err(m) => err("replay_memory", m),
        }
    }
    if let Some(allow) = raw.allow_signature_change {
        d.allow_signature_change = allow;
    }
    if let Some(n) = raw.shadow_requests {
        match u64::try_from(n) {
            Ok(n) => d.shadow_requests = n,
            Err(_) => err("shadow_requests", format!("must not be negative, got {n}")),
        }
    }
    if strategy == Strategy::Recreate && !d.shadow.is_zero() {
        err(
            "shadow",
            "recreate stops the old version before the new one starts, so there is no live traffic to mirror; \
             remove shadow or pick another strategy"
                .into(),
        );
    }
    if let Some(r) = raw.max_latency_ratio {
        match r {
            r if r >= 1.0 && r.is_finite() => d.max_latency_ratio = r,
            r => err("max_latency_ratio", format!("must be at least 1.0, got {r}")),
        }
    }
    d
}

fn check_steps(steps: &[i64]) -> Result<Vec<u8>, String> {
    if steps.is_empty() {
        return Err("a canary needs at least one step".into());
    }
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        match u8::try_from(*s) {
            Ok(p) if (1..=100).contains(&p) && out.last().is_none_or(|l| p > *l) => out.push(p),
            _ => return Err(format!("steps {steps:?} must be increasing percents between 1 and 100")),
        }
    }
    if out.last() != Some(&100) {
        return Err(format!("steps {steps:?} must end at 100"));
    }
    Ok(out)
}
