/* Tags against a private redis-server: evict-tags, index maintenance on
 * set/delete, atomicity seen by a concurrent reader, bounded indexes under
 * churn, prune, large evictions and NOSCRIPT in the middle of a run. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cachet_scripts.h"
#include "envelope.h"
#include "harness.h"
#include "keys.h"
#include "op_evict.h"
#include "run.h"

/* ---- helpers ------------------------------------------------------------ */

/* The Redis key of `kind` for a user key (v, m) or a tag (t, e) in the
 * bucket of `member`. Caller frees. */
static char *rkey(cachet *c, char kind, const char *name, const char *member) {
  cachet_key k = {0};
  assert_int_equal(cachet_key_build(c, &k, kind,
                                    cachet_bucket(member, strlen(member)), name,
                                    strlen(name)),
                   CACHET_OK);
  char *s = strdup(k.buf);
  assert_non_null(s);
  cachet_key_free(&k);
  return s;
}

/* 1 if `member` is in tag's index for its bucket. */
static int in_index(redisContext *r, cachet *c, const char *tag,
                    const char *member) {
  char *k = rkey(c, CACHET_KIND_INDEX, tag, member);
  redisReply *rep = redisCommand(r, "ZSCORE %s %s", k, member);
  assert_non_null(rep);
  int in = rep->type != REDIS_REPLY_NIL;
  freeReplyObject(rep);
  free(k);
  return in;
}

static void set_tags(cachet *c, const char *key, const char *val, int64_t ttl,
                     const char *const *tags, size_t ntags) {
  assert_int_equal(
      cachet_set_tags(c, key, strlen(key), val, strlen(val), ttl, tags, ntags),
      CACHET_OK);
}

typedef struct tally {
  redisContext *r;
  long long keys, members;
} tally;

static void count_members(void *ud, const char *key, size_t len) {
  tally *t = ud;
  redisReply *rep = redisCommand(t->r, "ZCARD %b", key, len);
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  t->keys++;
  t->members += rep->integer;
  freeReplyObject(rep);
}

/* Total members over every index key (kind t or e) matching `pattern`. */
static tally index_tally(redisContext *r, const char *pattern) {
  tally t = {r, 0, 0};
  test_scan_keys(r, pattern, count_members, &t);
  return t;
}

/*
 * Write n entries "<stem><i>" = "<val>" with tags fast: pipelined EVALSHA of
 * set_tags on a raw connection, 1000 per round trip.
 */
static void populate(cachet *c, const char *stem, int from, int n,
                     const char *val, const char *const *tags, size_t ntags,
                     int64_t ttl) {
  redisContext *r = test_redis(test_group_server());
  const cachet_script *sc = &cachet_scripts[CACHET_SCRIPT_SET_TAGS];
  test_command(test_group_server(), "SCRIPT LOAD %b", sc->body, sc->len);
  char ttlb[24];
  snprintf(ttlb, sizeof ttlb, "%lld", (long long)ttl);
  char nn[16];
  snprintf(nn, sizeof nn, "%zu", ntags);
  char nkb[16];
  snprintf(nkb, sizeof nkb, "%zu", 2 + ntags);
  for (int base = from; base < from + n; base += 1000) {
    int end = base + 1000 < from + n ? base + 1000 : from + n;
    for (int i = base; i < end; i++) {
      char key[64];
      int kl = snprintf(key, sizeof key, "%s%d", stem, i);
      unsigned b = cachet_bucket(key, (size_t)kl);
      cachet_key vk = {0}, mk = {0}, tk[8];
      assert_true(ntags <= 8);
      assert_int_equal(
          cachet_key_build(c, &vk, CACHET_KIND_VALUE, b, key, (size_t)kl), 0);
      assert_int_equal(
          cachet_key_build(c, &mk, CACHET_KIND_TAGSET, b, key, (size_t)kl), 0);
      for (size_t t = 0; t < ntags; t++)
        assert_int_equal(cachet_key_build(c, &tk[t], CACHET_KIND_INDEX, b,
                                          tags[t], strlen(tags[t])),
                         0);
      uint8_t *blob = NULL;
      size_t bl = 0;
      int64_t now = cachet_now_ms();
      assert_int_equal(cachet_envelope_seal(c->keyring, c->cfg.encrypt, vk.buf,
                                            vk.len, 0, now,
                                            ttl > 0 ? now + ttl : 0, val,
                                            strlen(val), &blob, &bl),
                       CACHET_OK);
      const char *a[32];
      size_t l[32];
      int na = 0;
      a[na] = "EVALSHA", l[na++] = 7;
      a[na] = sc->sha, l[na++] = 40;
      a[na] = nkb, l[na++] = strlen(nkb);
      a[na] = vk.buf, l[na++] = vk.len;
      a[na] = mk.buf, l[na++] = mk.len;
      for (size_t t = 0; t < ntags; t++)
        a[na] = tk[t].buf, l[na++] = tk[t].len;
      a[na] = (const char *)blob, l[na++] = bl;
      a[na] = ttlb, l[na++] = strlen(ttlb);
      a[na] = "16", l[na++] = 2;
      a[na] = nn, l[na++] = strlen(nn);
      a[na] = key, l[na++] = (size_t)kl;
      for (size_t t = 0; t < ntags; t++)
        a[na] = tags[t], l[na++] = strlen(tags[t]);
      assert_int_equal(redisAppendCommandArgv(r, na, a, l), REDIS_OK);
      free(blob);
      cachet_key_free(&vk);
      cachet_key_free(&mk);
      for (size_t t = 0; t < ntags; t++)
        cachet_key_free(&tk[t]);
    }
    for (int i = base; i < end; i++) {
      redisReply *rep = NULL;
      assert_int_equal(redisGetReply(r, (void **)&rep), REDIS_OK);
      assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
      assert_int_equal(rep->integer, 1);
      freeReplyObject(rep);
    }
  }
  redisFree(r);
}

/* ---- evict -------------------------------------------------------------- */

/* An index never expires before its members: every write may only lengthen
 * its TTL, and one member without expiry makes it persistent. The entries
 * are picked in one bucket so that they share each tag's index key. */
static void test_index_ttl_is_only_lengthened(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "ittl:");
  redisContext *r = test_redis(test_group_server());
  char keys[5][16];
  unsigned b0 = cachet_bucket("k0", 2);
  int found = 0;
  for (int i = 0; found < 5 && i < 100000; i++) {
    int n = snprintf(keys[found], sizeof keys[found], "k%d", i);
    if (cachet_bucket(keys[found], (size_t)n) == b0)
      found++;
  }
  assert_int_equal(found, 5);
  const char *x[] = {"x"}, *y[] = {"y"}, *z[] = {"z"};
  char *ix = rkey(c, CACHET_KIND_INDEX, "x", keys[0]);
  char *iy = rkey(c, CACHET_KIND_INDEX, "y", keys[0]);
  char *iz = rkey(c, CACHET_KIND_INDEX, "z", keys[0]);
  char *v0 = rkey(c, CACHET_KIND_VALUE, keys[0], keys[0]);
  char *m0 = rkey(c, CACHET_KIND_TAGSET, keys[0], keys[0]);

  /* The first member creates the index with its own TTL. */
  set_tags(c, keys[0], "v", 100000, x, 1);
  long long p = test_int(r, "PTTL %s", ix);
  assert_true(p > 90000 && p <= 100000);
  /* A shorter member does not shorten it. */
  set_tags(c, keys[1], "v", 1000, x, 1);
  assert_true(test_int(r, "PTTL %s", ix) > 90000);
  /* Rewriting a member already in the index with a longer TTL lengthens
   * it; the value and its tag set get the same expiry. */
  set_tags(c, keys[0], "v", 300000, x, 1);
  assert_true(test_int(r, "PTTL %s", ix) > 290000);
  p = test_int(r, "PTTL %s", v0);
  assert_true(p > 290000 && p <= 300000);
  p = test_int(r, "PTTL %s", m0);
  assert_true(p > 290000 && p <= 300000);
  /* A member without expiry makes it persistent, and it stays so. */
  set_tags(c, keys[2], "v", 0, x, 1);
  assert_int_equal(test_int(r, "PTTL %s", ix), -1);
  set_tags(c, keys[3], "v", 5000, x, 1);
  assert_int_equal(test_int(r, "PTTL %s", ix), -1);
  set_tags(c, keys[2], "v", 0, x, 1);
  assert_int_equal(test_int(r, "PTTL %s", ix), -1);
  /* An index created by a member without expiry is persistent from the
   * start, and a later member with a TTL does not give it one. */
  set_tags(c, keys[4], "v", 0, y, 1);
  assert_int_equal(test_int(r, "PTTL %s", iy), -1);
  set_tags(c, keys[1], "v", 2000, y, 1);
  assert_int_equal(test_int(r, "PTTL %s", iy), -1);
  /* One member rewritten in place: longer lengthens, shorter does not. */
  set_tags(c, keys[3], "v", 2000, z, 1);
  p = test_int(r, "PTTL %s", iz);
  assert_true(p > 0 && p <= 2000);
  set_tags(c, keys[3], "v", 50000, z, 1);
  assert_true(test_int(r, "PTTL %s", iz) > 40000);
  set_tags(c, keys[3], "v", 1000, z, 1);
  assert_true(test_int(r, "PTTL %s", iz) > 40000);

  free(ix);
  free(iy);
  free(iz);
  free(v0);
  free(m0);
  redisFree(r);
  cachet_close(c);
}

static void test_evict_tag_removes_only_entries_carrying_it(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "ev1:");
  redisContext *r = test_redis(test_group_server());
  const char *x[] = {"x"}, *xy[] = {"x", "y"}, *y[] = {"y"};
  set_tags(c, "a", "1", 0, x, 1);
  set_tags(c, "b", "2", 0, xy, 2);
  set_tags(c, "c", "3", 60000, y, 1);
  assert_true(in_index(r, c, "y", "b"));

  uint64_t n = 99;
  assert_int_equal(cachet_evict_tags(c, x, 1, &n), CACHET_OK);
  assert_int_equal(n, 2);
  assert_false(test_hit(c, "a", NULL));
  assert_false(test_hit(c, "b", NULL));
  assert_true(test_hit(c, "c", "3"));
  /* b's membership left y's index too; c's stayed. */
  assert_false(in_index(r, c, "y", "b"));
  assert_true(in_index(r, c, "y", "c"));
  assert_false(in_index(r, c, "x", "a"));
  /* No index or evicting key of x is left. */
  assert_int_equal(index_tally(r, "ev1:{??}[te]:x").keys, 0);

  const char *nobody[] = {"nobody"};
  assert_int_equal(cachet_evict_tags(c, nobody, 1, &n), CACHET_OK);
  assert_int_equal(n, 0);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.tag_evictions, 2);
  redisFree(r);
  cachet_close(c);
}

static void test_evict_tags_after_overwrite_keeps_new_value(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "ev2:");
  redisContext *r = test_redis(test_group_server());
  const char *t1[] = {"t1"}, *t2[] = {"t2"};
  set_tags(c, "d", "old", 0, t1, 1);
  set_tags(c, "d", "new", 0, t2, 1);
  assert_false(in_index(r, c, "t1", "d"));
  assert_true(in_index(r, c, "t2", "d"));
  uint64_t n = 99;
  assert_int_equal(cachet_evict_tags(c, t1, 1, &n), CACHET_OK);
  assert_int_equal(n, 0);
  assert_true(test_hit(c, "d", "new"));
  assert_false(in_index(r, c, "t1", "d"));
  redisFree(r);
  cachet_close(c);
}

static void test_evict_of_several_tags_counts_each_entry_once(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "ev3:");
  const char *xy[] = {"x", "y"}, *x[] = {"x"}, *y[] = {"y"};
  set_tags(c, "both", "1", 0, xy, 2);
  set_tags(c, "onlyx", "2", 0, x, 1);
  set_tags(c, "onlyy", "3", 0, y, 1);
  set_tags(c, "none", "4", 0, NULL, 0);
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, xy, 2, &n), CACHET_OK);
  assert_int_equal(n, 3);
  assert_true(test_hit(c, "none", "4"));
  cachet_close(c);
}

static void test_evict_rejects_empty_tag(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "ev4:");
  const char *bad[] = {"ok", ""};
  uint64_t n = 7;
  assert_int_equal(cachet_evict_tags(c, bad, 2, &n), CACHET_EINVAL);
  assert_int_equal(n, 0);
  assert_int_equal(cachet_evict_tags(c, NULL, 1, &n), CACHET_EINVAL);
  assert_int_equal(cachet_evict_tags(c, NULL, 0, &n), CACHET_OK);
  assert_int_equal(n, 0);
  cachet_close(c);
}

static void test_delete_removes_index_memberships(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "del1:");
  redisContext *r = test_redis(test_group_server());
  const char *ab[] = {"a", "b"};
  set_tags(c, "k", "v", 0, ab, 2);
  char *ia = rkey(c, CACHET_KIND_INDEX, "a", "k");
  assert_int_equal(test_int(r, "ZCARD %s", ia), 1);
  assert_int_equal(cachet_delete(c, "k", 1), CACHET_OK);
  assert_int_equal(test_int(r, "ZCARD %s", ia), 0);
  assert_false(in_index(r, c, "b", "k"));
  char *mk = rkey(c, CACHET_KIND_TAGSET, "k", "k");
  assert_int_equal(test_int(r, "EXISTS %s", mk), 0);
  free(mk);
  free(ia);
  redisFree(r);
  cachet_close(c);
}

static void test_set_without_tags_drops_memberships(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "del2:");
  redisContext *r = test_redis(test_group_server());
  const char *ab[] = {"a", "b"};
  set_tags(c, "k", "v1", 0, ab, 2);
  assert_int_equal(cachet_set(c, "k", 1, "v2", 2, 0), CACHET_OK);
  assert_false(in_index(r, c, "a", "k"));
  assert_false(in_index(r, c, "b", "k"));
  uint64_t n = 9;
  assert_int_equal(cachet_evict_tags(c, ab, 2, &n), CACHET_OK);
  assert_int_equal(n, 0);
  assert_true(test_hit(c, "k", "v2"));
  redisFree(r);
  cachet_close(c);
}

/* An untagged set is a plain SET: no script unless the entry had tags,
 * and then exactly one (untag), which drops them. */
static void test_untagged_set_runs_a_script_only_over_tags(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "plainset:");
  redisContext *r = test_redis(test_group_server());
  const char *x[] = {"x"};
  long long before = test_scripts_run(r);
  assert_int_equal(cachet_set(c, "k", 1, "v1", 2, 60000), CACHET_OK);
  assert_int_equal(cachet_set(c, "k", 1, "v2", 2, 0), CACHET_OK);
  assert_int_equal(test_scripts_run(r), before);
  assert_true(test_hit(c, "k", "v2"));

  set_tags(c, "k", "v3", 0, x, 1);
  before = test_scripts_run(r);
  assert_int_equal(cachet_set(c, "k", 1, "v4", 2, 0), CACHET_OK);
  assert_int_equal(test_scripts_run(r), before + 1);
  assert_false(in_index(r, c, "x", "k"));
  uint64_t n = 9;
  assert_int_equal(cachet_evict_tags(c, x, 1, &n), CACHET_OK);
  assert_int_equal(n, 0);
  assert_true(test_hit(c, "k", "v4"));
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.writes, 4);
  redisFree(r);
  cachet_close(c);
}

static void count_key(void *ud, const char *key, size_t len) {
  (void)key;
  (void)len;
  (*(long long *)ud)++;
}

/* A value of CACHET_STAGE_MIN or more never passes through a script: it is
 * SET to a staging key and renamed into place by set_tags, with the same
 * tags, expiry and atomic bookkeeping as an inline write. */
static void test_large_value_is_staged_outside_the_script(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "stage:");
  redisContext *r = test_redis(test_group_server());
  size_t big_len = (size_t)1 << 20;
  char *big = malloc(big_len);
  assert_non_null(big);
  for (size_t i = 0; i < big_len; i++)
    big[i] = (char)('a' + i % 26);
  const char *g[] = {"g"}, *h[] = {"h"};
  long long renames = test_cmdstat(r, "rename", "calls");

  /* Tagged, with a TTL: stored, readable, expiring with the entry. */
  assert_int_equal(cachet_set_tags(c, "big", 3, big, big_len, 60000, g, 1),
                   CACHET_OK);
  assert_int_equal(test_cmdstat(r, "rename", "calls"), renames + 1);
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(cachet_get(c, "big", 3, &v, &n), CACHET_OK);
  assert_int_equal(n, big_len);
  assert_memory_equal(v, big, big_len);
  cachet_free(v);
  char *vk = rkey(c, CACHET_KIND_VALUE, "big", "big");
  long long p = test_int(r, "PTTL %s", vk);
  assert_true(p > 50000 && p <= 60000);
  assert_true(in_index(r, c, "g", "big"));

  /* Retagged and persistent: the staging key's own TTL must not stick. */
  assert_int_equal(cachet_set_tags(c, "big", 3, big, big_len, 0, h, 1),
                   CACHET_OK);
  assert_int_equal(test_int(r, "PTTL %s", vk), -1);
  assert_false(in_index(r, c, "g", "big"));
  assert_true(in_index(r, c, "h", "big"));
  /* Untagged with a TTL, then small again (inline). */
  assert_int_equal(cachet_set(c, "big", 3, big, big_len, 30000), CACHET_OK);
  p = test_int(r, "PTTL %s", vk);
  assert_true(p > 20000 && p <= 30000);
  assert_false(in_index(r, c, "h", "big"));
  assert_int_equal(cachet_set_tags(c, "big", 3, "small", 5, 0, g, 1),
                   CACHET_OK);
  assert_true(test_hit(c, "big", "small"));
  assert_int_equal(test_cmdstat(r, "rename", "calls"), renames + 3);

  /* mset: the large entry goes staged, the small ones in set_many. */
  cachet_entry e[3] = {{0}};
  e[0].key = "m1", e[0].keylen = 2, e[0].val = "one", e[0].len = 3;
  e[1].key = "m2", e[1].keylen = 2, e[1].val = big, e[1].len = big_len;
  e[1].tags = g, e[1].ntags = 1;
  e[2].key = "m3", e[2].keylen = 2, e[2].val = "three", e[2].len = 5;
  assert_int_equal(cachet_mset(c, e, 3), CACHET_OK);
  for (int i = 0; i < 3; i++)
    assert_int_equal(e[i].status, CACHET_OK);
  assert_int_equal(test_cmdstat(r, "rename", "calls"), renames + 4);
  assert_true(test_hit(c, "m1", "one"));
  assert_true(test_hit(c, "m3", "three"));
  assert_int_equal(cachet_get(c, "m2", 2, &v, &n), CACHET_OK);
  assert_int_equal(n, big_len);
  cachet_free(v);

  /* Eviction reaches staged entries like any other; nothing is left in
   * staging. */
  uint64_t evicted = 0;
  assert_int_equal(cachet_evict_tags(c, g, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 2);
  assert_false(test_hit(c, "m2", NULL));
  assert_false(test_hit(c, "big", NULL));
  long long staged = 0;
  test_scan_keys(r, "stage:{*}w:*", count_key, &staged);
  assert_int_equal(staged, 0);

  /* A staging key that is gone (expired, deleted) fails the write before
   * it changes anything, with the script's own words. */
  char *mk = rkey(c, CACHET_KIND_TAGSET, "m1", "m1");
  char *v1 = rkey(c, CACHET_KIND_VALUE, "m1", "m1");
  char *gone = rkey(c, CACHET_KIND_STAGED, "0000000000000000:m1", "m1");
  const cachet_script *sc = &cachet_scripts[CACHET_SCRIPT_SET_TAGS];
  test_command(test_group_server(), "SCRIPT LOAD %b", sc->body, sc->len);
  const char *args[11] = {"EVALSHA", sc->sha, "3", v1,  mk,  gone,
                          "",        "0",     "0", "0", "m1"};
  size_t lens[11];
  for (int i = 0; i < 11; i++)
    lens[i] = strlen(args[i]);
  redisReply *rep = redisCommandArgv(r, 11, args, lens);
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_ERROR);
  assert_non_null(strstr(rep->str, "staged value is gone"));
  freeReplyObject(rep);
  assert_true(test_hit(c, "m1", "one"));

  free(mk);
  free(v1);
  free(gone);
  free(vk);
  free(big);
  redisFree(r);
  cachet_close(c);
}

static void test_evict_finishes_an_abandoned_eviction(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "ev5:");
  redisContext *r = test_redis(test_group_server());
  const char *z[] = {"z"};
  set_tags(c, "first", "1", 0, z, 1);
  /* An eviction that died after its rename: the snapshot is an e key. */
  char *t = rkey(c, CACHET_KIND_INDEX, "z", "first");
  char *e = rkey(c, CACHET_KIND_EVICTING, "z", "first");
  freeReplyObject(redisCommand(r, "RENAME %s %s", t, e));
  /* A later write of the same tag in the same bucket starts a fresh t. */
  set_tags(c, "first", "2", 0, z, 1);
  set_tags(c, "other", "3", 0, z, 1);
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, z, 1, &n), CACHET_OK);
  assert_int_equal(n, 2);
  assert_false(test_hit(c, "first", NULL));
  assert_false(test_hit(c, "other", NULL));
  assert_int_equal(test_int(r, "EXISTS %s %s", t, e), 0);
  free(t);
  free(e);
  redisFree(r);
  cachet_close(c);
}

static void test_expired_members_are_not_counted_as_evicted(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "ev6:");
  const char *x[] = {"x"};
  set_tags(c, "short", "1", 50, x, 1);
  set_tags(c, "long", "2", 60000, x, 1);
  test_sleep_ms(120);
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, x, 1, &n), CACHET_OK);
  assert_int_equal(n, 1);
  cachet_close(c);
}

/* ---- a reader never sees half a write ----------------------------------- */

#define RW_KEYS 20

typedef struct rw {
  cachet *c;
  atomic_int stop;
  int writes;
  int failures;
} rw;

static void *rw_writer(void *arg) {
  rw *w = arg;
  const char *ab[] = {"ta", "tb"}, *cc[] = {"tc"};
  for (int i = 0; !atomic_load(&w->stop) && i < 200000; i++) {
    char key[16], val[32];
    int kl = snprintf(key, sizeof key, "k%d", i % RW_KEYS);
    int rc;
    if (i % 7 == 6) {
      rc = cachet_delete(w->c, key, (size_t)kl);
      rc = rc == CACHET_MISS ? CACHET_OK : rc;
    } else {
      int a = (i / RW_KEYS) % 2 == 0;
      int vl = snprintf(val, sizeof val, "%c%d", a ? 'A' : 'C', i);
      rc = cachet_set_tags(w->c, key, (size_t)kl, val, (size_t)vl, 0,
                           a ? ab : cc, a ? 2 : 1);
    }
    if (rc != CACHET_OK)
      w->failures++;
    w->writes++;
  }
  return NULL;
}

/* Reads v, m and the three memberships of a key in one atomic step. */
static const char read_all[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "local m = redis.call('SMEMBERS', KEYS[2])\n"
    "table.sort(m)\n"
    "local out = {v and 1 or 0, table.concat(m, ',')}\n"
    "for i = 3, 5 do\n"
    "  out[#out + 1] = redis.call('ZSCORE', KEYS[i], ARGV[1]) and 1 or 0\n"
    "end\n"
    "return out\n";

static void
test_concurrent_reader_never_sees_value_without_membership(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "rw:");
  redisContext *r = test_redis(test_group_server());
  rw w = {c, 0, 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, rw_writer, &w), 0);
  long checks = 0, bad = 0, present = 0;
  for (int round = 0; round < 3000; round++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", round % RW_KEYS);
    char *v = rkey(c, CACHET_KIND_VALUE, key, key);
    char *m = rkey(c, CACHET_KIND_TAGSET, key, key);
    char *ta = rkey(c, CACHET_KIND_INDEX, "ta", key);
    char *tb = rkey(c, CACHET_KIND_INDEX, "tb", key);
    char *tc = rkey(c, CACHET_KIND_INDEX, "tc", key);
    redisReply *rep = redisCommand(r, "EVAL %s 5 %s %s %s %s %s %s", read_all,
                                   v, m, ta, tb, tc, key);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    long long exists = rep->element[0]->integer;
    const char *tags = rep->element[1]->str;
    long long a = rep->element[2]->integer, b = rep->element[3]->integer,
              cc = rep->element[4]->integer;
    int ok;
    if (!exists) {
      ok = tags[0] == '\0' && !a && !b && !cc;
    } else {
      present++;
      /* Which write is it? Only GET through cachet can decode the value, so
       * the tag set decides, and it must agree with every index. */
      if (strcmp(tags, "ta,tb") == 0)
        ok = a && b && !cc;
      else if (strcmp(tags, "tc") == 0)
        ok = !a && !b && cc;
      else
        ok = 0;
    }
    if (!ok) {
      bad++;
      fprintf(stderr,
              "inconsistent: %s exists=%lld tags=%s a=%lld b=%lld "
              "c=%lld\n",
              key, exists, tags, a, b, cc);
    }
    checks++;
    freeReplyObject(rep);
    free(v);
    free(m);
    free(ta);
    free(tb);
    free(tc);
  }
  atomic_store(&w.stop, 1);
  pthread_join(th, NULL);
  printf("  reader: %ld checks (%ld present) against %d writes\n", checks,
         present, w.writes);
  assert_int_equal(w.failures, 0);
  assert_int_equal(bad, 0);
  assert_true(present > 0);
  redisFree(r);
  cachet_close(c);
}

/* ---- bounded indexes and prune ------------------------------------------ */

#define CHURN_WRITES 100000
#define CHURN_THREADS 4
#define CHURN_LIVE 1000
#define CHURN_TAGS 8

typedef struct churn {
  cachet *c;
  int id;
  int failures;
} churn;

static const char *const churn_tags[CHURN_TAGS] = {"c0", "c1", "c2", "c3",
                                                   "c4", "c5", "c6", "c7"};

static void *churn_writer(void *arg) {
  churn *w = arg;
  for (int i = w->id; i < CHURN_WRITES; i += CHURN_THREADS) {
    char key[32];
    int kl;
    int64_t ttl;
    /* Half the writes overwrite one of CHURN_LIVE long-lived keys (each
     * thread owns its own), half write a fresh key that lives 20 ms. */
    if (i % 2 == 0) {
      kl = snprintf(key, sizeof key, "live%d", (i / 2) % CHURN_LIVE);
      ttl = 600000;
    } else {
      kl = snprintf(key, sizeof key, "gone%d", i);
      ttl = 20;
    }
    const char *tags[2] = {churn_tags[i % CHURN_TAGS],
                           churn_tags[(i + 1 + (i / 7) % 7) % CHURN_TAGS]};
    if (cachet_set_tags(w->c, key, (size_t)kl, "v", 1, ttl, tags, 2) !=
        CACHET_OK)
      w->failures++;
  }
  return NULL;
}

typedef struct member_check {
  redisContext *r;
  cachet *c;
  long dangling, members;
} member_check;

/* For one index key: every member's value exists and its tag set holds the
 * tag. */
static void check_members(void *ud, const char *key, size_t len) {
  member_check *mc = ud;
  size_t p = mc->c->cfg.prefixlen;
  const char *tag = key + p + 6;
  redisReply *rep = redisCommand(mc->r, "ZRANGE %b 0 -1", key, len);
  assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
  for (size_t i = 0; i < rep->elements; i++) {
    const char *member = rep->element[i]->str;
    char *v = rkey(mc->c, CACHET_KIND_VALUE, member, member);
    char *m = rkey(mc->c, CACHET_KIND_TAGSET, member, member);
    if (test_int(mc->r, "EXISTS %s", v) == 0 ||
        test_int(mc->r, "SISMEMBER %s %s", m, tag) == 0)
      mc->dangling++;
    mc->members++;
    free(v);
    free(m);
  }
  freeReplyObject(rep);
}

static void
test_index_stays_bounded_under_churn_and_prune_cleans_it(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "churn:");
  redisContext *r = test_redis(test_group_server());
  pthread_t th[CHURN_THREADS];
  churn w[CHURN_THREADS];
  for (int i = 0; i < CHURN_THREADS; i++) {
    w[i] = (churn){c, i, 0};
    assert_int_equal(pthread_create(&th[i], NULL, churn_writer, &w[i]), 0);
  }
  for (int i = 0; i < CHURN_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].failures, 0);
  }
  /* 50,000 short-lived entries went through the indexes; an index that
   * only grew would hold all 100,000 of their memberships. Overwrites leave
   * their old tags and writes prune expired members as they go, so what is
   * left is the live memberships (2 per live key) and a small residue of
   * recently expired ones. */
  tally t = index_tally(r, "churn:{??}t:*");
  printf("  after %d writes: %lld index keys, %lld members\n", CHURN_WRITES,
         t.keys, t.members);
  assert_true(t.members >= 2 * CHURN_LIVE);
  assert_true(t.members <= 2 * CHURN_LIVE + 8000);

  test_sleep_ms(100);
  /* Dangling members made behind cachet's back: values deleted (as by
   * maxmemory eviction) and a tag removed from a tag set. */
  for (int i = 0; i < 10; i++) {
    char key[32];
    snprintf(key, sizeof key, "live%d", i);
    char *v = rkey(c, CACHET_KIND_VALUE, key, key);
    freeReplyObject(redisCommand(r, "DEL %s", v));
    free(v);
  }
  for (int i = 10; i < 20; i++) {
    char key[32];
    snprintf(key, sizeof key, "live%d", i);
    char *m = rkey(c, CACHET_KIND_TAGSET, key, key);
    redisReply *rep = redisCommand(r, "SPOP %s", m);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    freeReplyObject(rep);
    free(m);
  }
  uint64_t pruned = 0;
  assert_int_equal(cachet_prune(c, &pruned), CACHET_OK);
  printf("  prune removed %llu members\n", (unsigned long long)pruned);
  assert_int_equal(pruned, (uint64_t)(t.members - (2 * CHURN_LIVE - 30)));

  member_check mc = {r, c, 0, 0};
  test_scan_keys(r, "churn:{??}t:*", check_members, &mc);
  assert_int_equal(mc.dangling, 0);
  assert_int_equal(mc.members, 2 * CHURN_LIVE - 30);
  /* Orphaned tag sets of the deleted values went with them. */
  char *m0 = rkey(c, CACHET_KIND_TAGSET, "live0", "live0");
  assert_int_equal(test_int(r, "EXISTS %s", m0), 0);
  free(m0);
  /* A second prune finds nothing. */
  assert_int_equal(cachet_prune(c, &pruned), CACHET_OK);
  assert_int_equal(pruned, 0);
  redisFree(r);
  cachet_close(c);
}

/* ---- large evictions ---------------------------------------------------- */

typedef struct pinger {
  const test_server *s;
  atomic_int stop;
  uint64_t worst_us, pings;
} pinger;

static void *ping_loop(void *arg) {
  pinger *p = arg;
  redisContext *r = test_redis(p->s);
  while (!atomic_load(&p->stop)) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    redisReply *rep = redisCommand(r, "PING");
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (rep == NULL)
      break;
    freeReplyObject(rep);
    uint64_t us = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000u +
                  (uint64_t)((b.tv_nsec - a.tv_nsec) / 1000);
    if (us > p->worst_us)
      p->worst_us = us;
    p->pings++;
    test_sleep_ms(1);
  }
  redisFree(r);
  return NULL;
}

#define BIG 200000

static void
test_evict_200k_members_in_chunks_while_server_answers(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "big:");
  redisContext *r = test_redis(test_group_server());
  const char *big[] = {"big"}, *bigside[] = {"big", "side"};
  populate(c, "e", 0, BIG - 1000, "value", big, 1, 0);
  /* Some entries carry a second tag, so chunks also edit other indexes. */
  populate(c, "s", 0, 1000, "value", bigside, 2, 0);
  assert_int_equal(index_tally(r, "big:{??}t:big").members, BIG);

  pinger p = {test_group_server(), 0, 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, ping_loop, &p), 0);
  uint64_t n = 0;
  int rc = cachet_evict_tags(c, big, 1, &n);
  atomic_store(&p.stop, 1);
  pthread_join(th, NULL);
  printf("  evicted %llu entries; worst PING %.2f ms over %llu pings\n",
         (unsigned long long)n, (double)p.worst_us / 1000.0,
         (unsigned long long)p.pings);
  assert_int_equal(rc, CACHET_OK);
  assert_int_equal(n, BIG);
  assert_int_equal(index_tally(r, "big:{??}[te]:big").keys, 0);
  assert_int_equal(index_tally(r, "big:{??}t:side").members, 0);
  assert_false(test_hit(c, "e0", NULL));
  assert_false(test_hit(c, "s999", NULL));
  redisReply *rep = redisCommand(r, "EVAL %s 0",
                                 "return #redis.call('KEYS', "
                                 "'big:*')");
  assert_int_equal(rep->integer, 0);
  freeReplyObject(rep);
  redisFree(r);
  cachet_close(c);
}

typedef struct hot {
  cachet *c;
  atomic_int started, stop;
  atomic_int pre_done;
  int failures;
  long writes;
} hot;

/* ---- plain (untagged) writes racing tagged ones ------------------------ */

#define MIX_KEYS 12
#define MIX_THREADS 3

typedef struct mix {
  cachet *c;
  int seed;
  atomic_int *stop;
  int failures;
} mix;

/* Tagged writes (payload "A..." with tag ta, "C..." with tc), untagged
 * sets and msets (payload "U..."), and deletes, on a few shared keys. */
static void *mix_writer(void *arg) {
  mix *w = arg;
  const char *ta[] = {"ta"}, *tc[] = {"tc"};
  unsigned x = (unsigned)w->seed * 2654435761u + 1;
  for (int i = 0; !atomic_load(w->stop) && i < 20000; i++) {
    x = x * 1103515245u + 12345u;
    char key[16], val[32];
    int kl = snprintf(key, sizeof key, "x%u", (x >> 8) % MIX_KEYS);
    int op = (int)((x >> 20) % 10), rc;
    if (op < 5) {
      int vl =
          snprintf(val, sizeof val, "%c%d.%d", op == 0 ? 'C' : 'A', w->seed, i);
      rc = cachet_set_tags(w->c, key, (size_t)kl, val, (size_t)vl, 0,
                           op == 0 ? tc : ta, 1);
    } else if (op < 7) {
      int vl = snprintf(val, sizeof val, "U%d.%d", w->seed, i);
      rc = cachet_set(w->c, key, (size_t)kl, val, (size_t)vl, 0);
    } else if (op < 8) {
      cachet_entry e[3];
      char keys[3][16], vals[3][32];
      memset(e, 0, sizeof e);
      for (int j = 0; j < 3; j++) {
        snprintf(keys[j], sizeof keys[j], "x%u", (x >> (4 + 3 * j)) % MIX_KEYS);
        snprintf(vals[j], sizeof vals[j], "U%d.%d.%d", w->seed, i, j);
        e[j].key = keys[j], e[j].keylen = strlen(keys[j]);
        e[j].val = vals[j], e[j].len = strlen(vals[j]);
      }
      rc = cachet_mset(w->c, e, 3);
    } else {
      rc = cachet_delete(w->c, key, (size_t)kl);
      rc = rc == CACHET_MISS ? CACHET_OK : rc;
    }
    if (rc != CACHET_OK) {
      fprintf(stderr, "mix writer: %s\n", cachet_last_error());
      w->failures++;
    }
  }
  return NULL;
}

/* The payload's first byte (after the 34-byte unsealed header), the tag
 * set, and the memberships in ta and tc, read in one atomic step. */
static const char read_mix[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "local m = redis.call('SMEMBERS', KEYS[2])\n"
    "table.sort(m)\n"
    "local out = {v and string.sub(v, 35, 35) or '', table.concat(m, ',')}\n"
    "for i = 3, 4 do\n"
    "  out[#out + 1] = redis.call('ZSCORE', KEYS[i], ARGV[1]) and 1 or 0\n"
    "end\n"
    "return out\n";

/* One key's state; returns 1 if it is consistent. `final`: no write is in
 * flight, so an untagged value must have no tags left at all. */
static int mix_check(cachet *c, redisContext *r, const char *key, int final,
                     char *kind) {
  char *v = rkey(c, CACHET_KIND_VALUE, key, key);
  char *m = rkey(c, CACHET_KIND_TAGSET, key, key);
  char *ta = rkey(c, CACHET_KIND_INDEX, "ta", key);
  char *tc = rkey(c, CACHET_KIND_INDEX, "tc", key);
  redisReply *rep =
      redisCommand(r, "EVAL %s 4 %s %s %s %s %s", read_mix, v, m, ta, tc, key);
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
  *kind = rep->element[0]->str[0];
  const char *tags = rep->element[1]->str;
  long long a = rep->element[2]->integer, cc = rep->element[3]->integer;
  /* The tag set and the indexes always agree; a tagged value's tag set is
   * exactly its tags; an untagged value's may be stale while its writer
   * has not untagged it yet, never once it is done. */
  int ok =
      a == (strstr(tags, "ta") != NULL) && cc == (strstr(tags, "tc") != NULL);
  if (*kind == 'A')
    ok = ok && strcmp(tags, "ta") == 0;
  else if (*kind == 'C')
    ok = ok && strcmp(tags, "tc") == 0;
  else if (*kind == 'U' || *kind == '\0')
    ok = ok && (!final || tags[0] == '\0');
  else
    ok = 0;
  if (!ok)
    fprintf(stderr, "inconsistent: %s kind=%c tags=%s ta=%lld tc=%lld%s\n", key,
            *kind ? *kind : '-', tags, a, cc, final ? " (final)" : "");
  freeReplyObject(rep);
  free(v);
  free(m);
  free(ta);
  free(tc);
  return ok;
}

/* Untagged writes are plain SETs that drop old tags a step later; racing
 * them against tagged writes, msets and deletes must never break the tag
 * bookkeeping: indexes agree with tag sets at every instant, a tagged value
 * always has exactly its tags, and once the writers stop, no untagged value
 * has any. Then evicting ta removes exactly the entries holding an A. */
static void test_plain_and_tagged_writers_keep_tags_consistent(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "mix:");
  redisContext *r = test_redis(test_group_server());
  atomic_int stop = 0;
  mix w[MIX_THREADS];
  pthread_t th[MIX_THREADS];
  for (int i = 0; i < MIX_THREADS; i++) {
    w[i] = (mix){c, i + 1, &stop, 0};
    assert_int_equal(pthread_create(&th[i], NULL, mix_writer, &w[i]), 0);
  }
  long bad = 0, checks = 0;
  for (int round = 0; round < 4000; round++) {
    char key[16], kind;
    snprintf(key, sizeof key, "x%d", round % MIX_KEYS);
    bad += !mix_check(c, r, key, 0, &kind);
    checks++;
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < MIX_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].failures, 0);
  }
  long tagged_a = 0;
  for (int k = 0; k < MIX_KEYS; k++) {
    char key[16], kind;
    snprintf(key, sizeof key, "x%d", k);
    bad += !mix_check(c, r, key, 1, &kind);
    tagged_a += kind == 'A';
  }
  assert_int_equal(bad, 0);
  const char *ta[] = {"ta"};
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, ta, 1, &n), CACHET_OK);
  assert_int_equal(n, (uint64_t)tagged_a);
  for (int k = 0; k < MIX_KEYS; k++) {
    char key[16], kind;
    snprintf(key, sizeof key, "x%d", k);
    assert_true(mix_check(c, r, key, 1, &kind));
    assert_int_not_equal(kind, 'A');
  }
  printf("  mix: %ld checks, %ld entries with ta at the end\n", checks,
         tagged_a);
  redisFree(r);
  cachet_close(c);
}

/* Writes the tag before the eviction starts (those must go) and keeps
 * writing it while the eviction runs (those may stay). */
static void *hot_writer(void *arg) {
  hot *h = arg;
  const char *tags[] = {"hot"};
  for (int i = 0; !atomic_load(&h->stop); i++) {
    char key[32];
    int kl;
    if (!atomic_load(&h->started)) {
      if (i == 2000)
        atomic_store(&h->pre_done, 1);
      kl = snprintf(key, sizeof key, "pre%d", i);
    } else {
      /* Overwrite the old entries too: a write after the start may survive,
       * the value from before may not. */
      kl = i % 2 ? snprintf(key, sizeof key, "old%d", i % 20000)
                 : snprintf(key, sizeof key, "post%d", i);
    }
    if (cachet_set_tags(h->c, key, (size_t)kl, "post", 4, 0, tags, 1) !=
        CACHET_OK)
      h->failures++;
    h->writes++;
  }
  return NULL;
}

static void test_evict_during_concurrent_writes_terminates(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "hot:");
  const char *tags[] = {"hot"};
  populate(c, "old", 0, 20000, "old", tags, 1, 0);
  hot h = {c, 0, 0, 0, 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, hot_writer, &h), 0);
  while (!atomic_load(&h.pre_done))
    test_sleep_ms(1);
  atomic_store(&h.started, 1);
  test_sleep_ms(5);
  uint64_t n = 0;
  int rc = cachet_evict_tags(c, tags, 1, &n);
  atomic_store(&h.stop, 1);
  pthread_join(th, NULL);
  printf("  evicted %llu while %ld writes ran\n", (unsigned long long)n,
         h.writes);
  assert_int_equal(rc, CACHET_OK);
  assert_int_equal(h.failures, 0);
  assert_true(n >= 20000);
  /* Nothing written before the call survives it. */
  for (int i = 0; i < 20000; i++) {
    char key[32];
    snprintf(key, sizeof key, "old%d", i);
    void *v = NULL;
    size_t len = 0;
    rc = cachet_get(c, key, strlen(key), &v, &len);
    assert_true(rc == CACHET_OK || rc == CACHET_MISS);
    if (rc == CACHET_OK) {
      assert_memory_equal(v, "post", 4);
      cachet_free(v);
    }
  }
  /* pre0..pre1999 were all written before the flag that starts the call. */
  for (int i = 0; i < 2000; i++) {
    char key[32];
    snprintf(key, sizeof key, "pre%d", i);
    assert_false(test_hit(c, key, NULL));
  }
  cachet_close(c);
}

/* ---- NOSCRIPT in the middle of a run ------------------------------------ */

typedef struct flusher {
  const test_server *s;
  int calls;
  int flushed;
} flusher;

static void flush_once(void *ud, const char *op, uint64_t done) {
  flusher *f = ud;
  (void)op;
  (void)done;
  if (f->calls++ == 2) {
    redisContext *r = test_redis(f->s);
    freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
    redisFree(r);
    f->flushed = 1;
  }
}

static void
test_script_flush_mid_eviction_and_prune_is_invisible(void **state) {
  (void)state;
  flusher f = {test_group_server(), 0, 0};
  cachet_options o;
  test_options(test_group_server(), &o, "flushev:");
  o.progress = flush_once;
  o.progress_ud = &f;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  const char *tags[] = {"f", "g"};
  /* Every bucket is drained in the same round trips, so the flush lands
   * mid-eviction only when a bucket takes more than one chunk: 40000
   * entries are ~156 a bucket, three chunks of 64. */
  populate(c, "k", 0, 40000, "v", tags, 2, 0);
  cachet_metrics before;
  cachet_metrics_snapshot(c, &before);
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, tags, 1, &n), CACHET_OK);
  assert_int_equal(n, 40000);
  assert_true(f.flushed);
  cachet_metrics after;
  cachet_metrics_snapshot(c, &after);
  assert_true(after.script_reloads > before.script_reloads);

  /* Prune, flushed part-way: expired members in many indexes. Entries
   * without expiry keep the indexes themselves alive. */
  populate(c, "q", 0, 3000, "v", tags, 2, 0);
  populate(c, "p", 0, 3000, "v", tags, 2, 10);
  test_sleep_ms(50);
  f.calls = 0;
  f.flushed = 0;
  uint64_t pruned = 0;
  assert_int_equal(cachet_prune(c, &pruned), CACHET_OK);
  assert_true(f.flushed);
  /* Writes prune expired members too, so some were gone before the call;
   * what matters is that none is left and the live ones stay. */
  assert_true(pruned > 0 && pruned <= 6000);
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommand(
      r, "EVAL %s 0",
      "local n = 0 for _, k in ipairs(redis.call('KEYS', 'flushev:{??}t:*'))"
      " do n = n + redis.call('ZCARD', k) end return n");
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  assert_int_equal(rep->integer, 6000);
  freeReplyObject(rep);
  redisFree(r);
  cachet_close(c);
}

/* ---- Round trips ------------------------------------------------------- */

/* The evict-tags machine run directly, for its count of pipelined round
 * trips (the public call returns only the entries evicted). */
static uint64_t evict_round_trips(cachet *c, const char *const *tags,
                                  size_t ntags, uint64_t *evicted) {
  cachet_op_evict x;
  assert_int_equal(cachet_op_evict_init(&x, c, tags, ntags), CACHET_OK);
  assert_int_equal(cachet_run(c, &x.op), CACHET_OK);
  uint64_t sends = x.sends;
  *evicted = x.evicted;
  x.op.k->free(&x.op);
  return sends;
}

static void test_evict_round_trips_do_not_grow_with_buckets(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "rt:");
  redisContext *r = test_redis(test_group_server());
  /* One tag of 200 entries, each with a second tag: ~140 buckets. The
   * sweep, the tag sets, the chunks: 3, where a bucket at a time took ~4
   * per bucket. */
  const char *one[] = {"user:42", "other"};
  populate(c, "a", 0, 200, "v", one, 2, 0);
  unsigned char hit[CACHET_BUCKETS] = {0};
  long long live = 0;
  for (int i = 0; i < 200; i++) {
    char key[16];
    int kl = snprintf(key, sizeof key, "a%d", i);
    live += !hit[cachet_bucket(key, (size_t)kl)]++;
  }
  /* Scripts already loaded, as in a running service: a NOSCRIPT answer
   * sends a command again behind its pipeline, which costs a round trip
   * or two once. */
  for (int id = 0; id < CACHET_SCRIPT_COUNT; id++)
    test_command(test_group_server(), "SCRIPT LOAD %b", cachet_scripts[id].body,
                 cachet_scripts[id].len);
  long long exists0 = test_cmdstat(r, "exists", "calls");
  long long scripts0 = test_scripts_run(r);
  uint64_t evicted = 0;
  uint64_t rt = evict_round_trips(c, one, 1, &evicted);
  assert_int_equal(evicted, 200);
  assert_int_equal(rt, 3); /* the goal: at most 10 */
  /* Per bucket with members: one evict_chunk, with no snapshot since the
   * sweep read all of t; and the sweep, a ZRANGE of t and an EXISTS of e
   * per bucket. Empty buckets cost nothing more. */
  assert_int_equal(test_scripts_run(r) - scripts0, live);
  assert_int_equal(test_cmdstat(r, "exists", "calls") - exists0,
                   CACHET_BUCKETS);
  assert_int_equal(test_cmdstat(r, "renamenx", "calls"), 0);
  /* 50 tags of 200 entries each: the round trips are those of one tag
   * and a few more for the pipeline cap, not fifty times as many. */
  char names[50][16];
  const char *tags[50];
  for (int t = 0; t < 50; t++) {
    snprintf(names[t], sizeof names[t], "product:%d", t);
    tags[t] = names[t];
    const char *two[] = {names[t], "shared"};
    char stem[16];
    snprintf(stem, sizeof stem, "p%d-", t);
    populate(c, stem, 0, 200, "v", two, 2, 0);
  }
  rt = evict_round_trips(c, tags, 50, &evicted);
  assert_int_equal(evicted, 50 * 200);
  assert_in_range(rt, 1, 40);
  /* Nothing of them is left readable, and the shared tag's indexes hold
   * no member of theirs. */
  for (int t = 0; t < 50; t += 7) {
    char key[24];
    snprintf(key, sizeof key, "p%d-%d", t, t * 3);
    assert_false(test_hit(c, key, NULL));
  }
  const char *shared[] = {"shared"};
  assert_int_equal(evict_round_trips(c, shared, 1, &evicted), 1);
  assert_int_equal(evicted, 0);
  redisFree(r);
  cachet_close(c);
}

/* Entries of one bucket that carry so many tags that one chunk call cannot
 * take them all: every one is still evicted (the rest drained from a
 * snapshot), none left readable. */
static void test_evict_of_a_bucket_too_heavy_for_one_call(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "heavy:");
  char names[32][8];
  const char *tags[32];
  for (int t = 0; t < 32; t++) {
    snprintf(names[t], sizeof names[t], "h%d", t);
    tags[t] = names[t];
  }
  /* 40 keys of bucket 0: 40 x (2 + 32) operations, over 1024. */
  char keys[40][16];
  int found = 0;
  for (int i = 0; found < 40; i++) {
    int kl = snprintf(keys[found], sizeof keys[found], "k%d", i);
    if (cachet_bucket(keys[found], (size_t)kl) == 0)
      found++;
  }
  for (int i = 0; i < 40; i++)
    assert_int_equal(
        cachet_set_tags(c, keys[i], strlen(keys[i]), "v", 1, 0, tags, 32),
        CACHET_OK);
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, tags, 1, &n), CACHET_OK);
  assert_int_equal(n, 40);
  for (int i = 0; i < 40; i++)
    assert_false(test_hit(c, keys[i], NULL));
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_index_ttl_is_only_lengthened),
      cmocka_unit_test(test_large_value_is_staged_outside_the_script),
      cmocka_unit_test(test_evict_tag_removes_only_entries_carrying_it),
      cmocka_unit_test(test_evict_tags_after_overwrite_keeps_new_value),
      cmocka_unit_test(test_evict_of_several_tags_counts_each_entry_once),
      cmocka_unit_test(test_evict_round_trips_do_not_grow_with_buckets),
      cmocka_unit_test(test_evict_of_a_bucket_too_heavy_for_one_call),
      cmocka_unit_test(test_evict_rejects_empty_tag),
      cmocka_unit_test(test_delete_removes_index_memberships),
      cmocka_unit_test(test_set_without_tags_drops_memberships),
      cmocka_unit_test(test_untagged_set_runs_a_script_only_over_tags),
      cmocka_unit_test(test_evict_finishes_an_abandoned_eviction),
      cmocka_unit_test(test_expired_members_are_not_counted_as_evicted),
      cmocka_unit_test(
          test_concurrent_reader_never_sees_value_without_membership),
      cmocka_unit_test(
          test_index_stays_bounded_under_churn_and_prune_cleans_it),
      cmocka_unit_test(test_evict_200k_members_in_chunks_while_server_answers),
      cmocka_unit_test(test_plain_and_tagged_writers_keep_tags_consistent),
      cmocka_unit_test(test_evict_during_concurrent_writes_terminates),
      cmocka_unit_test(test_script_flush_mid_eviction_and_prune_is_invisible),
  };
  return cmocka_run_group_tests_name("tags", tests, test_group_setup,
                                     test_group_teardown);
}
