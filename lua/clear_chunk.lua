-- clear_chunk: delete one batch of a namespace's cache keys.
--
-- KEYS[1..n]   keys found by SCAN MATCH <escaped prefix>{??}[vmte]:*
-- ARGV[1]      the prefix
--
-- Each key is checked again before it is deleted: it must start with the
-- prefix, followed by a hash tag of two lowercase hex digits and one of the
-- cache data kinds, v (value), m (tag set), t (tag index) or e (tag index
-- being evicted), then ':'. Anything else (a foreign key that the pattern
-- matched, a lock l, a fencing counter f, a stampede lock s) is left alone.
-- Keys are removed with UNLINK, so a large index is freed off the main
-- thread.
--
-- Returns the number of value keys (kind v) removed: the entries cleared.
--
-- Work: O(n); the caller bounds n (256 per call).

local prefix = ARGV[1]
local plen = #prefix

local entries = 0
for _, k in ipairs(KEYS) do
  if string.sub(k, 1, plen) == prefix and
      string.find(string.sub(k, plen + 1, plen + 6),
                  '^{[0-9a-f][0-9a-f]}[vmte]:$') then
    local removed = redis.call('UNLINK', k)
    if string.sub(k, plen + 5, plen + 5) == 'v' then
      entries = entries + removed
    end
  end
end
return entries
