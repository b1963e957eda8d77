//! Tensors as modeld moves them: a name, an element type, a shape and the elements as raw
//! little-endian bytes.
//!
//! This is the one tensor type shared by the HTTP adapters (which parse JSON into it), the
//! wire (which frames it between supervisor and worker) and the worker (which hands it to
//! tract). Keeping the elements as bytes means a tensor crosses the wire with one copy and
//! no per-element work; typed access goes through [`Tensor::values`]. Strings (OIP `BYTES`)
//! are stored as a sequence of `u32le length + bytes` records, as Triton's binary encoding
//! of BYTES tensors does.

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
}

impl DType {
    pub const ALL: [DType; 12] = [
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
        }
    }

    pub fn from_oip_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.oip_name() == name)
    }

    /// Bytes per element; `None` for variable-length strings.
    pub fn size(self) -> Option<usize> {
        match self {
            DType::Bool | DType::U8 | DType::I8 => Some(1),
            DType::U16 | DType::I16 => Some(2),
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
        matches!(self, DType::F32 | DType::F64)
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
}

/// Applies `$body` to the vector inside any numeric `Values` variant, binding it to `$v`.
macro_rules! with_numeric {
    ($values:expr, $v:ident => $body:expr, bool $b:ident => $bool_body:expr, bytes $s:ident => $bytes_body:expr) => {
        match $values {
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
        }
    }

    /// Elements as f64 (booleans as 0/1; strings give an empty vector).
    #[allow(clippy::unnecessary_cast)] // the F64 arm casts f64 to itself
    pub fn to_f64(&self) -> Vec<f64> {
        with_numeric!(self,
            v => v.iter().map(|x| *x as f64).collect(),
            bool b => b.iter().map(|x| f64::from(u8::from(*x))).collect(),
            bytes _s => Vec::new())
    }
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
        ];
        for values in cases {
            let dtype = values.dtype();
            let bytes = values.clone().into_bytes();
            assert_eq!(Values::from_bytes(dtype, &bytes), values);
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
