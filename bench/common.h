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

/* Pin the private server's main thread to the last CPU this process may
 * run on, and its other threads and every thread of this process to the
 * others, so that the server never waits for a core behind the client that
 * loads it. Threads created afterwards inherit the bench's mask, so call it
 * before starting any. Skipped when `pin` is 0 or fewer than 2 CPUs are
 * allowed. Prints one "placement:" line either way. Returns 1 if pinned,
 * else 0. */
int bench_place(const test_server *s, int pin);

/* Round trips are binned at 5 us up to 50 ms (the last bin holds the rest):
 * a fixed histogram, so the pinger allocates nothing per ping. */
#define BENCH_STALL_BIN_NS 5000u
#define BENCH_STALL_BINS 10000u

/* A thread that PINGs the server over its own connection every ~1 ms and
 * records the round trips: the stalls other clients saw. It asks for
 * SCHED_FIFO so that its own wake-up delay is not counted as a stall.
 *
 * Around each PING it also reads how long the server's main thread waited
 * for a CPU in this OS (/proc/<pid>/schedstat), so that a stall can be told
 * apart from the server being runnable but not scheduled. A vCPU that the
 * hypervisor stops is invisible here: that time counts as the server's. */
typedef struct bench_stall {
  const test_server *srv;
  pthread_t th;
  volatile int stop;
  int fifo_err;  /* 0 if the pinger ran SCHED_FIFO, else why not (errno) */
  int have_wait; /* the server's CPU wait could be read */
  uint64_t worst_ns;
  uint64_t pings;
  uint64_t over_1ms, over_5ms;
  /* The same with the server's CPU wait during each PING taken out. */
  uint64_t worst_nowait_ns, over_5ms_nowait;
  uint32_t bins[BENCH_STALL_BINS + 1];
} bench_stall;

void bench_stall_start(bench_stall *m, const test_server *s);
/* Stop the thread; the fields above hold the result. */
void bench_stall_stop(bench_stall *m);
/* The round trip below which a fraction q of the pings fell (to the bin's
 * upper edge, never above the worst). */
uint64_t bench_stall_quantile(const bench_stall *m, double q);
/* Print "  <phase>: pinger ..." with the count, p99.9, the pings over 1 and
 * 5 ms, the same without the server's CPU wait, and whether the pinger ran
 * SCHED_FIFO. */
void bench_stall_print(const bench_stall *m, const char *phase);

/* Print one result line: name, cachet rate, raw rate, ratio. */
void bench_report(const char *name, double cachet_ops_s, double raw_ops_s);

#endif
