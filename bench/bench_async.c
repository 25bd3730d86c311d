/* Async get throughput: cachet_async_get with 64 operations in flight on
 * one libevent loop, against raw async hiredis (redisAsyncCommand GET, 64
 * in flight, the libevent adapter) on the same private server in the same
 * run. The raw client GETs the very keys cachet reads (cachet's value keys,
 * holding envelopes), so the bytes on the wire are the same and the ratio
 * is cachet's client-side cost: key names, the operation and its timer,
 * opening the envelope. Target: >= 0.9. Rounds alternate; the first line
 * is the best round of each, the second the median of the rounds' own
 * ratios (steadier on a busy machine). */
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "common.h"
#include "keys.h"

#define KEYS 1000
#define OPS 100000
#define IN_FLIGHT 64
#define ROUNDS 15
#define VALUE_BYTES 64

static test_server srv;
static struct event_base *base;
static char names[KEYS][16];
static size_t namelens[KEYS];
static cachet_key vkeys[KEYS];

typedef struct run {
  long issued, done, failed;
  redisAsyncContext *ac; /* raw */
  cachet_async *a;       /* cachet */
} run;

static void raw_issue(run *r);

static void raw_cb(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  run *r = priv;
  redisReply *rep = reply;
  if (rep == NULL || rep->type != REDIS_REPLY_STRING)
    r->failed++;
  if (++r->done == OPS) {
    event_base_loopbreak(base);
    return;
  }
  if (r->issued < OPS)
    raw_issue(r);
}

static void raw_issue(run *r) {
  const cachet_key *k = &vkeys[r->issued++ % KEYS];
  redisAsyncCommand(r->ac, raw_cb, r, "GET %b", k->buf, k->len);
}

static void connected(const redisAsyncContext *ac, int status) {
  (void)ac;
  if (status != REDIS_OK) {
    fprintf(stderr, "bench_async: raw connect failed\n");
    exit(1);
  }
}

static double raw_round(void) {
  run r = {0};
  r.ac = redisAsyncConnectUnix(srv.sock);
  if (r.ac == NULL || r.ac->err) {
    fprintf(stderr, "bench_async: raw connect failed\n");
    exit(1);
  }
  redisLibeventAttach(r.ac, base);
  redisAsyncSetConnectCallback(r.ac, connected);
  uint64_t t0 = bench_ns();
  for (int i = 0; i < IN_FLIGHT; i++)
    raw_issue(&r);
  event_base_dispatch(base);
  double s = (double)(bench_ns() - t0) / 1e9;
  redisAsyncFree(r.ac);
  if (r.failed > 0) {
    fprintf(stderr, "bench_async: %ld raw GETs failed\n", r.failed);
    exit(1);
  }
  return OPS / s;
}

static void cachet_issue(run *r);

static void cachet_cb(int status, const void *val, size_t len, void *ud) {
  (void)val;
  run *r = ud;
  if (status != CACHET_OK || len != VALUE_BYTES)
    r->failed++;
  if (++r->done == OPS) {
    event_base_loopbreak(base);
    return;
  }
  if (r->issued < OPS)
    cachet_issue(r);
}

static void cachet_issue(run *r) {
  long i = r->issued++ % KEYS;
  if (cachet_async_get(r->a, names[i], namelens[i], cachet_cb, r) !=
      CACHET_OK) {
    fprintf(stderr, "bench_async: cachet_async_get: %s\n", cachet_last_error());
    exit(1);
  }
}

static double cachet_round(cachet_async *a) {
  run r = {0};
  r.a = a;
  uint64_t t0 = bench_ns();
  for (int i = 0; i < IN_FLIGHT; i++)
    cachet_issue(&r);
  event_base_dispatch(base);
  double s = (double)(bench_ns() - t0) / 1e9;
  if (r.failed > 0) {
    fprintf(stderr, "bench_async: %ld cachet gets failed: %s\n", r.failed,
            cachet_last_error());
    exit(1);
  }
  return OPS / s;
}

int main(void) {
  bench_server_start(&srv);
  base = event_base_new();
  cachet_options o;
  test_options(&srv, &o, "bench:");
  cachet *c = NULL;
  cachet_async *a = NULL;
  if (cachet_open(&c, &o) != CACHET_OK ||
      cachet_async_open(&a, base, &o) != CACHET_OK) {
    fprintf(stderr, "bench_async: open: %s\n", cachet_last_error());
    return 1;
  }
  char value[VALUE_BYTES];
  memset(value, 'v', sizeof value);
  for (int i = 0; i < KEYS; i++) {
    namelens[i] = (size_t)snprintf(names[i], sizeof names[i], "key:%d", i);
    if (cachet_set(c, names[i], namelens[i], value, sizeof value, 0) !=
            CACHET_OK ||
        cachet_key_build(c, &vkeys[i], CACHET_KIND_VALUE,
                         cachet_bucket(names[i], namelens[i]), names[i],
                         namelens[i]) != CACHET_OK) {
      fprintf(stderr, "bench_async: setup: %s\n", cachet_last_error());
      return 1;
    }
  }
  double best_raw = 0, best_cachet = 0;
  double ratio[ROUNDS], rr[ROUNDS], cr[ROUNDS];
  for (int round = 0; round < ROUNDS; round++) {
    rr[round] = raw_round();
    cr[round] = cachet_round(a);
    ratio[round] = cr[round] / rr[round];
    if (rr[round] > best_raw)
      best_raw = rr[round];
    if (cr[round] > best_cachet)
      best_cachet = cr[round];
  }
  bench_report("async get, 64 in flight", best_cachet, best_raw);
  /* The round whose ratio is the median. */
  int order[ROUNDS];
  for (int i = 0; i < ROUNDS; i++)
    order[i] = i;
  for (int i = 1; i < ROUNDS; i++)
    for (int j = i; j > 0 && ratio[order[j]] < ratio[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  int mid = order[ROUNDS / 2];
  bench_report("  (median round)", cr[mid], rr[mid]);
  for (int i = 0; i < KEYS; i++)
    cachet_key_free(&vkeys[i]);
  cachet_async_close(a);
  cachet_close(c);
  event_base_free(base);
  test_server_stop(&srv);
  return 0;
}
