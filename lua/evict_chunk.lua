-- evict_chunk: evict a bounded chunk of the members of a tag being evicted,
-- and return the next members to drain.
--
-- KEYS[1]          evicting index   <prefix>{bb}e:<tag>
-- KEYS[2]          tag index        <prefix>{bb}t:<tag>  (may not exist)
-- KEYS[3..2+2n]    per member i: value key <prefix>{bb}v:<key_i>, then its
--                  tag-set key <prefix>{bb}m:<key_i>
-- KEYS[3+2n..]     index keys <prefix>{bb}t:<other> of the other tags the
--                  caller saw in those members' tag sets
-- ARGV[1]          the tag being evicted
-- ARGV[2]          n, the number of members
-- ARGV[3]          where the members come from:
--                  "0": the evicting index (a snapshot being drained);
--                  "1": the tag index, which may hold more: begin first, as
--                  evict_begin does, and drain the snapshot after;
--                  "2": the tag index, all it held when the caller read it
--                  (fewer than ARGV[4]): no snapshot is needed, since
--                  members added since were written after the eviction
--                  started; they are removed from the tag index itself
-- ARGV[4]          how many members of the evicting index to return (> 0)
-- ARGV[5..4+n]     the members (user keys), in the order of their KEYS
-- ARGV[5+n..]      the other tag names, one per KEYS[3+2n..], same order
--
-- With ARGV[3] = "1" the call first starts or joins the eviction: if the
-- evicting index exists it is joined (begun = 1), else the tag index is
-- renamed to it (begun = 2), else neither exists (begun = 0). The members
-- are handled the same either way: they carried the tag when the caller
-- read them, and each is checked again here.
--
-- For each member, the tag set is read again here, since a writer may have
-- changed it since the caller read it:
--  - it does not hold the tag (expired, deleted, overwritten with other
--    tags): the membership is stale and is only removed from KEYS[1]
--    (KEYS[2] with ARGV[3] = "2");
--  - it holds a tag whose index key was not passed: the member is skipped
--    and stays where it is; the caller reads its tag set again and retries;
--  - otherwise the entry is evicted: its value and tag set are deleted and
--    it leaves every index it was in, KEYS[1] and KEYS[2] included.
--
-- Returns {evicted, skipped, stale, begun, member...}: evicted counts values
-- that existed; begun is 0 unless ARGV[3] is "1"; the members are what the
-- caller drains next: the first ARGV[4] of the evicting index after the
-- chunk (read here, so that it cannot run before the chunk), or with
-- ARGV[3] = "2" the skipped members, to retry.
--
-- Work: O(n + sum of the members' tags * log M) for indexes of M members,
-- in n + 4 + (other tags) commands, 2 more to begin, 2 fewer without a
-- snapshot. The caller bounds n (64) and the sum of tags (about 1024 per
-- call).

local ekey, tkey = KEYS[1], KEYS[2]
local tag = ARGV[1]
local n = tonumber(ARGV[2])
local want = tonumber(ARGV[4])

local mode = ARGV[3]
local begun = 0
if mode == '1' then
  if redis.call('EXISTS', tkey) == 1 then
    begun = redis.call('RENAMENX', tkey, ekey) == 1 and 2 or 1
  elseif redis.call('EXISTS', ekey) == 1 then
    begun = 1
  end
end

local index_of = {}
for i = 3 + 2 * n, #KEYS do
  index_of[ARGV[i - n + 2]] = KEYS[i]
end

-- Each member is checked on its own; what the evicted ones leave behind is
-- then removed with one command per key it touches, not one per member:
-- Lua's cost per command is what bounds a chunk.
local skipped, stale = 0, 0
local doomed, gone, leave, retry = {}, {}, {}, {}
local nsets = 0
local from = {} -- other index key -> evicted members in it
for i = 1, n do
  local member = ARGV[4 + i]
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
    retry[#retry + 1] = member
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
  -- A tag index just renamed is gone: nothing to remove from it.
  if mode ~= '2' and begun ~= 2 then
    redis.call('ZREM', tkey, unpack(gone))
  end
  for k, list in pairs(from) do
    redis.call('ZREM', k, unpack(list))
  end
end
if #leave > 0 then
  redis.call('ZREM', mode == '2' and tkey or ekey, unpack(leave))
end
local out
if mode == '2' then
  out = retry
else
  out = redis.call('ZRANGE', ekey, 0, want - 1)
end
table.insert(out, 1, begun)
table.insert(out, 1, stale)
table.insert(out, 1, skipped)
table.insert(out, 1, evicted)
return out
