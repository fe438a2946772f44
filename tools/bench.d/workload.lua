-- wrk script used by tools/bench.
--
-- Configured through the environment (wrk passes no options to scripts except
-- through "--", which is awkward with getopt reordering):
--   BENCH_METHOD  GET or PUT
--   BENCH_PREFIX  key prefix, e.g. "g1k-"
--   BENCH_KEYS    number of key names; a request picks one uniformly at random
--   BENCH_WIDTH   digits in the zero-padded key number (key = prefix .. %0Nd)
--   BENCH_SIZE    PUT only: body size in bytes (random bytes, one body per thread)
--   BENCH_EXACT_STATUS  if "1", count every non-2xx response via response();
--                 otherwise rely on wrk's own count of statuses > 399, which
--                 keeps the per-response cost of Lua out of the measurement
--
--   BENCH_DELAY_MS  if set, every connection waits this long after each answer: a
--                 paced load (about connections / (delay + latency) requests/s)
--                 instead of one that saturates the machine
--
-- done() prints one machine-readable line starting with "BENCHRESULT".

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

local reqs      -- pre-built requests, or nil when built per request
local nkeys
local method
local prefix, width
local body
non2xx = 0

local function key_path(i)
  return string.format("/%s%0" .. width .. "d", prefix, i)
end

function init(args)
  method = os.getenv("BENCH_METHOD") or "GET"
  prefix = os.getenv("BENCH_PREFIX") or ""
  nkeys  = tonumber(os.getenv("BENCH_KEYS") or "1")
  width  = tonumber(os.getenv("BENCH_WIDTH") or "4")
  local size = tonumber(os.getenv("BENCH_SIZE") or "0")

  math.randomseed(os.time() + (id or 0) * 7919)
  for _ = 1, 10 do math.random() end

  if method == "PUT" then
    local f = assert(io.open("/dev/urandom", "rb"))
    body = f:read(size)
    f:close()
  end

  -- Pre-build every request when that costs little memory; wrk calls
  -- request() once per request, so a table lookup is the cheapest form.
  local per_request = (body and #body or 0) + 128
  if per_request * nkeys <= 32 * 1024 * 1024 then
    reqs = {}
    for i = 1, nkeys do
      reqs[i] = wrk.format(method, key_path(i - 1), nil, body)
    end
  end

  if os.getenv("BENCH_EXACT_STATUS") ~= "1" then
    response = nil
  end
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end

function request()
  local i = math.random(nkeys)
  if reqs then
    return reqs[i]
  end
  return wrk.format(method, key_path(i - 1), nil, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do
    n = n + (tonumber(t:get("non2xx")) or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCHRESULT requests=%.0f duration_us=%.0f bytes=%.0f " ..
    "p50_us=%.0f p90_us=%.0f p99_us=%.0f mean_us=%.1f max_us=%.0f " ..
    "connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f non2xx=%.0f " ..
    "exact_status=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, n,
    os.getenv("BENCH_EXACT_STATUS") == "1" and 1 or 0))
end
