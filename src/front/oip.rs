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
//!
//! Element types are the protocol's, FP16 and BF16 included (JSON numbers, rounded to
//! nearest even and refused past the type's range; two little-endian bytes in binary).
//! BYTES outputs are never made lossy: as binary data they are their bytes; in JSON, a
//! string that is not UTF-8 cannot be written, and the request is refused naming the
//! output and element and saying to ask for it as binary data (the protocol's JSON has
//! no other form for it). An output asked with `parameters.classification = K` comes
//! back as its top K classes ([`super::classification`]).

use super::classification;
use super::error::ApiError;
use super::infer_body::{self, Input, InputData, RequestedOutput};
use super::json::{self, Data};
use crate::router::{ModelInfo, Pool};
use crate::tensor::{DType, Tensor, TensorSpec};
use serde::Serialize;
use std::borrow::Cow;

/// A read infer request: its tensors, built from the request alone, and what to answer.
/// What a version's signature refuses is checked per version by [`check`].
pub struct Request {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// The outputs asked for (all when `None`).
    pub outputs: Option<Vec<Wanted>>,
    /// Outputs not named go back as binary data.
    pub binary_output: bool,
}

/// An output the request names, and how it wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    /// As binary data after the JSON header.
    pub binary: bool,
    /// Its top K classes instead of its values (Triton's classification extension).
    pub classification: Option<usize>,
}

impl Wanted {
    fn read(output: RequestedOutput, binary_output: bool) -> Result<Wanted, ApiError> {
        let name = output.name;
        let classification = match output.parameters.classification {
            None => None,
            Some(k) if k >= 1 => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "output '{name}': parameters.classification is {k}; it must be the number of classes to answer, at least 1"
                )));
            }
        };
        Ok(Wanted { binary: output.parameters.binary_data.unwrap_or(binary_output), name, classification })
    }
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
    let outputs = match body.outputs {
        None => None,
        Some(o) => Some(o.into_iter().map(|o| Wanted::read(o, binary_output)).collect::<Result<Vec<_>, _>>()?),
    };
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
    outputs: Option<&[Wanted]>,
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
    for wanted in outputs.into_iter().flatten() {
        let name = &wanted.name;
        let spec = outputs_spec.iter().find(|s| &s.name == name).ok_or_else(|| {
            ApiError::not_for_version(format!(
                "unknown output '{name}' requested (the model gives {})",
                names(outputs_spec)
            ))
        })?;
        if let Some(refusal) = wanted.classification.and_then(|_| classification::refusal(spec)) {
            return Err(ApiError::not_for_version(refusal));
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
/// named), each as JSON or as binary data as the request asked, classified where it
/// asked for classes. Refused when a BYTES output asked for as JSON is not UTF-8.
pub fn infer_response(
    model: &str,
    version: &str,
    request: &Request,
    outputs: &[Tensor],
    info: &ModelInfo,
) -> Result<Encoded, ApiError> {
    let chosen: Vec<(Cow<Tensor>, bool)> = match &request.outputs {
        None => outputs.iter().map(|t| (Cow::Borrowed(t), request.binary_output)).collect(),
        Some(wanted) => outputs
            .iter()
            .filter_map(|t| wanted.iter().find(|w| w.name == t.name).map(|w| answer(t, w, info)))
            .collect::<Result<_, _>>()?,
    };
    let chosen: Vec<(&Tensor, bool)> = chosen.iter().map(|(t, binary)| (t.as_ref(), *binary)).collect();
    encode(model, version, request.id.as_deref(), &chosen)
}

/// One named output as the request wants it: itself, or its top classes.
fn answer<'t>(output: &'t Tensor, wanted: &Wanted, info: &ModelInfo) -> Result<(Cow<'t, Tensor>, bool), ApiError> {
    let Some(k) = wanted.classification else { return Ok((Cow::Borrowed(output), wanted.binary)) };
    let batched = info.outputs.iter().find(|s| s.name == output.name).is_some_and(TensorSpec::has_open_batch);
    let labels = info.labels.as_ref().filter(|l| l.output == output.name).map(|l| l.names.as_slice());
    Ok((Cow::Owned(classification::top_k(output, k, batched, labels)?), wanted.binary))
}

/// An all-JSON infer response body for these outputs, printed straight from their bytes;
/// refused as [`infer_response`] refuses strings that are not UTF-8.
pub fn encode_response(model: &str, version: &str, id: Option<&str>, outputs: &[&Tensor]) -> Result<String, ApiError> {
    let chosen: Vec<(&Tensor, bool)> = outputs.iter().map(|t| (*t, false)).collect();
    Ok(String::from_utf8(encode(model, version, id, &chosen)?.body).expect("JSON is UTF-8"))
}

/// Refuses a BYTES output asked for as JSON that holds bytes JSON cannot carry.
fn check_json_strings(outputs: &[(&Tensor, bool)]) -> Result<(), ApiError> {
    for (t, _) in outputs.iter().filter(|(_, binary)| !binary) {
        if let Some((index, e)) = json::first_non_utf8(t) {
            return Err(ApiError::bad_request(format!(
                "output '{}': element {index} is not UTF-8 ({e}), which a JSON string cannot carry without loss; \
                 ask for it as binary data (\"outputs\": [{{\"name\": \"{}\", \"parameters\": {{\"binary_data\": true}}}}])",
                t.name, t.name
            )));
        }
    }
    Ok(())
}

fn encode(model: &str, version: &str, id: Option<&str>, outputs: &[(&Tensor, bool)]) -> Result<Encoded, ApiError> {
    check_json_strings(outputs)?;
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
    let mut body = serde_json::to_vec(&response).map_err(|e| ApiError::internal(format!("answer not written: {e}")))?;
    if !outputs.iter().any(|(_, binary)| *binary) {
        return Ok(Encoded { body, json_len: None });
    }
    let json_len = body.len();
    for (t, _) in outputs.iter().filter(|(_, binary)| *binary) {
        body.extend_from_slice(&t.data);
    }
    Ok(Encoded { body, json_len: Some(json_len) })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Values;

    fn info(outputs: Vec<TensorSpec>, labels: Option<crate::wire::Labels>) -> ModelInfo {
        ModelInfo { load_mode: "strict".into(), plans_built: 0, device: "cpu".into(), inputs: vec![], outputs, labels }
    }

    fn request(outputs: &str) -> Request {
        let body = format!(r#"{{"inputs": [], "outputs": {outputs}}}"#);
        parse_body(body.as_bytes(), &[]).unwrap()
    }

    fn json_of(encoded: &Encoded) -> serde_json::Value {
        serde_json::from_slice(&encoded.body[..encoded.json_len.unwrap_or(encoded.body.len())]).unwrap()
    }

    #[test]
    fn a_string_that_is_not_utf8_goes_back_as_binary_or_is_refused_in_json_never_replaced() {
        let items = vec![b"ok".to_vec(), vec![0xC3, 0x28]];
        let label = Tensor::from_values("label", vec![2], Values::Bytes(items)).unwrap();
        let signature = info(vec![TensorSpec { name: "label".into(), dtype: DType::Bytes, shape: vec![None] }], None);
        let json = request(r#"[{"name": "label"}]"#);
        let refused = infer_response("m", "1", &json, std::slice::from_ref(&label), &signature).err().unwrap();
        assert_eq!(refused.status(), 400);
        assert!(refused.message.starts_with("output 'label': element 1 is not UTF-8"), "{}", refused.message);
        assert!(refused.message.contains(r#""parameters": {"binary_data": true}"#), "{}", refused.message);
        let binary = request(r#"[{"name": "label", "parameters": {"binary_data": true}}]"#);
        let encoded = infer_response("m", "1", &binary, std::slice::from_ref(&label), &signature).unwrap();
        assert_eq!(&encoded.body[encoded.json_len.unwrap()..], label.data.as_slice(), "the bytes as they are");
    }

    #[test]
    fn classification_answers_the_top_classes_with_the_models_labels() {
        let spec = TensorSpec { name: "p".into(), dtype: DType::F32, shape: vec![None, Some(3)] };
        let labels = crate::wire::Labels { output: "p".into(), names: vec!["low".into(), "mid".into(), "high".into()] };
        let signature = info(vec![spec], Some(labels));
        let p = Tensor::from_values("p", vec![1, 3], Values::F32(vec![0.2, 0.1, 0.7])).unwrap();
        let asked = request(r#"[{"name": "p", "parameters": {"classification": 2}}]"#);
        let answer = json_of(&infer_response("m", "1", &asked, std::slice::from_ref(&p), &signature).unwrap());
        assert_eq!(
            answer["outputs"][0],
            serde_json::json!({"name": "p", "datatype": "BYTES", "shape": [1, 2], "data": ["0.700000:2:high", "0.200000:0:low"]})
        );
        for zero in ["0", "-3"] {
            let body = format!(
                r#"{{"inputs": [], "outputs": [{{"name": "p", "parameters": {{"classification": {zero}}}}}]}}"#
            );
            let refused = parse_body(body.as_bytes(), &[]).err().unwrap();
            assert!(refused.message.contains(&format!("parameters.classification is {zero}")), "{}", refused.message);
        }
        let strings = [TensorSpec { name: "label".into(), dtype: DType::Bytes, shape: vec![None] }];
        let wanted = [Wanted { name: "label".into(), binary: false, classification: Some(1) }];
        let refused = check_inputs(&[], Some(&wanted), &[], &strings).unwrap_err();
        assert!(refused.invalid_for_version() && refused.message.contains("classification needs class scores"));
    }

    #[test]
    fn half_precision_inputs_read_from_json_and_binary_alike() {
        let json = br#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP16", "data": [1.5, -0.1]}]}"#;
        let from_json = parse_body(json, &[]).unwrap().inputs.remove(0);
        assert_eq!(from_json.dtype, DType::F16);
        let header =
            br#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP16", "parameters": {"binary_data_size": 4}}]}"#;
        let from_binary = parse_body(header, &from_json.data).unwrap().inputs.remove(0);
        assert_eq!(from_binary, from_json);
        assert_eq!(from_json.data, [0x00, 0x3E, 0x66, 0xAE]);
        let out_of_range = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1e5]}]}"#;
        let refused = parse_body(out_of_range, &[]).err().unwrap();
        assert_eq!(
            refused.message,
            "input 'x': data: element 0: 100000 is not a valid FP16 value (out of range: its largest is ±65504)"
        );
        let odd =
            br#"{"inputs": [{"name": "x", "shape": [2], "datatype": "BF16", "parameters": {"binary_data_size": 3}}]}"#;
        let refused = parse_body(odd, &[0; 3]).err().unwrap();
        assert!(
            refused.message.contains("3 bytes is not a whole number of BF16 elements (2 bytes each)"),
            "{}",
            refused.message
        );
    }
}
