//! A model's routing table: which pools serve it and how traffic splits between them.
//!
//! A table is immutable; changing the routing means building a new one and storing it in
//! the model's `ArcSwap` in one atomic step, so a request sees either the old routing or
//! the new, never a mix. A request keeps the pool it picked until it completes.

use super::mirror::Mirror;
use super::pool::Pool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A version receiving a share of traffic beside the stable one.
#[derive(Clone)]
pub struct Candidate {
    pub pool: Arc<Pool>,
    /// Share of unpinned requests sent to the candidate, in percent (0..=100).
    pub weight: u8,
    /// When set, requests carrying this header are split by a hash of its value, so a
    /// given value always reaches the same version (A/B tests).
    pub sticky_header: Option<String>,
}

#[derive(Clone, Default)]
pub struct RoutingTable {
    pub stable: Option<Arc<Pool>>,
    pub candidate: Option<Candidate>,
    /// The version promoted away from, kept warm (without traffic) for instant rollback.
    pub previous: Option<Arc<Pool>>,
    /// A candidate in its shadow phase: it answers copies of what stable answered and no
    /// request is routed to it, not even one pinning its version.
    pub shadow: Option<Arc<Mirror>>,
    /// Why there is no stable pool (e.g. no version found in the repository).
    pub problem: Option<String>,
}

/// What a request says about where it wants to go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hint<'a> {
    /// A version pinned by the URL or the `x-modeld-version` header.
    pub version: Option<u64>,
    /// `canary: true`: to the candidate, when there is one.
    pub canary: bool,
    /// The value of the candidate's sticky header, when the request has it.
    pub sticky_key: Option<&'a str>,
}

impl RoutingTable {
    pub fn stable(pool: Arc<Pool>) -> RoutingTable {
        RoutingTable { stable: Some(pool), ..RoutingTable::default() }
    }

    /// A table with nothing to route to, and why.
    pub fn unavailable(problem: String) -> RoutingTable {
        RoutingTable { problem: Some(problem), ..RoutingTable::default() }
    }

    /// The pools that take traffic: stable and candidate.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.stable.iter().chain(self.candidate.iter().map(|c| &c.pool))
    }

    /// Every pool, the warm previous one and a shadow included.
    pub fn all_pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools().chain(self.previous.iter()).chain(self.shadow.iter().map(|m| &m.pool))
    }

    /// The pool serving `version` to requests that pin it, if the table holds it (a warm
    /// previous one too; never a shadow).
    pub fn version(&self, version: u64) -> Option<&Arc<Pool>> {
        self.pools().chain(self.previous.iter()).find(|p| p.version == version)
    }

    /// The mirror to feed with what `pool` answered: the shadow's, when `pool` is stable.
    pub fn mirror_for(&self, pool: &Arc<Pool>) -> Option<&Arc<Mirror>> {
        self.shadow.as_ref().filter(|_| self.stable.as_ref().is_some_and(|s| Arc::ptr_eq(s, pool)))
    }

    /// The role of `pool` in this table.
    pub fn role(&self, pool: &Arc<Pool>) -> &'static str {
        let is = |p: Option<&Arc<Pool>>| p.is_some_and(|p| Arc::ptr_eq(p, pool));
        match () {
            _ if is(self.stable.as_ref()) => "stable",
            _ if is(self.candidate.as_ref().map(|c| &c.pool)) => "candidate",
            _ if is(self.shadow.as_ref().map(|m| &m.pool)) => "shadow",
            _ => "previous",
        }
    }

    /// Percent of unpinned traffic `pool` receives.
    pub fn weight(&self, pool: &Arc<Pool>) -> u8 {
        let candidate = self.candidate.as_ref().map_or(0, |c| c.weight);
        match self.role(pool) {
            "stable" => 100 - candidate,
            "candidate" => candidate,
            _ => 0,
        }
    }

    /// The pool for a request without a pinned version: the candidate for `canary: true`,
    /// by the sticky key's hash when there is one, else by weight: of every 100
    /// consecutive tickets, exactly `weight` go to the candidate, at places shuffled anew
    /// for each hundred ([`to_candidate`]).
    pub fn choose(&self, hint: &Hint, ticket: u64) -> Option<&Arc<Pool>> {
        let fallback = || self.stable.as_ref().or(self.candidate.as_ref().map(|c| &c.pool));
        let Some(c) = &self.candidate else { return fallback() };
        let to_candidate = match (hint.canary, hint.sticky_key, &c.sticky_header) {
            (true, ..) => true,
            (false, Some(key), Some(_)) => (fnv1a(key.as_bytes()) % 100) < u64::from(c.weight),
            _ => to_candidate(ticket, c.weight),
        };
        if to_candidate { Some(&c.pool) } else { fallback() }
    }
}

/// FNV-1a, 64 bit: a fixed, well-known hash, so a sticky key lands in the same bucket
/// across restarts, reloads and builds (the standard library's hasher promises no such
/// stability).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Whether ticket `t` goes to a candidate of `weight` percent: exactly `weight` of every
/// 100 consecutive tickets, at places a pseudo-random permutation picks anew for each
/// hundred. Evenly spaced places (every tenth request for 10 %) would alias with clients
/// that send a repeating cycle of inputs — a synthetic monitor, a replayed test set, a
/// client round-robining over a few records — and the candidate would see another mix
/// of requests than stable, which the gate would read as the candidate's doing.
fn to_candidate(t: u64, weight: u8) -> bool {
    permute_hundred(t % 100, splitmix64(t / 100)) < u64::from(weight.min(100))
}

/// A bijection on 0..100 chosen by `key`: a four-round Feistel network on 8 bits,
/// walked until it lands below 100 (cycle-walking keeps it a bijection of 0..100).
fn permute_hundred(place: u64, key: u64) -> u64 {
    let mut x = place;
    loop {
        let (mut left, mut right) = (x >> 4, x & 15);
        for round in 0..4u64 {
            let f = splitmix64(key ^ (round << 8) ^ right) & 15;
            (left, right) = (right, left ^ f);
        }
        x = (left << 4) | right;
        if x < 100 {
            return x;
        }
    }
}

/// SplitMix64's output function: a fixed, well-mixed 64-bit hash.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
    use crate::repo::PredictSpec;
    use crate::router::pool::PoolSpec;

    fn pool(version: u64) -> Arc<Pool> {
        Arc::new(Pool::new(PoolSpec {
            model: "m".into(),
            version,
            workers: 1,
            predict: PredictSpec::default(),
            health: Default::default(),
            memory_limit: None,
            cores_per_worker: 1,
            ..PoolSpec::default()
        }))
    }

    fn with_candidate(weight: u8, sticky: Option<&str>) -> RoutingTable {
        RoutingTable {
            candidate: Some(Candidate { pool: pool(2), weight, sticky_header: sticky.map(String::from) }),
            ..RoutingTable::stable(pool(1))
        }
    }

    fn to_v2(table: &RoutingTable, tickets: std::ops::Range<u64>) -> usize {
        tickets.filter(|t| table.choose(&Hint::default(), *t).unwrap().version == 2).count()
    }

    #[test]
    fn weight_splits_every_hundred_requests_exactly() {
        for weight in [0u8, 1, 10, 25, 50, 100] {
            assert_eq!(to_v2(&with_candidate(weight, None), 0..1000), usize::from(weight) * 10, "weight {weight}");
        }
    }

    #[test]
    fn each_hundred_is_a_permutation() {
        for key in [0, 1, 0xdead_beef, u64::MAX] {
            let mut seen: Vec<u64> = (0..100).map(|p| permute_hundred(p, key)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..100).collect::<Vec<_>>(), "key {key}");
        }
    }

    #[test]
    fn the_split_does_not_alias_with_a_cycle_of_requests() {
        // A client sending a cycle of `period` inputs: each input reaches the candidate
        // about as often as the weight says, whatever the period.
        let table = with_candidate(25, None);
        for period in 2..=16u64 {
            for residue in 0..period {
                let tickets = (0..40_000u64).filter(|t| t % period == residue);
                let n = tickets.clone().count() as f64;
                let hits = tickets.filter(|t| table.choose(&Hint::default(), *t).unwrap().version == 2).count();
                let share = hits as f64 / n;
                assert!((0.21..0.29).contains(&share), "period {period}, input {residue}: {share:.3}");
            }
        }
    }

    #[test]
    fn pinned_versions_are_found() {
        let table = RoutingTable { previous: Some(pool(0)), ..with_candidate(0, None) };
        assert_eq!(table.version(2).unwrap().version, 2);
        assert_eq!(table.version(0).unwrap().version, 0);
        assert!(table.version(3).is_none());
        assert_eq!(table.role(table.version(0).unwrap()), "previous");
        assert_eq!(table.weight(table.version(1).unwrap()), 100);
    }

    #[test]
    fn a_shadow_takes_no_request_and_is_fed_by_stable_only() {
        let (mirror, _copies) = Mirror::new(pool(2), 4);
        let table = RoutingTable { shadow: Some(mirror), ..RoutingTable::stable(pool(1)) };
        assert!(table.version(2).is_none(), "a version in its shadow phase cannot be pinned");
        let canary = Hint { canary: true, ..Hint::default() };
        assert_eq!(table.choose(&canary, 0).unwrap().version, 1);
        assert_eq!(table.all_pools().map(|p| table.role(p)).collect::<Vec<_>>(), ["stable", "shadow"]);
        let stable = table.stable.clone().unwrap();
        assert!(table.mirror_for(&stable).is_some());
        assert!(table.mirror_for(&pool(1)).is_none(), "only the stable pool's answers are mirrored");
    }

    #[test]
    fn canary_header_and_sticky_keys_route_consistently() {
        let table = with_candidate(30, Some("x-user"));
        let canary = Hint { canary: true, ..Hint::default() };
        assert_eq!(table.choose(&canary, 0).unwrap().version, 2);
        // The same key always lands on the same arm, whatever the ticket.
        for key in ["alice", "bob", "carol", "dave"] {
            let hint = Hint { sticky_key: Some(key), ..Hint::default() };
            let first = table.choose(&hint, 0).unwrap().version;
            assert!((1..50).all(|t| table.choose(&hint, t).unwrap().version == first), "{key}");
        }
        // And keys split by the weight: about 30 % of many keys reach the candidate.
        let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let hits = keys
            .iter()
            .filter(|k| table.choose(&Hint { sticky_key: Some(k), ..Hint::default() }, 0).unwrap().version == 2)
            .count();
        assert!((500..700).contains(&hits), "{hits} of 2000");
        // A stable hash: this value is fixed forever.
        assert_eq!(fnv1a(b"alice"), 0x508b_2abb_65a0_3907);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            // No proptest-regressions files beside the source: a failure prints its input.
            ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
        }

        /// The table a reload builds from the same pools: a new table, the same `Arc`s.
        fn rebuilt(table: &RoutingTable) -> RoutingTable {
            let c = table.candidate.as_ref().unwrap();
            RoutingTable {
                candidate: Some(Candidate {
                    pool: c.pool.clone(),
                    weight: c.weight,
                    sticky_header: c.sticky_header.clone(),
                }),
                ..RoutingTable::stable(table.stable.clone().unwrap())
            }
        }

        proptest! {
            #![proptest_config(config())]

            /// Consecutive tickets (what `Tickets` hands out), from anywhere: every whole
            /// hundred gives the candidate exactly its weight; only the two partial hundreds
            /// at the window's ends may differ, each by at most half a hundred.
            #[test]
            fn consecutive_tickets_follow_the_weight(weight in 0u8..=100, start in any::<u64>(), n in 100u64..5000) {
                let table = with_candidate(weight, None);
                let tickets = start..start.saturating_add(n);
                let n = tickets.end - tickets.start;
                let first_whole = start.div_ceil(100) * 100;
                let last_whole = (tickets.end / 100) * 100;
                if first_whole < last_whole {
                    let whole = to_v2(&table, first_whole..last_whole) as u64;
                    prop_assert_eq!(whole, (last_whole - first_whole) / 100 * u64::from(weight));
                }
                let hits = to_v2(&table, tickets) as f64;
                let expected = n as f64 * f64::from(weight) / 100.0;
                prop_assert!((hits - expected).abs() <= 101.0, "{hits} of {n} at weight {weight}");
                prop_assert_eq!(u32::from(table.weight(table.stable.as_ref().unwrap())) + u32::from(weight), 100);
            }

            /// Random tickets (requests racing for them): the share is within a few percent.
            #[test]
            fn random_tickets_follow_the_weight(weight in 0u8..=100, tickets in prop::collection::vec(any::<u64>(), 4000)) {
                let table = with_candidate(weight, None);
                let hits = tickets.iter().filter(|t| table.choose(&Hint::default(), **t).unwrap().version == 2).count();
                let share = hits as f64 / tickets.len() as f64;
                prop_assert!((share - f64::from(weight) / 100.0).abs() <= 0.04, "{share} at weight {weight}");
                if weight == 0 || weight == 100 {
                    prop_assert_eq!(hits, tickets.len() * usize::from(weight) / 100, "0 and 100 are exact");
                }
            }

            /// A sticky key picks one pool whatever the ticket, and the same pool in the
            /// table a reload builds from the same pools, and the same version in a table
            /// of new pools (a restart).
            #[test]
            fn sticky_keys_are_stable(
                weight in 0u8..=100,
                key in any::<String>(),
                tickets in prop::collection::vec(any::<u64>(), 1..20),
            ) {
                let table = with_candidate(weight, Some("x-user"));
                let hint = Hint { sticky_key: Some(&key), ..Hint::default() };
                let first = table.choose(&hint, tickets[0]).unwrap().clone();
                let reloaded = rebuilt(&table);
                let restarted = with_candidate(weight, Some("x-user"));
                for t in &tickets {
                    prop_assert!(Arc::ptr_eq(table.choose(&hint, *t).unwrap(), &first));
                    prop_assert!(Arc::ptr_eq(reloaded.choose(&hint, *t).unwrap(), &first));
                    prop_assert_eq!(restarted.choose(&hint, *t).unwrap().version, first.version);
                }
                match weight {
                    0 => prop_assert_eq!(first.version, 1),
                    100 => prop_assert_eq!(first.version, 2),
                    _ => {}
                }
                // Raising the weight only moves keys to the candidate, never back.
                if first.version == 2 && weight < 100 {
                    let raised = with_candidate(weight + 1, Some("x-user"));
                    prop_assert_eq!(raised.choose(&hint, tickets[0]).unwrap().version, 2);
                }
            }

            /// Many random keys split by the weight, as tickets do.
            #[test]
            fn sticky_keys_follow_the_weight(weight in 0u8..=100, keys in prop::collection::vec(any::<String>(), 2000)) {
                let table = with_candidate(weight, Some("x-user"));
                let hits = keys
                    .iter()
                    .filter(|k| table.choose(&Hint { sticky_key: Some(k), ..Hint::default() }, 0).unwrap().version == 2)
                    .count();
                let share = hits as f64 / keys.len() as f64;
                prop_assert!((share - f64::from(weight) / 100.0).abs() <= 0.06, "{share} at weight {weight}");
            }
        }
    }
}
