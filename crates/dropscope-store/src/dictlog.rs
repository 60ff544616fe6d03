//! The dictionary log: every string of the store's four dictionaries
//! (event names, distinct ids, property keys, tagged values) in id order,
//! so that a reopened store gives every string the id it had and segments
//! can hold global ids (segment.rs, version 2).
//!
//! ```text
//! file    := magic:"DSCOPDIC" frame*
//! frame   := len:u32 crc32:u32 payload{len}        -- crc32 of the payload
//! payload := dict:u8 first:u32 count:u32 (len:u32 utf8{len}){count}
//! ```
//!
//! `dict` is 0 events, 1 distinct ids, 2 keys, 3 values; `first` is the id
//! of the frame's first string, which must be the dictionary's size when the
//! frame is replayed. The first `dict_len` bytes (in the manifest) are
//! committed: a flush or compaction appends the strings not yet logged and
//! syncs the file *before* it writes a segment that may use them, and the
//! manifest that names the segment carries the new length. A tail past
//! `dict_len` (a flush that crashed before its manifest switch) is
//! overwritten by the next append.
//!
//! At open the log is replayed into empty dictionaries before anything else
//! interns a string (the meta log, version 1 segments and the WAL intern
//! only strings it holds or strings newer than every segment).

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::dict::{Dicts, Interner};
use crate::error::StoreError;
use crate::wal::io_err;

pub const DICT_LOG: &str = "dicts.log";
const MAGIC: &[u8; 8] = b"DSCOPDIC";

/// How far the log goes: its length in bytes and the number of strings of
/// each dictionary in it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DictLogState {
    pub len: u64,
    pub logged: [usize; 4],
}

fn interners(d: &Dicts) -> [&Interner; 4] {
    [&d.events, &d.distinct_ids, &d.keys, &d.values]
}

/// Replays the first `len` bytes of the log into `dicts` (which must hold
/// nothing yet). A missing file is an empty log when `len` is 0.
pub fn replay_dicts(dir: &Path, len: u64, dicts: &Dicts) -> Result<DictLogState, StoreError> {
    let path = dir.join(DICT_LOG);
    if len == 0 {
        return Ok(DictLogState::default());
    }
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.clone(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    if (bytes.len() as u64) < len {
        return Err(corrupt(format!(
            "{} bytes, manifest says {len}",
            bytes.len()
        )));
    }
    let b = &bytes[..len as usize];
    if b.len() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let ds = interners(dicts);
    let mut pos = MAGIC.len();
    while pos < b.len() {
        let at = pos;
        let frame_err = |what: &str| corrupt(format!("frame at byte {at}: {what}"));
        let head = b.get(pos..pos + 8).ok_or_else(|| frame_err("truncated"))?;
        let flen = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let payload = b
            .get(pos + 8..pos + 8 + flen)
            .ok_or_else(|| frame_err("truncated"))?;
        if crc32fast::hash(payload) != crc {
            return Err(frame_err("checksum mismatch"));
        }
        pos += 8 + flen;
        let mut r = Reader { b: payload, at: 0 };
        let (kind, first, count) = (r.u8(), r.u32(), r.u32());
        let (Some(kind), Some(first), Some(count)) = (kind, first, count) else {
            return Err(frame_err("truncated header"));
        };
        let dict = ds
            .get(kind as usize)
            .ok_or_else(|| frame_err("unknown dictionary"))?;
        if first as usize != dict.len() {
            return Err(frame_err("strings out of order"));
        }
        for i in 0..count {
            let s = r.str().ok_or_else(|| frame_err("malformed string"))?;
            if dict.intern(s) != first + i {
                return Err(frame_err("a string logged twice"));
            }
        }
        if r.at != payload.len() {
            return Err(frame_err("trailing bytes"));
        }
    }
    Ok(DictLogState {
        len,
        logged: ds.map(Interner::len),
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// Appends the strings of `dicts` not yet in the log (at `state.len`,
/// overwriting any uncommitted tail) and syncs; `state` then covers them.
/// Does nothing when every string is logged.
pub fn append_dicts(
    dir: &Path,
    state: &mut DictLogState,
    dicts: &Dicts,
    fsync: bool,
) -> Result<(), StoreError> {
    let ds = interners(dicts);
    let now = ds.map(Interner::len);
    if now == state.logged && state.len > 0 {
        return Ok(());
    }
    let mut out = Vec::new();
    if state.len == 0 {
        out.extend_from_slice(MAGIC);
    }
    for (k, dict) in ds.iter().enumerate() {
        if now[k] <= state.logged[k] {
            continue;
        }
        let mut payload = Vec::new();
        payload.push(k as u8);
        payload.extend_from_slice(&(state.logged[k] as u32).to_le_bytes());
        payload.extend_from_slice(&((now[k] - state.logged[k]) as u32).to_le_bytes());
        for id in state.logged[k]..now[k] {
            let s = dict.resolve(id as u32);
            payload.extend_from_slice(&(s.len() as u32).to_le_bytes());
            payload.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    let path = dir.join(DICT_LOG);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.set_len(state.len).map_err(io_err(&path))?;
    f.seek(SeekFrom::Start(state.len)).map_err(io_err(&path))?;
    f.write_all(&out).map_err(io_err(&path))?;
    if fsync {
        f.sync_all().map_err(io_err(&path))?;
        if state.len == 0 {
            crate::wal::sync_dir(dir)?;
        }
    }
    state.len += out.len() as u64;
    state.logged = now;
    Ok(())
}
