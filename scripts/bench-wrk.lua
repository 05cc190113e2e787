-- wrk script for scripts/bench-http: sends `Authorization: Bearer $TOKEN` on every request
-- and prints one machine-readable summary line (latencies in microseconds).
local token = os.getenv("TOKEN")
if token == nil or token == "" then
  error("set TOKEN to the access token to send")
end
wrk.headers["Authorization"] = "Bearer " .. token

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
