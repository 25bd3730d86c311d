/* The evict-tags machine. Internal; see op.h, evict.h for its bounds, and
 * docs/DESIGN.md "evict-tags". */
#ifndef CACHET_OP_EVICT_H
#define CACHET_OP_EVICT_H

#include "evict.h"
#include "op.h"

typedef struct cachet_op_evict {
  cachet_op op;
  char **tags; /* owned copies */
  size_t ntags, ti;
  unsigned char live[CACHET_BUCKETS]; /* buckets with a t or e key */
  unsigned bucket;
  int begin, round, idle;
  uint64_t evicted; /* entries whose value was deleted, so far */
  /* The chunk being built: the ZRANGE reply and each member's tag set. */
  redisReply *range;
  redisReply *sets[CACHET_EVICT_MEMBERS];
  size_t nsets;
} cachet_op_evict;

/* Tags are checked (EINVAL) and copied; ENOMEM. Either way nothing to
 * run. The result: CACHET_OK once no entry that carried a tag before the
 * call can be read, or an error (EBUSY under contention); x->evicted counts
 * the entries evicted either way. */
int cachet_op_evict_init(cachet_op_evict *x, cachet *c, const char *const *tags,
                         size_t ntags);

#endif
