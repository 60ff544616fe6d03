//! The diagnosis report: per-step conversion, the largest drop, the drivers
//! that survive multiple-testing correction (raw and adjusted odds ratios),
//! segments that convert differently, and what dropped people did instead.
//!
//! Drivers are tested for every transition "reached step k → completed the
//! funnel" (k = 0 .. n−2): event correlation and person-property
//! correlation. All rows of all transitions and all segment tests form one
//! Benjamini–Hochberg family, so the reported q-values account for
//! everything that was looked at.

use std::collections::{HashMap, HashSet};

use dropscope_core::query::{
    Breakdown, CorrelationOptions, CorrelationType, FunnelQuery, PathsOptions, QueryKind,
    PERSON_ROW_PREFIX,
};
use dropscope_core::result::{
    CorrelationResult, DiagnosisResult, Driver, FunnelResult, PathsResult, SegmentFinding,
};
use dropscope_core::QueryError;
use dropscope_store::dict::value_str;
use dropscope_store::Snapshot;

use crate::plan::Plan;

/// Identity and bookkeeping events left out of drivers: they record who a
/// person is, not what they did.
pub const PLUMBING: [&str; 6] = [
    "$identify",
    "$create_alias",
    "$merge_dangerously",
    "$groupidentify",
    "$set",
    "$pageleave",
];

/// The parts a diagnosis is composed of, computed by a backend: the steps
/// view, the segment keys, a correlation and paths (each for the query
/// given). [`compose`] turns them into the report, so every backend
/// shares the composition.
pub trait Parts {
    fn funnel(&self, q: &FunnelQuery) -> Result<FunnelResult, QueryError>;
    /// [`discover_segment_keys`] for the funnel query `q`.
    fn segment_keys(&self, q: &FunnelQuery) -> Result<Vec<String>, QueryError>;
    fn correlation(&self, q: &FunnelQuery) -> Result<CorrelationResult, QueryError>;
    fn paths(&self, q: &FunnelQuery) -> Result<PathsResult, QueryError>;
}

struct SnapshotParts<'s>(&'s Snapshot);

impl Parts for SnapshotParts<'_> {
    fn funnel(&self, q: &FunnelQuery) -> Result<FunnelResult, QueryError> {
        crate::funnel::funnel(&Plan::new(self.0, q)?)
    }
    fn segment_keys(&self, q: &FunnelQuery) -> Result<Vec<String>, QueryError> {
        Ok(discover_segment_keys(&Plan::new(self.0, q)?))
    }
    fn correlation(&self, q: &FunnelQuery) -> Result<CorrelationResult, QueryError> {
        crate::correlation::correlation_supported(&Plan::new(self.0, q)?)
    }
    fn paths(&self, q: &FunnelQuery) -> Result<PathsResult, QueryError> {
        crate::paths::paths(&Plan::new(self.0, q)?)
    }
}

/// Runs the diagnosis.
pub fn diagnosis(snap: &Snapshot, q: &FunnelQuery) -> Result<DiagnosisResult, QueryError> {
    compose(q, &SnapshotParts(snap))
}

/// The funnel query a diagnosis starts from (no breakdown).
pub fn base_query(q: &FunnelQuery) -> FunnelQuery {
    FunnelQuery {
        kind: QueryKind::Funnel,
        breakdown: None,
        ..q.clone()
    }
}

/// The correlation query of the drivers of transition `k` → last step.
pub fn drivers_query(q: &FunnelQuery, k: usize) -> FunnelQuery {
    let n = q.steps.len();
    let opts = q.diagnosis.clone().unwrap_or_default();
    FunnelQuery {
        kind: QueryKind::Correlation,
        from_step: Some(k),
        to_step: Some(n - 1),
        breakdown: None,
        correlation: Some(CorrelationOptions {
            kind: CorrelationType::Events,
            with_person_properties: Some(
                opts.person_properties
                    .clone()
                    .unwrap_or_else(|| vec!["$all".into()]),
            ),
            exclude_event_names: Some(PLUMBING.iter().map(|s| s.to_string()).collect()),
            top: Some(usize::MAX),
            ..Default::default()
        }),
        ..q.clone()
    }
}

/// The diagnosis report from its parts.
pub fn compose(q: &FunnelQuery, parts: &dyn Parts) -> Result<DiagnosisResult, QueryError> {
    let base = base_query(q);
    crate::plan::validate(&base)?;
    let n = q.steps.len();
    if n < 2 {
        return Err(QueryError::invalid(
            "steps",
            "a diagnosis needs at least 2 steps",
        ));
    }
    let opts = q.diagnosis.clone().unwrap_or_default();
    let threshold = opts.q_threshold.unwrap_or(0.05);
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(QueryError::invalid(
            "diagnosis.q_threshold",
            "must be between 0 and 1",
        ));
    }
    let funnel = parts.funnel(&base)?;
    let largest = (1..n)
        .max_by_key(|&s| (funnel.steps[s].dropped, std::cmp::Reverse(s)))
        .map(|s| (s - 1, s));
    let segment_keys = match &opts.segment_properties {
        Some(k) => k.clone(),
        None => parts.segment_keys(&base)?,
    };

    // Drivers: every transition k -> last; events and person properties
    // tested together so the adjusted odds ratios weigh both.
    let mut drivers: Vec<Driver> = Vec::new();
    for k in 0..n - 1 {
        let r = parts.correlation(&drivers_query(q, k))?;
        for mut row in r.events {
            let kind = match row.event.strip_prefix(PERSON_ROW_PREFIX) {
                Some(rest) => {
                    row.event = rest.to_string();
                    "person_property"
                }
                None => "event",
            };
            drivers.push(Driver {
                kind: kind.to_string(),
                from_step: r.from_step,
                to_step: r.to_step,
                row,
            });
        }
    }

    // Segments: each value at entry against the rest, per property.
    let mut segments: Vec<SegmentFinding> = Vec::new();
    for key in &segment_keys {
        let bq = FunnelQuery {
            kind: QueryKind::Funnel,
            breakdown: Some(Breakdown {
                property: Some(key.clone()),
                ..Default::default()
            }),
            ..q.clone()
        };
        let f = parts.funnel(&bq)?;
        let rows = f.breakdowns.unwrap_or_default();
        let total_in: u64 = rows.iter().map(|r| r.steps[0].count).sum();
        let total_conv: u64 = rows.iter().map(|r| r.steps[n - 1].count).sum();
        for r in &rows {
            let (x1, n1) = (r.steps[n - 1].count, r.steps[0].count);
            let (x2, n2) = (total_conv - x1, total_in - n1);
            if n1 < 5 || n2 < 5 {
                continue;
            }
            let Ok(t) = dropscope_stats::two_proportion_z_test(x1, n1, x2, n2) else {
                continue;
            };
            let rate = x1 as f64 / n1 as f64;
            let rest = x2 as f64 / n2 as f64;
            segments.push(SegmentFinding {
                property: key.clone(),
                value: r.breakdown_display.clone(),
                entered: n1,
                converted: x1,
                rate,
                rest_rate: rest,
                z: t.z,
                p_value: t.p_value,
                q_value: 1.0,
                direction: if rate > rest { "higher" } else { "lower" }.into(),
            });
        }
    }

    // One BH family over everything tested.
    let mut p: Vec<f64> = drivers.iter().map(|d| d.row.p_value).collect();
    p.extend(segments.iter().map(|s| s.p_value));
    let qv = dropscope_stats::benjamini_hochberg(&p).unwrap_or_else(|_| p.clone());
    for (d, q) in drivers.iter_mut().zip(&qv) {
        d.row.q_value = *q;
    }
    for (s, q) in segments.iter_mut().zip(&qv[drivers.len()..]) {
        s.q_value = *q;
    }
    let hypotheses = p.len();
    drivers.retain(|d| d.row.q_value < threshold && !d.row.low_support);
    // One line per signal: its latest significant transition (the most
    // specific population: people who already got that far), so a signal is
    // not credited with the steps before it.
    drivers.sort_by(|a, b| {
        b.from_step
            .cmp(&a.from_step)
            .then(a.row.q_value.total_cmp(&b.row.q_value))
    });
    let mut seen: HashSet<(String, String)> = HashSet::new();
    drivers.retain(|d| seen.insert((d.kind.clone(), d.row.event.clone())));
    drivers.sort_by(|a, b| a.row.q_value.total_cmp(&b.row.q_value));
    let top = opts.top.unwrap_or(10);
    let mut per_dir: HashMap<String, usize> = HashMap::new();
    drivers.retain(|d| {
        let c = per_dir.entry(d.row.correlation_type.clone()).or_default();
        *c += 1;
        *c <= top
    });
    segments.retain(|s| s.q_value < threshold);
    segments.sort_by(|a, b| a.q_value.total_cmp(&b.q_value));

    let paths = match largest {
        Some((from, _)) => {
            let pq = FunnelQuery {
                kind: QueryKind::Paths,
                breakdown: None,
                paths: Some(PathsOptions {
                    after_step: Some(from),
                    ..Default::default()
                }),
                ..q.clone()
            };
            Some(parts.paths(&pq)?)
        }
        None => None,
    };
    Ok(DiagnosisResult {
        steps: funnel.steps,
        largest_drop: largest,
        drivers,
        segments,
        paths,
        q_threshold: threshold,
        hypotheses,
    })
}

/// Event properties on most first-step events with 2..=30 distinct values
/// (at most 5, most common first), skipping ids and internal keys.
pub fn discover_segment_keys(plan: &Plan<'_>) -> Vec<String> {
    let d = plan.dicts;
    let counts: HashMap<u32, (u64, HashSet<u32>)> = plan.fold_actors(
        HashMap::new,
        |acc: &mut HashMap<u32, (u64, HashSet<u32>)>, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            let Some(e) = scratch.evs.iter().find(|e| e.steps & 1 != 0) else {
                return;
            };
            acc.entry(u32::MAX).or_default().0 += 1;
            for (k, v) in actor.view.props(e.row as usize) {
                let c = acc.entry(k).or_default();
                c.0 += 1;
                if c.1.len() <= 31 {
                    c.1.insert(v);
                }
            }
        },
        |mut a, b| {
            for (k, (n, vs)) in b {
                let c = a.entry(k).or_default();
                c.0 += n;
                if c.1.len() <= 31 {
                    c.1.extend(vs);
                }
            }
            a
        },
    );
    let entered = counts.get(&u32::MAX).map_or(0, |c| c.0);
    let keys: Vec<(String, u64, usize)> = counts
        .into_iter()
        .filter(|(k, _)| *k != u32::MAX)
        .map(|(k, (n, vs))| {
            let values: HashSet<&str> =
                vs.iter().map(|v| value_str(d.values.resolve(*v))).collect();
            (d.keys.resolve(k).to_string(), n, values.len())
        })
        .collect();
    pick_segment_keys(entered, keys)
}

/// The segment keys among (key, first-step events having it, distinct
/// values — counted up to 32): keys on at least half of the `entered`
/// actors' first-step events with 2..=30 values, skipping ids and internal
/// keys; at most 5, most common first (shared with other backends).
pub fn pick_segment_keys(entered: u64, keys: Vec<(String, u64, usize)>) -> Vec<String> {
    let mut keys: Vec<(u64, String)> = keys
        .into_iter()
        .filter_map(|(name, n, values)| {
            let skip = name.starts_with("$group_")
                || name.ends_with("_id")
                || name.contains("url")
                || name == dropscope_core::event::ELEMENTS_KEY
                || name.starts_with("$set");
            (!skip && (2..=30).contains(&values) && n * 2 >= entered).then_some((n, name))
        })
        .collect();
    keys.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    keys.truncate(5);
    keys.into_iter().map(|(_, k)| k).collect()
}

/// A readable report.
pub fn render_text(r: &DiagnosisResult) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Funnel");
    for s in &r.steps {
        let _ = writeln!(
            out,
            "  {}. {:<28} {:>9}  {:>6.1}% of entrants (95% {:.1}–{:.1}%)  {:>6.1}% from previous",
            s.order + 1,
            s.name,
            s.count,
            s.conversion_from_first * 100.0,
            s.conversion_from_first_interval[0] * 100.0,
            s.conversion_from_first_interval[1] * 100.0,
            s.conversion_from_previous * 100.0
        );
    }
    if let Some((a, b)) = r.largest_drop {
        let (sa, sb) = (&r.steps[a], &r.steps[b]);
        let _ = writeln!(
            out,
            "\nLargest drop: {} → {}: {} of {} lost ({:.1}%)",
            sa.name,
            sb.name,
            sb.dropped,
            sa.count,
            if sa.count == 0 {
                0.0
            } else {
                sb.dropped as f64 / sa.count as f64 * 100.0
            }
        );
    }
    let _ = writeln!(
        out,
        "\nDrivers (q < {}; {} hypotheses tested):",
        r.q_threshold, r.hypotheses
    );
    if r.drivers.is_empty() {
        let _ = writeln!(out, "  none survive the correction");
    }
    // Columns as wide as their widest entry, so that the lines align.
    let name_w = r
        .drivers
        .iter()
        .map(|d| d.row.event.chars().count())
        .max()
        .unwrap_or(0);
    let kind_w = r.drivers.iter().map(|d| d.kind.len()).max().unwrap_or(0);
    for d in &r.drivers {
        let adj = match d.row.adjusted_odds_ratio {
            Some(a) => format!(", adjusted {a:.2}"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<8} {:<kind_w$} {:<name_w$} odds {:>6.2} (95% {:.2}–{:.2}{adj})  {}/{} converters vs {}/{} drop-offs  q={:.2e}  [from step {}]{}",
            d.row.correlation_type,
            d.kind,
            d.row.event,
            d.row.odds_ratio,
            d.row.odds_ratio_interval[0],
            d.row.odds_ratio_interval[1],
            d.row.success_count,
            d.row.success_total,
            d.row.failure_count,
            d.row.failure_total,
            d.row.q_value,
            d.from_step + 1,
            d.row.simpson_warning.as_ref().map(|w| format!("  ⚠ {w}")).unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "\nSegments converting differently (q < {}):",
        r.q_threshold
    );
    if r.segments.is_empty() {
        let _ = writeln!(out, "  none");
    }
    let segment = |s: &SegmentFinding| format!("{}={}", s.property, s.value);
    let seg_w = r
        .segments
        .iter()
        .map(|s| segment(s).chars().count())
        .max()
        .unwrap_or(0);
    for s in &r.segments {
        let _ = writeln!(
            out,
            "  {:<seg_w$} {:>5.1}% vs {:>5.1}% for the rest ({} of {})  q={:.2e}",
            segment(s),
            s.rate * 100.0,
            s.rest_rate * 100.0,
            s.converted,
            s.entered,
            s.q_value
        );
    }
    if let Some(p) = &r.paths {
        let _ = writeln!(
            out,
            "\nAfter step {}, the {} who dropped did next:",
            p.after_step + 1,
            p.dropped
        );
        for row in p.dropped_sequences.iter().take(5) {
            let _ = writeln!(
                out,
                "  {:>5.1}%  {}",
                row.share * 100.0,
                row.path.join(" → ")
            );
        }
        let _ = writeln!(out, "while the {} who went on did:", p.converted);
        for row in p.converted_sequences.iter().take(5) {
            let _ = writeln!(
                out,
                "  {:>5.1}%  {}",
                row.share * 100.0,
                row.path.join(" → ")
            );
        }
    }
    out
}
