//! Dictionaries: strings interned to dense `u32` ids.
//!
//! Event names, distinct ids, property keys and property values are stored
//! and compared as ids; the strings live once, here. Ids are global to an
//! open store and never change while it is open (segment files carry their
//! own local dictionaries and are remapped when loaded).
//!
//! A property value is interned in a *tagged* text form so that the JSON
//! type survives: the first byte is the type (`s` string, `n` number, `b`
//! bool, `z` null, `j` any other JSON, as text), the rest is the value's
//! string form (PostHog compares values by their string form).

// FxHash: interning is on the ingest hot path and keys are not
// attacker-chosen hash-flooding targets worth SipHash's cost here.
use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// An append-only string interner that ingest and queries share.
///
/// Ids resolve to strings without any lock (`strings` is an append-only
/// vector whose elements never move), so a query that resolves ids while it
/// runs never holds up capture. Only the string -> id map is locked, and
/// only for the moment of a lookup (plan compile) or an insert (ingest).
pub struct Interner {
    map: RwLock<HashMap<Arc<str>, u32>>,
    // boxcar: a lock-free append-only vector; hand-writing one would mean
    // unsafe code for no gain.
    strings: boxcar::Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            map: RwLock::new(HashMap::default()),
            strings: boxcar::Vec::new(),
        }
    }
}

impl Clone for Interner {
    fn clone(&self) -> Self {
        // Hold the map while copying so that the copy's map and strings agree.
        let map = self.read_map();
        let strings = boxcar::Vec::new();
        for i in 0..map.len() {
            strings.push(Arc::clone(&self.strings[i]));
        }
        Interner {
            map: RwLock::new(map.clone()),
            strings,
        }
    }
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interner")
            .field("len", &self.len())
            .finish()
    }
}

impl Interner {
    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, u32>> {
        // A panic elsewhere cannot leave the map half-updated (one insert is
        // the only write), so a poisoned lock is still sound to read.
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn intern(&self, s: &str) -> u32 {
        if let Some(&id) = self.read_map().get(s) {
            return id;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = map.get(s) {
            return id;
        }
        let arc: Arc<str> = s.into();
        // Pushes happen only under the map's write lock, so the vector's
        // index is the next dense id.
        let id = self.strings.push(arc.clone()) as u32;
        map.insert(arc, id);
        id
    }

    pub fn get(&self, s: &str) -> Option<u32> {
        self.read_map().get(s).copied()
    }

    pub fn resolve(&self, id: u32) -> &str {
        match self.strings.get(id as usize) {
            Some(s) => s,
            None => panic!("dictionary id {id} was never interned"),
        }
    }

    pub fn len(&self) -> usize {
        self.strings.count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.strings.iter().map(|(i, s)| (i as u32, &**s))
    }
}

impl Interner {
    /// Interns the tagged text of a JSON value without allocating when the
    /// value is already known.
    pub fn intern_value(&self, v: &Value) -> u32 {
        thread_local! {
            static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        BUF.with(|b| {
            let mut b = b.borrow_mut();
            b.clear();
            write_value(&mut b, v);
            self.intern(&b)
        })
    }
}

fn write_value(out: &mut String, v: &Value) {
    use std::fmt::Write;
    match v {
        Value::String(s) => {
            out.push('s');
            out.push_str(s);
        }
        Value::Number(n) => {
            out.push('n');
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                out.push_str(&dropscope_core::event::value_string_form(v));
            }
        }
        Value::Bool(b) => {
            out.push('b');
            out.push_str(if *b { "true" } else { "false" });
        }
        Value::Null => out.push('z'),
        other => {
            out.push('j');
            let _ = write!(out, "{other}");
        }
    }
}

/// Tagged text of a JSON value (see the module docs).
pub fn encode_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let mut out = String::with_capacity(s.len() + 1);
            out.push('s');
            out.push_str(s);
            out
        }
        Value::Number(_) => format!("n{}", dropscope_core::event::value_string_form(v)),
        Value::Bool(b) => format!("b{b}"),
        Value::Null => "z".to_string(),
        other => format!("j{other}"),
    }
}

/// The string form of a tagged value (what filters and breakdowns compare).
pub fn value_str(tagged: &str) -> &str {
    match tagged.as_bytes().first() {
        Some(b'z') | None => "",
        _ => &tagged[1..],
    }
}

/// The JSON value behind a tagged value.
pub fn decode_value(tagged: &str) -> Value {
    let body = tagged.get(1..).unwrap_or("");
    match tagged.as_bytes().first() {
        Some(b's') => Value::String(body.to_string()),
        Some(b'n') => serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into())),
        Some(b'b') => Value::Bool(body == "true"),
        Some(b'j') => serde_json::from_str(body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Whether a tagged value is a JSON number.
pub fn value_is_number(tagged: &str) -> bool {
    tagged.as_bytes().first() == Some(&b'n')
}

/// All dictionaries of an open store.
#[derive(Debug, Default, Clone)]
pub struct Dicts {
    pub events: Interner,
    pub keys: Interner,
    pub values: Interner,
    pub distinct_ids: Interner,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tagged_values_round_trip() {
        for v in [
            json!("Chrome"),
            json!(95),
            json!(1.5),
            json!(true),
            json!(null),
            json!([1, "a"]),
            json!({"a": 1}),
            json!(""),
        ] {
            let t = encode_value(&v);
            assert_eq!(decode_value(&t), v, "{t}");
            let i = Interner::default();
            let id = i.intern_value(&v);
            assert_eq!(i.resolve(id), t, "intern_value agrees with encode_value");
        }
        assert_eq!(value_str(&encode_value(&json!(95))), "95");
        assert_eq!(value_str(&encode_value(&json!(null))), "");
        assert_ne!(encode_value(&json!("95")), encode_value(&json!(95)));
    }

    #[test]
    fn interner_is_dense_and_stable() {
        let i = Interner::default();
        assert_eq!(i.intern("a"), 0);
        assert_eq!(i.intern("b"), 1);
        assert_eq!(i.intern("a"), 0);
        assert_eq!(i.resolve(1), "b");
        assert_eq!(i.get("c"), None);
    }
}
