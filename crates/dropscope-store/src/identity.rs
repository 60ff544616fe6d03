//! Identity: which distinct ids are one person, and each person's properties.
//!
//! Every distinct id gets a person when first seen. `$identify`,
//! `$create_alias` and `$merge_dangerously` join two persons with a
//! union-find; events are never rewritten at join time. Instead every read
//! resolves an event's person through [`Identity::root`] (the override map),
//! and compaction later re-sorts events under their canonical person.

use serde_json::{Map, Value};

use crate::dict::Dicts;

/// One person (only meaningful at a union-find root). Kept small, since a
/// store holds one per distinct id (10M at 100M demo events): 56 bytes and
/// no heap for the common person (one distinct id, shown under it, no
/// properties), instead of ~120 with a label string and two vectors.
#[derive(Debug, Clone)]
pub struct PersonData {
    /// The label when it is not the first distinct id (an imported
    /// person's id).
    label: Option<Box<str>>,
    /// The first distinct id (`u32::MAX` for a person merged away).
    first_did: u32,
    /// Distinct ids owned besides the first (at the root: every merged
    /// person's).
    more_dids: Box<[u32]>,
    /// Current properties: (key id, value id), sorted by key id.
    props: Box<[(u32, u32)]>,
}

impl Default for PersonData {
    fn default() -> Self {
        PersonData {
            label: None,
            first_did: u32::MAX,
            more_dids: Box::default(),
            props: Box::default(),
        }
    }
}

impl PersonData {
    /// The label a person is shown under: an imported person's id, else its
    /// first distinct id.
    pub fn label<'a>(&'a self, dicts: &'a Dicts) -> &'a str {
        match &self.label {
            Some(l) => l,
            None if self.first_did == u32::MAX => "",
            None => dicts.distinct_ids.resolve(self.first_did),
        }
    }

    /// Distinct id ids owned (at the root: all of the merged person's).
    pub fn dids(&self) -> impl Iterator<Item = u32> + '_ {
        (self.first_did != u32::MAX)
            .then_some(self.first_did)
            .into_iter()
            .chain(self.more_dids.iter().copied())
    }

    /// Current properties: (key id, value id), sorted by key id.
    pub fn props(&self) -> &[(u32, u32)] {
        &self.props
    }

    pub fn prop(&self, key: u32) -> Option<u32> {
        self.props
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| self.props[i].1)
    }

    fn set(&mut self, key: u32, val: u32, once: bool) {
        match self.props.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => {
                if !once {
                    self.props[i].1 = val;
                }
            }
            Err(i) => {
                let mut v = std::mem::take(&mut self.props).into_vec();
                v.insert(i, (key, val));
                self.props = v.into_boxed_slice();
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// distinct-id id -> the person it was first given (never changes).
    did_person: Vec<u32>,
    /// union-find parent per person id.
    parent: Vec<u32>,
    persons: Vec<PersonData>,
}

impl Identity {
    /// The person of a distinct id, creating one (shown under that id) if
    /// new.
    pub fn ensure(&mut self, did: u32) -> u32 {
        let i = did as usize;
        if i >= self.did_person.len() {
            self.did_person.resize(i + 1, u32::MAX);
        }
        if self.did_person[i] == u32::MAX {
            let p = self.persons.len() as u32;
            self.persons.push(PersonData {
                first_did: did,
                ..PersonData::default()
            });
            self.parent.push(p);
            self.did_person[i] = p;
        }
        self.root(self.did_person[i])
    }

    /// The person a distinct id was first given (before any join), if known.
    pub fn original_person(&self, did: u32) -> Option<u32> {
        self.did_person
            .get(did as usize)
            .copied()
            .filter(|p| *p != u32::MAX)
    }

    /// The canonical person of a person id.
    pub fn root(&self, mut p: u32) -> u32 {
        while self.parent[p as usize] != p {
            p = self.parent[p as usize];
        }
        p
    }

    /// Current canonical person of a distinct id.
    pub fn person_of_did(&self, did: u32) -> Option<u32> {
        self.original_person(did).map(|p| self.root(p))
    }

    /// Joins person `from` into person `into` (both any ids). The root of
    /// `into` stays canonical; its properties win over `from`'s.
    pub fn merge(&mut self, into: u32, from: u32) -> u32 {
        let (a, b) = (self.root(into), self.root(from));
        if a == b {
            return a;
        }
        self.parent[b as usize] = a;
        let moved = std::mem::take(&mut self.persons[b as usize]);
        let target = &mut self.persons[a as usize];
        let mut more = std::mem::take(&mut target.more_dids).into_vec();
        more.extend(moved.dids());
        target.more_dids = more.into_boxed_slice();
        for &(k, v) in moved.props.iter() {
            target.set(k, v, true);
        }
        a
    }

    pub fn person(&self, p: u32) -> &PersonData {
        &self.persons[self.root(p) as usize]
    }

    /// Shows person `p` under `label` (kept only when it is not the
    /// first distinct id's string).
    pub fn set_label(&mut self, p: u32, label: &str, dicts: &Dicts) {
        let r = self.root(p) as usize;
        let person = &mut self.persons[r];
        person.label = None;
        if person.label(dicts) != label {
            person.label = Some(label.into());
        }
    }

    /// Applies `$set` (overwrite) or `$set_once` (only if absent).
    pub fn set_props(&mut self, p: u32, props: &Map<String, Value>, once: bool, dicts: &Dicts) {
        let r = self.root(p) as usize;
        for (k, v) in props {
            let k = dicts.keys.intern(k);
            let v = dicts.values.intern_value(v);
            self.persons[r].set(k, v, once);
        }
    }

    /// Number of person ids ever created (roots and merged).
    pub fn person_ids(&self) -> usize {
        self.persons.len()
    }

    /// Fully resolved roots, indexed by person id.
    pub fn roots(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::with_capacity(self.parent.len());
        for p in 0..self.parent.len() as u32 {
            let parent = self.parent[p as usize];
            // Parents are created before children only after merges, so
            // resolve by walking; memoise via `out` when the parent is lower.
            let r = if parent < p {
                out[parent as usize]
            } else {
                self.root(p)
            };
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_transitive_and_keeps_target_label() {
        let d = Dicts::default();
        let mut id = Identity::default();
        let a = d.distinct_ids.intern("a");
        let b = d.distinct_ids.intern("b");
        let c = d.distinct_ids.intern("c");
        let pa = id.ensure(a);
        let pb = id.ensure(b);
        let pc = id.ensure(c);
        id.merge(pb, pa);
        id.merge(pc, pb);
        assert_eq!(id.person_of_did(a), id.person_of_did(c));
        assert_eq!(id.person(pa).label(&d), "c");
        let mut dids: Vec<u32> = id.person(pa).dids().collect();
        dids.sort_unstable();
        assert_eq!(dids, [a, b, c]);
        assert_eq!(id.person(pb).dids().count(), 3);
        id.set_label(pa, "imported-7", &d);
        assert_eq!(id.person(pc).label(&d), "imported-7");
        id.set_label(pa, "c", &d);
        assert_eq!(id.person(pc).label(&d), "c");
        assert!(
            id.person(pc).label.is_none(),
            "a label equal to the first id is not stored"
        );
        let roots = id.roots();
        assert!(roots.iter().all(|r| *r == id.root(pc)));
    }

    #[test]
    fn set_once_does_not_overwrite() {
        let d = Dicts::default();
        let mut id = Identity::default();
        let a = d.distinct_ids.intern("a");
        let p = id.ensure(a);
        let mut m = Map::new();
        m.insert("plan".into(), "free".into());
        id.set_props(p, &m, false, &d);
        m.insert("plan".into(), "pro".into());
        id.set_props(p, &m, true, &d);
        let k = d.keys.get("plan").unwrap();
        assert_eq!(d.values.resolve(id.person(p).prop(k).unwrap()), "sfree");
    }
}
