//! One model version, ready to run requests: checks each request against the model's
//! signature and runs it on the model's [`Backend`] (tract's plans, or an ONNX Runtime
//! session), the same way for both.
//!
//! Nothing a request carries can crash the worker: a request that does not fit the model is
//! a [`Fault::BadInput`], a failure inside the engine (even a panic) a [`Fault::Internal`].
//!
//! For a model whose inputs and outputs all have an open first dimension (a batch
//! dimension), on an engine that builds per shape (tract) a run of `rows` rows is padded up
//! to its bucket (a power of two by default) so a few plans cover every batch size, and the
//! padding rows are dropped from the outputs.

use super::contract::Contract;
use crate::wire::Buckets;
use crate::wire::{Fault, Labels, ModelInfo};
use crate::wire::{Tensor, TensorSpec, Values};
use std::panic::AssertUnwindSafe;

/// What runs a loaded model: tract ([`super::tract::TractBackend`]) or ONNX Runtime
/// ([`super::onnxruntime::OrtBackend`]).
pub trait Backend: Send + Sync {
    /// Runs inputs in the model's input order; the outputs come in the model's output
    /// order, as the engine gives them (class indices still indices).
    fn execute(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure>;
    /// Whether the engine builds something per concrete set of shapes (a plan), so that
    /// batches are padded to a few bucket sizes.
    fn per_shape(&self) -> bool;
    /// Builds ahead what running `shapes` needs.
    fn prepare(&self, shapes: &[Vec<usize>]) -> Result<(), String>;
    /// How many plans have been built so far.
    fn builds(&self) -> u64;
}

/// A model as an engine loaded it: its signature, and what runs it.
pub struct Loaded {
    pub info: ModelInfo,
    pub backend: Box<dyn Backend>,
    /// Outputs the engine gives as class indices that are served as these strings.
    pub string_outputs: Vec<Labels>,
}

pub struct Engine {
    pub info: ModelInfo,
    backend: Box<dyn Backend>,
    string_outputs: Vec<Labels>,
    buckets: Buckets,
    /// Every input and output has an open first dimension: requests can be stacked.
    pub batchable: bool,
    /// What model.toml declares of the outputs; every answer is checked against it.
    pub contract: Contract,
}

/// What one run gave.
pub struct Run {
    pub outputs: Vec<Tensor>,
    /// Plans this run had to build (0 once the shapes are cached).
    pub plans_built: u32,
}

/// A request the engine refused or could not run, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub fault: Fault,
    pub message: String,
}

impl Failure {
    pub(super) fn bad_input(message: impl Into<String>) -> Failure {
        Failure { fault: Fault::BadInput, message: message.into() }
    }
    pub(super) fn internal(message: impl Into<String>) -> Failure {
        Failure { fault: Fault::Internal, message: message.into() }
    }
}

impl Engine {
    pub fn new(model: Loaded, buckets: Buckets) -> Engine {
        let open_first = |specs: &[TensorSpec]| specs.iter().all(|s| s.has_open_batch());
        let batchable = open_first(&model.info.inputs) && open_first(&model.info.outputs);
        Engine {
            backend: model.backend,
            info: model.info,
            string_outputs: model.string_outputs,
            buckets,
            batchable,
            contract: Contract::default(),
        }
    }

    pub fn plan_builds(&self) -> u64 {
        self.backend.builds()
    }

    /// Runs one request: its inputs in any order, named as the model names them.
    pub fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        self.run(self.prepare(inputs)?).map(|run| run.outputs)
    }

    /// Runs one request and holds its answer to the output contract, as a served request
    /// is (the warm-up and golden examples).
    pub fn answer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        let outputs = self.infer(inputs)?;
        self.contract.check(&outputs)?;
        Ok(outputs)
    }

    /// Checks a request and puts its inputs in the model's order.
    pub fn prepare(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        order_inputs(&self.info.inputs, inputs)
    }

    /// Builds ahead the plans for `sizes` rows (bucketed), where every other dimension is
    /// known from the model or `hints` ([`Engine::plan_builds`] counts them).
    pub fn build_plans(&self, sizes: &[usize], hints: &std::collections::BTreeMap<String, Vec<usize>>) {
        if !self.batchable || !self.backend.per_shape() {
            return;
        }
        let rest: Option<Vec<Vec<usize>>> = self
            .info
            .inputs
            .iter()
            .map(|spec| match hints.get(&spec.name) {
                Some(shape) => Some(shape[1.min(shape.len())..].to_vec()),
                None => spec.shape[1..].iter().copied().collect(),
            })
            .collect();
        let Some(rest) = rest else { return };
        let buckets: std::collections::BTreeSet<usize> = sizes.iter().map(|s| self.buckets.size_for(*s)).collect();
        for rows in buckets {
            let shapes: Vec<Vec<usize>> =
                rest.iter().map(|r| std::iter::once(rows).chain(r.iter().copied()).collect()).collect();
            if let Err(e) = self.backend.prepare(&shapes) {
                tracing::warn!("could not build the plan for {shapes:?} ahead: {e}");
            }
        }
    }

    /// Runs inputs already prepared (one request, or a batch stacked along the first
    /// dimension), padded to their bucket.
    pub fn run(&self, mut inputs: Vec<Tensor>) -> Result<Run, Failure> {
        let rows = inputs.first().map_or(1, Tensor::rows);
        let padded = if self.batchable && self.backend.per_shape() { self.buckets.size_for(rows) } else { rows };
        if padded != rows {
            inputs.iter_mut().for_each(|t| t.pad_rows(padded));
        }
        let builds = self.backend.builds();
        let mut outputs = self.execute(inputs)?;
        if padded != rows {
            outputs = outputs.iter().map(|t| t.slice_rows(0, rows)).collect();
        }
        Ok(Run { outputs, plans_built: (self.backend.builds() - builds) as u32 })
    }

    fn execute(&self, ordered: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        let _running = super::progress::running();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.backend.execute(ordered)));
        let outputs = match outcome {
            Ok(result) => result?,
            Err(panic) => {
                return Err(Failure::internal(format!("inference panicked: {}", panic_text(&panic))));
            }
        };
        outputs
            .into_iter()
            .map(|tensor| match self.string_outputs.iter().find(|l| l.output == tensor.name) {
                Some(labels) => index_to_strings(tensor, &labels.names),
                None => Ok(tensor),
            })
            .collect()
    }
}

/// Maps class indices back to the class strings the model was exported with.
fn index_to_strings(tensor: Tensor, names: &[String]) -> Result<Tensor, Failure> {
    let indices = tensor.to_f64();
    let strings = indices
        .iter()
        .map(|i| names.get(*i as usize).map(|s| s.as_bytes().to_vec()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Failure::internal(format!("output '{}' gave a class index out of range", tensor.name)))?;
    Tensor::from_values(tensor.name, tensor.shape, Values::Bytes(strings)).map_err(|e| Failure::internal(e.to_string()))
}

/// A BYTES input's elements as text: ONNX string tensors hold text in both engines (Rust
/// strings in tract, and in the `ort` crate's API), so bytes that are not UTF-8 are
/// refused, naming the element, rather than replaced by U+FFFD.
pub fn text_elements(tensor: &Tensor) -> Result<Vec<String>, Failure> {
    let Values::Bytes(items) = tensor.values() else {
        return Err(Failure::internal(format!("input '{}' is {}, not BYTES", tensor.name, tensor.dtype)));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            String::from_utf8(bytes).map_err(|e| {
                Failure::bad_input(format!(
                    "input '{}': element {i} is not UTF-8 ({}); the model's string input takes text",
                    tensor.name,
                    e.utf8_error()
                ))
            })
        })
        .collect()
}

pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Puts the request's tensors in the model's input order, checking names, element types,
/// ranks, fixed dimensions and data lengths.
pub fn order_inputs(specs: &[TensorSpec], mut inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
    let mut ordered = Vec::with_capacity(specs.len());
    for spec in specs {
        let pos = inputs
            .iter()
            .position(|t| t.name == spec.name)
            .ok_or_else(|| Failure::bad_input(format!("missing input '{}'", spec.name)))?;
        let tensor = inputs.swap_remove(pos);
        spec.admits(&tensor).map_err(Failure::bad_input)?;
        ordered.push(tensor);
    }
    if let Some(extra) = inputs.first() {
        return Err(Failure::bad_input(format!("unexpected input '{}'", extra.name)));
    }
    Ok(ordered)
}
