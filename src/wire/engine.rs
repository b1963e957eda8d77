//! Which engine runs a model version, and ONNX Runtime's session options: chosen per model
//! in the config (or per version in `model.toml`) and handed to the worker on its command
//! line.

use serde::Deserialize;

/// The engine behind a worker: tract (pure Rust, the default) or ONNX Runtime (its shared
/// library loaded at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Tract,
    OnnxRuntime,
}

impl EngineKind {
    pub const ALL: [EngineKind; 2] = [EngineKind::Tract, EngineKind::OnnxRuntime];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::OnnxRuntime => "onnxruntime",
        }
    }

    pub fn from_name(name: &str) -> Option<EngineKind> {
        EngineKind::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Where a worker runs its model: the CPU, a GPU through tract's CUDA backend (the worker
/// sees only its GPU), or a GPU when one can be used and the CPU otherwise. Without
/// `CudaOrCpu` a missing GPU fails the version: never a silent fall back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
    CudaOrCpu,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 3] = [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::CudaOrCpu];

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::CudaOrCpu => "cuda-or-cpu",
        }
    }

    pub fn from_name(name: &str) -> Option<DeviceKind> {
        DeviceKind::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// ONNX Runtime's graph optimization level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

impl GraphOptimization {
    pub const ALL: [GraphOptimization; 4] =
        [GraphOptimization::Disable, GraphOptimization::Basic, GraphOptimization::Extended, GraphOptimization::All];

    pub fn name(self) -> &'static str {
        match self {
            GraphOptimization::Disable => "disable",
            GraphOptimization::Basic => "basic",
            GraphOptimization::Extended => "extended",
            GraphOptimization::All => "all",
        }
    }

    pub fn from_name(name: &str) -> Option<GraphOptimization> {
        GraphOptimization::ALL.into_iter().find(|o| o.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in EngineKind::ALL {
            assert_eq!(EngineKind::from_name(e.name()), Some(e));
        }
        for d in DeviceKind::ALL {
            assert_eq!(DeviceKind::from_name(d.name()), Some(d));
        }
        for o in GraphOptimization::ALL {
            assert_eq!(GraphOptimization::from_name(o.name()), Some(o));
        }
        assert_eq!(EngineKind::from_name("onnx"), None);
        let parsed: std::collections::BTreeMap<String, EngineKind> = toml::from_str("e = \"onnxruntime\"").unwrap();
        assert_eq!(parsed["e"], EngineKind::OnnxRuntime);
    }
}
