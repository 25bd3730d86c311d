/*
 * near_cache: hot keys from process memory, kept coherent by Redis.
 *
 * It opens two handles on the same namespace: a reader with a near cache
 * (cachet_options.near_cache_bytes) and a writer without one, standing for
 * another process. The reader reads one key many times (from memory after
 * the first read), the writer changes it, and the reader sees the change
 * as soon as Redis's invalidation reaches it. The reader's own write is
 * seen at once. The near cache's counters are printed at the end.
 *
 *   CACHET_URL=redis://localhost:6379/0 ./near_cache
 *
 * Exit status: 0 if every step behaved as documented, 1 if not, otherwise
 * 2/3/4 as with the cachet CLI (configuration, connection or server,
 * integrity error).
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cachet.h>

#define KEY "example:near:config"
#define READS 100000

static int report(const char *what, int status) {
  const char *detail = cachet_last_error();
  fprintf(stderr, "near_cache: %s: %s%s%s\n", what, cachet_strerror(status),
          detail[0] != '\0' ? ": " : "", detail);
  if (status == CACHET_EINVAL || status == CACHET_ECONFIG)
    return 2;
  if (status == CACHET_ECORRUPT || status == CACHET_EINTEGRITY ||
      status == CACHET_EVERSION)
    return 4;
  return status > 0 ? 1 : 3;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 1 if `key` holds `want`, 0 if it holds something else, or an error. */
static int holds(cachet *c, const char *want, int *err) {
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, KEY, strlen(KEY), &v, &n);
  *err = rc == CACHET_OK || rc == CACHET_MISS ? 0 : rc;
  int same = rc == CACHET_OK && n == strlen(want) && memcmp(v, want, n) == 0;
  cachet_free(v);
  return same;
}

/* Read until `want` shows, for at most 5 s: the time an invalidation takes
 * to arrive is short, but not zero. */
static int wait_for(cachet *c, const char *want, const char *what) {
  double t0 = now_s();
  for (int i = 0; i < 5000; i++) {
    int err;
    if (holds(c, want, &err)) {
      printf("%s: seen after %.2f ms\n", what, (now_s() - t0) * 1e3);
      return 0;
    }
    if (err != 0)
      return report("get", err);
    sleep_ms(1);
  }
  fprintf(stderr, "near_cache: %s: not seen within 5 s\n", what);
  return 1;
}

static int run(cachet *reader, cachet *writer) {
  int rc;
  /* The near cache serves copies once its invalidation feed is subscribed;
   * until then every get goes to Redis. cachet_health_check says which. */
  cachet_health h = {0};
  for (int i = 0; i < 500 && !h.tracking; i++) {
    if ((rc = cachet_health_check(reader, &h)) != CACHET_OK)
      return report("health", rc);
    if (!h.tracking)
      sleep_ms(10);
  }
  if (!h.tracking) {
    fprintf(stderr, "near_cache: tracking is not active: %s\n", h.message);
    return 1;
  }
  printf("near cache on, tracking active\n");

  if ((rc = cachet_set(writer, KEY, strlen(KEY), "v1", 2, 60000)) != 0)
    return report("set", rc);
  int code = wait_for(reader, "v1", "the first value");
  if (code != 0)
    return code;
  double t0 = now_s();
  for (int i = 0; i < READS; i++) {
    int err;
    if (!holds(reader, "v1", &err))
      return err != 0 ? report("get", err) : 1;
  }
  printf("%d gets in %.1f ms\n", READS, (now_s() - t0) * 1e3);

  /* Another process's write reaches the reader's copy... */
  if ((rc = cachet_set(writer, KEY, strlen(KEY), "v2", 2, 60000)) != 0)
    return report("set", rc);
  if ((code = wait_for(reader, "v2", "another handle's write")) != 0)
    return code;
  /* ...and the reader's own write is seen by its very next read. */
  if ((rc = cachet_set(reader, KEY, strlen(KEY), "v3", 2, 60000)) != 0)
    return report("set", rc);
  int err;
  if (!holds(reader, "v3", &err)) {
    fprintf(stderr, "near_cache: own write not seen at once\n");
    return err != 0 ? report("get", err) : 1;
  }
  printf("own write: seen at once\n");

  cachet_metrics m;
  cachet_metrics_snapshot(reader, &m);
  printf("near_hits %" PRIu64 ", near_misses %" PRIu64
         ", near_invalidations %" PRIu64 ", near_bytes %" PRIu64 "\n",
         m.near_hits, m.near_misses, m.near_invalidations, m.near_bytes);
  if (m.near_hits < READS / 2) {
    fprintf(stderr, "near_cache: most gets should have come from memory\n");
    return 1;
  }
  rc = cachet_delete(writer, KEY, strlen(KEY));
  return rc < 0 ? report("delete", rc) : 0;
}

int main(void) {
  cachet_options opts;
  cachet_options_init(&opts);
  opts.use_env = 1;
  cachet *writer = NULL, *reader = NULL;
  int rc = cachet_open(&writer, &opts);
  if (rc == CACHET_OK) {
    /* 16 MiB of keys and values at most; copies live 60 s at most. */
    opts.near_cache_bytes = 16u << 20;
    rc = cachet_open(&reader, &opts);
  }
  int code = rc != CACHET_OK ? report("open", rc) : run(reader, writer);
  cachet_close(reader);
  cachet_close(writer);
  if (code == 0)
    printf("ok\n");
  return code;
}
