-- GET / with a client-address header rotating over a range of addresses,
-- prepared once so that wrk spends its time on the network, not in Lua.
-- BENCH_HEADER: the header (X-IP for rated's receiver, X-Forwarded-For for
-- nginx's realip module); BENCH_ADDRESSES: how many distinct addresses,
-- counted up from 198.18.0.0 (RFC 2544 benchmarking range, /15).
local header = os.getenv("BENCH_HEADER") or "X-IP"
local count = tonumber(os.getenv("BENCH_ADDRESSES") or "10000")
local path = os.getenv("BENCH_PATH") or "/"
local requests = {}
local i = 0

local function address(k)
  return string.format("198.%d.%d.%d", 18 + math.floor(k / 65536), math.floor(k / 256) % 256, k % 256)
end

function init(args)
  for k = 0, count - 1 do
    requests[k + 1] = wrk.format("GET", path, { [header] = address(k) })
  end
  -- Threads start at different offsets, so they do not send the same address together.
  i = math.random(0, count - 1)
end

function request()
  i = i + 1
  if i > count then i = 1 end
  return requests[i]
end
