//! Descriptive statistics for conversion times.

use crate::StatsError;

/// Arithmetic mean of the non-NaN values; `None` when there are none.
///
/// Formula: `Σ xᵢ / n` over the values that are not NaN (infinities are kept
/// and propagate as usual).
pub fn mean(values: &[f64]) -> Option<f64> {
    let (sum, n) = values
        .iter()
        .filter(|v| !v.is_nan())
        .fold((0.0f64, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Moves NaNs to the end of `values` and returns how many values are not NaN.
fn partition_nan(values: &mut [f64]) -> usize {
    let mut n = 0;
    for i in 0..values.len() {
        if !values[i].is_nan() {
            values.swap(i, n);
            n += 1;
        }
    }
    n
}

/// The `k`-th smallest (0-based) of `values`, which must be NaN-free with `k < len`.
fn select(values: &mut [f64], k: usize) -> f64 {
    *values.select_nth_unstable_by(k, f64::total_cmp).1
}

/// Quantile with linear interpolation between order statistics (numpy's
/// default `np.quantile(x, q)`, Hyndman & Fan type 7), ignoring NaNs.
///
/// Formula: with the `n` sorted values `x_(0) <= … <= x_(n−1)`,
/// `h = q·(n − 1)`, the result is `x_(⌊h⌋) + (h − ⌊h⌋)·(x_(⌊h⌋+1) − x_(⌊h⌋))`.
///
/// Reorders `values` (selection in O(n), no full sort). Returns `Ok(None)`
/// when there are no non-NaN values. Errors: `q` outside `[0, 1]` or NaN.
pub fn quantile_interpolated(values: &mut [f64], q: f64) -> Result<Option<f64>, StatsError> {
    if !(0.0..=1.0).contains(&q) {
        return Err(StatsError::InvalidProbability(q));
    }
    let n = partition_nan(values);
    if n == 0 {
        return Ok(None);
    }
    let values = &mut values[..n];
    let h = q * (n - 1) as f64;
    let lo = (h.floor() as usize).min(n - 1);
    let frac = h - lo as f64;
    let x_lo = select(values, lo);
    if frac == 0.0 || lo + 1 >= n {
        return Ok(Some(x_lo));
    }
    // After selection, everything right of `lo` is >= x_lo; its minimum is x_(lo+1).
    let x_hi = values[lo + 1..]
        .iter()
        .copied()
        .min_by(f64::total_cmp)
        .unwrap_or(x_lo);
    Ok(Some(x_lo + frac * (x_hi - x_lo)))
}

/// Median with interpolation: the middle value, or the mean of the two middle
/// values for an even count. Ignores NaNs; `None` when there are no values.
///
/// Same as numpy `np.median` and ClickHouse `median` / `quantile(0.5)` on
/// exact data (`[3600, 7200] → 5400`, `[1, 2, 3] → 2`); it is
/// [`quantile_interpolated`] at `q = 0.5`. Reorders `values`.
pub fn median_interpolated(values: &mut [f64]) -> Option<f64> {
    quantile_interpolated(values, 0.5).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_match_numpy() {
        // np.median([3600, 7200]) = 5400.0
        assert_eq!(median_interpolated(&mut [3600.0, 7200.0]), Some(5400.0));
        // np.median([1, 2, 3]) = 2.0
        assert_eq!(median_interpolated(&mut [3.0, 1.0, 2.0]), Some(2.0));
        // np.median([5, 1, 4, 2, 9, 7]) = 4.5
        assert_eq!(
            median_interpolated(&mut [5.0, 1.0, 4.0, 2.0, 9.0, 7.0]),
            Some(4.5)
        );
        assert_eq!(median_interpolated(&mut []), None);
        assert_eq!(median_interpolated(&mut [f64::NAN]), None);
        assert_eq!(median_interpolated(&mut [f64::NAN, 4.0, 2.0]), Some(3.0));
        assert_eq!(median_interpolated(&mut [7.0]), Some(7.0));
    }

    #[test]
    fn quantiles_match_numpy() {
        // np.quantile([5, 1, 4, 2, 9, 7], 0.9) = 8.0
        let q = quantile_interpolated(&mut [5.0, 1.0, 4.0, 2.0, 9.0, 7.0], 0.9).unwrap();
        assert!((q.unwrap() - 8.0).abs() < 1e-12);
        // np.quantile([1.0, 2, 3, 4], 0.25) = 1.75
        let q = quantile_interpolated(&mut [4.0, 3.0, 2.0, 1.0], 0.25).unwrap();
        assert!((q.unwrap() - 1.75).abs() < 1e-12);
        assert_eq!(
            quantile_interpolated(&mut [4.0, 3.0], 1.0).unwrap(),
            Some(4.0)
        );
        assert_eq!(
            quantile_interpolated(&mut [4.0, 3.0], 0.0).unwrap(),
            Some(3.0)
        );
        assert!(quantile_interpolated(&mut [1.0], 1.5).is_err());
    }

    #[test]
    fn means() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[f64::NAN]), None);
        assert_eq!(mean(&[1.0, 2.0, f64::NAN, 6.0]), Some(3.0));
    }
}
