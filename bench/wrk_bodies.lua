-- wrk script: POST a different pre-generated hook body on every request, then print one JSON line.
--   wrk -t THREADS -s bench/wrk_bodies.lua URL -- BODY_DIR COUNT THREADS
-- The requests are formatted once in init, so the client spends its CPU on sending, not on Lua.

local thread_count = 0

function setup(thread)
   -- the threads start evenly spaced in the rotation, so no body is sent again before COUNT/THREADS others
   thread:set("offset", thread_count)
   thread_count = thread_count + 1
end

function init(args)
   local dir, count, threads = args[1], tonumber(args[2]), tonumber(args[3])
   prepared = {}
   for i = 1, count do
      local file = assert(io.open(string.format("%s/body-%04d.json", dir, i - 1), "rb"))
      local body = file:read("*a")
      file:close()
      prepared[i] = wrk.format("POST", wrk.path, { ["Content-Type"] = "application/json" }, body)
   end
   position = offset * math.floor(count / threads)
end

function request()
   position = position % #prepared + 1
   return prepared[position]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
      '"non_2xx": %d, "socket_errors": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
      e.status, e.connect + e.read + e.write + e.timeout))
end
