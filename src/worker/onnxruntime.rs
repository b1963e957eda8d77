//! The ONNX Runtime engine: the `ort` crate, its shared library loaded at run time
//! (`server.onnxruntime_library`, else `libonnxruntime.so` from the system's library path),
//! one session per inference that may run at once.
//!
//! A missing or incompatible library fails the version with a reason naming the path and
//! the version found; it never falls back to tract. The model is given to ONNX Runtime as
//! exported, except for a trailing ZipMap, which is rewritten as for tract so that both
//! engines serve the same signature.

use super::engine::{Backend, Failure, Loaded, text_elements};
use crate::wire::engine::GraphOptimization;
use crate::wire::manifest::Manifest;
use crate::wire::{DType, Tensor, TensorSpec, Values};
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynTensorValueType, TensorElementType, TensorRef, ValueType};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The library's file name, looked for in the system's library path when no path is set.
pub const DEFAULT_LIBRARY: &str = "libonnxruntime.so";

/// Where the library comes from and how sessions are made.
#[derive(Debug, Clone)]
pub struct Settings {
    pub library: Option<PathBuf>,
    pub optimization: GraphOptimization,
    pub memory_arena: bool,
    pub intra_op_threads: usize,
    /// Sessions to open: one per inference that may run at once.
    pub sessions: usize,
}

/// The library this process loaded.
pub struct Runtime {
    /// The file, as given or looked up.
    pub path: String,
    /// ONNX Runtime's version, e.g. "1.32.0".
    pub version: String,
    environment: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Loads the library once per process; the reason it cannot be used names the path and,
/// for an incompatible one, the version found.
pub fn runtime(library: Option<&Path>) -> Result<&'static Runtime, String> {
    RUNTIME.get_or_init(|| load_runtime(library)).as_ref().map_err(Clone::clone)
}

fn load_runtime(library: Option<&Path>) -> Result<Runtime, String> {
    let path = library.map_or_else(|| PathBuf::from(DEFAULT_LIBRARY), Path::to_path_buf);
    let shown = path.display().to_string();
    let hint = "set [server] onnxruntime_library to a libonnxruntime.so (the onnxruntime wheel on PyPI carries one in onnxruntime/capi/)";
    let loaded = std::panic::catch_unwind(|| ort::init_from(&path))
        .map_err(|_| format!("loading the ONNX Runtime library {shown} panicked; {hint}"))?;
    let builder = loaded.map_err(|e| match dlopen_error(&path) {
        // ort words any loader failure as "dlopen failed": the loader itself says why.
        Some(why) => format!("ONNX Runtime library {shown} cannot be loaded: {why}; {hint}"),
        None => format!("ONNX Runtime library {shown}: {e}; {hint}"),
    })?;
    let environment = builder
        .with_name("modeld")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("could not start ONNX Runtime from {shown}: {e}"))?;
    let (file, version) = identify(&path).unwrap_or((shown, "unknown".into()));
    Ok(Runtime { path: file, version, environment })
}

fn c_path(path: &Path) -> Option<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).ok()
}

/// Why the dynamic loader refuses `path` (its own words: "cannot open shared object file:
/// No such file or directory", "invalid ELF header"), if it does.
fn dlopen_error(path: &Path) -> Option<String> {
    let c_path = c_path(path)?;
    // SAFETY: dlopen and dlerror are called with a valid NUL-terminated path; the message
    // dlerror returns is copied before any other dl call; a handle opened here is closed.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if !handle.is_null() {
            libc::dlclose(handle);
            return None;
        }
        let message = libc::dlerror();
        Some(match message.is_null() {
            true => "the dynamic loader gave no reason".to_string(),
            false => std::ffi::CStr::from_ptr(message).to_string_lossy().into_owned(),
        })
    }
}

/// The file the library was loaded from and its version (`OrtGetApiBase()->
/// GetVersionString()`), asked of the copy already loaded (`RTLD_NOLOAD`).
fn identify(path: &Path) -> Option<(String, String)> {
    let c_path = c_path(path)?;
    // SAFETY: dlopen with RTLD_NOLOAD only returns (and references) a library this process
    // already loaded; the symbol is ONNX Runtime's documented entry point, of this type;
    // dladdr and the version getter write or return only data owned by the library, which
    // stays loaded (ort holds it) after our reference is released by dlclose.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let found = (!symbol.is_null()).then(|| {
            let get: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase = std::mem::transmute(symbol);
            let base = get();
            let version = match base.is_null() {
                true => "unknown".to_string(),
                false => std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned(),
            };
            let mut info: libc::Dl_info = std::mem::zeroed();
            let file = match libc::dladdr(symbol, &mut info) != 0 && !info.dli_fname.is_null() {
                true => std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned(),
                false => path.display().to_string(),
            };
            (file, version)
        });
        libc::dlclose(handle);
        found
    }
}

/// Loads `path` on ONNX Runtime: the signature from the session, sessions for `settings`.
pub fn load(path: &Path, manifest: &Manifest, settings: &Settings) -> Result<Loaded, String> {
    let runtime = runtime(settings.library.as_deref())?;
    let shown = path.display();
    let (source, zipmap_labels, undeclared) = model_source(path)?;
    let sessions = (0..settings.sessions.max(1))
        .map(|_| open_session(runtime, &source, settings).map(Mutex::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("could not load model {shown} on ONNX Runtime {}: {e}", runtime.version))?;
    let first = sessions[0].lock().unwrap_or_else(|e| e.into_inner());
    let specs = |outlets: &[ort::value::Outlet]| outlets.iter().map(spec).collect::<Result<Vec<_>, String>>();
    let inputs = specs(first.inputs()).map_err(|e| format!("model {shown}: {e}"))?;
    let mut outputs = specs(first.outputs()).map_err(|e| format!("model {shown}: {e}"))?;
    drop(first);
    if !undeclared.is_empty() {
        shapes_from_tract(&mut outputs, &undeclared, path, manifest);
    }
    let labels = super::loader::labels(manifest, zipmap_labels, &outputs).map_err(|e| format!("model {shown}: {e}"))?;
    tracing::info!(library = %runtime.path, version = %runtime.version, sessions = sessions.len(), "loaded on ONNX Runtime");
    let info = crate::wire::ModelInfo {
        load_mode: "onnxruntime".into(),
        plans_built: 0,
        device: "cpu".into(),
        inputs,
        outputs,
        labels,
    };
    let names = |specs: &[TensorSpec]| specs.iter().map(|o| o.name.clone()).collect();
    let backend = OrtBackend { sessions, inputs: names(&info.inputs), outputs: names(&info.outputs) };
    Ok(Loaded { info, backend: Box::new(backend), string_outputs: Vec::new() })
}

/// The model as ONNX Runtime is to read it: the file itself, or, when a trailing ZipMap
/// had to go, the rewritten graph (with the ZipMap's labels).
enum Source {
    File(PathBuf),
    Rewritten(Vec<u8>),
}

/// The model's source for ONNX Runtime, the ZipMap's labels if one went, and the graph
/// outputs that declare no shape (ONNX Runtime then knows neither their rank nor sizes).
fn model_source(path: &Path) -> Result<(Source, Option<crate::wire::Labels>, Vec<String>), String> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| format!("could not read ONNX model {}: {e}", path.display()))?;
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice())
        .map_err(|e| format!("could not read ONNX model {}: {e}", path.display()))?;
    let labels = super::rewrite::apply_zipmap(&mut proto);
    let undeclared = proto.graph.as_ref().map_or_else(Vec::new, |graph| {
        graph.output.iter().filter(|o| super::loader::declared_shape(o).is_none()).map(|o| o.name.clone()).collect()
    });
    match labels {
        Some(labels) => Ok((Source::Rewritten(proto.encode_to_vec()), Some(labels), undeclared)),
        // As exported: ONNX Runtime finds external weights next to the file.
        None => Ok((Source::File(path.to_path_buf()), None, undeclared)),
    }
}

/// Outputs the graph gives no shape take the one tract infers, as a tract worker would
/// report it: both engines then describe the model alike (a rollout between them compares
/// equal signatures), and an open first dimension lets requests be batched. If tract cannot
/// load the model, those outputs keep an unknown shape (each answer has its own).
fn shapes_from_tract(outputs: &mut [TensorSpec], undeclared: &[String], path: &Path, manifest: &Manifest) {
    match super::loader::load(path, manifest) {
        Ok(model) => {
            for spec in outputs.iter_mut().filter(|o| undeclared.contains(&o.name)) {
                if let Some(inferred) = model.info.outputs.iter().find(|t| t.name == spec.name && t.dtype == spec.dtype)
                {
                    spec.shape = inferred.shape.clone();
                }
            }
        }
        Err(e) => tracing::warn!(
            outputs = ?undeclared,
            "the model declares no shape for these outputs and tract could not infer one ({e}); their shape is unknown until each answer"
        ),
    }
}

fn open_session(runtime: &Runtime, source: &Source, settings: &Settings) -> Result<Session, String> {
    let level = match settings.optimization {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::All => GraphOptimizationLevel::Level3,
    };
    let cpu = ort::ep::CPU::default().with_arena_allocator(settings.memory_arena).build();
    let text = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
    let mut builder = Session::builder(&runtime.environment)
        .map_err(|e| e.to_string())?
        .with_optimization_level(level)
        .map_err(text)?
        .with_intra_threads(settings.intra_op_threads.max(1))
        .map_err(text)?
        .with_inter_threads(1)
        .map_err(text)?
        .with_execution_providers([cpu])
        .map_err(text)?;
    let session = match source {
        Source::File(path) => builder.commit_from_file(path),
        Source::Rewritten(bytes) => builder.commit_from_memory(bytes),
    };
    session.map_err(|e| e.to_string())
}

/// Our spec of a session input or output; a sequence or map is not served.
fn spec(outlet: &ort::value::Outlet) -> Result<TensorSpec, String> {
    let name = outlet.name().to_string();
    let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
        return Err(format!("'{name}' is a {:?}, not a tensor: only tensors are served", outlet.dtype()));
    };
    let dtype = dtype_of(*ty).ok_or_else(|| format!("'{name}': element type {ty:?} is not served"))?;
    let shape = shape.iter().map(|d| usize::try_from(*d).ok()).collect();
    Ok(TensorSpec { name, dtype, shape })
}

/// Our element type for one of ONNX Runtime's, where we serve it.
fn dtype_of(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Bool => DType::Bool,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Bfloat16 => DType::BF16,
        TensorElementType::String => DType::Bytes,
        _ => return None,
    })
}

fn element_type(dtype: DType) -> TensorElementType {
    match dtype {
        DType::Bool => TensorElementType::Bool,
        DType::U8 => TensorElementType::Uint8,
        DType::U16 => TensorElementType::Uint16,
        DType::U32 => TensorElementType::Uint32,
        DType::U64 => TensorElementType::Uint64,
        DType::I8 => TensorElementType::Int8,
        DType::I16 => TensorElementType::Int16,
        DType::I32 => TensorElementType::Int32,
        DType::I64 => TensorElementType::Int64,
        DType::F32 => TensorElementType::Float32,
        DType::F64 => TensorElementType::Float64,
        DType::F16 => TensorElementType::Float16,
        DType::BF16 => TensorElementType::Bfloat16,
        DType::Bytes => TensorElementType::String,
    }
}

/// Sessions, each run by one inference at a time (ONNX Runtime's `run` takes the session
/// mutably in `ort`).
pub struct OrtBackend {
    sessions: Vec<Mutex<Session>>,
    /// The model's input names, in order.
    inputs: Vec<String>,
    /// The model's output names, in order.
    outputs: Vec<String>,
}

impl OrtBackend {
    /// A free session, else the first one to come free (there are as many as inferences
    /// that run at once, so waiting is rare).
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for session in &self.sessions {
            if let Ok(guard) = session.try_lock() {
                return guard;
            }
        }
        self.sessions[0].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for OrtBackend {
    fn execute(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Failure> {
        let values = inputs
            .iter()
            .zip(&self.inputs)
            .map(|(tensor, name)| to_ort(tensor).map(|value| (name.as_str(), value)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut session = self.session();
        let mut outputs =
            session.run(values).map_err(|e| Failure::internal(format!("inference failed on ONNX Runtime: {e}")))?;
        self.outputs
            .iter()
            .map(|name| {
                let value = outputs
                    .remove(name.as_str())
                    .ok_or_else(|| Failure::internal(format!("ONNX Runtime gave no output '{name}'")))?;
                let tensor = value
                    .downcast::<DynTensorValueType>()
                    .map_err(|e| Failure::internal(format!("output '{name}' is not a tensor: {e}")))?;
                from_ort(name, &tensor)
            })
            .collect()
    }

    fn per_shape(&self) -> bool {
        false
    }

    fn prepare(&self, _shapes: &[Vec<usize>]) -> Result<(), String> {
        Ok(())
    }

    fn builds(&self) -> u64 {
        0
    }
}

/// One input for ONNX Runtime: a view of the request's own buffer where its element type
/// and alignment allow, so an image is not copied once more per request; else a copy.
fn to_ort(tensor: &Tensor) -> Result<SessionInputValue<'_>, Failure> {
    let fail = |e: ort::Error| Failure::bad_input(format!("input '{}': {e}", tensor.name));
    if let Some(view) = view(tensor) {
        return view.map_err(fail);
    }
    if tensor.dtype == DType::Bytes {
        let strings = text_elements(tensor)?;
        // The `ort` crate hands each string to ONNX Runtime as a C string.
        if let Some(i) = strings.iter().position(|s| s.contains('\0')) {
            return Err(Failure::bad_input(format!(
                "input '{}': element {i} holds a NUL byte, which ONNX Runtime's string tensors cannot take",
                tensor.name
            )));
        }
        let value = ort::value::Tensor::from_string_array((tensor.shape.clone(), strings.as_slice())).map_err(fail)?;
        return Ok(value.into_dyn().into());
    }
    let mut value =
        DynTensor::new(&Allocator::default(), element_type(tensor.dtype), tensor.shape.clone()).map_err(fail)?;
    let data: &[u8] = &tensor.data;
    if !data.is_empty() {
        // SAFETY: the tensor was allocated on the CPU for `shape` elements of this element
        // type; `TensorSpec::admits` checked that `data` is exactly that many elements of
        // that size, so the slice covers the tensor's buffer and nothing past it.
        let buffer = unsafe { std::slice::from_raw_parts_mut(value.data_ptr_mut().cast::<u8>(), data.len()) };
        buffer.copy_from_slice(data);
        if tensor.dtype == DType::Bool {
            // Any nonzero byte is true; normalising keeps every bool a valid 0 or 1.
            buffer.iter_mut().for_each(|b| *b = u8::from(*b != 0));
        }
    }
    Ok(value.into())
}

/// A view of `tensor`'s bytes as ONNX Runtime's tensor of its element type; `None` where a
/// copy is needed: strings, bools (normalised to 0 or 1 on the way), no elements, or bytes
/// not aligned for the element type.
fn view(tensor: &Tensor) -> Option<Result<SessionInputValue<'_>, ort::Error>> {
    macro_rules! view_as {
        ($t:ty) => {{
            // SAFETY: every bit pattern is a valid value of a primitive number type.
            let (head, elements, tail) = unsafe { tensor.data.align_to::<$t>() };
            (head.is_empty() && tail.is_empty())
                .then(|| TensorRef::from_array_view((tensor.shape.clone(), elements)).map(SessionInputValue::from))
        }};
    }
    if tensor.data.is_empty() {
        return None;
    }
    match tensor.dtype {
        DType::U8 => view_as!(u8),
        DType::U16 => view_as!(u16),
        DType::U32 => view_as!(u32),
        DType::U64 => view_as!(u64),
        DType::I8 => view_as!(i8),
        DType::I16 => view_as!(i16),
        DType::I32 => view_as!(i32),
        DType::I64 => view_as!(i64),
        DType::F32 => view_as!(f32),
        DType::F64 => view_as!(f64),
        // Copied: the `ort` crate views half-precision buffers only with its `half` feature.
        DType::Bool | DType::Bytes | DType::F16 | DType::BF16 => None,
    }
}

/// Converts one output of ONNX Runtime's into ours.
fn from_ort(name: &str, value: &DynTensor) -> Result<Tensor, Failure> {
    let ty = *value.data_type();
    let unsupported = || Failure::internal(format!("output '{name}' has element type {ty:?}, which is not served"));
    let dtype = dtype_of(ty).ok_or_else(unsupported)?;
    let shape: Vec<usize> = value.shape().iter().map(|d| usize::try_from(*d).unwrap_or(0)).collect();
    let data = match dtype {
        DType::Bytes => {
            let (_, strings) = value.try_extract_strings().map_err(|_| unsupported())?;
            Values::Bytes(strings.into_iter().map(String::into_bytes).collect()).into_bytes()
        }
        _ => {
            let len = shape.iter().product::<usize>() * dtype.size().expect("fixed-size element type");
            if len == 0 {
                Vec::new()
            } else {
                // SAFETY: a CPU tensor of `shape` elements of this fixed-size type holds
                // exactly `len` bytes at its data pointer, alive while `value` is.
                unsafe { std::slice::from_raw_parts(value.data_ptr().cast::<u8>(), len) }.to_vec()
            }
        }
    };
    Ok(Tensor { name: name.to_string(), dtype, shape, data })
}
