//! `model.toml`: what a version declares beside its ONNX file.
//!
//! ```toml
//! [labels]                    # class names, index order, for the columns of one output
//! output = "probabilities"    # optional: defaults to the output /predict reads
//! names = ["cat", "dog"]
//!
//! [inputs.frames]             # a concrete shape to load with, for models tract cannot
//! shape = [1, 50, 40]         # type with open dimensions
//!
//! [warmup.inputs.frames]      # run once after loading (default: zeros, open dims = 1)
//! shape = [1, 50, 40]
//! data = [0.0, ...]
//!
//! [[golden]]                  # must match before the version takes traffic
//! atol = 1e-4                 # |got - want| <= atol + rtol * |want|
//! rtol = 1e-3
//! inputs.x = { shape = [1, 2], data = [1.0, 2.0] }
//! outputs.y = { shape = [1, 1], data = [3.0] }
//!
//! [predict]                   # how /predict reads the answer
//! output = "probabilities"
//! kind = "probabilities"      # or "logits" (softmax applied) or "regression"
//!
//! [outputs.log_probs]         # values an output may legitimately hold
//! allow_infinite = true       # ±Inf is an answer (log of 0), not a failure
//! allow_nan = false           # NaN still fails the request (the default for both)
//!
//! [outputs.scores]            # what an output's rows are, for outputs /predict does not
//! kind = "probabilities"      # read: "probabilities", "logits" or "regression"
//!
//! [validation]                # an operator's labelled examples, answered by a
//! path = "validation.jsonl"   # candidate and the live version before any traffic
//! ```
//!
//! An output holding NaN or ±Inf that its `[outputs.<name>]` does not allow fails the
//! request (500, counted as the version's failure). Allowed ones are answered in JSON as
//! the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (the proto3 JSON mapping's
//! spelling), never as a silent `null`.
//!
//! What the file declares of outputs is their contract, checked on every answer the
//! version gives (golden examples and warm-up included): the rows of an output of
//! `kind = "probabilities"` (`[predict]`'s output, or an `[outputs.<name>]`) each lie in
//! [0, 1] and sum to 1, within [`PROBABILITY_TOLERANCE`]; a labelled output's rows are as
//! wide as its labels. An answer that breaks it fails the request like a NaN does.

use crate::tensor::{DType, Tensor, Values};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file a version directory must hold.
pub const MODEL_FILE: &str = "model.onnx";
/// The optional file beside it, which the supervisor and the worker both read.
pub const MANIFEST_FILE: &str = "model.toml";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("could not read {path}: {error}")]
    Unreadable { path: PathBuf, error: std::io::Error },
    #[error("invalid {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The engine for this version, over the config's choice for the model.
    #[serde(default)]
    pub engine: Option<super::engine::EngineKind>,
    #[serde(default)]
    pub labels: Option<LabelsSpec>,
    #[serde(default)]
    pub inputs: BTreeMap<String, InputHint>,
    #[serde(default)]
    pub warmup: Option<Warmup>,
    #[serde(default)]
    pub golden: Vec<Golden>,
    #[serde(default)]
    pub predict: PredictSpec,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputSpec>,
    #[serde(default)]
    pub validation: Option<ValidationSpec>,
}

/// How far a probability may lie outside [0, 1], and a row's sum from 1, and still be a
/// probability: a softmax computed in half precision over 1,000 classes sums within 5e-4
/// of 1; dropped normalisation (logits, scores) is off by far more on almost every row.
pub const PROBABILITY_TOLERANCE: f64 = 5e-3;

/// `[validation]`: where a version's validation set lies (a JSON-lines file of inputs with
/// their expected label or value), relative to the version directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    pub path: PathBuf,
}

/// The file a version's validation set is read from when `[validation]` names none.
pub const VALIDATION_FILE: &str = "validation.jsonl";

/// `[outputs.<name>]`: what one output may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// ±Inf is a legitimate value (log-probabilities), answered rather than failed.
    #[serde(default)]
    pub allow_infinite: bool,
    /// NaN is a legitimate value, answered rather than failed.
    #[serde(default)]
    pub allow_nan: bool,
    /// What the output's rows are: `probabilities` is a contract checked on every answer;
    /// `logits` and `regression` tell the rollout gate how to read them.
    #[serde(default)]
    pub kind: Option<PredictKind>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSpec {
    pub output: Option<String>,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputHint {
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    pub inputs: BTreeMap<String, Example>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    pub inputs: BTreeMap<String, Example>,
    pub outputs: BTreeMap<String, Example>,
    #[serde(default = "default_atol")]
    pub atol: f64,
    #[serde(default = "default_rtol")]
    pub rtol: f64,
}

fn default_atol() -> f64 {
    1e-4
}
fn default_rtol() -> f64 {
    1e-3
}

/// A literal tensor in the manifest; its element type comes from the model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub shape: Vec<usize>,
    pub data: Vec<toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictSpec {
    pub output: Option<String>,
    pub kind: Option<PredictKind>,
}

/// How `/predict` turns an output row into an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PredictKind {
    /// Rows are class probabilities: the answer is the arg-max and its value.
    Probabilities,
    /// Rows are class scores: the answer is the arg-max and its softmax probability.
    Logits,
    /// One value per row, answered as is, without a probability.
    Regression,
}

impl PredictSpec {
    /// The output `/predict` reads: the one named here, else the labelled one, else the
    /// first floating-point output, else the first.
    pub fn output_of<'a>(&'a self, info: &'a super::ModelInfo) -> Option<&'a str> {
        self.output
            .as_deref()
            .or_else(|| info.labels.as_ref().map(|l| l.output.as_str()))
            .or_else(|| info.outputs.iter().find(|o| o.dtype.is_float()).map(|o| o.name.as_str()))
            .or_else(|| info.outputs.first().map(|o| o.name.as_str()))
    }
}

impl Manifest {
    /// What the rows of `output` are, as declared: its `[outputs.<name>] kind`, else
    /// `[predict] kind` when it is the output `/predict` reads.
    pub fn kind_of(&self, output: &str, info: &super::ModelInfo) -> Option<PredictKind> {
        let declared = self.outputs.get(output).and_then(|o| o.kind);
        declared.or(self.predict.kind.filter(|_| self.predict.output_of(info) == Some(output)))
    }

    /// The version's validation set, if it has one: `[validation] path`, else a
    /// `validation.jsonl` beside the model file.
    pub fn validation_file(&self, version_dir: &Path) -> Option<PathBuf> {
        match &self.validation {
            Some(spec) => Some(version_dir.join(&spec.path)),
            None => Some(version_dir.join(VALIDATION_FILE)).filter(|p| p.is_file()),
        }
    }

    /// Reads `path`, or gives the empty manifest when the file does not exist.
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(source) => {
                return Err(ManifestError::Unreadable { path: path.into(), error: source });
            }
        };
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| ManifestError::Invalid { path: path.into(), message: e.to_string() })?;
        manifest.validate().map_err(|message| ManifestError::Invalid { path: path.into(), message })?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, hint) in &self.inputs {
            if hint.shape.contains(&0) {
                return Err(format!("inputs.{name}.shape {:?} has a zero dimension", hint.shape));
            }
        }
        for (i, g) in self.golden.iter().enumerate() {
            if g.inputs.is_empty() || g.outputs.is_empty() {
                return Err(format!("golden[{i}] needs both inputs and outputs"));
            }
            if !(g.atol >= 0.0 && g.rtol >= 0.0) {
                return Err(format!("golden[{i}]: atol and rtol must be >= 0"));
            }
        }
        if self.labels.as_ref().is_some_and(|l| l.names.is_empty()) {
            return Err("labels.names is empty".into());
        }
        Ok(())
    }
}

impl Example {
    /// The example as a tensor of `dtype`, checking that the data fills the shape and
    /// that each value fits the type.
    pub fn to_tensor(&self, name: &str, dtype: DType) -> Result<Tensor, String> {
        let mut values = Values::with_capacity(dtype, self.data.len());
        for (i, v) in self.data.iter().enumerate() {
            push_toml(&mut values, v).ok_or_else(|| format!("{name}: data[{i}] = {v} is not a valid {dtype} value"))?;
        }
        Tensor::from_values(name, self.shape.clone(), values).map_err(|e| e.to_string())
    }
}

fn push_toml(values: &mut Values, v: &toml::Value) -> Option<()> {
    use toml::Value as T;
    match (values, v) {
        (Values::Bool(out), T::Boolean(b)) => out.push(*b),
        (Values::F32(out), T::Float(f)) => out.push(*f as f32),
        (Values::F64(out), T::Float(f)) => out.push(*f),
        (Values::F32(out), T::Integer(i)) => out.push(*i as f32),
        (Values::F64(out), T::Integer(i)) => out.push(*i as f64),
        (Values::F16(out), T::Float(f)) => out.push(crate::tensor::f16_from_f64(*f)?),
        (Values::F16(out), T::Integer(i)) => out.push(crate::tensor::f16_from_f64(*i as f64)?),
        (Values::BF16(out), T::Float(f)) => out.push(crate::tensor::bf16_from_f64(*f)?),
        (Values::BF16(out), T::Integer(i)) => out.push(crate::tensor::bf16_from_f64(*i as f64)?),
        (Values::Bytes(out), T::String(s)) => out.push(s.as_bytes().to_vec()),
        (values, T::Integer(i)) => push_int(values, *i)?,
        _ => return None,
    }
    Some(())
}

fn push_int(values: &mut Values, i: i64) -> Option<()> {
    match values {
        Values::U8(out) => out.push(i.try_into().ok()?),
        Values::U16(out) => out.push(i.try_into().ok()?),
        Values::U32(out) => out.push(i.try_into().ok()?),
        Values::U64(out) => out.push(i.try_into().ok()?),
        Values::I8(out) => out.push(i.try_into().ok()?),
        Values::I16(out) => out.push(i.try_into().ok()?),
        Values::I32(out) => out.push(i.try_into().ok()?),
        Values::I64(out) => out.push(i),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest_parses() {
        let m: Manifest = toml::from_str(
            r#"
            [labels]
            names = ["a", "b"]
            [inputs.x]
            shape = [1, 2]
            [warmup.inputs.x]
            shape = [1, 2]
            data = [1, 2.5]
            [[golden]]
            inputs.x = { shape = [1, 2], data = [1.0, 2.0] }
            outputs.y = { shape = [1], data = [3.0] }
            [predict]
            kind = "logits"
            "#,
        )
        .unwrap();
        assert!(m.validate().is_ok());
        assert_eq!(m.predict.kind, Some(PredictKind::Logits));
        let t = m.warmup.unwrap().inputs["x"].to_tensor("x", DType::F32).unwrap();
        assert_eq!(t.values(), Values::F32(vec![1.0, 2.5]));
    }

    #[test]
    fn examples_reject_values_outside_the_type() {
        let e = Example { shape: vec![1], data: vec![toml::Value::Integer(300)] };
        assert!(e.to_tensor("x", DType::U8).unwrap_err().contains("not a valid UINT8"));
        let e = Example { shape: vec![2], data: vec![toml::Value::Integer(3)] };
        assert!(e.to_tensor("x", DType::I64).unwrap_err().contains("2 elements"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Manifest>("lables = []").is_err());
    }
}
