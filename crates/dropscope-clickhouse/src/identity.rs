//! Distinct id → person resolution for loading (SEMANTICS.md: `$identify`,
//! `$create_alias`, `$merge_dangerously` and person records join distinct
//! ids; a join applies to events stored before it).
//!
//! Every distinct id gets an own numeric id when first seen; events are
//! stored with it. A person is a union-find set of distinct ids whose
//! canonical id is the smallest own id in the set. Distinct ids whose
//! canonical id differs from their own id get a row in `person_overrides`,
//! which queries apply at read time.

use std::collections::HashMap;

use dropscope_core::event::Event;
use serde_json::Value;

#[derive(Debug, Default)]
pub struct Identity {
    ids: HashMap<String, u64>,
    names: Vec<String>,
    /// Union-find parent, indexed by own id − 1.
    parent: Vec<u64>,
    /// Override last written for a distinct id (0 = none).
    written: HashMap<String, u64>,
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

    fn union(&mut self, a: u64, b: u64) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[(hi - 1) as usize] = lo;
        }
    }

    /// The own id of a known distinct id (0 if unknown).
    pub fn own_id(&self, did: &str) -> u64 {
        self.ids.get(did).copied().unwrap_or(0)
    }

    /// A person record: joins its distinct ids. Returns the new ones.
    pub fn person(&mut self, dids: &[String]) -> Vec<String> {
        let mut new = Vec::new();
        let mut first = None;
        for d in dids {
            let (id, is_new) = self.ensure(d);
            if is_new {
                new.push(d.clone());
            }
            match first {
                None => first = Some(id),
                Some(f) => self.union(f, id),
            }
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
        let other = match e.event.as_str() {
            "$identify" => e.properties.get("$anon_distinct_id"),
            "$create_alias" | "$merge_dangerously" => e.properties.get("alias"),
            _ => None,
        };
        if let Some(other) = other.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            if other != e.distinct_id {
                let (oid, onew) = self.ensure(other);
                if onew {
                    new.push(other.to_string());
                }
                self.union(id, oid);
            }
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
            self.union(own, pid);
            self.written.insert(did.to_string(), pid);
        }
    }

    /// Canonical person id of every distinct id.
    pub fn snapshot(&self) -> HashMap<String, u64> {
        let mut me = Identity {
            ids: self.ids.clone(),
            names: self.names.clone(),
            parent: self.parent.clone(),
            written: HashMap::new(),
        };
        self.ids
            .iter()
            .map(|(d, &id)| (d.clone(), me.find(id)))
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
        id.person(&["x".into(), "user".into()]);
        let s = id.snapshot();
        assert_eq!(s["x"], 1);
        assert_eq!(id.take_changed(), vec![("x".to_string(), 1)]);
    }
}
