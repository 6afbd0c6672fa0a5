-- wrk script for bench/create.sh: POSTs the v4 create endpoint with a unique callback url per
-- request, counts every response that is not `200` with `"status":0` in its body, and prints one
-- machine-readable BENCH_RESULT line at the end.
--
-- Usage: wrk ... -s bench/create.lua http://127.0.0.1:PORT/apigw-user/v4/projects/bench/callbacks -- TAG
-- TAG keeps urls unique across runs against the same database (warm-up, measured run), so every
-- request is a fresh INSERT and never the update path of an upsert.
--
-- The callback host is a public IP literal: the service's SSRF guard accepts it without a DNS
-- lookup, and creating a callback sends nothing to it.

local threads = {}
local next_id = 0

-- Main Lua state, once per thread before it starts.
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- Thread state from here on.
local prefix
local counter = 0
bad = 0
first_bad = ""

function init(args)
   local tag = args[1] or "run"
   wrk.method = "POST"
   prefix = wrk.path
      .. "?event=BUILD_END&region=IDC&secretToken=t"
      .. "&url=http%3A%2F%2F93.184.215.14%2Fhook%2F" .. tag .. "-" .. id .. "-"
end

function request()
   counter = counter + 1
   return wrk.format(nil, prefix .. counter)
end

function response(status, headers, body)
   if status ~= 200 or not string.find(body, '"status":0', 1, true) then
      bad = bad + 1
      if first_bad == "" then
         first_bad = status .. " " .. string.sub(body, 1, 300)
      end
   end
end

function done(summary, latency, requests)
   local bad_total, sample = 0, ""
   for _, thread in ipairs(threads) do
      bad_total = bad_total + thread:get("bad")
      local first = thread:get("first_bad")
      if sample == "" and first ~= "" then
         sample = first
      end
   end
   local e = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "BENCH_RESULT requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f"
         .. " bad=%d non2xx3xx=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
      bad_total, e.status, e.connect, e.read, e.write, e.timeout))
   if sample ~= "" then
      io.write("BENCH_FIRST_BAD " .. string.gsub(sample, "\n", " ") .. "\n")
   end
end
