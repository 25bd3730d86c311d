/* Shared benchmark helpers. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

uint64_t bench_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_server_start(test_server *s) {
  if (test_server_start(s, NULL) != 0) {
    fprintf(stderr, "bench: cannot start a private redis-server\n");
    exit(1);
  }
}

static void *stall_loop(void *arg) {
  bench_stall *m = arg;
  redisContext *c = test_redis(m->srv);
  while (!m->stop) {
    uint64_t t0 = bench_ns();
    redisReply *r = redisCommand(c, "PING");
    uint64_t dt = bench_ns() - t0;
    if (r == NULL)
      break;
    freeReplyObject(r);
    if (dt > m->worst_ns)
      m->worst_ns = dt;
    m->pings++;
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
  }
  redisFree(c);
  return NULL;
}

void bench_stall_start(bench_stall *m, const test_server *s) {
  m->srv = s;
  m->stop = 0;
  m->worst_ns = 0;
  m->pings = 0;
  if (pthread_create(&m->th, NULL, stall_loop, m) != 0) {
    fprintf(stderr, "bench: cannot start the stall monitor\n");
    exit(1);
  }
}

void bench_stall_stop(bench_stall *m) {
  m->stop = 1;
  pthread_join(m->th, NULL);
}

void bench_report(const char *name, double cachet_ops_s, double raw_ops_s) {
  printf("%-28s cachet %10.0f ops/s   raw %10.0f ops/s   ratio %.3f\n", name,
         cachet_ops_s, raw_ops_s, raw_ops_s > 0 ? cachet_ops_s / raw_ops_s : 0);
}
