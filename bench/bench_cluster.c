/* Cluster throughput: set-with-tags and get with several threads in flight,
 * on 3 masters next to 1 server, started privately in the same run.
 *
 * Each thread has its own keys and loops for a fixed count; the handle's
 * pool has one connection per thread. The cluster runs on the same machine
 * as the single server, so the ratio shows routing overhead and the spread
 * over three server processes, not network effects. Measures and prints;
 * never fails on a number. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "common.h"

/* bench/CMakeLists.txt links only tests/harness.c; the cluster harness is
 * one more translation unit of the same tests, compiled in here. */
#include "cluster_harness.c"

#define THREADS 4
#define OPS 20000
#define VALUE_LEN 100

typedef struct job {
  cachet *c;
  int id;
  int get; /* 0: set with a tag, 1: get */
  int errors;
} job;

static void *worker(void *p) {
  job *j = p;
  char key[32], val[VALUE_LEN];
  memset(val, 'x', sizeof val);
  const char *tags[] = {"bench"};
  for (int i = 0; i < OPS; i++) {
    int n = snprintf(key, sizeof key, "t%d:k%d", j->id, i % 5000);
    int rc;
    if (j->get) {
      void *out = NULL;
      size_t len = 0;
      rc = cachet_get(j->c, key, (size_t)n, &out, &len);
      cachet_free(out);
    } else {
      rc = cachet_set_tags(j->c, key, (size_t)n, val, sizeof val, 600000, tags,
                           1);
    }
    if (rc != CACHET_OK)
      j->errors++;
  }
  return NULL;
}

/* ops/s of THREADS threads doing OPS operations each. */
static double measure(cachet *c, int get) {
  pthread_t th[THREADS];
  job jobs[THREADS];
  uint64_t t0 = bench_ns();
  for (int i = 0; i < THREADS; i++) {
    jobs[i] = (job){c, i, get, 0};
    pthread_create(&th[i], NULL, worker, &jobs[i]);
  }
  int errors = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    errors += jobs[i].errors;
  }
  uint64_t ns = bench_ns() - t0;
  if (errors > 0)
    printf("  (%d errors: %s)\n", errors, cachet_last_error());
  return (double)THREADS * OPS / ((double)ns / 1e9);
}

static void report(const char *name, double cluster, double single) {
  printf("%-28s cluster %9.0f ops/s   single %9.0f ops/s   ratio %.3f\n", name,
         cluster, single, single > 0 ? cluster / single : 0);
}

int main(void) {
  test_server srv;
  bench_server_start(&srv);
  test_cluster cl;
  if (test_cluster_start(&cl, 3, 0) != 0) {
    fprintf(stderr, "bench_cluster: cannot start a cluster\n");
    test_server_stop(&srv);
    return 1;
  }
  cachet_options o;
  char url[64], surl[64];
  test_cluster_options(&cl, &o, "bench:", url, sizeof url);
  o.pool_size = THREADS;
  cachet *cc = NULL, *sc = NULL;
  int rc = cachet_open(&cc, &o);
  /* The single server over TCP too, for a like-for-like comparison. */
  cachet_options_init(&o);
  snprintf(surl, sizeof surl, "redis://127.0.0.1:%d", srv.port);
  o.url = surl;
  o.prefix = "bench:";
  o.pool_size = THREADS;
  if (rc == CACHET_OK)
    rc = cachet_open(&sc, &o);
  if (rc != CACHET_OK) {
    fprintf(stderr, "bench_cluster: %s\n", cachet_last_error());
    return 1;
  }
  printf("%d threads x %d ops, %d-byte values\n", THREADS, OPS, VALUE_LEN);
  double cs = measure(cc, 0), ss = measure(sc, 0);
  report("set_tags (1 tag)", cs, ss);
  double cg = measure(cc, 1), sg = measure(sc, 1);
  report("get (hit)", cg, sg);
  cachet_close(cc);
  cachet_close(sc);
  test_cluster_stop(&cl);
  test_server_stop(&srv);
  return 0;
}
