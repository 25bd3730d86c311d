/* The batch API against a private redis-server: cachet_mget / cachet_mset
 * round trips, per-entry statuses, tags, NOSCRIPT recovery mid-batch, large
 * batches, validation and connection errors; and mset's set_many script:
 * mixed batches, retags, TTLs of tag sets and indexes, the per-call keys
 * cap, SCRIPT FLUSH between calls, binary keys, duplicate keys and an error
 * inside one entry. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cachet_scripts.h"
#include "harness.h"
#include "keys.h"

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
  redisContext *r = test_redis(test_group_server());
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
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommandArgv(r, argc, argv, lens);
  assert_non_null(rep);
  assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
  freeReplyObject(rep);
  redisFree(r);
}

static void
test_mset_then_mget_round_trips_binary_keys_and_values(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "batch1:");
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
  cachet *c = test_open(test_group_server(), "batch2:");
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
  cachet *c = test_open(test_group_server(), "batch3:");
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
  cachet *c = test_open(test_group_server(), "batch4:");
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
  cachet *c = test_open(test_group_server(), "batch5:");
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
  cachet *c = test_open(test_group_server(), "batch6:");
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
  cachet *c = test_open(test_group_server(), "batch7:");
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
  cachet *c = test_open(test_group_server(), "batch8:");
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
  test_options(test_group_server(), &o, "batch9:");
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
  redisContext *r = test_redis(test_group_server());
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
  cachet *c = test_open(test_group_server(), "batch10:");
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

/* ---- set_many ------------------------------------------------------------ */

/* Build the Redis key of `kind` named `name`, in the bucket of user key
 * `key` (an entry's v and m keys, and its tags' index keys). */
static void key_in_bucket(cachet *c, cachet_key *k, char kind, const void *key,
                          size_t keylen, const void *name, size_t namelen) {
  assert_int_equal(
      cachet_key_build(c, k, kind, cachet_bucket(key, keylen), name, namelen),
      CACHET_OK);
}

/* One raw command (printf form, %b for binary); the caller frees. */
static redisReply *raw(const char *fmt, ...) {
  redisContext *r = test_redis(test_group_server());
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  redisFree(r);
  return rep;
}

/* test_int on a fresh connection to the group's server. */
static long long raw_int(const char *fmt, ...) {
  redisContext *r = test_redis(test_group_server());
  va_list ap;
  va_start(ap, fmt);
  long long v = test_vint(r, fmt, ap);
  va_end(ap);
  redisFree(r);
  return v;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The entry's tag set (its m key), sorted and joined with ',' into out;
 * "" when it has none. */
static void tag_set(cachet *c, const void *key, size_t keylen, char *out,
                    size_t outlen) {
  cachet_key mk = {0};
  key_in_bucket(c, &mk, CACHET_KIND_TAGSET, key, keylen, key, keylen);
  redisReply *rep = raw("SMEMBERS %b", mk.buf, mk.len);
  assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
  const char *names[64];
  assert_true(rep->elements <= 64);
  for (size_t i = 0; i < rep->elements; i++)
    names[i] = rep->element[i]->str;
  qsort(names, rep->elements, sizeof *names, cmp_str);
  out[0] = '\0';
  for (size_t i = 0; i < rep->elements; i++) {
    if (i > 0)
      strncat(out, ",", outlen - strlen(out) - 1);
    strncat(out, names[i], outlen - strlen(out) - 1);
  }
  freeReplyObject(rep);
  cachet_key_free(&mk);
}

/* The value a key holds, read back through cachet; "" on a miss. */
static void value_of(cachet *c, const void *key, size_t keylen, char *out,
                     size_t outlen) {
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, key, keylen, &v, &n);
  out[0] = '\0';
  if (rc == CACHET_MISS)
    return;
  assert_int_equal(rc, CACHET_OK);
  assert_true(n < outlen);
  memcpy(out, v, n);
  out[n] = '\0';
  cachet_free(v);
}

static void
test_set_many_writes_tagged_and_untagged_entries_together(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many1:");
  const char *ab[] = {"a", "b"};
  const char *b[] = {"b"};
  char keys[40][16];
  cachet_entry e[40];
  memset(e, 0, sizeof e);
  for (size_t i = 0; i < 40; i++) {
    snprintf(keys[i], sizeof keys[i], "mix%zu", i);
    e[i].key = keys[i];
    e[i].keylen = strlen(keys[i]);
    e[i].val = keys[i];
    e[i].len = strlen(keys[i]);
    e[i].ttl_ms = i % 4 == 0 ? 0 : 600000;
    if (i % 3 == 1)
      e[i].tags = ab, e[i].ntags = 2;
    else if (i % 3 == 2)
      e[i].tags = b, e[i].ntags = 1;
  }
  assert_int_equal(cachet_mset(c, e, 40), CACHET_OK);
  for (size_t i = 0; i < 40; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    char v[32], ts[64];
    value_of(c, keys[i], strlen(keys[i]), v, sizeof v);
    assert_string_equal(v, keys[i]);
    tag_set(c, keys[i], strlen(keys[i]), ts, sizeof ts);
    assert_string_equal(ts, i % 3 == 1 ? "a,b" : i % 3 == 2 ? "b" : "");
    assert_int_equal(is_member(c, "a", keys[i], strlen(keys[i])), i % 3 == 1);
    assert_int_equal(is_member(c, "b", keys[i], strlen(keys[i])), i % 3 != 0);
  }
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 40);
  uint64_t evicted = 0;
  assert_int_equal(cachet_evict_tags(c, b, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 26);
  cachet_close(c);
}

/* Overwrites in one batch whose tags change: the script skips them and C
 * rewrites them through set_tags, so old memberships go and new ones come,
 * next to entries that keep, gain, or lose all their tags. */
static void test_set_many_retag_inside_a_batch_drops_old_tags(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many2:");
  const char *old[] = {"old", "keep"};
  const char *keep[] = {"keep"};
  const char *grow[] = {"old", "keep", "more"};
  const char *moved[] = {"new"};
  const char *k[] = {"same", "gain", "shrink", "move", "drop", "fresh"};
  cachet_entry e[6];
  memset(e, 0, sizeof e);
  for (size_t i = 0; i < 5; i++) {
    e[i].key = k[i], e[i].keylen = strlen(k[i]);
    e[i].val = "v1", e[i].len = 2, e[i].ttl_ms = 600000;
    e[i].tags = old, e[i].ntags = 2;
  }
  assert_int_equal(cachet_mset(c, e, 5), CACHET_OK);

  /* same: same tags; gain: a superset; shrink, move, drop: tags the
   * entry had are missing, so these take the retag path. */
  const char *const *tags[6] = {old, grow, keep, moved, NULL, moved};
  size_t ntags[6] = {2, 3, 1, 1, 0, 1};
  for (size_t i = 0; i < 6; i++) {
    e[i].key = k[i], e[i].keylen = strlen(k[i]);
    e[i].val = "v2", e[i].len = 2, e[i].ttl_ms = 600000;
    e[i].tags = tags[i], e[i].ntags = ntags[i];
  }
  assert_int_equal(cachet_mset(c, e, 6), CACHET_OK);
  const char *want[6] = {"keep,old", "keep,more,old", "keep", "new", "", "new"};
  const char *all[] = {"old", "keep", "more", "new"};
  for (size_t i = 0; i < 6; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    char v[8], ts[64];
    value_of(c, k[i], strlen(k[i]), v, sizeof v);
    assert_string_equal(v, "v2");
    tag_set(c, k[i], strlen(k[i]), ts, sizeof ts);
    assert_string_equal(ts, want[i]);
    /* Each index holds the entry exactly when its tag set names the tag. */
    for (size_t t = 0; t < 4; t++) {
      char needle[16];
      snprintf(needle, sizeof needle, "%s", all[t]);
      int in_set = strstr(ts, needle) != NULL;
      assert_int_equal(is_member(c, all[t], k[i], strlen(k[i])), in_set);
    }
  }
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 11);
  cachet_close(c);
}

/* PEXPIRETIME of a key: -1 persistent, -2 absent, else Unix ms. */
static long long expire_time(const cachet_key *k) {
  return raw_int("PEXPIRETIME %b", k->buf, k->len);
}

/* Value, tag set and score share one expiry instant; an index's TTL only
 * grows, and turns persistent with a persistent member. */
static void test_set_many_ttls_of_tag_sets_and_indexes(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many3:");
  /* Keys of one bucket, so that they share the index of tag "t". */
  char keys[8][16];
  size_t nk = 0;
  unsigned bucket = 0;
  for (unsigned i = 0; nk < 8; i++) {
    char k[16];
    snprintf(k, sizeof k, "ttl%u", i);
    unsigned bk = cachet_bucket(k, strlen(k));
    if (nk == 0)
      bucket = bk;
    if (bk == bucket)
      memcpy(keys[nk++], k, sizeof k);
  }
  const char *t[] = {"t"};
  cachet_key idx = {0};
  key_in_bucket(c, &idx, CACHET_KIND_INDEX, keys[0], strlen(keys[0]), "t", 1);

  /* One batch: a long ttl, then a shorter one on the same index. */
  int64_t ttls[3] = {600000, 5000, 300000};
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  for (size_t i = 0; i < 3; i++) {
    e[i].key = keys[i], e[i].keylen = strlen(keys[i]);
    e[i].val = "x", e[i].len = 1, e[i].ttl_ms = ttls[i];
    e[i].tags = t, e[i].ntags = 1;
  }
  assert_int_equal(cachet_mset(c, e, 3), CACHET_OK);
  long long longest = 0;
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    cachet_key vk = {0}, mk = {0};
    key_in_bucket(c, &vk, CACHET_KIND_VALUE, keys[i], strlen(keys[i]), keys[i],
                  strlen(keys[i]));
    key_in_bucket(c, &mk, CACHET_KIND_TAGSET, keys[i], strlen(keys[i]), keys[i],
                  strlen(keys[i]));
    long long at = expire_time(&vk);
    assert_true(at > 0);
    assert_int_equal(expire_time(&mk), at);
    redisReply *s = raw("ZSCORE %b %s", idx.buf, idx.len, keys[i]);
    assert_int_equal(s->type, REDIS_REPLY_STRING);
    assert_int_equal(strtoll(s->str, NULL, 10), at);
    freeReplyObject(s);
    if (at > longest)
      longest = at;
    cachet_key_free(&vk);
    cachet_key_free(&mk);
  }
  /* The index lives as long as its longest-lived member. */
  assert_true(expire_time(&idx) >= longest);

  /* A later batch with only short TTLs never shortens it. */
  e[0].key = keys[3], e[0].keylen = strlen(keys[3]), e[0].ttl_ms = 1000;
  assert_int_equal(cachet_mset(c, e, 1), CACHET_OK);
  assert_true(expire_time(&idx) >= longest);

  /* A member without expiry makes the index (and its tag set) persistent,
   * and a short TTL after it in the same batch leaves it so. */
  e[0].key = keys[4], e[0].keylen = strlen(keys[4]), e[0].ttl_ms = 0;
  e[1].key = keys[5], e[1].keylen = strlen(keys[5]), e[1].ttl_ms = 2000;
  assert_int_equal(cachet_mset(c, e, 2), CACHET_OK);
  assert_int_equal(expire_time(&idx), -1);
  cachet_key mk = {0};
  key_in_bucket(c, &mk, CACHET_KIND_TAGSET, keys[4], strlen(keys[4]), keys[4],
                strlen(keys[4]));
  assert_int_equal(expire_time(&mk), -1);
  cachet_key_free(&mk);
  redisReply *s = raw("ZSCORE %b %s", idx.buf, idx.len, keys[4]);
  assert_string_equal(s->str, "inf");
  freeReplyObject(s);

  /* An overwrite that keeps its tags but loses its TTL: the tag set
   * follows the value. */
  e[0].key = keys[1], e[0].keylen = strlen(keys[1]), e[0].ttl_ms = 0;
  assert_int_equal(cachet_mset(c, e, 1), CACHET_OK);
  key_in_bucket(c, &mk, CACHET_KIND_TAGSET, keys[1], strlen(keys[1]), keys[1],
                strlen(keys[1]));
  assert_int_equal(expire_time(&mk), -1);
  cachet_key_free(&mk);

  /* A fresh index created by a batch gets the member's expiry. */
  const char *u[] = {"fresh-tag"};
  e[0].key = keys[6], e[0].keylen = strlen(keys[6]), e[0].ttl_ms = 400000;
  e[0].tags = u;
  assert_int_equal(cachet_mset(c, e, 1), CACHET_OK);
  cachet_key fi = {0}, vk = {0};
  key_in_bucket(c, &fi, CACHET_KIND_INDEX, keys[6], strlen(keys[6]),
                "fresh-tag", 9);
  key_in_bucket(c, &vk, CACHET_KIND_VALUE, keys[6], strlen(keys[6]), keys[6],
                strlen(keys[6]));
  long long at = expire_time(&vk);
  assert_true(expire_time(&fi) >= at);
  assert_true(expire_time(&fi) <= at + 1000);
  cachet_key_free(&fi);
  cachet_key_free(&vk);
  cachet_key_free(&idx);
  cachet_close(c);
}

/* A call holds at most 1000 keys: an entry with 998 tags (1000 keys) still
 * goes through set_many, one with 999 is written alone through set_tags;
 * both, and the small entries around them, end up complete. */
static void test_set_many_at_the_keys_cap(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "many4:");
  o.max_tags = 1000;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  static char names[999][8];
  const char *tags[999];
  for (size_t i = 0; i < 999; i++) {
    snprintf(names[i], sizeof names[i], "c%zu", i);
    tags[i] = names[i];
  }
  cachet_entry e[4];
  memset(e, 0, sizeof e);
  const char *k[] = {"small1", "cap998", "cap999", "small2"};
  size_t nt[] = {1, 998, 999, 2};
  for (size_t i = 0; i < 4; i++) {
    e[i].key = k[i], e[i].keylen = strlen(k[i]);
    e[i].val = k[i], e[i].len = strlen(k[i]), e[i].ttl_ms = 600000;
    e[i].tags = tags, e[i].ntags = nt[i];
  }
  for (int round = 0; round < 2; round++) { /* fresh, then overwrite */
    assert_int_equal(cachet_mset(c, e, 4), CACHET_OK);
    for (size_t i = 0; i < 4; i++) {
      assert_int_equal(e[i].status, CACHET_OK);
      cachet_key mk = {0};
      key_in_bucket(c, &mk, CACHET_KIND_TAGSET, k[i], strlen(k[i]), k[i],
                    strlen(k[i]));
      assert_int_equal(raw_int("SCARD %b", mk.buf, mk.len), (long long)nt[i]);
      cachet_key_free(&mk);
      assert_true(is_member(c, "c0", k[i], strlen(k[i])));
      assert_int_equal(is_member(c, "c997", k[i], strlen(k[i])), nt[i] >= 998);
      assert_int_equal(is_member(c, "c998", k[i], strlen(k[i])), nt[i] == 999);
    }
  }
  /* Now drop most tags in one batch: the big entries take the retag path. */
  e[1].ntags = 1;
  e[2].ntags = 1;
  assert_int_equal(cachet_mset(c, e, 4), CACHET_OK);
  assert_false(is_member(c, "c500", "cap998", 6));
  assert_false(is_member(c, "c998", "cap999", 6));
  assert_true(is_member(c, "c0", "cap999", 6));
  cachet_close(c);
}

typedef struct flusher {
  const test_server *s;
  volatile int stop;
  int flushes;
} flusher;

static void *flush_loop(void *arg) {
  flusher *f = arg;
  redisContext *r = test_redis(f->s);
  while (!f->stop) {
    redisReply *rep = redisCommand(r, "SCRIPT FLUSH");
    if (rep != NULL && rep->type == REDIS_REPLY_STATUS)
      f->flushes++;
    freeReplyObject(rep);
    test_sleep_ms(10);
  }
  redisFree(r);
  return NULL;
}

/* SCRIPT FLUSH while batches run (between their pipelined calls and
 * windows): every refused call is loaded and sent again, nothing is lost. */
static void test_set_many_survives_script_flush_between_chunks(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many5:");
  const char *tags[] = {"f1", "f2"};
  size_t n = 3000;
  char(*keys)[16] = calloc(n, sizeof *keys);
  cachet_entry *e = calloc(n, sizeof *e);
  assert_non_null(keys);
  assert_non_null(e);
  flusher f = {test_group_server(), 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, flush_loop, &f), 0);
  int rounds = 0;
  while (rounds < 3 || (f.flushes < 10 && rounds < 200)) {
    fill(e, keys, n, rounds % 2 ? "fo" : "fe", tags, (size_t)(rounds % 3));
    int rc = cachet_mset(c, e, n);
    if (rc != CACHET_OK)
      print_error("mset: %s\n", cachet_last_error());
    assert_int_equal(rc, CACHET_OK);
    for (size_t i = 0; i < n; i++)
      assert_int_equal(e[i].status, CACHET_OK);
    rounds++;
  }
  f.stop = 1;
  pthread_join(th, NULL);
  check_all(c, keys, n);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_true(f.flushes >= 10);
  assert_true(m.script_reloads >= 1);
  /* Every write was counted once: a call refused and sent again did not
   * count its entries twice. */
  assert_int_equal(m.writes, n * (uint64_t)rounds);
  free(keys);
  free(e);
  cachet_close(c);
}

/* Keys with NUL, 0xff, braces, CR and LF, tagged and not, through the
 * whole path: value, tag set and binary index members. */
static void test_set_many_binary_keys_with_tags(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many6:");
  const char k0[] = {'{', '\0', '}', 'x'};
  const char k1[] = {(char)0xff, '\r', '\n', '{', 'b', 'b', '}'};
  const char k2[] = {'\0'};
  const char v[] = {'\0', (char)0x80, '\n'};
  const char *t[] = {"bin", "{tag}"};
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  e[0].key = k0, e[0].keylen = sizeof k0, e[0].tags = t, e[0].ntags = 2;
  e[1].key = k1, e[1].keylen = sizeof k1, e[1].tags = t, e[1].ntags = 1;
  e[2].key = k2, e[2].keylen = sizeof k2;
  for (size_t i = 0; i < 3; i++)
    e[i].val = v, e[i].len = sizeof v, e[i].ttl_ms = 600000;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_OK);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    void *out = NULL;
    size_t n = 0;
    assert_int_equal(cachet_get(c, e[i].key, e[i].keylen, &out, &n), CACHET_OK);
    assert_int_equal(n, sizeof v);
    assert_memory_equal(out, v, sizeof v);
    cachet_free(out);
  }
  assert_true(is_member(c, "bin", k0, sizeof k0));
  assert_true(is_member(c, "{tag}", k0, sizeof k0));
  assert_true(is_member(c, "bin", k1, sizeof k1));
  assert_false(is_member(c, "{tag}", k1, sizeof k1));
  assert_false(is_member(c, "bin", k2, sizeof k2));
  /* And a binary key's tags change through the retag path. */
  e[0].tags = t + 1, e[0].ntags = 1;
  assert_int_equal(cachet_mset(c, e, 1), CACHET_OK);
  assert_false(is_member(c, "bin", k0, sizeof k0));
  assert_true(is_member(c, "{tag}", k0, sizeof k0));
  uint64_t evicted = 0;
  assert_int_equal(cachet_evict_tags(c, t, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 1);
  cachet_close(c);
}

/* A key given twice in one batch: the last occurrence wins, whole (value,
 * TTL, tags), and every occurrence reports its status. Even when the first
 * occurrence would need a retag and the last would not. */
static void test_set_many_duplicate_keys_last_one_wins(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many7:");
  const char *old[] = {"old"};
  const char *x[] = {"x"};
  const char *oldy[] = {"old", "y"};
  assert_int_equal(cachet_set_tags(c, "dup", 3, "v0", 2, 0, old, 1), CACHET_OK);
  cachet_entry e[4];
  memset(e, 0, sizeof e);
  e[0].key = "dup", e[0].keylen = 3, e[0].val = "v1", e[0].len = 2;
  e[0].tags = x, e[0].ntags = 1; /* would drop "old": retag */
  e[1].key = "other", e[1].keylen = 5, e[1].val = "o1", e[1].len = 2;
  e[2].key = "dup", e[2].keylen = 3, e[2].val = "v2", e[2].len = 2;
  e[2].tags = oldy, e[2].ntags = 2, e[2].ttl_ms = 600000;
  e[3].key = "other", e[3].keylen = 5, e[3].val = "o2", e[3].len = 2;
  for (size_t i = 0; i < 4; i++)
    e[i].status = -999;
  assert_int_equal(cachet_mset(c, e, 4), CACHET_OK);
  for (size_t i = 0; i < 4; i++)
    assert_int_equal(e[i].status, CACHET_OK);
  char v[8], ts[32];
  value_of(c, "dup", 3, v, sizeof v);
  assert_string_equal(v, "v2");
  value_of(c, "other", 5, v, sizeof v);
  assert_string_equal(v, "o2");
  tag_set(c, "dup", 3, ts, sizeof ts);
  assert_string_equal(ts, "old,y");
  assert_false(is_member(c, "x", "dup", 3));
  assert_true(is_member(c, "old", "dup", 3));
  assert_true(is_member(c, "y", "dup", 3));
  int64_t ttl = 0;
  assert_int_equal(cachet_ttl(c, "dup", 3, &ttl), CACHET_OK);
  assert_true(ttl > 0 && ttl <= 600000);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 1 + 2); /* one write per distinct key */

  /* Across pipeline windows (1000 entries each) too. */
  size_t n = 2500;
  char(*keys)[16] = calloc(n, sizeof *keys);
  cachet_entry *b = calloc(n, sizeof *b);
  assert_non_null(keys);
  assert_non_null(b);
  fill(b, keys, n, "w", NULL, 0);
  for (size_t i = 1000; i < n; i += 2) /* odd entries repeat the first */
    memcpy(keys[i], keys[i % 7], sizeof keys[i]), b[i].keylen = strlen(keys[i]);
  b[n - 1].val = "last", b[n - 1].len = 4;
  b[n - 1].tags = x, b[n - 1].ntags = 1;
  memcpy(keys[n - 1], keys[3], sizeof keys[3]);
  b[n - 1].keylen = strlen(keys[3]);
  assert_int_equal(cachet_mset(c, b, n), CACHET_OK);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(b[i].status, CACHET_OK);
  value_of(c, "w3", 2, v, sizeof v);
  assert_string_equal(v, "last");
  assert_true(is_member(c, "x", "w3", 2));
  free(keys);
  free(b);
  cachet_close(c);
}

/* A command failing inside one entry (WRONGTYPE: a foreign string where
 * its index should be) is that entry's ESERVER; the rest of the call is
 * written, and the call returns the server's words. */
static void test_set_many_error_in_one_entry_spares_the_others(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many8:");
  const char *t[] = {"t"};
  cachet_key idx = {0};
  key_in_bucket(c, &idx, CACHET_KIND_INDEX, "bad", 3, "t", 1);
  redisReply *rep = raw("SET %b foreign", idx.buf, idx.len);
  freeReplyObject(rep);
  const char *k[] = {"good1", "bad", "good2"};
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  for (size_t i = 0; i < 3; i++) {
    e[i].key = k[i], e[i].keylen = strlen(k[i]);
    e[i].val = "v", e[i].len = 1, e[i].ttl_ms = 600000;
    e[i].tags = t, e[i].ntags = 1;
  }
  /* good1 and good2 must not share bad's bucket for the test to mean it. */
  assert_int_not_equal(cachet_bucket("good1", 5), cachet_bucket("bad", 3));
  assert_int_not_equal(cachet_bucket("good2", 5), cachet_bucket("bad", 3));
  assert_int_equal(cachet_mset(c, e, 3), CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "WRONGTYPE"));
  assert_int_equal(e[0].status, CACHET_OK);
  assert_int_equal(e[1].status, CACHET_ESERVER);
  assert_int_equal(e[2].status, CACHET_OK);
  assert_true(is_member(c, "t", "good1", 5));
  assert_true(is_member(c, "t", "good2", 5));
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 2);
  assert_int_equal(m.errors[-CACHET_ESERVER], 1);
  cachet_key_free(&idx);
  cachet_close(c);
}

/* Large values: a call carries a bounded number of bytes, so a batch of
 * them is cut into many calls, and a value above the bound goes alone. */
static void test_set_many_splits_large_values_across_calls(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "many9:");
  const char *t[] = {"big"};
  size_t n = 24;
  cachet_entry e[24];
  char keys[24][16];
  char *vals[24];
  memset(e, 0, sizeof e);
  for (size_t i = 0; i < n; i++) {
    size_t len = i % 8 == 0 ? (size_t)300 << 10 : (size_t)50 << 10;
    vals[i] = malloc(len);
    assert_non_null(vals[i]);
    memset(vals[i], 'a' + (int)(i % 26), len);
    snprintf(keys[i], sizeof keys[i], "large%zu", i);
    e[i].key = keys[i], e[i].keylen = strlen(keys[i]);
    e[i].val = vals[i], e[i].len = len, e[i].ttl_ms = 600000;
    if (i % 2)
      e[i].tags = t, e[i].ntags = 1;
  }
  assert_int_equal(cachet_mset(c, e, n), CACHET_OK);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    void *v = NULL;
    size_t len = 0;
    assert_int_equal(cachet_get(c, keys[i], strlen(keys[i]), &v, &len),
                     CACHET_OK);
    assert_int_equal(len, e[i].len);
    assert_memory_equal(v, vals[i], len);
    cachet_free(v);
    assert_int_equal(is_member(c, "big", keys[i], strlen(keys[i])), i % 2);
    free(vals[i]);
  }
  cachet_close(c);
}

/* Untagged entries are stored with plain SET, no script; an entry that had
 * tags before loses its tag set and memberships in the same call, through
 * one untag script each, and only those entries pay for one. */
static void test_mset_untagged_entries_take_plain_set(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "plain1:");
  const char *x[] = {"x"};
  enum { OLD = 60, N = 100 };
  char keys[N][16];
  cachet_entry e[N];
  memset(e, 0, sizeof e);
  for (size_t i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "p%zu", i);
    e[i].key = keys[i], e[i].keylen = strlen(keys[i]);
    e[i].val = "tagged", e[i].len = 6, e[i].ttl_ms = 600000;
    e[i].tags = x, e[i].ntags = 1;
  }
  assert_int_equal(cachet_mset(c, e, OLD), CACHET_OK);

  redisContext *r = test_redis(test_group_server());
  long long sets = test_cmdstat(r, "set", "calls");
  long long scripts = test_scripts_run(r);
  for (size_t i = 0; i < N; i++) {
    e[i].val = keys[i], e[i].len = strlen(keys[i]);
    e[i].ttl_ms = i % 2 ? 600000 : 0;
    e[i].tags = NULL, e[i].ntags = 0;
  }
  assert_int_equal(cachet_mset(c, e, N), CACHET_OK);
  assert_int_equal(test_cmdstat(r, "set", "calls") - sets, N);
  assert_int_equal(test_scripts_run(r) - scripts, OLD);
  redisFree(r);

  for (size_t i = 0; i < N; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    char v[16], ts[16];
    value_of(c, keys[i], strlen(keys[i]), v, sizeof v);
    assert_string_equal(v, keys[i]);
    tag_set(c, keys[i], strlen(keys[i]), ts, sizeof ts);
    assert_string_equal(ts, "");
    assert_false(is_member(c, "x", keys[i], strlen(keys[i])));
    int64_t ttl = 0;
    assert_int_equal(cachet_ttl(c, keys[i], strlen(keys[i]), &ttl), CACHET_OK);
    if (i % 2)
      assert_true(ttl > 0 && ttl <= 600000);
    else
      assert_int_equal(ttl, -1);
  }
  uint64_t evicted = 1;
  assert_int_equal(cachet_evict_tags(c, x, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 0);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, OLD + N);
  cachet_close(c);
}

/* Run lua/untag.lua as mset does: KEYS v, m, [index of "x"]; ARGV the
 * envelope, the member, ["x"]. */
static redisReply *run_untag(cachet *c, const char *key, const void *blob,
                             size_t bloblen, int with_index) {
  cachet_key vk = {0}, mk = {0}, ik = {0};
  size_t kl = strlen(key);
  key_in_bucket(c, &vk, CACHET_KIND_VALUE, key, kl, key, kl);
  key_in_bucket(c, &mk, CACHET_KIND_TAGSET, key, kl, key, kl);
  key_in_bucket(c, &ik, CACHET_KIND_INDEX, key, kl, "x", 1);
  const cachet_script *sc = &cachet_scripts[CACHET_SCRIPT_UNTAG];
  const char *argv[9] = {"EVAL", sc->body, with_index ? "3" : "2", vk.buf,
                         mk.buf};
  size_t lens[9] = {4, sc->len, 1, vk.len, mk.len};
  int argc = 5;
  if (with_index)
    argv[argc] = ik.buf, lens[argc++] = ik.len;
  argv[argc] = blob, lens[argc++] = bloblen;
  argv[argc] = key, lens[argc++] = kl;
  if (with_index)
    argv[argc] = "x", lens[argc++] = 1;
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommandArgv(r, argc, argv, lens);
  assert_non_null(rep);
  redisFree(r);
  cachet_key_free(&vk);
  cachet_key_free(&mk);
  cachet_key_free(&ik);
  return rep;
}

/* untag drops a tag set only while the value is still the envelope the
 * plain SET stored: once a later write owns the entry, its tags are that
 * write's, and they stay. It learns undeclared tags like set_tags. */
static void test_untag_spares_an_entry_a_later_write_owns(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "plain2:");
  const char *x[] = {"x"};
  assert_int_equal(cachet_set_tags(c, "k", 1, "v", 1, 600000, x, 1), CACHET_OK);
  cachet_key vk = {0};
  key_in_bucket(c, &vk, CACHET_KIND_VALUE, "k", 1, "k", 1);
  redisReply *stored = raw("GET %b", vk.buf, vk.len);
  assert_int_equal(stored->type, REDIS_REPLY_STRING);

  /* Another envelope than the one stored: nothing is touched. */
  redisReply *rep = run_untag(c, "k", "other", 5, 1);
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  assert_int_equal(rep->integer, 0);
  freeReplyObject(rep);
  char ts[16];
  tag_set(c, "k", 1, ts, sizeof ts);
  assert_string_equal(ts, "x");
  assert_true(is_member(c, "x", "k", 1));

  /* The stored one, without the index key: it asks for it. */
  rep = run_untag(c, "k", stored->str, stored->len, 0);
  assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
  assert_int_equal(rep->elements, 2);
  assert_string_equal(rep->element[0]->str, "retag");
  assert_string_equal(rep->element[1]->str, "x");
  freeReplyObject(rep);
  assert_true(is_member(c, "x", "k", 1));

  /* With it: the tag set and membership go, the value stays. */
  rep = run_untag(c, "k", stored->str, stored->len, 1);
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  assert_int_equal(rep->integer, 1);
  freeReplyObject(rep);
  tag_set(c, "k", 1, ts, sizeof ts);
  assert_string_equal(ts, "");
  assert_false(is_member(c, "x", "k", 1));
  char v[8];
  value_of(c, "k", 1, v, sizeof v);
  assert_string_equal(v, "v");

  /* A value key of another type is no envelope of this write either. */
  assert_int_equal(cachet_set_tags(c, "k", 1, "v", 1, 600000, x, 1), CACHET_OK);
  freeReplyObject(raw("DEL %b", vk.buf, vk.len));
  freeReplyObject(raw("HSET %b f v", vk.buf, vk.len));
  rep = run_untag(c, "k", stored->str, stored->len, 1);
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  assert_int_equal(rep->integer, 0);
  freeReplyObject(rep);
  assert_true(is_member(c, "x", "k", 1));

  freeReplyObject(stored);
  cachet_key_free(&vk);
  cachet_close(c);
}

/* Runs last: it kills the server. A dead connection is the call's error and
 * every entry's status; the handle recovers once the server is back. */
static void test_batch_on_a_dead_server_fails_every_entry(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "batch11:");
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  const char *k[] = {"a", "b", "c"};
  for (size_t i = 0; i < 3; i++)
    e[i].key = k[i], e[i].keylen = 1, e[i].val = "v", e[i].len = 1;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_OK);
  test_server_kill(test_group_server());

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

  assert_int_equal(test_server_restart(test_group_server(), NULL), 0);
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
      cmocka_unit_test(
          test_set_many_writes_tagged_and_untagged_entries_together),
      cmocka_unit_test(test_set_many_retag_inside_a_batch_drops_old_tags),
      cmocka_unit_test(test_set_many_ttls_of_tag_sets_and_indexes),
      cmocka_unit_test(test_set_many_at_the_keys_cap),
      cmocka_unit_test(test_set_many_survives_script_flush_between_chunks),
      cmocka_unit_test(test_set_many_binary_keys_with_tags),
      cmocka_unit_test(test_set_many_duplicate_keys_last_one_wins),
      cmocka_unit_test(test_set_many_error_in_one_entry_spares_the_others),
      cmocka_unit_test(test_set_many_splits_large_values_across_calls),
      cmocka_unit_test(test_mset_untagged_entries_take_plain_set),
      cmocka_unit_test(test_untag_spares_an_entry_a_later_write_owns),
      cmocka_unit_test(test_batch_on_a_dead_server_fails_every_entry),
  };
  return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
