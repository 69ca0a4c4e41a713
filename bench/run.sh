#!/usr/bin/env bash
# Tollgate benchmark: POST /v1/check, POST /v1/usage (spread and on one hot counter) and
# POST /v1/usage/batch under wrk, checks again after a million stored events, the server's
# peak memory, against pgbench baselines on the same throwaway PostgreSQL 15. See
# bench/README.md.
#
#   bash bench/run.sh
#
# Environment: DURATION (10s), CONNECTIONS (32), THREADS (2), CUSTOMERS (1000), WARMUP (2s, 0 = none),
# GROWTH_EVENTS (1000000: raw events loaded through the batch API before the checks are run again),
# CARGO_TARGET_DIR (/tmp/tollgate-bench-target), PG_BIN (/usr/lib/postgresql/15/bin),
# STATEMENTS=1 (diagnostic: load pg_stat_statements and print the queries per HTTP request),
# EXPLAIN=1 (after the growth load, write the hot statements' plans to bench/results/explain.txt),
# CITUS=1 (the same rows with Tollgate on a local Citus cluster: a coordinator and two workers on
# this machine, every table distributed by tenant; results in bench/results/latest-citus.json;
# Citus must be installed: bash ../shared/citus/build.sh).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$BENCH_DIR")"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
CUSTOMERS="${CUSTOMERS:-1000}"
WARMUP="${WARMUP:-2s}"
STATEMENTS="${STATEMENTS:-0}"
EXPLAIN="${EXPLAIN:-0}"
CITUS="${CITUS:-0}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tollgate-bench-target}"
PY="${PYTHON:-python3}"
HELPER="$BENCH_DIR/bench.py"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Durations in seconds (wrk takes 10s/1m, pgbench takes plain seconds).
to_seconds() {
  local d="$1"
  case "$d" in
    *ms) die "duration too short: $d" ;;
    *s) echo "${d%s}" ;;
    *m) echo $(( ${d%m} * 60 )) ;;
    *h) echo $(( ${d%h} * 3600 )) ;;
    *) echo "$d" ;;
  esac
}
DURATION_S="$(to_seconds "$DURATION")"
WARMUP_S="$(to_seconds "$WARMUP")"
[[ "$DURATION_S" =~ ^[0-9]+$ && "$DURATION_S" -ge 1 ]] || die "bad DURATION: $DURATION"
[[ "$WARMUP_S" =~ ^[0-9]+$ ]] || die "bad WARMUP: $WARMUP"
[[ "$CONNECTIONS" =~ ^[0-9]+$ && "$CONNECTIONS" -ge "$THREADS" ]] || die "CONNECTIONS must be >= THREADS"
[[ "$CUSTOMERS" =~ ^[0-9]+$ && "$CUSTOMERS" -ge 1 ]] || die "bad CUSTOMERS: $CUSTOMERS"
# Hard cap for each load-generator run: duration + generous slack.
RUN_TIMEOUT=$(( DURATION_S + 60 ))

for tool in curl "$PY" "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/pgbench" "$PG_BIN/psql"; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool"
done
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  fi
  command -v wrk >/dev/null 2>&1 || die "wrk is not installed (apt-get install -y wrk)"
fi

# --- temp dir and cleanup -----------------------------------------------------------------
WORK="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
chmod 755 "$WORK"
PGDATA="$WORK/pg"
OUT="$WORK/out"
mkdir -p "$OUT"
TOLLGATE_PID=""
PG_STARTED=0
WORKER_DATA=()

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$TOLLGATE_PID" ] && kill -0 "$TOLLGATE_PID" 2>/dev/null; then
    kill "$TOLLGATE_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$TOLLGATE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$TOLLGATE_PID" 2>/dev/null || true
  fi
  if [ "$PG_STARTED" = 1 ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -t 30 -w stop >/dev/null 2>&1 || true
    for w in "${WORKER_DATA[@]}"; do
      as_pg "$PG_BIN/pg_ctl" -D "$w" -m fast -t 30 -w stop >/dev/null 2>&1 || true
    done
  fi
  if [ "$rc" -ne 0 ] && [ -f "$WORK/tollgate.log" ]; then
    log "tollgate log (tail):"; tail -n 20 "$WORK/tollgate.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. build -------------------------------------------------------------------------------
log "building release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$REPO" && timeout 3600 cargo build --release --locked --quiet) || die "cargo build failed"
BIN="$CARGO_TARGET_DIR/release/tollgate"
[ -x "$BIN" ] || die "no binary at $BIN"

# --- 2. PostgreSQL --------------------------------------------------------------------------
PG_PORT="$("$PY" "$HELPER" freeport)"
mkdir -p "$PGDATA"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PGDATA"; fi
log "initdb + start PostgreSQL on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
PG_STARTED=1
PG_OPTS="-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1"
PRELOAD=""
if [ "$CITUS" = 1 ]; then
  [ -f "$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || pg_config --pkglibdir)/citus.so" ] \
    || die "Citus is not installed: bash ../shared/citus/build.sh"
  [ "$EXPLAIN" = 1 ] && die "EXPLAIN=1 is for the single server"
  PRELOAD="citus"
  CITUS_OPTS="-c wal_level=logical -c max_prepared_transactions=100 -c max_connections=300"
  PG_OPTS="$PG_OPTS $CITUS_OPTS"
fi
if [ "$STATEMENTS" = 1 ]; then
  PRELOAD="${PRELOAD:+$PRELOAD,}pg_stat_statements"
  PG_OPTS="$PG_OPTS -c pg_stat_statements.track_planning=on"
fi
if [ -n "$PRELOAD" ]; then PG_OPTS="$PG_OPTS -c shared_preload_libraries=$PRELOAD"; fi
PG_OPTS="$PG_OPTS ${PG_EXTRA_OPTS:-}"
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -t 60 -w -o "$PG_OPTS" start >/dev/null \
  || { cat "$PGDATA/server.log" >&2 || true; die "PostgreSQL did not start"; }
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE tollgate" -c "CREATE DATABASE pgbench_select" \
  -c "CREATE DATABASE pgbench_usage"

PG_PID="$(head -n1 "$PGDATA/postmaster.pid")"
if [ "$CITUS" = 1 ]; then
  # Two worker nodes beside the coordinator, the extension in the tollgate database of each,
  # the workers registered; Tollgate's migrations then distribute every table.
  "${PSQL[@]}" -d tollgate -c "CREATE EXTENSION citus" \
    -c "SELECT citus_set_coordinator_host('127.0.0.1', $PG_PORT)"
  for i in 1 2; do
    w="$WORK/worker$i"; WORKER_DATA+=("$w"); mkdir -p "$w"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$w"; fi
    wport="$("$PY" "$HELPER" freeport)"
    as_pg "$PG_BIN/initdb" -D "$w" -U postgres --auth=trust >"$WORK/initdb-w$i.log" 2>&1 \
      || { cat "$WORK/initdb-w$i.log" >&2; die "initdb of worker $i failed"; }
    as_pg "$PG_BIN/pg_ctl" -D "$w" -l "$w/server.log" -t 60 -w \
      -o "-p $wport -k $w -c listen_addresses=127.0.0.1 -c shared_preload_libraries=citus $CITUS_OPTS" \
      start >/dev/null || { cat "$w/server.log" >&2 || true; die "worker $i did not start"; }
    "$PG_BIN/psql" -h 127.0.0.1 -p "$wport" -U postgres -X -q -v ON_ERROR_STOP=1 -d postgres \
      -c "CREATE DATABASE tollgate"
    "$PG_BIN/psql" -h 127.0.0.1 -p "$wport" -U postgres -X -q -v ON_ERROR_STOP=1 -d tollgate \
      -c "CREATE EXTENSION citus"
    "${PSQL[@]}" -d tollgate -c "SELECT citus_add_node('127.0.0.1', $wport)" >/dev/null
    PG_PID="$PG_PID,$(head -n1 "$w/postmaster.pid")"
  done
  log "Citus: coordinator on $PG_PORT and two workers"
fi
export BENCH_PG_PID="$PG_PID"
# CPU counters around a measured run (bench.py add_cpu): the machine, the server ($1), this
# PostgreSQL, and the load generator (the children of this shell, $$, reaped meanwhile).
cpu_before() {
  BENCH_CPU_BEFORE="$("$PY" "$HELPER" cpu "${1:-}" "$PG_PID" "$$")"; export BENCH_CPU_BEFORE
  unset BENCH_CPU_AFTER
}
cpu_after() { BENCH_CPU_AFTER="$("$PY" "$HELPER" cpu "${1:-}" "$PG_PID" "$$")"; export BENCH_CPU_AFTER; }
checkpoint() { "${PSQL[@]}" -d postgres -c "CHECKPOINT"; }

# --- 3. Tollgate ----------------------------------------------------------------------------
TG_PORT="$("$PY" "$HELPER" freeport)"
ADMIN_TOKEN="bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
BASE="http://127.0.0.1:$TG_PORT"
log "starting tollgate on $BASE"
mkdir -p "$WORK/tollgate"
# Run from the temp dir so no config/default.toml or .tollgate/ from the checkout is used.
(
  cd "$WORK/tollgate"
  exec env -u TOLLGATE_CONFIG \
    DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/tollgate" \
    TOLLGATE_LISTEN="127.0.0.1:$TG_PORT" \
    TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" \
    TOLLGATE_DATA_DIR="$WORK/tollgate/data" \
    TOLLGATE_LOG=warn \
    "$BIN" serve
) >"$WORK/tollgate.log" 2>&1 &
TOLLGATE_PID=$!
ready=0
for _ in $(seq 1 300); do   # up to ~30 s (migrations run at start)
  kill -0 "$TOLLGATE_PID" 2>/dev/null || die "tollgate exited during start"
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)" = 200 ]; then
    ready=1; break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || die "tollgate did not become ready"

# --- 4. data --------------------------------------------------------------------------------
log "setup: tenant, feature, unlimited default plan, $CUSTOMERS customers"
API_KEY="$(timeout 600 "$PY" "$HELPER" setup "$BASE" "$ADMIN_TOKEN" "$CUSTOMERS")" || die "setup failed"
"${PSQL[@]}" -d tollgate -c "VACUUM ANALYZE"
if [ "$STATEMENTS" = 1 ]; then "${PSQL[@]}" -d tollgate -c "CREATE EXTENSION pg_stat_statements"; fi

# --- 5. wrk ---------------------------------------------------------------------------------
run_wrk() {  # name path [mode [connections]]  (mode: one | batch:N | hot | get; see wrk.lua)
  local name="$1" path="$2" mode="${3:-one}" conns="${4:-$CONNECTIONS}" per=1
  case "$mode" in batch:*) per="${mode#batch:}" ;; esac
  if [ "$WARMUP_S" -gt 0 ]; then
    timeout $(( WARMUP_S + 60 )) wrk -t"$THREADS" -c"$conns" -d"${WARMUP_S}s" \
      -s "$BENCH_DIR/wrk.lua" "$BASE" -- "$path" "$API_KEY" "$CUSTOMERS" "$mode" >"$OUT/$name.warmup.txt" 2>&1 \
      || die "wrk warmup for $name failed"
  fi
  checkpoint
  log "wrk $name: POST $path ($mode) -t$THREADS -c$conns -d$DURATION"
  if [ "$STATEMENTS" = 1 ]; then "${PSQL[@]}" -d tollgate -c "SELECT pg_stat_statements_reset()" >/dev/null; fi
  cpu_before "$TOLLGATE_PID"
  timeout "$RUN_TIMEOUT" wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency \
    -s "$BENCH_DIR/wrk.lua" "$BASE" -- "$path" "$API_KEY" "$CUSTOMERS" "$mode" >"$OUT/$name.txt" 2>&1 \
    || { cat "$OUT/$name.txt" >&2; die "wrk $name failed"; }
  cpu_after "$TOLLGATE_PID"
  BENCH_PID="$TOLLGATE_PID" "$PY" "$HELPER" wrk "$OUT/$name.json" "$per" <"$OUT/$name.txt"
  grep -E 'Requests/sec|^ +(50|99)%|Non-2xx|Socket errors' "$OUT/$name.txt" | sed 's/^/    /' >&2 || true
  if [ "$STATEMENTS" = 1 ]; then
    local n
    n="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$OUT/$name.json")"
    log "statements per $name request (top 15 by calls; includes the background worker):"
    "${PSQL[@]}" -d tollgate -P pager=off -c "
      SELECT round(calls::numeric / GREATEST($n, 1), 2) AS per_req,
             round(mean_exec_time::numeric, 3) AS mean_ms,
             round(plans::numeric / GREATEST(calls, 1), 2) AS plans_per_call,
             round(mean_plan_time::numeric, 3) AS plan_ms,
             left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
      FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'tollgate')
      ORDER BY calls DESC LIMIT 15" >&2
  fi
}
events() { "${PSQL[@]}" -d tollgate -At -c "SELECT count(*) FROM usage_events"; }
run_wrk check /v1/check
# The floor under every check: the same HTTP stack and layers, no work (bench/README.md).
run_wrk healthz /healthz get
run_wrk usage /v1/usage
run_wrk usage_batch /v1/usage/batch batch:100
run_wrk usage_hot /v1/usage hot 64
# Growth: at least GROWTH_EVENTS raw events through the batch API, then the checks again.
GROWTH_EVENTS="${GROWTH_EVENTS:-1000000}"
while [ "$(events)" -lt "$GROWTH_EVENTS" ]; do
  log "loading events through /v1/usage/batch: $(events) of $GROWTH_EVENTS"
  timeout 600 wrk -t"$THREADS" -c"$CONNECTIONS" -d10s -s "$BENCH_DIR/wrk.lua" "$BASE" \
    -- /v1/usage/batch "$API_KEY" "$CUSTOMERS" batch:1000 >"$OUT/load.txt" 2>&1 \
    || { cat "$OUT/load.txt" >&2; die "loading events failed"; }
done
LOADED_EVENTS="$(events)"
log "$LOADED_EVENTS usage events stored"
# As before the first check run (after the setup): VACUUM ANALYZE, so that both check runs start
# from a vacuumed, analyzed database and differ only in what is stored. Otherwise the
# autovacuum PostgreSQL starts for the rows just inserted runs during the measured checks and
# takes CPU from them on a small machine.
"${PSQL[@]}" -d tollgate -c "VACUUM ANALYZE"
run_wrk check_grown /v1/check
if [ "$EXPLAIN" = 1 ]; then
  # The plans of the hot statements at this size, nested ones included (auto_explain logs
  # the statements inside tollgate_record_usage_batch).
  log "EXPLAIN (ANALYZE, BUFFERS) at $LOADED_EVENTS events -> $BENCH_DIR/results/explain.txt"
  mkdir -p "$BENCH_DIR/results"
  LOG_BEFORE="$(wc -c <"$PGDATA/server.log")"
  "$PY" "$HELPER" explain-sql "$REPO" >"$OUT/explain.sql"
  "${PSQL[@]}" -d tollgate -f "$OUT/explain.sql" >"$OUT/explain.txt" 2>&1 \
    || { cat "$OUT/explain.txt" >&2; die "explain failed"; }
  {
    echo "# EXPLAIN (ANALYZE, BUFFERS) with $LOADED_EVENTS usage events stored ($(date -u +%Y-%m-%d))"
    cat "$OUT/explain.txt"
    echo
    echo "# auto_explain: the statements inside tollgate_record_usage_batch (100 events)"
    tail -c +"$((LOG_BEFORE + 1))" "$PGDATA/server.log" | grep -v '^\s*$'
  } >"$BENCH_DIR/results/explain.txt"
fi
log "pages: portal and console for 20 features and 100 invoices; /v1/me/check next to /v1/check"
timeout 600 "$PY" "$HELPER" pages "$BASE" "$ADMIN_TOKEN" "$OUT/pages.json" || die "pages bench failed"

# Stop tollgate so the baselines get the machine to themselves, as the HTTP runs did. Its
# peak memory first.
"$PY" - "$TOLLGATE_PID" >"$OUT/rss.json" <<'PY'
import json, sys
for line in open(f"/proc/{sys.argv[1]}/status"):
    if line.startswith("VmHWM:"):
        print(json.dumps({"server_peak_rss_mb": round(int(line.split()[1]) / 1024, 1)}))
PY
kill "$TOLLGATE_PID" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "$TOLLGATE_PID" 2>/dev/null || break; sleep 0.1; done
kill -9 "$TOLLGATE_PID" 2>/dev/null || true
TOLLGATE_PID=""

# --- 6. pgbench -----------------------------------------------------------------------------
PGBENCH=("$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres)
run_pgbench() {  # name db [pgbench args...]
  local name="$1" db="$2"; shift 2
  local logdir="$OUT/$name.logs" conns="${HOT_CONNECTIONS:-$CONNECTIONS}"
  mkdir -p "$logdir"
  if [ "$WARMUP_S" -gt 0 ]; then
    timeout $(( WARMUP_S + 60 )) "${PGBENCH[@]}" -n -c "$conns" -j "$THREADS" -T "$WARMUP_S" \
      "$@" "$db" >"$OUT/$name.warmup.txt" 2>&1 || { cat "$OUT/$name.warmup.txt" >&2; die "pgbench warmup $name failed"; }
  fi
  checkpoint
  # The measured run: prepared statements (Tollgate's own statements are prepared) and no
  # per-transaction log (-l costs throughput of its own), so the baseline is not handicapped.
  log "pgbench $name: -M prepared -c$conns -j$THREADS -T$DURATION_S $*"
  cpu_before
  timeout "$RUN_TIMEOUT" "${PGBENCH[@]}" -n -M prepared -c "$conns" -j "$THREADS" \
      -T "$DURATION_S" "$@" "$db" >"$OUT/$name.txt" 2>&1 \
    || { cat "$OUT/$name.txt" >&2; die "pgbench $name failed"; }
  cpu_after
  # Latency percentiles from a separate short run, with a sampled per-transaction log.
  local lat_s=$(( DURATION_S < 5 ? DURATION_S : 5 ))
  (cd "$logdir" && timeout "$RUN_TIMEOUT" "${PGBENCH[@]}" -n -M prepared -c "$conns" \
      -j "$THREADS" -T "$lat_s" -l --sampling-rate=0.2 "$@" "$db") >"$OUT/$name.latency.txt" 2>&1 \
    || { cat "$OUT/$name.latency.txt" >&2; die "pgbench $name latency run failed"; }
  "$PY" "$HELPER" pgbench "$OUT/$name.json" "$logdir" <"$OUT/$name.txt"
  grep -E '^(tps|latency average)' "$OUT/$name.txt" | sed 's/^/    /' >&2 || true
}

log "pgbench -i -s 10"
timeout 600 "${PGBENCH[@]}" -i -q -s 10 pgbench_select >"$OUT/pgbench_init.txt" 2>&1 \
  || { cat "$OUT/pgbench_init.txt" >&2; die "pgbench -i failed"; }
run_pgbench pgbench_select pgbench_select -S

"${PSQL[@]}" -d pgbench_usage <<'SQL'
CREATE TABLE usage_events (
    tenant_id    text        NOT NULL,
    event_id     text        NOT NULL,
    customer_id  text        NOT NULL,
    feature_key  text        NOT NULL,
    quantity     numeric     NOT NULL,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE TABLE usage_counters (
    tenant_id    text        NOT NULL,
    customer_id  text        NOT NULL,
    feature_key  text        NOT NULL,
    period_start timestamptz NOT NULL,
    used         numeric     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, customer_id, feature_key, period_start)
);
SQL
run_pgbench pgbench_usage pgbench_usage -f "$BENCH_DIR/pgbench_usage.sql" -D customers="$CUSTOMERS"
# The hot counter: 64 clients upserting one row, one transaction each.
HOT_CONNECTIONS=64 run_pgbench pgbench_hot pgbench_usage -f "$BENCH_DIR/pgbench_hot.sql"

# --- 7. report ------------------------------------------------------------------------------
cat >"$OUT/meta.json" <<EOF
{"duration_s": $DURATION_S, "warmup_s": $WARMUP_S, "connections": $CONNECTIONS, "threads": $THREADS,
 "customers": $CUSTOMERS, "loaded_events": $LOADED_EVENTS, "citus": $([ "$CITUS" = 1 ] && echo true || echo false), "cpus": $(nproc), "git_rev": "$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)",
 "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
EOF
echo
set +e
RESULTS="$BENCH_DIR/results/latest.json"
if [ "$CITUS" = 1 ]; then RESULTS="$BENCH_DIR/results/latest-citus.json"; fi
"$PY" "$HELPER" report "$OUT" "$RESULTS"
rc=$?
set -e
echo "(JSON: $RESULTS)"
exit "$rc"
