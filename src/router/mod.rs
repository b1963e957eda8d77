//! The router: from a model name (and optionally a version) to a pool of workers.
//!
//! Per model it holds a [`RoutingTable`] behind an `ArcSwap` ([`table`]), swapped whole by
//! the supervisor or a rollout (remembering the versions a swap retires, [`retired`]),
//! and a bound on requests in flight: past it a request is refused at once with
//! [`RouteError::Overloaded`] rather than queued without limit. Each pool ([`pool`]) picks
//! the least-busy worker and talks to it over a multiplexed connection ([`conn`]).

pub mod conn;
pub mod mirror;
pub mod pool;
pub mod retired;
pub mod sample;
pub mod scaling;
pub mod table;

use arc_swap::ArcSwap;
use pool::PoolError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use table::Tickets;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use conn::CallError;
// What the front may name of the router (and of what crosses to the workers), so that it
// reaches into none of the router's modules.
pub use crate::wire::{Fault, ModelInfo, Timing};
pub use mirror::{Copy, ShadowCounts};
pub use pool::{Faults, Phase, Pool, WorkerUse};
pub use retired::{End, Retired};
pub use scaling::{Held, HeldBy, ScaleStatus};
pub use table::{Hint, RoutingTable};

/// Why a request could not be routed or answered.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteError {
    UnknownModel(String),
    UnknownVersion {
        model: String,
        version: u64,
    },
    /// No version of the model can take requests now.
    NotReady {
        model: String,
        reason: String,
    },
    /// The model's in-flight bound is reached.
    Overloaded {
        model: String,
        limit: usize,
    },
    /// The worker refused or failed the request.
    Call(CallError),
    /// The picked version was taken out of service by a routing swap before the request
    /// reached it; picking again finds the version that replaced it.
    Retired {
        model: String,
        version: u64,
    },
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::UnknownModel(m) => write!(f, "unknown model '{m}'"),
            RouteError::UnknownVersion { model, version } => {
                write!(f, "model '{model}' has no version {version} being served")
            }
            RouteError::NotReady { model, reason } => {
                write!(f, "model '{model}' is not ready: {reason}")
            }
            RouteError::Overloaded { model, limit } => {
                write!(f, "model '{model}' has {limit} requests in flight, its limit; retry later")
            }
            RouteError::Call(CallError::Gone) => {
                write!(f, "the worker stopped while serving the request, and the retry found none")
            }
            RouteError::Call(CallError::Failed { message, .. }) => f.write_str(message),
            RouteError::Retired { model, version } => {
                write!(f, "model '{model}' version {version} was taken out of service")
            }
        }
    }
}

/// One model's routing state.
pub struct ModelRoute {
    pub name: String,
    /// Recent live requests its stable version answered, for a quiet model's rollouts.
    pub sample: sample::Sample,
    table: ArcSwap<RoutingTable>,
    /// Versions swapped out of the table, for TF Serving's model status.
    pub retired: retired::Log,
    tickets: Tickets,
    inflight: Arc<Semaphore>,
    limit: AtomicUsize,
    /// The autoscaler's last decision (none: the model's count is fixed).
    scale: arc_swap::ArcSwapOption<ScaleStatus>,
}

/// Held for as long as a request is in flight; counts against the model's bound.
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

impl ModelRoute {
    pub fn new(name: &str, limit: usize, sample: sample::Limits, table: RoutingTable) -> ModelRoute {
        ModelRoute {
            name: name.to_string(),
            sample: sample::Sample::new(sample),
            table: ArcSwap::from_pointee(table),
            retired: retired::Log::default(),
            tickets: Tickets::default(),
            inflight: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            scale: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// The autoscaler's last decision, with the live version's ready workers as `actual`.
    pub fn scale(&self) -> Option<ScaleStatus> {
        let mut status = ScaleStatus::clone(&*self.scale.load_full()?);
        status.actual = self.table().stable.as_ref().map_or(0, |p| p.ready_workers());
        Some(status)
    }

    /// Keeps the autoscaler's decision (none: the model's count became fixed; a cheap
    /// read when there was none either).
    pub fn set_scale(&self, status: Option<ScaleStatus>) {
        if status.is_some() || self.scale.load().is_some() {
            self.scale.store(status.map(Arc::new));
        }
    }

    /// Changes the in-flight bound (a reload): more room at once; less as requests in
    /// flight finish (none is cut short).
    pub fn set_limit(&self, limit: usize) {
        let old = self.limit.swap(limit, Ordering::SeqCst);
        if limit > old {
            self.inflight.add_permits(limit - old);
        } else if limit < old {
            let missing = (old - limit) - self.inflight.forget_permits(old - limit);
            if missing > 0 {
                let inflight = self.inflight.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = inflight.acquire_many_owned(missing as u32).await {
                        permits.forget();
                    }
                });
            }
        }
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Replaces the routing in one atomic store, noting the versions it retires.
    pub fn swap(&self, table: RoutingTable) -> Arc<RoutingTable> {
        let table = Arc::new(table);
        let old = self.table.swap(table.clone());
        self.retired.note(&old, &table);
        old
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit.load(Ordering::Relaxed).saturating_sub(self.inflight.available_permits())
    }

    /// Admits a request, or refuses it at once past the bound.
    pub fn admit(&self) -> Result<Admission, RouteError> {
        self.inflight
            .clone()
            .try_acquire_owned()
            .map(Admission)
            .map_err(|_| RouteError::Overloaded { model: self.name.clone(), limit: self.limit.load(Ordering::Relaxed) })
    }

    /// The pool for a request: the pinned version, or by the table's rules and split.
    pub fn pick(&self, hint: &Hint) -> Result<Arc<Pool>, RouteError> {
        let table = self.table.load();
        let pool = match hint.version {
            Some(v) => table.version(v).ok_or(RouteError::UnknownVersion { model: self.name.clone(), version: v })?,
            None => table.choose(hint, self.tickets.next()).ok_or_else(|| RouteError::NotReady {
                model: self.name.clone(),
                reason: table.problem.clone().unwrap_or_else(|| "no version is live".into()),
            })?,
        };
        Ok(pool.clone())
    }

    /// Whether `pool` is the model's stable version now.
    pub fn is_stable(&self, pool: &Arc<Pool>) -> bool {
        self.table.load().stable.as_ref().is_some_and(|s| Arc::ptr_eq(s, pool))
    }

    /// The shadow's mirror to feed with what `pool` answered, while a candidate shadows it.
    pub fn mirror_for(&self, pool: &Arc<Pool>) -> Option<Arc<mirror::Mirror>> {
        self.table.load().mirror_for(pool).cloned()
    }

    /// The header whose value keeps a request on one arm of an A/B test, if one runs.
    pub fn sticky_header(&self) -> Option<String> {
        self.table.load().candidate.as_ref().and_then(|c| c.sticky_header.clone())
    }
}

/// Runs a request on `pool`, mapping its failures to route errors.
pub async fn infer(
    pool: &Pool,
    inputs: &[crate::tensor::Tensor],
) -> Result<(Vec<crate::tensor::Tensor>, crate::wire::Timing), RouteError> {
    pool.infer(inputs).await.map_err(|e| pool_error(pool, e))
}

/// A pool's failure as the route reports it.
pub fn pool_error(pool: &Pool, e: PoolError) -> RouteError {
    match e {
        PoolError::Unavailable(reason) => RouteError::NotReady { model: pool.model.clone(), reason },
        PoolError::Stopping => RouteError::Retired { model: pool.model.clone(), version: pool.version },
        PoolError::Call(call) => RouteError::Call(call),
    }
}

/// All models' routes, by name.
#[derive(Default)]
pub struct Router {
    models: ArcSwap<BTreeMap<String, Arc<ModelRoute>>>,
}

impl Router {
    pub fn model(&self, name: &str) -> Result<Arc<ModelRoute>, RouteError> {
        self.models.load().get(name).cloned().ok_or_else(|| RouteError::UnknownModel(name.to_string()))
    }

    pub fn models(&self) -> Arc<BTreeMap<String, Arc<ModelRoute>>> {
        self.models.load_full()
    }

    /// Removes a model's route (requests for it get 404 from now on).
    pub fn remove(&self, name: &str) {
        self.models.rcu(|models| {
            let mut models = BTreeMap::clone(models);
            models.remove(name);
            models
        });
    }

    /// Adds (or replaces) a model's route.
    pub fn insert(&self, route: Arc<ModelRoute>) {
        self.models.rcu(|models| {
            let mut models = BTreeMap::clone(models);
            models.insert(route.name.clone(), route.clone());
            models
        });
    }
}
