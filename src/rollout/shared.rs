//! What the runners share with the engine: the supervisor, the host's readings, the
//! metrics, the `[server]` settings in force and the persisted state; and the watch over a
//! promoted version while its predecessor is kept warm.

use super::state::{self, Outcome, Record, State, Store};
use super::{Origin, evidence, gate};
use crate::health::Host;
use crate::metrics::Metrics;
use crate::router::ModelRoute;
use crate::router::pool::Pool;
use crate::router::table::RoutingTable;
use crate::supervisor::Supervisor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a promoted version is watched while its predecessor is kept warm.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pub every: Duration,
    pub breaches: u32,
}

/// What the runners share with the engine.
pub struct Shared {
    pub supervisor: Arc<Supervisor>,
    pub host: Arc<Host>,
    pub metrics: Arc<Metrics>,
    /// `[server]` in force: `worker_start_timeout` (how long a candidate may take to get
    /// ready) and `request_timeout` (how long a mirrored copy may take on a shadow).
    pub server: crate::config::Live,
    pub(super) store: Store,
    state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(
        supervisor: Arc<Supervisor>,
        host: Arc<Host>,
        metrics: Arc<Metrics>,
        server: crate::config::Live,
        store: Store,
        state: State,
    ) -> Shared {
        Shared { supervisor, host, metrics, server, store, state: Mutex::new(state) }
    }

    /// Applies `change` to the state and saves it; a failed save is logged (the daemon
    /// keeps serving; the state on disk is then the previous one).
    pub fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state);
        if let Err(e) = self.store.save(&state) {
            tracing::error!("{e}");
        }
    }

    pub fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Saves a running rollout's record as the model's rollout in progress.
    pub fn save_rollout(&self, model: &str, record: &Record) {
        self.update(|s| s.model(model).rollout = Some(record.clone()));
    }

    /// Keeps `old` warm for `keep` after a promotion, then stops it, unless a rollback
    /// took it back into service first. Meanwhile the promoted version is watched by the
    /// gate's critical checks (its workers crash-looping on requests, its error rate,
    /// latency, availability, OOM kills): `watch.breaches` failing evaluations in a row
    /// revert to `old` at once, from its warm pool.
    pub fn retire_later(self: &Arc<Self>, route: Arc<ModelRoute>, old: Arc<Pool>, keep: Duration, watch: Watch) {
        let shared = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + keep;
            let mut breaches = 0;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(watch.every.min(deadline - tokio::time::Instant::now())).await;
                let table = route.table();
                let (Some(previous), Some(promoted)) = (&table.previous, &table.stable) else { return };
                if !Arc::ptr_eq(previous, &old) {
                    return; // rolled back meanwhile, or a new rollout retired it
                }
                let Some(gate::Verdict::Fail(reason)) = gate::critical(promoted, &shared.host) else {
                    breaches = 0;
                    continue;
                };
                breaches += 1;
                if breaches >= watch.breaches {
                    return shared.revert_promotion(&route, promoted.clone(), old, reason).await;
                }
            }
            shared.retire_previous(&route, &old).await;
        });
    }

    /// Puts `previous` back in service after the promoted version failed the gate, and
    /// records it as the promoted version's revert.
    pub(super) async fn revert_promotion(
        &self,
        route: &ModelRoute,
        promoted: Arc<Pool>,
        previous: Arc<Pool>,
        reason: String,
    ) {
        let (from, to) = (promoted.version, previous.version);
        tracing::error!(model = %route.name, from, to, "the promoted version failed the gate: {reason}; reverting to the warm previous version");
        route.swap(RoutingTable::stable(previous));
        let reason =
            format!("after its promotion, version {from} failed the gate ({reason}); version {to} serves again");
        let by = evidence::Caller::origin(Origin::Watch.name());
        self.record_switch(&route.name, from, to, "revert", by, Outcome::Reverted, reason);
        self.supervisor.stop(&promoted).await;
    }

    /// Records a switch of the live version outside a rollout (a rollback by hand, a revert
    /// after promotion) in the state and the history.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_switch(
        &self,
        model: &str,
        from: u64,
        to: u64,
        strategy: &str,
        by: evidence::Caller,
        outcome: Outcome,
        reason: String,
    ) {
        self.update(|s| {
            let m = s.model(model);
            m.live = Some(to);
            m.previous = Some(from);
            let at = state::now();
            let id = s.next_id();
            s.remember(Record {
                id,
                model: model.into(),
                from: Some(from),
                to,
                strategy: strategy.into(),
                origin: by.origin.clone(),
                started_at: at,
                ended_at: Some(at),
                outcome: Some(outcome),
                reason: Some(reason),
                phases: Vec::new(),
                validation: None,
                by: Some(by),
                ended_by: None,
            });
        });
    }

    /// Takes `old` out of the table's warm previous slot, if it is still there, and stops it.
    pub(super) async fn retire_previous(&self, route: &ModelRoute, old: &Arc<Pool>) {
        let table = route.table();
        if table.previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, old)) {
            route.swap(RoutingTable { previous: None, ..RoutingTable::clone(&table) });
            self.supervisor.stop(old).await;
        }
    }
}
