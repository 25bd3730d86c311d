/* mset's planner: how one window of a batch is written. Internal, pure (no
 * I/O), so that it is tested alone. See op_mset.c for the machine that
 * carries a plan out, and docs/DESIGN.md "set_many". */
#ifndef CACHET_MSET_PLAN_H
#define CACHET_MSET_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "cachet.h"

/* Entries per window: large enough to hide the round trip, small enough to
 * bound the client's and the server's buffers. */
#define CACHET_MSET_WINDOW 1000

/* Bounds of one set_many call. Redis runs a script without serving anyone
 * else, so a call's work is kept near half a millisecond on an idle server
 * (about 1 ms worst case), measured with INFO commandstats and SLOWLOG:
 * at most CACHET_MSET_CALL_KEYS keys, CACHET_MSET_CALL_WORK units as counted
 * by cachet_mset_entry_work(), and CACHET_MSET_CALL_BYTES bytes of
 * arguments (a script copies its arguments more than once: about 6 ms per
 * MiB on a small VM). An entry larger than a bound goes alone in its call,
 * where it costs what set_tags would; one of CACHET_STAGE_MIN or more goes
 * through set_tags, staged. */
#define CACHET_MSET_CALL_KEYS 1000
#define CACHET_MSET_CALL_WORK 500
#define CACHET_MSET_CALL_BYTES ((size_t)128 << 10)

/* Where an entry of the window stands. */
enum {
  CACHET_MSET_CALL,    /* in a set_many call */
  CACHET_MSET_DONE,    /* has its status */
  CACHET_MSET_RETAG,   /* set_many skipped it: old tags it was not given */
  CACHET_MSET_ALONE,   /* too many keys for a call, or a staged value */
  CACHET_MSET_DUP,     /* a later entry of the window has the same key */
  CACHET_MSET_PLAIN,   /* untagged: a plain SET */
  CACHET_MSET_WRITTEN, /* its plain SET is done; its group's EXISTS is not */
  CACHET_MSET_UNTAG    /* written, but it may still have a tag set to drop */
};

/* A run of entries: a set_many call, or a group of plain SETs sharing one
 * EXISTS. */
typedef struct cachet_mset_run {
  size_t first, len;
} cachet_mset_run;

typedef struct cachet_mset_plan {
  size_t cap;            /* entries per window */
  unsigned char *st;     /* CACHET_MSET_* of each entry */
  unsigned char *bucket; /* bucket of each entry */
  size_t *winner;        /* the occurrence of its key that is written */
  size_t *order;         /* entries in set_many calls, by bucket */
  size_t norder;
  cachet_mset_run *calls;
  size_t ncalls;
  size_t *plain; /* untagged entries, by bucket */
  size_t nplain;
  size_t *tmp;
  uint32_t *table; /* open-addressing set of keys, for duplicates */
  size_t tsize;    /* a power of 2 */
  size_t ecap;     /* most entries a call may hold */
} cachet_mset_plan;

/* Room for windows of min(n, CACHET_MSET_WINDOW) entries of `e`. ENOMEM. */
int cachet_mset_plan_alloc(cachet_mset_plan *p, const cachet_entry *e,
                           size_t n);
void cachet_mset_plan_free(cachet_mset_plan *p);

/*
 * Plan window e[0..m): find duplicate keys (the last occurrence wins), set
 * untagged entries apart for plain SETs, order the others by bucket, and cut
 * them into calls within the bounds. by_bucket (Redis Cluster): every key of
 * one call must hash to one slot, which in cachet's layout means one bucket:
 * a call is also cut where the bucket changes. `prefixlen` sizes the key
 * names in the byte bound.
 */
void cachet_mset_plan_window(cachet_mset_plan *p, const cachet_entry *e,
                             size_t m, int by_bucket, size_t prefixlen);

/* Server work of one entry, in units of about 1 us of script time. */
size_t cachet_mset_entry_work(size_t ntags);

#endif
