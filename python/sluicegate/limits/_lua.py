"""The two server-side scripts of the Redis limiter: each admit and each settle is one atomic EVALSHA.

Time comes from the Redis server (TIME) unless the caller passes one, so replicas with skewed
clocks still share one window. Windows are hashes {second -> amount} holding the last 60 seconds.
"""

# KEYS: 4 per scope: requests window, tokens window, concurrency zset, budget counter.
# ARGV: now ("" = server TIME), lease_s, lease id, n scopes,
#       then 5 per scope: rpm, tpm, max_concurrent, budget_usd (0 = none), seconds until budget reset.
# Returns {1} when admitted, else {0, scope index (1-based), reason, retry_after_s as a string}.
ADMIT = r"""
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local sec = math.floor(now)
local lease_s = tonumber(ARGV[2])
local lease_id = ARGV[3]
local n = tonumber(ARGV[4])

local function window_retry(key, limit)
  local flat = redis.call('HGETALL', key)
  local cutoff = sec - 59
  local total = 0
  local live = {}
  local stale = {}
  for i = 1, #flat, 2 do
    local s = tonumber(flat[i])
    local a = tonumber(flat[i + 1])
    if s < cutoff then
      stale[#stale + 1] = flat[i]
    else
      total = total + a
      live[#live + 1] = {s, a}
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  if total < limit then return nil end
  table.sort(live, function(x, y) return x[1] < y[1] end)
  local acc = 0
  for _, e in ipairs(live) do
    acc = acc + e[2]
    if total - acc < limit then return math.max(0, e[1] + 60 - now) end
  end
  return 60
end

local worst_retry, worst_scope, worst_reason = -1, 0, ''
local function fail(i, reason, retry)
  if retry > worst_retry then worst_retry, worst_scope, worst_reason = retry, i, reason end
end

for i = 1, n do
  local k = (i - 1) * 4
  local a = 4 + (i - 1) * 5
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local conc, budget = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if rpm > 0 then
    local r = window_retry(KEYS[k + 1], rpm)
    if r then fail(i, 'rpm', r) end
  end
  if tpm > 0 then
    local r = window_retry(KEYS[k + 2], tpm)
    if r then fail(i, 'tpm', r) end
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= conc then fail(i, 'concurrency', 1) end
  end
  if budget > 0 then
    local spent = tonumber(redis.call('GET', KEYS[k + 4]) or '0')
    if spent >= budget then fail(i, 'budget', tonumber(ARGV[a + 5])) end
  end
end
if worst_scope > 0 then
  return {0, worst_scope, worst_reason, string.format('%.3f', worst_retry)}
end

for i = 1, n do
  local k = (i - 1) * 4
  local a = 4 + (i - 1) * 5
  if tonumber(ARGV[a + 1]) > 0 then
    redis.call('HINCRBY', KEYS[k + 1], sec, 1)
    redis.call('EXPIRE', KEYS[k + 1], 61)
  end
  if tonumber(ARGV[a + 3]) > 0 then
    redis.call('ZADD', KEYS[k + 3], now + lease_s, lease_id)
    redis.call('EXPIRE', KEYS[k + 3], math.ceil(lease_s) + 1)
  end
end
return {1}
"""

# KEYS: 3 per scope: tokens window, concurrency zset, budget counter.
# ARGV: now ("" = server TIME), lease id, n scopes, tokens, cost_usd,
#       then 3 per scope: has tpm (0/1), has max_concurrent (0/1), budget counter TTL in s (0 = none).
SETTLE = r"""
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local sec = math.floor(now)
local lease_id = ARGV[2]
local n = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local cost = ARGV[5]
for i = 1, n do
  local k = (i - 1) * 3
  local a = 5 + (i - 1) * 3
  if ARGV[a + 1] == '1' and tokens > 0 then
    redis.call('HINCRBY', KEYS[k + 1], sec, tokens)
    redis.call('EXPIRE', KEYS[k + 1], 61)
  end
  if ARGV[a + 2] == '1' then
    redis.call('ZREM', KEYS[k + 2], lease_id)
  end
  local ttl = tonumber(ARGV[a + 3])
  if ttl > 0 and tonumber(cost) > 0 then
    redis.call('INCRBYFLOAT', KEYS[k + 3], cost)
    redis.call('EXPIRE', KEYS[k + 3], ttl)
  end
end
return 1
"""
