//! `[model.batching]`: how a worker merges requests into batches (on Triton's model) and
//! which batch sizes it builds optimized plans for.

use super::raw::RawBatching;
use super::report::{KeyPath, Locator, Problem};
use super::validate::{at_least, parse_duration_up_to};
use std::time::Duration;

/// Batch sizes a plan is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buckets {
    /// Every batch size gets its own plan.
    Exact,
    /// Batches are padded up to the next power of two (padding rows dropped from the
    /// outputs), so a handful of plans cover every size.
    Pow2,
}

impl Buckets {
    /// The bucket scheme a config names (and the worker's `--buckets` carries as
    /// [`crate::wire::Buckets`]: the worker does not read the config).
    pub const ALL: [Buckets; 2] = [Buckets::Exact, Buckets::Pow2];

    pub fn from_name(name: &str) -> Option<Buckets> {
        Buckets::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Buckets::Exact => "exact",
            Buckets::Pow2 => "pow2",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchingConfig {
    /// Rows per inference run; 1 means requests are never merged.
    pub max_batch: usize,
    /// How long the first request of a batch may wait for others.
    pub delay: Duration,
    /// Sizes that dispatch a batch at once when reached.
    pub preferred: Vec<usize>,
    pub buckets: Buckets,
    /// Batch sizes whose plans are built at load (when the other dimensions are fixed).
    pub plan_sizes: Vec<usize>,
    /// Plans kept per worker; the least recently used goes past this.
    pub max_plans: usize,
}

impl Default for BatchingConfig {
    fn default() -> BatchingConfig {
        BatchingConfig {
            max_batch: 1,
            delay: Duration::ZERO,
            preferred: Vec::new(),
            buckets: Buckets::Pow2,
            plan_sizes: vec![1],
            max_plans: 32,
        }
    }
}

/// `[model.batching]` over `base` (off: one request per run, on a GPU too — the one GPU
/// run measured tract-cuda batching at 0.80x, 32 images taking 32 times one's time).
pub fn build(
    raw: &RawBatching,
    base: BatchingConfig,
    path: &KeyPath,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> BatchingConfig {
    let mut b = base;
    if let Some(n) = raw.max_batch {
        b.max_batch = at_least(n, 1, 4096, &path.key("max_batch"), at, problems);
    }
    let mut err = |key: &str, message: String| problems.push(at.error(&path.key(key), message));
    if let Some(text) = &raw.delay {
        match parse_duration_up_to(text, Duration::from_secs(1), "a batch may wait") {
            Ok(d) => b.delay = d,
            Err(m) => err("delay", m),
        }
    }
    let max = b.max_batch.max(1);
    match sizes(&raw.preferred, max) {
        Ok(preferred) => b.preferred = preferred.unwrap_or_default(),
        Err(m) => err("preferred", m),
    }
    if let Some(name) = raw.buckets.as_deref() {
        match Buckets::from_name(name) {
            Some(buckets) => b.buckets = buckets,
            None => err("buckets", format!("'{name}' is not one of pow2, exact")),
        }
    }
    match sizes(&raw.plan_sizes, 4096) {
        Ok(plan_sizes) => b.plan_sizes = plan_sizes.unwrap_or_else(|| default_plan_sizes(max, b.buckets)),
        Err(m) => err("plan_sizes", m),
    }
    if let Some(n) = raw.max_plans {
        b.max_plans = at_least(n, 1, 1024, &path.key("max_plans"), at, problems);
    }
    b
}

/// A list of batch sizes, each between 1 and `max`.
fn sizes(values: &Option<Vec<i64>>, max: usize) -> Result<Option<Vec<usize>>, String> {
    let Some(values) = values else { return Ok(None) };
    values
        .iter()
        .map(|v| usize::try_from(*v).ok().filter(|v| (1..=max).contains(v)))
        .collect::<Option<Vec<usize>>>()
        .map(Some)
        .ok_or_else(|| format!("{values:?}: each size must be between 1 and {max}"))
}

/// Without `plan_sizes`: every bucket up to `max_batch` (1 without batching).
fn default_plan_sizes(max_batch: usize, buckets: Buckets) -> Vec<usize> {
    match buckets {
        Buckets::Pow2 => (0..).map(|i| 1usize << i).take_while(|s| *s <= max_batch.next_power_of_two()).collect(),
        Buckets::Exact => {
            vec![1, max_batch].into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_sizes_cover_every_bucket_up_to_max_batch() {
        assert_eq!(default_plan_sizes(32, Buckets::Pow2), vec![1, 2, 4, 8, 16, 32]);
        assert_eq!(default_plan_sizes(20, Buckets::Pow2), vec![1, 2, 4, 8, 16, 32]);
        assert_eq!(default_plan_sizes(1, Buckets::Pow2), vec![1]);
    }
}
