/* The lock machine: acquire (with a bounded, jittered wait), release and
 * extend of a user lock or of get_or_set's stampede lock. Internal; see
 * op.h for the machine interface and lock.h for the lock handle. */
#ifndef CACHET_OP_LOCK_H
#define CACHET_OP_LOCK_H

#include "lock.h"
#include "op.h"

enum { CACHET_LOCK_ACQUIRE, CACHET_LOCK_RELEASE, CACHET_LOCK_EXTEND };

typedef struct cachet_op_lock {
  cachet_op op;
  int mode;        /* CACHET_LOCK_* */
  cachet_lock *lk; /* borrowed; acquire sets its fence */
  int64_t ttl_ms;
  int64_t wait_ms;
  int started, contended;
  int64_t start, deadline, backoff;
} cachet_op_lock;

/*
 * Acquire: CACHET_OK (lk->fence set), CACHET_NOT_ACQUIRED once wait_ms ran
 * out (0: try once), or an error; a user lock counts lock_acquisitions and
 * lock_contentions. Release and extend: CACHET_OK, CACHET_LOCK_EXPIRED or
 * CACHET_LOCK_NOT_OWNER, or an error. `lk` must outlive the machine.
 */
void cachet_op_lock_init(cachet_op_lock *x, cachet *c, int mode,
                         cachet_lock *lk, int64_t ttl_ms, int64_t wait_ms);

#endif
