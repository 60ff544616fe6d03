//! Kaplan–Meier survival (time-to-conversion) curves.

use crate::StatsError;

/// One step of a Kaplan–Meier curve, at a distinct observed time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KmPoint {
    /// The observed time (an event or a censoring time).
    pub time: f64,
    /// `S(t)`: the estimated probability of not having had the event by `time`
    /// (inclusive), i.e. the curve's value from `time` until the next point.
    pub survival: f64,
    /// Number at risk just before `time` (observations with time `>= time`).
    pub at_risk: u64,
    /// Events (conversions) at `time`.
    pub events: u64,
    /// Censored observations (e.g. actors still in progress) at `time`.
    pub censored: u64,
    /// Greenwood standard error of `survival`:
    /// `S(t) · sqrt(Σ_{tᵢ <= t} dᵢ / (nᵢ (nᵢ − dᵢ)))`; `0.0` once `S(t) = 0`.
    pub std_err: f64,
}

/// Kaplan–Meier product-limit estimator.
///
/// Formula (Kaplan & Meier 1958; Klein & Moeschberger, *Survival Analysis*,
/// §4.2): for the distinct times `t₁ < t₂ < …` with `dᵢ` events and `nᵢ` at
/// risk just before `tᵢ`,
///
/// ```text
/// S(t) = Π_{tᵢ <= t} (1 − dᵢ / nᵢ)
/// ```
///
/// At tied times events are processed before censorings, so observations
/// censored at `tᵢ` count as at risk at `tᵢ` (the standard convention, as in R
/// `survival::survfit` and lifelines). `observations` are `(time,
/// event_observed)` pairs in any order; one point is returned per distinct
/// time (censoring-only times included, with `survival` unchanged), sorted by
/// time. An empty input gives an empty curve.
///
/// Errors: a NaN or infinite time.
pub fn kaplan_meier(observations: &[(f64, bool)]) -> Result<Vec<KmPoint>, StatsError> {
    let groups: Vec<(f64, u64, u64)> = observations
        .iter()
        .map(|&(t, e)| (t, u64::from(e), u64::from(!e)))
        .collect();
    kaplan_meier_grouped(groups)
}

/// [`kaplan_meier`] over observations given as `(time, events, censored)`
/// counts, in any order, several groups of one time allowed: the same
/// curve as listing each observation, for callers that hold many
/// observations at few distinct times (a funnel's actors censored at the
/// end of its window) and should not expand them.
///
/// Errors: a NaN or infinite time.
pub fn kaplan_meier_grouped(mut groups: Vec<(f64, u64, u64)>) -> Result<Vec<KmPoint>, StatsError> {
    if groups.iter().any(|(t, _, _)| !t.is_finite()) {
        return Err(StatsError::NonFinite("observation time"));
    }
    // Unstable: equal times are summed below, their order does not matter.
    groups.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut points = Vec::new();
    let mut at_risk: u64 = groups.iter().map(|g| g.1 + g.2).sum();
    let mut survival = 1.0f64;
    let mut greenwood = 0.0f64;
    let mut i = 0;
    while i < groups.len() {
        let time = groups[i].0;
        let mut events = 0u64;
        let mut censored = 0u64;
        while i < groups.len() && groups[i].0 == time {
            events += groups[i].1;
            censored += groups[i].2;
            i += 1;
        }
        if events + censored == 0 {
            continue;
        }
        if events > 0 {
            let (n, d) = (at_risk as f64, events as f64);
            survival *= 1.0 - d / n;
            if events < at_risk {
                greenwood += d / (n * (n - d));
            }
        }
        let std_err = if survival > 0.0 {
            survival * greenwood.sqrt()
        } else {
            0.0
        };
        points.push(KmPoint {
            time,
            survival,
            at_risk,
            events,
            censored,
            std_err,
        });
        at_risk -= events + censored;
    }
    Ok(points)
}

/// The conversion curve `(time, 1 − S(time))` of a Kaplan–Meier estimate: the
/// estimated share of actors converted by each time, with in-progress actors
/// treated as censored.
pub fn conversion_curve(points: &[KmPoint]) -> Vec<(f64, f64)> {
    points.iter().map(|p| (p.time, 1.0 - p.survival)).collect()
}

/// The step function `S(t)` of a Kaplan–Meier estimate (from
/// [`kaplan_meier`], sorted by time) evaluated at `t`: the survival of the last
/// point with `time <= t`, or `1.0` before the first point (and for NaN `t`).
pub fn survival_at(points: &[KmPoint], t: f64) -> f64 {
    let idx = points.partition_point(|p| p.time <= t);
    if idx == 0 {
        1.0
    } else {
        points[idx - 1].survival
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn km_is_a_non_increasing_probability(obs in proptest::collection::vec((0u8..20, any::<bool>()), 0..80)) {
            let obs: Vec<(f64, bool)> = obs.into_iter().map(|(t, e)| (f64::from(t), e)).collect();
            let km = kaplan_meier(&obs).unwrap();
            let mut prev = 1.0;
            for p in &km {
                prop_assert!(p.survival <= prev && p.survival >= 0.0 && p.std_err >= 0.0);
                prev = p.survival;
            }
            prop_assert_eq!(km.iter().map(|p| p.events + p.censored).sum::<u64>(), obs.len() as u64);
        }
    }

    proptest! {
        #[test]
        fn grouped_counts_give_the_expanded_curve(
            groups in proptest::collection::vec((0u8..12, 0u64..4, 0u64..4), 0..40),
        ) {
            let groups: Vec<(f64, u64, u64)> =
                groups.into_iter().map(|(t, e, c)| (f64::from(t), e, c)).collect();
            let mut expanded = Vec::new();
            for &(t, e, c) in &groups {
                expanded.extend(std::iter::repeat_n((t, true), e as usize));
                expanded.extend(std::iter::repeat_n((t, false), c as usize));
            }
            prop_assert_eq!(kaplan_meier_grouped(groups).unwrap(), kaplan_meier(&expanded).unwrap());
        }
    }

    #[test]
    fn hand_checked_example() {
        // Sorted: 1E, 2E, 2C, 3E, 4C, 5E, 5E, 6C (n = 8).
        //  t=1: n=8, d=1 -> S = 7/8
        //  t=2: n=7, d=1, c=1 (death before censoring) -> S = 7/8 * 6/7 = 3/4
        //  t=3: n=5, d=1 -> S = 3/4 * 4/5 = 3/5
        //  t=4: n=4, c=1 -> S = 3/5
        //  t=5: n=3, d=2 -> S = 3/5 * 1/3 = 1/5
        //  t=6: n=1, c=1 -> S = 1/5
        let obs = [
            (5.0, true),
            (2.0, false),
            (1.0, true),
            (6.0, false),
            (3.0, true),
            (2.0, true),
            (5.0, true),
            (4.0, false),
        ];
        let km = kaplan_meier(&obs).unwrap();
        let expected = [
            (1.0, 0.875, 8, 1, 0),
            (2.0, 0.75, 7, 1, 1),
            (3.0, 0.6, 5, 1, 0),
            (4.0, 0.6, 4, 0, 1),
            (5.0, 0.2, 3, 2, 0),
            (6.0, 0.2, 1, 0, 1),
        ];
        assert_eq!(km.len(), expected.len());
        for (p, (t, s, n, d, c)) in km.iter().zip(expected) {
            assert_eq!((p.time, p.at_risk, p.events, p.censored), (t, n, d, c));
            assert!((p.survival - s).abs() < 1e-15, "{p:?}");
        }
        // Greenwood at t=3: 0.6 * sqrt(1/56 + 1/42 + 1/20)
        let se = 0.6 * (1.0f64 / 56.0 + 1.0 / 42.0 + 1.0 / 20.0).sqrt();
        assert!((km[2].std_err - se).abs() < 1e-15);

        let curve = conversion_curve(&km);
        assert!((curve[4].1 - 0.8).abs() < 1e-15);
        assert_eq!(survival_at(&km, 0.5), 1.0);
        assert_eq!(survival_at(&km, 2.0), 0.75);
        assert_eq!(survival_at(&km, 2.5), 0.75);
        assert!((survival_at(&km, 100.0) - 0.2).abs() < 1e-15);
    }

    #[test]
    fn no_censoring_is_empirical_survival() {
        let km = kaplan_meier(&[(1.0, true), (1.0, true), (2.0, true), (3.0, true)]).unwrap();
        let s: Vec<f64> = km.iter().map(|p| p.survival).collect();
        assert_eq!(s, vec![0.5, 0.25, 0.0]);
        assert_eq!(km[2].std_err, 0.0);
    }

    #[test]
    fn edges() {
        assert!(kaplan_meier(&[]).unwrap().is_empty());
        let km = kaplan_meier(&[(1.0, false), (2.0, false)]).unwrap();
        assert!(km.iter().all(|p| p.survival == 1.0));
        assert!(kaplan_meier(&[(f64::NAN, true)]).is_err());
        assert_eq!(survival_at(&[], 3.0), 1.0);
    }
}
