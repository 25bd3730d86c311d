/* The sync runner: a machine (op.h) driven to its end on the calling
 * thread. Internal. */
#ifndef CACHET_RUN_H
#define CACHET_RUN_H

#include "link.h"
#include "op.h"

/*
 * Run `op` until it is done and return its status (the calling thread's
 * detail says why after an error). Connections are borrowed from c's pool
 * for each stretch of SENDs and given back before a SLEEP or a loader run;
 * waits are bounded by the machine (SLEEP) and by timeout_ms (replies, the
 * pool). The caller takes what the machine produced (a value, a count),
 * then frees it with op->k->free(op), whatever the status.
 */
int cachet_run(cachet *c, cachet_op *op);

#endif
