-- set_tags: store one entry and its tag memberships atomically.
--
-- KEYS[1]      value key        <prefix>{bb}v:<key>
-- KEYS[2]      tag-set key      <prefix>{bb}m:<key>  (SET of the entry's tags)
-- KEYS[3..]    tag index keys   <prefix>{bb}t:<tag>  (ZSET member -> expiry ms)
--              first the N new tags, then any old tags the caller learned of
-- KEYS[last]   only when ARGV[1] is empty: the staging key
--              <prefix>{bb}w:<random>:<key>, where C has SET the envelope
-- ARGV[1]      the envelope bytes, or empty when the envelope is staged
--              (a large value: RENAME moves it in at O(1), where passing it
--              here would make Redis copy it, ~7.5 ms per MiB)
-- ARGV[2]      ttl in ms, "0" = no expiry
-- ARGV[3]      prune cap: expired members removed per index by this call
--              (0 on most calls: C prunes on one write in 8, see entry.c)
-- ARGV[4]      N, the number of new tags
-- ARGV[5]      member: the user key
-- ARGV[6..]    tag names, one per KEYS[3..], in the same order
--
-- Returns 1 when written. An error "cachet: staged value is gone" when the
-- staging key no longer exists (it expired, or someone deleted it), before
-- any write. Returns {"retag", tag...} and writes nothing when
-- the entry carries tags whose index keys were not passed: the caller adds
-- them to KEYS and calls again, so that every key touched is declared.
--
-- Work: O(old tags + N * (log M + cap)) for indexes of M members; N and the
-- old tags are bounded by max_tags, cap by ARGV[3]. 4 + 2N commands when
-- the tags are unchanged and cap is 0 (SMEMBERS, TIME, SET, PEXPIREAT, and
-- per tag ZADD and PEXPIREAT GT); 2 without tags. Lua's cost per command,
-- not the commands themselves, dominates, so the count is what is kept low.

local vkey, skey = KEYS[1], KEYS[2]
local blob = ARGV[1]
local nkeys = #KEYS
local stage = nil
if blob == '' then
  stage = KEYS[nkeys]
  nkeys = nkeys - 1
end
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local nnew = tonumber(ARGV[4])
local member = ARGV[5]

local index_of = {}
for i = 3, nkeys do
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
if stage and redis.call('EXISTS', stage) == 0 then
  return redis.error_reply('ERR cachet: staged value is gone (it expired '
                           .. 'or was deleted before the write completed)')
end

-- Store the value with its expiry: at (a Unix ms string) or ttl, or none.
local function put(at)
  if stage then
    redis.call('RENAME', stage, vkey)
    if at then
      redis.call('PEXPIREAT', vkey, at)
    elseif ttl > 0 then
      redis.call('PEXPIRE', vkey, ttl)
    else
      redis.call('PERSIST', vkey)
    end
  elseif at then
    redis.call('SET', vkey, blob, 'PXAT', at)
  elseif ttl > 0 then
    redis.call('SET', vkey, blob, 'PX', ttl)
  else
    redis.call('SET', vkey, blob)
  end
end

local keep = {}
for i = 1, nnew do
  keep[ARGV[5 + i]] = true
end
local dropped = {}
for _, t in ipairs(old) do
  if not keep[t] then
    redis.call('ZREM', index_of[t], member)
    dropped[#dropped + 1] = t
  end
end
-- The common overwrite keeps the same tags: then the tag set stays as is.
local same = #dropped == 0 and #old == nnew

if nnew == 0 then
  put(nil)
  if #old > 0 then
    redis.call('DEL', skey)
  end
  return 1
end

-- One instant for the value's expiry, its tag set's and its index score.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local at = nil
local score = '+inf'
if ttl > 0 then
  at = string.format('%.0f', now_ms + ttl)
  score = at
end
put(at)

-- Added to before it is taken from, never deleted and made again: on the
-- source node of a slot being migrated, Redis stops a script that touches
-- a key gone missing, half way through its writes.
if not same then
  redis.call('SADD', skey, unpack(ARGV, 6, 5 + nnew))
  if #dropped > 0 then
    redis.call('SREM', skey, unpack(dropped))
  end
end
if at then
  redis.call('PEXPIREAT', skey, at)
elseif same then
  redis.call('PERSIST', skey)
end

-- An index never expires before its members: its TTL is only ever
-- lengthened, and it is persistent as soon as one member is.
local function lengthen(idx, added)
  -- GT (Redis 7.0) leaves a longer TTL alone and treats "no TTL" as
  -- infinite, so one call covers an existing index.
  local r = redis.pcall('PEXPIREAT', idx, at, 'GT')
  if type(r) == 'table' then
    -- Redis 6.2 has no GT: read the TTL and decide here.
    local pttl = redis.call('PTTL', idx)
    if pttl == -1 and not (added == 1 and redis.call('ZCARD', idx) == 1) then
      return
    end
    if pttl < 0 or pttl < ttl then
      redis.call('PEXPIREAT', idx, at)
    end
    return
  end
  -- GT did nothing: either the TTL is long enough, or the index has none.
  -- No TTL is right (a member without expiry) unless ZADD just created the
  -- index, which is when it holds only this new member.
  if r == 0 and added == 1 and redis.call('ZCARD', idx) == 1 then
    redis.call('PEXPIREAT', idx, at)
  end
end

for i = 1, nnew do
  local idx = KEYS[2 + i]
  local added = redis.call('ZADD', idx, score, member)
  if at then
    lengthen(idx, added)
  else
    redis.call('PERSIST', idx)
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
