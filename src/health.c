/* The health probe: can we reach the server, how fast, which version, are
 * our scripts cached, and could its eviction policy eat our bookkeeping.
 *
 * Only an unreachable server, or one that answers a probe with an error, is
 * an error; everything else is reported in the struct. Scripts missing from
 * the server's cache are not unhealthy: the registry loads them on first use
 * (SCRIPT LOAD after NOSCRIPT). An evicting maxmemory policy is: allkeys-*
 * may evict tag indexes and locks, and volatile-* those that have a TTL (a
 * lock always has one), which silently breaks evict-by-tag and mutual
 * exclusion. Only noeviction keeps them safe. In a cluster every master is
 * probed (see cachet_health_check). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cachet_scripts.h"
#include "conn.h"
#include "error.h"
#include "health.h"

int cachet_info_field(const char *info, size_t len, const char *name, char *out,
                      size_t outsz) {
  size_t nl = strlen(name);
  const char *p = info, *end = info + len;
  out[0] = '\0';
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL)
      eol = end;
    size_t ll = (size_t)(eol - p);
    if (ll > 0 && p[ll - 1] == '\r')
      ll--;
    if (ll > nl && memcmp(p, name, nl) == 0 && p[nl] == ':') {
      size_t vl = ll - nl - 1;
      if (vl >= outsz)
        vl = outsz - 1;
      memcpy(out, p + nl + 1, vl);
      out[vl] = '\0';
      return 1;
    }
    p = eol + 1;
  }
  return 0;
}

/* INFO <section> and one field of it. */
static int info_get(cachet_conn *cn, int node, const char *section,
                    const char *name, char *out, size_t outsz) {
  const char *argv[2] = {"INFO", section};
  size_t lens[2] = {4, strlen(section)};
  redisReply *r = NULL;
  int rc = cachet_conn_command_node(cn, node, 2, argv, lens, &r);
  if (rc != CACHET_OK)
    return rc;
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) {
    freeReplyObject(r);
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "INFO %s: unexpected reply", section);
  }
  if (!cachet_info_field(r->str, r->len, name, out, outsz))
    out[0] = '\0';
  freeReplyObject(r);
  return CACHET_OK;
}

static double mono_ms_precise(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int probe_ping(cachet_conn *cn, int node, double *ms) {
  const char *argv[1] = {"PING"};
  size_t lens[1] = {4};
  redisReply *r = NULL;
  double t0 = mono_ms_precise();
  int rc = cachet_conn_command_node(cn, node, 1, argv, lens, &r);
  double t1 = mono_ms_precise();
  if (rc != CACHET_OK)
    return rc;
  int ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
  freeReplyObject(r);
  if (!ok) {
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "PING: unexpected reply");
  }
  *ms = t1 - t0;
  return CACHET_OK;
}

/* SCRIPT EXISTS with every embedded SHA1, in one round trip. */
static int probe_scripts(cachet_conn *cn, int node, int *loaded) {
  const char *argv[CACHET_SCRIPT_COUNT + 2];
  size_t lens[CACHET_SCRIPT_COUNT + 2];
  argv[0] = "SCRIPT";
  lens[0] = 6;
  argv[1] = "EXISTS";
  lens[1] = 6;
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++) {
    argv[i + 2] = cachet_scripts[i].sha;
    lens[i + 2] = 40;
  }
  redisReply *r = NULL;
  int rc = cachet_conn_command_node(cn, node, CACHET_SCRIPT_COUNT + 2, argv,
                                    lens, &r);
  if (rc != CACHET_OK)
    return rc;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != CACHET_SCRIPT_COUNT) {
    freeReplyObject(r);
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "SCRIPT EXISTS: unexpected reply");
  }
  *loaded = 0;
  for (size_t i = 0; i < r->elements; i++)
    if (r->element[i]->type == REDIS_REPLY_INTEGER &&
        r->element[i]->integer == 1)
      (*loaded)++;
  freeReplyObject(r);
  return CACHET_OK;
}

/* INFO <section>, whole, for the pure readers below. */
static int info_section(cachet_conn *cn, int node, const char *section,
                        redisReply **out) {
  const char *argv[2] = {"INFO", section};
  size_t lens[2] = {4, strlen(section)};
  int rc = cachet_conn_command_node(cn, node, 2, argv, lens, out);
  if (rc != CACHET_OK)
    return rc;
  if ((*out)->type != REDIS_REPLY_STRING &&
      (*out)->type != REDIS_REPLY_STATUS) {
    freeReplyObject(*out);
    *out = NULL;
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "INFO %s: unexpected reply", section);
  }
  return CACHET_OK;
}

/* Memory, refusals and the policy: CONFIG GET maxmemory-policy, and where
 * CONFIG is refused (an ACL without +config, a renamed command) INFO
 * memory carries the same value. */
static int probe_memory(cachet_conn *cn, int node, cachet_health *h) {
  redisReply *mem = NULL, *err = NULL, *cfg = NULL;
  int rc = info_section(cn, node, "memory", &mem);
  if (rc == CACHET_OK)
    rc = info_section(cn, node, "errorstats", &err);
  if (rc != CACHET_OK) {
    if (mem != NULL)
      freeReplyObject(mem);
    return rc;
  }
  const char *argv[3] = {"CONFIG", "GET", "maxmemory-policy"};
  size_t lens[3] = {6, 3, 16};
  rc = cachet_conn_command_node(cn, node, 3, argv, lens, &cfg);
  int from_info = 1;
  if (rc == CACHET_OK) {
    if (cfg->type == REDIS_REPLY_ARRAY && cfg->elements == 2 &&
        cfg->element[1]->type == REDIS_REPLY_STRING) {
      snprintf(h->maxmemory_policy, sizeof h->maxmemory_policy, "%s",
               cfg->element[1]->str);
      from_info = 0;
    }
    freeReplyObject(cfg);
  } else if (rc == CACHET_ESERVER) {
    rc = CACHET_OK;
  }
  if (rc == CACHET_OK) {
    cachet_health_memory(h, mem->str, mem->len, from_info);
    h->oom_rejections = cachet_health_oom_count(err->str, err->len);
  }
  freeReplyObject(mem);
  freeReplyObject(err);
  return rc;
}

/* Probe one master into *h. */
static int probe_node(cachet_conn *cn, int node, cachet_health *h) {
  int rc;
  if ((rc = probe_ping(cn, node, &h->ping_ms)) ||
      (rc = info_get(cn, node, "server", "redis_version", h->server_version,
                     sizeof h->server_version)) ||
      (rc = probe_scripts(cn, node, &h->scripts_loaded)) ||
      (rc = probe_memory(cn, node, h)))
    return rc;
  return CACHET_OK;
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

static int policy_risky(const char *p) {
  return strncmp(p, "allkeys-", 8) == 0 || strncmp(p, "volatile-", 9) == 0;
}

/* What one pass over the masters found. */
typedef struct probe {
  cachet_health h; /* the weakest master that answered */
  int answered;
  int first_rc;     /* the first master's failure, if any */
  char detail[512]; /* ... its detail */
  char down[700];   /* ... and that master named, for the message */
  int stale;        /* a failure was a connection error */
} probe;

/*
 * Probe every master (the one server, standalone) over one borrow. A master
 * that answers goes into p->h as the weakest so far: the slowest PING, the
 * fewest scripts cached, the first risky policy, the lowest version.
 */
static int probe_all(cachet *c, probe *p) {
  memset(p, 0, sizeof *p);
  cachet_conn *cn;
  int rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK)
    return rc;
  int nodes = cachet_conn_nodes(cn);
  if (nodes < 0) {
    cachet_conn_release(c, cn);
    return nodes;
  }
  cachet_health *h = &p->h;
  for (int node = 0; node < nodes; node++) {
    cachet_health n;
    memset(&n, 0, sizeof n);
    rc = probe_node(cn, node, &n);
    if (rc != CACHET_OK) {
      if (p->first_rc == CACHET_OK) {
        p->first_rc = rc;
        snprintf(p->detail, sizeof p->detail, "%s", cachet_last_error());
        snprintf(p->down, sizeof p->down, "master %s: %s",
                 cachet_conn_node_name(cn, node), p->detail);
      }
      p->stale |= rc == CACHET_ECONN;
      continue;
    }
    if (p->answered++ == 0) {
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
    /* The fullest master speaks for memory; refusals add up. */
    if (fuller(&n, h)) {
      h->used_memory = n.used_memory;
      h->maxmemory = n.maxmemory;
    }
    h->oom_rejections += n.oom_rejections;
  }
  cachet_conn_release(c, cn);
  return CACHET_OK;
}

/*
 * A cluster is reported as its weakest master. A master that cannot be
 * reached makes the cluster unhealthy (its slots are down) and is named in
 * the message; the call only fails when no master answers at all.
 *
 * A probe must not call a live server down because a pooled connection to
 * it was closed while idle (a proxy, a NAT table, or Redis's own `timeout`
 * does that): after a connection error the probe runs once more, over
 * fresh connections (a broken one is closed when it is returned). A master
 * that is really gone fails again, at once (the connect is refused); a
 * timeout is never retried, so a probe never waits twice.
 */
int cachet_health_check(cachet *c, cachet_health *out) {
  memset(out, 0, sizeof *out);
  cachet_error_clear();
  probe p;
  int rc = CACHET_OK;
  for (int attempt = 0; attempt < 2; attempt++) {
    rc = probe_all(c, &p);
    if (rc == CACHET_ECONN && attempt == 0)
      continue;
    if (rc != CACHET_OK || !p.stale)
      break;
  }
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  if (p.answered == 0)
    return cachet_result(c, cachet_fail(p.first_rc, "%s", p.detail));
  /* A master that did not answer leaves its refusals out of the sum: no
   * comparison with the previous probe then. */
  uint64_t oom_new = p.first_rc == CACHET_OK
                         ? cachet_health_oom_since(c, p.h.oom_rejections)
                         : 0;
  cachet_health_verdict(&p.h, p.first_rc != CACHET_OK ? p.down : NULL, oom_new);
  *out = p.h;
  return CACHET_OK;
}

int cachet_version_num(const char *v) {
  int part[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++) {
    if (*v < '0' || *v > '9')
      return i == 0 ? 0 : part[0] * 10000 + part[1] * 100 + part[2];
    while (*v >= '0' && *v <= '9') {
      if (part[i] < 99)
        part[i] = part[i] * 10 + (*v - '0');
      v++;
    }
    if (*v == '.')
      v++;
  }
  return part[0] * 10000 + part[1] * 100 + part[2];
}

static uint64_t field_u64(const char *info, size_t len, const char *name) {
  char v[32];
  if (!cachet_info_field(info, len, name, v, sizeof v))
    return 0;
  return strtoull(v, NULL, 10);
}

void cachet_health_memory(cachet_health *h, const char *info, size_t len,
                          int policy) {
  h->used_memory = field_u64(info, len, "used_memory");
  h->maxmemory = field_u64(info, len, "maxmemory");
  if (policy)
    (void)cachet_info_field(info, len, "maxmemory_policy", h->maxmemory_policy,
                            sizeof h->maxmemory_policy);
}

uint64_t cachet_health_oom_count(const char *info, size_t len) {
  char v[64];
  if (!cachet_info_field(info, len, "errorstat_OOM", v, sizeof v) ||
      strncmp(v, "count=", 6) != 0)
    return 0;
  return strtoull(v + 6, NULL, 10);
}

uint64_t cachet_health_oom_since(cachet *c, uint64_t total) {
  uint64_t prev = atomic_exchange(&c->health_oom, total + 1);
  return prev == 0 || total + 1 <= prev ? 0 : total + 1 - prev;
}

/* Writes fail with OOM once used_memory passes maxmemory (noeviction);
 * 90% leaves an operator time to act. */
static int memory_tight(const cachet_health *h) {
  return h->maxmemory > 0 &&
         (double)h->used_memory >= 0.9 * (double)h->maxmemory;
}

void cachet_health_verdict(cachet_health *h, const char *down,
                           uint64_t oom_new) {
  h->scripts_total = CACHET_SCRIPT_COUNT;
  int allkeys = strncmp(h->maxmemory_policy, "allkeys-", 8) == 0;
  int volatile_ = strncmp(h->maxmemory_policy, "volatile-", 9) == 0;
  int ver = cachet_version_num(h->server_version);
  int too_old = ver > 0 && ver < CACHET_REDIS_MIN_VERSION;
  h->policy_warning = allkeys || volatile_;
  h->healthy = !h->policy_warning && down == NULL && !too_old;
  size_t o = 0;
  h->message[0] = '\0';
  if (down != NULL)
    o += (size_t)snprintf(h->message, sizeof h->message, "%s", down);
  if (too_old && o < sizeof h->message)
    o += (size_t)snprintf(h->message + o, sizeof h->message - o,
                          "%sRedis %s is older than 6.2, which cachet's "
                          "scripts need (SET ... PXAT)",
                          o > 0 ? "; " : "", h->server_version);
  if (h->policy_warning && o < sizeof h->message)
    o += (size_t)snprintf(h->message + o, sizeof h->message - o,
                          "%smaxmemory-policy %s may evict %s",
                          o > 0 ? "; " : "", h->maxmemory_policy,
                          allkeys ? "tag indexes and locks"
                                  : "locks and tag indexes (they have TTLs)");
  int tight = memory_tight(h);
  h->degraded = h->healthy && (tight || oom_new > 0);
  if (tight && o < sizeof h->message)
    o += (size_t)snprintf(
        h->message + o, sizeof h->message - o,
        "%smemory at %.0f%% of maxmemory (%llu of %llu bytes): writes will "
        "fail with OOM",
        o > 0 ? "; " : "",
        100.0 * (double)h->used_memory / (double)h->maxmemory,
        (unsigned long long)h->used_memory, (unsigned long long)h->maxmemory);
  if (oom_new > 0 && o < sizeof h->message)
    o += (size_t)snprintf(h->message + o, sizeof h->message - o,
                          "%scommands refused for memory (OOM) since the "
                          "last probe: %llu",
                          o > 0 ? "; " : "", (unsigned long long)oom_new);
  if (h->scripts_loaded < h->scripts_total && o < sizeof h->message)
    snprintf(h->message + o, sizeof h->message - o,
             "%s%d of %d scripts not in the server's script cache (they "
             "load on first use)",
             o > 0 ? "; " : "", h->scripts_total - h->scripts_loaded,
             h->scripts_total);
}
