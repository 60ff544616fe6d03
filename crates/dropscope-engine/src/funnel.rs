//! The steps view: counts, conversion, drop-off, conversion times, by
//! breakdown value (SEMANTICS.md rules 9, 10, 12).

use std::collections::HashMap;

use dropscope_core::query::{BreakdownType, Counting, FunnelOrder};
use dropscope_core::result::{BreakdownRow, CurvePoint, FunnelResult, StepResult};
use dropscope_core::QueryError;
use serde_json::Value;

use crate::ordered::Path;
use crate::plan::{BdKey, Plan};
use crate::totals;

/// Per-step tallies of one breakdown value.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub counts: Vec<u64>,
    pub in_progress: Vec<u64>,
    /// Positive gaps from the previous step, seconds.
    pub gaps: Vec<Vec<f64>>,
    /// Per actor, milliseconds from entry to conversion or censoring and
    /// whether it converted, packed as `ms << 1 | converted` (sorts as
    /// plain integers for the Kaplan–Meier curve) ...
    pub survival: Vec<u64>,
    /// ... except the actors censored at the end of their window, most of
    /// the actors of a typical funnel: counted here, not listed.
    pub censored_at_window: u64,
}

impl Tally {
    pub fn new(n: usize) -> Tally {
        Tally {
            counts: vec![0; n],
            in_progress: vec![0; n],
            gaps: vec![Vec::new(); n],
            survival: Vec::new(),
            censored_at_window: 0,
        }
    }

    pub fn add(&mut self, plan: &Plan<'_>, p: &Path) {
        let a = &p.attempt;
        self.add_parts(plan, a.bits, &a.times, a.start, p.furthest);
    }

    /// One actor's path given as its parts: the steps done (`bits`), their
    /// times, the attempt's start and the furthest step (1-based).
    #[inline]
    pub fn add_parts(
        &mut self,
        plan: &Plan<'_>,
        bits: u64,
        times: &[i64],
        start: i64,
        furthest: usize,
    ) {
        let n = self.counts.len();
        let mut prev: Option<i64> = None;
        // Up to the last step done (most actors do only the first).
        let done = n.min(64 - bits.leading_zeros() as usize);
        for (s, &t) in times.iter().enumerate().take(done) {
            if bits & (1 << s) == 0 {
                continue;
            }
            self.counts[s] += 1;
            if let Some(t0) = prev {
                if t > t0 {
                    self.gaps[s].push((t - t0) as f64 / 1000.0);
                }
            }
            prev = Some(t);
        }
        // Still inside the window at the end of the range: may yet convert.
        let open = start.saturating_add(plan.shape.window) >= plan.range.to;
        if furthest < n {
            if open {
                let next = furthest.min(n - 1);
                self.in_progress[next] += 1;
            }
            if open {
                self.survival
                    .push(((plan.range.to - start).max(0) as u64) << 1);
            } else {
                self.censored_at_window += 1;
            }
        } else {
            self.survival
                .push((((times[n - 1] - start).max(0) as u64) << 1) | 1);
        }
    }

    /// [`Tally::add_parts`] for a path of the first step alone, at `start`
    /// (most actors of a typical funnel).
    #[inline]
    pub fn add_first_step(&mut self, plan: &Plan<'_>, start: i64) {
        if self.counts.len() == 1 {
            return self.add_parts(plan, 1, &[start], start, 1);
        }
        self.counts[0] += 1;
        if start.saturating_add(plan.shape.window) >= plan.range.to {
            self.in_progress[1] += 1;
            self.survival
                .push(((plan.range.to - start).max(0) as u64) << 1);
        } else {
            self.censored_at_window += 1;
        }
    }

    /// Merges many partial tallies, copying each one's lists once (the
    /// lists in parallel).
    pub fn merge_all(n: usize, parts: Vec<Tally>) -> Tally {
        use rayon::prelude::*;
        fn concat<'a, T: Copy + 'a>(lists: impl Iterator<Item = &'a [T]> + Clone) -> Vec<T> {
            let mut out = Vec::with_capacity(lists.clone().map(<[T]>::len).sum());
            for l in lists {
                out.extend_from_slice(l);
            }
            out
        }
        let mut all = Tally::new(n);
        for t in &parts {
            for s in 0..n {
                all.counts[s] += t.counts[s];
                all.in_progress[s] += t.in_progress[s];
            }
            all.censored_at_window += t.censored_at_window;
        }
        let (gaps, survival) = rayon::join(
            || {
                (0..n)
                    .into_par_iter()
                    .map(|s| concat(parts.iter().map(|t| t.gaps[s].as_slice())))
                    .collect()
            },
            || concat(parts.iter().map(|t| t.survival.as_slice())),
        );
        all.gaps = gaps;
        all.survival = survival;
        all
    }

    /// The per-step results and the conversion curve, computed side by
    /// side (reorders the lists: medians select in place, the curve sorts).
    pub fn finish(&mut self, plan: &Plan<'_>) -> (Vec<StepResult>, Vec<CurvePoint>) {
        let Tally {
            counts,
            in_progress,
            gaps,
            survival,
            censored_at_window,
        } = self;
        rayon::join(
            || steps_of(counts, in_progress, gaps, plan),
            || curve_of(survival, *censored_at_window, plan),
        )
    }

    pub fn merge(&mut self, o: Tally) {
        for s in 0..self.counts.len() {
            self.counts[s] += o.counts[s];
            self.in_progress[s] += o.in_progress[s];
        }
        for (g, og) in self.gaps.iter_mut().zip(o.gaps) {
            g.extend(og);
        }
        self.survival.extend(o.survival);
        self.censored_at_window += o.censored_at_window;
    }
}

/// The per-step results of a tally's fields (medians select in place;
/// each step's mean and median are computed in parallel).
fn steps_of(
    counts: &[u64],
    in_progress: &[u64],
    gaps: &mut [Vec<f64>],
    plan: &Plan<'_>,
) -> Vec<StepResult> {
    use rayon::prelude::*;
    let times: Vec<(Option<f64>, Option<f64>)> = gaps
        .par_iter_mut()
        .enumerate()
        .map(|(s, gaps)| {
            if s == 0 || gaps.is_empty() {
                (None, None)
            } else {
                (
                    dropscope_stats::mean(gaps),
                    dropscope_stats::median_interpolated(gaps),
                )
            }
        })
        .collect();
    let first = counts.first().copied().unwrap_or(0);
    (0..counts.len())
        .map(|s| {
            let count = counts[s];
            let prev = if s == 0 { count } else { counts[s - 1] };
            let (avg, median) = times[s];
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            let wilson = |a: u64, b: u64| {
                let (lo, hi) =
                    dropscope_stats::wilson_interval(a.min(b), b, 0.95).unwrap_or((0.0, 1.0));
                [lo, hi]
            };
            StepResult {
                order: s,
                name: plan_step_name(plan, s),
                count,
                conversion_from_first: if s == 0 {
                    if count > 0 {
                        1.0
                    } else {
                        0.0
                    }
                } else {
                    ratio(count, first)
                },
                conversion_from_previous: if s == 0 {
                    if count > 0 {
                        1.0
                    } else {
                        0.0
                    }
                } else {
                    ratio(count, prev)
                },
                conversion_from_first_interval: wilson(count, first),
                conversion_from_previous_interval: wilson(count, prev),
                dropped: prev.saturating_sub(count),
                in_progress: if s == 0 { 0 } else { in_progress[s] },
                average_conversion_time: avg,
                median_conversion_time: median,
            }
        })
        .collect()
}

/// The Kaplan–Meier conversion curve over every actor of a tally
/// (`survival` gets sorted).
fn curve_of(survival: &mut [u64], censored_at_window: u64, plan: &Plan<'_>) -> Vec<CurvePoint> {
    use rayon::slice::ParallelSliceMut;
    if survival.is_empty() && censored_at_window == 0 {
        return Vec::new();
    }
    survival.par_sort_unstable();
    let mut groups: Vec<(f64, u64, u64)> = Vec::new();
    for chunk in survival.chunk_by(|a, b| a >> 1 == b >> 1) {
        let events = chunk.iter().filter(|&&x| x & 1 == 1).count() as u64;
        let secs = (chunk[0] >> 1) as f64 / 1000.0;
        groups.push((secs, events, chunk.len() as u64 - events));
    }
    if censored_at_window > 0 {
        groups.push((
            plan.shape.window.max(0) as f64 / 1000.0,
            0,
            censored_at_window,
        ));
    }
    dropscope_stats::kaplan_meier_grouped(groups)
        .map(|pts| {
            pts.iter()
                .map(|p| CurvePoint {
                    seconds: p.time,
                    converted: 1.0 - p.survival,
                    at_risk: p.at_risk,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn plan_step_name(plan: &Plan<'_>, s: usize) -> String {
    if plan.order == FunnelOrder::Unordered {
        let k = s + 1;
        return format!("Completed {k} step{}", if k == 1 { "" } else { "s" });
    }
    plan.q.steps[s].display_name()
}

/// Runs the steps view.
pub fn funnel(plan: &Plan<'_>) -> Result<FunnelResult, QueryError> {
    let n = plan.n();
    let totals_mode = plan.q.counting == Counting::Totals;
    if totals_mode && plan.order == FunnelOrder::Unordered {
        return Err(QueryError::invalid(
            "counting",
            "`totals` counting needs an ordered or strict funnel",
        ));
    }
    let mut by_key: HashMap<BdKey, Tally> = match crate::kernel::funnel_tallies(plan) {
        Some(t) => t,
        None => general_tallies(plan, totals_mode),
    };
    let mut all = Tally::new(n);
    if plan.breakdown.is_some() {
        // In key order: the mean conversion times sum the merged lists in
        // order, and hash order would change their last digits run to run.
        let mut keys: Vec<&BdKey> = by_key.keys().collect();
        keys.sort();
        for k in keys {
            all.merge(by_key[k].clone());
        }
    } else if let Some(t) = by_key.remove(&BdKey::None) {
        all = t;
    }
    let (steps, curve) = all.finish(plan);
    let breakdowns = plan
        .breakdown
        .as_ref()
        .map(|_| breakdown_rows(plan, by_key));
    Ok(FunnelResult {
        steps,
        breakdowns,
        conversion_curve: curve,
        date_from_ms: plan.range.from,
        date_to_ms: plan.range.to,
    })
}

/// Tallies by breakdown value through the general per-actor path.
fn general_tallies(plan: &Plan<'_>, totals_mode: bool) -> HashMap<BdKey, Tally> {
    let n = plan.n();
    plan.fold_actors(
        HashMap::new,
        |acc: &mut HashMap<BdKey, Tally>, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            if scratch.evs.is_empty() {
                return;
            }
            if totals_mode {
                for p in totals::attempts(plan, &scratch.evs) {
                    acc.entry(BdKey::None)
                        .or_insert_with(|| Tally::new(n))
                        .add(plan, &p);
                }
                return;
            }
            let mut out = std::mem::take(&mut scratch.paths);
            plan.actor_paths(actor, scratch, &mut out);
            for (k, p) in out.drain(..) {
                match acc.get_mut(&k) {
                    Some(t) => t.add(plan, &p),
                    None => acc.entry(k).or_insert_with(|| Tally::new(n)).add(plan, &p),
                }
            }
            scratch.paths = out;
        },
        |mut a, b| {
            for (k, t) in b {
                match a.get_mut(&k) {
                    Some(x) => x.merge(t),
                    None => {
                        a.insert(k, t);
                    }
                }
            }
            a
        },
    )
}

/// Merges keys with equal string forms, orders rows, applies the limit.
pub fn breakdown_rows(plan: &Plan<'_>, by_key: HashMap<BdKey, Tally>) -> Vec<BreakdownRow> {
    let n = plan.n();
    let b = plan.breakdown.as_ref().expect("breakdown");
    let mut merged: HashMap<Value, Tally> = HashMap::new();
    for (k, t) in by_key {
        let v = bd_value(plan, &k);
        match merged.get_mut(&v) {
            Some(x) => x.merge(t),
            None => {
                merged.insert(v, t);
            }
        }
    }
    let mut rows: Vec<(Value, Tally)> = merged.into_iter().collect();
    sort_rows(&mut rows, |t| &t.counts);
    if let Some(limit) = b.limit.filter(|l| *l > 0) {
        if rows.len() > limit {
            let rest = rows.split_off(limit);
            let mut other = Tally::new(n);
            for (_, t) in rest {
                other.merge(t);
            }
            let other_key = if b.boxed {
                Value::Array(vec!["Other".into()])
            } else {
                Value::String("Other".into())
            };
            rows.push((other_key, other));
        }
    }
    rows.into_iter()
        .map(|(v, mut t)| BreakdownRow {
            breakdown_display: display(&v, b.kind),
            breakdown_value: v,
            steps: t.finish(plan).0,
        })
        .collect()
}

/// Orders rows by last-step count desc, then earlier steps desc, then value.
pub fn sort_rows<T>(rows: &mut [(Value, T)], counts: impl Fn(&T) -> &Vec<u64>) {
    rows.sort_by(|(va, a), (vb, b)| {
        let (ca, cb) = (counts(a), counts(b));
        for s in (0..ca.len()).rev() {
            match cb[s].cmp(&ca[s]) {
                std::cmp::Ordering::Equal => continue,
                o => return o,
            }
        }
        va.to_string().cmp(&vb.to_string())
    });
}

/// The output value of a breakdown key.
pub fn bd_value(plan: &Plan<'_>, k: &BdKey) -> Value {
    let b = plan.breakdown.as_ref().expect("breakdown");
    match k {
        BdKey::Cohort(id) => Value::from(*id),
        _ => {
            let strs = plan.bd_strings(k);
            if b.boxed {
                Value::Array(strs.into_iter().map(Value::String).collect())
            } else {
                Value::String(strs.into_iter().next().unwrap_or_default())
            }
        }
    }
}

fn display(v: &Value, kind: BreakdownType) -> String {
    match (v, kind) {
        (Value::Number(n), BreakdownType::Cohort) if n.as_u64() == Some(0) => "all users".into(),
        (Value::Array(a), _) => a
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join(", "),
        (Value::String(s), _) => s.clone(),
        (other, _) => other.to_string(),
    }
}

/// Whether a breakdown value from a request equals a row value (a bare
/// string matches a one-element list).
pub fn bd_matches(want: &Value, got: &Value) -> bool {
    if want == got {
        return true;
    }
    match (want, got) {
        (Value::String(s), Value::Array(a)) => a.len() == 1 && a[0].as_str() == Some(s),
        (Value::Array(a), Value::String(s)) => a.len() == 1 && a[0].as_str() == Some(s),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(s), Value::Number(y)) => s.parse::<f64>().ok() == y.as_f64(),
        _ => false,
    }
}
