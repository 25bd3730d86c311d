/* Shared helpers for the benchmarks: clocks, a private server, and a stall
 * monitor. Benchmarks measure and print; they never fail on a number. */
#ifndef CACHET_BENCH_COMMON_H
#define CACHET_BENCH_COMMON_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdint.h>

#include "harness.h"

/* Monotonic nanoseconds. */
uint64_t bench_ns(void);

/* Start a private redis-server (tests/harness.c). Exits the process with a
 * message if it cannot. */
void bench_server_start(test_server *s);

/* A thread that PINGs the server over its own connection every ~1 ms and
 * records the slowest round trip: the worst stall other clients saw. */
typedef struct bench_stall {
  const test_server *srv;
  pthread_t th;
  volatile int stop;
  uint64_t worst_ns;
  uint64_t pings;
} bench_stall;

void bench_stall_start(bench_stall *m, const test_server *s);
/* Stop the thread; m->worst_ns and m->pings hold the result. */
void bench_stall_stop(bench_stall *m);

/* Print one result line: name, cachet rate, raw rate, ratio. */
void bench_report(const char *name, double cachet_ops_s, double raw_ops_s);

#endif
