//! 2x2 contingency tables: odds ratios, Fisher's exact test, Woolf intervals.

use statrs::function::factorial::ln_factorial;
use statrs::function::gamma::ln_gamma;

use crate::proportion::two_sided_z;
use crate::StatsError;

/// PostHog's correlation odds ratio with a +1 prior on every cell.
///
/// Formula (PostHog `funnel_correlation_query_runner.py`, dropscope
/// SEMANTICS §17), with `s` = successes having the signal, `f` = failures
/// having it, `S` = total successes, `F` = total failures:
///
/// ```text
/// odds = ((s + 1)(F − f + 1)) / ((S − s + 1)(f + 1))
/// ```
///
/// Always finite and positive for valid input. Errors: `s > S` or `f > F`
/// (the reference would divide by zero or go negative there).
pub fn odds_ratio_prior(
    s: u64,
    f: u64,
    total_successes: u64,
    total_failures: u64,
) -> Result<f64, StatsError> {
    if s > total_successes {
        return Err(StatsError::CountExceedsTotal {
            count: s,
            total: total_successes,
        });
    }
    if f > total_failures {
        return Err(StatsError::CountExceedsTotal {
            count: f,
            total: total_failures,
        });
    }
    let num = (s as f64 + 1.0) * ((total_failures - f) as f64 + 1.0);
    let den = ((total_successes - s) as f64 + 1.0) * (f as f64 + 1.0);
    Ok(num / den)
}

/// Relative tolerance for "as or less probable than the observed table":
/// a table counts when `P(table) <= P(observed) · (1 + 1e-7)`. This is R's
/// `fisher.test` tolerance (`relErr = 1 + 10^-7`); scipy uses `1 + 1e-14`.
const FISHER_REL_TOL: f64 = 1e-7;

/// Most terms summed per tail; only reachable for totals far beyond 10^12
/// (the tails are summed outward until the remainder is below 1e-17 of the
/// sum, which takes about ten standard deviations of the hypergeometric).
const FISHER_MAX_TERMS: u64 = 1 << 26;

/// `ln(x!)` for a non-negative integer given as `u128` (exact table up to 170,
/// `ln Γ(x + 1)` above).
fn ln_fact(x: u128) -> f64 {
    if x <= 170 {
        ln_factorial(x as u64)
    } else {
        ln_gamma(x as f64 + 1.0)
    }
}

/// The hypergeometric distribution of cell `a` given the margins of a 2x2 table.
struct Hypergeom {
    r1: u128,
    r2: u128,
    c1: u128,
    lo: u128,
    hi: u128,
    /// `ln(r1! r2! c1! c2! / n!)`.
    ln_const: f64,
}

impl Hypergeom {
    fn new(a: u64, b: u64, c: u64, d: u64) -> Self {
        let (a, b, c, d) = (a as u128, b as u128, c as u128, d as u128);
        let r1 = a + b;
        let r2 = c + d;
        let c1 = a + c;
        let c2 = b + d;
        let n = r1 + r2;
        let lo = c1.saturating_sub(r2);
        let hi = r1.min(c1);
        let ln_const = ln_fact(r1) + ln_fact(r2) + ln_fact(c1) + ln_fact(c2) - ln_fact(n);
        Self {
            r1,
            r2,
            c1,
            lo,
            hi,
            ln_const,
        }
    }

    /// Cells `(a, b, c, d)` of the table with `a = x` (as f64).
    fn cells(&self, x: u128) -> (f64, f64, f64, f64) {
        (
            x as f64,
            (self.r1 - x) as f64,
            (self.c1 - x) as f64,
            (self.r2 + x - self.c1) as f64,
        )
    }

    /// The part of `ln P(a = x)` that depends on `x`: `−ln(a! b! c! d!)`.
    fn ln_kernel(&self, x: u128) -> f64 {
        -(ln_fact(x) + ln_fact(self.r1 - x) + ln_fact(self.c1 - x) + ln_fact(self.r2 + x - self.c1))
    }

    /// The mode `⌊(r1 + 1)(c1 + 1)/(n + 2)⌋`, clamped to the support.
    fn mode(&self) -> u128 {
        let n = self.r1 + self.r2;
        let m = match (self.r1 + 1).checked_mul(self.c1 + 1) {
            Some(p) => p / (n + 2),
            None => ((self.r1 as f64 + 1.0) * (self.c1 as f64 + 1.0) / (n as f64 + 2.0)) as u128,
        };
        m.clamp(self.lo, self.hi)
    }

    /// `ln Σ_{x ≤ from} P(x) / P(from)` summed downward from `from` (left of the mode).
    fn ln_left_tail_rel(&self, from: u128) -> f64 {
        let (mut a, mut b, mut c, mut d) = self.cells(from);
        let (mut sum, mut term) = (1.0f64, 1.0f64);
        let steps = (from - self.lo).min(FISHER_MAX_TERMS as u128);
        for _ in 0..steps {
            // P(x − 1) / P(x) = a·d / ((b + 1)(c + 1)); non-increasing as x decreases.
            let r = a * d / ((b + 1.0) * (c + 1.0));
            term *= r;
            sum += term;
            a -= 1.0;
            d -= 1.0;
            b += 1.0;
            c += 1.0;
            if r < 1.0 && term * r / (1.0 - r) <= sum * 1e-17 {
                break;
            }
        }
        sum.ln()
    }

    /// `ln Σ_{x ≥ from} P(x) / P(from)` summed upward from `from` (right of the mode).
    fn ln_right_tail_rel(&self, from: u128) -> f64 {
        let (mut a, mut b, mut c, mut d) = self.cells(from);
        let (mut sum, mut term) = (1.0f64, 1.0f64);
        let steps = (self.hi - from).min(FISHER_MAX_TERMS as u128);
        for _ in 0..steps {
            // P(x + 1) / P(x) = b·c / ((a + 1)(d + 1)); non-increasing as x increases.
            let r = b * c / ((a + 1.0) * (d + 1.0));
            term *= r;
            sum += term;
            a += 1.0;
            d += 1.0;
            b -= 1.0;
            c -= 1.0;
            if r < 1.0 && term * r / (1.0 - r) <= sum * 1e-17 {
                break;
            }
        }
        sum.ln()
    }
}

/// Natural log of [`fisher_exact_two_sided`]'s p-value; useful to rank rows
/// whose p-value underflows `f64` (below about 1e-308). Always `<= 0`;
/// `0.0` means `p = 1`.
pub fn fisher_exact_two_sided_ln(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let h = Hypergeom::new(a, b, c, d);
    if h.lo == h.hi {
        // A zero margin: only one table is possible.
        return 0.0;
    }
    let x_obs = a as u128;
    let threshold = h.ln_kernel(x_obs) + FISHER_REL_TOL.ln_1p();
    let mode = h.mode();
    if h.ln_kernel(mode) <= threshold {
        return 0.0;
    }
    let qualifies = |x: u128| h.ln_kernel(x) <= threshold;

    // The pmf is unimodal, so the qualifying tables are x <= left and x >= right.
    // Largest x in [lo, mode) that qualifies (the kernel is non-decreasing there).
    let left = if qualifies(h.lo) {
        let (mut ok, mut bad) = (h.lo, mode);
        while bad - ok > 1 {
            let mid = ok + (bad - ok) / 2;
            if qualifies(mid) {
                ok = mid;
            } else {
                bad = mid;
            }
        }
        Some(ok)
    } else {
        None
    };
    // Smallest x in (mode, hi] that qualifies (the kernel is non-increasing there).
    let right = if qualifies(h.hi) {
        let (mut bad, mut ok) = (mode, h.hi);
        while ok - bad > 1 {
            let mid = bad + (ok - bad) / 2;
            if qualifies(mid) {
                ok = mid;
            } else {
                bad = mid;
            }
        }
        Some(ok)
    } else {
        None
    };

    let ln_left = left.map(|x| h.ln_const + h.ln_kernel(x) + h.ln_left_tail_rel(x));
    let ln_right = right.map(|x| h.ln_const + h.ln_kernel(x) + h.ln_right_tail_rel(x));
    let ln_p = match (ln_left, ln_right) {
        (Some(l), Some(r)) => {
            let m = l.max(r);
            m + ((l - m).exp() + (r - m).exp()).ln()
        }
        (Some(v), None) | (None, Some(v)) => v,
        // Unreachable: the observed table itself always qualifies.
        (None, None) => 0.0,
    };
    if ln_p.is_nan() {
        0.0
    } else {
        ln_p.min(0.0)
    }
}

/// Exact two-sided p-value of Fisher's test for the 2x2 table `[[a, b], [c, d]]`.
///
/// Definition (Fisher 1935; as scipy `stats.fisher_exact(table,
/// alternative="two-sided")` and R `fisher.test`): with all margins fixed, cell
/// `a` is hypergeometric,
///
/// ```text
/// P(a = x) = C(a+b, x) · C(c+d, a+c−x) / C(n, a+c)
/// p = Σ P(a = x) over every x with P(a = x) <= P(a = a_obs) · (1 + 1e-7)
/// ```
///
/// The relative tolerance `1 + 1e-7` is R's (scipy uses `1 + 1e-14`); results
/// differ from scipy only when some other table's probability is within 1e-7
/// (relative) of the observed one's.
///
/// Computation: log-factorials (`ln Γ`) for the two tail boundaries, found by
/// binary search on each side of the mode; each tail is then summed outward
/// with the exact term ratio `P(x±1)/P(x)` and stops once the (geometric)
/// bound on the remainder is below 1e-17 of the sum. Cost is O(log n) `ln Γ`
/// calls plus a few standard deviations' worth of multiplications, so totals
/// of 10^7 take microseconds. Relative accuracy is about 1e-15·ln(n!) (≈ 1e-7
/// at n = 10^7, limited by cancellation in the log-factorials).
///
/// Documented values: any table with an empty row or column (including all
/// zeros) gives `1.0`. P-values below ~1e-308 underflow to `0.0`; use
/// [`fisher_exact_two_sided_ln`] to rank those.
pub fn fisher_exact_two_sided(a: u64, b: u64, c: u64, d: u64) -> f64 {
    fisher_exact_two_sided_ln(a, b, c, d).exp().clamp(0.0, 1.0)
}

/// An odds ratio with its confidence interval, from [`odds_ratio_interval_woolf`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OddsRatioInterval {
    /// The sample odds ratio `a·d / (b·c)` of the table the interval was
    /// computed on (the +0.5-corrected table when `corrected` is true).
    pub odds_ratio: f64,
    /// Lower confidence bound.
    pub lower: f64,
    /// Upper confidence bound.
    pub upper: f64,
    /// Whether 0.5 was added to every cell because some cell was zero.
    pub corrected: bool,
}

/// Woolf (logit) confidence interval for the odds ratio of `[[a, b], [c, d]]`.
///
/// Formula (Woolf 1955; Agresti, *Categorical Data Analysis*, §3.1.1), with the
/// Haldane–Anscombe correction (add 0.5 to every cell) applied when any cell
/// is zero:
///
/// ```text
/// OR = a·d / (b·c)
/// SE(ln OR) = sqrt(1/a + 1/b + 1/c + 1/d)
/// CI = exp(ln OR ± z·SE),  z = Φ⁻¹(1 − (1 − confidence)/2)
/// ```
///
/// The returned `odds_ratio` is the one the interval is centred on (so it is
/// the corrected table's when `corrected` is true); it is *not* PostHog's
/// +1-prior odds ratio ([`odds_ratio_prior`]). Always finite and positive: an
/// all-zero table gives `OR = 1` with a wide interval. Matches statsmodels
/// `Table2x2(np.array(t) + 0.5 * (0 in t)).oddsratio_confint(alpha)`.
///
/// Errors: `confidence` not in `(0, 1)`.
pub fn odds_ratio_interval_woolf(
    a: u64,
    b: u64,
    c: u64,
    d: u64,
    confidence: f64,
) -> Result<OddsRatioInterval, StatsError> {
    let z = two_sided_z(confidence)?;
    let corrected = a == 0 || b == 0 || c == 0 || d == 0;
    let k = if corrected { 0.5 } else { 0.0 };
    let (a, b, c, d) = (a as f64 + k, b as f64 + k, c as f64 + k, d as f64 + k);
    let ln_or = a.ln() + d.ln() - b.ln() - c.ln();
    let se = (1.0 / a + 1.0 / b + 1.0 / c + 1.0 / d).sqrt();
    Ok(OddsRatioInterval {
        odds_ratio: ln_or.exp(),
        lower: (ln_or - z * se).exp(),
        upper: (ln_or + z * se).exp(),
        corrected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rel_err(a: f64, b: f64) -> f64 {
        if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs()
        }
    }

    #[test]
    fn odds_ratio_prior_formula() {
        // ((s+1)(F-f+1)) / ((S-s+1)(f+1)) with s=30, f=10, S=100, F=200:
        // (31 * 191) / (71 * 11) = 5921 / 781
        assert_eq!(odds_ratio_prior(30, 10, 100, 200).unwrap(), 5921.0 / 781.0);
        assert_eq!(odds_ratio_prior(0, 0, 0, 0).unwrap(), 1.0);
        assert_eq!(odds_ratio_prior(5, 0, 5, 0).unwrap(), 6.0);
        assert!(odds_ratio_prior(6, 0, 5, 0).is_err());
        assert!(odds_ratio_prior(0, 1, 5, 0).is_err());
    }

    /// (table, p) with p = scipy.stats.fisher_exact([[a, b], [c, d]]).pvalue
    /// (scipy 1.17.1, alternative='two-sided').
    const FISHER_REFERENCE: &[([u64; 4], f64)] = &[
        // fisher_exact([[8, 2], [1, 5]]).pvalue
        ([8, 2, 1, 5], 0.034965034965034975),
        // fisher_exact([[1, 9], [11, 3]]).pvalue
        ([1, 9, 11, 3], 0.0027594561852200836),
        // fisher_exact([[0, 5], [5, 0]]).pvalue
        ([0, 5, 5, 0], 0.007936507936507938),
        // fisher_exact([[0, 10], [3, 7]]).pvalue
        ([0, 10, 3, 7], 0.21052631578947367),
        // fisher_exact([[3, 0], [0, 0]]).pvalue
        ([3, 0, 0, 0], 1.0),
        // fisher_exact([[10, 10], [10, 10]]).pvalue
        ([10, 10, 10, 10], 1.0),
        // fisher_exact([[7, 12], [12, 7]]).pvalue
        ([7, 12, 12, 7], 0.1938759496258166),
        // fisher_exact([[5000, 4000], [3000, 6000]]).pvalue
        ([5000, 4000, 3000, 6000], 2.7682192582901084e-199),
        // fisher_exact([[100, 2], [3, 100]]).pvalue
        ([100, 2, 3, 100], 3.287270479204266e-52),
        // fisher_exact([[30, 10], [70, 190]]).pvalue
        ([30, 10, 70, 190], 7.617345913971935e-09),
        // fisher_exact([[1000, 50000], [1100, 49000]]).pvalue
        ([1000, 50000, 1100, 49000], 0.009247936987077047),
        // fisher_exact([[12345, 4000000], [13000, 4100000]]).pvalue
        ([12345, 4000000, 13000, 4100000], 0.031917390938254714),
        // fisher_exact([[2, 3000000], [40, 3000000]]).pvalue
        ([2, 3000000, 40, 3000000], 4.1104332980375844e-10),
    ];

    #[test]
    fn fisher_against_scipy() {
        for &(t, p) in FISHER_REFERENCE {
            let got = fisher_exact_two_sided(t[0], t[1], t[2], t[3]);
            let tol = if t.iter().sum::<u64>() > 100_000 {
                1e-6
            } else {
                1e-10
            };
            assert!(rel_err(got, p) < tol, "{t:?}: {got:e} vs {p:e}");
        }
    }

    #[test]
    fn fisher_symmetries_and_edges() {
        // Transposing or swapping rows/columns leaves the two-sided p unchanged.
        for &(t, _) in FISHER_REFERENCE {
            let [a, b, c, d] = t;
            let p = fisher_exact_two_sided(a, b, c, d);
            for q in [
                fisher_exact_two_sided(a, c, b, d),
                fisher_exact_two_sided(b, a, d, c),
                fisher_exact_two_sided(c, d, a, b),
            ] {
                // ln Γ cancellation limits large tables to ~1e-7 relative.
                let tol = if t.iter().sum::<u64>() > 100_000 {
                    1e-6
                } else {
                    1e-9
                };
                assert!(rel_err(q, p) < tol, "{t:?}: {q:e} vs {p:e}");
            }
        }
        assert_eq!(fisher_exact_two_sided(0, 0, 0, 0), 1.0);
        assert_eq!(fisher_exact_two_sided(0, 0, 5, 7), 1.0);
        assert_eq!(fisher_exact_two_sided(0, 5, 0, 7), 1.0);
        // Underflow is 0.0, while the log stays finite and usable for ranking.
        let ln_p = fisher_exact_two_sided_ln(1_000_000, 0, 0, 1_000_000);
        assert!(ln_p.is_finite() && ln_p < -1e5);
        assert_eq!(fisher_exact_two_sided(1_000_000, 0, 0, 1_000_000), 0.0);
        // Enormous counts neither panic nor overflow.
        let p = fisher_exact_two_sided(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert!((0.0..=1.0).contains(&p));
        let p = fisher_exact_two_sided(u64::MAX, 0, 0, u64::MAX);
        assert!((0.0..=1.0).contains(&p));
    }

    #[test]
    fn woolf_against_statsmodels() {
        // import numpy as np; from statsmodels.stats.contingency_tables import Table2x2
        // t = np.array([[30, 10], [70, 190]]); Table2x2(t).oddsratio, Table2x2(t).oddsratio_confint(0.05)
        let r = odds_ratio_interval_woolf(30, 10, 70, 190, 0.95).unwrap();
        assert!(!r.corrected);
        assert!(rel_err(r.odds_ratio, 8.142857142857142) < 1e-12);
        assert!(rel_err(r.lower, 3.7840398389320264) < 1e-10);
        assert!(rel_err(r.upper, 17.522575150184778) < 1e-10);
        // t = np.array([[0, 10], [3, 7]]) + 0.5; Table2x2(t).oddsratio, Table2x2(t).oddsratio_confint(0.10)
        let r = odds_ratio_interval_woolf(0, 10, 3, 7, 0.90).unwrap();
        assert!(r.corrected);
        assert!(rel_err(r.odds_ratio, 0.10204081632653061) < 1e-12);
        assert!(rel_err(r.lower, 0.007517328691986684) < 1e-10);
        assert!(rel_err(r.upper, 1.3851101399469317) < 1e-10);
        // All zeros: OR = 1, symmetric interval in log space.
        let r = odds_ratio_interval_woolf(0, 0, 0, 0, 0.95).unwrap();
        assert_eq!(r.odds_ratio, 1.0);
        assert!((r.lower * r.upper - 1.0).abs() < 1e-12);
        assert!(odds_ratio_interval_woolf(1, 1, 1, 1, 1.0).is_err());
    }

    proptest! {
        #[test]
        fn fisher_p_is_a_probability(a in 0u64..300, b in 0u64..300, c in 0u64..300, d in 0u64..300) {
            let p = fisher_exact_two_sided(a, b, c, d);
            prop_assert!((0.0..=1.0).contains(&p));
        }

        #[test]
        fn fisher_matches_brute_force(a in 0u64..40, b in 0u64..40, c in 0u64..40, d in 0u64..40) {
            // Direct summation over all tables with the same margins.
            let h = Hypergeom::new(a, b, c, d);
            let pmf = |x: u128| (h.ln_const + h.ln_kernel(x)).exp();
            let p_obs = pmf(a as u128);
            let brute: f64 = (h.lo..=h.hi)
                .map(pmf)
                .filter(|&p| p <= p_obs * (1.0 + FISHER_REL_TOL))
                .sum();
            let p = fisher_exact_two_sided(a, b, c, d);
            prop_assert!((p - brute.min(1.0)).abs() < 1e-12, "{} vs {}", p, brute);
        }

        #[test]
        fn fisher_large_p_in_range(a in 0u64..20_000_000, b in 0u64..20_000_000, c in 0u64..20_000_000, d in 0u64..20_000_000) {
            let p = fisher_exact_two_sided(a, b, c, d);
            prop_assert!((0.0..=1.0).contains(&p));
        }
    }
}
