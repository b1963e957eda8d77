//! The Open Inference Protocol (KServe v2) REST adapter, JSON tensors.
//!
//! `POST /v2/models/{m}[/versions/{v}]/infer` takes
//! `{"id"?, "inputs": [{"name", "shape", "datatype", "data"}], "outputs"?: [{"name"}]}`
//! with `data` flat or nested row-major, and answers
//! `{"model_name", "model_version", "id"?, "outputs": [{"name", "datatype", "shape", "data"}]}`.
//! Metadata (`GET /v2/models/{m}`) lists inputs and outputs with -1 for open dimensions.
//! See <https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/>.

use super::error::ApiError;
use super::json::{self, Data};
use crate::router::pool::Pool;
use crate::tensor::{DType, Tensor, TensorSpec};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An infer body, its JSON read but not yet checked against any version's signature.
#[derive(Deserialize)]
pub struct InferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<InputTensor<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InputTensor<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
}

/// A parsed infer request: the tensors to run and what to answer.
pub struct Request {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    pub outputs: Option<Vec<String>>,
}

/// Parses and checks an infer body against the model's signature.
pub fn parse_infer(body: &[u8], inputs_spec: &[TensorSpec], outputs_spec: &[TensorSpec]) -> Result<Request, ApiError> {
    check(&parse_body(body)?, inputs_spec, outputs_spec)
}

/// Reads an infer body's JSON: what no version could take is refused here, before routing.
pub fn parse_body(body: &[u8]) -> Result<InferRequest<'_>, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// Checks a read body against one version's signature and builds its tensors. A mismatch
/// with the signature is refused as invalid for that version.
pub fn check(req: &InferRequest, inputs_spec: &[TensorSpec], outputs_spec: &[TensorSpec]) -> Result<Request, ApiError> {
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        if inputs.iter().any(|t: &Tensor| t.name == input.name) {
            return Err(ApiError::bad_request(format!("input '{}' is given twice", input.name)));
        }
        inputs.push(parse_input(input, inputs_spec)?);
    }
    for spec in inputs_spec {
        if !inputs.iter().any(|t| t.name == spec.name) {
            return Err(ApiError::invalid_for_version(format!(
                "missing input '{}' (the model takes {})",
                spec.name,
                names(inputs_spec)
            )));
        }
    }
    let outputs = req.outputs.as_ref().map(|o| o.iter().map(|o| o.name.clone()).collect::<Vec<_>>());
    for name in outputs.iter().flatten() {
        if !outputs_spec.iter().any(|s| &s.name == name) {
            return Err(ApiError::invalid_for_version(format!(
                "unknown output '{name}' requested (the model gives {})",
                names(outputs_spec)
            )));
        }
    }
    Ok(Request { id: req.id.clone(), inputs, outputs })
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
}

fn parse_input(input: &InputTensor, specs: &[TensorSpec]) -> Result<Tensor, ApiError> {
    let name = &input.name;
    let spec = specs.iter().find(|s| &s.name == name).ok_or_else(|| {
        ApiError::invalid_for_version(format!("unexpected input '{name}' (the model takes {})", names(specs)))
    })?;
    let dtype = DType::from_oip_name(&input.datatype)
        .ok_or_else(|| ApiError::bad_request(format!("input '{name}': unknown datatype '{}'", input.datatype)))?;
    if dtype != spec.dtype {
        return Err(ApiError::invalid_for_version(format!(
            "input '{name}': expected datatype {}, got {dtype}",
            spec.dtype
        )));
    }
    let shape = input.shape.iter().map(|d| usize::try_from(*d)).collect::<Result<Vec<_>, _>>().map_err(|_| {
        ApiError::bad_request(format!("input '{name}': shape {:?} has a negative dimension", input.shape))
    })?;
    let parsed =
        json::parse(input.data, dtype).map_err(|e| ApiError::bad_request(format!("input '{name}': data: {e}")))?;
    let tensor =
        Tensor::from_values(name.clone(), shape, parsed.values).map_err(|e| ApiError::bad_request(e.to_string()))?;
    spec.admits(&tensor).map_err(ApiError::invalid_for_version)?;
    Ok(tensor)
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    data: Data<'a>,
}

/// The infer response body: the requested outputs (all when none were named).
pub fn infer_response(pool: &Pool, request: &Request, outputs: &[Tensor]) -> String {
    let wanted = |t: &&Tensor| request.outputs.as_ref().is_none_or(|names| names.contains(&t.name));
    let outputs: Vec<&Tensor> = outputs.iter().filter(wanted).collect();
    encode_response(&pool.model, &pool.version.to_string(), request.id.as_deref(), &outputs)
}

/// An infer response body for these outputs, printed straight from their bytes.
pub fn encode_response(model: &str, version: &str, id: Option<&str>, outputs: &[&Tensor]) -> String {
    let response = InferResponse {
        model_name: model,
        model_version: version.to_string(),
        id,
        outputs: outputs
            .iter()
            .map(|t| OutputTensor { name: &t.name, datatype: t.dtype.oip_name(), shape: &t.shape, data: Data(t) })
            .collect(),
    };
    serde_json::to_string(&response).expect("response serializes")
}

#[derive(Serialize)]
struct TensorMetadata<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: Vec<i64>,
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<TensorMetadata<'_>> {
    specs.iter().map(|s| TensorMetadata { name: &s.name, datatype: s.dtype.oip_name(), shape: s.oip_shape() }).collect()
}

/// `GET /v2/models/{m}[/versions/{v}]`: the pool's signature, with the versions served.
pub fn model_metadata(pool: &Pool, versions: &[u64]) -> Result<String, ApiError> {
    let info = pool.info().ok_or_else(|| {
        ApiError::unavailable(format!("model '{}' version {} has not loaded yet", pool.model, pool.version))
    })?;
    let body = serde_json::json!({
        "name": pool.model,
        "versions": versions.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "platform": "onnx_onnxv1",
        "inputs": tensor_metadata(&info.inputs),
        "outputs": tensor_metadata(&info.outputs),
        "parameters": { "load_mode": info.load_mode, "version": pool.version.to_string() },
    });
    Ok(body.to_string())
}
