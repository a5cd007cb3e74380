//! Fixed-point arithmetic: the integer-only exponential decay every score
//! and evidence sum goes through, and the formatting of thousandths.
//!
//! Nothing here touches a float, so every platform computes the same bits.
//! Factors are Q32 (`1 << 32` is 1.0); values are [`Milli`] or any other
//! integer scale (the model keeps its evidence sums at a finer scale and
//! decays them with the same [`decay`]).

/// Thousandths: 60_000 is 60.0 points, 1_000 is one observation's worth of
/// evidence, 500 is a total variation distance of 0.5.
pub type Milli = i64;

/// 1.0 in Q32.
pub const ONE_Q32: u64 = 1 << 32;

/// 1.0 in Q62, the working precision of the series.
const ONE_Q62: i128 = 1 << 62;

/// ln 2 in Q62, rounded to nearest (ln 2 · 2^62 = 3196577161300663914.947…).
const LN2_Q62: i128 = 3_196_577_161_300_663_915;

/// `2^(-dt_ms / half_life_ms)` in Q32 (`1 << 32` is 1.0), without floats.
///
/// - `dt_ms <= 0` gives exactly `1 << 32` (no decay; time never runs
///   backwards for evidence).
/// - `half_life_ms <= 0` with `dt_ms > 0` gives 0 (instant decay).
/// - Otherwise `dt = whole · half_life + frac`; the result is
///   `2^-frac/half_life`, computed as `e^-y` with `y = frac · ln 2 /
///   half_life` by its Taylor series in Q62 (`i128`, summed until the terms
///   vanish), rounded to Q32, then shifted right by `whole` with rounding
///   to nearest. Exactly `1 << 31` at one half-life, within one Q32 unit of
///   the true value elsewhere, monotone non-increasing in `dt_ms`, and 0
///   beyond 33 half-lives.
pub fn decay_factor_q32(dt_ms: i64, half_life_ms: i64) -> u64 {
    if dt_ms <= 0 {
        return ONE_Q32;
    }
    if half_life_ms <= 0 {
        return 0;
    }
    let whole = dt_ms / half_life_ms;
    let frac = dt_ms % half_life_ms;
    if whole >= 40 {
        return 0;
    }
    // y = frac/h · ln 2 < ln 2, in Q62: frac < h < 2^63 and LN2_Q62 < 2^62,
    // so the product stays below 2^125.
    let y = i128::from(frac) * LN2_Q62 / i128::from(half_life_ms);
    let mut sum = ONE_Q62;
    let mut term = ONE_Q62;
    let mut k: i128 = 1;
    while term != 0 && k < 64 {
        // |term| <= 1 and y < 1 in Q62: the product stays below 2^124.
        term = -(term * y / ONE_Q62) / k;
        sum += term;
        k += 1;
    }
    // e^-y lies in (0.5, 1]: round Q62 to Q32.
    let base = ((sum + (1 << 29)) >> 30) as u64;
    if whole == 0 {
        base
    } else {
        (base + (1u64 << (whole - 1))) >> whole
    }
}

/// `value · factor_q32 / 2^32`, rounded down (towards negative infinity).
///
/// Flooring makes a positive value strictly smaller whenever the factor is
/// below 1.0 and the product has a fractional part, so decayed evidence
/// always reaches zero and never sticks at a small remainder. For a factor
/// of at most 1.0 the result lies between 0 and `value` (a negative value can
/// end one unit further from zero; the model never decays negative values).
pub fn decay(value: Milli, factor_q32: u64) -> Milli {
    let product = (i128::from(value) * i128::from(factor_q32)) >> 32;
    // |product| <= |value| · factor / 2^32; saturate for factors above 1.0.
    i64::try_from(product).unwrap_or(if product < 0 { i64::MIN } else { i64::MAX })
}

/// A thousandths value as a decimal with exactly `decimals` digits (0 to 3)
/// after the point, rounded half away from zero, using integer arithmetic
/// only: `format_milli(62_345, 3)` is `"62.345"`, `format_milli(62_345, 1)`
/// is `"62.3"`, `format_milli(-500, 3)` is `"-0.500"`. Decimals above 3 are
/// treated as 3.
pub fn format_milli(value: Milli, decimals: u32) -> String {
    let decimals = decimals.min(3);
    let scale = 10i128.pow(3 - decimals);
    let magnitude = i128::from(value).abs();
    let rounded = (magnitude + scale / 2) / scale;
    let sign = if value < 0 && rounded != 0 { "-" } else { "" };
    if decimals == 0 {
        return format!("{sign}{rounded}");
    }
    let unit = 10i128.pow(decimals);
    let width = decimals as usize;
    format!("{sign}{}.{:0width$}", rounded / unit, rounded % unit)
}

/// A thousandths amount of evidence with an explicit sign: `+1.000`,
/// `-4.000` (ASCII minus), `+0.000`.
pub(crate) fn format_signed_milli(value: Milli) -> String {
    if value < 0 {
        format_milli(value, 3)
    } else {
        format!("+{}", format_milli(value, 3))
    }
}

/// Integer division rounding half up (towards positive infinity on ties),
/// for any signs; `den` must not be zero.
pub(crate) fn div_round(num: i128, den: i128) -> i128 {
    let (num, den) = if den < 0 { (-num, -den) } else { (num, den) };
    (2 * num + den).div_euclid(2 * den)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn one_half_life_is_exactly_one_half() {
        let f = decay_factor_q32(7 * DAY, 7 * DAY);
        assert!(f.abs_diff(1 << 31) <= 1, "{f}");
        assert_eq!(decay_factor_q32(14 * DAY, 7 * DAY), 1 << 30);
        assert_eq!(decay_factor_q32(1_000, 1_000), 1 << 31);
    }

    #[test]
    fn no_time_means_no_decay() {
        assert_eq!(decay_factor_q32(0, DAY), ONE_Q32);
        assert_eq!(decay_factor_q32(-5, DAY), ONE_Q32);
        assert_eq!(decay_factor_q32(i64::MIN, DAY), ONE_Q32);
    }

    #[test]
    fn monotone_non_increasing_in_dt() {
        let h = 7 * DAY;
        let mut previous = ONE_Q32;
        let mut dt = 0;
        while dt < 40 * h {
            let f = decay_factor_q32(dt, h);
            assert!(f <= previous, "dt {dt}: {f} > {previous}");
            previous = f;
            dt += h / 997;
        }
        let mut previous = ONE_Q32;
        for dt in 0..5_000 {
            let f = decay_factor_q32(dt, 1_000);
            assert!(f <= previous, "dt {dt}");
            previous = f;
        }
    }

    #[test]
    fn matches_f64_powf_within_1e_7_over_a_grid() {
        for &h in &[1_i64, 7, 1_000, 60_000, DAY, 7 * DAY, 365 * DAY] {
            for step in 0..=400_i64 {
                let dt = h * step / 37 + step;
                let expected = 2f64.powf(-(dt as f64) / h as f64);
                let got = decay_factor_q32(dt, h) as f64 / ONE_Q32 as f64;
                assert!(
                    (got - expected).abs() < 1e-7,
                    "dt {dt} h {h}: {got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn huge_dt_gives_zero() {
        assert_eq!(decay_factor_q32(i64::MAX, 7 * DAY), 0);
        assert_eq!(decay_factor_q32(40 * 7 * DAY, 7 * DAY), 0);
        assert_eq!(decay_factor_q32(i64::MAX, i64::MAX), 1 << 31);
        assert_eq!(decay_factor_q32(1, 0), 0);
    }

    #[test]
    fn decay_floors_and_reaches_zero() {
        assert_eq!(decay(3_000, 1 << 31), 1_500);
        assert_eq!(decay(3, 1 << 31), 1);
        assert_eq!(decay(1, ONE_Q32 - 1), 0);
        assert_eq!(decay(1_000, ONE_Q32), 1_000);
        assert_eq!(decay(-3, 1 << 31), -2);
        assert_eq!(decay(i64::MAX, ONE_Q32), i64::MAX);
    }

    #[test]
    fn formats_thousandths_without_floats() {
        assert_eq!(format_milli(62_345, 3), "62.345");
        assert_eq!(format_milli(62_345, 1), "62.3");
        assert_eq!(format_milli(62_350, 1), "62.4");
        assert_eq!(format_milli(60_000, 1), "60.0");
        assert_eq!(format_milli(-500, 3), "-0.500");
        assert_eq!(format_milli(-40, 1), "0.0");
        assert_eq!(format_milli(7, 3), "0.007");
        assert_eq!(format_milli(1_499, 0), "1");
        assert_eq!(format_milli(i64::MIN, 3), "-9223372036854775.808");
        assert_eq!(format_signed_milli(-4_000), "-4.000");
        assert_eq!(format_signed_milli(0), "+0.000");
    }

    #[test]
    fn div_round_rounds_half_up() {
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(-5, 2), -2);
        assert_eq!(div_round(4, 3), 1);
        assert_eq!(div_round(5, -2), -2);
    }
}
