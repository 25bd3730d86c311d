/* Redis Cluster: every operation against a real local cluster of 3 masters
 * and 3 replicas, a slot resharded while operations run, a master killed,
 * and a failover. The destructive tests run last, in order. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachet.h"
#include "cluster_harness.h"
#include "config.h"
#include "crc16.h"
#include "harness.h"
#include "keys.h"
#include "link.h"
#include "router.h"
#ifdef CACHET_VIA_ASYNC_H
#include <event2/event.h>
#endif

static test_cluster cl;
static int cl_ok;

static int setup(void **state) {
  (void)state;
  cl_ok = test_cluster_start(&cl, 3, 1) == 0;
  return cl_ok ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  test_cluster_stop(&cl);
  return 0;
}

static long long node_int(int i, const char *cmd) {
  redisContext *c = test_cluster_node(&cl, i);
  assert_non_null(c);
  long long v = test_int(c, cmd);
  redisFree(c);
  return v;
}

/* The slot of a user key's value key under `prefix`. */
static unsigned key_slot(cachet *c, const char *key) {
  char *vk = NULL;
  size_t vl = 0;
  assert_int_equal(cachet_value_key(c, key, strlen(key), &vk, &vl), CACHET_OK);
  unsigned s = cachet_key_slot(vk, vl);
  cachet_free(vk);
  return s;
}

/* ---- configuration ---------------------------------------------------- */

static const char *no_env(void *ud, const char *name) {
  (void)ud;
  (void)name;
  return NULL;
}

static const char *cluster_env(void *ud, const char *name) {
  (void)ud;
  if (strcmp(name, "CACHET_CLUSTER") == 0)
    return "1";
  if (strcmp(name, "CACHET_HOST") == 0)
    return "10.0.0.7";
  if (strcmp(name, "CACHET_PORT") == 0)
    return "7001";
  return NULL;
}

static void test_cluster_url_and_env_configure_seeds(void **state) {
  (void)state;
  cachet_options o;
  cachet_config cfg;
  cachet_options_init(&o);
  o.url = "redis+cluster://u:p%40ss@h1:7000,h2,[::1]:7002";
  assert_int_equal(cachet_config_resolve(&cfg, &o, no_env, NULL), CACHET_OK);
  assert_int_equal(cfg.cluster, 1);
  assert_string_equal(cfg.cluster_seeds, "h1:7000,h2:6379,[::1]:7002");
  assert_string_equal(cfg.host, "h1");
  assert_int_equal(cfg.port, 7000);
  assert_string_equal(cfg.username, "u");
  assert_string_equal(cfg.password, "p@ss");
  cachet_config_free(&cfg);

  cachet_options_init(&o);
  o.use_env = 1;
  assert_int_equal(cachet_config_resolve(&cfg, &o, cluster_env, NULL),
                   CACHET_OK);
  assert_int_equal(cfg.cluster, 1);
  assert_string_equal(cfg.cluster_seeds, "10.0.0.7:7001");
  cachet_config_free(&cfg);

  cachet_options_init(&o);
  o.url = "redis://h:1";
  o.cluster = 1;
  assert_int_equal(cachet_config_resolve(&cfg, &o, no_env, NULL), CACHET_OK);
  assert_string_equal(cfg.cluster_seeds, "h:1");
  cachet_config_free(&cfg);

  /* Plain URLs stay standalone. */
  cachet_options_init(&o);
  o.url = "redis://h:1";
  assert_int_equal(cachet_config_resolve(&cfg, &o, no_env, NULL), CACHET_OK);
  assert_int_equal(cfg.cluster, 0);
  assert_null(cfg.cluster_seeds);
  cachet_config_free(&cfg);

  /* A cluster has database 0 only, no unix socket, no empty node. */
  const char *bad[] = {"redis+cluster://h:1/2", "redis+cluster://h:1,,h:2",
                       "redis+cluster://h:1,h:0", "redis+cluster://"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cachet_options_init(&o);
    o.url = bad[i];
    assert_int_equal(cachet_config_resolve(&cfg, &o, no_env, NULL),
                     CACHET_ECONFIG);
  }
  cachet_options_init(&o);
  o.unix_path = "/tmp/x.sock";
  o.cluster = 1;
  assert_int_equal(cachet_config_resolve(&cfg, &o, no_env, NULL),
                   CACHET_ECONFIG);
  cachet_options_init(&o);
  o.cluster = 2;
  assert_int_equal(cachet_config_resolve(&cfg, &o, no_env, NULL),
                   CACHET_ECONFIG);
}

/* A handle on the cluster URL `url`, with a deadline of timeout_ms. */
static cachet *open_url(const char *url, const char *prefix, int timeout_ms) {
  cachet_options o;
  cachet_options_init(&o);
  o.url = url;
  o.prefix = prefix;
  o.timeout_ms = timeout_ms;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  return c;
}

/* Every seed down: each call fails at once with ECONN, naming the seed and
 * why, as often as it is made: no wait for a slot map that nothing will
 * bring, and (async) no reconnection loop in the meantime. A live seed
 * after a dead one serves. */
static void test_dead_seeds_fail_each_call_with_econn(void **state) {
  (void)state;
  int dead = test_free_port();
  char url[96], name[32];
  snprintf(url, sizeof url, "redis+cluster://127.0.0.1:%d", dead);
  snprintf(name, sizeof name, "127.0.0.1:%d", dead);
  cachet *c = open_url(url, "dead:", 2000);
  for (int i = 0; i < 3; i++) {
    void *v = NULL;
    size_t n = 0;
    assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_ECONN);
    assert_non_null(strstr(cachet_last_error(), "no node answered"));
    assert_non_null(strstr(cachet_last_error(), name));
    assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_ECONN);
  }
  cachet_close(c);

  snprintf(url, sizeof url, "redis+cluster://127.0.0.1:%d,127.0.0.1:%d", dead,
           cl.port[0]);
  c = open_url(url, "dead:", 2000);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  assert_int_equal(test_hit(c, "k", "v"), 1);
  cachet_close(c);
}

/* A seed that takes connections and never answers (a hung server, a black
 * hole), before a live one: a call may time out while it is asked, but it
 * cannot hold the slot map back for good: the live seed is asked next,
 * and the calls after succeed. */
static void test_silent_seed_does_not_hold_the_map_back(void **state) {
  (void)state;
  int silent;
  int fd = test_black_hole(&silent);
  assert_true(fd >= 0);
  char url[96];
  snprintf(url, sizeof url, "redis+cluster://127.0.0.1:%d,127.0.0.1:%d", silent,
           cl.port[0]);
  cachet *c = open_url(url, "silent:", 300);
  int rc = cachet_set(c, "k", 1, "v", 1, 0);
  printf("# the first call: %s %s\n", cachet_status_name(rc),
         cachet_last_error());
  if (rc != CACHET_OK) {
    assert_int_equal(rc, CACHET_ETIMEDOUT);
    assert_non_null(strstr(cachet_last_error(), "CLUSTER SLOTS"));
  }
  for (int i = 0; i < 3; i++) {
    assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
    assert_int_equal(test_hit(c, "k", "v"), 1);
  }
  cachet_close(c);
  close(fd);
}

#ifdef CACHET_VIA_ASYNC_H
/* A raw async handle on a loop of the test's own, in the async build only
 * (the shim's loop runs on a thread of its own, out of reach). */
static int async_calls, async_rc;
static void async_status(int status, void *ud) {
  (void)ud;
  async_calls++;
  async_rc = status;
}

static void async_guard(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  *(int *)arg = 1;
}

/* Closing an async cluster handle while a slot-map refresh is in flight.
 * Close drops the connection asking for the map; that drop must not ask
 * the next candidate, or the connection it opens outlives the handle and
 * reads its answer into freed memory (ASan, LeakSanitizer, valgrind). The
 * loop must hold no event of the handle after the close. */
static void test_async_close_while_the_map_refreshes(void **state) {
  (void)state;
  struct event_base *base = event_base_new();
  assert_non_null(base);
  cachet_options o;
  char url[128];
  test_cluster_options(&cl, &o, "closemap:", url, sizeof url);
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);

  /* A first call loads the map. */
  int fired = 0;
  struct event *guard = evtimer_new(base, async_guard, &fired);
  assert_non_null(guard);
  struct timeval tv = {60, 0};
  evtimer_add(guard, &tv);
  async_calls = 0;
  assert_int_equal(cachet_async_exists(a, "k", 1, async_status, NULL),
                   CACHET_OK);
  while (async_calls == 0 && !fired)
    event_base_loop(base, EVLOOP_ONCE);
  assert_false(fired);
  assert_int_equal(async_rc, CACHET_MISS);

  /* The map turns stale and due for a refresh; the next call asks for one
   * (CLUSTER SLOTS to the first master) and the handle closes before the
   * loop sends it. Every candidate after the first is then one the close
   * has passed or will pass, the seed among them. */
  test_sleep_ms(CACHET_REFRESH_MIN_MS + 20);
  cachet_router_stale(cachet_links_router(cachet_async_cachet(a)));
  async_calls = 0;
  assert_int_equal(cachet_async_exists(a, "k", 1, async_status, NULL),
                   CACHET_OK);
  assert_int_equal(async_calls, 0);
  cachet_async_close(a);
  assert_int_equal(async_calls, 1);
  assert_int_equal(async_rc, CACHET_ECONN);

  /* Nothing of the handle is left on the loop: only the guard. */
  printf("# events left after the close: %d\n",
         event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED));
  assert_int_equal(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 1);
  event_free(guard);
  assert_int_equal(event_base_loop(base, EVLOOP_NONBLOCK), 1);
  event_base_free(base);
}
#endif

/* A near cache's feed loads the slot map itself when the handle opens. It
 * must not take one of the handle's links for that: with pool_size 1, a
 * feed whose CLUSTER SLOTS waited on seeds that never answer held the only
 * link, and a caller's first call failed with ETIMEDOUT ("no pooled
 * connection became free"). Found by wire_fuzzer. The caller may wait for
 * the map the feed is loading, but gets its own result. */
#ifndef CACHET_VIA_ASYNC_H
static void test_the_near_feed_takes_no_link_from_callers(void **state) {
  (void)state;
  int silent[2], fd[2];
  for (int i = 0; i < 2; i++) {
    fd[i] = test_black_hole(&silent[i]);
    assert_true(fd[i] >= 0);
  }
  char url[128];
  snprintf(url, sizeof url,
           "redis+cluster://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", silent[0],
           silent[1], cl.port[0]);
  cachet_options o;
  cachet_options_init(&o);
  o.url = url;
  o.prefix = "feedlink:";
  o.timeout_ms = 500;
  o.pool_size = 1;
  o.near_cache_bytes = 1 << 20;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  /* The feed asks the first silent seed: once its connection is there,
   * the feed is inside its refresh, for about two timeouts. */
  struct pollfd p = {fd[0], POLLIN, 0};
  assert_int_equal(poll(&p, 1, 10000), 1);
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, "k", 1, &v, &n);
  printf("# the first get: %s %s\n", cachet_status_name(rc),
         cachet_last_error());
  assert_int_equal(rc, CACHET_MISS);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  assert_int_equal(test_hit(c, "k", "v"), 1);
  cachet_close(c);
  for (int i = 0; i < 2; i++)
    close(fd[i]);
}
#endif

/* ---- operations -------------------------------------------------------- */

static void test_core_operations_route_to_every_master(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "core:");
  char key[32], val[32];
  unsigned char masters_hit[TEST_CLUSTER_MAX] = {0};
  for (int i = 0; i < 300; i++) {
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "v%d", i);
    const char *tags[] = {i % 2 ? "odd" : "even", "all"};
    assert_int_equal(
        cachet_set_tags(c, key, strlen(key), val, strlen(val), 60000, tags, 2),
        CACHET_OK);
    if (i < 30)
      masters_hit[test_cluster_owner(&cl, key_slot(c, key))] = 1;
  }
  for (int i = 0; i < 300; i++) {
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "v%d", i);
    void *out = NULL;
    size_t len = 0;
    assert_int_equal(cachet_get(c, key, strlen(key), &out, &len), CACHET_OK);
    assert_int_equal(len, strlen(val));
    assert_memory_equal(out, val, len);
    cachet_free(out);
    assert_int_equal(cachet_exists(c, key, strlen(key)), CACHET_OK);
    int64_t ttl = 0;
    assert_int_equal(cachet_ttl(c, key, strlen(key), &ttl), CACHET_OK);
    assert_true(ttl > 0 && ttl <= 60000);
  }
  /* Data is spread over all three masters. */
  int masters = 0;
  for (int i = 0; i < cl.n; i++) {
    if (!test_cluster_is_master(&cl, i))
      continue;
    masters++;
    assert_true(node_int(i, "DBSIZE") > 0);
  }
  assert_int_equal(masters, 3);
  int distinct = 0;
  for (int i = 0; i < TEST_CLUSTER_MAX; i++)
    distinct += masters_hit[i];
  assert_int_equal(distinct, 3);

  assert_int_equal(cachet_delete(c, "k0", 2), CACHET_OK);
  assert_int_equal(cachet_delete(c, "k0", 2), CACHET_MISS);
  void *out = NULL;
  size_t len = 0;
  assert_int_equal(cachet_get(c, "k0", 2, &out, &len), CACHET_MISS);
  assert_int_equal(cachet_exists(c, "k0", 2), CACHET_MISS);

  /* Evict fans out over the buckets, hence over the masters. */
  uint64_t n = 0;
  const char *odd[] = {"odd"};
  assert_int_equal(cachet_evict_tags(c, odd, 1, &n), CACHET_OK);
  assert_int_equal(n, 150);
  assert_int_equal(cachet_get(c, "k1", 2, &out, &len), CACHET_MISS);
  assert_int_equal(cachet_get(c, "k2", 2, &out, &len), CACHET_OK);
  cachet_free(out);
  const char *all[] = {"all"};
  assert_int_equal(cachet_evict_tags(c, all, 1, &n), CACHET_OK);
  assert_int_equal(n, 149);
  assert_int_equal(cachet_ping(c), CACHET_OK);
  cachet_close(c);
}

static void test_clear_and_prune_cover_every_master(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "clr:");
  cachet *other = test_cluster_open(&cl, "clr:x:");
  char key[32];
  /* The 100 that expire (k0-k99) are written last: a write prunes expired
   * members of its index, so under load the later writes could prune all
   * of them first. Written last, the newest still expires after the last
   * write, and prune has at least it to find. */
  for (int j = 0; j < 400; j++) {
    int i = (j + 100) % 400;
    snprintf(key, sizeof key, "k%d", i);
    const char *tags[] = {"t"};
    assert_int_equal(
        cachet_set_tags(c, key, strlen(key), "v", 1, i < 100 ? 50 : 0, tags, 1),
        CACHET_OK);
  }
  assert_int_equal(cachet_set(other, "keep", 4, "v", 1, 0), CACHET_OK);
  /* Foreign keys on every master. */
  for (int i = 0; i < cl.n; i++) {
    if (!test_cluster_is_master(&cl, i))
      continue;
    redisContext *r = test_cluster_node(&cl, i);
    for (int j = 0; j < 200; j++) {
      redisReply *x = redisCommand(r, "SET clr:foreign%d keep", j);
      if (x != NULL)
        freeReplyObject(x); /* MOVED for the other masters' slots. */
    }
    redisFree(r);
  }
  cachet_lock *lk = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 0, &lk), CACHET_OK);

  test_sleep_ms(120);
  uint64_t pruned = 0;
  assert_int_equal(cachet_prune(c, &pruned), CACHET_OK);
  /* Writes prune too (one in 8), so prune found at most the 100 expired
   * members; none is left on any master. */
  assert_true(pruned > 0 && pruned <= 100);
  assert_int_equal(cachet_prune(c, &pruned), CACHET_OK);
  assert_int_equal(pruned, 0);
  long long members = 0;
  for (int i = 0; i < cl.n; i++) {
    if (!test_cluster_is_master(&cl, i))
      continue;
    redisContext *r = test_cluster_node(&cl, i);
    redisReply *x = redisCommand(r, "KEYS clr:{*}t:t");
    for (size_t k = 0; k < x->elements; k++) {
      redisReply *z = redisCommand(r, "ZCARD %s", x->element[k]->str);
      members += z->integer;
      freeReplyObject(z);
    }
    freeReplyObject(x);
    redisFree(r);
  }
  assert_int_equal(members, 300);

  uint64_t removed = 0;
  assert_int_equal(cachet_clear(c, 1, &removed), CACHET_OK);
  assert_int_equal(removed, 300);
  assert_int_equal(cachet_clear(c, 0, &removed), CACHET_OK);
  assert_int_equal(removed, 300);
  assert_int_equal(cachet_exists(c, "k150", 4), CACHET_MISS);
  assert_int_equal(cachet_exists(other, "keep", 4), CACHET_OK);
  long long foreign = 0;
  for (int i = 0; i < cl.n; i++) {
    if (!test_cluster_is_master(&cl, i))
      continue;
    redisContext *r = test_cluster_node(&cl, i);
    redisReply *x = redisCommand(r, "KEYS clr:foreign*");
    foreign += (long long)x->elements;
    freeReplyObject(x);
    redisFree(r);
  }
  assert_int_equal(foreign, 200);
  /* The lock survives a clear. */
  assert_int_equal(cachet_lock_release(c, lk), CACHET_OK);
  cachet_lock_free(lk);
  cachet_close(other);
  cachet_close(c);
}

/* Large values are staged: SET to a w key, then RENAME into place inside
 * set_tags. Both keys must share the entry's slot, or the cluster refuses
 * the script (CROSSSLOT): every master gets some. */
static void test_large_values_are_staged_in_the_entry_slot(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "stage:");
  size_t n = (size_t)256 << 10;
  char *big = malloc(n);
  assert_non_null(big);
  const char *tags[] = {"big"};
  char key[32];
  unsigned char masters_hit[TEST_CLUSTER_MAX] = {0};
  for (int i = 0; i < 12; i++) {
    memset(big, 'a' + i, n);
    snprintf(key, sizeof key, "big%d", i);
    masters_hit[test_cluster_owner(&cl, key_slot(c, key))] = 1;
    assert_int_equal(cachet_set_tags(c, key, strlen(key), big, n, 60000, tags,
                                     i % 2 ? 1 : 0),
                     CACHET_OK);
  }
  int distinct = 0;
  for (int i = 0; i < TEST_CLUSTER_MAX; i++)
    distinct += masters_hit[i];
  assert_int_equal(distinct, 3);
  for (int i = 0; i < 12; i++) {
    snprintf(key, sizeof key, "big%d", i);
    void *out = NULL;
    size_t len = 0;
    assert_int_equal(cachet_get(c, key, strlen(key), &out, &len), CACHET_OK);
    assert_int_equal(len, n);
    assert_int_equal(((char *)out)[n - 1], 'a' + i);
    cachet_free(out);
  }
  uint64_t evicted = 0;
  assert_int_equal(cachet_evict_tags(c, tags, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 6);
  free(big);
  cachet_close(c);
}

static void test_locks_and_get_or_set(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "lk:");
  for (int i = 0; i < 20; i++) {
    char name[16];
    snprintf(name, sizeof name, "lock%d", i);
    cachet_lock *a = NULL, *b = NULL;
    assert_int_equal(cachet_lock_acquire(c, name, 5000, 0, &a), CACHET_OK);
    assert_int_equal(cachet_lock_acquire(c, name, 5000, 0, &b),
                     CACHET_NOT_ACQUIRED);
    assert_int_equal(cachet_lock_extend(c, a, 10000), CACHET_OK);
    assert_int_equal(cachet_lock_release(c, a), CACHET_OK);
    assert_int_equal(cachet_lock_release(c, a), CACHET_LOCK_EXPIRED);
    assert_int_equal(cachet_lock_acquire(c, name, 5000, 0, &b), CACHET_OK);
    assert_true(cachet_lock_fence(b) > cachet_lock_fence(a));
    assert_int_equal(cachet_lock_release(c, b), CACHET_OK);
    cachet_lock_free(a);
    cachet_lock_free(b);
  }
  cachet_close(c);
}

static int loads;
static int loader(void *ud, const void *key, size_t keylen, void **val,
                  size_t *len, int64_t *ttl_ms) {
  (void)ud;
  (void)ttl_ms;
  loads++;
  *val = malloc(keylen);
  memcpy(*val, key, keylen);
  *len = keylen;
  return 0;
}

static void test_get_or_set_and_health(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "gos:");
  /* Every master forgets the scripts: each reloads where it said NOSCRIPT. */
  for (int i = 0; i < cl.n; i++) {
    redisContext *r = test_cluster_node(&cl, i);
    freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
    redisFree(r);
  }
  loads = 0;
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 20; i++) {
      char key[16];
      snprintf(key, sizeof key, "g%d", i);
      void *v = NULL;
      size_t l = 0;
      const char *tags[] = {"gt"};
      assert_int_equal(cachet_get_or_set(c, key, strlen(key), loader, NULL,
                                         60000, tags, 1, &v, &l),
                       CACHET_OK);
      assert_memory_equal(v, key, l);
      cachet_free(v);
    }
  assert_int_equal(loads, 20);

  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.healthy, 1);
  assert_string_equal(h.maxmemory_policy, "noeviction");
  assert_true(h.scripts_loaded >= 1);

  /* Every master closes our idle connections: no master is called down
   * (found by ops_model_cluster_fuzzer). */
  for (int i = 0; i < cl.n; i++) {
    redisContext *r = test_cluster_node(&cl, i);
    freeReplyObject(redisCommand(r, "CLIENT KILL TYPE normal SKIPME yes"));
    redisFree(r);
  }
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.healthy, 1);
  assert_null(strstr(h.message, "master"));
  cachet_close(c);
}

/* A single untagged set over tagged entries, across the slots: the plain
 * SET and its SMEMBERS go to the entry's master, and the old tags go. */
static void test_untagged_set_over_tagged_entries(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "plain1:");
  const char *x[] = {"px"};
  char key[16];
  for (int i = 0; i < 40; i++) {
    int kl = snprintf(key, sizeof key, "s%d", i);
    assert_int_equal(cachet_set_tags(c, key, (size_t)kl, "old", 3, 0, x, 1),
                     CACHET_OK);
    assert_int_equal(cachet_set(c, key, (size_t)kl, key, (size_t)kl, 60000),
                     CACHET_OK);
  }
  uint64_t n = 1;
  assert_int_equal(cachet_evict_tags(c, x, 1, &n), CACHET_OK);
  assert_int_equal(n, 0);
  for (int i = 0; i < 40; i++) {
    int kl = snprintf(key, sizeof key, "s%d", i);
    void *v = NULL;
    size_t len = 0;
    assert_int_equal(cachet_get(c, key, (size_t)kl, &v, &len), CACHET_OK);
    assert_memory_equal(v, key, (size_t)kl);
    cachet_free(v);
  }
  cachet_close(c);
}

/* Untagged entries go out as plain SETs, one EXISTS per slot group: over
 * entries that had tags, the old memberships go, in every slot. */
static void test_mset_untagged_over_tagged_per_slot(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "plain:");
  enum { N = 300 };
  static cachet_entry e[N];
  static char keys[N][16];
  const char *tags[] = {"pt"};
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < N; i++) {
      memset(&e[i], 0, sizeof e[i]);
      snprintf(keys[i], sizeof keys[i], "u%d", i);
      e[i].key = keys[i];
      e[i].keylen = strlen(keys[i]);
      e[i].val = round == 0 ? "old" : keys[i];
      e[i].len = strlen(e[i].val);
      e[i].ttl_ms = 60000;
      e[i].tags = round == 0 && i % 2 ? tags : NULL;
      e[i].ntags = round == 0 && i % 2 ? 1 : 0;
    }
    int mrc = cachet_mset(c, e, N);
    if (mrc != CACHET_OK)
      fprintf(stderr, "mset: %s\n", cachet_last_error());
    assert_int_equal(mrc, CACHET_OK);
    for (int i = 0; i < N; i++)
      assert_int_equal(e[i].status, CACHET_OK);
  }
  uint64_t n = 1;
  assert_int_equal(cachet_evict_tags(c, tags, 1, &n), CACHET_OK);
  assert_int_equal(n, 0);
  for (int i = 0; i < N; i++) {
    e[i].val = NULL;
    e[i].len = 0;
  }
  assert_int_equal(cachet_mget(c, e, N), CACHET_OK);
  for (int i = 0; i < N; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    assert_int_equal(e[i].outlen, strlen(keys[i]));
    assert_memory_equal(e[i].out, keys[i], e[i].outlen);
    cachet_free(e[i].out);
  }
  cachet_close(c);
}

static void test_mset_mget_group_per_slot(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "batch:");
  enum { N = 600 };
  static cachet_entry e[N];
  static char keys[N][16];
  const char *tags[] = {"bt"};
  for (int i = 0; i < N; i++) {
    memset(&e[i], 0, sizeof e[i]);
    snprintf(keys[i], sizeof keys[i], "b%d", i);
    e[i].key = keys[i];
    e[i].keylen = strlen(keys[i]);
    e[i].val = keys[i];
    e[i].len = strlen(keys[i]);
    e[i].ttl_ms = 60000;
    e[i].tags = i % 3 == 0 ? tags : NULL;
    e[i].ntags = i % 3 == 0 ? 1 : 0;
  }
  /* Every master forgets the scripts: each reloads where it said NOSCRIPT. */
  for (int i = 0; i < cl.n; i++) {
    redisContext *r = test_cluster_node(&cl, i);
    freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
    redisFree(r);
  }
  int mrc = cachet_mset(c, e, N);
  if (mrc != CACHET_OK)
    fprintf(stderr, "mset: %s\n", cachet_last_error());
  assert_int_equal(mrc, CACHET_OK);
  for (int i = 0; i < N; i++)
    assert_int_equal(e[i].status, CACHET_OK);
  for (int i = 0; i < N; i++) {
    e[i].val = NULL;
    e[i].len = 0;
  }
  e[N - 1].key = "absent";
  e[N - 1].keylen = 6;
  assert_int_equal(cachet_mget(c, e, N), CACHET_OK);
  for (int i = 0; i < N - 1; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    assert_int_equal(e[i].outlen, strlen(keys[i]));
    assert_memory_equal(e[i].out, keys[i], e[i].outlen);
    cachet_free(e[i].out);
  }
  assert_int_equal(e[N - 1].status, CACHET_MISS);
  uint64_t n = 0;
  const char *bt[] = {"bt"};
  assert_int_equal(cachet_evict_tags(c, bt, 1, &n), CACHET_OK);
  assert_int_equal(n, N / 3);
  cachet_close(c);
}

/* ---- reshard under load ---------------------------------------------------
 */

typedef struct loop_arg {
  cachet *c;
  volatile int *stop;
  int ops;
  int errors;
  char last_error[256];
} loop_arg;

static void *op_loop(void *p) {
  loop_arg *a = p;
  char key[32], val[32];
  for (int i = 0; !*a->stop || a->ops < 10000; i++) {
    snprintf(key, sizeof key, "r%d", i % 500);
    snprintf(val, sizeof val, "v%d", i);
    const char *tags[] = {"rt"};
    int rc = cachet_set_tags(a->c, key, strlen(key), val, strlen(val), 60000,
                             tags, i % 2);
    void *out = NULL;
    size_t len = 0;
    if (rc == CACHET_OK)
      rc = cachet_get(a->c, key, strlen(key), &out, &len);
    if (rc == CACHET_OK && (len != strlen(val) || memcmp(out, val, len) != 0))
      rc = CACHET_ECORRUPT;
    cachet_free(out);
    if (rc != CACHET_OK && a->errors++ == 0)
      snprintf(a->last_error, sizeof a->last_error, "%s: %s",
               cachet_status_name(rc), cachet_last_error());
    a->ops += 2;
    if (a->ops > 400000)
      break;
  }
  return NULL;
}

/* A slot put in MIGRATING on its master (the source) and IMPORTING on
 * another, its keys left on the source, until migration_end. */
typedef struct migration {
  unsigned slot;
  redisContext *src, *dst;
  char src_id[41], dst_id[41];
} migration;

static void migration_open(migration *m, unsigned slot) {
  int from = test_cluster_owner(&cl, slot), to = -1;
  for (int i = 0; i < cl.n && to < 0; i++)
    if (i != from && test_cluster_is_master(&cl, i))
      to = i;
  assert_true(from >= 0 && to >= 0);
  m->slot = slot;
  assert_int_equal(test_cluster_node_id(&cl, from, m->src_id), 0);
  assert_int_equal(test_cluster_node_id(&cl, to, m->dst_id), 0);
  assert_non_null(m->src = test_cluster_node(&cl, from));
  assert_non_null(m->dst = test_cluster_node(&cl, to));
}

static void migration_start(migration *m) {
  freeReplyObject(redisCommand(m->dst, "CLUSTER SETSLOT %u IMPORTING %s",
                               m->slot, m->src_id));
  freeReplyObject(redisCommand(m->src, "CLUSTER SETSLOT %u MIGRATING %s",
                               m->slot, m->dst_id));
}

static void migration_end(migration *m) {
  freeReplyObject(redisCommand(m->src, "CLUSTER SETSLOT %u STABLE", m->slot));
  freeReplyObject(redisCommand(m->dst, "CLUSTER SETSLOT %u STABLE", m->slot));
  redisFree(m->src);
  redisFree(m->dst);
}

/* A slot being migrated, its keys still on the source: Redis runs a script
 * there only when every key it declares exists, and stops it half way, its
 * earlier writes done, if it touches one gone missing meanwhile. A retag
 * that deleted the tag set and made it again was stopped so, after the
 * value was written: the value then had no tag set and was in no index. */
static void test_retag_while_its_slot_is_migrating(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "mig:");
  unsigned slot = key_slot(c, "x");
  char y[16];
  for (int i = 0;; i++) { /* another key of the same bucket */
    snprintf(y, sizeof y, "y%d", i);
    if (key_slot(c, y) == slot)
      break;
  }
  const char *ab[] = {"a", "b"}, *bc[] = {"b", "c"};
  assert_int_equal(cachet_set_tags(c, "x", 1, "1", 1, 0, ab, 2), CACHET_OK);
  assert_int_equal(cachet_set_tags(c, y, strlen(y), "y", 1, 0, bc, 2),
                   CACHET_OK);
  migration m;
  migration_open(&m, slot);
  migration_start(&m);
  /* Every key of the retag exists on the source: x's value and tag set,
   * and the indexes of a, b and c. */
  int rc = cachet_set_tags(c, "x", 1, "2", 1, 0, bc, 2);
  const char *why = rc == CACHET_OK ? "" : cachet_last_error();
  char detail[512];
  snprintf(detail, sizeof detail, "%s", why);
  migration_end(&m);
  if (rc != CACHET_OK)
    fail_msg("retag during a migration: %s: %s", cachet_strerror(rc), detail);
  /* The entry is whole: its new tags evict it, its old one does not. */
  uint64_t n = 0;
  const char *a[] = {"a"}, *cc[] = {"c"};
  assert_int_equal(cachet_evict_tags(c, a, 1, &n), CACHET_OK);
  assert_int_equal(test_hit(c, "x", "2"), 1);
  assert_int_equal(cachet_evict_tags(c, cc, 1, &n), CACHET_OK);
  assert_int_equal(test_hit(c, "x", NULL), 0);
  cachet_close(c);
}

typedef struct evict_arg {
  cachet *c;
  const char *tag;
  int rc;
  uint64_t n;
  char why[512];
} evict_arg;

static void *evict_one(void *p) {
  evict_arg *a = p;
  a->rc = cachet_evict_tags(a->c, &a->tag, 1, &a->n);
  snprintf(a->why, sizeof a->why, "%s", cachet_last_error());
  return NULL;
}

/* The same slot state, and an eviction joining a snapshot left by an
 * earlier one, the entry in both the snapshot and the tag index: the chunk
 * that evicts it empties both, and then read the snapshot for the next
 * members, a key gone missing, so Redis stopped the script there. The next
 * members are now read before any are removed, and each index is touched
 * by one ZREM. (What follows, a new snapshot of the tag index, waits with
 * TRYAGAIN until the slot is stable again.) */
static void
test_eviction_drains_a_snapshot_while_its_slot_is_migrating(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "mige:");
  unsigned slot = key_slot(c, "x");
  const char *t1[] = {"t1"};
  assert_int_equal(cachet_set_tags(c, "x", 1, "x", 1, 0, t1, 1), CACHET_OK);
  char *vk = NULL;
  size_t vkl = 0;
  assert_int_equal(cachet_value_key(c, "x", 1, &vk, &vkl), CACHET_OK);
  char tkey[32], ekey[32]; /* "mige:{bb}t:t1", "mige:{bb}e:t1" */
  snprintf(tkey, sizeof tkey, "%.9st:t1", vk);
  snprintf(ekey, sizeof ekey, "%.9se:t1", vk);
  cachet_free(vk);
  migration m;
  migration_open(&m, slot);
  /* An eviction stopped after its snapshot; then x is written again. */
  freeReplyObject(redisCommand(m.src, "RENAME %s %s", tkey, ekey));
  assert_int_equal(cachet_set_tags(c, "x", 1, "y", 1, 0, t1, 1), CACHET_OK);
  long long rejected = test_cmdstat(m.src, "evalsha", "rejected_calls");
  migration_start(&m);
  evict_arg a = {c, "t1", -100, 0, ""};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, evict_one, &a), 0);
  /* Until the eviction waits on TRYAGAIN (a rejected call), or gives up. */
  for (int i = 0;
       i < 250 && test_cmdstat(m.src, "evalsha", "rejected_calls") == rejected;
       i++)
    test_sleep_ms(20);
  migration_end(&m);
  pthread_join(th, NULL);
  if (a.rc != CACHET_OK)
    fail_msg("eviction during a migration: %s: %s", cachet_strerror(a.rc),
             a.why);
  assert_int_equal(a.n, 1);
  assert_int_equal(test_hit(c, "x", NULL), 0);
  cachet_close(c);
}

/* Delete every key of `slot` on master i (other tests' data: every
 * prefix shares the 256 bucket slots), so that the slot can be given
 * away with CLUSTER SETSLOT NODE. */
static void empty_slot(int i, unsigned slot) {
  redisContext *r = test_cluster_node(&cl, i);
  assert_non_null(r);
  for (;;) {
    redisReply *keys = redisCommand(r, "CLUSTER GETKEYSINSLOT %u 1000", slot);
    assert_non_null(keys);
    size_t n = keys->type == REDIS_REPLY_ARRAY ? keys->elements : 0;
    for (size_t k = 0; k < n; k++)
      freeReplyObject(redisCommand(r, "DEL %b", keys->element[k]->str,
                                   keys->element[k]->len));
    freeReplyObject(keys);
    if (n == 0)
      break;
  }
  redisFree(r);
}

/* A command on `r` that must answer +OK. */
static void ok(redisContext *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  if (rep->type == REDIS_REPLY_ERROR)
    fail_msg("%s", rep->str);
  freeReplyObject(rep);
}

/* Does `id`'s line of a CLUSTER NODES reply list `slot`? A line is the
 * id, 7 more fields, then the node's slots, alone or as ranges. */
static int owns(const char *nodes, const char *id, unsigned slot) {
  size_t idlen = strlen(id);
  for (const char *line = nodes; line != NULL && *line != '\0';) {
    const char *end = strchr(line, '\n');
    if (strncmp(line, id, idlen) == 0) {
      const char *p = line;
      for (int f = 0; f < 8 && p != NULL; f++)
        p = strchr(p + 1, ' ');
      for (; p != NULL && (end == NULL || p < end); p = strchr(p + 1, ' ')) {
        unsigned lo, hi;
        int k = sscanf(p, " %u-%u", &lo, &hi);
        if (k == 1)
          hi = lo;
        if (k >= 1 && lo <= slot && slot <= hi)
          return 1;
      }
      return 0;
    }
    line = end != NULL ? end + 1 : NULL;
  }
  return 0;
}

/* Give `slot` (holding no key) from master `from` to master `to` as
 * redis-cli's reshard does (IMPORTING, MIGRATING, then NODE on the new
 * owner first, which bumps its config epoch so that every node takes the
 * change), and wait until all agree. */
static void give_slot(unsigned slot, int from, int to) {
  char fid[41], tid[41];
  assert_int_equal(test_cluster_node_id(&cl, from, fid), 0);
  assert_int_equal(test_cluster_node_id(&cl, to, tid), 0);
  redisContext *src = test_cluster_node(&cl, from),
               *dst = test_cluster_node(&cl, to);
  assert_non_null(src);
  assert_non_null(dst);
  ok(dst, "CLUSTER SETSLOT %u IMPORTING %s", slot, fid);
  ok(src, "CLUSTER SETSLOT %u MIGRATING %s", slot, tid);
  ok(dst, "CLUSTER SETSLOT %u NODE %s", slot, tid);
  ok(src, "CLUSTER SETSLOT %u NODE %s", slot, tid);
  redisFree(src);
  redisFree(dst);
  for (int i = 0; i < cl.n; i++) {
    if (i == from || i == to || !test_cluster_is_master(&cl, i))
      continue;
    redisContext *r = test_cluster_node(&cl, i);
    assert_non_null(r);
    ok(r, "CLUSTER SETSLOT %u NODE %s", slot, tid);
    redisFree(r);
  }
  int agreed = 0;
  for (int t = 0; t < 500 && !agreed; t++) {
    agreed = test_cluster_owner(&cl, slot) == to;
    for (int i = 0; i < cl.n && agreed; i++) {
      redisContext *r = test_cluster_node(&cl, i);
      assert_non_null(r);
      redisReply *rep = redisCommand(r, "CLUSTER NODES");
      assert_non_null(rep);
      /* The new owner's line names the slot (in a range or alone). */
      agreed = owns(rep->str, tid, slot);
      freeReplyObject(rep);
      redisFree(r);
    }
    if (!agreed)
      test_sleep_ms(20);
  }
  assert_true(agreed);
}

/* A pipeline to two masters, one of which has stopped answering, whose
 * commands to the other are all sent on (MOVED) to the stopped one: the
 * stopped one's connection still owes replies, so each such retry takes a
 * connection of its own and waits a whole timeout there. Once one read of
 * the pipeline has failed, the call fails anyway, and a redirected command
 * (which did not run) now fails with it at once instead (a sweep of
 * hundreds made one eviction take minutes). Shown by the GETs the stopped
 * master was sent meanwhile: its own and at most one retry, not one retry
 * per command. (The async driver sends the retries together as their
 * MOVED come, under one deadline for the step: one retry each.) */
static void test_no_retry_after_a_failure_in_the_pipeline(void **state) {
  (void)state;
  cachet_options o;
  char url[128];
  test_cluster_options(&cl, &o, "stopped:", url, sizeof url);
  /* Short: the master must be back before its replica takes over. */
  o.timeout_ms = 200;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  /* N keys of one bucket (so of one slot) on another master, to be moved
   * to the stopped one behind the handle's back; M of a slot the stopped
   * master owns. None is written. */
  int stopped = test_cluster_owner(&cl, 0), owner = -1;
  enum { N = 8, M = 4 };
  char keys[N + M][16];
  cachet_entry e[N + M];
  unsigned moved = 0, kept = 0;
  int n = 0, m = 0;
  for (int i = 0; (n < N || m < M) && i < 1000000; i++) {
    char k[16];
    snprintf(k, sizeof k, "s%d", i);
    unsigned s = key_slot(c, k);
    int at = test_cluster_owner(&cl, s);
    if (owner < 0 && at != stopped) {
      moved = s;
      owner = at;
    }
    if (m == 0 && at == stopped)
      kept = s;
    if (owner >= 0 && s == moved && n < N)
      memcpy(keys[n++], k, sizeof k);
    else if (at == stopped && s == kept && m < M)
      memcpy(keys[N + m++], k, sizeof k);
  }
  assert_int_equal(n, N);
  assert_int_equal(m, M);
  /* The handle learns the map, then the slot moves behind its back. */
  assert_int_equal(cachet_exists(c, keys[0], strlen(keys[0])), CACHET_MISS);
  empty_slot(owner, moved);
  give_slot(moved, owner, stopped);
  redisContext *st = test_cluster_node(&cl, stopped);
  assert_non_null(st);
  freeReplyObject(redisCommand(st, "CONFIG RESETSTAT"));
  redisFree(st);
  kill(cl.pid[stopped], SIGSTOP);
  for (int i = 0; i < N + M; i++)
    e[i] = (cachet_entry){.key = keys[i], .keylen = strlen(keys[i])};
  int rc = cachet_mget(c, e, N + M);
  kill(cl.pid[stopped], SIGCONT);
  printf("# mget: %s %s\n", cachet_status_name(rc), cachet_last_error());
  assert_true(rc == CACHET_ETIMEDOUT || rc == CACHET_ECONN);
  for (int i = 0; i < N + M; i++) {
    assert_true(e[i].status < 0);
    cachet_free(e[i].out);
  }
  /* Once it runs again, the stopped master runs what it was sent, even
   * on connections closed since. */
  st = test_cluster_node(&cl, stopped);
  assert_non_null(st);
  long long gets = test_cmdstat(st, "get", "calls");
  redisFree(st);
  printf("# the stopped master was sent %lld GETs (%d of its own)\n", gets, M);
  give_slot(moved, stopped, owner);
  assert_int_equal(test_cluster_wait_ok(&cl, 10000), 0);
#ifdef CACHET_VIA_ASYNC_H
  /* The async driver sends every retry as its MOVED comes, together on
   * one connection, under the step's one deadline: one retry each. */
  assert_true(gets <= M + N);
#else
  assert_true(gets <= M + 1);
#endif
  cachet_close(c);
}

static void test_reshard_while_operations_run(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "rs:");
  /* Move the slots of the keys the loop uses away from node 0's master. */
  int from = -1, to = -1;
  for (int i = 0; i < cl.n; i++)
    if (test_cluster_is_master(&cl, i)) {
      if (from < 0)
        from = i;
      else if (to < 0)
        to = i;
    }
  char fid[41], tid[41], addr[32], tb[16];
  assert_int_equal(test_cluster_node_id(&cl, from, fid), 0);
  assert_int_equal(test_cluster_node_id(&cl, to, tid), 0);
  snprintf(addr, sizeof addr, "127.0.0.1:%d", cl.port[from]);

  volatile int stop = 0;
  loop_arg a = {c, &stop, 0, 0, ""};
  pthread_t th;
  pthread_create(&th, NULL, op_loop, &a);
  test_sleep_ms(100);
  snprintf(tb, sizeof tb, "%d", 1000);
  const char *argv[] = {"redis-cli",
                        "--cluster",
                        "reshard",
                        addr,
                        "--cluster-from",
                        fid,
                        "--cluster-to",
                        tid,
                        "--cluster-slots",
                        tb,
                        "--cluster-yes",
                        "--cluster-pipeline",
                        "10",
                        NULL};
  pid_t pid = fork();
  if (pid == 0) {
    int dn = open("/dev/null", 1);
    dup2(dn, 1);
    dup2(dn, 2);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  int status = -1;
  for (int t = 0; t < 3000; t++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    test_sleep_ms(20);
  }
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, 9);
    waitpid(pid, &status, 0);
  }
  stop = 1;
  pthread_join(th, NULL);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (a.errors)
    fprintf(stderr, "first error: %s\n", a.last_error);
  assert_int_equal(a.errors, 0);
  assert_true(a.ops >= 10000);
  assert_int_equal(test_cluster_wait_ok(&cl, 10000), 0);
  cachet_close(c);
}

/* ---- a master dies, then its replica takes over ----------------------------
 */

static void test_killed_master_then_failover(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "kill:");
  char key[32];
  for (int i = 0; i < 200; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(cachet_set(c, key, strlen(key), "v", 1, 0), CACHET_OK);
  }
  /* The victim: the master of k0. Its replica must not fail over on its
   * own, so that we see the outage; then we fail over by hand. */
  int victim = test_cluster_owner(&cl, key_slot(c, "k0"));
  assert_true(victim >= 0);
  char vid[41];
  assert_int_equal(test_cluster_node_id(&cl, victim, vid), 0);
  int replica = -1;
  for (int i = 0; i < cl.n; i++) {
    if (i == victim || test_cluster_is_master(&cl, i))
      continue;
    redisContext *r = test_cluster_node(&cl, i);
    redisReply *x = redisCommand(r, "INFO replication");
    char want[32];
    snprintf(want, sizeof want, "master_port:%d", cl.port[victim]);
    if (strstr(x->str, want) != NULL)
      replica = i;
    freeReplyObject(x);
    freeReplyObject(
        redisCommand(r, "CONFIG SET cluster-replica-no-failover yes"));
    redisFree(r);
  }
  assert_true(replica >= 0);
  /* Wait until the replica has the data (up to 15 s: under a loaded CI
   * machine its first sync alone took more than the 4 s this waited). */
  for (int t = 0;
       t < 750 && node_int(replica, "DBSIZE") < node_int(victim, "DBSIZE"); t++)
    test_sleep_ms(20);
  test_cluster_kill(&cl, victim);

  int down = 0, up = 0;
  for (int i = 0; i < 200; i++) {
    snprintf(key, sizeof key, "k%d", i);
    void *v = NULL;
    size_t l = 0;
    int rc = cachet_get(c, key, strlen(key), &v, &l);
    assert_int_not_equal(rc, CACHET_MISS); /* Never a miss. */
    if (test_cluster_owner(&cl, key_slot(c, key)) == victim ||
        rc != CACHET_OK) {
      assert_true(rc == CACHET_ECONN || rc == CACHET_ETIMEDOUT);
      down++;
    } else {
      assert_int_equal(rc, CACHET_OK);
      up++;
    }
    cachet_free(v);
  }
  assert_true(down > 0 && up > 0);

  /* A pipeline cut by the dead master: its write to a live master, already
   * sent, is answered before the call returns, so it never lands after.
   * The live master holds writes for 500 ms (CLIENT PAUSE WRITE), so a
   * call that returned at the dead master's failure would leave it
   * unapplied while a raw read is still served. */
  char dead[16] = "", livek[16] = "";
  int live = -1;
  for (int i = 0; i < 200 && (!dead[0] || !livek[0]); i++) {
    snprintf(key, sizeof key, "k%d", i);
    int owner = test_cluster_owner(&cl, key_slot(c, key));
    if (owner == victim && !dead[0])
      snprintf(dead, sizeof dead, "%s", key);
    else if (owner >= 0 && owner != victim && !livek[0]) {
      snprintf(livek, sizeof livek, "%s", key);
      live = owner;
    }
  }
  assert_true(dead[0] && livek[0]);
  char *lvk = NULL;
  size_t lvl = 0;
  assert_int_equal(cachet_value_key(c, livek, strlen(livek), &lvk, &lvl),
                   CACHET_OK);
  redisContext *lr = test_cluster_node(&cl, live);
  redisReply *before = redisCommand(lr, "GET %b", lvk, lvl);
  assert_int_equal(before->type, REDIS_REPLY_STRING);
  freeReplyObject(redisCommand(lr, "CLIENT PAUSE 500 WRITE"));
  cachet_entry two[2] = {
      {.key = dead, .keylen = strlen(dead), .val = "w", .len = 1},
      {.key = livek, .keylen = strlen(livek), .val = "new", .len = 3}};
  int mrc = cachet_mset(c, two, 2);
  assert_true(mrc == CACHET_ECONN || mrc == CACHET_ETIMEDOUT);
  redisReply *after = redisCommand(lr, "GET %b", lvk, lvl);
  assert_int_equal(after->type, REDIS_REPLY_STRING);
  assert_false(after->len == before->len &&
               memcmp(after->str, before->str, after->len) == 0);
  freeReplyObject(before);
  freeReplyObject(after);
  freeReplyObject(redisCommand(lr, "CLIENT UNPAUSE"));
  redisFree(lr);
  cachet_free(lvk);

  /* The replica takes over (the master is gone: TAKEOVER). */
  redisContext *r = test_cluster_node(&cl, replica);
  freeReplyObject(redisCommand(r, "CLUSTER FAILOVER TAKEOVER"));
  redisFree(r);
  int ok = 0;
  for (int t = 0; t < 300 && !ok; t++) {
    ok = 1;
    for (int i = 0; ok && i < 200; i++) {
      snprintf(key, sizeof key, "k%d", i);
      void *v = NULL;
      size_t l = 0;
      int rc = cachet_get(c, key, strlen(key), &v, &l);
      assert_int_not_equal(rc, CACHET_MISS);
      ok = rc == CACHET_OK;
      cachet_free(v);
    }
    if (!ok)
      test_sleep_ms(50);
  }
  assert_true(ok);
  assert_int_equal(cachet_set(c, "after", 5, "v", 1, 0), CACHET_OK);
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cluster_url_and_env_configure_seeds),
      cmocka_unit_test(test_dead_seeds_fail_each_call_with_econn),
      cmocka_unit_test(test_silent_seed_does_not_hold_the_map_back),
#ifdef CACHET_VIA_ASYNC_H
      cmocka_unit_test(test_async_close_while_the_map_refreshes),
#else
      /* The async driver has no links, and meets the silent seeds itself. */
      cmocka_unit_test(test_the_near_feed_takes_no_link_from_callers),
#endif
      cmocka_unit_test(test_core_operations_route_to_every_master),
      cmocka_unit_test(test_clear_and_prune_cover_every_master),
      cmocka_unit_test(test_large_values_are_staged_in_the_entry_slot),
      cmocka_unit_test(test_locks_and_get_or_set),
      cmocka_unit_test(test_get_or_set_and_health),
      cmocka_unit_test(test_mset_mget_group_per_slot),
      cmocka_unit_test(test_mset_untagged_over_tagged_per_slot),
      cmocka_unit_test(test_untagged_set_over_tagged_entries),
      cmocka_unit_test(test_retag_while_its_slot_is_migrating),
      cmocka_unit_test(
          test_eviction_drains_a_snapshot_while_its_slot_is_migrating),
      cmocka_unit_test(test_no_retry_after_a_failure_in_the_pipeline),
      cmocka_unit_test(test_reshard_while_operations_run),
      cmocka_unit_test(test_killed_master_then_failover),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
