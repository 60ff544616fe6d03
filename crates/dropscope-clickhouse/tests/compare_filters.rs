//! Filter operators on hand-made values that the random logs meet rarely,
//! compared with the embedded engine: `is_date_*` over every way a value
//! can (or cannot) be read as a date, from every filter source (event,
//! person, group, element); `regex`/`not_regex` beyond literals (Rust's
//! `regex` against ClickHouse's RE2) over values with newlines, Unicode
//! digits, letters and spaces, quotes and backslashes.

mod common;

use dropscope_core::event::{Event, GroupRecord};
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_core::QueryError;
use dropscope_store::Record;
use dropscope_testkit::Backend;
use serde_json::{json, Value};

const BASE: i64 = 1_619_827_200_000; // 2021-05-01T00:00:00Z

/// One person per value: an event `view` carrying `value` as event
/// property `t`, `$set` person property `t`, in its group's (`org` = `g<i>`)
/// property `t` and as element attribute `title`; then a `done` event.
fn one_person_per_value(values: &[Value]) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        out.push(Record::Group(GroupRecord {
            group_type_index: 0,
            group_type: "org".into(),
            key: format!("g{i}"),
            properties: json!({ "t": v }).as_object().cloned().unwrap(),
        }));
    }
    for (i, v) in values.iter().enumerate() {
        let props = json!({
            "t": v,
            "$set": {"t": v},
            "$groups": {"org": format!("g{i}")},
            "$elements": [{"tag_name": "a", "title": v}, {"tag_name": "div"}],
        });
        for (k, name) in ["view", "done"].iter().enumerate() {
            out.push(Record::Event(Event {
                uuid: (i * 2 + k + 1) as u128,
                event: (*name).into(),
                distinct_id: format!("p{i}"),
                timestamp: BASE + (i * 10 + k) as i64 * 1000,
                properties: if k == 0 {
                    props.as_object().cloned().unwrap()
                } else {
                    Default::default()
                },
            }));
        }
    }
    out
}

/// A two-step funnel whose first step carries `filter`.
fn funnel_with(filter: Value) -> Value {
    json!({
        "kind": "funnel",
        "steps": [{"event": "view", "properties": [filter]}, {"event": "done"}],
        "date_from": "2021-04-30",
        "date_to": "2021-05-02",
    })
}

/// Step counts of the engine and of ClickHouse (both must answer, or both
/// find the query invalid: `None`).
fn counts_on_both(
    snap: &dropscope_store::Snapshot,
    ch: &impl Backend,
    qv: &Value,
) -> Option<Vec<u64>> {
    let q = FunnelQuery::from_json(qv.clone()).unwrap();
    let want = dropscope_engine::run_query(snap, &q);
    let got = ch.query(&q);
    match (want, got) {
        (Ok(QueryResult::Funnel(w)), Ok(QueryResult::Funnel(g))) => {
            common::same_funnel(&w, &g).unwrap_or_else(|e| panic!("query {qv}\n{e}"));
            Some(w.steps.iter().map(|s| s.count).collect())
        }
        (Err(QueryError::Invalid { .. }), Err(QueryError::Invalid { .. })) => None,
        (w, g) => panic!("query {qv}:\n engine     {w:?}\n clickhouse {g:?}"),
    }
}

#[test]
fn date_operators_match_the_engine() {
    let values: Vec<Value> = [
        "2021-05-01T10:00:00Z",
        " 2021-05-01 12:00:00+02:00 ",
        "2021-05-01 10:00:00.000",
        "2021-05-01T10:00:00.000000001Z",
        "2021-05-01T09:59:59.999999999Z",
        "2021-05-01",
        "2021-05-01 10:00",
        "2021-05-01t10:00:00z",
        "2021-05-01T10:00:00 +02:00",
        "2016-12-31T23:59:60.5Z",
        "1969-12-31T23:59:59.999Z",
        "+12021-05-01 00:00:00",
        "2021-5-1",
        "20210501",
        "2021-02-29",
        "2020-02-29",
        "2021-05-01T24:00:00Z",
        "\t2021-05-01T10:00:00Z\n",
        "2021-05-01T10:00:00Z\u{a0}",
        "２０２１-05-01",
        "2021-05-01\\' OR 1=1 --",
        "tomorrow",
        "-7d",
        "",
    ]
    .iter()
    .map(|s| json!(s))
    .chain([json!(20210501), json!(1_620_000_000), json!(true)])
    .collect();
    let recs = one_person_per_value(&values);
    let (store, ch) = common::load_both("dsdates", &recs);
    let snap = store.snapshot().unwrap();
    let n = values.len() as u64;
    let mut between = 0;
    for op in ["is_date_exact", "is_date_before", "is_date_after"] {
        for v in [
            "2021-05-01 10:00:00",
            "2021-05-01",
            "2021-05-01T10:00:00.000000001+00:00",
            "2016-12-31 23:59:60.7",
            "-7d",
            "garbage",
        ] {
            for f in [
                json!({"key": "t", "value": v, "operator": op, "type": "event"}),
                json!({"key": "t", "value": v, "operator": op, "type": "person"}),
                json!({"key": "t", "value": v, "operator": op, "type": "group", "group_type_index": 0}),
                json!({"key": "title", "value": v, "operator": op, "type": "element"}),
            ] {
                if let Some(c) = counts_on_both(&snap, &ch, &funnel_with(f)) {
                    if c[0] > 0 && c[0] < n {
                        between += 1;
                    }
                }
            }
        }
    }
    println!("{between} queries split the values");
    // The values split: a constant SQL answer would not pass.
    assert!(between >= 30, "only {between} queries split the values");
}

/// Rows stored before the date keys existed (migration 10 gives them the
/// marker `'?'`) make a date filter fail, never answer without them.
#[test]
fn date_filters_refuse_rows_without_date_keys() {
    let recs = one_person_per_value(&[json!("2021-05-01T10:00:00Z")]);
    let (_store, ch) = common::load_both("dsdatelegacy", &recs);
    let db = ch.0.database().to_string();
    ch.0.execute(&format!(
        "INSERT INTO {db}.events (uuid, event, distinct_id, person_id, timestamp, seq, prop_keys, prop_values) \
         VALUES ('legacy', 'view', 'old', 999, {}, 999, ['t'], ['2021-05-01'])",
        BASE + 5000
    ))
    .unwrap();
    let q = FunnelQuery::from_json(funnel_with(
        json!({"key": "t", "value": "2021-05-01", "operator": "is_date_after", "type": "event"}),
    ))
    .unwrap();
    match ch.query(&q) {
        Err(QueryError::Backend(m)) if m.contains("before migration 10") => {}
        other => panic!("a legacy row must make the date filter fail: {other:?}"),
    }
    let q = FunnelQuery::from_json(funnel_with(
        json!({"key": "t", "value": "2021-05-01", "operator": "exact", "type": "event"}),
    ))
    .unwrap();
    assert!(ch.query(&q).is_ok());
}

#[test]
fn regex_operators_match_the_engine() {
    let values: Vec<Value> = [
        "abc",
        "ABC",
        "a\nb",
        "a\r\nb",
        "line1\nline2\n",
        "\n",
        "",
        "xx",
        "xxx",
        "aab",
        "straße",
        "STRASSE",
        "\u{212a}", // Kelvin sign: `(?i)k` in Rust
        "k",
        "é",
        "e\u{301}",
        "١٢٣",       // Arabic-Indic digits (Rust's \d)
        "\u{11f50}", // Kawi digit zero (Unicode 15)
        "\u{1e4f0}", // Nag Mundari digit zero (Unicode 15)
        "x\u{a0}y",  // no-break space (Rust's \s)
        "\u{85}",    // next line (Rust's \s)
        "\u{3000}",  // ideographic space
        "tab\there",
        "quote'\"\\back",
        "\\",
        "ΣΑΣ σας",
        "😀",
        "123",
        "a_b",
        "ǅ", // title case
    ]
    .iter()
    .map(|s| json!(s))
    .chain([json!(9.5), json!(true), json!(null)])
    .collect();
    let recs = one_person_per_value(&values);
    let (store, ch) = common::load_both("dsregex", &recs);
    let snap = store.snapshot().unwrap();
    let n = values.len() as u64;
    let patterns = [
        ".",
        "^.$",
        "a.b",
        "^.*$",
        "(?s)a.b",
        "(?s)^.+$",
        r"\d",
        r"^\d+$",
        r"\D",
        r"\w+",
        r"^\w+$",
        r"\W",
        r"\s",
        r"\S",
        r"[^a]",
        r"^[^\n]*$",
        r"[^\d\s]",
        r"(?i)straße",
        r"(?i)^k$",
        r"(?i)σας",
        r"x{2}",
        r"^x{2}$",
        r"^x{2,}$",
        r"^a{1,2}b$",
        r"(?m)^b",
        r"(?m)b$",
        r"(?m)^$",
        r"^$",
        r"\A\z",
        r"\\",
        r"'",
        "\"",
        r"\n",
        r"\t",
        r"\x{e9}",
        r"e\x{301}",
        r"\p{Greek}+",
        r"\pL",
        r"^\p{Lu}",
        r"[[:alpha:]]+",
        r"[a-z&&[^aeiou]]",
        r"[\d--3]",
        r"[a-c~~b-d]",
        r"(?-u:\w)",
        r"(a|b)*c",
        r"a??b",
        r"(?U)a+b",
        r"(?x) a b c # comment",
        r"(?P<x>x)x",
        "😀|\u{212a}",
        r"^\.\d",
        r"[\u{1F600}-\u{1F64F}]",
        r"\bx",
        r"\Bx",
        r"\<x",
        r"(?Rm)^b",
    ];
    let refused_expected = [r"\bx", r"\Bx", r"\<x", r"(?Rm)^b"];
    let mut between = 0;
    let mut refused = Vec::new();
    for (i, pat) in patterns.iter().enumerate() {
        // Every pattern on event properties; a few also negated and on
        // element attributes (the same SQL test inside a lambda).
        let mut fs = vec![json!({"key": "t", "value": pat, "operator": "regex", "type": "event"})];
        if i % 6 == 0 || refused_expected.contains(pat) {
            fs.push(json!({"key": "t", "value": pat, "operator": "not_regex", "type": "event"}));
            fs.push(json!({"key": "title", "value": pat, "operator": "regex", "type": "element"}));
        }
        {
            for f in fs {
                let qv = funnel_with(f);
                let q = FunnelQuery::from_json(qv.clone()).unwrap();
                if let Err(QueryError::Unsupported(m)) = ch.query(&q) {
                    refused.push((*pat, m));
                    continue;
                }
                if let Some(c) = counts_on_both(&snap, &ch, &qv) {
                    if c[0] > 0 && c[0] < n {
                        between += 1;
                    }
                }
            }
        }
    }
    let mut refused_pats: Vec<&str> = refused.iter().map(|(p, _)| *p).collect();
    refused_pats.dedup();
    assert_eq!(refused_pats, refused_expected, "{refused:?}");
    println!("{between} regex queries split the values");
    assert!(between >= 60, "only {between} queries split the values");
}
