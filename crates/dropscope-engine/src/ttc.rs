//! Time to convert: a histogram of the time between two steps
//! (SEMANTICS.md rule 16).

use dropscope_core::result::TimeToConvertResult;
use dropscope_core::QueryError;

use crate::plan::Plan;

/// Runs a time-to-convert query.
pub fn time_to_convert(plan: &Plan<'_>) -> Result<TimeToConvertResult, QueryError> {
    let n = plan.n();
    let from = plan.q.from_step.unwrap_or(0);
    let to = plan.q.to_step.unwrap_or(n - 1);
    let times: Vec<f64> = plan.fold_actors(
        Vec::new,
        |acc, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            if scratch.evs.is_empty() {
                return;
            }
            // Breakdown is ignored: one path per actor.
            if let Some(p) = plan.run_funnel(&scratch.evs, None) {
                let a = &p.attempt;
                if a.bits & (1 << to) != 0 && a.bits & (1 << from) != 0 {
                    acc.push((a.times[to] - a.times[from]) as f64 / 1000.0);
                }
            }
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    Ok(histogram(&times, plan.q.bin_count))
}

/// Bins as PostHog computes them: count = `bin_count` clamped to 1..90, else
/// clamp(ceil(cbrt(n)), 1, 60); width = ceil((max−min)/count), 60 if 0.
pub fn histogram(times: &[f64], bin_count: Option<i64>) -> TimeToConvertResult {
    if times.is_empty() {
        return TimeToConvertResult::default();
    }
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = times.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let layout = BinLayout::new(times.len(), min, max, bin_count);
    let mut counts = vec![0u64; layout.count + 1];
    for &t in times {
        counts[layout.bin(t)] += 1;
    }
    layout.result(&counts, dropscope_stats::mean(times), times.len() as u64)
}

/// The bins of a histogram, from the number of times and their extremes
/// (seconds): every backend bins with this, so only counts differ in where
/// they are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinLayout {
    /// Number of bins (the result has `count + 1` entries).
    pub count: usize,
    /// floor(min).
    pub min: f64,
    /// ceil((ceil(max) − min) / count), 60 when that is 0.
    pub width: f64,
}

impl BinLayout {
    pub fn new(n: usize, min: f64, max: f64, bin_count: Option<i64>) -> BinLayout {
        let count = match bin_count {
            Some(b) => b.clamp(1, 90) as usize,
            None => ((n as f64).cbrt().ceil() as usize).clamp(1, 60),
        };
        let min = min.floor();
        let max = max.ceil();
        let mut width = ((max - min) / count as f64).ceil();
        if width <= 0.0 {
            width = 60.0;
        }
        BinLayout { count, min, width }
    }

    /// The bin of a time: floor((t − min) / width), at most `count`.
    pub fn bin(&self, t: f64) -> usize {
        (((t - self.min) / self.width).floor() as usize).min(self.count)
    }

    /// The result from per-bin counts (`count + 1` entries).
    pub fn result(
        &self,
        counts: &[u64],
        average: Option<f64>,
        converted: u64,
    ) -> TimeToConvertResult {
        let bins = (0..=self.count)
            .map(|i| {
                (
                    (self.min + i as f64 * self.width).round() as i64,
                    counts.get(i).copied().unwrap_or(0),
                )
            })
            .collect();
        TimeToConvertResult {
            bins,
            average_conversion_time: average,
            converted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_bins_match_posthog() {
        // Three times give ceil(cbrt(3)) = 2 bins; the maximum lands on the
        // closing edge, as PostHog's (peer-time-to-convert-auto-bins).
        let h = histogram(&[2220.0, 3600.0, 82800.0], None);
        assert_eq!(h.bins, vec![(2220, 2), (42510, 0), (82800, 1)]);
        assert_eq!(h.average_conversion_time, Some(29540.0));
    }
}
