//! Bins taken from stable's values (deciles for numbers, merged below a resolution; a
//! bin per common category), both sides counted into them, and the PSI over them.

use super::{MIN_CATEGORY_SHARE, Observed, Value};
use std::collections::{BTreeMap, VecDeque};

/// Bins for numbers when samples allow (deciles).
const MAX_BINS: usize = 10;
/// Probability differences below this mean nothing (one point).
const PROBABILITY_RESOLUTION: f64 = 0.01;
/// Differences of other values below this share of stable's spread mean nothing.
const RELATIVE_RESOLUTION: f64 = 0.02;

/// A bin and how many values of each side fell in it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Bin {
    pub name: String,
    pub stable: usize,
    pub candidate: usize,
}

/// Bins taken from stable's values: edges for numbers, a list for categories.
pub(super) enum Binning {
    /// Edges between bins (a value at an edge goes to the bin above it).
    Numbers(Vec<f64>),
    /// Categories with bins of their own; the rest share one more.
    Categories(Vec<String>),
}

impl Binning {
    /// Decile edges of stable's values, edges closer than the resolution merged.
    pub(super) fn numbers(stable: &VecDeque<f64>, probability: bool) -> Binning {
        let mut sorted: Vec<f64> = stable.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let quantile = |q: f64| sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)];
        let resolution = match probability {
            true => PROBABILITY_RESOLUTION,
            false => {
                let scale = (quantile(0.99) - quantile(0.01)).max(quantile(0.5).abs());
                (scale * RELATIVE_RESOLUTION).max(f64::MIN_POSITIVE)
            }
        };
        let bins = MAX_BINS.min(sorted.len() / 10).max(2);
        let mut edges: Vec<f64> = Vec::new();
        for i in 1..bins {
            let edge = quantile(i as f64 / bins as f64);
            let apart = edges.last().is_none_or(|last| edge - last >= resolution) && edge - sorted[0] >= resolution;
            if apart && sorted.last().is_some_and(|max| max - edge >= resolution / 2.0) {
                edges.push(edge);
            }
        }
        Binning::Numbers(edges)
    }

    /// A bin per category holding [`MIN_CATEGORY_SHARE`] of stable's answers.
    pub(super) fn categories(stable: &VecDeque<String>) -> Binning {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for c in stable {
            *counts.entry(c).or_default() += 1;
        }
        let min = ((stable.len() as f64 * MIN_CATEGORY_SHARE).ceil() as usize).max(1);
        Binning::Categories(counts.iter().filter(|(_, n)| **n >= min).map(|(name, _)| name.to_string()).collect())
    }

    /// The bin a value falls in (None: a value of the other kind).
    pub(super) fn index(&self, value: &Value) -> Option<usize> {
        match (self, value) {
            (Binning::Numbers(edges), Value::Number { value, .. }) => Some(edges.partition_point(|e| e <= value)),
            (Binning::Categories(own), Value::Category(c)) => {
                Some(own.iter().position(|o| o == c).unwrap_or(own.len()))
            }
            _ => None,
        }
    }

    /// Both sides' values counted into the bins; a category bin nobody fell in (the rest,
    /// when every class has a bin of its own) is left out.
    pub(super) fn count(&self, stable: &Observed, candidate: &Observed) -> Vec<Bin> {
        let mut bins: Vec<Bin> = match self {
            Binning::Numbers(edges) => (0..=edges.len())
                .map(|i| {
                    let low = if i == 0 { "-inf".to_string() } else { format!("{:.4}", edges[i - 1]) };
                    let high = if i == edges.len() { "inf".to_string() } else { format!("{:.4}", edges[i]) };
                    Bin { name: format!("[{low}, {high})"), stable: 0, candidate: 0 }
                })
                .collect(),
            Binning::Categories(own) => own
                .iter()
                .map(|c| format!("'{c}'"))
                .chain(["other classes".to_string()])
                .map(|name| Bin { name, stable: 0, candidate: 0 })
                .collect(),
        };
        for (observed, stable_side) in [(stable, true), (candidate, false)] {
            let numbers =
                observed.numbers.iter().map(|v| Value::Number { value: *v, probability: observed.probability });
            let categories = observed.categories.iter().map(|c| Value::Category(c.clone()));
            for i in numbers.chain(categories).filter_map(|v| self.index(&v)) {
                match stable_side {
                    true => bins[i].stable += 1,
                    false => bins[i].candidate += 1,
                }
            }
        }
        if matches!(self, Binning::Categories(_)) && bins.last().is_some_and(|b| b.stable == 0 && b.candidate == 0) {
            bins.pop();
        }
        bins
    }
}

/// `Σ (c − s) · ln(c / s)`, each share smoothed by half a count so an empty bin on one
/// side gives a large but finite term.
pub(super) fn psi(bins: &[Bin]) -> f64 {
    let n_s: usize = bins.iter().map(|b| b.stable).sum();
    let n_c: usize = bins.iter().map(|b| b.candidate).sum();
    let k = bins.len() as f64;
    bins.iter()
        .map(|b| {
            let s = (b.stable as f64 + 0.5) / (n_s as f64 + 0.5 * k);
            let c = (b.candidate as f64 + 0.5) / (n_c as f64 + 0.5 * k);
            (c - s) * (c / s).ln()
        })
        .sum()
}
