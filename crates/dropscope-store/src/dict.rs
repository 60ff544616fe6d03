//! Dictionaries: strings interned to dense `u32` ids.
//!
//! Event names, distinct ids, property keys and property values are stored
//! and compared as ids; the strings live once, here. Ids are global to a
//! store and never change: `dicts.log` (dictlog.rs) keeps every string in
//! id order. The strings a store held when it was opened are read in place
//! from that log, memory-mapped ([`BaseStrings`]); only strings interned
//! since live on the heap.
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

/// The strings of a dictionary that its log held when the store was
/// opened: ids `0..len()`, read in place from the mapped log. Each costs 8
/// bytes for where it starts and ~10 for the index, instead of a heap
/// string with its `Arc` and map entry (~140 bytes): at 100M demo events the
/// values dictionary holds ~25M strings.
#[derive(Default)]
pub struct BaseStrings {
    map: Option<Arc<memmap2::Mmap>>,
    /// Byte offset of each string in `map`; its length is the
    /// little-endian u32 just before it.
    starts: Vec<u64>,
    /// Ids by string hash, each beside the top half of its hash so that a
    /// probe rarely reads a string to compare.
    index: hashbrown::HashTable<(u32, u32)>,
    /// Each string's [`Head`], so that a value's type is known without
    /// reading the mapped log (one byte a string).
    heads: Vec<Head>,
}

/// A string's first byte (a value's type tag, see the module docs) and
/// whether nothing follows it, kept apart from the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head(u8);

impl Head {
    const ALONE: u8 = 0x80;

    fn of(s: &str) -> Head {
        match s.as_bytes() {
            [] => Head(0),
            // ASCII tags only (the value tags are); anything else keeps
            // just "not a tag".
            [b, ..] if *b < 0x80 => Head(*b | if s.len() == 1 { Self::ALONE } else { 0 }),
            _ => Head(0x7f),
        }
    }

    /// The first byte if it is ASCII (a value's type tag), else 0x7f;
    /// 0 for the empty string.
    pub fn tag(self) -> u8 {
        self.0 & !Self::ALONE
    }

    /// Whether the string is one byte long (a value with an empty body).
    pub fn alone(self) -> bool {
        self.0 & Self::ALONE != 0
    }
}

/// The index's hash of an entry: from the top half of the string's hash
/// kept in the entry, so that growing the index reads no string.
fn table_hash(hi: u32) -> u64 {
    (hi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn hash_str(s: &str) -> u64 {
    use std::hash::BuildHasher;
    // FxHash is fast but its high bits are weak on similar strings; a
    // finalizer (MurmurHash3's fmix64) spreads them, so that the top half
    // kept in the index tells strings apart.
    let mut h = rustc_hash::FxBuildHasher.hash_one(s);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl BaseStrings {
    /// An empty set over the mapped log `map`, for [`BaseStrings::push`],
    /// with room for `n` strings.
    pub(crate) fn over(map: Arc<memmap2::Mmap>, n: usize) -> BaseStrings {
        BaseStrings {
            map: Some(map),
            starts: Vec::with_capacity(n),
            index: hashbrown::HashTable::with_capacity(n),
            heads: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    fn get(&self, i: usize) -> &str {
        let m = self.map.as_deref().expect("strings come with their map");
        let st = self.starts[i] as usize;
        let len = u32::from_le_bytes(m[st - 4..st].try_into().expect("4 bytes")) as usize;
        std::str::from_utf8(&m[st..st + len]).expect("checked when the log was read")
    }

    fn find(&self, s: &str, h: u64) -> Option<u32> {
        let hi = (h >> 32) as u32;
        self.index
            .find(table_hash(hi), |&(id, x)| {
                x == hi && self.get(id as usize) == s
            })
            .map(|&(id, _)| id)
    }

    /// Drops the map's pages from this process (see `Dicts::release_pages`).
    fn release_pages(&self) {
        if let Some(map) = &self.map {
            // SAFETY: a read-only mapping of the committed part of the log,
            // which never changes; MADV_DONTNEED only drops the pages from
            // this process and later reads fault them in again unchanged.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Appends the string `s`, found at byte `start` of the map (after its
    /// length), as the next id; `false` if it is already there.
    pub(crate) fn push(&mut self, start: u64, s: &str) -> bool {
        let h = hash_str(s);
        if self.find(s, h).is_some() {
            return false;
        }
        let id = self.starts.len() as u32;
        self.starts.push(start);
        self.heads.push(Head::of(s));
        let hi = (h >> 32) as u32;
        self.index
            .insert_unique(table_hash(hi), (id, hi), |&(_, x)| table_hash(x));
        true
    }
}

/// An append-only string interner that ingest and queries share.
///
/// Ids resolve to strings without any lock: strings of the opened log are
/// immutable ([`BaseStrings`]), and later ones sit in an append-only vector
/// whose elements never move. So a query that resolves ids while it runs
/// never holds up capture. Only the map of later strings is locked, and
/// only for the moment of a lookup (plan compile) or an insert (ingest).
pub struct Interner {
    base: Arc<BaseStrings>,
    /// Strings interned since the store was opened: ids from `base.len()`.
    map: RwLock<HashMap<Arc<str>, u32>>,
    // boxcar: a lock-free append-only vector; hand-writing one would mean
    // unsafe code for no gain.
    strings: boxcar::Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            base: Arc::default(),
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
            base: self.base.clone(),
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

    /// Sets the strings read from the log; the interner must be empty.
    pub(crate) fn set_base(&mut self, base: BaseStrings) {
        assert!(
            self.is_empty(),
            "the log is read before anything is interned"
        );
        self.base = Arc::new(base);
    }

    fn find_base(&self, s: &str) -> Option<u32> {
        if self.base.is_empty() {
            return None;
        }
        self.base.find(s, hash_str(s))
    }

    pub fn intern(&self, s: &str) -> u32 {
        if let Some(id) = self.find_base(s) {
            return id;
        }
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
        let id = (self.base.len() + self.strings.push(arc.clone())) as u32;
        map.insert(arc, id);
        id
    }

    pub fn get(&self, s: &str) -> Option<u32> {
        self.find_base(s)
            .or_else(|| self.read_map().get(s).copied())
    }

    pub fn resolve(&self, id: u32) -> &str {
        let i = id as usize;
        let b = self.base.len();
        if i < b {
            return self.base.get(i);
        }
        match self.strings.get(i - b) {
            Some(s) => s,
            None => panic!("dictionary id {id} was never interned"),
        }
    }

    pub fn len(&self) -> usize {
        self.base.len() + self.strings.count()
    }

    /// The [`Head`] of string `id`, without reading a mapped string (for
    /// a value: its type tag and whether its body is empty).
    pub fn head(&self, id: u32) -> Head {
        let i = id as usize;
        match self.base.heads.get(i) {
            Some(&h) => h,
            None => Head::of(self.resolve(id)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        let b = self.base.len();
        (0..b).map(|i| (i as u32, self.base.get(i))).chain(
            self.strings
                .iter()
                .map(move |(i, s)| ((b + i) as u32, &**s)),
        )
    }
}

impl Interner {
    /// Interns the tagged text of a JSON value without allocating when the
    /// value is already known.
    pub fn intern_value(&self, v: &Value) -> u32 {
        with_buf(|b| {
            write_value(b, v);
            self.intern(b)
        })
    }

    /// The id of the JSON string `s` (tagged `s…`), if stored, without
    /// allocating.
    pub fn get_string_value(&self, s: &str) -> Option<u32> {
        with_buf(|b| {
            b.push('s');
            b.push_str(s);
            self.get(b)
        })
    }
}

/// Runs `f` on a cleared, per-thread buffer for tagged value text.
fn with_buf<R>(f: impl FnOnce(&mut String) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        f(&mut b)
    })
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

impl Dicts {
    /// Drops the pages of the mapped dictionary logs that lookups have read
    /// (each confirms a hash hit by reading the string) from this process.
    /// Nothing changes for readers: a page read again faults back in.
    /// Opening a store calls this while it replays, so that confirming
    /// every replayed string does not keep the whole log resident.
    pub fn release_pages(&self) {
        for d in [&self.events, &self.distinct_ids, &self.keys, &self.values] {
            d.base.release_pages();
        }
    }
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

    #[test]
    fn heads_tell_a_value_type_and_an_empty_body() {
        let i = Interner::default();
        for (v, tag, alone) in [
            (json!("x"), b's', false),
            (json!(""), b's', true),
            (json!(1), b'n', false),
            (json!(true), b'b', false),
            (serde_json::Value::Null, b'z', true),
            (json!([1]), b'j', false),
        ] {
            let h = i.head(i.intern_value(&v));
            assert_eq!((h.tag(), h.alone()), (tag, alone), "{v}");
        }
        assert_eq!(Head::of("").tag(), 0);
        assert_eq!(Head::of("é").tag(), 0x7f);
    }
}
