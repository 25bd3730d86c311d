-- set_many: store many entries, each with its tag memberships, in one call.
--
-- The batch form of set_tags (see set_tags.lua): one EVALSHA carries many
-- entries, so Redis pays its fixed cost per script call once per call
-- instead of once per entry. The whole call is atomic, so each entry's
-- value, tag set and memberships change together.
--
-- KEYS, per entry j in order:
--   value key        <prefix>{bb}v:<key>
--   tag-set key      <prefix>{bb}m:<key>  (SET of the entry's tags)
--   N_j index keys   <prefix>{bb}t:<tag>, one per tag the entry is given
-- ARGV[1]      E, the number of entries
-- ARGV[2]      prune cap: expired members removed per pruned index
-- ARGV[3]      P, how many distinct indexes this call may prune
-- then per entry j in order:
--   ttl in ms ("0" = no expiry), N_j, the envelope bytes, and when N_j > 0
--   the member (the user key) and the N_j tag names, in the order of the
--   entry's index keys. (An entry without tags needs no member.)
--
-- Returns {written, skipped...}: `written` counts the entries stored, and
-- each entry not stored adds one array:
--   {j, "retag", tag...}  its tag set holds tags it was not given. Their
--                         index keys were not declared, so the script
--                         cannot drop those memberships: it wrote nothing
--                         for the entry. C rewrites it through set_tags,
--                         whose retag protocol learns the old tags.
--   {j, "err", text}      a command failed (e.g. WRONGTYPE on a foreign key
--                         in cachet's namespace). As with set_tags, that
--                         entry's commands before the failure stay done.
-- The other entries are written either way.
--
-- Time: TIME is read once. A value with a ttl expires at TIME + ttl (PXAT),
-- its tag set too, and its index score is that same instant. An index's TTL
-- is only ever lengthened, with a relative PEXPIRE (which cannot land
-- before TIME + ttl), and is made persistent as soon as one member is: an
-- index never expires before its members.
--
-- Work: one EXISTS over the E tag-set keys, then per entry one SET. With
-- tags, SADD and PEXPIREAT, and per tag one ZADD (O(log M) for an index of
-- M members); each distinct index costs one PTTL per call, and a PEXPIRE
-- when it must be lengthened. SMEMBERS per entry only when some tag-set key
-- of the call exists. At most P indexes are pruned, cap members each. C
-- bounds a call to 1000 KEYS and about 1 ms of work (batch.c).

local nent = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local nprune = tonumber(ARGV[3])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- One pass for each entry's offsets, and every tag-set key for one EXISTS:
-- when none exists (a fresh load, or overwrites of untagged entries), no
-- entry has old tags and the per-entry SMEMBERS is skipped.
local kbase, abase, ntags, skeys = {}, {}, {}, {}
local k, a = 1, 4
for j = 1, nent do
  local n = tonumber(ARGV[a + 1])
  kbase[j], abase[j], ntags[j] = k, a, n
  skeys[j] = KEYS[k + 1]
  k = k + 2 + n
  a = a + 3
  if n > 0 then
    a = a + 1 + n
  end
end
if nent < 1 or k ~= #KEYS + 1 or a ~= #ARGV + 1 then
  return redis.error_reply('ERR set_many: KEYS and ARGV do not match')
end
local any_old = redis.call('EXISTS', unpack(skeys)) > 0

-- Per index touched by this call: a lower bound of its expiry in Unix ms,
-- -1 persistent, -2 absent before this call. Only the first touch reads
-- PTTL; later entries of the same index compare against what is known.
local known = {}
local pruned, npruned = {}, 0
-- Deadlines keyed by the ttl argument, as a number and as the decimal string
-- the commands take: made once per distinct ttl of the call, since turning
-- a Lua number into a string costs about as much as a SET.
local at_num, at_str = {}, {}

local function deadline(ttlarg)
  local at = at_str[ttlarg]
  if not at then
    at_num[ttlarg] = now_ms + tonumber(ttlarg)
    at = string.format('%.0f', at_num[ttlarg])
    at_str[ttlarg] = at
  end
  return at
end

local function write_entry(kb, ab, n)
  local vkey, skey = KEYS[kb], KEYS[kb + 1]
  local ttlarg = ARGV[ab]

  local nold = 0
  if any_old then
    local old = redis.call('SMEMBERS', skey)
    nold = #old
    if nold > 0 then
      local mine = {}
      for i = 1, n do
        mine[ARGV[ab + 3 + i]] = true
      end
      local unknown = nil
      for _, tag in ipairs(old) do
        if not mine[tag] then
          unknown = unknown or {}
          unknown[#unknown + 1] = tag
        end
      end
      if unknown then
        return unknown
      end
    end
  end
  -- Every old tag is among the given ones: no membership to drop.

  local at = nil
  if ttlarg ~= '0' then
    at = deadline(ttlarg)
    redis.call('SET', vkey, ARGV[ab + 2], 'PXAT', at)
  else
    redis.call('SET', vkey, ARGV[ab + 2])
  end
  if n == 0 then
    return nil
  end

  local member = ARGV[ab + 3]
  if nold < n then
    redis.call('SADD', skey, unpack(ARGV, ab + 4, ab + 3 + n))
  end
  if at then
    redis.call('PEXPIREAT', skey, at)
  elseif nold > 0 then
    redis.call('PERSIST', skey)
  end

  local expire_at = at_num[ttlarg]
  local score = at or '+inf'
  for i = 1, n do
    local idx = KEYS[kb + 1 + i]
    local lb = known[idx]
    if lb == nil then
      local p = redis.call('PTTL', idx)
      if p < 0 then
        lb = p
      else
        lb = now_ms + p
      end
    end
    redis.call('ZADD', idx, score, member)
    if not at then
      -- A member without expiry: the index must not expire. (-2: ZADD
      -- just created it, persistent.)
      if lb >= 0 then
        redis.call('PERSIST', idx)
      end
      lb = -1
    elseif lb == -2 or (lb >= 0 and lb < expire_at) then
      redis.call('PEXPIRE', idx, ttlarg)
      lb = expire_at
    end
    known[idx] = lb
    if npruned < nprune and not pruned[idx] then
      pruned[idx] = true
      npruned = npruned + 1
      local dead = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. now_ms,
                              'LIMIT', 0, cap)
      if #dead > 0 then
        redis.call('ZREM', idx, unpack(dead))
      end
    end
  end
  return nil
end

local out = {0}
for j = 1, nent do
  if not any_old and ntags[j] == 0 then
    -- The common batch entry: no tags, now or before. One SET, inline: the
    -- per-entry function call and pcall cost as much as the SET itself.
    local ab = abase[j]
    local ttlarg = ARGV[ab]
    local r
    if ttlarg ~= '0' then
      r = redis.pcall('SET', KEYS[kbase[j]], ARGV[ab + 2], 'PXAT',
                      deadline(ttlarg))
    else
      r = redis.pcall('SET', KEYS[kbase[j]], ARGV[ab + 2])
    end
    if type(r) == 'table' and r.err then
      out[#out + 1] = {j, 'err', r.err}
    else
      out[1] = out[1] + 1
    end
  else
    local ok, res = pcall(write_entry, kbase[j], abase[j], ntags[j])
    if not ok then
      local text = res
      if type(res) == 'table' then
        text = res.err
      end
      out[#out + 1] = {j, 'err', tostring(text)}
    elseif res then
      table.insert(res, 1, 'retag')
      table.insert(res, 1, j)
      out[#out + 1] = res
    else
      out[1] = out[1] + 1
    end
  end
end
return out
