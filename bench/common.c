/* Shared benchmark helpers. */
/* sched_setaffinity and the CPU_* macros are GNU extensions. */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Priority of the pinger under SCHED_FIFO: above every normal thread, low
 * among real-time ones (kernel threads that must run first stay above). */
#define PINGER_FIFO_PRIORITY 5

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

/* Set the mask of every thread of `pid` (0: this process): `leader` for the
 * main thread, `rest` for the others. A pid's mask is only its main
 * thread's; the other threads (redis-server's bio and jemalloc ones, any a
 * library started here) have their own. Returns 0 or an errno. */
static int pin_threads(pid_t pid, const cpu_set_t *leader,
                       const cpu_set_t *rest) {
  char path[64];
  if (pid == 0)
    snprintf(path, sizeof path, "/proc/self/task");
  else
    snprintf(path, sizeof path, "/proc/%ld/task", (long)pid);
  DIR *d = opendir(path);
  if (d == NULL)
    return sched_setaffinity(pid, sizeof *leader, leader) == 0 ? 0 : errno;
  int err = 0;
  const struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    long tid = strtol(e->d_name, NULL, 10);
    const cpu_set_t *set = tid == (long)pid ? leader : rest;
    /* A thread may exit between readdir and here: not an error. */
    if (tid > 0 && sched_setaffinity((pid_t)tid, sizeof *set, set) != 0 &&
        errno != ESRCH)
      err = errno;
  }
  closedir(d);
  return err;
}

/* "0", "0,2,3": the CPUs of a set, for the placement line. */
static void cpu_list(const cpu_set_t *set, char *buf, size_t size) {
  size_t n = 0;
  buf[0] = '\0';
  for (int cpu = 0; cpu < CPU_SETSIZE && n < size; cpu++)
    if (CPU_ISSET(cpu, set))
      n += (size_t)snprintf(buf + n, size - n, "%s%d", n ? "," : "", cpu);
}

int bench_place(const test_server *s, int pin) {
  if (!pin) {
    printf("placement: not pinned (--no-pin)\n");
    return 0;
  }
  cpu_set_t all, server, bench;
  if (sched_getaffinity(0, sizeof all, &all) != 0) {
    printf("placement: not pinned: sched_getaffinity: %s\n", strerror(errno));
    return 0;
  }
  int last = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
    if (CPU_ISSET(cpu, &all))
      last = cpu;
  if (CPU_COUNT(&all) < 2) {
    printf("placement: not pinned: this process may run on one CPU only\n");
    return 0;
  }
  CPU_ZERO(&server);
  CPU_SET(last, &server);
  bench = all;
  CPU_CLR(last, &bench);
  /* Only the server's main thread serves clients. Its background threads
   * (lazy free, jemalloc's purge) run for milliseconds at a time: on the
   * server's CPU they would preempt it, so they go with the bench. */
  int err = pin_threads(s->pid, &server, &bench);
  if (err == 0)
    err = pin_threads(0, &bench, &bench);
  if (err != 0) {
    /* Half a placement would skew the run more than none: undo it. */
    pin_threads(s->pid, &all, &all);
    pin_threads(0, &all, &all);
    printf("placement: not pinned: sched_setaffinity: %s\n", strerror(err));
    return 0;
  }
  char list[256];
  cpu_list(&bench, list, sizeof list);
  printf("placement: redis-server main thread on CPU %d; its other threads "
         "and the bench on CPU%s %s\n",
         last, CPU_COUNT(&bench) > 1 ? "s" : "", list);
  return 1;
}

/* Nanoseconds the thread behind `fd` (/proc/<pid>/schedstat: run time, run
 * delay, timeslices) has spent runnable but not running; 0 if unreadable. */
static uint64_t cpu_wait_ns(int fd) {
  char buf[128];
  ssize_t n = fd < 0 ? -1 : pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  unsigned long long run, wait;
  return sscanf(buf, "%llu %llu", &run, &wait) == 2 ? wait : 0;
}

static void *stall_loop(void *arg) {
  bench_stall *m = arg;
  /* Under SCHED_FIFO the pinger runs as soon as its reply or its timer
   * arrives, instead of waiting behind the evicting client for a core. */
  struct sched_param sp = {.sched_priority = PINGER_FIFO_PRIORITY};
  m->fifo_err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/schedstat", (long)m->srv->pid);
  int fd = open(path, O_RDONLY);
  m->have_wait = fd >= 0;
  redisContext *c = test_redis(m->srv);
  while (!m->stop) {
    uint64_t w0 = cpu_wait_ns(fd);
    uint64_t t0 = bench_ns();
    redisReply *r = redisCommand(c, "PING");
    uint64_t dt = bench_ns() - t0;
    uint64_t w1 = cpu_wait_ns(fd);
    uint64_t waited = w1 > w0 ? w1 - w0 : 0;
    if (r == NULL)
      break;
    freeReplyObject(r);
    if (dt > m->worst_ns)
      m->worst_ns = dt;
    m->over_1ms += dt > 1000000u;
    m->over_5ms += dt > 5000000u;
    /* The wait may straddle the PING's edges: never below zero. */
    uint64_t busy = waited < dt ? dt - waited : 0;
    if (busy > m->worst_nowait_ns)
      m->worst_nowait_ns = busy;
    m->over_5ms_nowait += busy > 5000000u;
    uint64_t bin = dt / BENCH_STALL_BIN_NS;
    m->bins[bin < BENCH_STALL_BINS ? bin : BENCH_STALL_BINS]++;
    m->pings++;
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
  }
  if (fd >= 0)
    close(fd);
  redisFree(c);
  return NULL;
}

void bench_stall_start(bench_stall *m, const test_server *s) {
  memset(m, 0, sizeof *m);
  m->srv = s;
  if (pthread_create(&m->th, NULL, stall_loop, m) != 0) {
    fprintf(stderr, "bench: cannot start the stall monitor\n");
    exit(1);
  }
}

void bench_stall_stop(bench_stall *m) {
  m->stop = 1;
  pthread_join(m->th, NULL);
}

uint64_t bench_stall_quantile(const bench_stall *m, double q) {
  if (m->pings == 0)
    return 0;
  /* The rank of the ping at quantile q, counted from 1. */
  uint64_t rank = (uint64_t)(q * (double)m->pings);
  if ((double)rank < q * (double)m->pings)
    rank++;
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (uint32_t i = 0; i < BENCH_STALL_BINS; i++) {
    seen += m->bins[i];
    if (seen >= rank) {
      uint64_t edge = (uint64_t)(i + 1) * BENCH_STALL_BIN_NS;
      return edge < m->worst_ns ? edge : m->worst_ns;
    }
  }
  return m->worst_ns;
}

void bench_stall_print(const bench_stall *m, const char *phase) {
  char sched[128];
  if (m->fifo_err == 0)
    snprintf(sched, sizeof sched, "SCHED_FIFO priority %d",
             PINGER_FIFO_PRIORITY);
  else
    snprintf(sched, sizeof sched,
             "normal scheduling, SCHED_FIFO refused: %s; its own wake-up "
             "delays count as stalls",
             strerror(m->fifo_err));
  printf("  %s: pinger %llu pings, p99.9 %.2f ms, %llu over 1 ms, %llu over "
         "5 ms (%s)\n",
         phase, (unsigned long long)m->pings,
         (double)bench_stall_quantile(m, 0.999) / 1e6,
         (unsigned long long)m->over_1ms, (unsigned long long)m->over_5ms,
         sched);
  if (m->have_wait)
    printf("  %s: less the server's waits for a CPU in this OS: worst %.2f ms, "
           "%llu pings over 5 ms\n",
           phase, (double)m->worst_nowait_ns / 1e6,
           (unsigned long long)m->over_5ms_nowait);
}

void bench_report(const char *name, double cachet_ops_s, double raw_ops_s) {
  printf("%-28s cachet %10.0f ops/s   raw %10.0f ops/s   ratio %.3f\n", name,
         cachet_ops_s, raw_ops_s, raw_ops_s > 0 ? cachet_ops_s / raw_ops_s : 0);
}
