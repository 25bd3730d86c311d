/* clear against a private redis-server: only this prefix's cache data goes,
 * whatever glob characters the prefix holds; locks and foreign keys stay;
 * dry runs only count; NOSCRIPT part-way is invisible. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "keys.h"

static int exists(redisContext *r, const char *key, size_t len) {
  return test_int(r, "EXISTS %b", key, len) > 0;
}

static void raw_set(redisContext *r, const char *key, size_t len) {
  redisReply *rep = redisCommand(r, "SET %b foreign", key, len);
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_STATUS);
  freeReplyObject(rep);
}

/* Write n tagged entries "<stem><i>". */
static void fill(cachet *c, const char *stem, int n) {
  const char *tags[] = {"x", "y"};
  for (int i = 0; i < n; i++) {
    char key[32];
    int kl = snprintf(key, sizeof key, "%s%d", stem, i);
    assert_int_equal(
        cachet_set_tags(c, key, (size_t)kl, "v", 1, 0, tags, (size_t)(i % 3)),
        CACHET_OK);
  }
}

static void
test_clear_with_glob_prefix_leaves_foreign_keys_and_locks(void **state) {
  (void)state;
  redisContext *r = test_redis(test_group_server());
  freeReplyObject(redisCommand(r, "FLUSHALL"));
  cachet *c = test_open(test_group_server(), "p*");
  fill(c, "k", 50);
  /* A tag index being evicted, as an interrupted eviction leaves it. */
  cachet_key e = {0};
  assert_int_equal(cachet_key_build(c, &e, CACHET_KIND_EVICTING, 7, "x", 1),
                   CACHET_OK);
  freeReplyObject(redisCommand(r, "ZADD %s 1 k1", e.buf));

  /* Foreign keys, including ones the unescaped pattern p*{??}[vmte]:*
   * would match, and keys of a longer prefix. */
  const char *foreign[] = {"p-foreign",   "other:1",     "pX{00}v:foo",
                           "pX{00}t:foo", "p{00}v:foo",  "p**{00}v:foo",
                           "p*{0g}v:foo", "p*{00}x:foo", "p*{0A}v:foo"};
  size_t nforeign = sizeof foreign / sizeof foreign[0];
  for (size_t i = 0; i < nforeign; i++)
    raw_set(r, foreign[i], strlen(foreign[i]));
  cachet *other = test_open(test_group_server(), "p?");
  fill(other, "o", 10);
  /* Locks of this prefix: l, f and s kinds. */
  cachet_key locks[3] = {{0}, {0}, {0}};
  const char kinds[3] = {CACHET_KIND_LOCK, CACHET_KIND_FENCE,
                         CACHET_KIND_STAMPEDE};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(cachet_key_build(c, &locks[i], kinds[i], 3, "job", 3),
                     CACHET_OK);
    raw_set(r, locks[i].buf, locks[i].len);
  }

  uint64_t n = 0;
  assert_int_equal(cachet_clear(c, 0, &n), CACHET_OK);
  assert_int_equal(n, 50);
  for (int i = 0; i < 50; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%d", i);
    assert_false(test_hit(c, key, NULL));
  }
  for (size_t i = 0; i < nforeign; i++)
    assert_true(exists(r, foreign[i], strlen(foreign[i])));
  for (int i = 0; i < 3; i++) {
    assert_true(exists(r, locks[i].buf, locks[i].len));
    cachet_key_free(&locks[i]);
  }
  assert_false(exists(r, e.buf, e.len));
  cachet_key_free(&e);
  for (int i = 0; i < 10; i++) {
    char key[32];
    snprintf(key, sizeof key, "o%d", i);
    assert_true(test_hit(other, key, NULL));
  }
  /* What is left: the foreign keys, the locks, the other prefix's data. */
  uint64_t left = 0;
  assert_int_equal(cachet_clear(other, 1, &left), CACHET_OK);
  assert_int_equal(left, 10);
  assert_int_equal(cachet_clear(other, 0, &left), CACHET_OK);
  assert_int_equal(left, 10);
  assert_int_equal(test_int(r, "DBSIZE"), (long long)nforeign + 3);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.clears, 1);
  cachet_close(other);
  cachet_close(c);
  redisFree(r);
}

static void test_clear_dry_run_counts_without_removing(void **state) {
  (void)state;
  redisContext *r = test_redis(test_group_server());
  cachet *c = test_open(test_group_server(), "dry[1]\\");
  fill(c, "k", 120);
  long long before = test_int(r, "DBSIZE");
  uint64_t n = 0;
  assert_int_equal(cachet_clear(c, 1, &n), CACHET_OK);
  assert_int_equal(n, 120);
  assert_int_equal(test_int(r, "DBSIZE"), before);
  assert_true(test_hit(c, "k0", NULL));
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.clears, 0);
  assert_int_equal(cachet_clear(c, 0, &n), CACHET_OK);
  assert_int_equal(n, 120);
  assert_int_equal(cachet_clear(c, 1, &n), CACHET_OK);
  assert_int_equal(n, 0);
  cachet_close(c);
  redisFree(r);
}

static void test_clear_of_prefix_leaves_longer_prefix_alone(void **state) {
  (void)state;
  cachet *a = test_open(test_group_server(), "a:");
  cachet *ab = test_open(test_group_server(), "a:b:");
  fill(a, "k", 20);
  fill(ab, "k", 20);
  uint64_t n = 0;
  assert_int_equal(cachet_clear(a, 0, &n), CACHET_OK);
  assert_int_equal(n, 20);
  assert_false(test_hit(a, "k0", NULL));
  assert_true(test_hit(ab, "k0", NULL));
  assert_int_equal(cachet_clear(ab, 0, &n), CACHET_OK);
  assert_int_equal(n, 20);
  cachet_close(a);
  cachet_close(ab);
}

typedef struct flusher {
  const test_server *s;
  int calls, flushed;
  uint64_t last;
} flusher;

static void flush_once(void *ud, const char *op, uint64_t done) {
  flusher *f = ud;
  assert_string_equal(op, "clear");
  assert_true(done >= f->last);
  f->last = done;
  if (f->calls++ == 1) {
    redisContext *r = test_redis(f->s);
    freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
    redisFree(r);
    f->flushed = 1;
  }
}

static void test_script_flush_mid_clear_is_invisible(void **state) {
  (void)state;
  flusher f = {test_group_server(), 0, 0, 0};
  cachet_options o;
  test_options(test_group_server(), &o, "big:");
  o.progress = flush_once;
  o.progress_ud = &f;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  fill(c, "k", 5000);
  uint64_t n = 0;
  assert_int_equal(cachet_clear(c, 0, &n), CACHET_OK);
  assert_int_equal(n, 5000);
  assert_true(f.flushed);
  assert_true(f.calls > 2);
  for (int i = 0; i < 5000; i += 97) {
    char key[32];
    snprintf(key, sizeof key, "k%d", i);
    assert_false(test_hit(c, key, NULL));
  }
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(
          test_clear_with_glob_prefix_leaves_foreign_keys_and_locks),
      cmocka_unit_test(test_clear_dry_run_counts_without_removing),
      cmocka_unit_test(test_clear_of_prefix_leaves_longer_prefix_alone),
      cmocka_unit_test(test_script_flush_mid_clear_is_invisible),
  };
  return cmocka_run_group_tests_name("clear", tests, test_group_setup,
                                     test_group_teardown);
}
