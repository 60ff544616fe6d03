//! Multiple-testing corrections.

use crate::StatsError;

/// Benjamini–Hochberg q-values (false discovery rate adjusted p-values), in
/// the input order.
///
/// Formula (Benjamini & Hochberg 1995; identical to statsmodels
/// `multipletests(p, method="fdr_bh")[1]`): with `p_(1) <= … <= p_(m)` sorted,
///
/// ```text
/// q_(i) = min(1, min_{j >= i} m · p_(j) / j)
/// ```
///
/// so q-values are monotone in the p-values, tied p-values get equal
/// q-values, and `q >= p` (enforced exactly, against one-ulp rounding). An
/// empty input gives an empty output.
/// Errors: any p-value outside `[0, 1]` or NaN.
pub fn benjamini_hochberg(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    if let Some(&bad) = p_values.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(StatsError::InvalidProbability(bad));
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut q = vec![0.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        let raw = p_values[i] * m as f64 / (rank + 1) as f64;
        running = running.min(raw);
        // `m·p/j` can round one ulp below `p` when `j = m`; keep `q >= p` exact.
        q[i] = running.max(p_values[i]);
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bh_against_statsmodels() {
        // from statsmodels.stats.multitest import multipletests
        // p = [0.01, 0.04, 0.03, 0.04, 0.5, 0.001, 0.2, 0.04, 0.9, 0.0, 1.0, 0.012]
        // multipletests(p, method='fdr_bh')[1]
        let p = [
            0.01, 0.04, 0.03, 0.04, 0.5, 0.001, 0.2, 0.04, 0.9, 0.0, 1.0, 0.012,
        ];
        let expected = [
            0.036000000000000004,
            0.060000000000000005,
            0.060000000000000005,
            0.060000000000000005,
            0.6,
            0.006,
            0.26666666666666666,
            0.060000000000000005,
            0.9818181818181819,
            0.0,
            1.0,
            0.036000000000000004,
        ];
        let q = benjamini_hochberg(&p).unwrap();
        for (got, want) in q.iter().zip(expected) {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
        // multipletests([0.02, 0.02, 0.02], method='fdr_bh')[1] = [0.02, 0.02, 0.02]
        assert_eq!(benjamini_hochberg(&[0.02; 3]).unwrap(), vec![0.02; 3]);
    }

    #[test]
    fn bh_edges() {
        assert_eq!(benjamini_hochberg(&[]).unwrap(), Vec::<f64>::new());
        assert_eq!(benjamini_hochberg(&[0.3]).unwrap(), vec![0.3]);
        assert!(benjamini_hochberg(&[0.3, f64::NAN]).is_err());
        assert!(benjamini_hochberg(&[1.5]).is_err());
        assert!(benjamini_hochberg(&[-0.1]).is_err());
    }

    proptest! {
        #[test]
        fn bh_bounds_and_monotone(p in proptest::collection::vec(0.0f64..=1.0, 0..60)) {
            let q = benjamini_hochberg(&p).unwrap();
            prop_assert_eq!(q.len(), p.len());
            for i in 0..p.len() {
                prop_assert!(q[i] >= p[i] && q[i] <= 1.0);
                for j in 0..p.len() {
                    if p[i] <= p[j] {
                        prop_assert!(q[i] <= q[j]);
                    }
                }
            }
        }
    }
}
