-- A block storm: each of BENCH_ADDRESSES offenders (from 198.18.0.0 up)
-- sends BENCH_PASSES notifications, one pass over all of them after the
-- other, so the last pass holds every crossing notification. Once as many
-- answers as notifications have arrived it prints "done" (the harness takes
-- its time from that line; at most one request per connection is still in
-- flight then, a fraction of a millisecond) and sends only an allow-listed
-- filler until wrk is stopped.
local count = tonumber(os.getenv("BENCH_ADDRESSES") or "10000")
local passes = tonumber(os.getenv("BENCH_PASSES") or "2")
local total = count * passes
local sent = 0
local answered = 0
local filler
-- wrk calls request() once on the first thread before any connection, to
-- check the request; that call must not use up an offender.
local checked = false

local function address(k)
  return string.format("198.%d.%d.%d", 18 + math.floor(k / 65536), math.floor(k / 256) % 256, k % 256)
end

function init(args)
  filler = wrk.format("GET", "/", { ["X-IP"] = "127.0.0.1" })
end

function request()
  if not checked then
    checked = true
    return filler
  end
  if sent >= total then return filler end
  local k = sent % count
  sent = sent + 1
  return wrk.format("GET", "/", { ["X-IP"] = address(k) })
end

function response(status, headers, body)
  answered = answered + 1
  if answered == total then
    io.write("done\n")
    io.flush()
  end
end
