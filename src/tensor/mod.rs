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
//!
//! The element types ([`DType`]), their typed storage ([`Values`]) and rounding to half
//! precision ([`f16_from_f64`], [`bf16_from_f64`]) each have a file of their own.

mod dtype;
mod float16;
mod values;

pub use dtype::DType;
pub use float16::{bf16_from_f64, f16_from_f64};
pub use values::Values;

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

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

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
}
