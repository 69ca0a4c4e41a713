-- wrk script for Tollgate's hot endpoints.
-- Usage: wrk ... -s bench/wrk.lua http://127.0.0.1:PORT -- PATH API_KEY CUSTOMERS [MODE]
-- MODE "one" (default): every request is a POST of
--   {"customer":"c<random 0..CUSTOMERS-1>","feature":"calls","quantity":1};
-- MODE "batch:N": a POST of {"events":[N such events]} (for /v1/usage/batch);
-- MODE "hot": every request names customer c0 and feature "hot" (one counter, with a limit).
-- Responses other than 200 are counted per thread; done() prints one "BENCH_JSON {...}" line.

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
end

local function event()
  return '{"customer":"c' .. math.random(0, customers - 1) .. '","feature":"calls","quantity":1}'
end

function request()
  local body
  if mode == "hot" then
    body = '{"customer":"c0","feature":"hot","quantity":1}'
  elseif batch > 0 then
    local events = {}
    for i = 1, batch do events[i] = event() end
    body = '{"events":[' .. table.concat(events, ",") .. ']}'
  else
    body = event()
  end
  return wrk.format("POST", bench_path, nil, body)
end

function response(status, headers, body)
  -- A batch answers 200 with per-event results: anything not "recorded" is an error here.
  if status == 200 and batch > 0 and
     (string.find(body, '"status":"refused"', 1, true) or
      string.find(body, '"status":"invalid"', 1, true)) then
    status = 422
  end
  if status ~= 200 then
    non200 = non200 + 1
    if first_error == "" then
      first_error = tostring(status) .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

local function json_str(s)
  s = string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local non200_total, first = 0, ""
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
