-- delete_entry: delete one entry and its tag memberships atomically.
--
-- KEYS[1]      value key        <prefix>{bb}v:<key>
-- KEYS[2]      tag-set key      <prefix>{bb}m:<key>
-- KEYS[3..]    index keys of the tags the caller knows the entry carries
-- ARGV[1]      member: the user key
-- ARGV[2..]    tag names, one per KEYS[3..]
--
-- Returns 1 if the value existed, 0 if not. Returns {"retag", tag...} and
-- deletes nothing when the entry carries tags whose index keys were not
-- passed (see set_tags.lua).
--
-- Work: O(tags * log M); tags are bounded by max_tags.

local vkey, skey = KEYS[1], KEYS[2]
local member = ARGV[1]

local index_of = {}
for i = 3, #KEYS do
  index_of[ARGV[i - 1]] = KEYS[i]
end

local old = redis.call('SMEMBERS', skey)
local unknown = {}
for _, t in ipairs(old) do
  if not index_of[t] then
    unknown[#unknown + 1] = t
  end
end
if #unknown > 0 then
  table.insert(unknown, 1, 'retag')
  return unknown
end

for _, t in ipairs(old) do
  redis.call('ZREM', index_of[t], member)
end
redis.call('DEL', skey)
return redis.call('DEL', vkey)
