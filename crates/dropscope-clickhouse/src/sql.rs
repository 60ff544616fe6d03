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

/// The value of event property `key` (`''` when missing).
pub fn prop_value(key: &str) -> String {
    format!("prop_values[indexOf(prop_keys, {})]", quote_str(key))
}

fn prop_present(key: &str) -> String {
    format!("has(prop_keys, {})", quote_str(key))
}

/// Compiles filters on event properties into a boolean SQL expression
/// (`None` = no filter). Other filter types and operators are refused as
/// unsupported; malformed filters as invalid, like the embedded engine.
pub fn filters(f: Option<&PropertyFilters>, field: &str) -> Result<Option<String>, QueryError> {
    let Some(f) = f else { return Ok(None) };
    match f {
        PropertyFilters::List(items) if items.is_empty() => Ok(None),
        PropertyFilters::List(items) => Ok(Some(items_sql(items, GroupOp::And, field)?)),
        PropertyFilters::Group(g) => Ok(Some(items_sql(
            &g.values,
            g.kind,
            &format!("{field}.values"),
        )?)),
    }
}

fn items_sql(items: &[PropertyFilterItem], op: GroupOp, field: &str) -> Result<String, QueryError> {
    if items.is_empty() {
        // Empty AND and empty OR both let everything through (as the engine).
        return Ok("1".into());
    }
    let mut parts = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        parts.push(match it {
            PropertyFilterItem::Group(g) => items_sql(&g.values, g.kind, &format!("{f}.values"))?,
            PropertyFilterItem::Filter(p) => leaf_sql(p, &f)?,
        });
    }
    let joiner = match op {
        GroupOp::And => " AND ",
        GroupOp::Or => " OR ",
    };
    Ok(format!("({})", parts.join(joiner)))
}

fn leaf_sql(p: &PropertyFilter, field: &str) -> Result<String, QueryError> {
    let kind = p.kind.unwrap_or_default();
    if kind != FilterType::Event {
        return Err(QueryError::Unsupported(format!(
            "{field}: {kind:?} property filters are not supported by the ClickHouse backend yet"
        )));
    }
    let op = p.operator.unwrap_or_default();
    let values = p.values();
    let needs_value = p.needs_value();
    if needs_value && values.is_empty() {
        return Err(QueryError::invalid(
            format!("{field}.value"),
            format!("operator {op:?} needs a value"),
        ));
    }
    let key = &p.key;
    let list = || {
        values
            .iter()
            .map(|v| quote_str(v))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let contains = || {
        let v = prop_value(key);
        values
            .iter()
            .map(|n| {
                format!(
                    "position(lowerUTF8({v}), {}) > 0",
                    quote_str(&n.to_lowercase())
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    Ok(match op {
        Operator::Exact => format!(
            "({} AND {} IN ({}))",
            prop_present(key),
            prop_value(key),
            list()
        ),
        Operator::IsNot => format!(
            "NOT ({} AND {} IN ({}))",
            prop_present(key),
            prop_value(key),
            list()
        ),
        Operator::Icontains => format!("({} AND ({}))", prop_present(key), contains()),
        Operator::NotIcontains => format!("NOT ({} AND ({}))", prop_present(key), contains()),
        Operator::IsSet => prop_present(key),
        Operator::IsNotSet => format!("NOT {}", prop_present(key)),
        other => {
            return Err(QueryError::Unsupported(format!(
                "{field}.operator: {other:?} is not supported by the ClickHouse backend yet"
            )))
        }
    })
}

/// The condition for one step (or exclusion): its event or action, and its
/// own filters.
pub fn step_condition(
    event: Option<&str>,
    action: Option<&Action>,
    props: Option<&PropertyFilters>,
    field: &str,
) -> Result<String, QueryError> {
    let mut parts = Vec::new();
    match action {
        Some(a) => {
            let mut alts = Vec::new();
            for (i, alt) in a.match_any.iter().enumerate() {
                let f = format!("{field}.action.match_any[{i}]");
                if alt.elements.is_some() {
                    return Err(QueryError::Unsupported(format!(
                        "{f}.elements: element matching is not supported by the ClickHouse backend yet"
                    )));
                }
                let mut c = vec![match &alt.event {
                    Some(e) => format!("event = {}", quote_str(e)),
                    None => "1".into(),
                }];
                if let Some(x) = filters(alt.properties.as_ref(), &format!("{f}.properties"))? {
                    c.push(x);
                }
                alts.push(format!("({})", c.join(" AND ")));
            }
            if alts.is_empty() {
                alts.push("0".into());
            }
            parts.push(format!("({})", alts.join(" OR ")));
        }
        None => {
            if let Some(e) = event {
                parts.push(format!("event = {}", quote_str(e)));
            }
        }
    }
    if let Some(x) = filters(props, &format!("{field}.properties"))? {
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
            {"key": "email", "value": "x", "operator": "exact", "type": "person"}
        ]))
        .unwrap();
        assert!(matches!(
            filters(Some(&person), "properties"),
            Err(QueryError::Unsupported(_))
        ));
        let novalue: PropertyFilters =
            serde_json::from_value(serde_json::json!([{"key": "k", "operator": "exact"}])).unwrap();
        assert!(matches!(
            filters(Some(&novalue), "properties"),
            Err(QueryError::Invalid { .. })
        ));
    }
}
