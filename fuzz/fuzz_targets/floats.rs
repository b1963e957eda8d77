//! Tensor data in JSON: `modeld::front::json::parse(text, dtype)` for FP32, FP64 and
//! INT64 (the float fast path and the general serde walk).
//!
//! Never panics; an accepted text holds exactly as many elements as its shape; the
//! shape does not depend on the element type; and a plain float array (the fast path's
//! domain) gives std's correctly rounded values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeld::front::json;
use modeld::tensor::{DType, Values, element_count};

/// Deepest nesting of brackets in `text`.
fn depth(text: &str) -> usize {
    let (mut d, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' => {
                d += 1;
                max = max.max(d);
            }
            b']' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // One JSON value and nothing after it, by JSON's grammar (serde_json skipping it; its
    // Value would also refuse a number its own approximate parse rounds past f64::MAX,
    // such as 1.7976931348623158e308, which is f64::MAX correctly rounded).
    let single = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    let mut shapes = Vec::new();
    let mut f32s = None;
    let mut f64s = None;
    for dtype in [DType::F32, DType::F64, DType::I64] {
        let Ok(parsed) = json::parse(text, dtype) else { continue };
        // Text after the value was once ignored (`7[9`: fuzz/regressions/floats).
        if !single {
            panic!("{text:?} is not one JSON value, yet parses as {dtype}: {parsed:?}");
        }
        assert_eq!(parsed.values.dtype(), dtype, "{text:?}");
        assert_eq!(
            parsed.values.len(),
            element_count(&parsed.shape),
            "{text:?} as {dtype}: shape {:?} but {} elements",
            parsed.shape,
            parsed.values.len()
        );
        shapes.push((dtype, parsed.shape));
        match parsed.values {
            Values::F32(v) => f32s = Some(v),
            Values::F64(v) => f64s = Some(v),
            _ => {}
        }
    }
    if let [(_, first), rest @ ..] = shapes.as_slice() {
        for (dtype, shape) in rest {
            assert_eq!(shape, first, "{text:?}: the shape as {dtype} differs from {shapes:?}");
        }
    }
    // Plain numbers and brackets within the fast path's depth: each value is std's.
    let plain = text.bytes().all(|b| b"0123456789+-.eE[], \t\n\r".contains(&b)) && depth(text) <= 32;
    if plain
        && single
        && let Some(values) = &f64s
    {
        let tokens: Vec<&str> = text.split(|c: char| "[], \t\n\r".contains(c)).filter(|t| !t.is_empty()).collect();
        assert_eq!(tokens.len(), values.len(), "{text:?}");
        for (token, v) in tokens.iter().zip(values) {
            let std: f64 = token.parse().unwrap_or_else(|e| panic!("{token:?} accepted but std says {e}"));
            assert_eq!(v.to_bits(), std.to_bits(), "{token:?} in {text:?}: {v} but std gives {std}");
        }
        if let Some(f32s) = &f32s {
            for ((token, v), w) in tokens.iter().zip(values).zip(f32s) {
                assert_eq!(w.to_bits(), (*v as f32).to_bits(), "{token:?} as FP32 in {text:?}");
            }
        }
    }
});
