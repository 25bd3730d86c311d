/* A pool of connections to one address (pool.h). */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

struct cachet_pool {
  const cachet_config *cfg;
  char *host; /* NULL: cfg's server, unix socket and db included */
  int port;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int size, nfree;
  int *free_idx;
  cachet_conn *slots;
};

int cachet_pool_create(const cachet_config *cfg, const char *host, int port,
                       int size, cachet_pool **out) {
  cachet_pool *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a pool");
  p->cfg = cfg;
  p->port = port;
  p->size = size;
  p->slots = calloc((size_t)size, sizeof *p->slots);
  p->free_idx = calloc((size_t)size, sizeof *p->free_idx);
  if (host != NULL)
    p->host = strdup(host);
  if (p->slots == NULL || p->free_idx == NULL ||
      (host != NULL && p->host == NULL)) {
    free(p->slots);
    free(p->free_idx);
    free(p->host);
    free(p);
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a pool");
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  /* Deadlines are monotonic so that a clock step cannot stretch a wait. */
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&p->mu, NULL);
  /* Low slots first, so a lightly used handle keeps few connections. */
  for (int i = 0; i < size; i++)
    p->free_idx[i] = size - 1 - i;
  p->nfree = size;
  *out = p;
  return CACHET_OK;
}

void cachet_pool_destroy(cachet_pool *p) {
  if (p == NULL)
    return;
  for (int i = 0; i < p->size; i++)
    cachet_conn_close(&p->slots[i]);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->slots);
  free(p->free_idx);
  free(p->host);
  free(p);
}

int cachet_pool_borrow(cachet_pool *p, cachet_conn **out) {
  int timeout_ms = p->cfg->timeout_ms;
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&p->mu);
  while (p->nfree == 0) {
    int w = pthread_cond_timedwait(&p->cv, &p->mu, &dl);
    if (w == ETIMEDOUT && p->nfree == 0) {
      pthread_mutex_unlock(&p->mu);
      return cachet_fail(CACHET_ETIMEDOUT,
                         "no pooled connection became free within %d ms "
                         "(pool_size %d)",
                         timeout_ms, p->size);
    }
  }
  int idx = p->free_idx[--p->nfree];
  pthread_mutex_unlock(&p->mu);

  cachet_conn *cn = &p->slots[idx];
  if (cn->ctx == NULL) {
    int rc = cachet_conn_connect(cn, p->cfg, p->host, p->port);
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
  pthread_mutex_lock(&p->mu);
  p->free_idx[p->nfree++] = (int)(cn - p->slots);
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}
