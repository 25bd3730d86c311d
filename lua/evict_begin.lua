-- evict_begin: start (or join) the eviction of one tag in one bucket.
--
-- KEYS[1]      tag index        <prefix>{bb}t:<tag>  (ZSET member -> expiry ms)
-- KEYS[2]      evicting index   <prefix>{bb}e:<tag>  (the same, being drained)
--
-- Returns 1 when the evicting index exists: an earlier eviction that failed
-- part-way, or one running now on another client, left members to drain; the
-- caller drains them first and calls again. Otherwise, if the tag index
-- exists, renames it to the evicting index and returns 2: the evicting index
-- is then a snapshot of every member the tag had, and writers that add the
-- tag from now on start a fresh tag index, so draining the snapshot ends even
-- under a steady stream of writes. Returns 0 when neither exists.
--
-- The renamed index keeps its TTL, which is never shorter than any member's,
-- so a snapshot never expires before the entries it lists.
--
-- Work: O(1), two commands: RENAMENX renames only when the evicting index
-- does not exist, which answers both questions at once.

if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('RENAMENX', KEYS[1], KEYS[2]) == 1 then
    return 2
  end
  return 1
end
return redis.call('EXISTS', KEYS[2])
