/* Metrics: snapshot and the Prometheus text rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "handle.h"
#include "near.h"

#define LOAD(f) atomic_load_explicit(&c->counters.f, memory_order_relaxed)

void cachet_metrics_snapshot(cachet *c, cachet_metrics *out) {
  memset(out, 0, sizeof *out);
  out->hits = LOAD(hits);
  out->misses = LOAD(misses);
  out->expired_envelopes = LOAD(expired_envelopes);
  out->writes = LOAD(writes);
  out->deletes = LOAD(deletes);
  out->clears = LOAD(clears);
  out->tag_evictions = LOAD(tag_evictions);
  out->stampede_waits = LOAD(stampede_waits);
  out->lock_acquisitions = LOAD(lock_acquisitions);
  out->lock_contentions = LOAD(lock_contentions);
  out->script_reloads = LOAD(script_reloads);
  for (int i = 1; i <= CACHET_ERROR_COUNT; i++)
    out->errors[i] = LOAD(errors[i]);
  if (c->near != NULL) {
    cachet_near_stats st;
    cachet_near_get_stats(c->near, &st);
    out->near_hits = st.hits;
    out->near_misses = st.misses;
    out->near_invalidations = st.invalidations;
    out->near_flushes = st.flushes;
    out->near_bytes = st.bytes;
  }
}

/* A growable string for the renderer. */
typedef struct sbuf {
  char *s;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom)
    return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = (b->cap + (size_t)n + 1) * 2;
    char *s = realloc(b->s, cap);
    if (s == NULL) {
      b->oom = 1;
      return;
    }
    b->s = s;
    b->cap = cap;
  }
}

/* The counters Prometheus gets, in the order of the struct. */
#define C(f, help)                                                             \
  { #f, help, offsetof(cachet_metrics, f) }
static const struct {
  const char *name, *help;
  size_t off;
} counters[] = {
    C(hits, "Reads that returned a value."),
    C(misses, "Reads that found nothing (absent or expired)."),
    C(expired_envelopes,
      "Misses because the envelope's logical expiry had passed."),
    C(writes, "Entries written."),
    C(deletes, "Entries deleted that existed."),
    C(clears, "Entries removed by clear."),
    C(tag_evictions, "Entries evicted by tag."),
    C(stampede_waits, "get_or_set calls that waited for a loader."),
    C(lock_acquisitions, "Locks acquired."),
    C(lock_contentions, "Lock attempts that found it held."),
    C(script_reloads, "Scripts loaded after NOSCRIPT."),
    C(near_hits, "Gets answered from the near cache."),
    C(near_misses, "Gets the near cache could not answer."),
    C(near_invalidations,
      "Keys Redis said were written, dropped from the near cache."),
    C(near_flushes,
      "Times the near cache was emptied (FLUSHALL, coherence lost)."),
};
#undef C

int cachet_metrics_prometheus(const cachet_metrics *m, char **out,
                              size_t *len) {
  sbuf b = {malloc(1024), 0, 1024, 0};
  *out = NULL;
  if (b.s == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory rendering metrics");
  for (size_t i = 0; i < sizeof counters / sizeof *counters; i++) {
    const char *name = counters[i].name;
    uint64_t v;
    memcpy(&v, (const char *)m + counters[i].off, sizeof v);
    sb_printf(&b,
              "# HELP cachet_%s_total %s\n# TYPE cachet_%s_total counter\n"
              "cachet_%s_total %llu\n",
              name, counters[i].help, name, name, (unsigned long long)v);
  }
  sb_printf(&b,
            "# HELP cachet_near_bytes Memory the near cache holds.\n"
            "# TYPE cachet_near_bytes gauge\ncachet_near_bytes %llu\n",
            (unsigned long long)m->near_bytes);
  sb_printf(&b, "# HELP cachet_errors_total Errors returned, by class.\n"
                "# TYPE cachet_errors_total counter\n");
  for (int i = 1; i <= CACHET_ERROR_COUNT; i++) {
    const char *name = cachet_status_name(-i) + 7; /* skip "CACHET_" */
    sb_printf(&b, "cachet_errors_total{class=\"%s\"} %llu\n", name,
              (unsigned long long)m->errors[i]);
  }
  if (b.oom) {
    free(b.s);
    return cachet_fail(CACHET_ENOMEM, "out of memory rendering metrics");
  }
  *out = b.s;
  if (len != NULL)
    *len = b.len;
  return CACHET_OK;
}
