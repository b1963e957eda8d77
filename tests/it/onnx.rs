//! Purpose-built ONNX models for the tests, generated with tract-onnx's protobuf types:
//! small graphs whose behaviour (slow, typed, ...) is what a test needs.

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;

/// ONNX element type codes (TensorProto.DataType).
pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const STRING: i32 = 8;
pub const BOOL: i32 = 9;
pub const FLOAT16: i32 = 10;
pub const DOUBLE: i32 = 11;
pub const BFLOAT16: i32 = 16;

/// The domain of ONNX's traditional-ML operators (CategoryMapper, ZipMap, ...).
pub const ML_DOMAIN: &str = "ai.onnx.ml";

/// A graph under construction.
#[derive(Default)]
pub struct Graph {
    graph: pb::GraphProto,
}

impl Graph {
    /// Declares an input; `None` dims are symbolic (named `N0`, `N1`, ...).
    pub fn input(mut self, name: &str, elem_type: i32, shape: &[Option<i64>]) -> Self {
        self.graph.input.push(value_info(name, elem_type, Some(shape)));
        self
    }

    pub fn output(mut self, name: &str, elem_type: i32) -> Self {
        self.graph.output.push(value_info(name, elem_type, None));
        self
    }

    /// An output with a declared shape (`None` dims symbolic).
    pub fn output_shaped(mut self, name: &str, elem_type: i32, shape: &[Option<i64>]) -> Self {
        self.graph.output.push(value_info(name, elem_type, Some(shape)));
        self
    }

    pub fn node(mut self, op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<pb::AttributeProto>) -> Self {
        self.graph.node.push(pb::NodeProto {
            op_type: op.into(),
            name: format!("{op}_{}", self.graph.node.len()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attributes,
            ..Default::default()
        });
        self
    }

    /// A node of the traditional-ML domain ([`ML_DOMAIN`]), as ONNX Runtime requires it.
    pub fn ml_node(mut self, op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<pb::AttributeProto>) -> Self {
        self = self.node(op, inputs, outputs, attributes);
        self.graph.node.last_mut().expect("the node just added").domain = ML_DOMAIN.into();
        self
    }

    /// An FP16 initializer, its values as raw little-endian bytes (as exporters write it).
    pub fn half_initializer(mut self, name: &str, dims: &[i64], data: &[half::f16]) -> Self {
        self.graph.initializer.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: FLOAT16,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        self
    }

    pub fn float_initializer(mut self, name: &str, dims: &[i64], data: Vec<f32>) -> Self {
        self.graph.initializer.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: FLOAT,
            float_data: data,
            ..Default::default()
        });
        self
    }

    /// The serialized model (opset 17; ai.onnx.ml 3 when a node is of that domain).
    pub fn encode(self) -> Vec<u8> {
        let mut opset_import = vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }];
        if self.graph.node.iter().any(|n| n.domain == ML_DOMAIN) {
            opset_import.push(pb::OperatorSetIdProto { domain: ML_DOMAIN.into(), version: 3 });
        }
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import,
            producer_name: "modeld-tests".into(),
            graph: Some(pb::GraphProto { name: "test".into(), ..self.graph }),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}

fn value_info(name: &str, elem_type: i32, shape: Option<&[Option<i64>]>) -> pb::ValueInfoProto {
    let shape = shape.map(|dims| pb::TensorShapeProto {
        dim: dims
            .iter()
            .enumerate()
            .map(|(i, d)| pb::tensor_shape_proto::Dimension {
                value: Some(match d {
                    Some(v) => Dim::DimValue(*v),
                    None => Dim::DimParam(format!("N{i}")),
                }),
                ..Default::default()
            })
            .collect(),
    });
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor { elem_type, shape })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ints_attr(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

pub fn strings_attr(name: &str, strings: &[&str]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Strings as i32,
        strings: strings.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

pub fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// `x [N, width] → (MatMul W → Tanh) × depth → mean over axis 1 → y [N, 1]`: its cost
/// grows with `width² × depth`, so a test can make requests take as long as it needs.
pub fn slow(width: i64, depth: usize) -> Vec<u8> {
    let weights: Vec<f32> =
        (0..width * width).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) / width as f32).collect();
    let mut g = Graph::default().input("x", FLOAT, &[None, Some(width)]).output("y", FLOAT).float_initializer(
        "w",
        &[width, width],
        weights,
    );
    let mut last = "x".to_string();
    for i in 0..depth {
        let (mm, th) = (format!("mm{i}"), format!("th{i}"));
        g = g.node("MatMul", &[&last, "w"], &[&mm], vec![]).node("Tanh", &[&mm], &[&th], vec![]);
        last = th;
    }
    g.node("ReduceMean", &[&last], &["y"], vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)]).encode()
}

/// One `x_<type>` input per element type, each passed through to `y_<type>`.
pub fn passthrough_types() -> Vec<u8> {
    let mut g = Graph::default();
    for (name, t) in
        [("f32", FLOAT), ("f64", DOUBLE), ("i64", INT64), ("i32", INT32), ("i8", INT8), ("u8", UINT8), ("bool", BOOL)]
    {
        let (x, y) = (format!("x_{name}"), format!("y_{name}"));
        g = g.input(&x, t, &[None, Some(2)]).output(&y, t).node("Identity", &[&x], &[&y], vec![]);
    }
    g.encode()
}

/// `y = a + b` where both inputs are declared `[N0, N1]`: the same symbols, so inputs of
/// different widths do not fit the model.
pub fn add_same_shape() -> Vec<u8> {
    Graph::default()
        .input("a", FLOAT, &[None, None])
        .input("b", FLOAT, &[None, None])
        .output("y", FLOAT)
        .node("Add", &["a", "b"], &["y"], vec![])
        .encode()
}

/// `y = table[i]` for a table of 4 floats: an index past 3 makes tract fail at run time,
/// so this model fails on some inputs and serves the others.
pub fn lookup() -> Vec<u8> {
    Graph::default()
        .input("i", INT64, &[None])
        .output("y", FLOAT)
        .float_initializer("table", &[4], vec![10.0, 11.0, 12.0, 13.0])
        .node("Gather", &["table", "i"], &["y"], vec![int_attr("axis", 0)])
        .encode()
}

/// `y = x` where the graph declares `y` as `[N0, 4]` but `x` is `[N0, 3]`: loading with the
/// declared output shapes fails ("impossible to unify"), ignoring them works.
pub fn wrong_output_shape() -> Vec<u8> {
    let mut model = Graph::default().input("x", FLOAT, &[None, Some(3)]).output("y", FLOAT).node(
        "Identity",
        &["x"],
        &["y"],
        vec![],
    );
    model.graph.output[0] = value_info("y", FLOAT, Some(&[None, Some(4)]));
    model.encode()
}

/// `y = Flatten(x)` for `x [N0, N1, 2]`: tract refuses to flatten two symbolic dimensions
/// ("Can not compute a shape with square of symbols"), as with real exported models, and
/// runs it once the shape is concrete.
pub fn flatten_two_open_dims() -> Vec<u8> {
    Graph::default()
        .input("x", FLOAT, &[None, None, Some(2)])
        .output_shaped("y", FLOAT, &[Some(1), None])
        .node("Flatten", &["x"], &["y"], vec![int_attr("axis", 0)])
        .encode()
}

/// `x [N, 1] × w [1, width] → [N, width] → mean → y [N, 1]`: the intermediate takes
/// `N × width × 4` bytes, so a large enough batch exceeds any memory limit.
pub fn memory_hog(width: i64) -> Vec<u8> {
    Graph::default()
        .input("x", FLOAT, &[None, Some(1)])
        .output("y", FLOAT)
        .float_initializer("w", &[1, width], vec![0.5; width as usize])
        .node("MatMul", &["x", "w"], &["wide"], vec![])
        .node("ReduceMean", &["wide"], &["y"], vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)])
        .encode()
}

/// The rollout tests' model family: each takes `x [N, 4]` and answers `y`, so any version
/// can replace any other.
pub mod family {
    use super::*;

    /// `y [N, 1] = sum(x) × factor`: a good version; `factor` tells versions apart.
    pub fn good(factor: f32) -> Vec<u8> {
        Graph::default()
            .input("x", FLOAT, &[None, Some(4)])
            .output("y", FLOAT)
            .float_initializer("w", &[4, 1], vec![factor; 4])
            .node("MatMul", &["x", "w"], &["y"], vec![])
            .encode()
    }

    /// `good`'s signature with weights gone bad: every answer is NaN.
    pub fn nan() -> Vec<u8> {
        Graph::default()
            .input("x", FLOAT, &[None, Some(4)])
            .output("y", FLOAT)
            .float_initializer("w", &[4, 1], vec![f32::NAN; 4])
            .node("MatMul", &["x", "w"], &["y"], vec![])
            .encode()
    }

    /// Retrained on five features: `x [N, 5]`, a signature change.
    pub fn wider() -> Vec<u8> {
        Graph::default()
            .input("x", FLOAT, &[None, Some(5)])
            .output("y", FLOAT)
            .float_initializer("w", &[5, 1], vec![1.0; 5])
            .node("MatMul", &["x", "w"], &["y"], vec![])
            .encode()
    }

    /// `y = log(x × 0)`: every answer is -Inf, as a log-probability of an impossible class.
    pub fn log_of_zero() -> Vec<u8> {
        Graph::default()
            .input("x", FLOAT, &[None, Some(4)])
            .output("y", FLOAT)
            .float_initializer("w", &[4, 1], vec![0.0; 4])
            .node("MatMul", &["x", "w"], &["p"], vec![])
            .node("Log", &["p"], &["y"], vec![])
            .encode()
    }

    /// Exported with its batch dimension fixed at 1: refuses every request of more rows.
    pub fn single_row() -> Vec<u8> {
        Graph::default()
            .input("x", FLOAT, &[Some(1), Some(4)])
            .output("y", FLOAT)
            .float_initializer("w", &[4, 1], vec![1.0; 4])
            .node("MatMul", &["x", "w"], &["y"], vec![])
            .encode()
    }

    /// A 3-class classifier on the same input: `logits [N, 3] = x × W` with
    /// `W = [[1, 0, -1], [0, 2, 4], 0, 0]`, so the tests' rows `[k % 8, 1, 0.5, 0.25]` fall
    /// in class 2 for k % 8 < 2 and class 0 otherwise. `swapped` exchanges the first and
    /// last columns, as a label-order bug in a retrain would: the top class then differs
    /// on 7 of 8 rows.
    pub fn classifier(swapped: bool) -> Vec<u8> {
        let mut w = vec![1.0, 0.0, -1.0, 0.0, 2.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        if swapped {
            for row in w.chunks_mut(3) {
                row.swap(0, 2);
            }
        }
        Graph::default()
            .input("x", FLOAT, &[None, Some(4)])
            .output("logits", FLOAT)
            .float_initializer("w", &[4, 3], w)
            .node("MatMul", &["x", "w"], &["logits"], vec![])
            .encode()
    }

    /// The classifier's model.toml: its labels, nothing else.
    pub const CLASSIFIER_LABELS: &str = "[labels]\nnames = [\"low\", \"mid\", \"high\"]\n";

    /// The class `classifier(false)` gives the tests' row for request `k`.
    pub fn class_of(k: u64) -> usize {
        if k % 8 < 2 { 2 } else { 0 }
    }

    /// Fails whenever the row's largest value is 4 or more (an out-of-range lookup), so
    /// about half of the tests' traffic fails on it. Answers `y [N, 1]`, as `good` does.
    pub fn erroring() -> Vec<u8> {
        Graph::default()
            .input("x", FLOAT, &[None, Some(4)])
            .output("y", FLOAT)
            .float_initializer("table", &[4], vec![0.0, 1.0, 2.0, 3.0])
            .node("ReduceMax", &["x"], &["m"], vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)])
            .node("Cast", &["m"], &["i"], vec![int_attr("to", INT64 as i64)])
            .node("Gather", &["table", "i"], &["y"], vec![int_attr("axis", 0)])
            .encode()
    }

    /// Correct but slow: `depth` layers of a 512-wide matrix product per row.
    pub fn slow(depth: usize) -> Vec<u8> {
        let width = 512i64;
        let w: Vec<f32> =
            (0..width * width).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) / width as f32).collect();
        let mut g = Graph::default()
            .input("x", FLOAT, &[None, Some(4)])
            .output("y", FLOAT)
            .float_initializer("w0", &[4, width], vec![0.1; (4 * width) as usize])
            .float_initializer("w", &[width, width], w)
            .node("MatMul", &["x", "w0"], &["h0"], vec![]);
        for i in 0..depth {
            let (mm, th) = (format!("mm{i}"), format!("h{}", i + 1));
            g = g.node("MatMul", &[&format!("h{i}"), "w"], &[&mm], vec![]).node("Tanh", &[&mm], &[&th], vec![]);
        }
        g.node("ReduceMean", &[&format!("h{depth}")], &["y"], vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)])
            .encode()
    }

    /// A `[N, 2^20]` intermediate: 4 MiB per row, so a batch of 64 rows needs 256 MiB.
    pub fn hog() -> Vec<u8> {
        let width = 1i64 << 20;
        Graph::default()
            .input("x", FLOAT, &[None, Some(4)])
            .output("y", FLOAT)
            .float_initializer("w", &[4, width], vec![0.25; (4 * width) as usize])
            .node("MatMul", &["x", "w"], &["wide"], vec![])
            .node("ReduceMean", &["wide"], &["y"], vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)])
            .encode()
    }
}

/// A 3-class softmax classifier on the varied load's rows (`load::varied_row`), and the
/// ways a retrain of it goes wrong or right: each takes `x [N, 4]` and answers
/// `probabilities [N, 3]`, with [`classes::MANIFEST`]'s labels and kind.
///
/// Stable's classes split the varied traffic about 33 / 36 / 31 %. Measured on 2,000 rows
/// (`python3 tests/fixtures/measure_classes.py`): feature 2 read 5× too large agrees with
/// stable on 69 % of top classes, its largest PSI 0.91; features 0 and 2 read in each
/// other's place agree on 53 %, PSI 1.25; weights moved by 3 % agree on 98–99 %, PSI at
/// most 0.01.
pub mod classes {
    use super::*;

    pub const LABELS: [&str; 3] = ["low", "mid", "high"];
    /// Labels and the output's kind: its rows are probabilities.
    pub const MANIFEST: &str = "[labels]\noutput = \"probabilities\"\nnames = [\"low\", \"mid\", \"high\"]\n[predict]\nkind = \"probabilities\"\n";
    pub const W: [f32; 12] = [1.0, -1.0, 0.0, 0.0, 2.0, -2.0, -0.3, 0.0, 0.3, 0.4, -0.4, 0.0];
    pub const B: [f32; 3] = [-1.85, 4.0, -2.15];

    /// What a version does with its input before the weights, and after them.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Variant {
        /// The stable version's graph.
        Good,
        /// Weights and biases each moved by up to `percent` % (a fine-tune), by `seed`.
        Retrained { percent: f32, seed: u64 },
        /// Exported without its final softmax: the same top class, scores for rows.
        NoSoftmax,
        /// Serving skew: `feature` arrives `scale` times larger than in training.
        Skewed { feature: usize, scale: f32 },
        /// Features `a` and `b` read in each other's place (an input block in the wrong order).
        Swapped { a: usize, b: usize },
        /// Weights gone bad: every answer NaN.
        Nan,
        /// The classes' columns in another order than the labels say (a label-order bug).
        LabelsSwapped,
        /// Retrained on five features: `x [N, 5]`, a signature change.
        Wider,
    }

    /// The logits' weights after a retrain: each moved by up to `percent` %.
    fn retrained(values: &[f32], percent: f32, seed: u64) -> Vec<f32> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let u =
                    (crate::load::mix(seed.wrapping_mul(97).wrapping_add(i as u64)) >> 11) as f32 / (1u64 << 53) as f32;
                v * (1.0 + percent / 100.0 * (2.0 * u - 1.0))
            })
            .collect()
    }

    pub fn model(variant: Variant) -> Vec<u8> {
        let (w, b) = match variant {
            Variant::Retrained { percent, seed } => (retrained(&W, percent, seed), retrained(&B, percent, seed + 1)),
            Variant::Nan => (vec![f32::NAN; 12], B.to_vec()),
            // Columns low, mid, high answered as high, low, mid.
            Variant::LabelsSwapped => {
                let w = W.chunks(3).flat_map(|r| [r[2], r[0], r[1]]).collect();
                (w, vec![B[2], B[0], B[1]])
            }
            // A fifth feature the others do not have, with a weight of its own.
            Variant::Wider => (W.iter().copied().chain([0.1, 0.0, -0.1]).collect(), B.to_vec()),
            _ => (W.to_vec(), B.to_vec()),
        };
        let width = if variant == Variant::Wider { 5 } else { 4 };
        let mut g = Graph::default().input("x", FLOAT, &[None, Some(width)]).output("probabilities", FLOAT);
        let input = match variant {
            Variant::Skewed { feature, scale } => {
                let mut s = vec![1.0; 4];
                s[feature] = scale;
                g = g.float_initializer("skew", &[4], s).node("Mul", &["x", "skew"], &["read"], vec![]);
                "read"
            }
            Variant::Swapped { a, b } => {
                let mut order: Vec<i64> = (0..4).collect();
                order.swap(a, b);
                g.graph.initializer.push(tract_onnx::pb::TensorProto {
                    name: "order".into(),
                    dims: vec![4],
                    data_type: INT64,
                    int64_data: order,
                    ..Default::default()
                });
                g = g.node("Gather", &["x", "order"], &["read"], vec![int_attr("axis", 1)]);
                "read"
            }
            _ => "x",
        };
        g = g.float_initializer("w", &[width, 3], w).float_initializer("b", &[3], b).node(
            "MatMul",
            &[input, "w"],
            &["scores"],
            vec![],
        );
        match variant {
            Variant::NoSoftmax => g.node("Add", &["scores", "b"], &["probabilities"], vec![]),
            _ => g.node("Add", &["scores", "b"], &["logits"], vec![]).node(
                "Softmax",
                &["logits"],
                &["probabilities"],
                vec![int_attr("axis", 1)],
            ),
        }
        .encode()
    }

    /// Stable's top class for a row, computed here as the model does.
    pub fn class_of(row: &[f32; 4]) -> usize {
        let logits: Vec<f32> = (0..3).map(|c| (0..4).map(|i| row[i] * W[i * 3 + c]).sum::<f32>() + B[c]).collect();
        (0..3).fold(0, |best, c| if logits[c] > logits[best] { c } else { best })
    }
}

/// `y = x × 2` for `x [1, 4]`: a first dimension fixed at 1, so never batched.
pub fn fixed_single_row() -> Vec<u8> {
    Graph::default()
        .input("x", FLOAT, &[Some(1), Some(4)])
        .output("y", FLOAT)
        .float_initializer("two", &[1], vec![2.0])
        .node("Mul", &["x", "two"], &["y"], vec![])
        .encode()
}

/// A half-precision model, as exported for GPUs: `x [N, 2]` in FP16, `y = x + [0.5, 32]`
/// in FP16 (65504 + 32 overflows FP16 to +Inf), and `x32`, `x` widened to FP32 (exact:
/// it shows which FP16 value the request's numbers became).
pub fn half_precision() -> Vec<u8> {
    let offset = [half::f16::from_f32(0.5), half::f16::from_f32(32.0)];
    Graph::default()
        .input("x", FLOAT16, &[None, Some(2)])
        .output("y", FLOAT16)
        .output("x32", FLOAT)
        .half_initializer("offset", &[2], &offset)
        .node("Add", &["x", "offset"], &["y"], vec![])
        .node("Cast", &["x"], &["x32"], vec![int_attr("to", FLOAT as i64)])
        .encode()
}

/// The words [`words`] knows, in id order.
pub const WORDS: [&str; 3] = ["naïve", "☃", "plain"];

/// A string-input model with no tokenizer: `text [N]` (BYTES) looked up in a vocabulary
/// of [`WORDS`] (CategoryMapper: `id`, INT64, -1 for an unknown word) and passed through
/// unchanged (`echo`, BYTES).
pub fn words() -> Vec<u8> {
    Graph::default()
        .input("text", STRING, &[None])
        .output("id", INT64)
        .output("echo", STRING)
        .ml_node(
            "CategoryMapper",
            &["text"],
            &["id"],
            vec![
                strings_attr("cats_strings", &WORDS),
                ints_attr("cats_int64s", &[0, 1, 2]),
                int_attr("default_int64", -1),
            ],
        )
        .node("Identity", &["text"], &["echo"], vec![])
        .encode()
}

/// A bfloat16 model (ONNX Runtime only: tract has no bfloat16): `x [N, 2]` in BF16,
/// `y = bf16(f32(x) × 2)` in BF16, and `x32`, `x` widened to FP32.
pub fn bfloat16() -> Vec<u8> {
    Graph::default()
        .input("x", BFLOAT16, &[None, Some(2)])
        .output("y", BFLOAT16)
        .output("x32", FLOAT)
        .float_initializer("two", &[1], vec![2.0])
        .node("Cast", &["x"], &["x32"], vec![int_attr("to", FLOAT as i64)])
        .node("Mul", &["x32", "two"], &["doubled"], vec![])
        .node("Cast", &["doubled"], &["y"], vec![int_attr("to", BFLOAT16 as i64)])
        .encode()
}

/// Slow to load, quick to describe: `x [rows, 512]` (no open dimension, so the default
/// warm-up runs all `rows`) through `depth` 512-wide layers, so loading (plan and warm-up)
/// takes seconds while the version is LOADING.
pub fn slow_to_load(rows: i64, depth: usize) -> Vec<u8> {
    let width = 512i64;
    let weights: Vec<f32> =
        (0..width * width).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) / width as f32).collect();
    let mut g = Graph::default().input("x", FLOAT, &[Some(rows), Some(width)]).output("y", FLOAT).float_initializer(
        "w",
        &[width, width],
        weights,
    );
    let mut last = "x".to_string();
    for i in 0..depth {
        let (mm, th) = (format!("mm{i}"), format!("th{i}"));
        g = g.node("MatMul", &[&last, "w"], &[&mm], vec![]).node("Tanh", &[&mm], &[&th], vec![]);
        last = th;
    }
    g.node("ReduceMean", &[&last], &["y"], vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)]).encode()
}
