-- prune_chunk: remove a bounded number of expired members from one index.
--
-- KEYS[1]      tag index        <prefix>{bb}t:<tag>  (ZSET member -> expiry ms)
-- ARGV[1]      cap: most members removed by this call
--
-- A member's score is the expiry of its entry in Unix ms (+inf for none), so
-- the members scored before the server's TIME are entries Redis has already
-- expired. Only their membership is removed here; their value and tag set are
-- gone already.
--
-- Returns {removed, more}: more is 1 when expired members may remain (the
-- cap was reached), 0 when none do.
--
-- Work: O(log M + cap) for an index of M members.

local key = KEYS[1]
local cap = tonumber(ARGV[1])

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

local dead = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. now_ms,
                        'LIMIT', 0, cap)
if #dead == 0 then
  return {0, 0}
end
redis.call('ZREM', key, unpack(dead))
local more = 0
if #dead == cap then
  more = 1
end
return {#dead, more}
