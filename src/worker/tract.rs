//! The tract engine: optimized plans per concrete shape ([`PlanCache`]), and tensors
//! converted to and from tract's.

use super::device::Placement;
use super::engine::{Backend, Failure, Loaded, text_elements};
use super::loader::{LoadedModel, datum_type, dtype_of};
use super::plans::PlanCache;
use crate::wire::{DType, Tensor, Values};
use tract_onnx::prelude::{Tensor as TractTensor, *};
use tract_onnx::tract_core::ndarray::ArrayD;

pub struct TractBackend {
    plans: PlanCache,
    placement: Placement,
    /// The model's output names, in order.
    outputs: Vec<String>,
}

impl TractBackend {
    /// The engine for a model tract loaded, its plans built for `placement`, keeping at
    /// most `max_plans` plans.
    pub fn loaded(model: LoadedModel, placement: Placement, max_plans: usize) -> Loaded {
        let dtypes = model.info.inputs.iter().map(|s| s.dtype).collect();
        let outputs = model.info.outputs.iter().map(|o| o.name.clone()).collect();
        let plans = PlanCache::new(model.source, placement, dtypes, max_plans);
        let backend = TractBackend { plans, placement, outputs };
        Loaded { info: model.info, backend: Box::new(backend), string_outputs: model.string_outputs }
    }
}

impl Backend for TractBackend {
    fn execute(&self, ordered: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        let shapes: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape.clone()).collect();
        let values = ordered.into_iter().map(to_tract).collect::<Result<TVec<TValue>, _>>()?;
        let plan = self.plans.get(&shapes).map_err(|e| build_failure(self.placement, &shapes, e))?;
        let outputs = plan.run(values).map_err(|e| Failure::internal(format!("inference failed: {e:#}")))?;
        self.outputs.iter().zip(outputs).map(|(name, value)| from_tract(name, &value)).collect()
    }

    fn per_shape(&self) -> bool {
        true
    }

    fn prepare(&self, shapes: &[Vec<usize>]) -> Result<(), String> {
        self.plans.get(shapes).map(|_| ()).map_err(|e| format!("{e:#}"))
    }

    fn builds(&self) -> u64 {
        self.plans.builds()
    }
}

/// Lets every inference in this process split its matrix products across `threads`
/// threads (process-wide: tract keeps one executor); 1 keeps them on the calling thread.
pub fn use_intra_op_threads(threads: usize) {
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::multithread(threads));
    }
}

fn build_failure(placement: Placement, shapes: &[Vec<usize>], e: TractError) -> Failure {
    match placement {
        // A plan that cannot be built for these shapes is the request's fault: the model
        // declared it could take them only up to what its graph allows (e.g. a sequence
        // too short for a convolution).
        Placement::Cpu => Failure::bad_input(format!("the model cannot run on input shapes {shapes:?}: {e:#}")),
        // On a GPU it may as well be the device's (its memory, a kernel that did not
        // compile): a server error, which the health gate counts.
        Placement::Cuda => Failure::internal(format!("no CUDA plan for input shapes {shapes:?}: {e:#}")),
    }
}

fn to_tract(t: Tensor) -> Result<TValue, Failure> {
    let fail = |e: TractError| Failure::bad_input(format!("input '{}': {e:#}", t.name));
    let tensor = match t.dtype {
        DType::Bytes => ArrayD::from_shape_vec(t.shape.clone(), text_elements(&t)?)
            .map_err(|e| Failure::bad_input(format!("input '{}': {e}", t.name)))?
            .into(),
        DType::Bool => {
            // Any nonzero byte is true; normalising keeps every bool a valid 0 or 1.
            let bytes: Vec<u8> = t.data.iter().map(|b| u8::from(*b != 0)).collect();
            // SAFETY: `bytes` holds exactly one 0-or-1 byte per element (checked by
            // `TensorSpec::admits`), the layout of tract's Bool tensors.
            unsafe { TractTensor::from_raw_dt(DatumType::Bool, &t.shape, &bytes) }.map_err(fail)?
        }
        dtype => {
            let Some(datum) = datum_type(dtype) else {
                return Err(Failure::bad_input(format!("input '{}': tract has no element type for {dtype}", t.name)));
            };
            // SAFETY: `TensorSpec::admits` verified the byte length is element count × element
            // size for this plain numeric type, and every bit pattern is a valid value (FP16's
            // two bytes are tract's f16 in memory, little-endian as ours).
            unsafe { TractTensor::from_raw_dt(datum, &t.shape, &t.data) }.map_err(fail)?
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
