//! Funnel persons: the actors who reached or dropped at a step, paginated,
//! with their matched step times (SEMANTICS.md rule 9).

use dropscope_core::query::{FunnelQuery, QueryKind};
use dropscope_core::result::{ActorRow, PersonsResult};
use dropscope_core::time::format_ts;
use dropscope_core::QueryError;

use crate::funnel::{bd_matches, bd_value};
use crate::ordered::Path;
use crate::plan::Plan;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
pub const MAX_LIMIT: usize = 10_000;

/// Which furthest-step values (1-based) are selected.
pub fn selector(plan: &Plan<'_>) -> Result<Vec<usize>, QueryError> {
    selector_for(plan.q, plan.n())
}

/// [`selector`] for a query of `n` steps (shared with other backends).
pub fn selector_for(q: &FunnelQuery, n: usize) -> Result<Vec<usize>, QueryError> {
    let pf = q.persons_for.clone().unwrap_or_default();
    if let Some(cs) = &pf.custom_steps {
        let mut out = Vec::new();
        for (i, &c) in cs.iter().enumerate() {
            if c < 1 || c as usize > n {
                return Err(QueryError::invalid(
                    format!("persons_for.custom_steps[{i}]"),
                    format!("{c} is not a step (1..{n})"),
                ));
            }
            out.push(c as usize);
        }
        return Ok(out);
    }
    let step = pf.step.unwrap_or(1);
    if step == 0 || step.unsigned_abs() as usize > n {
        return Err(QueryError::invalid(
            "persons_for.step",
            format!("{step} is not a step (1..{n} or -2..-{n})"),
        ));
    }
    if step > 0 {
        Ok((step as usize..=n).collect())
    } else {
        let s = step.unsigned_abs() as usize;
        if s < 2 {
            return Err(QueryError::invalid(
                "persons_for.step",
                "-1 selects nobody: use -2..-N (dropped before step N)",
            ));
        }
        Ok(vec![s - 1])
    }
}

/// Whether a path is selected (bitfield rule: step N reached means bit N-1).
fn selected(plan: &Plan<'_>, sel: &[usize], p: &Path) -> bool {
    let pf = plan.q.persons_for.clone().unwrap_or_default();
    let has_optional = plan.shape.optional.iter().any(|o| *o);
    if pf.custom_steps.is_none() && has_optional {
        let step = pf.step.unwrap_or(1);
        if step > 0 {
            return p.attempt.bits & (1 << (step - 1)) != 0;
        }
    }
    sel.contains(&p.furthest)
}

/// Runs a funnel persons query.
pub fn persons(plan: &Plan<'_>) -> Result<PersonsResult, QueryError> {
    if plan.q.entrance_period_start.is_some() {
        return crate::trends::trend_persons(plan);
    }
    let sel = selector(plan)?;
    let want_bd = plan.q.breakdown_value.clone();
    let rows: Vec<(u32, bool, Path)> = plan.fold_actors(
        Vec::new,
        |acc, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            if scratch.evs.is_empty() {
                return;
            }
            let mut out = Vec::new();
            plan.actor_paths(actor, scratch, &mut out);
            for (k, p) in out {
                if let Some(w) = &want_bd {
                    if plan.breakdown.is_some() && !bd_matches(w, &bd_value(plan, &k)) {
                        continue;
                    }
                }
                if selected(plan, &sel, &p) {
                    acc.push((actor.id, actor.is_person, p));
                    break;
                }
            }
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    Ok(page(plan, rows))
}

/// Sorts actors (id, is a person, path) by label and cuts one page.
pub fn page(plan: &Plan<'_>, rows: Vec<(u32, bool, Path)>) -> PersonsResult {
    let mut rows: Vec<(String, u32, bool, Path)> = rows
        .into_iter()
        .map(|(id, is_person, p)| (plan.actor_label(id, is_person), id, is_person, p))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    let total = rows.len() as u64;
    let limit = plan.q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let offset = plan.q.offset.unwrap_or(0);
    let n = plan.n();
    let dicts = plan.dicts;
    let persons: Vec<ActorRow> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(label, id, is_person, p)| ActorRow {
            id: label.clone(),
            distinct_ids: if *is_person {
                plan.snap
                    .person(*id)
                    .dids()
                    .map(|d| dicts.distinct_ids.resolve(d).to_string())
                    .collect()
            } else {
                vec![label.clone()]
            },
            furthest_step: Some(p.furthest),
            matched_times: (0..n)
                .map(|s| (p.attempt.bits & (1 << s) != 0).then(|| format_ts(p.attempt.times[s])))
                .collect(),
        })
        .collect();
    let next = offset + persons.len();
    PersonsResult {
        persons,
        total,
        offset,
        next_offset: ((next as u64) < total).then_some(next),
    }
}

/// Kinds that return persons.
pub fn is_persons_kind(k: QueryKind) -> bool {
    matches!(k, QueryKind::FunnelPersons | QueryKind::CorrelationPersons)
}
