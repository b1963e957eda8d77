//! Rounding an f64 to the half-precision types (FP16, BF16): to nearest, ties to even,
//! refusing what overflows.

use half::{bf16, f16};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
