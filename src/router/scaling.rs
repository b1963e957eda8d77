//! What the host autoscaler last decided for a model, kept on its route so that `/health`,
//! `modeld status`, the live view and the metrics read one account of it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleStatus {
    pub min: usize,
    pub max: usize,
    /// The count the autoscaler decided on (after its windows, policies and the budget).
    pub desired: usize,
    /// Workers of the live version that answer now (filled in when read).
    #[serde(default)]
    pub actual: usize,
    /// What the measures read and which one decided.
    pub reason: String,
    /// What kept the count from what the load asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// Why the autoscaler leaves the model alone now (a rollout in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<String>,
    /// Seconds since the Unix epoch of the decision.
    pub decided_at: f64,
}

/// What kept a model's count from what its load asks for, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub by: HeldBy,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldBy {
    /// A stabilization window (the model's own behaviour).
    Window,
    /// A rate policy (the model's own behaviour).
    Policy,
    /// The host budget or the host's free memory: other models or the host are in the way.
    Budget,
    /// A worker added lately could not get ready: the count is not grown for a while.
    StartFailed,
}
