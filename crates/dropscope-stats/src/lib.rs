//! Statistics used by dropscope's funnel and correlation analysis.
//!
//! Everything here is a pure function over plain numbers: no I/O, no global
//! state, and no panics on any input. Inputs that cannot be meaningful (a count
//! larger than its total, a confidence level outside `(0, 1)`, NaN values, ...)
//! produce a [`StatsError`]; degenerate but valid inputs (zero trials, zero
//! cells, empty tables) produce a documented value instead.
//!
//! | area | items |
//! | --- | --- |
//! | proportions | [`wilson_interval`], [`two_proportion_z_test`], [`normal_quantile`] |
//! | 2x2 tables | [`odds_ratio_prior`], [`fisher_exact_two_sided`], [`fisher_exact_two_sided_ln`], [`odds_ratio_interval_woolf`] |
//! | multiple testing | [`benjamini_hochberg`] |
//! | conversion times | [`mean`], [`median_interpolated`], [`quantile_interpolated`] |
//! | survival | [`kaplan_meier`], [`kaplan_meier_grouped`], [`conversion_curve`], [`survival_at`] |
//! | adjusted odds ratios | [`fit_logistic_l2`] |
//!
//! Conventions for a 2x2 table `[[a, b], [c, d]]` in correlation analysis:
//! rows are "has the signal" / "does not have it", columns are "converted" /
//! "dropped off". With PostHog's names (`s` successes with the signal, `f`
//! failures with it, `S` total successes, `F` total failures) that is
//! `a = s`, `b = f`, `c = S - s`, `d = F - f`.
//!
//! # Example
//!
//! ```
//! use dropscope_stats::*;
//!
//! // 95% Wilson interval of a 40/100 conversion rate.
//! let (lo, hi) = wilson_interval(40, 100, 0.95).unwrap();
//! assert!(lo < 0.4 && 0.4 < hi);
//!
//! // A correlation row: 30 of 100 converters and 10 of 200 drop-offs saw the event.
//! let (s, f, big_s, big_f) = (30, 10, 100, 200);
//! let odds = odds_ratio_prior(s, f, big_s, big_f).unwrap();
//! let p = fisher_exact_two_sided(s, f, big_s - s, big_f - f);
//! let ci = odds_ratio_interval_woolf(s, f, big_s - s, big_f - f, 0.95).unwrap();
//! assert!(odds > 1.0 && p < 1e-6 && ci.lower > 1.0);
//!
//! // q-values across all rows tested.
//! let q = benjamini_hochberg(&[p, 0.04, 0.5]).unwrap();
//! assert!(q.iter().zip([p, 0.04, 0.5]).all(|(q, p)| *q >= p));
//!
//! // Median conversion time, interpolated like numpy / ClickHouse `median`.
//! assert_eq!(median_interpolated(&mut [3600.0, 7200.0]), Some(5400.0));
//!
//! // Kaplan–Meier conversion curve: actors still in progress are censored.
//! let km = kaplan_meier(&[(1.0, true), (2.0, false), (3.0, true)]).unwrap();
//! let curve = conversion_curve(&km);
//! assert_eq!(curve.last().unwrap().1, 1.0);
//!
//! // Adjusted odds ratios from a ridge logistic regression.
//! let x = vec![vec![1.0, 0.0], vec![1.0, 1.0], vec![0.0, 1.0], vec![0.0, 0.0]];
//! let y = [true, true, false, false];
//! let fit = fit_logistic_l2(&x, &y, 1.0, &LogisticOptions::default()).unwrap();
//! assert!(fit.converged && fit.odds_ratios()[0] > 1.0);
//! ```
//!
//! Every public function documents its formula and the source it follows;
//! the unit tests pin results to values computed with scipy 1.17,
//! statsmodels 0.15 and scikit-learn 1.9 (the exact Python expression is
//! written next to each constant).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod contingency;
mod descriptive;
mod logistic;
mod multiple_testing;
mod proportion;
mod survival;

pub use contingency::{
    fisher_exact_two_sided, fisher_exact_two_sided_ln, odds_ratio_interval_woolf, odds_ratio_prior,
    OddsRatioInterval,
};
pub use descriptive::{mean, median_interpolated, quantile_interpolated};
pub use logistic::{
    fit_logistic_l2, fit_logistic_l2_indicators, fit_logistic_l2_weighted, LogisticFit,
    LogisticOptions,
};
pub use multiple_testing::benjamini_hochberg;
pub use proportion::{normal_quantile, two_proportion_z_test, wilson_interval, ZTest};
pub use survival::{conversion_curve, kaplan_meier, kaplan_meier_grouped, survival_at, KmPoint};

/// Errors for inputs that have no meaningful result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A count is larger than the total it is part of (e.g. `successes > trials`).
    #[error("count {count} exceeds its total {total}")]
    CountExceedsTotal {
        /// The offending count.
        count: u64,
        /// The total it should not exceed.
        total: u64,
    },
    /// A confidence level outside the open interval `(0, 1)` (or NaN).
    #[error("confidence level must be strictly between 0 and 1, got {0}")]
    InvalidConfidence(f64),
    /// A probability (p-value, quantile level) outside `[0, 1]` (or NaN).
    #[error("probability must be within [0, 1], got {0}")]
    InvalidProbability(f64),
    /// A total that must be positive is zero (e.g. a group with no trials).
    #[error("{0} must be positive")]
    ZeroTotal(&'static str),
    /// An input value is NaN or infinite where a finite number is required.
    #[error("non-finite value in {0}")]
    NonFinite(&'static str),
    /// Inputs whose lengths do not agree.
    #[error("dimension mismatch in {what}: expected {expected}, found {found}")]
    DimensionMismatch {
        /// What was being compared.
        what: &'static str,
        /// The expected length.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// An empty input where at least one observation is required.
    #[error("empty input: {0}")]
    EmptyInput(&'static str),
    /// A parameter with an invalid value (e.g. a negative penalty).
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// The parameter name.
        name: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// All outcomes are identical, so the (unpenalised) intercept has no finite estimate.
    #[error("all outcomes are identical; the intercept is not finite")]
    DegenerateResponse,
    /// The (penalised) Hessian is not positive definite: collinear columns or
    /// separable data without a penalty. Use `lambda > 0`.
    #[error("Hessian is singular (collinear or separable data without penalty)")]
    SingularMatrix,
}

/// Validates a confidence level, which must lie strictly inside `(0, 1)`.
pub(crate) fn check_confidence(confidence: f64) -> Result<(), StatsError> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(StatsError::InvalidConfidence(confidence))
    }
}
