-- set_tags: store one entry and its tag memberships atomically.
--
-- KEYS[1]      value key        <prefix>{bb}v:<key>
-- KEYS[2]      tag-set key      <prefix>{bb}m:<key>  (SET of the entry's tags)
-- KEYS[3..]    tag index keys   <prefix>{bb}t:<tag>  (ZSET member -> expiry ms)
--              first the N new tags, then any old tags the caller learned of
-- ARGV[1]      the envelope bytes
-- ARGV[2]      ttl in ms, "0" = no expiry
-- ARGV[3]      prune cap: expired members removed per index by this call
--              (0 on most calls: C prunes on one write in 8, see entry.c)
-- ARGV[4]      N, the number of new tags
-- ARGV[5]      member: the user key
-- ARGV[6..]    tag names, one per KEYS[3..], in the same order
--
-- Returns 1 when written. Returns {"retag", tag...} and writes nothing when
-- the entry carries tags whose index keys were not passed: the caller adds
-- them to KEYS and calls again, so that every key touched is declared.
--
-- Work: O(old tags + N * (log M + cap)) for indexes of M members; N and the
-- old tags are bounded by max_tags, cap by ARGV[3]. About 2 + 2N commands
-- when the tags are unchanged and cap is 0.

local vkey, skey = KEYS[1], KEYS[2]
local blob = ARGV[1]
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local nnew = tonumber(ARGV[4])
local member = ARGV[5]

local index_of = {}
for i = 3, #KEYS do
  index_of[ARGV[i + 3]] = KEYS[i]
end

local old = redis.call('SMEMBERS', skey)
local unknown = {}
for _, t in ipairs(old) do
  if not index_of[t] then
    unknown[#unknown + 1] = t
  end
end
if #unknown > 0 then
  table.insert(unknown, 1, 'retag')
  return unknown
end

local keep = {}
for i = 1, nnew do
  keep[ARGV[5 + i]] = true
end
local dropped = 0
for _, t in ipairs(old) do
  if not keep[t] then
    redis.call('ZREM', index_of[t], member)
    dropped = dropped + 1
  end
end
-- The common overwrite keeps the same tags: then the tag set stays as is.
local same = dropped == 0 and #old == nnew

if ttl > 0 then
  redis.call('SET', vkey, blob, 'PX', ttl)
else
  redis.call('SET', vkey, blob)
end
if nnew == 0 then
  if #old > 0 then
    redis.call('DEL', skey)
  end
  return 1
end

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local score = '+inf'
if ttl > 0 then
  score = now_ms + ttl
end

if not same then
  if #old > 0 then
    redis.call('DEL', skey)
  end
  redis.call('SADD', skey, unpack(ARGV, 6, 5 + nnew))
end
if ttl > 0 then
  redis.call('PEXPIRE', skey, ttl)
elseif same then
  redis.call('PERSIST', skey)
end

for i = 1, nnew do
  local idx = KEYS[2 + i]
  local pttl = redis.call('PTTL', idx)
  redis.call('ZADD', idx, score, member)
  -- An index never expires before its members: only ever lengthen its TTL,
  -- and make it persistent as soon as one member is. (-2: it did not exist,
  -- -1: it is persistent already.)
  if ttl == 0 then
    if pttl >= 0 then
      redis.call('PERSIST', idx)
    end
  elseif pttl == -2 or (pttl >= 0 and pttl < ttl) then
    redis.call('PEXPIRE', idx, ttl)
  end
  -- Bounded prune, on the writes C picks (cap > 0): members whose expiry
  -- has passed are gone from Redis already; drop their memberships.
  if cap > 0 then
    local dead = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. now_ms,
                            'LIMIT', 0, cap)
    if #dead > 0 then
      redis.call('ZREM', idx, unpack(dead))
    end
  end
end
return 1
