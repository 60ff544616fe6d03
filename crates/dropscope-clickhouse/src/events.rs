//! Stage A of the funnel SQL (see `funnel.rs` for the column contract):
//! the events a query reads, with actor, partition, step and exclusion
//! masks and breakdown values; and the identity overrides every stage that
//! reads `events` joins.

use std::fmt::Write as _;

use crate::funnel::FunnelSpec;
use crate::sql::prop_value;

/// The canonical person of an `events` row, through the overrides table.
/// Needs `ANY LEFT JOIN (`[`overrides_sql`]`) USING distinct_id`.
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
/// JSON nulls left out), plus `lowers Array(String)` (see
/// [`crate::sql::lower_form`]) and `nums Array(UInt64)` (see
/// [`crate::sql::num_key`]). Persons without properties have no row.
pub fn person_properties_sql(db: &str) -> String {
    format!(
        "SELECT person, arrayFilter((k, z) -> z = 0, k0, z0) AS keys, \
         arrayFilter((v, z) -> z = 0, v0, z0) AS values, \
         arrayFilter((v, z) -> z = 0, l0, z0) AS lowers, \
         arrayFilter((v, z) -> z = 0, n0, z0) AS nums \
         FROM (SELECT person_id AS person, argMax(keys, version) AS k0, argMax(values, version) AS v0, \
         argMax(nulls, version) AS z0, argMax(lowers, version) AS l0, argMax(nums, version) AS n0, \
         argMax(deleted, version) AS del FROM {db}.person_props GROUP BY person_id) WHERE del = 0"
    )
}

/// Current properties per group of one type: columns `group_key String,
/// keys Array(String), values Array(String)`, plus `lowers` and `nums` as
/// in [`person_properties_sql`]. Last write wins (group records and
/// `$groupidentify`'s `$group_set`, in ingest order); a JSON null removes.
pub fn group_properties_sql(db: &str, group_type_index: u8) -> String {
    format!(
        "SELECT group_key, groupArray(key) AS keys, groupArray(value) AS values, \
         groupArray(lower) AS lowers, groupArray(num) AS nums \
         FROM (SELECT group_key, key, argMax(value, seq) AS value, argMax(is_null, seq) AS z, \
         argMax(lower, seq) AS lower, argMax(num, seq) AS num FROM {db}.group_props \
         WHERE group_type_index = {group_type_index} GROUP BY group_key, key HAVING z = 0) \
         GROUP BY group_key"
    )
}

/// Stage A: the events the funnel reads (see the module docs).
pub fn events_sql(db: &str, s: &FunnelSpec) -> String {
    let mut mask = String::new();
    for (k, c) in s.steps.iter().enumerate() {
        if k > 0 {
            mask.push_str(" + ");
        }
        let _ = write!(mask, "if({c}, toUInt64({}), toUInt64(0))", 1u64 << k);
    }
    let bd = match &s.breakdown {
        Some((keys, _)) => format!(
            "[{}]",
            keys.iter()
                .map(|k| prop_value(k))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "emptyArrayString()".into(),
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
    format!(
        "SELECT toString({PERSON_EXPR}) AS actor, {PERSON_EXPR} AS person, emptyArrayString() AS part, \
         timestamp AS ts, seq, ({mask}) AS mask, ({xmask}) AS xmask, {bd} AS bd \
         FROM {db}.events \
         ANY LEFT JOIN ({ov}) USING distinct_id \
         WHERE timestamp >= {from} AND timestamp <= {to}{global}{keep}",
        ov = overrides_sql(db),
        from = s.from_ms,
        to = s.to_ms,
    )
}
