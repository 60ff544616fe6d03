//! The in-memory state of an open store and how records change it.
//!
//! Every change to a store is a [`Record`]. The write-ahead log stores
//! records; recovery replays them through [`State::apply`], so the live path
//! and the recovery path are the same code.

use std::collections::HashMap;
use std::sync::Arc;

use dropscope_core::event::{CohortRecord, Event, GroupRecord, PersonRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::columns::{EventColumns, Run};
use crate::dict::Dicts;
use crate::identity::Identity;
use crate::snapshot::{GroupData, Snapshot};

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Event(Event),
    Person(PersonRecord),
    Group(GroupRecord),
    Cohort(CohortRecord),
}

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Stored,
    Duplicate,
}

/// Side effects of the last event applied that the durable store's meta
/// log must record (see [`meta_projection`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// Its distinct id was seen for the first time.
    pub new_did: bool,
    /// A group type got its slot (`$group_N`) with this event.
    pub new_group_type: bool,
}

/// Mutable state: dictionaries, identity, groups, cohorts, sealed runs and
/// the memtable of events not yet in a run.
#[derive(Debug, Default)]
pub struct State {
    pub dicts: Arc<Dicts>,
    pub identity: Arc<Identity>,
    pub groups: Arc<GroupData>,
    pub cohorts: Arc<Vec<CohortRecord>>,
    pub runs: Vec<Arc<Run>>,
    pub memtable: EventColumns,
    /// Uuids of the events not in segments (all of them in memory-only
    /// stores).
    pub uuids: rustc_hash::FxHashSet<u128>,
    /// [`uuid_fingerprint`]s of the events in segments: 8 bytes per event
    /// instead of a set of every uuid. A fingerprint found is confirmed
    /// in the segments' sorted uuid columns ([`Run::uuid_sorted`]), so a
    /// colliding fingerprint never drops an event. `None` until the first
    /// event is applied: a process that only queries never builds it.
    pub seg_fingerprints: Option<rustc_hash::FxHashSet<u64>>,
    pub next_seq: u64,
    pub earliest: Option<i64>,
    /// What the last event applied did beyond being stored.
    pub last: Effects,
    cached: Option<Snapshot>,
}

impl State {
    pub fn new() -> State {
        State {
            memtable: EventColumns::new(),
            ..Default::default()
        }
    }

    /// Applies one record. Events with a uuid seen before are dropped.
    pub fn apply(&mut self, rec: &Record) -> Applied {
        self.cached = None;
        match rec {
            Record::Event(e) => self.apply_event(e),
            Record::Person(p) => {
                self.apply_person(p);
                Applied::Stored
            }
            Record::Group(g) => {
                self.apply_group(g);
                Applied::Stored
            }
            Record::Cohort(c) => {
                let cohorts = Arc::make_mut(&mut self.cohorts);
                cohorts.retain(|x| x.id != c.id);
                cohorts.push(c.clone());
                Applied::Stored
            }
        }
    }

    fn apply_person(&mut self, p: &PersonRecord) {
        let dicts = &*self.dicts;
        let ident = Arc::make_mut(&mut self.identity);
        let mut person: Option<u32> = None;
        let label = if p.id.is_empty() {
            p.distinct_ids.first().cloned().unwrap_or_default()
        } else {
            p.id.clone()
        };
        for d in &p.distinct_ids {
            let did = dicts.distinct_ids.intern(d);
            let q = ident.ensure(did);
            person = Some(match person {
                None => q,
                Some(a) => ident.merge(a, q),
            });
        }
        if let Some(a) = person {
            ident.set_label(a, &label, dicts);
            ident.set_props(a, &p.properties, false, dicts);
        }
    }

    fn apply_group(&mut self, g: &GroupRecord) {
        let dicts = &*self.dicts;
        let groups = Arc::make_mut(&mut self.groups);
        groups.set_type(g.group_type_index, &g.group_type);
        let props = groups
            .props
            .entry((g.group_type_index, g.key.clone()))
            .or_default();
        for (k, v) in &g.properties {
            let k = dicts.keys.intern(k);
            let v = dicts.values.intern_value(v);
            match props.binary_search_by_key(&k, |(a, _)| *a) {
                Ok(i) => props[i].1 = v,
                Err(i) => props.insert(i, (k, v)),
            }
        }
    }

    /// Whether an event with this uuid is in a segment.
    fn in_segments(&mut self, uuid: u128) -> bool {
        let runs = &self.runs;
        let fps = self
            .seg_fingerprints
            .get_or_insert_with(|| segment_fingerprints(runs));
        fps.contains(&uuid_fingerprint(uuid))
            && runs.iter().any(|r| {
                r.uuid_sorted
                    .as_ref()
                    .is_some_and(|s| s.binary_search(&uuid).is_ok())
            })
    }

    /// Records that events held in memory are now in a segment: their
    /// uuids move from the in-memory set to the fingerprints (when those
    /// are built; else they will be built from the segment).
    pub fn uuids_to_segment(&mut self, uuids: &[u128]) {
        if let Some(fps) = &mut self.seg_fingerprints {
            fps.reserve(uuids.len());
            fps.extend(uuids.iter().map(|&u| uuid_fingerprint(u)));
        }
        for u in uuids {
            self.uuids.remove(u);
        }
    }

    fn apply_event(&mut self, e: &Event) -> Applied {
        if self.uuids.contains(&e.uuid) || self.in_segments(e.uuid) {
            return Applied::Duplicate;
        }
        self.uuids.insert(e.uuid);
        self.event_effects(e, true);
        Applied::Stored
    }

    /// Applies only the non-event effects of a record: identity joins,
    /// person properties, group slots and properties, persons, groups and
    /// cohorts. The event itself is not stored and its uuid is not recorded.
    /// Replaying the durable store's meta log uses this; a record must have
    /// been `Stored` by [`State::apply`] to be replayed here.
    pub fn apply_meta(&mut self, rec: &Record) {
        self.cached = None;
        match rec {
            Record::Event(e) => self.event_effects(e, false),
            other => {
                self.apply(other);
            }
        }
    }

    /// Replaces the sealed runs (the durable store swaps in runs loaded
    /// from, or written to, segment files). Drops the cached snapshot.
    pub fn set_runs(&mut self, runs: Vec<Arc<Run>>) {
        self.cached = None;
        self.runs = runs;
    }

    fn event_effects(&mut self, e: &Event, store: bool) {
        let dicts = &*self.dicts;
        let ident = Arc::make_mut(&mut self.identity);
        let did = dicts.distinct_ids.intern(&e.distinct_id);
        self.last = Effects {
            // New to the identity, not to the dictionary: a reopened store's
            // dictionary already holds strings of events still in the WAL
            // (dicts.log logs every string interned before a flush), and the
            // meta log must still record the distinct id's first event.
            new_did: ident.original_person(did).is_none(),
            new_group_type: false,
        };
        let person = ident.ensure(did);

        // Identity joins.
        if let Some(other) = e.joined_distinct_id() {
            let odid = dicts.distinct_ids.intern(other);
            let op = ident.ensure(odid);
            ident.merge(person, op);
        }
        // The special properties, found in one pass over the keys (cheaper
        // than a hashed lookup per name on the capture path).
        let (mut set, mut set_once, mut groups_prop) = (None, None, None);
        for (k, v) in &e.properties {
            match k.as_str() {
                "$set" => set = Some(v),
                "$set_once" => set_once = Some(v),
                "$groups" => groups_prop = Some(v),
                _ => {}
            }
        }
        // Person properties.
        if let Some(Value::Object(set)) = set {
            ident.set_props(person, set, false, dicts);
        }
        if let Some(Value::Object(set)) = set_once {
            ident.set_props(person, set, true, dicts);
        }

        // Groups: `$groups: {type: key}` becomes `$group_N` properties;
        // `$groupidentify` sets group properties.
        // The group data is shared with snapshots: it is only cloned
        // (`make_mut`) when a new group type takes a slot.
        const SLOT_NAMES: [&str; 5] = ["$group_0", "$group_1", "$group_2", "$group_3", "$group_4"];
        let mut extra: Vec<(&str, &Value)> = Vec::new();
        if let Some(Value::Object(gs)) = groups_prop {
            for (gtype, key) in gs {
                let idx = match self.groups.index_of(gtype) {
                    Some(i) => Some(i),
                    None => {
                        let i = Arc::make_mut(&mut self.groups).index_for(gtype);
                        self.last.new_group_type |= i.is_some();
                        i
                    }
                };
                if let Some(idx) = idx {
                    let name = SLOT_NAMES[idx as usize];
                    if !e.properties.contains_key(name) {
                        extra.push((name, key));
                    }
                }
            }
        }
        if e.event == "$groupidentify" {
            let gtype = e.properties.get("$group_type").and_then(Value::as_str);
            let gkey = e
                .properties
                .get("$group_key")
                .map(dropscope_core::event::value_string_form);
            if let (Some(gtype), Some(gkey)) = (gtype, gkey) {
                let groups = Arc::make_mut(&mut self.groups);
                if let Some(idx) = groups.index_for(gtype) {
                    let props = groups.props.entry((idx, gkey)).or_default();
                    if let Some(Value::Object(set)) = e.properties.get("$group_set") {
                        for (k, v) in set {
                            let k = dicts.keys.intern(k);
                            let v = dicts.values.intern_value(v);
                            match props.binary_search_by_key(&k, |(a, _)| *a) {
                                Ok(i) => props[i].1 = v,
                                Err(i) => props.insert(i, (k, v)),
                            }
                        }
                    }
                }
            }
        }

        if !store {
            return;
        }
        let ev = dicts.events.intern(&e.event);
        let mut kv: Vec<(u32, u32)> = Vec::with_capacity(e.properties.len() + extra.len());
        for (k, v) in e.properties.iter() {
            kv.push((dicts.keys.intern(k), dicts.values.intern_value(v)));
        }
        for (k, v) in extra {
            kv.push((dicts.keys.intern(k), dicts.values.intern_value(v)));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.memtable.push(e.timestamp, seq, ev, did, e.uuid, kv);
        self.earliest = Some(self.earliest.map_or(e.timestamp, |x| x.min(e.timestamp)));
    }

    /// Seals the memtable into a sorted run (keyed by each event's original
    /// person). Returns the new run, if any.
    pub fn seal(&mut self) -> Option<Arc<Run>> {
        if self.memtable.is_empty() {
            return None;
        }
        self.cached = None;
        let ident = &self.identity;
        let cols = &self.memtable;
        let run = Arc::new(Run::build(cols, |i| {
            ident
                .original_person(cols.did[i])
                .expect("every stored did has a person")
        }));
        // Keep the memtable's capacity: capture refills it right away, and
        // growing it again from empty costs fresh pages and copies (first
        // touches of fresh memory were ~13% of capture CPU, BENCHMARKS.md).
        // Appends seal it every 64k events, which bounds what is kept.
        self.memtable.clear();
        self.runs.push(run.clone());
        Some(run)
    }

    /// A consistent read view: seals the memtable and indexes persons.
    pub fn snapshot(&mut self) -> Snapshot {
        if let Some(s) = &self.cached {
            return s.clone();
        }
        self.seal();
        let s = Snapshot::build(
            self.dicts.clone(),
            self.identity.clone(),
            self.groups.clone(),
            self.cohorts.clone(),
            self.runs.clone(),
            self.earliest,
        );
        self.cached = Some(s.clone());
        s
    }

    /// Merges all runs into one sorted by canonical person (folds identity
    /// joins into the layout). Returns the merged run.
    pub fn compact_in_memory(&mut self) -> Option<Arc<Run>> {
        self.seal();
        if self.runs.len() <= 1 {
            return self.runs.first().cloned();
        }
        let snap = self.snapshot();
        let run = Arc::new(snap.merged_run());
        self.runs = vec![run.clone()];
        self.cached = None;
        Some(run)
    }

    pub fn event_count(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum::<usize>() + self.memtable.len()
    }
}

impl GroupData {
    pub fn set_type(&mut self, idx: u8, name: &str) {
        let i = idx as usize;
        if self.types.len() <= i {
            self.types.resize(i + 1, String::new());
        }
        self.types[i] = name.to_string();
    }

    /// The slot of a group type that already has one.
    pub fn index_of(&self, name: &str) -> Option<u8> {
        self.types.iter().position(|t| t == name).map(|i| i as u8)
    }

    /// The slot of a group type, assigned on first sight (at most 5).
    pub fn index_for(&mut self, name: &str) -> Option<u8> {
        if let Some(i) = self.types.iter().position(|t| t == name) {
            return Some(i as u8);
        }
        if let Some(i) = self.types.iter().position(|t| t.is_empty()) {
            self.types[i] = name.to_string();
            return Some(i as u8);
        }
        if self.types.len() < 5 {
            self.types.push(name.to_string());
            return Some((self.types.len() - 1) as u8);
        }
        None
    }
}

/// Whether replaying property `key` of event `event` through
/// [`State::apply_meta`] changes anything, given what applying it did.
/// Keep in step with `State::event_effects`.
fn is_meta_key(event: &str, key: &str, fx: Effects) -> bool {
    match key {
        "$set" | "$set_once" => true,
        "$groups" => fx.new_group_type,
        "$anon_distinct_id" => event == "$identify",
        "alias" => event == "$create_alias" || event == "$merge_dangerously",
        "$group_type" | "$group_key" | "$group_set" => event == "$groupidentify",
        _ => false,
    }
}

/// The part of an event that matters for identity, person and group state:
/// the same event with only the properties [`State::apply_meta`] needs to
/// rebuild that state (`fx`: what applying the event did). `None` when
/// replaying it would change nothing: none of those properties, and its
/// distinct id was already known.
pub fn meta_projection(e: &Event, fx: Effects) -> Option<Event> {
    let props: Map<String, Value> = e
        .properties
        .iter()
        .filter(|(k, _)| is_meta_key(&e.event, k, fx))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if props.is_empty() && !fx.new_did {
        return None;
    }
    Some(Event {
        uuid: e.uuid,
        event: e.event.clone(),
        distinct_id: e.distinct_id.clone(),
        timestamp: e.timestamp,
        properties: props,
    })
}

/// The fingerprints of every event in the segment runs among `runs`. The
/// mapped uuid columns read for it are released again (their pages are not
/// kept in this process: see `Col::release`).
fn segment_fingerprints(runs: &[Arc<Run>]) -> rustc_hash::FxHashSet<u64> {
    let sorted: Vec<_> = runs.iter().filter_map(|r| r.uuid_sorted.as_ref()).collect();
    let n = sorted.iter().map(|s| s.len()).sum();
    let mut fps = rustc_hash::FxHashSet::with_capacity_and_hasher(n, Default::default());
    for s in sorted {
        fps.extend(s.iter().map(|&u| uuid_fingerprint(u)));
        s.release();
    }
    fps
}

/// A 64-bit fingerprint of a uuid (both halves mixed, so that uuids that
/// differ in either half differ here almost always).
pub fn uuid_fingerprint(u: u128) -> u64 {
    let (lo, hi) = (u as u64, (u >> 64) as u64);
    lo ^ hi.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Builds the properties map of an event from JSON pairs (helper for tests).
pub fn props_map(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Group properties keyed by (type index, key).
pub type GroupProps = HashMap<(u8, String), Vec<(u32, u32)>>;
