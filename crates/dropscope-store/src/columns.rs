//! Columnar event storage in memory: one `Vec` per field, ids not strings.
//!
//! A [`Run`] is a set of events sorted by (person, timestamp, sequence) with
//! an index of where each person's events start. Segments on disk decode
//! into runs; the memtable is sealed into a run for each snapshot.
//! [`EventsView`] is a borrowed, person-local window over columns, the only
//! thing the query engine sees.
//!
//! A run's columns are [`Col`]s: owned vectors for runs built in memory,
//! or slices of a memory-mapped segment file (format version 2), so that a
//! query touches only the columns it reads and the rest stays on disk.

use std::ops::{Deref, Range};
use std::sync::Arc;

/// Owned event columns. Properties are stored as a flat list of
/// (key id, value id) pairs; event `i` owns pairs
/// `prop_start[i] .. prop_start[i + 1]`.
#[derive(Debug, Default, Clone)]
pub struct EventColumns {
    pub ts: Vec<i64>,
    /// Global ingest order; breaks ties between equal timestamps.
    pub seq: Vec<u64>,
    pub event: Vec<u32>,
    pub did: Vec<u32>,
    pub uuid: Vec<u128>,
    /// `len() + 1` entries.
    pub prop_start: Vec<u32>,
    pub prop_key: Vec<u32>,
    pub prop_val: Vec<u32>,
}

impl EventColumns {
    pub fn new() -> Self {
        EventColumns {
            prop_start: vec![0],
            ..Default::default()
        }
    }

    /// Empty columns with room for `events` events carrying `props`
    /// properties in all: filling them never reallocates.
    pub fn with_capacity(events: usize, props: usize) -> Self {
        let mut prop_start = Vec::with_capacity(events + 1);
        prop_start.push(0);
        EventColumns {
            ts: Vec::with_capacity(events),
            seq: Vec::with_capacity(events),
            event: Vec::with_capacity(events),
            did: Vec::with_capacity(events),
            uuid: Vec::with_capacity(events),
            prop_start,
            prop_key: Vec::with_capacity(props),
            prop_val: Vec::with_capacity(props),
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn clear(&mut self) {
        self.ts.clear();
        self.seq.clear();
        self.event.clear();
        self.did.clear();
        self.uuid.clear();
        self.prop_start.clear();
        self.prop_start.push(0);
        self.prop_key.clear();
        self.prop_val.clear();
    }

    /// Appends one event.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ts: i64,
        seq: u64,
        event: u32,
        did: u32,
        uuid: u128,
        props: impl IntoIterator<Item = (u32, u32)>,
    ) {
        if self.prop_start.is_empty() {
            self.prop_start.push(0);
        }
        self.ts.push(ts);
        self.seq.push(seq);
        self.event.push(event);
        self.did.push(did);
        self.uuid.push(uuid);
        for (k, v) in props {
            self.prop_key.push(k);
            self.prop_val.push(v);
        }
        self.prop_start.push(self.prop_key.len() as u32);
    }

    /// Appends event `i` of a view.
    pub fn push_from(&mut self, v: &EventsView<'_>, i: usize) {
        let (a, b) = v.prop_range(i);
        self.push(
            v.ts[i],
            v.seq[i],
            v.event[i],
            v.did[i],
            v.uuid[i],
            (a..b).map(|j| (v.prop_key[j], v.prop_val[j])),
        );
    }

    /// A view of all events.
    pub fn view(&self) -> EventsView<'_> {
        EventsView {
            ts: &self.ts,
            seq: &self.seq,
            event: &self.event,
            did: &self.did,
            uuid: &self.uuid,
            prop_start: &self.prop_start,
            prop_key: &self.prop_key,
            prop_val: &self.prop_val,
        }
    }

    /// Heap bytes held by the columns.
    pub fn heap_bytes(&self) -> usize {
        self.ts.capacity() * 8
            + self.seq.capacity() * 8
            + self.event.capacity() * 4
            + self.did.capacity() * 4
            + self.uuid.capacity() * 16
            + self.prop_start.capacity() * 4
            + self.prop_key.capacity() * 4
            + self.prop_val.capacity() * 4
    }
}

/// A borrowed window over event columns (one person's events, usually).
/// `prop_start` has `len() + 1` entries, absolute into `prop_key`/`prop_val`.
#[derive(Debug, Clone, Copy)]
pub struct EventsView<'a> {
    pub ts: &'a [i64],
    pub seq: &'a [u64],
    pub event: &'a [u32],
    pub did: &'a [u32],
    pub uuid: &'a [u128],
    pub prop_start: &'a [u32],
    pub prop_key: &'a [u32],
    pub prop_val: &'a [u32],
}

impl<'a> EventsView<'a> {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The events `start..end` of this view.
    pub fn range(&self, start: usize, end: usize) -> EventsView<'a> {
        EventsView {
            ts: &self.ts[start..end],
            seq: &self.seq[start..end],
            event: &self.event[start..end],
            did: &self.did[start..end],
            uuid: &self.uuid[start..end],
            prop_start: &self.prop_start[start..=end],
            prop_key: self.prop_key,
            prop_val: self.prop_val,
        }
    }

    pub fn prop_range(&self, i: usize) -> (usize, usize) {
        (self.prop_start[i] as usize, self.prop_start[i + 1] as usize)
    }

    /// The value id of property `key` on event `i`.
    #[inline]
    pub fn prop(&self, i: usize, key: u32) -> Option<u32> {
        let (a, b) = self.prop_range(i);
        self.prop_key[a..b]
            .iter()
            .position(|k| *k == key)
            .map(|p| self.prop_val[a + p])
    }

    /// (key, value) pairs of event `i`.
    pub fn props(&self, i: usize) -> impl Iterator<Item = (u32, u32)> + 'a {
        let (a, b) = self.prop_range(i);
        let (k, v) = (self.prop_key, self.prop_val);
        (a..b).map(move |j| (k[j], v[j]))
    }
}

/// One column of a run: an owned vector, or a range of a mapped segment
/// file holding `T`s in native (little-endian) layout, aligned for `T`
/// (checked when the segment is opened: see `segment::map_segment`).
pub enum Col<T> {
    Owned(Vec<T>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        bytes: Range<usize>,
    },
}

impl<T: bytemuck::Pod> Deref for Col<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Col::Owned(v) => v,
            // Alignment and size were checked when the column was mapped,
            // so this cast cannot fail.
            Col::Mapped { map, bytes } => bytemuck::cast_slice(&map[bytes.clone()]),
        }
    }
}

impl<T> Default for Col<T> {
    fn default() -> Self {
        Col::Owned(Vec::new())
    }
}

impl<T: bytemuck::Pod> std::fmt::Debug for Col<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Col::Owned(v) => write!(f, "Owned({} values)", v.len()),
            Col::Mapped { bytes, .. } => write!(f, "Mapped({bytes:?})"),
        }
    }
}

impl<T> Col<T> {
    /// Drops a mapped column's pages from this process (they are read from
    /// the file again if touched), after a one-off scan such as building
    /// the uuid fingerprints, so that such a scan does not stay resident.
    pub fn release(&self) {
        let len = match self {
            Col::Owned(v) => v.len(),
            Col::Mapped { bytes, .. } => bytes.len() / std::mem::size_of::<T>().max(1),
        };
        self.release_range(0..len);
    }

    /// [`Col::release`] for the elements `range` only (with the pages they
    /// share with their neighbours: a neighbour read later faults its page
    /// in again, unchanged).
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        if let Col::Mapped { map, bytes } = self {
            let size = std::mem::size_of::<T>();
            let bytes = bytes.start + range.start * size..bytes.start + range.end * size;
            // SAFETY: the map is a read-only mapping of an immutable file;
            // MADV_DONTNEED only drops its pages from this process, and
            // later reads fault them in again from the file unchanged.
            // (memmap2 widens the range to whole pages.)
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    bytes.start,
                    bytes.len(),
                )
            };
        }
    }

    /// Heap bytes held (a mapped column holds none: its pages belong to the
    /// page cache).
    fn heap_bytes(&self) -> usize {
        match self {
            Col::Owned(v) => v.capacity() * std::mem::size_of::<T>(),
            Col::Mapped { .. } => 0,
        }
    }
}

/// A run's event columns (see [`EventColumns`] for what each holds).
#[derive(Debug, Default)]
pub struct RunColumns {
    pub ts: Col<i64>,
    pub seq: Col<u64>,
    pub event: Col<u32>,
    pub did: Col<u32>,
    pub uuid: Col<u128>,
    pub prop_start: Col<u32>,
    pub prop_key: Col<u32>,
    pub prop_val: Col<u32>,
}

impl From<EventColumns> for RunColumns {
    fn from(c: EventColumns) -> Self {
        RunColumns {
            ts: Col::Owned(c.ts),
            seq: Col::Owned(c.seq),
            event: Col::Owned(c.event),
            did: Col::Owned(c.did),
            uuid: Col::Owned(c.uuid),
            prop_start: Col::Owned(c.prop_start),
            prop_key: Col::Owned(c.prop_key),
            prop_val: Col::Owned(c.prop_val),
        }
    }
}

impl RunColumns {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// A view of all events.
    pub fn view(&self) -> EventsView<'_> {
        EventsView {
            ts: &self.ts,
            seq: &self.seq,
            event: &self.event,
            did: &self.did,
            uuid: &self.uuid,
            prop_start: &self.prop_start,
            prop_key: &self.prop_key,
            prop_val: &self.prop_val,
        }
    }

    /// Drops the pages of events `rows` from this process (see
    /// [`Col::release`]) in every mapped column but event ids and times: a
    /// scan that will not come back to them releases them as it goes, so
    /// its resident set stays the size of what it is working on, not of
    /// everything it has read. Event ids and times (12 bytes an event) are
    /// what every query reads; they stay, since faulting them in again at
    /// each query would cost more than they hold. No-op for columns on the
    /// heap.
    pub fn release_rows(&self, rows: std::ops::Range<usize>) {
        if rows.is_empty() || matches!(self.ts, Col::Owned(_)) {
            return;
        }
        let props = self.prop_start[rows.start] as usize..self.prop_start[rows.end] as usize;
        self.seq.release_range(rows.clone());
        self.did.release_range(rows.clone());
        self.uuid.release_range(rows.clone());
        self.prop_start.release_range(rows);
        self.prop_key.release_range(props.clone());
        self.prop_val.release_range(props);
    }

    /// Heap bytes held by the columns (none for mapped ones).
    pub fn heap_bytes(&self) -> usize {
        self.ts.heap_bytes()
            + self.seq.heap_bytes()
            + self.event.heap_bytes()
            + self.did.heap_bytes()
            + self.uuid.heap_bytes()
            + self.prop_start.heap_bytes()
            + self.prop_key.heap_bytes()
            + self.prop_val.heap_bytes()
    }
}

/// Events sorted by (person, ts, seq), with the person index.
#[derive(Debug, Default)]
pub struct Run {
    pub cols: RunColumns,
    /// Person ids (as of when the run was built), ascending.
    pub persons: Vec<u32>,
    /// `persons.len() + 1` offsets: person `persons[i]` owns events
    /// `person_start[i] .. person_start[i + 1]`.
    pub person_start: Vec<u32>,
    /// For a run that is a segment: its uuids, ascending (deduplication
    /// looks events up here; see `State`). `None` for runs only in memory.
    pub uuid_sorted: Option<Col<u128>>,
}

impl Run {
    /// Sorts `cols` by (person of each event, ts, seq) and indexes persons.
    /// `person_of` maps each event's row to its person.
    pub fn build(cols: &EventColumns, person_of: impl Fn(usize) -> u32) -> Run {
        let n = cols.len();
        let person: Vec<u32> = (0..n).map(&person_of).collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| {
            let i = i as usize;
            (person[i], cols.ts[i], cols.seq[i])
        });
        let mut out = EventColumns::with_capacity(n, cols.prop_key.len());
        let v = cols.view();
        let mut persons = Vec::new();
        let mut person_start = Vec::new();
        for (row, &i) in order.iter().enumerate() {
            let p = person[i as usize];
            if persons.last() != Some(&p) {
                persons.push(p);
                person_start.push(row as u32);
            }
            out.push_from(&v, i as usize);
        }
        person_start.push(n as u32);
        Run {
            cols: out.into(),
            persons,
            person_start,
            uuid_sorted: None,
        }
    }

    pub fn len(&self) -> usize {
        self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// One run holding the events of all `runs`, which must key events by
    /// the same person ids. A k-way merge by person, then by (time, seq)
    /// within a person: each input is already sorted that way, so nothing
    /// is sorted again (concatenating and sorting took ~1.3 s per million
    /// events in a flush under capture load).
    pub fn merge(runs: &[&Run]) -> Run {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let events = runs.iter().map(|r| r.len()).sum();
        let props = runs.iter().map(|r| r.cols.prop_key.len()).sum();
        let mut cols = EventColumns::with_capacity(events, props);
        let mut persons = Vec::new();
        let mut person_start = Vec::new();
        // (next person id, run) for every run with persons left.
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.persons.is_empty())
            .map(|(k, r)| Reverse((r.persons[0], k)))
            .collect();
        let mut next = vec![0usize; runs.len()];
        // The current person's events in each run that has them, and how
        // far each is taken.
        let mut parts: Vec<(EventsView<'_>, usize)> = Vec::new();
        while let Some(Reverse((p, k))) = heap.pop() {
            parts.clear();
            let mut take = |k: usize, heap: &mut BinaryHeap<Reverse<(u32, usize)>>| {
                let j = next[k];
                next[k] += 1;
                if let Some(&q) = runs[k].persons.get(j + 1) {
                    heap.push(Reverse((q, k)));
                }
                runs[k].person_view(j)
            };
            parts.push((take(k, &mut heap), 0));
            while let Some(&Reverse((q, k2))) = heap.peek() {
                if q != p {
                    break;
                }
                heap.pop();
                parts.push((take(k2, &mut heap), 0));
            }
            persons.push(p);
            person_start.push(cols.len() as u32);
            if let [(v, _)] = &parts[..] {
                for i in 0..v.len() {
                    cols.push_from(v, i);
                }
                continue;
            }
            // A person in several runs: repeatedly take the earliest head
            // (few runs per person, so a scan beats a heap).
            loop {
                let mut best: Option<usize> = None;
                for (x, (v, i)) in parts.iter().enumerate() {
                    if *i < v.len() {
                        let key = (v.ts[*i], v.seq[*i]);
                        if best.is_none_or(|b| {
                            key < (parts[b].0.ts[parts[b].1], parts[b].0.seq[parts[b].1])
                        }) {
                            best = Some(x);
                        }
                    }
                }
                let Some(b) = best else { break };
                let (v, i) = &mut parts[b];
                cols.push_from(v, *i);
                *i += 1;
            }
        }
        person_start.push(cols.len() as u32);
        Run {
            cols: cols.into(),
            persons,
            person_start,
            uuid_sorted: None,
        }
    }

    pub fn person_view(&self, idx: usize) -> EventsView<'_> {
        self.cols.view().range(
            self.person_start[idx] as usize,
            self.person_start[idx + 1] as usize,
        )
    }
}

/// Builds a run person by person, each person's events given in order
/// (rebuilding runs: compaction partitions, re-sorted blocks, the merged
/// run of a snapshot).
#[derive(Debug)]
pub struct RunBuilder {
    cols: EventColumns,
    persons: Vec<u32>,
    person_start: Vec<u32>,
}

impl Default for RunBuilder {
    fn default() -> Self {
        RunBuilder {
            cols: EventColumns::new(),
            persons: Vec::new(),
            person_start: Vec::new(),
        }
    }
}

impl RunBuilder {
    /// Appends person `p` (after every person appended so far) with the
    /// events of `v`.
    pub fn push_person(&mut self, p: u32, v: &EventsView<'_>) {
        self.persons.push(p);
        self.person_start.push(self.cols.len() as u32);
        for i in 0..v.len() {
            self.cols.push_from(v, i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.persons.is_empty()
    }

    pub fn finish(mut self) -> Run {
        self.person_start.push(self.cols.len() as u32);
        Run {
            cols: self.cols.into(),
            persons: self.persons,
            person_start: self.person_start,
            uuid_sorted: None,
        }
    }
}

/// Merges several views of one person's events into `out`, keeping
/// (ts, seq) order. `out` is a reusable scratch buffer.
pub fn merge_views(views: &[EventsView<'_>], out: &mut EventColumns) {
    out.clear();
    let mut pos = vec![0usize; views.len()];
    loop {
        let mut best: Option<(usize, (i64, u64))> = None;
        for (k, v) in views.iter().enumerate() {
            if pos[k] < v.len() {
                let key = (v.ts[pos[k]], v.seq[pos[k]]);
                if best.is_none_or(|(_, b)| key < b) {
                    best = Some((k, key));
                }
            }
        }
        let Some((k, _)) = best else { break };
        out.push_from(&views[k], pos[k]);
        pos[k] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs from generated events: (person, ts) pairs, seq unique.
    fn run_of(events: &[(u32, i64)], seq0: u64) -> Run {
        let mut cols = EventColumns::new();
        for (i, &(p, ts)) in events.iter().enumerate() {
            cols.push(
                ts,
                seq0 + i as u64,
                p % 7,
                p,
                (seq0 + i as u64) as u128,
                [(p, i as u32)],
            );
        }
        Run::build(&cols, |i| cols.did[i])
    }

    /// (person, ts, seq, event, did, properties) of one stored event.
    type Row = (u32, i64, u64, u32, u32, Vec<(u32, u32)>);

    fn rows(r: &Run) -> Vec<Row> {
        let mut out = Vec::new();
        for (j, &p) in r.persons.iter().enumerate() {
            let v = r.person_view(j);
            for i in 0..v.len() {
                let (a, b) = v.prop_range(i);
                let props = (a..b).map(|x| (v.prop_key[x], v.prop_val[x])).collect();
                out.push((p, v.ts[i], v.seq[i], v.event[i], v.did[i], props));
            }
        }
        out
    }

    proptest! {
        /// The k-way merge equals concatenating every run and sorting.
        #[test]
        fn merge_equals_concatenate_and_sort(
            parts in prop::collection::vec(
                prop::collection::vec((0u32..20, 0i64..30), 0..40), 0..6)
        ) {
            let runs: Vec<Run> = parts
                .iter()
                .enumerate()
                .map(|(k, evs)| run_of(evs, k as u64 * 1000))
                .collect();
            let refs: Vec<&Run> = runs.iter().collect();
            let merged = Run::merge(&refs);
            let mut all = EventColumns::new();
            for r in &runs {
                let v = r.cols.view();
                for i in 0..v.len() {
                    all.push_from(&v, i);
                }
            }
            let sorted = Run::build(&all, |i| all.did[i]);
            prop_assert_eq!(rows(&merged), rows(&sorted));
            prop_assert_eq!(&merged.persons, &sorted.persons);
            prop_assert_eq!(&merged.person_start, &sorted.person_start);
        }
    }
}
