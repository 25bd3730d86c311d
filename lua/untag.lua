-- untag: drop the memberships an entry had before a plain write made it
-- untagged.
--
-- mset stores untagged entries with a plain SET, no script, and checks in
-- the same pipeline whether their tag-set keys exist. Only for an entry
-- whose tag set exists (it had tags before) does C call untag, with the
-- envelope its SET stored. Until then the entry's old tag set and
-- memberships are stale: eviction of an old tag may still remove the new
-- value (never the reverse), and set_tags, delete and prune treat them as
-- the entry's tags, which is harmless.
--
-- KEYS[1]      value key        <prefix>{bb}v:<key>
-- KEYS[2]      tag-set key      <prefix>{bb}m:<key>
-- KEYS[3..]    index keys of the tags the caller knows the tag set holds
-- ARGV[1]      the envelope the plain SET stored
-- ARGV[2]      member: the user key
-- ARGV[3..]    tag names, one per KEYS[3..]
--
-- Returns 1 when the tag set and its memberships are gone (or there were
-- none), 0 when the value key no longer holds that envelope: a later write
-- owns the entry and its tags, and nothing is touched. Returns
-- {"retag", tag...} and changes nothing when the tag set holds tags whose
-- index keys were not passed (see set_tags.lua).
--
-- Work: one GET of a value below 64 KiB (larger ones never take the plain
-- path) and a string compare, then O(tags * log M); tags are bounded by
-- max_tags.

local vkey, skey = KEYS[1], KEYS[2]
local blob, member = ARGV[1], ARGV[2]

-- pcall: a key of another type is not this write's value either.
local cur = redis.pcall('GET', vkey)
if cur ~= blob then
  return 0
end

local index_of = {}
for i = 3, #KEYS do
  index_of[ARGV[i]] = KEYS[i]
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
return 1
