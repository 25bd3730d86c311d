/* What a sync call borrows: a link to the server or the cluster (link.h).
 *
 * A cluster session borrows at most one connection per master for
 * pipelined work, lazily, and a second, short-lived one when a command must
 * go to a master whose connection still owes pipelined replies (a
 * redirected retry). Every appended command is remembered until its reply
 * is read, so that a MOVED, ASK, TRYAGAIN or CLUSTERDOWN in the middle of a
 * pipeline is retried alone and its reply still comes back in append
 * order. Bounds: CACHET_REDIRECTS per command; TRYAGAIN and CLUSTERDOWN are
 * retried with jittered backoff (2 -> 100 ms) until timeout_ms after the
 * command started; I/O errors are returned at once (the command may have
 * run), and the map is refreshed before the next command. */
#include "link.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "error.h"
#include "pool.h"

#define BACKOFF_MIN_MS 2
#define BACKOFF_MAX_MS 100

/* A node connection a session holds, and the replies it still owes. */
typedef struct held {
  int node;
  cachet_conn *cn;
  size_t pending;
  int dirty; /* appended commands not yet written out */
} held;

/* A pipelined command: its copy (for a redirected retry), where it went, or
 * why it could not be sent. */
typedef struct queued {
  int h; /* index into held, -1 when err is set */
  int slot;
  int err;
  char *msg;
  int argc;
  const char **argv;
  size_t *lens;
  void *mem;
} queued;

struct cachet_link {
  struct cachet_links *ls;
  int index;
  cachet_conn conn; /* a single server: the link's own connection */
  /* A cluster session. */
  held *held;
  int nheld;
  size_t capheld;
  queued *q;
  size_t qhead, qlen, qcap;
  int broken;
  /* A read of this pipeline failed: later redirected commands are not
   * retried but get this failure (see cluster_read). */
  int failed;
  char failed_why[512];
  int last; /* node of the last reply, -1 none */
  int snap[CACHET_ROUTER_NODES];
  int nsnap;
};

typedef struct cachet_links {
  cachet *c;
  cachet_slots free;
  cachet_link *links;
  /* Cluster mode. */
  cachet_router *rt;
  pthread_mutex_t nodes_mu, refresh_mu;
  cachet_pool *pools[CACHET_ROUTER_NODES]; /* per node, made on first use */
  int node_pool;
} cachet_links;

/* ---- the handle's links ---------------------------------------------------
 */

int cachet_links_create(cachet *c) {
  cachet_links *ls = calloc(1, sizeof *ls);
  int size = c->cfg.pool_size;
  int rc = CACHET_OK;
  if (ls == NULL ||
      (ls->links = calloc((size_t)size, sizeof *ls->links)) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "out of memory creating the pool");
  if (rc == CACHET_OK && c->cfg.cluster)
    rc = cachet_router_create(c->cfg.cluster_seeds, &ls->rt);
  if (rc == CACHET_OK)
    rc = cachet_slots_init(&ls->free, size);
  if (rc != CACHET_OK) {
    if (ls != NULL) {
      cachet_router_destroy(ls->rt);
      free(ls->links);
    }
    free(ls);
    return rc;
  }
  ls->c = c;
  /* Each session holds at most one pipelined connection per node, plus one
   * for a redirected retry; one more serves refreshes. */
  ls->node_pool = 2 * size + 1;
  pthread_mutex_init(&ls->nodes_mu, NULL);
  pthread_mutex_init(&ls->refresh_mu, NULL);
  for (int i = 0; i < size; i++) {
    ls->links[i].ls = ls;
    ls->links[i].index = i;
    ls->links[i].last = -1;
  }
  c->links = ls;
  return CACHET_OK;
}

static void queue_clear(cachet_link *l) {
  for (size_t i = l->qhead; i < l->qlen; i++) {
    free(l->q[i].mem);
    free(l->q[i].msg);
  }
  l->qhead = l->qlen = 0;
}

void cachet_links_destroy(cachet *c) {
  cachet_links *ls = c->links;
  if (ls == NULL)
    return;
  for (int i = 0; i < ls->free.size; i++) {
    cachet_conn_close(&ls->links[i].conn);
    free(ls->links[i].held);
    free(ls->links[i].q);
  }
  for (int i = 0; i < CACHET_ROUTER_NODES; i++)
    cachet_pool_destroy(ls->pools[i]);
  cachet_router_destroy(ls->rt);
  cachet_slots_destroy(&ls->free);
  pthread_mutex_destroy(&ls->nodes_mu);
  pthread_mutex_destroy(&ls->refresh_mu);
  free(ls->links);
  free(ls);
  c->links = NULL;
}

cachet_router *cachet_links_router(cachet *c) { return c->links->rt; }

/* The pool of node `idx`, made on first use. */
static cachet_pool *node_pool(cachet_links *ls, int idx) {
  pthread_mutex_lock(&ls->nodes_mu);
  cachet_pool *p = ls->pools[idx];
  if (p == NULL) {
    int port;
    const char *host = cachet_router_host(ls->rt, idx, &port);
    if (cachet_pool_create(&ls->c->cfg, ls->c->tls, host, port, ls->node_pool,
                           &p) == CACHET_OK)
      ls->pools[idx] = p;
  }
  pthread_mutex_unlock(&ls->nodes_mu);
  return p;
}

/* Load the map when there is none, or refresh a stale one, from the first
 * node that answers CLUSTER SLOTS (masters first, then the seeds); one
 * refresh at a time. A failed refresh of a stale map is not an error: the
 * old map is still the best guess. */
static int refresh(cachet_links *ls) {
  uint64_t gen;
  if (!cachet_router_due(ls->rt, cachet_mono_ms(), &gen))
    return CACHET_OK;
  pthread_mutex_lock(&ls->refresh_mu);
  int rc = CACHET_OK;
  /* Another thread may have refreshed while this one waited. */
  if (cachet_router_due(ls->rt, cachet_mono_ms(), &gen)) {
    int cand[2 * CACHET_ROUTER_NODES];
    int n = cachet_router_candidates(ls->rt, cand, 2 * CACHET_ROUTER_NODES);
    char first[600] = "";
    int found = 0;
    for (int i = 0; !found && i < n; i++) {
      cachet_pool *p = node_pool(ls, cand[i]);
      cachet_conn *cn = NULL;
      redisReply *r = NULL;
      rc = p != NULL ? cachet_pool_borrow(p, &cn)
                     : cachet_fail(CACHET_ENOMEM, "out of memory");
      if (rc == CACHET_OK) {
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        size_t lens[2] = {7, 5};
        rc = cachet_conn_exchange(cn, 2, argv, lens, &r);
        if (rc == CACHET_OK && r->type == REDIS_REPLY_ERROR)
          rc = cachet_fail_bytes(CACHET_ESERVER, NULL, r->str, r->len);
        else if (rc == CACHET_OK)
          rc = cachet_router_apply(ls->rt, gen, cand[i], r, cachet_mono_ms());
        if (r != NULL)
          freeReplyObject(r);
        cachet_pool_release(p, cn);
      }
      found = rc == CACHET_OK;
      if (!found && first[0] == '\0')
        snprintf(first, sizeof first, "%s: %s",
                 cachet_router_name(ls->rt, cand[i]), cachet_last_error());
    }
    if (!found) {
      cachet_router_failed(ls->rt, cachet_mono_ms());
      rc = cachet_fail(rc == CACHET_OK ? CACHET_ECONN : rc,
                       "cluster: no node answered CLUSTER SLOTS (%s)", first);
    }
  }
  pthread_mutex_unlock(&ls->refresh_mu);
  /* A failed refresh of a stale map is not an error: the old map is still
   * the best guess. */
  if (rc != CACHET_OK && cachet_router_route(ls->rt, -1) >= 0)
    rc = CACHET_OK;
  return rc;
}

int cachet_links_refresh(cachet *c) {
  return c->links->rt != NULL ? refresh(c->links) : CACHET_OK;
}

int cachet_link_acquire(cachet *c, cachet_link **out) {
  cachet_links *ls = c->links;
  int idx;
  int rc = cachet_slots_take(&ls->free, c->cfg.timeout_ms, &idx);
  if (rc != CACHET_OK)
    return rc;
  cachet_link *l = &ls->links[idx];
  l->last = -1;
  rc = ls->rt != NULL ? refresh(ls)
       : !cachet_conn_connected(&l->conn)
           ? cachet_conn_connect(&l->conn, &c->cfg, c->tls, NULL, 0)
           : CACHET_OK;
  if (rc != CACHET_OK) {
    cachet_link_release(c, l);
    return rc;
  }
  *out = l;
  return CACHET_OK;
}

void cachet_link_release(cachet *c, cachet_link *l) {
  (void)c;
  if (l == NULL)
    return;
  cachet_links *ls = l->ls;
  if (ls->rt == NULL) {
    if (l->conn.broken || l->conn.pending > 0)
      cachet_conn_close(&l->conn);
  } else {
    for (int i = 0; i < l->nheld; i++) {
      if (l->held[i].pending > 0 || l->broken)
        cachet_conn_break(l->held[i].cn);
      cachet_pool_release(node_pool(ls, l->held[i].node), l->held[i].cn);
    }
    l->nheld = 0;
    queue_clear(l);
  }
  l->broken = 0;
  l->failed = CACHET_OK;
  l->last = -1;
  cachet_slots_give(&ls->free, l->index);
}

void cachet_link_break(cachet_link *l) {
  if (l->ls->rt == NULL)
    cachet_conn_break(&l->conn);
  else
    l->broken = 1;
}

int cachet_link_nodes(cachet_link *l) {
  if (l->ls->rt == NULL)
    return 1;
  int rc = refresh(l->ls);
  if (rc != CACHET_OK)
    return rc;
  l->nsnap = cachet_router_masters(l->ls->rt, l->snap, CACHET_ROUTER_NODES);
  if (l->nsnap == 0)
    return cachet_fail(CACHET_ECONN, "cluster: no master serves any slot");
  return l->nsnap;
}

const char *cachet_link_node_name(cachet_link *l, int node) {
  if (l->ls->rt == NULL)
    return "server";
  if (node < 0 || node >= l->nsnap)
    return "?";
  return cachet_router_name(l->ls->rt, l->snap[node]);
}

/* ---- a cluster session ----------------------------------------------------
 */

/* The session's connection to node `idx`, borrowed on first use. */
static int hold(cachet_link *l, int idx, int *h) {
  for (int i = 0; i < l->nheld; i++)
    if (l->held[i].node == idx) {
      *h = i;
      return CACHET_OK;
    }
  if (cachet_grow(&l->held, &l->capheld, (size_t)l->nheld + 1,
                  sizeof *l->held) != CACHET_OK)
    return CACHET_ENOMEM;
  cachet_pool *p = node_pool(l->ls, idx);
  cachet_conn *cn;
  int rc = p != NULL ? cachet_pool_borrow(p, &cn)
                     : cachet_fail(CACHET_ENOMEM, "out of memory");
  if (rc != CACHET_OK)
    return rc;
  l->held[l->nheld] = (held){idx, cn, 0, 0};
  *h = l->nheld++;
  return CACHET_OK;
}

/* The node serving `slot` (or the first master for slot < 0), after a
 * refresh if one is due. */
static int route(cachet_link *l, int slot, int *out) {
  int rc = refresh(l->ls);
  if (rc != CACHET_OK)
    return rc;
  int idx = cachet_router_route(l->ls->rt, slot);
  if (idx < 0)
    return cachet_fail(CACHET_ECONN, "cluster: no master serves slot %d", slot);
  *out = idx;
  return CACHET_OK;
}

/*
 * Run one command and follow the cluster's answers. slot >= 0: routed by
 * slot (node may preset the target, e.g. after an ASK read from a
 * pipeline); slot < 0: node is fixed and redirections come back as replies.
 */
static int exec(cachet_link *l, int slot, int node, int asking, int argc,
                const char **argv, const size_t *lens, redisReply **out) {
  cachet_links *ls = l->ls;
  int64_t deadline = cachet_mono_ms() + ls->c->cfg.timeout_ms;
  int64_t step = BACKOFF_MIN_MS;
  int redirects = 0;
  int rc;
  *out = NULL;
  if (l->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  for (;;) {
    if (node < 0 && (rc = route(l, slot, &node)) != CACHET_OK)
      return rc;
    int h;
    rc = hold(l, node, &h);
    if (rc != CACHET_OK) {
      /* Nothing was sent: if the map now names another master (a failover
       * that already happened), go there. */
      char detail[600];
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      cachet_router_stale(ls->rt);
      int again = -1;
      if (slot < 0 || redirects++ >= CACHET_REDIRECTS ||
          route(l, slot, &again) != CACHET_OK || again == node)
        return cachet_fail(rc, "%s", detail);
      node = again;
      asking = 0;
      continue;
    }
    cachet_conn *cn = l->held[h].cn, *tmp = NULL;
    cachet_pool *p = node_pool(ls, node);
    if (l->held[h].pending > 0) { /* it still owes pipelined replies */
      if ((rc = cachet_pool_borrow(p, &tmp)) != CACHET_OK)
        return rc;
      cn = tmp;
    }
    redisReply *r = NULL;
    if (asking) {
      const char *aa[1] = {"ASKING"};
      size_t al[1] = {6};
      redisReply *ar = NULL;
      if ((rc = cachet_conn_append(cn, 1, aa, al)) == CACHET_OK &&
          (rc = cachet_conn_append(cn, argc, argv, lens)) == CACHET_OK &&
          (rc = cachet_conn_read(cn, &ar)) == CACHET_OK) {
        freeReplyObject(ar);
        rc = cachet_conn_read(cn, &r);
      }
    } else {
      rc = cachet_conn_exchange(cn, argc, argv, lens, &r);
    }
    if (tmp != NULL)
      cachet_pool_release(p, tmp);
    if (rc != CACHET_OK) {
      cachet_router_stale(ls->rt);
      return rc;
    }
    l->last = node;
    int kind = cachet_redirect_kind(r);
    if (kind == CACHET_R_NONE ||
        (slot < 0 && (kind == CACHET_R_MOVED || kind == CACHET_R_ASK))) {
      *out = r;
      return CACHET_OK;
    }
    if (kind == CACHET_R_MOVED || kind == CACHET_R_ASK) {
      if (++redirects > CACHET_REDIRECTS) {
        *out = r;
        return CACHET_OK;
      }
      int target = cachet_router_redirect(ls->rt, r, node);
      freeReplyObject(r);
      if (target < 0)
        return CACHET_EPROTO;
      node = target;
      asking = kind == CACHET_R_ASK;
      continue;
    }
    /* TRYAGAIN (a multi-key command during a slot migration) or
     * CLUSTERDOWN (a failover in progress): wait, bounded. */
    if (kind == CACHET_R_DOWN)
      cachet_router_stale(ls->rt);
    if (cachet_mono_ms() >= deadline) {
      *out = r;
      return CACHET_OK;
    }
    freeReplyObject(r);
    cachet_sleep_until(cachet_jitter_ms(step), deadline);
    if (step < BACKOFF_MAX_MS)
      step *= 2;
    if (kind == CACHET_R_DOWN && slot >= 0) {
      node = -1;
      asking = 0;
    }
  }
}

/* Copy a command into one allocation, for a possible retry. */
static int queue_copy(queued *e, int argc, const char **argv,
                      const size_t *lens) {
  size_t bytes = (size_t)argc * (sizeof *e->argv + sizeof *e->lens);
  for (int i = 0; i < argc; i++) {
    if (lens[i] > SIZE_MAX - bytes - 1)
      return cachet_fail(CACHET_ENOMEM, "command too large");
    bytes += lens[i] + 1;
  }
  char *m = malloc(bytes);
  if (m == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
  e->mem = m;
  e->argv = (const char **)(void *)m;
  e->lens = (size_t *)(void *)(m + (size_t)argc * sizeof *e->argv);
  char *p = m + (size_t)argc * (sizeof *e->argv + sizeof *e->lens);
  for (int i = 0; i < argc; i++) {
    memcpy(p, argv[i], lens[i]);
    p[lens[i]] = '\0';
    e->argv[i] = p;
    e->lens[i] = lens[i];
    p += lens[i] + 1;
  }
  e->argc = argc;
  return CACHET_OK;
}

static int cluster_append(cachet_link *l, int node, int argc, const char **argv,
                          const size_t *lens) {
  if (l->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  if (node >= l->nsnap)
    return cachet_fail(CACHET_EINTERNAL, "no cluster node %d", node);
  if (cachet_grow(&l->q, &l->qcap, l->qlen + 1, sizeof *l->q) != CACHET_OK)
    return CACHET_ENOMEM;
  queued *e = &l->q[l->qlen];
  memset(e, 0, sizeof *e);
  e->h = -1;
  e->slot = node < 0 ? cachet_command_slot(argc, argv, lens) : -1;
  int rc = queue_copy(e, argc, argv, lens);
  if (rc != CACHET_OK)
    return rc;
  l->qlen++;
  int idx = node >= 0 ? l->snap[node] : -1, h;
  if ((idx >= 0 || (rc = route(l, e->slot, &idx)) == CACHET_OK) &&
      (rc = hold(l, idx, &h)) == CACHET_OK &&
      (rc = cachet_conn_append(l->held[h].cn, argc, argv, lens)) == CACHET_OK) {
    e->h = h;
    l->held[h].pending++;
    l->held[h].dirty = 1;
    return CACHET_OK;
  }
  if (rc == CACHET_ENOMEM)
    return rc;
  cachet_router_stale(l->ls->rt);
  e->err = rc;
  e->msg = strdup(cachet_last_error());
  return CACHET_OK;
}

static int cluster_read(cachet_link *l, redisReply **out) {
  *out = NULL;
  if (l->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  if (l->qhead == l->qlen)
    return cachet_fail(CACHET_EINTERNAL, "no pipelined reply is due");
  /* Write out every node's commands first, so the nodes work at once. */
  for (int i = 0; i < l->nheld; i++)
    if (l->held[i].dirty) {
      l->held[i].dirty = 0;
      (void)cachet_conn_flush(l->held[i].cn);
    }
  queued *e = &l->q[l->qhead++];
  int rc;
  if (e->h < 0) {
    rc = cachet_fail(e->err, "%s", e->msg != NULL ? e->msg : "cluster");
  } else {
    held *h = &l->held[e->h];
    redisReply *r = NULL;
    h->pending--;
    rc = cachet_conn_read(h->cn, &r);
    if (rc != CACHET_OK) {
      cachet_router_stale(l->ls->rt);
    } else {
      l->last = h->node;
      int kind = cachet_redirect_kind(r);
      if (kind == CACHET_R_NONE ||
          (e->slot < 0 && (kind == CACHET_R_MOVED || kind == CACHET_R_ASK))) {
        *out = r;
      } else {
        /* Redirected or refused for now: retry this one command alone. */
        int target = -1;
        if (kind == CACHET_R_MOVED || kind == CACHET_R_ASK)
          target = cachet_router_redirect(l->ls->rt, r, h->node);
        else if (kind == CACHET_R_DOWN)
          cachet_router_stale(l->ls->rt);
        freeReplyObject(r);
        if ((kind == CACHET_R_MOVED || kind == CACHET_R_ASK) && target < 0)
          rc = CACHET_EPROTO;
        else if (l->failed != CACHET_OK)
          /* The call has failed already, and this command did not run: a
           * retry could wait a whole timeout more on the node that failed
           * (each one, in a pipeline of hundreds), for nothing. */
          rc = cachet_fail(l->failed, "%s", l->failed_why);
        else
          rc = exec(l, e->slot, kind == CACHET_R_ASK ? target : -1,
                    kind == CACHET_R_ASK, e->argc, e->argv, e->lens, out);
      }
    }
  }
  free(e->mem);
  free(e->msg);
  e->mem = NULL;
  e->msg = NULL;
  if (l->qhead == l->qlen)
    l->qhead = l->qlen = 0;
  if (rc != CACHET_OK && l->failed == CACHET_OK) {
    l->failed = rc;
    snprintf(l->failed_why, sizeof l->failed_why, "%s", cachet_last_error());
  }
  return rc;
}

/* ---- the facade ------------------------------------------------------------
 */

int cachet_link_append(cachet_link *l, int node, int argc, const char **argv,
                       const size_t *lens) {
  if (l->ls->rt != NULL)
    return cluster_append(l, node, argc, argv, lens);
  if (node > 0)
    return cachet_fail(CACHET_EINTERNAL, "no node %d on a single server", node);
  return cachet_conn_append(&l->conn, argc, argv, lens);
}

int cachet_link_read(cachet_link *l, redisReply **out) {
  if (l->ls->rt != NULL)
    return cluster_read(l, out);
  return cachet_conn_read(&l->conn, out);
}

int cachet_link_last(const cachet_link *l) {
  return l->ls->rt != NULL ? l->last : 0;
}

int cachet_link_command_at(cachet_link *l, int node, int argc,
                           const char **argv, const size_t *lens,
                           redisReply **out) {
  if (l->ls->rt == NULL)
    return cachet_conn_exchange(&l->conn, argc, argv, lens, out);
  if (node < 0)
    return exec(l, cachet_command_slot(argc, argv, lens), -1, 0, argc, argv,
                lens, out);
  return exec(l, -1, node, 0, argc, argv, lens, out);
}

int cachet_link_command(cachet_link *l, int argc, const char **argv,
                        const size_t *lens, redisReply **out) {
  int rc = l->ls->rt == NULL
               ? cachet_conn_exchange(&l->conn, argc, argv, lens, out)
               : exec(l, cachet_command_slot(argc, argv, lens), -1, 0, argc,
                      argv, lens, out);
  if (rc == CACHET_OK && (*out)->type == REDIS_REPLY_ERROR) {
    rc = cachet_fail_bytes(CACHET_ESERVER, NULL, (*out)->str, (*out)->len);
    freeReplyObject(*out);
    *out = NULL;
  }
  return rc;
}
