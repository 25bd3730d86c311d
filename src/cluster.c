/* Redis Cluster routing: the slot map, a connection pool per node, and the
 * routing session a borrowed connection becomes in cluster mode.
 *
 * The map (slot -> node) comes from CLUSTER SLOTS, asked of a known master
 * or a seed. It is loaded by the first borrower and refreshed after a MOVED
 * (the one slot is fixed at once, the rest follows), a CLUSTERDOWN, or an
 * I/O error on a node; refreshes are at most one per REFRESH_MIN_MS and one
 * at a time, so a dead node does not turn every call into a CLUSTER SLOTS.
 * Nodes are never removed while the handle lives: a session may hold a
 * pointer to one, and a cluster has few.
 *
 * A session routes each command by the hash slot of its first key. It
 * borrows at most one connection per node for pipelined work, lazily, and a
 * second, short-lived one when a command must go to a node whose connection
 * still owes pipelined replies (a redirected retry). Every appended command
 * is remembered until its reply is read, so that a MOVED, ASK, TRYAGAIN or
 * CLUSTERDOWN in the middle of a pipeline is retried alone and its reply
 * still comes back in append order.
 *
 * Bounds: 16 redirects per command; TRYAGAIN and CLUSTERDOWN are retried
 * with jittered backoff (2 -> 100 ms) until timeout_ms after the command
 * started; I/O errors are returned at once (the command may have run), and
 * the map is refreshed before the next command. */
#include "cluster.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"
#include "crc16.h"
#include "error.h"
#include "clock.h"

#define MAX_NODES 1024
#define REDIRECTS 16
#define REFRESH_MIN_MS 100
#define BACKOFF_MIN_MS 2
#define BACKOFF_MAX_MS 100

typedef struct member {
  char *host;
  int port;
  char name[280]; /* "host:port", for messages. */
  cachet_endpoint *ep;
} member;

struct cachet_cluster {
  cachet *c;
  pthread_mutex_t mu;         /* Guards everything below. */
  pthread_mutex_t refresh_mu; /* One refresh at a time. */
  member *nodes[MAX_NODES];     /* Append-only; [0, nseeds) are the seeds. */
  int nnodes;
  int nseeds;
  int16_t slots[CACHET_CLUSTER_SLOTS]; /* Node index, -1 unknown. */
  int masters[MAX_NODES];              /* Nodes owning slots, in slot order. */
  int nmasters;
  int have_map;
  int stale;
  int64_t refreshed_ms;
  uint64_t gen; /* Bumped by each refresh. */
  int node_pool;
};

/* A node connection the session holds, and the replies it still owes. */
typedef struct held {
  int node;
  cachet_conn *cn;
  size_t pending;
  int dirty; /* Appended commands not yet written out. */
} held;

/* A pipelined command: its copy (for a redirected retry), where it went, or
 * why it could not be sent. */
typedef struct queued {
  int h; /* Index into held, -1 when err is set. */
  int slot;
  int err;
  char *msg;
  int argc;
  const char **argv;
  size_t *lens;
  void *mem;
} queued;

struct cachet_cluster_session {
  cachet_cluster *cl;
  held *held;
  int nheld, capheld;
  queued *q;
  size_t qhead, qlen, qcap;
  int broken;
  int last; /* Node that gave the last reply, -1 none. */
  int snap[MAX_NODES];
  int nsnap;
};

/* ---- nodes and the map --------------------------------------------------- */

/* Find or add host:port. Called with mu held. -1 on failure (detail set). */
static int node_index(cachet_cluster *cl, const char *host, size_t hostlen,
                      int port) {
  for (int i = 0; i < cl->nnodes; i++) {
    member *n = cl->nodes[i];
    if (n->port == port && strlen(n->host) == hostlen &&
        memcmp(n->host, host, hostlen) == 0)
      return i;
  }
  if (cl->nnodes == MAX_NODES) {
    cachet_fail(CACHET_EPROTO, "cluster: more than %d nodes", MAX_NODES);
    return -1;
  }
  if (hostlen == 0 || hostlen > 255 || port <= 0 || port > 65535) {
    cachet_fail(CACHET_EPROTO, "cluster: a node address is malformed");
    return -1;
  }
  member *n = calloc(1, sizeof *n);
  if (n == NULL || (n->host = malloc(hostlen + 1)) == NULL) {
    free(n);
    cachet_fail(CACHET_ENOMEM, "out of memory adding a cluster node");
    return -1;
  }
  memcpy(n->host, host, hostlen);
  n->host[hostlen] = '\0';
  n->port = port;
  snprintf(n->name, sizeof n->name, "%s:%d", n->host, port);
  if (cachet_endpoint_create(cl->c, n->host, port, cl->node_pool, &n->ep) !=
      CACHET_OK) {
    free(n->host);
    free(n);
    return -1;
  }
  cl->nodes[cl->nnodes] = n;
  return cl->nnodes++;
}

static member *node_at(cachet_cluster *cl, int i) {
  pthread_mutex_lock(&cl->mu);
  member *n = cl->nodes[i];
  pthread_mutex_unlock(&cl->mu);
  return n;
}

static void mark_stale(cachet_cluster *cl) {
  pthread_mutex_lock(&cl->mu);
  cl->stale = 1;
  pthread_mutex_unlock(&cl->mu);
}

/* Parse "host:port" (IPv6 in brackets) from the configured seed list. */
static int add_seeds(cachet_cluster *cl, const char *list) {
  const char *p = list;
  while (*p != '\0') {
    size_t n = strcspn(p, ",");
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
      if (p[i] == ':')
        colon = p + i;
    if (colon == NULL)
      return cachet_fail(CACHET_ECONFIG, "cluster: a seed has no port");
    const char *h = p;
    size_t hl = (size_t)(colon - p);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
      h++;
      hl -= 2;
    }
    int port = atoi(colon + 1);
    pthread_mutex_lock(&cl->mu);
    int idx = node_index(cl, h, hl, port);
    pthread_mutex_unlock(&cl->mu);
    if (idx < 0)
      return cachet_fail(CACHET_ECONFIG, "cluster: bad seed address");
    p += n;
    if (*p == ',')
      p++;
  }
  cl->nseeds = cl->nnodes;
  return CACHET_OK;
}

int cachet_cluster_create(cachet *c, cachet_cluster **out) {
  cachet_cluster *cl = calloc(1, sizeof *cl);
  if (cl == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating the cluster");
  cl->c = c;
  /* Each of pool_size sessions holds at most one pipelined connection per
   * node, plus one for a redirected retry; one more serves refreshes. */
  cl->node_pool = 2 * c->cfg.pool_size + 1;
  pthread_mutex_init(&cl->mu, NULL);
  pthread_mutex_init(&cl->refresh_mu, NULL);
  for (unsigned i = 0; i < CACHET_CLUSTER_SLOTS; i++)
    cl->slots[i] = -1;
  int rc =
      add_seeds(cl, c->cfg.cluster_seeds != NULL ? c->cfg.cluster_seeds : "");
  if (rc == CACHET_OK && cl->nseeds == 0)
    rc = cachet_fail(CACHET_ECONFIG, "cluster: no seed node");
  if (rc != CACHET_OK) {
    cachet_cluster_destroy(cl);
    return rc;
  }
  *out = cl;
  return CACHET_OK;
}

void cachet_cluster_destroy(cachet_cluster *cl) {
  if (cl == NULL)
    return;
  for (int i = 0; i < cl->nnodes; i++) {
    cachet_endpoint_destroy(cl->nodes[i]->ep);
    free(cl->nodes[i]->host);
    free(cl->nodes[i]);
  }
  pthread_mutex_destroy(&cl->mu);
  pthread_mutex_destroy(&cl->refresh_mu);
  free(cl);
}

/* One CLUSTER SLOTS reply into `slots` (node indices). The address of a
 * master may be empty or "?" (an unknown endpoint): then it is the node we
 * asked. */
static int parse_slots(cachet_cluster *cl, const member *asked,
                       const redisReply *r, int16_t *slots) {
  if (r->type != REDIS_REPLY_ARRAY)
    return cachet_fail(CACHET_EPROTO, "CLUSTER SLOTS: unexpected reply");
  for (unsigned i = 0; i < CACHET_CLUSTER_SLOTS; i++)
    slots[i] = -1;
  for (size_t i = 0; i < r->elements; i++) {
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_ARRAY ||
        e->element[2]->elements < 2 ||
        e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
        e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
      return cachet_fail(CACHET_EPROTO, "CLUSTER SLOTS: unexpected entry");
    long long lo = e->element[0]->integer, hi = e->element[1]->integer;
    if (lo < 0 || hi < lo || hi >= (long long)CACHET_CLUSTER_SLOTS)
      return cachet_fail(CACHET_EPROTO, "CLUSTER SLOTS: bad slot range");
    const redisReply *h = e->element[2]->element[0];
    const char *host = h->str;
    size_t hl = h->len;
    if (hl == 0 || (hl == 1 && host[0] == '?')) {
      host = asked->host;
      hl = strlen(host);
    }
    pthread_mutex_lock(&cl->mu);
    int idx = node_index(cl, host, hl, (int)e->element[2]->element[1]->integer);
    pthread_mutex_unlock(&cl->mu);
    if (idx < 0)
      return CACHET_EPROTO;
    for (long long s = lo; s <= hi; s++)
      slots[s] = (int16_t)idx;
  }
  return CACHET_OK;
}

/*
 * Load the map from the first node that answers: the current masters
 * first, then the seeds. `gen` is the generation the caller saw: if another
 * thread refreshed meanwhile, its map is as fresh as ours would be.
 */
static int refresh(cachet_cluster *cl, uint64_t gen) {
  int16_t *slots = malloc(sizeof cl->slots);
  int *cand = malloc(sizeof cl->masters * 2);
  if (slots == NULL || cand == NULL) {
    free(slots);
    free(cand);
    return cachet_fail(CACHET_ENOMEM, "out of memory refreshing the map");
  }
  pthread_mutex_lock(&cl->refresh_mu);
  pthread_mutex_lock(&cl->mu);
  int ncand = 0;
  if (cl->gen == gen) {
    for (int i = 0; i < cl->nmasters; i++)
      cand[ncand++] = cl->masters[i];
    for (int i = 0; i < cl->nseeds; i++)
      cand[ncand++] = i;
  }
  pthread_mutex_unlock(&cl->mu);

  int rc = CACHET_OK;
  int found = ncand == 0;
  char first_err[600] = "";
  for (int i = 0; !found && i < ncand; i++) {
    member *n = node_at(cl, cand[i]);
    cachet_conn *cn;
    redisReply *r = NULL;
    rc = cachet_endpoint_acquire(n->ep, &cn);
    if (rc == CACHET_OK) {
      const char *argv[2] = {"CLUSTER", "SLOTS"};
      size_t lens[2] = {7, 5};
      rc = cachet_node_command(cn, 2, argv, lens, &r);
      if (rc == CACHET_OK && r->type == REDIS_REPLY_ERROR) {
        rc = cachet_node_error(r);
        r = NULL;
      }
      cachet_endpoint_release(cn);
    }
    if (rc == CACHET_OK) {
      rc = parse_slots(cl, n, r, slots);
      freeReplyObject(r);
    }
    if (rc == CACHET_OK) {
      found = 1;
    } else if (first_err[0] == '\0') {
      snprintf(first_err, sizeof first_err, "%s: %s", n->name,
               cachet_last_error());
    }
  }
  if (found && ncand > 0) {
    pthread_mutex_lock(&cl->mu);
    memcpy(cl->slots, slots, sizeof cl->slots);
    unsigned char seen[MAX_NODES] = {0};
    cl->nmasters = 0;
    for (unsigned s = 0; s < CACHET_CLUSTER_SLOTS; s++) {
      int idx = cl->slots[s];
      if (idx >= 0 && !seen[idx]) {
        seen[idx] = 1;
        cl->masters[cl->nmasters++] = idx;
      }
    }
    cl->have_map = 1;
    cl->stale = 0;
    cl->refreshed_ms = cachet_mono_ms();
    cl->gen++;
    pthread_mutex_unlock(&cl->mu);
    rc = CACHET_OK;
  } else if (!found) {
    pthread_mutex_lock(&cl->mu);
    /* Try again on the next call, not in a tight loop. */
    cl->refreshed_ms = cachet_mono_ms();
    pthread_mutex_unlock(&cl->mu);
    rc = cachet_fail(rc == CACHET_OK ? CACHET_ECONN : rc,
                     "cluster: no node answered CLUSTER SLOTS (%s)", first_err);
  }
  pthread_mutex_unlock(&cl->refresh_mu);
  free(slots);
  free(cand);
  return rc;
}

/* Refresh when there is no map yet, or when it is stale and the last
 * refresh is old enough. A failed refresh of a stale map is not an error:
 * the old map is still the best guess. */
static int maybe_refresh(cachet_cluster *cl) {
  pthread_mutex_lock(&cl->mu);
  int have = cl->have_map;
  int need = !have || (cl->stale &&
                       cachet_mono_ms() - cl->refreshed_ms >= REFRESH_MIN_MS);
  uint64_t gen = cl->gen;
  pthread_mutex_unlock(&cl->mu);
  if (!need)
    return CACHET_OK;
  int rc = refresh(cl, gen);
  return have ? CACHET_OK : rc;
}

/* The node serving `slot` (or the first master for slot < 0), after a
 * refresh if one is due. */
static int route(cachet_cluster *cl, int slot, int *out) {
  int rc = maybe_refresh(cl);
  if (rc != CACHET_OK)
    return rc;
  pthread_mutex_lock(&cl->mu);
  int idx = slot >= 0          ? cl->slots[slot]
            : cl->nmasters > 0 ? cl->masters[0]
                               : -1;
  if (idx < 0)
    cl->stale = 1;
  pthread_mutex_unlock(&cl->mu);
  if (idx < 0)
    return cachet_fail(CACHET_ECONN, "cluster: no master serves slot %d", slot);
  *out = idx;
  return CACHET_OK;
}

/* ---- which key a command is routed by ------------------------------------ */

static int cmd_is(const char *a, size_t len, const char *name) {
  return strlen(name) == len && strncasecmp(a, name, len) == 0;
}

/* The slot of the command's first key, or -1 for a command without one. */
static int command_slot(int argc, const char **argv, const size_t *lens) {
  static const char *const keyless[] = {
      "PING",   "INFO",   "SCRIPT",   "CONFIG",    "SCAN",  "DBSIZE",
      "TIME",   "ECHO",   "CLUSTER",  "AUTH",      "HELLO", "SELECT",
      "ASKING", "CLIENT", "FLUSHALL", "RANDOMKEY", "KEYS",  "FLUSHDB"};
  if (argc < 1)
    return -1;
  const char *c = argv[0];
  size_t l = lens[0];
  if (cmd_is(c, l, "EVALSHA") || cmd_is(c, l, "EVAL") ||
      cmd_is(c, l, "EVALSHA_RO") || cmd_is(c, l, "EVAL_RO")) {
    if (argc < 4 || lens[2] == 0 || (lens[2] == 1 && argv[2][0] == '0'))
      return -1;
    return (int)cachet_key_slot(argv[3], lens[3]);
  }
  for (size_t i = 0; i < sizeof keyless / sizeof keyless[0]; i++)
    if (cmd_is(c, l, keyless[i]))
      return -1;
  return argc >= 2 ? (int)cachet_key_slot(argv[1], lens[1]) : -1;
}

/* ---- redirections ---------------------------------------------------------
 */

enum { R_NONE, R_MOVED, R_ASK, R_TRYAGAIN, R_DOWN };

static int starts(const redisReply *r, const char *w) {
  size_t n = strlen(w);
  return r->len >= n && memcmp(r->str, w, n) == 0 &&
         (r->len == n || r->str[n] == ' ');
}

static int redirect_kind(const redisReply *r) {
  if (starts(r, "MOVED"))
    return R_MOVED;
  if (starts(r, "ASK"))
    return R_ASK;
  if (starts(r, "TRYAGAIN"))
    return R_TRYAGAIN;
  if (starts(r, "CLUSTERDOWN"))
    return R_DOWN;
  return R_NONE;
}

/* "MOVED <slot> <host>:<port>" or "ASK ...": the target node's index (added
 * if new; an empty host is the node that answered). MOVED also fixes the
 * slot in the map and marks the rest stale. */
static int redirect_target(cachet_cluster *cl, const redisReply *r, int from,
                           int moved, int *out) {
  const char *sp = memchr(r->str, ' ', r->len);
  const char *ep = sp != NULL
                       ? memchr(sp + 1, ' ', r->len - (size_t)(sp + 1 - r->str))
                       : NULL;
  if (ep == NULL)
    return cachet_fail(CACHET_EPROTO, "cluster: malformed redirection");
  long slot = strtol(sp + 1, NULL, 10);
  const char *addr = ep + 1;
  size_t alen = r->len - (size_t)(addr - r->str);
  const char *colon = NULL;
  for (size_t i = 0; i < alen; i++)
    if (addr[i] == ':')
      colon = addr + i;
  if (colon == NULL || slot < 0 || slot >= (long)CACHET_CLUSTER_SLOTS)
    return cachet_fail(CACHET_EPROTO, "cluster: malformed redirection");
  int port = 0;
  for (const char *p = colon + 1; p < addr + alen; p++) {
    if (*p < '0' || *p > '9' || port > 65535)
      return cachet_fail(CACHET_EPROTO, "cluster: malformed redirection");
    port = port * 10 + (*p - '0');
  }
  pthread_mutex_lock(&cl->mu);
  const char *h = addr;
  size_t hl = (size_t)(colon - addr);
  if (hl == 0) {
    h = cl->nodes[from]->host;
    hl = strlen(h);
  }
  int idx = node_index(cl, h, hl, port);
  if (idx >= 0 && moved) {
    cl->slots[slot] = (int16_t)idx;
    cl->stale = 1;
  }
  pthread_mutex_unlock(&cl->mu);
  if (idx < 0)
    return CACHET_EPROTO;
  *out = idx;
  return CACHET_OK;
}

/* ---- sessions ---------------------------------------------------------------
 */

int cachet_cluster_session_new(cachet_cluster *cl,
                               cachet_cluster_session **out) {
  cachet_cluster_session *s = calloc(1, sizeof *s);
  if (s == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a session");
  s->cl = cl;
  s->last = -1;
  *out = s;
  return CACHET_OK;
}

static void queue_clear(cachet_cluster_session *s) {
  for (size_t i = s->qhead; i < s->qlen; i++) {
    free(s->q[i].mem);
    free(s->q[i].msg);
  }
  s->qhead = s->qlen = 0;
}

void cachet_cluster_session_free(cachet_cluster_session *s) {
  if (s == NULL)
    return;
  cachet_cluster_end(s);
  free(s->held);
  free(s->q);
  free(s);
}

int cachet_cluster_begin(cachet_cluster_session *s) {
  s->last = -1;
  return maybe_refresh(s->cl);
}

void cachet_cluster_end(cachet_cluster_session *s) {
  for (int i = 0; i < s->nheld; i++) {
    if (s->held[i].pending > 0 || s->broken)
      cachet_conn_break(s->held[i].cn);
    cachet_endpoint_release(s->held[i].cn);
  }
  s->nheld = 0;
  queue_clear(s);
  s->broken = 0;
  s->last = -1;
}

void cachet_cluster_break(cachet_cluster_session *s) { s->broken = 1; }

/* The session's connection to node `idx`, borrowed on first use. */
static int hold(cachet_cluster_session *s, int idx, int *h) {
  for (int i = 0; i < s->nheld; i++)
    if (s->held[i].node == idx) {
      *h = i;
      return CACHET_OK;
    }
  if (s->nheld == s->capheld) {
    int cap = s->capheld ? s->capheld * 2 : 4;
    held *n = realloc(s->held, (size_t)cap * sizeof *n);
    if (n == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    s->held = n;
    s->capheld = cap;
  }
  cachet_conn *cn;
  int rc = cachet_endpoint_acquire(node_at(s->cl, idx)->ep, &cn);
  if (rc != CACHET_OK)
    return rc;
  s->held[s->nheld] = (held){idx, cn, 0, 0};
  *h = s->nheld++;
  return CACHET_OK;
}

/*
 * Run one command and follow the cluster's answers. slot >= 0: routed by
 * slot (node may preset the target, e.g. after an ASK read from a
 * pipeline); slot < 0: node is fixed and redirections are returned as
 * errors. Error replies become ESERVER.
 */
static int exec(cachet_cluster_session *s, int slot, int node_idx, int asking,
                int argc, const char **argv, const size_t *lens,
                redisReply **out, int raw) {
  cachet_cluster *cl = s->cl;
  int64_t deadline = cachet_mono_ms() + cl->c->cfg.timeout_ms;
  int64_t step = BACKOFF_MIN_MS;
  int redirects = 0;
  int rc;
  *out = NULL;
  if (s->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  for (;;) {
    if (node_idx < 0 && (rc = route(cl, slot, &node_idx)) != CACHET_OK)
      return rc;
    int h;
    rc = hold(s, node_idx, &h);
    if (rc != CACHET_OK) {
      /* Nothing was sent: if the map now names another master (a failover
       * that already happened), go there. */
      char detail[600];
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      mark_stale(cl);
      int again = -1;
      if (slot < 0 || redirects++ >= REDIRECTS ||
          route(cl, slot, &again) != CACHET_OK || again == node_idx)
        return cachet_fail(rc, "%s", detail);
      node_idx = again;
      asking = 0;
      continue;
    }
    cachet_conn *cn = s->held[h].cn, *tmp = NULL;
    if (s->held[h].pending > 0) {
      /* That connection still owes pipelined replies. */
      if ((rc = cachet_endpoint_acquire(node_at(cl, node_idx)->ep, &tmp)))
        return rc;
      cn = tmp;
    }
    redisReply *r = NULL;
    if (asking) {
      const char *aa[1] = {"ASKING"};
      size_t al[1] = {6};
      redisReply *ar = NULL;
      if ((rc = cachet_node_append(cn, 1, aa, al)) == CACHET_OK &&
          (rc = cachet_node_append(cn, argc, argv, lens)) == CACHET_OK &&
          (rc = cachet_node_read(cn, &ar)) == CACHET_OK) {
        freeReplyObject(ar);
        rc = cachet_node_read(cn, &r);
      }
    } else {
      rc = cachet_node_command(cn, argc, argv, lens, &r);
    }
    if (tmp != NULL)
      cachet_endpoint_release(tmp);
    if (rc != CACHET_OK) {
      mark_stale(cl);
      return rc;
    }
    s->last = node_idx;
    int kind = r->type == REDIS_REPLY_ERROR ? redirect_kind(r) : R_NONE;
    if (r->type != REDIS_REPLY_ERROR) {
      *out = r;
      return CACHET_OK;
    }
    if (kind == R_NONE || (slot < 0 && (kind == R_MOVED || kind == R_ASK))) {
      if (!raw)
        return cachet_node_error(r);
      *out = r;
      return CACHET_OK;
    }
    if (kind == R_MOVED || kind == R_ASK) {
      if (++redirects > REDIRECTS)
        return cachet_node_error(r);
      int target;
      rc = redirect_target(cl, r, node_idx, kind == R_MOVED, &target);
      freeReplyObject(r);
      if (rc != CACHET_OK)
        return rc;
      node_idx = target;
      asking = kind == R_ASK;
      continue;
    }
    /* TRYAGAIN (a multi-key command during a slot migration) or
     * CLUSTERDOWN (a failover in progress): wait, bounded. */
    if (kind == R_DOWN)
      mark_stale(cl);
    if (cachet_mono_ms() >= deadline)
      return cachet_node_error(r);
    freeReplyObject(r);
    cachet_sleep_until(cachet_jitter_ms(step), deadline);
    if (step < BACKOFF_MAX_MS)
      step *= 2;
    if (kind == R_DOWN && slot >= 0) {
      node_idx = -1;
      asking = 0;
    }
  }
}

int cachet_cluster_command(cachet_cluster_session *s, int argc,
                           const char **argv, const size_t *lens,
                           redisReply **out) {
  int slot = command_slot(argc, argv, lens);
  return exec(s, slot, -1, 0, argc, argv, lens, out, 0);
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

static int append_at(cachet_cluster_session *s, int node, int argc,
                     const char **argv, const size_t *lens);

int cachet_cluster_append(cachet_cluster_session *s, int argc,
                          const char **argv, const size_t *lens) {
  return append_at(s, -1, argc, argv, lens);
}

int cachet_cluster_append_node(cachet_cluster_session *s, int node, int argc,
                               const char **argv, const size_t *lens) {
  if (node < 0 || node >= s->nsnap)
    return cachet_fail(CACHET_EINTERNAL, "no cluster node %d", node);
  return append_at(s, s->snap[node], argc, argv, lens);
}

/* Queue a command routed by its key (node < 0) or for cluster node `node`,
 * which then never follows a redirection. */
static int append_at(cachet_cluster_session *s, int node, int argc,
                     const char **argv, const size_t *lens) {
  if (s->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  if (s->qlen == s->qcap) {
    size_t cap = s->qcap ? s->qcap * 2 : 64;
    queued *n = realloc(s->q, cap * sizeof *n);
    if (n == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
    s->q = n;
    s->qcap = cap;
  }
  queued *e = &s->q[s->qlen];
  memset(e, 0, sizeof *e);
  e->h = -1;
  e->slot = node < 0 ? command_slot(argc, argv, lens) : -1;
  int rc = queue_copy(e, argc, argv, lens);
  if (rc != CACHET_OK)
    return rc;
  s->qlen++;
  /* A node that cannot be reached fails this command's reply, not the
   * pipeline: the other nodes' commands still run. */
  int idx = node, h;
  if ((node >= 0 || (rc = route(s->cl, e->slot, &idx)) == CACHET_OK) &&
      (rc = hold(s, idx, &h)) == CACHET_OK &&
      (rc = cachet_node_append(s->held[h].cn, argc, argv, lens)) == CACHET_OK) {
    e->h = h;
    s->held[h].pending++;
    s->held[h].dirty = 1;
    return CACHET_OK;
  }
  if (rc == CACHET_ENOMEM)
    return rc;
  mark_stale(s->cl);
  e->err = rc;
  e->msg = strdup(cachet_last_error());
  return CACHET_OK;
}

int cachet_cluster_read(cachet_cluster_session *s, redisReply **out,
                        int raw) {
  *out = NULL;
  if (s->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  if (s->qhead == s->qlen)
    return cachet_fail(CACHET_EINTERNAL, "no pipelined reply is due");
  /* Write out every node's commands first, so the nodes work at once. */
  for (int i = 0; i < s->nheld; i++)
    if (s->held[i].dirty) {
      s->held[i].dirty = 0;
      (void)cachet_node_flush(s->held[i].cn);
    }
  queued *e = &s->q[s->qhead++];
  int rc;
  if (e->h < 0) {
    rc = cachet_fail(e->err, "%s", e->msg != NULL ? e->msg : "cluster");
  } else {
    held *h = &s->held[e->h];
    redisReply *r = NULL;
    h->pending--;
    rc = cachet_node_read(h->cn, &r);
    if (rc != CACHET_OK) {
      mark_stale(s->cl);
    } else {
      s->last = h->node;
      int kind = r->type == REDIS_REPLY_ERROR ? redirect_kind(r) : R_NONE;
      if (r->type != REDIS_REPLY_ERROR) {
        *out = r;
      } else if (kind == R_NONE ||
                 (e->slot < 0 && (kind == R_MOVED || kind == R_ASK))) {
        if (raw)
          *out = r;
        else
          rc = cachet_node_error(r);
      } else {
        /* Redirected or refused for now: retry this one command alone. */
        int target = -1;
        if (kind == R_MOVED || kind == R_ASK)
          rc = redirect_target(s->cl, r, h->node, kind == R_MOVED, &target);
        else if (kind == R_DOWN)
          mark_stale(s->cl);
        freeReplyObject(r);
        if (rc == CACHET_OK)
          rc = exec(s, e->slot, kind == R_ASK ? target : -1, kind == R_ASK,
                    e->argc, e->argv, e->lens, out, raw);
      }
    }
  }
  free(e->mem);
  free(e->msg);
  e->mem = NULL;
  e->msg = NULL;
  if (s->qhead == s->qlen)
    s->qhead = s->qlen = 0;
  return rc;
}

int cachet_cluster_nodes(cachet_cluster_session *s) {
  int rc = maybe_refresh(s->cl);
  if (rc != CACHET_OK)
    return rc;
  pthread_mutex_lock(&s->cl->mu);
  memcpy(s->snap, s->cl->masters, (size_t)s->cl->nmasters * sizeof(int));
  s->nsnap = s->cl->nmasters;
  pthread_mutex_unlock(&s->cl->mu);
  if (s->nsnap == 0)
    return cachet_fail(CACHET_ECONN, "cluster: no master serves any slot");
  return s->nsnap;
}

int cachet_cluster_command_node(cachet_cluster_session *s, int node, int argc,
                                const char **argv, const size_t *lens,
                                redisReply **out) {
  if (node < 0 || node >= s->nsnap) {
    *out = NULL;
    return cachet_fail(CACHET_EINTERNAL, "no cluster node %d", node);
  }
  return exec(s, -1, s->snap[node], 0, argc, argv, lens, out, 0);
}

const char *cachet_cluster_node_name(cachet_cluster_session *s, int node) {
  if (node < 0 || node >= s->nsnap)
    return "?";
  return node_at(s->cl, s->snap[node])->name;
}

int cachet_cluster_command_last(cachet_cluster_session *s, int argc,
                                const char **argv, const size_t *lens,
                                redisReply **out) {
  if (s->last < 0)
    return cachet_cluster_command(s, argc, argv, lens, out);
  return exec(s, -1, s->last, 0, argc, argv, lens, out, 0);
}

int cachet_cluster_last(const cachet_cluster_session *s) { return s->last; }

int cachet_cluster_command_at(cachet_cluster_session *s, int node, int argc,
                              const char **argv, const size_t *lens,
                              redisReply **out) {
  if (node < 0)
    return cachet_cluster_command(s, argc, argv, lens, out);
  return exec(s, -1, node, 0, argc, argv, lens, out, 0);
}
