//! Where a worker runs its model: the CPU, or its GPU through tract's CUDA backend.
//!
//! The supervisor shows each worker only its GPU (`CUDA_VISIBLE_DEVICES`), so a worker on
//! CUDA always uses device 0. Before touching CUDA the worker checks that the driver and
//! every library tract-cuda needs (cudart, nvrtc, cublas, cudnn) can be loaded: on a host
//! without them tract-cuda would panic inside cudarc instead of returning an error. A GPU
//! that cannot be used fails the version with that reason, unless the config asked for
//! `cuda-or-cpu`, which then runs on the CPU and says why.

use crate::wire::engine::{DeviceKind, EngineKind};

/// Where plans are built and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Cpu,
    Cuda,
}

/// The device a worker settled on, and how `/health` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub placement: Placement,
    pub described: String,
}

impl Resolved {
    fn cpu(described: impl Into<String>) -> Resolved {
        Resolved { placement: Placement::Cpu, described: described.into() }
    }
}

/// Settles the device for a model on `engine`, probing the GPU when one is asked for.
pub fn resolve(kind: DeviceKind, engine: EngineKind) -> Result<Resolved, String> {
    resolve_with(kind, engine, probe_cuda)
}

fn resolve_with(
    kind: DeviceKind,
    engine: EngineKind,
    probe: impl FnOnce() -> Result<String, String>,
) -> Result<Resolved, String> {
    let gpu = match (kind, engine) {
        (DeviceKind::Cpu, _) => return Ok(Resolved::cpu("cpu")),
        (_, EngineKind::OnnxRuntime) => Err("the onnxruntime engine runs on the CPU only; \
                                             a GPU needs engine = \"tract\""
            .to_string()),
        (_, EngineKind::Tract) => probe(),
    };
    match (gpu, kind) {
        (Ok(name), _) => Ok(Resolved { placement: Placement::Cuda, described: format!("cuda:0 ({name})") }),
        (Err(why), DeviceKind::CudaOrCpu) => Ok(Resolved::cpu(format!("cpu (cuda-or-cpu: no usable GPU: {why})"))),
        (Err(why), _) => Err(format!("device cuda: {why}")),
    }
}

/// The name of CUDA device 0, once the driver and tract-cuda's libraries are known to load
/// and tract-cuda could set itself up on the device: its context (which compiles its
/// kernels with NVRTC on a host's first run, or loads them from the cache), and this
/// thread's stream with its cuBLAS and cuDNN handles. tract-cuda panics where these fail;
/// here that is the reason the device cannot be used.
fn probe_cuda() -> Result<String, String> {
    tract_cuda::utils::ensure_cuda_runtime_dependencies("the CUDA libraries tract needs are missing")
        .map_err(|e| format!("{e:#}"))?;
    let probe = std::panic::catch_unwind(|| {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
        let count = cudarc::driver::CudaContext::device_count().map_err(|e| format!("no CUDA device: {e}"))?;
        if count < 1 {
            return Err(format!("no CUDA device is visible (CUDA_VISIBLE_DEVICES={visible})"));
        }
        let context = cudarc::driver::CudaContext::new(0)
            .map_err(|e| format!("CUDA device 0 (CUDA_VISIBLE_DEVICES={visible}) cannot be used: {e}"))?;
        let name = context.name().map_err(|e| format!("CUDA device 0 has no name: {e}"))?;
        tract_cuda::with_cuda_stream(|_| Ok(())).map_err(|e| format!("tract-cuda cannot run on {name}: {e:#}"))?;
        Ok(name)
    });
    probe.unwrap_or_else(|panic| Err(format!("tract-cuda could not start: {}", super::engine::panic_text(&panic))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_gpu() -> Result<String, String> {
        Err("libcuda.so not found".into())
    }

    #[test]
    fn cpu_never_probes() {
        let resolved = resolve_with(DeviceKind::Cpu, EngineKind::Tract, || panic!("probed")).unwrap();
        assert_eq!(resolved, Resolved::cpu("cpu"));
    }

    #[test]
    fn a_missing_gpu_fails_cuda_and_falls_back_only_when_asked() {
        let failed = resolve_with(DeviceKind::Cuda, EngineKind::Tract, no_gpu).unwrap_err();
        assert_eq!(failed, "device cuda: libcuda.so not found");
        let fallback = resolve_with(DeviceKind::CudaOrCpu, EngineKind::Tract, no_gpu).unwrap();
        assert_eq!(fallback.placement, Placement::Cpu);
        assert!(fallback.described.contains("libcuda.so not found"), "{}", fallback.described);
        let gpu = resolve_with(DeviceKind::Cuda, EngineKind::Tract, || Ok("NVIDIA H200".into())).unwrap();
        assert_eq!(gpu, Resolved { placement: Placement::Cuda, described: "cuda:0 (NVIDIA H200)".into() });
    }

    #[test]
    fn onnxruntime_stays_on_the_cpu() {
        let refused = resolve_with(DeviceKind::Cuda, EngineKind::OnnxRuntime, || panic!("probed")).unwrap_err();
        assert!(refused.contains("engine = \"tract\""), "{refused}");
        let fallback = resolve_with(DeviceKind::CudaOrCpu, EngineKind::OnnxRuntime, || panic!("probed")).unwrap();
        assert_eq!(fallback.placement, Placement::Cpu);
    }
}
