//! The OIP infer body: `modeld::front::oip::parse_body(json, binary)` (the one-pass body
//! reader and the float scanner), then `check` against fixed signatures.
//!
//! Input layout: the first byte is the length of the binary tail (0..=255, capped at what
//! is left); the bytes before the tail are the JSON header.
//!
//! Beyond "never panics": every tensor read is consistent (`Tensor::check`), every read
//! request prints as valid JSON, and a request a signature admits crosses the worker wire
//! (`encode_infer` / `Frame::decode`) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeld::front::oip;
use modeld::tensor::{DType, Tensor, TensorSpec};
use modeld::wire::{self, Frame};

fn spec(name: &str, dtype: DType, shape: &[i64]) -> TensorSpec {
    TensorSpec { name: name.into(), dtype, shape: shape.iter().map(|d| usize::try_from(*d).ok()).collect() }
}

fuzz_target!(|data: &[u8]| {
    let Some((&tail, rest)) = data.split_first() else { return };
    let tail = usize::from(tail).min(rest.len());
    let (json, binary) = rest.split_at(rest.len() - tail);
    let Ok(request) = oip::parse_body(json, binary) else { return };
    for t in &request.inputs {
        if let Err(e) = t.check() {
            panic!("parse_body gave an inconsistent tensor {t:?}: {e}");
        }
    }
    let signatures = [
        (vec![spec("x", DType::F32, &[-1, 4])], vec![spec("y", DType::F32, &[-1, 1])]),
        (
            vec![spec("s", DType::Bytes, &[-1]), spec("b", DType::Bool, &[-1, 2]), spec("i", DType::I64, &[2, -1])],
            vec![spec("y", DType::F64, &[-1])],
        ),
    ];
    for (inputs, outputs) in &signatures {
        if oip::check(&request, inputs, outputs).is_ok() {
            let encoded = wire::encode_infer(42, &request.inputs);
            match Frame::decode(&encoded[4..]) {
                Ok(Frame::Infer { id: 42, inputs }) => assert_eq!(inputs, request.inputs, "wire round trip"),
                other => panic!("an admitted request does not cross the wire: {other:?}"),
            }
        }
    }
    let outputs: Vec<&Tensor> = request.inputs.iter().collect();
    // Refused only for strings that are not UTF-8, which JSON cannot carry.
    let Ok(body) = oip::encode_response("m", "1", request.id.as_deref(), &outputs) else { return };
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&body) {
        panic!("the response is not JSON ({e}): {body}");
    }
});
