//! Stage A of the funnel SQL (see `funnel.rs` for the column contract):
//! the events a query reads, with actor, partition, step and exclusion
//! masks and breakdown values; and the identity overrides every stage that
//! reads `events` joins.

use std::fmt::Write as _;

use dropscope_core::query::FunnelOrder;

use crate::funnel::FunnelSpec;
use crate::sql::prop_value;

/// The canonical person of an `events` row, through the overrides table.
/// Needs `ANY LEFT JOIN (`[`overrides_sql`]`) AS ds_ov USING distinct_id`
/// (current ClickHouse requires the alias; 18.16 accepts it).
pub const PERSON_EXPR: &str = "if(ov_pid != 0, ov_pid, person_id)";

/// The latest override per distinct id (columns `distinct_id`, `ov_pid`).
pub fn overrides_sql(db: &str) -> String {
    format!(
        "SELECT distinct_id, argMax(person_id, version) AS ov_pid FROM {db}.person_overrides GROUP BY distinct_id"
    )
}

/// Current properties per canonical person (SEMANTICS: a person property
/// filter or breakdown uses the person's current value): columns
/// `person UInt64, keys Array(String), values Array(String)` (string forms;
/// JSON nulls left out), plus `null_keys Array(String)` (keys set to
/// JSON null), plus `lowers Array(String)` (see
/// [`crate::sql::lower_form`]) and `nums Array(UInt64)` (see
/// [`crate::sql::num_key`]) and `dates Array(String)` (see
/// [`crate::sql::date_key`]). Persons without properties have no row.
pub fn person_properties_sql(db: &str) -> String {
    format!(
        "SELECT person, arrayFilter((k, z) -> z = 0, k0, z0) AS keys, \
         arrayFilter((v, z) -> z = 0, v0, z0) AS values, \
         arrayFilter((v, z) -> z = 0, l0, z0) AS lowers, \
         arrayFilter((v, z) -> z = 0, n0, z0) AS nums, \
         arrayFilter((v, z) -> z = 0, d0, z0) AS dates, \
         arrayFilter((k, z) -> z != 0, k0, z0) AS null_keys \
         FROM (SELECT person_id AS person, argMax(keys, version) AS k0, argMax(values, version) AS v0, \
         argMax(nulls, version) AS z0, argMax(lowers, version) AS l0, argMax(nums, version) AS n0, \
         argMax(dates, version) AS d0, \
         argMax(deleted, version) AS del FROM {db}.person_props GROUP BY person_id) WHERE del = 0"
    )
}

/// Current properties per group of one type: columns `group_key String,
/// keys Array(String), values Array(String)`, plus `lowers`, `nums` and `dates` as
/// in [`person_properties_sql`]. Last write wins (group records and
/// `$groupidentify`'s `$group_set`, in ingest order); a JSON null removes.
pub fn group_properties_sql(db: &str, group_type_index: u8) -> String {
    format!(
        "SELECT group_key, groupArrayIf(key, z = 0) AS keys, groupArrayIf(value, z = 0) AS values, \
         groupArrayIf(lower, z = 0) AS lowers, groupArrayIf(num, z = 0) AS nums, \
         groupArrayIf(date, z = 0) AS dates, \
         groupArrayIf(key, z != 0) AS null_keys \
         FROM (SELECT group_key, key, argMax(value, seq) AS value, argMax(is_null, seq) AS z, \
         argMax(lower, seq) AS lower, argMax(num, seq) AS num, argMax(date, seq) AS date FROM {db}.group_props \
         WHERE group_type_index = {group_type_index} GROUP BY group_key, key) \
         GROUP BY group_key"
    )
}

/// Who the actors are (SEMANTICS rule 13).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ActorKind {
    /// Canonical persons (the default).
    #[default]
    Person,
    /// A string expression over the event row (`$group_N`, an event or
    /// person property, the distinct id); events where it is `''` are
    /// dropped before anything else (also before first-time-for-user).
    Expr(String),
}

/// How events are partitioned (`part`) for breakdown attributions that run
/// the funnel once per value (rule 12). Partition values are TAGGED like the
/// embedded store's values, each element `s<value>`, or `m` (missing) / `z`
/// (JSON null) for person and group properties: the engine runs one funnel
/// per distinct stored value, so an actor whose events carry both a missing
/// and an empty value is counted twice under `""`. The shown breakdown value
/// drops the first byte (stage B).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Part {
    /// One partition (first/last touch, or no breakdown).
    #[default]
    None,
    /// `all_events`: the event's own breakdown value.
    Value,
    /// `step` N: every value of the actor's step-N events; in the partition
    /// of value v only events carrying v may serve as step N.
    Step(usize),
    /// Cohorts: one partition per cohort the person belongs to: (the
    /// tagged partition value — `<k>:<id>` for the k-th earlier listing of
    /// the same cohort, from 0 —, membership SQL).
    Cohorts(Vec<(String, String)>),
}

/// Stage A's data side, compiled by `check_supported` / `funnel_spec`.
#[derive(Debug, Clone, Default)]
pub struct DataSpec {
    pub actor: ActorKind,
    /// `Array(String)` SQL: the event's breakdown value (`None` without a
    /// breakdown or with cohorts); tagged in the partition modes.
    pub bd: Option<String>,
    pub part: Part,
    /// Per step: `Some(c)` when the step is first-time-for-user: only the
    /// actor's first event (all time for persons; in range otherwise)
    /// satisfying `c` may match it (rule 14).
    pub first_time: Vec<Option<String>>,
    /// With [`Part::Step`]: keep step N's bit on events of other values
    /// (unordered funnel trends: the engine runs the same unconstrained
    /// walk under each value of the actor's step-N events).
    pub step_free: bool,
}

/// Columns of the `events` table stage A carries through its joins.
const BASE_COLS: &[&str] = &[
    "event",
    "distinct_id",
    "timestamp",
    "seq",
    "prop_keys",
    "prop_values",
    "prop_lower",
    "prop_nums",
    "prop_dates",
    "el_chain",
    "el_attrs",
    "el_values",
    "el_nulls",
    "el_lower",
    "el_nums",
    "el_dates",
];

const KV: [&str; 6] = ["keys", "values", "lowers", "nums", "dates", "null_keys"];

/// Whether SQL text reads the columns with this prefix (`pkeys`, `g0values`…).
fn reads(sql: &str, prefix: &str) -> bool {
    KV.iter().any(|c| {
        let name = format!("{prefix}{c}");
        sql.match_indices(&name).any(|(i, _)| {
            let before = sql[..i].chars().next_back();
            let after = sql[i + name.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// The event rows with everything filters can read: the canonical person,
/// and (when `uses` reads them) the person's current properties and the
/// properties of the event's groups; plus `actor`. `range`: only events in
/// the query's range.
pub(crate) fn joined_sql(db: &str, s: &FunnelSpec, uses: &str, range: bool) -> String {
    let mut cols: Vec<String> = BASE_COLS.iter().map(|c| c.to_string()).collect();
    let groups: Vec<u8> = (0..5u8)
        .filter(|g| reads(uses, &crate::sql::group_cols(*g)))
        .collect();
    let mut select = format!("{}, {PERSON_EXPR} AS person", cols.join(", "));
    cols.push("person".into());
    for g in &groups {
        let _ = write!(
            select,
            ", {} AS g{g}_key",
            prop_value(&format!("$group_{g}"))
        );
    }
    let mut sql = format!(
        "SELECT {select} FROM {db}.events ANY LEFT JOIN ({ov}) AS ds_ov USING distinct_id{w}",
        ov = overrides_sql(db),
        w = if range {
            format!(
                " WHERE timestamp >= {} AND timestamp <= {}",
                s.from_ms, s.to_ms
            )
        } else {
            String::new()
        }
    );
    for g in &groups {
        cols.push(format!("g{g}_key"));
    }
    let px = crate::sql::PERSON_COLS;
    if reads(uses, px) {
        let right = format!(
            "SELECT person, {} FROM ({})",
            KV.iter()
                .map(|c| format!("{c} AS {px}{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            person_properties_sql(db)
        );
        sql = format!(
            "SELECT {c}, {n} FROM ({sql}) AS ds_l ANY LEFT JOIN ({right}) AS ds_pp USING person",
            c = cols.join(", "),
            n = KV
                .iter()
                .map(|c| format!("{px}{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        cols.extend(KV.iter().map(|c| format!("{px}{c}")));
    }
    for g in &groups {
        let gx = crate::sql::group_cols(*g);
        let right = format!(
            "SELECT group_key AS g{g}_key, {} FROM ({}) WHERE group_key != ''",
            KV.iter()
                .map(|c| format!("{c} AS {gx}{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            group_properties_sql(db, *g)
        );
        sql = format!(
            "SELECT {c}, {n} FROM ({sql}) AS ds_l ANY LEFT JOIN ({right}) AS ds_gp USING g{g}_key",
            c = cols.join(", "),
            n = KV
                .iter()
                .map(|c| format!("{gx}{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        cols.extend(KV.iter().map(|c| format!("{gx}{c}")));
    }
    match &s.data.actor {
        ActorKind::Person => format!(
            "SELECT {c}, toString(person) AS actor FROM ({sql})",
            c = cols.join(", ")
        ),
        ActorKind::Expr(e) => format!(
            "SELECT {c}, {e} AS actor FROM ({sql}) WHERE actor != ''",
            c = cols.join(", ")
        ),
    }
}

/// Stage A: the events the funnel reads (see the module docs of
/// `funnel.rs`).
pub fn events_sql(db: &str, s: &FunnelSpec) -> String {
    let d = &s.data;
    let mut mask = String::new();
    for (k, c) in s.steps.iter().enumerate() {
        if k > 0 {
            mask.push_str(" + ");
        }
        let c = match d.first_time.get(k).and_then(Option::as_ref) {
            Some(_) => format!("({c}) AND ftn{k} > 0 AND seq = ft{k}"),
            None => c.clone(),
        };
        let _ = write!(mask, "if({c}, toUInt64({}), toUInt64(0))", 1u64 << k);
    }
    let bd = d.bd.clone().unwrap_or_else(|| "emptyArrayString()".into());
    let part = match &d.part {
        Part::None | Part::Step(_) => "emptyArrayString()".to_string(),
        Part::Value => bd.clone(),
        // The cohorts of the row's person; the actor's partitions are those
        // of its first event (the engine's `evs.first()`; for persons the
        // same on every row).
        Part::Cohorts(cs) => format!(
            "arrayFilter(x -> x != '', [{}])",
            cs.iter()
                .map(|(v, c)| format!("if({c}, {}, '')", crate::sql::quote_str(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut xmask = String::from("toUInt64(0)");
    for (j, c) in s.exclusions.iter().enumerate() {
        let _ = write!(xmask, " + if({c}, toUInt64({}), toUInt64(0))", 1u64 << j);
    }
    // Strict funnels read every event in range (SEMANTICS rule 6).
    let keep = if s.keep_all {
        ""
    } else {
        " AND (mask != 0 OR xmask != 0)"
    };
    let global = s
        .global
        .as_ref()
        .map(|g| format!(" AND ({g})"))
        .unwrap_or_default();
    let ft: Vec<(usize, &String)> = d
        .first_time
        .iter()
        .enumerate()
        .filter_map(|(k, c)| c.as_ref().map(|c| (k, c)))
        .collect();
    // Everything the row expressions read decides the joins.
    let mut uses = format!("{mask} {xmask} {bd} {part} {global}");
    if let ActorKind::Expr(e) = &d.actor {
        uses.push_str(e);
    }
    for (_, c) in &ft {
        uses.push_str(c);
    }
    let rows = joined_sql(db, s, &uses, true);
    let from = if ft.is_empty() {
        format!("({rows})")
    } else {
        let aggs: Vec<String> = ft
            .iter()
            .map(|(k, c)| {
                format!("argMinIf(seq, (timestamp, seq), {c}) AS ft{k}, countIf({c}) AS ftn{k}")
            })
            .collect();
        let all_time = joined_sql(db, s, &uses, d.actor != ActorKind::Person);
        format!(
            "({rows}) AS ds_l ANY LEFT JOIN (SELECT actor, {} FROM ({all_time}) GROUP BY actor) AS ds_ft USING actor",
            aggs.join(", ")
        )
    };
    let sql = format!(
        "SELECT actor, person, {part} AS part, timestamp AS ts, seq, ({mask}) AS mask, \
         mask AS fm, ({xmask}) AS xmask, {bd} AS bd FROM {from} WHERE 1{global}{keep}"
    );
    match &d.part {
        Part::Cohorts(_) => format!(
            "SELECT actor, person, [c] AS part, ts, seq, mask, fm, xmask, bd \
             FROM (SELECT actor, person, ts, seq, mask, fm, xmask, bd, cands FROM ({sql}) AS ds_l \
             ANY LEFT JOIN (SELECT actor, argMin(part, (ts, seq)) AS cands FROM ({sql}) GROUP BY actor) \
             AS ds_c USING actor) ARRAY JOIN cands AS c"
        ),
        Part::Step(n) if d.step_free => format!(
            "SELECT actor, person, part, ts, seq, mask, fm, xmask, bd \
             FROM (SELECT actor, person, ts, seq, mask, fm, xmask, bd, cands FROM ({sql}) AS ds_l \
             ANY LEFT JOIN (SELECT actor, groupUniqArrayIf(bd, bitAnd(mask, toUInt64({bit})) != 0) AS cands \
             FROM ({sql}) GROUP BY actor) AS ds_c USING actor) ARRAY JOIN cands AS part",
            bit = 1u64 << n
        ),
        Part::Step(n) => {
            let bit = 1u64 << n;
            // In the partition of value v, an event of another value may
            // not serve as step N (the engine's `StepConstraint`): its
            // advance mask `mask` loses that step; its full mask `fm`
            // (same-instant groups, strict clearing) keeps it. Unordered
            // (step 0 only): the engine skips such an event only when it
            // matches step 0 alone (`unordered::run`); an event skipped
            // there still slides the window, which a mask-0 event does too.
            let advance = if s.order == FunnelOrder::Unordered {
                format!("if(bd != part AND mask0 = toUInt64({bit}), toUInt64(0), mask0)")
            } else {
                format!("if(bd = part, mask0, bitAnd(mask0, bitNot(toUInt64({bit}))))")
            };
            format!(
                "SELECT actor, person, part, ts, seq, {advance} AS mask, mask0 AS fm, xmask, bd \
                 FROM (SELECT actor, person, ts, seq, mask AS mask0, xmask, bd, cands FROM ({sql}) AS ds_l \
                 ANY LEFT JOIN (SELECT actor, groupUniqArrayIf(bd, bitAnd(mask, toUInt64({bit})) != 0) AS cands \
                 FROM ({sql}) GROUP BY actor) AS ds_c USING actor) ARRAY JOIN cands AS part"
            )
        }
        _ => sql,
    }
}
