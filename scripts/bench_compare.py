"""The comparison half of `dropscope-bench --compare`.

Loads a Parquet file of (person uint32, event utf8, ts int64 ms) into DuckDB
and into chDB (an embedded current ClickHouse), then times the same ordered
funnel in each: the steps given, every step within `window_ms` of the
attempt's first step. Loading is timed apart from querying; the query is run
`reps` times and every time is reported. Prints one JSON object per engine
on stdout: engine, version, load_s, times_ms, counts (persons reaching each
step).

    python bench_compare.py FILE.parquet WINDOW_MS REPS STEP1 STEP2 ...
"""

import json
import sys
import time


def sql_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


def duckdb_run(path, window, reps, steps):
    import duckdb

    con = duckdb.connect()
    t = time.perf_counter()
    con.execute(
        f"CREATE TABLE ev AS SELECT person, event, ts FROM read_parquet({sql_str(path)})"
    )
    load = time.perf_counter() - t
    # One chain per step-1 event: each next step is the earliest event of
    # that step at or after the previous one (an ASOF join); the chain stops
    # at the first step past the window. The earliest next event is the best
    # choice for reaching further steps, so a person's furthest step is the
    # longest chain over all its starts.
    n = len(steps)
    names = ", ".join(sql_str(s) for s in steps)
    parts = [
        f"e AS (SELECT person, ts, event FROM ev WHERE event IN ({names}))",
        f"c1 AS (SELECT person, ts AS t1, ts AS t1_start FROM e WHERE event = {sql_str(steps[0])})",
    ]
    for k in range(2, n + 1):
        parts.append(
            f"s{k} AS (SELECT person, ts FROM e WHERE event = {sql_str(steps[k - 1])})"
        )
        parts.append(
            f"c{k} AS (SELECT c.*, s.ts AS t{k} FROM c{k - 1} c ASOF LEFT JOIN s{k} s "
            f"ON c.person = s.person AND s.ts >= c.t{k - 1})"
        )
    # Steps count only while every earlier one did: a missing or late step k
    # makes every later one NULL or later still (ts grows along the chain).
    level = "1 + " + " + ".join(
        "(" + " AND ".join(f"t{j} IS NOT NULL AND t{j} - t1 <= {window}" for j in range(2, k + 1)) + ")::INT"
        for k in range(2, n + 1)
    )
    sql = (
        "WITH " + ", ".join(parts)
        + f", lv AS (SELECT person, max({level}) AS level FROM c{n} GROUP BY person) "
        + "SELECT level, count(*) FROM lv GROUP BY level"
    )
    times, rows = [], None
    for _ in range(reps):
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return {
        "engine": "duckdb",
        "version": duckdb.__version__,
        "load_s": load,
        "times_ms": times,
        "counts": counts(rows, n),
        "sql": sql,
    }


def chdb_run(path, window, reps, steps):
    import chdb
    from chdb import session

    s = session.Session()
    s.query("CREATE DATABASE IF NOT EXISTS b ENGINE = Atomic")
    t = time.perf_counter()
    s.query(
        "CREATE TABLE b.ev (person UInt32, event LowCardinality(String), ts Int64) "
        "ENGINE = MergeTree ORDER BY (person, ts)"
    )
    s.query(f"INSERT INTO b.ev SELECT person, event, ts FROM file({sql_str(path)}, Parquet)")
    s.query("OPTIMIZE TABLE b.ev FINAL")
    load = time.perf_counter() - t
    n = len(steps)
    conds = ", ".join(f"event = {sql_str(x)}" for x in steps)
    names = ", ".join(sql_str(x) for x in steps)
    sql = (
        f"SELECT level, count() FROM (SELECT person, windowFunnel({window})(toUInt64(ts), {conds}) AS level "
        f"FROM b.ev WHERE event IN ({names}) GROUP BY person) WHERE level > 0 GROUP BY level FORMAT JSONCompact"
    )
    times, res = [], None
    for _ in range(reps):
        t = time.perf_counter()
        res = s.query(sql)
        times.append((time.perf_counter() - t) * 1000)
    rows = [(int(a), int(b)) for a, b in json.loads(res.bytes())["data"]]
    version = s.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')
    s.close()
    return {
        "engine": "clickhouse-windowFunnel",
        "version": f"chdb {chdb.__version__}, ClickHouse {version}",
        "load_s": load,
        "times_ms": times,
        "counts": counts(rows, n),
        "sql": sql,
    }


def counts(rows, n):
    """Persons whose furthest step is >= k, for k = 1..n."""
    at = [0] * (n + 1)
    for level, c in rows:
        if level and level > 0:
            at[int(level)] += int(c)
    return [sum(at[k:]) for k in range(1, n + 1)]


def main():
    path, window, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    steps = sys.argv[4:]
    for run in (duckdb_run, chdb_run):
        print(json.dumps(run(path, window, reps, steps)), flush=True)


if __name__ == "__main__":
    main()
