//! The data side of the ClickHouse backend against the embedded engine:
//! person properties (`$set`/`$set_once`, person records, identity joins),
//! groups, cohorts, every filter type and operator, aggregations and
//! breakdowns, first-time-for-user steps. Random logs and queries
//! (PROPTEST_CASES, default 40), hostile strings included.

mod common;

use std::collections::BTreeMap;

use dropscope_clickhouse::events::{group_properties_sql, person_properties_sql};
use dropscope_core::event::{Event, GroupRecord, PersonRecord};
use dropscope_store::Record;
use dropscope_testkit::Backend;
use serde_json::{json, Map, Value};

fn ev(uuid: u128, did: &str, name: &str, t: i64, props: Value) -> Record {
    Record::Event(Event {
        uuid,
        event: name.into(),
        distinct_id: did.into(),
        timestamp: 1_619_827_200_000 + t,
        properties: props.as_object().cloned().unwrap_or_default(),
    })
}

/// person → (key → value) from a `person_properties_sql` answer, by the
/// person's label (a distinct id's canonical person).
fn props_of(
    ch: &common::Fresh,
    sql: &str,
    key_col: &str,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let out =
        ch.0.execute(&format!("SELECT * FROM ({sql}) FORMAT JSON"))
            .expect("query");
    let v: Value = serde_json::from_str(&out).expect("json");
    let mut m = BTreeMap::new();
    for row in v["data"].as_array().unwrap() {
        let keys = row["keys"].as_array().unwrap();
        let values = row["values"].as_array().unwrap();
        let props: BTreeMap<String, String> = keys
            .iter()
            .zip(values)
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    v.as_str().unwrap().to_string(),
                )
            })
            .collect();
        let id = match &row[key_col] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        m.insert(id, props);
    }
    m
}

#[test]
fn person_and_group_properties() {
    let recs = vec![
        Record::Person(PersonRecord {
            id: "P".into(),
            distinct_ids: vec!["p1".into(), "p1b".into()],
            properties: json!({"plan": "pro", "n": 5, "it's": "x'\\"})
                .as_object()
                .cloned()
                .unwrap(),
        }),
        Record::Group(GroupRecord {
            group_type_index: 0,
            group_type: "org".into(),
            key: "o'1".into(),
            properties: json!({"size": 10, "name": "Acme"})
                .as_object()
                .cloned()
                .unwrap(),
        }),
        ev(
            1,
            "anon",
            "x",
            0,
            json!({"$set": {"plan": "free", "a": 1}, "$set_once": {"b": "B"}}),
        ),
        ev(
            2,
            "p1",
            "x",
            1,
            json!({"$set_once": {"plan": "never", "c": null}}),
        ),
        ev(
            3,
            "p1",
            "$identify",
            2,
            json!({"$anon_distinct_id": "anon"}),
        ),
        ev(
            4,
            "anon",
            "x",
            3,
            json!({"$set_once": {"c": "late"}, "$set": {"a": null}}),
        ),
        ev(
            5,
            "z",
            "$groupidentify",
            4,
            json!({"$group_type": "org", "$group_key": "o'1", "$group_set": {"size": 11}}),
        ),
        ev(
            6,
            "z",
            "$groupidentify",
            5,
            json!({"$group_type": "team", "$group_key": 7, "$group_set": {"k": "v", "gone": 1}}),
        ),
        ev(
            7,
            "z",
            "$groupidentify",
            6,
            json!({"$group_type": "team", "$group_key": 7, "$group_set": {"gone": null}}),
        ),
    ];
    let mut ch = common::Fresh::new("dsdata").expect("clickhouse");
    // Two appends: state carries over.
    ch.load(&recs[..4]).unwrap();
    ch.load(&recs[4..]).unwrap();
    let store = dropscope_store::Store::in_memory();
    store.append(&recs).unwrap();
    let snap = store.snapshot().unwrap();
    let d = snap.dicts();
    let persons = dropscope_clickhouse::persons_of(&ch.0);
    let got = props_of(&ch, &person_properties_sql(ch.0.database()), "person");
    for did in ["p1", "anon", "z"] {
        let pid = d.distinct_ids.get(did).unwrap();
        let p = snap.person(snap.identity().person_of_did(pid).unwrap());
        let want: BTreeMap<String, String> = p
            .props
            .iter()
            .filter(|(_, v)| d.values.resolve(*v) != "z")
            .map(|(k, v)| {
                (
                    d.keys.resolve(*k).to_string(),
                    dropscope_store::dict::value_str(d.values.resolve(*v)).to_string(),
                )
            })
            .collect();
        let have = got
            .get(&persons[did].to_string())
            .cloned()
            .unwrap_or_default();
        assert_eq!(want, have, "person of {did}");
    }
    let g0 = props_of(&ch, &group_properties_sql(ch.0.database(), 0), "group_key");
    assert_eq!(g0["o'1"]["size"], "11");
    assert_eq!(g0["o'1"]["name"], "Acme");
    let g1 = props_of(&ch, &group_properties_sql(ch.0.database(), 1), "group_key");
    assert_eq!(g1["7"].get("k").map(String::as_str), Some("v"));
    assert!(!g1["7"].contains_key("gone"));
    // A second process continues from the stored state.
    let mut again =
        dropscope_clickhouse::ClickHouse::open(common::server(), ch.0.database()).unwrap();
    again
        .load(&[ev(
            8,
            "p1b",
            "x",
            7,
            json!({"$set_once": {"c": "no", "d": "D"}}),
        )])
        .unwrap();
    let got = props_of(&ch, &person_properties_sql(ch.0.database()), "person");
    let p = &got[&persons["p1"].to_string()];
    assert_eq!(p.get("d").map(String::as_str), Some("D"));
    assert!(
        !p.contains_key("c"),
        "a null set_once blocks later ones: {p:?}"
    );
    let _ = Map::<String, Value>::new();
}
