//! How much faster tract runs on plans built for concrete shapes than on one plan with
//! symbolic dimensions, per reference model (tests/fixtures/reference), on each model's
//! reference input.
//!
//!     cargo run --release --example plan_speedup [ITERATIONS]

use modeld::repo::Manifest;
use modeld::tensor::{Tensor, Values};
use modeld::wire::Buckets;
use modeld::worker::engine::Engine;
use std::path::Path;
use std::time::Instant;
use tract_onnx::prelude::*;

const MODELS: [(&str, &str); 4] =
    [("tabular_mlp", "features"), ("lstm_clf", "frames"), ("kws_conv_gru", "mfcc"), ("squeezenet1_1", "input")];

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(50);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    println!("| model | input shape | symbolic plan (ms) | concrete plan (ms) | speedup |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, input) in MODELS {
        let path = dir.join(format!("{name}.onnx"));
        let mut npz = npyz::npz::NpzArchive::open(dir.join(format!("{name}.ref.npz")))?;
        let array = npz.by_name(&format!("input_{input}"))?.expect("reference input");
        let shape: Vec<usize> = array.shape().iter().map(|d| *d as usize).collect();
        let data: Vec<f32> = array.into_vec()?;

        // One plan, typed with the model's symbolic dimensions, as tract loads it by default.
        let symbolic = tract_onnx::onnx().model_for_path(&path)?.into_optimized()?.into_runnable()?;
        let tensor = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), data.clone())?.into_tvalue();
        let symbolic_ms = time(iterations, || symbolic.run(tvec![tensor.clone()]).map(drop))?;

        // modeld's engine: a plan optimized for this exact shape (built on first use).
        let engine = Engine::new(
            modeld::worker::tract::TractBackend::loaded(
                modeld::worker::loader::load(&path, &Manifest::default())?,
                modeld::worker::device::Placement::Cpu,
                8,
            ),
            Buckets::Exact,
        );
        let request = Tensor::from_values(input, shape.clone(), Values::F32(data.clone()))?;
        let concrete_ms =
            time(iterations, || engine.infer(vec![request.clone()]).map(drop).map_err(|f| anyhow::anyhow!(f.message)))?;
        println!("| {name} | {shape:?} | {symbolic_ms:.3} | {concrete_ms:.3} | {:.2}x |", symbolic_ms / concrete_ms);
    }
    Ok(())
}

/// Milliseconds per call, after one warm-up call.
fn time(iterations: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let started = Instant::now();
    for _ in 0..iterations {
        f()?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / iterations as f64)
}
