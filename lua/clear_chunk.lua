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
-- thread; one UNLINK for the values and one for the rest, since Lua's cost
-- per command, not the deletion, is what a chunk pays most.
--
-- Returns the number of value keys (kind v) removed: the entries cleared.
--
-- Work: O(n), in at most two commands; the caller bounds n (256 per call).

local prefix = ARGV[1]
local plen = #prefix
local sub, match = string.sub, string.match

-- Two string calls a key: Lua's '^' anchors the match at plen + 1.
local values, others = {}, {}
for _, k in ipairs(KEYS) do
  if sub(k, 1, plen) == prefix then
    local kind = match(k, '^{[0-9a-f][0-9a-f]}([vmte]):', plen + 1)
    if kind == 'v' then
      values[#values + 1] = k
    elseif kind then
      others[#others + 1] = k
    end
  end
end
local entries = 0
if #values > 0 then
  entries = redis.call('UNLINK', unpack(values))
end
if #others > 0 then
  redis.call('UNLINK', unpack(others))
end
return entries
