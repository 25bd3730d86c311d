/* The clear and prune machines: SCAN over every master. Internal; see
 * op.h and docs/DESIGN.md "clear" and "prune". */
#ifndef CACHET_OP_SCAN_H
#define CACHET_OP_SCAN_H

#include "op.h"

/* prune: one index key being pruned. */
typedef struct cachet_scan_lane {
  int node; /* its master, whose next page waits for its lanes */
  char *key;
  size_t keylen;
  unsigned bucket;
  int phase;
  char zcursor[32];  /* its ZSCAN cursor */
  redisReply *zpage; /* a ZSCAN page whose calls are not built yet */
  size_t cmd0, ncmd; /* its commands in the current SEND */
} cachet_scan_lane;

typedef struct cachet_op_scan {
  cachet_op op;
  int prune, dry_run, clustered;
  char *pattern;  /* the SCAN MATCH pattern, prefix escaped */
  uint64_t count; /* clear: entries removed (or counted); prune: members */
  /* Every master at once, each with its own cursor. */
  char (*cursors)[32]; /* per master; "" once its SCAN is done */
  int *active;         /* per master: prune lanes not done */
  int *scanned;        /* the masters whose SCAN is in the current SEND */
  int nscans;
  size_t nchunks; /* clear_chunk calls in it, before the SCANs */
  cachet_scan_lane *lanes;
  size_t nlanes, lanecap;
} cachet_op_scan;

/* prune: prune; else clear (counting only, with dry_run). clustered: cut
 * clear_chunk calls per bucket (one slot each). ENOMEM with nothing to
 * run. The result: CACHET_OK or an error; x->count either way. */
int cachet_op_scan_init(cachet_op_scan *x, cachet *c, int prune, int dry_run,
                        int clustered);

#endif
