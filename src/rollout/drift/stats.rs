//! The statistics drift is judged by: what PSI chance alone gives between two samples
//! (a χ² quantile), the normal quantile under it, and the quadratic form of the paired
//! Stuart–Maxwell test.

/// `dᵀ V⁻ d` for a symmetric positive semi-definite `V` (a generalized inverse: Gauss–
/// Jordan elimination that skips the directions `V` does not span), and the rank used,
/// which is the test's degrees of freedom.
pub(super) fn quadratic_form(mut v: Vec<Vec<f64>>, mut d: Vec<f64>) -> (f64, usize) {
    let k = d.len();
    let original = d.clone();
    let mut pivots: Vec<(usize, usize)> = Vec::new();
    for col in 0..k {
        let free = (0..k).filter(|r| !pivots.iter().any(|(used, _)| used == r));
        let Some(row) = free.max_by(|a, b| v[*a][col].abs().total_cmp(&v[*b][col].abs())) else { break };
        if v[row][col].abs() < 1e-9 {
            continue;
        }
        for r in (0..k).filter(|r| *r != row) {
            let f = v[r][col] / v[row][col];
            if f != 0.0 {
                let pivot_row = v[row].clone();
                for (cell, p) in v[r].iter_mut().zip(&pivot_row) {
                    *cell -= f * p;
                }
                d[r] -= f * d[row];
            }
        }
        pivots.push((row, col));
    }
    let mut solution = vec![0.0; k];
    for &(row, col) in &pivots {
        solution[col] = d[row] / v[row][col];
    }
    let statistic: f64 = original.iter().zip(&solution).map(|(a, b)| a * b).sum();
    (statistic.max(0.0), pivots.len())
}

/// The PSI over `bins` bins that chance alone exceeds with probability `alpha` between
/// independent samples of `n_s` and `n_c` values of one distribution: the χ² quantile
/// with `bins − 1` degrees of freedom, scaled by `1/n_s + 1/n_c`.
pub fn chance_psi(bins: usize, n_s: f64, n_c: f64, alpha: f64) -> f64 {
    if bins < 2 || n_s <= 0.0 || n_c <= 0.0 {
        return 0.0;
    }
    chi_square_quantile(bins - 1, 1.0 - alpha) * (1.0 / n_s + 1.0 / n_c)
}

/// The χ² quantile with `df` degrees of freedom at `p` (Wilson and Hilferty's cube-root
/// approximation: within a few percent in the tail it is used at).
pub fn chi_square_quantile(df: usize, p: f64) -> f64 {
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    (k * (1.0 - a + normal_quantile(p) * a.sqrt()).powi(3)).max(0.0)
}

/// The standard normal quantile (Acklam's rational approximation, relative error below
/// 1.2e-9), for `p` in (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -39.696_830_286_653_76,
        220.946_098_424_520_5,
        -275.928_510_446_968_7,
        138.357_751_867_269,
        -30.664_798_066_147_16,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -54.476_098_798_224_06,
        161.585_836_858_040_9,
        -155.698_979_859_886_6,
        66.801_311_887_719_72,
        -13.280_681_552_885_72,
    ];
    const C: [f64; 6] = [
        -0.007_784_894_002_430_293,
        -0.322_396_458_041_136_5,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [0.007_784_695_709_041_462, 0.322_467_129_070_039_8, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}
