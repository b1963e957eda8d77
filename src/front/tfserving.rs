//! The TensorFlow Serving REST API, for clients written against it
//! (<https://www.tensorflow.org/tfx/serving/api_rest>):
//!
//! - `POST /v1/models/{m}[/versions/{v}]:predict` with `instances` (row format: one entry
//!   per batch row, an object keyed by input name for multi-input models) answering
//!   `predictions` (one entry per row; an object keyed by output name unless the model has
//!   one output), or with `inputs` (columnar: the whole tensor, or an object of them)
//!   answering `outputs` likewise;
//! - `:classify` with `examples` (objects keyed by input name, one row each) answering
//!   `result`: per example every class with its score, for models that classify;
//!   `:regress` answering one value per example, for models with one value per row;
//! - `GET /v1/models/{m}[/versions/{v}]`: `model_version_status`, each version's state
//!   (LOADING, AVAILABLE, UNLOADING, END) with its error code; versions a rollout retired
//!   stay listed as END; `GET …/metadata`: the signature as a `signature_def`.
//!
//! Errors are `{"error": "..."}`, as TF Serving sends them. Strings travel as JSON strings
//! or `{"b64": "..."}` objects: an output named `*_bytes` all as base64 (TF Serving's
//! rule), any other string as text where it is UTF-8 and as base64 where not, so no byte
//! is lost. DT_HALF and DT_BFLOAT16 tensors are numbers (rounded to nearest even, refused
//! past the type's range); non-finite floats as modeld writes them elsewhere.

use super::error::ApiError;
use super::json;
use super::predict;
use crate::repo::PredictKind;
use crate::router::{End, ModelInfo, Phase, Pool, Retired, RoutingTable};
use crate::tensor::{DType, Tensor, TensorSpec, Values};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What a `/v1/models/…:verb` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Predict,
    Classify,
    Regress,
}

impl Verb {
    pub fn parse(verb: &str) -> Option<Verb> {
        match verb {
            "predict" => Some(Verb::Predict),
            "classify" => Some(Verb::Classify),
            "regress" => Some(Verb::Regress),
            _ => None,
        }
    }
}

/// A request body, its JSON read but not yet matched to any version's signature.
#[derive(Debug, Deserialize)]
pub struct Body<'a> {
    #[serde(borrow, default)]
    instances: Option<&'a RawValue>,
    #[serde(borrow, default)]
    inputs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    examples: Option<&'a RawValue>,
    /// Accepted and ignored: a model has one signature.
    #[serde(default, rename = "signature_name")]
    _signature_name: Option<String>,
}

/// How the request laid its tensors out, which the answer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Rows,
    Columns,
}

pub fn parse_body(body: &[u8], verb: Verb) -> Result<Body<'_>, ApiError> {
    let parsed: Body =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    let given = [parsed.instances.is_some(), parsed.inputs.is_some(), parsed.examples.is_some()];
    let ok = match verb {
        Verb::Predict => given == [true, false, false] || given == [false, true, false],
        Verb::Classify | Verb::Regress => given == [false, false, true],
    };
    if !ok {
        let want = match verb {
            Verb::Predict => "exactly one of \"instances\" (rows) or \"inputs\" (columns)",
            _ => "\"examples\"",
        };
        return Err(ApiError::bad_request(format!("the body must hold {want}")));
    }
    Ok(parsed)
}

impl Body<'_> {
    /// The layout of the answer.
    pub fn layout(&self) -> Layout {
        if self.inputs.is_some() { Layout::Columns } else { Layout::Rows }
    }

    /// The request's tensors for a version of signature `info`: refused as invalid for the
    /// version when they do not fit it.
    pub fn tensors(&self, info: &ModelInfo) -> Result<Vec<Tensor>, ApiError> {
        let tensors = match (self.inputs, self.instances.or(self.examples)) {
            (Some(columns), _) => columnar(columns, &info.inputs)?,
            (None, Some(rows)) => row_format(rows, &info.inputs)?,
            (None, None) => unreachable!("parse_body checked a layout is given"),
        };
        for (tensor, spec) in tensors.iter().zip(&info.inputs) {
            spec.admits(tensor).map_err(ApiError::not_for_version)?;
        }
        Ok(tensors)
    }
}

/// `inputs`: one tensor for a single-input model, or an object of them by input name.
fn columnar(columns: &RawValue, specs: &[TensorSpec]) -> Result<Vec<Tensor>, ApiError> {
    match (named_inputs(columns), specs) {
        (Ok(named), _) => {
            refuse_unknown(named.keys(), specs)?;
            specs.iter().map(|s| tensor(s, named.get(&s.name).copied(), None)).collect()
        }
        (Err(_), [single]) => Ok(vec![tensor(single, Some(columns), None)?]),
        (Err(_), _) => Err(ApiError::not_for_version(format!(
            "\"inputs\" must be an object of the model's {} inputs ({})",
            specs.len(),
            names(specs)
        ))),
    }
}

/// `instances` or `examples`: one entry per batch row, an object by input name for a
/// multi-input model (or any model, when the entries are objects).
fn row_format(rows: &RawValue, specs: &[TensorSpec]) -> Result<Vec<Tensor>, ApiError> {
    let entries: Vec<&RawValue> = serde_json::from_str(rows.get())
        .map_err(|_| ApiError::bad_request("\"instances\" (or \"examples\") must be a list, one entry per row"))?;
    if entries.is_empty() {
        return Err(ApiError::bad_request("the list of instances is empty"));
    }
    let objects: Option<Vec<BTreeMap<String, &RawValue>>> = entries.iter().map(|e| named_inputs(e).ok()).collect();
    match (objects, specs) {
        (Some(objects), _) => {
            for object in &objects {
                refuse_unknown(object.keys(), specs)?;
            }
            let rows = |s: &TensorSpec| objects.iter().map(|o| o.get(&s.name).copied()).collect::<Option<Vec<_>>>();
            specs.iter().map(|s| stacked(s, rows(s), entries.len())).collect()
        }
        (None, [single]) => Ok(vec![tensor(single, Some(rows), Some(entries.len()))?]),
        (None, _) => Err(ApiError::not_for_version(format!(
            "the model takes {} inputs ({}): each instance must be an object of them",
            specs.len(),
            names(specs)
        ))),
    }
}

/// An object of inputs by name; `Err` for anything else, a `{"b64": "..."}` value
/// included (TF Serving reads an object whose one member is `b64` as a binary string,
/// so a single string input's rows may all be base64).
fn named_inputs(value: &RawValue) -> Result<BTreeMap<String, &RawValue>, ()> {
    let object: BTreeMap<String, &RawValue> = serde_json::from_str(value.get()).map_err(drop)?;
    match object.get("b64") {
        Some(b64) if object.len() == 1 && b64.get().starts_with('"') => Err(()),
        _ => Ok(object),
    }
}

/// One input from its rows, each an object's value.
fn stacked(spec: &TensorSpec, rows: Option<Vec<&RawValue>>, count: usize) -> Result<Tensor, ApiError> {
    let rows = rows.ok_or_else(|| missing(spec))?;
    let joined = format!("[{}]", rows.iter().map(|r| r.get()).collect::<Vec<_>>().join(","));
    let raw = RawValue::from_string(joined).expect("a list of JSON values is JSON");
    tensor(spec, Some(&raw), Some(count))
}

/// A tensor of `spec`'s type from its JSON; `rows` when it is a list of batch rows (a
/// list of scalars for an input of rank 2 is one value per row).
fn tensor(spec: &TensorSpec, raw: Option<&RawValue>, rows: Option<usize>) -> Result<Tensor, ApiError> {
    let raw = raw.ok_or_else(|| missing(spec))?;
    let name = &spec.name;
    let parsed = match spec.dtype {
        DType::Bytes => strings(raw),
        dtype => json::parse(raw.get(), dtype).map(|p| (p.shape, p.values)),
    }
    .map_err(|e| ApiError::bad_request(format!("input '{name}': {e}")))?;
    let (mut shape, values) = parsed;
    // Rows of one value each, for an input of shape [N, 1].
    if rows.is_some() && shape.len() + 1 == spec.shape.len() && spec.shape.last() == Some(&Some(1)) {
        shape.push(1);
    }
    Tensor::from_values(name.clone(), shape, values).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Strings, or `{"b64": "..."}` objects, nested in lists.
fn strings(raw: &RawValue) -> Result<(Vec<usize>, Values), String> {
    fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        match v {
            Value::Array(items) => {
                match shape.get(depth) {
                    None => shape.push(items.len()),
                    Some(n) if *n != items.len() => return Err("ragged list of strings".into()),
                    Some(_) => {}
                }
                items.iter().try_for_each(|i| walk(i, depth + 1, shape, out))
            }
            Value::String(s) => {
                out.push(s.as_bytes().to_vec());
                Ok(())
            }
            Value::Object(o) => match o.get("b64").and_then(Value::as_str) {
                Some(b64) => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("a \"b64\" value is not base64: {e}"))?;
                    out.push(bytes);
                    Ok(())
                }
                None => Err("objects in a string tensor must be {\"b64\": \"...\"}".into()),
            },
            other => Err(format!("expected a string, got {other}")),
        }
    }
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    walk(&value, 0, &mut shape, &mut out)?;
    Ok((shape, Values::Bytes(out)))
}

fn missing(spec: &TensorSpec) -> ApiError {
    ApiError::not_for_version(format!("missing input '{}'", spec.name))
}

fn refuse_unknown<'k>(keys: impl Iterator<Item = &'k String>, specs: &[TensorSpec]) -> Result<(), ApiError> {
    for key in keys {
        if !specs.iter().any(|s| &s.name == key) {
            return Err(ApiError::not_for_version(format!(
                "unexpected input '{key}' (the model takes {})",
                names(specs)
            )));
        }
    }
    Ok(())
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
}

/// The `:predict` answer, in the request's layout.
pub fn predictions(outputs: &[Tensor], layout: Layout) -> String {
    let single = outputs.len() == 1;
    let body = match layout {
        Layout::Columns => {
            let whole = |t: &Tensor| json::nest(&json::elements(t, string_form(t)), &t.shape);
            match single {
                true => json!({ "outputs": whole(&outputs[0]) }),
                false => {
                    json!({ "outputs": outputs.iter().map(|t| (t.name.clone(), whole(t))).collect::<serde_json::Map<_, _>>() })
                }
            }
        }
        Layout::Rows => {
            let rows = outputs.first().map_or(0, Tensor::rows);
            let per_output: Vec<Vec<Value>> = outputs.iter().map(split_rows).collect();
            let row = |i: usize| match single {
                true => per_output[0][i].clone(),
                false => Value::Object(
                    outputs.iter().zip(&per_output).map(|(t, r)| (t.name.clone(), r[i].clone())).collect(),
                ),
            };
            json!({ "predictions": (0..rows).map(row).collect::<Vec<_>>() })
        }
    };
    body.to_string()
}

/// How an output's strings are written: all as `{"b64": ...}` for a tensor named
/// `*_bytes` (TF Serving's rule for binary outputs), else as text where they are UTF-8
/// and `{"b64": ...}` where not, so no byte is lost either way.
fn string_form(t: &Tensor) -> json::Strings {
    match t.name.ends_with("_bytes") {
        true => json::Strings::Base64,
        false => json::Strings::TextOrBase64,
    }
}

/// An output's rows, each nested by the rest of its shape.
fn split_rows(t: &Tensor) -> Vec<Value> {
    let elements = json::elements(t, string_form(t));
    let rest = t.shape.get(1..).unwrap_or_default();
    let stride = rest.iter().product::<usize>().max(1);
    elements.chunks(stride).map(|row| json::nest(row, rest)).collect()
}

/// The `:classify` answer: per example, every class (its label when the model has them)
/// with its probability; or the `:regress` answer: per example its one value.
pub fn results(
    pool: &Pool,
    info: &ModelInfo,
    outputs: &[Tensor],
    examples: usize,
    verb: Verb,
) -> Result<String, ApiError> {
    let output = predict::chosen_output(pool, info, outputs)?;
    let values = output.to_f64();
    if examples == 0 || values.len() % examples != 0 {
        return Err(ApiError::internal(format!("output '{}' does not split into {examples} examples", output.name)));
    }
    let width = values.len() / examples;
    let rows = values.chunks(width);
    let result: Vec<Value> = match verb {
        Verb::Regress if width == 1 => rows.map(|r| json::float_value(r[0])).collect(),
        Verb::Regress => {
            return Err(ApiError::not_for_version(format!(
                "regress needs one value per example; output '{}' gives {width}",
                output.name
            )));
        }
        _ => {
            let labels = info.labels.as_ref().filter(|l| l.output == output.name).map(|l| l.names.as_slice());
            let mut result = Vec::with_capacity(examples);
            for row in rows {
                let kind = predict::kind_of(pool, row);
                if kind == PredictKind::Regression {
                    return Err(ApiError::not_for_version(format!(
                        "classify needs class scores; output '{}' is a regression (use :regress or :predict)",
                        output.name
                    )));
                }
                let classes = predict::class_probabilities(row, kind).into_iter().enumerate().map(|(i, p)| {
                    let class = labels.and_then(|l| l.get(i)).cloned().unwrap_or_else(|| i.to_string());
                    json!([class, json::float_value(p)])
                });
                result.push(Value::Array(classes.collect()));
            }
            result
        }
    };
    Ok(json!({ "result": result }).to_string())
}

/// `GET /v1/models/{m}[/versions/{v}]`: each version's state, TF Serving's
/// `ModelVersionStatus.State` (`LOADING`, `AVAILABLE`, `UNLOADING`, `END`), with the
/// error beside it, newest version first (as TF Serving lists them). A version whose
/// workers all stopped is `LOADING` again while they restart, with `UNAVAILABLE` saying
/// so; one that failed is `END` with `UNKNOWN` and its reason; one retired by a rollout is
/// `UNLOADING` while it drains, then `END` with `OK`.
pub fn status(table: &RoutingTable, retired: &[Retired], version: Option<u64>) -> Result<String, ApiError> {
    let mut states: BTreeMap<std::cmp::Reverse<u64>, VersionState> = BTreeMap::new();
    for pool in table.all_pools() {
        let state = live_state(pool);
        let slot = states.entry(std::cmp::Reverse(pool.version)).or_insert_with(|| state.clone());
        // Two pools of one version (a settings change rolling out): the one further along.
        if state.rank() > slot.rank() {
            *slot = state;
        }
    }
    for r in retired {
        states.entry(std::cmp::Reverse(r.version)).or_insert_with(|| retired_state(r));
    }
    states.retain(|v, _| version.is_none_or(|asked| asked == v.0));
    if states.is_empty() {
        let what = version.map_or("no version".to_string(), |v| format!("no version {v}"));
        return Err(ApiError::not_found(format!("{what} is being served")));
    }
    let statuses: Vec<Value> = states.into_iter().map(|(v, state)| state.json(v.0)).collect();
    Ok(json!({ "model_version_status": statuses }).to_string())
}

/// A version's state and the error beside it (`None` is `OK`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct VersionState {
    state: &'static str,
    error: Option<(&'static str, String)>,
}

impl VersionState {
    fn ok(state: &'static str) -> VersionState {
        VersionState { state, error: None }
    }

    /// How far along toward serving: AVAILABLE beats LOADING beats UNLOADING beats END.
    fn rank(&self) -> u8 {
        match self.state {
            "AVAILABLE" => 3,
            "LOADING" => 2,
            "UNLOADING" => 1,
            _ => 0,
        }
    }

    fn json(self, version: u64) -> Value {
        let (code, message) = self.error.unwrap_or(("OK", String::new()));
        json!({
            "version": version.to_string(),
            "state": self.state,
            "status": { "error_code": code, "error_message": message },
        })
    }
}

fn live_state(pool: &Pool) -> VersionState {
    match &*pool.phase() {
        Phase::Starting => VersionState::ok("LOADING"),
        Phase::Running if pool.is_ready() => VersionState::ok("AVAILABLE"),
        Phase::Running => VersionState {
            state: "LOADING",
            error: Some(("UNAVAILABLE", "no worker is ready; its workers are restarting".to_string())),
        },
        Phase::Stopping => VersionState::ok("UNLOADING"),
        Phase::Failed { reason } => VersionState { state: "END", error: Some(("UNKNOWN", reason.clone())) },
    }
}

fn retired_state(retired: &Retired) -> VersionState {
    match retired.end() {
        End::Unloading => VersionState::ok("UNLOADING"),
        End::Ended { failure: None } => VersionState::ok("END"),
        End::Ended { failure: Some(reason) } => VersionState { state: "END", error: Some(("UNKNOWN", reason)) },
    }
}

/// `GET …/metadata`: the version's signature as TF Serving's `signature_def`.
pub fn metadata(pool: &Pool) -> Result<String, ApiError> {
    let info = pool.info().ok_or_else(|| {
        ApiError::unavailable(format!("model '{}' version {} has not loaded yet", pool.model, pool.version))
    })?;
    let tensors = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|s| {
                let dims: Vec<Value> =
                    s.oip_shape().iter().map(|d| json!({ "size": d.to_string(), "name": "" })).collect();
                let info = json!({
                    "dtype": tf_dtype(s.dtype),
                    "tensor_shape": { "dim": dims, "unknown_rank": false },
                    "name": s.name,
                });
                (s.name.clone(), info)
            })
            .collect::<serde_json::Map<_, _>>()
    };
    let signature = json!({
        "inputs": tensors(&info.inputs),
        "outputs": tensors(&info.outputs),
        "method_name": "tensorflow/serving/predict",
    });
    Ok(json!({
        "model_spec": { "name": pool.model, "signature_name": "", "version": pool.version.to_string() },
        "metadata": { "signature_def": { "signature_def": { "serving_default": signature } } },
    })
    .to_string())
}

/// TensorFlow's name for an element type (`types.proto`).
fn tf_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "DT_BOOL",
        DType::U8 => "DT_UINT8",
        DType::U16 => "DT_UINT16",
        DType::U32 => "DT_UINT32",
        DType::U64 => "DT_UINT64",
        DType::I8 => "DT_INT8",
        DType::I16 => "DT_INT16",
        DType::I32 => "DT_INT32",
        DType::I64 => "DT_INT64",
        DType::F32 => "DT_FLOAT",
        DType::F64 => "DT_DOUBLE",
        DType::Bytes => "DT_STRING",
        DType::F16 => "DT_HALF",
        DType::BF16 => "DT_BFLOAT16",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: DType, shape: &[Option<usize>]) -> TensorSpec {
        TensorSpec { name: name.into(), dtype, shape: shape.to_vec() }
    }

    fn info(inputs: Vec<TensorSpec>) -> ModelInfo {
        ModelInfo {
            load_mode: "strict".into(),
            plans_built: 0,
            device: "cpu".into(),
            inputs,
            outputs: vec![],
            labels: None,
        }
    }

    #[test]
    fn rows_and_columns_build_the_same_batch() {
        let single = info(vec![spec("x", DType::F32, &[None, Some(2)])]);
        let rows = parse_body(br#"{"instances": [[1, 2], [3, 4]]}"#, Verb::Predict).unwrap();
        let columns = parse_body(br#"{"inputs": [[1, 2], [3, 4]]}"#, Verb::Predict).unwrap();
        let named = parse_body(br#"{"inputs": {"x": [[1, 2], [3, 4]]}}"#, Verb::Predict).unwrap();
        let want = Tensor::from_values("x", vec![2, 2], Values::F32(vec![1., 2., 3., 4.])).unwrap();
        for body in [rows, columns, named] {
            assert_eq!(body.tensors(&single).unwrap(), vec![want.clone()]);
        }
    }

    #[test]
    fn multi_input_instances_are_objects_and_scalar_rows_fill_a_last_dimension_of_one() {
        let two = info(vec![spec("a", DType::F32, &[None, Some(1)]), spec("b", DType::I64, &[None])]);
        let body = parse_body(br#"{"instances": [{"a": 1.5, "b": 7}, {"a": 2.5, "b": 8}]}"#, Verb::Predict).unwrap();
        let tensors = body.tensors(&two).unwrap();
        assert_eq!(tensors[0].shape, vec![2, 1]);
        assert_eq!(tensors[1].values(), Values::I64(vec![7, 8]));
        let missing = parse_body(br#"{"instances": [{"a": 1.5}]}"#, Verb::Predict).unwrap();
        let e = missing.tensors(&two).unwrap_err();
        assert!(e.invalid_for_version() && e.message.contains("missing input 'b'"), "{e:?}");
        let stray = parse_body(br#"{"instances": [{"a": 1, "b": 2, "c": 3}]}"#, Verb::Predict).unwrap();
        assert!(stray.tensors(&two).unwrap_err().message.contains("unexpected input 'c'"));
    }

    #[test]
    fn strings_and_b64_fill_string_inputs() {
        let text = info(vec![spec("s", DType::Bytes, &[None])]);
        let body = parse_body(br#"{"instances": ["hi", {"b64": "AAE="}]}"#, Verb::Predict).unwrap();
        let t = &body.tensors(&text).unwrap()[0];
        assert_eq!(t.values(), Values::Bytes(vec![b"hi".to_vec(), vec![0, 1]]));
        // Rows all base64 are values too, not objects of named inputs; so is one column.
        for body in [&br#"{"instances": [{"b64": "AAE="}]}"#[..], br#"{"inputs": [{"b64": "AAE="}]}"#] {
            let t = &parse_body(body, Verb::Predict).unwrap().tensors(&text).unwrap()[0];
            assert_eq!((t.shape.as_slice(), t.values()), (&[1][..], Values::Bytes(vec![vec![0, 1]])));
        }
        let named = parse_body(br#"{"inputs": {"s": [{"b64": "AAE="}]}}"#, Verb::Predict).unwrap();
        assert_eq!(named.tensors(&text).unwrap()[0].values(), Values::Bytes(vec![vec![0, 1]]));
    }

    #[test]
    fn bodies_need_exactly_one_layout() {
        assert!(parse_body(br#"{"instances": [1], "inputs": [1]}"#, Verb::Predict).is_err());
        assert!(parse_body(br#"{}"#, Verb::Predict).unwrap_err().message.contains("exactly one of"));
        assert!(parse_body(br#"{"instances": [1]}"#, Verb::Classify).unwrap_err().message.contains("examples"));
    }

    fn pool(version: u64, phase: Phase) -> std::sync::Arc<Pool> {
        use crate::router::pool::PoolSpec;
        let pool = Pool::new(PoolSpec { model: "m".into(), version, workers: 1, ..PoolSpec::default() });
        pool.set_phase(phase);
        std::sync::Arc::new(pool)
    }

    fn states(answer: &str) -> Vec<(String, String, String, String)> {
        let answer: Value = serde_json::from_str(answer).unwrap();
        let text = |v: &Value| v.as_str().unwrap().to_string();
        answer["model_version_status"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let status = &s["status"];
                (text(&s["version"]), text(&s["state"]), text(&status["error_code"]), text(&status["error_message"]))
            })
            .collect()
    }

    /// Each pool phase has its TF Serving state, newest version first; a retired version
    /// is END (with its failure, if it failed), one still draining UNLOADING.
    #[test]
    fn every_state_is_one_tf_serving_names_with_its_error() {
        let s = |v: &str, state: &str, code: &str, message: &str| {
            (v.to_string(), state.to_string(), code.to_string(), message.to_string())
        };
        let starting = RoutingTable::stable(pool(3, Phase::Starting));
        assert_eq!(states(&status(&starting, &[], None).unwrap()), [s("3", "LOADING", "OK", "")]);
        let restarting = RoutingTable::stable(pool(3, Phase::Running));
        assert_eq!(
            states(&status(&restarting, &[], None).unwrap()),
            [s("3", "LOADING", "UNAVAILABLE", "no worker is ready; its workers are restarting")]
        );
        let failed = RoutingTable::stable(pool(3, Phase::Failed { reason: "could not read ONNX model".into() }));
        assert_eq!(
            states(&status(&failed, &[], None).unwrap()),
            [s("3", "END", "UNKNOWN", "could not read ONNX model")]
        );

        // v1 retired and stopped, v2 retired after failing, v3 stopping, v4 starting.
        let log = crate::router::retired::Log::default();
        let (v1, v2, v3) =
            (pool(1, Phase::Running), pool(2, Phase::Failed { reason: "crash loop".into() }), pool(3, Phase::Running));
        let v4 = pool(4, Phase::Starting);
        log.note(&RoutingTable::stable(v1.clone()), &RoutingTable::stable(v2.clone()));
        log.note(&RoutingTable::stable(v2.clone()), &RoutingTable::stable(v3.clone()));
        // This test's own process stands for v3's worker, still running.
        v3.slots[0].pid.store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
        log.note(&RoutingTable::stable(v3.clone()), &RoutingTable::stable(v4.clone()));
        v3.set_phase(Phase::Stopping);
        drop((v1, v2));
        let table = RoutingTable::stable(v4);
        assert_eq!(
            states(&status(&table, &log.versions(), None).unwrap()),
            [
                s("4", "LOADING", "OK", ""),
                s("3", "UNLOADING", "OK", ""),
                s("2", "END", "UNKNOWN", "crash loop"),
                s("1", "END", "OK", ""),
            ]
        );
        assert_eq!(states(&status(&table, &log.versions(), Some(1)).unwrap()), [s("1", "END", "OK", "")]);
        let unknown = status(&table, &log.versions(), Some(9)).unwrap_err();
        assert_eq!((unknown.status().as_u16(), unknown.message.as_str()), (404, "no version 9 is being served"));
    }

    #[test]
    fn half_precision_inputs_and_outputs_are_numbers_and_strings_lose_no_byte() {
        let halves = info(vec![spec("x", DType::F16, &[None, Some(2)])]);
        let body = parse_body(br#"{"instances": [[0.1, 65504]]}"#, Verb::Predict).unwrap();
        let x = &body.tensors(&halves).unwrap()[0];
        assert_eq!(x.data, [0x66, 0x2E, 0xFF, 0x7B]);
        let past = parse_body(br#"{"instances": [[1, 65520]]}"#, Verb::Predict).unwrap();
        let refused = past.tensors(&halves).unwrap_err();
        assert!(
            refused.message.starts_with("input 'x': element 1: 65520 is not a valid FP16 value"),
            "{}",
            refused.message
        );
        let y = Tensor { name: "y".into(), ..x.clone() };
        assert_eq!(predictions(&[y], Layout::Rows), r#"{"predictions":[[0.0999755859375,65504.0]]}"#);
        assert_eq!(tf_dtype(DType::F16), "DT_HALF");
        assert_eq!(tf_dtype(DType::BF16), "DT_BFLOAT16");

        let strings = Values::Bytes(vec![b"caf\xc3\xa9".to_vec(), vec![0xFF, 0xFE]]);
        let text = Tensor::from_values("text", vec![2], strings.clone()).unwrap();
        let raw = Tensor::from_values("raw_bytes", vec![2], strings).unwrap();
        let answer: Value = serde_json::from_str(&predictions(&[text, raw], Layout::Columns)).unwrap();
        assert_eq!(answer["outputs"]["text"], json!(["café", {"b64": "//4="}]));
        assert_eq!(answer["outputs"]["raw_bytes"], json!([{"b64": "Y2Fmw6k="}, {"b64": "//4="}]));
    }

    #[test]
    fn answers_follow_the_layout_and_name_outputs_only_when_several() {
        let y = Tensor::from_values("y", vec![2, 2], Values::F32(vec![1., 2., 3., 4.])).unwrap();
        let z = Tensor::from_values("z", vec![2], Values::I64(vec![5, 6])).unwrap();
        assert_eq!(predictions(std::slice::from_ref(&y), Layout::Rows), r#"{"predictions":[[1.0,2.0],[3.0,4.0]]}"#);
        assert_eq!(predictions(std::slice::from_ref(&y), Layout::Columns), r#"{"outputs":[[1.0,2.0],[3.0,4.0]]}"#);
        let both: Value = serde_json::from_str(&predictions(&[y.clone(), z.clone()], Layout::Rows)).unwrap();
        assert_eq!(both["predictions"][1], json!({"y": [3.0, 4.0], "z": 6}));
        let both: Value = serde_json::from_str(&predictions(&[y, z], Layout::Columns)).unwrap();
        assert_eq!(both["outputs"]["z"], json!([5, 6]));
    }
}
