//! Immutable segment files: one sealed [`Run`] in columns, self-contained.
//!
//! # On-disk format (version 1)
//!
//! All integers little-endian. Dictionary ids in a segment are *local* to it:
//! the file carries the strings for every id it uses, and loading remaps them
//! to the open store's global [`Dicts`].
//!
//! ```text
//! file         := header section{14} footer
//! header       := magic:"DSCOPSEG" version:u32 (=1) flags:u32 (=0)        -- 16 bytes
//! section      := raw bytes; sections follow each other in this order:
//!    0 ts           i64{n}        event timestamps, ms UTC
//!    1 seq          u64{n}        ingest order
//!    2 event        u32{n}        local event-name id
//!    3 did          u32{n}        local distinct-id id
//!    4 uuid         u128{n}
//!    5 prop_start   u32{n+1}      event i owns props prop_start[i]..prop_start[i+1]
//!    6 prop_key     u32{m}        local key id
//!    7 prop_val     u32{m}        local value id
//!    8 person_did   u32{p}        per person block: local id of its representative
//!                                 distinct id (the one that created the person)
//!    9 person_start u32{p+1}      block j owns events person_start[j]..person_start[j+1]
//!   10 dict_events  strs
//!   11 dict_dids    strs
//!   12 dict_keys    strs
//!   13 dict_values  strs          tagged values (dict.rs)
//! strs         := count:u32 (len:u32 utf8{len}){count}
//! footer       := n:u64 m:u64 p:u64 nsec:u32 (offset:u64 len:u64 crc32:u32){nsec}
//!                 footer_crc:u32  -- crc32 of the footer bytes before it
//!                 footer_len:u32  -- number of footer bytes before footer_crc
//!                 magic:"DSCOPEND"
//! ```
//!
//! Events are sorted by (person block, ts, seq). A person block is keyed by
//! the distinct id that created its person: on load that id is mapped
//! through the store's identity (rebuilt from the meta log first) to the
//! person id, so the layout stays correct after later identity joins (they
//! only merge persons; the snapshot resolves blocks to canonical persons).
//!
//! Files are written to `<name>.tmp`, fsynced, renamed, and the directory is
//! fsynced. Any mismatch on load (magic, version, sizes, checksums, ids out
//! of range) is a [`StoreError::Corrupt`] naming the file.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::columns::{EventColumns, Run};
use crate::dict::{Dicts, Interner};
use crate::error::StoreError;
use crate::identity::Identity;
use crate::wal::{io_err, sync_dir};

pub const SEG_MAGIC: &[u8; 8] = b"DSCOPSEG";
pub const END_MAGIC: &[u8; 8] = b"DSCOPEND";
pub const VERSION: u32 = 1;
const NSEC: usize = 14;

pub fn segment_name(id: u64) -> String {
    format!("seg-{id:08}.dss")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".dss")?
        .parse()
        .ok()
}

/// global id -> local id, assigned in order of first use.
#[derive(Default)]
struct Local {
    map: Vec<u32>,
    ids: Vec<u32>,
}

impl Local {
    fn get(&mut self, g: u32) -> u32 {
        let i = g as usize;
        if i >= self.map.len() {
            self.map.resize(i + 1, u32::MAX);
        }
        if self.map[i] == u32::MAX {
            self.map[i] = self.ids.len() as u32;
            self.ids.push(g);
        }
        self.map[i]
    }

    fn strings(&self, dict: &Interner, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        for &g in &self.ids {
            let s = dict.resolve(g);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn put<T: Copy, const N: usize>(xs: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * N);
    for &x in xs {
        out.extend_from_slice(&f(x));
    }
    out
}

/// Encodes a run as a segment file image. `rep_did(person)` gives the
/// global distinct id that created each person of `run.persons`.
/// The dictionaries are read-locked only to copy out the strings used.
pub fn encode_segment(run: &Run, dicts: &Dicts, rep_did: impl Fn(u32) -> u32) -> Vec<u8> {
    let c = &run.cols;
    let (mut ev, mut did, mut key, mut val) = (
        Local::default(),
        Local::default(),
        Local::default(),
        Local::default(),
    );
    let l_event: Vec<u32> = c.event.iter().map(|&g| ev.get(g)).collect();
    let l_did: Vec<u32> = c.did.iter().map(|&g| did.get(g)).collect();
    let l_key: Vec<u32> = c.prop_key.iter().map(|&g| key.get(g)).collect();
    let l_val: Vec<u32> = c.prop_val.iter().map(|&g| val.get(g)).collect();
    let l_person: Vec<u32> = run.persons.iter().map(|&p| did.get(rep_did(p))).collect();
    let mut prop_start = c.prop_start.clone();
    if prop_start.is_empty() {
        prop_start.push(0);
    }
    let mut person_start = run.person_start.clone();
    if person_start.is_empty() {
        person_start.push(0);
    }
    let mut sections: Vec<Vec<u8>> = vec![
        put(&c.ts, i64::to_le_bytes),
        put(&c.seq, u64::to_le_bytes),
        put(&l_event, u32::to_le_bytes),
        put(&l_did, u32::to_le_bytes),
        put(&c.uuid, u128::to_le_bytes),
        put(&prop_start, u32::to_le_bytes),
        put(&l_key, u32::to_le_bytes),
        put(&l_val, u32::to_le_bytes),
        put(&l_person, u32::to_le_bytes),
        put(&person_start, u32::to_le_bytes),
    ];
    for (local, dict) in [
        (&ev, &dicts.events),
        (&did, &dicts.distinct_ids),
        (&key, &dicts.keys),
        (&val, &dicts.values),
    ] {
        let mut s = Vec::new();
        local.strings(dict, &mut s);
        sections.push(s);
    }
    let total: usize = sections.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(16 + total + 64 + NSEC * 20);
    out.extend_from_slice(SEG_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut index = Vec::new();
    for s in &sections {
        index.push((out.len() as u64, s.len() as u64, crc32fast::hash(s)));
        out.extend_from_slice(s);
    }
    let fstart = out.len();
    out.extend_from_slice(&(c.len() as u64).to_le_bytes());
    out.extend_from_slice(&(c.prop_key.len() as u64).to_le_bytes());
    out.extend_from_slice(&(run.persons.len() as u64).to_le_bytes());
    out.extend_from_slice(&(NSEC as u32).to_le_bytes());
    for (off, len, crc) in index {
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let flen = (out.len() - fstart) as u32;
    let fcrc = crc32fast::hash(&out[fstart..]);
    out.extend_from_slice(&fcrc.to_le_bytes());
    out.extend_from_slice(&flen.to_le_bytes());
    out.extend_from_slice(END_MAGIC);
    out
}

/// Writes a segment image durably at `path` (temp file, fsync, rename,
/// fsync directory). Returns the file size.
pub fn write_file_atomic(path: &Path, bytes: &[u8], fsync: bool) -> Result<u64, StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    let res = f
        .write_all(bytes)
        .and_then(|_| if fsync { f.sync_all() } else { Ok(()) });
    drop(f);
    if let Err(e) = res {
        // A partial temp file (say, on a full disk) would hold on to the
        // space until the next open: remove it now.
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if fsync {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(bytes.len() as u64)
}

/// A decoded segment, still with local ids.
#[derive(Debug)]
pub struct SegmentData {
    pub cols: EventColumns,
    pub person_did: Vec<u32>,
    pub person_start: Vec<u32>,
    pub dict_events: Vec<String>,
    pub dict_dids: Vec<String>,
    pub dict_keys: Vec<String>,
    pub dict_values: Vec<String>,
    pub file_bytes: u64,
}

/// Reads and verifies a segment file.
pub fn read_segment(path: &Path) -> Result<SegmentData, StoreError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    decode_segment(&bytes).map_err(|reason| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn get<T, const N: usize>(
    s: &[u8],
    count: u64,
    what: &str,
    f: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if s.len() as u64 != count.saturating_mul(N as u64) {
        return Err(format!(
            "section {what}: {} bytes, expected {count} x {N}",
            s.len()
        ));
    }
    Ok(s.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk size")))
        .collect())
}

fn get_strs(s: &[u8], what: &str) -> Result<Vec<String>, String> {
    let bad = || format!("section {what}: malformed string table");
    if s.len() < 4 {
        return Err(bad());
    }
    let n = le_u32(s, 0) as usize;
    let mut out = Vec::with_capacity(n.min(s.len() / 4));
    let mut pos = 4;
    for _ in 0..n {
        if s.len() - pos < 4 {
            return Err(bad());
        }
        let len = le_u32(s, pos) as usize;
        pos += 4;
        if s.len() - pos < len {
            return Err(bad());
        }
        let st = std::str::from_utf8(&s[pos..pos + len]).map_err(|_| bad())?;
        out.push(st.to_string());
        pos += len;
    }
    if pos != s.len() {
        return Err(bad());
    }
    Ok(out)
}

/// Decodes a segment image, checking everything; errors are reasons.
pub fn decode_segment(b: &[u8]) -> Result<SegmentData, String> {
    let len = b.len();
    if len < 16 + 8 + 8 {
        return Err(format!("file too short ({len} bytes)"));
    }
    if &b[..8] != SEG_MAGIC {
        return Err("bad header magic".into());
    }
    let version = le_u32(b, 8);
    if version != VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    if le_u32(b, 12) != 0 {
        return Err("unknown header flags".into());
    }
    if &b[len - 8..] != END_MAGIC {
        return Err("bad end magic (file truncated?)".into());
    }
    let flen = le_u32(b, len - 12) as usize;
    let fcrc = le_u32(b, len - 16);
    if flen > len - 16 - 16 {
        return Err("bad footer length".into());
    }
    let fstart = len - 16 - flen;
    let footer = &b[fstart..len - 16];
    if crc32fast::hash(footer) != fcrc {
        return Err("footer checksum mismatch".into());
    }
    if flen < 28 {
        return Err("footer too short".into());
    }
    let n = le_u64(footer, 0);
    let m = le_u64(footer, 8);
    let p = le_u64(footer, 16);
    let nsec = le_u32(footer, 24) as usize;
    if nsec != NSEC || flen != 28 + nsec * 20 {
        return Err(format!("footer lists {nsec} sections, expected {NSEC}"));
    }
    if n > u32::MAX as u64 || m > u32::MAX as u64 || p > n {
        return Err("implausible counts in footer".into());
    }
    let mut secs: Vec<&[u8]> = Vec::with_capacity(NSEC);
    for i in 0..NSEC {
        let at = 28 + i * 20;
        let off = le_u64(footer, at);
        let sl = le_u64(footer, at + 8);
        let crc = le_u32(footer, at + 16);
        if off < 16 || off.checked_add(sl).is_none_or(|e| e > fstart as u64) {
            return Err(format!("section {i} out of bounds"));
        }
        let s = &b[off as usize..(off + sl) as usize];
        if crc32fast::hash(s) != crc {
            return Err(format!("checksum mismatch in section {i}"));
        }
        secs.push(s);
    }
    let cols = EventColumns {
        ts: get(secs[0], n, "ts", i64::from_le_bytes)?,
        seq: get(secs[1], n, "seq", u64::from_le_bytes)?,
        event: get(secs[2], n, "event", u32::from_le_bytes)?,
        did: get(secs[3], n, "did", u32::from_le_bytes)?,
        uuid: get(secs[4], n, "uuid", u128::from_le_bytes)?,
        prop_start: get(secs[5], n + 1, "prop_start", u32::from_le_bytes)?,
        prop_key: get(secs[6], m, "prop_key", u32::from_le_bytes)?,
        prop_val: get(secs[7], m, "prop_val", u32::from_le_bytes)?,
    };
    let person_did = get(secs[8], p, "person_did", u32::from_le_bytes)?;
    let person_start = get(secs[9], p + 1, "person_start", u32::from_le_bytes)?;
    let data = SegmentData {
        cols,
        person_did,
        person_start,
        dict_events: get_strs(secs[10], "dict_events")?,
        dict_dids: get_strs(secs[11], "dict_dids")?,
        dict_keys: get_strs(secs[12], "dict_keys")?,
        dict_values: get_strs(secs[13], "dict_values")?,
        file_bytes: len as u64,
    };
    data.validate()?;
    Ok(data)
}

fn monotone(xs: &[u32], first: u32, last: u32) -> bool {
    xs.first() == Some(&first) && xs.last() == Some(&last) && xs.windows(2).all(|w| w[0] <= w[1])
}

impl SegmentData {
    fn validate(&self) -> Result<(), String> {
        let c = &self.cols;
        let in_range = |ids: &[u32], n: usize| ids.iter().all(|&i| (i as usize) < n);
        if !in_range(&c.event, self.dict_events.len())
            || !in_range(&c.did, self.dict_dids.len())
            || !in_range(&self.person_did, self.dict_dids.len())
            || !in_range(&c.prop_key, self.dict_keys.len())
            || !in_range(&c.prop_val, self.dict_values.len())
        {
            return Err("dictionary id out of range".into());
        }
        if !monotone(&c.prop_start, 0, c.prop_key.len() as u32) {
            return Err("property offsets not monotone".into());
        }
        if !monotone(&self.person_start, 0, c.len() as u32) {
            return Err("person offsets not monotone".into());
        }
        Ok(())
    }

    /// Remaps local ids into the global dictionaries and maps each person
    /// block through `identity`. Blocks are re-sorted by person id if the
    /// mapping changed their order. `Err` is a corruption reason.
    pub fn into_run(self, dicts: &Dicts, identity: &Identity) -> Result<Run, String> {
        let remap = |strs: &[String], dict: &Interner| -> Vec<u32> {
            strs.iter().map(|s| dict.intern(s)).collect()
        };
        let ev = remap(&self.dict_events, &dicts.events);
        let did = remap(&self.dict_dids, &dicts.distinct_ids);
        let key = remap(&self.dict_keys, &dicts.keys);
        let val = remap(&self.dict_values, &dicts.values);
        let mut cols = self.cols;
        cols.event.iter_mut().for_each(|x| *x = ev[*x as usize]);
        cols.did.iter_mut().for_each(|x| *x = did[*x as usize]);
        cols.prop_key.iter_mut().for_each(|x| *x = key[*x as usize]);
        cols.prop_val.iter_mut().for_each(|x| *x = val[*x as usize]);
        let mut persons = Vec::with_capacity(self.person_did.len());
        for &l in &self.person_did {
            let g = did[l as usize];
            let p = identity.original_person(g).ok_or_else(|| {
                format!(
                    "person block for distinct id {:?} unknown to the identity log",
                    self.dict_dids[l as usize]
                )
            })?;
            persons.push(p);
        }
        let person_start = self.person_start;
        if persons.windows(2).all(|w| w[0] < w[1]) {
            return Ok(Run {
                cols,
                persons,
                person_start,
            });
        }
        // Re-order blocks by person id.
        let mut order: Vec<usize> = (0..persons.len()).collect();
        order.sort_by_key(|&j| persons[j]);
        let mut out = EventColumns::new();
        let mut new_persons = Vec::with_capacity(persons.len());
        let mut new_start = Vec::with_capacity(persons.len() + 1);
        let v = cols.view();
        for j in order {
            new_persons.push(persons[j]);
            new_start.push(out.len() as u32);
            for i in person_start[j] as usize..person_start[j + 1] as usize {
                out.push_from(&v, i);
            }
        }
        new_start.push(out.len() as u32);
        Ok(Run {
            cols: out,
            persons: new_persons,
            person_start: new_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dicts = Dicts::default();
        let mut ident = Identity::default();
        let a = dicts.distinct_ids.intern("a");
        let b = dicts.distinct_ids.intern("b");
        let pa = ident.ensure(a, "a");
        let pb = ident.ensure(b, "b");
        let e = dicts.events.intern("$pageview");
        let k = dicts.keys.intern("k");
        let v = dicts.values.intern("n1");
        let mut cols = EventColumns::new();
        cols.push(5, 0, e, a, 1, [(k, v)]);
        cols.push(3, 1, e, b, 2, []);
        cols.push(4, 2, e, a, 3, [(k, v)]);
        let run = Run::build(&cols, |i| ident.original_person(cols.did[i]).unwrap());
        let img = encode_segment(&run, &dicts, |p| if p == pa { a } else { b });
        let data = decode_segment(&img).unwrap();
        let d2 = Dicts::default();
        d2.distinct_ids.intern("a");
        d2.distinct_ids.intern("b");
        let back = data.into_run(&d2, &ident).unwrap();
        assert_eq!(back.persons, vec![pa, pb]);
        assert_eq!(back.cols.ts, run.cols.ts);
        assert_eq!(back.cols.uuid, run.cols.uuid);
        assert_eq!(back.person_start, run.person_start);
        for i in 0..img.len() {
            let mut bad = img.clone();
            bad[i] ^= 0x40;
            assert!(decode_segment(&bad).is_err(), "flip at {i} undetected");
        }
        for cut in 0..img.len() {
            assert!(decode_segment(&img[..cut]).is_err());
        }
    }
}
