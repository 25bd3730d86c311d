/* Many threads on one handle: GET hits from 1 to 64 threads, each for a
 * fixed time, on one private redis-server over loopback TCP, in the same
 * run:
 *   raw        hiredis, one connection per thread (the baseline);
 *   pool 8     one cachet handle on its default pool;
 *   pool = N   one cachet handle with a connection per thread;
 *   mux 2      one cachet handle with 2 multiplexed connections
 *              (auto-pipelining, cachet_options.multiplex).
 * Each figure is the median of ROUNDS rounds; the modes of one thread count
 * alternate within a round, so a slow spell of the machine hits them alike.
 * Goals: pool 8 at 16 and 32 threads >= 0.95 of pool 8 at 8 threads; mux 2
 * at 32 threads >= 1.5 of raw at 32. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define ROUNDS 5
#define MAX_THREADS 64
#define KEY "hit"
#define VALUE "a value of some size, about as large as a short JSON object"

enum mode { RAW, POOL8, POOLN, MUX2, NMODES };
static const char *const mode_name[NMODES] = {"raw", "pool 8", "pool = N",
                                              "mux 2"};

static test_server srv;
static int run_ms = 1000;
static atomic_int go, stop;
static char raw_key[128]; /* the value's Redis key, for the raw GET */

typedef struct worker {
  pthread_t th;
  enum mode mode;
  cachet *c;
  unsigned long long ops;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  redisContext *rc = NULL;
  if (w->mode == RAW) {
    rc = redisConnect("127.0.0.1", srv.port);
    if (rc == NULL || rc->err) {
      fprintf(stderr, "bench_threads: raw connect failed\n");
      exit(1);
    }
  }
  while (!atomic_load(&go))
    ;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    if (w->mode == RAW) {
      redisReply *r = redisCommand(rc, "GET %s", raw_key);
      if (r == NULL || r->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "bench_threads: raw GET failed\n");
        exit(1);
      }
      freeReplyObject(r);
    } else {
      void *v = NULL;
      size_t len = 0;
      if (cachet_get(w->c, KEY, 3, &v, &len) != CACHET_OK) {
        fprintf(stderr, "bench_threads: %s\n", cachet_last_error());
        exit(1);
      }
      cachet_free(v);
    }
    w->ops++;
  }
  redisFree(rc);
  return NULL;
}

static cachet *open_handle(int pool, int mux) {
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
  cachet_options o;
  cachet_options_init(&o);
  o.url = url;
  o.prefix = "bench-threads:";
  o.pool_size = pool;
  o.multiplex = mux;
  cachet *c = NULL;
  if (cachet_open(&c, &o) != CACHET_OK || cachet_ping(c) != CACHET_OK) {
    fprintf(stderr, "bench_threads: %s\n", cachet_last_error());
    exit(1);
  }
  return c;
}

/* Operations per second of `n` threads in `mode`. */
static double run(enum mode mode, int n) {
  cachet *c = NULL;
  if (mode == POOL8)
    c = open_handle(8, 0);
  else if (mode == POOLN)
    c = open_handle(n, 0);
  else if (mode == MUX2)
    c = open_handle(1, 2);
  static worker w[MAX_THREADS];
  atomic_store(&go, 0);
  atomic_store(&stop, 0);
  for (int i = 0; i < n; i++) {
    w[i] = (worker){.mode = mode, .c = c};
    if (pthread_create(&w[i].th, NULL, work, &w[i]) != 0) {
      fprintf(stderr, "bench_threads: cannot start a thread\n");
      exit(1);
    }
  }
  struct timespec warm = {0, 50 * 1000000L};
  nanosleep(&warm, NULL); /* every raw connection is up */
  atomic_store(&go, 1);
  uint64_t t0 = bench_ns();
  struct timespec ts = {run_ms / 1000, (run_ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  atomic_store(&stop, 1);
  uint64_t dt = bench_ns() - t0;
  unsigned long long ops = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(w[i].th, NULL);
    ops += w[i].ops;
  }
  cachet_close(c);
  return (double)ops / ((double)dt / 1e9);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int only_threads = 0, only_mode = -1;
  for (int i = 1; i < argc; i++)
    if (strncmp(argv[i], "--ms=", 5) == 0)
      run_ms = atoi(argv[i] + 5);
    else if (strncmp(argv[i], "--threads=", 10) == 0)
      only_threads = atoi(argv[i] + 10);
    else if (strncmp(argv[i], "--mode=", 7) == 0)
      only_mode = atoi(argv[i] + 7);
    else {
      fprintf(stderr,
              "usage: bench_threads [--ms=MS] [--threads=N] "
              "[--mode=0..%d]\n"
              "  --threads, --mode: one run only (for perf); modes: "
              "0 raw, 1 pool 8, 2 pool = N, 3 mux 2\n",
              NMODES - 1);
      return 2;
    }
  if (run_ms < 10)
    run_ms = 10;
  bench_server_start(&srv);
  cachet *c = open_handle(1, 0);
  if (cachet_set(c, KEY, 3, VALUE, sizeof VALUE - 1, 0) != CACHET_OK) {
    fprintf(stderr, "bench_threads: %s\n", cachet_last_error());
    return 1;
  }
  cachet_close(c);
  redisContext *rc = test_redis(&srv);
  redisReply *r = redisCommand(rc, "KEYS bench-threads:*v:" KEY);
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 1) {
    fprintf(stderr, "bench_threads: cannot find the value's key\n");
    return 1;
  }
  snprintf(raw_key, sizeof raw_key, "%s", r->element[0]->str);
  freeReplyObject(r);
  redisFree(rc);
  if (only_threads > 0 && only_threads <= MAX_THREADS && only_mode >= 0 &&
      only_mode < NMODES) {
    printf("%s, %d threads: %.0f ops/s\n", mode_name[only_mode], only_threads,
           run((enum mode)only_mode, only_threads));
    test_server_stop(&srv);
    return 0;
  }
  static const int threads[] = {1, 8, 16, 32, 64};
  enum { NT = sizeof threads / sizeof *threads };
  double med[NT][NMODES];
  printf("bench_threads: GET of a hit, %d ms per run, median of %d rounds, "
         "TCP loopback, %d-byte value\n",
         run_ms, ROUNDS, (int)sizeof VALUE - 1);
  printf("%8s", "threads");
  for (int m = 0; m < NMODES; m++)
    printf(" %12s", mode_name[m]);
  printf("   (ops/s)\n");
  for (int t = 0; t < NT; t++) {
    double x[NMODES][ROUNDS];
    for (int k = 0; k < ROUNDS; k++)
      for (int m = 0; m < NMODES; m++)
        x[m][k] = run((enum mode)m, threads[t]);
    printf("%8d", threads[t]);
    for (int m = 0; m < NMODES; m++) {
      qsort(x[m], ROUNDS, sizeof **x, cmp);
      med[t][m] = x[m][ROUNDS / 2];
      printf(" %12.0f", med[t][m]);
    }
    printf("\n");
  }
  /* threads[1] is 8, [2] 16, [3] 32. */
  printf("pool 8: 16 threads / 8 threads %.3f (goal >= 0.95)\n",
         med[2][POOL8] / med[1][POOL8]);
  printf("pool 8: 32 threads / 8 threads %.3f (goal >= 0.95)\n",
         med[3][POOL8] / med[1][POOL8]);
  bench_report("32 threads: mux 2 vs raw", med[3][MUX2], med[3][RAW]);
  bench_report("32 threads: pool 8 vs raw", med[3][POOL8], med[3][RAW]);
  test_server_stop(&srv);
  return 0;
}
