//! Random operation sequences against a plain model: appends (random
//! persons, timestamps, properties, `$identify` / `$create_alias`, duplicate
//! uuids, `$set`), flush, compact, reopen. After every step the events per
//! canonical person read through a `Snapshot` must equal the model's (a Vec
//! of events and a naive union-find). Cases: `PROPTEST_CASES` (default 32).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use dropscope_core::event::Event;
use dropscope_store::dict::encode_value;
use dropscope_store::{Record, Store, StoreOptions};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
struct Ev {
    uuid: u8,
    did: u8,
    ts: u8,
    kind: u8,
    other: u8,
    num: i32,
    float: bool,
    set: Option<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Ev>),
    Flush,
    Compact,
    CompactSegments,
    Reopen,
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    (
        0u8..60,
        0u8..8,
        0u8..20,
        0u8..10,
        0u8..8,
        -3i32..1000,
        any::<bool>(),
        proptest::option::of(0u8..3),
    )
        .prop_map(|(uuid, did, ts, kind, other, num, float, set)| Ev {
            uuid,
            did,
            ts,
            kind,
            other,
            num,
            float,
            set,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(ev_strategy(), 1..6).prop_map(Op::Append),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::CompactSegments),
        1 => Just(Op::Reopen),
    ]
}

fn to_event(e: &Ev) -> Event {
    let mut props = Map::new();
    props.insert(
        "x".into(),
        if e.float {
            json!(e.num as f64 / 3.0)
        } else {
            json!(e.num)
        },
    );
    if e.num % 4 == 0 {
        props.insert("s".into(), json!(format!("v{}", e.num % 5)));
    }
    let name = match e.kind {
        0 => "$identify",
        1 => "$create_alias",
        _ => "view",
    };
    match e.kind {
        0 => {
            props.insert("$anon_distinct_id".into(), json!(format!("d{}", e.other)));
        }
        1 => {
            props.insert("alias".into(), json!(format!("d{}", e.other)));
        }
        _ => {}
    }
    if let Some(s) = e.set {
        props.insert("$set".into(), json!({"plan": format!("p{s}")}));
    }
    Event {
        uuid: e.uuid as u128 + 1,
        event: name.into(),
        distinct_id: format!("d{}", e.did),
        timestamp: 1_000 + e.ts as i64,
        properties: props,
    }
}

/// The plain model.
#[derive(Default)]
struct Model {
    events: Vec<Event>,
    seen: HashSet<u128>,
    person_of: HashMap<String, usize>,
    parent: Vec<usize>,
    creator: Vec<String>,
    props: Vec<BTreeMap<String, Value>>,
}

impl Model {
    fn ensure(&mut self, did: &str) -> usize {
        if let Some(&p) = self.person_of.get(did) {
            return self.root(p);
        }
        let p = self.parent.len();
        self.parent.push(p);
        self.creator.push(did.to_string());
        self.props.push(BTreeMap::new());
        self.person_of.insert(did.to_string(), p);
        p
    }

    fn root(&self, mut p: usize) -> usize {
        while self.parent[p] != p {
            p = self.parent[p];
        }
        p
    }

    fn apply(&mut self, e: &Event) {
        if !self.seen.insert(e.uuid) {
            return;
        }
        let p = self.ensure(&e.distinct_id);
        let other = match e.event.as_str() {
            "$identify" => e.properties.get("$anon_distinct_id"),
            "$create_alias" => e.properties.get("alias"),
            _ => None,
        };
        if let Some(o) = other.and_then(Value::as_str) {
            if o != e.distinct_id {
                let q = self.ensure(o);
                let (a, b) = (self.root(p), self.root(q));
                if a != b {
                    self.parent[b] = a;
                    let moved = std::mem::take(&mut self.props[b]);
                    for (k, v) in moved {
                        self.props[a].entry(k).or_insert(v);
                    }
                }
            }
        }
        if let Some(Value::Object(set)) = e.properties.get("$set") {
            let r = self.root(p);
            for (k, v) in set {
                self.props[r].insert(k.clone(), v.clone());
            }
        }
        self.events.push(e.clone());
    }
}

/// Per canonical person (keyed by its sorted distinct ids): label,
/// properties and events in (ts, ingest) order.
/// Values compare in their tagged dictionary form (dict.rs), which is what
/// the store keeps (`45.0` and `45` are both `n45`).
type View = BTreeMap<Vec<String>, (String, BTreeMap<String, String>, Vec<EvKey>)>;
type EvKey = (i64, u128, String, String, Vec<(String, String)>);

fn model_view(m: &Model) -> View {
    let mut dids_of: HashMap<usize, Vec<String>> = HashMap::new();
    for (d, &p) in &m.person_of {
        dids_of.entry(m.root(p)).or_default().push(d.clone());
    }
    let mut out = View::new();
    let mut by_root: HashMap<usize, Vec<(i64, usize)>> = HashMap::new();
    for (i, e) in m.events.iter().enumerate() {
        let r = m.root(m.person_of[&e.distinct_id]);
        by_root.entry(r).or_default().push((e.timestamp, i));
    }
    for (r, mut evs) in by_root {
        evs.sort();
        let mut dids = dids_of[&r].clone();
        dids.sort();
        let list = evs
            .iter()
            .map(|&(_, i)| {
                let e = &m.events[i];
                let mut props: Vec<(String, String)> = e
                    .properties
                    .iter()
                    .map(|(k, v)| (k.clone(), encode_value(v)))
                    .collect();
                props.sort_by(|a, b| a.0.cmp(&b.0));
                (
                    e.timestamp,
                    e.uuid,
                    e.event.clone(),
                    e.distinct_id.clone(),
                    props,
                )
            })
            .collect();
        let props = m.props[r]
            .iter()
            .map(|(k, v)| (k.clone(), encode_value(v)))
            .collect();
        out.insert(dids, (m.creator[r].clone(), props, list));
    }
    out
}

fn store_view(s: &Store) -> View {
    let snap = s.snapshot().unwrap();
    let d = snap.dicts();
    let mut out = View::new();
    let mut scratch = Default::default();
    for a in 0..snap.actor_count() {
        let person = snap.person(snap.actor_person(a));
        let mut dids: Vec<String> = person
            .dids()
            .map(|x| d.distinct_ids.resolve(x).to_string())
            .collect();
        dids.sort();
        let props: BTreeMap<String, String> = person
            .props()
            .iter()
            .map(|&(k, v)| {
                (
                    d.keys.resolve(k).to_string(),
                    d.values.resolve(v).to_string(),
                )
            })
            .collect();
        let v = snap.events_of(a, &mut scratch);
        let mut list = Vec::new();
        for i in 0..v.len() {
            let mut props: Vec<(String, String)> = v
                .props(i)
                .map(|(k, x)| {
                    (
                        d.keys.resolve(k).to_string(),
                        d.values.resolve(x).to_string(),
                    )
                })
                .collect();
            props.sort_by(|a, b| a.0.cmp(&b.0));
            list.push((
                v.ts[i],
                v.uuid[i],
                d.events.resolve(v.event[i]).to_string(),
                d.distinct_ids.resolve(v.did[i]).to_string(),
                props,
            ));
        }
        let prev = out.insert(dids.clone(), (person.label(d).to_string(), props, list));
        assert!(prev.is_none(), "person {dids:?} listed twice");
    }
    out
}

fn opts() -> StoreOptions {
    StoreOptions {
        flush_threshold: 7,
        fsync: false,
        background_compaction: false,
        compaction_threshold: 4,
        partitions: 2,
    }
}

fn run(ops: &[Op], dir: &Path) {
    let mut model = Model::default();
    let mut store = Some(Store::open(dir, opts()).unwrap());
    for (step, op) in ops.iter().enumerate() {
        let s = store.as_ref().unwrap();
        match op {
            Op::Append(evs) => {
                let recs: Vec<Record> = evs.iter().map(|e| Record::Event(to_event(e))).collect();
                s.append(&recs).unwrap();
                for r in &recs {
                    let Record::Event(e) = r else { unreachable!() };
                    model.apply(e);
                }
            }
            Op::Flush => s.flush().unwrap(),
            Op::Compact => s.compact().unwrap(),
            Op::CompactSegments => s.compact_segments().unwrap(),
            Op::Reopen => {
                drop(store.take());
                let s = Store::open(dir, opts()).unwrap();
                assert_eq!(s.open_report().unwrap().truncated_wal_bytes, 0);
                store = Some(s);
            }
        }
        let got = store_view(store.as_ref().unwrap());
        let want = model_view(&model);
        assert_eq!(got, want, "after step {step}: {op:?}");
    }
    // And once more from disk alone.
    drop(store.take());
    let s = Store::open(dir, opts()).unwrap();
    assert_eq!(store_view(&s), model_view(&model), "after final reopen");
    assert_eq!(s.stats().unwrap().events, model.events.len());
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        run(&ops, tmp.path());
    }
}

#[test]
fn in_memory_store_still_works() {
    let s = Store::in_memory();
    let e = to_event(&Ev {
        uuid: 1,
        did: 1,
        ts: 1,
        kind: 9,
        other: 0,
        num: 5,
        float: false,
        set: None,
    });
    s.append(&[Record::Event(e.clone()), Record::Event(e)])
        .unwrap();
    s.flush().unwrap();
    s.compact().unwrap();
    assert_eq!(s.snapshot().unwrap().event_count(), 1);
    assert!(s.open_report().is_none());
}

/// Appends from several threads (new distinct ids joining old persons all
/// the time) while flushes and compactions run: what is read before closing
/// is what is read after reopening, and after compacting that again.
#[test]
fn concurrent_appends_and_compactions_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = StoreOptions {
        flush_threshold: 60,
        fsync: false,
        background_compaction: true,
        compaction_threshold: 2,
        partitions: 3,
    };
    let store = Store::open(dir, opts.clone()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                for n in 0..250u64 {
                    let mut props = Map::new();
                    props.insert("n".into(), json!(n));
                    let mut name = "view";
                    if n % 5 == 0 {
                        name = "$identify";
                        props.insert(
                            "$anon_distinct_id".into(),
                            json!(format!("t{}-{}", (t + 1) % 4, n / 2)),
                        );
                        props.insert("$set".into(), json!({"plan": n % 3}));
                    }
                    let e = Event {
                        uuid: ((t as u128) << 32) | n as u128,
                        event: name.into(),
                        distinct_id: format!("t{t}-{}", n / 3),
                        timestamp: (n % 17) as i64,
                        properties: props,
                    };
                    store.append(&[Record::Event(e)]).unwrap();
                }
            });
        }
        let store = &store;
        s.spawn(move || {
            for _ in 0..10 {
                store.compact().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
    });
    let before = store_view(&store);
    assert_eq!(store.stats().unwrap().events, 1000);
    drop(store);
    let store = Store::open(dir, opts.clone()).unwrap();
    assert_eq!(store_view(&store), before);
    store.compact().unwrap();
    assert_eq!(store_view(&store), before);
    drop(store);
    let store = Store::open(dir, opts).unwrap();
    assert_eq!(store_view(&store), before);
    assert_eq!(store.stats().unwrap().events, 1000);
}

/// A person created after the last flush absorbs a person whose events are
/// in segments; compacting the segments then must not key a block by a
/// distinct id the meta log does not know yet.
#[test]
fn compaction_after_join_by_new_distinct_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ev = |u: u128, name: &str, did: &str, anon: Option<&str>| {
        let mut props = Map::new();
        if let Some(a) = anon {
            props.insert("$anon_distinct_id".into(), json!(a));
        }
        Record::Event(Event {
            uuid: u,
            event: name.into(),
            distinct_id: did.into(),
            timestamp: u as i64,
            properties: props,
        })
    };
    let store = Store::open(dir, opts()).unwrap();
    store.append(&[ev(1, "view", "old", None)]).unwrap();
    store.append(&[ev(2, "view", "other", None)]).unwrap();
    store.flush().unwrap();
    store.append(&[ev(3, "view", "other", None)]).unwrap();
    store.flush().unwrap();
    store
        .append(&[ev(4, "$identify", "new", Some("old"))])
        .unwrap();
    store.compact_segments().unwrap();
    let before = store_view(&store);
    assert_eq!(before.len(), 2);
    drop(store);
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(store_view(&store), before);
}
