//! The inference endpoints: OIP infer (JSON or the binary tensor extension), TF
//! Serving's `:predict`, `:classify` and `:regress`, and `/predict`. Each parses its
//! body, admits the request, runs it through the router ([`super::call`]) and encodes
//! the answer in its protocol.

use super::call::{Wants, admit, run};
use super::error::ApiError;
use super::served::Served;
use super::{Front, Reply, auth, offload, oip, predict, tfserving};
use crate::router::ModelRoute;
use bytes::Bytes;
use hyper::header::HeaderMap;
use std::sync::Arc;

impl Front {
    /// OIP infer: a JSON body, or a JSON header and binary tensors after it.
    pub(super) async fn infer(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, ApiError>,
        model: &str,
        version: Option<u64>,
        served: &mut Served,
    ) -> Result<Reply, ApiError> {
        let route = self.router.model(model)?;
        let wants = Wants::of(headers, version, &route)?;
        let json_len = inference_header_len(headers)?;
        let body = body?;
        let (json, binary) = split_binary(&body, json_len)?;
        let mut request = offload::cpu(json.len(), || oip::parse_body(json, binary))?;
        let _admission = admit(&route, &wants, served)?;
        // The tensors move to the worker; the answer needs only the rest of the request.
        let mut parsed = Some(std::mem::take(&mut request.inputs));
        let ran = run(&route, &wants, served, |info, retried| {
            let inputs = retried.or_else(|| parsed.take()).expect("one attempt holds the inputs at a time");
            oip::check_inputs(&inputs, request.outputs.as_deref(), &info.inputs, &info.outputs)?;
            Ok(inputs)
        })
        .await?;
        let version = ran.pool.version.to_string();
        let encode = || oip::infer_response(&ran.pool.model, &version, &request, &ran.outputs, &ran.info);
        Ok(Reply::infer(offload::cpu(offload::bytes_of(&ran.outputs), encode)?))
    }

    /// TF Serving's `:predict`, `:classify` and `:regress`.
    pub(super) async fn tf_infer(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, ApiError>,
        model: &str,
        version: Option<u64>,
        verb: tfserving::Verb,
        served: &mut Served,
    ) -> Result<Reply, ApiError> {
        let route = self.router.model(model)?;
        let wants = Wants::of(headers, version, &route)?;
        let body = body?;
        let read = offload::cpu(body.len(), || tfserving::parse_body(&body, verb))?;
        let _admission = admit(&route, &wants, served)?;
        let mut rows = 0;
        let ran = run(&route, &wants, served, |info, _| {
            let tensors = read.tensors(info)?;
            rows = tensors.first().map_or(0, |t| t.rows());
            Ok(tensors)
        })
        .await?;
        let body = offload::cpu(offload::bytes_of(&ran.outputs), || match verb {
            tfserving::Verb::Predict => Ok(tfserving::predictions(&ran.outputs, read.layout())),
            verb => tfserving::results(&ran.pool, &ran.info, &ran.outputs, rows, verb),
        })?;
        Ok(Reply::ok(body))
    }

    /// `/predict` (one example) and `/batch_predict` (a list), run as one batch.
    pub(super) async fn predict(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, ApiError>,
        batch: bool,
        served: &mut Served,
    ) -> Result<Reply, ApiError> {
        let body = body?;
        let examples = offload::cpu(body.len(), || predict::parse_body(&body, batch))?;
        let names: Vec<String> = self.router.models().keys().cloned().collect();
        let model = predict::model_name(&examples, &names)?;
        auth::authorize(&self.server.get().auth, headers, crate::config::Scope::Infer, Some(&model))?;
        served.model = Some(model.clone());
        let route: Arc<ModelRoute> = self.router.model(&model)?;
        let wants = Wants::of(headers, None, &route)?;
        let _admission = admit(&route, &wants, served)?;
        let ran = run(&route, &wants, served, |info, _| Ok(vec![predict::batch_tensor(&examples, info)?])).await?;
        let body = offload::cpu(offload::bytes_of(&ran.outputs), || {
            let answers = predict::answers(&ran.pool, &ran.info, &ran.outputs, examples.len())?;
            let body = match batch {
                true => serde_json::to_string(&answers),
                false => serde_json::to_string(&answers[0]),
            };
            Ok::<_, ApiError>(body.expect("answers serialize"))
        })?;
        Ok(Reply::ok(body))
    }
}

/// The binary tensor extension's header: the length of the JSON part of the body.
pub const INFERENCE_HEADER: &str = "inference-header-content-length";

/// The JSON header's length a binary request declares, if it does.
fn inference_header_len(headers: &hyper::HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(INFERENCE_HEADER) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("Inference-Header-Content-Length: '{text}' is not a byte count")))
}

/// The body's JSON header and the binary data after it.
fn split_binary(body: &[u8], json_len: Option<usize>) -> Result<(&[u8], &[u8]), ApiError> {
    match json_len {
        None => Ok((body, &[])),
        Some(n) if n <= body.len() => Ok(body.split_at(n)),
        Some(n) => Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ))),
    }
}
