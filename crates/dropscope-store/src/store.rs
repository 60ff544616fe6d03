//! The store's front door: open, append, snapshot, flush, compact.
//!
//! A durable store is a data directory:
//!
//! ```text
//! <dir>/LOCK                  flock'ed while open
//! <dir>/MANIFEST              commit point: live segments, wal_start, meta_len (meta.rs)
//! <dir>/meta.log              identity/person/group/cohort effects of flushed records
//! <dir>/dicts.log             every dictionary string, in id order (dictlog.rs)
//! <dir>/seg-<id:08>.dss       immutable columnar segments (segment.rs)
//! <dir>/wal-<gen:016x>.log    write-ahead log generations >= wal_start (wal.rs)
//! ```
//!
//! Write path: `append` encodes the records, makes them durable through the
//! WAL (group commit), then applies them to the in-memory [`State`] in log
//! order; the memtable is sealed into a sorted run every 64k events. When
//! the events not yet in segments exceed [`StoreOptions::flush_threshold`],
//! the background thread flushes (the appender that crossed it, when there
//! is no background thread): the WAL rotates at a cut where state and log agree, the memtable's runs
//! are written as one segment and the cut's meta-log entries appended, the
//! manifest switches, and the covered WAL generations are deleted.
//!
//! A flush or compaction logs the dictionaries' new strings to `dicts.log`
//! before it writes a segment (segments hold global ids), and swaps the
//! written run for the segment mapped from its file, so flushed events
//! leave the heap.
//!
//! Open: load the manifest, drop garbage, replay `dicts.log` (so every
//! string gets its id back), then `meta.log` (identity), check and map the
//! segments (version 1 files are decoded and remapped), then replay the
//! WAL through
//! `State::apply`, truncating a torn or corrupt tail and reporting it in
//! [`OpenReport`].

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::columns::{EventColumns, Run, RunBuilder};
use crate::dict::Dicts;
use crate::dictlog::{append_dicts, replay_dicts, DictLogState};
use crate::error::StoreError;
use crate::identity::Identity;
use crate::meta::{append_meta, replay_meta, Manifest};
use crate::segment::{
    encode_segment, open_segment, parse_segment_name, segment_name, write_file_atomic, Opened,
};
use crate::snapshot::Snapshot;
use crate::state::{meta_projection, Applied, Record, State};
use crate::wal::{
    encode_frame, io_err, parse_wal_name, scan_log, sync_dir, Wal, WalStats, HEADER_LEN, WAL_MAGIC,
};

/// Counts of what an append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendStats {
    pub stored: u64,
    pub duplicates: u64,
}

/// Tuning of a durable store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Flush to a segment once this many events are not yet in segments.
    pub flush_threshold: usize,
    /// fsync the WAL on every commit and files on flush (off only in tests).
    pub fsync: bool,
    /// Flush and compact in a background thread: flush when
    /// `flush_threshold` events wait, compact when segments exceed
    /// `compaction_threshold`. Without it the appender that crosses
    /// `flush_threshold` flushes before it returns, and compaction runs
    /// only when asked.
    pub background_compaction: bool,
    pub compaction_threshold: usize,
    /// Number of segment files a compaction writes (persons by hash).
    pub partitions: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush_threshold: 1_000_000,
            fsync: true,
            background_compaction: true,
            compaction_threshold: 16,
            partitions: 4,
        }
    }
}

/// What `open` found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub segments_loaded: usize,
    pub events_loaded: u64,
    pub meta_records_replayed: u64,
    pub wal_files_replayed: usize,
    pub wal_records_replayed: u64,
    /// Bytes of WAL dropped because of a torn or corrupt record (and any
    /// later WAL generations).
    pub truncated_wal_bytes: u64,
    /// The WAL file where reading stopped, and why.
    pub truncated_wal_file: Option<PathBuf>,
    pub truncation_reason: Option<String>,
    /// Garbage files removed (orphans of an interrupted flush/compaction).
    pub garbage_files_removed: usize,
    pub elapsed: Duration,
}

/// Sizes and counters of a store.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub events: usize,
    pub segments: usize,
    pub runs: usize,
    pub memtable_events: usize,
    /// Events not yet written to a segment (only in the WAL).
    pub unflushed_events: usize,
    pub bytes_on_disk: u64,
    /// Bytes of the live segment files.
    pub segment_bytes: u64,
    /// Approximate heap bytes of event columns and person indexes (mapped
    /// segment columns are not on the heap and not counted).
    pub bytes_in_memory: usize,
    pub wal: Option<WalStats>,
    pub background_error: Option<String>,
    /// Why the last flush failed, if the last flush failed (the events
    /// stay in the write-ahead log; flushes are retried).
    pub flush_error: Option<String>,
}

/// An event store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Store {
    core: Arc<Core>,
    worker: Option<Worker>,
}

#[derive(Debug)]
struct Core {
    mem: Mutex<Mem>,
    disk: Option<Disk>,
}

#[derive(Debug)]
struct Mem {
    st: State,
    /// Meta-log frames of records applied since the last flush.
    meta: Vec<u8>,
    /// The store has a disk: records go to the meta log, runs to segments.
    on_disk: bool,
    /// Runs that live in segment files, by `Arc` address.
    segs: HashMap<usize, SegFile>,
    /// Events applied since the last flush.
    unflushed: usize,
    /// Runs taken by a flush in progress (by `Arc` address): left alone by
    /// [`Mem::seal_and_merge`] until the flush commits or gives them back.
    cutting: HashSet<usize>,
    /// Identity as of the last committed flush cut: exactly what `meta.log`
    /// rebuilds. Compaction lays persons out by this identity, so that every
    /// person block's representative distinct id is known to the meta log
    /// when the segment is loaded (later joins are resolved at read time).
    flushed_identity: Arc<Identity>,
}

#[derive(Debug, Clone)]
struct SegFile {
    name: String,
    bytes: u64,
}

#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    opts: StoreOptions,
    wal: Wal,
    manifest: Mutex<Manifest>,
    /// How far `dicts.log` goes (its committed part is `manifest.dict_len`).
    dict_log: Mutex<DictLogState>,
    flush_lock: Mutex<()>,
    compact_lock: Mutex<()>,
    report: OpenReport,
    signal: Option<Arc<Signal>>,
    bg_error: Mutex<Option<String>>,
    /// When and why the last flush failed; cleared by a successful one.
    flush_failed: Mutex<Option<(Instant, String)>>,
    _lock: File,
}

/// After a failed flush, appends wait this long before trying again (a
/// flush that fails on a full disk costs a segment encoding each time).
const FLUSH_RETRY: Duration = Duration::from_secs(1);

impl Disk {
    /// `unflushed` events are enough for a flush, and an earlier failure is
    /// not too recent to try again.
    fn flush_wanted(&self, unflushed: usize) -> bool {
        unflushed >= self.opts.flush_threshold && self.flush_retry_due()
    }

    fn flush_retry_due(&self) -> bool {
        match self.flush_failed.lock() {
            Ok(f) => f.as_ref().is_none_or(|(t, _)| t.elapsed() >= FLUSH_RETRY),
            Err(_) => false,
        }
    }

    fn note_flush(&self, res: &Result<(), StoreError>) {
        if let Ok(mut f) = self.flush_failed.lock() {
            *f = res.as_ref().err().map(|e| (Instant::now(), e.to_string()));
        }
    }
}

#[derive(Debug, Default)]
struct Signal {
    state: Mutex<(bool, bool)>, // (work wanted, stop)
    cv: Condvar,
}

#[derive(Debug)]
struct Worker {
    signal: Arc<Signal>,
    handle: Option<JoinHandle<()>>,
}

fn ptr(r: &Arc<Run>) -> usize {
    Arc::as_ptr(r) as usize
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, StoreError> {
    m.lock().map_err(|_| StoreError::Poisoned)
}

impl Mem {
    fn new(on_disk: bool) -> Mem {
        Mem {
            st: State::new(),
            meta: Vec::new(),
            on_disk,
            segs: HashMap::new(),
            unflushed: 0,
            cutting: HashSet::new(),
            flushed_identity: Arc::default(),
        }
    }

    /// Seals the memtable for a snapshot, keeping the runs not yet in
    /// segments few. Every query seals what was appended since the last
    /// one into a new run; between flushes (a million events by default)
    /// that piled up one small run per query under mixed load, and each
    /// snapshot and query got slower with their number while appends
    /// waited on the lock (the soak in BENCHMARKS.md). The newest two free
    /// runs are merged while the newer holds at least half as many events
    /// as the older: a binary counter, so O(log n) runs and each event
    /// copied O(log n) times.
    fn seal_and_merge(&mut self) {
        if self.st.seal().is_none() {
            return;
        }
        self.merge_newest_runs();
    }

    fn merge_newest_runs(&mut self) {
        loop {
            let free: Vec<usize> = self
                .st
                .runs
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    !self.segs.contains_key(&ptr(r)) && !self.cutting.contains(&ptr(r))
                })
                .map(|(i, _)| i)
                .collect();
            let [.., a, b] = free[..] else { break };
            if self.st.runs[b].len() * 2 < self.st.runs[a].len() {
                break;
            }
            let merged = merge_runs(&[self.st.runs[a].clone(), self.st.runs[b].clone()]);
            let mut runs = self.st.runs.clone();
            runs[a] = Arc::new(merged);
            runs.remove(b);
            self.st.set_runs(runs);
        }
    }

    fn apply_all(&mut self, records: &[Record]) -> AppendStats {
        let mut stats = AppendStats::default();
        for r in records {
            if self.st.memtable.len() >= SEAL_CHUNK {
                self.seal_chunk();
            }
            match self.st.apply(r) {
                Applied::Duplicate => stats.duplicates += 1,
                Applied::Stored => {
                    stats.stored += 1;
                    match r {
                        Record::Event(e) => {
                            self.unflushed += 1;
                            if self.on_disk {
                                if let Some(p) = meta_projection(e, self.st.last) {
                                    encode_frame(&Record::Event(p), &mut self.meta);
                                }
                            }
                        }
                        other if self.on_disk => encode_frame(other, &mut self.meta),
                        _ => {}
                    }
                }
            }
        }
        stats
    }
}

impl Mem {
    /// Seals a full memtable chunk into a run on the append path. Sorting
    /// a chunk of [`SEAL_CHUNK`] events pauses appends for a few ms; left
    /// to the flush, sorting its million events paused them for ~0.6 s
    /// (BENCHMARKS.md, "Capture over HTTP"). With a disk, the next flush
    /// merges the chunks after its cut, with appends running (and a
    /// snapshot merges them as it always does); without one nothing flushes,
    /// so the chunks are merged here the way snapshots merge.
    fn seal_chunk(&mut self) {
        if self.on_disk {
            self.st.seal();
        } else {
            self.seal_and_merge();
        }
    }
}

/// Events per memtable chunk sealed on the append path.
const SEAL_CHUNK: usize = 1 << 16;

/// person id -> the distinct id that created it.
fn creators(identity: &Identity, dicts: &Dicts) -> Vec<u32> {
    let n = dicts.distinct_ids.len();
    let mut c = vec![u32::MAX; identity.person_ids()];
    for did in 0..n as u32 {
        if let Some(p) = identity.original_person(did) {
            c[p as usize] = did;
        }
    }
    c
}

/// One run holding all events of `runs`, keyed by the same person ids.
fn merge_runs(runs: &[Arc<Run>]) -> Run {
    let refs: Vec<&Run> = runs.iter().map(|r| &**r).collect();
    Run::merge(&refs)
}

fn run_heap_bytes(r: &Run) -> usize {
    r.cols.heap_bytes() + r.persons.capacity() * 4 + r.person_start.capacity() * 4
}

/// What a flush cut off at the WAL rotation.
struct Cut {
    runs: Vec<Arc<Run>>,
    meta: Vec<u8>,
    identity: Arc<Identity>,
    dicts: Arc<Dicts>,
}

impl Core {
    fn append(&self, records: &[Record]) -> Result<AppendStats, StoreError> {
        let Some(d) = &self.disk else {
            return Ok(lock(&self.mem)?.apply_all(records));
        };
        if records.is_empty() {
            return Ok(AppendStats::default());
        }
        // One encoding buffer per thread, kept between appends (growing a
        // fresh one per request showed up in capture profiles).
        thread_local! {
            static FRAMES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let (stats, unflushed) = FRAMES.with(|f| {
            let mut frames = f.borrow_mut();
            frames.clear();
            for r in records {
                encode_frame(r, &mut frames);
            }
            let res = d.wal.append(&frames, || -> Result<_, StoreError> {
                let mut mem = lock(&self.mem)?;
                let s = mem.apply_all(records);
                Ok((s, mem.unflushed))
            });
            if frames.capacity() > 64 << 20 {
                *frames = Vec::new();
            }
            res
        })??;
        if d.flush_wanted(unflushed) {
            // With a background thread, it flushes and no request waits for
            // the segment to be merged and written (one request per flush
            // took ~2.5 s under capture load). Without one, one appender
            // flushes; the others carry on. These records are durable in
            // the WAL whatever the flush does: a failed flush (a full disk,
            // say) is logged and retried later, not reported as a failed
            // append.
            match &d.signal {
                Some(sig) => sig.poke(),
                None => self.try_flush(d),
            }
        }
        Ok(stats)
    }

    /// Flushes unless another flush is running; a failure is logged and
    /// noted for the retry delay, never returned (the events stay in the
    /// WAL).
    fn try_flush(&self, d: &Disk) {
        if let Ok(g) = d.flush_lock.try_lock() {
            let res = self.flush_locked(d, g);
            d.note_flush(&res);
            if let Err(e) = res {
                tracing::warn!("flush failed; the events stay in the write-ahead log: {e}");
            }
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        let Some(d) = &self.disk else {
            return Ok(());
        };
        let g = lock(&d.flush_lock)?;
        let res = self.flush_locked(d, g);
        d.note_flush(&res);
        res
    }

    /// Writes `run` as a new segment file and returns the file and the run
    /// read back from it: mapped, so the written events leave the heap.
    /// The dictionaries' new strings are logged first (the segment holds
    /// global ids).
    fn write_run(
        &self,
        d: &Disk,
        run: &Run,
        identity: &Identity,
        dicts: &Dicts,
    ) -> Result<(Arc<Run>, SegFile), StoreError> {
        {
            let mut log = lock(&d.dict_log)?;
            append_dicts(&d.dir, &mut log, dicts, d.opts.fsync)?;
        }
        let id = {
            let mut m = lock(&d.manifest)?;
            m.next_segment += 1;
            m.next_segment - 1
        };
        let name = segment_name(id);
        let creator = creators(identity, dicts);
        let img = encode_segment(run, |p| creator[p as usize]);
        let path = d.dir.join(&name);
        let bytes = write_file_atomic(&path, &img, d.opts.fsync)?;
        drop(img);
        let mapped = match open_segment(&path, dicts, identity) {
            Ok(Opened::Mapped(m)) => m.run,
            Ok(Opened::Decoded(_)) => unreachable!("version 2 is written"),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok((Arc::new(mapped), SegFile { name, bytes }))
    }

    /// A flush that did not commit gives its cut back: the WAL generations
    /// stay, the runs stay unflushed, and the meta frames go back in front
    /// (the next flush writes them to the meta log).
    fn restore_cut(&self, cut: Cut) {
        if let Ok(mut mem) = self.mem.lock() {
            let mut meta = cut.meta;
            meta.extend_from_slice(&mem.meta);
            mem.meta = meta;
            mem.unflushed += cut.runs.iter().map(|r| r.len()).sum::<usize>();
            mem.cutting.clear();
        }
    }

    fn flush_locked(&self, d: &Disk, _guard: MutexGuard<'_, ()>) -> Result<(), StoreError> {
        // 1. Cut: with appends paused, seal and take everything not yet in
        //    segments; the WAL moves to a new generation.
        let cut = d.wal.rotate(
            || {
                let mut mem = lock(&self.mem)?;
                mem.st.seal();
                let runs: Vec<Arc<Run>> = mem
                    .st
                    .runs
                    .iter()
                    .filter(|r| !mem.segs.contains_key(&ptr(r)))
                    .cloned()
                    .collect();
                if runs.is_empty() && mem.meta.is_empty() {
                    return Ok(None);
                }
                mem.unflushed = 0;
                mem.cutting = runs.iter().map(ptr).collect();
                Ok(Some(Cut {
                    runs,
                    meta: std::mem::take(&mut mem.meta),
                    identity: mem.st.identity.clone(),
                    dicts: mem.st.dicts.clone(),
                }))
            },
            |cut| self.restore_cut(cut),
        )?;
        let Some((cut, old_gen)) = cut else {
            return Ok(());
        };
        // 2. Write the segment and the meta log, switch the manifest.
        let mut written: Option<(Arc<Run>, SegFile)> = None;
        let res = (|| -> Result<(), StoreError> {
            let merged = match cut.runs.len() {
                0 => None,
                1 => Some(cut.runs[0].clone()),
                _ => Some(Arc::new(merge_runs(&cut.runs))),
            };
            if let Some(run) = &merged {
                written = Some(self.write_run(d, run, &cut.identity, &cut.dicts)?);
            }
            let mut m = lock(&d.manifest)?;
            let mut next = m.clone();
            next.dict_len = lock(&d.dict_log)?.len;
            if !cut.meta.is_empty() {
                next.meta_len = append_meta(&d.dir, m.meta_len, &cut.meta, d.opts.fsync)?;
            }
            if let Some((_, seg)) = &written {
                next.segments.push(seg.name.clone());
            }
            next.wal_start = old_gen + 1;
            next.save(&d.dir, d.opts.fsync)?;
            *m = next;
            // Swap the cut's runs for the segment's run (manifest -> mem).
            let mut mem = lock(&self.mem)?;
            let gone: HashSet<usize> = cut.runs.iter().map(ptr).collect();
            let mut runs: Vec<Arc<Run>> = mem
                .st
                .runs
                .iter()
                .filter(|r| !gone.contains(&ptr(r)))
                .cloned()
                .collect();
            if let Some((run, seg)) = &written {
                runs.push(run.clone());
                mem.segs.insert(ptr(run), seg.clone());
            }
            mem.st.set_runs(runs);
            if let Some(merged) = &merged {
                mem.st.uuids_to_segment(&merged.cols.uuid);
            }
            mem.cutting.clear();
            mem.flushed_identity = cut.identity.clone();
            Ok(())
        })();
        if let Err(e) = res {
            if let Some((_, seg)) = written {
                let _ = std::fs::remove_file(d.dir.join(seg.name));
            }
            self.restore_cut(cut);
            return Err(e);
        }
        // 3. The covered WAL generations are garbage now.
        remove_wal_upto(&d.dir, old_gen)?;
        if let Some(sig) = &d.signal {
            if self.segment_count() > d.opts.compaction_threshold {
                sig.poke();
            }
        }
        Ok(())
    }

    fn segment_count(&self) -> usize {
        self.mem.lock().map(|m| m.segs.len()).unwrap_or(0)
    }

    fn compact(&self) -> Result<(), StoreError> {
        let Some(d) = &self.disk else {
            lock(&self.mem)?.st.compact_in_memory();
            return Ok(());
        };
        let _c = lock(&d.compact_lock)?;
        self.flush()?;
        self.compact_segments_locked(d)
    }

    fn compact_segments(&self) -> Result<(), StoreError> {
        let Some(d) = &self.disk else {
            return Ok(());
        };
        let _c = lock(&d.compact_lock)?;
        self.compact_segments_locked(d)
    }

    fn compact_segments_locked(&self, d: &Disk) -> Result<(), StoreError> {
        // Inputs: every run that is in a segment now. Segments flushed while
        // we merge are left alone and survive the switch.
        let (inputs, snap, identity, dicts) = {
            let mem = lock(&self.mem)?;
            let inputs: Vec<(Arc<Run>, SegFile)> = mem
                .st
                .runs
                .iter()
                .filter_map(|r| mem.segs.get(&ptr(r)).map(|s| (r.clone(), s.clone())))
                .collect();
            let snap = Snapshot::build(
                mem.st.dicts.clone(),
                mem.flushed_identity.clone(),
                mem.st.groups.clone(),
                mem.st.cohorts.clone(),
                inputs.iter().map(|(r, _)| r.clone()).collect(),
                mem.st.earliest,
            );
            (
                inputs,
                snap,
                mem.flushed_identity.clone(),
                mem.st.dicts.clone(),
            )
        };
        if inputs.is_empty() {
            return Ok(());
        }
        let nparts = d.opts.partitions.max(1);
        // One partition at a time, each written (and mapped back) before
        // the next is built: the heap holds one partition's events, not
        // all of them (at 100M events, ~2.5 GB instead of ~10 GB).
        let partition =
            |p: u32| ((p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % nparts;
        let mut written: Vec<Result<(Arc<Run>, SegFile), StoreError>> = Vec::new();
        let mut scratch = EventColumns::new();
        for k in 0..nparts {
            let mut part = RunBuilder::default();
            for i in 0..snap.actor_count() {
                let p = snap.actor_person(i);
                if partition(p) == k {
                    part.push_person(p, &snap.events_of(i, &mut scratch));
                }
            }
            if part.is_empty() {
                continue;
            }
            let run = part.finish();
            let res = self.write_run(d, &run, &identity, &dicts);
            let failed = res.is_err();
            written.push(res);
            if failed {
                break;
            }
        }
        drop(snap);
        if written.iter().any(Result::is_err) {
            // Not committed: remove the outputs that were written, so a
            // failure on a full disk does not keep their space.
            let mut first_err = None;
            for w in written {
                match w {
                    Ok((_, s)) => {
                        let _ = std::fs::remove_file(d.dir.join(&s.name));
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            return Err(first_err.expect("an error"));
        }
        let outputs: Vec<(Arc<Run>, SegFile)> = written.into_iter().flatten().collect();
        // Switch: manifest first (the commit point), then memory.
        let old_names: HashSet<&str> = inputs.iter().map(|(_, s)| s.name.as_str()).collect();
        {
            let mut m = lock(&d.manifest)?;
            let mut next = m.clone();
            next.dict_len = lock(&d.dict_log)?.len;
            next.segments.retain(|n| !old_names.contains(n.as_str()));
            next.segments
                .extend(outputs.iter().map(|(_, s)| s.name.clone()));
            if let Err(e) = next.save(&d.dir, d.opts.fsync) {
                for (_, s) in &outputs {
                    let _ = std::fs::remove_file(d.dir.join(&s.name));
                }
                return Err(e);
            }
            *m = next;
            let mut mem = lock(&self.mem)?;
            let gone: HashSet<usize> = inputs.iter().map(|(r, _)| ptr(r)).collect();
            let mut runs: Vec<Arc<Run>> = mem
                .st
                .runs
                .iter()
                .filter(|r| !gone.contains(&ptr(r)))
                .cloned()
                .collect();
            for p in &gone {
                mem.segs.remove(p);
            }
            for (r, s) in &outputs {
                runs.push(r.clone());
                mem.segs.insert(ptr(r), s.clone());
            }
            mem.st.set_runs(runs);
        }
        for name in old_names {
            let path = d.dir.join(name);
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        if d.opts.fsync {
            sync_dir(&d.dir)?;
        }
        Ok(())
    }
}

fn remove_wal_upto(dir: &Path, gen: u64) -> Result<(), StoreError> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if let Some(g) = name.to_str().and_then(parse_wal_name) {
            if g <= gen {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                removed = true;
            }
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

impl Signal {
    fn poke(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = true;
            self.cv.notify_all();
        }
    }
}

impl Worker {
    fn start(core: Arc<Core>, signal: Arc<Signal>) -> Worker {
        let sig = signal.clone();
        let handle = std::thread::Builder::new()
            .name("dropscope-background".into())
            .spawn(move || loop {
                {
                    let mut s = sig.state.lock().unwrap_or_else(|e| e.into_inner());
                    while !s.0 && !s.1 {
                        s = sig.cv.wait(s).unwrap_or_else(|e| e.into_inner());
                    }
                    if s.1 {
                        return;
                    }
                    s.0 = false;
                }
                let Some(d) = &core.disk else { return };
                let unflushed = core.mem.lock().map(|m| m.unflushed).unwrap_or(0);
                if d.flush_wanted(unflushed) {
                    core.try_flush(d);
                }
                if core.segment_count() > d.opts.compaction_threshold {
                    let res = core.compact();
                    if let Err(e) = &res {
                        tracing::warn!("background compaction failed: {e}");
                    }
                    // A later success (say, once disk space is freed)
                    // clears the error.
                    if let Ok(mut b) = d.bg_error.lock() {
                        *b = res.err().map(|e| e.to_string());
                    }
                }
            })
            .expect("spawn compaction thread");
        Worker {
            signal,
            handle: Some(handle),
        }
    }

    fn stop(&mut self) {
        if let Ok(mut s) = self.signal.state.lock() {
            s.1 = true;
            self.signal.cv.notify_all();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(w) = &mut self.worker {
            w.stop();
        }
    }
}

impl Store {
    /// A store that lives only in memory (tests, acceptance cases).
    pub fn in_memory() -> Store {
        Store {
            core: Arc::new(Core {
                mem: Mutex::new(Mem::new(false)),
                disk: None,
            }),
            worker: None,
        }
    }

    /// Opens (or creates) a durable store in `dir` and recovers it: see the
    /// module docs. A torn or corrupt WAL tail is truncated and reported in
    /// [`Store::open_report`]; a damaged segment, manifest or meta log fails
    /// with [`StoreError::Corrupt`] naming the file.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let t0 = Instant::now();
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("LOCK");
        let lock_file = File::create(&lock_path).map_err(io_err(&lock_path))?;
        if lock_file.try_lock().is_err() {
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
            });
        }
        let mut report = OpenReport::default();
        let manifest = match Manifest::load(dir)? {
            Some(m) => m,
            None => {
                let m = Manifest {
                    wal_start: 1,
                    next_segment: 1,
                    ..Default::default()
                };
                m.save(dir, opts.fsync)?;
                m
            }
        };

        // Garbage: temp files, orphan segments, WAL generations already
        // covered by segments.
        let live: HashSet<&str> = manifest.segments.iter().map(String::as_str).collect();
        let mut wal_gens = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let garbage = if name.ends_with(".tmp") {
                true
            } else if parse_segment_name(name).is_some() {
                !live.contains(name)
            } else if let Some(g) = parse_wal_name(name) {
                if g >= manifest.wal_start {
                    wal_gens.push(g);
                }
                g < manifest.wal_start
            } else {
                false
            };
            if garbage {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                report.garbage_files_removed += 1;
            }
        }
        wal_gens.sort_unstable();

        // Dictionaries first (segments hold their ids), then identity, so
        // that segments' person blocks map.
        let mut mem = Mem::new(true);
        let dict_log = replay_dicts(
            dir,
            manifest.dict_len,
            Arc::get_mut(&mut mem.st.dicts).expect("a new state's dictionaries are not shared"),
        )?;
        mem.st.dicts.release_pages();
        let mut replayed = 0u64;
        report.meta_records_replayed = replay_meta(dir, manifest.meta_len, |r| {
            mem.st.apply_meta(&r);
            // Replaying interns strings the dictionary log holds, and
            // confirming each reads it from the mapped log: let go of
            // those pages now and then, so that opening does not page
            // the whole log into this process.
            replayed += 1;
            if replayed.is_multiple_of(65_536) {
                mem.st.dicts.release_pages();
            }
        })?;
        mem.st.dicts.release_pages();
        mem.flushed_identity = mem.st.identity.clone();

        // Segments: check and map (version 2) or decode (version 1) in
        // parallel; version 1 files are remapped to global ids in order.
        let opened: Vec<_> = {
            let (dicts, identity) = (&*mem.st.dicts, &*mem.st.identity);
            manifest
                .segments
                .par_iter()
                .map(|n| {
                    let path = dir.join(n);
                    if !path.exists() {
                        return Err(StoreError::Corrupt {
                            path,
                            reason: "listed in the manifest but missing".into(),
                        });
                    }
                    open_segment(&path, dicts, identity)
                })
                .collect()
        };
        let mut runs = Vec::with_capacity(opened.len());
        let mut max_seq: Option<u64> = None;
        let mut earliest: Option<i64> = None;
        for (name, opened) in manifest.segments.iter().zip(opened) {
            let (run, bytes, seg_max_seq, min_ts) = match opened? {
                Opened::Mapped(m) => (m.run, m.file_bytes, m.max_seq, m.min_ts),
                Opened::Decoded(data) => {
                    let bytes = data.file_bytes;
                    let run = data
                        .into_run(&mem.st.dicts, &mem.st.identity)
                        .map_err(|reason| StoreError::Corrupt {
                            path: dir.join(name),
                            reason,
                        })?;
                    let (seq, ts) = (
                        run.cols.seq.iter().max().copied(),
                        run.cols.ts.iter().min().copied(),
                    );
                    (run, bytes, seq, ts)
                }
            };
            max_seq = max_seq.max(seg_max_seq);
            if let Some(m) = min_ts {
                earliest = Some(earliest.map_or(m, |x| x.min(m)));
            }
            report.events_loaded += run.len() as u64;
            let run = Arc::new(run);
            mem.segs.insert(
                ptr(&run),
                SegFile {
                    name: name.clone(),
                    bytes,
                },
            );
            runs.push(run);
        }
        report.segments_loaded = runs.len();

        mem.st.set_runs(runs);
        mem.st.next_seq = max_seq.map_or(0, |m| m + 1);
        mem.st.earliest = earliest;

        // WAL replay, through the same apply as the live path.
        let mut stopped = false;
        for &g in &wal_gens {
            let path = dir.join(crate::wal::wal_name(g));
            if stopped {
                // After a corrupt record, later generations cannot be applied
                // in order: they are dropped too.
                let len = std::fs::metadata(&path).map_err(io_err(&path))?.len();
                report.truncated_wal_bytes += len;
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let scan = scan_log(&path, WAL_MAGIC, None, |r| {
                mem.apply_all(std::slice::from_ref(&r));
            })?;
            report.wal_files_replayed += 1;
            report.wal_records_replayed += scan.records;
            if let Some(problem) = scan.problem {
                let lost = scan.file_len - scan.valid_len;
                tracing::warn!(
                    file = %path.display(),
                    "write-ahead log: {problem}; truncating {lost} bytes"
                );
                report.truncated_wal_bytes += lost;
                report.truncated_wal_file = Some(path.clone());
                report.truncation_reason = Some(problem);
                if scan.valid_len < HEADER_LEN {
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                } else {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    f.set_len(scan.valid_len).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                }
                stopped = true;
            } else if scan.records == 0 && scan.file_len == HEADER_LEN {
                // A generation with no record (a store opened and closed
                // without appending): nothing to keep, and each open would
                // otherwise leave one more behind.
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        let next_gen = wal_gens
            .last()
            .map_or(manifest.wal_start, |g| (g + 1).max(manifest.wal_start));
        let wal = Wal::create(dir, next_gen, opts.fsync)?;
        report.elapsed = t0.elapsed();
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments_loaded,
            events = report.events_loaded,
            wal_records = report.wal_records_replayed,
            "store opened in {:?}",
            report.elapsed
        );
        let signal = opts
            .background_compaction
            .then(|| Arc::new(Signal::default()));
        let core = Arc::new(Core {
            mem: Mutex::new(mem),
            disk: Some(Disk {
                dir: dir.to_path_buf(),
                opts,
                wal,
                manifest: Mutex::new(manifest),
                dict_log: Mutex::new(dict_log),
                flush_lock: Mutex::new(()),
                compact_lock: Mutex::new(()),
                report,
                signal: signal.clone(),
                bg_error: Mutex::new(None),
                flush_failed: Mutex::new(None),
                _lock: lock_file,
            }),
        });
        let worker = signal.map(|s| Worker::start(core.clone(), s));
        Ok(Store { core, worker })
    }

    /// Appends records; returns once they are durable (fsynced, for a
    /// durable store) and applied. Concurrent appends share fsyncs.
    pub fn append(&self, records: &[Record]) -> Result<AppendStats, StoreError> {
        self.core.append(records)
    }

    /// A consistent read view of everything appended so far.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut mem = lock(&self.core.mem)?;
        mem.seal_and_merge();
        Ok(mem.st.snapshot())
    }

    /// Merges runs so each person's events are in one sorted run. For a
    /// durable store: flushes, then rewrites all segments as
    /// `partitions` segments sorted by canonical person.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.core.compact()
    }

    /// Rewrites the existing segments only (no flush first) as
    /// `partitions` segments sorted by canonical person. No-op in memory.
    pub fn compact_segments(&self) -> Result<(), StoreError> {
        self.core.compact_segments()
    }

    /// Writes everything not yet in a segment to one, and drops the WAL
    /// generations it covers. No-op for an in-memory store.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.core.flush()
    }

    /// Stops the background thread and closes the store. Nothing needs
    /// flushing: every acknowledged append is in the WAL.
    pub fn close(mut self) -> Result<(), StoreError> {
        if let Some(w) = &mut self.worker {
            w.stop();
        }
        if let Some(d) = &self.core.disk {
            if let Some(e) = lock(&d.bg_error)?.take() {
                return Err(StoreError::Background(e));
            }
        }
        Ok(())
    }

    /// What `open` recovered; `None` for an in-memory store.
    pub fn open_report(&self) -> Option<&OpenReport> {
        self.core.disk.as_ref().map(|d| &d.report)
    }

    /// The data directory; `None` for an in-memory store.
    pub fn dir(&self) -> Option<&Path> {
        self.core.disk.as_ref().map(|d| d.dir.as_path())
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = {
            let mem = lock(&self.core.mem)?;
            StoreStats {
                events: mem.st.event_count(),
                segments: mem.segs.len(),
                segment_bytes: mem.segs.values().map(|s| s.bytes).sum(),
                runs: mem.st.runs.len(),
                memtable_events: mem.st.memtable.len(),
                unflushed_events: mem.unflushed,
                bytes_in_memory: mem.st.memtable.heap_bytes()
                    + mem.st.runs.iter().map(|r| run_heap_bytes(r)).sum::<usize>(),
                ..Default::default()
            }
        };
        if let Some(d) = &self.core.disk {
            s.wal = Some(d.wal.stats());
            s.background_error = lock(&d.bg_error)?.clone();
            s.flush_error = lock(&d.flush_failed)?.as_ref().map(|(_, e)| e.clone());
            for entry in std::fs::read_dir(&d.dir).map_err(io_err(&d.dir))? {
                let entry = entry.map_err(io_err(&d.dir))?;
                if let Ok(m) = entry.metadata() {
                    if m.is_file() {
                        s.bytes_on_disk += m.len();
                    }
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dropscope_core::event::Event;

    fn ev(n: u64) -> Record {
        Record::Event(Event {
            uuid: n as u128 + 1,
            event: "e".into(),
            distinct_id: format!("u{}", n % 37),
            timestamp: 1_700_000_000_000 + (n as i64 * 7919) % 100_000,
            properties: Default::default(),
        })
    }

    /// A snapshot after every append (queries during capture) keeps the
    /// unflushed runs logarithmic in number, and every event readable.
    #[test]
    fn snapshots_between_appends_keep_runs_few() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            fsync: false,
            background_compaction: false,
            ..Default::default()
        };
        for store in [Store::in_memory(), Store::open(dir.path(), opts).unwrap()] {
            for n in 0..2000 {
                store.append(&[ev(n)]).unwrap();
                let snap = store.snapshot().unwrap();
                assert_eq!(snap.event_count(), n as usize + 1);
            }
            let runs = store.stats().unwrap().runs;
            assert!(runs <= 12, "{runs} runs after 2000 snapshots");
            // Each person's events come back in time order.
            let snap = store.snapshot().unwrap();
            let mut scratch = EventColumns::new();
            let mut total = 0;
            for i in 0..snap.actor_count() {
                let v = snap.events_of(i, &mut scratch);
                assert!(v.ts.windows(2).all(|w| w[0] <= w[1]));
                total += v.len();
            }
            assert_eq!(total, 2000);
        }
    }
}
