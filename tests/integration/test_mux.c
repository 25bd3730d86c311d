/* Multiplexed connections (cachet_options.multiplex, src/mux.c) against a
 * real server: replies matched to the right request under 32 threads with
 * mixed keys and sizes, a value larger than the socket buffers, a server
 * killed mid-flight (ECONN for every request, never a miss), a paused
 * server (every request times out on its own, and the late replies never
 * answer a later request), NOSCRIPT recovered over the shared connection,
 * and the configuration that refuses it. */
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

#include <cmocka.h>

#include "cachet.h"
#include "harness.h"

#define THREADS 32

static cachet *open_mux(const char *prefix, int timeout_ms) {
  cachet_options o;
  test_options(test_group_server(), &o, prefix);
  o.multiplex = 2;
  o.pool_size = 1;
  if (timeout_ms > 0)
    o.timeout_ms = timeout_ms;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  return c;
}

/* The value of key `k` in round `round`: its bytes say whose they are, so
 * a reply matched to the wrong request cannot pass for the right one. */
static size_t fill(char *buf, int thread, int k, int round) {
  /* Sizes from empty to 40 KB, a few to 300 KB: larger than one read. */
  size_t len = (size_t)((thread * 7919 + k * 104729 + round * 31) % 40000);
  if ((thread + k + round) % 29 == 0)
    len = 300000;
  if ((thread + round) % 13 == 0)
    len = 0;
  for (size_t i = 0; i < len; i++)
    buf[i] = (char)('a' + (thread * 31 + k * 7 + round + (int)i) % 26);
  return len;
}

typedef struct worker {
  cachet *c;
  int id;
  int failures;
  char why[200];
} worker;

static void note_failure(worker *w, const char *what, int rc) {
  if (w->failures++ == 0)
    snprintf(w->why, sizeof w->why, "thread %d: %s: %s (%s)", w->id, what,
             cachet_strerror(rc), cachet_last_error());
}

static void *mixed(void *arg) {
  worker *w = arg;
  char *buf = malloc(300000);
  char key[32];
  for (int round = 0; round < 40 && buf != NULL; round++) {
    for (int k = 0; k < 4; k++) {
      int kl = snprintf(key, sizeof key, "t%d:k%d", w->id, k);
      size_t len = fill(buf, w->id, k, round);
      static const char *const tags[] = {"a", "b"};
      int rc = k % 2 ? cachet_set_tags(w->c, key, (size_t)kl, buf, len, 60000,
                                       tags, 2)
                     : cachet_set(w->c, key, (size_t)kl, buf, len, 60000);
      if (rc != CACHET_OK)
        note_failure(w, "set", rc);
    }
    for (int k = 0; k < 4; k++) {
      int kl = snprintf(key, sizeof key, "t%d:k%d", w->id, k);
      size_t len = fill(buf, w->id, k, round);
      void *v = NULL;
      size_t n = 0;
      int rc = cachet_get(w->c, key, (size_t)kl, &v, &n);
      if (rc != CACHET_OK)
        note_failure(w, "get", rc);
      else if (n != len || (len > 0 && memcmp(v, buf, len) != 0))
        note_failure(w, "get: another value", rc);
      cachet_free(v);
      if ((rc = cachet_exists(w->c, key, (size_t)kl)) != CACHET_OK)
        note_failure(w, "exists", rc);
      int64_t ttl = 0;
      if ((rc = cachet_ttl(w->c, key, (size_t)kl, &ttl)) != CACHET_OK ||
          ttl <= 0 || ttl > 60000)
        note_failure(w, "ttl", rc);
    }
    /* A miss is a miss, in the middle of everything else. */
    int kl = snprintf(key, sizeof key, "t%d:absent", w->id);
    void *v = NULL;
    size_t n;
    int rc = cachet_get(w->c, key, (size_t)kl, &v, &n);
    if (rc != CACHET_MISS)
      note_failure(w, "get of an absent key", rc);
    kl = snprintf(key, sizeof key, "t%d:k0", w->id);
    if ((rc = cachet_delete(w->c, key, (size_t)kl)) != CACHET_OK)
      note_failure(w, "delete", rc);
    if ((rc = cachet_exists(w->c, key, (size_t)kl)) != CACHET_MISS)
      note_failure(w, "exists after delete", rc);
  }
  free(buf);
  return NULL;
}

static void run_threads(void *(*fn)(void *), worker *w, int n, cachet *c) {
  pthread_t th[THREADS];
  for (int i = 0; i < n; i++) {
    w[i] = (worker){.c = c, .id = i};
    assert_int_equal(pthread_create(&th[i], NULL, fn, &w[i]), 0);
  }
  for (int i = 0; i < n; i++)
    pthread_join(th[i], NULL);
}

static void test_32_threads_get_their_own_replies(void **state) {
  (void)state;
  cachet *c = open_mux("mux-mixed:", 0);
  worker w[THREADS];
  run_threads(mixed, w, THREADS, c);
  for (int i = 0; i < THREADS; i++)
    if (w[i].failures > 0)
      fail_msg("%d failures; first: %s", w[i].failures, w[i].why);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  for (int i = 1; i <= CACHET_ERROR_COUNT; i++)
    assert_int_equal(m.errors[i], 0);
  cachet_close(c);
}

typedef struct big_arg {
  cachet *c;
  int id;
  int rc;
  int same;
} big_arg;

/* 8 MB: several times the socket buffers on either side, so the writer
 * sends it in many rounds while small requests of other threads queue
 * behind it, and the reader reassembles it over many reads. */
#define BIG (8u << 20)

static void *big(void *arg) {
  big_arg *a = arg;
  char key[16];
  int kl = snprintf(key, sizeof key, "big%d", a->id);
  char *v = malloc(BIG);
  if (v == NULL)
    return NULL;
  for (size_t i = 0; i < BIG; i++)
    v[i] = (char)(i * 131 + (size_t)a->id);
  a->rc = cachet_set(a->c, key, (size_t)kl, v, BIG, 60000);
  void *got = NULL;
  size_t n = 0;
  if (a->rc == CACHET_OK)
    a->rc = cachet_get(a->c, key, (size_t)kl, &got, &n);
  a->same = a->rc == CACHET_OK && n == BIG && memcmp(got, v, BIG) == 0;
  cachet_free(got);
  free(v);
  return NULL;
}

static void *small_loop(void *arg) {
  worker *w = arg;
  for (int i = 0; i < 300; i++) {
    char key[16], val[16];
    int kl = snprintf(key, sizeof key, "s%d", w->id);
    int vl = snprintf(val, sizeof val, "%d", i);
    int rc = cachet_set(w->c, key, (size_t)kl, val, (size_t)vl, 60000);
    void *v = NULL;
    size_t n = 0;
    if (rc == CACHET_OK)
      rc = cachet_get(w->c, key, (size_t)kl, &v, &n);
    if (rc != CACHET_OK)
      note_failure(w, "small get", rc);
    else if (n != (size_t)vl || memcmp(v, val, n) != 0)
      note_failure(w, "small get: another value", rc);
    cachet_free(v);
  }
  return NULL;
}

static void test_value_larger_than_the_socket_buffer(void **state) {
  (void)state;
  cachet *c = open_mux("mux-big:", 0);
  big_arg a[2] = {{c, 0, -1, 0}, {c, 1, -1, 0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, big, &a[i]), 0);
  worker w[8];
  run_threads(small_loop, w, 8, c);
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(a[i].rc, CACHET_OK);
    assert_true(a[i].same);
  }
  for (int i = 0; i < 8; i++)
    if (w[i].failures > 0)
      fail_msg("%d failures; first: %s", w[i].failures, w[i].why);
  cachet_close(c);
}

typedef struct outcome_counts {
  atomic_int ok, econn, other, miss;
  atomic_int stop;
  atomic_int killed; /* set once the server is dead */
  atomic_int ok_after_kill;
  char other_why[200];
} outcome_counts;

typedef struct kill_arg {
  cachet *c;
  outcome_counts *oc;
} kill_arg;

static void *get_until_stopped(void *arg) {
  kill_arg *a = arg;
  while (!atomic_load(&a->oc->stop)) {
    int killed = atomic_load(&a->oc->killed);
    void *v = NULL;
    size_t n;
    int rc = cachet_get(a->c, "k", 1, &v, &n);
    cachet_free(v);
    if (rc == CACHET_OK) {
      atomic_fetch_add(&a->oc->ok, 1);
      if (killed)
        atomic_fetch_add(&a->oc->ok_after_kill, 1);
    } else if (rc == CACHET_ECONN) {
      atomic_fetch_add(&a->oc->econn, 1);
    } else if (rc == CACHET_MISS) {
      atomic_fetch_add(&a->oc->miss, 1);
    } else if (atomic_fetch_add(&a->oc->other, 1) == 0) {
      snprintf(a->oc->other_why, sizeof a->oc->other_why, "%s: %s",
               cachet_strerror(rc), cachet_last_error());
    }
  }
  return NULL;
}

static void test_killed_server_fails_every_request_with_econn(void **state) {
  (void)state;
  cachet *c = open_mux("mux-kill:", 0);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  outcome_counts oc;
  memset(&oc, 0, sizeof oc);
  kill_arg a = {c, &oc};
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, get_until_stopped, &a), 0);
  /* Until requests are flowing. */
  while (atomic_load(&oc.ok) < 2000)
    test_sleep_ms(1);
  test_server_kill(test_group_server());
  atomic_store(&oc.killed, 1);
  /* Until every thread has met the dead server a few times. */
  while (atomic_load(&oc.econn) < 5 * THREADS && atomic_load(&oc.other) == 0)
    test_sleep_ms(1);
  atomic_store(&oc.stop, 1);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(test_server_restart(test_group_server(), NULL), 0);
  if (atomic_load(&oc.other) > 0)
    fail_msg("%d requests failed otherwise than ECONN; first: %s",
             atomic_load(&oc.other), oc.other_why);
  assert_int_equal(atomic_load(&oc.miss), 0);
  assert_int_equal(atomic_load(&oc.ok_after_kill), 0);
  /* The restarted server is empty: a miss now, over a new connection. */
  void *v = NULL;
  size_t n;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_MISS);
  cachet_close(c);
}

typedef struct pause_arg {
  cachet *c;
  int id;
  int rc;
} pause_arg;

static void *get_once(void *arg) {
  pause_arg *a = arg;
  char key[16];
  int kl = snprintf(key, sizeof key, "p%d", a->id);
  void *v = NULL;
  size_t n;
  a->rc = cachet_get(a->c, key, (size_t)kl, &v, &n);
  cachet_free(v);
  return NULL;
}

static void test_paused_server_times_out_each_request(void **state) {
  (void)state;
  cachet *c = open_mux("mux-pause:", 300);
  char key[16], val[16];
  for (int i = 0; i < THREADS; i++) {
    int kl = snprintf(key, sizeof key, "p%d", i);
    int vl = snprintf(val, sizeof val, "value %d", i);
    assert_int_equal(cachet_set(c, key, (size_t)kl, val, (size_t)vl, 0),
                     CACHET_OK);
  }
  /* Stopped, not closed: the connections stay up and the requests go out,
   * but no reply comes until SIGCONT, long after every timeout. */
  kill(test_group_server()->pid, SIGSTOP);
  pause_arg a[THREADS];
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) {
    a[i] = (pause_arg){c, i, -1};
    assert_int_equal(pthread_create(&th[i], NULL, get_once, &a[i]), 0);
  }
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  /* Every request came back while the server was still stopped: each timed
   * out on its own deadline instead of waiting for the others'. */
  kill(test_group_server()->pid, SIGCONT);
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(a[i].rc, CACHET_ETIMEDOUT);
  /* The late replies are dropped, not handed to the next requests: each
   * key now reads as its own value. In the reverse order of the stopped
   * requests, so that a late reply handed on cannot pass for the right
   * one. */
  for (int i = THREADS - 1; i >= 0; i--) {
    int kl = snprintf(key, sizeof key, "p%d", i);
    int vl = snprintf(val, sizeof val, "value %d", i);
    void *v = NULL;
    size_t n = 0;
    assert_int_equal(cachet_get(c, key, (size_t)kl, &v, &n), CACHET_OK);
    assert_int_equal(n, (size_t)vl);
    assert_memory_equal(v, val, n);
    cachet_free(v);
  }
  cachet_close(c);
}

static void
test_noscript_is_recovered_over_the_shared_connection(void **state) {
  (void)state;
  cachet *c = open_mux("mux-noscript:", 0);
  const char *t[] = {"t"};
  assert_int_equal(cachet_set_tags(c, "k", 1, "v", 1, 0, t, 1), CACHET_OK);
  test_command(test_group_server(), "SCRIPT FLUSH");
  cachet_metrics before, after;
  cachet_metrics_snapshot(c, &before);
  assert_int_equal(cachet_set_tags(c, "k", 1, "w", 1, 0, t, 1), CACHET_OK);
  cachet_metrics_snapshot(c, &after);
  assert_int_equal(after.script_reloads, before.script_reloads + 1);
  assert_int_equal(test_hit(c, "k", "w"), 1);
  /* The lock calls are one script each, and go the same way. */
  cachet_lock *lk = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 5000, 0, &lk), CACHET_OK);
  assert_int_equal(cachet_lock_release(c, lk), CACHET_OK);
  cachet_lock_free(lk);
  cachet_close(c);
}

static void test_multiplex_is_refused_where_it_cannot_work(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  o.url = "redis+cluster://127.0.0.1:7000";
  o.multiplex = 2;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_ECONFIG);
  assert_non_null(strstr(cachet_last_error(), "cluster"));
  cachet_options_init(&o);
  o.url = "rediss://127.0.0.1:6380";
  o.multiplex = 2;
  assert_int_equal(cachet_open(&c, &o), CACHET_ECONFIG);
  assert_non_null(strstr(cachet_last_error(), "TLS"));
  cachet_options_init(&o);
  o.multiplex = 65;
  assert_int_equal(cachet_open(&c, &o), CACHET_ECONFIG);
  assert_non_null(strstr(cachet_last_error(), "multiplex"));
  /* From the environment, checked like every other variable. */
  cachet_options_init(&o);
  o.use_env = 1;
  setenv("CACHET_MULTIPLEX", "two", 1);
  assert_int_equal(cachet_open(&c, &o), CACHET_ECONFIG);
  assert_non_null(strstr(cachet_last_error(), "CACHET_MULTIPLEX"));
  test_options(test_group_server(), &o, "mux-env:");
  o.use_env = 1;
  setenv("CACHET_MULTIPLEX", "3", 1);
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  unsetenv("CACHET_MULTIPLEX");
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  assert_int_equal(test_hit(c, "k", "v"), 1);
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_32_threads_get_their_own_replies),
      cmocka_unit_test(test_value_larger_than_the_socket_buffer),
      cmocka_unit_test(test_killed_server_fails_every_request_with_econn),
      cmocka_unit_test(test_paused_server_times_out_each_request),
      cmocka_unit_test(test_noscript_is_recovered_over_the_shared_connection),
      cmocka_unit_test(test_multiplex_is_refused_where_it_cannot_work),
  };
  return cmocka_run_group_tests_name("mux", tests, test_group_setup,
                                     test_group_teardown);
}
