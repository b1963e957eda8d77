//! Loading an ONNX file with tract, the way real exported models need.
//!
//! Many exported models fail tract's default loading ("Can not compute a shape with square
//! of symbols", "Impossible to unify ...") yet load once their declared output shapes and
//! `value_info` are ignored, or once their inputs are given concrete shapes. The loader
//! climbs a ladder of [`LoadMode`]s, strictest first, logs the one that worked and reports
//! it in the model's metadata.
//!
//! Before that, [`super::rewrite`] adjusts what exporters produce and tract cannot run
//! (skl2onnx's ZipMap, unnamed dimensions, string class labels).
//!
//! The result is a [`PlanSource`]: the model kept in a form from which
//! [`super::plans::PlanCache`] builds one optimized plan per concrete input shape (tract is
//! several times faster on concrete shapes than on symbolic ones).

use crate::wire::manifest::Manifest;
use crate::wire::{DType, TensorSpec};
use crate::wire::{Labels, ModelInfo};
use anyhow::bail;
use std::path::Path;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_hir::infer::Factoid;

/// The rungs of the loading ladder, strictest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Declared output shapes and `value_info` trusted; typed with open dimensions.
    Strict,
    /// Declared output shapes ignored (tract infers them).
    IgnoreOutputShapes,
    /// Output shapes and intermediate `value_info` ignored.
    IgnoreValueInfo,
    /// The model only types with concrete input shapes: a plan is built per request shape
    /// from the untyped graph.
    ConcreteShapes,
}

impl LoadMode {
    pub const LADDER: [LoadMode; 4] =
        [LoadMode::Strict, LoadMode::IgnoreOutputShapes, LoadMode::IgnoreValueInfo, LoadMode::ConcreteShapes];

    pub fn name(self) -> &'static str {
        match self {
            LoadMode::Strict => "strict",
            LoadMode::IgnoreOutputShapes => "ignore_output_shapes",
            LoadMode::IgnoreValueInfo => "ignore_value_info",
            LoadMode::ConcreteShapes => "concrete_shapes",
        }
    }

    fn framework(self) -> tract_onnx::Onnx {
        tract_onnx::onnx()
            .with_ignore_output_shapes(self != LoadMode::Strict)
            .with_ignore_value_info(matches!(self, LoadMode::IgnoreValueInfo | LoadMode::ConcreteShapes))
    }
}

/// Where per-shape plans come from.
pub enum PlanSource {
    /// Typed and decluttered with open dimensions; a plan binds the symbols.
    Symbolic(TypedModel),
    /// Untyped; a plan sets concrete input facts and types from there.
    Concrete(InferenceModel),
}

/// A model ready to build plans, with what the supervisor needs to know of it.
pub struct LoadedModel {
    pub mode: LoadMode,
    pub info: ModelInfo,
    pub source: PlanSource,
    /// Outputs tract gives as class indices that are served as these strings.
    pub string_outputs: Vec<Labels>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not read ONNX model {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("could not load model {path}: {reason}")]
    Unloadable { path: String, reason: String },
    #[error("model {path}: {reason}")]
    Unsupported { path: String, reason: String },
}

/// Loads `path`, trying each [`LoadMode`] in turn.
pub fn load(path: &Path, manifest: &Manifest) -> Result<LoadedModel, LoadError> {
    let shown = path.display().to_string();
    let mut proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| LoadError::Unreadable { path: shown.clone(), reason: format!("{e:#}") })?;
    let rewrites = super::rewrite::apply(&mut proto);
    let dir = path.parent().and_then(|d| d.to_str());

    let mut failures = Vec::new();
    for mode in LoadMode::LADDER {
        match try_mode(mode, &proto, dir, manifest) {
            Ok(source) => {
                if !failures.is_empty() {
                    tracing::info!(model = %shown, mode = mode.name(), "loaded after fallback");
                }
                let mut info = describe(mode, &source, manifest, &rewrites)
                    .map_err(|reason| LoadError::Unsupported { path: shown.clone(), reason })?;
                fill_from_declared(&mut info.outputs, &proto);
                return Ok(LoadedModel { mode, info, source, string_outputs: rewrites.string_outputs });
            }
            Err(e) => {
                tracing::debug!(model = %shown, mode = mode.name(), "load attempt failed: {e:#}");
                failures.push(format!("{}: {e:#}", mode.name()));
            }
        }
    }
    // The strict failure says most about the model; the last says why nothing worked.
    if let Some(hint) = concrete_shapes_hint(&proto, manifest) {
        failures.push(hint);
    }
    Err(LoadError::Unloadable { path: shown, reason: failures.join("; ") })
}

/// The ONNX graph's declared shape of a value: its rank, with the fixed sizes it gives
/// (`None` for symbolic or missing ones); `None` when it declares no shape.
pub fn declared_shape(info: &pb::ValueInfoProto) -> Option<Vec<Option<usize>>> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    let Some(pb::type_proto::Value::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else { return None };
    let dims = &t.shape.as_ref()?.dim;
    Some(
        dims.iter()
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                _ => None,
            })
            .collect(),
    )
}

/// Outputs tract could not give a rank to (their shape known only per request) take the
/// rank, and any fixed sizes, the model declares: metadata then says `[-1, 1000]`, never
/// `[]`.
fn fill_from_declared(outputs: &mut [TensorSpec], proto: &pb::ModelProto) {
    let Some(graph) = &proto.graph else { return };
    for spec in outputs.iter_mut().filter(|s| s.shape.is_empty()) {
        if let Some(shape) = graph.output.iter().find(|o| o.name == spec.name).and_then(declared_shape) {
            spec.shape = shape;
        }
    }
}

/// What to add to model.toml when no way of loading worked and some input has open
/// dimensions the manifest gives no concrete shape for: its `[inputs.NAME] shape`, the
/// open sizes still to be filled in.
fn concrete_shapes_hint(proto: &pb::ModelProto, manifest: &Manifest) -> Option<String> {
    let graph = proto.graph.as_ref()?;
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let lines: Vec<String> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()) && !manifest.inputs.contains_key(&i.name))
        .filter_map(|i| {
            let shape = declared_shape(i)?;
            shape.iter().any(Option::is_none).then(|| {
                let dims: Vec<String> = shape
                    .iter()
                    .enumerate()
                    .map(|(axis, d)| d.map_or(format!("<size of dim {axis}>"), |d| d.to_string()))
                    .collect();
                format!("[inputs.{}] shape = [{}]", i.name, dims.join(", "))
            })
        })
        .collect();
    (!lines.is_empty()).then(|| {
        format!(
            "the model may load once its inputs have concrete shapes: add to its model.toml {}",
            lines.join(" and ")
        )
    })
}

fn try_mode(mode: LoadMode, proto: &pb::ModelProto, dir: Option<&str>, manifest: &Manifest) -> TractResult<PlanSource> {
    let parsed = mode.framework().parse(proto, dir)?;
    if !parsed.unresolved_inputs.is_empty() {
        bail!("unresolved graph inputs {:?}", parsed.unresolved_inputs);
    }
    let model = parsed.model;
    if mode != LoadMode::ConcreteShapes {
        return Ok(PlanSource::Symbolic(model.into_typed()?.into_decluttered()?));
    }
    // Prove the graph types once its inputs are concrete, with the shapes model.toml gives
    // (or the declared ones with open dims set to 1), so a broken model fails at load.
    let mut probe = model.clone();
    for (ix, spec) in input_specs_untyped(&model)?.iter().enumerate() {
        let shape = concrete_probe_shape(spec, manifest);
        probe.set_input_fact(ix, InferenceFact::dt_shape(tract_type(spec.dtype)?, shape))?;
    }
    probe.into_typed()?.into_decluttered()?;
    Ok(PlanSource::Concrete(model))
}

fn concrete_probe_shape(spec: &TensorSpec, manifest: &Manifest) -> Vec<usize> {
    match manifest.inputs.get(&spec.name) {
        Some(hint) => hint.shape.clone(),
        None => spec.shape.iter().map(|d| d.unwrap_or(1)).collect(),
    }
}

fn describe(
    mode: LoadMode,
    source: &PlanSource,
    manifest: &Manifest,
    rewrites: &super::rewrite::Rewrites,
) -> Result<ModelInfo, String> {
    let zipmap_labels = rewrites.zipmap_labels.clone();
    let (inputs, mut outputs) = match source {
        PlanSource::Symbolic(model) => (typed_specs(model, true)?, typed_specs(model, false)?),
        PlanSource::Concrete(model) => {
            let text = |e: TractError| format!("{e:#}");
            (input_specs_untyped(model).map_err(text)?, output_specs_untyped(model).map_err(text)?)
        }
    };
    for spec in outputs.iter_mut().filter(|o| rewrites.string_outputs.iter().any(|l| l.output == o.name)) {
        spec.dtype = DType::Bytes;
    }
    let labels = labels(manifest, zipmap_labels, &outputs)?;
    Ok(ModelInfo { load_mode: mode.name().into(), plans_built: 0, device: "cpu".into(), inputs, outputs, labels })
}

/// The class labels served with the model: `model.toml`'s `[labels]` (for the output it
/// names, else the one `/predict` reads, else the ZipMap's, else the first), or the ZipMap's
/// own labels. Shared by both engines, so both describe a model alike.
pub fn labels(
    manifest: &Manifest,
    zipmap_labels: Option<Labels>,
    outputs: &[TensorSpec],
) -> Result<Option<Labels>, String> {
    let labels = match &manifest.labels {
        Some(spec) => Some(Labels {
            output: spec
                .output
                .clone()
                .or_else(|| manifest.predict.output.clone())
                .or_else(|| zipmap_labels.as_ref().map(|l| l.output.clone()))
                .or_else(|| outputs.first().map(|o| o.name.clone()))
                .unwrap_or_default(),
            names: spec.names.clone(),
        }),
        None => zipmap_labels,
    };
    if let Some(l) = &labels
        && !outputs.iter().any(|o| o.name == l.output)
    {
        return Err(format!("labels name output '{}', which the model does not have", l.output));
    }
    Ok(labels)
}

fn typed_specs(model: &TypedModel, inputs: bool) -> Result<Vec<TensorSpec>, String> {
    let outlets = if inputs { &model.inputs } else { &model.outputs };
    outlets
        .iter()
        .map(|outlet| {
            let fact = model.outlet_fact(*outlet).map_err(|e| format!("{e:#}"))?;
            let name = outlet_name(model, *outlet, inputs);
            let dtype = dtype_of(fact.datum_type)
                .ok_or_else(|| format!("{name}: element type {:?} is not served", fact.datum_type))?;
            let shape = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
            Ok(TensorSpec { name, dtype, shape })
        })
        .collect()
}

/// An input is named by its source node (a graph output passing an input straight through
/// relabels the outlet, not the node); an output by its outlet label.
fn outlet_name<F: Fact + Clone + 'static, O>(model: &Graph<F, O>, outlet: OutletId, input: bool) -> String
where
    O: std::fmt::Debug + std::fmt::Display + AsRef<dyn Op> + AsMut<dyn Op> + Clone + 'static,
{
    let node = || model.node(outlet.node).name.clone();
    match input {
        true => node(),
        false => model.outlet_label(outlet).map(str::to_string).unwrap_or_else(node),
    }
}

fn input_specs_untyped(model: &InferenceModel) -> TractResult<Vec<TensorSpec>> {
    untyped_specs(model, &model.inputs, true)
}

fn output_specs_untyped(model: &InferenceModel) -> TractResult<Vec<TensorSpec>> {
    untyped_specs(model, &model.outputs, false)
}

fn untyped_specs(model: &InferenceModel, outlets: &[OutletId], inputs: bool) -> TractResult<Vec<TensorSpec>> {
    outlets
        .iter()
        .map(|outlet| {
            let fact = model.outlet_fact(*outlet)?;
            let name = outlet_name(model, *outlet, inputs);
            let dtype = match fact.datum_type.concretize().and_then(dtype_of) {
                Some(d) => d,
                None if inputs => bail!("input {name} declares no servable element type"),
                // Outputs of a graph typed only per shape may not declare a type up front.
                None => DType::F32,
            };
            let shape = match fact.shape.concretize() {
                Some(dims) => dims.iter().map(|d| d.to_usize().ok()).collect(),
                None => fact.shape.dims().map(|d| d.concretize().and_then(|d| d.to_usize().ok())).collect(),
            };
            Ok(TensorSpec { name, dtype, shape })
        })
        .collect()
}

/// Our element type for a tract datum type, where we serve it.
pub fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::Bool => DType::Bool,
        DatumType::U8 => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::I8 => DType::I8,
        DatumType::I16 => DType::I16,
        DatumType::I32 => DType::I32,
        DatumType::I64 | DatumType::TDim => DType::I64,
        DatumType::F16 => DType::F16,
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::String => DType::Bytes,
        _ => return None,
    })
}

/// tract's datum type for one of ours; `None` for BF16, which tract has no type for (a
/// model using it is not loaded by tract: [`dtype_of`] names no BF16).
pub fn datum_type(dtype: DType) -> Option<DatumType> {
    Some(match dtype {
        DType::Bool => DatumType::Bool,
        DType::U8 => DatumType::U8,
        DType::U16 => DatumType::U16,
        DType::U32 => DatumType::U32,
        DType::U64 => DatumType::U64,
        DType::I8 => DatumType::I8,
        DType::I16 => DatumType::I16,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::Bytes => DatumType::String,
        DType::F16 => DatumType::F16,
        DType::BF16 => return None,
    })
}

/// [`datum_type`], or the error that says tract has none for `dtype`.
pub fn tract_type(dtype: DType) -> TractResult<DatumType> {
    datum_type(dtype).ok_or_else(|| anyhow::anyhow!("tract has no element type for {dtype}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension::Value as Dim};

    fn value(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(d.map_or(Dim::DimParam("n".into()), Dim::DimValue)),
                ..Default::default()
            })
            .collect();
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn model(inputs: Vec<pb::ValueInfoProto>, outputs: Vec<pb::ValueInfoProto>) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto { input: inputs, output: outputs, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn outputs_without_a_shape_take_the_declared_rank() {
        let proto = model(vec![], vec![value("logits", &[None, Some(1000)])]);
        let mut outputs = vec![
            TensorSpec { name: "logits".into(), dtype: DType::F32, shape: vec![] },
            TensorSpec { name: "other".into(), dtype: DType::F32, shape: vec![] },
        ];
        fill_from_declared(&mut outputs, &proto);
        assert_eq!(outputs[0].oip_shape(), vec![-1, 1000]);
        assert!(outputs[1].shape.is_empty(), "an output the graph does not declare keeps what tract said");
    }

    #[test]
    fn an_open_input_without_a_hint_is_told_what_to_declare() {
        let proto = model(vec![value("images", &[Some(1), Some(3), None, None])], vec![]);
        let hint = concrete_shapes_hint(&proto, &Manifest::default()).unwrap();
        assert!(hint.contains("[inputs.images] shape = [1, 3, <size of dim 2>, <size of dim 3>]"), "{hint}");
        let mut manifest = Manifest::default();
        manifest.inputs.insert("images".into(), crate::wire::manifest::InputHint { shape: vec![1, 3, 320, 320] });
        assert_eq!(concrete_shapes_hint(&proto, &manifest), None, "already declared");
    }
}
