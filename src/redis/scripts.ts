// Server-side scripts: each change to shared state is one atomic script, so
// two rated never interleave half-done updates. Every number that goes back
// into Redis as text is formatted with %.0f: Lua 5.1 would print large ones
// in exponent form.

/**
 * COUNT for many clients of one Redis Cluster node (Redis 7 or later): the
 * keys come in ARGV (ARGV[1] their number, then the keys, then COUNT's
 * ARGV), one key is declared to route the call to the node, and the script
 * may touch keys of the node's other slots. A key on another node makes the
 * script fail before it writes anything (rated then counts those clients
 * one call each).
 */
export function countOnNode(count: string): string {
  return `#!lua flags=allow-cross-slot-keys
local nk = tonumber(ARGV[1])
local KEYS = {}
for i = 1, nk do
  KEYS[i] = ARGV[1 + i]
  -- Every key first: a key of another node fails here, before anything is written.
  redis.call('EXISTS', KEYS[i])
end
local rest = {}
for i = nk + 2, #ARGV do rest[#rest + 1] = ARGV[i] end
local ARGV = rest
${count}`;
}

/**
 * Counts hits of one or more clients against every rule, with the same
 * sliding window as `sliding-window.ts`. Each client's counter of a rule is
 * one string of B + 2 little-endian doubles packed with Redis's `struct`
 * library: the newest bucket index and a ring of B + 1 bucket counts (one
 * packed string costs Redis less than a hash or a text of the same numbers;
 * a value of any other length, such as an older text form, counts as empty). When a count goes over its limit, every counter of that client
 * is deleted, so the client starts from zero after its block and exactly one
 * caller sees the trip. Clients are counted in order; one client may appear
 * twice. (In a cluster a call holds the clients of one node: see countOnNode.)
 *
 * KEYS: per client, its counter of every rule, in rule order.
 * ARGV: R (rules); per rule windowMs, buckets, limit, ttlMs; then per client
 * the wall-clock ms of its hits and its hits per rule.
 * Returns per client { tripped (0|1), count of rule 1, … } (0 for a rule without hits).
 */
export const COUNT = `
local R = tonumber(ARGV[1])
local out = {}
for c = 0, #KEYS / R - 1 do
  local a = 2 + 4 * R + c * (R + 1)
  local now = tonumber(ARGV[a])
  local tripped = 0
  local counts = {}
  for i = 1, R do
    local key = KEYS[c * R + i]
    local p = 2 + (i - 1) * 4
    local w = tonumber(ARGV[p])
    local b = tonumber(ARGV[p + 1])
    local limit = tonumber(ARGV[p + 2])
    local n = tonumber(ARGV[a + i])
    local count = 0
    if n > 0 then
      local ring = b + 1
      local bucket = math.floor(now * b / w)
      local layout = '<' .. string.rep('d', b + 2)
      local newest = nil
      local cs = {}
      local empty = true
      local stored = redis.call('GET', key)
      if stored and #stored == 8 * (b + 2) then
        local v = { struct.unpack(layout, stored) }
        newest = v[1]
        for j = 0, b do
          cs[j] = v[j + 2]
          if cs[j] ~= 0 then empty = false end
        end
      else
        for j = 0, b do cs[j] = 0 end
      end
      if newest == nil then newest = bucket end
      local d = bucket - newest
      if d > 0 then
        if d >= ring then
          for j = 0, b do cs[j] = 0 end
        else
          -- Clear the buckets the clock moved past; they now stand for new buckets.
          for k = newest + 1, bucket do cs[k % ring] = 0 end
        end
        newest = bucket
      elseif d < 0 and empty then
        newest = bucket
      end
      -- A hit older than the newest bucket is counted in it: later, never lost.
      local slot = newest % ring
      cs[slot] = cs[slot] + n
      for j = 0, b do count = count + cs[j] end
      redis.call('SET', key, struct.pack(layout, newest, unpack(cs, 0, b)), 'PX', ARGV[p + 3])
      if count > limit then tripped = 1 end
    end
    counts[i] = count
  end
  if tripped == 1 then
    for i = 1, R do redis.call('DEL', KEYS[c * R + i]) end
  end
  out[#out + 1] = tripped
  for i = 1, R do out[#out + 1] = counts[i] end
end
return out
`;

// Shared by the block scripts: drop blocks whose time is up and old tombstones.
const TIDY = `
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function tidy(now, keep)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
  for i = 1, #gone do
    redis.call('HDEL', KEYS[1], gone[i])
    redis.call('ZREM', KEYS[5], gone[i])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.0f', now - keep))
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -100001)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', string.format('%.0f', server_ms() - keep))
end
local function since_of(json)
  local ok, b = pcall(cjson.decode, json)
  if ok and type(b) == 'table' then return tonumber(b.since) or 0 end
  return 0
end
local function changed(net, keep)
  redis.call('ZADD', KEYS[5], string.format('%.0f', server_ms()), net)
  redis.call('PEXPIRE', KEYS[5], keep)
end
local function epoch(fresh, keep)
  local e = redis.call('GET', KEYS[6])
  if not e then e = fresh end
  redis.call('SET', KEYS[6], e, 'PX', keep)
  return e
end
`;

/**
 * Stores a block unless a lift or flush happened after it was decided (a copy
 * replayed after an outage) or an equal or longer one is stored; publishes it
 * when stored. The keys expire with the last block.
 *
 * KEYS: blocks, expires, lifted, flushed, changed, epoch.
 * ARGV: net, expires, since, json, now, channel, message, keepMs, latestMs.
 * Returns 1 stored, 0 a longer one is there, -1 lifted since.
 */
export const BLOCK = `${TIDY}
local net = ARGV[1]
local expires = tonumber(ARGV[2])
local since = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
tidy(now, tonumber(ARGV[8]))
local lifted = tonumber(redis.call('ZSCORE', KEYS[3], net))
local flushed = tonumber(redis.call('GET', KEYS[4]))
if (lifted and since <= lifted) or (flushed and since <= flushed) then return -1 end
local current = tonumber(redis.call('ZSCORE', KEYS[2], net))
if current and current >= expires then return 0 end
redis.call('HSET', KEYS[1], net, ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], net)
changed(net, ARGV[8])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local at = string.format('%.0f', math.min(tonumber(last[2]) or expires, tonumber(ARGV[9])))
redis.call('PEXPIREAT', KEYS[1], at)
redis.call('PEXPIREAT', KEYS[2], at)
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
`;

/**
 * Lifts a block decided at or before \`at\` and leaves a tombstone; publishes.
 *
 * KEYS: blocks, expires, lifted, flushed, changed, epoch.
 * ARGV: net, at, channel, message, keepMs.
 * Returns 1 when a stored block was lifted.
 */
export const UNBLOCK = `${TIDY}
local net = ARGV[1]
local at = tonumber(ARGV[2])
local keep = tonumber(ARGV[5])
tidy(at, keep)
local had = 0
local current = redis.call('HGET', KEYS[1], net)
if current and since_of(current) <= at then
  redis.call('HDEL', KEYS[1], net)
  redis.call('ZREM', KEYS[2], net)
  had = 1
end
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], net)
redis.call('PEXPIRE', KEYS[3], ARGV[5])
changed(net, keep)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return had
`;

/**
 * Lifts every block decided at or before \`at\` and remembers the flush;
 * publishes. Rare, and as long as the blocks are many.
 *
 * KEYS: blocks, expires, lifted, flushed, changed, epoch.
 * ARGV: at, channel, message, keepMs.
 * Returns how many stored blocks were lifted.
 */
export const FLUSH = `${TIDY}
local at = tonumber(ARGV[1])
tidy(at, tonumber(ARGV[4]))
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if since_of(all[i + 1]) <= at then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('ZREM', KEYS[2], all[i])
    redis.call('ZREM', KEYS[5], all[i])
    n = n + 1
  end
end
local previous = tonumber(redis.call('GET', KEYS[4]))
if not previous or previous < at then
  redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[4])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
`;

/**
 * One page of every shared block (a node that starts, or finds Redis's data
 * lost), after dropping what is over: HSCAN from \`cursor\`; the first page
 * also carries the tombstones.
 *
 * KEYS: blocks, expires, lifted, flushed, changed, epoch.
 * ARGV: now, keepMs, cursor, count, fresh epoch.
 * Returns { next cursor, { net, json, … }, { net, liftedAt, … }, server ms, flushedAt or false, epoch, total }.
 */
export const SCAN_BLOCKS = `${TIDY}
tidy(tonumber(ARGV[1]), tonumber(ARGV[2]))
local r = redis.call('HSCAN', KEYS[1], ARGV[3], 'COUNT', ARGV[4])
local lifted = {}
if ARGV[3] == '0' then lifted = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES') end
return { r[1], r[2], lifted, server_ms(), redis.call('GET', KEYS[4]), epoch(ARGV[5], ARGV[2]), redis.call('HLEN', KEYS[1]) }
`;

/**
 * One page of the blocks stored or lifted since \`since\` (the server's ms),
 * oldest change first, skipping the first \`skip\` of them.
 *
 * KEYS: blocks, expires, lifted, flushed, changed, epoch.
 * ARGV: now, keepMs, since, skip, count, fresh epoch.
 * Returns { { net, changedAt, json or false, liftedAt or false, … }, server ms, flushedAt or false, epoch }.
 */
export const CHANGES = `${TIDY}
tidy(tonumber(ARGV[1]), tonumber(ARGV[2]))
local items = redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[3], '+inf', 'WITHSCORES', 'LIMIT', ARGV[4], ARGV[5])
local out = {}
for i = 1, #items, 2 do
  out[#out + 1] = items[i]
  out[#out + 1] = items[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[1], items[i])
  out[#out + 1] = redis.call('ZSCORE', KEYS[3], items[i])
end
return { out, server_ms(), redis.call('GET', KEYS[4]), epoch(ARGV[6], ARGV[2]) }
`;

/**
 * Which of a node's blocks Redis lacks, or holds shorter (by more than the
 * second kernel expiry rounds to): their 1-based places in ARGV's pairs.
 *
 * KEYS: blocks, expires, lifted, flushed, changed, epoch.
 * ARGV: net, expires, net, expires, …
 */
export const LACKING = `
local out = {}
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[i]))
  if not current or current < tonumber(ARGV[i + 1]) - 1000 then out[#out + 1] = (i + 1) / 2 end
end
return out
`;
