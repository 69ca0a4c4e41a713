#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

  bench.py freeport                          print a free TCP port on 127.0.0.1
  bench.py setup BASE_URL ADMIN_TOKEN N      create tenant, feature, plan, N customers; print API key
  bench.py wrk OUT.json [EVENTS] < wrk-output  pick the BENCH_JSON line out of wrk's output
                                             (EVENTS: events per request, for batches)
  bench.py pgbench OUT.json LOGDIR < output  tps from pgbench's output, p50/p99 from its -l logs
  bench.py explain-sql REPO                  the psql script of EXPLAIN=1 (see run.sh)
  bench.py cpu PID PGPID                     print CPU counters (for BENCH_CPU_BEFORE; "" = none)
  bench.py report DIR OUT.json               print the results table and write the JSON
"""

import concurrent.futures
import glob
import json
import math
import os
import re
import socket
import sys
import urllib.error
import urllib.request


def freeport():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def request(method, url, token, body, expect):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    if status not in expect:
        raise SystemExit(f"{method} {url} -> {status}: {text[:500]}")
    return json.loads(text) if text else None


def setup(base, admin_token, n):
    tenant = request("POST", base + "/admin/v1/tenants", admin_token,
                     {"name": "bench", "mode": "test"}, (200, 201))
    key = tenant["api_key"]
    request("POST", base + "/v1/features", key,
            {"key": "calls", "name": "Calls", "type": "metered"}, (200, 201))
    # "hot": one counter that many writers share, with a limit never reached (so every
    # event goes through the ceiling check).
    request("POST", base + "/v1/features", key,
            {"key": "hot", "name": "Hot", "type": "metered"}, (200, 201))
    request("POST", base + "/v1/plans", key,
            {"key": "bench", "name": "Bench", "default": True,
             "entitlements": [{"feature": "calls", "limit": None},
                              {"feature": "hot", "limit": 1000000000000, "reset": "month"}]},
            (200, 201))

    def customer(i):
        request("PUT", f"{base}/v1/customers/c{i}", key, {}, (200, 201))

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        for _ in pool.map(customer, range(n)):
            pass
    # ADDONS=k: k add-ons, each stacking `calls` (SPEC §15), attached to every customer's
    # subscription, so that every check resolves a plan with add-ons stacked on it.
    addons = int(os.environ.get("ADDONS", "0"))
    for j in range(addons):
        request("POST", base + "/v1/addons", key,
                {"key": f"addon{j}", "name": f"Add-on {j}",
                 "prices": [{"interval": "month", "amount": "0", "currency": "usd"}],
                 "entitlements": [{"feature": "calls", "limit": 1000}]}, (200, 201))

    def attach(i):
        sub = request("GET", f"{base}/v1/customers/c{i}/subscription", key, None, (200,))
        for j in range(addons):
            request("POST", f"{base}/v1/subscriptions/{sub['id']}/addons", key,
                    {"addon": f"addon{j}"}, (200,))

    if addons:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            for _ in pool.map(attach, range(n)):
                pass
    # Sanity: the last customer is subscribed and the check answers 200 and allowed.
    check = request("POST", base + "/v1/check", key,
                    {"customer": f"c{n - 1}", "feature": "calls", "quantity": 1}, (200,))
    if not check.get("allowed"):
        raise SystemExit(f"setup: check not allowed: {check}")
    print(key)


def pages(base, admin_token, out, rounds=100):
    """The portal and console pages for a customer with 20 features and 100 invoices, and
    /v1/me/check next to /v1/check: sequential requests on one connection each, latency per
    request (loopback, so it is the server's time plus a little)."""
    import http.client
    import time
    from urllib.parse import urlparse, urlencode

    u = urlparse(base)
    tenant = request("POST", base + "/admin/v1/tenants", admin_token,
                     {"name": "pages", "mode": "test"}, (200, 201))
    key = tenant["api_key"]
    for i in range(20):
        request("POST", base + "/v1/features", key,
                {"key": f"f{i:02}", "name": f"Feature {i:02}", "type": "metered"}, (200, 201))
    ents = [{"feature": f"f{i:02}", "limit": 1000, "reset": "month"} for i in range(20)]
    for plan, amount, default in (("small", "10.00", True), ("big", "20.00", False)):
        request("POST", base + "/v1/plans", key,
                {"key": plan, "name": plan.title(), "default": default, "entitlements": ents,
                 "prices": [{"interval": "month", "amount": amount, "currency": "usd"}]}, (200, 201))
    request("PUT", base + "/v1/customers/heavy", key, {"email": "heavy@example.test"}, (200, 201))
    sub = request("GET", base + "/v1/customers/heavy/subscription", key, None, (200,))
    # 99 plan changes now, each invoiced: 100 invoices with the first.
    for i in range(99):
        plan = "big" if i % 2 == 0 else "small"
        request("POST", f"{base}/v1/subscriptions/{sub['id']}/change", key,
                {"plan": plan, "when": "now"}, (200,))
    for i in range(20):
        request("POST", base + "/v1/usage", key,
                {"customer": "heavy", "feature": f"f{i:02}", "quantity": 10 * i}, (200,))
    session = request("POST", base + "/v1/customer_sessions", key, {"customer": "heavy"}, (201,))

    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    def call(method, path, headers=None, body=None):
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, r.getheader("Set-Cookie") or "", data

    def cookie_of(set_cookie, name):
        m = re.search(name + r"=([^;]+)", set_cookie)
        if not m:
            raise SystemExit(f"no {name} cookie in {set_cookie!r}")
        return m.group(1)

    status, sc, _ = call("GET", "/portal?" + urlencode({"session": session["token"]}))
    if status not in (303, 307):
        raise SystemExit(f"/portal?session= answered {status}")
    portal_cookie = "tg_portal=" + cookie_of(sc, "tg_portal")
    status, sc, body = call("GET", "/console/login")
    login_csrf = cookie_of(sc, "tg_console_login")
    status, sc, _ = call("POST", "/console/login",
                         {"Cookie": f"tg_console_login={login_csrf}",
                          "Content-Type": "application/x-www-form-urlencoded"},
                         urlencode({"csrf": login_csrf, "api_key": key}))
    if status not in (303, 307):
        raise SystemExit(f"/console/login answered {status}")
    console_cookie = "tg_console=" + cookie_of(sc, "tg_console")

    def timed(label, method, path, headers, body=None, n=rounds):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, _sc, data = call(method, path, headers, body)
            times.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise SystemExit(f"{label}: {status} {data[:200]!r}")
        times.sort()
        return {"requests": n, "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
                "bytes": len(data)}

    auth = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    me = {"Authorization": "Bearer " + session["token"], "Content-Type": "application/json"}
    result = {
        "portal": timed("portal", "GET", "/portal", {"Cookie": portal_cookie}),
        "console": timed("console", "GET", "/console", {"Cookie": console_cookie}),
        "console_customer": timed("console customer", "GET", "/console/customers/heavy",
                                  {"Cookie": console_cookie}),
        "check": timed("check", "POST", "/v1/check", auth,
                       json.dumps({"customer": "heavy", "feature": "f01"}), n=10 * rounds),
        "me_check": timed("me check", "POST", "/v1/me/check", me,
                          json.dumps({"feature": "f01"}), n=10 * rounds),
    }
    with open(out, "w") as f:
        json.dump(result, f)


def explain_sql(repo):
    """The psql script of `EXPLAIN=1`: the batched check statement exactly as Tollgate sends
    it (taken from the sqlx offline data, so it cannot drift), and a 100-event call of
    tollgate_record_usage_batch under auto_explain (its inner statements' plans go to the
    server log). Nothing is kept: the usage call is rolled back."""
    needle = "WITH ORDINALITY AS r(tenant_id, key_hash"
    resolve = None
    for path in sorted(glob.glob(os.path.join(repo, ".sqlx", "query-*.json"))):
        with open(path) as f:
            q = json.load(f)["query"]
        if needle in q:
            resolve = q
    if resolve is None:
        raise SystemExit("the batched resolve statement is not in .sqlx")
    n = 100
    fill = lambda v, t: f"array_fill({v}::{t}, ARRAY[{n}])"
    print(f"""\\set ON_ERROR_STOP 1
SELECT tenant_id AS tenant FROM tenants WHERE name = 'bench' \\gset
\\echo '## POST /v1/check: the batched resolve statement, 64 checks'
PREPARE check_batch(text[], bytea[], text[], text[], timestamptz, bool[], text[]) AS
{resolve};
SELECT ARRAY(SELECT 'c' || (g * 13 % 1000) FROM generate_series(1, 64) g) AS customers \\gset
EXPLAIN (ANALYZE, BUFFERS) EXECUTE check_batch(
  array_fill(:'tenant'::text, ARRAY[64]), array_fill(''::bytea, ARRAY[64]),
  :'customers'::text[], array_fill('calls'::text, ARRAY[64]), now(),
  array_fill(false, ARRAY[64]), ARRAY[:'tenant']);
-- The events' stamps as a resolve gives them (before auto_explain, which would log each call).
SELECT tollgate_tenant_stamp(:'tenant', NULL) AS tenant_stamp \\gset
SELECT ARRAY(SELECT tollgate_customer_stamp(:'tenant', 'c' || (g * 7 % 1000))
             FROM generate_series(1, {n}) g) AS customer_stamps \\gset
SET enable_seqscan = off;  -- as on Tollgate's hot connections (db::hot_pool)
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_nested_statements = on;
BEGIN;
SELECT count(*) FILTER (WHERE out_outcome = 'recorded') AS recorded
FROM tollgate_record_usage_batch(
  :'tenant', {fill(":'tenant'", 'text')},
  ARRAY(SELECT 'explain-' || g FROM generate_series(1, {n}) g),
  ARRAY(SELECT 'c' || (g * 7 % 1000) FROM generate_series(1, {n}) g),
  {fill("'calls'", 'text')}, {fill(1, 'numeric')}, {fill('now()', 'timestamptz')},
  {fill("'epoch'", 'timestamptz')}, {fill('NULL', 'timestamptz')}, {fill('NULL', 'text')},
  {fill('true', 'boolean')}, {fill('NULL', 'jsonb')}, {fill('false', 'boolean')},
  {fill('NULL', 'numeric')}, {fill('NULL', 'numeric')}, {fill(0.8, 'numeric')},
  {fill(0.95, 'numeric')}, {fill('NULL', 'text')}, {fill('false', 'boolean')},
  {fill('now()', 'timestamptz')},
  ARRAY(SELECT g::integer FROM generate_series(1, {n}) g),
  {fill('NULL', 'bytea')}, {fill(":'tenant_stamp'", 'text')}, :'customer_stamps'::text[]);
ROLLBACK;
""")


def wrk(out, per_request=1):
    text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    m = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
    if not m:
        raise SystemExit("no BENCH_JSON line in wrk output:\n" + text)
    res = json.loads(m.group(1))
    # Events per second, for a batch endpoint (per_request events in each request).
    res["events_per_s"] = res["rps"] * per_request
    add_rss(res)
    add_cpu(res)
    res["errors"] = res["non200"] + res["socket_errors"]
    with open(out, "w") as f:
        json.dump(res, f)


def percentile(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def pgbench(out, logdir):
    text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    cpu_res = {}
    add_cpu(cpu_res)
    m = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", text, re.M)
    if not m:
        raise SystemExit("no tps line in pgbench output:\n" + text)
    tps = float(m.group(1))
    failed = 0
    fm = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    if fm:
        failed = int(fm.group(1))
    lat = []
    for path in glob.glob(os.path.join(logdir, "pgbench_log.*")):
        with open(path) as f:
            for line in f:
                parts = line.split()
                # client_id transaction_no time script_no time_epoch time_us [...]
                if len(parts) < 3:
                    continue
                if parts[2].isdigit():
                    lat.append(int(parts[2]))
                else:  # "failed" / "skipped"
                    failed += 1
    lat.sort()
    tm = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
    res = {
        "tps": tps,
        "transactions": int(tm.group(1)) if tm else None,
        # From the separate, sampled latency run.
        "latency_samples": len(lat),
        "p50_ms": percentile(lat, 50) / 1000,
        "p90_ms": percentile(lat, 90) / 1000,
        "p99_ms": percentile(lat, 99) / 1000,
        "max_ms": (lat[-1] / 1000) if lat else float("nan"),
        "errors": failed,
        **cpu_res,
    }
    with open(out, "w") as f:
        json.dump(res, f)


def add_rss(res):
    """The server's peak resident memory so far (VmHWM), in MB."""
    pid = os.environ.get("BENCH_PID")
    if not pid:
        return
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    res["server_peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass


def proc_ticks(pid, children=False):
    """utime + stime of pid (+ cutime + cstime: reaped children, e.g. closed backends)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def tree_ticks(root):
    """CPU ticks of root, its reaped children and its live children (PostgreSQL backends).
    root may be several pids, comma-separated (the nodes of a Citus cluster)."""
    roots = str(root).split(",")
    if len(roots) > 1:
        return sum(tree_ticks(r) for r in roots)
    total = proc_ticks(root, children=True)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(root):
            total += int(fields[11]) + int(fields[12])
    return total


def cpu_sample(pid=None, pg_pid=None, client_pid=None):
    """(total jiffies, busy jiffies, ticks of pid, ticks of the PostgreSQL tree, ticks of the
    load generators: client_pid's reaped children) right now."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:8]]
    idle = vals[3] + vals[4]
    return (sum(vals), sum(vals) - idle, proc_ticks(pid) if pid else 0,
            tree_ticks(pg_pid) if pg_pid else 0,
            proc_ticks(client_pid, children=True) if client_pid else 0)


def cpu(pid=None, pg_pid=None, client_pid=None):
    print(*cpu_sample(pid or None, pg_pid or None, client_pid or None))


def add_cpu(res):
    """Adds CPU use from BENCH_CPU_BEFORE to BENCH_CPU_AFTER (outputs of `bench.py cpu PID
    PGPID SHELLPID` around the measured run; AFTER defaults to now) to res: the machine's busy
    share, and the cores used by the server, by PostgreSQL, by the load generator (wrk or
    pgbench: the bench shell's children reaped meanwhile) and left idle."""
    before = os.environ.get("BENCH_CPU_BEFORE")
    if not before:
        return
    pid = os.environ.get("BENCH_PID") or None
    pg_pid = os.environ.get("BENCH_PG_PID") or None
    t0, b0, p0, g0, c0 = (int(x) for x in before.split())
    after = os.environ.get("BENCH_CPU_AFTER")
    if after:
        t1, b1, p1, g1, c1 = (int(x) for x in after.split())
    else:
        t1, b1, p1, g1, c1 = cpu_sample(pid, pg_pid)
    if t1 <= t0:
        return
    res["cpu_busy_pct"] = round(100.0 * (b1 - b0) / (t1 - t0), 1)
    # Elapsed seconds over the same interval, from the all-CPU jiffies.
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        ncpu = sum(1 for line in f if re.match(r"cpu\d", line)) or 1
    seconds = (t1 - t0) / hz / ncpu
    if pid:
        res["server_cpu_cores"] = round((p1 - p0) / hz / seconds, 3)
    if pg_pid:
        res["postgres_cpu_cores"] = round((g1 - g0) / hz / seconds, 3)
    if after and c1 >= c0:
        res["client_cpu_cores"] = round((c1 - c0) / hz / seconds, 3)
    res["idle_cores"] = round(ncpu * (1 - (b1 - b0) / (t1 - t0)), 3)


def report(d, out):
    def load(name):
        p = os.path.join(d, name + ".json")
        if not os.path.exists(p):
            return None
        with open(p) as f:
            return json.load(f)

    meta = load("meta") or {}
    grown = f"POST /v1/check, {meta.get('loaded_events', '?')} events"
    rows = [
        ("check", "POST /v1/check", load("check"), "rps"),
        ("healthz", "GET /healthz (floor)", load("healthz"), "rps"),
        ("usage", "POST /v1/usage", load("usage"), "rps"),
        ("usage_batch", "POST /v1/usage/batch x100", load("usage_batch"), "events_per_s"),
        ("usage_hot", "POST /v1/usage 1 counter", load("usage_hot"), "rps"),
        ("check_grown", grown, load("check_grown"), "rps"),
        ("pgbench_select", "pgbench -S", load("pgbench_select"), "tps"),
        ("pgbench_usage", "pgbench usage script", load("pgbench_usage"), "tps"),
        ("pgbench_hot", "pgbench 1-row upsert", load("pgbench_hot"), "tps"),
    ]
    result = {"meta": meta, "results": {}, "ratios": {}, "targets": {}}
    for key, _label, r, field in rows:
        if r is not None:
            r = dict(r)
            r["throughput"] = r[field]
            result["results"][key] = r

    def thr(k):
        r = result["results"].get(k)
        return r["throughput"] if r else None

    def ratio(a, b):
        ta, tb = thr(a), thr(b)
        return (ta / tb) if ta is not None and tb else None

    res = result["results"]
    ratios = result["ratios"]
    ratios["check_over_pgbench_select"] = ratio("check", "pgbench_select")
    ratios["usage_over_pgbench_usage"] = ratio("usage", "pgbench_usage")
    ratios["batch_events_over_pgbench_usage"] = ratio("usage_batch", "pgbench_usage")
    ratios["hot_over_pgbench_hot"] = ratio("usage_hot", "pgbench_hot")
    ratios["grown_check_throughput"] = ratio("check_grown", "check")
    chk, grown_r = res.get("check"), res.get("check_grown")
    ratios["grown_check_p99"] = (grown_r["p99_ms"] / chk["p99_ms"]) if chk and grown_r and chk["p99_ms"] else None
    rss = load("rss") or {}
    peaks = [r.get("server_peak_rss_mb") for r in res.values()] + [rss.get("server_peak_rss_mb")]
    peaks = [p for p in peaks if p is not None]
    result["server_peak_rss_mb"] = max(peaks) if peaks else None

    def at_least(x, t):
        return x is not None and x >= t

    def at_most(x, t):
        return x is not None and x <= t

    targets = result["targets"] = {
        "check_ratio_ge_0.8": at_least(ratios["check_over_pgbench_select"], 0.8),
        "check_p99_le_5ms": chk is not None and chk["p99_ms"] <= 5.0,
        "usage_ratio_ge_1.0": at_least(ratios["usage_over_pgbench_usage"], 1.0),
        "batch_ratio_ge_4": at_least(ratios["batch_events_over_pgbench_usage"], 4.0),
        "hot_ratio_ge_2": at_least(ratios["hot_over_pgbench_hot"], 2.0),
        "grown_check_throughput_ge_0.8": at_least(ratios["grown_check_throughput"], 0.8),
        "grown_check_p99_le_1.2": at_most(ratios["grown_check_p99"], 1.2),
        "rss_le_100mb": at_most(result["server_peak_rss_mb"], 100.0),
    }
    invalid = [k for k, r in result["results"].items() if r.get("errors")]
    missing = [k for k, _l, r, _f in rows if r is None]
    result["valid"] = not invalid and not missing
    result["invalid_runs"] = invalid
    result["missing_runs"] = missing

    w = 24
    lines = []
    lines.append(f"{'benchmark':<{w}} {'throughput/s':>13} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
                 f"{'cpu%':>5} {'srv cores':>9} {'pg cores':>8}")
    lines.append("-" * (w + 66))
    for key, label, _r, _f in rows:
        r = result["results"].get(key)
        if r is None:
            lines.append(f"{label:<{w}} {'(not run)':>13}")
            continue
        cpu_s = f"{r['cpu_busy_pct']:.0f}" if r.get("cpu_busy_pct") is not None else "-"
        srv_s = f"{r['server_cpu_cores']:.2f}" if r.get("server_cpu_cores") is not None else "-"
        pg_s = f"{r['postgres_cpu_cores']:.2f}" if r.get("postgres_cpu_cores") is not None else "-"
        lines.append(f"{label:<{w}} {r['throughput']:>13.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                     f"{r.get('errors', 0):>7} {cpu_s:>5} {srv_s:>9} {pg_s:>8}")
    lines.append("-" * (w + 66))
    # Where each request (event, transaction) went, in CPU microseconds: cores / throughput.
    lines.append(f"{'CPU per unit, µs':<{w}} {'unit':>11} {'server':>8} {'postgres':>9} "
                 f"{'load gen':>9} {'idle':>7}")
    for key, label, _r, field in rows:
        r = result["results"].get(key)
        if r is None or not r.get("throughput"):
            continue
        per = {}
        for part in ("server", "postgres", "client", "idle"):
            cores = r.get(f"{part}_cpu_cores" if part != "idle" else "idle_cores")
            per[part] = None if cores is None else round(cores * 1e6 / r["throughput"], 1)
        r["cpu_us_per_unit"] = per
        unit = {"rps": "request", "events_per_s": "event", "tps": "transaction"}[field]
        cell = lambda v: "-" if v is None else f"{v:.1f}"
        lines.append(f"{label:<{w}} {unit:>11} {cell(per['server']):>8} "
                     f"{cell(per['postgres']):>9} {cell(per['client']):>9} {cell(per['idle']):>7}")
    lines.append("-" * (w + 66))

    def fmt(x):
        return "n/a" if x is None else f"{x:.2f}"

    ok = lambda b: "PASS" if b else "FAIL"
    t = targets
    lines.append(f"check / pgbench -S                  = {fmt(ratios['check_over_pgbench_select'])}"
                 f"  (target >= 0.8: {ok(t['check_ratio_ge_0.8'])}); check p99 <= 5 ms: {ok(t['check_p99_le_5ms'])}")
    # The check target as a CPU budget, next to its floor (see "Where the CPU goes").
    sel, hz = res.get("pgbench_select"), res.get("healthz")
    cpus = meta.get("cpus")
    if chk and sel and hz and cpus and sel["throughput"]:
        budget = cpus * 1e6 / (0.8 * sel["throughput"])
        used = lambda r: sum(v for v in (r.get("cpu_us_per_unit") or {}).values() if v is not None)
        floor = sum((hz.get("cpu_us_per_unit") or {}).get(k) or 0 for k in ("server", "client"))
        result["check_budget_us"] = {"budget": round(budget, 1), "check": round(used(chk), 1),
                                     "healthz_floor": round(floor, 1)}
        lines.append(f"  check CPU budget at 0.8 x pgbench -S = {budget:.1f} µs a check; the check "
                     f"uses {used(chk):.1f}; GET /healthz (server + load gen) alone {floor:.1f}")
    lines.append(f"usage / pgbench usage script        = {fmt(ratios['usage_over_pgbench_usage'])}"
                 f"  (target >= 1.0: {ok(t['usage_ratio_ge_1.0'])})")
    lines.append(f"batch events / pgbench usage script = {fmt(ratios['batch_events_over_pgbench_usage'])}"
                 f"  (target >= 4.0: {ok(t['batch_ratio_ge_4'])})")
    lines.append(f"hot counter / pgbench 1-row upsert  = {fmt(ratios['hot_over_pgbench_hot'])}"
                 f"  (target >= 2.0: {ok(t['hot_ratio_ge_2'])})")
    lines.append(f"checks after growth: throughput x{fmt(ratios['grown_check_throughput'])}"
                 f" (target >= 0.8: {ok(t['grown_check_throughput_ge_0.8'])}), p99 x{fmt(ratios['grown_check_p99'])}"
                 f" (target <= 1.2: {ok(t['grown_check_p99_le_1.2'])})")
    lines.append(f"server peak RSS = {fmt(result['server_peak_rss_mb'])} MB  (target <= 100: {ok(t['rss_le_100mb'])})")
    pages = load("pages")
    if pages:
        result["pages"] = pages
        lines.append("pages (one connection, sequential; 20 features, 100 invoices):")
        for k, label in (("portal", "GET /portal"), ("console", "GET /console"),
                         ("console_customer", "GET /console/customers/{id}"),
                         ("check", "POST /v1/check"), ("me_check", "POST /v1/me/check")):
            r = pages[k]
            lines.append(f"  {label:<30} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
                         f"  ({r['requests']} requests, {r['bytes']} bytes)")
        portal_ok = pages["portal"]["p99_ms"] <= 50 and pages["console"]["p99_ms"] <= 50
        result["targets"]["pages_p99_le_50ms"] = portal_ok
        lines.append(f"  portal and console p99 <= 50 ms: {ok(portal_ok)}")
    if meta:
        lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
    lines.append("cpu% = whole-machine CPU busy during the run (load generator, server and PostgreSQL share it); "
                 "srv/pg cores = CPU used by tollgate / by this PostgreSQL; "
                 "CPU per unit = those cores, the load generator's (wrk, pgbench) and the idle ones, "
                 "over the throughput")
    if not result["valid"]:
        lines.append("INVALID: " + ", ".join(
            [f"{k} had errors" for k in invalid] + [f"{k} missing" for k in missing]))
        for k in invalid:
            fe = result["results"][k].get("first_error")
            if fe:
                lines.append(f"  {k} first error: {fe}")
    print("\n".join(lines))
    result["table"] = lines
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0 if result["valid"] else 1


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "freeport":
        freeport()
    elif cmd == "setup":
        setup(args[0].rstrip("/"), args[1], int(args[2]))
    elif cmd == "pages":
        pages(args[0].rstrip("/"), args[1], args[2])
    elif cmd == "explain-sql":
        explain_sql(args[0])
    elif cmd == "wrk":
        wrk(args[0], int(args[1]) if len(args) > 1 else 1)
    elif cmd == "pgbench":
        pgbench(args[0], args[1])
    elif cmd == "cpu":
        cpu(*args[:3])
    elif cmd == "report":
        return report(args[0], args[1])
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
