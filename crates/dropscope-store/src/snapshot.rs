//! A consistent read view of the store.
//!
//! A snapshot holds `Arc`s to immutable runs and to the identity and group
//! state as they were when it was taken; writes that happen afterwards build
//! new state beside it (copy-on-write), so readers never see half a write.
//!
//! Queries go actor by actor: [`Snapshot::actors`] lists every canonical
//! person that has events, and [`Snapshot::events_of`] gives that person's
//! events in (timestamp, ingest order) across runs, resolving identity joins
//! made after the events were written (the override map). After compaction
//! each person sits in one run and the view is zero-copy.

use std::collections::HashMap;
use std::sync::Arc;

use dropscope_core::event::CohortRecord;

use crate::columns::{merge_views, EventColumns, EventsView, Run, RunBuilder};
use crate::dict::Dicts;
use crate::identity::{Identity, PersonData};

/// Groups: type names by slot, and properties by (slot, key).
#[derive(Debug, Clone, Default)]
pub struct GroupData {
    pub types: Vec<String>,
    pub props: HashMap<(u8, String), Vec<(u32, u32)>>,
}

/// One canonical person and where its events are.
#[derive(Debug, Clone, Copy)]
struct Slices {
    person: u32,
    /// Range into `Snapshot::slices`.
    start: u32,
    end: u32,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dicts: Arc<Dicts>,
    identity: Arc<Identity>,
    groups: Arc<GroupData>,
    cohorts: Arc<Vec<CohortRecord>>,
    runs: Vec<Arc<Run>>,
    actors: Vec<Slices>,
    /// (run index, person index within run)
    slices: Vec<(u32, u32)>,
    /// Per run, a bit per person index: set when that slice is its actor's
    /// only one, so the actor's events are that range of the run's columns.
    solo: Vec<Vec<u64>>,
    /// Actors whose events span several slices (runs, or persons joined
    /// after their events were written), ascending.
    multi: Vec<u32>,
    earliest: Option<i64>,
    events: usize,
}

impl Snapshot {
    pub(crate) fn build(
        dicts: Arc<Dicts>,
        identity: Arc<Identity>,
        groups: Arc<GroupData>,
        cohorts: Arc<Vec<CohortRecord>>,
        runs: Vec<Arc<Run>>,
        earliest: Option<i64>,
    ) -> Snapshot {
        let roots = identity.roots();
        // Count slices per canonical person, then lay them out (CSR).
        let mut count: Vec<u32> = vec![0; roots.len()];
        for run in &runs {
            for &p in &run.persons {
                count[roots[p as usize] as usize] += 1;
            }
        }
        let mut actors = Vec::new();
        let mut start_of: Vec<u32> = vec![u32::MAX; roots.len()];
        let mut next = 0u32;
        for (p, &c) in count.iter().enumerate() {
            if c > 0 {
                start_of[p] = next;
                actors.push(Slices {
                    person: p as u32,
                    start: next,
                    end: next + c,
                });
                next += c;
            }
        }
        let mut slices = vec![(0u32, 0u32); next as usize];
        let mut fill = start_of.clone();
        for (ri, run) in runs.iter().enumerate() {
            for (pi, &p) in run.persons.iter().enumerate() {
                let r = roots[p as usize] as usize;
                slices[fill[r] as usize] = (ri as u32, pi as u32);
                fill[r] += 1;
            }
        }
        let mut solo: Vec<Vec<u64>> = runs
            .iter()
            .map(|r| vec![0u64; r.persons.len().div_ceil(64)])
            .collect();
        let mut multi = Vec::new();
        for (ai, a) in actors.iter().enumerate() {
            if a.end - a.start == 1 {
                let (r, p) = slices[a.start as usize];
                solo[r as usize][p as usize / 64] |= 1 << (p % 64);
            } else {
                multi.push(ai as u32);
            }
        }
        let events = runs.iter().map(|r| r.len()).sum();
        Snapshot {
            inner: Arc::new(Inner {
                dicts,
                identity,
                groups,
                cohorts,
                runs,
                actors,
                slices,
                solo,
                multi,
                earliest,
                events,
            }),
        }
    }

    /// Read access to the dictionaries. Ids are append-only, so anything in
    /// this snapshot resolves.
    pub fn dicts(&self) -> &Dicts {
        &self.inner.dicts
    }

    /// Number of persons with at least one event.
    pub fn actor_count(&self) -> usize {
        self.inner.actors.len()
    }

    pub fn event_count(&self) -> usize {
        self.inner.events
    }

    pub fn run_count(&self) -> usize {
        self.inner.runs.len()
    }

    /// Earliest event timestamp ever stored (for `date_from: all`).
    pub fn earliest(&self) -> Option<i64> {
        self.inner.earliest
    }

    /// The canonical person id of actor `i`.
    pub fn actor_person(&self, i: usize) -> u32 {
        self.inner.actors[i].person
    }

    /// The runs, for queries that walk columns run by run (see
    /// [`Snapshot::is_solo`]).
    pub fn runs(&self) -> &[Arc<Run>] {
        &self.inner.runs
    }

    /// Whether person index `pi` of run `run` holds all the events of its
    /// actor: then the actor's events are `run.person_view(pi)`, and
    /// walking every run's solo persons plus [`Snapshot::multi_slice_actors`]
    /// visits every actor exactly once.
    #[inline]
    pub fn is_solo(&self, run: usize, pi: usize) -> bool {
        self.inner.solo[run][pi / 64] & (1 << (pi % 64)) != 0
    }

    /// [`Snapshot::is_solo`] of every person index of run `run`, as a
    /// bitmap (bit `pi % 64` of word `pi / 64`), for loops over many persons.
    #[inline]
    pub fn solo_bits(&self, run: usize) -> &[u64] {
        &self.inner.solo[run]
    }

    /// The actors (indices as in [`Snapshot::events_of`]) whose events span
    /// several slices, ascending.
    pub fn multi_slice_actors(&self) -> &[u32] {
        &self.inner.multi
    }

    /// The events of actor `i`, sorted by (timestamp, ingest order).
    /// `scratch` is used only when the person's events span several runs.
    pub fn events_of<'a>(&'a self, i: usize, scratch: &'a mut EventColumns) -> EventsView<'a> {
        let a = self.inner.actors[i];
        let sl = &self.inner.slices[a.start as usize..a.end as usize];
        if sl.len() == 1 {
            let (r, p) = sl[0];
            return self.inner.runs[r as usize].person_view(p as usize);
        }
        let views: Vec<EventsView<'_>> = sl
            .iter()
            .map(|&(r, p)| self.inner.runs[r as usize].person_view(p as usize))
            .collect();
        merge_views(&views, scratch);
        scratch.view()
    }

    pub fn person(&self, person: u32) -> &PersonData {
        self.inner.identity.person(person)
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn groups(&self) -> &GroupData {
        &self.inner.groups
    }

    pub fn cohorts(&self) -> &[CohortRecord] {
        &self.inner.cohorts
    }

    /// Every event in one run sorted by canonical person (compaction).
    pub fn merged_run(&self) -> Run {
        let mut out = RunBuilder::default();
        let mut scratch = EventColumns::new();
        for i in 0..self.actor_count() {
            out.push_person(self.actor_person(i), &self.events_of(i, &mut scratch));
        }
        out.finish()
    }
}
