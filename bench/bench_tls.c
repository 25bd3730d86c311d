/* What TLS costs: cachet over TLS against cachet over plaintext TCP, on the
 * same private redis-server (a TLS port and a plaintext port) in the same
 * run, unpipelined: get of a hit and set with 2 tags. The plaintext side is
 * the baseline here, since hiredis 0.14, the raw baseline of the other
 * benchmarks, has no TLS. Rounds alternate the two sides; the figures are
 * medians. Target: TLS get >= 0.85 of plaintext get. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define ROUNDS 7
#define OPS 5000

static char certs[256], ca[300];

static cachet *open_handle(const char *url, int tls) {
  cachet_options o;
  cachet_options_init(&o);
  o.url = url;
  o.prefix = "bench-tls:";
  if (tls)
    o.tls_ca_file = ca;
  cachet *c = NULL;
  if (cachet_open(&c, &o) != CACHET_OK || cachet_ping(c) != CACHET_OK) {
    fprintf(stderr, "bench_tls: %s: %s\n", url, cachet_last_error());
    exit(1);
  }
  return c;
}

static double run(cachet *c, int set) {
  static const char *const tags[] = {"t1", "t2"};
  char val[100];
  memset(val, 'v', sizeof val);
  uint64_t t0 = bench_ns();
  for (int i = 0; i < OPS; i++) {
    int rc;
    if (set) {
      char key[16];
      int n = snprintf(key, sizeof key, "k%d", i % 1000);
      rc = cachet_set_tags(c, key, (size_t)n, val, sizeof val, 600000, tags,
                           2);
    } else {
      void *v = NULL;
      size_t len = 0;
      rc = cachet_get(c, "hit", 3, &v, &len);
      cachet_free(v);
    }
    if (rc != CACHET_OK) {
      fprintf(stderr, "bench_tls: %s\n", cachet_last_error());
      exit(1);
    }
  }
  return OPS / ((double)(bench_ns() - t0) / 1e9);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void measure(const char *name, cachet *tls, cachet *plain, int set) {
  double t[ROUNDS], p[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    t[r] = run(tls, set);
    p[r] = run(plain, set);
  }
  qsort(t, ROUNDS, sizeof *t, cmp);
  qsort(p, ROUNDS, sizeof *p, cmp);
  printf("%-22s tls %9.0f ops/s   plaintext %9.0f ops/s   ratio %.3f\n",
         name, t[ROUNDS / 2], p[ROUNDS / 2], t[ROUNDS / 2] / p[ROUNDS / 2]);
}

int main(void) {
  test_server srv;
  int tls_port;
  if (test_tls_certs(certs, sizeof certs) != 0 ||
      test_tls_server_start(&srv, certs, "server", 0, &tls_port) != 0) {
    fprintf(stderr, "bench_tls: no TLS server (set CACHET_SOURCE_DIR)\n");
    return 1;
  }
  snprintf(ca, sizeof ca, "%s/ca.crt", certs);
  char turl[64], purl[64];
  snprintf(turl, sizeof turl, "rediss://127.0.0.1:%d", tls_port);
  snprintf(purl, sizeof purl, "redis://127.0.0.1:%d", srv.port);
  cachet *tls = open_handle(turl, 1), *plain = open_handle(purl, 0);
  if (cachet_set(plain, "hit", 3, "a value of some size", 20, 0) != CACHET_OK)
    return 1;
  printf("bench_tls: %d ops per round and side, %d rounds, TCP loopback\n",
         OPS, ROUNDS);
  measure("get (hit)", tls, plain, 0);
  measure("set with 2 tags", tls, plain, 1);
  cachet_close(tls);
  cachet_close(plain);
  test_server_stop(&srv);
  test_tls_remove(certs);
  return 0;
}
