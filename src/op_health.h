/* The health probe machine. Internal; see op.h, health.h for the verdict,
 * and docs/DESIGN.md "Metrics and health". */
#ifndef CACHET_OP_HEALTH_H
#define CACHET_OP_HEALTH_H

#include "op.h"

/* Masters one probe covers (a cluster has far fewer). */
#define CACHET_HEALTH_NODES 1024

typedef struct cachet_op_health {
  cachet_op op;
  cachet_health h; /* the result, on CACHET_OK */
  int nodes, answered, first_rc, stale, retried;
  double t0;
  double ping[CACHET_HEALTH_NODES];
  unsigned char failed[CACHET_HEALTH_NODES];
  char detail[512];
  char down[700];
} cachet_op_health;

/* The result: CACHET_OK with x->h filled (even when unhealthy or
 * degraded), or the error of a server that cannot be reached. */
void cachet_op_health_init(cachet_op_health *x, cachet *c);

/* INFO stats, memory and clients of every master, summed into x->info. */
typedef struct cachet_op_info {
  cachet_op op;
  cachet_server_info info;
} cachet_op_info;

void cachet_op_info_init(cachet_op_info *x, cachet *c);

#endif
