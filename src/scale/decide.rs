//! One model's count, decided as the HorizontalPodAutoscaler v2 decides a Deployment's:
//! each measure proposes `ceil(workers × measured / target)` (unchanged within the
//! tolerance), the largest proposal wins, the stabilization windows smooth it (up: the
//! lowest proposal of the up window; down: the highest of the down window), and the
//! policies bound how much may change within their periods, counted from the changes
//! made in them. Pure: time is passed in, so every rule is tested without waiting.

use crate::config::scale::{Behavior, Change, Select};
use crate::config::{ScaleConfig, Workers};
use crate::router::{Held, HeldBy};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What was measured of a model's live version over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Workers meant to run now.
    pub workers: usize,
    /// Inference threads per worker.
    pub threads: usize,
    /// Mean requests in flight (running or queued in a worker), over all its workers.
    pub inflight: f64,
    /// Mean time the interval's requests waited for an inference thread (none: no request).
    pub queue: Option<Duration>,
    /// Cores the workers kept busy, and the cores they may use.
    pub cpu: Option<(f64, f64)>,
    /// The workers' mean resident memory and the model's `memory_limit`.
    pub memory: Option<(u64, u64)>,
}

/// What one decision proposed and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The count the measures ask for, before the windows and policies.
    pub workers: usize,
    /// The measure that asked for it, in words with its reading and target.
    pub why: String,
}

/// Each measure's proposal; the largest wins (ties: the first named).
pub fn propose(load: &Load, policy: &ScaleConfig) -> Proposal {
    let current = load.workers.max(1);
    let per_thread = load.inflight / (current * load.threads.max(1)) as f64;
    let mut measures = vec![(
        per_thread / policy.target_inflight,
        format!("{per_thread:.2} in flight per worker thread (target {})", policy.target_inflight),
    )];
    if let Some(queue) = load.queue {
        measures.push((
            queue.as_secs_f64() / policy.target_queue.as_secs_f64(),
            format!("{:.1} ms mean queue time (target {:?})", queue.as_secs_f64() * 1e3, policy.target_queue),
        ));
    }
    if let Some((used, allowed)) = load.cpu.filter(|(_, allowed)| *allowed > 0.0) {
        measures.push((
            used / allowed / policy.max_cpu,
            format!("CPU {:.0}% of the workers' cores (limit {:.0}%)", used / allowed * 100.0, policy.max_cpu * 100.0),
        ));
    }
    if let Some((rss, limit)) = load.memory.filter(|(_, limit)| *limit > 0) {
        let share = rss as f64 / limit as f64;
        measures.push((
            share / policy.max_memory,
            format!("memory {:.0}% of memory_limit (limit {:.0}%)", share * 100.0, policy.max_memory * 100.0),
        ));
    }
    let count = |ratio: f64| match (ratio - 1.0).abs() <= policy.tolerance {
        true => current,
        false => (current as f64 * ratio).ceil().max(0.0) as usize,
    };
    let (workers, why) = measures
        .into_iter()
        .map(|(ratio, why)| (count(ratio), why))
        .reduce(|best, next| if next.0 > best.0 { next } else { best })
        .expect("the in-flight measure is always there");
    Proposal { workers, why }
}

/// One model's decisions over time: its recent proposals (for the windows) and its
/// recent changes (for the policies).
#[derive(Debug, Default)]
pub struct Decider {
    proposals: VecDeque<(Instant, usize)>,
    changes: VecDeque<(Instant, isize)>,
}

/// Where a decision landed, and what held it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: usize,
    pub proposal: Proposal,
    /// The window or policy that kept the count from the proposal, if one did.
    pub held: Option<Held>,
}

impl Decider {
    /// The count `workers` should move to from `current`, now.
    pub fn decide(
        &mut self,
        now: Instant,
        current: usize,
        proposal: Proposal,
        workers: Workers,
        policy: &ScaleConfig,
    ) -> Decision {
        let proposed = proposal.workers.clamp(workers.min, workers.max);
        let stabilized = self.stabilize(now, current, proposed, policy);
        let limited = self.limit(now, current, stabilized, policy);
        let desired = limited.clamp(workers.min, workers.max);
        let direction = if proposed > current { "up" } else { "down" };
        let held = if desired == proposed {
            None
        } else if stabilized != proposed {
            let window = if proposed > current { policy.up.stabilization } else { policy.down.stabilization };
            let why = format!(
                "held at {stabilized} by the {direction} stabilization window ({})",
                humantime::format_duration(window)
            );
            Some(Held { by: HeldBy::Window, why })
        } else {
            Some(Held { by: HeldBy::Policy, why: format!("held at {desired} by the {direction} policies") })
        };
        Decision { desired, proposal, held }
    }

    /// Starts the history with `count` proposed now: a count restored at start is held by
    /// the down window as one the load had asked for.
    pub fn seed(&mut self, now: Instant, count: usize) {
        self.proposals.push_back((now, count));
    }

    /// Records a change made (the policies count them within their periods).
    pub fn changed(&mut self, now: Instant, by: isize) {
        if by != 0 {
            self.changes.push_back((now, by));
        }
    }

    /// Up: the lowest proposal within the up window; down: the highest within the down
    /// window; the current count between them.
    fn stabilize(&mut self, now: Instant, current: usize, proposed: usize, policy: &ScaleConfig) -> usize {
        self.proposals.push_back((now, proposed));
        let longest = policy.up.stabilization.max(policy.down.stabilization);
        while self.proposals.front().is_some_and(|(t, _)| now.duration_since(*t) > longest) {
            self.proposals.pop_front();
        }
        let within = |window: Duration| {
            self.proposals.iter().filter(move |(t, _)| now.duration_since(*t) <= window).map(|(_, p)| *p)
        };
        let up = within(policy.up.stabilization).min().unwrap_or(proposed);
        let down = within(policy.down.stabilization).max().unwrap_or(proposed);
        current.max(up).min(down)
    }

    /// The policies' bound on a move from `current` to `desired`.
    fn limit(&mut self, now: Instant, current: usize, desired: usize, policy: &ScaleConfig) -> usize {
        let longest = policy.up.policies.iter().chain(&policy.down.policies).map(|p| p.period).max();
        while self.changes.front().is_some_and(|(t, _)| longest.is_none_or(|l| now.duration_since(*t) > l)) {
            self.changes.pop_front();
        }
        // A bound never turns a move around (the HPA clamps it to the current count too):
        // changes made elsewhere (the budget taking workers) can put a period's start far off.
        match desired.cmp(&current) {
            std::cmp::Ordering::Greater => desired.min(self.up_limit(now, current, &policy.up).max(current)),
            std::cmp::Ordering::Less => desired.max(self.down_limit(now, current, &policy.down).min(current)),
            std::cmp::Ordering::Equal => current,
        }
    }

    /// Changes in one direction within `period` (positive: added; negative: removed).
    fn changed_within(&self, now: Instant, period: Duration, up: bool) -> usize {
        let moves = self.changes.iter().filter(|(t, _)| now.duration_since(*t) <= period).map(|(_, by)| *by);
        moves.filter(|by| (*by > 0) == up).map(|by| by.unsigned_abs()).sum()
    }

    fn up_limit(&self, now: Instant, current: usize, b: &Behavior) -> usize {
        let limits = b.policies.iter().map(|p| {
            let start = current.saturating_sub(self.changed_within(now, p.period, true));
            match p.change {
                Change::Workers(n) => start + n,
                Change::Percent(pct) => (start as f64 * (1.0 + f64::from(pct) / 100.0)).ceil() as usize,
            }
        });
        match b.select {
            Select::Max => limits.max().unwrap_or(current),
            Select::Min => limits.min().unwrap_or(current),
            Select::Disabled => current,
        }
    }

    fn down_limit(&self, now: Instant, current: usize, b: &Behavior) -> usize {
        let limits = b.policies.iter().map(|p| {
            let start = current + self.changed_within(now, p.period, false);
            match p.change {
                Change::Workers(n) => start.saturating_sub(n),
                Change::Percent(pct) => (start as f64 * (1.0 - f64::from(pct) / 100.0)).max(0.0) as usize,
            }
        });
        // The policy allowing the largest change is the lowest bound.
        match b.select {
            Select::Max => limits.min().unwrap_or(current),
            Select::Min => limits.max().unwrap_or(current),
            Select::Disabled => current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::scale::Policy;

    fn load(workers: usize, inflight: f64) -> Load {
        Load { workers, threads: 1, inflight, ..Load::default() }
    }

    fn fast() -> ScaleConfig {
        ScaleConfig {
            up: Behavior { stabilization: Duration::ZERO, ..ScaleConfig::default().up },
            down: Behavior { stabilization: Duration::from_secs(60), ..ScaleConfig::default().down },
            ..ScaleConfig::default()
        }
    }

    #[test]
    fn each_measure_proposes_its_ratio_and_the_largest_wins() {
        let policy = ScaleConfig::default();
        // 6 in flight on 2 single-thread workers at a target of 1 per thread: 6 workers.
        assert_eq!(propose(&load(2, 6.0), &policy).workers, 6);
        // Within the 10 % tolerance nothing moves.
        assert_eq!(propose(&load(4, 4.3), &policy).workers, 4);
        // Idle: the in-flight measure proposes none (the bounds keep min).
        assert_eq!(propose(&load(4, 0.0), &policy).workers, 0);
        // A queue twice the target doubles the count, though in flight looks fine.
        let queued = Load { queue: Some(Duration::from_millis(100)), ..load(3, 3.0) };
        let p = propose(&queued, &policy);
        assert_eq!(p.workers, 6);
        assert!(p.why.contains("queue time"), "{}", p.why);
        // CPU over its 70 % limit grows the count; memory likewise.
        let busy = Load { cpu: Some((1.9, 2.0)), ..load(2, 2.0) };
        assert_eq!(propose(&busy, &policy).workers, 3);
        let heavy = Load { memory: Some((950 << 20, 1 << 30)), ..load(2, 2.0) };
        assert_eq!(propose(&heavy, &policy).workers, 3);
    }

    #[test]
    fn up_is_immediate_within_the_policies_and_down_waits_for_the_window() {
        let policy = fast();
        let workers = Workers { min: 1, max: 16 };
        let mut d = Decider::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // From 1 worker asked for 12: +4 or doubling per 15 s, the larger: 5.
        let decision = d.decide(at(0), 1, propose(&load(1, 12.0), &policy), workers, &policy);
        assert_eq!(decision.desired, 5);
        assert!(decision.held.as_ref().is_some_and(|h| h.why.contains("up policies")), "{decision:?}");
        d.changed(at(0), 4);
        // Within the same 15 s the period's start is 1 worker: no more.
        assert_eq!(d.decide(at(5), 5, propose(&load(5, 60.0), &policy), workers, &policy).desired, 5);
        // After it, doubling 5 allows 10.
        assert_eq!(d.decide(at(16), 5, propose(&load(5, 60.0), &policy), workers, &policy).desired, 10);
        d.changed(at(16), 5);
        // Load drops: the down window (60 s) still holds the high proposals.
        assert_eq!(d.decide(at(30), 10, propose(&load(10, 1.0), &policy), workers, &policy).desired, 10);
        assert_eq!(d.decide(at(70), 10, propose(&load(10, 1.0), &policy), workers, &policy).desired, 10);
        // Once the last high proposal left the window: down to min at once (100 % per 15 s).
        assert_eq!(d.decide(at(90), 10, propose(&load(10, 1.0), &policy), workers, &policy).desired, 1);
    }

    #[test]
    fn the_policies_count_changes_within_their_period_and_select_picks_among_them() {
        let mut policy = fast();
        policy.down = Behavior {
            stabilization: Duration::ZERO,
            policies: vec![
                Policy { change: Change::Workers(1), period: Duration::from_secs(60) },
                Policy { change: Change::Percent(50), period: Duration::from_secs(60) },
            ],
            select: Select::Min,
        };
        let workers = Workers { min: 1, max: 16 };
        let mut d = Decider::default();
        let t0 = Instant::now();
        // Min of (8-1, 8*0.5): the smaller change, one worker.
        assert_eq!(d.decide(t0, 8, propose(&load(8, 0.0), &policy), workers, &policy).desired, 7);
        d.changed(t0, -1);
        // Within the minute one was removed already: the period started at 8, 8-1 = 7.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(d.decide(later, 7, propose(&load(7, 0.0), &policy), workers, &policy).desired, 7);
        policy.down.select = Select::Disabled;
        let much_later = t0 + Duration::from_secs(120);
        assert_eq!(d.decide(much_later, 7, propose(&load(7, 0.0), &policy), workers, &policy).desired, 7);
    }

    #[test]
    fn a_bound_never_turns_a_move_around() {
        let mut policy = fast();
        policy.down = Behavior {
            stabilization: Duration::ZERO,
            policies: vec![Policy { change: Change::Workers(1), period: Duration::from_secs(60) }],
            select: Select::Max,
        };
        let workers = Workers { min: 1, max: 8 };
        let mut d = Decider::default();
        let t0 = Instant::now();
        // The budget took 4 of 6 workers: the period "started" at 6, its bound is 5.
        d.changed(t0, -4);
        let later = t0 + Duration::from_secs(5);
        let decision = d.decide(later, 2, propose(&load(2, 0.0), &policy), workers, &policy);
        assert_eq!(decision.desired, 2, "a proposal to go down never goes up: {decision:?}");
    }

    #[test]
    fn a_seeded_count_is_held_by_the_down_window() {
        let policy = fast();
        let workers = Workers { min: 1, max: 8 };
        let mut d = Decider::default();
        let t0 = Instant::now();
        d.seed(t0, 4);
        let quiet = d.decide(t0 + Duration::from_secs(1), 4, propose(&load(4, 0.0), &policy), workers, &policy);
        assert_eq!(quiet.desired, 4, "held by the 60 s window");
        let after = d.decide(t0 + Duration::from_secs(61), 4, propose(&load(4, 0.0), &policy), workers, &policy);
        assert_eq!(after.desired, 1);
    }

    #[test]
    fn an_up_window_follows_the_lowest_recent_proposal_and_bounds_clamp() {
        let mut policy = fast();
        policy.up.stabilization = Duration::from_secs(30);
        let workers = Workers { min: 2, max: 4 };
        let mut d = Decider::default();
        let t0 = Instant::now();
        assert_eq!(d.decide(t0, 2, propose(&load(2, 2.0), &policy), workers, &policy).desired, 2);
        // A burst asks for 8 (clamped to 4), but the window still holds the proposal of 2.
        let t1 = t0 + Duration::from_secs(10);
        let held = d.decide(t1, 2, propose(&load(2, 8.0), &policy), workers, &policy);
        assert_eq!(held.desired, 2);
        assert!(
            held.held.as_ref().is_some_and(|h| h.by == HeldBy::Window && h.why.contains("up stabilization window")),
            "{held:?}"
        );
        // Sustained past the window: up, clamped to max.
        let t2 = t0 + Duration::from_secs(31);
        let _ = d.decide(t2 - Duration::from_secs(15), 2, propose(&load(2, 8.0), &policy), workers, &policy);
        assert_eq!(d.decide(t2, 2, propose(&load(2, 8.0), &policy), workers, &policy).desired, 4);
    }
}
