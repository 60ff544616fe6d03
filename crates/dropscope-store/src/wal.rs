//! Write-ahead log: checksummed, length-prefixed records, with group commit.
//!
//! # On-disk format
//!
//! One file per generation, `wal-<gen:016x>.log`; a flush rotates to the next
//! generation and, once the flushed segment and meta log are durable and the
//! manifest says `wal_start = gen + 1`, deletes generations `<= gen`.
//! `meta.log` (see `durable.rs`) uses the same framing with its own magic.
//!
//! ```text
//! file    := header frame*
//! header  := magic:"DSCOPWAL" gen:u64le                       (16 bytes)
//! frame   := len:u32le crc:u32le payload{len}
//!            crc = crc32(len:u32le ++ payload)
//! payload := record, binary encoded (codec.rs)
//! ```
//!
//! Reading stops at the first frame that is cut short (torn write), has a
//! bad checksum, or does not decode; everything from there on is reported as
//! lost and truncated by recovery.
//!
//! # Group commit
//!
//! Appenders encode their frames in parallel, then take a ticket and queue
//! the bytes. Whoever finds no write in progress becomes the leader: it takes
//! every queued byte, writes and fsyncs them once, and wakes everyone whose
//! ticket is now durable. Records are then applied to the in-memory state
//! strictly in ticket order (the order they sit in the log), so recovery,
//! which replays the log in file order, rebuilds exactly the same state.
//! Readers never see a record before it is durable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::Thread;

use crate::codec::{decode_record, encode_record};
use crate::error::{is_disk_full, StoreError};
use crate::state::Record;

pub const WAL_MAGIC: &[u8; 8] = b"DSCOPWAL";
pub const HEADER_LEN: u64 = 16;
/// The largest group-commit buffer kept for reuse.
const SPARE_MAX: usize = 16 << 20;

pub fn wal_name(gen: u64) -> String {
    format!("wal-{gen:016x}.log")
}

/// The generation of a WAL file name, if it is one.
pub fn parse_wal_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Maps an I/O error on `path` (typed `DiskFull` when out of space).
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::io(path, source)
}

/// fsyncs a directory so that creates, renames and deletes in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// Appends one frame holding `rec` to `out`.
pub fn encode_frame(rec: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    encode_record(rec, out);
    let len = (out.len() - start - 8) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&out[start + 8..]);
    let crc = h.finalize();
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The 16-byte header of a log file.
pub fn header(magic: &[u8; 8], gen: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(magic);
    h[8..].copy_from_slice(&gen.to_le_bytes());
    h
}

/// Result of scanning a log file.
#[derive(Debug, Default)]
pub struct LogScan {
    pub records: u64,
    /// Bytes of the file up to the end of the last good frame.
    pub valid_len: u64,
    pub file_len: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub problem: Option<String>,
}

/// Reads a log file frame by frame, calling `f` on each good record, and
/// stops at the first bad one (see the module docs). Reads at most `limit`
/// bytes of the file.
pub fn scan_log(
    path: &Path,
    magic: &[u8; 8],
    limit: Option<u64>,
    mut f: impl FnMut(Record),
) -> Result<LogScan, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let end = limit.map_or(file_len, |l| l.min(file_len));
    let mut scan = LogScan {
        file_len,
        ..Default::default()
    };
    let mut r = BufReader::with_capacity(1 << 20, file.take(end));
    let mut hdr = [0u8; 16];
    if end < HEADER_LEN {
        scan.problem = Some(format!("file header cut short ({end} bytes)"));
        return Ok(scan);
    }
    r.read_exact(&mut hdr).map_err(io_err(path))?;
    if &hdr[..8] != magic {
        scan.problem = Some("bad file magic".into());
        return Ok(scan);
    }
    let mut pos = HEADER_LEN;
    scan.valid_len = pos;
    let mut payload = Vec::new();
    loop {
        if pos == end {
            break;
        }
        if end - pos < 8 {
            scan.problem = Some(format!("frame header cut short at offset {pos}"));
            break;
        }
        let mut fh = [0u8; 8];
        r.read_exact(&mut fh).map_err(io_err(path))?;
        let len = u32::from_le_bytes(fh[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(fh[4..].try_into().expect("4 bytes"));
        if end - pos - 8 < len as u64 {
            scan.problem = Some(format!(
                "frame at offset {pos} cut short ({len} bytes announced, {} left)",
                end - pos - 8
            ));
            break;
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload).map_err(io_err(path))?;
        let mut h = crc32fast::Hasher::new();
        h.update(&fh[..4]);
        h.update(&payload);
        if h.finalize() != crc {
            scan.problem = Some(format!("checksum mismatch in frame at offset {pos}"));
            break;
        }
        match decode_record(&payload) {
            Ok(rec) => f(rec),
            Err(e) => {
                scan.problem = Some(format!("undecodable frame at offset {pos}: {e}"));
                break;
            }
        }
        pos += 8 + len as u64;
        scan.valid_len = pos;
        scan.records += 1;
    }
    Ok(scan)
}

/// Creates a new, empty log file with its header, durably. On failure (a
/// full disk, say) the partial file is removed again.
pub fn create_log(path: &Path, magic: &[u8; 8], gen: u64, fsync: bool) -> Result<File, StoreError> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let res = f
        .write_all(&header(magic, gen))
        .and_then(|_| if fsync { f.sync_all() } else { Ok(()) })
        .map_err(io_err(path));
    if let Err(e) = res {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    if fsync {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(f)
}

/// The live write-ahead log with group commit.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    fsync: bool,
    q: Mutex<Queue>,
    cv: Condvar,
}

#[derive(Debug)]
struct Queue {
    file: Arc<File>,
    gen: u64,
    buf: Vec<u8>,
    /// An empty buffer kept for the next group commit.
    spare: Vec<u8>,
    /// Last ticket handed out (tickets start at 1).
    issued: u64,
    /// All tickets `<= durable` are written and fsynced.
    durable: u64,
    /// All tickets `<= applied` are applied to the state.
    applied: u64,
    leader: bool,
    rotating: bool,
    /// Set when a write or fsync failed: the log is in an unknown state and
    /// every later append fails until the store is reopened.
    failed: Option<String>,
    /// Groups of tickets whose write ran out of disk space: the file was cut
    /// back to its durable length and these appends fail with `DiskFull`;
    /// the log itself goes on. Pruned once applied.
    refused: Vec<Refused>,
    syncs: u64,
    bytes: u64,
    /// Appenders parked until the ticket before theirs is applied: each
    /// is woken alone by its predecessor (no thundering herd).
    turn_waiters: HashMap<u64, Thread>,
}

/// A group commit refused for lack of space: tickets `first..=last`.
#[derive(Debug)]
struct Refused {
    first: u64,
    last: u64,
    path: PathBuf,
    kind: std::io::ErrorKind,
    msg: String,
}

impl Refused {
    fn error(&self) -> StoreError {
        StoreError::DiskFull {
            path: self.path.clone(),
            source: std::io::Error::new(self.kind, self.msg.clone()),
        }
    }
}

/// Cuts the live file back to `len` bytes (its durable length) and moves
/// the write position there, durably.
fn rewind(file: &File, len: u64, fsync: bool) -> std::io::Result<()> {
    file.set_len(len)?;
    let mut f = file;
    f.seek(SeekFrom::Start(len))?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

impl Queue {
    fn fail(&mut self, msg: String) {
        self.failed = Some(msg);
        for (_, t) in self.turn_waiters.drain() {
            t.unpark();
        }
    }
}

/// Counters of the live log.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalStats {
    pub generation: u64,
    /// Bytes in the current generation file (including its header).
    pub bytes: u64,
    /// fsyncs (group commits) since open.
    pub syncs: u64,
    /// Appends (tickets) since open.
    pub appends: u64,
}

impl Wal {
    /// Starts a new generation `gen` in `dir`.
    pub fn create(dir: &Path, gen: u64, fsync: bool) -> Result<Wal, StoreError> {
        let file = create_log(&dir.join(wal_name(gen)), WAL_MAGIC, gen, fsync)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            fsync,
            q: Mutex::new(Queue {
                file: Arc::new(file),
                gen,
                buf: Vec::new(),
                spare: Vec::new(),
                issued: 0,
                durable: 0,
                applied: 0,
                leader: false,
                rotating: false,
                failed: None,
                refused: Vec::new(),
                syncs: 0,
                bytes: HEADER_LEN,
                turn_waiters: HashMap::new(),
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Queue>, StoreError> {
        self.q.lock().map_err(|_| StoreError::Poisoned)
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Queue>) -> Result<MutexGuard<'a, Queue>, StoreError> {
        self.cv.wait(g).map_err(|_| StoreError::Poisoned)
    }

    pub fn stats(&self) -> WalStats {
        let q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        WalStats {
            generation: q.gen,
            bytes: q.bytes + q.buf.len() as u64,
            syncs: q.syncs,
            appends: q.issued,
        }
    }

    /// Makes `frames` durable (sharing one fsync with concurrent callers),
    /// then runs `apply` in log order, and returns its result.
    ///
    /// If the disk is full, the group commit holding `frames` is refused
    /// with [`StoreError::DiskFull`] (the file is cut back to its durable
    /// length, `apply` is not run) and later appends are tried again. Any
    /// other write or fsync failure fails the log until it is reopened.
    pub fn append<R>(&self, frames: &[u8], apply: impl FnOnce() -> R) -> Result<R, StoreError> {
        let mut q = self.lock()?;
        while q.rotating && q.failed.is_none() {
            q = self.wait(q)?;
        }
        if let Some(e) = &q.failed {
            return Err(StoreError::WalFailed(e.clone()));
        }
        q.issued += 1;
        let ticket = q.issued;
        q.buf.extend_from_slice(frames);
        loop {
            if let Some(e) = &q.failed {
                return Err(StoreError::WalFailed(e.clone()));
            }
            if q.durable >= ticket {
                break;
            }
            if q.leader {
                q = self.wait(q)?;
                continue;
            }
            // Lead a group commit of everything queued so far.
            q.leader = true;
            // The spare keeps the allocation of an earlier group, so the
            // appends queued during this commit do not grow a fresh buffer.
            let spare = std::mem::take(&mut q.spare);
            let buf = std::mem::replace(&mut q.buf, spare);
            let upto = q.issued;
            let file = q.file.clone();
            let gen = q.gen;
            drop(q);
            let res = (&*file).write_all(&buf).and_then(|_| {
                if self.fsync {
                    file.sync_data()
                } else {
                    Ok(())
                }
            });
            q = self.lock()?;
            q.leader = false;
            match res {
                Ok(()) => {
                    q.durable = upto;
                    q.syncs += 1;
                    q.bytes += buf.len() as u64;
                }
                Err(e) => {
                    let path = self.dir.join(wal_name(gen));
                    let msg = format!("{}: {e}", path.display());
                    // Out of space: refuse this group only, if the file can
                    // be cut back to what is durable; the log goes on.
                    let rewound = is_disk_full(&e)
                        && match rewind(&file, q.bytes, self.fsync) {
                            Ok(()) => true,
                            Err(e2) => {
                                tracing::error!("cutting back {}: {e2}", path.display());
                                false
                            }
                        };
                    if rewound {
                        tracing::warn!(
                            "write-ahead log: disk full, {} appends refused: {msg}",
                            upto - q.durable
                        );
                        let first = q.durable + 1;
                        q.refused.push(Refused {
                            first,
                            last: upto,
                            path,
                            kind: e.kind(),
                            msg: e.to_string(),
                        });
                        q.durable = upto;
                    } else {
                        tracing::error!("write-ahead log failed: {msg}");
                        q.fail(msg);
                    }
                }
            }
            // Keep the larger empty allocations for later groups (a huge
            // one is let go).
            let mut buf = buf;
            buf.clear();
            if buf.capacity() <= SPARE_MAX {
                if q.buf.is_empty() && q.buf.capacity() < buf.capacity() {
                    std::mem::swap(&mut q.buf, &mut buf);
                }
                if q.spare.capacity() < buf.capacity() {
                    q.spare = buf;
                }
            }
            self.cv.notify_all();
        }
        let refused = q
            .refused
            .iter()
            .find(|r| r.first <= ticket && ticket <= r.last)
            .map(Refused::error);
        while q.applied + 1 != ticket {
            if let Some(e) = &q.failed {
                return Err(StoreError::WalFailed(e.clone()));
            }
            q.turn_waiters.insert(ticket, std::thread::current());
            drop(q);
            std::thread::park();
            q = self.lock()?;
            q.turn_waiters.remove(&ticket);
        }
        drop(q);
        // Mark the ticket applied even if `apply` panics, so that later
        // appenders are not stuck; a panic poisons the log instead.
        struct Done<'a>(&'a Wal, u64);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut q = self.0.q.lock().unwrap_or_else(|e| e.into_inner());
                q.applied = self.1;
                let applied = q.applied;
                q.refused.retain(|r| r.last > applied);
                if std::thread::panicking() {
                    q.fail("a panic while applying records".into());
                }
                if let Some(t) = q.turn_waiters.get(&(self.1 + 1)) {
                    t.unpark();
                }
                if q.rotating {
                    self.0.cv.notify_all();
                }
            }
        }
        let _done = Done(self, ticket);
        match refused {
            Some(e) => Err(e),
            None => Ok(apply()),
        }
    }

    /// Stops appends, waits until every issued append is durable and
    /// applied, runs `at_cut` (which sees the state exactly matching the
    /// log so far), then, if it returned `Some`, starts generation
    /// `gen + 1`. Returns `at_cut`'s result and the generation that was
    /// closed. If the new generation cannot be created (a full disk, say),
    /// `undo` gets `at_cut`'s result back, the log stays on its generation,
    /// and the error is returned.
    pub fn rotate<R>(
        &self,
        at_cut: impl FnOnce() -> Result<Option<R>, StoreError>,
        undo: impl FnOnce(R),
    ) -> Result<Option<(R, u64)>, StoreError> {
        let mut q = self.lock()?;
        while q.rotating {
            q = self.wait(q)?;
        }
        q.rotating = true;
        while q.failed.is_none() && (q.leader || q.applied != q.issued) {
            q = self.wait(q)?;
        }
        let res = (|| {
            if let Some(e) = &q.failed {
                return Err(StoreError::WalFailed(e.clone()));
            }
            let Some(r) = at_cut()? else {
                return Ok(None);
            };
            let old = q.gen;
            let file = match create_log(
                &self.dir.join(wal_name(old + 1)),
                WAL_MAGIC,
                old + 1,
                self.fsync,
            ) {
                Ok(f) => f,
                Err(e) => {
                    undo(r);
                    return Err(e);
                }
            };
            q.file = Arc::new(file);
            q.gen = old + 1;
            q.bytes = HEADER_LEN;
            Ok(Some((r, old)))
        })();
        q.rotating = false;
        self.cv.notify_all();
        res
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).gen
    }
}
