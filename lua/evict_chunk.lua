-- evict_chunk: evict a bounded chunk of the members of the tags being
-- evicted in one bucket, and return what each drains next.
--
-- The call holds one or more lanes: a lane is one tag of the bucket. All
-- its keys share the bucket's hash tag {bb}, so one call can serve every
-- tag of a multi-tag eviction there, and pays Lua's fixed cost per call
-- once for all of them.
--
-- KEYS, per lane j in order: its evicting index <prefix>{bb}e:<tag_j>, its
--                  tag index <prefix>{bb}t:<tag_j> (may not exist), then per
--                  member i: value key <prefix>{bb}v:<key_i> and tag-set key
--                  <prefix>{bb}m:<key_i>;
-- KEYS, then:      index keys <prefix>{bb}t:<other> of the other tags the
--                  caller saw in those members' tag sets
-- ARGV[1]          L, the number of lanes
-- ARGV[2]          how many members of an evicting index to return (> 0)
-- ARGV, per lane:  its tag; n, its number of members; where they come from:
--                  "0": the evicting index (a snapshot being drained);
--                  "1": the tag index, which may hold more: begin first, as
--                  evict_begin does, and drain the snapshot after;
--                  "2": the tag index, all it held when the caller read it
--                  (fewer than ARGV[2]): no snapshot is needed, since members
--                  added since were written after the eviction started;
--                  they are removed from the tag index itself;
--                  then the n members (user keys), in the order of their KEYS
-- ARGV, then:      the other tag names, one per other index key, same order
--
-- A lane with mode "1" first starts or joins the eviction: if the evicting
-- index exists it is joined (begun = 1), else the tag index is renamed to it
-- (begun = 2), else neither exists (begun = 0).
--
-- For each member, the tag set is read again here, since a writer may have
-- changed it since the caller read it:
--  - it does not hold the tag (expired, deleted, overwritten with other
--    tags), or an earlier lane of this call evicts it: the membership is
--    stale and is only removed from the lane's evicting index (its tag index
--    with mode "2");
--  - it holds a tag whose index key was not passed: the member is skipped
--    and stays where it is; the caller reads its tag set again and retries;
--  - otherwise the entry is evicted: its value and tag set are deleted and
--    it leaves every index it was in.
-- What the evicted entries leave behind is removed at the end with one
-- command per key (one DEL, one ZREM per index), not one per member: Lua's
-- cost per command is what bounds a chunk.
--
-- Returns {evicted, then per lane: doomed, skipped, stale, begun, count,
-- member...}: evicted counts values that existed, over all lanes; a lane's
-- doomed counts the entries it evicts; begun is 0 unless its mode is "1";
-- its members are what it drains next: the first ARGV[2] of its evicting
-- index after the call (read here, so that the read cannot run before the
-- chunk), or with mode "2" its skipped members, to retry.
--
-- Work: O(members + sum of their tags * log M) for indexes of M members,
-- in (members + 2 or 3 per lane + 1 + other indexes) commands. The caller
-- bounds the members (64) and the sum of tags (about 1024) of a call.

local nlanes = tonumber(ARGV[1])
local want = tonumber(ARGV[2])

-- Where each lane's keys and arguments start, and the other indexes.
local lanes = {}
local k, a = 1, 3
for j = 1, nlanes do
  local n = tonumber(ARGV[a + 1])
  lanes[j] = {k = k, a = a, n = n}
  k = k + 2 + 2 * n
  a = a + 3 + n
end
local index_of = {}
for i = k, #KEYS do
  index_of[ARGV[a + i - k]] = KEYS[i]
end

local doomed_keys, nsets = {}, 0
local dead = {} -- members evicted by this call
local from = {} -- other index key -> evicted members in it
local out = {0}
local results = {}

for j = 1, nlanes do
  local lane = lanes[j]
  local ekey, tkey = KEYS[lane.k], KEYS[lane.k + 1]
  local tag, n, mode = ARGV[lane.a], lane.n, ARGV[lane.a + 2]
  local begun = 0
  if mode == '1' then
    if redis.call('EXISTS', tkey) == 1 then
      begun = redis.call('RENAMENX', tkey, ekey) == 1 and 2 or 1
    elseif redis.call('EXISTS', ekey) == 1 then
      begun = 1
    end
  end
  local doomed, skipped, stale = 0, 0, 0
  local gone, leave, retry = {}, {}, {}
  for i = 1, n do
    local member = ARGV[lane.a + 2 + i]
    local vkey, skey = KEYS[lane.k + 2 * i], KEYS[lane.k + 2 * i + 1]
    if dead[member] then
      leave[#leave + 1] = member
      stale = stale + 1
    else
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
        dead[member] = true
        doomed_keys[#doomed_keys + 1] = vkey
        doomed_keys[#doomed_keys + 1] = skey
        nsets = nsets + 1
        doomed = doomed + 1
        gone[#gone + 1] = member
        leave[#leave + 1] = member
        for _, t in ipairs(tags) do
          if t ~= tag then
            local ik = index_of[t]
            local list = from[ik]
            if not list then
              list = {}
              from[ik] = list
            end
            list[#list + 1] = member
          end
        end
      end
    end
  end
  results[j] = {ekey = ekey, tkey = tkey, mode = mode, begun = begun,
                doomed = doomed, skipped = skipped, stale = stale,
                gone = gone, leave = leave, retry = retry}
end

-- Every doomed tag set exists (it holds the tag): what DEL counts beyond
-- them are the values.
if #doomed_keys > 0 then
  out[1] = redis.call('DEL', unpack(doomed_keys)) - nsets
end
-- Each index loses its members in one ZREM, after every read of it: a ZREM
-- that empties an index deletes it, and on the source node of a slot being
-- migrated Redis stops a script at the first command on a key gone missing,
-- its earlier writes done. (A tag index renamed by a lane is gone already:
-- its members moved to the snapshot, which that lane drains.)
-- drop[key]: the lists of members it loses (one, nearly always: copying
-- members into a new list costs as much as a command).
local drop, order = {}, {}
local function take(key, list)
  local d = drop[key]
  if not d then
    drop[key] = {list}
    order[#order + 1] = key
  else
    d[#d + 1] = list
  end
end
local renamed = {}
for j = 1, nlanes do
  if results[j].begun == 2 then
    renamed[results[j].tkey] = true
  end
end
for ik, list in pairs(from) do
  if not renamed[ik] then
    take(ik, list)
  end
end
for j = 1, nlanes do
  local r = results[j]
  if r.mode ~= '2' and r.begun ~= 2 and #r.gone > 0 then
    take(r.tkey, r.gone)
  end
  if #r.leave > 0 then
    take(r.mode == '2' and r.tkey or r.ekey, r.leave)
  end
end

-- What each lane drains next: the first members of its evicting index once
-- this call's are gone from it, read before they go.
local nexts = {}
for j = 1, nlanes do
  local r = results[j]
  if r.mode == '2' then
    nexts[j] = r.retry
  else
    local going, n = {}, 0
    for _, list in ipairs(drop[r.ekey] or {}) do
      for _, m in ipairs(list) do
        if not going[m] then
          going[m] = true
          n = n + 1
        end
      end
    end
    local next = {}
    for _, m in ipairs(redis.call('ZRANGE', r.ekey, 0, want - 1 + n)) do
      if not going[m] and #next < want then
        next[#next + 1] = m
      end
    end
    nexts[j] = next
  end
end
for _, key in ipairs(order) do
  local lists = drop[key]
  local all = lists[1]
  if #lists > 1 then
    all = {}
    for _, list in ipairs(lists) do
      for _, m in ipairs(list) do
        all[#all + 1] = m
      end
    end
  end
  redis.call('ZREM', key, unpack(all))
end

for j = 1, nlanes do
  local r = results[j]
  local next = nexts[j]
  out[#out + 1] = r.doomed
  out[#out + 1] = r.skipped
  out[#out + 1] = r.stale
  out[#out + 1] = r.begun
  out[#out + 1] = #next
  for _, m in ipairs(next) do
    out[#out + 1] = m
  end
end
return out
