/* mget / mset of 100 entries against raw pipelined GET / SET PX of the same
 * values, in the same run, against the same private server. Rounds
 * alternate the two sides so that machine noise hits both. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define N 100
#define ROUNDS 7
#define CALLS 200 /* per round and side */
#define SIZE 100

static char keys[N][16], rawkeys[N][32], val[SIZE];
static cachet_entry e[N];

static int c_mset(cachet *c) {
  int rc = cachet_mset(c, e, N);
  for (size_t i = 0; rc == CACHET_OK && i < N; i++)
    rc = e[i].status;
  return rc;
}

static int c_mget(cachet *c) {
  int rc = cachet_mget(c, e, N);
  for (size_t i = 0; i < N; i++) {
    if (rc == CACHET_OK && e[i].status != CACHET_OK)
      rc = e[i].status;
    cachet_free(e[i].out);
    e[i].out = NULL;
  }
  return rc;
}

static int raw_pipeline(redisContext *r, int set) {
  for (size_t i = 0; i < N; i++) {
    if (set)
      redisAppendCommand(r, "SET %s %b PX 600000", rawkeys[i], val,
                         (size_t)SIZE);
    else
      redisAppendCommand(r, "GET %s", rawkeys[i]);
  }
  for (size_t i = 0; i < N; i++) {
    void *rep = NULL;
    if (redisGetReply(r, &rep) != REDIS_OK)
      return -1;
    freeReplyObject(rep);
  }
  return 0;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void measure(const char *name, cachet *c, redisContext *r, int set) {
  double rc_[ROUNDS], rr[ROUNDS];
  for (int round = 0; round < ROUNDS; round++) {
    for (int side = 0; side < 2; side++) {
      int cachet_side = (side + round) % 2 == 0;
      uint64_t t0 = bench_ns();
      for (int k = 0; k < CALLS; k++) {
        int rc =
            cachet_side ? (set ? c_mset(c) : c_mget(c)) : raw_pipeline(r, set);
        if (rc != 0) {
          fprintf(stderr, "bench_batch: %s failed: %s %s\n", name,
                  cachet_strerror(rc), cachet_last_error());
          exit(1);
        }
      }
      double rate = (double)CALLS * N * 1e9 / (double)(bench_ns() - t0);
      if (cachet_side)
        rc_[round] = rate;
      else
        rr[round] = rate;
    }
  }
  qsort(rc_, ROUNDS, sizeof *rc_, cmp);
  qsort(rr, ROUNDS, sizeof *rr, cmp);
  bench_report(name, rc_[ROUNDS / 2], rr[ROUNDS / 2]);
}

int main(void) {
  test_server srv;
  bench_server_start(&srv);
  cachet *c = test_open(&srv, "bench-batch:");
  redisContext *r = test_redis(&srv);
  memset(val, 'v', sizeof val);
  for (size_t i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "k%zu", i);
    snprintf(rawkeys[i], sizeof rawkeys[i], "raw:k%zu", i);
    e[i].key = keys[i];
    e[i].keylen = strlen(keys[i]);
    e[i].val = val;
    e[i].len = SIZE;
    e[i].ttl_ms = 600000;
  }
  if (c_mset(c) != 0 || raw_pipeline(r, 1) != 0) {
    fprintf(stderr, "bench_batch: warm-up failed\n");
    return 1;
  }
  printf("batches of %d entries, %d-byte values, median of %d rounds\n", N,
         SIZE, ROUNDS);
  measure("mset vs pipelined SET PX", c, r, 1);
  measure("mget vs pipelined GET", c, r, 0);
  redisFree(r);
  cachet_close(c);
  test_server_stop(&srv);
  return 0;
}
