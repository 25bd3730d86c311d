-- lock_acquire: take a lock if nobody holds it, and fence it.
--
-- KEYS[1]      lock key         <prefix>{bb}l:<name>  (value = owner token)
--              or an entry's stampede lock <prefix>{bb}s:<key>
-- KEYS[2]      fencing counter  <prefix>{bb}f:<name>  (optional: stampede
--              locks pass none)
-- ARGV[1]      the owner token: 32 lowercase hex digits, fresh per acquire
-- ARGV[2]      ttl in ms, > 0 (the caller refuses 0: no lock lives without
--              a TTL)
--
-- Returns {1, fence} when the lock was free and is now ours: fence is the
-- counter's new value, so it rises with every acquisition of the name and a
-- resource guarded by the lock can refuse a write carrying an older one
-- (fence is 0 without KEYS[2]). Returns {0, pttl} when someone else holds
-- it: pttl is the holder's remaining TTL in ms (0 if the key has none), so
-- a waiter can size its backoff.
--
-- If the counter cannot be incremented (it is not an integer), or it comes
-- out below 1 (a foreign write set it negative: as the unsigned number the
-- caller reads, the fence would fall when it crosses zero), the lock just
-- taken is given back before the error is returned: a lock is never held
-- without a fence that rises.
--
-- Work: O(1).

local lkey, fkey = KEYS[1], KEYS[2]
local token, ttl = ARGV[1], ARGV[2]

if redis.call('SET', lkey, token, 'NX', 'PX', ttl) then
  if not fkey then
    return {1, 0}
  end
  local fence = redis.pcall('INCR', fkey)
  if type(fence) == 'table' and fence.err then
    redis.call('DEL', lkey)
    return fence
  end
  if fence < 1 then
    redis.call('DEL', lkey)
    return redis.error_reply('ERR cachet: the fencing counter ' .. fkey ..
                             ' is ' .. fence .. ', not positive')
  end
  return {1, fence}
end

local pttl = redis.call('PTTL', lkey)
if pttl < 0 then
  pttl = 0
end
return {0, pttl}
