//! Random logs and queries in the supported subset: the ClickHouse backend
//! must give the embedded engine's numbers (counts, drop-off, in progress,
//! average and median conversion times, breakdown rows). Iterations:
//! PROPTEST_CASES (default 50). Also checks that hostile strings survive
//! the trip through SQL literals unchanged.

mod common;

use dropscope_core::event::Event;
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_core::QueryError;
use dropscope_store::Record;
use dropscope_testkit::Backend;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

const BASE: i64 = 1_619_827_200_000; // 2021-05-01T00:00:00Z

#[derive(Debug, Clone)]
struct Ev {
    person: usize,
    anon: bool,
    name: usize,
    t: i64,
    browser: usize,
    plan: usize,
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    (
        0..5usize,
        any::<bool>(),
        0..4usize,
        0..16i64,
        0..7usize,
        0..4usize,
    )
        .prop_map(|(person, anon, name, t, browser, plan)| Ev {
            person,
            anon,
            name,
            t,
            browser,
            plan,
        })
}

const NAMES: [&str; 4] = ["a", "b", "c", "it's \\ \"d\""];

fn browser(i: usize) -> Option<Value> {
    match i {
        0 => None,
        1 => Some(json!("Chrome")),
        2 => Some(json!("Safari")),
        3 => Some(json!("")),
        4 => Some(Value::Null),
        5 => Some(json!(7)),
        _ => Some(json!("x'); DROP TABLE events; --\\")),
    }
}

fn plan(i: usize) -> Option<Value> {
    match i {
        0 => None,
        1 => Some(json!("free")),
        2 => Some(json!("PRO")),
        _ => Some(json!("pro-plus")),
    }
}

fn records(evs: &[Ev], identify: &[bool], step_ms: i64) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        let mut props = Map::new();
        if let Some(b) = browser(e.browser) {
            props.insert("$browser".into(), b);
        }
        if let Some(p) = plan(e.plan) {
            props.insert("plan".into(), p);
        }
        let did = if e.anon {
            format!("anon{}", e.person)
        } else {
            format!("user{}", e.person)
        };
        out.push(Record::Event(Event {
            uuid: i as u128 + 1,
            event: NAMES[e.name].into(),
            distinct_id: did,
            timestamp: BASE + e.t * step_ms,
            properties: props,
        }));
    }
    for (p, &join) in identify.iter().enumerate() {
        if join {
            let mut props = Map::new();
            props.insert("$anon_distinct_id".into(), json!(format!("anon{p}")));
            out.push(Record::Event(Event {
                uuid: 1000 + p as u128,
                event: "$identify".into(),
                distinct_id: format!("user{p}"),
                timestamp: BASE + 20 * step_ms,
                properties: props,
            }));
        }
    }
    out
}

fn query_strategy() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(0..4usize, 2..5),
        prop::option::of((0..3usize, 0..3usize)),
        prop::option::of(0..3usize),
        (1..4i64, 0..3usize),
        0..6usize,
        prop::option::of(1..3usize),
    )
        .prop_map(|(steps, step_filter, global, (wv, wu), bd, limit)| {
            let ops = ["exact", "is_not", "icontains"];
            let vals = [json!("PRO"), json!(["free", "pro-plus"]), json!("pro")];
            let mut steps: Vec<Value> = steps
                .iter()
                .map(|&s| json!({"event": NAMES[s]}))
                .collect();
            if let Some((i, op)) = step_filter {
                let i = i % steps.len();
                steps[i]["properties"] =
                    json!([{"key": "plan", "value": vals[op], "operator": ops[op], "type": "event"}]);
            }
            let unit = ["minute", "hour", "day"][wu];
            let mut q = json!({
                "kind": "funnel",
                "steps": steps,
                "date_from": "2021-04-30",
                "date_to": "2021-05-01",
                "window": {"value": wv, "unit": unit},
            });
            if let Some(g) = global {
                let f = [
                    json!([{"key": "$browser", "value": "safari", "operator": "icontains"}]),
                    json!([{"key": "$browser", "value": ["Chrome", "7"], "operator": "is_not"}]),
                    json!({"type": "OR", "values": [
                        {"key": "plan", "value": "free", "operator": "exact"},
                        {"key": "$browser", "value": "x'); DROP TABLE events; --\\", "operator": "exact"}]}),
                ];
                q["properties"] = f[g].clone();
            }
            let b = match bd {
                0 | 1 => None,
                2 => Some(json!({"property": "$browser"})),
                3 => Some(json!({"property": "$browser", "attribution": "last_touch"})),
                4 => Some(json!({"properties": ["$browser", "plan"]})),
                _ => Some(json!({"property": "plan", "attribution": "first_touch"})),
            };
            if let Some(mut b) = b {
                if let Some(l) = limit {
                    b["limit"] = json!(l);
                }
                q["breakdown"] = b;
            }
            q
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(50)))]

    #[test]
    fn clickhouse_matches_the_engine(
        evs in prop::collection::vec(ev_strategy(), 0..40),
        identify in prop::collection::vec(any::<bool>(), 5),
        step_ms in prop::sample::select(vec![0i64, 60_000, 1_800_000, 3_600_000]),
        qv in query_strategy(),
    ) {
        let recs = records(&evs, &identify, step_ms.max(1));
        let q = FunnelQuery::from_json(qv.clone()).expect("query");
        let (store, ch) = common::load_both("dsprop", &recs);
        let want = dropscope_engine::run_query(&store.snapshot().unwrap(), &q);
        let got = ch.query(&q);
        match (want, got) {
            (Ok(QueryResult::Funnel(w)), Ok(QueryResult::Funnel(g))) => {
                if let Err(e) = common::same_funnel(&w, &g) {
                    prop_assert!(false, "query {qv}\n{e}");
                }
            }
            // A documented, data-dependent refusal (SEMANTICS rule 5 ties
            // the greedy chains do not model); never a wrong answer.
            (Ok(_), Err(QueryError::Unsupported(m))) if m.contains("sharing a timestamp") => {
                let r = REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                println!("refused (rule 5 ties) so far: {r}");
            }
            (w, g) => prop_assert!(false, "query {qv}: engine {w:?}, clickhouse {g:?}"),
        }
    }
}

#[test]
fn hostile_strings_survive_sql_literals() {
    let ch = common::Fresh::new("dslit").expect("clickhouse");
    for s in [
        "",
        "'",
        "''",
        "\\",
        "\\'",
        "'\\",
        "a'b\"c`d",
        "nul\0byte",
        "\0",
        "tab\tnl\nret\r",
        "x'); DROP DATABASE default; --",
        "\\x41",
        "\\0",
        "😀 ünïcode ß",
        "\u{7f}\u{1}",
        "'; SELECT 1 FORMAT JSON --",
    ] {
        let out =
            ch.0.execute(&format!(
                "SELECT {} AS s FORMAT JSON",
                dropscope_clickhouse::literal(s)
            ))
            .unwrap_or_else(|e| panic!("{s:?}: {e}"));
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["data"][0]["s"].as_str(), Some(s), "{s:?}");
    }
}
