//! A rollout's lifecycle, as one enum: each variant says what moves it on. Changes are
//! broadcast on a `watch` channel ([`Progress`]) that `modeld deploy`, `modeld status`,
//! the metrics and the tests follow.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The candidate's workers start: load, warm-up, golden examples. Moves on when one is
    /// ready (traffic may start), or fails the rollout — live traffic untouched.
    Spawning,
    /// The candidate and the live version answer the candidate's validation set. Moves on
    /// when the candidate scores within the allowed margin of the live version; fails the
    /// rollout, before any traffic, otherwise.
    Validating,
    /// The candidate answers a mirrored copy of live requests, its answers compared with
    /// stable's and thrown away; no user request reaches it. Moves on when the shadow time
    /// ends with a passing verdict (agreement included); a failing one stops the candidate
    /// before any user saw it.
    Shadow,
    /// The candidate takes `weight` % of traffic while the gate watches, for the step's
    /// bake time. Moves on when the bake ends with a passing verdict; a failing one
    /// reverts.
    Gating { step: usize, steps: usize, weight: u8 },
    /// Held at `weight`: by `modeld pause`, or a step that ended without enough traffic to
    /// judge (with `on_inconclusive = "pause"`). The gate still reverts on a breach. Step
    /// 0 is the shadow phase (weight 0: still no user traffic).
    /// Moves on with `modeld resume` (or `promote` / `rollback`).
    Paused { step: usize, steps: usize, weight: u8, reason: String },
    /// A/B test: the test ran its duration; both arms keep serving until `modeld promote`
    /// names the winner (or `rollback` keeps the old version).
    AwaitingDecision { weight: u8 },
    /// Taking the old version's workers out (recreate) or the candidate's (revert).
    Draining,
    /// Ended: the candidate is the stable version.
    Promoted,
    /// Ended: traffic is back on the old version.
    Reverted { reason: String },
    /// Ended before any traffic reached the candidate (it never got ready).
    Failed { reason: String },
}

impl Phase {
    pub fn is_done(&self) -> bool {
        matches!(self, Phase::Promoted | Phase::Reverted { .. } | Phase::Failed { .. })
    }

    /// The name metrics and history use.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Spawning => "spawning",
            Phase::Validating => "validating",
            Phase::Shadow => "shadow",
            Phase::Gating { .. } => "gating",
            Phase::Paused { .. } => "paused",
            Phase::AwaitingDecision { .. } => "awaiting_decision",
            Phase::Draining => "draining",
            Phase::Promoted => "promoted",
            Phase::Reverted { .. } => "reverted",
            Phase::Failed { .. } => "failed",
        }
    }

    pub const NAMES: [&'static str; 10] = [
        "spawning",
        "validating",
        "shadow",
        "gating",
        "paused",
        "awaiting_decision",
        "draining",
        "promoted",
        "reverted",
        "failed",
    ];

    /// The candidate's traffic share in this phase, when it has one.
    pub fn weight(&self) -> Option<u8> {
        match self {
            Phase::Gating { weight, .. } | Phase::Paused { weight, .. } | Phase::AwaitingDecision { weight } => {
                Some(*weight)
            }
            _ => None,
        }
    }

    /// Moves the candidate's traffic share of a phase that has one.
    pub fn set_weight(&mut self, to: u8) {
        if let Phase::Gating { weight, .. } | Phase::Paused { weight, .. } | Phase::AwaitingDecision { weight } = self {
            *weight = to;
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Phase::Spawning => {
                "starting the new version's workers (load, warm-up, golden examples, signature check)".into()
            }
            Phase::Validating => "answering the validation set, beside the live version (no user traffic)".into(),
            Phase::Shadow => "shadow: answering a copy of live traffic, compared with stable's, no user traffic".into(),
            Phase::Gating { step, steps, weight } => {
                format!("step {step}/{steps}: {weight}% of traffic, gate watching")
            }
            Phase::Paused { step: 0, reason, .. } => format!("paused in the shadow phase (no user traffic): {reason}"),
            Phase::Paused { step, steps, weight, reason } => {
                format!("paused at step {step}/{steps} ({weight}% of traffic): {reason}")
            }
            Phase::AwaitingDecision { weight } => {
                format!("A/B test done ({weight}% on the new version): `modeld promote` picks the winner")
            }
            Phase::Draining => "draining the old workers".into(),
            Phase::Promoted => "promoted".into(),
            Phase::Reverted { reason } => format!("reverted: {reason}"),
            Phase::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

/// What followers of a rollout see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub id: u64,
    pub model: String,
    pub from: Option<u64>,
    pub to: u64,
    pub strategy: String,
    /// Where the candidate's answers came from so far (once it answers beside stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<super::answers::Sources>,
    /// The gate's last look at the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateView>,
    #[serde(flatten)]
    pub phase: Phase,
}

/// The gate's last evaluation as followers show it: the verdict, each check's value beside
/// its threshold, how long the phase holds and has held, and while inconclusive what it
/// waits for (the reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateView {
    pub at: f64,
    /// "pass", "fail" or "inconclusive".
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the phase holds (none: until an operator decides), and has held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<f64>,
    pub held_seconds: f64,
    pub checks: Vec<GateCheck>,
    /// The candidate's agreement with the live version on the answers compared, and the
    /// largest drift of its answers (PSI), once measured: what the live view charts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
}

impl GateView {
    /// Seconds left in the phase's hold at unix time `now`, when it has one.
    pub fn seconds_left(&self, now: f64) -> Option<f64> {
        let since = (now - self.at).max(0.0);
        self.hold_seconds.map(|h| (h - self.held_seconds - since).max(0.0))
    }

    /// Seconds the phase has held at unix time `now`.
    pub fn seconds_held(&self, now: f64) -> f64 {
        self.held_seconds + (now - self.at).max(0.0)
    }
}

/// One check of the gate: what was measured and what it is held to (`ok` none: not
/// judged yet, too few samples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    pub name: String,
    pub value: String,
    pub threshold: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}
