/* get_or_set against a private redis-server: one loader per key across
 * threads and processes, lease renewal, takeover after a holder dies or
 * fails, the bounded wait, and errors that never become loads.
 *
 * Threads and child processes never call cmocka's asserts (they longjmp to
 * the main thread); they record what they saw for the main thread. */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "keys.h"

static cachet *open_with(const char *prefix, int lease_ms, int wait_ms) {
  cachet_options o;
  test_options(test_group_server(), &o, prefix);
  o.lock_lease_ms = lease_ms;
  o.fetch_wait_ms = wait_ms;
  o.pool_size = 8;
  cachet *c = NULL;
  if (cachet_open(&c, &o) != CACHET_OK) {
    fprintf(stderr, "cachet_open: %s\n", cachet_last_error());
    abort();
  }
  return c;
}

static long long raw_int(const char *fmt, ...) {
  redisContext *r = test_redis(test_group_server());
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  long long v = LLONG_MIN;
  if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
    v = rep->integer;
  if (rep != NULL)
    freeReplyObject(rep);
  redisFree(r);
  return v;
}

/* A loader whose behaviour the test sets. */
typedef struct loader_ctl {
  const char *value;       /* what it returns */
  int fail;                /* non-zero: return this instead */
  int sleep_ms;            /* before returning */
  atomic_int calls;        /* in-process count */
  const char *counter;     /* if set, INCR this Redis key (cross-process) */
  int started_fd;          /* if >= 0, write a byte here when called */
  cachet *wait_for_waiter; /* if set, hold until it counts a stampede wait */
  int64_t set_ttl;         /* if > 0, lower the TTL to this */
} loader_ctl;

static void loader_ctl_init(loader_ctl *l, const char *value) {
  memset(l, 0, sizeof *l);
  l->value = value;
  l->started_fd = -1;
}

static int loader(void *ud, const void *key, size_t keylen, void **val,
                  size_t *len, int64_t *ttl_ms) {
  (void)key;
  (void)keylen;
  loader_ctl *l = ud;
  atomic_fetch_add(&l->calls, 1);
  if (l->counter != NULL)
    (void)raw_int("INCR %s", l->counter);
  if (l->started_fd >= 0) {
    ssize_t w = write(l->started_fd, "s", 1);
    (void)w;
  }
  if (l->wait_for_waiter != NULL) {
    for (int i = 0; i < 1000; i++) {
      cachet_metrics m;
      cachet_metrics_snapshot(l->wait_for_waiter, &m);
      if (m.stampede_waits > 0)
        break;
      test_sleep_ms(10);
    }
  }
  if (l->sleep_ms > 0)
    test_sleep_ms(l->sleep_ms);
  if (l->fail != 0)
    return l->fail;
  if (l->set_ttl > 0)
    *ttl_ms = l->set_ttl;
  size_t n = strlen(l->value);
  char *b = malloc(n);
  if (b == NULL && n > 0)
    return -1;
  memcpy(b, l->value, n);
  *val = b;
  *len = n;
  return 0;
}

static int must_not_load(void *ud, const void *key, size_t keylen, void **val,
                         size_t *len, int64_t *ttl_ms) {
  (void)key;
  (void)keylen;
  (void)val;
  (void)len;
  (void)ttl_ms;
  atomic_fetch_add((atomic_int *)ud, 1);
  return 99;
}

static void test_hit_returns_cached_value_without_loading(void **state) {
  (void)state;
  cachet *c = open_with("st1:", 0, 0);
  assert_int_equal(cachet_set(c, "k", 1, "cached", 6, 0), CACHET_OK);
  atomic_int calls = 0;
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(cachet_get_or_set(c, "k", 1, must_not_load, &calls, 1000,
                                     NULL, 0, &v, &n),
                   CACHET_OK);
  assert_int_equal(n, 6);
  assert_memory_equal(v, "cached", 6);
  assert_int_equal(((char *)v)[6], '\0');
  assert_int_equal(atomic_load(&calls), 0);
  cachet_free(v);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.hits, 1);
  assert_int_equal(m.misses, 0);
  cachet_close(c);
}

static void test_miss_loads_caches_with_tags_and_releases(void **state) {
  (void)state;
  cachet *c = open_with("st2:", 0, 0);
  loader_ctl l;
  loader_ctl_init(&l, "loaded");
  const char *tags[] = {"red", "blue"};
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(
      cachet_get_or_set(c, "k", 1, loader, &l, 60000, tags, 2, &v, &n),
      CACHET_OK);
  assert_int_equal(n, 6);
  assert_memory_equal(v, "loaded", 6);
  assert_int_equal(((char *)v)[6], '\0');
  cachet_free(v);
  assert_int_equal(atomic_load(&l.calls), 1);

  /* Cached with its TTL and tags; the stampede lock is gone. */
  v = NULL;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_OK);
  assert_memory_equal(v, "loaded", 6);
  cachet_free(v);
  int64_t ttl = 0;
  assert_int_equal(cachet_ttl(c, "k", 1, &ttl), CACHET_OK);
  assert_true(ttl > 0 && ttl <= 60000);
  unsigned b = cachet_bucket("k", 1);
  assert_int_equal(raw_int("SCARD st2:{%02x}m:k", b), 2);
  assert_int_equal(raw_int("ZCARD st2:{%02x}t:red", b), 1);
  assert_int_equal(raw_int("EXISTS st2:{%02x}s:k", b), 0);

  /* A second call is a hit. */
  assert_int_equal(
      cachet_get_or_set(c, "k", 1, loader, &l, 60000, tags, 2, &v, &n),
      CACHET_OK);
  cachet_free(v);
  assert_int_equal(atomic_load(&l.calls), 1);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.misses, 1);
  assert_int_equal(m.stampede_waits, 0);
  cachet_close(c);
}

static void test_loader_may_lower_ttl_but_not_raise_it(void **state) {
  (void)state;
  cachet *c = open_with("st3:", 0, 0);
  loader_ctl l;
  loader_ctl_init(&l, "x");
  l.set_ttl = 5000;
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(
      cachet_get_or_set(c, "low", 3, loader, &l, 60000, NULL, 0, &v, &n),
      CACHET_OK);
  cachet_free(v);
  int64_t ttl = 0;
  assert_int_equal(cachet_ttl(c, "low", 3, &ttl), CACHET_OK);
  assert_true(ttl > 0 && ttl <= 5000);

  l.set_ttl = 120000;
  v = (void *)1;
  assert_int_equal(
      cachet_get_or_set(c, "high", 4, loader, &l, 60000, NULL, 0, &v, &n),
      CACHET_ELOADER);
  assert_null(v);
  assert_non_null(strstr(cachet_last_error(), "ttl"));
  assert_int_equal(cachet_exists(c, "high", 4), CACHET_MISS);
  cachet_close(c);
}

static void test_loader_failure_caches_nothing_and_releases(void **state) {
  (void)state;
  cachet *c = open_with("st4:", 60000, 0);
  loader_ctl l;
  loader_ctl_init(&l, "never");
  l.fail = 7;
  void *v = (void *)1;
  size_t n = 3;
  assert_int_equal(
      cachet_get_or_set(c, "k", 1, loader, &l, 1000, NULL, 0, &v, &n),
      CACHET_ELOADER);
  assert_null(v);
  assert_int_equal(n, 0);
  assert_non_null(strstr(cachet_last_error(), "7"));
  assert_int_equal(cachet_exists(c, "k", 1), CACHET_MISS);
  unsigned b = cachet_bucket("k", 1);
  /* Released at once, not left to its (one minute) lease. */
  assert_int_equal(raw_int("EXISTS st4:{%02x}s:k", b), 0);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.errors[-CACHET_ELOADER], 1);
  cachet_close(c);
}

static void test_redis_errors_are_returned_not_loaded(void **state) {
  (void)state;
  cachet *c = open_with("st5:", 0, 0);
  unsigned b = cachet_bucket("h", 1);
  assert_int_equal(raw_int("HSET st5:{%02x}v:h f v", b), 1);
  atomic_int calls = 0;
  void *v = NULL;
  size_t n;
  assert_int_equal(
      cachet_get_or_set(c, "h", 1, must_not_load, &calls, 0, NULL, 0, &v, &n),
      CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "WRONGTYPE"));

  /* A value that is not an envelope is corrupt, not a miss to reload. */
  b = cachet_bucket("junk", 4);
  redisContext *r = test_redis(test_group_server());
  freeReplyObject(redisCommand(r, "SET st5:{%02x}v:junk garbage", b));
  redisFree(r);
  assert_int_equal(cachet_get_or_set(c, "junk", 4, must_not_load, &calls, 0,
                                     NULL, 0, &v, &n),
                   CACHET_ECORRUPT);

  cachet *dead = test_open_unreachable();
  assert_int_equal(cachet_get_or_set(dead, "k", 1, must_not_load, &calls, 0,
                                     NULL, 0, &v, &n),
                   CACHET_ECONN);
  assert_int_equal(atomic_load(&calls), 0);
  assert_int_equal(
      cachet_get_or_set(c, "k", 1, must_not_load, &calls, -1, NULL, 0, &v, &n),
      CACHET_EINVAL);
  assert_int_equal(
      cachet_get_or_set(c, "", 0, must_not_load, &calls, 0, NULL, 0, &v, &n),
      CACHET_EINVAL);
  assert_int_equal(atomic_load(&calls), 0);
  cachet_close(dead);
  cachet_close(c);
}

/* Many concurrent callers on one cold key. */
typedef struct caller {
  cachet *c;
  loader_ctl *l;
  const char *key;
  pthread_barrier_t *go;
  int rc;
  char got[32];
} caller;

static void *call_get_or_set(void *p) {
  caller *k = p;
  if (k->go != NULL)
    pthread_barrier_wait(k->go);
  void *v = NULL;
  size_t n = 0;
  k->rc = cachet_get_or_set(k->c, k->key, strlen(k->key), loader, k->l, 60000,
                            NULL, 0, &v, &n);
  if (k->rc == CACHET_OK) {
    snprintf(k->got, sizeof k->got, "%.*s", (int)n, (char *)v);
    cachet_free(v);
  }
  return NULL;
}

#define NCALLERS 32

static void test_concurrent_threads_load_cold_key_once(void **state) {
  (void)state;
  cachet *c = open_with("st6:", 1000, 30000);
  loader_ctl l;
  loader_ctl_init(&l, "once");
  l.sleep_ms = 300;
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, NCALLERS);
  caller k[NCALLERS];
  pthread_t th[NCALLERS];
  for (int i = 0; i < NCALLERS; i++) {
    k[i] = (caller){c, &l, "cold", &go, -100, ""};
    assert_int_equal(pthread_create(&th[i], NULL, call_get_or_set, &k[i]), 0);
  }
  for (int i = 0; i < NCALLERS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&go);
  for (int i = 0; i < NCALLERS; i++) {
    assert_int_equal(k[i].rc, CACHET_OK);
    assert_string_equal(k[i].got, "once");
  }
  assert_int_equal(atomic_load(&l.calls), 1);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_true(m.stampede_waits >= 1);
  cachet_close(c);
}

#define NPROCS 4
#define THREADS_PER_PROC (NCALLERS / NPROCS)

/* A child process: its own handle, THREADS_PER_PROC concurrent callers,
 * started when the parent closes `gate`. Exits 0 if all got the value. */
static void child_callers(int gate) {
  char b;
  while (read(gate, &b, 1) > 0)
    ;
  cachet *c = open_with("st7:", 1000, 30000);
  loader_ctl l;
  loader_ctl_init(&l, "shared");
  l.sleep_ms = 300;
  l.counter = "st7:loads";
  caller k[THREADS_PER_PROC];
  pthread_t th[THREADS_PER_PROC];
  for (int i = 0; i < THREADS_PER_PROC; i++) {
    k[i] = (caller){c, &l, "cold", NULL, -100, ""};
    if (pthread_create(&th[i], NULL, call_get_or_set, &k[i]) != 0)
      _exit(3);
  }
  int bad = 0;
  for (int i = 0; i < THREADS_PER_PROC; i++) {
    pthread_join(th[i], NULL);
    if (k[i].rc != CACHET_OK || strcmp(k[i].got, "shared") != 0)
      bad++;
  }
  cachet_close(c);
  _exit(bad == 0 ? 0 : 1);
}

static void test_concurrent_processes_load_cold_key_once(void **state) {
  (void)state;
  int gate[2];
  assert_int_equal(pipe(gate), 0);
  pid_t pids[NPROCS];
  for (int i = 0; i < NPROCS; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      close(gate[1]);
      child_callers(gate[0]);
    }
  }
  close(gate[0]);
  close(gate[1]); /* all children start now */
  for (int i = 0; i < NPROCS; i++) {
    test_expect_child_ok(pids[i]);
  }
  redisContext *r = test_redis(test_group_server());
  test_expect_string(r, "1", "GET st7:loads");
  redisFree(r);
}

static void test_killed_holder_is_taken_over_by_waiter(void **state) {
  (void)state;
  int started[2];
  assert_int_equal(pipe(started), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(started[0]);
    cachet *c = open_with("st8:", 1000, 30000);
    loader_ctl l;
    loader_ctl_init(&l, "from-holder");
    l.started_fd = started[1];
    l.sleep_ms = 600000; /* killed long before */
    void *v;
    size_t n;
    int rc = cachet_get_or_set(c, "k", 1, loader, &l, 60000, NULL, 0, &v, &n);
    _exit(rc == CACHET_OK ? 10 : 11);
  }
  close(started[1]);
  char b;
  assert_int_equal(read(started[0], &b, 1), 1);
  close(started[0]);

  /* A waiter is waiting on the holder when it dies. */
  cachet *c = open_with("st8:", 1000, 20000);
  loader_ctl l;
  loader_ctl_init(&l, "from-waiter");
  caller k = {c, &l, "k", NULL, -100, ""};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, call_get_or_set, &k), 0);
  for (int i = 0; i < 1000; i++) {
    cachet_metrics m;
    cachet_metrics_snapshot(c, &m);
    if (m.stampede_waits > 0)
      break;
    test_sleep_ms(10);
  }
  kill(pid, SIGKILL);
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFSIGNALED(st));
  pthread_join(th, NULL);
  /* Within the 20 s bound, or it would be ETIMEDOUT. */
  assert_int_equal(k.rc, CACHET_OK);
  assert_string_equal(k.got, "from-waiter");
  assert_int_equal(atomic_load(&l.calls), 1);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.stampede_waits, 1);
  cachet_close(c);
}

static void test_failed_loader_hands_over_to_waiter(void **state) {
  (void)state;
  /* A one-minute lease and a 20 s wait: the waiter can only get in through
   * the failed holder's immediate release, not by the lease running out. */
  cachet *c = open_with("st9:", 60000, 20000);
  int started[2];
  assert_int_equal(pipe(started), 0);
  loader_ctl failing;
  loader_ctl_init(&failing, "bad");
  failing.fail = -3;
  failing.started_fd = started[1];
  failing.wait_for_waiter = c;
  caller h = {c, &failing, "k", NULL, -100, ""};
  pthread_t th_h, th_w;
  assert_int_equal(pthread_create(&th_h, NULL, call_get_or_set, &h), 0);
  char b;
  assert_int_equal(read(started[0], &b, 1), 1);

  loader_ctl good;
  loader_ctl_init(&good, "good");
  caller w = {c, &good, "k", NULL, -100, ""};
  assert_int_equal(pthread_create(&th_w, NULL, call_get_or_set, &w), 0);
  pthread_join(th_h, NULL);
  pthread_join(th_w, NULL);
  close(started[0]);
  close(started[1]);

  assert_int_equal(h.rc, CACHET_ELOADER);
  assert_int_equal(w.rc, CACHET_OK);
  assert_string_equal(w.got, "good");
  assert_int_equal(atomic_load(&failing.calls), 1);
  assert_int_equal(atomic_load(&good.calls), 1);
  void *v = NULL;
  size_t n;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_OK);
  assert_memory_equal(v, "good", 4);
  cachet_free(v);
  cachet_close(c);
}

static void test_wait_is_bounded_by_fetch_wait(void **state) {
  (void)state;
  cachet *holder = open_with("st10:", 1000, 30000);
  cachet *waiter = open_with("st10:", 1000, 300);
  int started[2];
  assert_int_equal(pipe(started), 0);
  loader_ctl slow;
  loader_ctl_init(&slow, "slow");
  slow.started_fd = started[1];
  slow.wait_for_waiter = waiter;
  slow.sleep_ms = 1500;
  caller h = {holder, &slow, "k", NULL, -100, ""};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, call_get_or_set, &h), 0);
  char b;
  assert_int_equal(read(started[0], &b, 1), 1);

  atomic_int calls = 0;
  void *v = (void *)1;
  size_t n = 5;
  int rc = cachet_get_or_set(waiter, "k", 1, must_not_load, &calls, 60000, NULL,
                             0, &v, &n);
  assert_int_equal(rc, CACHET_ETIMEDOUT);
  assert_null(v);
  assert_int_equal(n, 0);
  assert_non_null(strstr(cachet_last_error(), "fetch_wait_ms"));
  assert_int_equal(atomic_load(&calls), 0);
  pthread_join(th, NULL);
  assert_int_equal(h.rc, CACHET_OK);
  close(started[0]);
  close(started[1]);
  cachet_metrics m;
  cachet_metrics_snapshot(waiter, &m);
  assert_int_equal(m.stampede_waits, 1);
  assert_int_equal(m.errors[-CACHET_ETIMEDOUT], 1);
  cachet_close(holder);
  cachet_close(waiter);
}

static void test_lease_is_renewed_while_loader_runs(void **state) {
  (void)state;
  /* The loader runs for several leases. Without renewal the lease would
   * lapse and the waiter would load too. */
  cachet *holder = open_with("st11:", 300, 30000);
  cachet *waiter = open_with("st11:", 300, 30000);
  int started[2];
  assert_int_equal(pipe(started), 0);
  loader_ctl slow;
  loader_ctl_init(&slow, "renewed");
  slow.started_fd = started[1];
  slow.sleep_ms = 1500;
  caller h = {holder, &slow, "k", NULL, -100, ""};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, call_get_or_set, &h), 0);
  char b;
  assert_int_equal(read(started[0], &b, 1), 1);

  loader_ctl second;
  loader_ctl_init(&second, "second");
  caller w = {waiter, &second, "k", NULL, -100, ""};
  call_get_or_set(&w);
  pthread_join(th, NULL);
  assert_int_equal(h.rc, CACHET_OK);
  assert_int_equal(w.rc, CACHET_OK);
  assert_string_equal(w.got, "renewed");
  assert_int_equal(atomic_load(&second.calls), 0);
  close(started[0]);
  close(started[1]);
  cachet_close(holder);
  cachet_close(waiter);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hit_returns_cached_value_without_loading),
      cmocka_unit_test(test_miss_loads_caches_with_tags_and_releases),
      cmocka_unit_test(test_loader_may_lower_ttl_but_not_raise_it),
      cmocka_unit_test(test_loader_failure_caches_nothing_and_releases),
      cmocka_unit_test(test_redis_errors_are_returned_not_loaded),
      cmocka_unit_test(test_concurrent_threads_load_cold_key_once),
      cmocka_unit_test(test_concurrent_processes_load_cold_key_once),
      cmocka_unit_test(test_killed_holder_is_taken_over_by_waiter),
      cmocka_unit_test(test_failed_loader_hands_over_to_waiter),
      cmocka_unit_test(test_wait_is_bounded_by_fetch_wait),
      cmocka_unit_test(test_lease_is_renewed_while_loader_runs),
  };
  return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
