//! Typed element storage ([`Values`]) and its little-endian byte encoding, BYTES as
//! `u32le length + bytes` records.

use super::DType;
use half::{bf16, f16};

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
    /// (callers check lengths with [`Tensor::check`](super::Tensor::check) first).
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
}
