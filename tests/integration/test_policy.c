/* Write-through and write-behind against a private redis-server, with real
 * failures: a writer that fails, and a server that refuses writes (OOM under
 * maxmemory with noeviction). */
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

/* An origin the writer stores into, and what it saw of the cache. */
typedef struct origin {
  int fail; /* non-zero: the writer returns this */
  int calls;
  char stored[64];
  const char *prefix;      /* to look at the cache from inside the writer */
  long long cache_had_key; /* EXISTS of the value key during the write */
} origin;

static long long raw_exists(const char *prefix, const void *key,
                            size_t keylen) {
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommand(r, "EXISTS %s{%02x}v:%b", prefix,
                                 cachet_bucket(key, keylen), key, keylen);
  long long v =
      rep != NULL && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
  if (rep != NULL)
    freeReplyObject(rep);
  redisFree(r);
  return v;
}

static int writer(void *ud, const void *key, size_t keylen, const void *val,
                  size_t len) {
  origin *o = ud;
  o->calls++;
  o->cache_had_key = raw_exists(o->prefix, key, keylen);
  if (o->fail != 0)
    return o->fail;
  snprintf(o->stored, sizeof o->stored, "%.*s", (int)len, (const char *)val);
  return 0;
}

/* Make every write fail with OOM, as a full server with noeviction does. */
static void server_full(void) {
  test_command(test_group_server(), "CONFIG SET maxmemory-policy noeviction");
  test_command(test_group_server(), "CONFIG SET maxmemory 1");
}

static void server_roomy(void) {
  test_command(test_group_server(), "CONFIG SET maxmemory 0");
}

static void test_write_through_writes_origin_then_cache(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "wt1:");
  origin o = {0, 0, "", "wt1:", -1};
  const char *tags[] = {"t"};
  assert_int_equal(
      cachet_write_through(c, "k", 1, "v1", 2, writer, &o, 60000, tags, 1),
      CACHET_OK);
  assert_int_equal(o.calls, 1);
  assert_string_equal(o.stored, "v1");
  assert_int_equal(o.cache_had_key, 0); /* the writer ran first */
  assert_true(test_hit(c, "k", "v1"));
  redisContext *r = test_redis(test_group_server());
  redisReply *rep =
      redisCommand(r, "SISMEMBER wt1:{%02x}m:k t", cachet_bucket("k", 1));
  assert_int_equal(rep->integer, 1);
  freeReplyObject(rep);
  redisFree(r);
  cachet_close(c);
}

static void test_write_through_writer_failure_caches_nothing(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "wt2:");
  origin o = {5, 0, "", "wt2:", -1};
  assert_int_equal(
      cachet_write_through(c, "new", 3, "v", 1, writer, &o, 0, NULL, 0),
      CACHET_EWRITER);
  assert_non_null(strstr(cachet_last_error(), "writer returned 5"));
  assert_int_equal(cachet_exists(c, "new", 3), CACHET_MISS);
  /* An entry cached before stays: the origin did not change, so it still
   * matches it. */
  assert_int_equal(cachet_set(c, "old", 3, "same", 4, 0), CACHET_OK);
  assert_int_equal(
      cachet_write_through(c, "old", 3, "other", 5, writer, &o, 0, NULL, 0),
      CACHET_EWRITER);
  assert_true(test_hit(c, "old", "same"));
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.errors[-CACHET_EWRITER], 2);
  cachet_close(c);
}

static void test_write_through_cache_failure_removes_stale_entry(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "wt3:");
  const char *tags[] = {"t"};
  assert_int_equal(cachet_set_tags(c, "k", 1, "stale", 5, 0, tags, 1),
                   CACHET_OK);
  origin o = {0, 0, "", "wt3:", -1};
  server_full();
  int rc = cachet_write_through(c, "k", 1, "fresh", 5, writer, &o, 0, tags, 1);
  char detail[512];
  snprintf(detail, sizeof detail, "%s", cachet_last_error());
  server_roomy();
  assert_int_equal(rc, CACHET_ESERVER);
  assert_non_null(strstr(detail, "OOM"));
  assert_non_null(strstr(detail, "removed"));
  assert_int_equal(o.calls, 1);
  assert_string_equal(o.stored, "fresh");
  /* The origin has "fresh"; the cache must not keep "stale". */
  void *v = NULL;
  size_t n;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_MISS);
  assert_null(v);
  redisContext *r = test_redis(test_group_server());
  redisReply *rep =
      redisCommand(r, "EXISTS wt3:{%02x}m:k", cachet_bucket("k", 1));
  assert_int_equal(rep->integer, 0);
  freeReplyObject(rep);
  redisFree(r);
  cachet_close(c);
}

static void test_write_behind_writes_cache_then_origin(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "wb1:");
  origin o = {0, 0, "", "wb1:", -1};
  assert_int_equal(
      cachet_write_behind(c, "k", 1, "v1", 2, writer, &o, 60000, NULL, 0),
      CACHET_OK);
  assert_int_equal(o.cache_had_key, 1); /* the cache was written first */
  assert_string_equal(o.stored, "v1");
  assert_true(test_hit(c, "k", "v1"));
  cachet_close(c);
}

static void test_write_behind_writer_failure_removes_entry(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "wb2:");
  assert_int_equal(cachet_set(c, "k", 1, "before", 6, 0), CACHET_OK);
  origin o = {-1, 0, "", "wb2:", -1};
  const char *tags[] = {"t"};
  assert_int_equal(
      cachet_write_behind(c, "k", 1, "refused", 7, writer, &o, 0, tags, 1),
      CACHET_EWRITER);
  assert_int_equal(o.cache_had_key, 1);
  assert_non_null(strstr(cachet_last_error(), "removed"));
  assert_int_equal(cachet_exists(c, "k", 1), CACHET_MISS);
  redisContext *r = test_redis(test_group_server());
  redisReply *rep =
      redisCommand(r, "ZCARD wb2:{%02x}t:t", cachet_bucket("k", 1));
  assert_int_equal(rep->integer, 0);
  freeReplyObject(rep);
  redisFree(r);
  cachet_close(c);
}

static void test_write_behind_cache_failure_skips_writer(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "wb3:");
  origin o = {0, 0, "", "wb3:", -1};
  server_full();
  int rc = cachet_write_behind(c, "k", 1, "v", 1, writer, &o, 0, NULL, 0);
  char detail[512];
  snprintf(detail, sizeof detail, "%s", cachet_last_error());
  server_roomy();
  assert_int_equal(rc, CACHET_ESERVER);
  assert_non_null(strstr(detail, "OOM"));
  assert_int_equal(o.calls, 0);
  assert_int_equal(cachet_exists(c, "k", 1), CACHET_MISS);
  cachet_close(c);
}

static void test_policies_reject_bad_arguments_before_writing(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "wp:");
  origin o = {0, 0, "", "wp:", -1};
  assert_int_equal(
      cachet_write_through(c, "", 0, "v", 1, writer, &o, 0, NULL, 0),
      CACHET_EINVAL);
  assert_int_equal(
      cachet_write_through(c, "k", 1, "v", 1, writer, &o, -1, NULL, 0),
      CACHET_EINVAL);
  assert_int_equal(
      cachet_write_behind(c, "k", 1, NULL, 3, writer, &o, 0, NULL, 0),
      CACHET_EINVAL);
  const char *bad[] = {""};
  assert_int_equal(
      cachet_write_behind(c, "k", 1, "v", 1, writer, &o, 0, bad, 1),
      CACHET_EINVAL);
  assert_int_equal(o.calls, 0);
  /* An empty value is a value. */
  assert_int_equal(
      cachet_write_through(c, "e", 1, NULL, 0, writer, &o, 0, NULL, 0),
      CACHET_OK);
  assert_true(test_hit(c, "e", ""));
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_through_writes_origin_then_cache),
      cmocka_unit_test(test_write_through_writer_failure_caches_nothing),
      cmocka_unit_test(test_write_through_cache_failure_removes_stale_entry),
      cmocka_unit_test(test_write_behind_writes_cache_then_origin),
      cmocka_unit_test(test_write_behind_writer_failure_removes_entry),
      cmocka_unit_test(test_write_behind_cache_failure_skips_writer),
      cmocka_unit_test(test_policies_reject_bad_arguments_before_writing),
  };
  return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
