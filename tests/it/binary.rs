//! The Open Inference Protocol's binary tensor extension, framed by hand as tritonclient
//! frames it: a JSON header whose length `Inference-Header-Content-Length` gives, then
//! each binary input's raw bytes; outputs come back the same way when asked.

use crate::onnx::family;
use crate::util::{ModelFiles, RawAnswer, Setup, TestDaemon};
use serde_json::{Value, json};

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A binary request: the JSON header, then `binary`.
pub fn binary_request(daemon: &TestDaemon, model: &str, header: Value, binary: &[u8]) -> RawAnswer {
    let json = header.to_string();
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(binary);
    let len = json.len().to_string();
    daemon.post_raw(
        &format!("/v2/models/{model}/infer"),
        &body,
        &[("content-type", "application/octet-stream"), ("inference-header-content-length", &len)],
    )
}

/// The JSON header of an answer, and the binary data after it.
pub fn split(answer: &RawAnswer) -> (Value, &[u8]) {
    let len: usize =
        answer.headers.get("inference-header-content-length").map_or(answer.body.len(), |v| v.parse().unwrap());
    let (json, rest) = answer.body.split_at(len);
    (serde_json::from_slice(json).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(json))), rest)
}

#[test]
fn binary_inputs_and_outputs_round_trip_as_triton_frames_them() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("m", 1, family::good(1.0)), 1));
    let meta: Value = daemon.get("/v2").json();
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")), "{meta}");
    let x = [1.0f32, 2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 0.5];
    let input = json!({"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}});

    // tritonclient's default: binary inputs, and binary_data_output when no output is named.
    let answer = binary_request(
        &daemon,
        "m",
        json!({"inputs": [input], "parameters": {"binary_data_output": true}}),
        &f32_bytes(&x),
    );
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.headers["content-type"], "application/octet-stream");
    let (header, data) = split(&answer);
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8, "{header}");
    assert!(header["outputs"][0].get("data").is_none(), "{header}");
    assert_eq!(data, f32_bytes(&[10.0, 2.0]).as_slice());

    // Binary in, JSON out (an output asked for without binary_data).
    let answer = binary_request(&daemon, "m", json!({"inputs": [input], "outputs": [{"name": "y"}]}), &f32_bytes(&x));
    assert_eq!(answer.status, 200);
    assert!(!answer.headers.contains_key("inference-header-content-length"));
    let (header, rest) = split(&answer);
    assert!(rest.is_empty());
    assert_eq!(header["outputs"][0]["data"], json!([10.0, 2.0]));

    // JSON in, one output asked as binary.
    let body = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}],
                      "outputs": [{"name": "y", "parameters": {"binary_data": true}}]});
    let answer =
        daemon.post_raw("/v2/models/m/infer", body.to_string().as_bytes(), &[("content-type", "application/json")]);
    let (header, data) = split(&answer);
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 4);
    assert_eq!(data, f32_bytes(&[4.0]).as_slice());
}

#[test]
fn malformed_binary_requests_say_what_is_wrong() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("m", 1, family::good(1.0)), 1));
    let input =
        |size: u64| json!({"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}});
    let error = |answer: RawAnswer| -> (u16, String) {
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        (answer.status, body["error"].as_str().unwrap().to_string())
    };
    let (status, message) = error(binary_request(&daemon, "m", json!({"inputs": [input(32)]}), &[0u8; 16]));
    assert_eq!(status, 400);
    assert!(message.contains("binary_data_size is 32 but only 16 bytes"), "{message}");
    let (status, message) = error(binary_request(&daemon, "m", json!({"inputs": [input(12)]}), &[0u8; 12]));
    assert_eq!(status, 400);
    assert!(message.contains("holds 4 elements but 3 were given"), "{message}");
    // 15 bytes are not four FP32 values (nor, rounded up, a fourth one).
    let (status, message) = error(binary_request(&daemon, "m", json!({"inputs": [input(15)]}), &[0u8; 15]));
    assert_eq!(status, 400);
    assert!(message.contains("15 bytes is not a whole number of FP32 elements (4 bytes each)"), "{message}");
    let (_, message) = error(binary_request(&daemon, "m", json!({"inputs": [input(16)]}), &[0u8; 20]));
    assert!(message.contains("4 bytes of binary data follow the JSON header that no input"), "{message}");
    let header = json!({"inputs": [input(16)]}).to_string();
    let answer =
        daemon.post_raw("/v2/models/m/infer", header.as_bytes(), &[("inference-header-content-length", "100000")]);
    assert!(error(answer).1.contains("Inference-Header-Content-Length is 100000 but the body has only"));
    let no_data = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}).to_string();
    let answer = daemon.post_raw("/v2/models/m/infer", no_data.as_bytes(), &[]);
    assert!(error(answer).1.contains("input 'x' has no data"));
}

#[test]
fn every_element_type_travels_as_binary_byte_for_byte() {
    // The passthrough model answers each input as it came, as the output of the same type.
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("p", 1, crate::onnx::passthrough_types()), 1));
    let meta: Value = daemon.get("/v2/models/p").json();
    let mut header_inputs = Vec::new();
    let mut binary = Vec::new();
    for (i, input) in meta["inputs"].as_array().unwrap().iter().enumerate() {
        let size = match input["datatype"].as_str().unwrap() {
            "BOOL" | "INT8" | "UINT8" => 1,
            "INT32" | "FP32" => 4,
            _ => 8,
        };
        // Two elements of distinct bytes (a BOOL's are 0 or 1).
        let bytes: Vec<u8> = match size {
            1 if input["datatype"] == "BOOL" => vec![1, 0],
            _ => (0..2 * size).map(|b| (b + 16 * i + 1) as u8).collect(),
        };
        header_inputs.push(json!({"name": input["name"], "shape": [1, 2], "datatype": input["datatype"], "parameters": {"binary_data_size": bytes.len()}}));
        binary.extend(bytes);
    }
    let answer = binary_request(
        &daemon,
        "p",
        json!({"inputs": header_inputs, "parameters": {"binary_data_output": true}}),
        &binary,
    );
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let (_, data) = split(&answer);
    assert_eq!(data, binary.as_slice(), "every tensor came back byte for byte");
}

#[test]
fn bytes_outputs_are_length_prefixed_in_binary() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 2), 1));
    let input = json!({"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}});
    let answer = binary_request(
        &daemon,
        "iris",
        json!({"inputs": [input], "parameters": {"binary_data_output": true}}),
        &f32_bytes(&[5.1, 3.5, 1.4, 0.2]),
    );
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let (header, data) = split(&answer);
    let outputs = header["outputs"].as_array().unwrap();
    let label = outputs.iter().position(|o| o["datatype"] == "BYTES").expect("a BYTES output");
    let offset: u64 = outputs[..label].iter().map(|o| o["parameters"]["binary_data_size"].as_u64().unwrap()).sum();
    let bytes = &data[offset as usize..];
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(&bytes[4..4 + len], b"setosa");
}

/// One HTTP/1.1 exchange on a fresh connection: the raw response head and body.
fn exchange(daemon: &TestDaemon, head: &str, body: &[u8]) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(daemon.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (String::from_utf8_lossy(&response[..split]).to_lowercase(), response[split + 4..].to_vec())
}

#[test]
fn gzip_bodies_go_both_ways() {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::{Read, Write};
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("m", 1, family::good(1.0)), 1));
    // 256 rows: a body worth compressing, and an answer too.
    let rows = 256;
    let body = crate::util::infer_body("x", &[rows, 4], &vec![0.25; rows * 4]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let head = format!(
        "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nAccept-Encoding: gzip\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    );
    let (head, answer) = exchange(&daemon, &head, &gz);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut json = String::new();
    flate2::read::GzDecoder::new(answer.as_slice()).read_to_string(&mut json).unwrap();
    let answer: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(answer["outputs"][0]["shape"], json!([rows, 1]));
    // A body that is not gzip says so.
    let head = "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nConnection: close\r\nContent-Length: 4\r\n\r\n";
    let (head, answer) = exchange(&daemon, head, b"nope");
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(String::from_utf8_lossy(&answer).contains("not valid gzip"));
}
