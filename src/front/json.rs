//! Tensor data in JSON, both ways, without an intermediate JSON value tree.
//!
//! Parsing walks the raw JSON of a `data` (or `features`) array once, flattening nested
//! arrays row-major straight into a typed vector and recording the nested shape (ragged
//! arrays are refused). Each number is checked against the element type: `300` is not a
//! UINT8, `1.5` not an INT64, `70000` not an FP16 (out of range: refused, never made
//! infinite); FP16 and BF16 take the nearest value, ties to even. Printing serializes
//! elements straight from a tensor's bytes; BYTES elements print as JSON strings only
//! when they are UTF-8 (JSON cannot carry other bytes without loss).
//!
//! Float tensors, the large ones (an image is 150,528 numbers), first take a fast path
//! ([`super::floats`]) that scans plain numbers and brackets without serde's per-element
//! calls; anything it does not take is parsed here, which also words every error.

use crate::tensor::{self, DType, Tensor, Values};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeSeq, Serializer};
use std::fmt;

/// A JSON array parsed for one element type: its elements row-major, and its nested shape.
#[derive(Debug)]
pub struct Parsed {
    pub shape: Vec<usize>,
    pub values: Values,
}

/// Parses `text` (JSON: a number, or arbitrarily nested arrays of them) as `dtype` elements.
pub fn parse(text: &str, dtype: DType) -> Result<Parsed, String> {
    match super::floats::parse(text, dtype) {
        Some(parsed) => Ok(parsed),
        None => walk(text, dtype),
    }
}

/// The general parse: any element type, every error worded.
fn walk(text: &str, dtype: DType) -> Result<Parsed, String> {
    let mut walk = Walk { values: Values::with_capacity(dtype, 0), shape: Shape::default() };
    let mut de = serde_json::Deserializer::from_str(text);
    Level { walk: &mut walk, depth: 0 }.deserialize(&mut de).map_err(|e| strip_position(e.to_string()))?;
    // One value and nothing after it, as the float scanner takes it (fuzz/regressions/floats).
    de.end().map_err(|e| strip_position(e.to_string()))?;
    Ok(Parsed { shape: walk.shape.dims(), values: walk.values })
}

/// serde_json appends "at line 1 column 873" of the data snippet, which means nothing to
/// the client (it is not their body's position); drop it.
fn strip_position(message: String) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    }
}

/// The nested shape of an array, checked as it is walked: regular or refused as ragged.
#[derive(Default)]
pub(super) struct Shape {
    /// Length of the arrays seen at each depth (all must agree).
    lengths: Vec<Option<usize>>,
    /// Depth at which numbers were found (all must agree).
    leaf_depth: Option<usize>,
}

impl Shape {
    /// A number (or an empty array's inside) found at `depth`.
    pub(super) fn leaf(&mut self, depth: usize) -> Result<(), String> {
        match self.leaf_depth {
            None => self.leaf_depth = Some(depth),
            Some(d) if d != depth => {
                return Err("ragged array: numbers and arrays mixed at the same level".into());
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// An array of `len` elements closed at `depth`.
    pub(super) fn array_len(&mut self, depth: usize, len: usize) -> Result<(), String> {
        if self.lengths.len() <= depth {
            self.lengths.resize(depth + 1, None);
        }
        match self.lengths[depth] {
            None => self.lengths[depth] = Some(len),
            Some(l) if l != len => {
                return Err(format!("ragged array: arrays at depth {depth} have lengths {l} and {len}"));
            }
            Some(_) => {}
        }
        Ok(())
    }

    pub(super) fn dims(&self) -> Vec<usize> {
        self.lengths.iter().map(|d| d.unwrap_or(0)).collect()
    }
}

struct Walk {
    values: Values,
    shape: Shape,
}

impl Walk {
    fn push(&mut self, v: Scalar, depth: usize) -> Result<(), String> {
        self.shape.leaf(depth)?;
        let index = self.values.len();
        let dtype = self.values.dtype();
        push_scalar(&mut self.values, v).ok_or_else(|| match (v, dtype.largest_finite()) {
            (Scalar::U(_) | Scalar::I(_) | Scalar::F(_), Some(largest)) => {
                format!("element {index}: {v} is not a valid {dtype} value (out of range: its largest is ±{largest})")
            }
            _ => format!("element {index}: {v} is not a valid {dtype} value"),
        })
    }
}

struct Level<'w> {
    walk: &'w mut Walk,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, boolean, string or array of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut len = 0;
        while seq.next_element_seed(Level { walk: &mut *self.walk, depth: self.depth + 1 })?.is_some() {
            len += 1;
        }
        if len == 0 {
            // An empty array is a leaf level too: `[]` is shape [0], `[[]]` is [1, 0].
            self.walk.shape.leaf(self.depth + 1).map_err(de::Error::custom)?;
        }
        self.walk.shape.array_len(self.depth, len).map_err(de::Error::custom)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.walk.push(Scalar::Bool(v), self.depth).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.walk.push(Scalar::U(v), self.depth).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.walk.push(Scalar::I(v), self.depth).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.walk.push(Scalar::F(v), self.depth).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.walk.push(Scalar::S(v), self.depth).map_err(E::custom)
    }
}

#[derive(Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    S(&'a str),
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::U(u) => write!(f, "{u}"),
            Scalar::I(i) => write!(f, "{i}"),
            Scalar::F(x) => write!(f, "{x}"),
            Scalar::S(s) => write!(f, "{s:?}"),
        }
    }
}

fn push_scalar(values: &mut Values, v: Scalar) -> Option<()> {
    fn int<T: TryFrom<u64> + TryFrom<i64>>(v: Scalar) -> Option<T> {
        match v {
            Scalar::U(u) => T::try_from(u).ok(),
            Scalar::I(i) => T::try_from(i).ok(),
            // Clients often send 3.0 for 3: accept whole floats that fit.
            Scalar::F(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => T::try_from(f as i64).ok(),
            _ => None,
        }
    }
    let float = |v: Scalar| match v {
        Scalar::U(u) => Some(u as f64),
        Scalar::I(i) => Some(i as f64),
        Scalar::F(f) => Some(f),
        _ => None,
    };
    match values {
        Values::Bool(out) => out.push(match v {
            Scalar::Bool(b) => b,
            _ => return None,
        }),
        // A finite number past FP32's range would silently become infinity: refused.
        Values::F32(out) => out.push(Some(float(v)? as f32).filter(|x| x.is_finite())?),
        Values::F64(out) => out.push(float(v)?),
        Values::F16(out) => out.push(tensor::f16_from_f64(float(v)?)?),
        Values::BF16(out) => out.push(tensor::bf16_from_f64(float(v)?)?),
        Values::U8(out) => out.push(int(v)?),
        Values::U16(out) => out.push(int(v)?),
        Values::U32(out) => out.push(int(v)?),
        Values::U64(out) => out.push(int(v)?),
        Values::I8(out) => out.push(int(v)?),
        Values::I16(out) => out.push(int(v)?),
        Values::I32(out) => out.push(int(v)?),
        Values::I64(out) => out.push(int(v)?),
        Values::Bytes(out) => out.push(match v {
            Scalar::S(s) => s.as_bytes().to_vec(),
            _ => return None,
        }),
    }
    Some(())
}

/// A tensor's elements as a flat JSON array, serialized straight from its bytes.
///
/// A BYTES element that is not UTF-8 fails the serialization (see [`first_non_utf8`],
/// which callers check first to word the refusal): it is never replaced by U+FFFD.
///
/// JSON has no NaN or infinity. A float output reaches a client holding one only when the
/// version's model.toml allows it (the worker fails the request otherwise); it is then
/// written as the string `"NaN"`, `"Infinity"` or `"-Infinity"`, as the proto3 JSON
/// mapping (and Triton's JSON) spell them, never as a silent `null`.
pub struct Data<'a>(pub &'a Tensor);

/// A float as JSON: a number, or its name when it is not finite.
pub struct Float(pub f64);

impl Serialize for Float {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("Infinity"),
            _ => s.serialize_str("-Infinity"),
        }
    }
}

/// A float as a JSON value, named when it is not finite (see [`Float`]).
pub fn float_value(v: f64) -> serde_json::Value {
    serde_json::to_value(Float(v)).expect("a float serializes")
}

/// An f32 as JSON: its shortest decimal when finite (as serde prints it), else its name.
struct Float32(f32);

impl Serialize for Float32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_finite() => s.serialize_f32(v),
            v => Float(f64::from(v)).serialize(s),
        }
    }
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut seq = s.serialize_seq(Some(t.element_count()))?;
        macro_rules! each {
            ($n:literal, $ty:ty) => {
                for c in t.data.chunks_exact($n) {
                    seq.serialize_element(&<$ty>::from_le_bytes(c.try_into().expect("chunk")))?;
                }
            };
        }
        match t.dtype {
            DType::Bool => {
                for b in &t.data {
                    seq.serialize_element(&(*b != 0))?;
                }
            }
            DType::U8 => each!(1, u8),
            DType::I8 => each!(1, i8),
            DType::U16 => each!(2, u16),
            DType::I16 => each!(2, i16),
            DType::U32 => each!(4, u32),
            DType::I32 => each!(4, i32),
            DType::F32 => {
                for c in t.data.chunks_exact(4) {
                    seq.serialize_element(&Float32(f32::from_le_bytes(c.try_into().expect("chunk"))))?;
                }
            }
            DType::U64 => each!(8, u64),
            DType::I64 => each!(8, i64),
            DType::F64 => {
                for c in t.data.chunks_exact(8) {
                    seq.serialize_element(&Float(f64::from_le_bytes(c.try_into().expect("chunk"))))?;
                }
            }
            // Widening to f32 is exact, and f32's shortest decimal reads back to the same
            // half-precision value.
            DType::F16 => {
                for c in t.data.chunks_exact(2) {
                    seq.serialize_element(&Float32(half::f16::from_le_bytes([c[0], c[1]]).to_f32()))?;
                }
            }
            DType::BF16 => {
                for c in t.data.chunks_exact(2) {
                    seq.serialize_element(&Float32(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()))?;
                }
            }
            DType::Bytes => {
                if let Values::Bytes(items) = t.values() {
                    for (i, item) in items.iter().enumerate() {
                        let text = std::str::from_utf8(item).map_err(|e| {
                            ser::Error::custom(format!("output '{}': element {i} is not UTF-8: {e}", t.name))
                        })?;
                        seq.serialize_element(text)?;
                    }
                }
            }
        }
        seq.end()
    }
}

/// The index of the first BYTES element of `t` that is not UTF-8, and why; `None` when
/// every one is (or `t` holds no strings).
pub fn first_non_utf8(t: &Tensor) -> Option<(usize, std::str::Utf8Error)> {
    match t.values() {
        Values::Bytes(items) => {
            items.iter().enumerate().find_map(|(i, b)| std::str::from_utf8(b).err().map(|e| (i, e)))
        }
        _ => None,
    }
}

/// How [`elements`] writes BYTES elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// As text where they are UTF-8, else as `{"b64": "..."}`: lossless either way.
    TextOrBase64,
    /// Every one as `{"b64": "..."}` (TF Serving's form for tensors named `*_bytes`).
    Base64,
}

/// A string element as JSON, by [`Strings`].
fn string_value(bytes: Vec<u8>, strings: Strings) -> serde_json::Value {
    use base64::Engine;
    match (strings, String::from_utf8(bytes)) {
        (Strings::TextOrBase64, Ok(text)) => serde_json::Value::String(text),
        (_, Ok(text)) => serde_json::json!({ "b64": base64::engine::general_purpose::STANDARD.encode(text) }),
        (_, Err(e)) => serde_json::json!({ "b64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()) }),
    }
}

/// A tensor's elements as JSON values, row-major (non-finite floats named as [`Float`]
/// names them; strings as [`Strings`] says).
pub fn elements(t: &Tensor, strings: Strings) -> Vec<serde_json::Value> {
    use serde_json::Value;
    match t.values() {
        Values::Bool(v) => v.into_iter().map(Value::from).collect(),
        Values::U8(v) => v.into_iter().map(Value::from).collect(),
        Values::U16(v) => v.into_iter().map(Value::from).collect(),
        Values::U32(v) => v.into_iter().map(Value::from).collect(),
        Values::U64(v) => v.into_iter().map(Value::from).collect(),
        Values::I8(v) => v.into_iter().map(Value::from).collect(),
        Values::I16(v) => v.into_iter().map(Value::from).collect(),
        Values::I32(v) => v.into_iter().map(Value::from).collect(),
        Values::I64(v) => v.into_iter().map(Value::from).collect(),
        Values::F32(v) => v.into_iter().map(|x| float_value(f64::from(x))).collect(),
        Values::F64(v) => v.into_iter().map(float_value).collect(),
        Values::F16(v) => v.into_iter().map(|x| float_value(x.to_f64())).collect(),
        Values::BF16(v) => v.into_iter().map(|x| float_value(x.to_f64())).collect(),
        Values::Bytes(v) => v.into_iter().map(|b| string_value(b, strings)).collect(),
    }
}

/// Elements nested into arrays of `shape` (row-major); a scalar for an empty shape.
pub fn nest(elements: &[serde_json::Value], shape: &[usize]) -> serde_json::Value {
    match shape {
        [] => elements.first().cloned().unwrap_or(serde_json::Value::Null),
        [_] => serde_json::Value::Array(elements.to_vec()),
        [n, rest @ ..] => {
            let stride = rest.iter().product::<usize>();
            let rows = (0..*n).map(|i| nest(&elements[i * stride..(i + 1) * stride], rest));
            serde_json::Value::Array(rows.collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_nest_by_their_shape() {
        let t = Tensor::from_values("x", vec![2, 3], Values::I64(vec![1, 2, 3, 4, 5, 6])).unwrap();
        let text = Strings::TextOrBase64;
        assert_eq!(nest(&elements(&t, text), &t.shape), serde_json::json!([[1, 2, 3], [4, 5, 6]]));
        assert_eq!(nest(&elements(&t, text), &[3, 2]), serde_json::json!([[1, 2], [3, 4], [5, 6]]));
        let s = Tensor::from_values("s", vec![1], Values::F32(vec![f32::NEG_INFINITY])).unwrap();
        assert_eq!(nest(&elements(&s, text), &[]), serde_json::json!("-Infinity"));
    }

    #[test]
    fn nested_and_flat_arrays_flatten_row_major() {
        let p = parse("[[1, 2.5], [3, 4]]", DType::F32).unwrap();
        assert_eq!(p.shape, vec![2, 2]);
        assert_eq!(p.values, Values::F32(vec![1.0, 2.5, 3.0, 4.0]));
        let p = parse("[1, 2, 3]", DType::I64).unwrap();
        assert_eq!((p.shape, p.values), (vec![3], Values::I64(vec![1, 2, 3])));
    }

    #[test]
    fn values_are_checked_against_the_type() {
        assert!(parse("[1, 300]", DType::U8).unwrap_err().contains("element 1: 300 is not a valid UINT8"));
        assert!(parse("[1.5]", DType::I64).unwrap_err().contains("not a valid INT64"));
        assert!(parse("[true]", DType::F32).is_err());
        assert!(parse("[-1]", DType::U32).is_err());
        assert_eq!(parse("[2.0]", DType::I32).unwrap().values, Values::I32(vec![2]));
        assert_eq!(parse("[true, false]", DType::Bool).unwrap().values, Values::Bool(vec![true, false]));
        assert_eq!(parse("[\"a\"]", DType::Bytes).unwrap().values, Values::Bytes(vec![b"a".to_vec()]));
    }

    /// Found by the `floats` fuzz target: text after the value was ignored by the general
    /// parse (the float scanner refused it), so `7[9` read as `7`.
    #[test]
    fn text_after_the_value_is_refused_on_every_path() {
        for dtype in [DType::F32, DType::F64, DType::I64] {
            let regression = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fuzz/regressions/floats/trailing_text_after_the_value"
            ))
            .unwrap();
            assert!(parse(&regression, dtype).unwrap_err().contains("trailing characters"), "{dtype}");
            assert!(parse("[1] x", dtype).is_err(), "{dtype}");
            assert!(parse("[1, \"2\"] 3", dtype).is_err(), "{dtype}");
        }
    }

    #[test]
    fn numbers_past_fp32s_range_are_refused_not_made_infinite() {
        let e = parse("[1, 1e39]", DType::F32).unwrap_err();
        assert!(e.starts_with("element 1: ") && e.contains("is not a valid FP32 value (out of range"), "{e}");
        assert!(parse("[-3.5e38]", DType::F32).is_err());
        assert_eq!(parse("[3.4e38]", DType::F32).unwrap().values, Values::F32(vec![3.4e38]));
        assert_eq!(parse("[1e39]", DType::F64).unwrap().values, Values::F64(vec![1e39]));
    }

    /// Found by the `floats` fuzz target: a number just past f64's range (its correct
    /// rounding is infinity, so the float scanner declines it) was rounded down to f64::MAX
    /// by serde_json's approximate parse in the general one. serde_json now rounds
    /// correctly (`float_roundtrip`), and both paths refuse it.
    #[test]
    fn numbers_past_fp64s_range_are_refused_on_every_path() {
        let regression = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/floats/past_f64_max_rounds_to_infinity"
        ))
        .unwrap();
        assert!(parse(&regression, DType::F64).is_err(), "{regression}");
        assert_eq!(parse("[1.7976931348623158e308]", DType::F64).unwrap().values, Values::F64(vec![f64::MAX]));
    }

    /// FP16 and BF16 take the nearest value, ties to even, and refuse what overflows with
    /// the type's range in the message.
    #[test]
    fn half_precision_numbers_round_to_nearest_even_and_out_of_range_is_refused() {
        use half::{bf16, f16};
        let p = parse("[[1.5, 0.1], [65504, -65519], [1.00048828125, 6e-8]]", DType::F16).unwrap();
        assert_eq!(p.shape, vec![3, 2]);
        let bits: Vec<u16> = match p.values {
            Values::F16(v) => v.into_iter().map(f16::to_bits).collect(),
            other => panic!("{other:?}"),
        };
        // 1.00048828125 = 1 + 2^-11, a tie: to even (1.0). 6e-8 is the subnormal 2^-24.
        assert_eq!(bits, [0x3E00, 0x2E66, 0x7BFF, 0xFBFF, 0x3C00, 0x0001]);
        let e = parse("[1, 70000]", DType::F16).unwrap_err();
        assert_eq!(e, "element 1: 70000 is not a valid FP16 value (out of range: its largest is ±65504)");
        assert!(parse("[65520]", DType::F16).is_err(), "rounds to infinity");
        assert!(parse("[\"1\"]", DType::F16).unwrap_err().contains("not a valid FP16 value"));
        let p = parse("[3.0, -1e38]", DType::BF16).unwrap();
        assert_eq!(p.values, Values::BF16(vec![bf16::from_f32(3.0), bf16::from_f64(-1e38)]));
        assert!(parse("[3.4e38]", DType::BF16).unwrap_err().contains("not a valid BF16 value (out of range"));
    }

    #[test]
    fn half_precision_prints_as_the_shortest_decimal_that_reads_back() {
        use half::{bf16, f16};
        let t = Tensor::from_values("h", vec![4], Values::F16(vec![f16::from_f32(0.1), f16::MAX, f16::ONE, f16::NAN]))
            .unwrap();
        assert_eq!(serde_json::to_string(&Data(&t)).unwrap(), r#"[0.099975586,65504.0,1.0,"NaN"]"#);
        let t = Tensor::from_values("b", vec![2], Values::BF16(vec![bf16::from_f32(-2.5), bf16::INFINITY])).unwrap();
        assert_eq!(serde_json::to_string(&Data(&t)).unwrap(), r#"[-2.5,"Infinity"]"#);
        // Read back, each is the same half-precision value.
        assert_eq!(parse("[0.099975586]", DType::F16).unwrap().values, Values::F16(vec![f16::from_f32(0.1)]));
    }

    /// Strings are never made lossy: JSON printing fails on bytes that are not UTF-8 (the
    /// caller refuses first, naming the element), and `elements` writes them as base64.
    #[test]
    fn bytes_that_are_not_utf8_are_never_replaced() {
        let items = vec!["naïve ☃".as_bytes().to_vec(), vec![0xFF, 0x00, 0x61], b"".to_vec()];
        let t = Tensor::from_values("s", vec![3], Values::Bytes(items)).unwrap();
        let (index, _) = first_non_utf8(&t).unwrap();
        assert_eq!(index, 1);
        let e = serde_json::to_string(&Data(&t)).unwrap_err().to_string();
        assert!(e.contains("output 's': element 1 is not UTF-8"), "{e}");
        assert_eq!(
            serde_json::Value::Array(elements(&t, Strings::TextOrBase64)),
            serde_json::json!(["naïve ☃", {"b64": "/wBh"}, ""])
        );
        assert_eq!(
            serde_json::Value::Array(elements(&t, Strings::Base64)),
            serde_json::json!([{"b64": "bmHDr3ZlIOKYgw=="}, {"b64": "/wBh"}, {"b64": ""}])
        );
        let fine = Tensor::from_values("s", vec![1], Values::Bytes(vec!["\u{0}\"é".as_bytes().to_vec()])).unwrap();
        assert_eq!(first_non_utf8(&fine), None);
        assert_eq!(serde_json::to_string(&Data(&fine)).unwrap(), r#"["\u0000\"é"]"#);
    }

    #[test]
    fn ragged_arrays_are_refused() {
        assert!(parse("[[1, 2], [3]]", DType::F32).unwrap_err().contains("ragged"));
        assert!(parse("[[1, 2], 3]", DType::F32).unwrap_err().contains("ragged"));
    }

    #[test]
    fn large_ints_keep_their_precision() {
        let p = parse("[9007199254740993, -9223372036854775808]", DType::I64).unwrap();
        assert_eq!(p.values, Values::I64(vec![9007199254740993, i64::MIN]));
    }

    #[test]
    fn data_serializes_from_bytes() {
        let t = Tensor::from_values("x", vec![3], Values::F32(vec![0.5, -1.0, 3.25])).unwrap();
        assert_eq!(serde_json::to_string(&Data(&t)).unwrap(), "[0.5,-1.0,3.25]");
        let t = Tensor::from_values("l", vec![1], Values::Bytes(vec![b"setosa".to_vec()])).unwrap();
        assert_eq!(serde_json::to_string(&Data(&t)).unwrap(), "[\"setosa\"]");
    }

    #[test]
    fn non_finite_floats_are_named_never_null() {
        let t = Tensor::from_values("lp", vec![4], Values::F32(vec![f32::NEG_INFINITY, -0.5, f32::INFINITY, f32::NAN]))
            .unwrap();
        assert_eq!(serde_json::to_string(&Data(&t)).unwrap(), r#"["-Infinity",-0.5,"Infinity","NaN"]"#);
        let t = Tensor::from_values("d", vec![2], Values::F64(vec![f64::NEG_INFINITY, 0.25])).unwrap();
        assert_eq!(serde_json::to_string(&Data(&t)).unwrap(), r#"["-Infinity",0.25]"#);
    }
}
