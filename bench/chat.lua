-- wrk script for bench/run: POST a small chat request, optional extra headers, JSON summary.
--   wrk -t2 -c10 -d5s --latency -s bench/chat.lua URL -- BODYFILE [delay_ms=N] [unique=1] ["Header: value" ...]
-- BODYFILE holds the request body (read once). delay_ms=N makes every connection wait N ms
-- before each request (paced load: at most c*1000/N requests/s, latency without saturation;
-- wrk starts a request's timer when it writes it, after the delay). unique=1 replaces the text
-- @N@ in the body with a number unique to each request (every request a cache miss). The
-- done() hook prints one line
-- "WRK_JSON {...}" with requests, duration, errors and latency percentiles in microseconds.
local body_file = nil
local extra = {}
local pace_ms = nil
local unique = false
local counter = 0
local thread_id = 0
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

function init(args)
  body_file = args[1]
  for i = 2, #args do
    local d = args[i]:match("^delay_ms=(%d+)$")
    if d then
      pace_ms = tonumber(d)
    elseif args[i] == "unique=1" then
      unique = true
    else
      local k, v = args[i]:match("^([^:]+):%s*(.*)$")
      if k then extra[k] = v end
    end
  end
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer sk-bench"
  for k, v in pairs(extra) do wrk.headers[k] = v end
end

function request()
  if not unique then
    return wrk.format()
  end
  counter = counter + 1
  local body = wrk.body:gsub("@N@", thread_id .. "-" .. counter, 1)
  return wrk.format(nil, nil, nil, body)
end

function delay()
  return pace_ms or 0
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
