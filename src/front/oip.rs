//! The Open Inference Protocol (KServe v2) REST adapter: JSON tensors and the binary
//! tensor data extension.
//!
//! `POST /v2/models/{m}[/versions/{v}]/infer` takes
//! `{"id"?, "inputs": [{"name", "shape", "datatype", "data"}], "outputs"?: [{"name"}]}`
//! with `data` flat or nested row-major, and answers
//! `{"model_name", "model_version", "id"?, "outputs": [{"name", "datatype", "shape", "data"}]}`.
//! Metadata (`GET /v2/models/{m}`) lists inputs and outputs with -1 for open dimensions.
//! See <https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/>.
//!
//! Binary tensors, as Triton implements them (its `extension_binary_data.md`, and what
//! `tritonclient.http` sends by default): the body is the JSON header, whose length the
//! `Inference-Header-Content-Length` HTTP header gives, followed by the raw little-endian
//! bytes of each input with `parameters.binary_data_size`, in the order the inputs are
//! listed (BYTES elements as a 4-byte length and the bytes, BOOL one byte each — modeld's
//! own tensor layout, so the bytes are taken whole, never element by element). Outputs
//! come back the same way when asked: `parameters.binary_data` per output, or
//! `parameters.binary_data_output` for all.

use super::error::ApiError;
use super::infer_body::{self, Input, InputData};
use super::json::{self, Data};
use crate::router::Pool;
use crate::tensor::{DType, Tensor, TensorSpec};
use serde::Serialize;

/// A read infer request: its tensors, built from the request alone, and what to answer.
/// What a version's signature refuses is checked per version by [`check`].
pub struct Request {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// The outputs asked for (all when `None`), each with whether it goes back as binary.
    pub outputs: Option<Vec<(String, bool)>>,
    /// Outputs not named go back as binary data.
    pub binary_output: bool,
}

/// Reads a JSON infer body and checks it against the model's signature.
pub fn parse_infer(body: &[u8], inputs_spec: &[TensorSpec], outputs_spec: &[TensorSpec]) -> Result<Request, ApiError> {
    let request = parse_body(body, &[])?;
    check(&request, inputs_spec, outputs_spec)?;
    Ok(request)
}

/// Reads an infer body — its JSON header, and `binary`, what followed the header — and
/// builds its tensors, taking the binary inputs' bytes in order. What no version could take
/// is refused here, before routing.
pub fn parse_body(json: &[u8], binary: &[u8]) -> Result<Request, ApiError> {
    let body = infer_body::read(json).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    let mut inputs: Vec<Tensor> = Vec::with_capacity(body.inputs.len());
    let mut rest = binary;
    for input in body.inputs {
        if inputs.iter().any(|t| t.name == input.name) {
            return Err(ApiError::bad_request(format!("input '{}' is given twice", input.name)));
        }
        inputs.push(tensor(input, &mut rest)?);
    }
    if !rest.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data follow the JSON header that no input's parameters.binary_data_size claims",
            rest.len()
        )));
    }
    let binary_output = body.parameters.binary_data_output;
    let outputs = body.outputs.map(|o| {
        o.into_iter().map(|o| (o.name, o.parameters.binary_data.unwrap_or(binary_output))).collect::<Vec<_>>()
    });
    Ok(Request { id: body.id, inputs, outputs, binary_output })
}

/// Checks a read request against one version's signature; a mismatch is refused as
/// invalid for that version.
pub fn check(request: &Request, inputs_spec: &[TensorSpec], outputs_spec: &[TensorSpec]) -> Result<(), ApiError> {
    check_inputs(&request.inputs, request.outputs.as_deref(), inputs_spec, outputs_spec)
}

/// [`check`] on a request's tensors and requested outputs, held apart from it (the front
/// moves the tensors to the worker).
pub fn check_inputs(
    inputs: &[Tensor],
    outputs: Option<&[(String, bool)]>,
    inputs_spec: &[TensorSpec],
    outputs_spec: &[TensorSpec],
) -> Result<(), ApiError> {
    for tensor in inputs {
        let name = &tensor.name;
        let spec = inputs_spec.iter().find(|s| &s.name == name).ok_or_else(|| {
            ApiError::not_for_version(format!("unexpected input '{name}' (the model takes {})", names(inputs_spec)))
        })?;
        if tensor.dtype != spec.dtype {
            return Err(ApiError::not_for_version(format!(
                "input '{name}': expected datatype {}, got {}",
                spec.dtype, tensor.dtype
            )));
        }
        spec.admits(tensor).map_err(ApiError::not_for_version)?;
    }
    for spec in inputs_spec {
        if !inputs.iter().any(|t| t.name == spec.name) {
            return Err(ApiError::not_for_version(format!(
                "missing input '{}' (the model takes {})",
                spec.name,
                names(inputs_spec)
            )));
        }
    }
    for (name, _) in outputs.into_iter().flatten() {
        if !outputs_spec.iter().any(|s| &s.name == name) {
            return Err(ApiError::not_for_version(format!(
                "unknown output '{name}' requested (the model gives {})",
                names(outputs_spec)
            )));
        }
    }
    Ok(())
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
}

/// One input's tensor, from its JSON data or the next bytes of `binary`.
fn tensor(input: Input, binary: &mut &[u8]) -> Result<Tensor, ApiError> {
    let name = input.name;
    let dtype = DType::from_oip_name(&input.datatype)
        .ok_or_else(|| ApiError::bad_request(format!("input '{name}': unknown datatype '{}'", input.datatype)))?;
    let shape = input.shape.iter().map(|d| usize::try_from(*d)).collect::<Result<Vec<_>, _>>().map_err(|_| {
        ApiError::bad_request(format!("input '{name}': shape {:?} has a negative dimension", input.shape))
    })?;
    let values = match (input.data, input.parameters.binary_data_size) {
        (InputData::Scanned(values), None) => values,
        (InputData::Text(text), None) => {
            json::parse(text, dtype).map_err(|e| ApiError::bad_request(format!("input '{name}': data: {e}")))?.values
        }
        (InputData::Absent, Some(size)) => return binary_input(name, dtype, shape, size, binary),
        (_, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input '{name}' has both \"data\" and parameters.binary_data_size; send one"
            )));
        }
        (InputData::Absent, None) => {
            return Err(ApiError::bad_request(format!(
                "input '{name}' has no data: give \"data\", or parameters.binary_data_size with its bytes after the JSON header"
            )));
        }
    };
    Tensor::from_values(name, shape, values).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// An input whose `size` bytes are the next ones of `binary`, taken whole.
fn binary_input(
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    size: u64,
    binary: &mut &[u8],
) -> Result<Tensor, ApiError> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > binary.len() {
        return Err(ApiError::bad_request(format!(
            "input '{name}': parameters.binary_data_size is {size} but only {} bytes of binary data remain after the JSON header (is Inference-Header-Content-Length right?)",
            binary.len()
        )));
    }
    let (bytes, rest) = binary.split_at(size);
    *binary = rest;
    let tensor = Tensor { name, dtype, shape, data: bytes.to_vec() };
    tensor.check().map_err(|e| ApiError::bad_request(format!("input '{}': binary data: {e}", tensor.name)))?;
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
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryOutput>,
}

/// An output sent as binary data after the JSON header.
#[derive(Serialize)]
struct BinaryOutput {
    binary_data_size: usize,
}

/// An encoded infer response: the body, and where its JSON header ends when binary
/// outputs follow it (sent as `Inference-Header-Content-Length`).
pub struct Encoded {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// The infer response of `model` `version`: the requested outputs (all when none were
/// named), each as JSON or as binary data as the request asked.
pub fn infer_response(model: &str, version: &str, request: &Request, outputs: &[Tensor]) -> Encoded {
    let chosen: Vec<(&Tensor, bool)> = match &request.outputs {
        None => outputs.iter().map(|t| (t, request.binary_output)).collect(),
        Some(wanted) => outputs
            .iter()
            .filter_map(|t| wanted.iter().find(|(n, _)| *n == t.name).map(|(_, binary)| (t, *binary)))
            .collect(),
    };
    encode(model, version, request.id.as_deref(), &chosen)
}

/// An all-JSON infer response body for these outputs, printed straight from their bytes.
pub fn encode_response(model: &str, version: &str, id: Option<&str>, outputs: &[&Tensor]) -> String {
    let chosen: Vec<(&Tensor, bool)> = outputs.iter().map(|t| (*t, false)).collect();
    String::from_utf8(encode(model, version, id, &chosen).body).expect("JSON is UTF-8")
}

fn encode(model: &str, version: &str, id: Option<&str>, outputs: &[(&Tensor, bool)]) -> Encoded {
    let response = InferResponse {
        model_name: model,
        model_version: version.to_string(),
        id,
        outputs: outputs
            .iter()
            .map(|(t, binary)| OutputTensor {
                name: &t.name,
                datatype: t.dtype.oip_name(),
                shape: &t.shape,
                data: (!binary).then_some(Data(t)),
                parameters: binary.then(|| BinaryOutput { binary_data_size: t.data.len() }),
            })
            .collect(),
    };
    let mut body = serde_json::to_vec(&response).expect("response serializes");
    if !outputs.iter().any(|(_, binary)| *binary) {
        return Encoded { body, json_len: None };
    }
    let json_len = body.len();
    for (t, _) in outputs.iter().filter(|(_, binary)| *binary) {
        body.extend_from_slice(&t.data);
    }
    Encoded { body, json_len: Some(json_len) }
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
