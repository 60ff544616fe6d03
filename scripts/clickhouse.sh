#!/usr/bin/env bash
# Starts (or stops) a private ClickHouse server for dropscope's ClickHouse
# backend tests: loopback only, its own config and data under
# target/clickhouse/, HTTP on $CH_HTTP_PORT (18123), native TCP on
# $CH_TCP_PORT (19000). Installs Debian's clickhouse-server (18.16) if it is
# missing. Prints the server's pid when it answers /ping.
#
#   scripts/clickhouse.sh          start (no-op if ours is already running)
#   scripts/clickhouse.sh stop     stop the server this script started
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)/target/clickhouse"
HTTP_PORT="${CH_HTTP_PORT:-18123}"
TCP_PORT="${CH_TCP_PORT:-19000}"
PIDFILE="$ROOT/server.pid"

ping_ok() { curl -fsS "http://127.0.0.1:$HTTP_PORT/ping" 2>/dev/null | grep -q Ok; }

server_bin() {
  for b in clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}

stop() {
  if [ -f "$PIDFILE" ]; then
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
    fi
    rm -f "$PIDFILE"
    echo "stopped $pid"
  else
    echo "not running"
  fi
}

if [ "${1:-start}" = "stop" ]; then stop; exit 0; fi

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && ping_ok; then
  cat "$PIDFILE"
  exit 0
fi

if ! server_bin >/dev/null; then
  echo "clickhouse-server not found: installing Debian's package" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update >&2
  $SUDO apt-get install -y clickhouse-server clickhouse-client >&2
fi
command -v curl >/dev/null || { echo "curl is needed to wait for the server" >&2; exit 1; }
BIN="$(server_bin)"

if ping_ok; then
  echo "port $HTTP_PORT already answers /ping but not from a server this script started" >&2
  exit 1
fi

mkdir -p "$ROOT/data" "$ROOT/tmp" "$ROOT/user_files" "$ROOT/format_schemas" "$ROOT/log"
cat > "$ROOT/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$ROOT/log/server.log</log>
        <errorlog>$ROOT/log/server.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>64</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$ROOT/data/</path>
    <tmp_path>$ROOT/tmp/</tmp_path>
    <user_files_path>$ROOT/user_files/</user_files_path>
    <format_schema_path>$ROOT/format_schemas/</format_schema_path>
    <users_config>$ROOT/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
cat > "$ROOT/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval><duration>3600</duration><queries>0</queries><errors>0</errors>
            <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval>
        </default>
    </quotas>
</yandex>
XML

nohup "$BIN" --config-file="$ROOT/config.xml" >"$ROOT/log/stdout.log" 2>&1 &
pid=$!
echo "$pid" > "$PIDFILE"
for _ in $(seq 1 300); do
  if ping_ok; then echo "$pid"; exit 0; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "clickhouse-server exited; last log lines:" >&2
    tail -n 30 "$ROOT/log/stdout.log" "$ROOT/log/server.err.log" >&2 2>/dev/null || true
    rm -f "$PIDFILE"
    exit 1
  fi
  sleep 0.1
done
echo "clickhouse-server did not answer /ping on port $HTTP_PORT within 30 s" >&2
tail -n 30 "$ROOT/log/server.err.log" >&2 2>/dev/null || true
exit 1
