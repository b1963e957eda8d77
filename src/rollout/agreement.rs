//! Whether a candidate's answer agrees with stable's answer to the same request, as the
//! shadow phase judges it.
//!
//! - A classifier (a version whose model.toml names labels, or whose `/predict` kind is
//!   probabilities or logits) agrees when every row's top class is the same: a retrain
//!   may move probabilities, but a changed decision on most requests is far more often a
//!   bug (label order, preprocessing) than an improvement. When both versions name their
//!   labels, classes are compared by name, not column: a retrain that lists its classes
//!   in another order, and says so, agrees.
//! - Other float outputs agree when their relative difference, `|a - b| / max(|a|, |b|)`
//!   over the whole output (Euclidean norms), is within the tolerance.
//! - Integer, boolean and string outputs agree when equal.
//!
//! Only outputs both versions give with the same datatype are compared; a request with no
//! such output is not counted either way.

use crate::repo::PredictKind;
use crate::router::pool::Pool;
use crate::tensor::Tensor;

/// Norms below this are zero: two all-zero answers agree.
const ZERO_NORM: f64 = 1e-9;

/// How two versions' answers are compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparer {
    /// The output holding the class decision, for classifiers.
    class_output: Option<String>,
    /// Largest relative difference of other float outputs that still agrees.
    tolerance: f64,
    /// Each version's class names for the class output's columns, when it names them.
    stable_labels: Option<Vec<String>>,
    candidate_labels: Option<Vec<String>>,
}

impl Comparer {
    pub fn new(class_output: Option<String>, tolerance: f64) -> Comparer {
        Comparer { class_output, tolerance, stable_labels: None, candidate_labels: None }
    }

    /// The comparer for a candidate shadowing `stable`: classifier-ness is read from the
    /// stable version (whose answers are the reference), else from the candidate.
    pub fn for_versions(stable: &Pool, candidate: &Pool, tolerance: f64) -> Comparer {
        let class_output = class_output(stable).or_else(|| class_output(candidate));
        let labels = |pool: &Pool| {
            let info = pool.info()?;
            let labels = info.labels.as_ref()?;
            (Some(&labels.output) == class_output.as_ref()).then(|| labels.names.clone())
        };
        Comparer {
            stable_labels: labels(stable),
            candidate_labels: labels(candidate),
            ..Comparer::new(class_output, tolerance)
        }
    }

    /// Names both versions' labels, for comparing classes by name.
    pub fn with_labels(self, stable: Vec<String>, candidate: Vec<String>) -> Comparer {
        Comparer { stable_labels: Some(stable), candidate_labels: Some(candidate), ..self }
    }

    /// Whether `candidate` agrees with `stable`; `None` when nothing could be compared.
    pub fn agrees(&self, stable: &[Tensor], candidate: &[Tensor]) -> Option<bool> {
        let pair = |name: &str| {
            let s = stable.iter().find(|t| t.name == name)?;
            let c = candidate.iter().find(|t| t.name == name && t.dtype == s.dtype)?;
            Some((s, c))
        };
        if let Some((s, c)) = self.class_output.as_deref().and_then(pair) {
            return Some(self.same_classes(s, c));
        }
        let mut compared = false;
        for s in stable {
            let Some((s, c)) = pair(&s.name) else { continue };
            compared = true;
            if !self.same_values(s, c) {
                return Some(false);
            }
        }
        compared.then_some(true)
    }

    fn same_values(&self, s: &Tensor, c: &Tensor) -> bool {
        if s.shape != c.shape {
            return false;
        }
        match s.dtype.is_float() {
            true => relative_difference(&s.to_f64(), &c.to_f64()) <= self.tolerance,
            false => s.data == c.data,
        }
    }
}

/// The output whose top class is the version's decision, when it is a classifier.
pub(super) fn class_output(pool: &Pool) -> Option<String> {
    let info = pool.info()?;
    if let Some(labels) = &info.labels {
        return Some(labels.output.clone());
    }
    match pool.predict.kind {
        Some(PredictKind::Probabilities | PredictKind::Logits) => pool
            .predict
            .output
            .clone()
            .or_else(|| info.outputs.iter().find(|o| o.dtype.is_float()).map(|o| o.name.clone())),
        _ => None,
    }
}

impl Comparer {
    /// Every row's class the same: the arg-max of float rows (by label name when both
    /// versions name theirs), the value of others.
    fn same_classes(&self, s: &Tensor, c: &Tensor) -> bool {
        if s.shape != c.shape {
            return false;
        }
        if !s.dtype.is_float() {
            return s.data == c.data;
        }
        let rows = s.rows().max(1);
        let (a, b) = (s.to_f64(), c.to_f64());
        let width = a.len() / rows;
        if width == 0 {
            return true;
        }
        let named = self.stable_labels.as_ref().zip(self.candidate_labels.as_ref());
        a.chunks(width).zip(b.chunks(width)).all(|(x, y)| match named {
            Some((sl, cl)) => sl.get(argmax(x)).is_some_and(|name| cl.get(argmax(y)) == Some(name)),
            None => argmax(x) == argmax(y),
        })
    }
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// `‖a − b‖ / max(‖a‖, ‖b‖)` over the finite elements; different non-finite elements, or a
/// non-finite where the other is finite, are an infinite difference.
fn relative_difference(a: &[f64], b: &[f64]) -> f64 {
    let (mut diff, mut norm_a, mut norm_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() || !y.is_finite() {
            let same = (x.is_nan() && y.is_nan()) || x == y;
            if !same {
                return f64::INFINITY;
            }
            continue;
        }
        diff += (x - y) * (x - y);
        norm_a += x * x;
        norm_b += y * y;
    }
    let scale = norm_a.sqrt().max(norm_b.sqrt());
    if scale < ZERO_NORM {
        return if diff.sqrt() < ZERO_NORM { 0.0 } else { f64::INFINITY };
    }
    diff.sqrt() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Values;

    fn f32s(name: &str, shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_values(name, shape, Values::F32(v)).unwrap()
    }

    #[test]
    fn classifiers_agree_on_the_top_class_whatever_the_probabilities() {
        let c = Comparer::new(Some("p".into()), 0.1);
        let stable = [f32s("p", vec![2, 3], vec![0.7, 0.2, 0.1, 0.1, 0.1, 0.8])];
        let retrained = [f32s("p", vec![2, 3], vec![0.4, 0.35, 0.25, 0.3, 0.2, 0.5])];
        assert_eq!(c.agrees(&stable, &retrained), Some(true));
        // Label order swapped: the same scores in another column order.
        let swapped = [f32s("p", vec![2, 3], vec![0.2, 0.7, 0.1, 0.1, 0.8, 0.1])];
        assert_eq!(c.agrees(&stable, &swapped), Some(false));
        // One row of two changed is a disagreement on the request.
        let one_row = [f32s("p", vec![2, 3], vec![0.7, 0.2, 0.1, 0.8, 0.1, 0.1])];
        assert_eq!(c.agrees(&stable, &one_row), Some(false));
    }

    #[test]
    fn classes_compare_by_name_when_both_versions_name_them() {
        let abc = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let stable = [f32s("p", vec![1, 3], vec![0.7, 0.2, 0.1])];
        // The retrain lists its classes in another order and says so: the same decision.
        let reordered = [f32s("p", vec![1, 3], vec![0.1, 0.2, 0.7])];
        let named = Comparer::new(Some("p".into()), 0.1).with_labels(abc(&["a", "b", "c"]), abc(&["c", "b", "a"]));
        assert_eq!(named.agrees(&stable, &reordered), Some(true));
        assert_eq!(named.agrees(&stable, &stable), Some(false), "column 0 is 'c' for the candidate");
        // Without names on both sides, columns are compared.
        assert_eq!(Comparer::new(Some("p".into()), 0.1).agrees(&stable, &reordered), Some(false));
    }

    #[test]
    fn string_and_integer_classes_compare_equal() {
        let c = Comparer::new(Some("label".into()), 0.1);
        let label =
            |s: &str| Tensor::from_values("label", vec![1], Values::Bytes(vec![s.as_bytes().to_vec()])).unwrap();
        assert_eq!(c.agrees(&[label("cat")], &[label("cat")]), Some(true));
        assert_eq!(c.agrees(&[label("cat")], &[label("dog")]), Some(false));
        let ints = |v: i64| Tensor::from_values("n", vec![1], Values::I64(vec![v])).unwrap();
        let general = Comparer::new(None, 0.1);
        assert_eq!(general.agrees(&[ints(3)], &[ints(3)]), Some(true));
        assert_eq!(general.agrees(&[ints(3)], &[ints(4)]), Some(false));
    }

    #[test]
    fn other_outputs_agree_within_the_relative_tolerance() {
        let c = Comparer::new(None, 0.1);
        let y = |v: Vec<f32>| [f32s("y", vec![1, v.len()], v)];
        assert_eq!(c.agrees(&y(vec![10.0, 20.0]), &y(vec![10.5, 20.5])), Some(true));
        assert_eq!(c.agrees(&y(vec![10.0, 20.0]), &y(vec![20.0, 40.0])), Some(false), "doubled");
        assert_eq!(c.agrees(&y(vec![10.0, 20.0]), &y(vec![-10.0, -20.0])), Some(false), "negated");
        assert_eq!(c.agrees(&y(vec![0.0, 0.0]), &y(vec![0.0, 0.0])), Some(true), "zeros agree");
        assert_eq!(c.agrees(&y(vec![0.0]), &y(vec![1.0])), Some(false));
        assert_eq!(c.agrees(&y(vec![1.0, f32::NEG_INFINITY]), &y(vec![1.0, f32::NEG_INFINITY])), Some(true));
        assert_eq!(c.agrees(&y(vec![1.0, 2.0]), &y(vec![1.0, f32::NAN])), Some(false));
        assert_eq!(c.agrees(&y(vec![1.0, 2.0]), &[f32s("y", vec![2, 1], vec![1.0, 2.0])]), Some(false), "shape");
    }

    #[test]
    fn only_outputs_both_give_are_compared() {
        let c = Comparer::new(None, 0.1);
        let stable = [f32s("y", vec![1], vec![1.0]), f32s("old", vec![1], vec![5.0])];
        let candidate = [f32s("y", vec![1], vec![1.0]), f32s("new", vec![1], vec![9.0])];
        assert_eq!(c.agrees(&stable, &candidate), Some(true));
        assert_eq!(c.agrees(&[f32s("a", vec![1], vec![1.0])], &[f32s("b", vec![1], vec![1.0])]), None);
        // A classifier whose class output is missing falls back to the other outputs.
        let classifier = Comparer::new(Some("gone".into()), 0.1);
        assert_eq!(classifier.agrees(&stable, &candidate), Some(true));
    }
}
