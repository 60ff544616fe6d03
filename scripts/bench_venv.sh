#!/usr/bin/env bash
# Prints the path of a Python that has the engines `dropscope-bench
# --compare` runs against: DuckDB and chDB (an embedded current ClickHouse),
# both from PyPI. Shares target/tmp/chdb-venv with scripts/chdb.sh and
# installs what is missing there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(pwd)/target/tmp/chdb-venv"
if ! "$VENV/bin/python" -c "import duckdb, chdb" 2>/dev/null; then
  echo "installing duckdb and chdb from PyPI into $VENV" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check duckdb chdb >&2
fi
echo "$VENV/bin/python"
