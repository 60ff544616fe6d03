//! dropscope-clickhouse: a [`Backend`] that keeps events in ClickHouse and
//! answers funnel queries with the aggregation done inside ClickHouse.
//!
//! First step of "scale out on ClickHouse" (see README.md): schema and
//! migrations, batched inserts over the HTTP interface, and every query
//! kind compiled to SQL (the supported subset is listed in the crate's
//! README). Everything else is refused with [`QueryError::Unsupported`],
//! never answered approximately.

pub mod browse;
pub mod correlation;
pub mod diagnosis;
pub mod dispatch;
pub mod events;
pub mod funnel;
pub mod http;
pub mod identity;
pub mod paths;
pub mod persons;
pub mod re2;
pub mod sql;
pub mod trends;
pub mod ttc;

use std::collections::{HashMap, HashSet};

use dropscope_core::event::{value_string_form, CohortRecord, Event};
use dropscope_core::query::{
    Attribution, BreakdownType, Counting, FunnelOrder, FunnelQuery, QueryKind, StepMath, Window,
};
use dropscope_core::result::{BreakdownRow, CurvePoint, FunnelResult, QueryResult, StepResult};
use dropscope_core::time::resolve_range;
use dropscope_core::QueryError;
use dropscope_store::Record;
use dropscope_testkit::Backend;
use serde_json::{json, Value};

use dropscope_store::snapshot::GroupData;
use events::{ActorKind, DataSpec, Part};
use funnel::{FunnelSpec, Touch};
pub use http::Http;
use identity::Identity;
use sql::{check_ident, quote_str};

/// Rows per INSERT request.
pub const INSERT_BATCH: usize = 10_000;

/// Schema migrations, applied in order; each version once per database.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS {db}.events (\
           uuid String, \
           event String, \
           distinct_id String, \
           person_id UInt64, \
           timestamp Int64, \
           seq UInt64, \
           prop_keys Array(String), \
           prop_values Array(String)\
         ) ENGINE = MergeTree() \
         PARTITION BY toYYYYMM(toDate(toDateTime(intDiv(greatest(timestamp, 0), 1000)))) \
         ORDER BY (person_id, timestamp, seq)",
    ),
    (
        2,
        "CREATE TABLE IF NOT EXISTS {db}.person_overrides (\
           distinct_id String, \
           person_id UInt64, \
           version UInt64\
         ) ENGINE = ReplacingMergeTree(version) ORDER BY distinct_id",
    ),
    (
        3,
        "CREATE TABLE IF NOT EXISTS {db}.distinct_ids (\
           distinct_id String, \
           own_id UInt64\
         ) ENGINE = ReplacingMergeTree() ORDER BY distinct_id",
    ),
    (
        4,
        "ALTER TABLE {db}.events \
           ADD COLUMN prop_lower Array(String), \
           ADD COLUMN prop_nums Array(UInt64), \
           ADD COLUMN el_chain UInt8, \
           ADD COLUMN el_attrs Array(String), \
           ADD COLUMN el_values Array(String), \
           ADD COLUMN el_nulls Array(UInt8), \
           ADD COLUMN el_lower Array(String), \
           ADD COLUMN el_nums Array(UInt64)",
    ),
    (
        5,
        "CREATE TABLE IF NOT EXISTS {db}.person_props (\
           person_id UInt64, \
           keys Array(String), \
           values Array(String), \
           nulls Array(UInt8), \
           lowers Array(String), \
           nums Array(UInt64), \
           label String, \
           has_label UInt8, \
           deleted UInt8, \
           version UInt64\
         ) ENGINE = ReplacingMergeTree(version) ORDER BY person_id",
    ),
    (
        6,
        "CREATE TABLE IF NOT EXISTS {db}.person_history (\
           distinct_id String, \
           timestamp Int64, \
           seq UInt64, \
           kind UInt8, \
           keys Array(String), \
           values Array(String), \
           nulls Array(UInt8)\
         ) ENGINE = MergeTree() ORDER BY (distinct_id, timestamp, seq)",
    ),
    (
        7,
        "CREATE TABLE IF NOT EXISTS {db}.group_props (\
           group_type_index UInt8, \
           group_key String, \
           key String, \
           value String, \
           is_null UInt8, \
           lower String, \
           num UInt64, \
           seq UInt64\
         ) ENGINE = MergeTree() ORDER BY (group_type_index, group_key, key, seq)",
    ),
    (
        8,
        "CREATE TABLE IF NOT EXISTS {db}.group_types (types Array(String), version UInt64) \
         ENGINE = MergeTree() ORDER BY version",
    ),
    (
        9,
        "CREATE TABLE IF NOT EXISTS {db}.cohorts (id UInt64, record String, version UInt64) \
         ENGINE = ReplacingMergeTree(version) ORDER BY id",
    ),
    // Date keys (`sql::date_key`) for `is_date_*` filters. Rows stored
    // before this migration read the default `'?'` ("not computed"), which
    // makes a date filter fail (`throwIf`) instead of answering wrongly.
    (
        10,
        "ALTER TABLE {db}.events \
           ADD COLUMN prop_dates Array(String) DEFAULT arrayMap(v -> '?', prop_values), \
           ADD COLUMN el_dates Array(String) DEFAULT arrayMap(v -> '?', el_values)",
    ),
    (
        11,
        "ALTER TABLE {db}.person_props \
           ADD COLUMN dates Array(String) DEFAULT arrayMap(v -> '?', values)",
    ),
    (
        12,
        "ALTER TABLE {db}.group_props ADD COLUMN date String DEFAULT '?'",
    ),
];

/// A ClickHouse database holding one dropscope project.
pub struct ClickHouse {
    http: Http,
    db: String,
    identity: Identity,
    /// Next ingest sequence number (ties between equal timestamps).
    seq: u64,
    /// Overrides version counter.
    version: u64,
    /// Event uuids stored by this process (duplicates are skipped).
    uuids: HashSet<u128>,
    /// Group type slots, assigned by the store's own rules (`$group_0` ..
    /// `$group_4`); the properties part is unused here (they are in
    /// ClickHouse).
    groups: GroupData,
    /// Next `group_props` sequence number (last write wins).
    gseq: u64,
    /// Cohorts by id (small; their SQL is compiled per query).
    cohorts: Vec<CohortRecord>,
}

impl ClickHouse {
    /// Connects to `url` (`http://host:port`), creates database `db` if
    /// needed, applies pending migrations and restores the identity state.
    pub fn open(url: &str, db: &str) -> Result<ClickHouse, String> {
        let http = Http::new(url)?;
        let db = check_ident(db)?.to_string();
        let mut ch = ClickHouse {
            http,
            db,
            identity: Identity::default(),
            seq: 0,
            version: 0,
            uuids: HashSet::new(),
            groups: GroupData::default(),
            gseq: 0,
            cohorts: Vec::new(),
        };
        ch.migrate()?;
        ch.restore()?;
        Ok(ch)
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    /// Runs a statement; returns its output.
    pub fn execute(&self, sql: &str) -> Result<String, String> {
        self.http
            .post(
                &[
                    ("database", "default"),
                    ("output_format_json_quote_64bit_integers", "0"),
                ],
                sql.as_bytes(),
            )
            .map_err(|e| {
                // Our only `throwIf`: a date key still at its default (see
                // migration 10).
                if e.to_lowercase().contains("throwif") || e.contains("THROW_IF") {
                    format!(
                        "an is_date_* filter met rows stored before migration 10, which have no date \
                         keys: reload them to use date filters ({e})"
                    )
                } else {
                    e
                }
            })
    }

    /// Runs a `FORMAT JSON` query and parses the answer.
    pub(crate) fn select_json(&self, sql: &str) -> Result<Value, String> {
        let text = self.execute(sql)?;
        serde_json::from_str(&text).map_err(|e| format!("ClickHouse answer is not JSON: {e}"))
    }

    /// Creates the database and applies the migrations it lacks.
    pub fn migrate(&self) -> Result<(), String> {
        let db = &self.db;
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))?;
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, applied_at DateTime DEFAULT now()) ENGINE = TinyLog"
        ))?;
        let done = self.select_json(&format!(
            "SELECT version FROM {db}.schema_migrations FORMAT JSON"
        ))?;
        let done: HashSet<u64> = done["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["version"].as_u64())
            .collect();
        for (v, stmt) in MIGRATIONS {
            if done.contains(&u64::from(*v)) {
                continue;
            }
            self.execute(&stmt.replace("{db}", db))
                .map_err(|e| format!("migration {v}: {e}"))?;
            self.execute(&format!(
                "INSERT INTO {db}.schema_migrations (version) VALUES ({v})"
            ))?;
        }
        Ok(())
    }

    /// Rebuilds identity, sequence and version counters from the database
    /// (so another process can keep loading into it).
    fn restore(&mut self) -> Result<(), String> {
        let db = &self.db;
        let r = self.select_json(&format!(
            "SELECT d.distinct_id AS did, d.own_id AS own, o.pid AS pid FROM \
             (SELECT distinct_id, any(own_id) AS own_id FROM {db}.distinct_ids GROUP BY distinct_id) AS d \
             ANY LEFT JOIN (SELECT distinct_id, argMax(person_id, version) AS pid FROM {db}.person_overrides GROUP BY distinct_id) AS o \
             USING distinct_id FORMAT JSON"
        ))?;
        for row in r["data"].as_array().into_iter().flatten() {
            let did = row["did"].as_str().unwrap_or_default();
            let own = row["own"].as_u64().unwrap_or(0);
            let pid = row["pid"].as_u64().unwrap_or(0);
            self.identity.restore(did, own, pid);
        }
        let r = self.select_json(&format!(
            "SELECT max(seq) AS s, count() AS c FROM {db}.events FORMAT JSON"
        ))?;
        if r["data"][0]["c"].as_u64().unwrap_or(0) > 0 {
            self.seq = r["data"][0]["s"].as_u64().unwrap_or(0) + 1;
        }
        let r = self.select_json(&format!(
            "SELECT person_id AS p, argMax(keys, version) AS k, argMax(values, version) AS v, \
             argMax(nulls, version) AS z, argMax(label, version) AS l, argMax(has_label, version) AS hl, \
             argMax(deleted, version) AS d FROM {db}.person_props GROUP BY person_id HAVING d = 0 FORMAT JSON"
        ))?;
        for row in r["data"].as_array().into_iter().flatten() {
            let strs = |k: &str| -> Vec<String> {
                row[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect()
            };
            let nulls: Vec<u64> = row["z"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_u64().unwrap_or(0))
                .collect();
            let props = strs("k")
                .into_iter()
                .zip(strs("v"))
                .zip(nulls)
                .map(|((k, v), z)| (k, (z == 0).then_some(v)))
                .collect();
            let label = (row["hl"].as_u64() == Some(1))
                .then(|| row["l"].as_str().unwrap_or_default().to_string());
            self.identity
                .restore_person(row["p"].as_u64().unwrap_or(0), props, label);
        }
        let r = self.select_json(&format!(
            "SELECT argMax(types, version) AS t, count() AS c FROM {db}.group_types FORMAT JSON"
        ))?;
        if r["data"][0]["c"].as_u64().unwrap_or(0) > 0 {
            self.groups.types = r["data"][0]["t"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect();
        }
        let r = self.select_json(&format!(
            "SELECT max(seq) AS s, count() AS c FROM {db}.group_props FORMAT JSON"
        ))?;
        if r["data"][0]["c"].as_u64().unwrap_or(0) > 0 {
            self.gseq = r["data"][0]["s"].as_u64().unwrap_or(0) + 1;
        }
        let r = self.select_json(&format!(
            "SELECT argMax(record, version) AS r FROM {db}.cohorts GROUP BY id ORDER BY id FORMAT JSON"
        ))?;
        for row in r["data"].as_array().into_iter().flatten() {
            if let Ok(c) = serde_json::from_str::<CohortRecord>(row["r"].as_str().unwrap_or("")) {
                self.cohorts.push(c);
            }
        }
        let mut version = 0;
        for t in ["person_overrides", "person_props", "group_types", "cohorts"] {
            let r = self.select_json(&format!(
                "SELECT max(version) AS v FROM {db}.{t} FORMAT JSON"
            ))?;
            version = version.max(r["data"][0]["v"].as_u64().unwrap_or(0));
        }
        self.version = version;
        Ok(())
    }

    /// Drops the whole database (tests).
    pub fn drop_database(&self) -> Result<(), String> {
        self.execute(&format!("DROP DATABASE IF EXISTS {}", self.db))
            .map(|_| ())
    }

    fn insert(&self, table: &str, rows: &[String]) -> Result<(), String> {
        for chunk in rows.chunks(INSERT_BATCH) {
            let mut body = String::new();
            for r in chunk {
                body.push_str(r);
                body.push('\n');
            }
            let q = format!("INSERT INTO {}.{table} FORMAT JSONEachRow", self.db);
            self.http
                .post(&[("database", "default"), ("query", &q)], body.as_bytes())?;
        }
        Ok(())
    }

    /// Stores records: identity joins and person properties are resolved
    /// here exactly as the embedded store resolves them (union-find over
    /// distinct ids, `$set`/`$set_once`, group slots); events are inserted
    /// in batches with their distinct id's own person id, distinct ids whose
    /// person changed get an override row, persons whose properties changed
    /// get a `person_props` row.
    pub fn append(&mut self, records: &[Record]) -> Result<(), String> {
        let mut events = Vec::new();
        let mut history = Vec::new();
        let mut group_rows = Vec::new();
        let mut cohort_rows = Vec::new();
        let types_before = self.groups.types.clone();
        let mut new_dids: Vec<String> = Vec::new();
        for r in records {
            match r {
                Record::Person(p) => {
                    new_dids.extend(self.identity.person(p));
                    if let Some(d) = p.distinct_ids.first() {
                        if !p.properties.is_empty() {
                            history.push(history_row(d, 0, self.seq, 3, &p.properties));
                        }
                    }
                }
                Record::Group(g) => {
                    self.groups.set_type(g.group_type_index, &g.group_type);
                    for (k, v) in &g.properties {
                        group_rows.push(group_row(g.group_type_index, &g.key, k, v, self.gseq));
                        self.gseq += 1;
                    }
                }
                Record::Cohort(c) => {
                    self.cohorts.retain(|x| x.id != c.id);
                    self.cohorts.push(c.clone());
                    cohort_rows.push(c.clone());
                }
                Record::Event(e) => {
                    if !self.uuids.insert(e.uuid) {
                        continue;
                    }
                    new_dids.extend(self.identity.event(e));
                    for (kind, key) in [(1u8, "$set"), (2, "$set_once")] {
                        if let Some(Value::Object(set)) = e.properties.get(key) {
                            history.push(history_row(
                                &e.distinct_id,
                                e.timestamp,
                                self.seq,
                                kind,
                                set,
                            ));
                        }
                    }
                    let extra = self.group_effects(e, &mut group_rows);
                    let own = self.identity.own_id(&e.distinct_id);
                    events.push(self.event_row(e, own, &extra));
                    self.seq += 1;
                }
            }
        }
        let dids: Vec<String> = new_dids
            .iter()
            .map(|d| json!({"distinct_id": d, "own_id": self.identity.own_id(d)}).to_string())
            .collect();
        self.insert("distinct_ids", &dids)?;
        self.insert("events", &events)?;
        self.insert("person_history", &history)?;
        self.insert("group_props", &group_rows)?;
        let changed = self.identity.take_changed();
        let persons = self.identity.take_person_rows();
        let types_changed = self.groups.types != types_before;
        if changed.is_empty() && persons.is_empty() && !types_changed && cohort_rows.is_empty() {
            return Ok(());
        }
        self.version += 1;
        let version = self.version;
        let rows: Vec<String> = changed
            .iter()
            .map(|(d, p)| json!({"distinct_id": d, "person_id": p, "version": version}).to_string())
            .collect();
        self.insert("person_overrides", &rows)?;
        let rows: Vec<String> = persons
            .iter()
            .map(|(id, props, label, deleted)| {
                let keys: Vec<&String> = props.keys().collect();
                let values: Vec<&str> =
                    props.values().map(|v| v.as_deref().unwrap_or("")).collect();
                let nulls: Vec<u8> = props.values().map(|v| u8::from(v.is_none())).collect();
                json!({
                    "person_id": id,
                    "keys": keys,
                    "values": values,
                    "nulls": nulls,
                    "lowers": values.iter().map(|v| sql::lower_form(v)).collect::<Vec<_>>(),
                    "nums": values.iter().map(|v| sql::num_key(v)).collect::<Vec<_>>(),
                    "dates": values.iter().map(|v| sql::date_key(v)).collect::<Vec<_>>(),
                    "label": label.as_deref().unwrap_or(""),
                    "has_label": u8::from(label.is_some()),
                    "deleted": u8::from(*deleted),
                    "version": version,
                })
                .to_string()
            })
            .collect();
        self.insert("person_props", &rows)?;
        if types_changed {
            let row = json!({"types": self.groups.types, "version": version}).to_string();
            self.insert("group_types", &[row])?;
        }
        let rows: Vec<String> = cohort_rows
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "record": serde_json::to_string(c).unwrap_or_default(),
                    "version": version,
                })
                .to_string()
            })
            .collect();
        self.insert("cohorts", &rows)?;
        Ok(())
    }

    /// `$groups` and `$groupidentify` of an event, as the store applies
    /// them: returns the `$group_N` properties the event gains, and records
    /// group property writes.
    fn group_effects(&mut self, e: &Event, rows: &mut Vec<String>) -> Vec<(String, Value)> {
        let mut extra = Vec::new();
        if let Some(Value::Object(gs)) = e.properties.get("$groups") {
            for (gtype, key) in gs {
                if let Some(idx) = self.groups.index_for(gtype) {
                    let name = format!("$group_{idx}");
                    if !e.properties.contains_key(&name) {
                        extra.push((name, key.clone()));
                    }
                }
            }
        }
        if e.event == "$groupidentify" {
            let gtype = e.properties.get("$group_type").and_then(Value::as_str);
            let gkey = e.properties.get("$group_key").map(value_string_form);
            if let (Some(gtype), Some(gkey)) = (gtype, gkey) {
                if let Some(idx) = self.groups.index_for(gtype) {
                    if let Some(Value::Object(set)) = e.properties.get("$group_set") {
                        for (k, v) in set {
                            rows.push(group_row(idx, &gkey, k, v, self.gseq));
                            self.gseq += 1;
                        }
                    }
                }
            }
        }
        extra
    }

    /// The `events` row of an event (JSON null properties are not stored:
    /// every filter and breakdown treats them as missing).
    fn event_row(&self, e: &Event, own: u64, extra: &[(String, Value)]) -> String {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for (k, v) in e.properties.iter().chain(extra.iter().map(|(k, v)| (k, v))) {
            if v.is_null() {
                continue;
            }
            keys.push(k.as_str());
            values.push(value_string_form(v));
        }
        let (mut attrs, mut evals, mut enulls) = (Vec::new(), Vec::new(), Vec::new());
        let chain = e.properties.get(dropscope_core::event::ELEMENTS_KEY);
        for el in chain.and_then(Value::as_array).into_iter().flatten() {
            for (k, v) in el.as_object().into_iter().flatten() {
                attrs.push(k.as_str());
                evals.push(value_string_form(v));
                enulls.push(u8::from(v.is_null()));
            }
        }
        json!({
            "uuid": dropscope_core::event::format_uuid(e.uuid),
            "event": e.event,
            "distinct_id": e.distinct_id,
            "person_id": own,
            "timestamp": e.timestamp,
            "seq": self.seq,
            "prop_keys": keys,
            "prop_lower": values.iter().map(|v| sql::lower_form(v)).collect::<Vec<_>>(),
            "prop_nums": values.iter().map(|v| sql::num_key(v)).collect::<Vec<_>>(),
            "prop_dates": values.iter().map(|v| sql::date_key(v)).collect::<Vec<_>>(),
            "prop_values": values,
            "el_chain": u8::from(chain.is_some()),
            "el_attrs": attrs,
            "el_lower": evals.iter().map(|v| sql::lower_form(v)).collect::<Vec<_>>(),
            "el_nums": evals.iter().map(|v| sql::num_key(v)).collect::<Vec<_>>(),
            "el_dates": evals.iter().map(|v| sql::date_key(v)).collect::<Vec<_>>(),
            "el_values": evals,
            "el_nulls": enulls,
        })
        .to_string()
    }

    fn earliest(&self) -> Result<Option<i64>, QueryError> {
        let r = self
            .select_json(&format!(
                "SELECT min(timestamp) AS t, count() AS c FROM {}.events FORMAT JSON",
                self.db
            ))
            .map_err(QueryError::Backend)?;
        Ok((r["data"][0]["c"].as_u64().unwrap_or(0) > 0)
            .then(|| r["data"][0]["t"].as_i64())
            .flatten())
    }

    /// Answers a query. Only the supported subset (see [`check_supported`]).
    pub fn run(&self, q: &FunnelQuery) -> Result<QueryResult, QueryError> {
        let spec0 = self.funnel_spec(q)?;
        let earliest = if q.date_from.as_deref().map(str::trim) == Some("all") {
            self.earliest()?
        } else {
            None
        };
        let range = resolve_range(q, earliest)?;
        if q.kind != QueryKind::Funnel {
            return dispatch::run_kind(self, q, range);
        }
        let spec = FunnelSpec {
            from_ms: range.from,
            to_ms: range.to,
            ..spec0
        };
        let n = spec.steps.len();
        let names: Vec<String> = if q.order == FunnelOrder::Unordered {
            (1..=n)
                .map(|k| format!("Completed {k} step{}", if k == 1 { "" } else { "s" }))
                .collect()
        } else {
            q.steps.iter().map(|s| s.display_name()).collect()
        };
        let r = self.steps_view(&spec)?;
        refuse_ambiguous_ties(&r)?;
        let curve = self.curve(&spec)?;
        let data = r["data"].as_array().cloned().unwrap_or_default();
        let mk = |row: Option<&Value>| -> Vec<StepResult> { step_results(row, n, &names) };
        if spec.breakdown.is_none() {
            return Ok(QueryResult::Funnel(FunnelResult {
                steps: mk(data.first()),
                breakdowns: None,
                conversion_curve: curve,
                date_from_ms: range.from,
                date_to_ms: range.to,
            }));
        }
        let limit = q
            .breakdown
            .as_ref()
            .and_then(|b| b.limit)
            .filter(|l| *l > 0);
        let mut rows = breakdown_rows(q, &r, n);
        let mut r = r;
        if let Some(limit) = limit.filter(|l| rows.len() > *l) {
            // Keep the `limit` strongest values; count the rest as "Other"
            // in a second aggregation (medians cannot be merged afterwards).
            let keep: Vec<Vec<String>> = rows[..limit]
                .iter()
                .map(|(_, (_, row))| {
                    row["bd"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| x.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .collect();
            let spec = FunnelSpec {
                keep: Some(keep.clone()),
                ..spec.clone()
            };
            r = self.steps_view(&spec)?;
            refuse_ambiguous_ties(&r)?;
            let all = breakdown_rows(q, &r, n);
            let other = bd_output(q, &json!(["Other"]));
            let (mut kept, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|(v, _)| {
                v != &other || keep.iter().any(|k| k.len() == 1 && k[0] == "Other")
            });
            dropscope_engine::funnel::sort_rows(&mut kept, |(c, _)| c);
            kept.extend(rest);
            rows = kept;
        }
        let breakdowns = rows
            .into_iter()
            .map(|(v, (_, row))| BreakdownRow {
                breakdown_display: bd_display(&v),
                breakdown_value: v,
                steps: step_results(Some(&row), n, &names),
            })
            .collect();
        let totals = r.get("totals").filter(|t| t.is_object());
        Ok(QueryResult::Funnel(FunnelResult {
            steps: step_results(totals, n, &names),
            breakdowns: Some(breakdowns),
            conversion_curve: curve,
            date_from_ms: range.from,
            date_to_ms: range.to,
        }))
    }
}

impl ClickHouse {
    /// The steps view ([`funnel::steps_sql`]) with its totals row apart.
    fn steps_view(&self, spec: &FunnelSpec) -> Result<Value, QueryError> {
        self.select_json(&funnel::steps_sql(&self.db, spec))
            .map(funnel::split_totals)
            .map_err(QueryError::Backend)
    }

    /// The Kaplan–Meier conversion curve over every counted unit, from
    /// per-duration counts (the same arithmetic as
    /// `dropscope_stats::kaplan_meier`, which takes one observation per unit).
    fn curve(&self, spec: &FunnelSpec) -> Result<Vec<CurvePoint>, QueryError> {
        let r = self
            .select_json(&funnel::curve_sql(&self.db, spec))
            .map_err(QueryError::Backend)?;
        let rows: Vec<(i64, u64, u64)> = r["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                (
                    row["ms"].as_i64().unwrap_or(0),
                    row["ev"].as_u64().unwrap_or(0),
                    row["cens"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let mut at_risk: u64 = rows.iter().map(|(_, e, c)| e + c).sum();
        let mut survival = 1.0f64;
        let mut out = Vec::with_capacity(rows.len());
        for (ms, events, censored) in rows {
            if events > 0 {
                survival *= 1.0 - events as f64 / at_risk as f64;
            }
            out.push(CurvePoint {
                seconds: ms as f64 / 1000.0,
                converted: 1.0 - survival,
                at_risk,
            });
            at_risk -= events + censored;
        }
        Ok(out)
    }
}

/// A `person_history` row: one `$set` (kind 1), `$set_once` (2) or person
/// record (3) write, for properties as of a time.
fn history_row(
    did: &str,
    ts: i64,
    seq: u64,
    kind: u8,
    set: &serde_json::Map<String, Value>,
) -> String {
    let keys: Vec<&String> = set.keys().collect();
    let values: Vec<String> = set.values().map(value_string_form).collect();
    let nulls: Vec<u8> = set.values().map(|v| u8::from(v.is_null())).collect();
    json!({"distinct_id": did, "timestamp": ts, "seq": seq, "kind": kind,
           "keys": keys, "values": values, "nulls": nulls})
    .to_string()
}

/// A `group_props` row: one property write (last write by `seq` wins).
fn group_row(idx: u8, gkey: &str, k: &str, v: &Value, seq: u64) -> String {
    let s = value_string_form(v);
    json!({
        "group_type_index": idx,
        "group_key": gkey,
        "key": k,
        "is_null": u8::from(v.is_null()),
        "lower": sql::lower_form(&s),
        "num": sql::num_key(&s),
        "date": sql::date_key(&s),
        "value": s,
        "seq": seq,
    })
    .to_string()
}

/// Refuses answers that depend on how the unordered engine assigns an
/// event matching several steps (stage B's `amb` flag).
fn refuse_ambiguous_ties(r: &Value) -> Result<(), QueryError> {
    let amb = r["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| row["amb"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    if amb == 2 {
        return Err(QueryError::Unsupported(
            "an actor with more than 65536 `totals` attempts is not supported by the \
             ClickHouse backend yet"
                .into(),
        ));
    }
    if amb != 0 {
        return Err(QueryError::Unsupported(
            "more than 8 events matching several steps of an unordered funnel for one actor \
             (SEMANTICS rule 8) are not supported by the ClickHouse backend yet"
                .into(),
        ));
    }
    Ok(())
}

/// Breakdown rows of an aggregation answer: (value, (step counts, row)),
/// ordered as the engine orders them.
fn breakdown_rows(q: &FunnelQuery, r: &Value, n: usize) -> Vec<(Value, (Vec<u64>, Value))> {
    let mut rows: Vec<(Value, (Vec<u64>, Value))> = r["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let counts = (0..n)
                .map(|k| row[format!("c{k}")].as_u64().unwrap_or(0))
                .collect();
            (bd_output(q, &row["bd"]), (counts, row.clone()))
        })
        .collect();
    dropscope_engine::funnel::sort_rows(&mut rows, |(c, _)| c);
    rows
}

/// Builds the steps of one row of the aggregation (all zero when absent).
fn step_results(row: Option<&Value>, n: usize, names: &[String]) -> Vec<StepResult> {
    let get_u = |k: &str| row.and_then(|r| r[k].as_u64()).unwrap_or(0);
    let get_f = |k: &str| row.and_then(|r| r[k].as_f64());
    let counts: Vec<u64> = (0..n).map(|k| get_u(&format!("c{k}"))).collect();
    let first = counts.first().copied().unwrap_or(0);
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let wilson = |a: u64, b: u64| {
        let (lo, hi) = dropscope_stats::wilson_interval(a.min(b), b, 0.95).unwrap_or((0.0, 1.0));
        [lo, hi]
    };
    (0..n)
        .map(|s| {
            let count = counts[s];
            let prev = if s == 0 { count } else { counts[s - 1] };
            let has_gaps = s > 0 && get_u(&format!("n{s}")) > 0;
            let one_if_any = if count > 0 { 1.0 } else { 0.0 };
            StepResult {
                order: s,
                name: names[s].clone(),
                count,
                conversion_from_first: if s == 0 {
                    one_if_any
                } else {
                    ratio(count, first)
                },
                conversion_from_previous: if s == 0 {
                    one_if_any
                } else {
                    ratio(count, prev)
                },
                conversion_from_first_interval: wilson(count, first),
                conversion_from_previous_interval: wilson(count, prev),
                dropped: prev.saturating_sub(count),
                in_progress: if s == 0 { 0 } else { get_u(&format!("ip{s}")) },
                average_conversion_time: if has_gaps {
                    get_f(&format!("avg{s}"))
                } else {
                    None
                },
                median_conversion_time: if has_gaps {
                    get_f(&format!("med{s}"))
                } else {
                    None
                },
            }
        })
        .collect()
}

/// Checks that a query is in the supported subset and compiles its SQL
/// pieces (the date range is filled in later). Invalid queries are refused
/// as [`QueryError::Invalid`] (the engine's validation), unsupported ones as
/// [`QueryError::Unsupported`]. Cohorts are not resolved here (that needs
/// the database's state): use [`ClickHouse::funnel_spec`] for SQL that runs.
pub fn check_supported(q: &FunnelQuery) -> Result<FunnelSpec, QueryError> {
    if q.kind != QueryKind::Funnel {
        return dispatch::check(q);
    }
    compile(q, None)
}

impl ClickHouse {
    /// [`check_supported`] with this database's cohorts resolved: the spec
    /// every query kind's SQL is built from.
    pub fn funnel_spec(&self, q: &FunnelQuery) -> Result<FunnelSpec, QueryError> {
        if q.kind != QueryKind::Funnel {
            return dispatch::check(q);
        }
        let data = sql::CohortData {
            cohorts: &self.cohorts,
            identity: &self.identity,
        };
        compile(q, Some(&data))
    }
}

fn unsupported<T>(what: &str) -> Result<T, QueryError> {
    Err(QueryError::Unsupported(format!(
        "{what} is not supported by the ClickHouse backend yet"
    )))
}

/// The actor expression of an aggregation (the engine's
/// `parse_aggregation`; SEMANTICS rule 13).
fn actor_kind(a: Option<&str>) -> Result<ActorKind, QueryError> {
    let Some(a) = a.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(ActorKind::Person);
    };
    if a == "person" || a == "person_id" {
        return Ok(ActorKind::Person);
    }
    if a == "distinct_id" {
        return Ok(ActorKind::Expr("distinct_id".into()));
    }
    if let Some(g) = a.strip_prefix("group:") {
        let g: u8 = g.parse().ok().filter(|g| *g < 5).ok_or_else(|| {
            QueryError::invalid(
                "aggregation",
                format!("group index must be 0..4, got {g:?}"),
            )
        })?;
        return Ok(ActorKind::Expr(sql::prop_value(&format!("$group_{g}"))));
    }
    if let Some(k) = a
        .strip_prefix("event_property:")
        .or_else(|| a.strip_prefix("properties."))
    {
        return Ok(ActorKind::Expr(sql::prop_value(k)));
    }
    if let Some(k) = a
        .strip_prefix("person_property:")
        .or_else(|| a.strip_prefix("person.properties."))
    {
        return Ok(ActorKind::Expr(sql::person_value(k)));
    }
    Err(QueryError::invalid(
        "aggregation",
        format!("unknown aggregation {a:?}: use person, group:N, event_property:<key>, distinct_id or person_property:<key>"),
    ))
}

/// The breakdown: (keys, attribution) for stage B, and stage A's value
/// expression and partitioning (the engine's `compile_breakdown`).
type CompiledBreakdown = (Option<(Vec<String>, Touch)>, Option<String>, Part);

fn compile_breakdown(q: &FunnelQuery, sc: sql::Scope<'_>) -> Result<CompiledBreakdown, QueryError> {
    // The same checks (and messages) as the engine.
    let Some(dropscope_engine::plan::BreakdownShape {
        kind,
        names: keys,
        attribution,
        attribution_step: step,
        group_index: gi,
        cohort_ids,
    }) = dropscope_engine::plan::breakdown_shape(q)?
    else {
        return Ok((None, None, Part::None));
    };
    if kind == BreakdownType::Cohort {
        // Partition values are tagged (`events::Part`): the k-th listing of
        // a cohort is `<k>:<id>`, so that a cohort listed twice is two
        // partitions (the engine runs the actor once per listing and counts
        // both under the one value) with the same shown value (`<id>`).
        let mut parts: Vec<(String, String)> = Vec::new();
        for (i, &id) in cohort_ids.iter().enumerate() {
            let cond = if id == 0 {
                "1".to_string()
            } else {
                sql::cohort_sql(sc, id, &format!("breakdown.cohorts[{i}]"))?
            };
            let before = cohort_ids[..i].iter().filter(|&&x| x == id).count();
            parts.push((format!("{before}:{id}"), cond));
        }
        return Ok((Some((vec![], Touch::Part)), None, Part::Cohorts(parts)));
    }
    let tagged = matches!(attribution, Attribution::AllEvents | Attribution::Step);
    let values: Vec<String> = match (kind, tagged) {
        (BreakdownType::Event | BreakdownType::EventMetadata, false) => {
            keys.iter().map(|k| sql::prop_value(k)).collect()
        }
        (BreakdownType::Event | BreakdownType::EventMetadata, true) => {
            keys.iter().map(|k| sql::prop_tagged(k)).collect()
        }
        (BreakdownType::Person, false) => keys.iter().map(|k| sql::person_value(k)).collect(),
        (BreakdownType::Person, true) => keys.iter().map(|k| sql::person_tagged(k)).collect(),
        (BreakdownType::Group, false) => vec![sql::group_value(gi, &keys[0])],
        (BreakdownType::Group, true) => vec![sql::group_tagged(gi, &keys[0])],
        (BreakdownType::Cohort, _) => unreachable!("handled above"),
    };
    let bd = format!("[{}]", values.join(", "));
    let (touch, part) = match attribution {
        Attribution::FirstTouch => (Touch::First, Part::None),
        Attribution::LastTouch => (Touch::Last, Part::None),
        Attribution::AllEvents => (Touch::Part, Part::Value),
        Attribution::Step => (Touch::Part, Part::Step(step)),
    };
    let n = values.len();
    let keys = if keys.len() == n {
        keys
    } else {
        keys[..n].to_vec()
    };
    Ok((Some((keys, touch)), Some(bd), part))
}

/// The output value of a breakdown row from its raw `Array(String)` value
/// (the engine's `bd_value`): cohort ids as numbers, group values as plain
/// strings, everything else boxed as a list (`["Other"]` for the rest).
pub(crate) fn bd_output(q: &FunnelQuery, raw: &Value) -> Value {
    let kind = q
        .breakdown
        .as_ref()
        .and_then(|b| b.kind)
        .unwrap_or_default();
    let first = raw
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match kind {
        BreakdownType::Group => Value::String(first),
        BreakdownType::Cohort => match first.parse::<u64>() {
            Ok(id) if raw.as_array().is_some_and(|a| a.len() == 1) => Value::from(id),
            _ => raw.clone(),
        },
        _ => raw.clone(),
    }
}

/// The engine's display label of a breakdown value.
fn bd_display(v: &Value) -> String {
    match v {
        Value::Number(n) if n.as_u64() == Some(0) => "all users".into(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn compile(q: &FunnelQuery, data: Option<&sql::CohortData<'_>>) -> Result<FunnelSpec, QueryError> {
    dropscope_engine::plan::validate(q)?;
    let sc = sql::Scope::new(data);
    if q.kind != QueryKind::Funnel {
        return unsupported(&format!("query kind {:?}", q.kind));
    }
    if q.counting == Counting::Totals && q.order == FunnelOrder::Unordered {
        return Err(QueryError::invalid(
            "counting",
            "`totals` counting needs an ordered or strict funnel",
        ));
    }
    // Ordered funnels: an exclusion hit on an attempt whose next slot
    // already holds its start (reached by skipping an optional step) is
    // harmless in the slot emulation, since that slot keeps the start until
    // the attempt is replaced (`funnel::ordered_layers`). Strict clearing
    // can empty that slot again, which the emulation does not model.
    if !q.exclusions.is_empty()
        && q.order == FunnelOrder::Strict
        && q.steps.iter().any(|s| s.optional)
    {
        return unsupported("exclusions together with optional steps in a strict funnel");
    }
    if q.counting == Counting::Totals {
        // The engine tallies every attempt under one key, ignoring the
        // breakdown; only event first/last touch (one partition, list
        // values) is known to give the same single `[]` row here.
        if let Some(b) = &q.breakdown {
            let event = matches!(b.kind, None | Some(BreakdownType::Event));
            let touch = matches!(
                b.attribution.unwrap_or_default(),
                Attribution::FirstTouch | Attribution::LastTouch
            );
            if !event || !touch || b.cohorts.is_some() {
                return unsupported(
                    "`totals` counting with a breakdown other than an event first/last touch one",
                );
            }
        }
    }
    let mut exclusions = Vec::new();
    for (i, x) in q.exclusions.iter().enumerate() {
        exclusions.push(sql::step_condition_in(
            sc,
            x.event.as_deref(),
            x.action.as_ref(),
            x.properties.as_ref(),
            &format!("exclusions[{i}]"),
            true,
        )?);
    }
    dropscope_core::time::parse_tz(q.timezone.as_deref())?;
    let mut steps = Vec::new();
    let mut first_time = Vec::new();
    for (i, s) in q.steps.iter().enumerate() {
        let field = format!("steps[{i}]");
        let cond = sql::step_condition_in(
            sc,
            s.event.as_deref(),
            s.action.as_ref(),
            s.properties.as_ref(),
            &field,
            true,
        )?;
        first_time.push(match s.math {
            Some(StepMath::FirstTimeForUser) => Some(sql::step_condition_in(
                sc,
                s.event.as_deref(),
                s.action.as_ref(),
                s.properties.as_ref(),
                &field,
                false,
            )?),
            Some(StepMath::FirstTimeForUserWithFilters) => Some(cond.clone()),
            _ => None,
        });
        steps.push(cond);
    }
    let global = sql::filters_in(sc, q.properties.as_ref(), "properties")?;
    let actor = actor_kind(q.aggregation.as_deref())?;
    let (breakdown, bd, part) = compile_breakdown(q, sc)?;
    Ok(FunnelSpec {
        steps,
        global,
        from_ms: 0,
        to_ms: 0,
        window_ms: Window::effective_ms(q.window.as_ref()),
        breakdown,
        keep: None,
        order: q.order,
        keep_all: q.order == FunnelOrder::Strict,
        totals: q.counting == Counting::Totals,
        exclusions,
        excl_ranges: q
            .exclusions
            .iter()
            .map(|x| (x.from_step, x.to_step))
            .collect(),
        optional: q.steps.iter().map(|s| s.optional).collect(),
        within: q
            .steps
            .iter()
            .map(|s| s.within.as_ref().and_then(Window::ms))
            .collect(),
        min_gap: q
            .steps
            .iter()
            .map(|s| s.min_gap.as_ref().and_then(Window::ms))
            .collect(),
        data: DataSpec {
            actor,
            bd,
            part,
            first_time,
            step_free: false,
        },
    })
}

impl Backend for ClickHouse {
    fn load(&mut self, records: &[Record]) -> Result<(), String> {
        self.append(records)
    }

    fn query(&self, q: &FunnelQuery) -> Result<QueryResult, QueryError> {
        self.run(q)
    }
}

/// Maps canonical person ids of distinct ids (for tests and tooling).
pub fn persons_of(ch: &ClickHouse) -> HashMap<String, u64> {
    ch.identity.snapshot()
}

/// Quotes a string for ClickHouse SQL (re-exported for tooling).
pub fn literal(s: &str) -> String {
    quote_str(s)
}
