#!/usr/bin/env bash
# Starts (or stops) a CURRENT ClickHouse release behind ClickHouse's HTTP
# interface, for checking that the SQL of dropscope's ClickHouse backend
# also runs on modern engines (the other tests use Debian's 18.16 server).
# Installs the `chdb` package (an embedded build of ClickHouse) from PyPI
# into target/tmp/chdb-venv if missing, and serves it with
# scripts/chdb_http.py on 127.0.0.1:$CHDB_HTTP_PORT (18124), data under
# target/chdb/. Prints the server's pid once it answers /ping.
#
#   scripts/chdb.sh          start (no-op if ours is already running)
#   scripts/chdb.sh stop     stop it
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)/target/chdb"
VENV="$(pwd)/target/tmp/chdb-venv"
PORT="${CHDB_HTTP_PORT:-18124}"
PIDFILE="$ROOT/server.pid"

ping_ok() { curl -fsS "http://127.0.0.1:$PORT/ping" 2>/dev/null | grep -q Ok; }

if [ "${1:-start}" = "stop" ]; then
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")" || true
    echo "stopped $(cat "$PIDFILE")"
  else
    echo "not running"
  fi
  rm -f "$PIDFILE"
  exit 0
fi

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && ping_ok; then
  cat "$PIDFILE"
  exit 0
fi
if ping_ok; then
  echo "port $PORT already answers /ping but not from a server this script started" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c "import chdb" 2>/dev/null; then
  echo "installing chdb from PyPI into $VENV" >&2
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q chdb >&2
fi
rm -rf "$ROOT"
mkdir -p "$ROOT"
nohup "$VENV/bin/python" scripts/chdb_http.py --port "$PORT" --path "$ROOT/data" \
  >"$ROOT/server.log" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 1 300); do
  if ping_ok; then
    cat "$PIDFILE"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "chdb server exited:" >&2
    cat "$ROOT/server.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "chdb server did not answer /ping in 60 s" >&2
cat "$ROOT/server.log" >&2
exit 1
