//! The model repository on disk: `<repository>/<name>/<version>/model.onnx`, versions
//! positive integers, with an optional `model.toml` beside each model.
//!
//! This module finds versions (and resolves the config's `"latest"`), and reads each
//! version's `model.toml` for the supervisor: what ONNX does not say (class labels, input
//! shapes to load with, a warm-up input, golden examples, how `/predict` reads the output).
//! The manifest's types live in [`crate::wire::manifest`], since the worker reads the same
//! file; this module re-exports them. It depends on [`crate::config`] (the version spec) and
//! [`crate::wire`].

use crate::config::VersionSpec;
use std::path::{Path, PathBuf};

pub use crate::wire::manifest::{
    Example, Golden, MANIFEST_FILE, MODEL_FILE, Manifest, ManifestError, OutputSpec, PredictKind, PredictSpec,
};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("could not read model directory {path}: {error}")]
    Unreadable { path: PathBuf, error: std::io::Error },
    #[error("model directory {path} holds no version directory with a {MODEL_FILE}")]
    NoVersions { path: PathBuf },
    #[error("version {version} not found: {path} does not exist")]
    MissingVersion { version: u64, path: PathBuf },
    #[error("{path} leads outside the model repository (to {target}); symlinks must stay inside it")]
    Escapes { path: PathBuf, target: PathBuf },
}

/// One model's directory in the repository.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
}

impl ModelDir {
    pub fn new(root: impl Into<PathBuf>) -> ModelDir {
        ModelDir { root: root.into() }
    }

    pub fn version_dir(&self, version: u64) -> PathBuf {
        self.root.join(version.to_string())
    }

    pub fn model_file(&self, version: u64) -> PathBuf {
        self.version_dir(version).join(MODEL_FILE)
    }

    /// The versions present, ascending: directories named by a positive integer (in
    /// canonical form, so `01` is not version 1) that hold a model file.
    pub fn versions(&self) -> Result<Vec<u64>, RepoError> {
        let unreadable = |source| RepoError::Unreadable { path: self.root.clone(), error: source };
        let mut versions = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let Some(version) = parse_version(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            if entry.path().join(MODEL_FILE).is_file() {
                versions.push(version);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The version to serve for `spec`: the highest present for `Latest`, else the one asked
    /// for, if its model file exists.
    pub fn resolve(&self, spec: VersionSpec) -> Result<u64, RepoError> {
        match spec {
            VersionSpec::Latest => {
                self.versions()?.last().copied().ok_or_else(|| RepoError::NoVersions { path: self.root.clone() })
            }
            VersionSpec::Exact(version) => {
                let path = self.model_file(version);
                if path.is_file() { Ok(version) } else { Err(RepoError::MissingVersion { version, path }) }
            }
        }
        .and_then(|version| self.confined(version))
    }

    /// The version, if its model file (after symlinks) lies inside the repository that
    /// holds this model's directory.
    fn confined(&self, version: u64) -> Result<u64, RepoError> {
        let path = self.model_file(version);
        let repository = self.root.parent().unwrap_or(&self.root);
        let (Ok(target), Ok(inside)) = (path.canonicalize(), repository.canonicalize()) else {
            return Ok(version);
        };
        match target.starts_with(&inside) {
            true => Ok(version),
            false => Err(RepoError::Escapes { path, target }),
        }
    }

    /// Reads the version's `model.toml`, or an empty manifest when there is none.
    pub fn manifest(&self, version: u64) -> Result<Manifest, ManifestError> {
        Manifest::read(&self.version_dir(version).join(MANIFEST_FILE))
    }
}

/// Whether `dir` holds the version `spec` names, and which: the repository's answer to
/// the config's check ([`crate::config::load_checked`]).
pub fn check_version(dir: &Path, spec: VersionSpec) -> Result<u64, String> {
    ModelDir::new(dir).resolve(spec).map_err(|e| e.to_string())
}

/// Why a model file is not (yet) a whole ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    #[error("it is cut short or not protobuf ({0})")]
    Malformed(prost::DecodeError),
    #[error("it has no graph")]
    NoGraph,
}

/// Whether `bytes` are a whole ONNX `ModelProto` with a graph, as a file being copied in
/// is not: every field's length is read to the end (a cut field fails), the graph is taken
/// as bytes (no copy) and the rest skipped. What is inside the graph is the loader's to
/// judge, in a worker.
pub fn check_onnx(bytes: bytes::Bytes) -> Result<(), Incomplete> {
    use prost::Message;
    match ModelHead::decode(bytes).map_err(Incomplete::Malformed)?.graph {
        Some(_) => Ok(()),
        None => Err(Incomplete::NoGraph),
    }
}

/// The outer layer of ONNX's `ModelProto` (onnx.proto): only `graph`, field 7.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelHead {
    #[prost(bytes = "bytes", optional, tag = "7")]
    graph: Option<bytes::Bytes>,
}

/// A version directory name: a positive integer without sign or leading zeros.
pub fn parse_version(name: &str) -> Option<u64> {
    if name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_must_be_canonical_positive_integers() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("42"), Some(42));
        for bad in ["0", "01", "-1", "+2", "v1", "", "1.0"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_lists_only_dirs_with_a_model() {
        let tmp = tempfile::tempdir().unwrap();
        for (dir, with_model) in [("1", true), ("3", true), ("2", false), ("old", true)] {
            std::fs::create_dir(tmp.path().join(dir)).unwrap();
            if with_model {
                std::fs::write(tmp.path().join(dir).join(MODEL_FILE), b"x").unwrap();
            }
        }
        let model = ModelDir::new(tmp.path());
        assert_eq!(model.versions().unwrap(), vec![1, 3]);
        assert_eq!(model.resolve(VersionSpec::Latest).unwrap(), 3);
        assert_eq!(model.resolve(VersionSpec::Exact(1)).unwrap(), 1);
        assert!(matches!(model.resolve(VersionSpec::Exact(2)), Err(RepoError::MissingVersion { version: 2, .. })));
    }

    /// The light check gives the verdict of a full decode (tract's ModelProto) on every
    /// prefix of a model file, as a copy in progress leaves it.
    #[cfg(feature = "worker")]
    #[test]
    fn the_onnx_check_agrees_with_a_full_decode_on_every_cut() {
        use prost::Message;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/iris/1/model.onnx");
        let whole = std::fs::read(dir).unwrap();
        let mut cut_short = 0;
        for len in 0..=whole.len() {
            let prefix = &whole[..len];
            let full = tract_onnx::pb::ModelProto::decode(prefix).is_ok_and(|m| m.graph.is_some());
            let light = check_onnx(bytes::Bytes::copy_from_slice(prefix));
            assert_eq!(light.is_ok(), full, "prefix of {len} bytes: {light:?}");
            cut_short += usize::from(matches!(light, Err(Incomplete::Malformed(_))));
        }
        assert!(check_onnx(whole.into()).is_ok());
        assert!(cut_short > 0);
        assert!(matches!(check_onnx(bytes::Bytes::new()), Err(Incomplete::NoGraph)));
    }
}
