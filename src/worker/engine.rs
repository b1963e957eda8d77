//! One model version, ready to run requests: checks each request against the model's
//! signature, converts tensors to and from tract's, and runs the plan for their shapes.
//!
//! Nothing a request carries can crash the worker: a request that does not fit the model is
//! a [`Fault::BadInput`], a failure inside tract (even a panic) a [`Fault::Internal`].
//!
//! For a model whose inputs and outputs all have an open first dimension (a batch
//! dimension), a run of `rows` rows is padded up to its bucket (a power of two by default)
//! so a few plans cover every batch size, and the padding rows are dropped from the outputs.

use super::finite::Finite;
use super::loader::{LoadedModel, datum_type, dtype_of};
use super::plans::PlanCache;
use crate::wire::Buckets;
use crate::wire::{DType, Tensor, TensorSpec, Values};
use crate::wire::{Fault, Labels, ModelInfo};
use std::panic::AssertUnwindSafe;
use tract_onnx::prelude::{Tensor as TractTensor, *};
use tract_onnx::tract_core::ndarray::ArrayD;

pub struct Engine {
    pub info: ModelInfo,
    plans: PlanCache,
    string_outputs: Vec<Labels>,
    buckets: Buckets,
    /// Every input and output has an open first dimension: requests can be stacked.
    pub batchable: bool,
    /// Which outputs may hold NaN or ±Inf; every answer is checked against it.
    pub finite: Finite,
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
    fn bad_input(message: impl Into<String>) -> Failure {
        Failure { fault: Fault::BadInput, message: message.into() }
    }
    pub(super) fn internal(message: impl Into<String>) -> Failure {
        Failure { fault: Fault::Internal, message: message.into() }
    }
}

/// Lets every inference in this process split its matrix products across `threads`
/// threads (process-wide: tract keeps one executor); 1 keeps them on the calling thread.
pub fn use_intra_op_threads(threads: usize) {
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::multithread(threads));
    }
}

impl Engine {
    pub fn new(model: LoadedModel, buckets: Buckets, max_plans: usize) -> Engine {
        let dtypes = model.info.inputs.iter().map(|s| s.dtype).collect();
        let open_first = |specs: &[TensorSpec]| specs.iter().all(|s| s.has_open_batch());
        let batchable = open_first(&model.info.inputs) && open_first(&model.info.outputs);
        Engine {
            plans: PlanCache::new(model.source, dtypes, max_plans),
            info: model.info,
            string_outputs: model.string_outputs,
            buckets,
            batchable,
            finite: Finite::default(),
        }
    }

    pub fn plan_builds(&self) -> u64 {
        self.plans.builds()
    }

    /// Runs one request: its inputs in any order, named as the model names them.
    pub fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        self.run(self.prepare(inputs)?).map(|run| run.outputs)
    }

    /// Checks a request and puts its inputs in the model's order.
    pub fn prepare(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        order_inputs(&self.info.inputs, inputs)
    }

    /// Builds ahead the plans for `sizes` rows (bucketed), where every other dimension is
    /// known from the model or `hints` ([`Engine::plan_builds`] counts them).
    pub fn build_plans(&self, sizes: &[usize], hints: &std::collections::BTreeMap<String, Vec<usize>>) {
        if !self.batchable {
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
            if let Err(e) = self.plans.get(&shapes) {
                tracing::warn!("could not build the plan for {shapes:?} ahead: {e:#}");
            }
        }
    }

    /// Runs inputs already prepared (one request, or a batch stacked along the first
    /// dimension), padded to their bucket.
    pub fn run(&self, mut inputs: Vec<Tensor>) -> Result<Run, Failure> {
        let rows = inputs.first().map_or(1, Tensor::rows);
        let padded = if self.batchable { self.buckets.size_for(rows) } else { rows };
        if padded != rows {
            inputs.iter_mut().for_each(|t| t.pad_rows(padded));
        }
        let builds = self.plans.builds();
        let mut outputs = self.execute(inputs)?;
        if padded != rows {
            outputs = outputs.iter().map(|t| t.slice_rows(0, rows)).collect();
        }
        Ok(Run { outputs, plans_built: (self.plans.builds() - builds) as u32 })
    }

    fn execute(&self, ordered: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        let shapes: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape.clone()).collect();
        let values = ordered.into_iter().map(to_tract).collect::<Result<TVec<TValue>, _>>()?;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let plan = self.plans.get(&shapes).map_err(|e| build_failure(&shapes, e))?;
            plan.run(values).map_err(|e| Failure::internal(format!("inference failed: {e:#}")))
        }));
        let outputs = match outcome {
            Ok(result) => result?,
            Err(panic) => {
                return Err(Failure::internal(format!("inference panicked: {}", panic_text(&panic))));
            }
        };
        self.info
            .outputs
            .iter()
            .zip(outputs)
            .map(|(spec, value)| {
                let tensor = from_tract(&spec.name, &value)?;
                match self.string_outputs.iter().find(|l| l.output == spec.name) {
                    Some(labels) => index_to_strings(tensor, &labels.names),
                    None => Ok(tensor),
                }
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

fn build_failure(shapes: &[Vec<usize>], e: TractError) -> Failure {
    // A plan that cannot be built for these shapes is the request's fault: the model
    // declared it could take them only up to what its graph allows (e.g. a sequence too
    // short for a convolution).
    Failure::bad_input(format!("the model cannot run on input shapes {shapes:?}: {e:#}"))
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
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

fn to_tract(t: Tensor) -> Result<TValue, Failure> {
    let fail = |e: TractError| Failure::bad_input(format!("input '{}': {e:#}", t.name));
    let tensor = match t.dtype {
        DType::Bytes => {
            let Values::Bytes(items) = t.values() else { unreachable!("BYTES tensor") };
            let strings = items.into_iter().map(|b| String::from_utf8_lossy(&b).into_owned()).collect();
            ArrayD::from_shape_vec(t.shape.clone(), strings)
                .map_err(|e| Failure::bad_input(format!("input '{}': {e}", t.name)))?
                .into()
        }
        DType::Bool => {
            // Any nonzero byte is true; normalising keeps every bool a valid 0 or 1.
            let bytes: Vec<u8> = t.data.iter().map(|b| u8::from(*b != 0)).collect();
            // SAFETY: `bytes` holds exactly one 0-or-1 byte per element (checked by
            // `TensorSpec::admits`), the layout of tract's Bool tensors.
            unsafe { TractTensor::from_raw_dt(DatumType::Bool, &t.shape, &bytes) }.map_err(fail)?
        }
        dtype => {
            // SAFETY: `TensorSpec::admits` verified the byte length is element count × element
            // size for this plain numeric type, and every bit pattern is a valid value.
            unsafe { TractTensor::from_raw_dt(datum_type(dtype), &t.shape, &t.data) }.map_err(fail)?
        }
    };
    Ok(tensor.into_tvalue())
}

/// Converts one output of tract's into ours, named after the model's output.
pub fn from_tract(name: &str, value: &TValue) -> Result<Tensor, Failure> {
    let shape = value.shape().to_vec();
    let dt = value.datum_type();
    let unsupported = || Failure::internal(format!("output '{name}' has element type {dt:?}, which is not served"));
    let dtype = dtype_of(dt).ok_or_else(unsupported)?;
    let data = match dt {
        DatumType::String => {
            let view = value.to_plain_array_view::<String>().map_err(|_| unsupported())?;
            Values::Bytes(view.iter().map(|s| s.as_bytes().to_vec()).collect()).into_bytes()
        }
        DatumType::TDim => {
            let cast = value.cast_to::<i64>().map_err(|_| unsupported())?;
            cast.as_bytes().to_vec()
        }
        _ => value.as_bytes().to_vec(),
    };
    Ok(Tensor { name: name.to_string(), dtype, shape, data })
}
