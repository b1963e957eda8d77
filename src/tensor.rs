//! Tensors as modeld moves them: a name, an element type, a shape and the elements as raw
//! little-endian bytes.
//!
//! This is the one tensor type shared by the HTTP adapters (which parse JSON into it), the
//! wire (which frames it between supervisor and worker) and the worker (which hands it to
//! tract). Keeping the elements as bytes means a tensor crosses the wire with one copy and
//! no per-element work; typed access goes through [`Tensor::values`]. Strings (OIP `BYTES`)
//! are stored as a sequence of `u32le length + bytes` records, as Triton's binary encoding
//! of BYTES tensors does. Half-precision elements (`FP16`, `BF16`) are their two
//! little-endian bytes, as the binary tensor extension and ONNX lay them out.

use half::{bf16, f16};
use std::fmt;

/// Element types modeld serves. The names are the Open Inference Protocol's datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
    Bytes,
    /// IEEE 754 half precision (binary16).
    F16,
    /// bfloat16: f32's exponent with 7 bits of mantissa.
    BF16,
}

impl DType {
    /// Every type, in wire-code order: new types go at the end, so codes stay put.
    pub const ALL: [DType; 14] = [
        DType::Bool,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F32,
        DType::F64,
        DType::Bytes,
        DType::F16,
        DType::BF16,
    ];

    /// The OIP datatype name (`FP32`, `INT64`, `BYTES`, ...).
    pub fn oip_name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "UINT8",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::I8 => "INT8",
            DType::I16 => "INT16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::Bytes => "BYTES",
            DType::F16 => "FP16",
            DType::BF16 => "BF16",
        }
    }

    pub fn from_oip_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.oip_name() == name)
    }

    /// Bytes per element; `None` for variable-length strings.
    pub fn size(self) -> Option<usize> {
        match self {
            DType::Bool | DType::U8 | DType::I8 => Some(1),
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => Some(2),
            DType::U32 | DType::I32 | DType::F32 => Some(4),
            DType::U64 | DType::I64 | DType::F64 => Some(8),
            DType::Bytes => None,
        }
    }

    /// Stable one-byte code used on the wire.
    pub fn code(self) -> u8 {
        DType::ALL.iter().position(|d| *d == self).unwrap_or(0) as u8
    }

    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.get(code as usize).copied()
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// The largest finite value of a float type (`None` for the others): a number past it
    /// is out of the type's range, refused rather than made infinite.
    pub fn largest_finite(self) -> Option<f64> {
        match self {
            DType::F16 => Some(f16::MAX.to_f64()),
            DType::BF16 => Some(bf16::MAX.to_f64()),
            DType::F32 => Some(f64::from(f32::MAX)),
            DType::F64 => Some(f64::MAX),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.oip_name())
    }
}

/// What a model declares for one input or output: name, element type and shape, where
/// `None` is a dimension the model leaves open (OIP shows it as -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Option<usize>>,
}

impl TensorSpec {
    /// The shape as OIP metadata prints it: -1 for open dimensions.
    pub fn oip_shape(&self) -> Vec<i64> {
        self.shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect()
    }

    /// Why `tensor` does not fit `spec`, in words a client can act on.
    pub fn admits(&self, tensor: &Tensor) -> Result<(), String> {
        let spec = self;
        let name = &spec.name;
        if tensor.dtype != spec.dtype {
            return Err(format!("input '{name}': expected datatype {}, got {}", spec.dtype, tensor.dtype));
        }
        if tensor.shape.len() != spec.shape.len() {
            return Err(format!(
                "input '{name}': expected rank {} (shape {:?}), got rank {} (shape {:?})",
                spec.shape.len(),
                spec.oip_shape(),
                tensor.shape.len(),
                tensor.shape
            ));
        }
        for (axis, (want, got)) in spec.shape.iter().zip(&tensor.shape).enumerate() {
            if let Some(want) = want
                && want != got
            {
                return Err(format!(
                    "input '{name}': dimension {axis} must be {want}, got {got} (expected shape {:?}, got {:?})",
                    spec.oip_shape(),
                    tensor.shape
                ));
            }
        }
        if tensor.shape.contains(&0) {
            return Err(format!("input '{name}': shape {:?} has a zero dimension", tensor.shape));
        }
        tensor.check().map_err(|e| e.to_string())
    }

    /// Whether the first dimension is open, so requests may stack rows along it.
    pub fn has_open_batch(&self) -> bool {
        matches!(self.shape.first(), Some(None))
    }
}

/// A named tensor with its elements as little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Why a tensor's bytes do not fit its declared type and shape.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor '{name}': shape {shape:?} holds {expected} elements but {got} were given")]
    LengthMismatch { name: String, shape: Vec<usize>, expected: usize, got: usize },
    #[error("tensor '{name}': {bytes} bytes is not a whole number of {dtype} elements ({size} bytes each)")]
    PartialElement { name: String, dtype: DType, bytes: usize, size: usize },
    #[error("tensor '{name}': malformed BYTES element data")]
    MalformedBytes { name: String },
}

impl Tensor {
    /// Number of elements the shape holds (`usize::MAX` when the product overflows, which
    /// no data can then match).
    pub fn element_count(&self) -> usize {
        element_count(&self.shape)
    }

    /// Builds a tensor from typed values, checking that they fill the shape.
    pub fn from_values(name: impl Into<String>, shape: Vec<usize>, values: Values) -> Result<Tensor, TensorError> {
        let name = name.into();
        let expected = element_count(&shape);
        if values.len() != expected {
            return Err(TensorError::LengthMismatch { name, shape, expected, got: values.len() });
        }
        Ok(Tensor { name, dtype: values.dtype(), shape, data: values.into_bytes() })
    }

    /// Checks that the byte length fits dtype and shape (used on data from the wire).
    pub fn check(&self) -> Result<(), TensorError> {
        let expected = self.element_count();
        let got = match self.dtype.size() {
            Some(size) if !self.data.len().is_multiple_of(size) => {
                let (name, dtype, bytes) = (self.name.clone(), self.dtype, self.data.len());
                return Err(TensorError::PartialElement { name, dtype, bytes, size });
            }
            Some(size) => self.data.len() / size,
            None => count_strings(&self.data).ok_or_else(|| TensorError::MalformedBytes { name: self.name.clone() })?,
        };
        if got != expected {
            return Err(TensorError::LengthMismatch {
                name: self.name.clone(),
                shape: self.shape.clone(),
                expected,
                got,
            });
        }
        Ok(())
    }

    /// Rows along the first dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Stacks tensors of the same name, type and trailing shape along the first dimension.
    /// Row-major data makes this a concatenation of their bytes (BYTES records included).
    pub fn concat_rows(parts: &[&Tensor]) -> Tensor {
        let first = parts[0];
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|t| t.rows()).sum();
        let mut data = Vec::with_capacity(parts.iter().map(|t| t.data.len()).sum());
        for t in parts {
            data.extend_from_slice(&t.data);
        }
        Tensor { name: first.name.clone(), dtype: first.dtype, shape, data }
    }

    /// Rows `start..end` of the first dimension.
    pub fn slice_rows(&self, start: usize, end: usize) -> Tensor {
        let rows = self.rows().max(1);
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = end - start;
        }
        let data = match self.dtype.size() {
            Some(_) => {
                let row_bytes = self.data.len() / rows;
                self.data[start * row_bytes..end * row_bytes].to_vec()
            }
            None => {
                let Values::Bytes(items) = self.values() else { unreachable!("BYTES tensor") };
                let per_row = items.len() / rows;
                Values::Bytes(items[start * per_row..end * per_row].to_vec()).into_bytes()
            }
        };
        Tensor { name: self.name.clone(), dtype: self.dtype, shape, data }
    }

    /// Grows the first dimension to `rows` by repeating the first row (padding a batch up
    /// to a plan's size; real rows rather than zeros keep every value in the model's
    /// domain).
    pub fn pad_rows(&mut self, rows: usize) {
        let have = self.rows();
        if rows <= have || have == 0 {
            return;
        }
        let first = self.slice_rows(0, 1).data;
        for _ in have..rows {
            self.data.extend_from_slice(&first);
        }
        self.shape[0] = rows;
    }

    /// The elements, decoded into a typed vector.
    pub fn values(&self) -> Values {
        Values::from_bytes(self.dtype, &self.data)
    }

    /// Elements as f64, for comparisons and `/predict` (strings give an empty vector).
    pub fn to_f64(&self) -> Vec<f64> {
        self.values().to_f64()
    }
}

/// The product of the dimensions, saturating at `usize::MAX` on overflow.
pub fn element_count(shape: &[usize]) -> usize {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d)).unwrap_or(usize::MAX)
}

fn count_strings(mut data: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !data.is_empty() {
        let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
        data = data.get(4 + len..)?;
        n += 1;
    }
    Some(n)
}

/// Typed element storage, one variant per [`DType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

/// Applies `$body` to the vector inside any numeric `Values` variant, binding it to `$v`
/// (the half-precision ones too, unless a `half` arm is given for them).
macro_rules! with_numeric {
    ($values:expr, $v:ident => $body:expr, bool $b:ident => $bool_body:expr, bytes $s:ident => $bytes_body:expr) => {
        with_numeric!($values, $v => $body, half $v => $body, bool $b => $bool_body, bytes $s => $bytes_body)
    };
    ($values:expr, $v:ident => $body:expr, half $h:ident => $half_body:expr, bool $b:ident => $bool_body:expr, bytes $s:ident => $bytes_body:expr) => {
        match $values {
            Values::F16($h) => $half_body,
            Values::BF16($h) => $half_body,
            Values::Bool($b) => $bool_body,
            Values::U8($v) => $body,
            Values::U16($v) => $body,
            Values::U32($v) => $body,
            Values::U64($v) => $body,
            Values::I8($v) => $body,
            Values::I16($v) => $body,
            Values::I32($v) => $body,
            Values::I64($v) => $body,
            Values::F32($v) => $body,
            Values::F64($v) => $body,
            Values::Bytes($s) => $bytes_body,
        }
    };
}

impl Values {
    pub fn dtype(&self) -> DType {
        match self {
            Values::Bool(_) => DType::Bool,
            Values::U8(_) => DType::U8,
            Values::U16(_) => DType::U16,
            Values::U32(_) => DType::U32,
            Values::U64(_) => DType::U64,
            Values::I8(_) => DType::I8,
            Values::I16(_) => DType::I16,
            Values::I32(_) => DType::I32,
            Values::I64(_) => DType::I64,
            Values::F32(_) => DType::F32,
            Values::F64(_) => DType::F64,
            Values::Bytes(_) => DType::Bytes,
            Values::F16(_) => DType::F16,
            Values::BF16(_) => DType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        with_numeric!(self, v => v.len(), bool b => b.len(), bytes s => s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty vector of the given type, with room for `capacity` elements.
    pub fn with_capacity(dtype: DType, capacity: usize) -> Values {
        match dtype {
            DType::Bool => Values::Bool(Vec::with_capacity(capacity)),
            DType::U8 => Values::U8(Vec::with_capacity(capacity)),
            DType::U16 => Values::U16(Vec::with_capacity(capacity)),
            DType::U32 => Values::U32(Vec::with_capacity(capacity)),
            DType::U64 => Values::U64(Vec::with_capacity(capacity)),
            DType::I8 => Values::I8(Vec::with_capacity(capacity)),
            DType::I16 => Values::I16(Vec::with_capacity(capacity)),
            DType::I32 => Values::I32(Vec::with_capacity(capacity)),
            DType::I64 => Values::I64(Vec::with_capacity(capacity)),
            DType::F32 => Values::F32(Vec::with_capacity(capacity)),
            DType::F64 => Values::F64(Vec::with_capacity(capacity)),
            DType::Bytes => Values::Bytes(Vec::with_capacity(capacity)),
            DType::F16 => Values::F16(Vec::with_capacity(capacity)),
            DType::BF16 => Values::BF16(Vec::with_capacity(capacity)),
        }
    }

    /// The little-endian byte encoding (strings as `u32le length + bytes`).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Values::Bool(b) => b.into_iter().map(u8::from).collect(),
            Values::U8(v) => v,
            Values::Bytes(s) => {
                let mut out = Vec::with_capacity(s.iter().map(|e| e.len() + 4).sum());
                for e in s {
                    out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                    out.extend_from_slice(&e);
                }
                out
            }
            other => with_numeric!(other,
                v => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                bool _b => unreachable!("handled above"),
                bytes _s => unreachable!("handled above")),
        }
    }

    /// Decodes little-endian bytes; trailing bytes short of one element are ignored
    /// (callers check lengths with [`Tensor::check`] first).
    pub fn from_bytes(dtype: DType, data: &[u8]) -> Values {
        fn le<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            data.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
        }
        match dtype {
            DType::Bool => Values::Bool(data.iter().map(|b| *b != 0).collect()),
            DType::U8 => Values::U8(data.to_vec()),
            DType::U16 => Values::U16(le(data, u16::from_le_bytes)),
            DType::U32 => Values::U32(le(data, u32::from_le_bytes)),
            DType::U64 => Values::U64(le(data, u64::from_le_bytes)),
            DType::I8 => Values::I8(data.iter().map(|b| *b as i8).collect()),
            DType::I16 => Values::I16(le(data, i16::from_le_bytes)),
            DType::I32 => Values::I32(le(data, i32::from_le_bytes)),
            DType::I64 => Values::I64(le(data, i64::from_le_bytes)),
            DType::F32 => Values::F32(le(data, f32::from_le_bytes)),
            DType::F64 => Values::F64(le(data, f64::from_le_bytes)),
            DType::Bytes => Values::Bytes(split_strings(data)),
            DType::F16 => Values::F16(le(data, f16::from_le_bytes)),
            DType::BF16 => Values::BF16(le(data, bf16::from_le_bytes)),
        }
    }

    /// Elements as f64 (booleans as 0/1; strings give an empty vector).
    #[allow(clippy::unnecessary_cast)] // the F64 arm casts f64 to itself
    pub fn to_f64(&self) -> Vec<f64> {
        with_numeric!(self,
            v => v.iter().map(|x| *x as f64).collect(),
            half h => h.iter().map(|x| x.to_f64()).collect(),
            bool b => b.iter().map(|x| f64::from(u8::from(*x))).collect(),
            bytes _s => Vec::new())
    }
}

/// The half-precision value nearest to `v`, ties to even; `None` when `v` is not finite or
/// rounds past the type's largest finite value (65,504 for FP16).
pub fn f16_from_f64(v: f64) -> Option<f16> {
    round_to_precision(v, 11, -14, f16::MAX.to_f64()).map(f16::from_f64)
}

/// The bfloat16 value nearest to `v`, ties to even; `None` as for [`f16_from_f64`].
pub fn bf16_from_f64(v: f64) -> Option<bf16> {
    round_to_precision(v, 8, -126, bf16::MAX.to_f64()).map(bf16::from_f64)
}

/// `v` rounded to nearest, ties to even, on the grid of a binary float with `precision`
/// significant bits and `min_exponent` as its smallest normal exponent (below it, the
/// subnormals' fixed spacing); `None` past `largest`. The result is exact in that format,
/// so converting it is exact too: `half`'s own `from_f64` drops the low 32 bits of the
/// f64 before rounding, which rounds a value just above a tie down.
fn round_to_precision(v: f64, precision: i32, min_exponent: i32, largest: f64) -> Option<f64> {
    if !v.is_finite() {
        return None;
    }
    let magnitude = v.abs();
    // The binade's exponent (f64 subnormals are far below any half-precision grid).
    let exponent = ((magnitude.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let spacing = power_of_two(exponent.max(min_exponent) - (precision - 1));
    // Dividing by a power of two is exact; so is multiplying the whole number back.
    let rounded = (magnitude / spacing).round_ties_even() * spacing;
    (rounded <= largest).then(|| rounded.copysign(v))
}

/// 2^k for k within f64's normal exponents.
fn power_of_two(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

fn split_strings(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let end = (4 + len).min(data.len());
        out.push(data[4..end].to_vec());
        data = &data[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_bytes() {
        let cases = vec![
            Values::F32(vec![1.5, -2.0]),
            Values::I64(vec![i64::MIN, 7]),
            Values::Bool(vec![true, false]),
            Values::U16(vec![65535, 1]),
            Values::Bytes(vec![b"setosa".to_vec(), Vec::new()]),
            Values::F16(vec![f16::from_f32(1.5), f16::MAX, f16::NEG_INFINITY]),
            Values::BF16(vec![bf16::from_f32(-2.5), bf16::MIN_POSITIVE_SUBNORMAL]),
        ];
        for values in cases {
            let dtype = values.dtype();
            let bytes = values.clone().into_bytes();
            assert_eq!(Values::from_bytes(dtype, &bytes), values);
        }
    }

    /// Half-precision elements are their IEEE bits, little-endian: 1.0 is 0x3C00 in FP16
    /// and 0x3F80 in BF16.
    #[test]
    fn half_precision_elements_are_two_little_endian_bytes() {
        let t = Tensor::from_values("h", vec![2], Values::F16(vec![f16::ONE, f16::from_f32(-2.0)])).unwrap();
        assert_eq!(t.data, [0x00, 0x3C, 0x00, 0xC0]);
        let t = Tensor::from_values("b", vec![1], Values::BF16(vec![bf16::ONE])).unwrap();
        assert_eq!(t.data, [0x80, 0x3F]);
        assert_eq!(t.to_f64(), vec![1.0]);
        let odd = Tensor { name: "h".into(), dtype: DType::F16, shape: vec![2], data: vec![0; 3] };
        assert!(matches!(odd.check(), Err(TensorError::PartialElement { size: 2, .. })));
    }

    /// Rounding to nearest, ties to even, from the f64 a client's number parsed to; past
    /// the largest finite value is refused (`None`), not made infinite.
    #[test]
    fn half_precision_rounds_to_nearest_even_and_refuses_what_overflows() {
        let f16_bits = |v: f64| f16_from_f64(v).map(f16::to_bits);
        // 1 + 2^-11 lies halfway between 1 and the next FP16 (1 + 2^-10): to even, 1.
        assert_eq!(f16_bits(1.0 + 2f64.powi(-11)), Some(0x3C00));
        // Just above the tie rounds up, even when the excess is in the f64's low 32 bits
        // (where `half`'s own conversion does not look).
        assert_eq!(f16_bits(1.0 + 2f64.powi(-11) + 2f64.powi(-40)), Some(0x3C01));
        // 1 + 3 * 2^-11 is halfway between 0x3C01 and 0x3C02: to even, 0x3C02.
        assert_eq!(f16_bits(1.0 + 3.0 * 2f64.powi(-11)), Some(0x3C02));
        assert_eq!(f16_bits(0.1), Some(0x2E66));
        assert_eq!(f16_bits(-0.0), Some(0x8000));
        // Subnormals: 2^-24 is the smallest; half of it is a tie to zero, a bit more is not.
        assert_eq!(f16_bits(2f64.powi(-24)), Some(0x0001));
        assert_eq!(f16_bits(2f64.powi(-25)), Some(0x0000));
        assert_eq!(f16_bits(2f64.powi(-25) * 1.0001), Some(0x0001));
        // 65504 is the largest; up to 65520 (exclusive) rounds down to it.
        assert_eq!(f16_bits(65504.0), Some(0x7BFF));
        assert_eq!(f16_bits(-65519.99), Some(0xFBFF));
        assert_eq!(f16_bits(65520.0), None);
        assert_eq!(f16_bits(1e300), None);
        assert_eq!(f16_bits(f64::INFINITY), None);
        assert_eq!(f16_bits(f64::NAN), None);

        let bf16_bits = |v: f64| bf16_from_f64(v).map(bf16::to_bits);
        assert_eq!(bf16_bits(1.0), Some(0x3F80));
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even, 1.
        assert_eq!(bf16_bits(1.0 + 2f64.powi(-8)), Some(0x3F80));
        assert_eq!(bf16_bits(1.0 + 2f64.powi(-8) + 2f64.powi(-45)), Some(0x3F81));
        assert_eq!(bf16_bits(3.3895313892515355e38), Some(0x7F7F));
        assert_eq!(bf16_bits(3.4e38), None);
        assert_eq!(bf16_bits(-1e-45), Some(0x8000));
    }

    /// Every FP16 value converts back to itself from its f64, and each midpoint between
    /// neighbours goes to the even one: the whole format checked, not samples.
    #[test]
    fn every_f16_value_and_midpoint_converts_as_ieee_says() {
        for bits in 0..0x7C00u16 {
            let v = f16::from_bits(bits);
            assert_eq!(f16_from_f64(v.to_f64()).map(f16::to_bits), Some(bits), "{v}");
            if bits < 0x7BFF {
                let midpoint = (v.to_f64() + f16::from_bits(bits + 1).to_f64()) / 2.0;
                let even = if bits % 2 == 0 { bits } else { bits + 1 };
                assert_eq!(f16_from_f64(midpoint).map(f16::to_bits), Some(even), "midpoint after {v}");
            }
        }
    }

    #[test]
    fn check_rejects_short_data() {
        let t = Tensor { name: "x".into(), dtype: DType::F32, shape: vec![2, 2], data: vec![0; 12] };
        assert_eq!(
            t.check(),
            Err(TensorError::LengthMismatch { name: "x".into(), shape: vec![2, 2], expected: 4, got: 3 })
        );
    }

    /// Bytes short of a whole element are refused, not rounded up to one: 7 bytes are not
    /// two FP32 values (the last would be read past the data, or from the next request's).
    #[test]
    fn check_rejects_a_partial_element() {
        for (bytes, shape) in [(7, vec![2]), (9, vec![2]), (1, vec![1])] {
            let t = Tensor { name: "x".into(), dtype: DType::F32, shape, data: vec![0; bytes] };
            let refused = t.check().unwrap_err();
            assert_eq!(refused, TensorError::PartialElement { name: "x".into(), dtype: DType::F32, bytes, size: 4 });
            assert!(refused.to_string().contains(&format!("{bytes} bytes is not a whole number of FP32")), "{refused}");
        }
    }

    #[test]
    fn rows_concatenate_slice_and_pad() {
        let a = Tensor::from_values("x", vec![1, 2], Values::F32(vec![1., 2.])).unwrap();
        let b = Tensor::from_values("x", vec![2, 2], Values::F32(vec![3., 4., 5., 6.])).unwrap();
        let ab = Tensor::concat_rows(&[&a, &b]);
        assert_eq!(ab.shape, vec![3, 2]);
        assert_eq!(ab.slice_rows(1, 3), b);
        let mut padded = a.clone();
        padded.pad_rows(4);
        assert_eq!(padded.values(), Values::F32(vec![1., 2., 1., 2., 1., 2., 1., 2.]));
        let s = Tensor::from_values("l", vec![3], Values::Bytes(vec![b"a".to_vec(), b"bb".to_vec(), b"c".to_vec()]))
            .unwrap();
        assert_eq!(s.slice_rows(1, 3).values(), Values::Bytes(vec![b"bb".to_vec(), b"c".to_vec()]));
    }

    #[test]
    fn dtype_codes_and_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            assert_eq!(DType::from_oip_name(d.oip_name()), Some(d));
        }
    }
}
