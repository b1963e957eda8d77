//! Measured windows: what one model version's real requests did over the last `span`
//! (by default 60 s) — how many, how many failed, how many could not be served, and how
//! long they took (P50/P95/P99).
//!
//! A window is a ring of time slots; each request lands in the slot of its second (or
//! fraction of the span) and old slots are reused as time moves on, so reading the window
//! costs the same at any traffic. A version's refusals are counted apart from other
//! client errors: a request refused as invalid *for this version* (its signature does not
//! take it) says something about the version when its predecessor took the same requests. Latencies go into log-spaced buckets (5 % apart), so
//! percentiles are exact to within a bucket and no sample list grows. Health, readiness,
//! the rollout gate and automatic revert all read these same windows.
//!
//! A leaf: the router's pools hold one, the front records into it, health reads it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Slots per window: the window slides in steps of `span / SLOTS`.
const SLOTS: u32 = 20;
/// Latency buckets: from 10 µs, each 5 % wider than the last, up to ~130 s.
const FIRST_BUCKET_SECS: f64 = 1e-5;
const BUCKET_RATIO: f64 = 1.05;
const BUCKETS: usize = 336;

/// How one request ended, as health counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with the model's result.
    Served,
    /// Refused as the client's fault (4xx) whatever the version (a malformed body):
    /// answered, not an error of the version.
    Refused,
    /// Refused as invalid for this version: its signature or its worker did not take the
    /// request (names, datatypes, shapes). Not an error by itself, but a version that
    /// refuses more of the same traffic than its predecessor is failing its clients.
    Invalid,
    /// The version failed it (inference error, worker crash): counts against the error rate.
    Failed,
    /// Not served at all (not ready, over the in-flight bound, timed out): counts against
    /// availability.
    Unavailable,
}

impl Outcome {
    /// The outcome an HTTP status stands for.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=399 => Outcome::Served,
            503 | 504 => Outcome::Unavailable,
            500..=599 => Outcome::Failed,
            _ => Outcome::Refused,
        }
    }
}

#[derive(Clone)]
struct Slot {
    /// Which slot-length period since the window's origin this slot holds.
    period: u64,
    requests: u64,
    failed: u64,
    unavailable: u64,
    invalid: u64,
    latencies: Vec<u32>,
}

impl Slot {
    fn empty(period: u64) -> Slot {
        Slot { period, requests: 0, failed: 0, unavailable: 0, invalid: 0, latencies: vec![0; BUCKETS] }
    }
}

pub struct Window {
    ring: Mutex<Ring>,
}

/// The slots and the time they divide; replaced whole when the span changes.
struct Ring {
    span: Duration,
    slot_len: Duration,
    origin: Instant,
    slots: Vec<Slot>,
}

impl Ring {
    fn new(span: Duration) -> Ring {
        let span = span.max(Duration::from_millis(SLOTS as u64));
        Ring {
            span,
            slot_len: span / SLOTS,
            origin: Instant::now(),
            slots: (0..SLOTS).map(|_| Slot::empty(u64::MAX)).collect(),
        }
    }

    fn period(&self, at: Instant) -> u64 {
        (at.duration_since(self.origin).as_nanos() / self.slot_len.as_nanos()) as u64
    }
}

/// What a window holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The time the snapshot covers (shorter than the span while the window is young).
    pub covered: Duration,
    pub requests: u64,
    pub failed: u64,
    pub unavailable: u64,
    /// Requests refused as invalid for this version ([`Outcome::Invalid`]).
    pub invalid: u64,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

impl Snapshot {
    /// Share of requests the version failed (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        ratio(self.failed, self.requests)
    }

    /// Share of requests refused as invalid for this version (0 when there were none).
    pub fn refusal_rate(&self) -> f64 {
        ratio(self.invalid, self.requests)
    }

    /// Share of requests answered without being unavailable (1 when there were none).
    pub fn availability(&self) -> f64 {
        1.0 - ratio(self.unavailable, self.requests)
    }

    /// Requests per second over the covered time.
    pub fn throughput(&self) -> f64 {
        match self.covered.as_secs_f64() {
            secs if secs > 0.0 => self.requests as f64 / secs,
            _ => 0.0,
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

impl Window {
    pub fn new(span: Duration) -> Window {
        Window { ring: Mutex::new(Ring::new(span)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn span(&self) -> Duration {
        self.lock().span
    }

    /// Makes the window reach `span` back. A new span starts an empty window: slots of
    /// another length cannot be re-cut.
    pub fn resize(&self, span: Duration) {
        let mut ring = self.lock();
        if ring.span != span.max(Duration::from_millis(SLOTS as u64)) {
            *ring = Ring::new(span);
        }
    }

    /// Records one request that ended now.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        let mut ring = self.lock();
        let period = ring.period(Instant::now());
        let slot = &mut ring.slots[(period % SLOTS as u64) as usize];
        if slot.period != period {
            *slot = Slot::empty(period);
        }
        slot.requests += 1;
        match outcome {
            Outcome::Failed => slot.failed += 1,
            Outcome::Unavailable => slot.unavailable += 1,
            Outcome::Invalid => slot.invalid += 1,
            Outcome::Served | Outcome::Refused => {}
        }
        // Only requests the version answered say how fast it is; refusals and failures
        // are often instant and would flatter it.
        if outcome == Outcome::Served {
            slot.latencies[bucket(latency)] += 1;
        }
    }

    /// The requests of the last span.
    pub fn snapshot(&self) -> Snapshot {
        self.recent(Duration::MAX)
    }

    /// The requests of the last `last` (the whole span at most), to the slot: the live
    /// view's one-second points read the last few seconds, the gate the whole span.
    pub fn recent(&self, last: Duration) -> Snapshot {
        let ring = self.lock();
        let at = Instant::now();
        let now = ring.period(at);
        let wanted = last.min(ring.span).as_nanos().div_ceil(ring.slot_len.as_nanos()).max(1) as u64;
        // The current slot is partly filled; the full slots before it make up the rest.
        let oldest = now.saturating_sub(wanted.min(SLOTS as u64) - 1);
        let mut merged = Slot::empty(now);
        for slot in ring.slots.iter().filter(|s| s.period >= oldest && s.period <= now) {
            merged.requests += slot.requests;
            merged.failed += slot.failed;
            merged.unavailable += slot.unavailable;
            merged.invalid += slot.invalid;
            for (m, c) in merged.latencies.iter_mut().zip(&slot.latencies) {
                *m += c;
            }
        }
        let covered = match wanted >= SLOTS as u64 {
            true => at.duration_since(ring.origin).min(ring.span),
            false => at.duration_since(
                ring.origin + Duration::from_nanos((ring.slot_len.as_nanos() as u64).saturating_mul(oldest)),
            ),
        };
        drop(ring);
        let latency = |q| percentile(&merged.latencies, q);
        Snapshot {
            covered,
            requests: merged.requests,
            failed: merged.failed,
            unavailable: merged.unavailable,
            invalid: merged.invalid,
            p50: latency(0.50),
            p95: latency(0.95),
            p99: latency(0.99),
        }
    }
}

fn bucket(latency: Duration) -> usize {
    let secs = latency.as_secs_f64();
    if secs <= FIRST_BUCKET_SECS {
        return 0;
    }
    let i = ((secs / FIRST_BUCKET_SECS).ln() / BUCKET_RATIO.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn bucket_bound(i: usize) -> Duration {
    Duration::from_secs_f64(FIRST_BUCKET_SECS * BUCKET_RATIO.powi(i as i32))
}

/// The latency under which a share `q` of the counted requests fell (bucket upper bound).
fn percentile(counts: &[u32], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        seen += u64::from(*c);
        if seen >= rank {
            return Some(bucket_bound(i));
        }
    }
    Some(bucket_bound(BUCKETS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_bucket() {
        let w = Window::new(Duration::from_secs(60));
        for ms in 1..=100 {
            w.record(Outcome::Served, Duration::from_millis(ms));
        }
        let s = w.snapshot();
        let within = |got: Option<Duration>, want_ms: f64| {
            let got = got.unwrap().as_secs_f64() * 1000.0;
            assert!(got >= want_ms && got <= want_ms * BUCKET_RATIO + 1e-9, "got {got} ms, want {want_ms}");
        };
        within(s.p50, 50.0);
        within(s.p95, 95.0);
        within(s.p99, 99.0);
        assert_eq!(s.requests, 100);
    }

    #[test]
    fn rates_count_failures_and_unavailability_apart() {
        let w = Window::new(Duration::from_secs(60));
        for _ in 0..90 {
            w.record(Outcome::Served, Duration::from_millis(1));
        }
        for _ in 0..6 {
            w.record(Outcome::Failed, Duration::from_millis(1));
        }
        for _ in 0..4 {
            w.record(Outcome::Unavailable, Duration::from_millis(1));
        }
        for _ in 0..10 {
            w.record(Outcome::Invalid, Duration::from_millis(1));
        }
        let s = w.snapshot();
        assert!((s.error_rate() - 0.06 / 1.1).abs() < 1e-12);
        assert!((s.availability() - (1.0 - 0.04 / 1.1)).abs() < 1e-12);
        assert!((s.refusal_rate() - 0.1 / 1.1).abs() < 1e-12);
    }

    #[test]
    fn a_new_span_starts_an_empty_window() {
        let w = Window::new(Duration::from_secs(60));
        w.record(Outcome::Served, Duration::from_millis(1));
        w.resize(Duration::from_secs(60));
        assert_eq!(w.snapshot().requests, 1, "the same span keeps what was measured");
        w.resize(Duration::from_secs(10));
        assert_eq!((w.span(), w.snapshot().requests), (Duration::from_secs(10), 0));
    }

    #[test]
    fn old_requests_leave_the_window() {
        let w = Window::new(Duration::from_millis(200));
        w.record(Outcome::Failed, Duration::from_millis(1));
        assert_eq!(w.snapshot().requests, 1);
        std::thread::sleep(Duration::from_millis(260));
        w.record(Outcome::Served, Duration::from_millis(1));
        let s = w.snapshot();
        assert_eq!((s.requests, s.failed), (1, 0));
    }

    #[test]
    fn the_recent_part_holds_only_the_last_slots() {
        // 400 ms span: 20 ms slots.
        let w = Window::new(Duration::from_millis(400));
        w.record(Outcome::Failed, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(120));
        w.record(Outcome::Served, Duration::from_millis(1));
        let recent = w.recent(Duration::from_millis(40));
        assert_eq!((recent.requests, recent.failed), (1, 0));
        assert!(recent.covered <= Duration::from_millis(40), "{:?}", recent.covered);
        assert_eq!(w.snapshot().requests, 2);
        assert_eq!(w.recent(Duration::from_secs(5)).requests, 2, "a part longer than the span is the span");
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(Outcome::of_status(200), Outcome::Served);
        assert_eq!(Outcome::of_status(400), Outcome::Refused);
        assert_eq!(Outcome::of_status(500), Outcome::Failed);
        assert_eq!(Outcome::of_status(503), Outcome::Unavailable);
        assert_eq!(Outcome::of_status(504), Outcome::Unavailable);
    }
}
