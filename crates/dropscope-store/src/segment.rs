//! Immutable segment files: one sealed [`Run`] in columns.
//!
//! # On-disk format (version 2, written since 2026-12)
//!
//! All integers little-endian. Dictionary ids are the store's *global* ids:
//! the dictionaries are persisted in `dicts.log` (dictlog.rs), which is
//! replayed before any segment is opened, and every id a segment uses is in
//! that log before the segment is written. So a segment's columns are used
//! in place: the file is memory-mapped and a run's columns are slices of
//! it ([`crate::columns::Col`]); a query touches only the columns it reads.
//!
//! ```text
//! file         := header (pad section){11} footer
//! header       := magic:"DSCOPSEG" version:u32 (=2) flags:u32 (=0)        -- 16 bytes
//! pad          := zero bytes up to the next multiple of 16
//! section      := raw bytes, in this order:
//!    0 ts           i64{n}        event timestamps, ms UTC
//!    1 seq          u64{n}        ingest order
//!    2 event        u32{n}        event-name id
//!    3 did          u32{n}        distinct-id id
//!    4 uuid         u128{n}
//!    5 prop_start   u32{n+1}      event i owns props prop_start[i]..prop_start[i+1]
//!    6 prop_key     u32{m}        key id
//!    7 prop_val     u32{m}        value id
//!    8 person_did   u32{p}        per person block: the distinct id that
//!                                 created its person
//!    9 person_start u32{p+1}      block j owns events person_start[j]..person_start[j+1]
//!   10 uuid_sorted  u128{n}       the uuids again, ascending (deduplication)
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
//! Opening a segment reads it once with plain reads (not through the map,
//! so the pages do not count against the process): every section's
//! checksum, ids in range of the dictionaries, offsets monotone, the uuid
//! list sorted. Any mismatch (magic, version, sizes, checksums, ids out of
//! range) is a [`StoreError::Corrupt`] naming the file.
//!
//! Version 1 (the format before the dictionary log) carried its own
//! dictionary: sections 0–9 as above with ids local to the file, then four
//! string tables (`count:u32 (len:u32 utf8{len}){count}`: event names,
//! distinct ids, keys, tagged values), no padding, 14 sections. Such files
//! are still read (decoded into memory and remapped to global ids); the
//! next compaction rewrites them as version 2.
//!
//! Files are written to `<name>.tmp`, fsynced, renamed, and the directory is
//! fsynced.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::columns::{Col, EventColumns, Run, RunBuilder};
use crate::dict::{Dicts, Interner};
use crate::error::StoreError;
use crate::identity::Identity;
use crate::wal::{io_err, sync_dir};

pub const SEG_MAGIC: &[u8; 8] = b"DSCOPSEG";
pub const END_MAGIC: &[u8; 8] = b"DSCOPEND";
/// The version written.
pub const VERSION: u32 = 2;
const NSEC_V1: usize = 14;
const NSEC: usize = 11;
const ALIGN: usize = 16;

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

/// A segment file image being written: the header, then sections (each
/// starting at a multiple of `align`), then the footer indexing them.
struct Image {
    out: Vec<u8>,
    align: usize,
    /// (offset, length, crc32) of each section.
    index: Vec<(u64, u64, u32)>,
}

impl Image {
    fn new(version: u32, align: usize, capacity: usize) -> Image {
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(SEG_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        Image {
            out,
            align,
            index: Vec::new(),
        }
    }

    /// A section of whatever `write` appends.
    fn section(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.out
            .resize(self.out.len().next_multiple_of(self.align), 0);
        let start = self.out.len();
        write(&mut self.out);
        let bytes = &self.out[start..];
        self.index
            .push((start as u64, bytes.len() as u64, crc32fast::hash(bytes)));
    }

    /// A section of values in their little-endian layout (the only byte
    /// order the store supports: see lib.rs).
    fn values<T: bytemuck::Pod>(&mut self, xs: &[T]) {
        self.section(|out| out.extend_from_slice(bytemuck::cast_slice(xs)));
    }

    /// A section of offsets, `[0]` when there are none.
    fn starts(&mut self, xs: &[u32]) {
        self.values(if xs.is_empty() { &[0] } else { xs });
    }

    /// The footer for a run of `n` events, `m` properties and `p` persons.
    fn finish(mut self, n: usize, m: usize, p: usize) -> Vec<u8> {
        let out = &mut self.out;
        let fstart = out.len();
        for count in [n, m, p] {
            out.extend_from_slice(&(count as u64).to_le_bytes());
        }
        out.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for (off, len, crc) in &self.index {
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
        }
        let flen = (out.len() - fstart) as u32;
        let fcrc = crc32fast::hash(&out[fstart..]);
        out.extend_from_slice(&fcrc.to_le_bytes());
        out.extend_from_slice(&flen.to_le_bytes());
        out.extend_from_slice(END_MAGIC);
        self.out
    }
}

/// Encodes a run as a segment file image (version 2, global ids).
/// `rep_did(person)` gives the distinct id that created each person of
/// `run.persons`. Columns are copied once, straight into the image.
pub fn encode_segment(run: &Run, rep_did: impl Fn(u32) -> u32) -> Vec<u8> {
    let c = &run.cols;
    let rep: Vec<u32> = run.persons.iter().map(|&p| rep_did(p)).collect();
    let mut sorted = c.uuid.to_vec();
    sorted.sort_unstable();
    let n = c.len();
    let bytes = n * (8 + 8 + 4 + 4 + 16 + 4 + 16) + c.prop_key.len() * 8 + rep.len() * 8;
    let mut img = Image::new(VERSION, ALIGN, bytes + (NSEC + 1) * (ALIGN + 20) + 64);
    img.values(&c.ts);
    img.values(&c.seq);
    img.values(&c.event);
    img.values(&c.did);
    img.values(&c.uuid);
    img.starts(&c.prop_start);
    img.values(&c.prop_key);
    img.values(&c.prop_val);
    img.values(&rep);
    img.starts(&run.person_start);
    img.values(&sorted);
    img.finish(n, c.prop_key.len(), run.persons.len())
}

/// Encodes a run in the version 1 format (its own dictionaries, local
/// ids). Nothing writes it any more; it is kept so that tests can make the
/// files older stores hold and check they are still read.
#[doc(hidden)]
pub fn encode_segment_v1(run: &Run, dicts: &Dicts, rep_did: impl Fn(u32) -> u32) -> Vec<u8> {
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
    let mut img = Image::new(1, 1, 0);
    img.values(&c.ts);
    img.values(&c.seq);
    img.values(&l_event);
    img.values(&l_did);
    img.values(&c.uuid);
    img.starts(&c.prop_start);
    img.values(&l_key);
    img.values(&l_val);
    img.values(&l_person);
    img.starts(&run.person_start);
    for (local, dict) in [
        (&ev, &dicts.events),
        (&did, &dicts.distinct_ids),
        (&key, &dicts.keys),
        (&val, &dicts.values),
    ] {
        img.section(|out| local.strings(dict, out));
    }
    img.finish(c.len(), c.prop_key.len(), run.persons.len())
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

/// Where a segment file's sections are, from its header and footer.
struct Layout {
    version: u32,
    n: u64,
    m: u64,
    p: u64,
    /// (offset, length, crc32) of each section.
    secs: Vec<(usize, usize, u32)>,
}

/// Reads the header and footer of a segment image (of either version) and
/// checks them; the sections themselves are not read.
fn layout(b: &[u8]) -> Result<Layout, String> {
    let len = b.len();
    if len < 16 + 8 + 8 {
        return Err(format!("file too short ({len} bytes)"));
    }
    if &b[..8] != SEG_MAGIC {
        return Err("bad header magic".into());
    }
    let version = le_u32(b, 8);
    let nsec_expected = match version {
        1 => NSEC_V1,
        2 => NSEC,
        _ => return Err(format!("unsupported format version {version}")),
    };
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
    if nsec != nsec_expected || flen != 28 + nsec * 20 {
        return Err(format!(
            "footer lists {nsec} sections, expected {nsec_expected}"
        ));
    }
    if n > u32::MAX as u64 || m > u32::MAX as u64 || p > n {
        return Err("implausible counts in footer".into());
    }
    let mut secs = Vec::with_capacity(nsec);
    for i in 0..nsec {
        let at = 28 + i * 20;
        let off = le_u64(footer, at);
        let sl = le_u64(footer, at + 8);
        let crc = le_u32(footer, at + 16);
        if off < 16 || off.checked_add(sl).is_none_or(|e| e > fstart as u64) {
            return Err(format!("section {i} out of bounds"));
        }
        secs.push((off as usize, sl as usize, crc));
    }
    Ok(Layout {
        version,
        n,
        m,
        p,
        secs,
    })
}

/// Decodes a version 1 segment image, checking everything; errors are
/// reasons.
pub fn decode_segment(b: &[u8]) -> Result<SegmentData, String> {
    let len = b.len();
    let Layout {
        version,
        n,
        m,
        p,
        secs: index,
    } = layout(b)?;
    if version != 1 {
        return Err(format!(
            "version {version} segments are mapped, not decoded"
        ));
    }
    let mut secs: Vec<&[u8]> = Vec::with_capacity(NSEC_V1);
    for (i, &(off, sl, crc)) in index.iter().enumerate() {
        let s = &b[off..off + sl];
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
        let mut sorted = cols.uuid.clone();
        sorted.sort_unstable();
        let run = Run {
            cols: cols.into(),
            persons,
            person_start: self.person_start,
            uuid_sorted: Some(Col::Owned(sorted)),
        };
        if run.persons.windows(2).all(|w| w[0] < w[1]) {
            Ok(run)
        } else {
            Ok(reorder_blocks(run))
        }
    }
}

/// A segment file opened by the store.
pub enum Opened {
    /// Version 2: the run's columns are mapped from the file.
    Mapped(MappedSegment),
    /// Version 1: decoded, to be remapped to global ids in manifest order
    /// ([`SegmentData::into_run`]).
    Decoded(SegmentData),
}

/// A version 2 segment, checked and mapped.
pub struct MappedSegment {
    pub run: Run,
    pub file_bytes: u64,
    pub max_seq: Option<u64>,
    pub min_ts: Option<i64>,
}

/// Bytes read at a time while checking a mapped segment (a multiple of
/// every element size).
const CHECK_CHUNK: usize = 1 << 20;

/// Opens a segment file: version 2 files are checked with plain reads and
/// then mapped (`identity` maps person blocks, `dicts` bounds the ids);
/// version 1 files are decoded.
pub fn open_segment(path: &Path, dicts: &Dicts, identity: &Identity) -> Result<Opened, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(io_err(path))?;
    // SAFETY: segment files are immutable once renamed into place, and the
    // store holds the directory's LOCK, so nothing in dropscope writes or
    // truncates a file while it is mapped (compaction unlinks inputs, which
    // leaves a mapping intact). A file truncated by another program would
    // fault, as with any store that maps its files.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
    let lay = layout(&map).map_err(corrupt)?;
    if lay.version == 1 {
        drop(map);
        return read_segment(path).map(Opened::Decoded);
    }
    let mut info = MappedSegment {
        run: Run::default(),
        file_bytes: map.len() as u64,
        max_seq: None,
        min_ts: None,
    };
    let (n, m, p) = (lay.n as usize, lay.m as usize, lay.p as usize);
    let widths = [8, 8, 4, 4, 16, 4, 4, 4, 4, 4, 16];
    let counts = [n, n, n, n, n, n + 1, m, m, p, p + 1, n];
    let names = [
        "ts",
        "seq",
        "event",
        "did",
        "uuid",
        "prop_start",
        "prop_key",
        "prop_val",
        "person_did",
        "person_start",
        "uuid_sorted",
    ];
    let limits = [
        dicts.events.len(),
        dicts.distinct_ids.len(),
        dicts.keys.len(),
        dicts.values.len(),
    ];
    let mut person_did: Vec<u32> = Vec::with_capacity(p);
    let mut person_start: Vec<u32> = Vec::with_capacity(p + 1);
    let mut buf = vec![0u8; CHECK_CHUNK];
    for (i, &(off, len, crc)) in lay.secs.iter().enumerate() {
        let what = names[i];
        if len != counts[i] * widths[i] {
            return Err(corrupt(format!(
                "section {what}: {len} bytes, expected {} x {}",
                counts[i], widths[i]
            )));
        }
        if off % ALIGN != 0 {
            return Err(corrupt(format!("section {what} not aligned")));
        }
        let mut hasher = crc32fast::Hasher::new();
        // The previous element of sections checked for order.
        let mut prev_u32: Option<u32> = None;
        let mut prev_u128: Option<u128> = None;
        let mut bad: Option<String> = None;
        let mut at = 0;
        while at < len && bad.is_none() {
            let k = CHECK_CHUNK.min(len - at);
            let chunk = &mut buf[..k];
            std::os::unix::fs::FileExt::read_exact_at(&file, chunk, (off + at) as u64)
                .map_err(io_err(path))?;
            hasher.update(chunk);
            let u32s = || chunk.chunks_exact(4).map(|c| le_u32(c, 0));
            let in_dict = |limit: usize| u32s().all(|x| (x as usize) < limit);
            match i {
                0 => {
                    let min = chunk
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .min();
                    if let Some(x) = min {
                        info.min_ts = Some(info.min_ts.map_or(x, |y| y.min(x)));
                    }
                }
                1 => {
                    let max = chunk.chunks_exact(8).map(|c| le_u64(c, 0)).max();
                    info.max_seq = info.max_seq.max(max);
                }
                2 if !in_dict(limits[0]) => bad = Some("event id out of range".into()),
                3 if !in_dict(limits[1]) => bad = Some("distinct id out of range".into()),
                6 if !in_dict(limits[2]) => bad = Some("property key out of range".into()),
                7 if !in_dict(limits[3]) => bad = Some("property value out of range".into()),
                5 => {
                    for x in u32s() {
                        if prev_u32.is_some_and(|p| x < p) || (prev_u32.is_none() && x != 0) {
                            bad = Some("property offsets not monotone".into());
                            break;
                        }
                        prev_u32 = Some(x);
                    }
                }
                8 => {
                    if !in_dict(limits[1]) {
                        bad = Some("person distinct id out of range".into());
                    }
                    person_did.extend(u32s());
                }
                9 => person_start.extend(u32s()),
                10 => {
                    for x in chunk.chunks_exact(16).map(le_u128) {
                        if prev_u128.is_some_and(|p| x <= p) {
                            bad = Some("sorted uuids out of order".into());
                            break;
                        }
                        prev_u128 = Some(x);
                    }
                }
                _ => {}
            }
            at += k;
        }
        if let Some(reason) = bad {
            return Err(corrupt(format!("section {what}: {reason}")));
        }
        if hasher.finalize() != crc {
            return Err(corrupt(format!("checksum mismatch in section {what}")));
        }
        if i == 5 && prev_u32.unwrap_or(0) as usize != m {
            return Err(corrupt(
                "property offsets do not end at the property count".into(),
            ));
        }
    }
    if !monotone(&person_start, 0, n as u32) {
        return Err(corrupt("person offsets not monotone".into()));
    }
    let map = std::sync::Arc::new(map);
    let col = |i: usize| {
        let (off, len, _) = lay.secs[i];
        off..off + len
    };
    let cols = crate::columns::RunColumns {
        ts: mapped(&map, col(0)),
        seq: mapped(&map, col(1)),
        event: mapped(&map, col(2)),
        did: mapped(&map, col(3)),
        uuid: mapped(&map, col(4)),
        prop_start: mapped(&map, col(5)),
        prop_key: mapped(&map, col(6)),
        prop_val: mapped(&map, col(7)),
    };
    let mut persons = Vec::with_capacity(p);
    for &d in &person_did {
        let person = identity.original_person(d).ok_or_else(|| {
            corrupt(format!(
                "person block for distinct id {:?} unknown to the identity log",
                dicts.distinct_ids.resolve(d)
            ))
        })?;
        persons.push(person);
    }
    let run = Run {
        cols,
        persons,
        person_start,
        uuid_sorted: Some(mapped(&map, col(10))),
    };
    info.run = if run.persons.windows(2).all(|w| w[0] < w[1]) {
        run
    } else {
        reorder_blocks(run)
    };
    Ok(Opened::Mapped(info))
}

/// A mapped column over `bytes` of `map` (checked: aligned, whole values).
fn mapped<T: bytemuck::Pod>(
    map: &std::sync::Arc<memmap2::Mmap>,
    bytes: std::ops::Range<usize>,
) -> Col<T> {
    debug_assert!(bytemuck::try_cast_slice::<u8, T>(&map[bytes.clone()]).is_ok());
    Col::Mapped {
        map: map.clone(),
        bytes,
    }
}

fn le_u128(b: &[u8]) -> u128 {
    u128::from_le_bytes(b[..16].try_into().expect("16 bytes"))
}

/// The run with its person blocks re-sorted by person id (when the
/// identity maps blocks to persons in another order), copied into memory.
fn reorder_blocks(run: Run) -> Run {
    let mut order: Vec<usize> = (0..run.persons.len()).collect();
    order.sort_by_key(|&j| run.persons[j]);
    let mut out = RunBuilder::default();
    for j in order {
        out.push_person(run.persons[j], &run.person_view(j));
    }
    Run {
        uuid_sorted: run.uuid_sorted,
        ..out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two persons, three events, and the dictionaries and identity they
    /// need.
    fn sample() -> (Dicts, Identity, Run, [u32; 2], [u32; 2]) {
        let dicts = Dicts::default();
        let mut ident = Identity::default();
        let a = dicts.distinct_ids.intern("a");
        let b = dicts.distinct_ids.intern("b");
        let pa = ident.ensure(a);
        let pb = ident.ensure(b);
        let e = dicts.events.intern("$pageview");
        let k = dicts.keys.intern("k");
        let v = dicts.values.intern("n1");
        let mut cols = EventColumns::new();
        cols.push(5, 0, e, a, 1, [(k, v)]);
        cols.push(3, 1, e, b, 2, []);
        cols.push(4, 2, e, a, 3, [(k, v)]);
        let run = Run::build(&cols, |i| ident.original_person(cols.did[i]).unwrap());
        (dicts, ident, run, [a, b], [pa, pb])
    }

    fn same(x: &Run, y: &Run) {
        assert_eq!(x.persons, y.persons);
        assert_eq!(x.person_start, y.person_start);
        assert_eq!(*x.cols.ts, *y.cols.ts);
        assert_eq!(*x.cols.seq, *y.cols.seq);
        assert_eq!(*x.cols.event, *y.cols.event);
        assert_eq!(*x.cols.did, *y.cols.did);
        assert_eq!(*x.cols.uuid, *y.cols.uuid);
        assert_eq!(*x.cols.prop_start, *y.cols.prop_start);
        assert_eq!(*x.cols.prop_key, *y.cols.prop_key);
        assert_eq!(*x.cols.prop_val, *y.cols.prop_val);
    }

    #[test]
    fn version_1_round_trip_and_corruption() {
        let (dicts, ident, run, [a, b], [pa, _]) = sample();
        let img = encode_segment_v1(&run, &dicts, |p| if p == pa { a } else { b });
        let data = decode_segment(&img).unwrap();
        let d2 = Dicts::default();
        d2.distinct_ids.intern("a");
        d2.distinct_ids.intern("b");
        let back = data.into_run(&d2, &ident).unwrap();
        assert_eq!(back.persons, run.persons);
        assert_eq!(*back.cols.ts, *run.cols.ts);
        assert_eq!(*back.cols.uuid, *run.cols.uuid);
        assert_eq!(back.person_start, run.person_start);
        let mut sorted = run.cols.uuid.to_vec();
        sorted.sort_unstable();
        assert_eq!(back.uuid_sorted.as_deref(), Some(&sorted[..]));
        for i in 0..img.len() {
            let mut bad = img.clone();
            bad[i] ^= 0x40;
            assert!(decode_segment(&bad).is_err(), "flip at {i} undetected");
        }
        for cut in 0..img.len() {
            assert!(decode_segment(&img[..cut]).is_err());
        }
    }

    #[test]
    fn version_2_maps_what_was_written_and_finds_every_corruption() {
        let (dicts, ident, run, [a, b], [pa, _]) = sample();
        let img = encode_segment(&run, |p| if p == pa { a } else { b });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg-00000001.dss");
        std::fs::write(&path, &img).unwrap();
        let Opened::Mapped(m) = open_segment(&path, &dicts, &ident).unwrap() else {
            panic!("version 2 is mapped");
        };
        same(&m.run, &run);
        assert!(matches!(m.run.cols.ts, Col::Mapped { .. }));
        assert_eq!(m.max_seq, Some(2));
        assert_eq!(m.min_ts, Some(3));
        let mut sorted = run.cols.uuid.to_vec();
        sorted.sort_unstable();
        assert_eq!(m.run.uuid_sorted.as_deref(), Some(&sorted[..]));
        // Every byte of a section, the header and the footer is checked
        // (padding is not read: flipping it changes nothing).
        let lay = layout(&img).unwrap();
        let covered = |i: usize| {
            i < 16
                || i >= lay.secs.last().map_or(0, |&(o, l, _)| o + l)
                || lay.secs.iter().any(|&(o, l, _)| (o..o + l).contains(&i))
        };
        for i in (0..img.len()).filter(|&i| covered(i)) {
            let mut bad = img.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                open_segment(&path, &dicts, &ident).is_err(),
                "flip at {i} undetected"
            );
        }
        for cut in 0..img.len() {
            std::fs::write(&path, &img[..cut]).unwrap();
            assert!(open_segment(&path, &dicts, &ident).is_err());
        }
        // Ids beyond the dictionaries the store has are corruption.
        std::fs::write(&path, &img).unwrap();
        let small = Dicts::default();
        small.distinct_ids.intern("a");
        small.distinct_ids.intern("b");
        let err = open_segment(&path, &small, &ident)
            .err()
            .expect("ids out of range");
        assert!(err.to_string().contains("out of range"), "{err}");
    }
}
