/*
 * get_or_set: a cache-aside read with stampede protection.
 *
 * cachet_get_or_set() returns the cached value, or runs a loader to produce
 * it. When many callers miss the same key at once, only one of them runs the
 * loader (across every process that shares the Redis server); the others
 * wait for its value instead of all hitting the origin together.
 *
 * This program starts NTHREADS threads that ask for the same missing key at
 * the same moment, through one shared handle. The loader is slow on purpose
 * and counts its calls: it should run exactly once, and every thread should
 * get its value. Then it shows a hit (no load) and a failing loader
 * (CACHET_ELOADER, nothing cached).
 *
 *   CACHET_URL=redis://localhost:6379/0 ./get_or_set
 *
 * Exit status: 0 if the loader ran once and every caller got its value, 1 if
 * not, otherwise 2/3/4 as with the cachet CLI (configuration, connection or
 * server, integrity error).
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cachet.h>

#define NTHREADS 6
#define KEY "example:report:42"
#define KEY_FAILING "example:report:broken"

/* What the loader needs; passed to it as `ud`. */
typedef struct origin {
  atomic_int loads; /* How many times the loader ran. */
  int delay_ms;     /* How slow the "origin" is. */
  int fail;         /* Non-zero: the origin is down. */
} origin;

/* One thread's call and what it got back. */
typedef struct caller {
  cachet *c;
  origin *o;
  pthread_barrier_t *start;
  int status;
  char value[128];
} caller;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/*
 * The loader: stands in for a slow database query. On success it hands cachet
 * a malloc'd buffer (cachet takes ownership and frees it) and may lower the
 * TTL. Any non-zero return is a failure: nothing is cached and the caller
 * gets CACHET_ELOADER. It runs on the calling thread, while cachet keeps the
 * stampede lock's lease alive.
 */
static int load_report(void *ud, const void *key, size_t keylen, void **val,
                       size_t *len, int64_t *ttl_ms) {
  origin *o = ud;
  int n = atomic_fetch_add(&o->loads, 1) + 1;
  sleep_ms(o->delay_ms);
  if (o->fail)
    return -1;
  char *buf = malloc(128);
  if (buf == NULL)
    return -1;
  int w = snprintf(buf, 128, "report for %.*s (load #%d)", (int)keylen,
                   (const char *)key, n);
  *val = buf;
  *len = (size_t)w;
  if (*ttl_ms == 0 || *ttl_ms > 10 * 60 * 1000)
    *ttl_ms = 10 * 60 * 1000; /* Reports are never cached over 10 min. */
  return 0;
}

/* Fetch KEY through the cache, tagging the entry "reports". */
static int fetch(cachet *c, origin *o, const char *key, char *out,
                 size_t outlen) {
  const char *tags[] = {"reports"};
  void *val = NULL;
  size_t len = 0;
  int rc = cachet_get_or_set(c, key, strlen(key), load_report, o, 60 * 1000,
                             tags, 1, &val, &len);
  if (rc == CACHET_OK) {
    snprintf(out, outlen, "%.*s", (int)len, (const char *)val);
    cachet_free(val);
  }
  return rc;
}

static void *caller_main(void *arg) {
  caller *t = arg;
  pthread_barrier_wait(t->start); /* All threads miss at the same moment. */
  t->status = fetch(t->c, t->o, KEY, t->value, sizeof t->value);
  if (t->status < 0) /* The detail is per thread: print it here. */
    fprintf(stderr, "get_or_set: thread: %s: %s\n", cachet_strerror(t->status),
            cachet_last_error());
  return NULL;
}

/* Map an error status to the CLI's exit codes. */
static int exit_code(int status) {
  switch (status) {
  case CACHET_EINVAL:
  case CACHET_ECONFIG:
    return 2;
  case CACHET_ECORRUPT:
  case CACHET_EINTEGRITY:
  case CACHET_EVERSION:
    return 4;
  default:
    return status > 0 ? 1 : 3;
  }
}

static int report(const char *what, int status) {
  fprintf(stderr, "get_or_set: %s: %s: %s\n", what, cachet_strerror(status),
          cachet_last_error());
  return exit_code(status);
}

static int run(cachet *c) {
  int rc;
  if ((rc = cachet_ping(c)) != CACHET_OK)
    return report("ping", rc);

  /* Start from a miss. */
  rc = cachet_delete(c, KEY, strlen(KEY));
  if (rc < 0)
    return report("delete", rc);

  /* 1. A stampede: NTHREADS concurrent misses, one load. */
  origin o = {.delay_ms = 300};
  atomic_init(&o.loads, 0);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, NTHREADS);
  caller callers[NTHREADS];
  pthread_t tids[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    callers[i] = (caller){.c = c, .o = &o, .start = &start};
    if (pthread_create(&tids[i], NULL, caller_main, &callers[i]) != 0) {
      fprintf(stderr, "get_or_set: cannot start a thread\n");
      exit(3); /* The barrier would never open. */
    }
  }
  int code = 0;
  for (int i = 0; i < NTHREADS; i++) {
    pthread_join(tids[i], NULL);
    if (callers[i].status != CACHET_OK) {
      code = code != 0 ? code : exit_code(callers[i].status);
    } else if (strcmp(callers[i].value, callers[0].value) != 0) {
      fprintf(stderr, "get_or_set: thread %d got \"%s\", thread 0 \"%s\"\n", i,
              callers[i].value, callers[0].value);
      code = 1;
    }
  }
  pthread_barrier_destroy(&start);
  if (code != 0)
    return code;
  int loads = atomic_load(&o.loads);
  printf("%d concurrent callers, %d load(s): \"%s\"\n", NTHREADS, loads,
         callers[0].value);
  if (loads != 1) {
    fprintf(stderr, "get_or_set: the loader ran %d times, expected once\n",
            loads);
    return 1;
  }

  /* 2. Now it is cached: a hit, and the loader does not run. */
  char value[128];
  if ((rc = fetch(c, &o, KEY, value, sizeof value)) != CACHET_OK)
    return report("get_or_set (hit)", rc);
  printf("hit: \"%s\", still %d load(s)\n", value, atomic_load(&o.loads));
  if (atomic_load(&o.loads) != 1)
    return 1;

  /* 3. A failing origin: CACHET_ELOADER, and nothing is cached. */
  origin broken = {.delay_ms = 0, .fail = 1};
  atomic_init(&broken.loads, 0);
  rc = fetch(c, &broken, KEY_FAILING, value, sizeof value);
  if (rc != CACHET_ELOADER) {
    fprintf(stderr, "get_or_set: failing loader gave %s, expected %s\n",
            cachet_status_name(rc), cachet_status_name(CACHET_ELOADER));
    return rc < 0 ? exit_code(rc) : 1;
  }
  rc = cachet_exists(c, KEY_FAILING, strlen(KEY_FAILING));
  if (rc != CACHET_MISS)
    return rc < 0 ? report("exists", rc) : 1;
  printf("failing loader: %s, nothing cached\n",
         cachet_strerror(CACHET_ELOADER));

  /* Clean up: evict everything the example tagged. */
  const char *tags[] = {"reports"};
  uint64_t evicted = 0;
  if ((rc = cachet_evict_tags(c, tags, 1, &evicted)) != CACHET_OK)
    return report("evict_tags", rc);
  printf("evicted %" PRIu64 " report(s)\n", evicted);
  return 0;
}

int main(void) {
  cachet_options opts;
  cachet_options_init(&opts);
  opts.use_env = 1;
  /* Each call borrows one pooled connection for its whole duration, so a
   * pool smaller than the number of concurrent callers makes them queue. */
  opts.pool_size = NTHREADS + 2;

  cachet *c = NULL;
  int rc = cachet_open(&c, &opts);
  if (rc != CACHET_OK)
    return report("open", rc);
  int code = run(c);
  cachet_close(c);
  if (code == 0)
    printf("ok\n");
  return code;
}
