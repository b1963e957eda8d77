//! The simple protocol for single-input models: `POST /predict` with
//! `{"features": [...], "model"?: "name"}` and `POST /batch_predict` with a list of such
//! objects, answering `{"prediction", "probability", "model_version"}` per example.
//!
//! Both build one batch tensor (a single example is a batch of one) and share the same
//! code; the batch runs as one inference. The answer is read from one output row per
//! example: a class (its label when the model has labels, else its index) with its
//! probability, or a regression value without one.

use super::error::ApiError;
use super::json;
use crate::repo::PredictKind;
use crate::router::{ModelInfo, Pool};
use crate::tensor::{DType, Tensor, TensorSpec, Values};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One example as the client sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example<'a> {
    #[serde(borrow)]
    features: &'a RawValue,
    #[serde(default)]
    model: Option<String>,
}

/// Parses either body shape into examples.
pub fn parse_body(body: &[u8], batch: bool) -> Result<Vec<Example<'_>>, ApiError> {
    let shape_hint = match batch {
        true => "a JSON list of {\"features\": [...]} objects",
        false => "{\"features\": [...], \"model\"?: \"name\"}",
    };
    let malformed = |e: serde_json::Error| ApiError::bad_request(format!("malformed body: {e}; expected {shape_hint}"));
    // `/predict` takes one object, `/batch_predict` a list (or one object, a batch of one).
    let is_list = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let examples = match (is_list, batch) {
        (false, _) => vec![serde_json::from_slice::<Example>(body).map_err(malformed)?],
        (true, true) => serde_json::from_slice::<Vec<Example>>(body).map_err(malformed)?,
        (true, false) => {
            return Err(ApiError::bad_request(format!(
                "/predict takes one example: {shape_hint}; send lists to /batch_predict"
            )));
        }
    };
    match examples.is_empty() {
        true => Err(ApiError::bad_request("batch_predict needs at least one example")),
        false => Ok(examples),
    }
}

/// The model the examples name: all the same, or none (then the only configured model).
pub fn model_name(examples: &[Example], models: &[String]) -> Result<String, ApiError> {
    let mut named = examples.iter().filter_map(|e| e.model.as_deref());
    match named.next() {
        Some(first) if named.all(|m| m == first) => Ok(first.to_string()),
        Some(_) => Err(ApiError::bad_request("all examples of a batch must name the same model")),
        None if models.len() == 1 => Ok(models[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "\"model\" is required: {} models are served ({})",
            models.len(),
            models.join(", ")
        ))),
    }
}

/// Stacks the examples' features into one batch tensor for the model's single input. The
/// body was read before routing; what this refuses, this version's signature refuses.
pub fn batch_tensor(examples: &[Example], info: &ModelInfo) -> Result<Tensor, ApiError> {
    version_tensor(examples, info).map_err(|e| ApiError::not_for_version(e.message))
}

fn version_tensor(examples: &[Example], info: &ModelInfo) -> Result<Tensor, ApiError> {
    let [input] = info.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "the model has {} inputs; /predict serves single-input models (use /v2/models/{{model}}/infer)",
            info.inputs.len()
        )));
    };
    if input.dtype == DType::Bytes {
        return Err(ApiError::bad_request("the model takes strings; /predict serves numeric features"));
    }
    let mut row_shape: Option<Vec<usize>> = None;
    let mut all = Values::with_capacity(input.dtype, 0);
    for (i, example) in examples.iter().enumerate() {
        let at = |e: String| ApiError::bad_request(if examples.len() > 1 { format!("example {i}: {e}") } else { e });
        let parsed = json::parse(example.features.get(), input.dtype).map_err(|e| at(format!("features: {e}")))?;
        let shape = example_shape(input, &parsed.shape).map_err(at)?;
        match &row_shape {
            Some(first) if *first != shape => {
                return Err(at(format!("features shape {shape:?} differs from the first example's {first:?}")));
            }
            _ => row_shape = Some(shape),
        }
        append(&mut all, parsed.values);
    }
    let mut shape = vec![examples.len()];
    shape.extend(row_shape.unwrap_or_default());
    let tensor =
        Tensor::from_values(input.name.clone(), shape, all).map_err(|e| ApiError::bad_request(e.to_string()))?;
    input.admits(&tensor).map_err(ApiError::bad_request)?;
    Ok(tensor)
}

/// The shape of one example for an input whose first dimension is the batch: the nested
/// shape of the features when it matches, or a flat list filling the fixed dimensions.
fn example_shape(input: &TensorSpec, features: &[usize]) -> Result<Vec<usize>, String> {
    let row = &input.shape[1.min(input.shape.len())..];
    let fits =
        features.len() == row.len() && row.iter().zip(features).all(|(want, got)| want.is_none_or(|w| w == *got));
    if fits {
        return Ok(features.to_vec());
    }
    let fixed: Option<Vec<usize>> = row.iter().copied().collect();
    if let (Some(fixed), [len]) = (&fixed, features)
        && fixed.iter().product::<usize>() == *len
    {
        return Ok(fixed.clone());
    }
    let want: Vec<i64> = row.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
    Err(format!(
        "features: expected shape {want:?} for one example of input '{}' (shape {:?}), got {features:?}",
        input.name,
        input.oip_shape()
    ))
}

fn append(all: &mut Values, more: Values) {
    macro_rules! extend {
        ($($v:ident),*) => {
            match (all, more) {
                $((Values::$v(a), Values::$v(b)) => a.extend(b),)*
                _ => unreachable!("parsed as the input's own type"),
            }
        };
    }
    extend!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F32, F64, F16, BF16, Bytes)
}

/// One answer. Non-finite values (only where the model.toml allows them) are written as
/// `"NaN"`, `"Infinity"` or `"-Infinity"`, as in OIP answers.
#[derive(Serialize, Debug, PartialEq)]
pub struct Prediction {
    pub prediction: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "probability")]
    pub probability: Option<f64>,
    pub model_version: String,
}

fn probability<S: serde::Serializer>(p: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => json::Float(*p).serialize(s),
        None => s.serialize_none(),
    }
}

/// Reads one answer per example from the outputs.
pub fn answers(
    pool: &Pool,
    info: &ModelInfo,
    outputs: &[Tensor],
    examples: usize,
) -> Result<Vec<Prediction>, ApiError> {
    let output = chosen_output(pool, info, outputs)?;
    let values = output.to_f64();
    if values.is_empty() || values.len() % examples != 0 {
        return Err(ApiError::internal(format!(
            "output '{}' has shape {:?}, which does not split into {examples} rows",
            output.name, output.shape
        )));
    }
    let width = values.len() / examples;
    let labels = info.labels.as_ref().filter(|l| l.output == output.name).map(|l| l.names.as_slice());
    let rows = values.chunks(width).map(|row| answer(row, pool.predict.kind, labels, pool.version));
    Ok(rows.collect())
}

/// The output `/predict` reads: the one model.toml names, else the labelled one, else the
/// first floating-point output.
pub(super) fn chosen_output<'a>(pool: &Pool, info: &ModelInfo, outputs: &'a [Tensor]) -> Result<&'a Tensor, ApiError> {
    let name = pool
        .predict
        .output
        .clone()
        .or_else(|| info.labels.as_ref().map(|l| l.output.clone()))
        .or_else(|| outputs.iter().find(|t| t.dtype.is_float()).map(|t| t.name.clone()))
        .or_else(|| outputs.first().map(|t| t.name.clone()));
    name.and_then(|n| outputs.iter().find(|t| t.name == n))
        .filter(|t| t.dtype != DType::Bytes)
        .ok_or_else(|| ApiError::internal("the model has no numeric output /predict can read"))
}

fn answer(row: &[f64], kind: Option<PredictKind>, labels: Option<&[String]>, version: u64) -> Prediction {
    let kind = kind.unwrap_or_else(|| guess_kind(row));
    let model_version = version.to_string();
    if kind == PredictKind::Regression {
        let prediction = match row {
            [v] => json::float_value(*v),
            _ => serde_json::Value::Array(row.iter().map(|v| json::float_value(*v)).collect()),
        };
        return Prediction { prediction, probability: None, model_version };
    }
    let (best, score) = row.iter().enumerate().fold(
        (0, f64::NEG_INFINITY),
        |(bi, bv), (i, v)| {
            if *v > bv { (i, *v) } else { (bi, bv) }
        },
    );
    let probability = match kind {
        PredictKind::Logits => 1.0 / row.iter().map(|v| (v - score).exp()).sum::<f64>(),
        _ => score,
    };
    let prediction = match labels.and_then(|l| l.get(best)) {
        Some(label) => serde_json::json!(label),
        None => serde_json::json!(best),
    };
    Prediction { prediction, probability: Some(probability), model_version }
}

/// How to read a row of `pool`'s output: as model.toml says, else guessed from the row.
pub(super) fn kind_of(pool: &Pool, row: &[f64]) -> PredictKind {
    pool.predict.kind.unwrap_or_else(|| guess_kind(row))
}

/// Every class's probability in one row of a classifier's output: the row itself for
/// probabilities, its softmax for logits.
pub(super) fn class_probabilities(row: &[f64], kind: PredictKind) -> Vec<f64> {
    match kind {
        PredictKind::Logits => {
            let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exp: Vec<f64> = row.iter().map(|v| (v - top).exp()).collect();
            let sum: f64 = exp.iter().sum();
            exp.iter().map(|e| e / sum).collect()
        }
        _ => row.to_vec(),
    }
}

/// Without a declared kind: one value is a regression; a row that is already a
/// distribution is probabilities; anything else is scores, read through softmax.
fn guess_kind(row: &[f64]) -> PredictKind {
    let is_distribution = row.iter().all(|v| (0.0..=1.0).contains(v)) && (row.iter().sum::<f64>() - 1.0).abs() < 1e-3;
    match row.len() {
        1 => PredictKind::Regression,
        _ if is_distribution => PredictKind::Probabilities,
        _ => PredictKind::Logits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_take_labels_and_probabilities() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let p = answer(&[0.2, 0.8], None, Some(&labels), 3);
        assert_eq!(p.prediction, serde_json::json!("b"));
        assert_eq!(p.probability, Some(0.8));
        assert_eq!(p.model_version, "3");
    }

    #[test]
    fn logits_go_through_softmax() {
        let p = answer(&[0.0, 2.0_f64.ln()], None, None, 1);
        assert_eq!(p.prediction, serde_json::json!(1));
        assert!((p.probability.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn single_values_are_regressions() {
        let p = answer(&[4.5], None, None, 1);
        assert_eq!((p.prediction, p.probability), (serde_json::json!(4.5), None));
    }

    #[test]
    fn allowed_infinities_are_named_in_answers() {
        let p = answer(&[f64::NEG_INFINITY], Some(PredictKind::Regression), None, 1);
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"prediction":"-Infinity","model_version":"1"}"#);
        let p = answer(&[f64::NEG_INFINITY, 0.0], Some(PredictKind::Probabilities), None, 1);
        assert_eq!(p.prediction, serde_json::json!(1));
        let p = Prediction { prediction: serde_json::json!(0), probability: Some(f64::NAN), model_version: "1".into() };
        assert!(serde_json::to_string(&p).unwrap().contains(r#""probability":"NaN""#));
    }

    #[test]
    fn example_shapes_match_nested_or_fill_fixed_dims() {
        let spec = TensorSpec { name: "x".into(), dtype: DType::F32, shape: vec![None, Some(2), Some(2)] };
        assert_eq!(example_shape(&spec, &[2, 2]), Ok(vec![2, 2]));
        assert_eq!(example_shape(&spec, &[4]), Ok(vec![2, 2]));
        assert!(example_shape(&spec, &[5]).unwrap_err().contains("expected shape [2, 2]"));
        let seq = TensorSpec { name: "s".into(), dtype: DType::F32, shape: vec![None, None, Some(3)] };
        assert_eq!(example_shape(&seq, &[7, 3]), Ok(vec![7, 3]));
    }
}
