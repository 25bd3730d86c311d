-- evict_begin: start (or join) the eviction of one tag in one bucket, and
-- return the first members to drain.
--
-- KEYS[1]      tag index        <prefix>{bb}t:<tag>  (ZSET member -> expiry ms)
-- KEYS[2]      evicting index   <prefix>{bb}e:<tag>  (the same, being drained)
-- ARGV[1]      how many members of the evicting index to return (> 0)
--
-- Returns {1, member...} when the evicting index exists: an earlier eviction
-- that failed part-way, or one running now on another client, left members
-- to drain; the caller drains them first and calls again. Otherwise, if the
-- tag index exists, renames it to the evicting index and returns
-- {2, member...}: the evicting index is then a snapshot of every member the
-- tag had, and writers that add the tag from now on start a fresh tag index,
-- so draining the snapshot ends even under a steady stream of writes.
-- Returns {0} when neither exists. The members are the first ARGV[1] of the
-- evicting index, read here so that the caller's next step cannot run before
-- this one (a NOSCRIPT retry sends a command again behind its pipeline).
--
-- The renamed index keeps its TTL, which is never shorter than any member's,
-- so a snapshot never expires before the entries it lists.
--
-- Work: O(1) and O(log M + ARGV[1]) for the range, three commands: RENAMENX
-- renames only when the evicting index does not exist, which answers both
-- questions at once.

local state = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  state = redis.call('RENAMENX', KEYS[1], KEYS[2]) == 1 and 2 or 1
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  state = 1
end
if state == 0 then
  return {0}
end
local out = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)
table.insert(out, 1, state)
return out
