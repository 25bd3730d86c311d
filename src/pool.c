/* A pool of connections to one address (pool.h). */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"

int cachet_slots_init(cachet_slots *s, int size) {
  memset(s, 0, sizeof *s);
  if ((s->free_idx = calloc((size_t)size, sizeof *s->free_idx)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a pool");
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
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
  pthread_cond_destroy(&s->cv);
  free(s->free_idx);
  s->free_idx = NULL;
}

int cachet_slots_take(cachet_slots *s, int timeout_ms, int *idx) {
  struct timespec dl;
  cachet_deadline_ts(timeout_ms, &dl);
  pthread_mutex_lock(&s->mu);
  while (s->nfree == 0)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT &&
        s->nfree == 0) {
      pthread_mutex_unlock(&s->mu);
      return cachet_fail(CACHET_ETIMEDOUT,
                         "no pooled connection became free within %d ms "
                         "(pool_size %d)",
                         timeout_ms, s->size);
    }
  *idx = s->free_idx[--s->nfree];
  pthread_mutex_unlock(&s->mu);
  return CACHET_OK;
}

void cachet_slots_give(cachet_slots *s, int idx) {
  pthread_mutex_lock(&s->mu);
  s->free_idx[s->nfree++] = idx;
  pthread_cond_signal(&s->cv);
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
