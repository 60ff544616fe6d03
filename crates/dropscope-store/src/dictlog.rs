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

use std::sync::Arc;

use crate::dict::{BaseStrings, Dicts, Interner};
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

/// Reads the first `len` bytes of the log into `dicts` (which must hold
/// nothing yet). The strings stay in the file: it is memory-mapped and each
/// dictionary keeps where its strings start and an index
/// ([`crate::dict::BaseStrings`]). The log is read with plain reads, one
/// frame at a time, so checking it does not page the whole file into this
/// process. A missing file is an empty log when `len` is 0.
pub fn replay_dicts(dir: &Path, len: u64, dicts: &mut Dicts) -> Result<DictLogState, StoreError> {
    let path = dir.join(DICT_LOG);
    if len == 0 {
        return Ok(DictLogState::default());
    }
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.clone(),
        reason,
    };
    let file = std::fs::File::open(&path).map_err(io_err(&path))?;
    let file_len = file.metadata().map_err(io_err(&path))?.len();
    if file_len < len {
        return Err(corrupt(format!("{file_len} bytes, manifest says {len}")));
    }
    // SAFETY: the log's first `len` bytes are committed and never written
    // again (appends go past them), and the store holds the directory's
    // LOCK, so the mapped bytes read here do not change.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path))?;
    // Strings are read one at a time (a lookup confirming a hash hit), so
    // no read-ahead: the kernel would otherwise map 64 KiB around each.
    map.advise(memmap2::Advice::Random).map_err(io_err(&path))?;
    let map = Arc::new(map);
    let read_at = |buf: &mut [u8], at: u64| {
        std::os::unix::fs::FileExt::read_exact_at(&file, buf, at).map_err(io_err(&path))
    };
    let mut magic = [0u8; 8];
    if len < 8 {
        return Err(corrupt("bad magic".into()));
    }
    read_at(&mut magic, 0)?;
    if &magic != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    // A first pass over the frame headers only, to size each dictionary's
    // index once: growing it would leave every smaller table behind in
    // the allocator (~2x the memory at the end).
    let mut sizes = [0usize; 4];
    let mut pos = MAGIC.len() as u64;
    while len.saturating_sub(pos) >= 17 {
        let mut head = [0u8; 17];
        read_at(&mut head, pos)?;
        let flen = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
        let count = u32::from_le_bytes(head[13..17].try_into().expect("4 bytes")) as usize;
        if let Some(n) = sizes.get_mut(head[8] as usize) {
            // Checked in the second pass; here only kept plausible.
            *n += count.min(flen as usize / 4);
        }
        pos = pos.saturating_add(8 + flen);
    }
    // Every string costs at least its 4-byte length.
    let sizes = sizes.map(|n| n.min(len as usize / 4));
    let mut bases: [BaseStrings; 4] =
        std::array::from_fn(|k| BaseStrings::over(map.clone(), sizes[k]));
    let mut pos = MAGIC.len() as u64;
    let mut payload = Vec::new();
    while pos < len {
        let at = pos;
        let frame_err = |what: &str| corrupt(format!("frame at byte {at}: {what}"));
        if len - pos < 8 {
            return Err(frame_err("truncated"));
        }
        let mut head = [0u8; 8];
        read_at(&mut head, pos)?;
        let flen = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len - pos - 8 < flen {
            return Err(frame_err("truncated"));
        }
        payload.resize(flen as usize, 0);
        read_at(&mut payload, pos + 8)?;
        if crc32fast::hash(&payload) != crc {
            return Err(frame_err("checksum mismatch"));
        }
        let body = pos + 8;
        pos += 8 + flen;
        let mut r = Reader { b: &payload, at: 0 };
        let (kind, first, count) = (r.u8(), r.u32(), r.u32());
        let (Some(kind), Some(first), Some(count)) = (kind, first, count) else {
            return Err(frame_err("truncated header"));
        };
        let base = bases
            .get_mut(kind as usize)
            .ok_or_else(|| frame_err("unknown dictionary"))?;
        if first as usize != base.len() {
            return Err(frame_err("strings out of order"));
        }
        for _ in 0..count {
            let s = r.str().ok_or_else(|| frame_err("malformed string"))?;
            let start = body + (r.at - s.len()) as u64;
            if !base.push(start, s) {
                return Err(frame_err("a string logged twice"));
            }
        }
        if r.at != payload.len() {
            return Err(frame_err("trailing bytes"));
        }
    }
    let logged = bases.each_ref().map(BaseStrings::len);
    let [events, distinct_ids, keys, values] = bases;
    dicts.events.set_base(events);
    dicts.distinct_ids.set_base(distinct_ids);
    dicts.keys.set_base(keys);
    dicts.values.set_base(values);
    Ok(DictLogState { len, logged })
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
