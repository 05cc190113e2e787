-- wrk script for scripts/bench-http: sends `Authorization: Bearer $TOKEN` (or each of
-- $TOKENS in turn) on every request
-- and prints one machine-readable summary line (latencies in microseconds).
-- With TOKENS (comma-separated), each thread sends them in turn, one per request: many
-- clients, each presenting its own token again and again.
local tokens = {}
for t in string.gmatch(os.getenv("TOKENS") or "", "[^,]+") do
  table.insert(tokens, t)
end
if #tokens > 0 then
  local counter = 0
  request = function()
    counter = counter + 1
    local headers = { ["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1] }
    return wrk.format(nil, nil, headers)
  end
else
  local token = os.getenv("TOKEN")
  if token == nil or token == "" then
    error("set TOKEN (or TOKENS) to the access token(s) to send")
  end
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
