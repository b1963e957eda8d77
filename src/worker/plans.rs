//! Optimized tract plans, one per concrete set of input shapes, built on first use and
//! cached.
//!
//! tract runs several times faster on concrete shapes than with symbolic dimensions, and a
//! model may only type at all once its inputs are concrete, so every request runs on a plan
//! built for exactly its shapes. The cache is bounded: past `capacity` plans the least
//! recently used one is dropped (requests still holding it finish on it).
//!
//! On a GPU ([`Placement::Cuda`]) a plan is prepared by tract-cuda's runtime instead: its
//! transform moves the operators to CUDA kernels before optimization. The first plan of a
//! process compiles those kernels (about a minute; cached on disk under
//! `XDG_CACHE_HOME`, which the supervisor points at its state directory).

use super::device::Placement;
use super::loader::{PlanSource, tract_type};
use crate::wire::DType;
use anyhow::{bail, ensure};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::*;

/// A plan for one set of shapes. The CPU's is tract's own plan, run as before; a GPU's is
/// what tract-cuda's runtime prepared.
#[derive(Clone)]
pub enum Plan {
    Cpu(Arc<TypedRunnableModel>),
    Cuda(Arc<dyn Runnable>),
}

impl Plan {
    /// Runs the plan. On the CPU each node evaluated is a step of the worker's progress
    /// ([`super::progress`]); tract-cuda's runtime has no such hook, so a GPU run is one
    /// step, from start to answer.
    pub fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        match self {
            Plan::Cpu(plan) => plan.spawn()?.run_plan_with_eval(inputs, |context, state, node, inputs| {
                let outputs = tract_onnx::tract_core::plan::eval(context, state, node, inputs);
                super::progress::step();
                outputs
            }),
            Plan::Cuda(plan) => plan.run(inputs),
        }
    }
}

/// The shapes of a request's inputs, in the model's input order.
pub type ShapeKey = Vec<Vec<usize>>;

pub struct PlanCache {
    source: PlanSource,
    placement: Placement,
    input_dtypes: Vec<DType>,
    capacity: usize,
    entries: Mutex<HashMap<ShapeKey, (Plan, u64)>>,
    clock: AtomicU64,
    builds: AtomicU64,
}

impl PlanCache {
    pub fn new(source: PlanSource, placement: Placement, input_dtypes: Vec<DType>, capacity: usize) -> PlanCache {
        PlanCache {
            source,
            placement,
            input_dtypes,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            builds: AtomicU64::new(0),
        }
    }

    /// How many plans have been built so far.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// The plan for `shapes`, built now if it is not cached.
    pub fn get(&self, shapes: &[Vec<usize>]) -> TractResult<Plan> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some((plan, used)) = self.lock().get_mut(shapes) {
            *used = tick;
            return Ok(plan.clone());
        }
        // Built outside the lock: other shapes keep being served meanwhile. Two requests
        // racing on a new shape may both build it; the second insert wins, harmlessly.
        let plan = self.build(shapes)?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        if entries.len() >= self.capacity
            && let Some(oldest) = entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(shapes.to_vec(), (plan.clone(), tick));
        Ok(plan)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShapeKey, (Plan, u64)>> {
        // A panic while holding this lock cannot leave the map inconsistent (inserts and
        // removes are single calls), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn build(&self, shapes: &[Vec<usize>]) -> TractResult<Plan> {
        let started = std::time::Instant::now();
        let model = match &self.source {
            PlanSource::Symbolic(model) => model.set_symbols(&bind_symbols(model, shapes)?)?,
            PlanSource::Concrete(model) => {
                let mut model = model.clone();
                for (ix, (shape, dtype)) in shapes.iter().zip(&self.input_dtypes).enumerate() {
                    model.set_input_fact(ix, InferenceFact::dt_shape(tract_type(*dtype)?, shape.clone()))?;
                }
                model.into_typed()?
            }
        };
        // Optimizing declutters first; tract-cuda's transform expects a decluttered model.
        let plan = match self.placement {
            Placement::Cpu => Plan::Cpu(model.into_optimized()?.into_runnable()?),
            Placement::Cuda => Plan::Cuda(Arc::from(cuda_runtime()?.prepare(model.into_decluttered()?)?)),
        };
        tracing::debug!(?shapes, elapsed_ms = started.elapsed().as_millis() as u64, "built plan");
        Ok(plan)
    }
}

/// tract-cuda's runtime (registered with tract by linking the crate; checked by
/// [`super::device::resolve`] before any plan is built).
fn cuda_runtime() -> TractResult<&'static dyn tract_onnx::tract_core::runtime::Runtime> {
    tract_onnx::tract_core::runtime::runtime_for_name("cuda")?
        .ok_or_else(|| anyhow::anyhow!("tract's CUDA runtime is not registered in this build"))
}

/// Binds each symbol of the typed model's input shapes to the request's dimension,
/// checking fixed dimensions and that a symbol shared by several inputs agrees.
fn bind_symbols(model: &TypedModel, shapes: &[Vec<usize>]) -> TractResult<HashMap<Symbol, TDim>> {
    let mut bindings: HashMap<Symbol, TDim> = HashMap::new();
    for (ix, shape) in shapes.iter().enumerate() {
        let fact = model.input_fact(ix)?;
        ensure!(fact.rank() == shape.len(), "input {ix} has rank {} but {} dims were given", fact.rank(), shape.len());
        for (axis, (dim, given)) in fact.shape.iter().zip(shape).enumerate() {
            let given = TDim::Val(*given as i64);
            match dim {
                TDim::Val(_) => ensure!(*dim == given, "input {ix} axis {axis} must be {dim}, got {given}"),
                TDim::Sym(sym) => {
                    if let Some(bound) = bindings.insert(sym.clone(), given.clone()) {
                        ensure!(bound == given, "dimension {sym} is {bound} in one input and {given} in another");
                    }
                }
                expr => {
                    bail!("input {ix} axis {axis} is the expression {expr}, which cannot be bound")
                }
            }
        }
    }
    Ok(bindings)
}
