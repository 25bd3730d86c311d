/* The near cache against real servers: reads served from memory, and every
 * way its copies are kept coherent or emptied. Another handle, another
 * process, a killed invalidation connection, a restarted server, FLUSHALL,
 * the fill race staged with a hook, the byte bound, and a cluster of three
 * masters. Waits for an invalidation are bounded (WAIT_MS) and never
 * asserted on: only what a read returns is. */
#include <poll.h>
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

#include "cluster_harness.h"
#include "harness.h"
#include "near.h"
#include "track.h"

#define WAIT_MS 10000
#define MB ((size_t)1024 * 1024)

/* The harness's options for this server, with a near cache of `bytes`. */
static void near_options(cachet_options *o, const char *prefix, size_t bytes) {
  test_options(test_group_server(), o, prefix);
  o->near_cache_bytes = bytes;
}

static cachet *open_near(const char *prefix, size_t bytes) {
  cachet_options o;
  near_options(&o, prefix, bytes);
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  return c;
}

static cachet_metrics metrics(cachet *c) {
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  return m;
}

/* Wait until the handle's invalidation feeds are subscribed. */
static void wait_tracking(cachet *c) {
  for (int i = 0; i < WAIT_MS / 10; i++) {
    cachet_health h;
    if (cachet_health_check(c, &h) == CACHET_OK && h.tracking)
      return;
    test_sleep_ms(10);
  }
  fail_msg("tracking did not become active");
}

/* Wait until the counter of the handle's metrics at `off` (offsetof
 * cachet_metrics) passes `above`: near_flushes, near_invalidations. */
static int wait_above(cachet *c, size_t off, uint64_t above) {
  for (int i = 0; i < WAIT_MS; i++) {
    cachet_metrics m = metrics(c);
    uint64_t v;
    memcpy(&v, (const char *)&m + off, sizeof v);
    if (v > above)
      return 1;
    test_sleep_ms(1);
  }
  return 0;
}

#define FLUSHES offsetof(cachet_metrics, near_flushes)
#define INVALIDATIONS offsetof(cachet_metrics, near_invalidations)

/* Read `key` until it holds `want` (NULL: a miss), within WAIT_MS. */
static int wait_value(cachet *c, const char *key, const char *want) {
  for (int i = 0; i < WAIT_MS; i++) {
    void *v;
    size_t n;
    int rc = cachet_get(c, key, strlen(key), &v, &n);
    int ok = want == NULL ? rc == CACHET_MISS
                          : rc == CACHET_OK && n == strlen(want) &&
                                memcmp(v, want, n) == 0;
    cachet_free(v);
    if (ok)
      return 1;
    test_sleep_ms(1);
  }
  return 0;
}

/* Read `key` (holding `val`) until a read is answered from memory: the
 * echo of a recent write may cancel a fill or two first. */
static void hold_copy(cachet *c, const char *key, const char *val) {
  for (int i = 0; i < WAIT_MS; i++) {
    uint64_t before = metrics(c).near_hits;
    assert_int_equal(test_hit(c, key, val), 1);
    if (metrics(c).near_hits > before)
      return;
    test_sleep_ms(1);
  }
  fail_msg("%s: no copy in memory", key);
}

static void set(cachet *c, const char *key, const char *val) {
  assert_int_equal(cachet_set(c, key, strlen(key), val, strlen(val), 0),
                   CACHET_OK);
}

static void test_repeated_gets_are_served_from_memory(void **state) {
  (void)state;
  cachet *a = open_near("n1:", MB);
  wait_tracking(a);
  set(a, "k", "v1");
  redisContext *r = test_redis(test_group_server());
  long long before = test_cmdstat(r, "get", "calls");
  hold_copy(a, "k", "v1");
  /* One GET filled the copy (two if the echo of the set cancelled the
   * first fill). */
  long long fills = test_cmdstat(r, "get", "calls") - before;
  assert_true(fills >= 1 && fills <= 2);
  cachet_metrics m0 = metrics(a);
  for (int i = 0; i < 20; i++)
    assert_int_equal(test_hit(a, "k", "v1"), 1);
  /* None of these reached Redis. */
  assert_int_equal(test_cmdstat(r, "get", "calls") - before, fills);
  cachet_metrics m = metrics(a);
  assert_int_equal(m.near_hits - m0.near_hits, 20);
  assert_int_equal(m.near_misses, m0.near_misses);
  assert_int_equal(m.hits - m0.hits, 20);
  assert_true(m.near_bytes > 0);
  /* A miss is a miss, and is not kept. */
  assert_int_equal(test_hit(a, "absent", NULL), 0);
  assert_int_equal(test_hit(a, "absent", NULL), 0);
  assert_int_equal(metrics(a).near_misses, m0.near_misses + 2);
  char *text = NULL;
  char want[64];
  snprintf(want, sizeof want, "cachet_near_hits_total %llu\n",
           (unsigned long long)m.near_hits);
  assert_int_equal(cachet_metrics_prometheus(&m, &text, NULL), CACHET_OK);
  assert_non_null(strstr(text, want));
  assert_non_null(strstr(text, "cachet_near_bytes "));
  cachet_free(text);
  redisFree(r);
  cachet_close(a);
}

static void test_writes_by_another_handle_reach_the_copy(void **state) {
  (void)state;
  cachet *a = open_near("n2:", MB);
  cachet *b = test_open(test_group_server(), "n2:");
  wait_tracking(a);
  set(b, "k", "v1");
  assert_int_equal(test_hit(a, "k", "v1"), 1);
  assert_int_equal(test_hit(a, "k", "v1"), 1); /* from memory */
  set(b, "k", "v2");
  assert_true(wait_value(a, "k", "v2"));
  assert_int_equal(cachet_delete(b, "k", 1), CACHET_OK);
  assert_true(wait_value(a, "k", NULL));
  /* Tag eviction, clear and expiry in Redis reach it too. */
  const char *tags[] = {"t"};
  assert_int_equal(cachet_set_tags(b, "e", 1, "x", 1, 0, tags, 1), CACHET_OK);
  assert_int_equal(test_hit(a, "e", "x"), 1);
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(b, tags, 1, &n), CACHET_OK);
  assert_true(wait_value(a, "e", NULL));
  set(b, "c", "x");
  assert_int_equal(test_hit(a, "c", "x"), 1);
  assert_int_equal(cachet_clear(b, 0, &n), CACHET_OK);
  assert_true(wait_value(a, "c", NULL));
  assert_int_equal(cachet_set(b, "p", 1, "x", 1, 200), CACHET_OK);
  assert_int_equal(test_hit(a, "p", "x"), 1);
  assert_true(wait_value(a, "p", NULL));
  assert_true(metrics(a).near_invalidations >= 5);
  cachet_close(b);
  cachet_close(a);
}

/* A handle's own writes drop its copies before they return: the next read
 * never waits for Redis's echo, which the feed is held from reading. */
static void test_own_writes_are_seen_at_once(void **state) {
  (void)state;
  cachet *a = open_near("n3:", MB);
  wait_tracking(a);
  const char *tags[] = {"t"};
  for (int round = 0; round < 20; round++) {
    atomic_store(&cachet_track_hold, 1);
    char v[32];
    snprintf(v, sizeof v, "v%d", round);
    set(a, "k", v);
    assert_int_equal(test_hit(a, "k", v), 1);
    assert_int_equal(test_hit(a, "k", v), 1);
    assert_int_equal(cachet_delete(a, "k", 1), CACHET_OK);
    assert_int_equal(test_hit(a, "k", NULL), 0);
    assert_int_equal(cachet_set_tags(a, "k", 1, v, strlen(v), 0, tags, 1),
                     CACHET_OK);
    assert_int_equal(test_hit(a, "k", v), 1);
    uint64_t n = 0;
    assert_int_equal(cachet_evict_tags(a, tags, 1, &n), CACHET_OK);
    assert_int_equal(test_hit(a, "k", NULL), 0);
    set(a, "k", v);
    assert_int_equal(test_hit(a, "k", v), 1);
    cachet_entry e = {.key = "k", .keylen = 1, .val = "m", .len = 1};
    assert_int_equal(cachet_mset(a, &e, 1), CACHET_OK);
    assert_int_equal(test_hit(a, "k", "m"), 1);
    assert_int_equal(cachet_clear(a, 0, &n), CACHET_OK);
    assert_int_equal(test_hit(a, "k", NULL), 0);
    atomic_store(&cachet_track_hold, 0);
    test_sleep_ms(5); /* the feed catches up: pings stay answered */
  }
  cachet_close(a);
}

static int loads;
static int loader(void *ud, const void *key, size_t keylen, void **val,
                  size_t *len, int64_t *ttl_ms) {
  (void)key;
  (void)keylen;
  (void)ttl_ms;
  loads++;
  *val = strdup(ud);
  *len = strlen(ud);
  return *val != NULL ? 0 : -1;
}

static int gos(cachet *c, const char *key, const char *from_loader,
               const char *want) {
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get_or_set(c, key, strlen(key), loader, (void *)from_loader,
                             0, NULL, 0, &v, &n);
  int same = rc == CACHET_OK && n == strlen(want) && memcmp(v, want, n) == 0;
  cachet_free(v);
  return same;
}

/* get_or_set reads through the near cache as get does: a loaded value is
 * written (its copy dropped), then read into memory, and another handle's
 * write reaches it. */
static void test_get_or_set_reads_through_memory(void **state) {
  (void)state;
  cachet *a = open_near("n11:", MB);
  cachet *b = test_open(test_group_server(), "n11:");
  wait_tracking(a);
  loads = 0;
  assert_true(gos(a, "k", "loaded", "loaded"));
  assert_int_equal(loads, 1);
  uint64_t hits = 0;
  for (int i = 0; i < WAIT_MS && hits == 0; i++) {
    uint64_t before = metrics(a).near_hits;
    assert_true(gos(a, "k", "again", "loaded"));
    hits = metrics(a).near_hits - before;
  }
  assert_int_equal(hits, 1);
  assert_int_equal(loads, 1);
  set(b, "k", "written");
  int seen = 0;
  for (int i = 0; i < WAIT_MS && !seen; i++) {
    seen = gos(a, "k", "again", "written");
    test_sleep_ms(1);
  }
  assert_true(seen);
  assert_int_equal(loads, 1);
  cachet_close(b);
  cachet_close(a);
}

/* mget answers what the near cache holds and fills it with the rest. */
static void test_mget_reads_through_memory(void **state) {
  (void)state;
  cachet *a = open_near("n13:", MB);
  cachet *b = test_open(test_group_server(), "n13:");
  wait_tracking(a);
  char keys[10][8], vals[10][8];
  uint64_t inv0 = metrics(a).near_invalidations;
  for (int i = 0; i < 10; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    snprintf(vals[i], sizeof vals[i], "v%d", i);
    set(b, keys[i], vals[i]);
  }
  /* The writes' invalidations processed first: on a loaded machine one
   * could come after a copy was made and drop it, and round 0 would read
   * that key from Redis. */
  assert_true(wait_above(a, INVALIDATIONS, inv0 + 9));
  for (int i = 0; i < 5; i++)
    hold_copy(a, keys[i], vals[i]);
  redisContext *r = test_redis(test_group_server());
  cachet_entry e[11];
  for (int round = 0; round < 2; round++) {
    memset(e, 0, sizeof e);
    for (int i = 0; i < 10; i++)
      e[i] = (cachet_entry){.key = keys[i], .keylen = strlen(keys[i])};
    e[10] = (cachet_entry){.key = "absent", .keylen = 6};
    long long before = test_cmdstat(r, "get", "calls");
    uint64_t hits = metrics(a).near_hits;
    assert_int_equal(cachet_mget(a, e, 11), CACHET_OK);
    for (int i = 0; i < 10; i++) {
      assert_int_equal(e[i].status, CACHET_OK);
      assert_int_equal(e[i].outlen, strlen(vals[i]));
      assert_memory_equal(e[i].out, vals[i], e[i].outlen);
      cachet_free(e[i].out);
    }
    assert_int_equal(e[10].status, CACHET_MISS);
    assert_null(e[10].out);
    if (round == 0) { /* k0..k4 from memory; k5..k9 and the miss read */
      assert_int_equal(test_cmdstat(r, "get", "calls") - before, 6);
      assert_int_equal(metrics(a).near_hits - hits, 5);
    } else { /* and the fills of the first round serve the second */
      assert_true(metrics(a).near_hits - hits > 5);
    }
  }
  /* Another handle's write reaches an mget too. */
  set(b, "k3", "new");
  int seen = 0;
  for (int i = 0; i < WAIT_MS && !seen; i++) {
    cachet_entry one = {.key = "k3", .keylen = 2};
    assert_int_equal(cachet_mget(a, &one, 1), CACHET_OK);
    seen = one.status == CACHET_OK && one.outlen == 3 &&
           memcmp(one.out, "new", 3) == 0;
    cachet_free(one.out);
    if (!seen)
      test_sleep_ms(1);
  }
  assert_true(seen);
  redisFree(r);
  cachet_close(b);
  cachet_close(a);
}

/* The writer of test_two_processes: versions 1..ROUNDS of each key, with
 * deletes and tag evictions between, then FINAL. No cmocka here. */
#define KEYS 8
#define ROUNDS 300
#define FINAL 100000
static void writer(int gate) {
  /* Forked before the reader opened its handle, so that it inherits none
   * of it; it starts when the reader is ready (or gives up after 30 s). */
  struct pollfd p = {gate, POLLIN, 0};
  char go = 0;
  if (poll(&p, 1, 30000) != 1 || read(gate, &go, 1) != 1)
    _exit(2);
  cachet *w = test_open(test_group_server(), "n4:");
  const char *tags[] = {"odd"};
  int bad = 0;
  for (int v = 1; v <= ROUNDS; v++)
    for (int k = 0; k < KEYS; k++) {
      char key[16], val[32];
      snprintf(key, sizeof key, "k%d", k);
      snprintf(val, sizeof val, "%d", v);
      bad |= cachet_set_tags(w, key, strlen(key), val, strlen(val), 0, tags,
                             k % 2) != CACHET_OK;
      if (v % 50 == 0 && k == 0)
        bad |= cachet_delete(w, key, strlen(key)) < 0;
      if (v % 70 == 0 && k == KEYS - 1) {
        uint64_t n;
        bad |= cachet_evict_tags(w, tags, 1, &n) != CACHET_OK;
      }
    }
  for (int k = 0; k < KEYS; k++) {
    char key[16], val[32];
    snprintf(key, sizeof key, "k%d", k);
    snprintf(val, sizeof val, "%d", FINAL);
    bad |= cachet_set(w, key, strlen(key), val, strlen(val), 0) != CACHET_OK;
  }
  cachet_close(w);
  _exit(bad ? 1 : 0);
}

static void test_two_processes_never_go_back(void **state) {
  (void)state;
  int gate[2];
  assert_int_equal(pipe(gate), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(gate[1]);
    writer(gate[0]);
  }
  close(gate[0]);
  cachet *a = open_near("n4:", MB);
  wait_tracking(a);
  int newest[KEYS] = {0};
  assert_int_equal(write(gate[1], "g", 1), 1);
  close(gate[1]);
  int done = 0, status = 0;
  while (!done) {
    done = waitpid(pid, &status, WNOHANG) == pid;
    for (int k = 0; k < KEYS; k++) {
      char key[16];
      snprintf(key, sizeof key, "k%d", k);
      void *v;
      size_t n;
      int rc = cachet_get(a, key, strlen(key), &v, &n);
      assert_true(rc == CACHET_OK || rc == CACHET_MISS);
      if (rc == CACHET_OK) {
        int ver = atoi(v);
        cachet_free(v);
        /* A read never returns a version older than one already read. */
        if (ver < newest[k])
          fail_msg("%s: read version %d after %d", key, ver, newest[k]);
        newest[k] = ver;
      }
    }
  }
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  char final[32];
  snprintf(final, sizeof final, "%d", FINAL);
  for (int k = 0; k < KEYS; k++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", k);
    assert_true(wait_value(a, key, final));
  }
  assert_true(metrics(a).near_hits > 0);
  cachet_close(a);
}

/* CLIENT KILL on the invalidation connection: the copies go at once, and
 * reads go to Redis, so a write made while the feed is down is seen. */
static _Atomic int warnings;
static void count_warning(void *ud, int level, const char *msg) {
  (void)ud;
  if (level == CACHET_LOG_WARN && strstr(msg, "near cache: bypassed") != NULL)
    atomic_fetch_add(&warnings, 1);
}

static void test_killing_the_feed_empties_the_cache(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "n5:");
  o.near_cache_bytes = MB;
  o.log = count_warning;
  cachet *a = NULL;
  assert_int_equal(cachet_open(&a, &o), CACHET_OK);
  cachet *b = test_open(test_group_server(), "n5:");
  wait_tracking(a);
  set(b, "k", "v1");
  hold_copy(a, "k", "v1");
  uint64_t flushes = metrics(a).near_flushes;
  atomic_store(&warnings, 0);
  test_command(test_group_server(), "CLIENT KILL TYPE pubsub");
  assert_true(wait_above(a, FLUSHES, flushes));
  set(b, "k", "v2"); /* nobody tracks this write */
  assert_int_equal(test_hit(a, "k", "v2"), 1);
  /* Back, and coherent again. */
  wait_tracking(a);
  assert_int_equal(test_hit(a, "k", "v2"), 1);
  set(b, "k", "v3");
  assert_true(wait_value(a, "k", "v3"));
  assert_int_equal(atomic_load(&warnings), 1); /* once for the loss */
  cachet_health h;
  assert_int_equal(cachet_health_check(a, &h), CACHET_OK);
  assert_int_equal(h.near_cache, 1);
  assert_int_equal(h.tracking, 1);
  cachet_close(b);
  cachet_close(a);
}

/* A feed that cannot start says so through the log sink, once, from its
 * own thread, which starts inside cachet_open: the sink must be in place
 * before it (TSan saw the thread read it while cachet_open wrote it, and a
 * warning of the first failure could be lost). */
static void test_a_feed_that_cannot_start_warns_once(void **state) {
  (void)state;
  cachet_options o;
  char path[400];
  snprintf(path, sizeof path, "%s/nobody.sock", test_group_server()->dir);
  test_options(test_group_server(), &o, "n9:");
  o.unix_path = path;
  o.near_cache_bytes = MB;
  o.log = count_warning;
  atomic_store(&warnings, 0);
  cachet *a = NULL;
  assert_int_equal(cachet_open(&a, &o), CACHET_OK);
  for (int i = 0; i < 400 && atomic_load(&warnings) == 0; i++)
    test_sleep_ms(5);
  test_sleep_ms(200); /* a few more attempts (50 ms apart at first) */
  assert_int_equal(atomic_load(&warnings), 1);
  cachet_close(a);
}

static void test_server_restart_empties_the_cache(void **state) {
  (void)state;
  cachet *a = open_near("n6:", MB);
  wait_tracking(a);
  set(a, "k", "v1");
  hold_copy(a, "k", "v1");
  uint64_t flushes = metrics(a).near_flushes;
  test_server_kill(test_group_server());
  assert_true(wait_above(a, FLUSHES, flushes));
  assert_int_equal(test_server_restart(test_group_server(), NULL), 0);
  wait_tracking(a);
  /* The restarted server has no data (--save ''): so neither has L1. A
   * data connection that met the restart may say so once (ECONN), never
   * with the old value. */
  int rc = CACHET_ECONN;
  for (int i = 0; i < 100 && rc == CACHET_ECONN; i++) {
    void *v;
    size_t n;
    rc = cachet_get(a, "k", 1, &v, &n);
    cachet_free(v);
  }
  assert_int_equal(rc, CACHET_MISS);
  cachet_close(a);
}

/* A feed that goes silent (the server stopped, as a network partition
 * would leave it) is a loss once a PING goes unanswered for timeout_ms. */
static void test_silent_feed_empties_the_cache(void **state) {
  (void)state;
  cachet_options o;
  near_options(&o, "n12:", MB);
  o.timeout_ms = 300;
  cachet *a = NULL;
  assert_int_equal(cachet_open(&a, &o), CACHET_OK);
  wait_tracking(a);
  set(a, "k", "v1");
  hold_copy(a, "k", "v1");
  uint64_t flushes = metrics(a).near_flushes;
  pid_t pid = test_group_server()->pid;
  assert_int_equal(kill(pid, SIGSTOP), 0);
  int lost = wait_above(a, FLUSHES, flushes);
  assert_int_equal(kill(pid, SIGCONT), 0);
  assert_true(lost);
  wait_tracking(a);
  hold_copy(a, "k", "v1");
  cachet_close(a);
}

/* Closing a handle never waits for its feed. Here the feed is stuck in
 * its set-up: the server is stopped, so the kernel accepts the connection
 * but nothing answers its first command, and timeout_ms is a day. A close
 * that waited for the feed would hang this test until ctest's limit. */
static void test_close_does_not_wait_for_a_stuck_feed(void **state) {
  (void)state;
  cachet_options o;
  near_options(&o, "n13:", MB);
  o.timeout_ms = 86400000;
  pid_t pid = test_group_server()->pid;
  assert_int_equal(kill(pid, SIGSTOP), 0);
  cachet *a = NULL;
  int rc = cachet_open(&a, &o);
  /* Time for the feed to connect and send CLIENT ID; were it slower, the
   * close below would only stop it earlier. */
  test_sleep_ms(200);
  cachet_close(a);
  assert_int_equal(kill(pid, SIGCONT), 0);
  assert_int_equal(rc, CACHET_OK);
}

static void test_flushall_empties_the_cache(void **state) {
  (void)state;
  cachet *a = open_near("n7:", MB);
  wait_tracking(a);
  set(a, "k", "v1");
  hold_copy(a, "k", "v1");
  uint64_t flushes = metrics(a).near_flushes;
  test_command(test_group_server(), "FLUSHALL");
  assert_true(wait_above(a, FLUSHES, flushes));
  assert_int_equal(test_hit(a, "k", NULL), 0);
  wait_tracking(a); /* a flush is not a loss of coherence */
  cachet_close(a);
}

/* The fill race, staged: between the GET's reply (v1) and its fill,
 * another handle writes v2 and the invalidation is processed. The fill must
 * be dropped, or every later read would return v1. */
static cachet *race_a, *race_b;
static int race_fired;
static void race_hook(const char *rkey, size_t len) {
  (void)rkey;
  (void)len;
  if (race_fired++)
    return;
  uint64_t before = metrics(race_a).near_invalidations;
  if (cachet_set(race_b, "k", 1, "v2", 2, 0) != CACHET_OK)
    return; /* the test then fails on what it reads */
  for (int i = 0; i < WAIT_MS && metrics(race_a).near_invalidations == before;
       i++)
    test_sleep_ms(1);
}

static void test_fill_race_drops_the_stale_fill(void **state) {
  (void)state;
  race_a = open_near("n8:", MB);
  race_b = test_open(test_group_server(), "n8:");
  wait_tracking(race_a);
  set(race_b, "k", "v1");
  race_fired = 0;
  cachet_near_fill_hook = race_hook;
  /* The read itself ran before the write: v1 is its true answer. */
  assert_int_equal(test_hit(race_a, "k", "v1"), 1);
  cachet_near_fill_hook = NULL;
  assert_int_equal(race_fired, 1);
  assert_true(metrics(race_a).near_invalidations >= 1);
  for (int i = 0; i < 5; i++)
    assert_int_equal(test_hit(race_a, "k", "v2"), 1);
  cachet_close(race_b);
  cachet_close(race_a);
}

static void test_memory_stays_within_the_bound(void **state) {
  (void)state;
  size_t cap = 256 * 1024;
  cachet *a = open_near("n9:", cap);
  wait_tracking(a);
  char val[1024];
  memset(val, 'x', sizeof val - 1);
  val[sizeof val - 1] = '\0';
  char key[16];
  for (int i = 0; i < 2000; i++) {
    snprintf(key, sizeof key, "k%d", i);
    set(a, key, val);
  }
  /* The echoes of these writes are past before the reads fill. */
  for (int i = 0; i < WAIT_MS && metrics(a).near_invalidations < 2000; i++)
    test_sleep_ms(1);
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 2000; i++) {
      snprintf(key, sizeof key, "k%d", i);
      assert_int_equal(test_hit(a, key, val), 1);
      assert_true(metrics(a).near_bytes <= cap);
    }
  assert_true(metrics(a).near_bytes > cap / 2);
  cachet_close(a);
}

static void test_options_and_health(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "n10:");
  o.near_cache_bytes = 1000;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_ECONFIG);
  assert_non_null(strstr(cachet_last_error(), "near_cache_bytes"));
  /* Off by default, and with the variable at 0. */
  test_options(test_group_server(), &o, "n10:");
  o.use_env = 1;
  setenv("CACHET_NEAR_CACHE_BYTES", "0", 1);
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.near_cache, 0);
  assert_int_equal(h.tracking, 0);
  cachet_close(c);
  setenv("CACHET_NEAR_CACHE_BYTES", "1048576", 1);
  setenv("CACHET_NEAR_CACHE_TTL_MS", "100", 1);
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  unsetenv("CACHET_NEAR_CACHE_BYTES");
  unsetenv("CACHET_NEAR_CACHE_TTL_MS");
  wait_tracking(c);
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.near_cache, 1);
  assert_int_equal(h.tracking, 1);
  assert_int_equal(h.degraded, 0);
  /* The lifetime cap: a copy of a value without a TTL lives 100 ms. */
  set(c, "k", "v");
  hold_copy(c, "k", "v");
  uint64_t misses = metrics(c).near_misses;
  test_sleep_ms(150);
  assert_int_equal(test_hit(c, "k", "v"), 1);
  assert_int_equal(metrics(c).near_misses, misses + 1);
  cachet_close(c);
}

/* A cluster: one feed per master, and a write on every master reaches
 * the copy. */
static void test_cluster_invalidations_from_every_master(void **state) {
  (void)state;
  test_cluster cl;
  assert_int_equal(test_cluster_start(&cl, 3, 0), 0);
  cachet_options o;
  char url[512];
  test_cluster_options(&cl, &o, "nc:", url, sizeof url);
  o.near_cache_bytes = MB;
  cachet *a = NULL;
  assert_int_equal(cachet_open(&a, &o), CACHET_OK);
  cachet *b = test_cluster_open(&cl, "nc:");
  wait_tracking(a);
  enum { N = 60 }; /* 60 keys land on every one of 3 masters */
  char key[16], val[16];
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "k%d", i);
    set(b, key, "old");
    assert_int_equal(test_hit(a, key, "old"), 1);
    assert_int_equal(test_hit(a, key, "old"), 1);
  }
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "new%d", i);
    set(b, key, val);
  }
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "new%d", i);
    assert_true(wait_value(a, key, val));
  }
  assert_true(metrics(a).near_invalidations >= N);
  cachet_close(b);
  cachet_close(a);
  test_cluster_stop(&cl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_repeated_gets_are_served_from_memory),
      cmocka_unit_test(test_writes_by_another_handle_reach_the_copy),
      cmocka_unit_test(test_own_writes_are_seen_at_once),
      cmocka_unit_test(test_get_or_set_reads_through_memory),
      cmocka_unit_test(test_mget_reads_through_memory),
      cmocka_unit_test(test_two_processes_never_go_back),
      cmocka_unit_test(test_killing_the_feed_empties_the_cache),
      cmocka_unit_test(test_a_feed_that_cannot_start_warns_once),
      cmocka_unit_test(test_server_restart_empties_the_cache),
      cmocka_unit_test(test_silent_feed_empties_the_cache),
      cmocka_unit_test(test_close_does_not_wait_for_a_stuck_feed),
      cmocka_unit_test(test_flushall_empties_the_cache),
      cmocka_unit_test(test_fill_race_drops_the_stale_fill),
      cmocka_unit_test(test_memory_stays_within_the_bound),
      cmocka_unit_test(test_options_and_health),
      cmocka_unit_test(test_cluster_invalidations_from_every_master),
  };
  return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
