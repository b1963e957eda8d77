//! What parsing one large OIP JSON request costs the supervisor: `parse_infer` on an
//! image-sized body (1 x 3 x 224 x 224 FP32, six decimals as clients print them), next to
//! serde_json's plain skip over the same bytes (the floor of any pass) and a full
//! `serde_json::Value` tree.
//!
//!     cargo run --release --example json_cost [BODY.json]
//!
//! Without a file the body is generated; with one it must be an infer request whose
//! single input is named "input" and shaped [1, 3, 224, 224].

use modeld::tensor::{DType, TensorSpec};
use std::time::{Duration, Instant};

const ROUNDS: u32 = 20;

fn main() {
    let body = match std::env::args().nth(1) {
        Some(path) => std::fs::read(path).expect("body file"),
        None => generated_body(),
    };
    let spec = TensorSpec { name: "input".into(), dtype: DType::F32, shape: vec![None, Some(3), Some(224), Some(224)] };
    println!("body: {} bytes", body.len());
    for _ in 0..3 {
        let parse = time(|| {
            let request = modeld::front::oip::parse_infer(&body, std::slice::from_ref(&spec), &[]);
            std::hint::black_box(request.map(|r| r.inputs).map_err(|_| "parse_infer refused the body").unwrap());
        });
        let skip = time(|| {
            std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body).unwrap());
        });
        let tree = time(|| {
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
        });
        println!("parse_infer {parse:?}; serde_json skip-only pass {skip:?}; serde_json Value tree {tree:?}");
    }
}

fn time(mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    (0..ROUNDS).for_each(|_| f());
    started.elapsed() / ROUNDS
}

fn generated_body() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<String> = (0..3 * 224 * 224)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{:.6}", (state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0)
        })
        .collect();
    format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": [{}]}}]}}"#,
        data.join(", ")
    )
    .into_bytes()
}
