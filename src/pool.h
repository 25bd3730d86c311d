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
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conn.h"

/* A thread waiting in cachet_slots_take, on its own stack. */
typedef struct cachet_slot_waiter {
  /* Its own wake-up, not a condition variable on the pool's mutex: woken,
   * it runs without taking that mutex again. */
  sem_t wake;
  atomic_int idx; /* the slot handed to it; -1 until then */
  struct cachet_slot_waiter *next;
} cachet_slot_waiter;

/* `size` slots handed out whole, lowest first (so that a lightly used
 * handle keeps few connections), with a wait bounded by timeout_ms: the
 * links of a handle (link.c) and the connections of a node (below).
 *
 * When threads outnumber slots, a thread holds slots in slices, as a
 * scheduler does: within its slice (CACHET_SLOT_SLICE_NS from when it last
 * had to wait) it gives a slot back to the free list and takes it again
 * past the queue; once the slice is over, its give hands the slot straight
 * to the longest waiter, woken alone, and its next take queues. Handing
 * over on every give (or waking a waiter that then lost the slot to the
 * giver, as a plain condition variable does) costs a sleep and a wake-up
 * per call, which halved the throughput as soon as threads outnumbered
 * slots. The slice shrinks when the queue is long against the timeout, so
 * that it never makes a waiter time out. The head of the queue polls once
 * a slice, so a slot kept free for a giver that did not come back still
 * reaches it. */
#ifndef CACHET_SLOT_SLICE_NS
#define CACHET_SLOT_SLICE_NS 2000000u
#endif
typedef struct cachet_slots {
  pthread_mutex_t mu;
  int size, nfree;
  int *free_idx;
  cachet_slot_waiter *head, *tail; /* FIFO of waiters */
  int nwait;                       /* how many */
  uint64_t timeout_ns;             /* of the last take: the wait's bound */
} cachet_slots;

int cachet_slots_init(cachet_slots *s, int size); /* ENOMEM */
void cachet_slots_destroy(cachet_slots *s);
/* A free slot's index; ETIMEDOUT when none came free in time. */
int cachet_slots_take(cachet_slots *s, int timeout_ms, int *idx);
void cachet_slots_give(cachet_slots *s, int idx);
/* Tests only: called by a give between its two steps of a hand-off (the
 * waiter's wake-up, then the slot), under the slots' mutex. */
extern void (*cachet_slots_handoff_hook)(void);

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
