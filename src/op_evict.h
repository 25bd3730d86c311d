/* The evict-tags machine. Internal; see op.h, evict.h for its bounds, and
 * docs/DESIGN.md "evict-tags". */
#ifndef CACHET_OP_EVICT_H
#define CACHET_OP_EVICT_H

#include "evict.h"
#include "op.h"

/* Where a chunk's members come from (lua/evict_chunk.lua, ARGV[3]): the
 * snapshot e; t, which may hold more (the chunk begins the snapshot); or t,
 * all of it (fewer than a chunk's worth): no snapshot at all. */
enum {
  CACHET_EVICT_FROM_E = 0,
  CACHET_EVICT_FROM_T_BEGIN = 1,
  CACHET_EVICT_FROM_T_ALL = 2
};

/* One bucket of one tag being drained: a lane. Every lane advances in the
 * same pipelined SEND, so the round trips of an eviction do not grow with
 * the buckets and tags it touches. */
typedef struct cachet_evict_lane {
  unsigned ti, bucket; /* the tag (index in tags) and the bucket */
  int phase;           /* what it sends next: begin, sets, chunk */
  int mode;            /* where the members came from: CACHET_EVICT_FROM_* */
  int begin;           /* 1: joined an earlier snapshot; 2: took our own */
  int round, idle;
  size_t cmd0, ncmd; /* its commands in the current SEND */
  size_t take;       /* a chunk: how many of its members it takes */
  /* The chunk being built: its members (copied: one reply may list the
   * members of several lanes) and each member's tag set. */
  cachet_name *mem;
  char *mbuf;
  size_t nm;
  redisReply **sets;
  size_t nsets;
} cachet_evict_lane;

/* One evict_chunk call of a SEND: lanes of one bucket, lanes[first ..
 * first + n) of the call's order (cachet_op_evict.order). */
typedef struct cachet_evict_call {
  size_t cmd, first, n;
} cachet_evict_call;

typedef struct cachet_op_evict {
  cachet_op op;
  char **tags; /* owned copies */
  size_t ntags;
  size_t swept, sweep_to; /* tags swept so far; being swept: [swept, to) */
  cachet_evict_lane *lanes;
  size_t nlanes, lanecap;
  /* The chunks of the current SEND: calls, and the lanes (indexes into
   * lanes) each holds, in order. */
  cachet_evict_call *calls;
  size_t ncalls, callcap;
  size_t *order;
  size_t norder, ordercap;
  uint64_t evicted; /* entries whose value was deleted, so far */
  uint64_t sends;   /* pipelined round trips so far (for tests, benches) */
} cachet_op_evict;

/* Tags are checked (EINVAL) and copied; ENOMEM. Either way nothing to
 * run. The result: CACHET_OK once no entry that carried a tag before the
 * call can be read, or an error (EBUSY under contention); x->evicted counts
 * the entries evicted either way. */
int cachet_op_evict_init(cachet_op_evict *x, cachet *c, const char *const *tags,
                         size_t ntags);

#endif
