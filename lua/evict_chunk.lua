-- evict_chunk: evict a bounded chunk of the members of a tag being evicted.
--
-- KEYS[1]          evicting index   <prefix>{bb}e:<tag>
-- KEYS[2]          tag index        <prefix>{bb}t:<tag>  (may not exist)
-- KEYS[3..2+2n]    per member i: value key <prefix>{bb}v:<key_i>, then its
--                  tag-set key <prefix>{bb}m:<key_i>
-- KEYS[3+2n..]     index keys <prefix>{bb}t:<other> of the other tags the
--                  caller saw in those members' tag sets
-- ARGV[1]          the tag being evicted
-- ARGV[2]          n, the number of members
-- ARGV[3..2+n]     the members (user keys), in the order of their KEYS
-- ARGV[3+n..]      the other tag names, one per KEYS[3+2n..], same order
--
-- For each member, the tag set is read again here, since a writer may have
-- changed it since the caller read it:
--  - it does not hold the tag (expired, deleted, overwritten with other
--    tags): the membership is stale and is only removed from KEYS[1];
--  - it holds a tag whose index key was not passed: the member is skipped
--    and stays in KEYS[1]; the caller reads its tag set again and retries;
--  - otherwise the entry is evicted: its value and tag set are deleted and
--    it leaves every index it was in, KEYS[1] and KEYS[2] included.
--
-- Returns {evicted, skipped, stale}: evicted counts values that existed.
--
-- Work: O(n + sum of the members' tags * log M) for indexes of M members,
-- in n + 3 + (other tags) commands. The caller bounds n (64) and the sum of
-- tags (about 1024 per call).

local ekey, tkey = KEYS[1], KEYS[2]
local tag = ARGV[1]
local n = tonumber(ARGV[2])

local index_of = {}
for i = 3 + 2 * n, #KEYS do
  index_of[ARGV[i - n]] = KEYS[i]
end

-- Each member is checked on its own; what the evicted ones leave behind is
-- then removed with one command per key it touches, not one per member:
-- Lua's cost per command is what bounds a chunk.
local skipped, stale = 0, 0
local doomed, gone, leave = {}, {}, {}
local nsets = 0
local from = {} -- other index key -> evicted members in it
for i = 1, n do
  local member = ARGV[2 + i]
  local vkey, skey = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local tags = redis.call('SMEMBERS', skey)
  local has, unknown = false, false
  for _, t in ipairs(tags) do
    if t == tag then
      has = true
    elseif not index_of[t] then
      unknown = true
    end
  end
  if not has then
    leave[#leave + 1] = member
    stale = stale + 1
  elseif unknown then
    skipped = skipped + 1
  else
    doomed[#doomed + 1] = vkey
    doomed[#doomed + 1] = skey
    nsets = nsets + 1
    gone[#gone + 1] = member
    leave[#leave + 1] = member
    for _, t in ipairs(tags) do
      if t ~= tag then
        local k = index_of[t]
        local list = from[k]
        if not list then
          list = {}
          from[k] = list
        end
        list[#list + 1] = member
      end
    end
  end
end
local evicted = 0
if #gone > 0 then
  -- Every doomed tag set exists (it holds the tag): what DEL counts beyond
  -- them are the values.
  evicted = redis.call('DEL', unpack(doomed)) - nsets
  redis.call('ZREM', tkey, unpack(gone))
  for k, list in pairs(from) do
    redis.call('ZREM', k, unpack(list))
  end
end
if #leave > 0 then
  redis.call('ZREM', ekey, unpack(leave))
end
return {evicted, skipped, stale}
