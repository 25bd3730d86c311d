-- prune_dangling: remove the members of one index whose entry no longer
-- carries the tag.
--
-- KEYS[1]          tag index        <prefix>{bb}t:<tag>
-- KEYS[2..1+2n]    per member i: value key <prefix>{bb}v:<key_i>, then its
--                  tag-set key <prefix>{bb}m:<key_i>
-- ARGV[1]          the tag
-- ARGV[2..1+n]     the members (user keys), in the order of their KEYS
--
-- A membership is dangling when the value is gone (deleted or evicted behind
-- cachet's back, e.g. an external DEL or maxmemory eviction) or the tag set no
-- longer holds the tag. Such a member is removed from KEYS[1]. When the value
-- is gone its orphaned tag set is deleted too: nothing else would ever remove
-- a tag set left without a TTL. Live members are not touched.
--
-- Returns the number of members removed.
--
-- Work: O(n * log M) for an index of M members; the caller bounds n (128).

local key, tag = KEYS[1], ARGV[1]
local n = (#KEYS - 1) / 2

-- One ZREM at the end, not one per member: a ZREM that empties the index
-- deletes it, and on the source node of a slot being migrated Redis stops
-- a script that touches a key gone missing, half way through.
local dangling = {}
for i = 1, n do
  local member = ARGV[1 + i]
  local vkey, skey = KEYS[2 * i], KEYS[1 + 2 * i]
  if redis.call('EXISTS', vkey) == 0 then
    redis.call('DEL', skey)
    dangling[#dangling + 1] = member
  elseif redis.call('SISMEMBER', skey, tag) == 0 then
    dangling[#dangling + 1] = member
  end
end
if #dangling == 0 then
  return 0
end
return redis.call('ZREM', key, unpack(dangling))
