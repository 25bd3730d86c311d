-- lock_release: give a lock back, only if we still own it.
--
-- KEYS[1]      lock key         <prefix>{bb}l:<name>, or a stampede lock
--              <prefix>{bb}s:<key>
-- ARGV[1]      the owner token the lock was acquired with
--
-- The token is compared here, inside Redis, so that the check and the DEL
-- are one step: a client comparing first and deleting second could delete a
-- lock that expired in between and was taken by someone else.
--
-- Returns 1 when released, 0 when nobody holds the lock any more (it
-- expired; nothing is deleted), -1 when another owner holds it (nothing is
-- deleted).
--
-- Work: O(1).

local cur = redis.call('GET', KEYS[1])
if not cur then
  return 0
end
if cur ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[1])
return 1
