#!/usr/bin/env bash
# A/B of two Tollgate binaries on POST /v1/check: one throwaway PostgreSQL 15, one database
# for each binary (migrated by it, with the same setup as bench/run.sh), then ROUNDS rounds in
# which each binary in turn is started, warmed up and measured under wrk. Interleaving the
# runs spreads the machine's drift over both, which a before/after of two bench/run.sh runs
# cannot do (see bench/README.md, "Comparing two builds").
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY
#
# Build the binaries first, e.g. for a commit:
#   git worktree add /tmp/tg-a COMMIT && (cd /tmp/tg-a && SQLX_OFFLINE=true cargo build --release)
#
# Environment: ROUNDS (5), DURATION (10s), WARMUP (3s), CONNECTIONS (32), THREADS (2),
# CUSTOMERS (1000), PATH_UNDER_TEST (/v1/check), PG_BIN (/usr/lib/postgresql/15/bin),
# A_ADDONS and B_ADDONS (0): how many add-ons every customer of that side has attached (SPEC
# §15; the binary must know add-ons).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
A="$(realpath "${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}")"
B="$(realpath "${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}")"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
CUSTOMERS="${CUSTOMERS:-1000}"
PATH_UNDER_TEST="${PATH_UNDER_TEST:-/v1/check}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PY="${PYTHON:-python3}"
HELPER="$BENCH_DIR/bench.py"

log() { printf '[ab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for x in "$A" "$B"; do [ -x "$x" ] || die "not an executable: $x"; done
command -v wrk >/dev/null || die "wrk is not installed (apt-get install -y wrk)"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

WORK="$(mktemp -d /tmp/tollgate-ab.XXXXXX)"
chmod 755 "$WORK"
PGDATA="$WORK/pg"
SERVER_PID=""
cleanup() {
  local rc=$?
  trap - EXIT
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

PG_PORT="$("$PY" "$HELPER" freeport)"
mkdir -p "$PGDATA"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDATA"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
  -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1" start >/dev/null
export BENCH_PG_PID
BENCH_PG_PID="$(head -n1 "$PGDATA/postmaster.pid")"
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE tollgate_a" -c "CREATE DATABASE tollgate_b"

TG_PORT="$("$PY" "$HELPER" freeport)"
BASE="http://127.0.0.1:$TG_PORT"
ADMIN_TOKEN="ab_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
start() {  # binary database
  mkdir -p "$WORK/run"
  (
    cd "$WORK/run"
    exec env -u TOLLGATE_CONFIG DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$2" \
      TOLLGATE_LISTEN="127.0.0.1:$TG_PORT" TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" \
      TOLLGATE_DATA_DIR="$WORK/run/data" TOLLGATE_LOG=warn "$1" serve
  ) >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail "$WORK/server.log" >&2; die "$1 exited"; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)" = 200 ] && return
    sleep 0.1
  done
  die "$1 did not become ready"
}
stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }

declare -A KEY
for side in a b; do
  bin="$A"; [ "$side" = b ] && bin="$B"
  start "$bin" "tollgate_$side"
  addons="${A_ADDONS:-0}"; [ "$side" = b ] && addons="${B_ADDONS:-0}"
  KEY[$side]="$(ADDONS="$addons" timeout 600 "$PY" "$HELPER" setup "$BASE" "$ADMIN_TOKEN" "$CUSTOMERS")"
  stop
  "${PSQL[@]}" -d "tollgate_$side" -c "VACUUM ANALYZE"
done

measure() {  # side round
  local side="$1" bin="$A" out="$WORK/$1.$2"
  [ "$side" = b ] && bin="$B"
  start "$bin" "tollgate_$side"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$BENCH_DIR/wrk.lua" "$BASE" \
    -- "$PATH_UNDER_TEST" "${KEY[$side]}" "$CUSTOMERS" >/dev/null
  "${PSQL[@]}" -d postgres -c CHECKPOINT
  BENCH_CPU_BEFORE="$("$PY" "$HELPER" cpu "$SERVER_PID" "$BENCH_PG_PID" "$$")"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH_DIR/wrk.lua" "$BASE" \
    -- "$PATH_UNDER_TEST" "${KEY[$side]}" "$CUSTOMERS" >"$out.txt"
  BENCH_CPU_AFTER="$("$PY" "$HELPER" cpu "$SERVER_PID" "$BENCH_PG_PID" "$$")"
  BENCH_CPU_BEFORE="$BENCH_CPU_BEFORE" BENCH_CPU_AFTER="$BENCH_CPU_AFTER" BENCH_PID="$SERVER_PID" \
    "$PY" "$HELPER" wrk "$out.json" 1 <"$out.txt"
  stop
  "$PY" - "$out.json" "$side" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rps = r["rps"]
us = lambda cores: round(cores * 1e6 / rps, 1)
print(f"{sys.argv[3]} {sys.argv[2]} {rps:9.0f}/s p99 {r.get('p99_ms', 0):6.2f} ms "
      f"server {us(r['server_cpu_cores']):5.1f} us pg {us(r['postgres_cpu_cores']):5.1f} us "
      f"idle {r['idle_cores']:.2f}")
PY
}

log "A: $A"
log "B: $B"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate who goes first, so neither side always follows the other's checkpoint.
  if [ $((round % 2)) -eq 1 ]; then measure a "$round"; measure b "$round"
  else measure b "$round"; measure a "$round"; fi
done | tee "$WORK/rounds.txt"
"$PY" - "$WORK/rounds.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for side in "ab":
    rps = [float(r[2].rstrip("/s")) for r in rows if r[1] == side]
    srv = [float(r[7]) for r in rows if r[1] == side]
    pg = [float(r[10]) for r in rows if r[1] == side]
    print(f"{side}: median {statistics.median(rps):.0f}/s (min {min(rps):.0f}, max {max(rps):.0f}); "
          f"server {statistics.median(srv):.1f} us, pg {statistics.median(pg):.1f} us a request")
PY
