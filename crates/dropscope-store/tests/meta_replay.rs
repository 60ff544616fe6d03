//! The meta log keeps only what rebuilds identity, person and group state
//! (see `state::meta_projection`): group slots assigned on first sight of a
//! type, `$groupidentify` properties, identity joins and `$set`. After a
//! flush and a reopen, the store must read exactly as one that never
//! closed (compared with an in-memory store fed the same records).

use dropscope_core::event::Event;
use dropscope_store::{Record, Store, StoreOptions};
use serde_json::{json, Map, Value};

fn ev(uuid: u128, name: &str, did: &str, ts: i64, props: Value) -> Record {
    let properties: Map<String, Value> = props.as_object().cloned().unwrap_or_default();
    Record::Event(Event {
        uuid,
        event: name.into(),
        distinct_id: did.into(),
        timestamp: ts,
        properties,
    })
}

fn batches() -> Vec<Vec<Record>> {
    let mut u = 0u128;
    let mut next = || {
        u += 1;
        u
    };
    vec![
        vec![
            ev(
                next(),
                "view",
                "anon-1",
                1,
                json!({"$groups": {"company": "c1"}}),
            ),
            ev(
                next(),
                "view",
                "anon-1",
                2,
                json!({"$groups": {"company": "c2"}, "alias": "not-a-join"}),
            ),
            ev(
                next(),
                "view",
                "u-2",
                3,
                json!({"$groups": {"company": "c1"}, "$set": {"plan": "free"}}),
            ),
        ],
        vec![
            // A second group type appears after a flush.
            ev(
                next(),
                "view",
                "u-2",
                4,
                json!({"$groups": {"company": "c2", "team": "t1"}}),
            ),
            ev(
                next(),
                "$groupidentify",
                "u-2",
                5,
                json!({"$group_type": "team", "$group_key": "t1", "$group_set": {"size": 5}}),
            ),
            ev(
                next(),
                "$identify",
                "u-1",
                6,
                json!({"$anon_distinct_id": "anon-1", "$set": {"plan": "pro"}}),
            ),
        ],
        vec![
            ev(
                next(),
                "buy",
                "u-1",
                7,
                json!({"$groups": {"team": "t1", "company": "c1"}}),
            ),
            ev(
                next(),
                "$groupidentify",
                "u-1",
                8,
                json!({"$group_type": "company", "$group_key": "c1", "$group_set": {"tier": "gold"}}),
            ),
            ev(next(), "buy", "anon-1", 9, json!({})),
        ],
    ]
}

/// Everything a query could observe about groups, identity and events.
fn observe(store: &Store) -> Value {
    let snap = store.snapshot().unwrap();
    let dicts = snap.dicts();
    let mut events = Vec::new();
    let mut scratch = Default::default();
    for a in 0..snap.actor_count() {
        let person = snap.actor_person(a);
        let v = snap.events_of(a, &mut scratch);
        for i in 0..v.ts.len() {
            let (s, e) = v.prop_range(i);
            let mut props: Vec<(String, String)> = (s..e)
                .map(|j| {
                    (
                        dicts.keys.resolve(v.prop_key[j]).to_string(),
                        dicts.values.resolve(v.prop_val[j]).to_string(),
                    )
                })
                .collect();
            props.sort();
            events.push(json!([
                v.uuid[i].to_string(),
                person,
                dicts.events.resolve(v.event[i]),
                dicts.distinct_ids.resolve(v.did[i]),
                props
            ]));
        }
    }
    events.sort_by_key(|e| e[0].as_str().unwrap().parse::<u128>().unwrap());
    let g = snap.groups();
    type Pairs = Vec<(String, String)>;
    let mut gprops: Vec<(u8, String, Pairs)> = g
        .props
        .iter()
        .map(|((i, k), kv)| {
            let mut kv: Vec<(String, String)> = kv
                .iter()
                .map(|(a, b)| {
                    (
                        dicts.keys.resolve(*a).to_string(),
                        dicts.values.resolve(*b).to_string(),
                    )
                })
                .collect();
            kv.sort();
            (*i, k.clone(), kv)
        })
        .collect();
    gprops.sort();
    let persons: Vec<Value> = (0..snap.actor_count())
        .map(|a| {
            let p = snap.person(snap.actor_person(a));
            let mut props: Vec<(String, String)> = p
                .props()
                .iter()
                .map(|(k, v)| {
                    (
                        dicts.keys.resolve(*k).to_string(),
                        dicts.values.resolve(*v).to_string(),
                    )
                })
                .collect();
            props.sort();
            json!(props)
        })
        .collect();
    json!({"types": g.types, "group_props": gprops, "events": events, "persons": persons})
}

#[test]
fn flushed_and_reopened_store_reads_as_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        fsync: false,
        background_compaction: false,
        ..Default::default()
    };
    let live = Store::in_memory();
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        for b in batches() {
            live.append(&b).unwrap();
            store.append(&b).unwrap();
            store.flush().unwrap();
        }
        assert_eq!(observe(&store), observe(&live));
        store.close().unwrap();
    }
    let reopened = Store::open(dir.path(), opts.clone()).unwrap();
    let got = observe(&reopened);
    assert_eq!(got, observe(&live));
    assert_eq!(got["types"], json!(["company", "team"]));
    // Compaction folds identity into the segments; reading stays the same.
    reopened.compact().unwrap();
    reopened.close().unwrap();
    let again = Store::open(dir.path(), opts).unwrap();
    assert_eq!(observe(&again), observe(&live));
}
