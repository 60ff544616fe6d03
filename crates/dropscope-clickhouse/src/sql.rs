//! SQL text for ClickHouse: escaping of user values, filters and step
//! conditions (the funnel stages are in `funnel.rs`).
//!
//! Every value that comes from a user (event names, property keys and
//! values, breakdown keys) reaches ClickHouse only through [`quote_str`];
//! identifiers are ours ([`check_ident`]). Event data is never put in SQL
//! text: it is inserted as `JSONEachRow` bodies.

use std::fmt::Write as _;

use dropscope_core::query::{
    Action, FilterType, GroupOp, Operator, PropertyFilter, PropertyFilterItem, PropertyFilters,
};
use dropscope_core::QueryError;

/// A ClickHouse string literal holding exactly `s`: backslash and quote are
/// escaped, control bytes (NUL included) are written as `\xHH`; everything
/// else (UTF-8 included) passes through.
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Accepts only plain identifiers (`[A-Za-z_][A-Za-z0-9_]*`, at most 64).
pub fn check_ident(s: &str) -> Result<&str, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "not a plain identifier (letters, digits, _): {s:?}"
        ))
    }
}

/// What `lower_form` stores: `''` for ASCII text (ClickHouse's `lower`
/// gives Rust's lowercase there), else Rust's `to_lowercase` (which
/// ClickHouse's `lowerUTF8` does not match on every script).
pub fn lower_form(s: &str) -> String {
    if s.is_ascii() {
        String::new()
    } else {
        s.to_lowercase()
    }
}

/// An order-preserving key of a value's number (Rust's `f64` parse, as the
/// engine compares with `gt`/`lt`): 0 = not a number (or NaN, which never
/// compares); −0 is 0.
pub fn num_key(s: &str) -> u64 {
    match s.parse::<f64>() {
        Ok(f) if !f.is_nan() => {
            let f = if f == 0.0 { 0.0 } else { f };
            let b = f.to_bits();
            if b >> 63 == 0 {
                b | (1 << 63)
            } else {
                !b
            }
        }
        _ => 0,
    }
}

/// An order-preserving key of the instant a value denotes for the
/// `is_date_*` operators, as the engine parses it
/// (`dropscope_core::time::parse_instant` in UTC, nanosecond precision):
/// 16 hex digits of the Unix seconds with the sign bit flipped, then 8 of
/// the nanoseconds (a leap second's are ≥ 10⁹, as chrono orders them).
/// `''` = not a date; the engine's comparisons are then false. Computed at
/// ingest (`prop_dates`, `el_dates`, person `dates`, group `date`), so
/// ClickHouse never parses dates.
pub fn date_key(s: &str) -> String {
    match dropscope_core::time::parse_instant(s, chrono_tz::Tz::UTC) {
        Some((d, _)) => format!(
            "{:016x}{:08x}",
            (d.timestamp() as u64) ^ (1 << 63),
            d.timestamp_subsec_nanos()
        ),
        None => String::new(),
    }
}

/// The value of event property `key` (`''` when missing).
pub fn prop_value(key: &str) -> String {
    format!("prop_values[indexOf(prop_keys, {})]", quote_str(key))
}

/// Column prefix of the person properties joined to each event row
/// (`pkeys`, `pvalues`, `plowers`, `pnums`; see `events.rs`).
pub const PERSON_COLS: &str = "p";

/// Column prefix of the properties of the event's group of type `g`.
pub fn group_cols(g: u8) -> String {
    format!("g{g}")
}

/// The value of person property `key` of the event's person (`''` when
/// missing).
pub fn person_value(key: &str) -> String {
    kv_value(PERSON_COLS, key)
}

/// The value of property `key` of the event's group of type `g`.
pub fn group_value(g: u8, key: &str) -> String {
    kv_value(&group_cols(g), key)
}

/// Tagged values for partitions (see `events::Part`): `s<value>` of event
/// property `key`.
pub fn prop_tagged(key: &str) -> String {
    format!("concat('s', {})", prop_value(key))
}

/// Tagged person property: `m` missing, `z` JSON null, else `s<value>`.
pub fn person_tagged(key: &str) -> String {
    kv_tagged(PERSON_COLS, key)
}

/// Tagged group property (as [`person_tagged`]).
pub fn group_tagged(g: u8, key: &str) -> String {
    kv_tagged(&group_cols(g), key)
}

fn kv_tagged(prefix: &str, key: &str) -> String {
    let k = quote_str(key);
    format!(
        "if(has({prefix}null_keys, {k}), 'z', if(indexOf({prefix}keys, {k}) = 0, 'm', concat('s', {})))",
        kv_value(prefix, key)
    )
}

fn kv_value(prefix: &str, key: &str) -> String {
    format!("{prefix}values[indexOf({prefix}keys, {})]", quote_str(key))
}

/// Cohorts as a query sees them: the records and the identity state that
/// resolves static members to canonical persons.
pub struct CohortData<'a> {
    pub cohorts: &'a [dropscope_core::event::CohortRecord],
    pub identity: &'a crate::identity::Identity,
}

/// Compile context: cohorts (`None`: only checking — cohort conditions
/// become an identifier ClickHouse rejects, so such SQL can never run).
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub data: Option<&'a CohortData<'a>>,
    depth: usize,
}

impl<'a> Scope<'a> {
    pub fn new(data: Option<&'a CohortData<'a>>) -> Scope<'a> {
        Scope { data, depth: 0 }
    }
}

/// Compiles filters into a boolean SQL expression over an event row
/// (`None` = no filter). Unsupported operators are refused as unsupported;
/// malformed filters as invalid, like the embedded engine. Cohort filters
/// need [`filters_in`] with cohort data.
pub fn filters(f: Option<&PropertyFilters>, field: &str) -> Result<Option<String>, QueryError> {
    filters_in(Scope::new(None), f, field)
}

/// [`filters`] with cohorts.
pub fn filters_in(
    sc: Scope<'_>,
    f: Option<&PropertyFilters>,
    field: &str,
) -> Result<Option<String>, QueryError> {
    let Some(f) = f else { return Ok(None) };
    match f {
        PropertyFilters::List(items) if items.is_empty() => Ok(None),
        PropertyFilters::List(items) => Ok(Some(items_sql(sc, items, GroupOp::And, field)?)),
        PropertyFilters::Group(g) => Ok(Some(items_sql(
            sc,
            &g.values,
            g.kind,
            &format!("{field}.values"),
        )?)),
    }
}

fn items_sql(
    sc: Scope<'_>,
    items: &[PropertyFilterItem],
    op: GroupOp,
    field: &str,
) -> Result<String, QueryError> {
    if items.is_empty() {
        // Empty AND and empty OR both let everything through (as the engine).
        return Ok("1".into());
    }
    let mut parts = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        parts.push(match it {
            PropertyFilterItem::Group(g) => {
                items_sql(sc, &g.values, g.kind, &format!("{f}.values"))?
            }
            PropertyFilterItem::Filter(p) => leaf_sql(sc, p, &f)?,
        });
    }
    let joiner = match op {
        GroupOp::And => " AND ",
        GroupOp::Or => " OR ",
    };
    Ok(format!("({})", parts.join(joiner)))
}

/// A compiled value test (the engine's `filter::Test`).
struct Test {
    op: Operator,
    values: Vec<String>,
    /// `numbers.first()` of the engine: the first value that parses.
    number: Option<f64>,
    /// `regex`/`not_regex`: the pattern in RE2 (see `crate::re2`).
    regex: Option<String>,
    /// `is_date_*`: the first value's [`date_key`] (`''`: not a date).
    date: String,
}

impl Test {
    fn new(p: &PropertyFilter, field: &str) -> Result<Test, QueryError> {
        let op = p.operator.unwrap_or_default();
        let values = p.values();
        if p.needs_value() && values.is_empty() {
            return Err(QueryError::invalid(
                format!("{field}.value"),
                format!("operator {op:?} needs a value"),
            ));
        }
        let regex = match op {
            Operator::Regex | Operator::NotRegex => {
                let pat = values.first().cloned().unwrap_or_default();
                Some(regex_re2(&pat, field)?)
            }
            _ => None,
        };
        let number = values.iter().find_map(|v| v.parse::<f64>().ok());
        let date = values.first().map(|v| date_key(v)).unwrap_or_default();
        Ok(Test {
            op,
            values,
            number,
            regex,
            date,
        })
    }

    /// Whether a missing property passes.
    fn missing(&self) -> bool {
        matches!(
            self.op,
            Operator::IsNot
                | Operator::NotIcontains
                | Operator::NotRegex
                | Operator::IsNotSet
                | Operator::NotIn
        )
    }

    /// The test of a present value: `v` its string form, `l` its lowercase
    /// (see [`lower_form`]), `n` its number key, `d` its date key (see
    /// [`date_key`]; `'?'` on rows stored before date keys existed: a date
    /// test fails there rather than answer without them), `z` whether it is
    /// JSON null (only element attributes keep nulls).
    fn sql(&self, v: &str, l: &str, n: &str, d: &str, z: &str) -> String {
        use Operator::*;
        let list = || {
            self.values
                .iter()
                .map(|x| quote_str(x))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let contains = || {
            let lowered = format!("if({l} = '', lower({v}), {l})");
            let any = self
                .values
                .iter()
                .map(|x| format!("position({lowered}, {}) > 0", quote_str(&x.to_lowercase())))
                .collect::<Vec<_>>()
                .join(" OR ");
            format!("({any})")
        };
        match self.op {
            Exact | In => format!("({v} IN ({}))", list()),
            IsNot | NotIn => format!("NOT ({v} IN ({}))", list()),
            Icontains => contains(),
            NotIcontains => format!("NOT {}", contains()),
            Regex => format!(
                "match({v}, {})",
                quote_str(self.regex.as_deref().unwrap_or(""))
            ),
            NotRegex => format!(
                "NOT match({v}, {})",
                quote_str(self.regex.as_deref().unwrap_or(""))
            ),
            Gt | Gte | Lt | Lte => match self.number.filter(|y| !y.is_nan()) {
                None => "0".into(),
                Some(y) => {
                    let cmp = match self.op {
                        Gt => ">",
                        Gte => ">=",
                        Lt => "<",
                        _ => "<=",
                    };
                    format!(
                        "({n} != 0 AND {n} {cmp} toUInt64({}))",
                        num_key(&y.to_string())
                    )
                }
            },
            IsSet => format!("({z} = 0)"),
            IsNotSet => format!("({z} != 0)"),
            IsDateExact | IsDateBefore | IsDateAfter if self.date.is_empty() => "0".into(),
            IsDateExact | IsDateBefore | IsDateAfter => {
                let cmp = match self.op {
                    IsDateExact => "=",
                    IsDateBefore => "<",
                    _ => ">",
                };
                format!(
                    "(throwIf({d} = '?') = 0 AND {d} != '' AND {d} {cmp} {})",
                    quote_str(&self.date)
                )
            }
        }
    }
}

/// The RE2 pattern ClickHouse's `match` runs for the engine's Rust
/// pattern (`crate::re2::to_re2`: same matches); patterns without one are
/// refused as unsupported. Invalid patterns are refused as invalid first,
/// as the engine does.
fn regex_re2(pat: &str, field: &str) -> Result<String, QueryError> {
    regex::Regex::new(pat)
        .map_err(|e| QueryError::invalid(format!("{field}.value"), format!("bad regex: {e}")))?;
    crate::re2::to_re2(pat).map_err(|why| {
        QueryError::Unsupported(format!(
            "{field}.value: this regular expression has no equivalent for ClickHouse's RE2 ({why})"
        ))
    })
}

fn leaf_sql(sc: Scope<'_>, p: &PropertyFilter, field: &str) -> Result<String, QueryError> {
    let kind = p.kind.unwrap_or_default();
    if kind == FilterType::Cohort {
        return cohort_leaf(sc, p, field);
    }
    let prefix = match kind {
        FilterType::Event => None,
        FilterType::Person => Some(PERSON_COLS.to_string()),
        FilterType::Group => Some(group_cols(p.group_type_index.ok_or_else(|| {
            QueryError::invalid(
                format!("{field}.group_type_index"),
                "group filters need a group_type_index",
            )
        })?)),
        FilterType::Element | FilterType::Cohort => None,
    };
    let test = Test::new(p, field)?;
    let key = quote_str(&p.key);
    if kind == FilterType::Element {
        // Any element of the chain with this attribute passing the test
        // (JSON null attributes included, as "" and null); no chain: the
        // missing answer.
        let t = test.sql("v", "l", "n", "d", "z");
        return Ok(format!(
            "if(el_chain = 0, {m}, arrayExists((a, v, z, l, n, d) -> a = {key} AND {t}, el_attrs, el_values, el_nulls, el_lower, el_nums, el_dates))",
            m = u8::from(test.missing()),
        ));
    }
    let (k, v, l, n, d) = match &prefix {
        None => (
            "prop_keys".to_string(),
            "prop_values".to_string(),
            "prop_lower".to_string(),
            "prop_nums".to_string(),
            "prop_dates".to_string(),
        ),
        Some(px) => (
            format!("{px}keys"),
            format!("{px}values"),
            format!("{px}lowers"),
            format!("{px}nums"),
            format!("{px}dates"),
        ),
    };
    let i = format!("indexOf({k}, {key})");
    let t = test.sql(
        &format!("{v}[{i}]"),
        &format!("{l}[{i}]"),
        &format!("{n}[{i}]"),
        &format!("{d}[{i}]"),
        "0",
    );
    Ok(if test.missing() {
        format!("({i} = 0 OR {t})")
    } else {
        format!("({i} != 0 AND {t})")
    })
}

/// A cohort filter: membership of the event's person (`in`, or `not_in` /
/// `is_not`).
fn cohort_leaf(sc: Scope<'_>, p: &PropertyFilter, field: &str) -> Result<String, QueryError> {
    let id = p.cohort_id(field)?;
    let member = cohort_sql(sc, id, &format!("{field}.value"))?;
    Ok(match p.operator {
        Some(Operator::NotIn) | Some(Operator::IsNot) => format!("NOT ({member})"),
        _ => format!("({member})"),
    })
}

/// Whether the row's person belongs to cohort `id` (the engine's
/// `cohort_members`): a dynamic cohort's person-property definition, else
/// its static members (distinct ids, or person labels) resolved now.
pub fn cohort_sql(sc: Scope<'_>, id: u64, field: &str) -> Result<String, QueryError> {
    let Some(data) = sc.data else {
        return Ok("__cohort_not_resolved".into());
    };
    if sc.depth > 8 {
        return Err(QueryError::Unsupported(format!(
            "{field}: cohorts nested this deep are not supported by the ClickHouse backend"
        )));
    }
    let c = data
        .cohorts
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| QueryError::invalid(field, format!("unknown cohort {id}")))?;
    if !c.is_static {
        if let Some(d) = &c.definition {
            let props = d.get("properties").cloned().unwrap_or_else(|| d.clone());
            if let Ok(parsed) = serde_json::from_value::<PropertyFilters>(props) {
                if person_only(&parsed) {
                    let inner = Scope {
                        data: sc.data,
                        depth: sc.depth + 1,
                    };
                    match filters_in(inner, Some(&parsed), "cohort") {
                        Ok(Some(sql)) => return Ok(sql),
                        Ok(None) | Err(QueryError::Invalid { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    let mut ids: Vec<u64> = Vec::new();
    for m in &c.members {
        match data.identity.person_of(m) {
            Some(p) => ids.push(p),
            None => ids.extend(data.identity.persons_labelled(m)),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok("0".into());
    }
    Ok(format!(
        "person IN ({})",
        ids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Whether every leaf of a cohort definition reads person properties or
/// cohorts (otherwise the engine falls back to the static members).
fn person_only(f: &PropertyFilters) -> bool {
    fn items(xs: &[PropertyFilterItem]) -> bool {
        xs.iter().all(|x| match x {
            PropertyFilterItem::Group(g) => items(&g.values),
            PropertyFilterItem::Filter(p) => matches!(
                p.kind.unwrap_or_default(),
                FilterType::Person | FilterType::Cohort
            ),
        })
    }
    match f {
        PropertyFilters::List(xs) => items(xs),
        PropertyFilters::Group(g) => items(&g.values),
    }
}

/// The condition for one step (or exclusion): its event or action, and its
/// own filters. Cohort filters need [`step_condition_in`].
pub fn step_condition(
    event: Option<&str>,
    action: Option<&Action>,
    props: Option<&PropertyFilters>,
    field: &str,
) -> Result<String, QueryError> {
    step_condition_in(Scope::new(None), event, action, props, field, true)
}

/// [`step_condition`] with cohorts; `with_filters == false` leaves out the
/// property filters (of the step and of the action's alternatives; element
/// conditions stay), as first-time-for-user's "first event of the step"
/// without filters does.
pub fn step_condition_in(
    sc: Scope<'_>,
    event: Option<&str>,
    action: Option<&Action>,
    props: Option<&PropertyFilters>,
    field: &str,
    with_filters: bool,
) -> Result<String, QueryError> {
    let mut parts = Vec::new();
    match action {
        Some(a) => {
            if a.match_any.is_empty() {
                return Err(QueryError::invalid(
                    format!("{field}.action.match_any"),
                    "an action needs at least one alternative",
                ));
            }
            let mut alts = Vec::new();
            for (i, alt) in a.match_any.iter().enumerate() {
                let f = format!("{field}.action.match_any[{i}]");
                let mut c = vec![match &alt.event {
                    Some(e) => format!("event = {}", quote_str(e)),
                    None => "1".into(),
                }];
                let filt = filters_in(sc, alt.properties.as_ref(), &format!("{f}.properties"))?;
                if let Some(x) = filt.filter(|_| with_filters) {
                    c.push(x);
                }
                if let Some(m) = alt.elements.as_ref().filter(|m| !m.is_empty()) {
                    let items: Vec<serde_json::Value> = m
                        .iter()
                        .map(|(k, v)| serde_json::json!({"key": k, "value": v, "operator": "exact", "type": "element"}))
                        .collect();
                    let pf: PropertyFilters =
                        serde_json::from_value(serde_json::Value::Array(items)).map_err(|e| {
                            QueryError::invalid(format!("{f}.elements"), e.to_string())
                        })?;
                    if let Some(x) = filters_in(sc, Some(&pf), &format!("{f}.elements"))? {
                        c.push(x);
                    }
                }
                alts.push(format!("({})", c.join(" AND ")));
            }
            parts.push(format!("({})", alts.join(" OR ")));
        }
        None => {
            if let Some(e) = event {
                parts.push(format!("event = {}", quote_str(e)));
            }
        }
    }
    let filt = filters_in(sc, props, &format!("{field}.properties"))?;
    if let Some(x) = filt.filter(|_| with_filters) {
        parts.push(x);
    }
    Ok(if parts.is_empty() {
        "1".into()
    } else {
        parts.join(" AND ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_backslashes_and_control_bytes() {
        assert_eq!(quote_str(""), "''");
        assert_eq!(quote_str("plain"), "'plain'");
        assert_eq!(quote_str("it's"), r"'it\'s'");
        assert_eq!(quote_str(r"a\b"), r"'a\\b'");
        assert_eq!(quote_str("\\'"), r"'\\\''");
        assert_eq!(quote_str("nul\0byte"), r"'nul\x00byte'");
        assert_eq!(quote_str("tab\tnl\ncr\r"), r"'tab\x09nl\x0Acr\x0D'");
        assert_eq!(quote_str("del\x7f"), r"'del\x7F'");
        assert_eq!(quote_str("ünï 😀"), "'ünï 😀'");
        assert_eq!(
            quote_str("x'); DROP TABLE events; --"),
            r"'x\'); DROP TABLE events; --'"
        );
        assert_eq!(quote_str(r"\'; SELECT 1 --"), r"'\\\'; SELECT 1 --'");
    }

    #[test]
    fn quoted_literals_never_end_early() {
        // Whatever the input, the literal's only unescaped quotes are the
        // first and the last character.
        for s in [
            "'", "''", "\\", "\\\\'", "'\\", "a'b'c", "\0'\0", "`", "\"", "';--", "\\x27",
        ] {
            let q = quote_str(s);
            let inner = &q[1..q.len() - 1];
            let mut escaped = false;
            for c in inner.chars() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else {
                    assert_ne!(c, '\'', "unescaped quote in {q}");
                }
            }
            assert!(!escaped, "dangling backslash in {q}");
            assert!(!inner.contains('\0'));
        }
    }

    #[test]
    fn date_keys_order_as_chrono() {
        use dropscope_core::time::parse_instant;
        let xs = [
            "",
            "nope",
            "-7d",
            "1969-12-31 23:59:59.999999999",
            "1970-01-01",
            "1970-01-01T00:00:00.000000001Z",
            "2016-12-31T23:59:59.5Z",
            "2016-12-31T23:59:60.2Z",
            "2017-01-01T00:00:00Z",
            "2021-05-14 10:00",
            "2021-05-14T10:00:00+02:00",
            "  2021-05-14T08:00:00Z ",
            "+12345-01-01 00:00:00",
            "-0044-03-15 12:00:00",
            "1700000000",
        ];
        for a in xs {
            assert_eq!(
                date_key(a).is_empty(),
                parse_instant(a, chrono_tz::Tz::UTC).is_none(),
                "{a}"
            );
            for b in xs {
                let (ka, kb) = (date_key(a), date_key(b));
                let (Some((pa, _)), Some((pb, _))) = (
                    parse_instant(a, chrono_tz::Tz::UTC),
                    parse_instant(b, chrono_tz::Tz::UTC),
                ) else {
                    continue;
                };
                assert_eq!(ka.len(), 24);
                assert_eq!(ka.cmp(&kb), pa.cmp(&pb), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn identifiers() {
        assert!(check_ident("dropscope_case_1").is_ok());
        assert!(check_ident("_x9").is_ok());
        for bad in ["", "1abc", "a-b", "a b", "a;drop", "a`b", "ä"] {
            assert!(check_ident(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_compile_and_refuse() {
        let f: PropertyFilters = serde_json::from_value(serde_json::json!([
            {"key": "$browser", "value": ["Chrome", "it's"], "operator": "exact", "type": "event"},
            {"type": "OR", "values": [{"key": "x", "value": "AbC", "operator": "icontains"}]}
        ]))
        .unwrap();
        let sql = filters(Some(&f), "properties").unwrap().unwrap();
        assert!(sql.contains(r"IN ('Chrome', 'it\'s')"), "{sql}");
        assert!(sql.contains("'abc'"), "{sql}");
        let person: PropertyFilters = serde_json::from_value(serde_json::json!([
            {"key": "email", "value": "2021-01-01", "operator": "is_date_before", "type": "person"},
            {"key": "since", "value": "-7d", "operator": "is_date_after", "type": "person"}
        ]))
        .unwrap();
        let sql = filters(Some(&person), "properties").unwrap().unwrap();
        assert!(
            sql.contains(&format!("< '{}'", date_key("2021-01-01"))),
            "{sql}"
        );
        // `-7d` is not a date to the engine: the test is false.
        assert!(sql.ends_with(" AND 0))"), "{sql}");
        let novalue: PropertyFilters =
            serde_json::from_value(serde_json::json!([{"key": "k", "operator": "exact"}])).unwrap();
        assert!(matches!(
            filters(Some(&novalue), "properties"),
            Err(QueryError::Invalid { .. })
        ));
    }
}
