//! The live view's memory: once a second, a point per model version — requests per
//! second, P95 and P99, error rate over the last few seconds, its traffic weight, and
//! while it is a rollout's candidate its agreement with the live version and the drift
//! of its answers — kept for [`KEEP`], so a page opened mid-rollout sees how it began.
//! Bounded: at most `KEEP` seconds of points per version, versions gone drop out as
//! their points age.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How far back the charts reach.
pub const KEEP: Duration = Duration::from_secs(600);
/// What one point measures: the last few seconds of a version's window (a second alone
/// holds too few requests on a quiet model to say anything).
pub const RECENT: Duration = Duration::from_secs(5);

/// One second of one version. Rates are fractions; latencies milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Unix time.
    pub t: f64,
    pub rate: f64,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// None without requests.
    pub errors: Option<f64>,
    pub weight: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
}

/// One version's points, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub version: u64,
    pub points: Vec<Point>,
}

#[derive(Default)]
pub struct Timeline {
    series: Mutex<BTreeMap<(String, u64), VecDeque<Point>>>,
}

impl Timeline {
    /// Adds one sample's points (model, version, point; all of the same time) at once, so
    /// that a reader sees all of them or none, and drops what is older than [`KEEP`].
    pub fn add(&self, sample: Vec<(String, u64, Point)>) {
        let Some(newest) = sample.iter().map(|(_, _, p)| p.t).reduce(f64::max) else { return };
        let oldest = newest - KEEP.as_secs_f64();
        let mut series = self.lock();
        for (model, version, point) in sample {
            series.entry((model, version)).or_default().push_back(point);
        }
        series.retain(|_, points| {
            while points.front().is_some_and(|p| p.t < oldest) {
                points.pop_front();
            }
            !points.is_empty()
        });
    }

    /// A model's versions with their points newer than `since` (all kept without it).
    pub fn of(&self, model: &str, since: Option<f64>) -> Vec<Series> {
        let series = self.lock();
        series
            .iter()
            .filter(|((m, _), _)| m == model)
            .map(|((_, version), points)| Series {
                version: *version,
                points: points.iter().filter(|p| since.is_none_or(|s| p.t > s)).cloned().collect(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u64), VecDeque<Point>>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> Point {
        Point {
            t,
            rate: 1.0,
            p95: Some(2.0),
            p99: Some(3.0),
            errors: Some(0.0),
            weight: 100,
            agreement: None,
            psi: None,
        }
    }

    #[test]
    fn points_older_than_the_span_kept_leave_and_gone_versions_with_them() {
        let timeline = Timeline::default();
        timeline.add(vec![("m".into(), 1, at(1000.0))]);
        timeline.add(vec![("m".into(), 2, at(1001.0))]);
        timeline.add(vec![("m".into(), 2, at(1000.0 + KEEP.as_secs_f64() + 0.5))]);
        let series = timeline.of("m", None);
        assert_eq!(series.len(), 1, "version 1's only point aged out: {series:?}");
        assert_eq!(series[0].points.iter().map(|p| p.t).collect::<Vec<_>>(), [1001.0, 1600.5]);
    }

    #[test]
    fn since_returns_only_newer_points_of_that_model() {
        let timeline = Timeline::default();
        for t in 0..5 {
            timeline.add(vec![("m".into(), 1, at(f64::from(t))), ("other".into(), 1, at(f64::from(t)))]);
        }
        let series = timeline.of("m", Some(2.0));
        assert_eq!(series[0].points.iter().map(|p| p.t).collect::<Vec<_>>(), vec![3.0, 4.0]);
        assert!(timeline.of("nothing", None).is_empty());
    }
}
