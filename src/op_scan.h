/* The clear and prune machines: SCAN over every master. Internal; see
 * op.h and docs/DESIGN.md "clear" and "prune". */
#ifndef CACHET_OP_SCAN_H
#define CACHET_OP_SCAN_H

#include "op.h"

typedef struct cachet_op_scan {
  cachet_op op;
  int prune, dry_run, clustered;
  char *pattern;    /* the SCAN MATCH pattern, prefix escaped */
  int node;         /* the master being scanned */
  char cursor[32];  /* its SCAN cursor */
  uint64_t count;   /* clear: entries removed (or counted); prune: members */
  redisReply *page; /* prune: the SCAN page of indexes being pruned */
  size_t ki;        /* ... the one being pruned */
  unsigned bucket;  /* ... and its bucket */
  char zcursor[32]; /* ... and its ZSCAN cursor */
  /* clear: every master at once, each with its own cursor. */
  char (*cursors)[32]; /* per master; "" once its SCAN is done */
  int *scanned;        /* the masters whose SCAN is in the current SEND */
  int nscans;
  size_t nchunks; /* clear_chunk calls in it, before the SCANs */
} cachet_op_scan;

/* prune: prune; else clear (counting only, with dry_run). clustered: cut
 * clear_chunk calls per bucket (one slot each). ENOMEM with nothing to
 * run. The result: CACHET_OK or an error; x->count either way. */
int cachet_op_scan_init(cachet_op_scan *x, cachet *c, int prune, int dry_run,
                        int clustered);

#endif
