//! What an inference request touched ([`Served`]): the model, the version that took it,
//! its timing and faults; and how it is counted in the metrics and in that version's
//! measured window.

use super::{Front, Reply};
use crate::router::{Fault, Pool, Timing};
use crate::window::Outcome;
use std::sync::Arc;
use std::time::Duration;

/// What an inference request touched, for its metrics and its version's window.
#[derive(Default)]
pub(super) struct Served {
    pub(super) protocol: &'static str,
    pub(super) model: Option<String>,
    /// The version that took the request, once picked.
    pub(super) pool: Option<Arc<Pool>>,
    pub(super) timing: Option<Timing>,
    /// Refused as invalid for the version it reached (its signature or worker).
    pub(super) invalid: bool,
    /// Why the worker failed the request for the values of an output (NaN, a broken
    /// output contract).
    pub(super) wrong: Option<Fault>,
    /// Offered to a candidate in its shadow phase: its version, and whether the copy was
    /// queued (or dropped, the queue being full).
    pub(super) mirrored: Option<(u64, bool)>,
    /// How long the request waited for its version to start (recreate's gap, a version
    /// brought up): the user waited, but it is no measure of how fast the version answers,
    /// so its window, which the health gate judges, does not count it.
    pub(super) waited_for_start: std::time::Duration,
}

impl Served {
    /// Notes the pool a request went to.
    pub(super) fn on(&mut self, pool: &Arc<Pool>) {
        self.pool = Some(pool.clone());
    }
}

impl Front {
    /// Counts an inference request in the metrics and, once it reached a version, in that
    /// version's measured window.
    pub(super) fn record(&self, served: &Served, reply: &Reply, elapsed: Duration) {
        if served.protocol.is_empty() {
            return;
        }
        if let Some(pool) = &served.pool {
            let outcome = match served.invalid {
                true => Outcome::Invalid,
                false => Outcome::of_status(reply.status.as_u16()),
            };
            pool.window.record(outcome, elapsed.saturating_sub(served.waited_for_start));
        }
        let model = served.model.as_deref().unwrap_or("");
        let version = served.pool.as_ref().map(|p| p.version.to_string()).unwrap_or_default();
        let m = &self.metrics;
        if let (Some(fault), Some(pool)) = (&served.wrong, &served.pool) {
            let output = fault.output().unwrap_or_default();
            m.wrong_answer(model, pool.version, output, matches!(fault, Fault::Contract { .. }));
        }
        if let Some((candidate, queued)) = served.mirrored {
            let outcome = if queued { "mirrored" } else { "dropped" };
            m.shadow_requests.with_label_values(&[model, &candidate.to_string(), outcome]).inc();
        }
        m.requests.with_label_values(&[model, &version, served.protocol, reply.status.as_str()]).inc();
        m.request_duration.with_label_values(&[model, &version, served.protocol]).observe(elapsed.as_secs_f64());
        if let Some(t) = served.timing {
            m.queue_duration.with_label_values(&[model, &version]).observe(t.queued.as_secs_f64());
            m.inference_duration.with_label_values(&[model, &version]).observe(t.computed.as_secs_f64());
            if t.leads {
                m.batch_size.with_label_values(&[model, &version]).observe(f64::from(t.batch));
            }
            if t.plans_built > 0 {
                m.plan_builds.with_label_values(&[model, &version]).inc_by(u64::from(t.plans_built));
            }
        }
    }
}
