//! The manifest and the meta log.
//!
//! `MANIFEST` is the commit point of the data directory. It is replaced
//! atomically (write `MANIFEST.tmp`, fsync, rename, fsync the directory):
//!
//! ```text
//! manifest := "DSCOPE-MANIFEST 1 " crc32-of-json:8 hex digits "\n" json
//! json     := {"segments": [file names], "wal_start": gen, "meta_len": bytes,
//!              "next_segment": id, "dict_len": bytes}
//! ```
//!
//! Files named in `segments` are the live segments; WAL generations
//! `>= wal_start` hold everything not in them; the first `meta_len` bytes of
//! `meta.log` are valid. Anything else in the directory (orphan segments of a
//! flush or compaction that crashed before its manifest switch, stale WAL
//! generations, temp files, a meta-log tail past `meta_len`) is garbage and
//! removed at open.
//!
//! `meta.log` keeps the non-event effects of every flushed record in log
//! order, so identity/person/group/cohort state survives WAL deletion:
//! person, group and cohort records whole, and for events the projection of
//! [`crate::state::meta_projection`] (distinct id, joins, `$set`, groups),
//! written only for events that had such properties or a new distinct id.
//! Framing is the WAL's (wal.rs) with magic `"DSCOPMET"`. At open it is
//! replayed through `State::apply_meta` before segments are loaded, which
//! rebuilds the same distinct-id and person ids as before.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::segment::write_file_atomic;
use crate::state::Record;
use crate::wal::{header, io_err, scan_log, HEADER_LEN};

pub const MANIFEST: &str = "MANIFEST";
pub const META_LOG: &str = "meta.log";
pub const META_MAGIC: &[u8; 8] = b"DSCOPMET";
const MANIFEST_TAG: &str = "DSCOPE-MANIFEST 1 ";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub segments: Vec<String>,
    pub wal_start: u64,
    pub meta_len: u64,
    pub next_segment: u64,
    /// Committed length of `dicts.log` (dictlog.rs); 0 for stores written
    /// before it existed.
    #[serde(default)]
    pub dict_len: u64,
}

impl Manifest {
    /// Loads the manifest, or `None` for a fresh directory.
    pub fn load(dir: &Path) -> Result<Option<Manifest>, StoreError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(&text).map_err(|_| corrupt("not utf-8"))?;
        let rest = text
            .strip_prefix(MANIFEST_TAG)
            .ok_or_else(|| corrupt("bad header"))?;
        let (crc, json) = rest.split_once('\n').ok_or_else(|| corrupt("no newline"))?;
        let crc = u32::from_str_radix(crc, 16).map_err(|_| corrupt("bad checksum field"))?;
        if crc32fast::hash(json.as_bytes()) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let m: Manifest =
            serde_json::from_str(json).map_err(|e| corrupt(&format!("bad json: {e}")))?;
        Ok(Some(m))
    }

    /// Replaces the manifest atomically and durably.
    pub fn save(&self, dir: &Path, fsync: bool) -> Result<(), StoreError> {
        let json = serde_json::to_string(self).expect("manifest serializes");
        let text = format!(
            "{MANIFEST_TAG}{:08x}\n{json}",
            crc32fast::hash(json.as_bytes())
        );
        write_file_atomic(&dir.join(MANIFEST), text.as_bytes(), fsync)?;
        Ok(())
    }
}

/// Replays the first `len` bytes of the meta log. Any problem within them is
/// corruption: they were committed by the manifest.
pub fn replay_meta(dir: &Path, len: u64, f: impl FnMut(Record)) -> Result<u64, StoreError> {
    let path = dir.join(META_LOG);
    if len == 0 {
        return Ok(0);
    }
    if !path.exists() {
        return Err(StoreError::Corrupt {
            path,
            reason: format!("missing; manifest says {len} bytes"),
        });
    }
    let scan = scan_log(&path, META_MAGIC, Some(len), f)?;
    if scan.file_len < len {
        return Err(StoreError::Corrupt {
            path,
            reason: format!("{} bytes, manifest says {len}", scan.file_len),
        });
    }
    if let Some(p) = scan.problem {
        return Err(StoreError::Corrupt { path, reason: p });
    }
    Ok(scan.records)
}

/// Writes `frames` to the meta log at offset `at` (dropping anything after
/// it: an uncommitted tail) and syncs. Returns the new committed length.
pub fn append_meta(dir: &Path, at: u64, frames: &[u8], fsync: bool) -> Result<u64, StoreError> {
    let path = dir.join(META_LOG);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut at = at;
    if at < HEADER_LEN {
        f.set_len(0).map_err(io_err(&path))?;
        f.write_all(&header(META_MAGIC, 0)).map_err(io_err(&path))?;
        at = HEADER_LEN;
    } else {
        f.set_len(at).map_err(io_err(&path))?;
        f.seek(SeekFrom::Start(at)).map_err(io_err(&path))?;
    }
    f.write_all(frames).map_err(io_err(&path))?;
    if fsync {
        f.sync_all().map_err(io_err(&path))?;
        crate::wal::sync_dir(dir)?;
    }
    Ok(at + frames.len() as u64)
}
