/* The health probe's verdict: can we reach the server, how fast, which
 * version, are our scripts cached, could its eviction policy eat our
 * bookkeeping, and is its memory running out. The probing is the machine's
 * (op_health.c); what it found is judged here.
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
#include "error.h"
#include "handle.h"
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
