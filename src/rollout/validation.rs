//! A version's validation set: the operator's labelled examples, answered by the
//! candidate and by the live version before any traffic reaches the candidate (the
//! protocol's "prediction accuracy matches expectations").
//!
//! The set is `validation.jsonl` beside the version's `model.toml`, or the file its
//! `[validation] path` names: one JSON object per line, the inputs of one example and
//! what it should give —
//!
//! ```text
//! {"inputs": {"x": [5.1, 3.5, 1.4, 0.2]}, "label": "setosa"}
//! {"features": [6.7, 3.0, 5.2, 2.3], "label": 2}
//! {"inputs": {"frames": [[0.1, 0.2], [0.3, 0.4]]}, "value": 3.25}
//! ```
//!
//! `inputs` maps input names to (nested) arrays, one example each (the batch dimension of
//! one is added when the array has one dimension fewer than the input); `features` is the
//! single input of a one-input model, as `/predict` takes it. `label` (a class name, or a
//! class index) makes the set a classification set, judged by accuracy; `value` (a number
//! or an array) a regression set, judged by mean absolute error. A classifier's answer is
//! read from its class output (its labelled output, or `[predict]`'s when its kind is
//! probabilities or logits), a regression's from `[predict]`'s output.
//!
//! The candidate is refused when its accuracy is lower than the live version's by more
//! than `max_accuracy_drop`, or its error higher by more than
//! `max_validation_error_increase` of the live version's. An example a version fails to
//! answer counts as wrong for it. The result is kept with the rollout record.

use crate::config::DeployConfig;
use crate::router::pool::Pool;
use crate::tensor::{DType, Tensor};
use crate::wire::ModelInfo;
use crate::wire::manifest::Example;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Examples a set may hold, and bytes its file may take.
pub const MAX_EXAMPLES: usize = 10_000;
pub const MAX_BYTES: u64 = 64 << 20;

/// One example: its inputs as written, and what it should give.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    inputs: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    features: Option<serde_json::Value>,
    #[serde(default)]
    label: Option<serde_json::Value>,
    #[serde(default)]
    value: Option<serde_json::Value>,
}

/// What an example should give.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// A class, by name or by index.
    Class(Class),
    /// Regression values.
    Values(Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
enum Class {
    Name(String),
    Index(usize),
}

/// A validation set as read from its file, its inputs still as written.
#[derive(Debug, Clone)]
pub struct Set {
    pub path: String,
    examples: Vec<(Line, Expected)>,
}

/// How one version did on a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub version: u64,
    pub examples: usize,
    /// Examples the version failed to answer (counted as wrong).
    pub failed: usize,
    /// Classification: the share answered with the expected class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Regression: the mean absolute error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_absolute_error: Option<f64>,
}

/// The set's verdict, kept with the rollout record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub path: String,
    /// "classification" or "regression".
    pub kind: String,
    pub candidate: Score,
    /// The live version's score on the same set (none without a live version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Score>,
    pub passed: bool,
    pub verdict: String,
}

/// Reads a set; Err names the file, the line and what is wrong.
pub fn read(path: &Path) -> Result<Set, String> {
    let shown = path.display();
    let size = std::fs::metadata(path).map_err(|e| format!("validation set {shown}: {e}"))?.len();
    if size > MAX_BYTES {
        return Err(format!("validation set {shown} is {size} bytes; at most {MAX_BYTES} are read"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("validation set {shown}: {e}"))?;
    let mut examples = Vec::new();
    for (i, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |e: String| format!("validation set {shown} line {}: {e}", i + 1);
        let line: Line = serde_json::from_str(raw).map_err(|e| at(e.to_string()))?;
        let expected = expected(&line).map_err(at)?;
        examples.push((line, expected));
        if examples.len() > MAX_EXAMPLES {
            return Err(format!("validation set {shown} has more than {MAX_EXAMPLES} examples"));
        }
    }
    if examples.is_empty() {
        return Err(format!("validation set {shown} holds no example"));
    }
    let classes = examples.iter().filter(|(_, e)| matches!(e, Expected::Class(_))).count();
    if classes != 0 && classes != examples.len() {
        return Err(format!(
            "validation set {shown} mixes \"label\" and \"value\" examples; a set is one or the other"
        ));
    }
    Ok(Set { path: shown.to_string(), examples })
}

fn expected(line: &Line) -> Result<Expected, String> {
    match (&line.label, &line.value) {
        (Some(serde_json::Value::String(name)), None) => Ok(Expected::Class(Class::Name(name.clone()))),
        (Some(label), None) => label
            .as_u64()
            .map(|i| Expected::Class(Class::Index(i as usize)))
            .ok_or_else(|| format!("\"label\" {label} is neither a class name nor a class index")),
        (None, Some(value)) => {
            let (_, flat) = flatten(value)?;
            let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
            let numbers: Option<Vec<f64>> = flat.iter().map(number).collect();
            numbers.map(Expected::Values).ok_or_else(|| format!("\"value\" {value} is not numbers"))
        }
        (Some(_), Some(_)) => Err("give \"label\" or \"value\", not both".into()),
        (None, None) => Err("every example needs its expected \"label\" (a class) or \"value\" (numbers)".into()),
    }
}

/// A nested JSON array as a shape and its elements row-major (ragged arrays refused).
fn flatten(value: &serde_json::Value) -> Result<(Vec<usize>, Vec<toml::Value>), String> {
    fn walk(
        v: &serde_json::Value,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<toml::Value>,
    ) -> Result<(), String> {
        match v {
            serde_json::Value::Array(items) => {
                match shape.get(depth) {
                    Some(len) if *len != items.len() => return Err("ragged array".into()),
                    Some(_) => {}
                    None if depth == shape.len() => shape.push(items.len()),
                    None => return Err("ragged array".into()),
                }
                items.iter().try_for_each(|item| walk(item, depth + 1, shape, out))
            }
            _ if depth < shape.len() => Err("ragged array".into()),
            serde_json::Value::Null | serde_json::Value::Object(_) => Err(format!("{v} is not a tensor element")),
            leaf => {
                out.push(match leaf {
                    serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
                    serde_json::Value::String(s) => toml::Value::String(s.clone()),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => toml::Value::Integer(i),
                        None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    _ => unreachable!("arrays, null and objects are matched above"),
                });
                Ok(())
            }
        }
    }
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    walk(value, 0, &mut shape, &mut out)?;
    Ok((shape, out))
}

impl Set {
    /// Examples in the set.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    pub fn is_classification(&self) -> bool {
        matches!(self.examples.first(), Some((_, Expected::Class(_))))
    }

    /// The inputs of example `i` for a version of signature `info`.
    fn inputs(&self, i: usize, info: &ModelInfo) -> Result<Vec<Tensor>, String> {
        let line = &self.examples[i].0;
        let named: Vec<(&str, &serde_json::Value)> = match (&line.inputs, &line.features) {
            (Some(inputs), None) => inputs.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            (None, Some(features)) => match info.inputs.as_slice() {
                [only] => vec![(only.name.as_str(), features)],
                _ => return Err(format!("\"features\" needs a one-input model; this one has {}", info.inputs.len())),
            },
            _ => return Err("give \"inputs\" (by name) or \"features\", one of them".into()),
        };
        named
            .into_iter()
            .map(|(name, value)| {
                let spec = info.inputs.iter().find(|s| s.name == name).ok_or_else(|| {
                    let have: Vec<&str> = info.inputs.iter().map(|s| s.name.as_str()).collect();
                    format!("the model has no input '{name}' (it has {have:?})")
                })?;
                let (mut shape, data) = flatten(value)?;
                if shape.len() + 1 == spec.shape.len() {
                    shape.insert(0, 1);
                }
                Example { shape, data }.to_tensor(name, spec.dtype)
            })
            .collect()
    }
}

/// How a version's answer is read: which output holds its class or value.
struct Reader {
    output: Option<String>,
    labels: Option<Vec<String>>,
}

impl Reader {
    fn of(pool: &Pool, info: &ModelInfo, classification: bool) -> Reader {
        let output = match classification {
            true => super::agreement::class_output(pool).or_else(|| pool.predict.output_of(info).map(String::from)),
            false => pool.predict.output_of(info).map(String::from),
        };
        let labels = info.labels.as_ref().filter(|l| Some(&l.output) == output.as_ref()).map(|l| l.names.clone());
        Reader { output, labels }
    }

    fn output<'a>(&self, outputs: &'a [Tensor]) -> Option<&'a Tensor> {
        outputs.iter().find(|t| Some(&t.name) == self.output.as_ref())
    }

    /// Whether the answer gives the expected class.
    fn is_class(&self, outputs: &[Tensor], want: &Class) -> bool {
        let Some(t) = self.output(outputs) else { return false };
        let got: Class = match t.dtype {
            DType::Bytes => match t.values() {
                crate::tensor::Values::Bytes(items) => match items.first() {
                    Some(b) => Class::Name(String::from_utf8_lossy(b).into_owned()),
                    None => return false,
                },
                _ => return false,
            },
            d if d.is_float() => {
                let row = t.to_f64();
                let top = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                match &self.labels {
                    Some(names) => Class::Name(names.get(top).cloned().unwrap_or_default()),
                    None => Class::Index(top),
                }
            }
            _ => match t.to_f64().first() {
                Some(v) if *v >= 0.0 => Class::Index(*v as usize),
                _ => return false,
            },
        };
        match (&got, want) {
            (Class::Name(g), Class::Index(w)) => self.labels.as_ref().and_then(|l| l.get(*w)) == Some(g),
            (Class::Index(g), Class::Name(w)) => {
                self.labels.as_ref().and_then(|l| l.get(*g)) == Some(w) || g.to_string() == *w
            }
            (g, w) => g == w,
        }
    }

    /// Mean absolute difference from the expected values (None when the shapes differ).
    fn error(&self, outputs: &[Tensor], want: &[f64]) -> Option<f64> {
        let got = self.output(outputs)?.to_f64();
        (got.len() == want.len() && !got.is_empty())
            .then(|| got.iter().zip(want).map(|(g, w)| (g - w).abs()).sum::<f64>() / got.len() as f64)
    }
}

/// Answers every example of `set` on `pool`, one at a time, each under `timeout`.
pub async fn score(set: &Set, pool: &Pool, timeout: Duration) -> Result<Score, String> {
    let info = pool.info().ok_or_else(|| format!("version {} has not reported its signature", pool.version))?;
    let reader = Reader::of(pool, &info, set.is_classification());
    let (mut failed, mut correct, mut error) = (0usize, 0usize, 0.0f64);
    for (i, (_, expected)) in set.examples.iter().enumerate() {
        let inputs = set.inputs(i, &info).map_err(|e| format!("validation set {} line {}: {e}", set.path, i + 1))?;
        let answered = tokio::time::timeout(timeout, pool.infer(&inputs)).await;
        let Ok(Ok((outputs, _))) = answered else {
            failed += 1;
            continue;
        };
        match expected {
            Expected::Class(want) => correct += usize::from(reader.is_class(&outputs, want)),
            Expected::Values(want) => match reader.error(&outputs, want) {
                Some(e) => error += e,
                None => failed += 1,
            },
        }
    }
    let n = set.examples.len();
    let answered = n - failed;
    Ok(Score {
        version: pool.version,
        examples: n,
        failed,
        accuracy: set.is_classification().then(|| correct as f64 / n as f64),
        mean_absolute_error: (!set.is_classification()).then(|| match answered {
            0 => f64::INFINITY,
            a => error / a as f64,
        }),
    })
}

/// The set's verdict on the candidate beside the live version's score. An example the
/// candidate failed to answer is a wrong class; for a regression set, failing more
/// examples than the live version refuses it on its own.
pub fn judge(set: &Set, candidate: Score, live: Option<Score>, deploy: &DeployConfig) -> Validation {
    let kind = if set.is_classification() { "classification" } else { "regression" };
    let more_failed = live.as_ref().is_some_and(|l| candidate.failed > l.failed);
    let (passed, verdict) = match (&live, candidate.accuracy, candidate.mean_absolute_error) {
        (None, ..) => (true, format!("{}; no live version to compare with", describe(&candidate))),
        (Some(live), None, _) if more_failed => (
            false,
            format!(
                "failed to answer {} of {} examples, live v{} {}",
                candidate.failed, candidate.examples, live.version, live.failed
            ),
        ),
        (Some(live), Some(acc), _) => {
            let floor = live.accuracy.unwrap_or(0.0) - deploy.max_accuracy_drop;
            let text = format!(
                "accuracy {:.1}% against live v{}'s {:.1}% on {} examples (at most {:.1} points lower allowed)",
                acc * 100.0,
                live.version,
                live.accuracy.unwrap_or(0.0) * 100.0,
                candidate.examples,
                deploy.max_accuracy_drop * 100.0
            );
            (acc >= floor - 1e-12, text)
        }
        (Some(live), None, Some(mae)) => {
            let theirs = live.mean_absolute_error.unwrap_or(f64::INFINITY);
            let ceiling = theirs * (1.0 + deploy.max_validation_error_increase);
            let text = format!(
                "mean absolute error {mae:.4} against live v{}'s {theirs:.4} on {} examples (at most {:.0}% more allowed)",
                live.version,
                candidate.examples,
                deploy.max_validation_error_increase * 100.0
            );
            (mae <= ceiling + 1e-12, text)
        }
        (Some(_), None, None) => (true, "nothing to judge".into()),
    };
    Validation { path: set.path.clone(), kind: kind.into(), candidate, live, passed, verdict }
}

fn describe(score: &Score) -> String {
    match (score.accuracy, score.mean_absolute_error) {
        (Some(a), _) => format!("accuracy {:.1}% on {} examples", a * 100.0, score.examples),
        (_, Some(e)) => format!("mean absolute error {e:.4} on {} examples", score.examples),
        _ => format!("{} examples", score.examples),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Labels, TensorSpec};

    fn set(text: &str) -> Result<Set, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validation.jsonl");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    fn info(inputs: &[(&str, Vec<Option<usize>>)]) -> ModelInfo {
        ModelInfo {
            load_mode: "test".into(),
            plans_built: 0,
            device: "cpu".into(),
            inputs: inputs
                .iter()
                .map(|(n, s)| TensorSpec { name: n.to_string(), dtype: DType::F32, shape: s.clone() })
                .collect(),
            outputs: vec![],
            labels: Some(Labels { output: "p".into(), names: vec!["cat".into(), "dog".into()] }),
        }
    }

    #[test]
    fn lines_are_read_with_their_expected_answers_and_errors_name_the_line() {
        let s =
            set("{\"features\": [1, 2], \"label\": \"cat\"}\n\n{\"inputs\": {\"x\": [3, 4]}, \"label\": 1}\n").unwrap();
        assert!(s.is_classification());
        assert_eq!(s.examples.len(), 2);
        let two = info(&[("x", vec![None, Some(2)])]);
        let t = s.inputs(0, &two).unwrap();
        assert_eq!((t[0].name.as_str(), t[0].shape.clone()), ("x", vec![1, 2]), "the batch dimension is added");
        let e = set("{\"features\": [1], \"label\": \"a\"}\n{\"features\": [1]}\n").unwrap_err();
        assert!(
            e.ends_with("line 2: every example needs its expected \"label\" (a class) or \"value\" (numbers)"),
            "{e}"
        );
        let e = set("{\"features\": [1], \"label\": \"a\"}\n{\"features\": [2], \"value\": 3}\n").unwrap_err();
        assert!(e.contains("mixes \"label\" and \"value\""), "{e}");
        let e = set("{\"feature\": [1], \"label\": \"a\"}\n").unwrap_err();
        assert!(e.contains("line 1: unknown field `feature`"), "{e}");
        let e = set("{\"inputs\": {\"y\": [1, 2]}, \"label\": 0}\n").unwrap().inputs(0, &two).unwrap_err();
        assert!(e.contains("the model has no input 'y'"), "{e}");
        let e = set("{\"features\": [[1, 2], [3]], \"label\": 0}\n").unwrap().inputs(0, &two).unwrap_err();
        assert!(e.contains("ragged"), "{e}");
        assert!(set("").unwrap_err().contains("holds no example"));
    }

    #[test]
    fn classes_are_read_by_name_or_index_and_values_by_their_error() {
        let reader = Reader { output: Some("p".into()), labels: Some(vec!["cat".into(), "dog".into()]) };
        let p = |v: Vec<f32>| vec![Tensor::from_values("p", vec![1, 2], crate::tensor::Values::F32(v)).unwrap()];
        assert!(reader.is_class(&p(vec![0.2, 0.8]), &Class::Name("dog".into())));
        assert!(reader.is_class(&p(vec![0.2, 0.8]), &Class::Index(1)));
        assert!(!reader.is_class(&p(vec![0.9, 0.1]), &Class::Name("dog".into())));
        let unnamed = Reader { output: Some("p".into()), labels: None };
        assert!(unnamed.is_class(&p(vec![0.2, 0.8]), &Class::Index(1)));
        assert!(unnamed.is_class(&p(vec![0.2, 0.8]), &Class::Name("1".into())));
        assert_eq!(reader.error(&p(vec![1.0, 3.0]), &[2.0, 2.0]), Some(1.0));
        assert_eq!(reader.error(&p(vec![1.0, 3.0]), &[2.0]), None);
    }

    fn score(version: u64, accuracy: Option<f64>, mae: Option<f64>) -> Score {
        Score { version, examples: 100, failed: 0, accuracy, mean_absolute_error: mae }
    }

    #[test]
    fn the_candidate_is_held_to_the_live_versions_score() {
        let d = DeployConfig::default();
        let classes = set("{\"features\": [1], \"label\": 0}\n").unwrap();
        let v = judge(&classes, score(2, Some(0.90), None), Some(score(1, Some(0.91), None)), &d);
        assert!(v.passed, "{}", v.verdict);
        let v = judge(&classes, score(2, Some(0.64), None), Some(score(1, Some(0.92), None)), &d);
        assert!(!v.passed);
        assert_eq!(
            v.verdict,
            "accuracy 64.0% against live v1's 92.0% on 100 examples (at most 2.0 points lower allowed)"
        );
        let values = set("{\"features\": [1], \"value\": 0.5}\n").unwrap();
        let v = judge(&values, score(2, None, Some(0.5)), Some(score(1, None, Some(0.2))), &d);
        assert!(!v.passed, "{}", v.verdict);
        assert!(v.verdict.starts_with("mean absolute error 0.5000 against live v1's 0.2000"), "{}", v.verdict);
        let v = judge(&values, score(2, None, Some(0.21)), Some(score(1, None, Some(0.2))), &d);
        assert!(v.passed, "{}", v.verdict);
        let v = judge(&classes, score(2, Some(0.5), None), None, &d);
        assert!(v.passed && v.verdict.contains("no live version"), "{}", v.verdict);
        let failing = Score { failed: 3, ..score(2, None, Some(0.1)) };
        let v = judge(&values, failing, Some(score(1, None, Some(0.2))), &d);
        assert_eq!((v.passed, v.verdict.as_str()), (false, "failed to answer 3 of 100 examples, live v1 0"));
    }
}
