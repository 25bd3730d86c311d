/* Redis Cluster routing: the slot map and the redirections (router.h). */
#include "router.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cachet.h"
#include "error.h"

typedef struct node {
  char *host;
  int port;
  char name[280]; /* "host:port", for messages */
} node;

struct cachet_router {
  pthread_mutex_t mu;
  node *nodes[CACHET_ROUTER_NODES]; /* append-only; [0, nseeds) the seeds */
  int nnodes, nseeds;
  int16_t slots[CACHET_CLUSTER_SLOTS]; /* node index, -1 unknown */
  int masters[CACHET_ROUTER_NODES];    /* nodes owning slots, slot order */
  int nmasters;
  int have_map, stale;
  int64_t refreshed_ms;
  uint64_t gen; /* bumped by each refresh */
};

/* Find or add host:port; mu held. -1 (detail set) on failure. */
static int node_index(cachet_router *rt, const char *host, size_t hostlen,
                      int port) {
  for (int i = 0; i < rt->nnodes; i++) {
    node *n = rt->nodes[i];
    if (n->port == port && strlen(n->host) == hostlen &&
        memcmp(n->host, host, hostlen) == 0)
      return i;
  }
  if (rt->nnodes == CACHET_ROUTER_NODES)
    return cachet_fail(CACHET_EPROTO, "cluster: more than %d nodes",
                       CACHET_ROUTER_NODES),
           -1;
  if (hostlen == 0 || hostlen > 255 || port <= 0 || port > 65535)
    return cachet_fail(CACHET_EPROTO, "cluster: a node address is malformed"),
           -1;
  node *n = calloc(1, sizeof *n);
  if (n == NULL || (n->host = malloc(hostlen + 1)) == NULL) {
    free(n);
    return cachet_fail(CACHET_ENOMEM, "out of memory adding a cluster node"),
           -1;
  }
  memcpy(n->host, host, hostlen);
  n->host[hostlen] = '\0';
  n->port = port;
  snprintf(n->name, sizeof n->name, "%s:%d", n->host, port);
  rt->nodes[rt->nnodes] = n;
  return rt->nnodes++;
}

int cachet_router_create(const char *seeds, cachet_router **out) {
  cachet_router *rt = calloc(1, sizeof *rt);
  if (rt == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating the cluster");
  pthread_mutex_init(&rt->mu, NULL);
  for (unsigned i = 0; i < CACHET_CLUSTER_SLOTS; i++)
    rt->slots[i] = -1;
  const char *p = seeds != NULL ? seeds : "";
  int rc = CACHET_OK;
  while (rc == CACHET_OK && *p != '\0') {
    size_t n = strcspn(p, ",");
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
      if (p[i] == ':')
        colon = p + i;
    if (colon == NULL) {
      rc = cachet_fail(CACHET_ECONFIG, "cluster: a seed has no port");
      break;
    }
    const char *h = p;
    size_t hl = (size_t)(colon - p);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
      h++;
      hl -= 2;
    }
    if (node_index(rt, h, hl, atoi(colon + 1)) < 0)
      rc = cachet_fail(CACHET_ECONFIG, "cluster: bad seed address");
    p += n;
    if (*p == ',')
      p++;
  }
  rt->nseeds = rt->nnodes;
  if (rc == CACHET_OK && rt->nseeds == 0)
    rc = cachet_fail(CACHET_ECONFIG, "cluster: no seed node");
  if (rc != CACHET_OK) {
    cachet_router_destroy(rt);
    return rc;
  }
  *out = rt;
  return CACHET_OK;
}

void cachet_router_destroy(cachet_router *rt) {
  if (rt == NULL)
    return;
  for (int i = 0; i < rt->nnodes; i++) {
    free(rt->nodes[i]->host);
    free(rt->nodes[i]);
  }
  pthread_mutex_destroy(&rt->mu);
  free(rt);
}

const char *cachet_router_host(cachet_router *rt, int idx, int *port) {
  pthread_mutex_lock(&rt->mu);
  node *n = rt->nodes[idx];
  pthread_mutex_unlock(&rt->mu);
  *port = n->port;
  return n->host;
}

const char *cachet_router_name(cachet_router *rt, int idx) {
  pthread_mutex_lock(&rt->mu);
  node *n = idx >= 0 && idx < rt->nnodes ? rt->nodes[idx] : NULL;
  pthread_mutex_unlock(&rt->mu);
  return n != NULL ? n->name : "?";
}

int cachet_router_route(cachet_router *rt, int slot) {
  pthread_mutex_lock(&rt->mu);
  int idx = slot >= 0          ? rt->slots[slot]
            : rt->nmasters > 0 ? rt->masters[0]
                               : -1;
  if (idx < 0)
    rt->stale = 1;
  pthread_mutex_unlock(&rt->mu);
  return idx;
}

int cachet_router_masters(cachet_router *rt, int *out, int cap) {
  pthread_mutex_lock(&rt->mu);
  int n = rt->nmasters < cap ? rt->nmasters : cap;
  memcpy(out, rt->masters, (size_t)n * sizeof *out);
  pthread_mutex_unlock(&rt->mu);
  return n;
}

int cachet_router_due(cachet_router *rt, int64_t now_ms, uint64_t *gen) {
  pthread_mutex_lock(&rt->mu);
  int due = !rt->have_map ||
            (rt->stale && now_ms - rt->refreshed_ms >= CACHET_REFRESH_MIN_MS);
  *gen = rt->gen;
  pthread_mutex_unlock(&rt->mu);
  return due;
}

int cachet_router_candidates(cachet_router *rt, int *out, int cap) {
  pthread_mutex_lock(&rt->mu);
  int n = 0;
  for (int i = 0; i < rt->nmasters && n < cap; i++)
    out[n++] = rt->masters[i];
  for (int i = 0; i < rt->nseeds && n < cap; i++)
    out[n++] = i;
  pthread_mutex_unlock(&rt->mu);
  return n;
}

void cachet_router_failed(cachet_router *rt, int64_t now_ms) {
  pthread_mutex_lock(&rt->mu);
  rt->refreshed_ms = now_ms; /* try again later, not in a tight loop */
  pthread_mutex_unlock(&rt->mu);
}

void cachet_router_stale(cachet_router *rt) {
  pthread_mutex_lock(&rt->mu);
  rt->stale = 1;
  pthread_mutex_unlock(&rt->mu);
}

/* One CLUSTER SLOTS entry is {lo, hi, {host, port, ...}, replicas...}. A
 * master's address may be empty or "?" (an unknown endpoint): then it is
 * the node asked. */
int cachet_router_apply(cachet_router *rt, uint64_t gen, int asked,
                        const redisReply *r, int64_t now_ms) {
  if (r->type != REDIS_REPLY_ARRAY)
    return cachet_fail(CACHET_EPROTO, "CLUSTER SLOTS: unexpected reply");
  int16_t *slots = malloc(sizeof rt->slots);
  if (slots == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory refreshing the map");
  for (unsigned i = 0; i < CACHET_CLUSTER_SLOTS; i++)
    slots[i] = -1;
  int rc = CACHET_OK;
  pthread_mutex_lock(&rt->mu);
  for (size_t i = 0; rc == CACHET_OK && i < r->elements; i++) {
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_ARRAY ||
        e->element[2]->elements < 2 ||
        e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
        e->element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
      rc = cachet_fail(CACHET_EPROTO, "CLUSTER SLOTS: unexpected entry");
      break;
    }
    long long lo = e->element[0]->integer, hi = e->element[1]->integer;
    if (lo < 0 || hi < lo || hi >= (long long)CACHET_CLUSTER_SLOTS) {
      rc = cachet_fail(CACHET_EPROTO, "CLUSTER SLOTS: bad slot range");
      break;
    }
    const redisReply *h = e->element[2]->element[0];
    const char *host = h->str;
    size_t hl = h->len;
    if (hl == 0 || (hl == 1 && host[0] == '?')) {
      host = rt->nodes[asked]->host;
      hl = strlen(host);
    }
    /* Checked before it is an int: 2^32 + 7000 is not port 7000. */
    long long port = e->element[2]->element[1]->integer;
    if (port <= 0 || port > 65535) {
      rc = cachet_fail(CACHET_EPROTO, "CLUSTER SLOTS: bad port %lld", port);
      break;
    }
    int idx = node_index(rt, host, hl, (int)port);
    if (idx < 0) {
      rc = CACHET_EPROTO;
      break;
    }
    for (long long s = lo; s <= hi; s++)
      slots[s] = (int16_t)idx;
  }
  if (rc == CACHET_OK && rt->gen == gen) {
    memcpy(rt->slots, slots, sizeof rt->slots);
    unsigned char seen[CACHET_ROUTER_NODES] = {0};
    rt->nmasters = 0;
    for (unsigned s = 0; s < CACHET_CLUSTER_SLOTS; s++) {
      int idx = rt->slots[s];
      if (idx >= 0 && !seen[idx]) {
        seen[idx] = 1;
        rt->masters[rt->nmasters++] = idx;
      }
    }
    rt->have_map = 1;
    rt->stale = 0;
    rt->refreshed_ms = now_ms;
    rt->gen++;
  }
  pthread_mutex_unlock(&rt->mu);
  free(slots);
  return rc;
}

static int cmd_is(const char *a, size_t len, const char *name) {
  return strlen(name) == len && strncasecmp(a, name, len) == 0;
}

int cachet_command_slot(int argc, const char **argv, const size_t *lens) {
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

static int starts(const redisReply *r, const char *w) {
  size_t n = strlen(w);
  return r->len >= n && memcmp(r->str, w, n) == 0 &&
         (r->len == n || r->str[n] == ' ');
}

int cachet_redirect_kind(const redisReply *r) {
  if (r->type != REDIS_REPLY_ERROR)
    return CACHET_R_NONE;
  if (starts(r, "MOVED"))
    return CACHET_R_MOVED;
  if (starts(r, "ASK"))
    return CACHET_R_ASK;
  if (starts(r, "TRYAGAIN"))
    return CACHET_R_TRYAGAIN;
  if (starts(r, "CLUSTERDOWN"))
    return CACHET_R_DOWN;
  return CACHET_R_NONE;
}

int cachet_router_redirect(cachet_router *rt, const redisReply *r, int from) {
  const char *sp = memchr(r->str, ' ', r->len);
  const char *ep = sp != NULL
                       ? memchr(sp + 1, ' ', r->len - (size_t)(sp + 1 - r->str))
                       : NULL;
  if (ep == NULL)
    return cachet_fail(CACHET_EPROTO, "cluster: malformed redirection"), -1;
  long slot = strtol(sp + 1, NULL, 10);
  const char *addr = ep + 1;
  size_t alen = r->len - (size_t)(addr - r->str);
  const char *colon = NULL;
  for (size_t i = 0; i < alen; i++)
    if (addr[i] == ':')
      colon = addr + i;
  if (colon == NULL || slot < 0 || slot >= (long)CACHET_CLUSTER_SLOTS)
    return cachet_fail(CACHET_EPROTO, "cluster: malformed redirection"), -1;
  int port = 0;
  for (const char *p = colon + 1; p < addr + alen; p++) {
    if (*p < '0' || *p > '9' || port > 65535)
      return cachet_fail(CACHET_EPROTO, "cluster: malformed redirection"), -1;
    port = port * 10 + (*p - '0');
  }
  pthread_mutex_lock(&rt->mu);
  const char *h = addr;
  size_t hl = (size_t)(colon - addr);
  if (hl == 0 && from >= 0 && from < rt->nnodes) {
    h = rt->nodes[from]->host;
    hl = strlen(h);
  }
  int idx = node_index(rt, h, hl, port);
  if (idx >= 0 && starts(r, "MOVED")) {
    rt->slots[slot] = (int16_t)idx;
    rt->stale = 1;
  }
  pthread_mutex_unlock(&rt->mu);
  return idx;
}
