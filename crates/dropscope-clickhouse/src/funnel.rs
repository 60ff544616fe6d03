//! The funnel in ClickHouse SQL, in three stages with fixed column contracts
//! so every query kind can build on them:
//!
//! * **Stage A — [`events_sql`]**: one row per event the funnel reads (date
//!   range, global filters, identity overrides applied), columns
//!   `actor String` (aggregation target; a person's canonical id in decimal),
//!   `person UInt64` (canonical person id), `part Array(String)` (partition:
//!   the breakdown value for attributions that run the funnel once per value
//!   — empty otherwise), `ts Int64` (ms), `seq UInt64` (ingest order),
//!   `mask UInt64` (bit k: the event may serve as step k in its
//!   partition), `fm UInt64` (bit k: matches step k — differs from `mask`
//!   only with `step` attribution, where an event of another value may not
//!   serve as step N but still counts as matching it for same-instant
//!   groups and strict clearing), `xmask UInt64` (bit j: matches
//!   exclusion j), `bd Array(String)` (the event's own breakdown values, for
//!   first/last-touch attribution; empty without breakdown).
//! * **Stage B — [`actors_sql`]**: one row per counted unit (actor and
//!   partition; with `counting: totals` one row per attempt), columns
//!   `actor`, `person`, `bd Array(String)` (the final breakdown value;
//!   empty for totals, which the engine tallies without breakdown),
//!   `amb UInt8` (≠ 0: the answer is refused — 1: an unordered funnel's
//!   event matches several steps, 2: more than 2^16 totals attempts),
//!   `lvl UInt32` (furthest step, 1-based: the engine's `furthest`),
//!   `times Array(Int64)` (length n: timestamp of each step of the counted
//!   path, 0 where not done), `start Int64` (= `times[1]`), `bits UInt64`
//!   (bit k: step k done — with optional steps not every step below `lvl`
//!   is done; counts are by bit, SEMANTICS rule 9), `pord_t Int64`,
//!   `pord_s UInt64` (the order in which the engine visits the actor's
//!   partitions, see `part_order_sql`). Actors removed by exclusions do not
//!   appear.
//! * **Stage C — [`steps_sql`]**: the steps view aggregated per breakdown
//!   value.

use std::fmt::Write as _;

use dropscope_core::query::FunnelOrder;

use crate::events::{events_sql, Part};
use crate::sql::quote_str;

/// Breakdown attribution supported here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    First,
    Last,
    /// The value is the partition (`part`, see `events::Part`).
    Part,
}

/// Everything the funnel SQL needs, already validated.
#[derive(Debug, Clone, Default)]
pub struct FunnelSpec {
    /// Boolean SQL per step.
    pub steps: Vec<String>,
    /// Boolean SQL over every event (global filters), if any.
    pub global: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub window_ms: i64,
    /// Event-property breakdown keys and attribution.
    pub breakdown: Option<(Vec<String>, Touch)>,
    /// Breakdown limit applied: these values keep their row, every other
    /// value is counted under `["Other"]`.
    pub keep: Option<Vec<Vec<String>>>,
    /// Funnel order (SEMANTICS rules 4, 6, 8).
    pub order: FunnelOrder,
    /// Stage A keeps every event in range, not only step and exclusion
    /// events (strict funnels, rule 6).
    pub keep_all: bool,
    /// Boolean SQL per exclusion (stage A's `xmask` bits).
    pub exclusions: Vec<String>,
    /// Per exclusion: (from_step, to_step), 0-based.
    pub excl_ranges: Vec<(usize, usize)>,
    /// Per step: may be skipped (rule 11).
    pub optional: Vec<bool>,
    /// Per step: max / min gap from the previous done step (ms).
    pub within: Vec<Option<i64>>,
    pub min_gap: Vec<Option<i64>>,
    /// `counting: totals`: one row per attempt (stage B).
    pub totals: bool,
    /// Stage A's data side: actors, breakdown values, partitions,
    /// first-time-for-user (`events.rs`).
    pub data: crate::events::DataSpec,
}

impl FunnelSpec {
    fn optional(&self, k: usize) -> bool {
        self.optional.get(k).copied().unwrap_or(false)
    }

    /// Bitmask of the exclusions active while an attempt sits at 0-based
    /// step `at`.
    pub(crate) fn active(&self, at: usize) -> u64 {
        self.excl_ranges
            .iter()
            .enumerate()
            .filter(|(_, &(from, to))| from <= at && at < to)
            .fold(0, |m, (j, _)| m | (1 << j))
    }
}

/// The first/last-touch breakdown value of an actor, over its sorted
/// events' breakdown values `B`: the first (last) event the funnel reads
/// with a non-empty value; the all-empty tuple when none has one. Empty for
/// partition attributions and without a breakdown.
pub(crate) fn attributed_sql(s: &FunnelSpec) -> String {
    let pick = match &s.breakdown {
        Some((_, Touch::First)) => "arrayFirst(b -> arrayExists(x -> x != '', b), B)",
        Some((_, Touch::Last)) => "arrayFirst(b -> arrayExists(x -> x != '', b), arrayReverse(B))",
        Some((_, Touch::Part)) | None => "emptyArrayString()",
    };
    let empty = match &s.breakdown {
        Some((keys, Touch::First | Touch::Last)) => {
            format!("[{}]", vec!["''"; keys.len()].join(", "))
        }
        _ => "emptyArrayString()".into(),
    };
    format!("if(length({pick} AS bd_raw) = 0, {empty}, bd_raw)")
}

/// The breakdown value an actor's row is counted under, over stage B's
/// per-actor columns `bdv` ([`attributed_sql`]) and `part`: the attributed
/// value for first/last touch, else the partition value (tagged, see
/// `events::Part`: the shown value drops the tag — one byte, or a cohort
/// listing's `<k>:`).
pub(crate) fn shown_bd_sql(s: &FunnelSpec) -> &'static str {
    if matches!(s.breakdown, Some((_, Touch::First | Touch::Last))) {
        "bdv"
    } else if matches!(s.data.part, Part::Cohorts(_)) {
        "arrayMap(x -> substring(x, position(x, ':') + 1), part)"
    } else {
        "arrayMap(x -> substring(x, 2), part)"
    }
}

/// Where the engine visits an actor's partition among its others
/// (`Plan::attributed`), over the sorted events `evs` of the partition
/// `part`: `all_events` in the order the values first appear, `step` N in
/// the order of the first step-N event carrying each value, cohorts in
/// the order listed. Two columns `pord_t Int64`, `pord_s UInt64` (compared
/// as a pair; constant with one partition per actor).
fn part_order_sql(s: &FunnelSpec) -> String {
    match &s.data.part {
        Part::None => "toInt64(0) AS pord_t, toUInt64(0) AS pord_s".to_string(),
        Part::Value => "evs[1].1 AS pord_t, evs[1].2 AS pord_s".to_string(),
        // Ordered and strict: the advance mask (`x.3`) has step N only on
        // events of the partition's value. Unordered keeps it on events of
        // other values that match other steps too: the value is compared
        // (`part` as an argument, not captured: 18.16 loses captured
        // subquery columns).
        Part::Step(n) if s.order == FunnelOrder::Unordered => format!(
            "arrayFirst((x, p_) -> bitTest(x.6, {n}) AND x.5 = p_, evs, \
             arrayResize([part], length(evs), part)) AS pord_e, pord_e.1 AS pord_t, pord_e.2 AS pord_s"
        ),
        Part::Step(n) => format!(
            "arrayFirst(x -> bitTest(x.3, {n}), evs) AS pord_e, pord_e.1 AS pord_t, pord_e.2 AS pord_s"
        ),
        Part::Cohorts(cs) => format!(
            "toInt64(indexOf([{}], part[1])) AS pord_t, toUInt64(0) AS pord_s",
            cs.iter()
                .map(|(v, _)| quote_str(v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Stage B: one row per counted actor (see the module docs).
pub fn actors_sql(db: &str, s: &FunnelSpec) -> String {
    let events = events_sql(db, s);
    let attributed = attributed_sql(s);
    let persons = format!(
        "SELECT actor, any(person) AS person, part, arraySort(groupArray((ts, seq, mask, xmask, bd, fm))) AS evs \
         FROM ({events}) GROUP BY actor, part"
    );
    let mut sql = format!(
        "SELECT actor, person, part, arrayMap(x -> x.1, evs) AS T, arrayMap(x -> x.3, evs) AS M, \
         arrayMap(x -> x.4, evs) AS X, arrayMap(x -> x.5, evs) AS B, arrayMap(x -> x.6, evs) AS F, {attributed} AS bdv, \
         {pord}, arrayEnumerate(T) AS I FROM ({persons})",
        pord = part_order_sql(s)
    );
    // One subquery per layer: ClickHouse expands aliases in place, so
    // each layer only refers to the previous layers' columns.
    let bd = if s.totals {
        // The engine tallies every attempt under one key (no breakdown).
        "emptyArrayString()"
    } else {
        shown_bd_sql(s)
    };
    if s.totals {
        sql = layered(sql, &["T", "M", "X", "B", "F", "I"], totals_layers(s));
        return format!(
            "SELECT actor, person, {bd} AS bd, amb, lvl, times, times[1] AS start, bits, pord_t, pord_s \
             FROM ({sql}) ARRAY JOIN TL AS lvl, TT AS times, TB AS bits"
        );
    }
    let layers = if s.order == FunnelOrder::Unordered {
        unordered_layers(s)
    } else {
        ordered_layers(s)
    };
    sql = layered(sql, &["T", "M", "X", "B", "F", "I"], layers);
    format!(
        "SELECT actor, person, {bd} AS bd, amb, lvl, times, times[1] AS start, bits, pord_t, pord_s \
         FROM ({sql}) WHERE lvl > 0"
    )
}

/// Rounds of pointer doubling over the totals attempt chain: actors with
/// more than 2^TOTALS_ROUNDS attempts are refused (`amb` = 2).
const TOTALS_ROUNDS: usize = 16;

/// `counting: totals` (`dropscope-engine/src/totals.rs`): one attempt open
/// at a time, re-entry after it completes, expires, is excluded or (strict)
/// interrupted. The attempt that would start at each first-step event is
/// followed step by step (`TR{k}`: status, current event, last step, close
/// event, step advanced, event used); `NX` = where the next attempt starts
/// after it. The attempts actually made are the chain from the first
/// first-step event, marked by pointer doubling (`J{r}` = NX applied 2^r
/// times). Excluded attempts are dropped; the others are one row each.
fn totals_layers(s: &FunnelSpec) -> Vec<String> {
    let n = s.steps.len();
    let w = s.window_ms;
    let strict = s.order == FunnelOrder::Strict;
    let lit = |v: Vec<i64>| {
        format!(
            "[{}]",
            v.iter()
                .map(|x| format!("toInt64({x})"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let act = lit((0..n).map(|a| s.active(a) as i64).collect());
    // Steps reachable from step `at`: the next ones up to the next required.
    let reach = lit((0..n)
        .map(|at| {
            let mut m = 0i64;
            let mut k = at + 1;
            while k < n {
                m |= 1 << k;
                if !s.optional(k) {
                    break;
                }
                k += 1;
            }
            m
        })
        .collect());
    let within = lit((0..n)
        .map(|k| s.within.get(k).copied().flatten().unwrap_or(-1))
        .collect());
    let min_gap = lit((0..n)
        .map(|k| s.min_gap.get(k).copied().flatten().unwrap_or(-1))
        .collect());
    let mut layers = vec![format!(
        "arrayMap(v -> toUInt64(v), {act}) AS ACT, arrayMap(v -> toUInt64(v), {reach}) AS RCH, \
         {within} AS WIN, {min_gap} AS MGP"
    )];
    // The step event e would advance an attempt at `at` to (-1: none).
    // (`atix` = at + 1, written as a literal when constant: ClickHouse
    // 18.16 mis-evaluates a constant expression used as an index inside
    // nested lambdas.)
    let sstar = |e: &str, atix: &str| {
        format!(
            "(toInt64(arrayFirstIndex(q_ -> bitTest(M[{e}], q_) AND bitTest(RCH[{atix}], q_), range({n}))) - 1)"
        )
    };
    let gap_ok = |e: &str, st: &str, lt: &str| {
        format!(
            "(WIN[{st} + 1] < 0 OR T[{e}] - {lt} <= WIN[{st} + 1]) AND (MGP[{st} + 1] < 0 OR T[{e}] - {lt} >= MGP[{st} + 1])"
        )
    };
    let first_status = if n == 1 { 1 } else { 0 };
    for k in 1..n {
        let (st, cur, at, ce) = if k == 1 {
            (
                format!("toUInt8({first_status})"),
                "toUInt32(i)".to_string(),
                "toInt64(0)".to_string(),
                "toUInt32(i)".to_string(),
            )
        } else {
            let p = format!("TR{}", k - 1);
            (
                format!("{p}[i].1"),
                format!("{p}[i].2"),
                format!("{p}[i].3"),
                format!("{p}[i].4"),
            )
        };
        let atix = if k == 1 {
            "1".to_string()
        } else {
            format!("({at} + 1)")
        };
        let decisive = if strict {
            format!("if({cur} < length(T), {cur} + 1, 0)")
        } else {
            format!(
                "arrayFirstIndex(j -> j > {cur} AND (T[j] - T[i] > {w} OR bitAnd(X[j], ACT[{atix}]) != 0 OR \
                 arrayElement(arrayMap(s_ -> s_ >= 0 AND {gj}, [{sj}]), 1)), I)",
                gj = gap_ok("j", "s_", &format!("T[{cur}]")),
                sj = sstar("j", &atix),
            )
        };
        layers.push(format!(
            "arrayMap(i -> if({st} != 0 OR NOT bitTest(M[i], 0), \
               tuple({st}, {cur}, {at}, {ce}, toInt64(-1), toUInt32(0)), \
               arrayElement(arrayMap(e -> arrayElement(arrayMap(s_ -> \
                 multiIf(e = 0, tuple(toUInt8(5), {cur}, {at}, {ce}, toInt64(-1), toUInt32(0)), \
                   T[e] - T[i] > {w}, tuple(toUInt8(2), {cur}, {at}, toUInt32(e), toInt64(-1), toUInt32(0)), \
                   bitAnd(X[e], ACT[{atix}]) != 0, tuple(toUInt8(3), {cur}, {at}, toUInt32(e), toInt64(-1), toUInt32(0)), \
                   s_ >= 0 AND {ge}, tuple(toUInt8(if(s_ = {last}, 1, 0)), toUInt32(e), s_, toUInt32(e), s_, toUInt32(e)), \
                   tuple(toUInt8(4), {cur}, {at}, toUInt32(e), toInt64(-1), toUInt32(0))), \
                 [if(e = 0, toInt64(-1), {se})]), 1), [{decisive}]), 1)), I) AS TR{k}",
            ge = gap_ok("e", "s_", &format!("T[{cur}]")),
            se = sstar("e", &atix),
            last = n - 1,
        ));
    }
    let (fst, fat, fce) = if n == 1 {
        (
            "toUInt8(1)".to_string(),
            "toInt64(0)".to_string(),
            "toUInt32(i)".to_string(),
        )
    } else {
        let p = format!("TR{}", n - 1);
        (
            format!("{p}[i].1"),
            format!("{p}[i].3"),
            format!("{p}[i].4"),
        )
    };
    layers.push(format!(
        "arrayMap(i -> {fst}, I) AS FS, arrayMap(i -> {fat}, I) AS FAT, arrayMap(i -> {fce}, I) AS FCE"
    ));
    layers.push(
        "arrayMap(i -> if(NOT bitTest(M[i], 0) OR FS[i] = 5, 0, \
           arrayFirstIndex(j -> bitTest(M[j], 0) AND (j > FCE[i] OR (j = FCE[i] AND (FS[i] = 2 OR FS[i] = 4))), I)), I) AS J0, \
         arrayFirstIndex(i -> bitTest(M[i], 0), I) AS S0"
            .to_string(),
    );
    layers.push("arrayMap(i -> i = S0, I) AS MK0".to_string());
    for r in 1..=TOTALS_ROUNDS {
        let p = r - 1;
        layers.push(format!(
            "arrayMap(u -> J{p}[J{p}[u]], I) AS J{r}, arrayMap(u -> J{p}[u], arrayFilter(u -> MK{p}[u], I)) AS TG{r}"
        ));
        layers.push(format!(
            "arrayMap(v -> MK{p}[v] OR has(TG{r}, v), I) AS MK{r}"
        ));
    }
    // Times of each step an attempt did: its start, then the events used.
    let mut times = vec!["T[i]".to_string()];
    for st in 1..n {
        let mut e = String::from("multiIf(");
        for k in 1..n {
            let _ = write!(e, "TR{k}[i].5 = {st}, T[TR{k}[i].6], ");
        }
        e.push_str("toInt64(0))");
        times.push(e);
    }
    let mut bits = String::from("toUInt64(1)");
    for k in 1..n {
        let _ = write!(
            bits,
            " + if(TR{k}[i].5 < 0, toUInt64(0), bitShiftLeft(toUInt64(1), toUInt64(TR{k}[i].5)))"
        );
    }
    layers.push(format!(
        "arrayFilter(i -> MK{last}[i] AND FS[i] != 3, I) AS CI, \
         toUInt8(if(S0 > 0 AND J{last}[S0] != 0, 2, 0)) AS amb",
        last = TOTALS_ROUNDS
    ));
    layers.push(format!(
        "arrayMap(i -> toUInt32(FAT[i] + 1), CI) AS TL, arrayMap(i -> [{times}], CI) AS TT, \
         arrayMap(i -> {bits}, CI) AS TB",
        times = times.join(", ")
    ));
    layers
}

/// Wraps `base` in one `SELECT *, <layer> FROM (...)` per layer. Columns
/// a layer's lambdas capture are also named in a `WHERE NOT ignore(...)`:
/// ClickHouse 18.16 drops subquery columns referenced only inside lambdas.
pub(crate) fn layered(mut sql: String, base: &[&str], layers: Vec<String>) -> String {
    let mut defined: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for layer in layers {
        let tokens: std::collections::HashSet<&str> = layer
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        let used: Vec<&str> = defined
            .iter()
            .map(String::as_str)
            .filter(|d| tokens.contains(d))
            .collect();
        let filter = if used.is_empty() {
            String::new()
        } else {
            format!(" WHERE NOT ignore({})", used.join(", "))
        };
        let names: Vec<String> = layer
            .split(" AS ")
            .skip(1)
            .filter_map(|rest| {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                (!name.is_empty()).then_some(name)
            })
            .collect();
        sql = format!("SELECT *, {layer} FROM ({sql}){filter}");
        defined.extend(names);
    }
    sql
}

/// Events matching several steps of an unordered funnel resolved per actor
/// (one subquery each); an actor with more is refused (`amb` = 1).
const UNORDERED_MULTI: usize = 8;

/// Unordered funnels (SEMANTICS rule 8, `dropscope-engine/src/unordered.rs`).
/// The queue of an event matching several steps depends on the history
/// (the step whose latest queued event is oldest): such events are
/// resolved one at a time, in order (`ST1`…`ST8`), at most
/// [`UNORDERED_MULTI`] per actor (`amb` = 1 beyond: refused).
///
/// Each step event ("entry") sits in its step's queue from its push until
/// the window slides past it (popped at `PE`: the first later event more
/// than the window after it) or an exclusion event clears the queues
/// (segments `XS`: exclusion events counted so far). The engine records
/// the number of non-empty queues before every pop, at completion (`C`:
/// the first entry after which every step has an entry within the window
/// in its segment) and after the last event; the first record with the
/// highest count is kept. A record's queues are described by (segment,
/// last index, lower bound (time, step)), so the count is the number of
/// steps among the entries it covers, and the times are the sorted
/// earliest entries per step.
fn unordered_layers(s: &FunnelSpec) -> Vec<String> {
    let n = s.steps.len();
    let w = s.window_ms;
    let full = (1u64 << n) - 1;
    // Entries covered by a record (seg, hi, lo time, lo step), over j.
    let covers = |seg: &str, hi: &str, lt: &str, ls: &str| {
        format!(
            "EN[j] AND XS[j] = {seg} AND j <= {hi} AND (T[j] > {lt} OR (T[j] = {lt} AND ST[j] >= {ls}))"
        )
    };
    let mask = |cond: &str| {
        format!("toUInt64(arrayReduce('groupBitOr', arrayFilter((m_, j) -> {cond}, MA, I)))")
    };
    let big = 1u64 << 31;
    let mut layers = group_layers();
    layers.extend([
        format!(
            "arrayMap(i -> X[i] = 0 AND M[i] != 0, I) AS EN, \
             arrayMap(m -> toInt64(arrayFirstIndex(k -> bitTest(m, k), range({n}))) - 1, M) AS ST0, \
             arrayCumSum(arrayMap(x -> x != 0, X)) AS XS"
        ),
        format!(
            "arrayFilter(i -> EN[i] AND bitAnd(M[i], M[i] - 1) != 0, I) AS MI, \
             toUInt8(length(MI) > {UNORDERED_MULTI}) AS amb"
        ),
    ]);
    // Events matching several steps, in order: the step whose latest queued
    // event (within the window, same segment) is oldest; empty queues first,
    // ties to the lowest step.
    for r in 1..=UNORDERED_MULTI {
        let p = r - 1;
        layers.push(format!(
            "arrayMap(i -> if(length(MI) >= {r} AND i = MI[{r}], \
               toInt64(arrayReduce('min', arrayMap(q -> \
                 if(arrayExists((t_, j) -> {qual}, T, I), \
                   (toUInt64(arrayReduce('max', arrayFilter((t_, j) -> {qual}, T, I))) + {off}) * 64, toUInt64(0)) + q, \
                 arrayFilter(q -> bitTest(M[i], q), range({n})))) % 64), \
               ST{p}[i]), I) AS ST{r}",
            qual = format!(
                "j < i AND EN[j] AND ST{p}[j] = q AND XS[j] = XS[i] AND T[i] - T[j] <= {w}"
            ),
            off = 1u64 << 50,
        ));
    }
    layers.extend([
        format!(
            "ST{UNORDERED_MULTI} AS ST, \
             arrayMap(i -> if(EN[i], bitShiftLeft(toUInt64(1), toUInt64(ST{UNORDERED_MULTI}[i])), toUInt64(0)), I) AS MA"
        ),
        format!(
            "arrayMap(i -> arrayFirstIndex(e -> e > i AND X[e] != 0, I), I) AS FX, \
             arrayMap(i -> arrayFirstIndex(e -> e > i AND T[e] - T[i] > {w}, I), I) AS PE, \
             arrayMap(i -> if(EN[i], {cm}, 0), I) AS CM",
            cm = mask("EN[j] AND XS[j] = XS[i] AND j <= i AND T[i] - T[j] <= {w}")
                .replace("{w}", &w.to_string())
        ),
        format!("arrayFirstIndex(c -> EN[c] AND CM[c] = {full}, I) AS C"),
        // Candidate records: pops, completion, the end.
        format!(
            "arrayFilter(i -> EN[i] AND PE[i] > 0 AND (FX[i] = 0 OR PE[i] <= FX[i]) AND (C = 0 OR PE[i] <= C), I) AS RI, \
             arrayConcat(arrayMap(i -> XS[i], RI), [XS[C]], [XS[length(T)]]) AS RSEG, \
             arrayConcat(arrayMap(i -> toInt64(PE[i]) - 1, RI), [toInt64(C)], [toInt64(length(T))]) AS RHI, \
             arrayConcat(arrayMap(i -> T[i], RI), [T[C] - {w}], [T[length(T)] - {w}]) AS RLT, \
             arrayConcat(arrayMap(i -> ST[i], RI), [toInt64(0)], [toInt64(0)]) AS RLS, \
             arrayConcat(arrayMap(i -> toUInt64(PE[i]) * {big} + toUInt64(G0[i]) * 32 + toUInt64(ST[i]), RI), \
               [toUInt64(C) * {big} + {big1}], [toUInt64({last})]) AS RK, \
             arrayConcat(arrayMap(i -> 1, RI), [C > 0], [C = 0 AND X[length(T)] = 0]) AS RV",
            big1 = big - 1,
            last = 1u64 << 62
        ),
        format!(
            "arrayMap((g, h, lt, ls, v) -> if(v, {cm}, 0), RSEG, RHI, RLT, RLS, RV) AS RM",
            cm = mask(&covers("g", "h", "lt", "ls"))
        ),
        format!("arrayMap(m -> arraySum(arrayMap(k -> bitTest(m, k), range({n}))), RM) AS RC, arrayReduce('max', RC) AS MC"),
        "arrayReduce('argMin', arrayEnumerate(RC), arrayMap((c, k) -> if(c = MC, k, toUInt64(-1)), RC, RK)) AS RB"
            .to_string(),
        {
            let cov = covers("RSEG[RB]", "RHI[RB]", "RLT[RB]", "RLS[RB]");
            let firsts: Vec<String> = (0..n)
                .map(|k| {
                    format!(
                        "arrayReduce('min', arrayFilter((t_, j) -> {cov} AND ST[j] = {k}, T, I))"
                    )
                })
                .collect();
            format!(
                "arrayFilter((f, k) -> bitTest(RM[RB], k), [{}], range({n})) AS FS, \
                 toUInt32(if(MC = 0, 0, MC)) AS lvl, \
                 arrayResize(arraySort(FS), {n}, toInt64(0)) AS times, \
                 toUInt64(bitShiftLeft(toUInt64(1), lvl) - 1) AS bits",
                firsts.join(", ")
            )
        },
    ]);
    layers
}

/// Timestamp groups of the sorted events: first index `G0`, last `GE`,
/// size `GS`, and `MX` = 1 when the group's events do not all match the
/// same steps and exclusions (SEMANTICS rule 5's "different steps").
fn group_layers() -> Vec<String> {
    vec![
        "arrayMap(i -> i = 1 OR T[i] != T[i - 1], I) AS NG, arrayCumSum(NG) AS GID, \
         arrayFilter(i -> NG[i] = 1, I) AS GF"
            .to_string(),
        "arrayMap(g -> GF[g], GID) AS G0, \
         arrayMap(g -> toUInt32(if(g = length(GF), toInt64(length(T)), toInt64(GF[g + 1]) - 1)), GID) AS GE"
            .to_string(),
        "arrayMap(i -> GE[i] - G0[i] + 1, I) AS GS, \
         arrayCumSum(arrayMap(i -> F[i] != F[G0[i]] OR X[i] != X[G0[i]], I)) AS DC"
            .to_string(),
        "arrayMap(i -> DC[GE[i]] != DC[G0[i]], I) AS MX".to_string(),
    ]
}

/// Ordered and strict funnels (SEMANTICS rules 4–7, 11 and the per-step
/// gaps), as the engine's state machine (`dropscope-engine/src/ordered.rs`)
/// runs them, computed slot by slot instead of event by event (ClickHouse
/// 18.16 has no fold over arrays).
///
/// The engine keeps one attempt per slot s (s = steps done, 1-based) and
/// processes (event, step) pairs in a fixed order. Every pair gets a key
/// (`UInt64`) in that order: an event `i` of a timestamp group whose events
/// all match the same steps and exclusions ("single") is processed alone,
/// slots from last to first, each slot's exclusion check before its
/// advance, the strict clearing last: advance to slot s at
/// `i*128 + 2(n-s) + 1`, exclusion check of slot L at `i*128 + 2(n-L-1)`,
/// clearing at `i*128 + 2n`. A "mixed" group (rule 5) runs step by step,
/// events in order: advance to slot s at `g*128 + (s-1)*size + (i-g)`
/// (g = the group's first index), without exclusions nor clearing.
///
/// Per slot s, in key order, the list of writes (`K{s}` keys, `S{s}`
/// starts, `L{s}` time of the last step done, `R{s}` rows used per step):
/// the occupant of slot k at key p is its latest write before p, unless a
/// strict clearing of slot k came after it. A pair (i, s) writes slot s
/// when event i matches step s-1 and the occupant O of slot s-1 (or of a
/// lower slot through empty optional slots) is within the window, not
/// excluded, has not used row i (mixed groups), respects the step's gaps,
/// and slot s does not already hold O's start. Exclusion hits `H{k}`: an
/// exclusion event active at slot k's step, within the window of slot k's
/// occupant, which has not moved on to slot k+1 (`RW{k+1}`: the occupant's
/// advances ignoring exclusions). The result is the furthest slot; its
/// first write that no later exclusion marks (rule 7: an excluded record is
/// replaced by a later clean one; when none is clean the actor is removed).
fn ordered_layers(s: &FunnelSpec) -> Vec<String> {
    let n = s.steps.len();
    let w = s.window_ms;
    let strict = s.order == FunnelOrder::Strict;
    let adv = |s_: usize, i: &str| {
        format!(
            "if(MX[{i}], toUInt64(G0[{i}]) * 128 + {a} * toUInt64(GS[{i}]) + toUInt64({i} - G0[{i}]), toUInt64({i}) * 128 + {b})",
            a = s_ - 1,
            b = 2 * (n - s_) + 1
        )
    };
    let mut layers = group_layers();
    let mut out = String::new();
    for sl in 2..=n {
        let _ = write!(out, "arrayMap(i -> {}, I) AS P{sl}, ", adv(sl, "i"));
    }
    let xkey = |l: usize, x: &str| format!("(toUInt64({x}) * 128 + {})", 2 * (n - l - 1));
    // Last strict clearing of slot k before key p.
    let lastclear = |k: usize, p: &str| format!("C{k}[arrayCount(y_ -> y_ < {p}, C{k})]");
    // The occupant of slot k at key p (index into its writes, 0 = empty).
    let occ = |k: usize, p: &str| {
        let cleared = if strict {
            format!(" AND K{k}[c_] > {}", lastclear(k, p))
        } else {
            String::new()
        };
        format!("arrayElement(arrayMap(c_ -> if(c_ > 0{cleared}, c_, 0), [arrayCount(kk_ -> kk_ < {p}, K{k})]), 1)")
    };
    let has_hits = |k: usize| k >= 1 && k < n && s.active(k - 1) != 0;
    if strict {
        for k in 1..=n {
            let _ = write!(
                out,
                "arrayMap(j -> toUInt64(j) * 128 + {c}, arrayFilter(j -> NOT MX[j] AND NOT bitTest(F[j], {b}), I)) AS C{k}, ",
                c = 2 * n,
                b = k - 1
            );
        }
    }
    out.push_str("arrayCumSum(arrayMap(m -> bitAnd(m, 1), M)) AS B0");
    layers.push(std::mem::take(&mut out));
    // Slot 1: first-step events, one per timestamp.
    let zeros = ", toUInt32(0)".repeat(n - 1);
    let _ = write!(
        out,
        "arrayFilter(i -> bitTest(M[i], 0) AND B0[i - 1] = B0[G0[i] - 1], I) AS WI1, \
         arrayMap(i -> {a1}, WI1) AS K1, arrayMap(i -> T[i], WI1) AS S1, arrayMap(i -> T[i], WI1) AS L1, \
         arrayMap(i -> [toUInt32(i){zeros}], WI1) AS R1",
        a1 = adv(1, "i"),
    );
    layers.push(std::mem::take(&mut out));
    for sl in 2..=n {
        let st = sl - 1; // 0-based step done by this slot
                         // Source slots: sl-1, then lower ones through optional steps.
        let mut srcs = vec![sl - 1];
        let mut k = sl - 1;
        while k >= 2 && s.optional(k - 1) {
            k -= 1;
            srcs.push(k);
        }
        for &k in &srcs {
            let _ = write!(
                out,
                "arrayMap(i -> if(bitTest(M[i], {st}), {}, 0), I) AS O{sl}_{k}, ",
                occ(k, &format!("P{sl}[i]"))
            );
        }
        // Separate subqueries: an alias used only inside another alias's
        // lambdas is mis-evaluated when the outer query prunes columns.
        layers.push(std::mem::take(&mut out).trim_end_matches(", ").to_string());
        let cond = |k: usize, excl: bool| {
            let o = format!("O{sl}_{k}[i]");
            let mut c = format!(
                "T[i] - S{k}[{o}] <= {w} AND (MX[i] = 0 OR NOT has(R{k}[{o}], toUInt32(i)))"
            );
            if let Some(wi) = s.within.get(st).copied().flatten() {
                let _ = write!(c, " AND T[i] - L{k}[{o}] <= {wi}");
            }
            if let Some(g) = s.min_gap.get(st).copied().flatten() {
                let _ = write!(c, " AND T[i] - L{k}[{o}] >= {g}");
            }
            if excl && has_hits(k) {
                let _ = write!(
                    c,
                    " AND H{k}[arrayCount(y_ -> y_ < P{sl}[i], H{k})] <= K{k}[{o}]"
                );
            }
            c
        };
        // Hits of slot sl-1 need its occupant's raw advances to slot sl.
        if has_hits(sl - 1) {
            let k = sl - 1;
            let _ = write!(
                out,
                "arrayMap(i -> P{sl}[i], arrayFilter(i -> O{sl}_{k}[i] > 0 AND {}, I)) AS RW{sl}, ",
                cond(k, false)
            );
            let xk = xkey(k, "x_");
            let lc_next = if strict {
                lastclear(sl, &xk)
            } else {
                "toUInt64(0)".into()
            };
            let _ = write!(
                out,
                "arrayMap(x_ -> {xk}, arrayFilter(x_ -> MX[x_] = 0 AND bitAnd(X[x_], {act}) != 0 AND \
                 arrayElement(arrayMap(o_ -> o_ > 0 AND T[x_] - S{k}[o_] <= {w} AND \
                 RW{sl}[arrayCount(y_ -> y_ < {xk}, RW{sl})] <= greatest(K{k}[o_], {lc_next}), [{occ}]), 1), I)) AS H{k}, ",
                act = s.active(k - 1),
                occ = occ(k, &xk),
            );
        }
        if !out.is_empty() {
            layers.push(std::mem::take(&mut out).trim_end_matches(", ").to_string());
        }
        let sel = |f: &dyn Fn(usize) -> String, default: &str| {
            let mut e = String::from("multiIf(");
            for &k in &srcs {
                let _ = write!(e, "O{sl}_{k}[i] > 0, {}, ", f(k));
            }
            let _ = write!(e, "{default})");
            e
        };
        let _ = write!(
            out,
            "arrayFilter(i -> {}, I) AS QI{sl}, ",
            sel(&|k| cond(k, true), "0")
        );
        let _ = write!(
            out,
            "arrayMap(i -> {}, I) AS SS{sl}, ",
            sel(&|k| format!("S{k}[O{sl}_{k}[i]]"), "toInt64(0)")
        );
        let _ = write!(
            out,
            "arrayMap(i -> {}, I) AS SR{sl}, ",
            sel(&|k| format!("R{k}[O{sl}_{k}[i]]"), "emptyArrayUInt32()")
        );
        // A write is skipped while slot sl holds the same start: the
        // previous candidate had the same start and no clearing came since.
        let clear = if strict {
            format!(
                " OR {} > P{sl}[QI{sl}[c_ - 1]]",
                lastclear(sl, &format!("P{sl}[i]"))
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "arrayFilter((i, c_) -> c_ = 1 OR SS{sl}[QI{sl}[c_ - 1]] != SS{sl}[i]{clear}, QI{sl}, arrayEnumerate(QI{sl})) AS WI{sl}, \
             arrayMap(i -> P{sl}[i], WI{sl}) AS K{sl}, arrayMap(i -> SS{sl}[i], WI{sl}) AS S{sl}, \
             arrayMap(i -> T[i], WI{sl}) AS L{sl}, \
             arrayMap(i -> arrayMap((r_, q_) -> if(q_ = {sl}, toUInt32(i), r_), SR{sl}[i], arrayEnumerate(SR{sl}[i])), WI{sl}) AS R{sl}"
        );
        layers.push(std::mem::take(&mut out));
    }
    // The first write of each slot that no later exclusion marks.
    for sl in 1..=n {
        let act = if sl < n { s.active(sl - 1) } else { 0 };
        if act == 0 {
            let _ = write!(out, "if(length(K{sl}) > 0, 1, 0) AS FC{sl}, ");
            continue;
        }
        let xk = xkey(sl, "x_");
        let _ = write!(
            out,
            "arrayFirstIndex(j_ -> NOT arrayExists(x_ -> MX[x_] = 0 AND bitAnd(X[x_], {act}) != 0 AND {xk} > K{sl}[j_] \
             AND T[x_] - S{sl}[j_] <= {w} AND {occ} > 0, I), arrayEnumerate(K{sl})) AS FC{sl}, ",
            occ = occ(sl, &xk)
        );
    }
    let mut bs = String::from("multiIf(");
    let mut br = String::from("multiIf(");
    for sl in (1..=n).rev() {
        let _ = write!(bs, "length(K{sl}) > 0, {sl}, ");
        let _ = write!(br, "BS = {sl}, R{sl}[FC{sl}], ");
    }
    bs.push_str("0)");
    br.push_str("emptyArrayUInt32())");
    let _ = write!(
        out,
        "toUInt8(0) AS amb, {bs} AS BS, {br} AS BR, toUInt32(if(length(BR) = 0, 0, BS)) AS lvl, \
         arrayMap(r_ -> if(r_ = 0, toInt64(0), T[r_]), BR) AS times, \
         toUInt64(arraySum(arrayMap((r_, q_) -> if(r_ = 0, 0, bitShiftLeft(toUInt64(1), q_ - 1)), BR, arrayEnumerate(BR)))) AS bits"
    );
    layers.push(out);
    layers
}

/// The conversion curve's observations, aggregated per duration: columns
/// `ms` (Int64: entry to conversion, or to censoring — the end of the
/// range for units still inside their window, else the window's end),
/// `ev` (converted units), `cens` (censored units). Kaplan–Meier runs on
/// these counts (`dropscope_engine::funnel` runs it per unit).
pub fn curve_sql(db: &str, s: &FunnelSpec) -> String {
    let n = s.steps.len();
    let w = s.window_ms;
    let to = s.to_ms;
    format!(
        "SELECT ms, sum(conv) AS ev, sum(1 - conv) AS cens FROM (\
         SELECT lvl >= {n} AS conv, if(conv, times[{n}] - start, \
         greatest(if(start + {w} >= {to}, toInt64({to}), start + {w}) - start, 0)) AS ms \
         FROM ({actors})) GROUP BY ms ORDER BY ms FORMAT JSON",
        actors = actors_sql(db, s)
    )
}

/// Stage C, the steps view. Output columns per row (one row per breakdown
/// value, plus `totals` with a breakdown): `bd`, then per 0-based step `k`:
/// `c{k}` (actors), and for k ≥ 1 `n{k}` (positive gaps), `avg{k}`, `med{k}`
/// (seconds), `ip{k}` (in progress); and `amb` (max over actors).
pub fn steps_sql(db: &str, s: &FunnelSpec) -> String {
    let n = s.steps.len();
    let w = s.window_ms;
    let actors = actors_sql(db, s);
    let mut cols = match &s.keep {
        Some(keep) => {
            let list: Vec<String> = keep
                .iter()
                .map(|v| {
                    format!(
                        "[{}]",
                        v.iter()
                            .map(|x| quote_str(x))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            format!("if(has([{}], b0), b0, ['Other']) AS bd", list.join(", "))
        }
        None => String::from("b0 AS bd"),
    };
    cols.push_str(", max(amb) AS amb");
    for k in 0..n {
        let _ = write!(cols, ", countIf(bitTest(bits, {k})) AS c{k}");
        if k == 0 {
            continue;
        }
        // Gap from the previous step done (optional steps may be skipped).
        let mut prev = String::from("multiIf(");
        for j in (0..k).rev() {
            let _ = write!(prev, "bitTest(bits, {j}), times[{}], ", j + 1);
        }
        prev.push_str("toInt64(0))");
        let g = format!("(times[{r}] - {prev})", r = k + 1);
        let cond = format!("bitTest(bits, {k}) AND {g} > 0");
        let _ = write!(
            cols,
            ", countIf({cond}) AS n{k}, avgIf({g} / 1000, {cond}) AS avg{k}, \
             if(length(arraySort(groupArrayIf({g}, {cond})) AS s{k}) = 0, 0, \
             if(length(s{k}) % 2 = 1, toFloat64(s{k}[intDiv(length(s{k}) + 1, 2)]), \
             (s{k}[intDiv(length(s{k}), 2)] + s{k}[intDiv(length(s{k}), 2) + 1]) / 2) / 1000) AS med{k}, \
             countIf(lvl = {k} AND start + {w} >= {to}) AS ip{k}",
            to = s.to_ms
        );
    }
    // With a breakdown, every actor is counted twice: under its value
    // (`tot` = 0) and in the totals row (`tot` = 1, an empty value). Not
    // `WITH TOTALS`: current releases print an empty result's totals out of
    // order in JSON (chDB 4.4), and this is one pass over the actors too.
    let (tot, b0, by) = if s.breakdown.is_some() {
        (
            "tot, ",
            "arrayJoin([0, 1]) AS tot, arrayFilter(x -> tot = 0, bd)",
            "tot, bd",
        )
    } else {
        ("", "bd", "bd")
    };
    format!(
        "SELECT {tot}{cols} FROM (SELECT {b0} AS b0, amb, lvl, times, start, bits FROM ({actors})) \
         GROUP BY {by} FORMAT JSON"
    )
}

/// Splits the answer of [`steps_sql`] into the shape of `WITH TOTALS`:
/// `data` holds the rows per breakdown value, `totals` the row over every
/// actor (absent when no actor entered, or without a breakdown).
pub fn split_totals(mut r: serde_json::Value) -> serde_json::Value {
    let rows = r["data"].as_array().cloned().unwrap_or_default();
    let (totals, data): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|row| row["tot"].as_u64() == Some(1));
    r["data"] = serde_json::Value::Array(data);
    if let Some(t) = totals.into_iter().next() {
        r["totals"] = t;
    }
    r
}
