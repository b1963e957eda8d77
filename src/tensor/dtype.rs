//! Element types: the Open Inference Protocol's datatypes, their sizes and wire codes.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_and_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            assert_eq!(DType::from_oip_name(d.oip_name()), Some(d));
        }
    }
}
