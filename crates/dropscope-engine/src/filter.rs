//! Property filters compiled against a snapshot's dictionaries.
//!
//! A filter names its key by id; comparing a value is done on the value's
//! string form and cached per value id, so the hot loop does one lookup in a
//! small per-event pair list and one byte read.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};

use dropscope_core::query::{
    FilterType, GroupOp, Operator, PropertyFilter, PropertyFilterItem, PropertyFilters,
};
use dropscope_core::QueryError;
use dropscope_store::dict::value_str;
use dropscope_store::{Dicts, EventsView, Snapshot};
use regex::Regex;

/// Where a filter reads its value.
#[derive(Debug, Clone)]
pub enum Source {
    Event,
    Person,
    Group(u8),
    Element,
    Cohort(HashSet<u32>),
}

/// A compiled value test.
#[derive(Debug)]
pub struct Test {
    op: Operator,
    values: Vec<String>,
    lower: Vec<String>,
    numbers: Vec<f64>,
    regex: Option<Regex>,
}

impl Test {
    fn new(f: &PropertyFilter, field: &str) -> Result<Test, QueryError> {
        let op = f.operator.unwrap_or_default();
        let values = f.values();
        let needs_value = f.needs_value();
        if needs_value && values.is_empty() && f.kind != Some(FilterType::Cohort) {
            return Err(QueryError::invalid(
                format!("{field}.value"),
                format!("operator {op:?} needs a value"),
            ));
        }
        let regex = match op {
            Operator::Regex | Operator::NotRegex => Some(
                Regex::new(values.first().map(String::as_str).unwrap_or("")).map_err(|e| {
                    QueryError::invalid(format!("{field}.value"), format!("bad regex: {e}"))
                })?,
            ),
            _ => None,
        };
        let numbers = values
            .iter()
            .filter_map(|v| v.parse::<f64>().ok())
            .collect();
        let lower = values.iter().map(|v| v.to_lowercase()).collect();
        Ok(Test {
            op,
            values,
            lower,
            numbers,
            regex,
        })
    }

    /// Tests a present value (string form, and whether it is a JSON number).
    pub fn matches(&self, s: &str, is_null: bool) -> bool {
        use Operator::*;
        match self.op {
            Exact | In => self.values.iter().any(|v| v == s),
            IsNot | NotIn => !self.values.iter().any(|v| v == s),
            Icontains => {
                let l = s.to_lowercase();
                self.lower.iter().any(|v| l.contains(v.as_str()))
            }
            NotIcontains => {
                let l = s.to_lowercase();
                !self.lower.iter().any(|v| l.contains(v.as_str()))
            }
            Regex => self.regex.as_ref().is_some_and(|r| r.is_match(s)),
            NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(s)),
            Gt | Gte | Lt | Lte => {
                let Ok(x) = s.parse::<f64>() else {
                    return false;
                };
                let Some(&y) = self.numbers.first() else {
                    return false;
                };
                match self.op {
                    Gt => x > y,
                    Gte => x >= y,
                    Lt => x < y,
                    _ => x <= y,
                }
            }
            IsSet => !is_null,
            IsNotSet => is_null,
            IsDateExact | IsDateBefore | IsDateAfter => {
                let tz = chrono_tz::Tz::UTC;
                let (Some((a, _)), Some((b, _))) = (
                    dropscope_core::time::parse_instant(s, tz),
                    self.values
                        .first()
                        .and_then(|v| dropscope_core::time::parse_instant(v, tz)),
                ) else {
                    return false;
                };
                match self.op {
                    IsDateExact => a == b,
                    IsDateBefore => a < b,
                    _ => a > b,
                }
            }
        }
    }

    /// The answer when the property is absent.
    pub fn matches_missing(&self) -> bool {
        matches!(
            self.op,
            Operator::IsNot
                | Operator::NotIcontains
                | Operator::NotRegex
                | Operator::IsNotSet
                | Operator::NotIn
        )
    }
}

/// One compiled filter.
#[derive(Debug)]
pub struct Leaf {
    pub source: Source,
    /// Key id; `None` when the key never occurs in the store.
    pub key: Option<u32>,
    pub key_name: String,
    pub test: Test,
    /// Per value id known when compiled: 0 unknown, 1 match, 2 no match.
    /// Values interned later are tested without the cache.
    cache: Vec<AtomicU8>,
}

/// A compiled filter tree.
#[derive(Debug)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Leaf(Box<Leaf>),
}

/// What a filter can look at for one event.
pub struct EventCtx<'a> {
    pub view: &'a EventsView<'a>,
    pub row: usize,
    pub person: u32,
}

impl Filter {
    pub fn compile(
        f: Option<&PropertyFilters>,
        field: &str,
        snap: &Snapshot,
        dicts: &Dicts,
    ) -> Result<Option<Filter>, QueryError> {
        let Some(f) = f else { return Ok(None) };
        let items = match f {
            PropertyFilters::List(items) => {
                if items.is_empty() {
                    return Ok(None);
                }
                Filter::All(compile_items(items, field, snap, dicts)?)
            }
            PropertyFilters::Group(g) => compile_group(g.kind, &g.values, field, snap, dicts)?,
        };
        Ok(Some(items))
    }

    /// Whether the event passes.
    pub fn eval(&self, ctx: &EventCtx<'_>, snap: &Snapshot, dicts: &Dicts) -> bool {
        match self {
            Filter::All(fs) => fs.iter().all(|f| f.eval(ctx, snap, dicts)),
            Filter::Any(fs) => fs.is_empty() || fs.iter().any(|f| f.eval(ctx, snap, dicts)),
            Filter::Leaf(l) => l.eval(ctx, snap, dicts),
        }
    }

    /// Person-level filters only (used for cohorts and actor properties).
    pub fn eval_person(&self, person: u32, snap: &Snapshot, dicts: &Dicts) -> bool {
        match self {
            Filter::All(fs) => fs.iter().all(|f| f.eval_person(person, snap, dicts)),
            Filter::Any(fs) => {
                fs.is_empty() || fs.iter().any(|f| f.eval_person(person, snap, dicts))
            }
            Filter::Leaf(l) => match &l.source {
                Source::Person => {
                    l.eval_value(snap.person(person).prop(l.key.unwrap_or(u32::MAX)), dicts)
                }
                Source::Cohort(set) => set.contains(&person) != l.test.matches_missing(),
                _ => true,
            },
        }
    }

    /// Whether any leaf reads person properties or cohorts.
    pub fn uses_person(&self) -> bool {
        match self {
            Filter::All(fs) | Filter::Any(fs) => fs.iter().any(Filter::uses_person),
            Filter::Leaf(l) => matches!(l.source, Source::Person | Source::Cohort(_)),
        }
    }
}

fn compile_items(
    items: &[PropertyFilterItem],
    field: &str,
    snap: &Snapshot,
    dicts: &Dicts,
) -> Result<Vec<Filter>, QueryError> {
    items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let field = format!("{field}[{i}]");
            match it {
                PropertyFilterItem::Group(g) => {
                    compile_group(g.kind, &g.values, &field, snap, dicts)
                }
                PropertyFilterItem::Filter(f) => compile_leaf(f, &field, snap, dicts),
            }
        })
        .collect()
}

fn compile_group(
    op: GroupOp,
    values: &[PropertyFilterItem],
    field: &str,
    snap: &Snapshot,
    dicts: &Dicts,
) -> Result<Filter, QueryError> {
    let inner = compile_items(values, &format!("{field}.values"), snap, dicts)?;
    Ok(match op {
        GroupOp::And => Filter::All(inner),
        GroupOp::Or => Filter::Any(inner),
    })
}

fn compile_leaf(
    f: &PropertyFilter,
    field: &str,
    snap: &Snapshot,
    dicts: &Dicts,
) -> Result<Filter, QueryError> {
    let kind = f.kind.unwrap_or_default();
    let source = match kind {
        FilterType::Event => Source::Event,
        FilterType::Person => Source::Person,
        FilterType::Element => Source::Element,
        FilterType::Group => Source::Group(f.group_type_index.ok_or_else(|| {
            QueryError::invalid(
                format!("{field}.group_type_index"),
                "group filters need a group_type_index",
            )
        })?),
        FilterType::Cohort => {
            let id = f.cohort_id(field)?;
            Source::Cohort(cohort_members(id, snap, dicts).ok_or_else(|| {
                QueryError::invalid(format!("{field}.value"), format!("unknown cohort {id}"))
            })?)
        }
    };
    let test = if let Source::Cohort(_) = source {
        let op = match f.operator {
            Some(Operator::NotIn) | Some(Operator::IsNot) => Operator::NotIn,
            _ => Operator::In,
        };
        Test {
            op,
            values: vec![],
            lower: vec![],
            numbers: vec![],
            regex: None,
        }
    } else {
        Test::new(f, field)?
    };
    let key = dicts.keys.get(&f.key);
    let cache_len = if matches!(source, Source::Cohort(_) | Source::Element) {
        0
    } else {
        dicts.values.len()
    };
    Ok(Filter::Leaf(Box::new(Leaf {
        source,
        key,
        key_name: f.key.clone(),
        test,
        cache: (0..cache_len).map(|_| AtomicU8::new(0)).collect(),
    })))
}

impl Leaf {
    fn eval_value(&self, v: Option<u32>, dicts: &Dicts) -> bool {
        let Some(v) = v else {
            return self.test.matches_missing();
        };
        let slot = self.cache.get(v as usize);
        match slot.map(|c| c.load(Ordering::Relaxed)) {
            Some(1) => true,
            Some(2) => false,
            _ => {
                let tagged = dicts.values.resolve(v);
                let is_null = tagged == "z";
                let r = if is_null && !matches!(self.test.op, Operator::IsSet | Operator::IsNotSet)
                {
                    self.test.matches_missing()
                } else {
                    self.test.matches(value_str(tagged), is_null)
                };
                if let Some(c) = slot {
                    c.store(if r { 1 } else { 2 }, Ordering::Relaxed);
                }
                r
            }
        }
    }

    fn eval(&self, ctx: &EventCtx<'_>, snap: &Snapshot, dicts: &Dicts) -> bool {
        match &self.source {
            Source::Event => {
                let v = self.key.and_then(|k| ctx.view.prop(ctx.row, k));
                self.eval_value(v, dicts)
            }
            Source::Person => {
                let v = self.key.and_then(|k| snap.person(ctx.person).prop(k));
                self.eval_value(v, dicts)
            }
            Source::Cohort(set) => set.contains(&ctx.person) == (self.test.op == Operator::In),
            Source::Group(idx) => {
                let gkey = group_key_of(ctx.view, ctx.row, *idx, dicts);
                let _ = &gkey;
                let v = gkey.and_then(|g| {
                    let props = snap.groups().props.get(&(*idx, g))?;
                    let k = self.key?;
                    props
                        .binary_search_by_key(&k, |(a, _)| *a)
                        .ok()
                        .map(|i| props[i].1)
                });
                self.eval_value(v, dicts)
            }
            Source::Element => {
                let chain = dicts
                    .keys
                    .get(dropscope_core::event::ELEMENTS_KEY)
                    .and_then(|k| ctx.view.prop(ctx.row, k));
                let Some(chain) = chain else {
                    return self.test.matches_missing();
                };
                let els = dropscope_store::dict::decode_value(dicts.values.resolve(chain));
                let attr = self.key_name.as_str();
                let hit = els.as_array().is_some_and(|a| {
                    a.iter().any(|e| {
                        e.get(attr)
                            .map(|v| {
                                self.test.matches(
                                    &dropscope_core::event::value_string_form(v),
                                    v.is_null(),
                                )
                            })
                            .unwrap_or(false)
                    })
                });
                hit
            }
        }
    }
}

/// The group key (string form of `$group_N`) of an event.
pub fn group_key_of(view: &EventsView<'_>, row: usize, idx: u8, dicts: &Dicts) -> Option<String> {
    let k = dicts.keys.get(&format!("$group_{idx}"))?;
    let v = view.prop(row, k)?;
    let s = value_str(dicts.values.resolve(v));
    (!s.is_empty()).then(|| s.to_string())
}

/// Canonical persons in a cohort: static members by label or distinct id, or
/// persons matching a property definition.
pub fn cohort_members(id: u64, snap: &Snapshot, dicts: &Dicts) -> Option<HashSet<u32>> {
    let c = snap.cohorts().iter().find(|c| c.id == id)?;
    let mut out = HashSet::new();
    let definition = c
        .definition
        .as_ref()
        .filter(|_| !c.is_static)
        .and_then(|d| {
            let props = d.get("properties").cloned().unwrap_or_else(|| d.clone());
            let parsed: PropertyFilters = serde_json::from_value(props).ok()?;
            let f = Filter::compile(Some(&parsed), "cohort", snap, dicts).ok()??;
            (!uses_non_person(&f)).then_some(f)
        });
    if let Some(f) = definition {
        for i in 0..snap.actor_count() {
            let p = snap.actor_person(i);
            if f.eval_person(p, snap, dicts) {
                out.insert(p);
            }
        }
        return Some(out);
    }
    for m in &c.members {
        if let Some(p) = dicts
            .distinct_ids
            .get(m)
            .and_then(|d| snap.identity().person_of_did(d))
        {
            out.insert(p);
            continue;
        }
        for i in 0..snap.actor_count() {
            let p = snap.actor_person(i);
            if snap.person(p).label(snap.dicts()) == *m {
                out.insert(p);
            }
        }
    }
    Some(out)
}

fn uses_non_person(f: &Filter) -> bool {
    match f {
        Filter::All(fs) | Filter::Any(fs) => fs.iter().any(uses_non_person),
        Filter::Leaf(l) => !matches!(l.source, Source::Person | Source::Cohort(_)),
    }
}
