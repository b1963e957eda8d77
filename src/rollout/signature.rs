//! The signature check a candidate passes before it takes any request: its inputs and
//! outputs against the live version's — names, datatypes, ranks, fixed and open
//! dimensions.
//!
//! A difference is *breaking* when requests the live version answers would be refused by
//! the candidate, or its answers would not read as before: an input added, removed, of
//! another datatype or rank, a fixed dimension changed, an open one fixed; an output
//! removed, of another datatype or rank, a fixed dimension changed. Other differences
//! only widen what is taken or given (an input dimension opened, an output added or its
//! dimension opened or fixed) and are shown, not refused. A breaking change takes traffic
//! only when the operator says so (`--allow-signature-change`, or
//! `allow_signature_change = true` in `[model.deploy]`).

use crate::tensor::TensorSpec;
use crate::wire::ModelInfo;
use serde::{Deserialize, Serialize};

/// One difference between two signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// "input 'features': dimension 1 was 30, is 31".
    pub text: String,
    /// Clients of the live version would be refused or misread.
    pub breaking: bool,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which side of the model a tensor is on; the same change breaks one side and not the
/// other (an opened dimension widens an input, but an output may then give other shapes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Input,
    Output,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Input => "input",
            Side::Output => "output",
        }
    }
}

/// Every difference from `live` to `candidate`, inputs first, in the live version's order.
pub fn compare(live: &ModelInfo, candidate: &ModelInfo) -> Vec<Difference> {
    let mut out = specs(Side::Input, &live.inputs, &candidate.inputs);
    out.extend(specs(Side::Output, &live.outputs, &candidate.outputs));
    out
}

/// The breaking differences, joined for a reason line; `None` when there are none.
pub fn breaking(differences: &[Difference]) -> Option<String> {
    let texts: Vec<&str> = differences.iter().filter(|d| d.breaking).map(|d| d.text.as_str()).collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

fn specs(side: Side, live: &[TensorSpec], candidate: &[TensorSpec]) -> Vec<Difference> {
    let mut out = Vec::new();
    let kind = side.name();
    for old in live {
        match candidate.iter().find(|s| s.name == old.name) {
            None => out.push(Difference { text: format!("{kind} '{}' was removed", old.name), breaking: true }),
            Some(new) => out.extend(spec(side, old, new)),
        }
    }
    for new in candidate.iter().filter(|s| !live.iter().any(|o| o.name == s.name)) {
        // A new input must be sent by clients that do not know it; a new output is only more.
        let text = format!("{kind} '{}' is new ({} {:?})", new.name, new.dtype, new.oip_shape());
        out.push(Difference { text, breaking: side == Side::Input });
    }
    out
}

fn spec(side: Side, old: &TensorSpec, new: &TensorSpec) -> Vec<Difference> {
    let at = format!("{} '{}'", side.name(), old.name);
    if old.dtype != new.dtype {
        let text = format!("{at}: datatype was {}, is {}", old.dtype, new.dtype);
        return vec![Difference { text, breaking: true }];
    }
    if old.shape.len() != new.shape.len() {
        let text = format!(
            "{at}: rank was {} (shape {:?}), is {} (shape {:?})",
            old.shape.len(),
            old.oip_shape(),
            new.shape.len(),
            new.oip_shape()
        );
        return vec![Difference { text, breaking: true }];
    }
    let shown = |d: Option<usize>| d.map_or("open".to_string(), |d| d.to_string());
    old.shape
        .iter()
        .zip(&new.shape)
        .enumerate()
        .filter(|(_, (o, n))| o != n)
        .map(|(axis, (o, n))| {
            let breaking = match (o, n) {
                (Some(_), Some(_)) => true,
                // Fixing an open input dimension refuses what was taken.
                (None, Some(_)) => side == Side::Input,
                // Opening one takes more; an output's opened or fixed dimension is a
                // typing detail of the export more often than a change in what it gives.
                _ => false,
            };
            Difference { text: format!("{at}: dimension {axis} was {}, is {}", shown(*o), shown(*n)), breaking }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    fn spec(name: &str, dtype: DType, shape: &[Option<usize>]) -> TensorSpec {
        TensorSpec { name: name.into(), dtype, shape: shape.to_vec() }
    }

    fn info(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> ModelInfo {
        ModelInfo { load_mode: "strict".into(), plans_built: 0, device: "cpu".into(), inputs, outputs, labels: None }
    }

    fn mlp(features: usize) -> ModelInfo {
        info(
            vec![spec("features", DType::F32, &[None, Some(features)])],
            vec![spec("probabilities", DType::F32, &[None, Some(2)])],
        )
    }

    #[test]
    fn the_same_signature_has_no_difference() {
        assert!(compare(&mlp(30), &mlp(30)).is_empty());
        assert_eq!(breaking(&compare(&mlp(30), &mlp(30))), None);
    }

    #[test]
    fn a_grown_input_is_breaking_and_named() {
        let diff = compare(&mlp(30), &mlp(31));
        assert_eq!(
            diff,
            vec![Difference { text: "input 'features': dimension 1 was 30, is 31".into(), breaking: true }]
        );
        assert_eq!(breaking(&diff).unwrap(), "input 'features': dimension 1 was 30, is 31");
    }

    #[test]
    fn names_datatypes_and_ranks_are_compared() {
        let live = info(
            vec![spec("x", DType::F32, &[None, Some(4)]), spec("mask", DType::Bool, &[None])],
            vec![spec("y", DType::F32, &[None, Some(1)])],
        );
        let candidate = info(
            vec![spec("x", DType::F64, &[None, Some(4)]), spec("extra", DType::I64, &[None])],
            vec![spec("y", DType::F32, &[None]), spec("z", DType::F32, &[None])],
        );
        let texts: Vec<(String, bool)> = compare(&live, &candidate).into_iter().map(|d| (d.text, d.breaking)).collect();
        assert_eq!(
            texts,
            vec![
                ("input 'x': datatype was FP32, is FP64".to_string(), true),
                ("input 'mask' was removed".to_string(), true),
                ("input 'extra' is new (INT64 [-1])".to_string(), true),
                ("output 'y': rank was 2 (shape [-1, 1]), is 1 (shape [-1])".to_string(), true),
                ("output 'z' is new (FP32 [-1])".to_string(), false),
            ]
        );
    }

    #[test]
    fn open_and_fixed_dimensions_break_one_way_only() {
        let open = info(vec![spec("x", DType::F32, &[None, Some(4)])], vec![spec("y", DType::F32, &[None, Some(1)])]);
        let fixed =
            info(vec![spec("x", DType::F32, &[Some(1), Some(4)])], vec![spec("y", DType::F32, &[Some(1), None])]);
        let narrowed = compare(&open, &fixed);
        assert_eq!(narrowed[0].text, "input 'x': dimension 0 was open, is 1");
        assert!(narrowed[0].breaking, "a batch dimension fixed at 1 refuses batches");
        assert!(narrowed[1..].iter().all(|d| !d.breaking), "{narrowed:?}");
        let widened = compare(&fixed, &open);
        assert_eq!(widened[0].text, "input 'x': dimension 0 was 1, is open");
        assert!(breaking(&widened).is_none(), "{widened:?}");
    }
}
