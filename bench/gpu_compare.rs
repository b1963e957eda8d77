//! The CPU against a GPU, in one process: each reference model (tests/fixtures/reference)
//! on modeld's tract engine with plans built for the CPU and for CUDA, on its reference
//! input once and repeated 32 times along the batch dimension. It prints milliseconds per run and images (rows) per second for
//! both, the GPU's speedup, and the largest difference between the two devices' outputs
//! as a share of the largest CPU output, which must stay under 1e-3, with every row's top
//! class the same (exit 1 otherwise). 1e-3 is TF32's precision: cuDNN may run float32
//! convolutions in TF32 (as PyTorch and ONNX Runtime's CUDA provider allow by default),
//! which `NVIDIA_TF32_OVERRIDE=0` turns off. On a host without a
//! usable GPU it prints why and the CPU's figures only. `bench/gpu_check.sh` runs it.
//!
//!     cargo run --release --example gpu_compare [RUNS] [MODEL.onnx:INPUT ...]

use modeld::repo::Manifest;
use modeld::tensor::{Tensor, Values};
use modeld::wire::Buckets;
use modeld::wire::engine::{DeviceKind, EngineKind};
use modeld::worker::device::{self, Placement};
use modeld::worker::engine::{Engine, panic_text};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The reference models and their input.
const MODELS: [(&str, &str); 4] =
    [("tabular_mlp", "features"), ("lstm_clf", "frames"), ("kws_conv_gru", "mfcc"), ("squeezenet1_1", "input")];

/// How far CUDA's outputs may be from the CPU's, as a share of the largest CPU output.
const RELATIVE_TOLERANCE: f32 = 1e-3;

struct Case {
    name: String,
    path: PathBuf,
    input: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let extra: Vec<String> = args.collect();
    let cases = cases(&extra)?;
    let cuda = device::resolve(DeviceKind::Cuda, EngineKind::Tract);
    match &cuda {
        Ok(found) => println!("GPU: {}", found.described),
        Err(why) => println!("no GPU: {why}\n(CPU figures only)"),
    }
    println!(
        "| model | rows | CPU ms/run | CPU rows/s | GPU ms/run | GPU rows/s | GPU speedup | max abs diff | relative | same top-1 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut outside = Vec::new();
    for case in &cases {
        // One model failing on the device (an error, or a panic inside tract-cuda) is
        // reported and the others still run: a borrowed GPU gives one try.
        let compared =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compare(case, runs, cuda.is_ok(), &mut outside)));
        match compared {
            Ok(Ok(())) => {}
            Ok(Err(why)) => outside.push(format!("{}: {why:#}", case.name)),
            Err(panic) => outside.push(format!("{}: panicked: {}", case.name, panic_text(&panic))),
        }
    }
    if !outside.is_empty() {
        anyhow::bail!("GPU outputs outside tolerance or failed: {}", outside.join("; "));
    }
    Ok(())
}

/// One model's rows of the table: the CPU's figures, and the GPU's beside them when there
/// is one; a GPU output too far from the CPU's, or another top class, goes to `outside`.
fn compare(case: &Case, runs: usize, on_gpu: bool, outside: &mut Vec<String>) -> anyhow::Result<()> {
    let cpu = engine(&case.path, Placement::Cpu)?;
    let gpu = on_gpu.then(|| engine(&case.path, Placement::Cuda)).transpose()?;
    for batch in [1, 32] {
        let Some(request) = request(case, batch, &cpu) else { continue };
        let rows = request.shape[0];
        let (cpu_ms, cpu_out) = time(runs, &cpu, &request)?;
        let mut row = format!("| {} | {rows} | {cpu_ms:.3} | {:.1} |", case.name, rows_per_s(rows, cpu_ms));
        if let Some(gpu) = &gpu {
            let (gpu_ms, gpu_out) = time(runs, gpu, &request)?;
            let diff = max_abs_diff(&cpu_out, &gpu_out);
            let relative = diff / cpu_out.iter().fold(f32::MIN_POSITIVE, |m, x| m.max(x.abs()));
            let same_top = top_classes(&cpu_out, rows) == top_classes(&gpu_out, rows);
            if relative > RELATIVE_TOLERANCE || !same_top {
                outside.push(format!(
                    "{} batch {batch}: {relative:e} of the output's range (> {RELATIVE_TOLERANCE:e}?), same top-1: {same_top}",
                    case.name
                ));
            }
            row += &format!(
                " {gpu_ms:.3} | {:.1} | {:.2}x | {diff:.1e} | {relative:.1e} | {same_top} |",
                rows_per_s(rows, gpu_ms),
                cpu_ms / gpu_ms
            );
        } else {
            row += " - | - | - | - | - | - |";
        }
        println!("{row}");
    }
    Ok(())
}

/// The reference models, and any `MODEL.onnx:INPUT` given (a random input of its declared
/// shape, batch dimension 1).
fn cases(extra: &[String]) -> anyhow::Result<Vec<Case>> {
    // From the repository's root when run there (a binary carried to another machine),
    // else where it was built.
    let here = Path::new("tests/fixtures/reference");
    let dir = match here.is_dir() {
        true => here.to_path_buf(),
        false => Path::new(env!("CARGO_MANIFEST_DIR")).join(here),
    };
    let mut cases = Vec::new();
    for (name, input) in MODELS {
        let mut npz = npyz::npz::NpzArchive::open(dir.join(format!("{name}.ref.npz")))?;
        let array = npz.by_name(&format!("input_{input}"))?.expect("reference input");
        let shape = array.shape().iter().map(|d| *d as usize).collect();
        let data = array.into_vec()?;
        let path = dir.join(format!("{name}.onnx"));
        cases.push(Case { name: name.into(), path, input: input.into(), shape, data });
    }
    for spec in extra {
        let (path, input) = spec.split_once(':').ok_or_else(|| anyhow::anyhow!("'{spec}' is not MODEL.onnx:INPUT"))?;
        let engine = engine(Path::new(path), Placement::Cpu)?;
        let declared = engine.info.inputs.iter().find(|s| s.name == input);
        let declared = declared.ok_or_else(|| anyhow::anyhow!("{path} has no input '{input}'"))?;
        let shape: Vec<usize> = declared.shape.iter().map(|d| d.unwrap_or(1)).collect();
        let count = shape.iter().product::<usize>();
        // A fixed pseudo-random image: both devices see the same numbers.
        let data = (0..count).map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5).collect();
        let name = Path::new(path).file_stem().map_or(path.into(), |s| s.to_string_lossy().into_owned());
        cases.push(Case { name, path: path.into(), input: input.into(), shape, data });
    }
    Ok(cases)
}

fn engine(path: &Path, placement: Placement) -> anyhow::Result<Engine> {
    let model = modeld::worker::loader::load(path, &Manifest::default())?;
    Ok(Engine::new(modeld::worker::tract::TractBackend::loaded(model, placement, 8), Buckets::Exact))
}

/// The reference input (its rows) repeated `batch` times along its first dimension; `None`
/// when the model takes only one row.
fn request(case: &Case, batch: usize, engine: &Engine) -> Option<Tensor> {
    if batch > 1 && !engine.batchable {
        return None;
    }
    let rows = case.shape[0].max(1);
    let mut shape = case.shape.clone();
    shape[0] = rows * batch;
    let data: Vec<f32> = (0..batch).flat_map(|_| case.data.iter().copied()).collect();
    Tensor::from_values(case.input.clone(), shape, Values::F32(data)).ok()
}

/// Milliseconds per run (after two warm-up runs, which build the plan) and the outputs.
fn time(runs: usize, engine: &Engine, request: &Tensor) -> anyhow::Result<(f64, Vec<f32>)> {
    let run = || engine.infer(vec![request.clone()]).map_err(|f| anyhow::anyhow!(f.message));
    run()?;
    run()?;
    let started = Instant::now();
    for _ in 0..runs {
        run()?;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    let outputs = run()?;
    let floats = match outputs[0].values() {
        Values::F32(v) => v,
        other => anyhow::bail!("first output is {other:?}, not float"),
    };
    Ok((ms, floats))
}

fn rows_per_s(batch: usize, ms: f64) -> f64 {
    batch as f64 * 1000.0 / ms
}

/// Each row's index of its largest output (the first output split into `rows` rows).
fn top_classes(output: &[f32], rows: usize) -> Vec<usize> {
    let per_row = (output.len() / rows.max(1)).max(1);
    let top = |row: &[f32]| row.iter().enumerate().fold(0, |best, (i, x)| if *x > row[best] { i } else { best });
    output.chunks(per_row).map(top).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
