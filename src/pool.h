/* A pool of connections to one address. Internal.
 *
 * A fixed array of connections and a stack of free ones behind one mutex.
 * A connection keeps its socket across borrows; one that broke is closed
 * when it comes back and reconnected by its next borrower, outside the
 * lock, so a slow connect never blocks other threads. Every wait has a
 * deadline (timeout_ms). */
#ifndef CACHET_POOL_H
#define CACHET_POOL_H

#include <pthread.h>

#include "conn.h"

/* `size` slots handed out whole, lowest first (so that a lightly used
 * handle keeps few connections), with a wait bounded by timeout_ms: the
 * links of a handle (link.c) and the connections of a node (below). */
typedef struct cachet_slots {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC: a clock step cannot stretch it */
  int size, nfree;
  int *free_idx;
} cachet_slots;

int cachet_slots_init(cachet_slots *s, int size); /* ENOMEM */
void cachet_slots_destroy(cachet_slots *s);
/* A free slot's index; ETIMEDOUT when none came free in time. */
int cachet_slots_take(cachet_slots *s, int timeout_ms, int *idx);
void cachet_slots_give(cachet_slots *s, int idx);

typedef struct cachet_pool cachet_pool;

/* `size` connections to cfg's server, or to `host`:`port` (a cluster node),
 * over TLS with `tls`. `cfg` and `tls` must outlive the pool. ENOMEM. */
int cachet_pool_create(const cachet_config *cfg, const cachet_tls *tls,
                       const char *host, int port, int size, cachet_pool **out);
/* Close every connection. NULL is a no-op. None may be borrowed. */
void cachet_pool_destroy(cachet_pool *p);

/* Borrow a connected connection, waiting at most timeout_ms for a free one
 * and connecting it if needed. ETIMEDOUT (none became free), or the
 * connect's error. */
int cachet_pool_borrow(cachet_pool *p, cachet_conn **out);
/* Give it back; a broken one, or one that still owes replies, is closed.
 * NULL is a no-op. */
void cachet_pool_release(cachet_pool *p, cachet_conn *cn);

#endif
