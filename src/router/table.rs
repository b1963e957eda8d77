//! A model's routing table: which pools serve it and how traffic splits between them.
//!
//! A table is immutable; changing the routing means building a new one and storing it in
//! the model's `ArcSwap` in one atomic step, so a request sees either the old routing or
//! the new, never a mix. A request keeps the pool it picked until it completes.

use super::pool::Pool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A version receiving a share of traffic beside the stable one.
#[derive(Clone)]
pub struct Candidate {
    pub pool: Arc<Pool>,
    /// Share of unpinned requests sent to the candidate, in percent (0..=100).
    pub weight: u8,
}

#[derive(Clone, Default)]
pub struct RoutingTable {
    pub stable: Option<Arc<Pool>>,
    pub candidate: Option<Candidate>,
    /// Why there is no stable pool (e.g. no version found in the repository).
    pub problem: Option<String>,
}

impl RoutingTable {
    pub fn stable(pool: Arc<Pool>) -> RoutingTable {
        RoutingTable { stable: Some(pool), candidate: None, problem: None }
    }

    /// A table with nothing to route to, and why.
    pub fn unavailable(problem: String) -> RoutingTable {
        RoutingTable { stable: None, candidate: None, problem: Some(problem) }
    }

    /// Every pool in the table.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.stable.iter().chain(self.candidate.iter().map(|c| &c.pool))
    }

    /// The pool serving `version`, if the table holds it.
    pub fn version(&self, version: u64) -> Option<&Arc<Pool>> {
        self.pools().find(|p| p.version == version)
    }

    /// The pool for an unpinned request. `ticket` spreads requests by weight without
    /// randomness: of every 100 consecutive tickets, `weight` go to the candidate.
    pub fn choose(&self, ticket: u64) -> Option<&Arc<Pool>> {
        match &self.candidate {
            Some(c) if to_candidate(ticket, c.weight) => Some(&c.pool),
            _ => self.stable.as_ref().or(self.candidate.as_ref().map(|c| &c.pool)),
        }
    }
}

/// Whether ticket `t` goes to a candidate of `weight` percent: exactly `weight` of every
/// 100 consecutive tickets, evenly interleaved (a 10 % candidate gets every tenth request,
/// not the first ten of a hundred), as a line-drawing algorithm spaces its steps.
fn to_candidate(t: u64, weight: u8) -> bool {
    let w = u64::from(weight.min(100));
    let t = t % 100;
    (t + 1) * w / 100 > t * w / 100
}

/// Hands out tickets for [`RoutingTable::choose`].
#[derive(Default)]
pub struct Tickets(AtomicU64);

impl Tickets {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::PredictSpec;
    use crate::router::pool::PoolSpec;

    fn pool(version: u64) -> Arc<Pool> {
        Arc::new(Pool::new(PoolSpec {
            model: "m".into(),
            version,
            workers: 1,
            predict: PredictSpec::default(),
            health: Default::default(),
            memory_limit: None,
        }))
    }

    #[test]
    fn weight_splits_every_hundred_requests_exactly() {
        for weight in [0u8, 1, 10, 25, 50, 100] {
            let table = RoutingTable {
                stable: Some(pool(1)),
                candidate: Some(Candidate { pool: pool(2), weight }),
                problem: None,
            };
            let to_candidate = (0..1000).filter(|t| table.choose(*t).unwrap().version == 2).count();
            assert_eq!(to_candidate, usize::from(weight) * 10, "weight {weight}");
        }
    }

    #[test]
    fn a_small_weight_is_interleaved() {
        let table = RoutingTable {
            stable: Some(pool(1)),
            candidate: Some(Candidate { pool: pool(2), weight: 10 }),
            problem: None,
        };
        let first_twenty = (0..20).filter(|t| table.choose(*t).unwrap().version == 2).count();
        assert_eq!(first_twenty, 2);
    }

    #[test]
    fn pinned_versions_are_found() {
        let table = RoutingTable {
            stable: Some(pool(1)),
            candidate: Some(Candidate { pool: pool(2), weight: 0 }),
            problem: None,
        };
        assert_eq!(table.version(2).unwrap().version, 2);
        assert!(table.version(3).is_none());
    }
}
