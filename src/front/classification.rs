//! Triton's classification extension: an output asked for with
//! `"parameters": {"classification": K}` is answered as its K largest values, each as the
//! BYTES string `"value:index"` or, where the model's labels name the class,
//! `"value:index:label"` (Triton's `extension_classification.md` and `classification.cc`:
//! values printed as C's `%f` for floats, as integers for integer types; classes sorted
//! by value, largest first; K capped at the number of classes).
//!
//! For an output with a batch dimension (its first dimension open in the signature) each
//! row is classified on its own and the answer is `[rows, K]`; otherwise the whole output
//! is one row and the answer is `[K]`, as Triton does for models without batching.

use super::error::ApiError;
use crate::tensor::{DType, Tensor, TensorSpec, Values};

/// Why `spec` cannot be classified, if it cannot: only numbers have an order.
pub fn refusal(spec: &TensorSpec) -> Option<String> {
    matches!(spec.dtype, DType::Bytes | DType::Bool).then(|| {
        format!(
            "output '{}': classification needs class scores, but it is {} (ask for it without \"classification\")",
            spec.name, spec.dtype
        )
    })
}

/// The `k` largest values of `output` (per row when `batched`), as Triton's strings;
/// `labels` name the classes by index where given.
pub fn top_k(output: &Tensor, k: usize, batched: bool, labels: Option<&[String]>) -> Result<Tensor, ApiError> {
    let values = output.values();
    let scores = values.to_f64();
    if scores.len() != values.len() {
        return Err(ApiError::bad_request(format!(
            "output '{}': classification needs class scores, but it is {}",
            output.name, output.dtype
        )));
    }
    let per_row = batched && !output.shape.is_empty();
    let rows = if per_row { output.shape[0] } else { 1 };
    let width = scores.len().checked_div(rows).unwrap_or(0);
    let kept = k.min(width);
    let mut classes = Vec::with_capacity(rows * kept);
    for row in 0..rows {
        let start = row * width;
        for index in largest(&scores[start..start + width], kept) {
            classes.push(class_text(&values, start + index, index, labels).into_bytes());
        }
    }
    let shape = if per_row { vec![rows, kept] } else { vec![kept] };
    Tensor::from_values(output.name.clone(), shape, Values::Bytes(classes))
        .map_err(|e| ApiError::internal(format!("classification of output '{}': {e}", output.name)))
}

/// Indices of the `k` largest scores, largest first; equal scores keep index order, and
/// NaN ranks below every number.
fn largest(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| if scores[i].is_nan() { f64::NEG_INFINITY } else { scores[i] };
    order.sort_by(|a, b| key(*b).total_cmp(&key(*a)));
    order.truncate(k);
    order
}

/// `"value:index[:label]"` for element `at` of `values`, class `index` of its row.
fn class_text(values: &Values, at: usize, index: usize, labels: Option<&[String]>) -> String {
    let value = value_text(values, at);
    match labels.and_then(|l| l.get(index)) {
        Some(label) => format!("{value}:{index}:{label}"),
        None => format!("{value}:{index}"),
    }
}

/// One element as C++'s `std::to_string` prints it: `%f` (six decimals) for floats, the
/// integer itself for integer types (exactly, even past 2^53).
fn value_text(values: &Values, at: usize) -> String {
    match values {
        Values::U8(v) => v[at].to_string(),
        Values::U16(v) => v[at].to_string(),
        Values::U32(v) => v[at].to_string(),
        Values::U64(v) => v[at].to_string(),
        Values::I8(v) => v[at].to_string(),
        Values::I16(v) => v[at].to_string(),
        Values::I32(v) => v[at].to_string(),
        Values::I64(v) => v[at].to_string(),
        Values::F16(v) => format!("{:.6}", v[at].to_f32()),
        Values::BF16(v) => format!("{:.6}", v[at].to_f32()),
        Values::F32(v) => format!("{:.6}", v[at]),
        Values::F64(v) => format!("{:.6}", v[at]),
        Values::Bool(_) | Values::Bytes(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(t: &Tensor) -> Vec<String> {
        match t.values() {
            Values::Bytes(items) => items.into_iter().map(|b| String::from_utf8(b).unwrap()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_row_gives_its_k_largest_with_labels_as_triton_prints_them() {
        let scores = Tensor::from_values("p", vec![2, 3], Values::F32(vec![0.1, 0.7, 0.2, 0.5, 0.25, 0.25])).unwrap();
        let labels = ["low".to_string(), "mid".into(), "high".into()];
        let top = top_k(&scores, 2, true, Some(&labels)).unwrap();
        assert_eq!((top.dtype, top.shape.clone()), (DType::Bytes, vec![2, 2]));
        assert_eq!(
            strings(&top),
            ["0.700000:1:mid", "0.200000:2:high", "0.500000:0:low", "0.250000:1:mid"],
            "ties keep index order"
        );
        // K past the number of classes is capped; without labels, value:index.
        let all = top_k(&scores, 10, true, None).unwrap();
        assert_eq!(all.shape, vec![2, 3]);
        assert_eq!(strings(&all)[..3], ["0.700000:1", "0.200000:2", "0.100000:0"]);
    }

    #[test]
    fn an_output_without_a_batch_dimension_is_one_row() {
        let scores = Tensor::from_values("y", vec![2, 2], Values::I64(vec![3, 9_007_199_254_740_993, -1, 5])).unwrap();
        let top = top_k(&scores, 2, false, None).unwrap();
        assert_eq!(top.shape, vec![2]);
        assert_eq!(strings(&top), ["9007199254740993:1", "5:3"]);
    }

    #[test]
    fn half_precision_and_nan_scores() {
        use half::f16;
        let h = [0.5, f32::NAN, 2.0].map(f16::from_f32).to_vec();
        let scores = Tensor::from_values("h", vec![1, 3], Values::F16(h)).unwrap();
        assert_eq!(strings(&top_k(&scores, 3, true, None).unwrap()), ["2.000000:2", "0.500000:0", "NaN:1"]);
    }

    #[test]
    fn strings_and_booleans_are_refused() {
        for dtype in [DType::Bytes, DType::Bool] {
            let spec = TensorSpec { name: "label".into(), dtype, shape: vec![None] };
            let refusal = refusal(&spec).unwrap();
            assert!(refusal.starts_with("output 'label': classification needs class scores"), "{refusal}");
        }
        assert_eq!(refusal(&TensorSpec { name: "p".into(), dtype: DType::F32, shape: vec![None, Some(3)] }), None);
    }
}
