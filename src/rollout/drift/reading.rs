//! How a version's answers are read into features: each class's probability and the top
//! class for classifiers (by label name), each column (or a row's mean, spread and
//! maximum) for other floats, categories for integers, booleans and strings.

use crate::repo::PredictKind;
use crate::router::pool::Pool;
use crate::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Classes whose probabilities are features one by one; wider classifiers are read by
/// their top class, its probability and the row's entropy.
pub const MAX_CLASS_COLUMNS: usize = 32;

/// Columns of a float output that are features one by one; wider rows are read by their
/// mean, spread and maximum.
pub const MAX_VALUE_COLUMNS: usize = 16;

/// One feature of a version's answers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Feature {
    pub output: String,
    /// `p(<class>)`, `top class`, `[<column>]`, `row mean`, ...
    pub name: String,
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "output '{}' {}", self.output, self.name)
    }
}

/// What one answer says of one feature.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number; `probability` when it is a class's probability (its resolution is
    /// absolute).
    Number { value: f64, probability: bool },
    /// A category (a class, a label string), by name.
    Category(String),
}

/// How a version's outputs are read into features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    outputs: BTreeMap<String, OutputReading>,
}

#[derive(Debug, Clone, PartialEq)]
enum OutputReading {
    /// Class scores: probabilities, or logits read through softmax.
    Classes { labels: Option<Vec<String>>, logits: bool },
    /// Float values of no declared meaning.
    Numbers,
    /// Integers, booleans, strings: each row a category.
    Categories,
}

impl Reading {
    /// How `pool`'s answers are read: its signature, labels and declared kinds.
    pub fn of(pool: &Pool) -> Reading {
        let Some(info) = pool.info() else { return Reading::default() };
        let predict_output = pool.predict.output_of(&info).map(String::from);
        let outputs =
            info.outputs
                .iter()
                .map(|o| {
                    let declared =
                        pool.kinds.get(&o.name).copied().or_else(|| {
                            pool.predict.kind.filter(|_| predict_output.as_deref() == Some(o.name.as_str()))
                        });
                    let labels = info.labels.as_ref().filter(|l| l.output == o.name).map(|l| l.names.clone());
                    let reading = match (o.dtype.is_float(), declared, labels) {
                        (false, ..) => OutputReading::Categories,
                        (true, Some(PredictKind::Logits), labels) => OutputReading::Classes { labels, logits: true },
                        (true, Some(PredictKind::Probabilities), labels) => {
                            OutputReading::Classes { labels, logits: false }
                        }
                        (true, Some(PredictKind::Regression), _) => OutputReading::Numbers,
                        // Labels without a declared kind: read as the scores they are, through
                        // softmax unless they already are a distribution (decided per row).
                        (true, None, Some(labels)) => OutputReading::Classes { labels: Some(labels), logits: false },
                        (true, None, None) => OutputReading::Numbers,
                    };
                    (o.name.clone(), reading)
                })
                .collect();
        Reading { outputs }
    }

    /// Calls `each` with every feature of an answer.
    pub fn features(&self, outputs: &[Tensor], mut each: impl FnMut(Feature, Value)) {
        for tensor in outputs {
            let Some(reading) = self.outputs.get(&tensor.name) else { continue };
            let rows = tensor.rows().max(1);
            match reading {
                OutputReading::Classes { labels, logits } => {
                    let values = tensor.to_f64();
                    let width = values.len() / rows;
                    if width == 0 {
                        continue;
                    }
                    for row in values.chunks(width) {
                        class_features(&tensor.name, row, labels.as_deref(), *logits, &mut each);
                    }
                }
                OutputReading::Numbers => {
                    let values = tensor.to_f64();
                    let width = values.len() / rows;
                    if width == 0 {
                        continue;
                    }
                    for row in values.chunks(width) {
                        number_features(&tensor.name, row, &mut each);
                    }
                }
                OutputReading::Categories => category_features(tensor, rows, &mut each),
            }
        }
    }
}

pub(super) fn feature(output: &str, name: impl Into<String>) -> Feature {
    Feature { output: output.to_string(), name: name.into() }
}

/// A row of class scores: each class's probability (or the top one's and the entropy),
/// and the top class.
pub(super) fn class_features(
    output: &str,
    row: &[f64],
    labels: Option<&[String]>,
    logits: bool,
    each: &mut impl FnMut(Feature, Value),
) {
    if row.iter().any(|v| !v.is_finite()) {
        return;
    }
    let is_distribution =
        row.iter().all(|v| (-1e-6..=1.0 + 1e-6).contains(v)) && (row.iter().sum::<f64>() - 1.0).abs() < 1e-3;
    let probabilities = match logits || !is_distribution {
        true => softmax(row),
        false => row.to_vec(),
    };
    let class = |i: usize| labels.and_then(|l| l.get(i)).cloned().unwrap_or_else(|| i.to_string());
    let top = argmax(&probabilities);
    if probabilities.len() <= MAX_CLASS_COLUMNS {
        for (i, p) in probabilities.iter().enumerate() {
            each(feature(output, format!("p({})", class(i))), Value::Number { value: *p, probability: true });
        }
    } else {
        let top_p = probabilities[top];
        each(feature(output, "top-class probability"), Value::Number { value: top_p, probability: true });
        let entropy: f64 = probabilities.iter().filter(|p| **p > 0.0).map(|p| -p * p.ln()).sum();
        let normalized = entropy / (probabilities.len() as f64).ln();
        each(feature(output, "entropy"), Value::Number { value: normalized, probability: true });
    }
    each(feature(output, "top class"), Value::Category(class(top)));
}

/// A row of plain values: each column, or the row's mean, spread and maximum.
pub(super) fn number_features(output: &str, row: &[f64], each: &mut impl FnMut(Feature, Value)) {
    let number = |value: f64| Value::Number { value, probability: false };
    if row.iter().any(|v| !v.is_finite()) {
        return;
    }
    if row.len() == 1 {
        return each(feature(output, "value"), number(row[0]));
    }
    if row.len() <= MAX_VALUE_COLUMNS {
        for (i, v) in row.iter().enumerate() {
            each(feature(output, format!("[{i}]")), number(*v));
        }
        return;
    }
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let spread = (row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    each(feature(output, "row mean"), number(mean));
    each(feature(output, "row spread"), number(spread));
    each(feature(output, "row max"), number(max));
}

/// Each row of an integer, boolean or string output as one category.
pub(super) fn category_features(tensor: &Tensor, rows: usize, each: &mut impl FnMut(Feature, Value)) {
    let names: Vec<String> = match tensor.dtype {
        DType::Bytes => match tensor.values() {
            crate::tensor::Values::Bytes(items) => {
                items.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
            }
            _ => return,
        },
        _ => tensor.to_f64().iter().map(|v| format!("{v}")).collect(),
    };
    if names.is_empty() {
        return;
    }
    let width = (names.len() / rows).max(1);
    for row in names.chunks(width) {
        each(feature(&tensor.name, "value"), Value::Category(row.join(",")));
    }
}

pub(super) fn softmax(row: &[f64]) -> Vec<f64> {
    let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = row.iter().map(|v| (v - top).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

pub(super) fn argmax(row: &[f64]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}
