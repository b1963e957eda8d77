//! Output drift: how far the distribution of a candidate's answers moved from stable's
//! over the same population of requests, as a population stability index (PSI) per
//! feature of the answers.
//!
//! Each answer is read into a few features per output ([`Reading`]): for a classifier
//! (an output with labels, or of kind probabilities or logits) each class's probability
//! (up to [`MAX_CLASS_COLUMNS`] classes; beyond, the top class's probability and the
//! row's entropy) and the top class itself; for other float outputs each column's value
//! (up to [`MAX_VALUE_COLUMNS`]; beyond, the row's mean, spread and maximum); integer,
//! boolean and string outputs as categories. Classes are keyed by label name, so two
//! versions that order their labels differently are compared class by class.
//!
//! The PSI of a feature, `Σ (c − s) · ln(c / s)` over bins (`s`, `c`: stable's and the
//! candidate's share of the bin), takes its bins from stable's values: deciles for
//! numbers, merged where two edges are closer than a resolution that says what
//! difference means nothing (one point of probability; 2 % of the spread of other
//! values), so a near-constant output does not drift by rounding; for categories, each
//! one that holds at least [`MIN_CATEGORY_SHARE`] of stable's answers, the rest together.
//! 0.1 is the industry's "watch" line, 0.25 its "significant shift".
//!
//! A feature drifts when its PSI is over the limit *and* chance cannot explain it. Two
//! independent samples of one distribution have a PSI above zero by chance — about a χ²
//! with `bins − 1` degrees of freedom scaled by `1/n₁ + 1/n₂` — so a PSI over that χ²'s
//! one-in-a-thousand quantile (shared among the features judged) is not chance
//! ([`chance_psi`]). Where both versions answered the same requests (shadow copies,
//! replays), the pairs say more: answers that moved between bins show how the candidate
//! fills them differently, which the Stuart–Maxwell test of marginal homogeneity finds on
//! far fewer answers than two independent samples need. So a small sample never reverts a good
//! version by chance, a quiet model's replays still reach a verdict, and a large sample
//! holds the candidate to the limit itself.
//!
//! Rows of one request are not independent answers: a client's batch often holds one
//! user's or one item's rows, alike. Both tests count a side's answers as the effective
//! number of independent ones, `N² / Σ m` over its rows (`m`: the rows of the request a
//! row came with), which is `N` when every request is one row and the number of requests
//! when each batch's rows are all alike, so a few large batches never pass for many
//! answers.

mod bins;
mod reading;
mod stats;

pub use reading::{Feature, MAX_CLASS_COLUMNS, MAX_VALUE_COLUMNS, Reading, Value};
pub use stats::{chance_psi, chi_square_quantile, normal_quantile};

use bins::{Binning, psi};
use serde::{Deserialize, Serialize};
use stats::quadratic_form;
use std::collections::{BTreeMap, VecDeque};

/// A category needs this share of stable's answers to be a bin of its own.
pub const MIN_CATEGORY_SHARE: f64 = 0.02;
/// Values kept per feature and side: the most recent.
pub const KEPT: usize = 2000;
/// The chance that a version whose answers did not move is judged drifted, per
/// evaluation, over all its features together.
const FALSE_ALARM: f64 = 1e-3;

/// The values one side has given of one feature, the most recent [`KEPT`], with the
/// number of rows of the request each came with.
#[derive(Debug, Clone, Default)]
struct Observed {
    numbers: VecDeque<f64>,
    categories: VecDeque<String>,
    batches: VecDeque<usize>,
    probability: bool,
}

impl Observed {
    fn push(&mut self, value: Value, rows: usize) {
        match value {
            Value::Number { value, probability } => {
                self.probability = probability;
                push_bounded(&mut self.numbers, value);
            }
            Value::Category(name) => push_bounded(&mut self.categories, name),
        }
        push_bounded(&mut self.batches, rows.max(1));
    }

    fn len(&self) -> usize {
        self.numbers.len().max(self.categories.len())
    }

    /// How many independent answers the values are worth (see the module's notes).
    fn effective(&self) -> f64 {
        effective(&self.batches)
    }
}

/// `N² / Σ m` over rows that came in requests of `m` rows each.
fn effective<'a>(batches: impl IntoIterator<Item = &'a usize>) -> f64 {
    let (n, sum) = batches.into_iter().fold((0.0, 0.0), |(n, sum), m| (n + 1.0, sum + *m as f64));
    if sum == 0.0 { 0.0 } else { n * n / sum }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, value: T) {
    if ring.len() == KEPT {
        ring.pop_front();
    }
    ring.push_back(value);
}

/// Which side of the comparison an answer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Candidate,
}

/// Both sides' answers, feature by feature, and the pairs of answers the two gave the
/// same requests.
#[derive(Debug, Default)]
pub struct Drift {
    stable: BTreeMap<Feature, Observed>,
    candidate: BTreeMap<Feature, Observed>,
    pairs: BTreeMap<Feature, VecDeque<Pair>>,
}

/// Two versions' values of one feature for one row of one request of `rows` rows.
#[derive(Debug, Clone)]
struct Pair {
    stable: Value,
    candidate: Value,
    rows: usize,
}

/// One feature's PSI and what it was judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: Feature,
    pub psi: f64,
    /// The PSI that chance alone exceeds one time in a thousand (shared among the
    /// features judged) between independent samples of these sizes.
    pub chance_psi: f64,
    pub stable_samples: usize,
    pub candidate_samples: usize,
    /// Of those, pairs of answers to the same requests.
    pub paired: usize,
    /// The pairs' two sides fill the bins differently beyond chance (Stuart–Maxwell).
    pub paired_shift: bool,
    /// The bins whose share moved most, largest first.
    pub moved: Vec<BinShift>,
}

impl FeatureDrift {
    /// Whether chance cannot explain the PSI.
    pub fn beyond_chance(&self) -> bool {
        self.psi > self.chance_psi || self.paired_shift
    }
}

/// A bin and its share on each side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinShift {
    pub bin: String,
    pub stable_share: f64,
    pub candidate_share: f64,
}

/// What the drift of a rollout's answers was, read at one moment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DriftReading {
    /// The features judged, the largest PSI first.
    pub features: Vec<FeatureDrift>,
    /// The answers the best-covered feature shared by both sides has on its smaller side
    /// (0 when none is shared): what the minimum sample count is held against.
    pub samples: usize,
}

impl DriftReading {
    /// The feature with the largest PSI over `limit` that chance cannot explain, if any.
    pub fn breach(&self, limit: f64) -> Option<&FeatureDrift> {
        self.features.iter().filter(|f| f.psi > limit && f.beyond_chance()).max_by(|a, b| a.psi.total_cmp(&b.psi))
    }

    /// How the top class of `output` moved, its largest changes first ("'mid' 36.0% →
    /// 18.0%, ..."), when the output is a classifier's.
    pub fn class_mix(&self, output: &str) -> Option<String> {
        let mix = self.features.iter().find(|f| f.feature.output == output && f.feature.name == "top class")?;
        let moved: Vec<String> = mix
            .moved
            .iter()
            .map(|m| format!("{} {:.1}% → {:.1}%", m.bin, m.stable_share * 100.0, m.candidate_share * 100.0))
            .collect();
        Some(moved.join(", "))
    }

    /// The feature with the largest PSI (none before any is judged).
    pub fn largest(&self) -> Option<&FeatureDrift> {
        self.features.iter().max_by(|a, b| a.psi.total_cmp(&b.psi))
    }
}

impl Drift {
    /// One feature's value of one row of an answer to a request of `rows` rows.
    pub fn record(&mut self, side: Side, feature: Feature, value: Value, rows: usize) {
        let map = match side {
            Side::Stable => &mut self.stable,
            Side::Candidate => &mut self.candidate,
        };
        map.entry(feature).or_default().push(value, rows);
    }

    /// Both versions' features of one request of `rows` rows: each side's, and the
    /// pairs, row by row (the n-th value of a feature on one side with the n-th on the
    /// other).
    pub fn record_pair(&mut self, stable: Vec<(Feature, Value)>, candidate: Vec<(Feature, Value)>, rows: usize) {
        let mut theirs: BTreeMap<Feature, VecDeque<Value>> = BTreeMap::new();
        for (feature, value) in candidate {
            theirs.entry(feature).or_default().push_back(value);
        }
        for (feature, value) in stable {
            if let Some(mine) = theirs.get_mut(&feature).and_then(|values| values.pop_front()) {
                let pair = Pair { stable: value.clone(), candidate: mine.clone(), rows };
                push_bounded(self.pairs.entry(feature.clone()).or_default(), pair);
                self.record(Side::Candidate, feature.clone(), mine, rows);
            }
            self.record(Side::Stable, feature, value, rows);
        }
        for (feature, values) in theirs {
            for value in values {
                self.record(Side::Candidate, feature.clone(), value, rows);
            }
        }
    }

    /// The PSI of every feature both sides have given at least `min_samples` values of.
    pub fn read(&self, min_samples: usize) -> DriftReading {
        let shared: Vec<(&Feature, &Observed, &Observed)> = self
            .stable
            .iter()
            .filter_map(|(f, s)| self.candidate.get(f).map(|c| (f, s, c)))
            .filter(|(_, s, c)| s.len() >= min_samples.max(1) && c.len() >= min_samples.max(1))
            .collect();
        let samples = self
            .stable
            .iter()
            .filter_map(|(f, s)| self.candidate.get(f).map(|c| s.len().min(c.len())))
            .max()
            .unwrap_or(0);
        let alpha = FALSE_ALARM / shared.len().max(1) as f64;
        let none = VecDeque::new();
        let mut features: Vec<FeatureDrift> = shared
            .into_iter()
            .map(|(f, s, c)| judge_feature(f, s, c, self.pairs.get(f).unwrap_or(&none), alpha))
            .collect();
        features.sort_by(|a, b| b.psi.total_cmp(&a.psi));
        DriftReading { features, samples }
    }
}

/// Pairs needed before their symmetry is tested.
const MIN_PAIRS: usize = 10;

/// One feature's PSI over bins from stable's values, judged against chance.
fn judge_feature(
    feature: &Feature,
    stable: &Observed,
    candidate: &Observed,
    pairs: &VecDeque<Pair>,
    alpha: f64,
) -> FeatureDrift {
    let binning = match stable.numbers.is_empty() {
        true => Binning::categories(&stable.categories),
        false => Binning::numbers(&stable.numbers, stable.probability),
    };
    let bins = binning.count(stable, candidate);
    let (n_s, n_c) = (stable.len(), candidate.len());
    let psi = psi(&bins);
    let mut moved: Vec<BinShift> = bins
        .iter()
        .map(|b| BinShift {
            bin: b.name.clone(),
            stable_share: b.stable as f64 / n_s as f64,
            candidate_share: b.candidate as f64 / n_c as f64,
        })
        .collect();
    moved.sort_by(|a, b| {
        (b.candidate_share - b.stable_share).abs().total_cmp(&(a.candidate_share - a.stable_share).abs())
    });
    moved.truncate(3);
    FeatureDrift {
        feature: feature.clone(),
        psi,
        chance_psi: chance_psi(bins.len(), stable.effective(), candidate.effective(), alpha),
        stable_samples: n_s,
        candidate_samples: n_c,
        paired: pairs.len(),
        paired_shift: pairs.len() >= MIN_PAIRS && paired_shift(&binning, pairs, alpha),
        moved,
    }
}

/// Whether the pairs' two sides fill the bins differently beyond chance: the
/// Stuart–Maxwell test of marginal homogeneity (the paired counterpart of the PSI's
/// question), `dᵀ V⁻¹ d` over the bins any answer moved into or out of, where `d` is
/// each bin's stable count minus its candidate count and `V` their covariance from the
/// moves; against a χ² with one degree of freedom fewer than those bins. Pairs from
/// batches count as the independent ones they are worth: the statistic is divided by
/// the design effect `N / (N² / Σ m)`.
fn paired_shift(binning: &Binning, pairs: &VecDeque<Pair>, alpha: f64) -> bool {
    let mut moves: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for Pair { stable: s, candidate: c, .. } in pairs {
        let (Some(from), Some(to)) = (binning.index(s), binning.index(c)) else { continue };
        if from != to {
            *moves.entry((from, to)).or_default() += 1.0;
        }
    }
    let mut bins: Vec<usize> = moves.keys().flat_map(|(i, j)| [*i, *j]).collect();
    bins.sort_unstable();
    bins.dedup();
    // One bin is left out: the differences sum to zero, so the last is known.
    bins.pop();
    let k = bins.len();
    if k == 0 {
        return false;
    }
    let n = |i: usize, j: usize| moves.get(&(i, j)).copied().unwrap_or(0.0);
    let out_of = |i: usize| moves.iter().filter(|((a, _), _)| *a == i).map(|(_, c)| c).sum::<f64>();
    let into = |i: usize| moves.iter().filter(|((_, b), _)| *b == i).map(|(_, c)| c).sum::<f64>();
    let d: Vec<f64> = bins.iter().map(|&i| out_of(i) - into(i)).collect();
    let v: Vec<Vec<f64>> = bins
        .iter()
        .map(|&i| bins.iter().map(|&j| if i == j { out_of(i) + into(i) } else { -(n(i, j) + n(j, i)) }).collect())
        .collect();
    let (statistic, df) = quadratic_form(v, d);
    let design_effect = pairs.len() as f64 / effective(pairs.iter().map(|p| &p.rows));
    df > 0 && statistic / design_effect > chi_square_quantile(df, 1.0 - alpha)
}

/// "output 'y' value drifted from stable's: PSI 1.83 (limit 0.25) over 120 and 118
/// answers, 40 of them to the same requests; chance alone stays under 0.31 ...; bins that
/// moved most: [2.1, 3.4) 10.0% → 41.0%, ..."
pub fn describe(f: &FeatureDrift, limit: f64) -> String {
    let moved: Vec<String> = f
        .moved
        .iter()
        .map(|m| format!("{} {:.1}% → {:.1}%", m.bin, m.stable_share * 100.0, m.candidate_share * 100.0))
        .collect();
    let chance = match (f.psi > f.chance_psi, f.paired_shift) {
        (true, _) => format!("chance alone stays under {:.2} at these sizes", f.chance_psi),
        (false, true) => "the paired answers moved one way beyond chance".to_string(),
        (false, false) => format!("within what chance gives at these sizes ({:.2})", f.chance_psi),
    };
    format!(
        "{} drifted from stable's: PSI {:.2} (limit {limit}) over {} and {} answers, {} of them to the same \
         requests; {chance}; bins that moved most: {}",
        f.feature,
        f.psi,
        f.stable_samples,
        f.candidate_samples,
        f.paired,
        moved.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::reading::*;
    use super::stats::*;
    use super::*;

    /// A deterministic stream of pseudo-random numbers in [0, 1).
    fn uniform(seed: u64) -> impl Iterator<Item = f64> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::iter::from_fn(move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            Some((x >> 11) as f64 / (1u64 << 53) as f64)
        })
    }

    fn normal(seed: u64) -> impl Iterator<Item = f64> {
        let mut u = uniform(seed);
        std::iter::from_fn(move || {
            let (a, b) = (u.next().unwrap().max(1e-12), u.next().unwrap());
            Some((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos())
        })
    }

    fn number(value: f64) -> Value {
        Value::Number { value, probability: false }
    }

    fn drift_of(stable: impl Iterator<Item = f64>, candidate: impl Iterator<Item = f64>) -> DriftReading {
        let mut d = Drift::default();
        let f = feature("y", "value");
        stable.for_each(|v| d.record(Side::Stable, f.clone(), number(v), 1));
        candidate.for_each(|v| d.record(Side::Candidate, f.clone(), number(v), 1));
        d.read(20)
    }

    /// Batches whose rows are alike (one user's, one item's) are few answers, not many:
    /// a candidate seen mostly through a handful of them is not drifted by their luck.
    #[test]
    fn batches_of_alike_rows_count_as_the_requests_they_are() {
        let f = feature("y", "value");
        let mut alarms = 0;
        for seed in 0..50 {
            let mut d = Drift::default();
            let mut values = normal(seed);
            for _ in 0..600 {
                d.record(Side::Stable, f.clone(), number(values.next().unwrap()), 1);
            }
            // 60 single rows and 4 batches of 64 copies of one draw.
            for _ in 0..60 {
                d.record(Side::Candidate, f.clone(), number(values.next().unwrap()), 1);
            }
            for _ in 0..4 {
                let v = values.next().unwrap();
                (0..64).for_each(|_| d.record(Side::Candidate, f.clone(), number(v), 64));
            }
            alarms += usize::from(d.read(20).breach(0.25).is_some());
        }
        assert_eq!(alarms, 0, "one distribution, judged drifted in {alarms} of 50 runs");
        // A real shift in such batches is still found once there are enough of them.
        let mut d = Drift::default();
        let mut values = normal(7);
        for _ in 0..600 {
            d.record(Side::Stable, f.clone(), number(values.next().unwrap()), 1);
        }
        for _ in 0..40 {
            let v = values.next().unwrap() + 3.0;
            (0..16).for_each(|_| d.record(Side::Candidate, f.clone(), number(v), 16));
        }
        assert!(d.read(20).breach(0.25).is_some(), "{:?}", d.read(20));
    }

    /// Both versions' answers to one batch are paired row by row, and every row is
    /// counted on both sides.
    #[test]
    fn a_batchs_answers_pair_row_by_row() {
        let f = feature("y", "value");
        let mut d = Drift::default();
        let rows = |offset: f64| (0..8).map(|i| (f.clone(), number(i as f64 + offset))).collect::<Vec<_>>();
        d.record_pair(rows(0.0), rows(0.5), 8);
        assert_eq!((d.stable[&f].len(), d.candidate[&f].len()), (8, 8));
        let pairs: Vec<(f64, f64)> = d.pairs[&f]
            .iter()
            .map(|p| match (&p.stable, &p.candidate) {
                (Value::Number { value: s, .. }, Value::Number { value: c, .. }) => (*s, *c),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(pairs, (0..8).map(|i| (i as f64, i as f64 + 0.5)).collect::<Vec<_>>());
        assert!((d.stable[&f].effective() - 1.0).abs() < 1e-9, "eight alike rows of one request are worth one");
    }

    #[test]
    fn the_quadratic_form_inverts_what_it_can() {
        let (q, rank) = quadratic_form(vec![vec![2.0, 0.0], vec![0.0, 4.0]], vec![2.0, 4.0]);
        assert!((q - 6.0).abs() < 1e-12 && rank == 2, "{q} {rank}");
        // [[2, 1], [1, 2]]⁻¹ = [[2, -1], [-1, 2]] / 3: (1, 1) gives 2/3.
        let (q, _) = quadratic_form(vec![vec![2.0, 1.0], vec![1.0, 2.0]], vec![1.0, 1.0]);
        assert!((q - 2.0 / 3.0).abs() < 1e-12, "{q}");
        // A direction without variance is left out, and the rank says so.
        let (q, rank) = quadratic_form(vec![vec![4.0, 0.0], vec![0.0, 0.0]], vec![2.0, 0.0]);
        assert!((q - 1.0).abs() < 1e-12 && rank == 1, "{q} {rank}");
    }

    #[test]
    fn the_chi_square_quantile_is_close() {
        // Exact values: χ²₁(0.999) 10.83, χ²₃(0.999) 16.27, χ²₉(0.999) 27.88.
        for (df, exact) in [(1, 10.828), (3, 16.266), (9, 27.877)] {
            let got = chi_square_quantile(df, 0.999);
            assert!((got - exact).abs() / exact < 0.05, "df {df}: {got} against {exact}");
        }
    }

    #[test]
    fn the_normal_quantile_is_right() {
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-6);
        assert!((normal_quantile(0.999) - 3.090_232_306).abs() < 1e-6);
        assert!((normal_quantile(1e-6) + 4.753_424_309).abs() < 1e-5);
    }

    #[test]
    fn samples_of_one_distribution_are_not_drift() {
        // 200 pairs of independent samples of the same distribution, at sizes from 30
        // to 2000: none is judged drifted at the industry's 0.25, and chance explains
        // nearly all of their PSIs.
        let mut beyond_chance = 0;
        for seed in 0..200u64 {
            let n = [30, 50, 120, 500, 2000][seed as usize % 5];
            let r = drift_of(normal(seed).take(n), normal(seed + 1000).take(n));
            assert!(r.breach(0.25).is_none(), "seed {seed}, n {n}: {:?}", r.features[0]);
            beyond_chance += usize::from(r.features[0].beyond_chance());
        }
        assert!(beyond_chance <= 2, "{beyond_chance} of 200 beyond chance at one in a thousand");
    }

    fn paired(pairs: impl Iterator<Item = (f64, f64)>) -> DriftReading {
        let mut d = Drift::default();
        let f = feature("y", "value");
        for (s, c) in pairs {
            d.record_pair(vec![(f.clone(), number(s))], vec![(f.clone(), number(c))], 1);
        }
        d.read(20)
    }

    #[test]
    fn paired_answers_reveal_a_shift_on_few_requests() {
        // 60 requests answered by both, the candidate reading a feature too large: its
        // answers spread out. As independent samples this is within chance; as pairs,
        // every answer that moved moved outwards, none back.
        let spread = paired(normal(11).take(60).map(|v| (v, v * 3.0)));
        let f = &spread.features[0];
        assert!(f.paired_shift && f.psi > 0.25, "{f:?}");
        assert!(spread.breach(0.25).is_some());
        // The same answers from both: nothing moved.
        let same = paired(normal(12).take(60).map(|v| (v, v)));
        assert_eq!(same.features[0].psi, 0.0);
        assert!(!same.features[0].paired_shift);
        // Noise that moves answers both ways is no shift, even where the PSI of so few
        // answers looks large.
        let mut u = uniform(13);
        let noisy = paired(normal(14).take(60).map(|v| (v, v + (u.next().unwrap() - 0.5) * 1.5)));
        assert!(noisy.breach(0.25).is_none(), "{:?}", noisy.features[0]);
        // A fine-tune's small, one-way move is a shift, but under the limit.
        let tuned = paired(normal(15).take(60).map(|v| (v, v * 1.02 + 0.02)));
        assert!(tuned.breach(0.25).is_none(), "{:?}", tuned.features[0]);
    }

    #[test]
    fn a_shift_or_a_wider_spread_is_drift_and_names_its_bins() {
        let shifted = drift_of(normal(1).take(500), normal(2).take(500).map(|v| v + 1.0));
        let f = shifted.breach(0.25).expect("a shift of one standard deviation drifts");
        assert!(f.psi > 0.8, "{f:?}");
        let text = describe(f, 0.25);
        assert!(text.starts_with("output 'y' value drifted from stable's: PSI"), "{text}");
        assert!(text.contains("bins that moved most: ["), "{text}");
        let wider = drift_of(normal(3).take(300), normal(4).take(300).map(|v| v * 5.0));
        assert!(wider.breach(0.25).is_some(), "{:?}", wider.features[0]);
    }

    #[test]
    fn a_small_retrain_is_not_drift() {
        // Every answer moved by 3 % of the spread, as a fine-tune moves them.
        let r = drift_of(normal(5).take(2000), normal(5).take(2000).map(|v| v * 1.02 + 0.03));
        assert!(r.breach(0.25).is_none(), "{:?}", r.features[0]);
        assert!(r.features[0].psi < 0.1, "{:?}", r.features[0]);
    }

    #[test]
    fn a_near_constant_output_does_not_drift_by_rounding() {
        // All answers near 5.0; the retrain moves them by 0.5 % of their value.
        let r = drift_of(uniform(6).take(500).map(|v| 5.0 + v * 1e-3), uniform(7).take(500).map(|v| 5.025 + v * 1e-3));
        assert!(r.breach(0.25).is_none(), "{:?}", r.features[0]);
    }

    #[test]
    fn too_few_answers_are_not_judged() {
        let r = drift_of(normal(8).take(19), normal(9).take(500).map(|v| v + 5.0));
        assert!(r.features.is_empty());
        assert_eq!(r.samples, 19);
    }

    #[test]
    fn classifiers_are_read_by_class_name_and_their_mix_is_a_feature() {
        let labels = vec!["cat".to_string(), "dog".to_string()];
        let mut seen = Vec::new();
        class_features("p", &[2.0, 0.0], Some(&labels), true, &mut |f, v| seen.push((f.name, v)));
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].0, "p(cat)");
        assert!(matches!(seen[0].1, Value::Number { value, probability: true } if (value - 0.8808).abs() < 1e-3));
        assert_eq!(seen[2], ("top class".to_string(), Value::Category("cat".into())));
        // A row that already is a distribution is read as is, without softmax.
        let mut seen = Vec::new();
        class_features("p", &[0.25, 0.75], None, false, &mut |f, v| seen.push((f.name, v)));
        assert!(matches!(seen[1].1, Value::Number { value, .. } if value == 0.75));
        assert_eq!(seen[2].1, Value::Category("1".into()));
        // Wide classifiers: top class, its probability and the entropy.
        let mut names = Vec::new();
        class_features("p", &vec![0.001; 1000], None, true, &mut |f, _| names.push(f.name));
        assert_eq!(names, ["top-class probability", "entropy", "top class"]);
    }

    #[test]
    fn a_changed_class_mix_drifts_and_rare_classes_share_a_bin() {
        let mut d = Drift::default();
        let f = feature("p", "top class");
        let mix = |counts: &[(&str, usize)]| -> Vec<String> {
            counts.iter().flat_map(|(c, n)| std::iter::repeat_n(c.to_string(), *n)).collect()
        };
        for c in mix(&[("a", 400), ("b", 400), ("c", 195), ("rare", 5)]) {
            d.record(Side::Stable, f.clone(), Value::Category(c), 1);
        }
        for c in mix(&[("a", 700), ("b", 150), ("c", 145), ("new", 5)]) {
            d.record(Side::Candidate, f.clone(), Value::Category(c), 1);
        }
        let r = d.read(20);
        let breach = r.breach(0.25).expect("a class mix moved by 30 points drifts");
        let bins: Vec<&str> = breach.moved.iter().map(|m| m.bin.as_str()).collect();
        assert_eq!(bins[..2], ["'a'", "'b'"]);
        assert!(!breach.moved.iter().any(|m| m.bin == "'rare'"), "under 2 % of stable's answers: not a bin");
    }

    #[test]
    fn probabilities_closer_than_a_point_are_one_bin() {
        let mut d = Drift::default();
        let f = feature("p", "p(cat)");
        let p = |value| Value::Number { value, probability: true };
        for v in uniform(10).take(400) {
            d.record(Side::Stable, f.clone(), p(0.001 + v * 0.0002), 1);
            d.record(Side::Candidate, f.clone(), p(0.0013 + v * 0.0002), 1);
        }
        let r = d.read(20);
        assert_eq!(r.features[0].psi, 0.0, "{:?}", r.features[0]);
    }
}
