//! The contract every answer keeps before it leaves the worker: what the version's
//! `model.toml` declares of its outputs, checked on each request's outputs (after a batch
//! is split, so one request's bad answer fails only it), on the warm-up and on the golden
//! examples.
//!
//! - **Finite values**: no NaN or ±Inf in floating-point outputs, unless
//!   `[outputs.<name>] allow_infinite / allow_nan` says the output may hold them. A model
//!   whose weights went bad answers every request "successfully" with NaN.
//! - **Probabilities**: the rows of an output of `kind = "probabilities"` (`[predict]`'s
//!   output or an `[outputs.<name>]`, ZipMap's tensor included when it is the one) each
//!   lie in [0, 1] and sum to 1, within [`PROBABILITY_TOLERANCE`]. A retrain exported
//!   without its final softmax keeps the top class and answers unbounded scores.
//! - **Labels**: a labelled output (`[labels]`, or a ZipMap's classes) has rows exactly as
//!   wide as its labels, so no answer names a class that is not there or drops one.
//!
//! Counted as a success, a broken answer would pass the health gate and be promoted.
//! Failing it makes it what it is, the version's failure: the error rate, the shadow
//! phase's verdict, the gate and the alerts see it, and `/metrics` counts it per output.

use super::engine::Failure;
use crate::wire::manifest::{Manifest, OutputSpec, PROBABILITY_TOLERANCE, PredictKind};
use crate::wire::{DType, Fault, ModelInfo, Tensor};
use std::collections::BTreeMap;

/// What one version's outputs must keep.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    allowed: BTreeMap<String, OutputSpec>,
    /// Outputs whose rows are probability distributions.
    probabilities: Vec<String>,
    /// Outputs with labels, and how many.
    widths: BTreeMap<String, usize>,
}

impl Contract {
    /// The contract `manifest` declares for a model of signature `info`; Err when the
    /// declarations cannot hold for this model (a kind on a non-float output, more or
    /// fewer labels than the output's declared columns).
    pub fn new(manifest: &Manifest, info: &ModelInfo) -> Result<Contract, String> {
        let mut contract = Contract { allowed: manifest.outputs.clone(), ..Contract::default() };
        for output in &info.outputs {
            if manifest.kind_of(&output.name, info) == Some(PredictKind::Probabilities) {
                if !output.dtype.is_float() {
                    return Err(format!(
                        "model.toml declares output '{}' kind = \"probabilities\", but it holds {} values",
                        output.name, output.dtype
                    ));
                }
                contract.probabilities.push(output.name.clone());
            }
        }
        if let Some(labels) = &info.labels {
            let declared = info.outputs.iter().find(|o| o.name == labels.output).and_then(|o| o.shape.last().copied());
            if let Some(Some(columns)) = declared
                && columns != labels.names.len()
            {
                return Err(format!(
                    "model.toml [labels] names {} classes, but output '{}' has {columns} columns",
                    labels.names.len(),
                    labels.output
                ));
            }
            contract.widths.insert(labels.output.clone(), labels.names.len());
        }
        Ok(contract)
    }

    /// Fails the request at its first output that breaks the contract.
    pub fn check(&self, outputs: &[Tensor]) -> Result<(), Failure> {
        for tensor in outputs {
            self.check_finite(tensor)?;
            if let Some(labels) = self.widths.get(&tensor.name) {
                check_width(tensor, *labels)?;
            }
            if self.probabilities.contains(&tensor.name) {
                check_probabilities(tensor)?;
            }
        }
        Ok(())
    }

    fn check_finite(&self, tensor: &Tensor) -> Result<(), Failure> {
        let found = scan(tensor);
        let allowed = self.allowed.get(&tensor.name).copied().unwrap_or_default();
        let refused_nan = found.nan > 0 && !allowed.allow_nan;
        let refused_inf = found.pos_inf + found.neg_inf > 0 && !allowed.allow_infinite;
        match refused_nan || refused_inf {
            true => Err(non_finite(tensor, found)),
            false => Ok(()),
        }
    }
}

/// A labelled output's rows must be as wide as its labels.
fn check_width(tensor: &Tensor, labels: usize) -> Result<(), Failure> {
    let width = tensor.shape.last().copied().unwrap_or(1);
    match width == labels {
        true => Ok(()),
        false => {
            Err(broken(&tensor.name, format!("its rows have {width} columns but the version has {labels} labels")))
        }
    }
}

/// Every row lies in [0, 1] and sums to 1, within the tolerance.
fn check_probabilities(tensor: &Tensor) -> Result<(), Failure> {
    let values = tensor.to_f64();
    let width = tensor.shape.last().copied().unwrap_or(1).max(1);
    let tol = PROBABILITY_TOLERANCE;
    let mut bad_rows = 0;
    let mut first: Option<(usize, f64, f64, f64)> = None;
    for (i, row) in values.chunks(width).enumerate() {
        let sum: f64 = row.iter().sum();
        let (low, high) = row.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
        // Written so that NaN fails.
        let ok = low >= -tol && high <= 1.0 + tol && (sum - 1.0).abs() <= tol;
        if !ok {
            bad_rows += 1;
            first.get_or_insert((i, sum, low, high));
        }
    }
    let Some((row, sum, low, high)) = first else { return Ok(()) };
    Err(broken(
        &tensor.name,
        format!(
            "kind = \"probabilities\" needs each row in [0, 1] summing to 1 (within {tol}), but {bad_rows} of {} \
             rows are not: row {row} sums to {sum:.4} with values from {low:.4} to {high:.4} (a model exported \
             without its final softmax answers scores like these)",
            values.len() / width
        ),
    ))
}

fn broken(output: &str, why: String) -> Failure {
    Failure {
        fault: Fault::Contract { output: output.to_string() },
        message: format!("output '{output}' breaks what model.toml declares of it: {why}"),
    }
}

/// Non-finite values found in one output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Found {
    nan: usize,
    pos_inf: usize,
    neg_inf: usize,
}

fn non_finite(tensor: &Tensor, found: Found) -> Failure {
    let name = &tensor.name;
    let mut parts = Vec::new();
    for (count, what) in [(found.nan, "NaN"), (found.pos_inf, "+Inf"), (found.neg_inf, "-Inf")] {
        if count > 0 {
            parts.push(format!("{count} {what}"));
        }
    }
    let message = format!(
        "output '{name}' holds non-finite values ({} of {} elements): the model gave no usable answer \
         (a model.toml [outputs.{name}] allow_infinite / allow_nan declares them legitimate)",
        parts.join(", "),
        tensor.element_count()
    );
    Failure { fault: Fault::NonFinite { output: name.clone() }, message }
}

/// Counts the NaN and infinite elements of a floating-point tensor (none in others).
fn scan(tensor: &Tensor) -> Found {
    let mut found = Found::default();
    let mut count = |v: f64| {
        if v.is_nan() {
            found.nan += 1;
        } else if v == f64::INFINITY {
            found.pos_inf += 1;
        } else if v == f64::NEG_INFINITY {
            found.neg_inf += 1;
        }
    };
    match tensor.dtype {
        DType::F32 => {
            for c in tensor.data.chunks_exact(4) {
                let v = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                if !v.is_finite() {
                    count(f64::from(v));
                }
            }
        }
        DType::F64 => {
            for c in tensor.data.chunks_exact(8) {
                let v = f64::from_le_bytes(c.try_into().expect("8 bytes"));
                if !v.is_finite() {
                    count(v);
                }
            }
        }
        // Half precision overflows to ±Inf at 65,504 (FP16): the commonest non-finite answer.
        DType::F16 | DType::BF16 => tensor.to_f64().into_iter().filter(|v| !v.is_finite()).for_each(&mut count),
        _ => {}
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Values;

    fn f32s(name: &str, v: Vec<f32>) -> Tensor {
        Tensor::from_values(name, vec![v.len()], Values::F32(v)).unwrap()
    }

    fn allowing(name: &str, allow_infinite: bool, allow_nan: bool) -> Contract {
        let mut allowed = BTreeMap::new();
        allowed.insert(name.to_string(), OutputSpec { allow_infinite, allow_nan, kind: None });
        Contract { allowed, ..Contract::default() }
    }

    #[test]
    fn finite_outputs_pass_and_integers_are_not_scanned() {
        let ints = Tensor::from_values("i", vec![2], Values::I64(vec![-1, i64::MAX])).unwrap();
        assert!(Contract::default().check(&[f32s("y", vec![0.0, -1.5, f32::MAX]), ints]).is_ok());
    }

    #[test]
    fn nan_and_infinity_fail_naming_the_output_and_counting_them() {
        let outputs = [f32s("ok", vec![1.0]), f32s("y", vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 2.0])];
        let failure = Contract::default().check(&outputs).unwrap_err();
        assert_eq!(failure.fault, Fault::NonFinite { output: "y".into() });
        assert!(failure.message.contains("output 'y' holds non-finite values (1 NaN, 1 +Inf, 1 -Inf of 4 elements)"));
        let f64s = Tensor::from_values("d", vec![1], Values::F64(vec![f64::NAN])).unwrap();
        assert!(Contract::default().check(&[f64s]).is_err());
        let halves = [2.0, f32::INFINITY, f32::NAN].map(half::f16::from_f32).to_vec();
        let f16s = Tensor::from_values("h", vec![3], Values::F16(halves)).unwrap();
        let failure = Contract::default().check(&[f16s]).unwrap_err();
        assert!(
            failure.message.contains("output 'h' holds non-finite values (1 NaN, 1 +Inf of 3 elements)"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_declared_output_may_hold_what_it_declares_and_no_more() {
        let log_probs = f32s("lp", vec![f32::NEG_INFINITY, -0.5]);
        assert!(allowing("lp", true, false).check(std::slice::from_ref(&log_probs)).is_ok());
        assert!(Contract::default().check(std::slice::from_ref(&log_probs)).is_err());
        assert!(allowing("lp", true, false).check(&[f32s("lp", vec![f32::NAN])]).is_err());
        assert!(allowing("lp", false, true).check(&[f32s("lp", vec![f32::NAN])]).is_ok());
        // Allowing one output allows nothing for another.
        assert!(allowing("lp", true, true).check(&[f32s("other", vec![f32::INFINITY])]).is_err());
    }

    fn info(outputs: &[(&str, DType, Option<usize>)], labels: Option<(&str, usize)>) -> ModelInfo {
        use crate::wire::{Labels, TensorSpec};
        ModelInfo {
            load_mode: "test".into(),
            plans_built: 0,
            device: "cpu".into(),
            inputs: vec![],
            outputs: outputs
                .iter()
                .map(|(name, dtype, width)| TensorSpec {
                    name: name.to_string(),
                    dtype: *dtype,
                    shape: vec![None, *width],
                })
                .collect(),
            labels: labels
                .map(|(output, n)| Labels { output: output.into(), names: (0..n).map(|i| format!("c{i}")).collect() }),
        }
    }

    fn rows(name: &str, width: usize, v: Vec<f32>) -> Tensor {
        Tensor::from_values(name, vec![v.len() / width, width], Values::F32(v)).unwrap()
    }

    fn declared(text: &str) -> Manifest {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn declared_probabilities_must_be_distributions() {
        let m = declared("[predict]\nkind = \"probabilities\"\n");
        let c = Contract::new(&m, &info(&[("p", DType::F32, Some(3))], None)).unwrap();
        assert!(c.check(&[rows("p", 3, vec![0.2, 0.3, 0.5, 1.0, 0.0, 0.0])]).is_ok());
        assert!(c.check(&[rows("p", 3, vec![0.3333, 0.3333, 0.3336])]).is_ok(), "rounding is within tolerance");
        // Logits: the same top class, but no distribution.
        let f = c.check(&[rows("p", 3, vec![0.2, 0.3, 0.5, 2.5, -1.0, 0.3])]).unwrap_err();
        assert_eq!(f.fault, Fault::Contract { output: "p".into() });
        assert!(
            f.message.contains("1 of 2 rows are not: row 1 sums to 1.8000 with values from -1.0000 to 2.5000"),
            "{}",
            f.message
        );
        // Non-negative scores that do not sum to 1 break it too.
        assert!(c.check(&[rows("p", 3, vec![0.5, 0.5, 0.5])]).is_err());
        // Another output, undeclared, is not held to it.
        assert!(c.check(&[rows("other", 3, vec![5.0, 5.0, 5.0])]).is_ok());
    }

    #[test]
    fn outputs_may_declare_their_own_kind_and_the_predict_output_is_found_as_predict_finds_it() {
        let m = declared("[outputs.probs]\nkind = \"probabilities\"\n[outputs.raw]\nkind = \"logits\"\n");
        let two = info(&[("raw", DType::F32, Some(2)), ("probs", DType::F32, Some(2))], None);
        let c = Contract::new(&m, &two).unwrap();
        assert!(c.check(&[rows("raw", 2, vec![3.0, -3.0]), rows("probs", 2, vec![0.9, 0.1])]).is_ok());
        assert!(c.check(&[rows("probs", 2, vec![3.0, -3.0])]).is_err());
        // [predict] kind applies to the labelled output when [predict] names none.
        let m = declared("[predict]\nkind = \"probabilities\"\n");
        let labelled = info(&[("raw", DType::F32, Some(2)), ("probs", DType::F32, Some(2))], Some(("probs", 2)));
        let c = Contract::new(&m, &labelled).unwrap();
        assert!(c.check(&[rows("raw", 2, vec![3.0, -3.0])]).is_ok());
        assert!(c.check(&[rows("probs", 2, vec![3.0, -3.0])]).is_err());
        // Declaring an integer output probabilities cannot hold.
        let m = declared("[outputs.label]\nkind = \"probabilities\"\n");
        let e = Contract::new(&m, &info(&[("label", DType::I64, Some(1))], None)).unwrap_err();
        assert!(e.contains("declares output 'label' kind = \"probabilities\", but it holds INT64 values"), "{e}");
    }

    #[test]
    fn labelled_outputs_must_be_as_wide_as_their_labels() {
        let e = Contract::new(&Manifest::default(), &info(&[("y", DType::F32, Some(4))], Some(("y", 3)))).unwrap_err();
        assert!(e.contains("[labels] names 3 classes, but output 'y' has 4 columns"), "{e}");
        // An open width is checked on each answer.
        let c = Contract::new(&Manifest::default(), &info(&[("y", DType::F32, None)], Some(("y", 3)))).unwrap();
        assert!(c.check(&[rows("y", 3, vec![1.0, 2.0, 3.0])]).is_ok());
        let f = c.check(&[rows("y", 4, vec![1.0, 2.0, 3.0, 4.0])]).unwrap_err();
        assert!(f.message.contains("its rows have 4 columns but the version has 3 labels"), "{}", f.message);
    }

    #[test]
    fn non_finite_values_are_named_before_the_distribution_is_judged() {
        let m = declared("[predict]\nkind = \"probabilities\"\n");
        let c = Contract::new(&m, &info(&[("p", DType::F32, Some(2))], None)).unwrap();
        let f = c.check(&[rows("p", 2, vec![f32::NAN, 0.5])]).unwrap_err();
        assert_eq!(f.fault, Fault::NonFinite { output: "p".into() });
    }
}
