//! The protocol edges real clients hit, through the real daemon: FP16 tensors (exported
//! for GPUs) in OIP JSON, OIP binary and TF Serving REST, rounded to nearest even and
//! refused past their range; a string-input model (a vocabulary lookup, no tokenizer)
//! with its strings unchanged both ways and bytes that are not UTF-8 refused, never
//! replaced; Triton's `classification` output parameter. BF16 needs ONNX Runtime (tract
//! has no bfloat16): those tests are `#[ignore]`d in a plain `cargo test` and run by
//! tests/onnxruntime/run, with the string model on that engine too.

use crate::binary::{binary_request, split};
use crate::onnx::{self, WORDS, family};
use crate::util::{ModelFiles, Setup, TestDaemon};
use half::{bf16, f16};
use serde_json::{Value, json};

/// The FP16 value the daemon must make of a number: nearest, ties to even.
fn f16_of(v: f64) -> f16 {
    modeld::tensor::f16_from_f64(v).expect("in FP16's range")
}

/// What `onnx::half_precision` answers for `x` (already FP16): `y = x + [0.5, 32]`,
/// rounded once from the exact sum.
fn half_answer(x: &[f16]) -> Vec<f16> {
    x.iter().enumerate().map(|(i, v)| f16_of(v.to_f64() + [0.5, 32.0][i % 2])).collect()
}

fn output<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["outputs"].as_array().unwrap().iter().find(|o| o["name"] == name).unwrap_or_else(|| panic!("{answer}"))
}

/// A JSON array of numbers, each read as the f32 it was printed from (FP16 values print
/// as the shortest decimal of their exact f32).
fn as_f32(data: &Value) -> Vec<f32> {
    data.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn half_bytes(values: &[f16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn fp16_travels_as_json_numbers_rounded_to_nearest_even() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("h", 1, onnx::half_precision()), 1));
    let meta = daemon.get("/v2/models/h").json();
    assert_eq!(meta["inputs"], json!([{"name": "x", "datatype": "FP16", "shape": [-1, 2]}]), "{meta}");
    assert_eq!(output(&meta, "y")["datatype"], "FP16");

    // 0.1 is not an FP16 value; 1 + 2^-11 and 1 + 3 × 2^-11 are ties (to even: 1 and
    // 1 + 2^-9); 6e-8 is nearest the smallest subnormal, 2^-24.
    let numbers = [1.5, 0.1, 1.00048828125, 1.00146484375, -65504.0, 6e-8];
    let body = json!({"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP16", "data": [[1.5, 0.1], [1.00048828125, 1.00146484375], [-65504, 6e-8]]}]});
    let answer = daemon.post("/v2/models/h/infer", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    let x: Vec<f16> = numbers.iter().map(|v| f16_of(*v)).collect();
    assert_eq!(x[2..4], [f16::ONE, f16::from_f64(1.001953125)], "ties went to even");
    assert_eq!(x[5], f16::from_bits(1));
    // x32 is the model's own widening of what it was given: the rounding the daemon did.
    assert_eq!(as_f32(&output(&answer, "x32")["data"]), x.iter().map(|v| v.to_f32()).collect::<Vec<_>>());
    let y = output(&answer, "y");
    assert_eq!((&y["datatype"], &y["shape"]), (&json!("FP16"), &json!([3, 2])));
    let want: Vec<f32> = half_answer(&x).iter().map(|v| v.to_f32()).collect();
    assert_eq!(as_f32(&y["data"]), want);
    assert_eq!(want, [2.0, 32.09375, 1.5, 33.0, -65504.0, 32.0]);

    // Past the largest FP16 (65504; 65520 rounds to infinity) is refused, naming the input.
    for (number, at) in [("70000", 1), ("65520", 1), ("-1e10", 0)] {
        let body = format!(
            r#"{{"inputs": [{{"name": "x", "shape": [1, 2], "datatype": "FP16", "data": [{}]}}]}}"#,
            if at == 1 { format!("1, {number}") } else { format!("{number}, 1") }
        );
        let refused = daemon.post("/v2/models/h/infer", &body);
        assert_eq!(refused.status, 400, "{number}: {}", refused.body);
        let message = refused.json()["error"].as_str().unwrap().to_string();
        assert!(
            message.starts_with(&format!("input 'x': data: element {at}: "))
                && message.ends_with("is not a valid FP16 value (out of range: its largest is ±65504)"),
            "{message}"
        );
    }
    // 65519 is in range (it rounds down to 65504), and the model's sum overflowing FP16
    // is a non-finite answer, refused as any NaN or infinity is.
    let overflow = daemon.post(
        "/v2/models/h/infer",
        r#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP16", "data": [65519, 65504]}]}"#,
    );
    assert_eq!(overflow.status, 500, "{}", overflow.body);
    assert!(overflow.body.contains("output 'y' holds non-finite values (1 +Inf of 2 elements)"), "{}", overflow.body);
}

#[test]
fn fp16_travels_as_two_little_endian_bytes_in_binary_and_as_numbers_in_tf_serving() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("h", 1, onnx::half_precision()), 1));
    let x: Vec<f16> = [0.333, -7.25, 1000.0, 0.0001].into_iter().map(f16_of).collect();
    let input = json!({"name": "x", "shape": [2, 2], "datatype": "FP16", "parameters": {"binary_data_size": 8}});
    let header = json!({"inputs": [input], "outputs": [{"name": "y", "parameters": {"binary_data": true}}]});
    let answer = binary_request(&daemon, "h", header, &half_bytes(&x));
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let (header, data) = split(&answer);
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8, "{header}");
    assert_eq!(data, half_bytes(&half_answer(&x)).as_slice(), "y, byte for byte");
    let short = json!({"name": "x", "shape": [2, 2], "datatype": "FP16", "parameters": {"binary_data_size": 7}});
    let refused = binary_request(&daemon, "h", json!({"inputs": [short]}), &[0; 7]);
    let message: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(refused.status, 400);
    assert!(message["error"].as_str().unwrap().contains("7 bytes is not a whole number of FP16 elements"), "{message}");

    // TF Serving: DT_HALF in the signature, numbers both ways, exact values out.
    let meta = daemon.get("/v1/models/h/metadata").json();
    let signature = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(
        (&signature["inputs"]["x"]["dtype"], &signature["outputs"]["y"]["dtype"]),
        (&json!("DT_HALF"), &json!("DT_HALF"))
    );
    let rows = daemon.post("/v1/models/h:predict", r#"{"instances": [[1.5, 0.1], [1.00048828125, 2]]}"#);
    assert_eq!(rows.status, 200, "{}", rows.body);
    assert_eq!(
        rows.json(),
        json!({"predictions": [
            {"y": [2.0, 32.09375], "x32": [1.5, 0.0999755859375]},
            {"y": [1.5, 34.0], "x32": [1.0, 2.0]}
        ]})
    );
    let refused = daemon.post("/v1/models/h:predict", r#"{"inputs": {"x": [[1, 1e5]]}}"#);
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"].as_str().unwrap().starts_with("input 'x': element 1: 100000 is not a valid FP16 value")
    );
}

/// Strings a client may send: non-ASCII, a 4-byte character, the empty string, JSON's
/// escapes (and a NUL byte, `with_nul`); the first three are the model's words.
fn texts(with_nul: bool) -> Vec<String> {
    let mut texts: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    let escapes = if with_nul { "tab\t\"quote\" \u{0} 😀" } else { "tab\t\"quote\" 😀" };
    texts.extend(["unknown".into(), String::new(), escapes.into()]);
    texts
}

fn length_prefixed(items: &[&[u8]]) -> Vec<u8> {
    items.iter().flat_map(|i| (i.len() as u32).to_le_bytes().into_iter().chain(i.iter().copied())).collect()
}

/// The `words` model (served as `model`) takes strings in JSON and binary, answers them
/// unchanged, and refuses bytes that are not UTF-8 naming the element.
pub fn words_cross_intact(daemon: &TestDaemon, model: &str, texts: &[String]) {
    let meta = daemon.get(&format!("/v2/models/{model}")).json();
    assert_eq!(meta["inputs"], json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}]), "{meta}");
    let body = json!({"inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]});
    let answer = daemon.post(&format!("/v2/models/{model}/infer"), &body.to_string());
    assert_eq!(answer.status, 200, "{model}: {}", answer.body);
    let answer = answer.json();
    assert_eq!(output(&answer, "id")["data"], json!([0, 1, 2, -1, -1, -1]), "{model}");
    assert_eq!(output(&answer, "echo")["data"], json!(texts), "{model}: strings unchanged");
    assert_eq!(output(&answer, "echo")["datatype"], "BYTES");

    // Binary: each element a 4-byte length and its bytes, both ways.
    let items: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let bytes = length_prefixed(&items);
    let input = json!({"name": "text", "shape": [texts.len()], "datatype": "BYTES", "parameters": {"binary_data_size": bytes.len()}});
    let header =
        json!({"inputs": [input], "outputs": [{"name": "echo", "parameters": {"binary_data": true}}, {"name": "id"}]});
    let answer = binary_request(daemon, model, header, &bytes);
    assert_eq!(answer.status, 200, "{model}: {}", String::from_utf8_lossy(&answer.body));
    let (header, data) = split(&answer);
    assert_eq!(data, bytes.as_slice(), "{model}: echo byte for byte");
    assert_eq!(output(&header, "id")["data"], json!([0, 1, 2, -1, -1, -1]));

    // Bytes that are not UTF-8 cannot be an ONNX string: refused, naming the element.
    let bad = length_prefixed(&[b"plain", &[0xFF, 0xFE, b'a']]);
    let input =
        json!({"name": "text", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": bad.len()}});
    let refused = binary_request(daemon, model, json!({"inputs": [input]}), &bad);
    assert_eq!(refused.status, 400, "{model}: {}", String::from_utf8_lossy(&refused.body));
    let message: Value = serde_json::from_slice(&refused.body).unwrap();
    let message = message["error"].as_str().unwrap();
    assert!(message.starts_with("input 'text': element 1 is not UTF-8 (invalid utf-8 sequence"), "{model}: {message}");
    assert!(message.ends_with("the model's string input takes text"), "{message}");
}

#[test]
fn a_string_input_model_answers_every_string_unchanged() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("words", 1, onnx::words()), 1));
    words_cross_intact(&daemon, "words", &texts(true));

    // TF Serving: strings as text or {"b64"}; answers as text (they are UTF-8).
    let rows = daemon.post("/v1/models/words:predict", r#"{"instances": ["naïve", {"b64": "cGxhaW4="}, "x"]}"#);
    assert_eq!(rows.status, 200, "{}", rows.body);
    assert_eq!(
        rows.json(),
        json!({"predictions": [{"id": 0, "echo": "naïve"}, {"id": 2, "echo": "plain"}, {"id": -1, "echo": "x"}]})
    );
    let meta = daemon.get("/v1/models/words/metadata").json();
    let signature = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(signature["inputs"]["text"]["dtype"], "DT_STRING");
    let refused = daemon.post("/v1/models/words:predict", r#"{"instances": [{"b64": "//4="}]}"#);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.json()["error"].as_str().unwrap().starts_with("input 'text': element 0 is not UTF-8"),
        "{}",
        refused.body
    );
    // Strings have no order: asking for their classes is refused before they run.
    let body = json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["plain"]}],
                      "outputs": [{"name": "echo", "parameters": {"classification": 1}}]});
    let refused = daemon.post("/v2/models/words/infer", &body.to_string());
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("output 'echo': classification needs class scores, but it is BYTES")
    );
}

#[test]
fn classification_answers_the_top_classes_as_triton_writes_them() {
    let classifier = ModelFiles::new("c", 1, family::classifier(false)).with_manifest(family::CLASSIFIER_LABELS);
    let daemon = TestDaemon::ready(Setup::new().model(classifier, 1));
    // Logits x × W: [0, 2, 4] for the first row, [5, 2, -1] for the second.
    let inputs =
        json!([{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[0, 1, 0.5, 0.25], [5, 1, 0.5, 0.25]]}]);
    let body = json!({"inputs": inputs, "outputs": [{"name": "logits", "parameters": {"classification": 2}}]});
    let answer = daemon.post("/v2/models/c/infer", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["outputs"],
        json!([{"name": "logits", "datatype": "BYTES", "shape": [2, 2],
                "data": ["4.000000:2:high", "2.000000:1:mid", "5.000000:0:low", "2.000000:1:mid"]}])
    );
    // As binary data: the same strings, length-prefixed; K past the classes gives them all.
    let body = json!({"inputs": inputs, "outputs": [{"name": "logits", "parameters": {"classification": 9, "binary_data": true}}]});
    let answer = daemon.post_raw("/v2/models/c/infer", body.to_string().as_bytes(), &[]);
    let (header, data) = split(&answer);
    assert_eq!(header["outputs"][0]["shape"], json!([2, 3]), "{header}");
    let first: [&[u8]; 3] = [b"4.000000:2:high", b"2.000000:1:mid", b"0.000000:0:low"];
    assert!(data.starts_with(&length_prefixed(&first)), "{}", String::from_utf8_lossy(data));
    let body = json!({"inputs": inputs, "outputs": [{"name": "logits", "parameters": {"classification": 0}}]});
    let refused = daemon.post("/v2/models/c/infer", &body.to_string());
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"].as_str().unwrap().contains("parameters.classification is 0"), "{}", refused.body);
}

/// The library the ONNX Runtime tests run with (tests/onnxruntime/run sets it).
fn onnxruntime_library() -> String {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(path) if !path.is_empty() => path,
        _ => panic!("ORT_DYLIB_PATH must name a libonnxruntime.so for this test (tests/onnxruntime/run installs one)"),
    }
}

/// BF16 through ONNX Runtime in JSON, binary and TF Serving; the string model on that
/// engine behaves as on tract.
#[test]
#[ignore = "needs libonnxruntime.so in ORT_DYLIB_PATH; run by tests/onnxruntime/run"]
fn onnxruntime_serves_bf16_and_strings() {
    let ort = "engine = \"onnxruntime\"\n";
    let setup = Setup::new()
        .server(&format!("onnxruntime_library = \"{}\"", onnxruntime_library()))
        .model_with(ModelFiles::new("b", 1, onnx::bfloat16()), ort)
        .model_with(ModelFiles::new("words", 1, onnx::words()), ort)
        .model_with(ModelFiles::new("h", 1, onnx::half_precision()), ort);
    let daemon = TestDaemon::ready(setup);
    words_cross_intact(&daemon, "words", &texts(false));
    // ONNX Runtime takes each string as a C string: one holding NUL is refused, named.
    let body = json!({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["plain", "a\u{0}b"]}]});
    let refused = daemon.post("/v2/models/words/infer", &body.to_string());
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(
        refused.json()["error"],
        "input 'text': element 1 holds a NUL byte, which ONNX Runtime's string tensors cannot take"
    );

    let meta = daemon.get("/v2/models/b").json();
    assert_eq!(meta["inputs"], json!([{"name": "x", "datatype": "BF16", "shape": [-1, 2]}]), "{meta}");
    let numbers = [1.5, 0.1, 1e38, -3.0078125];
    let x: Vec<bf16> = numbers.iter().map(|v| modeld::tensor::bf16_from_f64(*v).unwrap()).collect();
    let doubled: Vec<f32> = x.iter().map(|v| bf16::from_f32(v.to_f32() * 2.0).to_f32()).collect();
    let body = json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "BF16", "data": numbers}]});
    let answer = daemon.post("/v2/models/b/infer", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(as_f32(&output(&answer, "x32")["data"]), x.iter().map(|v| v.to_f32()).collect::<Vec<_>>());
    assert_eq!(output(&answer, "y")["datatype"], "BF16");
    assert_eq!(as_f32(&output(&answer, "y")["data"]), doubled);
    let refused = daemon.post(
        "/v2/models/b/infer",
        r#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BF16", "data": [1, 3.4e38]}]}"#,
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("element 1: 340000000000000000000000000000000000000 is not a valid BF16 value (out of range"),
        "{}",
        refused.body
    );

    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let input = json!({"name": "x", "shape": [2, 2], "datatype": "BF16", "parameters": {"binary_data_size": 8}});
    let header = json!({"inputs": [input], "outputs": [{"name": "y", "parameters": {"binary_data": true}}]});
    let answer = binary_request(&daemon, "b", header, &bytes);
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let want: Vec<u8> = doubled.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
    assert_eq!(split(&answer).1, want.as_slice());

    let meta = daemon.get("/v1/models/b/metadata").json();
    assert_eq!(
        meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]["dtype"],
        "DT_BFLOAT16"
    );
    let rows = daemon.post("/v1/models/b:predict", r#"{"instances": [[1.5, 0.1]]}"#);
    assert_eq!(rows.json()["predictions"][0]["y"], json!([3.0, 0.2001953125]), "{}", rows.body);

    // FP16 on ONNX Runtime gives tract's answer.
    let body = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP16", "data": [1.5, 0.1]}]});
    let answer = daemon.post("/v2/models/h/infer", &body.to_string()).json();
    assert_eq!(as_f32(&output(&answer, "y")["data"]), [2.0, 32.09375]);
}
