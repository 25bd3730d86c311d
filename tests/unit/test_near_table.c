/* The near cache's table (near.h), without a server: hits, the fill
 * tickets and the fill race, expiry, the byte bound, scan resistance and
 * many threads on one table. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cachet.h"
#include "near.h"

#define NOW INT64_C(1800000000000)
#define MB ((size_t)1024 * 1024)

static cachet_near *make(size_t bytes) {
  assert_true(sodium_init() >= 0);
  cachet_near *n = NULL;
  assert_int_equal(cachet_near_create(&n, bytes, 60000), CACHET_OK);
  cachet_near_activate(n);
  return n;
}

/* Read `key`; on a miss fill it with `val` (expiring at `exp`). Returns
 * 1 for a hit of `val`, 0 for a miss. */
static int read_fill(cachet_near *n, const char *key, const char *val,
                     int64_t exp, int64_t now) {
  void *v;
  size_t len;
  uint64_t t;
  int rc = cachet_near_get(n, key, strlen(key), now, &v, &len, &t);
  if (rc == CACHET_OK) {
    assert_int_equal(len, strlen(val));
    assert_memory_equal(v, val, len);
    assert_int_equal(((char *)v)[len], '\0');
    free(v);
    return 1;
  }
  assert_int_equal(rc, CACHET_MISS);
  cachet_near_fill(n, key, strlen(key), t, val, strlen(val), exp, now);
  return 0;
}

static int hit(cachet_near *n, const char *key, int64_t now) {
  void *v;
  size_t len;
  uint64_t t;
  int rc = cachet_near_get(n, key, strlen(key), now, &v, &len, &t);
  free(v);
  cachet_near_abandon(n, key, strlen(key), t);
  return rc == CACHET_OK;
}

static void test_miss_fill_hit(void **state) {
  (void)state;
  cachet_near *n = make(MB);
  assert_int_equal(read_fill(n, "k", "value", 0, NOW), 0);
  assert_int_equal(read_fill(n, "k", "value", 0, NOW), 1);
  cachet_near_stats st;
  cachet_near_get_stats(n, &st);
  assert_int_equal(st.hits, 1);
  assert_int_equal(st.misses, 1);
  assert_int_equal(st.entries, 1);
  /* Binary-safe: a NUL inside the key and the value. */
  uint64_t t;
  void *v;
  size_t len;
  assert_int_equal(cachet_near_get(n, "a\0b", 3, NOW, &v, &len, &t),
                   CACHET_MISS);
  cachet_near_fill(n, "a\0b", 3, t, "x\0y", 3, 0, NOW);
  assert_int_equal(cachet_near_get(n, "a\0b", 3, NOW, &v, &len, &t), CACHET_OK);
  assert_int_equal(len, 3);
  assert_memory_equal(v, "x\0y", 3);
  free(v);
  assert_int_equal(cachet_near_get(n, "a", 1, NOW, &v, &len, &t), CACHET_MISS);
  cachet_near_abandon(n, "a", 1, t);
  cachet_near_destroy(n);
}

static void test_inactive_bypasses(void **state) {
  (void)state;
  cachet_near *n = make(MB);
  read_fill(n, "k", "v", 0, NOW);
  cachet_near_deactivate(n);
  void *v;
  size_t len;
  uint64_t t;
  /* Flushed, and no ticket while coherence is lost. */
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t), CACHET_MISS);
  assert_int_equal(t, 0);
  cachet_near_activate(n);
  assert_int_equal(read_fill(n, "k", "v", 0, NOW), 0);
  assert_int_equal(read_fill(n, "k", "v", 0, NOW), 1);
  cachet_near_stats st;
  cachet_near_get_stats(n, &st);
  assert_int_equal(st.flushes, 1);
  cachet_near_destroy(n);
}

/* The race of Redis's client-side caching page: the invalidation of the
 * value a GET carries is processed before the GET's reply. The fill must
 * not store it. */
static void test_invalidation_during_fill_cancels_it(void **state) {
  (void)state;
  cachet_near *n = make(MB);
  void *v;
  size_t len;
  uint64_t t, t2;
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t), CACHET_MISS);
  assert_true(t != 0);
  /* A second reader meanwhile reads through, without a ticket. */
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t2), CACHET_MISS);
  assert_int_equal(t2, 0);
  cachet_near_drop(n, "k", 1); /* the invalidation */
  cachet_near_fill(n, "k", 1, t, "old", 3, 0, NOW);
  assert_int_equal(hit(n, "k", NOW), 0);

  /* A flush, and losing coherence, cancel fills the same way. */
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t), CACHET_MISS);
  cachet_near_flush(n);
  cachet_near_fill(n, "k", 1, t, "old", 3, 0, NOW);
  assert_int_equal(hit(n, "k", NOW), 0);
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t), CACHET_MISS);
  cachet_near_deactivate(n);
  cachet_near_activate(n);
  /* A new fill began after the reconnect: the old ticket is not its. */
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t2), CACHET_MISS);
  cachet_near_fill(n, "k", 1, t, "old", 3, 0, NOW);
  assert_int_equal(hit(n, "k", NOW), 0);
  cachet_near_fill(n, "k", 1, t2, "new", 3, 0, NOW);
  assert_int_equal(read_fill(n, "k", "new", 0, NOW), 1);

  /* An abandoned fill leaves the key free for the next reader's ticket. */
  cachet_near_drop(n, "k", 1);
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t), CACHET_MISS);
  cachet_near_abandon(n, "k", 1, t);
  assert_int_equal(cachet_near_get(n, "k", 1, NOW, &v, &len, &t), CACHET_MISS);
  assert_true(t != 0);
  cachet_near_abandon(n, "k", 1, t);
  cachet_near_destroy(n);
}

static void test_copy_never_outlives_its_expiry(void **state) {
  (void)state;
  cachet_near *n = make(MB);
  /* The envelope's own expiry. */
  read_fill(n, "a", "v", NOW + 100, NOW);
  assert_int_equal(hit(n, "a", NOW + 99), 1);
  assert_int_equal(hit(n, "a", NOW + 100), 0);
  /* The cap (60 s here) when the entry lives longer, or forever. */
  read_fill(n, "b", "v", NOW + 3600 * 1000, NOW);
  read_fill(n, "c", "v", 0, NOW);
  assert_int_equal(hit(n, "b", NOW + 59999), 1);
  assert_int_equal(hit(n, "c", NOW + 59999), 1);
  assert_int_equal(hit(n, "b", NOW + 60000), 0);
  assert_int_equal(hit(n, "c", NOW + 60000), 0);
  cachet_near_destroy(n);
}

static void test_bytes_stay_within_the_bound(void **state) {
  (void)state;
  size_t cap = 256 * 1024;
  cachet_near *n = make(cap);
  char key[32], val[1000];
  memset(val, 'x', sizeof val - 1);
  val[sizeof val - 1] = '\0';
  cachet_near_stats st;
  for (int i = 0; i < 5000; i++) {
    snprintf(key, sizeof key, "key:%d", i);
    read_fill(n, key, val, 0, NOW);
    cachet_near_get_stats(n, &st);
    assert_true(st.bytes <= cap);
  }
  /* Most of the bound is in use: it evicts, it does not refuse. */
  assert_true(st.bytes > cap / 2);
  assert_true(st.entries > 100);
  /* A value larger than a stripe's share is not kept at all. */
  size_t big = cap / 32;
  char *b = malloc(big + 1);
  memset(b, 'y', big);
  b[big] = '\0';
  read_fill(n, "big", b, 0, NOW);
  assert_int_equal(hit(n, "big", NOW), 0);
  free(b);
  cachet_near_flush(n);
  cachet_near_get_stats(n, &st);
  assert_int_equal(st.entries, 0);
  cachet_near_destroy(n);
}

/* A hot set read again and again survives a scan of keys read once that is
 * ten times the cache: the scan passes through the small queue. */
static void test_scan_does_not_flush_the_hot_set(void **state) {
  (void)state;
  cachet_near *n = make(2 * MB);
  char key[32], val[200];
  memset(val, 'v', sizeof val - 1);
  val[sizeof val - 1] = '\0';
  enum { HOT = 1000 }; /* about 0.3 MB of the 2 MB */
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < HOT; i++) {
      snprintf(key, sizeof key, "hot:%d", i);
      read_fill(n, key, val, 0, NOW);
    }
  for (int i = 0; i < 100000; i++) { /* about 30 MB, read once each */
    snprintf(key, sizeof key, "scan:%d", i);
    read_fill(n, key, val, 0, NOW);
    if (i % 50 == 0) { /* the hot set is still in use meanwhile */
      snprintf(key, sizeof key, "hot:%d", (i / 50) % HOT);
      read_fill(n, key, val, 0, NOW);
    }
  }
  int kept = 0;
  for (int i = 0; i < HOT; i++) {
    snprintf(key, sizeof key, "hot:%d", i);
    kept += hit(n, key, NOW);
  }
  /* A FIFO or an LRU keeps none of them here. */
  assert_true(kept >= HOT * 9 / 10);
  cachet_near_destroy(n);
}

typedef struct worker {
  cachet_near *n;
  int id;
} worker;

static void *churn(void *arg) {
  worker *w = arg;
  char key[32], val[64];
  for (int i = 0; i < 20000; i++) {
    int k = (i * 7 + w->id * 13) % 500;
    snprintf(key, sizeof key, "k%d", k);
    snprintf(val, sizeof val, "value of k%d", k);
    void *v;
    size_t len;
    uint64_t t;
    int rc = cachet_near_get(w->n, key, strlen(key), NOW, &v, &len, &t);
    if (rc == CACHET_OK) {
      /* Never another key's value. */
      assert_int_equal(len, strlen(val));
      assert_memory_equal(v, val, len);
      free(v);
    } else if (i % 5 == 0) {
      cachet_near_abandon(w->n, key, strlen(key), t);
    } else {
      cachet_near_fill(w->n, key, strlen(key), t, val, strlen(val), 0, NOW);
    }
    if (i % 97 == 0)
      cachet_near_drop(w->n, key, strlen(key));
    if (w->id == 0 && i % 5000 == 0)
      cachet_near_flush(w->n);
  }
  return NULL;
}

static void test_threads_share_one_table(void **state) {
  (void)state;
  cachet_near *n = make(64 * 1024);
  pthread_t th[8];
  worker w[8];
  for (int i = 0; i < 8; i++) {
    w[i] = (worker){n, i};
    pthread_create(&th[i], NULL, churn, &w[i]);
  }
  for (int i = 0; i < 8; i++)
    pthread_join(th[i], NULL);
  cachet_near_stats st;
  cachet_near_get_stats(n, &st);
  assert_true(st.hits > 0);
  assert_true(st.bytes <= 64 * 1024);
  cachet_near_flush(n);
  cachet_near_get_stats(n, &st);
  assert_int_equal(st.entries, 0);
  cachet_near_destroy(n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_miss_fill_hit),
      cmocka_unit_test(test_inactive_bypasses),
      cmocka_unit_test(test_invalidation_during_fill_cancels_it),
      cmocka_unit_test(test_copy_never_outlives_its_expiry),
      cmocka_unit_test(test_bytes_stay_within_the_bound),
      cmocka_unit_test(test_scan_does_not_flush_the_hot_set),
      cmocka_unit_test(test_threads_share_one_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
