/* The batch machines: mget (op_mget.c) and mset (op_mset.c), and what they
 * share (op_batch.c). Internal; see op.h, mset_plan.h, and docs/DESIGN.md
 * "set_many". */
#ifndef CACHET_OP_BATCH_H
#define CACHET_OP_BATCH_H

#include "mset_plan.h"
#include "op.h"
#include "op_entry.h"

/* Errors after which nothing more can be read on the connection: they stop
 * a batch, and the entries not carried out get them. */
int cachet_batch_fatal(int rc);

/* An entry's error: counted, and kept in *first (its detail in `detail`)
 * when it is the batch's first server-level one. */
void cachet_batch_entry_error(cachet *c, cachet_entry *e, int rc, int *first,
                              char *detail, size_t dsz);

/* The batch's end: its first server-level error, with that error's
 * detail, or CACHET_OK. */
int cachet_batch_finish(cachet_out *out, int first, const char *detail);

/* mget of e[0..n) (keys checked already): each entry's status, out and
 * outlen are written as its reply comes. */
typedef struct cachet_op_mget {
  cachet_op op;
  cachet_entry *e;
  size_t n, base, m;
  int first; /* the first server-level error, the call's result */
  char detail[512];
  /* With a near cache: the window's GETs are for the entries it could not
   * answer, entry idx[k] for command k, filled under ticket[k]. */
  size_t ncmd;
  size_t *idx;
  uint64_t *ticket;
} cachet_op_mget;

int cachet_op_mget_init(cachet_op_mget *x, cachet *c, cachet_entry *e,
                        size_t n);

/* mset of e[0..n) (checked already): each entry's status is written. */
typedef struct cachet_op_mset {
  cachet_op op;
  cachet_entry *e;
  size_t n, base, m;
  int by_bucket;
  cachet_mset_plan p;
  uint8_t **blobs; /* each entry's envelope, while its commands are out */
  size_t *blens;
  size_t pj, pfrom; /* plain SETs: the next one, the round's first */
  cachet_mset_run *groups;
  size_t ngroups;
  size_t *untag; /* plain entries whose tag set exists */
  size_t nuntag, ui;
  redisReply **sets; /* ... their tag sets */
  size_t i;          /* entries written one by one: the next */
  cachet_op_entry child;
  int child_on;
  int phase;
  int first;
  char detail[512];
} cachet_op_mset;

int cachet_op_mset_init(cachet_op_mset *x, cachet *c, cachet_entry *e,
                        size_t n);

#endif
