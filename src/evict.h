/* Tag eviction's bounds and chunk planning, for the evict-tags machine
 * (op_evict.c), which both APIs drive. Internal and pure (no I/O); see
 * docs/DESIGN.md, "evict-tags". */
#ifndef CACHET_EVICT_H
#define CACHET_EVICT_H

#include <stddef.h>

/* Members read per eviction chunk, and the most key operations (values,
 * tag sets and memberships) one evict_chunk call may perform. */
#define CACHET_EVICT_MEMBERS 64
#define CACHET_EVICT_OPS 1024
/* Most commands in one pipelined SEND of an eviction, so that one call
 * cannot flood the server's output buffers (a few hundred KB of replies at
 * most); lanes beyond it wait for the next SEND. */
#define CACHET_EVICT_PIPELINE 4096
/* Rounds of begin/drain per bucket before giving up under contention: each
 * round is one more concurrent eviction of the same tag. */
#define CACHET_EVICT_BEGINS 64
/* Chunks in a row that neither evicted nor dropped anything (every member
 * skipped because its tags kept changing) before giving up. */
#define CACHET_EVICT_IDLE_ROUNDS 16

/* A borrowed name (a tag), for sorting and de-duplication. */
typedef struct cachet_name {
  const char *s;
  size_t len;
} cachet_name;

/* How many of a chunk's first members one evict_chunk call takes: member i
 * costs 2 key operations (value, tag set) plus one per tag it carries
 * (ntags[i]); the call takes members while the total stays within
 * CACHET_EVICT_OPS, and always at least one. *tags is the sum of ntags over
 * the members taken. n must be > 0. */
size_t cachet_evict_take(const size_t *ntags, size_t n, size_t *tags);

/* Sort names[0..n) and keep each name once, leaving out `tag` itself: the
 * other tags whose index keys the call must be given. Returns how many are
 * left at the front of names. */
size_t cachet_evict_others(cachet_name *names, size_t n, const char *tag,
                           size_t taglen);

#endif
