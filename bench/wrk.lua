-- wrk script for Tollgate's hot endpoints.
-- Usage: wrk ... -s bench/wrk.lua http://127.0.0.1:PORT -- PATH API_KEY CUSTOMERS [MODE]
-- MODE "one" (default): every request is a POST of
--   {"customer":"c<random 0..CUSTOMERS-1>","feature":"calls","quantity":1};
-- MODE "batch:N": a POST of {"events":[N such events]} (for /v1/usage/batch);
-- MODE "hot": every request names customer c0 and feature "hot" (one counter, with a limit);
-- MODE "get": a GET of PATH, no body (the `/healthz` floor).
-- done() prints one "BENCH_JSON {...}" line. Responses of 400 and above are counted by wrk
-- itself; a batch's 200 is also read for refused or invalid events (the only mode with a
-- response() callback).
--
-- The load generator shares the machine's cores with Tollgate and PostgreSQL, so it does as
-- little per request as it can, as pgbench does: requests are formatted once in init() (one
-- per customer, or the single static request of "hot"), and only a batch reads its bodies.
local threads = {}
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  bench_path = args[1] or "/v1/check"
  customers = tonumber(args[3] or "1000")
  mode = args[4] or "one"
  batch = tonumber(string.match(mode, "^batch:(%d+)$") or "0")
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  wrk.method = "POST"
  wrk.path = bench_path
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (args[2] or "")
  non200 = 0
  first_error = ""
  events = {}
  for i = 1, customers do
    events[i] = '{"customer":"c' .. (i - 1) .. '","feature":"calls","quantity":1}'
  end
  if mode == "hot" then
    -- One static request, formatted by wrk once.
    wrk.body = '{"customer":"c0","feature":"hot","quantity":1}'
    request = nil
  elseif mode == "get" then
    wrk.method = "GET"
    wrk.headers["Content-Type"] = nil
    request = nil
  elseif batch == 0 then
    requests = {}
    for i = 1, customers do
      requests[i] = wrk.format("POST", bench_path, nil, events[i])
    end
  end
  if batch == 0 then
    response = nil
  end
end

function request()
  if batch == 0 then
    return requests[math.random(customers)]
  end
  local body = {}
  for i = 1, batch do body[i] = events[math.random(customers)] end
  return wrk.format("POST", bench_path, nil, '{"events":[' .. table.concat(body, ",") .. ']}')
end

function response(status, headers, body)
  -- Batches only. A batch answers 200 with per-event results: a refused or invalid event is
  -- an error here. A 4xx or 5xx is counted by wrk already; only its text is kept.
  if status == 200 then
    if string.find(body, '"status":"refused"', 1, true) or
       string.find(body, '"status":"invalid"', 1, true) then
      non200 = non200 + 1
      if first_error == "" then first_error = "200 " .. string.sub(body, 1, 200) end
    end
  elseif first_error == "" then
    first_error = tostring(status) .. " " .. string.sub(body or "", 1, 200)
  end
end

local function json_str(s)
  s = string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  -- 4xx and 5xx answers, as wrk counts them, and the batches' refused or invalid events.
  local non200_total, first = summary.errors.status, ""
  for _, t in ipairs(threads) do
    non200_total = non200_total + (tonumber(t:get("non200")) or 0)
    local e = t:get("first_error")
    if first == "" and e and e ~= "" then first = e end
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"non200":%d,"socket_errors":%d,"first_error":%s}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, non200_total,
    e.connect + e.read + e.write + e.timeout, json_str(first)))
end
