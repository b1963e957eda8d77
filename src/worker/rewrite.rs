//! Rewrites of the ONNX graph, before tract sees it, for what exporters produce and tract
//! cannot run as is. Each keeps the model's meaning and its outputs' names.
//!
//! - A trailing `ZipMap` (skl2onnx adds one to every classifier) turns the probability
//!   tensor into a sequence of maps, which tract has no type for: it becomes an
//!   `Identity`, the output is the probability tensor, and ZipMap's class labels become
//!   the model's labels.
//! - Input dimensions with neither a value nor a name (skl2onnx's batch dimension) leave
//!   tract unable to type the input: they get a symbol name.
//! - A `LinearClassifier` with string class labels fails in tract (it needs a zero string
//!   to build its label lookup): its labels become the indices 0..n and the label output,
//!   where it reaches a graph output only through `Identity` nodes, is mapped back to the
//!   strings after each run ([`Rewrites::string_outputs`]).

use crate::wire::Labels;
use tract_onnx::pb;

/// ONNX TensorProto element types used here.
const ONNX_FLOAT: i32 = 1;
const ONNX_INT64: i32 = 7;
const ONNX_STRING: i32 = 8;

/// What the rewrites found that the rest of loading needs.
#[derive(Debug, Default)]
pub struct Rewrites {
    /// Labels from a ZipMap, for the output it fed.
    pub zipmap_labels: Option<Labels>,
    /// Outputs that now give class indices, and the strings they stand for.
    pub string_outputs: Vec<Labels>,
}

pub fn apply(proto: &mut pb::ModelProto) -> Rewrites {
    let Some(graph) = proto.graph.as_mut() else {
        return Rewrites::default();
    };
    name_anonymous_dims(graph);
    Rewrites { zipmap_labels: replace_trailing_zipmap(graph, false), string_outputs: index_string_labels(graph) }
}

fn name_anonymous_dims(graph: &mut pb::GraphProto) {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as Type;
    for input in &mut graph.input {
        let Some(Type::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
            continue;
        };
        let Some(shape) = t.shape.as_mut() else {
            continue;
        };
        for (axis, dim) in shape.dim.iter_mut().enumerate() {
            if dim.value.is_none() {
                dim.value = Some(Value::DimParam(format!("{}_{axis}", input.name)));
            }
        }
    }
}

/// Only the ZipMap rewrite, for ONNX Runtime: it runs the rest as exported, but a sequence
/// of maps is no tensor to serve either. ONNX Runtime tells a graph output's shape only as
/// declared, so the new output declares ZipMap's input shape, [rows, classes].
pub fn apply_zipmap(proto: &mut pb::ModelProto) -> Option<Labels> {
    replace_trailing_zipmap(proto.graph.as_mut()?, true)
}

/// ZipMap's input: float probabilities of `classes` classes for any number of rows.
fn probabilities_type(classes: usize) -> pb::TypeProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = |value| Dimension { value: Some(value), ..Default::default() };
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: ONNX_FLOAT,
            shape: Some(pb::TensorShapeProto {
                dim: vec![dim(Value::DimParam("zipmap_rows".into())), dim(Value::DimValue(classes as i64))],
            }),
        })),
        ..Default::default()
    }
}

/// Replaces each ZipMap feeding a graph output by an Identity; the output's type is left
/// for the engine to infer (tract), or declared as ZipMap's input (`declare`).
fn replace_trailing_zipmap(graph: &mut pb::GraphProto, declare: bool) -> Option<Labels> {
    let mut labels = None;
    for node in graph.node.iter_mut().filter(|n| n.op_type == "ZipMap") {
        let Some(output) = node.output.first().cloned() else {
            continue;
        };
        let Some(graph_output) = graph.output.iter_mut().find(|o| o.name == output) else {
            continue;
        };
        let names = class_names(node, "classlabels_strings", "classlabels_int64s");
        graph_output.r#type = (declare && !names.is_empty()).then(|| probabilities_type(names.len()));
        node.op_type = "Identity".into();
        node.domain.clear();
        node.attribute.clear();
        tracing::info!(output = %output, "replaced trailing ZipMap by its probability tensor");
        if labels.is_none() && !names.is_empty() {
            labels = Some(Labels { output, names });
        }
    }
    labels
}

fn class_names(node: &pb::NodeProto, strings: &str, ints: &str) -> Vec<String> {
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    if let Some(a) = attr(strings) {
        return a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    }
    attr(ints).map(|a| a.ints.iter().map(|i| i.to_string()).collect()).unwrap_or_default()
}

fn index_string_labels(graph: &mut pb::GraphProto) -> Vec<Labels> {
    let mut mapped = Vec::new();
    for i in 0..graph.node.len() {
        let node = &graph.node[i];
        if node.op_type != "LinearClassifier" || !node.attribute.iter().any(|a| a.name == "classlabels_strings") {
            continue;
        }
        let Some(label) = node.output.first().cloned() else {
            continue;
        };
        let Some(outputs) = identity_reach(graph, &label) else {
            tracing::warn!("LinearClassifier string labels feed other nodes; leaving them to tract");
            continue;
        };
        let names = class_names(&graph.node[i], "classlabels_strings", "");
        let node = &mut graph.node[i];
        node.attribute.retain(|a| a.name != "classlabels_strings");
        node.attribute.push(pb::AttributeProto {
            name: "classlabels_ints".into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: (0..names.len() as i64).collect(),
            ..Default::default()
        });
        for output in outputs {
            set_elem_type(graph, &output, ONNX_STRING, ONNX_INT64);
            tracing::info!(output = %output, "string class labels served through indices");
            mapped.push(Labels { output, names: names.clone() });
        }
    }
    mapped
}

/// The graph outputs `tensor` reaches, if it reaches nothing but graph outputs through
/// Identity nodes.
fn identity_reach(graph: &pb::GraphProto, tensor: &str) -> Option<Vec<String>> {
    let mut reached = Vec::new();
    if graph.output.iter().any(|o| o.name == tensor) {
        reached.push(tensor.to_string());
    }
    for consumer in graph.node.iter().filter(|n| n.input.iter().any(|i| i == tensor)) {
        if consumer.op_type != "Identity" {
            return None;
        }
        reached.extend(identity_reach(graph, consumer.output.first()?)?);
    }
    Some(reached)
}

fn set_elem_type(graph: &mut pb::GraphProto, name: &str, from: i32, to: i32) {
    use pb::type_proto::Value as Type;
    for info in graph.output.iter_mut().chain(graph.value_info.iter_mut()).filter(|o| o.name == name) {
        if let Some(Type::TensorType(t)) = info.r#type.as_mut().and_then(|t| t.value.as_mut())
            && t.elem_type == from
        {
            t.elem_type = to;
        }
    }
}
