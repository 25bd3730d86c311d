/* Lock round trips: one cachet_lock_acquire + cachet_lock_release cycle
 * against the two raw hiredis round trips it replaces, SET NX PX and a
 * compare-and-delete (EVALSHA of the usual GET/DEL script), on the same
 * private server in the same run. cachet's cycle does more (a fresh random
 * token, the fencing INCR, a pooled connection), so the ratio says what that
 * costs. Target: >= 0.9. A second line compares against raw EVALSHAs of
 * cachet's own two scripts, which isolates the client-side cost (token,
 * key names, the pool). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "cachet_scripts.h"
#include "common.h"

#define CYCLES 20000
#define ROUNDS 5

static const char release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) end return 0";

static double raw_round(redisContext *r, const char *sha) {
  char token[40];
  uint64_t t0 = bench_ns();
  for (int i = 0; i < CYCLES; i++) {
    snprintf(token, sizeof token, "%032x", (unsigned)i);
    redisReply *rep = redisCommand(r, "SET rawlock %s NX PX 5000", token);
    if (rep == NULL || rep->type != REDIS_REPLY_STATUS) {
      fprintf(stderr, "bench_lock: raw SET NX failed\n");
      exit(1);
    }
    freeReplyObject(rep);
    rep = redisCommand(r, "EVALSHA %s 1 rawlock %s", sha, token);
    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER || rep->integer != 1) {
      fprintf(stderr, "bench_lock: raw release failed\n");
      exit(1);
    }
    freeReplyObject(rep);
  }
  return CYCLES / ((double)(bench_ns() - t0) / 1e9);
}

/* The same two scripts cachet runs, sent raw: acquire (SET NX PX + the
 * fencing INCR) and release (compare and DEL). */
static double raw_scripted_round(redisContext *r) {
  const char *acq = cachet_scripts[CACHET_SCRIPT_LOCK_ACQUIRE].sha;
  const char *rel = cachet_scripts[CACHET_SCRIPT_LOCK_RELEASE].sha;
  char token[40];
  uint64_t t0 = bench_ns();
  for (int i = 0; i < CYCLES; i++) {
    snprintf(token, sizeof token, "%032x", (unsigned)i);
    redisReply *rep = redisCommand(
        r, "EVALSHA %s 2 {r}l:rawlock {r}f:rawlock %s 5000", acq, token);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
      fprintf(stderr, "bench_lock: raw lock_acquire failed\n");
      exit(1);
    }
    freeReplyObject(rep);
    rep = redisCommand(r, "EVALSHA %s 1 {r}l:rawlock %s", rel, token);
    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER || rep->integer != 1) {
      fprintf(stderr, "bench_lock: raw lock_release failed\n");
      exit(1);
    }
    freeReplyObject(rep);
  }
  return CYCLES / ((double)(bench_ns() - t0) / 1e9);
}

static double cachet_round(cachet *c) {
  uint64_t t0 = bench_ns();
  for (int i = 0; i < CYCLES; i++) {
    cachet_lock *lk = NULL;
    int rc = cachet_lock_acquire(c, "benchlock", 5000, 0, &lk);
    if (rc != CACHET_OK) {
      fprintf(stderr, "bench_lock: acquire: %s: %s\n", cachet_strerror(rc),
              cachet_last_error());
      exit(1);
    }
    rc = cachet_lock_release(c, lk);
    cachet_lock_free(lk);
    if (rc != CACHET_OK) {
      fprintf(stderr, "bench_lock: release: %s\n", cachet_strerror(rc));
      exit(1);
    }
  }
  return CYCLES / ((double)(bench_ns() - t0) / 1e9);
}

int main(void) {
  test_server s;
  bench_server_start(&s);
  redisContext *r = test_redis(&s);
  redisReply *rep = redisCommand(r, "SCRIPT LOAD %s", release_lua);
  if (rep == NULL || rep->type != REDIS_REPLY_STRING) {
    fprintf(stderr, "bench_lock: SCRIPT LOAD failed\n");
    return 1;
  }
  char sha[41];
  snprintf(sha, sizeof sha, "%s", rep->str);
  freeReplyObject(rep);

  cachet_options o;
  test_options(&s, &o, "bench:");
  cachet *c = NULL;
  if (cachet_open(&c, &o) != CACHET_OK) {
    fprintf(stderr, "bench_lock: cachet_open: %s\n", cachet_last_error());
    return 1;
  }
  /* Warm both paths (connections, script cache), then alternate rounds and
   * keep each side's best, so that a noisy moment does not pick the
   * winner. */
  (void)raw_round(r, sha);
  (void)cachet_round(c);
  (void)raw_scripted_round(r);
  double best_raw = 0, best_cachet = 0, best_scripted = 0;
  for (int i = 0; i < ROUNDS; i++) {
    double a = raw_round(r, sha), b = cachet_round(c),
           d = raw_scripted_round(r);
    if (a > best_raw)
      best_raw = a;
    if (b > best_cachet)
      best_cachet = b;
    if (d > best_scripted)
      best_scripted = d;
  }
  bench_report("lock acquire+release", best_cachet, best_raw);
  bench_report("  vs raw same scripts", best_cachet, best_scripted);
  cachet_close(c);
  redisFree(r);
  test_server_stop(&s);
  return 0;
}
