/* The batch API against a private redis-server: cachet_mget / cachet_mset
 * round trips, per-entry statuses, tags, NOSCRIPT recovery mid-batch, large
 * batches, validation and connection errors. */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "keys.h"

static test_server srv;

static int setup(void **state) {
  (void)state;
  return test_server_start(&srv, NULL);
}

static int teardown(void **state) {
  (void)state;
  test_server_stop(&srv);
  return 0;
}

static void free_outputs(cachet_entry *e, size_t n) {
  for (size_t i = 0; i < n; i++) {
    cachet_free(e[i].out);
    e[i].out = NULL;
  }
}

/* The score of `key` in the index of `tag` (its bucket), read with raw
 * hiredis; returns 1 if it is a member. */
static int is_member(cachet *c, const char *tag, const void *key,
                     size_t keylen) {
  cachet_key k = {0};
  assert_int_equal(cachet_key_build(c, &k, CACHET_KIND_INDEX,
                                    cachet_bucket(key, keylen), tag,
                                    strlen(tag)),
                   CACHET_OK);
  redisContext *r = test_redis(&srv);
  redisReply *rep = redisCommand(r, "ZSCORE %b %b", k.buf, k.len, key, keylen);
  assert_non_null(rep);
  int member = rep->type == REDIS_REPLY_STRING;
  freeReplyObject(rep);
  redisFree(r);
  cachet_key_free(&k);
  return member;
}

/* Run one command with raw hiredis (argv form) and expect no error. */
static void raw_command(int argc, const char **argv, const size_t *lens) {
  redisContext *r = test_redis(&srv);
  redisReply *rep = redisCommandArgv(r, argc, argv, lens);
  assert_non_null(rep);
  assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
  freeReplyObject(rep);
  redisFree(r);
}

static void
test_mset_then_mget_round_trips_binary_keys_and_values(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch1:");
  const char k0[] = {'a', '\0', 'b'};
  const char k1[] = {(char)0xff, '\n', '\r'};
  const char v0[] = {'\0', '\0', 'x'};
  const char v1[] = {(char)0x80, '\t'};
  cachet_entry e[4];
  memset(e, 0, sizeof e);
  e[0].key = k0, e[0].keylen = sizeof k0, e[0].val = v0, e[0].len = sizeof v0;
  e[1].key = k1, e[1].keylen = sizeof k1, e[1].val = v1, e[1].len = sizeof v1;
  e[2].key = "a", e[2].keylen = 1, e[2].val = "plain", e[2].len = 5;
  e[3].key = "empty", e[3].keylen = 5, e[3].val = "", e[3].len = 0;
  e[3].ttl_ms = 60000;
  assert_int_equal(cachet_mset(c, e, 4), CACHET_OK);
  for (size_t i = 0; i < 4; i++)
    assert_int_equal(e[i].status, CACHET_OK);

  cachet_entry g[4];
  memset(g, 0, sizeof g);
  for (size_t i = 0; i < 4; i++) {
    g[i].key = e[i].key;
    g[i].keylen = e[i].keylen;
  }
  assert_int_equal(cachet_mget(c, g, 4), CACHET_OK);
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(g[i].status, CACHET_OK);
    assert_int_equal(g[i].outlen, e[i].len);
    assert_memory_equal(g[i].out, e[i].val, e[i].len);
    assert_int_equal(((char *)g[i].out)[g[i].outlen], '\0');
  }
  free_outputs(g, 4);

  /* Batch writes are ordinary entries: the single-key API reads them. */
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(cachet_get(c, k1, sizeof k1, &v, &n), CACHET_OK);
  assert_memory_equal(v, v1, sizeof v1);
  cachet_free(v);
  int64_t ttl = 0;
  assert_int_equal(cachet_ttl(c, "empty", 5, &ttl), CACHET_OK);
  assert_true(ttl > 0 && ttl <= 60000);
  assert_int_equal(cachet_ttl(c, "a", 1, &ttl), CACHET_OK);
  assert_int_equal(ttl, -1);

  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 4);
  assert_int_equal(m.hits, 5);
  cachet_close(c);
}

static void test_mget_gives_each_entry_its_own_status(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch2:");
  assert_int_equal(cachet_set(c, "hit1", 4, "one", 3, 0), CACHET_OK);
  assert_int_equal(cachet_set(c, "hit2", 4, "two", 3, 0), CACHET_OK);
  /* A value key holding bytes that are not an envelope. */
  char *vk = NULL;
  size_t vkl = 0;
  assert_int_equal(cachet_value_key(c, "bad", 3, &vk, &vkl), CACHET_OK);
  const char *set[] = {"SET", vk, "not an envelope at all"};
  size_t setl[] = {3, vkl, strlen(set[2])};
  raw_command(3, set, setl);
  cachet_free(vk);

  const char *keys[] = {"hit1", "miss", "bad", "hit2"};
  cachet_entry g[4];
  memset(g, 0, sizeof g);
  for (size_t i = 0; i < 4; i++) {
    g[i].key = keys[i];
    g[i].keylen = strlen(keys[i]);
    g[i].out = (void *)1; /* must be overwritten */
  }
  /* A corrupt value is the entry's status, not the call's. */
  assert_int_equal(cachet_mget(c, g, 4), CACHET_OK);
  assert_int_equal(g[0].status, CACHET_OK);
  assert_memory_equal(g[0].out, "one", 3);
  assert_int_equal(g[1].status, CACHET_MISS);
  assert_null(g[1].out);
  assert_int_equal(g[2].status, CACHET_ECORRUPT);
  assert_null(g[2].out);
  assert_int_equal(g[3].status, CACHET_OK);
  assert_memory_equal(g[3].out, "two", 3);
  free_outputs(g, 4);

  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.hits, 2);
  assert_int_equal(m.misses, 1);
  assert_int_equal(m.errors[-CACHET_ECORRUPT], 1);
  cachet_close(c);
}

static void test_mset_tags_each_entry_and_evict_finds_them(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch3:");
  const char *red[] = {"red"};
  const char *redblue[] = {"red", "blue", "red"}; /* duplicate ignored */
  const char *blue[] = {"blue"};
  cachet_entry e[4];
  memset(e, 0, sizeof e);
  e[0].key = "r", e[0].keylen = 1, e[0].tags = red, e[0].ntags = 1;
  e[1].key = "rb", e[1].keylen = 2, e[1].tags = redblue, e[1].ntags = 3;
  e[2].key = "b", e[2].keylen = 1, e[2].tags = blue, e[2].ntags = 1;
  e[3].key = "none", e[3].keylen = 4;
  for (size_t i = 0; i < 4; i++)
    e[i].val = "v", e[i].len = 1, e[i].ttl_ms = 60000;
  assert_int_equal(cachet_mset(c, e, 4), CACHET_OK);
  for (size_t i = 0; i < 4; i++)
    assert_int_equal(e[i].status, CACHET_OK);
  assert_true(is_member(c, "red", "r", 1));
  assert_false(is_member(c, "blue", "r", 1));
  assert_true(is_member(c, "red", "rb", 2));
  assert_true(is_member(c, "blue", "rb", 2));
  assert_true(is_member(c, "blue", "b", 1));
  assert_false(is_member(c, "red", "b", 1));
  assert_false(is_member(c, "red", "none", 4));

  uint64_t evicted = 0;
  assert_int_equal(cachet_evict_tags(c, red, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 2);
  cachet_entry g[4];
  memset(g, 0, sizeof g);
  for (size_t i = 0; i < 4; i++)
    g[i].key = e[i].key, g[i].keylen = e[i].keylen;
  assert_int_equal(cachet_mget(c, g, 4), CACHET_OK);
  assert_int_equal(g[0].status, CACHET_MISS);
  assert_int_equal(g[1].status, CACHET_MISS);
  assert_int_equal(g[2].status, CACHET_OK);
  assert_int_equal(g[3].status, CACHET_OK);
  free_outputs(g, 4);
  cachet_close(c);
}

/* An overwrite that changes an entry's tags takes the retag path: the old
 * memberships must go in the same step as the write. */
static void
test_mset_overwrite_with_new_tags_drops_old_memberships(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch4:");
  const char *old[] = {"old1", "old2"};
  const char *new_[] = {"new"};
  char keys[50][8];
  cachet_entry e[50];
  memset(e, 0, sizeof e);
  for (size_t i = 0; i < 50; i++) {
    snprintf(keys[i], sizeof keys[i], "k%zu", i);
    e[i].key = keys[i];
    e[i].keylen = strlen(keys[i]);
    e[i].val = "first";
    e[i].len = 5;
    e[i].tags = old;
    e[i].ntags = 2;
  }
  assert_int_equal(cachet_mset(c, e, 50), CACHET_OK);
  /* Even entries move to the new tag; odd ones keep theirs. */
  for (size_t i = 0; i < 50; i++) {
    e[i].val = "second";
    e[i].len = 6;
    if (i % 2 == 0)
      e[i].tags = new_, e[i].ntags = 1;
  }
  assert_int_equal(cachet_mset(c, e, 50), CACHET_OK);
  for (size_t i = 0; i < 50; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    int even = i % 2 == 0;
    assert_int_equal(is_member(c, "old1", keys[i], strlen(keys[i])), !even);
    assert_int_equal(is_member(c, "old2", keys[i], strlen(keys[i])), !even);
    assert_int_equal(is_member(c, "new", keys[i], strlen(keys[i])), even);
  }
  uint64_t evicted = 0;
  assert_int_equal(cachet_evict_tags(c, old, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 25);
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(cachet_get(c, "k0", 2, &v, &n), CACHET_OK);
  assert_memory_equal(v, "second", 6);
  cachet_free(v);
  assert_int_equal(cachet_get(c, "k1", 2, &v, &n), CACHET_MISS);

  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 100);
  cachet_close(c);
}

static void fill(cachet_entry *e, char (*keys)[16], size_t n, const char *pre,
                 const char *const *tags, size_t ntags) {
  memset(e, 0, n * sizeof *e);
  for (size_t i = 0; i < n; i++) {
    snprintf(keys[i], 16, "%s%zu", pre, i);
    e[i].key = keys[i];
    e[i].keylen = strlen(keys[i]);
    e[i].val = keys[i]; /* the value is the key's own name */
    e[i].len = strlen(keys[i]);
    e[i].ttl_ms = 600000;
    e[i].tags = tags;
    e[i].ntags = ntags;
  }
}

static void check_all(cachet *c, char (*keys)[16], size_t n) {
  cachet_entry *g = calloc(n, sizeof *g);
  assert_non_null(g);
  for (size_t i = 0; i < n; i++)
    g[i].key = keys[i], g[i].keylen = strlen(keys[i]);
  assert_int_equal(cachet_mget(c, g, n), CACHET_OK);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(g[i].status, CACHET_OK);
    assert_int_equal(g[i].outlen, strlen(keys[i]));
    assert_memory_equal(g[i].out, keys[i], g[i].outlen);
  }
  free_outputs(g, n);
  free(g);
}

static void test_mset_recovers_from_noscript_mid_batch(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch5:");
  /* Load the script, then flush it: the next batch meets NOSCRIPT on a
   * connection whose pipeline is already full of EVALSHAs. */
  assert_int_equal(cachet_set(c, "warm", 4, "x", 1, 0), CACHET_OK);
  const char *flush[] = {"SCRIPT", "FLUSH"};
  size_t flushl[] = {6, 5};
  raw_command(2, flush, flushl);
  const char *tags[] = {"ns"};
  size_t n = 2500; /* three pipeline chunks */
  char(*keys)[16] = calloc(n, sizeof *keys);
  cachet_entry *e = calloc(n, sizeof *e);
  assert_non_null(keys);
  assert_non_null(e);
  fill(e, keys, n, "ns", tags, 1);
  assert_int_equal(cachet_mset(c, e, n), CACHET_OK);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(e[i].status, CACHET_OK);
  check_all(c, keys, n);
  assert_true(is_member(c, "ns", "ns0", 3));
  assert_true(is_member(c, "ns", "ns2499", 6));
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_true(m.script_reloads >= 1);
  assert_int_equal(m.writes, n + 1);
  free(keys);
  free(e);
  cachet_close(c);
}

static void test_mset_and_mget_of_ten_thousand_entries(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch6:");
  const char *tags[] = {"big", "huge"};
  size_t n = 10000;
  char(*keys)[16] = calloc(n, sizeof *keys);
  cachet_entry *e = calloc(n, sizeof *e);
  assert_non_null(keys);
  assert_non_null(e);
  fill(e, keys, n, "big", tags, 2);
  assert_int_equal(cachet_mset(c, e, n), CACHET_OK);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(e[i].status, CACHET_OK);
  check_all(c, keys, n);
  assert_true(is_member(c, "huge", "big9999", 7));
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, n);
  assert_int_equal(m.hits, n);
  free(keys);
  free(e);
  cachet_close(c);
}

static void test_empty_batch_is_ok_and_sends_nothing(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch7:");
  assert_int_equal(cachet_mget(c, NULL, 0), CACHET_OK);
  assert_int_equal(cachet_mset(c, NULL, 0), CACHET_OK);
  cachet_entry e;
  memset(&e, 0, sizeof e);
  assert_int_equal(cachet_mset(c, &e, 0), CACHET_OK);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 0);
  assert_int_equal(m.hits + m.misses, 0);
  cachet_close(c);
}

static void test_mset_validates_every_entry_before_writing(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch8:");
  const char *empty_tag[] = {""};
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  e[0].key = "ok", e[0].keylen = 2, e[0].val = "v", e[0].len = 1;
  e[1].key = "ok2", e[1].keylen = 3, e[1].val = "v", e[1].len = 1;
  e[2].key = "neg", e[2].keylen = 3, e[2].val = "v", e[2].len = 1;
  e[2].ttl_ms = -5;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "entry 2"));
  assert_non_null(strstr(cachet_last_error(), "negative"));
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(cachet_get(c, "ok", 2, &v, &n), CACHET_MISS);

  e[2].ttl_ms = 0;
  e[1].tags = empty_tag, e[1].ntags = 1;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "entry 1"));
  e[1].tags = NULL, e[1].ntags = 0;
  e[0].keylen = 0;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "entry 0"));
  e[0].keylen = 2;
  e[1].val = NULL;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "entry 1"));

  cachet_entry g[2];
  memset(g, 0, sizeof g);
  g[0].key = "x", g[0].keylen = 1;
  g[1].key = "", g[1].keylen = 0;
  assert_int_equal(cachet_mget(c, g, 2), CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "entry 1"));
  assert_null(g[0].out);
  cachet_close(c);
}

static void test_sealed_batch_round_trips_and_detects_tampering(void **state) {
  (void)state;
  char keys[CACHET_KEYGEN_BUFLEN];
  assert_int_equal(cachet_keygen(7, keys, sizeof keys), CACHET_OK);
  cachet_options o;
  test_options(&srv, &o, "batch9:");
  o.keys = keys;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  cachet_entry e[2];
  memset(e, 0, sizeof e);
  e[0].key = "s1", e[0].keylen = 2, e[0].val = "secret-one", e[0].len = 10;
  e[1].key = "s2", e[1].keylen = 2, e[1].val = "secret-two", e[1].len = 10;
  assert_int_equal(cachet_mset(c, e, 2), CACHET_OK);

  /* Flip the last byte of s2's stored envelope. */
  char *vk = NULL;
  size_t vkl = 0;
  assert_int_equal(cachet_value_key(c, "s2", 2, &vk, &vkl), CACHET_OK);
  redisContext *r = test_redis(&srv);
  redisReply *rep = redisCommand(r, "GET %b", vk, vkl);
  assert_int_equal(rep->type, REDIS_REPLY_STRING);
  size_t last = rep->len - 1;
  char flipped = (char)(rep->str[last] ^ 0x01);
  freeReplyObject(rep);
  char off[24];
  snprintf(off, sizeof off, "%zu", last);
  rep = redisCommand(r, "SETRANGE %b %s %b", vk, vkl, off, &flipped, (size_t)1);
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  freeReplyObject(rep);
  redisFree(r);
  cachet_free(vk);

  cachet_entry g[2];
  memset(g, 0, sizeof g);
  g[0].key = "s1", g[0].keylen = 2;
  g[1].key = "s2", g[1].keylen = 2;
  assert_int_equal(cachet_mget(c, g, 2), CACHET_OK);
  assert_int_equal(g[0].status, CACHET_OK);
  assert_memory_equal(g[0].out, "secret-one", 10);
  assert_int_equal(g[1].status, CACHET_EINTEGRITY);
  assert_null(g[1].out);
  free_outputs(g, 2);
  cachet_close(c);
}

static void test_mset_ttl_expires_entries(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch10:");
  cachet_entry e[2];
  memset(e, 0, sizeof e);
  e[0].key = "short", e[0].keylen = 5, e[0].val = "x", e[0].len = 1;
  e[0].ttl_ms = 100;
  e[1].key = "long", e[1].keylen = 4, e[1].val = "y", e[1].len = 1;
  e[1].ttl_ms = 600000;
  assert_int_equal(cachet_mset(c, e, 2), CACHET_OK);
  test_sleep_ms(300);
  cachet_entry g[2];
  memset(g, 0, sizeof g);
  g[0].key = "short", g[0].keylen = 5;
  g[1].key = "long", g[1].keylen = 4;
  assert_int_equal(cachet_mget(c, g, 2), CACHET_OK);
  assert_int_equal(g[0].status, CACHET_MISS);
  assert_int_equal(g[1].status, CACHET_OK);
  free_outputs(g, 2);
  cachet_close(c);
}

/* Runs last: it kills the server. A dead connection is the call's error and
 * every entry's status; the handle recovers once the server is back. */
static void test_batch_on_a_dead_server_fails_every_entry(void **state) {
  (void)state;
  cachet *c = test_open(&srv, "batch11:");
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  const char *k[] = {"a", "b", "c"};
  for (size_t i = 0; i < 3; i++)
    e[i].key = k[i], e[i].keylen = 1, e[i].val = "v", e[i].len = 1;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_OK);
  test_server_kill(&srv);

  int rc = cachet_mget(c, e, 3);
  assert_true(rc == CACHET_ECONN || rc == CACHET_ETIMEDOUT);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(e[i].status, rc);
    assert_null(e[i].out);
  }
  rc = cachet_mset(c, e, 3);
  assert_true(rc == CACHET_ECONN || rc == CACHET_ETIMEDOUT);
  for (size_t i = 0; i < 3; i++)
    assert_int_equal(e[i].status, rc);

  assert_int_equal(test_server_restart(&srv, NULL), 0);
  assert_int_equal(cachet_mset(c, e, 3), CACHET_OK);
  assert_int_equal(cachet_mget(c, e, 3), CACHET_OK);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    assert_memory_equal(e[i].out, "v", 1);
  }
  free_outputs(e, 3);
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mset_then_mget_round_trips_binary_keys_and_values),
      cmocka_unit_test(test_mget_gives_each_entry_its_own_status),
      cmocka_unit_test(test_mset_tags_each_entry_and_evict_finds_them),
      cmocka_unit_test(test_mset_overwrite_with_new_tags_drops_old_memberships),
      cmocka_unit_test(test_mset_recovers_from_noscript_mid_batch),
      cmocka_unit_test(test_mset_and_mget_of_ten_thousand_entries),
      cmocka_unit_test(test_empty_batch_is_ok_and_sends_nothing),
      cmocka_unit_test(test_mset_validates_every_entry_before_writing),
      cmocka_unit_test(test_sealed_batch_round_trips_and_detects_tampering),
      cmocka_unit_test(test_mset_ttl_expires_entries),
      cmocka_unit_test(test_batch_on_a_dead_server_fails_every_entry),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
