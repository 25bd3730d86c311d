-- lock_extend: set a lock's remaining TTL, only if we still own it.
--
-- KEYS[1]      lock key         <prefix>{bb}l:<name>, or a stampede lock
--              <prefix>{bb}s:<key>
-- ARGV[1]      the owner token the lock was acquired with
-- ARGV[2]      the new TTL in ms, > 0
--
-- Used by the CLI's `lock extend` and by get_or_set's watchdog, which renews
-- the lease while a loader runs. As in lock_release, the token check and the
-- PEXPIRE are one step, so a lock that expired and was taken over is never
-- extended on its new owner's behalf. The TTL is set, not added to: it may
-- shorten the lock as well as lengthen it.
--
-- Returns 1 when extended, 0 when nobody holds the lock any more (it
-- expired), -1 when another owner holds it.
--
-- Work: O(1).

local cur = redis.call('GET', KEYS[1])
if not cur then
  return 0
end
if cur ~= ARGV[1] then
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
