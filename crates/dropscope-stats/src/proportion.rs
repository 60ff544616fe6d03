//! Single proportions and comparisons of two proportions.

use statrs::function::erf::{erfc, erfc_inv};

use crate::{check_confidence, StatsError};

/// Quantile function (inverse CDF) of the standard normal distribution.
///
/// Formula: `Φ⁻¹(p) = −√2 · erfc⁻¹(2p)` (statrs' `erfc_inv`, the same
/// expression statrs' `Normal::inverse_cdf` uses). `p = 0` gives `-∞` and
/// `p = 1` gives `+∞`; `p` outside `[0, 1]` or NaN is an error.
pub fn normal_quantile(p: f64) -> Result<f64, StatsError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(StatsError::InvalidProbability(p));
    }
    if p == 0.0 {
        return Ok(f64::NEG_INFINITY);
    }
    if p == 1.0 {
        return Ok(f64::INFINITY);
    }
    Ok(-std::f64::consts::SQRT_2 * erfc_inv(2.0 * p))
}

/// Two-sided critical value `z = Φ⁻¹(1 − (1 − confidence)/2)`, computed from the
/// lower tail for accuracy.
pub(crate) fn two_sided_z(confidence: f64) -> Result<f64, StatsError> {
    check_confidence(confidence)?;
    Ok(-normal_quantile((1.0 - confidence) / 2.0)?)
}

/// Two-sided p-value of a standard normal statistic: `2·(1 − Φ(|z|)) = erfc(|z|/√2)`.
pub(crate) fn normal_two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// Wilson score interval for a binomial proportion `successes / trials`.
///
/// Formula (Wilson 1927; Agresti & Coull 1998, eq. 2), with `p̂ = x/n` and
/// `z = Φ⁻¹(1 − α/2)`, `α = 1 − confidence`:
///
/// ```text
/// centre = (p̂ + z²/(2n)) / (1 + z²/n)
/// half   = z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/(4n²))
/// ```
///
/// Same as statsmodels `proportion_confint(x, n, alpha, method="wilson")`.
/// The bounds are clamped to `[0, 1]`, and the lower bound is exactly `0` when
/// `x = 0` and the upper exactly `1` when `x = n`, so the interval always
/// contains `p̂`.
///
/// Documented value: `trials = 0` gives `(0.0, 1.0)` (nothing is known).
/// Errors: `successes > trials`, or `confidence` not in `(0, 1)`.
pub fn wilson_interval(
    successes: u64,
    trials: u64,
    confidence: f64,
) -> Result<(f64, f64), StatsError> {
    let z = two_sided_z(confidence)?;
    if successes > trials {
        return Err(StatsError::CountExceedsTotal {
            count: successes,
            total: trials,
        });
    }
    if trials == 0 {
        return Ok((0.0, 1.0));
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let mut lo = (centre - half).clamp(0.0, 1.0).min(p);
    let mut hi = (centre + half).clamp(0.0, 1.0).max(p);
    if successes == 0 {
        lo = 0.0;
    }
    if successes == trials {
        hi = 1.0;
    }
    Ok((lo, hi))
}

/// Result of [`two_proportion_z_test`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZTest {
    /// The z statistic (positive when the first group's proportion is larger).
    pub z: f64,
    /// Two-sided p-value `2·(1 − Φ(|z|))`.
    pub p_value: f64,
}

/// Pooled two-proportion z test of `H0: p1 = p2` (e.g. "this breakdown segment
/// converts differently from the rest").
///
/// Formula (e.g. Agresti, *Categorical Data Analysis*, §3.1.3; statsmodels
/// `proportions_ztest([x1, x2], [n1, n2])` with its defaults `value=None`,
/// `prop_var=False`):
///
/// ```text
/// p̄ = (x1 + x2) / (n1 + n2)
/// z = (x1/n1 − x2/n2) / sqrt(p̄(1 − p̄)(1/n1 + 1/n2))
/// p = 2·(1 − Φ(|z|))
/// ```
///
/// Documented value: when `p̄` is 0 or 1 (both groups all failures or all
/// successes) the proportions are identical and the result is `z = 0, p = 1`
/// (statsmodels returns NaN there).
/// Errors: `n1 = 0` or `n2 = 0`, or a count larger than its total.
pub fn two_proportion_z_test(x1: u64, n1: u64, x2: u64, n2: u64) -> Result<ZTest, StatsError> {
    for (x, n) in [(x1, n1), (x2, n2)] {
        if n == 0 {
            return Err(StatsError::ZeroTotal("group size"));
        }
        if x > n {
            return Err(StatsError::CountExceedsTotal { count: x, total: n });
        }
    }
    let (x1f, n1f, x2f, n2f) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1f + x2f) / (n1f + n2f);
    let var = pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f);
    let diff = x1f / n1f - x2f / n2f;
    if var.is_nan() || var <= 0.0 {
        return Ok(ZTest {
            z: 0.0,
            p_value: 1.0,
        });
    }
    let z = diff / var.sqrt();
    Ok(ZTest {
        z,
        p_value: normal_two_sided_p(z),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn wilson_contains_point_estimate(n in 0u64..1_000_000_000, frac in 0.0f64..=1.0, conf in 0.01f64..0.9999) {
            let x = ((n as f64) * frac) as u64;
            let (lo, hi) = wilson_interval(x, n, conf).unwrap();
            let p = if n == 0 { 0.5 } else { x as f64 / n as f64 };
            prop_assert!(0.0 <= lo && lo <= p && p <= hi && hi <= 1.0, "{} {} {} {}", lo, p, hi, n);
        }

        #[test]
        fn z_test_p_in_range(x1 in 0u64..1000, n1 in 1u64..1000, x2 in 0u64..1000, n2 in 1u64..1000) {
            if let Ok(t) = two_proportion_z_test(x1, n1, x2, n2) {
                prop_assert!((0.0..=1.0).contains(&t.p_value) && t.z.is_finite());
            } else {
                prop_assert!(x1 > n1 || x2 > n2);
            }
        }
    }

    fn close(a: f64, b: f64, rtol: f64) -> bool {
        (a - b).abs() <= rtol * b.abs().max(1e-300)
    }

    #[test]
    fn normal_quantile_reference() {
        // scipy.stats.norm.ppf(0.975) = 1.959963984540054
        assert!(close(
            normal_quantile(0.975).unwrap(),
            1.959963984540054,
            1e-13
        ));
        // scipy.stats.norm.ppf(1e-10) = -6.361340902404056
        assert!(close(
            normal_quantile(1e-10).unwrap(),
            -6.361340902404056,
            1e-12
        ));
        assert_eq!(normal_quantile(0.5).unwrap(), 0.0);
        assert_eq!(normal_quantile(0.0).unwrap(), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0).unwrap(), f64::INFINITY);
        for p in [5e-324, f64::MIN_POSITIVE, 1.0 - f64::EPSILON] {
            assert!(!normal_quantile(p).unwrap().is_nan());
        }
        assert!(normal_quantile(1.5).is_err());
        assert!(normal_quantile(f64::NAN).is_err());
    }

    #[test]
    fn wilson_reference() {
        // from statsmodels.stats.proportion import proportion_confint
        let cases: &[(u64, u64, f64, f64, f64)] = &[
            // proportion_confint(40, 100, alpha=0.05, method='wilson')
            (40, 100, 0.95, 0.30940128643245896, 0.49799741320893826),
            // proportion_confint(0, 10, alpha=0.05, method='wilson')
            (0, 10, 0.95, 0.0, 0.27753279986288926),
            // proportion_confint(10, 10, alpha=0.05, method='wilson')
            (10, 10, 0.95, 0.7224672001371106, 1.0),
            // proportion_confint(1, 3, alpha=0.10, method='wilson')
            (1, 3, 0.90, 0.07826572633372836, 0.746466131718776),
            // proportion_confint(123456, 1000000, alpha=0.01, method='wilson')
            (
                123456,
                1000000,
                0.99,
                0.12261115289079927,
                0.12430584373706008,
            ),
        ];
        for &(x, n, conf, lo, hi) in cases {
            let (l, h) = wilson_interval(x, n, conf).unwrap();
            assert!((l - lo).abs() < 1e-12, "{x}/{n}: {l} vs {lo}");
            assert!((h - hi).abs() < 1e-12, "{x}/{n}: {h} vs {hi}");
        }
    }

    #[test]
    fn wilson_edge_cases() {
        assert_eq!(wilson_interval(0, 0, 0.95).unwrap(), (0.0, 1.0));
        assert!(matches!(
            wilson_interval(5, 4, 0.95),
            Err(StatsError::CountExceedsTotal { count: 5, total: 4 })
        ));
        assert!(wilson_interval(1, 4, 1.0).is_err());
        assert!(wilson_interval(1, 4, 0.0).is_err());
        assert!(wilson_interval(1, 4, f64::NAN).is_err());
        let (l, h) = wilson_interval(u64::MAX, u64::MAX, 0.95).unwrap();
        assert!(l > 0.999 && h == 1.0);
    }

    #[test]
    fn z_test_reference() {
        // from statsmodels.stats.proportion import proportions_ztest
        let cases: &[(u64, u64, u64, u64, f64, f64)] = &[
            // proportions_ztest([5, 12], [83, 99])
            (5, 83, 12, 99, -1.4078304151258787, 0.15918129181156992),
            // proportions_ztest([300, 250], [1000, 1000])
            (
                300,
                1000,
                250,
                1000,
                2.503915429180671,
                0.012282738972377402,
            ),
            // proportions_ztest([0, 7], [50, 60])
            (0, 50, 7, 60, -2.495951414347477, 0.012561980610043356),
            // proportions_ztest([4500, 40000], [10000, 100000])
            (
                4500,
                10000,
                40000,
                100000,
                9.713275153736587,
                2.6469238548280556e-22,
            ),
        ];
        for &(x1, n1, x2, n2, z, p) in cases {
            let t = two_proportion_z_test(x1, n1, x2, n2).unwrap();
            assert!(close(t.z, z, 1e-10), "{:?} vs {z}", t.z);
            assert!(close(t.p_value, p, 1e-8), "{:?} vs {p}", t.p_value);
        }
    }

    #[test]
    fn z_test_edge_cases() {
        assert_eq!(
            two_proportion_z_test(0, 10, 0, 20).unwrap(),
            ZTest {
                z: 0.0,
                p_value: 1.0
            }
        );
        assert_eq!(two_proportion_z_test(10, 10, 20, 20).unwrap().p_value, 1.0);
        assert!(two_proportion_z_test(1, 0, 1, 2).is_err());
        assert!(two_proportion_z_test(3, 2, 1, 2).is_err());
    }
}
