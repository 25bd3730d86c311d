/* Core operations against a private redis-server: get/set/delete/exists/ttl,
 * the error model, connection handling and thread-safety. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cachet_scripts.h"
#include "harness.h"

static void test_set_then_get_returns_value(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "core1:");
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 5000), CACHET_OK);
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_OK);
  assert_int_equal(n, 1);
  assert_memory_equal(v, "v", 1);
  assert_int_equal(((char *)v)[1], '\0');
  cachet_free(v);
  cachet_close(c);
}

static void test_get_of_absent_key_is_miss_not_error(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "core2:");
  void *v = (void *)1;
  size_t n = 7;
  assert_int_equal(cachet_get(c, "nope", 4, &v, &n), CACHET_MISS);
  assert_null(v);
  assert_int_equal(n, 0);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.misses, 1);
  cachet_close(c);
}

static void test_delete_reports_whether_key_existed(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "core3:");
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  assert_int_equal(cachet_exists(c, "k", 1), CACHET_OK);
  assert_int_equal(cachet_delete(c, "k", 1), CACHET_OK);
  assert_int_equal(cachet_delete(c, "k", 1), CACHET_MISS);
  assert_int_equal(cachet_exists(c, "k", 1), CACHET_MISS);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_MISS);
  cachet_close(c);
}

static void test_ttl_is_honoured_in_milliseconds(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "core4:");
  int64_t ttl = 0;
  assert_int_equal(cachet_set(c, "short", 5, "x", 1, 150), CACHET_OK);
  assert_int_equal(cachet_set(c, "forever", 7, "x", 1, 0), CACHET_OK);
  assert_int_equal(cachet_ttl(c, "short", 5, &ttl), CACHET_OK);
  assert_true(ttl > 0 && ttl <= 150);
  assert_int_equal(cachet_ttl(c, "forever", 7, &ttl), CACHET_OK);
  assert_int_equal(ttl, -1);
  test_sleep_ms(300);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(c, "short", 5, &v, &n), CACHET_MISS);
  assert_int_equal(cachet_ttl(c, "short", 5, &ttl), CACHET_MISS);
  assert_int_equal(cachet_get(c, "forever", 7, &v, &n), CACHET_OK);
  cachet_free(v);
  cachet_close(c);
}

static void test_negative_ttl_is_invalid_argument(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "core5:");
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, -1), CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "negative"));
  assert_int_equal(cachet_set(c, "", 0, "v", 1, 0), CACHET_EINVAL);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(c, "", 0, &v, &n), CACHET_EINVAL);
  cachet_close(c);
}

static void test_binary_keys_and_values_round_trip(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "core6:");
  const char key[] = {'a', '\0', 'b', '\n', (char)0xff};
  const char val[] = {'\0', 'x', '\0', '\r', '\n', (char)0x80};
  assert_int_equal(cachet_set(c, key, sizeof key, val, sizeof val, 0),
                   CACHET_OK);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(c, key, sizeof key, &v, &n), CACHET_OK);
  assert_int_equal(n, sizeof val);
  assert_memory_equal(v, val, sizeof val);
  cachet_free(v);
  /* The key with its NUL is a different key from its prefix. */
  assert_int_equal(cachet_get(c, "a", 1, &v, &n), CACHET_MISS);
  /* An empty value is a value, not a miss. */
  assert_int_equal(cachet_set(c, "empty", 5, "", 0, 0), CACHET_OK);
  assert_int_equal(cachet_get(c, "empty", 5, &v, &n), CACHET_OK);
  assert_int_equal(n, 0);
  cachet_free(v);
  cachet_close(c);
}

static void test_two_handles_see_each_others_writes(void **state) {
  (void)state;
  cachet *a = test_open(test_group_server(), "core7:");
  cachet *b = test_open(test_group_server(), "core7:");
  assert_int_equal(cachet_set(a, "k", 1, "from-a", 6, 0), CACHET_OK);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(b, "k", 1, &v, &n), CACHET_OK);
  assert_memory_equal(v, "from-a", 6);
  cachet_free(v);
  assert_int_equal(cachet_delete(b, "k", 1), CACHET_OK);
  assert_int_equal(cachet_get(a, "k", 1, &v, &n), CACHET_MISS);
  cachet_close(a);
  cachet_close(b);
}

static void test_prefixes_isolate_namespaces(void **state) {
  (void)state;
  cachet *a = test_open(test_group_server(), "nsA:");
  cachet *b = test_open(test_group_server(), "nsB:");
  assert_int_equal(cachet_set(a, "k", 1, "a", 1, 0), CACHET_OK);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(b, "k", 1, &v, &n), CACHET_MISS);
  cachet_close(a);
  cachet_close(b);
}

static void test_db_isolation(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "dbiso:");
  o.db = 3;
  cachet *c3 = NULL, *c0 = test_open(test_group_server(), "dbiso:");
  assert_int_equal(cachet_open(&c3, &o), CACHET_OK);
  assert_int_equal(cachet_set(c3, "k", 1, "v", 1, 0), CACHET_OK);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(c0, "k", 1, &v, &n), CACHET_MISS);
  assert_int_equal(cachet_get(c3, "k", 1, &v, &n), CACHET_OK);
  cachet_free(v);
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommand(r, "SELECT 3");
  freeReplyObject(rep);
  rep = redisCommand(r, "DBSIZE");
  assert_true(rep->integer >= 1);
  freeReplyObject(rep);
  redisFree(r);
  cachet_close(c0);
  cachet_close(c3);
}

static void test_user_key_cannot_collide_with_internal_keys(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "coll:");
  const char *tags[] = {"foo"};
  assert_int_equal(cachet_set_tags(c, "a", 1, "1", 1, 0, tags, 1), CACHET_OK);
  /* The model plugin keeps tag sets at __tag__:<tag> in the user namespace;
   * here a user key of any shape is only ever a value key. */
  assert_int_equal(cachet_set(c, "t:foo", 5, "x", 1, 0), CACHET_OK);
  assert_int_equal(cachet_set(c, "__tag__:foo", 11, "x", 1, 0), CACHET_OK);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(c, "a", 1, &v, &n), CACHET_OK);
  cachet_free(v);
  uint64_t ev = 0;
  assert_int_equal(cachet_evict_tags(c, tags, 1, &ev), CACHET_OK);
  assert_int_equal(ev, 1);
  assert_int_equal(cachet_get(c, "t:foo", 5, &v, &n), CACHET_OK);
  cachet_free(v);
  cachet_close(c);
}

static void test_connection_refused_is_error_not_miss(void **state) {
  (void)state;
  cachet *c = test_open_unreachable();
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, "k", 1, &v, &n);
  assert_int_equal(rc, CACHET_ECONN);
  assert_null(v);
  assert_non_null(strstr(cachet_last_error(), "refused"));
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_ECONN);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.misses, 0);
  assert_int_equal(m.errors[-CACHET_ECONN], 2);
  cachet_close(c);
}

static void test_wrong_password_is_server_error(void **state) {
  (void)state;
  test_server s2;
  const char *extra[] = {"--requirepass", "right-pass", NULL};
  assert_int_equal(test_server_start(&s2, extra), 0);
  cachet_options o;
  test_options(&s2, &o, "auth:");
  cachet *c = NULL;
  void *v;
  size_t n;

  /* No password: the server says NOAUTH on the first command. */
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "NOAUTH"));
  cachet_close(c);

  o.password = "wrong-pass";
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "WRONGPASS"));
  assert_null(strstr(cachet_last_error(), "wrong-pass"));
  cachet_close(c);

  o.password = "right-pass";
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_MISS);
  cachet_close(c);
  test_server_stop(&s2);
}

static void test_acl_username_authenticates(void **state) {
  (void)state;
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommand(r, "ACL SETUSER app on >app-pass ~* &* +@all");
  assert_int_equal(rep->type, REDIS_REPLY_STATUS);
  freeReplyObject(rep);
  redisFree(r);
  cachet_options o;
  test_options(test_group_server(), &o, "acl:");
  o.username = "app";
  o.password = "app-pass";
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  cachet_close(c);
  o.password = "nope";
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  assert_int_equal(cachet_ping(c), CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "WRONGPASS"));
  cachet_close(c);
}

static void test_dropped_connection_is_reestablished(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "drop:");
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommand(r, "CLIENT KILL TYPE normal SKIPME yes");
  freeReplyObject(rep);
  redisFree(r);
  void *v = NULL;
  size_t n;
  /* The pooled connection was killed: this call may fail with a connection
   * error (never a miss), and the one after it reconnects. */
  int rc = cachet_get(c, "k", 1, &v, &n);
  assert_true(rc == CACHET_OK || rc == CACHET_ECONN);
  if (rc == CACHET_OK)
    cachet_free(v);
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_OK);
  cachet_free(v);
  cachet_close(c);
}

static void test_paused_server_times_out_then_recovers(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "pause:");
  o.timeout_ms = 300;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  kill(test_group_server()->pid, SIGSTOP);
  void *v = NULL;
  size_t n;
  int rc = cachet_get(c, "k", 1, &v, &n);
  kill(test_group_server()->pid, SIGCONT);
  assert_int_equal(rc, CACHET_ETIMEDOUT);
  assert_null(v);
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_OK);
  cachet_free(v);
  cachet_close(c);
}

static void test_noscript_after_script_flush_is_invisible(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "flush:");
  /* Tagged, so that the write is a script (an untagged one is a plain
   * SET). */
  const char *t[] = {"t"};
  assert_int_equal(cachet_set_tags(c, "k", 1, "v", 1, 0, t, 1), CACHET_OK);
  cachet_metrics before, after;
  cachet_metrics_snapshot(c, &before);
  redisContext *r = test_redis(test_group_server());
  freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
  assert_int_equal(cachet_set_tags(c, "k", 1, "w", 1, 0, t, 1), CACHET_OK);
  void *v;
  size_t n;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_OK);
  assert_memory_equal(v, "w", 1);
  cachet_free(v);
  cachet_metrics_snapshot(c, &after);
  assert_int_equal(after.script_reloads, before.script_reloads + 1);
  /* SCRIPT LOAD of each embedded body yields the embedded SHA1. */
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++) {
    test_expect_string(r, cachet_scripts[i].sha, "SCRIPT LOAD %b",
                       cachet_scripts[i].body, cachet_scripts[i].len);
  }
  redisFree(r);
  cachet_close(c);
}

/* A SCRIPT LOAD the server refuses is the call's error, in the server's
 * words, never a miss and never retried without end: here an ACL user that
 * may run scripts but not load them, after a SCRIPT FLUSH. */
static void test_refused_script_load_is_server_error(void **state) {
  (void)state;
  test_command(test_group_server(),
               "ACL SETUSER noload on >noload-pass ~* &* +@all -script|load");
  cachet_options o;
  test_options(test_group_server(), &o, "noload:");
  o.username = "noload";
  o.password = "noload-pass";
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  test_command(test_group_server(), "SCRIPT FLUSH");
  const char *t[] = {"t"};
  assert_int_equal(cachet_set_tags(c, "k", 1, "v", 1, 0, t, 1), CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "SCRIPT LOAD"));
  assert_non_null(strstr(cachet_last_error(), "NOPERM"));
  /* Loaded by someone allowed to: the same handle goes on. */
  test_command(test_group_server(), "SCRIPT LOAD %b",
               cachet_scripts[CACHET_SCRIPT_SET_TAGS].body,
               cachet_scripts[CACHET_SCRIPT_SET_TAGS].len);
  assert_int_equal(cachet_set_tags(c, "k", 1, "v", 1, 0, t, 1), CACHET_OK);
  cachet_close(c);
}

static void test_value_written_outside_cachet_is_corrupt(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "raw:");
  char *vk;
  size_t vkl;
  assert_int_equal(cachet_value_key(c, "k", 1, &vk, &vkl), CACHET_OK);
  redisContext *r = test_redis(test_group_server());
  freeReplyObject(redisCommand(r, "SET %b plain-bytes", vk, vkl));
  redisFree(r);
  void *v = NULL;
  size_t n;
  int rc = cachet_get(c, "k", 1, &v, &n);
  assert_int_equal(rc, CACHET_ECORRUPT);
  assert_null(v);
  cachet_free(vk);
  cachet_close(c);
}

/* 8 threads x 10k operations on one shared handle, no error. */
#define THREADS 8
#define OPS 10000

typedef struct worker {
  cachet *c;
  int id;
  int failures;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  char key[32], val[32];
  for (int i = 0; i < OPS; i++) {
    /* Iterations 2j and 2j+1 use the same key: write, then read back. */
    int kl = snprintf(key, sizeof key, "t%d-%d", w->id, (i / 2) % 50);
    int vl = snprintf(val, sizeof val, "v%d", i);
    if (i % 2 == 0) {
      if (cachet_set(w->c, key, (size_t)kl, val, (size_t)vl, 60000) !=
          CACHET_OK)
        w->failures++;
    } else {
      void *v = NULL;
      size_t n;
      int rc = cachet_get(w->c, key, (size_t)kl, &v, &n);
      /* The previous iteration wrote this key with "v<i-1>". */
      char want[32];
      int wl = snprintf(want, sizeof want, "v%d", i - 1);
      if (rc != CACHET_OK || n != (size_t)wl || memcmp(v, want, n) != 0)
        w->failures++;
      cachet_free(v);
    }
  }
  return NULL;
}

static void test_shared_handle_8_threads_x_10k_ops(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "threads:");
  o.pool_size = 4; /* fewer connections than threads: the pool must share */
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  pthread_t th[THREADS];
  worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker){c, i, 0};
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  int failures = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    failures += w[i].failures;
  }
  assert_int_equal(failures, 0);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, THREADS * OPS / 2);
  assert_int_equal(m.hits, THREADS * OPS / 2);
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_then_get_returns_value),
      cmocka_unit_test(test_get_of_absent_key_is_miss_not_error),
      cmocka_unit_test(test_delete_reports_whether_key_existed),
      cmocka_unit_test(test_ttl_is_honoured_in_milliseconds),
      cmocka_unit_test(test_negative_ttl_is_invalid_argument),
      cmocka_unit_test(test_binary_keys_and_values_round_trip),
      cmocka_unit_test(test_two_handles_see_each_others_writes),
      cmocka_unit_test(test_prefixes_isolate_namespaces),
      cmocka_unit_test(test_db_isolation),
      cmocka_unit_test(test_user_key_cannot_collide_with_internal_keys),
      cmocka_unit_test(test_connection_refused_is_error_not_miss),
      cmocka_unit_test(test_wrong_password_is_server_error),
      cmocka_unit_test(test_acl_username_authenticates),
      cmocka_unit_test(test_dropped_connection_is_reestablished),
      cmocka_unit_test(test_paused_server_times_out_then_recovers),
      cmocka_unit_test(test_noscript_after_script_flush_is_invisible),
      cmocka_unit_test(test_refused_script_load_is_server_error),
      cmocka_unit_test(test_value_written_outside_cachet_is_corrupt),
      cmocka_unit_test(test_shared_handle_8_threads_x_10k_ops),
  };
  return cmocka_run_group_tests_name("core", tests, test_group_setup,
                                     test_group_teardown);
}
