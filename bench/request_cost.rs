//! What the supervisor spends on one tabular-MLP request in each form: reading the body
//! (`oip::parse_body`, then the signature check and the copy of the inputs for the
//! worker) and encoding the answer (`oip::infer_response`), for the OIP JSON form and the
//! binary tensor form (inputs and outputs binary, as tritonclient sends by default).
//! Everything else on the path (HTTP, routing, the worker, the model) is the same for both.
//!
//!     cargo run --release --example request_cost -- FORM [ITERATIONS]
//!
//! FORM is `json`, `binary` or `none` (builds the bodies only). Under
//! `valgrind --tool=callgrind` the instruction counts are exact and repeatable, which
//! wall-clock figures on a shared 2-core machine are not: instructions per request are
//! (Ir(FORM, N) - Ir(none, N)) / N.

use modeld::front::oip;
use modeld::router::ModelInfo;
use modeld::tensor::{DType, Tensor, TensorSpec, Values};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let form = args.next().unwrap_or_else(|| "json".into());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let features: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let json = json_body(&features);
    let (header, bytes) = binary_body(&features);
    let inputs = [TensorSpec { name: "features".into(), dtype: DType::F32, shape: vec![None, Some(30)] }];
    let outputs = [TensorSpec { name: "probabilities".into(), dtype: DType::F32, shape: vec![None, Some(2)] }];
    let answer =
        [Tensor::from_values("probabilities", vec![1, 2], Values::F32(vec![0.484_285_65, 0.515_714_4])).unwrap()];
    let info = ModelInfo {
        load_mode: "strict".into(),
        plans_built: 0,
        device: "cpu".into(),
        inputs: inputs.to_vec(),
        outputs: outputs.to_vec(),
        labels: None,
    };
    let started = Instant::now();
    let mut bytes_out = 0;
    for _ in 0..iterations {
        let (body, binary): (&[u8], &[u8]) = match form.as_str() {
            "json" => (json.as_bytes(), &[]),
            "binary" => (header.as_bytes(), &bytes),
            _ => continue,
        };
        let request = oip::parse_body(body, binary).expect("the body reads");
        oip::check(&request, &inputs, &outputs).expect("the body fits the signature");
        let to_worker = std::hint::black_box(request.inputs.clone());
        let encoded = oip::infer_response("tabular_mlp", "1", &request, &answer, &info).expect("floats encode");
        bytes_out += encoded.body.len() + to_worker.len();
    }
    let per = started.elapsed() / iterations.max(1) as u32;
    println!("{form}: {iterations} requests, {per:?} each ({bytes_out} bytes out)");
}

/// The body tritonclient sends with `binary_data=False`: the JSON form.
fn json_body(features: &[f32]) -> String {
    let data: Vec<String> = features.iter().map(|f| f.to_string()).collect();
    format!(
        r#"{{"inputs":[{{"name":"features","shape":[1,30],"datatype":"FP32","data":[{}]}}],"outputs":[{{"name":"probabilities","parameters":{{"binary_data":false}}}}]}}"#,
        data.join(",")
    )
}

/// The body tritonclient sends by default: a JSON header, then the raw bytes.
fn binary_body(features: &[f32]) -> (String, Vec<u8>) {
    let header = r#"{"inputs":[{"name":"features","shape":[1,30],"datatype":"FP32","parameters":{"binary_data_size":120}}],"outputs":[{"name":"probabilities","parameters":{"binary_data":true}}]}"#;
    (header.to_string(), features.iter().flat_map(|f| f.to_le_bytes()).collect())
}
