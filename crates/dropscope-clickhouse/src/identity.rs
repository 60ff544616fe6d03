//! Distinct id → person resolution for loading (SEMANTICS.md: `$identify`,
//! `$create_alias`, `$merge_dangerously` and person records join distinct
//! ids; a join applies to events stored before it).
//!
//! Every distinct id gets an own numeric id when first seen; events are
//! stored with it. A person is a union-find set of distinct ids whose
//! canonical id is the smallest own id in the set. Distinct ids whose
//! canonical id differs from their own id get a row in `person_overrides`,
//! which queries apply at read time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use dropscope_core::event::{value_string_form, Event, PersonRecord};
use serde_json::{Map, Value};

/// Current properties of one person: key → string form (`None` = JSON null,
/// which filters and breakdowns treat as missing but which still blocks a
/// later `$set_once`).
pub type Props = BTreeMap<String, Option<String>>;

/// A person's state row for `person_props`: (canonical id, properties,
/// person-record label, deleted).
pub type PersonRow = (u64, Props, Option<String>, bool);

#[derive(Debug, Default)]
pub struct Identity {
    ids: HashMap<String, u64>,
    names: Vec<String>,
    /// Union-find parent, indexed by own id − 1.
    parent: Vec<u64>,
    /// Override last written for a distinct id (0 = none).
    written: HashMap<String, u64>,
    /// Person properties per canonical id, maintained exactly as the
    /// embedded store does (SEMANTICS: `$set` overwrites, `$set_once` only
    /// fills; on a join the joining person's values win and the other's
    /// only fill keys it lacks).
    props: HashMap<u64, Props>,
    /// Person-record labels (`PersonRecord::id`) per canonical id, following
    /// the store's rule (a join keeps the joining person's label).
    labels: HashMap<u64, String>,
    /// Canonical ids whose row must be (re)written.
    dirty: BTreeSet<u64>,
    /// Ids with a live row in `person_props`.
    rowed: HashSet<u64>,
}

impl Identity {
    /// The own id of a distinct id, assigning one if new. Returns
    /// (id, whether it is new).
    fn ensure(&mut self, did: &str) -> (u64, bool) {
        if let Some(&id) = self.ids.get(did) {
            return (id, false);
        }
        let id = self.parent.len() as u64 + 1;
        self.parent.push(id);
        self.names.push(did.to_string());
        self.ids.insert(did.to_string(), id);
        (id, true)
    }

    fn find(&mut self, id: u64) -> u64 {
        let mut r = id;
        while self.parent[(r - 1) as usize] != r {
            r = self.parent[(r - 1) as usize];
        }
        let mut x = id;
        while self.parent[(x - 1) as usize] != r {
            let next = self.parent[(x - 1) as usize];
            self.parent[(x - 1) as usize] = r;
            x = next;
        }
        r
    }

    /// Joins the person of `from` into the person of `into` (the store's
    /// `merge(into, from)`): the canonical id is the smaller root; the
    /// properties and label follow `into`.
    fn union(&mut self, into: u64, from: u64) {
        let (ri, rf) = (self.find(into), self.find(from));
        if ri == rf {
            return;
        }
        let (lo, hi) = if ri < rf { (ri, rf) } else { (rf, ri) };
        self.parent[(hi - 1) as usize] = lo;
        let pi = self.props.remove(&ri);
        let pf = self.props.remove(&rf);
        if pi.is_some() || pf.is_some() {
            let mut merged = pi.unwrap_or_default();
            for (k, v) in pf.unwrap_or_default() {
                merged.entry(k).or_insert(v);
            }
            self.props.insert(lo, merged);
        }
        let li = self.labels.remove(&ri);
        self.labels.remove(&rf);
        if let Some(l) = li {
            self.labels.insert(lo, l);
        }
        self.dirty.insert(lo);
        self.dirty.insert(hi);
    }

    /// Canonical id without path compression (read-only callers).
    pub fn root(&self, id: u64) -> u64 {
        let mut r = id;
        while r != 0 && self.parent[(r - 1) as usize] != r {
            r = self.parent[(r - 1) as usize];
        }
        r
    }

    /// The canonical person of a distinct id, if known.
    pub fn person_of(&self, did: &str) -> Option<u64> {
        self.ids.get(did).map(|&id| self.root(id))
    }

    /// Canonical persons whose person-record label is `label`.
    pub fn persons_labelled(&self, label: &str) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .labels
            .iter()
            .filter(|(id, l)| l.as_str() == label && self.root(**id) == **id)
            .map(|(id, _)| *id)
            .collect();
        out.sort_unstable();
        out
    }

    /// Applies `$set` (`once == false`) or `$set_once` to a person.
    pub fn set_props(&mut self, id: u64, set: &Map<String, Value>, once: bool) {
        if set.is_empty() {
            return;
        }
        let r = self.find(id);
        let p = self.props.entry(r).or_default();
        for (k, v) in set {
            let v = (!v.is_null()).then(|| value_string_form(v));
            if once {
                p.entry(k.clone()).or_insert(v);
            } else {
                p.insert(k.clone(), v);
            }
        }
        self.dirty.insert(r);
    }

    /// Rows for `person_props` of the persons changed since the last call.
    pub fn take_person_rows(&mut self) -> Vec<PersonRow> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = Vec::new();
        for id in dirty {
            if self.find(id) != id {
                if self.rowed.remove(&id) {
                    out.push((id, Props::new(), None, true));
                }
                continue;
            }
            let props = self.props.get(&id).cloned().unwrap_or_default();
            let label = self.labels.get(&id).cloned();
            if props.is_empty() && label.is_none() && !self.rowed.contains(&id) {
                continue;
            }
            self.rowed.insert(id);
            out.push((id, props, label, false));
        }
        out
    }

    /// Restores a person's row from the database.
    pub fn restore_person(&mut self, id: u64, props: Props, label: Option<String>) {
        if id == 0 {
            return;
        }
        while (self.parent.len() as u64) < id {
            let n = self.parent.len() as u64 + 1;
            self.parent.push(n);
            self.names.push(String::new());
        }
        if !props.is_empty() {
            self.props.insert(id, props);
        }
        if let Some(l) = label {
            self.labels.insert(id, l);
        }
        self.rowed.insert(id);
    }

    /// The own id of a known distinct id (0 if unknown).
    pub fn own_id(&self, did: &str) -> u64 {
        self.ids.get(did).copied().unwrap_or(0)
    }

    /// A person record: joins its distinct ids (the first one's person
    /// absorbs the others), sets its label and properties. Returns the new
    /// distinct ids.
    pub fn person(&mut self, p: &PersonRecord) -> Vec<String> {
        let mut new = Vec::new();
        let mut first = None;
        for d in &p.distinct_ids {
            let (id, is_new) = self.ensure(d);
            if is_new {
                new.push(d.clone());
            }
            match first {
                None => first = Some(id),
                Some(f) => self.union(f, id),
            }
        }
        if let Some(f) = first {
            let r = self.find(f);
            // The label is the record's id, or its first distinct id (then
            // it names a distinct id and is found as one).
            let had = self.labels.contains_key(&r);
            if p.id.is_empty() {
                self.labels.remove(&r);
            } else {
                self.labels.insert(r, p.id.clone());
            }
            if had || !p.id.is_empty() {
                self.dirty.insert(r);
            }
            self.set_props(r, &p.properties, false);
        }
        new
    }

    /// An event: its distinct id, and the join it makes, if any. Returns
    /// the new distinct ids.
    pub fn event(&mut self, e: &Event) -> Vec<String> {
        let mut new = Vec::new();
        let (id, is_new) = self.ensure(&e.distinct_id);
        if is_new {
            new.push(e.distinct_id.clone());
        }
        if let Some(other) = e.joined_distinct_id() {
            let (oid, onew) = self.ensure(other);
            if onew {
                new.push(other.to_string());
            }
            self.union(id, oid);
        }
        // Person properties, after the join (as the store applies them).
        if let Some(Value::Object(set)) = e.properties.get("$set") {
            self.set_props(id, set, false);
        }
        if let Some(Value::Object(set)) = e.properties.get("$set_once") {
            self.set_props(id, set, true);
        }
        new
    }

    /// Distinct ids whose person changed since the last call, with their
    /// canonical person id.
    pub fn take_changed(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for i in 0..self.names.len() {
            let own = i as u64 + 1;
            let canon = self.find(own);
            let name = &self.names[i];
            let written = self.written.get(name).copied().unwrap_or(0);
            let effective = if written == 0 { own } else { written };
            if effective != canon {
                out.push((name.clone(), canon));
            }
        }
        for (d, p) in &out {
            self.written.insert(d.clone(), *p);
        }
        out
    }

    /// Restores a distinct id from the database: its own id and override.
    pub fn restore(&mut self, did: &str, own: u64, pid: u64) {
        if own == 0 {
            return;
        }
        while (self.parent.len() as u64) < own {
            let id = self.parent.len() as u64 + 1;
            self.parent.push(id);
            self.names.push(String::new());
        }
        self.names[(own - 1) as usize] = did.to_string();
        self.ids.insert(did.to_string(), own);
        if pid != 0 {
            while (self.parent.len() as u64) < pid {
                let id = self.parent.len() as u64 + 1;
                self.parent.push(id);
                self.names.push(String::new());
            }
            let (ra, rb) = (self.find(own), self.find(pid));
            if ra != rb {
                let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
                self.parent[(hi - 1) as usize] = lo;
            }
            self.written.insert(did.to_string(), pid);
        }
    }

    /// Canonical person id of every distinct id.
    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.ids
            .iter()
            .map(|(d, &id)| (d.clone(), self.root(id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(did: &str, name: &str, props: Value) -> Event {
        Event {
            uuid: 0,
            event: name.into(),
            distinct_id: did.into(),
            timestamp: 0,
            properties: props.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn joins_and_overrides() {
        let mut id = Identity::default();
        id.event(&ev("anon", "pageview", serde_json::json!({})));
        id.event(&ev("user", "pageview", serde_json::json!({})));
        assert!(id.take_changed().is_empty());
        id.event(&ev(
            "user",
            "$identify",
            serde_json::json!({"$anon_distinct_id": "anon"}),
        ));
        assert_eq!(id.take_changed(), vec![("user".to_string(), 1)]);
        assert!(id.take_changed().is_empty());
        id.person(&PersonRecord {
            id: String::new(),
            distinct_ids: vec!["x".into(), "user".into()],
            properties: Map::new(),
        });
        let s = id.snapshot();
        assert_eq!(s["x"], 1);
        assert_eq!(id.take_changed(), vec![("x".to_string(), 1)]);
    }
}
