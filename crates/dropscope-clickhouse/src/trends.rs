//! Funnel trends (SEMANTICS rule 15), its own stage on top of stage A.
//!
//! Per actor, events sorted by (time, ingest order); for each first-step
//! event (an entry) the greedy chain of later events (strictly after the
//! previous step's event, each step once, within the window of the entry)
//! up to `to_step`. A bucket's outcome is the best chain among the entries
//! in that bucket: converted when one reaches `to_step`, entered when one
//! reaches `from_step` — what the engine's per-bucket state machine keeps
//! (one attempt per bucket, latest entry at each level). Buckets are the
//! engine's own (`dropscope_core::time::buckets`, project timezone), sent
//! as an array: an entry's bucket is the number of bucket starts ≤ its
//! time. ClickHouse returns (breakdown value, bucket, entered, converted)
//! and, for trend persons, one page of actors.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dropscope_core::query::FunnelQuery;
use dropscope_core::result::{PersonsResult, TrendsResult};
use dropscope_core::time::{bucket_start, buckets, parse_instant, parse_tz, DateRange};
use dropscope_core::QueryError;
use dropscope_engine::trends::{check_buckets, series_result, trend_rows, Buckets};
use serde_json::Value;

use crate::dispatch::spec_of;
use crate::events::events_sql;
use crate::funnel::FunnelSpec;
use crate::ClickHouse;

/// Per actor (and partition): sorted events `T`, `M`, `B`, the attributed
/// breakdown value `bdv`, `amb`.
fn actors_events_sql(db: &str, s: &FunnelSpec, unordered: bool) -> String {
    let events = events_sql(db, s);
    // The actor's value: attributed (first/last touch) or its partition's.
    let attributed = match crate::funnel::shown_bd_sql(s) {
        "bdv" => crate::funnel::attributed_sql(s),
        part => part.to_string(),
    };
    let persons = format!(
        "SELECT actor, any(person) AS person, part, arraySort(groupArray((ts, seq, mask, bd, xmask))) AS evs, \
         arrayMap(x -> x.1, evs) AS T, arrayMap(x -> x.3, evs) AS M, arrayMap(x -> x.4, evs) AS B, \
         arrayMap(x -> x.5, evs) AS X, \
         {attributed} AS bdv, \
         toUInt8({amb}) AS amb FROM ({events}) GROUP BY actor, part",
        amb = if unordered {
            "arrayExists(m -> bitAnd(m, m - 1) != 0, M)"
        } else {
            "0"
        }
    );
    persons
}

/// One row per (actor, bucket with an entry): `actor`, `person`, `bd`,
/// `bucket` (1-based index into `starts`), `lvl` (best chain, 1-based,
/// capped at `to + 1`; unordered: most distinct steps), `amb` (unordered: an
/// event matching several steps).
fn buckets_sql(
    db: &str,
    s: &FunnelSpec,
    (from, to): (usize, usize),
    starts: &[i64],
    unordered: bool,
) -> String {
    let w = s.window_ms;
    let persons = actors_events_sql(db, s, unordered);
    let starts_lit: Vec<String> = starts.iter().map(|b| format!("toInt64({b})")).collect();
    let starts_lit = starts_lit.join(", ");
    if !s.exclusions.is_empty() {
        return if unordered {
            unordered_exclusions_sql(s, &persons, &starts_lit)
        } else {
            ordered_exclusions_sql(s, &persons, (from, to), &starts_lit)
        };
    }
    if unordered {
        // Every step event is an entry; its result is the number of
        // distinct steps among the events from it (in (time, ingest)
        // order) within its window: the engine's queues never slide
        // there. An event matching several steps (the queue choice) is
        // flagged `amb` and refused.
        let popcount: Vec<String> = (0..s.steps.len())
            .map(|k| format!("(bitAnd(orm, toUInt64({})) != 0)", 1u64 << k))
            .collect();
        let entries = format!(
            "SELECT actor, person, part, bdv, amb, i0, \
             arrayReduce('groupBitOr', arrayFilter((m, t, j) -> j >= i0 AND t - T[i0] <= {w}, M, T, arrayEnumerate(M))) AS orm, \
             toUInt32({pop}) AS lvl, arrayCount(b -> b <= T[i0], [{starts_lit}]) AS bucket \
             FROM ({persons}) ARRAY JOIN arrayFilter(i -> M[i] != 0, arrayEnumerate(M)) AS i0",
            pop = popcount.join(" + ")
        );
        return format!(
            "SELECT actor, any(person) AS person, any(bdv) AS bd, bucket, max(lvl) AS lvl, max(amb) AS amb \
             FROM ({entries}) GROUP BY actor, part, bucket"
        );
    }
    let mut chain = String::from("i0");
    let mut level = String::from("1");
    for k in 1..=to {
        let prev = format!("i{}", k - 1);
        let _ = write!(
            chain,
            ", if({prev} = 0, 0, arrayFirstIndex((t, m, j) -> bitAnd(m, toUInt64({bit})) != 0 AND j > {prev} AND t - T[i0] <= {w}, T, M, arrayEnumerate(T))) AS i{k}",
            bit = 1u64 << k,
        );
        let _ = write!(level, " + (i{k} != 0)");
    }
    let entries = format!(
        "SELECT actor, person, part, bdv, amb, {chain}, toUInt32({level}) AS lvl, \
         arrayCount(b -> b <= T[i0], [{starts}]) AS bucket \
         FROM ({persons}) ARRAY JOIN arrayFilter(i -> bitAnd(M[i], toUInt64(1)) != 0, arrayEnumerate(M)) AS i0",
        starts = starts_lit
    );
    format!(
        "SELECT actor, any(person) AS person, any(bdv) AS bd, bucket, max(lvl) AS lvl, max(amb) AS amb \
         FROM ({entries}) GROUP BY actor, part, bucket"
    )
}

/// Full exclusions one actor may have in ordered funnel trends with
/// exclusions; beyond, the answer is refused (`amb` = 3).
pub(crate) const EPOCHS: usize = 4;

/// "Never": larger than any event index.
const INF: &str = "toUInt32(4294967295)";

/// Ordered funnel trends with exclusions (the engine's `actor_buckets`),
/// same output as [`buckets_sql`] (`lvl` is `to + 1` for a converted
/// bucket, `from + 1` for an entered one, else 0).
///
/// Between two full exclusions (an "epoch": the first starts at the first
/// event, each next one at the event of a full exclusion, which clears
/// every open bucket) the engine's per-bucket slots hold what the greedy
/// chains of the bucket's entries say (`CH{k}[q]`: the event that takes
/// entry q from step k-1 to step k; the occupant of a slot is the latest
/// writer, and a chain displaced from a slot runs on with its displacer's
/// events). An exclusion marks the occupant of slot L when it comes after
/// the slot's last write; the occupant's next advance is then a full
/// exclusion instead. So in an epoch, entry q's advance from slot L at
/// event e = `CH{L}[q]` is a full exclusion iff an exclusion active at L
/// lies in (last write of the bucket's slot L before e, e]. A bucket
/// converts at its first clean advance to `to`; its later entries are
/// ignored, in later epochs too (`CB`: converted buckets). The epoch ends
/// at the first full exclusion of a bucket not converted before it;
/// conversions up to that event stay, everything else restarts. At most
/// [`EPOCHS`] epochs end early (`amb` = 3 beyond); the last one's entries
/// decide which unconverted buckets were entered.
fn ordered_exclusions_sql(
    s: &FunnelSpec,
    persons: &str,
    (from, to): (usize, usize),
    starts: &str,
) -> String {
    let w = s.window_ms;
    let mut layers = vec![
        "arrayEnumerate(T) AS I".to_string(),
        format!(
            "arrayFilter(i -> bitTest(M[i], 0), I) AS EI, arrayEnumerate(EI) AS QI, \
         arrayMap(i -> toUInt32(arrayCount(b -> b <= T[i], [{starts}])), EI) AS BK, \
         arrayMap(i -> toUInt32(i), EI) AS CH0, toUInt32(1) AS C1, emptyArrayUInt32() AS CB1"
        ),
    ];
    // Levels L (1-based slot, 1..=to) where some exclusion is active, and
    // the running count of those exclusion events.
    let levels: Vec<(usize, u64)> = (1..=to)
        .map(|l| (l, s.active(l - 1)))
        .filter(|(_, a)| *a != 0)
        .collect();
    let mut xc = Vec::new();
    for (l, act) in &levels {
        xc.push(format!(
            "arrayCumSum(arrayMap(x -> toUInt32(bitAnd(x, toUInt64({act})) != 0), X)) AS XC{l}"
        ));
    }
    if !xc.is_empty() {
        layers.push(xc.join(", "));
    }
    for k in 1..=to {
        layers.push(format!(
            "arrayMap((i0, p) -> if(p = 0, toUInt32(0), toUInt32(arrayFirstIndex((t, m, j) -> \
             bitTest(m, {k}) AND j > p AND t - T[i0] <= {w}, T, M, I))), EI, CH{p}) AS CH{k}",
            p = k - 1
        ));
    }
    for r in 1..=EPOCHS {
        layers.push(format!(
            "arrayMap((i0, bk) -> i0 >= C{r} AND NOT has(CB{r}, bk), EI, BK) AS V{r}"
        ));
        // Full exclusion candidates per level.
        let mut bads = Vec::new();
        for (l, _) in &levels {
            bads.push(format!(
                "arrayMap(q -> V{r}[q] AND CH{l}[q] != 0 AND XC{l}[CH{l}[q]] > XC{l}[arrayReduce('max', \
                 arrayMap(q2 -> if(V{r}[q2] AND BK[q2] = BK[q] AND CH{p}[q2] != 0 AND CH{p}[q2] < CH{l}[q], \
                 CH{p}[q2], toUInt32(0)), QI))], QI) AS BAD{r}_{l}",
                p = l - 1
            ));
        }
        if !bads.is_empty() {
            layers.push(bads.join(", "));
        }
        let clean_conv = if levels.iter().any(|(l, _)| *l == to) {
            format!(" AND NOT BAD{r}_{to}[q2]")
        } else {
            String::new()
        };
        layers.push(format!(
            "arrayMap(q -> arrayReduce('min', arrayMap(q2 -> if(V{r}[q2] AND BK[q2] = BK[q] AND CH{to}[q2] != 0{clean_conv}, \
             CH{to}[q2], {INF}), QI)), QI) AS EC{r}"
        ));
        let mut fulls = vec![format!("[{INF}]")];
        for (l, _) in &levels {
            fulls.push(format!(
                "arrayMap(q -> if(BAD{r}_{l}[q] AND CH{l}[q] < EC{r}[q], CH{l}[q], {INF}), QI)"
            ));
        }
        layers.push(format!(
            "arrayReduce('min', arrayConcat({})) AS F{r}",
            fulls.join(", ")
        ));
        layers.push(format!(
            "arrayConcat(CB{r}, arrayFilter((bk, ec) -> ec != {INF} AND ec <= F{r}, BK, EC{r})) AS CB{n}, \
             if(F{r} = {INF}, C{r}, F{r}) AS C{n}",
            n = r + 1
        ));
    }
    let last = EPOCHS;
    let reached = if from == 0 {
        "1".to_string()
    } else {
        format!("CH{from}[q] != 0")
    };
    layers.push(format!(
        "toUInt8(if(F{last} != {INF}, 3, 0)) AS xamb, \
         arrayMap(q -> toUInt32(if(has(CB{n}, BK[q]), {conv}, if(V{last}[q] AND {reached}, {ent}, 0))), QI) AS LV",
        n = last + 1,
        conv = to + 1,
        ent = from + 1,
    ));
    let sql = crate::funnel::layered(persons.to_string(), &["T", "M", "X"], layers);
    format!(
        "SELECT actor, any(person) AS person, any(bdv) AS bd, bucket, max(lvl) AS lvl, \
         max(greatest(amb, xamb)) AS amb FROM \
         (SELECT actor, person, part, bdv, amb, xamb, lvl, bucket FROM ({sql}) \
          ARRAY JOIN LV AS lvl, BK AS bucket) \
         GROUP BY actor, part, bucket"
    )
}

/// Unordered funnel trends with exclusions (the engine's
/// `unordered_buckets`): from each step event (an entry) the unordered
/// walk over its window, where an exclusion event clears every queue
/// without recording. Inside one entry's window no queued event slides
/// out, so the walk records only at completion (every step among the
/// events of one stretch between exclusions) or at the end: the entry's
/// result is every step when a stretch completes, else the number of
/// distinct steps after the window's last exclusion. An event matching
/// several steps is flagged `amb` (refused), as without exclusions.
fn unordered_exclusions_sql(s: &FunnelSpec, persons: &str, starts: &str) -> String {
    let w = s.window_ms;
    let n = s.steps.len();
    let full = (1u64 << n) - 1;
    let pop = |m: &str| {
        (0..n)
            .map(|k| format!("(bitAnd({m}, toUInt64({})) != 0)", 1u64 << k))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let entries = format!(
        "SELECT actor, person, part, bdv, amb, i0, \
         arrayFilter((x, t, j) -> j >= i0 AND t - T[i0] <= {w}, XS, T, arrayEnumerate(T)) AS WS, \
         arrayFilter((m, x, t, j) -> x = 0 AND j >= i0 AND t - T[i0] <= {w}, M, X, T, arrayEnumerate(T)) AS WM, \
         arrayFilter((xs, x, t, j) -> x = 0 AND j >= i0 AND t - T[i0] <= {w}, XS, X, T, arrayEnumerate(T)) AS WG, \
         arrayExists(g -> arrayReduce('groupBitOr', arrayFilter((m, h) -> h = g, WM, WG)) = toUInt64({full}), WG) AS done, \
         arrayReduce('groupBitOr', arrayFilter((m, h) -> h = WS[length(WS)], WM, WG)) AS orm, \
         toUInt32(if(done, {n}, {p})) AS lvl, arrayCount(b -> b <= T[i0], [{starts}]) AS bucket \
         FROM (SELECT *, arrayCumSum(arrayMap(x -> x != 0, X)) AS XS FROM ({persons}) WHERE NOT ignore(T, M, X, XS)) \
         ARRAY JOIN arrayFilter(i -> M[i] != 0, arrayEnumerate(M)) AS i0",
        p = pop("orm")
    );
    format!(
        "SELECT actor, any(person) AS person, any(bdv) AS bd, bucket, max(lvl) AS lvl, max(amb) AS amb \
         FROM ({entries}) GROUP BY actor, part, bucket"
    )
}

struct Ctx {
    spec: FunnelSpec,
    unordered: bool,
    from: usize,
    to: usize,
    starts: Vec<i64>,
    interval: dropscope_core::query::Interval,
    tz: chrono_tz::Tz,
}

fn ctx(ch: &ClickHouse, q: &FunnelQuery, range: DateRange) -> Result<Ctx, QueryError> {
    let spec = spec_of(ch, q, range, true)?;
    let n = spec.steps.len();
    let interval = q.interval.unwrap_or_default();
    let tz = parse_tz(q.timezone.as_deref())?;
    check_buckets(range, interval, tz)?;
    Ok(Ctx {
        unordered: q.order == dropscope_core::query::FunnelOrder::Unordered,
        from: q.from_step.unwrap_or(0),
        to: q.to_step.unwrap_or(n - 1),
        starts: buckets(range, interval, tz),
        spec,
        interval,
        tz,
    })
}

/// Runs a funnel trends query.
pub fn run(ch: &ClickHouse, q: &FunnelQuery, range: DateRange) -> Result<TrendsResult, QueryError> {
    let c = ctx(ch, q, range)?;
    if c.starts.is_empty() {
        return Ok(if c.spec.breakdown.is_some() {
            series_result(Vec::new(), None, &[], c.interval, c.tz)
        } else {
            TrendsResult::default()
        });
    }
    let r = ch
        .select_json(&format!(
            "SELECT bd, bucket, countIf(lvl >= {f}) AS entered, countIf(lvl >= {t}) AS conv, max(amb) AS amb \
             FROM ({b}) GROUP BY bd, bucket FORMAT JSON",
            f = c.from + 1,
            t = c.to + 1,
            b = buckets_sql(ch.database(), &c.spec, (c.from, c.to), &c.starts, c.unordered)
        ))
        .map_err(QueryError::Backend)?;
    let mut by_value: Vec<(Value, Buckets)> = Vec::new();
    if c.spec.breakdown.is_some() {
        // Every actor the funnel reads has a series, entries or not (as
        // the engine).
        let r = ch
            .select_json(&format!(
                "SELECT DISTINCT bdv FROM ({}) FORMAT JSON",
                actors_events_sql(ch.database(), &c.spec, c.unordered)
            ))
            .map_err(QueryError::Backend)?;
        for row in r["data"].as_array().into_iter().flatten() {
            by_value.push((crate::bd_output(q, &row["bdv"]), BTreeMap::new()));
        }
    }
    for row in r["data"].as_array().into_iter().flatten() {
        refuse_amb(c.unordered, &row["amb"])?;
        let entered = row["entered"].as_u64().unwrap_or(0);
        if entered == 0 {
            continue;
        }
        let i = row["bucket"].as_u64().unwrap_or(0) as usize;
        let Some(&b) = c.starts.get(i.wrapping_sub(1)) else {
            continue;
        };
        let v = crate::bd_output(q, &row["bd"]);
        let conv = row["conv"].as_u64().unwrap_or(0);
        match by_value.iter_mut().find(|(x, _)| *x == v) {
            Some((_, m)) => {
                m.insert(b, (entered, conv));
            }
            None => by_value.push((v, BTreeMap::from([(b, (entered, conv))]))),
        }
    }
    if c.spec.breakdown.is_none() {
        let m = by_value.into_iter().next().map(|(_, m)| m);
        return Ok(TrendsResult {
            rows: trend_rows(&c.starts, m.as_ref(), c.interval, c.tz),
            series: None,
        });
    }
    let limit = q.breakdown.as_ref().and_then(|b| b.limit);
    Ok(series_result(by_value, limit, &c.starts, c.interval, c.tz))
}

/// Refuses an answer with an actor flagged `amb`.
fn refuse_amb(unordered: bool, amb: &Value) -> Result<(), QueryError> {
    if unordered && amb.as_u64().unwrap_or(0) != 0 {
        return Err(QueryError::Unsupported(
            "unordered funnel trends where one event matches several steps are not supported \
             by the ClickHouse backend yet"
                .into(),
        ));
    }
    crate::dispatch::refuse_amb(amb)
}

/// Persons who entered in one bucket and converted (or dropped, with
/// `drop_off: true`).
pub fn persons(
    ch: &ClickHouse,
    q: &FunnelQuery,
    range: DateRange,
) -> Result<PersonsResult, QueryError> {
    let c = ctx(ch, q, range)?;
    let s = q.entrance_period_start.as_deref().unwrap_or("");
    let (t, _) = parse_instant(s, c.tz).ok_or_else(|| {
        QueryError::invalid("entrance_period_start", format!("not a date: {s:?}"))
    })?;
    let bucket = bucket_start(t.timestamp_millis(), c.interval, c.tz);
    let n = c.spec.steps.len();
    let idx = c
        .starts
        .iter()
        .position(|b| *b == bucket)
        .map_or(0, |i| i + 1);
    let outcome = if q.drop_off.unwrap_or(false) {
        format!("lvl >= {} AND lvl < {}", c.from + 1, c.to + 1)
    } else {
        format!("lvl >= {}", c.to + 1)
    };
    let mut cond = format!("bucket = {idx} AND {outcome}");
    if let (Some(w), Some(_)) = (&q.breakdown_value, &c.spec.breakdown) {
        cond.push_str(&format!(" AND {}", crate::persons::bd_match_sql(q, w)));
    }
    if c.starts.is_empty() {
        cond = "0".into();
    }
    let who = crate::persons::actors_of(q);
    let rows = if c.starts.is_empty() {
        "SELECT toUInt64(0) AS person, toUInt32(0) AS lvl, emptyArrayInt64() AS times, toUInt64(0) AS bits, toUInt8(0) AS amb, toUInt8(0) AS sel WHERE 0".to_string()
    } else {
        let b = crate::persons::keyed(
            buckets_sql(
                ch.database(),
                &c.spec,
                (c.from, c.to),
                &c.starts,
                c.unordered,
            ),
            who,
            "bd, bucket, lvl, amb",
        );
        format!(
            "SELECT person, toUInt32(0) AS lvl, emptyArrayInt64() AS times, toUInt64(0) AS bits, amb, hit AS sel FROM \
             (SELECT person, max(amb) AS amb, max(toUInt8({cond})) AS hit FROM ({b}) GROUP BY person)"
        )
    };
    crate::persons::page_of(ch, q, n, &rows, c.unordered, who)
}
