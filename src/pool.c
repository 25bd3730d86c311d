/* A pool of connections to one address (pool.h). */
/* sem_clockwait (glibc 2.30): a deadline on CLOCK_MONOTONIC. */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"

int cachet_slots_init(cachet_slots *s, int size) {
  memset(s, 0, sizeof *s);
  if ((s->free_idx = calloc((size_t)size, sizeof *s->free_idx)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a pool");
  pthread_mutex_init(&s->mu, NULL);
  for (int i = 0; i < size; i++)
    s->free_idx[i] = size - 1 - i;
  s->size = s->nfree = size;
  return CACHET_OK;
}

void cachet_slots_destroy(cachet_slots *s) {
  if (s->free_idx == NULL)
    return;
  pthread_mutex_destroy(&s->mu);
  free(s->free_idx);
  s->free_idx = NULL;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec ns_ts(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  return ts;
}

/* The calling thread's slices: since when it has held slots of each pool
 * it used last without waiting. A few, since one call may hold slots of
 * two (a handle's link, then a cluster node's connection); a thread that
 * uses more pools than that just waits its turn more often. */
#define SLICES 4
static _Thread_local struct {
  const cachet_slots *s;
  uint64_t start;
} slices[SLICES];
static _Thread_local unsigned slice_next;

static uint64_t *slice_of(const cachet_slots *s) {
  for (int i = 0; i < SLICES; i++)
    if (slices[i].s == s)
      return &slices[i].start;
  return NULL;
}

static void slice_begin(const cachet_slots *s, uint64_t now) {
  uint64_t *start = slice_of(s);
  if (start == NULL) {
    unsigned i = slice_next++ % SLICES;
    slices[i].s = s;
    start = &slices[i].start;
  }
  *start = now;
}

/* Whether the slice still lets this thread take slots past the queue. It
 * is shortened when the queue is long against the timeout, so that slicing
 * never makes the last waiter time out: its wait, about nwait/size slices,
 * stays under a quarter of the timeout. Caller holds s->mu. */
static int slice_live(const cachet_slots *s, uint64_t now) {
  const uint64_t *start = slice_of(s);
  if (start == NULL)
    return 0;
  uint64_t len = CACHET_SLOT_SLICE_NS;
  if (s->nwait > 0) {
    uint64_t cap =
        s->timeout_ns * (uint64_t)s->size / (4u * (uint64_t)s->nwait);
    if (cap < len)
      len = cap;
  }
  return now - *start < len;
}

/* Take `w` out of the queue; the next waiter becomes head and must poll. */
static void unlink_waiter(cachet_slots *s, cachet_slot_waiter *w) {
  cachet_slot_waiter **pp = &s->head, *prev = NULL;
  while (*pp != w) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  *pp = w->next;
  if (s->tail == w)
    s->tail = prev;
  s->nwait--;
  if (prev == NULL && s->head != NULL)
    sem_post(&s->head->wake);
}

int cachet_slots_take(cachet_slots *s, int timeout_ms, int *idx) {
  pthread_mutex_lock(&s->mu);
  uint64_t now = mono_ns();
  s->timeout_ns = (uint64_t)timeout_ms * 1000000u;
  if (s->nfree > 0 && (s->head == NULL || slice_live(s, now))) {
    *idx = s->free_idx[--s->nfree];
    pthread_mutex_unlock(&s->mu);
    if (slice_of(s) == NULL)
      slice_begin(s, now);
    return CACHET_OK;
  }
  uint64_t deadline = now + (uint64_t)timeout_ms * 1000000u;
  cachet_slot_waiter w = {.idx = -1};
  sem_init(&w.wake, 0, 0);
  if (s->tail != NULL)
    s->tail->next = &w;
  else
    s->head = &w;
  s->tail = &w;
  s->nwait++;
  int got = -1;
  for (;;) {
    /* Only the head polls: a slot its giver kept for a live slice, and did
     * not come back for, is the head's after one poll period. */
    uint64_t until = deadline;
    if (s->head == &w && now + CACHET_SLOT_SLICE_NS < deadline)
      until = now + CACHET_SLOT_SLICE_NS;
    pthread_mutex_unlock(&s->mu);
    struct timespec ts = ns_ts(until);
    while (sem_clockwait(&w.wake, CLOCK_MONOTONIC, &ts) != 0 && errno == EINTR)
      ;
    if ((got = atomic_load_explicit(&w.idx, memory_order_acquire)) >= 0)
      break;
    pthread_mutex_lock(&s->mu);
    now = mono_ns();
    /* A hand-off that raced the deadline still counts: the slot is ours. */
    if ((got = atomic_load_explicit(&w.idx, memory_order_relaxed)) >= 0) {
      pthread_mutex_unlock(&s->mu);
      break;
    }
    if (s->head == &w && s->nfree > 0) {
      unlink_waiter(s, &w);
      got = s->free_idx[--s->nfree];
      pthread_mutex_unlock(&s->mu);
      break;
    }
    if (now >= deadline) {
      unlink_waiter(s, &w);
      pthread_mutex_unlock(&s->mu);
      break;
    }
  }
  sem_destroy(&w.wake);
  if (got < 0)
    return cachet_fail(CACHET_ETIMEDOUT,
                       "no pooled connection became free within %d ms "
                       "(pool_size %d)",
                       timeout_ms, s->size);
  slice_begin(s, mono_ns());
  *idx = got;
  return CACHET_OK;
}

void (*cachet_slots_handoff_hook)(void);

void cachet_slots_give(cachet_slots *s, int idx) {
  pthread_mutex_lock(&s->mu);
  cachet_slot_waiter *w = s->head;
  if (w != NULL && !slice_live(s, mono_ns())) {
    /* The slice is over: the slot goes to the longest waiter, and this
     * thread's next take queues behind it. */
    s->head = w->next;
    s->nwait--;
    if (s->head == NULL)
      s->tail = NULL;
    else
      sem_post(&s->head->wake); /* the new head polls */
    /* The wake-up first, the slot last. A waiter whose poll timed out
     * reads the slot without the lock and then destroys its semaphore at
     * once, so a post after the slot could land on a dead semaphore in a
     * stack frame already reused. Until the slot is stored, a woken waiter
     * finds none and takes the lock, which is held here. */
    sem_post(&w->wake);
    if (cachet_slots_handoff_hook != NULL)
      cachet_slots_handoff_hook();
    atomic_store_explicit(&w->idx, idx, memory_order_release);
  } else {
    s->free_idx[s->nfree++] = idx;
  }
  pthread_mutex_unlock(&s->mu);
}

struct cachet_pool {
  const cachet_config *cfg;
  const cachet_tls *tls;
  char *host; /* NULL: cfg's server, unix socket and db included */
  int port;
  cachet_slots free;
  cachet_conn *slots;
};

int cachet_pool_create(const cachet_config *cfg, const cachet_tls *tls,
                       const char *host, int port, int size,
                       cachet_pool **out) {
  cachet_pool *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a pool");
  p->cfg = cfg;
  p->tls = tls;
  p->port = port;
  p->slots = calloc((size_t)size, sizeof *p->slots);
  if (host != NULL)
    p->host = strdup(host);
  if (p->slots == NULL || (host != NULL && p->host == NULL) ||
      cachet_slots_init(&p->free, size) != CACHET_OK) {
    free(p->slots);
    free(p->host);
    free(p);
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a pool");
  }
  *out = p;
  return CACHET_OK;
}

void cachet_pool_destroy(cachet_pool *p) {
  if (p == NULL)
    return;
  for (int i = 0; i < p->free.size; i++)
    cachet_conn_close(&p->slots[i]);
  cachet_slots_destroy(&p->free);
  free(p->slots);
  free(p->host);
  free(p);
}

int cachet_pool_borrow(cachet_pool *p, cachet_conn **out) {
  int idx;
  int rc = cachet_slots_take(&p->free, p->cfg->timeout_ms, &idx);
  if (rc != CACHET_OK)
    return rc;
  cachet_conn *cn = &p->slots[idx];
  if (!cachet_conn_connected(cn)) {
    rc = cachet_conn_connect(cn, p->cfg, p->tls, p->host, p->port);
    if (rc != CACHET_OK) {
      cachet_pool_release(p, cn);
      return rc;
    }
  }
  *out = cn;
  return CACHET_OK;
}

void cachet_pool_release(cachet_pool *p, cachet_conn *cn) {
  if (cn == NULL)
    return;
  /* A connection that still owes replies would hand them to the next
   * borrower as answers to its own commands. */
  if (cn->broken || cn->pending > 0)
    cachet_conn_close(cn);
  cachet_slots_give(&p->free, (int)(cn - p->slots));
}
