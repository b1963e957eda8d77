//! The check every answer passes before it leaves the worker: no NaN or ±Inf in its
//! floating-point outputs, unless the version's `model.toml` says the output may hold them
//! (`[outputs.<name>] allow_infinite / allow_nan`).
//!
//! A model whose weights went bad answers every request "successfully" with NaN; counted as
//! a success, it would pass the health gate and be promoted. Failing such an answer makes
//! it what it is, the version's failure: the error rate, the gate and the alerts see it.
//! The check runs per request, after a batch is split, so one request's NaN fails only it.

use super::engine::Failure;
use crate::wire::Fault;
use crate::wire::manifest::{Manifest, OutputSpec};
use crate::wire::{DType, Tensor};
use std::collections::BTreeMap;

/// Which outputs may hold which non-finite values.
#[derive(Debug, Clone, Default)]
pub struct Finite {
    allowed: BTreeMap<String, OutputSpec>,
}

/// Non-finite values found in one output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Found {
    nan: usize,
    pos_inf: usize,
    neg_inf: usize,
}

impl Finite {
    pub fn from_manifest(manifest: &Manifest) -> Finite {
        Finite { allowed: manifest.outputs.clone() }
    }

    /// Fails the request at its first output holding a non-finite value it may not hold.
    pub fn check(&self, outputs: &[Tensor]) -> Result<(), Failure> {
        for tensor in outputs {
            let found = scan(tensor);
            let allowed = self.allowed.get(&tensor.name).copied().unwrap_or_default();
            let refused_nan = found.nan > 0 && !allowed.allow_nan;
            let refused_inf = found.pos_inf + found.neg_inf > 0 && !allowed.allow_infinite;
            if refused_nan || refused_inf {
                return Err(failure(tensor, found));
            }
        }
        Ok(())
    }
}

fn failure(tensor: &Tensor, found: Found) -> Failure {
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

    fn allowing(name: &str, allow_infinite: bool, allow_nan: bool) -> Finite {
        let mut allowed = BTreeMap::new();
        allowed.insert(name.to_string(), OutputSpec { allow_infinite, allow_nan });
        Finite { allowed }
    }

    #[test]
    fn finite_outputs_pass_and_integers_are_not_scanned() {
        let ints = Tensor::from_values("i", vec![2], Values::I64(vec![-1, i64::MAX])).unwrap();
        assert!(Finite::default().check(&[f32s("y", vec![0.0, -1.5, f32::MAX]), ints]).is_ok());
    }

    #[test]
    fn nan_and_infinity_fail_naming_the_output_and_counting_them() {
        let outputs = [f32s("ok", vec![1.0]), f32s("y", vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 2.0])];
        let failure = Finite::default().check(&outputs).unwrap_err();
        assert_eq!(failure.fault, Fault::NonFinite { output: "y".into() });
        assert!(failure.message.contains("output 'y' holds non-finite values (1 NaN, 1 +Inf, 1 -Inf of 4 elements)"));
        let f64s = Tensor::from_values("d", vec![1], Values::F64(vec![f64::NAN])).unwrap();
        assert!(Finite::default().check(&[f64s]).is_err());
    }

    #[test]
    fn a_declared_output_may_hold_what_it_declares_and_no_more() {
        let log_probs = f32s("lp", vec![f32::NEG_INFINITY, -0.5]);
        assert!(allowing("lp", true, false).check(std::slice::from_ref(&log_probs)).is_ok());
        assert!(Finite::default().check(std::slice::from_ref(&log_probs)).is_err());
        assert!(allowing("lp", true, false).check(&[f32s("lp", vec![f32::NAN])]).is_err());
        assert!(allowing("lp", false, true).check(&[f32s("lp", vec![f32::NAN])]).is_ok());
        // Allowing one output allows nothing for another.
        assert!(allowing("lp", true, true).check(&[f32s("other", vec![f32::INFINITY])]).is_err());
    }
}
