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
