#!/usr/bin/env bash
# Runs every test of dropscope on a fresh Debian machine with the Rust
# toolchain: formatting, lints, unit/integration/property tests, the
# acceptance cases through the real binary, and a benchmark smoke run.
# Anything a test needs is installed or started here; a missing component
# fails the run, it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES_DIR="${CASES_DIR:-../shared/cases}"
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --all-targets

step "unit, integration and property tests (a real ClickHouse, the real PostHog SDKs and chromium are installed and started by the tests)"
trap 'bash scripts/clickhouse.sh stop >/dev/null 2>&1 || true; bash scripts/chdb.sh stop >/dev/null 2>&1 || true' EXIT
cargo test --workspace --exclude dropscope-clickhouse
# The ClickHouse comparisons cost about a second per query on 18.16 (query
# analysis of the stage B SQL): fewer random cases than the other crates.
PROPTEST_CASES="${CH_PROPTEST_CASES:-40}" cargo test -p dropscope-clickhouse

step "soak smoke: mixed capture and queries against dropscope serve for 10 s, no failed request (BENCHMARKS.md, Soak)"
./target/debug/soak --duration 10s

step "acceptance cases ($CASES_DIR)"
if [ ! -d "$CASES_DIR" ]; then
  echo "acceptance cases not found at $CASES_DIR (set CASES_DIR)" >&2
  exit 1
fi
./target/debug/dropscope cases "$CASES_DIR"

step "acceptance cases on ClickHouse 18.16 (refusals listed apart; a wrong answer fails)"
bash scripts/clickhouse.sh >/dev/null
./target/debug/dropscope cases "$CASES_DIR" --backend clickhouse \
  --clickhouse-url "http://127.0.0.1:${CH_HTTP_PORT:-18123}" --allow-unsupported

step "acceptance cases on a current ClickHouse release (chdb from PyPI): the same SQL must run there"
bash scripts/chdb.sh >/dev/null
./target/debug/dropscope cases "$CASES_DIR" --backend clickhouse \
  --clickhouse-url "http://127.0.0.1:${CHDB_HTTP_PORT:-18124}" --allow-unsupported

step "engine-versus-ClickHouse comparisons of every query kind on the current release too (hand-written logs, few random ones)"
CLICKHOUSE_URL="http://127.0.0.1:${CHDB_HTTP_PORT:-18124}" PROPTEST_CASES="${CHDB_PROPTEST_CASES:-8}" \
  cargo test -p dropscope-clickhouse --test compare_kinds

step "benchmark smoke (embedded cold and warm, DuckDB and ClickHouse windowFunnel on the same data, the same queries on ClickHouse)"
bash scripts/clickhouse.sh >/dev/null
./target/debug/dropscope-bench --events 20000 --smoke --compare \
  --clickhouse-url "http://127.0.0.1:${CH_HTTP_PORT:-18123}" --clickhouse-database dropscope_bench_smoke

step "fuzzing: each cargo-fuzz target for ${FUZZ_SECONDS:=20} s (fuzz/README.md)"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in capture query; do
  mkdir -p "target/fuzz-corpus/$t"
  # pipefail: a crash (cargo fuzz's exit status) fails the step.
  if ! (cd fuzz && cargo fuzz run "$t" --sanitizer none "../target/fuzz-corpus/$t" "corpus/$t" -- \
    -max_total_time="$FUZZ_SECONDS" -dict=dict/json.dict -print_final_stats=1 2>&1 | tail -n 40); then
    echo "fuzz target $t failed: the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
done

step "all green"
