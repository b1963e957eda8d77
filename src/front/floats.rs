//! The fast path for float tensors in JSON: a flat or nested array of plain numbers,
//! scanned once from the raw text into a `Vec<f32>` or `Vec<f64>` (or FP16 and BF16,
//! rounded from the number's correctly rounded double).
//!
//! serde_json hands every element to a visitor through several calls and parses each
//! number in general; for an image of 150,528 numbers that was most of the supervisor's
//! time per request (bench/RESULTS.md). This scanner takes only brackets, commas,
//! whitespace and the strict JSON number grammar, and checks the shape as
//! [`super::json`] does. A number of at most 19 significant digits and a decimal
//! exponent within ±22 (what clients print) is computed exactly with one multiplication
//! or division of two exact doubles (Clinger's fast path); any other goes to std's
//! correctly rounded parser. Anything else (strings, booleans, `null`, a malformed or
//! out-of-range number, a ragged or too deeply nested array) is not taken: [`parse`]
//! returns `None` and the general parse handles it, so both paths accept the same inputs
//! and every error is worded in one place.

use super::json::{Parsed, Shape};
use crate::tensor::{self, DType, Values};
use half::{bf16, f16};

/// Deeper nesting goes to the general parse (which has its own limit).
const MAX_DEPTH: usize = 32;

/// Powers of ten a double holds exactly.
const EXACT_POWERS: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Parses `text` as a float tensor of `dtype`; `None` when it is not a float type or the
/// text is not plain regular numbers.
pub fn parse(text: &str, dtype: DType) -> Option<Parsed> {
    let (parsed, end) = parse_prefix(text.as_bytes(), 0, dtype)?;
    let rest = &text.as_bytes()[end..];
    rest.iter().all(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t')).then_some(parsed)
}

/// Parses the float tensor that starts at `at` in `bytes` (a request body being read in
/// one pass) and returns it with the offset just after it; `None` as [`parse`].
pub fn parse_prefix(bytes: &[u8], at: usize, dtype: DType) -> Option<(Parsed, usize)> {
    match dtype {
        DType::F32 => scan::<f32>(bytes, at).map(|(shape, v, end)| (Parsed { shape, values: Values::F32(v) }, end)),
        DType::F64 => scan::<f64>(bytes, at).map(|(shape, v, end)| (Parsed { shape, values: Values::F64(v) }, end)),
        DType::F16 => scan::<f16>(bytes, at).map(|(shape, v, end)| (Parsed { shape, values: Values::F16(v) }, end)),
        DType::BF16 => scan::<bf16>(bytes, at).map(|(shape, v, end)| (Parsed { shape, values: Values::BF16(v) }, end)),
        _ => None,
    }
}

trait Float: Copy {
    /// The value as this type; `None` when a finite number is out of its range (1e39 as
    /// FP32 would be infinity: refused by the general parse, which words why).
    fn from_f64(v: f64) -> Option<Self>;
}

impl Float for f32 {
    fn from_f64(v: f64) -> Option<f32> {
        let x = v as f32;
        x.is_finite().then_some(x)
    }
}

impl Float for f64 {
    fn from_f64(v: f64) -> Option<f64> {
        Some(v)
    }
}

/// Nearest, ties to even; past 65,504 declined (the general parse words the refusal).
impl Float for f16 {
    fn from_f64(v: f64) -> Option<f16> {
        tensor::f16_from_f64(v)
    }
}

impl Float for bf16 {
    fn from_f64(v: f64) -> Option<bf16> {
        tensor::bf16_from_f64(v)
    }
}

/// Scans one number or array from `at`: its shape, elements and end offset.
fn scan<T: Float>(text: &[u8], at: usize) -> Option<(Vec<usize>, Vec<T>, usize)> {
    // Elements are at least two bytes apart ("1,"); a body holds little else but the array.
    let reserve = (text.len() - at.min(text.len())) / 8;
    let mut scanner = Scanner { text, at, shape: Shape::default(), out: Vec::with_capacity(reserve) };
    scanner.value(0)?;
    Some((scanner.shape.dims(), scanner.out, scanner.at))
}

struct Scanner<'a, T> {
    text: &'a [u8],
    at: usize,
    shape: Shape,
    out: Vec<T>,
}

/// The digits of a number as read: their value (while it fits) and count.
struct Digits {
    value: u64,
    count: usize,
}

impl<T: Float> Scanner<'_, T> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// A number or an array at `depth`.
    fn value(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        if self.peek()? != b'[' {
            let v = self.number()?;
            self.shape.leaf(depth).ok()?;
            self.out.push(T::from_f64(v)?);
            return Some(());
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.skip_whitespace();
        let mut len = 0;
        if self.peek()? == b']' {
            // `[]` is a leaf level too: shape [0], and `[[]]` is [1, 0].
            self.shape.leaf(depth + 1).ok()?;
        } else {
            loop {
                self.value(depth + 1)?;
                len += 1;
                self.skip_whitespace();
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.at += 1;
        self.shape.array_len(depth, len).ok()
    }

    /// A number in JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, finite.
    fn number(&mut self) -> Option<f64> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let mut mantissa = match self.peek()? {
            b'0' => {
                self.at += 1;
                Digits { value: 0, count: 0 }
            }
            b'1'..=b'9' => self.digits(Digits { value: 0, count: 0 }),
            _ => return None,
        };
        let mut exponent: i64 = 0;
        if self.peek() == Some(b'.') {
            self.at += 1;
            let fraction = self.at;
            mantissa = self.digits(mantissa);
            if self.at == fraction {
                return None;
            }
            // Each fraction digit, significant or not, is a tenth of the one before.
            exponent -= (self.at - fraction) as i64;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match self.peek() {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            if sign != 0 {
                self.at += 1;
            }
            let digits_at = self.at;
            let written = self.digits(Digits { value: 0, count: 0 });
            if self.at == digits_at {
                return None;
            }
            // Past 19 digits the value wrapped; such exponents go to std's parser below.
            exponent +=
                if written.count > 18 { i64::MAX / 2 } else { written.value as i64 } * if sign < 0 { -1 } else { 1 };
        }
        let v = match exact(mantissa, exponent) {
            Some(v) => v,
            // The number's bytes are ASCII; std's parse rounds correctly.
            None => std::str::from_utf8(&self.text[start..self.at]).ok()?.trim_start_matches('-').parse().ok()?,
        };
        v.is_finite().then_some(if negative { -v } else { v })
    }

    /// Reads digits onto `digits`. Leading zeros (as in 0.0001) are not significant;
    /// significant digits past 19 are counted, not added (the number then goes to std).
    fn digits(&mut self, mut digits: Digits) -> Digits {
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if digits.count > 0 || d != b'0' {
                if digits.count < 19 {
                    digits.value = digits.value * 10 + u64::from(d - b'0');
                }
                digits.count += 1;
            }
            self.at += 1;
        }
        digits
    }
}

/// `value x 10^exponent` when both are exact in a double, so one operation rounds correctly.
fn exact(mantissa: Digits, exponent: i64) -> Option<f64> {
    if mantissa.count > 19 || mantissa.value >= 1 << 53 {
        return None;
    }
    let m = mantissa.value as f64;
    match exponent {
        0..=22 => Some(m * EXACT_POWERS[exponent as usize]),
        -22..=-1 => Some(m / EXACT_POWERS[(-exponent) as usize]),
        _ if mantissa.value == 0 => Some(0.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(text: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        parse(text, DType::F32).map(|p| match p.values {
            Values::F32(v) => (p.shape, v),
            _ => unreachable!("F32 parses to F32"),
        })
    }

    fn double(text: &str) -> f64 {
        match parse(text, DType::F64).unwrap().values {
            Values::F64(v) => v[0],
            _ => unreachable!("F64 parses to F64"),
        }
    }

    #[test]
    fn a_prefix_ends_where_its_array_does() {
        let body = br#"{"data": [[1, 2], [3, 4]], "shape": [2, 2]}"#;
        let (parsed, end) = parse_prefix(body, 9, DType::F32).unwrap();
        assert_eq!((parsed.shape, parsed.values), (vec![2, 2], Values::F32(vec![1.0, 2.0, 3.0, 4.0])));
        assert_eq!(&body[end..end + 3], b", \"");
        assert!(parse_prefix(body, 9, DType::I64).is_none());
    }

    #[test]
    fn flat_and_nested_arrays_and_single_numbers() {
        assert_eq!(floats("[1, 2.5, -3e2, 0.125E+1, -0]"), Some((vec![5], vec![1.0, 2.5, -300.0, 1.25, -0.0])));
        assert_eq!(floats(" [[1,2],\n [3,4]] "), Some((vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])));
        assert_eq!(floats("7"), Some((vec![], vec![7.0])));
        assert_eq!(floats("[]"), Some((vec![0], vec![])));
        assert_eq!(floats("[[]]"), Some((vec![1, 0], vec![])));
        assert!(floats("[-0]").unwrap().1[0].is_sign_negative());
    }

    #[test]
    fn anything_but_plain_regular_numbers_is_left_to_the_general_parse() {
        for text in [
            "[1, \"2\"]",
            "[true]",
            "[null]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1",
            "1]",
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            "[1e+]",
            "[-]",
            "[NaN]",
            "[Infinity]",
            "[1e400]",
            "[-1e400]",
            "[[1, 2], [3]]",
            "[[1, 2], 3]",
            "[1] x",
        ] {
            assert_eq!(floats(text), None, "{text}");
        }
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(floats(&deep), None);
    }

    /// Half-precision tensors are scanned too: each number its correctly rounded double,
    /// rounded to nearest even; a number out of range is left to the general parse, to be
    /// refused with its reason.
    #[test]
    fn half_precision_is_scanned_from_each_numbers_double() {
        let numbers = ["0.1", "-2.5e-3", "65504", "1.00048828125", "7", "6e-8", "1e-40"];
        let text = format!("[[{}], [{}]]", numbers[..3].join(","), numbers[3..6].join(","));
        let doubles: Vec<f64> = numbers[..6].iter().map(|n| n.parse().unwrap()).collect();
        let p = parse(&text, DType::F16).unwrap();
        assert_eq!(p.shape, vec![2, 3]);
        let want: Option<Vec<f16>> = doubles.iter().map(|v| tensor::f16_from_f64(*v)).collect();
        assert_eq!(p.values, Values::F16(want.unwrap()));
        let p = parse(&text, DType::BF16).unwrap();
        let want: Option<Vec<bf16>> = doubles.iter().map(|v| tensor::bf16_from_f64(*v)).collect();
        assert_eq!(p.values, Values::BF16(want.unwrap()));
        assert_eq!(parse("[1e-40]", DType::F16).unwrap().values, Values::F16(vec![f16::ZERO]));
        assert!(parse("[70000]", DType::F16).is_none());
        assert!(parse("[70000]", DType::BF16).is_some());
    }

    #[test]
    fn integer_and_other_types_are_not_taken() {
        assert!(parse("[1, 2]", DType::I64).is_none());
        assert!(parse("[1, 2]", DType::U8).is_none());
        assert_eq!(parse("[1, 2]", DType::F32).unwrap().values, Values::F32(vec![1.0, 2.0]));
    }

    /// Every number is the correctly rounded double of its text (std's parser), fast path
    /// or not.
    #[test]
    fn values_are_correctly_rounded() {
        let numbers = [
            "0.1",
            "-0.23096",
            "0.0001",
            "0.000000000000000000000000001",
            "1.5e-7",
            "-1.791829e+3",
            "3.4028235e38",
            "123456789",
            "9007199254740993",
            "18446744073709551615",
            "1234567890.1234567890123",
            "1e-45",
            "2.5E3",
            "1e22",
            "1e23",
            "0.3e-22",
            "4.9406564584124654e-324",
            "1.7976931348623157e308",
            "100000000000000000000000",
            "1.00000000000000000000001",
            "0e0",
            "0.0e-5000",
            "1e-0007",
        ];
        for n in numbers {
            let ours = double(n);
            let std: f64 = n.parse().unwrap();
            assert_eq!(ours.to_bits(), std.to_bits(), "{n}");
            match (std as f32).is_finite() {
                true => assert_eq!(floats(n).unwrap().1[0].to_bits(), (std as f32).to_bits(), "{n} as f32"),
                // Past FP32's range: not taken (the general parse refuses it, worded).
                false => assert_eq!(floats(n), None, "{n} as f32"),
            }
        }
    }

    #[test]
    fn many_generated_numbers_match_std() {
        // A deterministic spread of mantissas, scales and signs, printed as clients do.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
            let scale = 10f64.powi((state % 40) as i32 - 20);
            let sign = if state & 1 == 0 { -1.0 } else { 1.0 };
            let value = sign * mantissa * scale;
            for text in
                [format!("{value}"), format!("{value:e}"), format!("{value:.6}"), format!("{:.6}", value as f32)]
            {
                let std: f64 = text.parse().unwrap();
                assert_eq!(double(&text).to_bits(), std.to_bits(), "{text}");
            }
        }
    }
}
