//! What a version must pass before it takes traffic: a warm-up run and the golden examples
//! of its `model.toml`.
//!
//! The warm-up builds the first plan and touches the weights, so the first real request
//! does not pay for it. Without a declared warm-up input, zeros shaped from the model's
//! declared inputs (open dimensions set to 1) are used; if the model refuses those, the
//! worker logs it and goes on, since such a default only guesses at valid input (on a GPU,
//! a failure of the device's stops it). A declared warm-up or a golden example that fails
//! stops the version with the reason — a declared one's answer held to the output contract
//! (NaN, probabilities that are none) as a served answer is. Zeros are not always valid
//! data (a model that divides by its input's spread answers NaN to them), so what the
//! default warm-up gives is logged, never fatal.

use super::engine::Engine;
use crate::wire::manifest::{Example, Golden, Manifest};
use crate::wire::{DType, Fault, Tensor, TensorSpec, Values};
use std::collections::BTreeMap;

/// Runs the warm-up, then every golden example.
pub fn run_all(engine: &Engine, manifest: &Manifest) -> Result<(), String> {
    warm_up(engine, manifest)?;
    for (i, golden) in manifest.golden.iter().enumerate() {
        check_golden(engine, golden).map_err(|e| format!("golden example {i} failed: {e}"))?;
    }
    Ok(())
}

fn warm_up(engine: &Engine, manifest: &Manifest) -> Result<(), String> {
    if let Some(warmup) = &manifest.warmup {
        let inputs = examples_to_tensors(&engine.info.inputs, &warmup.inputs)?;
        return engine.answer(inputs).map(drop).map_err(|f| format!("warm-up failed: {}", f.message));
    }
    let inputs = engine.info.inputs.iter().map(|spec| zeros(spec, manifest)).collect::<Vec<_>>();
    match engine.answer(inputs) {
        // On a GPU a server-side failure is the device's (no plan, its memory): the version
        // must not take traffic it would fail.
        Err(f) if f.fault == Fault::Internal && engine.info.on_gpu() => {
            Err(format!("warm-up on {} failed: {}", engine.info.device, f.message))
        }
        Err(f) => {
            tracing::warn!("default warm-up (zeros) was refused, going on without: {}", f.message);
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

fn zeros(spec: &TensorSpec, manifest: &Manifest) -> Tensor {
    let shape: Vec<usize> = match manifest.inputs.get(&spec.name) {
        Some(hint) => hint.shape.clone(),
        None => spec.shape.iter().map(|d| d.unwrap_or(1)).collect(),
    };
    let count = shape.iter().product();
    let data = match spec.dtype.size() {
        Some(size) => vec![0u8; count * size],
        None => Values::Bytes(vec![Vec::new(); count]).into_bytes(),
    };
    Tensor { name: spec.name.clone(), dtype: spec.dtype, shape, data }
}

fn examples_to_tensors(specs: &[TensorSpec], examples: &BTreeMap<String, Example>) -> Result<Vec<Tensor>, String> {
    examples
        .iter()
        .map(|(name, example)| {
            let spec = specs
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| format!("model.toml names input '{name}', which the model does not have"))?;
            example.to_tensor(name, spec.dtype)
        })
        .collect()
}

fn check_golden(engine: &Engine, golden: &Golden) -> Result<(), String> {
    let inputs = examples_to_tensors(&engine.info.inputs, &golden.inputs)?;
    let outputs = engine.answer(inputs).map_err(|f| f.message)?;
    for (name, want) in &golden.outputs {
        let got = outputs
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| format!("model.toml names output '{name}', which the model does not have"))?;
        let want = want.to_tensor(name, got.dtype)?;
        compare(got, &want, golden.atol, golden.rtol)?;
    }
    Ok(())
}

/// Checks `got` against `want` elementwise: `|got - want| <= atol + rtol * |want|` for
/// numbers, equality for strings.
pub fn compare(got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> Result<(), String> {
    let name = &got.name;
    if got.shape != want.shape {
        return Err(format!("output '{name}': shape {:?}, expected {:?}", got.shape, want.shape));
    }
    if got.dtype == DType::Bytes {
        return match got.values() == want.values() {
            true => Ok(()),
            false => Err(format!("output '{name}': strings differ")),
        };
    }
    let (g, w) = (got.to_f64(), want.to_f64());
    for (i, (g, w)) in g.iter().zip(&w).enumerate() {
        // Written so that NaN on either side fails the check.
        let within = (g - w).abs() <= atol + rtol * w.abs();
        if !within {
            return Err(format!("output '{name}' element {i}: got {g}, expected {w} (atol {atol}, rtol {rtol})"));
        }
    }
    Ok(())
}
