/* The health probe as a machine (op_health.h).
 *
 * Step one PINGs every master in one pipeline, and its round trip is the
 * probe's latency (the slowest master's). Step two asks each master that
 * answered, again in one pipeline, for INFO server, SCRIPT EXISTS of every
 * embedded SHA1, INFO memory, INFO errorstats and CONFIG GET
 * maxmemory-policy (where CONFIG is refused, INFO memory's policy stands).
 * The result is the weakest master: the slowest PING, the fewest scripts
 * cached, the first risky policy, the lowest version, the fullest memory;
 * OOM refusals add up. A master that cannot be reached makes a cluster
 * unhealthy and is named; the probe fails only when none answers.
 *
 * A probe must not call a live server down because a pooled connection to
 * it was closed while idle (a proxy, a NAT table, or Redis's own `timeout`
 * does that): after a connection error it runs once more, over fresh
 * connections (the drivers close a connection that failed). A master that
 * is really gone fails again at once (the connect is refused); a timeout is
 * never retried, so a probe never waits twice. */
#include "op_health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "health.h"
#include "run.h"
#include "track.h"

enum { H_PING, H_PINGED, H_PROBED };
#define PROBE_CMDS 5 /* per master, in step two */

static int policy_risky(const char *p) {
  return strncmp(p, "allkeys-", 8) == 0 || strncmp(p, "volatile-", 9) == 0;
}

/* Is a's memory closer to its limit than b's? Without a limit, only the
 * amount tells. */
static int fuller(const cachet_health *a, const cachet_health *b) {
  if (a->maxmemory > 0 && b->maxmemory > 0)
    return (double)a->used_memory / (double)a->maxmemory >
           (double)b->used_memory / (double)b->maxmemory;
  if (a->maxmemory > 0 || b->maxmemory > 0)
    return a->maxmemory > 0;
  return a->used_memory > b->used_memory;
}

/* A master failed: the first failure is kept, with the master named. */
static void down(cachet_op_health *x, const cachet_in *in, int node, int rc) {
  x->failed[node] = 1;
  if (x->first_rc == CACHET_OK) {
    x->first_rc = rc;
    snprintf(x->detail, sizeof x->detail, "%s", cachet_last_error());
    snprintf(x->down, sizeof x->down, "master %s: %s",
             in->names[node < in->nodes ? node : 0], x->detail);
  }
  x->stale |= rc == CACHET_ECONN;
}

static int send_ping(cachet_op_health *x, const cachet_in *in,
                     cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  memset(x->failed, 0, sizeof x->failed);
  x->first_rc = CACHET_OK;
  x->stale = 0;
  x->answered = 0;
  memset(&x->h, 0, sizeof x->h);
  x->nodes = in->nodes < CACHET_HEALTH_NODES ? in->nodes : CACHET_HEALTH_NODES;
  for (int i = 0; i < x->nodes; i++) {
    cachet_cmds_start(b, i);
    cachet_cmds_str(b, "PING");
  }
  x->op.state = H_PINGED;
  x->t0 = cachet_mono_ms_precise();
  return cachet_cmds_send(b, out);
}

static int pinged(cachet_op_health *x, const cachet_in *in, cachet_out *out) {
  double ms = cachet_mono_ms_precise() - x->t0;
  cachet_cmds *b = &x->op.cmds;
  for (int i = 0; i < x->nodes; i++) {
    const cachet_res *r = &in->res[i];
    int rc = cachet_res_ok(r);
    if (rc == CACHET_OK && (r->reply->type != REDIS_REPLY_STATUS ||
                            strcmp(r->reply->str, "PONG") != 0))
      rc = cachet_res_proto("PING");
    if (rc != CACHET_OK) {
      down(x, in, i, rc);
      continue;
    }
    x->ping[i] = ms;
    cachet_cmds_start(b, i);
    cachet_cmds_str(b, "INFO");
    cachet_cmds_str(b, "server");
    cachet_cmds_start(b, i);
    cachet_cmds_str(b, "SCRIPT");
    cachet_cmds_str(b, "EXISTS");
    for (int s = 0; s < CACHET_SCRIPT_COUNT; s++)
      cachet_cmds_arg(b, cachet_scripts[s].sha, 40);
    cachet_cmds_start(b, i);
    cachet_cmds_str(b, "INFO");
    cachet_cmds_str(b, "memory");
    cachet_cmds_start(b, i);
    cachet_cmds_str(b, "INFO");
    cachet_cmds_str(b, "errorstats");
    cachet_cmds_start(b, i);
    cachet_cmds_str(b, "CONFIG");
    cachet_cmds_str(b, "GET");
    cachet_cmds_str(b, "maxmemory-policy");
  }
  x->op.state = H_PROBED;
  if (b->n == 0) { /* nobody answered */
    cachet_in none = *in;
    none.res = NULL;
    none.n = 0;
    return x->op.k->step(&x->op, &none, out);
  }
  return cachet_cmds_send(b, out);
}

/* One master's replies to step two into *n. */
static int probe_node(const cachet_res *r, cachet_health *n) {
  for (int j = 0; j < PROBE_CMDS - 1; j++) { /* CONFIG may be refused */
    int rc = cachet_res_ok(&r[j]);
    if (rc != CACHET_OK)
      return rc;
    int t = r[j].reply->type;
    if (j != 1 && t != REDIS_REPLY_STRING && t != REDIS_REPLY_STATUS)
      return cachet_res_proto("INFO");
  }
  const redisReply *se = r[1].reply;
  if (se->type != REDIS_REPLY_ARRAY || se->elements != CACHET_SCRIPT_COUNT)
    return cachet_res_proto("SCRIPT EXISTS");
  const redisReply *info = r[0].reply, *mem = r[2].reply, *err = r[3].reply;
  (void)cachet_info_field(info->str, info->len, "redis_version",
                          n->server_version, sizeof n->server_version);
  for (size_t i = 0; i < se->elements; i++)
    n->scripts_loaded += se->element[i]->type == REDIS_REPLY_INTEGER &&
                         se->element[i]->integer == 1;
  cachet_health_memory(n, mem->str, mem->len, 1);
  n->oom_rejections = cachet_health_oom_count(err->str, err->len);
  const cachet_res *cfg = &r[4];
  if (cfg->status != CACHET_OK)
    return cachet_res_ok(cfg);
  const redisReply *c = cfg->reply;
  if (c->type == REDIS_REPLY_ARRAY && c->elements == 2 &&
      c->element[1]->type == REDIS_REPLY_STRING)
    snprintf(n->maxmemory_policy, sizeof n->maxmemory_policy, "%s",
             c->element[1]->str);
  else if (c->type != REDIS_REPLY_ERROR)
    return cachet_res_proto("CONFIG GET");
  return CACHET_OK;
}

static int probed(cachet_op_health *x, const cachet_in *in, cachet_out *out) {
  size_t k = 0;
  cachet_health *h = &x->h;
  for (int i = 0; i < x->nodes; i++) {
    if (x->failed[i])
      continue;
    cachet_health n;
    memset(&n, 0, sizeof n);
    n.ping_ms = x->ping[i];
    int rc = probe_node(&in->res[k], &n);
    k += PROBE_CMDS;
    if (rc != CACHET_OK) {
      down(x, in, i, rc);
      continue;
    }
    if (x->answered++ == 0) {
      *h = n;
      continue;
    }
    if (n.ping_ms > h->ping_ms)
      h->ping_ms = n.ping_ms;
    if (n.scripts_loaded < h->scripts_loaded)
      h->scripts_loaded = n.scripts_loaded;
    if (cachet_version_num(n.server_version) <
        cachet_version_num(h->server_version))
      memcpy(h->server_version, n.server_version, sizeof h->server_version);
    if (policy_risky(n.maxmemory_policy) && !policy_risky(h->maxmemory_policy))
      memcpy(h->maxmemory_policy, n.maxmemory_policy,
             sizeof h->maxmemory_policy);
    if (fuller(&n, h)) {
      h->used_memory = n.used_memory;
      h->maxmemory = n.maxmemory;
    }
    h->oom_rejections += n.oom_rejections;
  }
  if (x->stale && !x->retried) {
    x->retried = 1;
    return send_ping(x, in, out);
  }
  if (x->answered == 0)
    return cachet_op_done(out, cachet_fail(x->first_rc, "%s", x->detail));
  /* A master that did not answer leaves its refusals out of the sum: no
   * comparison with the previous probe then. */
  uint64_t oom_new = x->first_rc == CACHET_OK
                         ? cachet_health_oom_since(x->op.c, h->oom_rejections)
                         : 0;
  cachet_health_verdict(h, x->first_rc != CACHET_OK ? x->down : NULL, oom_new);
  if (x->op.c->near != NULL) {
    h->near_cache = 1;
    h->tracking = cachet_track_active(x->op.c->track);
    if (!h->tracking) {
      char why[200];
      cachet_track_why(x->op.c->track, why, sizeof why);
      size_t l = strlen(h->message);
      snprintf(h->message + l, sizeof h->message - l,
               "%snear cache bypassed: invalidation tracking is not active%s%s",
               l > 0 ? "; " : "", why[0] ? ": " : " yet", why);
      h->degraded = h->healthy;
    }
  }
  if (x->op.c->cfg.tls_insecure) { /* loud wherever it can be */
    size_t l = strlen(h->message);
    snprintf(h->message + l, sizeof h->message - l,
             "%sTLS without verification (tls_insecure): the server is not "
             "authenticated",
             l > 0 ? "; " : "");
  }
  cachet_error_clear();
  return cachet_op_done(out, CACHET_OK);
}

static int health_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_health *x = (cachet_op_health *)op;
  switch (op->state) {
  case H_PING:
    return send_ping(x, in, out);
  case H_PINGED:
    return pinged(x, in, out);
  default:
    return probed(x, in, out);
  }
}

static void health_free(cachet_op *op) { cachet_cmds_free(&op->cmds); }

static const cachet_op_kind health_kind = {"health", health_step, health_free,
                                           0};

void cachet_op_health_init(cachet_op_health *x, cachet *c) {
  cachet_op_begin(&x->op, sizeof *x, &health_kind, c);
}

/* ---- INFO figures, summed ------------------------------------------------ */

static int info_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_info *x = (cachet_op_info *)op;
  if (in->res == NULL) {
    cachet_cmds *b = &op->cmds;
    for (int i = 0; i < in->nodes; i++) {
      cachet_cmds_start(b, i);
      cachet_cmds_str(b, "INFO");
      cachet_cmds_str(b, "stats");
      cachet_cmds_str(b, "memory");
      cachet_cmds_str(b, "clients");
    }
    return cachet_cmds_send(b, out);
  }
  static const char *const names[4] = {"keyspace_hits", "keyspace_misses",
                                       "used_memory", "connected_clients"};
  uint64_t *sums[4] = {&x->info.keyspace_hits, &x->info.keyspace_misses,
                       &x->info.used_memory, &x->info.connected_clients};
  for (int f = 0; f < 4; f++)
    *sums[f] = UINT64_MAX;
  for (size_t i = 0; i < in->n; i++) {
    int rc = cachet_res_ok(&in->res[i]);
    const redisReply *r = in->res[i].reply;
    if (rc == CACHET_OK && r->type != REDIS_REPLY_STRING &&
        r->type != REDIS_REPLY_STATUS)
      rc = cachet_res_proto("INFO");
    if (rc != CACHET_OK)
      return cachet_op_done(out, rc);
    for (int f = 0; f < 4; f++) {
      char v[32];
      if (!cachet_info_field(r->str, r->len, names[f], v, sizeof v) ||
          v[0] < '0' || v[0] > '9')
        continue;
      uint64_t n = strtoull(v, NULL, 10);
      *sums[f] = *sums[f] == UINT64_MAX ? n : *sums[f] + n;
    }
  }
  x->info.masters = (int)in->n;
  return cachet_op_done(out, CACHET_OK);
}

static const cachet_op_kind info_kind = {"info", info_step, health_free, 0};

void cachet_op_info_init(cachet_op_info *x, cachet *c) {
  cachet_op_begin(&x->op, sizeof *x, &info_kind, c);
}

/* ---- The public calls ---------------------------------------------------- */

int cachet_health_check(cachet *c, cachet_health *out) {
  memset(out, 0, sizeof *out);
  cachet_error_clear();
  cachet_op_health x;
  cachet_op_health_init(&x, c);
  int rc = cachet_run(c, &x.op);
  if (rc == CACHET_OK)
    *out = x.h;
  x.op.k->free(&x.op);
  return cachet_result(c, rc);
}

int cachet_server_info_get(cachet *c, cachet_server_info *out) {
  memset(out, 0, sizeof *out);
  cachet_error_clear();
  cachet_op_info x;
  cachet_op_info_init(&x, c);
  int rc = cachet_run(c, &x.op);
  if (rc == CACHET_OK)
    *out = x.info;
  x.op.k->free(&x.op);
  return cachet_result(c, rc);
}
