/* Chaos: many threads on one handle doing every kind of call while the
 * server kills their connections (and the near cache's feed), flushes its
 * script cache and pauses. The handle is a plain pool, a pool with
 * multiplexed connections, or a pool with a near cache, and its values are
 * sealed, so a reply handed to the wrong call cannot pass unnoticed.
 *
 * What must hold throughout, whatever the interleaving:
 *  - every call ends, with a status its contract names, and a failure
 *    comes with a detail;
 *  - a value read is the value of the key asked for, and intact;
 *  - a key that exists all along is never a miss (an error is never a
 *    miss);
 *  - no two threads hold one lock at once, and its fence only rises.
 * And once the chaos stops:
 *  - the handle works again, after at most one failure per connection;
 *  - evicting every tag leaves only values that were written untagged (a
 *    tagged write lost to a killed connection never outlives its tag).
 *
 * Nothing here waits on wall time: the chaos runs a number of rounds, and
 * the pauses are far below every timeout. */
#include <pthread.h>
#include <setjmp.h>
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

#define WORKERS 8
#define NKEYS 24  /* written, read, deleted and evicted by the workers */
#define NSTABLE 8 /* written before the chaos, then only read */
#define NLOCKS 4
#define ROUNDS 60  /* of the chaos thread */
#define MIN_OPS 40 /* each worker's calls before it may stop */

static const char *const tag_names[] = {"red", "green", "blue", "gold"};
#define NTAGS 4

typedef struct chaos {
  cachet *c;
  atomic_int stop;
  atomic_int ops_done; /* workers that made MIN_OPS calls */
  pthread_mutex_t mu;
  int violations;
  char why[512];
  atomic_int holder[NLOCKS];           /* worker id + 1, 0 = free */
  _Atomic uint64_t last_fence[NLOCKS]; /* the highest fence taken */
  atomic_int loads;
} chaos;

typedef struct worker {
  chaos *ch;
  int id;
  uint64_t rng;
  int seq;
  int ok, failed; /* calls that succeeded (hit, miss or done), that failed */
} worker;

static void violation(chaos *ch, const char *fmt, ...) {
  pthread_mutex_lock(&ch->mu);
  if (ch->violations++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ch->why, sizeof ch->why, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&ch->mu);
}

static unsigned next(worker *w, unsigned bound) {
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  return (unsigned)(w->rng % bound);
}

static int key_of(char *buf, size_t n, unsigned k) {
  return snprintf(buf, n, "k%u", k);
}

/* A value names its key and the tags it was written with (a bit mask), so
 * that a reader can check whose it is. */
static int value_of(char *buf, size_t n, const char *key, unsigned mask,
                    int writer, int seq) {
  return snprintf(buf, n, "key=%s;tags=%u;by=%d;seq=%d", key, mask, writer,
                  seq);
}

static size_t tags_of(unsigned mask, const char **out) {
  size_t n = 0;
  for (unsigned t = 0; t < NTAGS; t++)
    if (mask & (1u << t))
      out[n++] = tag_names[t];
  return n;
}

/* The status of a call that may fail: counted, and checked for a detail. */
static int failed_ok(worker *w, const char *what, int rc) {
  if (rc == CACHET_ECONN || rc == CACHET_ETIMEDOUT) {
    const char *why = cachet_last_error();
    if (why == NULL || why[0] == '\0')
      violation(w->ch, "%s: %s without a detail", what, cachet_strerror(rc));
    w->failed++;
    return 1;
  }
  return 0;
}

static void unexpected(worker *w, const char *what, int rc) {
  violation(w->ch, "worker %d, %s: %s (%s)", w->id, what, cachet_strerror(rc),
            cachet_last_error());
}

/* A value read for `key`: its own, intact. */
static void check_value(worker *w, const char *what, const char *key,
                        const void *val, size_t len) {
  char want[64];
  int kl = snprintf(want, sizeof want, "key=%s;", key);
  if (len < (size_t)kl || memcmp(val, want, (size_t)kl) != 0 ||
      memchr(val, ';', len) == NULL)
    violation(w->ch, "worker %d, %s of %s read \"%.*s\"", w->id, what, key,
              (int)(len < 80 ? len : 80), (const char *)val);
}

static void do_set(worker *w) {
  char key[16], val[96];
  key_of(key, sizeof key, next(w, NKEYS));
  unsigned mask = next(w, 1u << NTAGS);
  int vl = value_of(val, sizeof val, key, mask, w->id, w->seq++);
  const char *tags[NTAGS];
  size_t nt = tags_of(mask, tags);
  int rc = nt == 0
               ? cachet_set(w->ch->c, key, strlen(key), val, (size_t)vl, 60000)
               : cachet_set_tags(w->ch->c, key, strlen(key), val, (size_t)vl,
                                 60000, tags, nt);
  if (rc == CACHET_OK)
    w->ok++;
  else if (!failed_ok(w, "set", rc))
    unexpected(w, "set", rc);
}

static void do_get(worker *w, int stable) {
  char key[16];
  if (stable)
    snprintf(key, sizeof key, "s%u", next(w, NSTABLE));
  else
    key_of(key, sizeof key, next(w, NKEYS));
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(w->ch->c, key, strlen(key), &v, &n);
  if (rc == CACHET_OK) {
    check_value(w, "get", key, v, n);
    w->ok++;
  } else if (rc == CACHET_MISS && !stable) {
    w->ok++;
  } else if (rc == CACHET_MISS) {
    violation(w->ch,
              "worker %d: %s, written before and never removed, "
              "read as a miss",
              w->id, key);
  } else if (!failed_ok(w, "get", rc)) {
    unexpected(w, "get", rc);
  }
  cachet_free(v);
}

static int loader(void *ud, const void *key, size_t keylen, void **val,
                  size_t *len, int64_t *ttl_ms) {
  (void)ttl_ms;
  worker *w = ud;
  char k[16], buf[96];
  snprintf(k, sizeof k, "%.*s", (int)keylen, (const char *)key);
  int n = value_of(buf, sizeof buf, k, 0, w->id, -1);
  if ((*val = malloc((size_t)n)) == NULL)
    return -1;
  memcpy(*val, buf, (size_t)n);
  *len = (size_t)n;
  atomic_fetch_add(&w->ch->loads, 1);
  return 0;
}

static void do_get_or_set(worker *w) {
  char key[16];
  key_of(key, sizeof key, next(w, NKEYS));
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get_or_set(w->ch->c, key, strlen(key), loader, w, 60000, NULL,
                             0, &v, &n);
  if (rc == CACHET_OK) {
    check_value(w, "get_or_set", key, v, n);
    w->ok++;
  } else if (!failed_ok(w, "get_or_set", rc)) {
    unexpected(w, "get_or_set", rc);
  }
  cachet_free(v);
}

static void do_mget(worker *w) {
  enum { N = 5 };
  char keys[N][16];
  cachet_entry e[N];
  memset(e, 0, sizeof e);
  for (int i = 0; i < N; i++) {
    /* One stable key among them: it must not be a miss either. */
    if (i == 0)
      snprintf(keys[i], sizeof keys[i], "s%u", next(w, NSTABLE));
    else
      key_of(keys[i], sizeof keys[i], next(w, NKEYS));
    e[i].key = keys[i];
    e[i].keylen = strlen(keys[i]);
  }
  int rc = cachet_mget(w->ch->c, e, N);
  if (rc == CACHET_OK)
    w->ok++;
  else if (!failed_ok(w, "mget", rc))
    unexpected(w, "mget", rc);
  for (int i = 0; i < N; i++) {
    int st = e[i].status;
    if (st == CACHET_OK)
      check_value(w, "mget", keys[i], e[i].out, e[i].outlen);
    else if (st == CACHET_MISS && i == 0)
      violation(w->ch, "worker %d: mget read %s, never removed, as a miss",
                w->id, keys[i]);
    else if (st != CACHET_MISS && st != rc)
      violation(w->ch, "worker %d: mget of %s: %s, the call %s", w->id, keys[i],
                cachet_strerror(st), cachet_strerror(rc));
    cachet_free(e[i].out);
  }
}

static void do_mset(worker *w) {
  enum { N = 3 };
  char keys[N][16], vals[N][96];
  const char *tags[N][NTAGS];
  cachet_entry e[N];
  memset(e, 0, sizeof e);
  for (int i = 0; i < N; i++) {
    key_of(keys[i], sizeof keys[i], next(w, NKEYS));
    unsigned mask = next(w, 1u << NTAGS);
    int vl = value_of(vals[i], sizeof vals[i], keys[i], mask, w->id, w->seq++);
    e[i] = (cachet_entry){.key = keys[i],
                          .keylen = strlen(keys[i]),
                          .val = vals[i],
                          .len = (size_t)vl,
                          .ttl_ms = 60000,
                          .tags = tags[i],
                          .ntags = tags_of(mask, tags[i])};
  }
  int rc = cachet_mset(w->ch->c, e, N);
  if (rc == CACHET_OK)
    w->ok++;
  else if (!failed_ok(w, "mset", rc))
    unexpected(w, "mset", rc);
}

static void do_delete(worker *w) {
  char key[16];
  key_of(key, sizeof key, next(w, NKEYS));
  int rc = cachet_delete(w->ch->c, key, strlen(key));
  if (rc == CACHET_OK || rc == CACHET_MISS)
    w->ok++;
  else if (!failed_ok(w, "delete", rc))
    unexpected(w, "delete", rc);
}

static void do_evict(worker *w) {
  const char *tag = tag_names[next(w, NTAGS)];
  uint64_t n = 0;
  int rc = cachet_evict_tags(w->ch->c, &tag, 1, &n);
  if (rc == CACHET_OK)
    w->ok++;
  else if (!failed_ok(w, "evict_tags", rc))
    unexpected(w, "evict_tags", rc);
}

static void do_lock(worker *w) {
  unsigned i = next(w, NLOCKS);
  char name[16];
  snprintf(name, sizeof name, "lock%u", i);
  cachet_lock *lk = NULL;
  /* A lock whose acquire or release lost its reply stays held until its
   * TTL: long against a thread's preemption, short against the test. */
  int rc = cachet_lock_acquire(w->ch->c, name, 5000, 5, &lk);
  if (rc == CACHET_NOT_ACQUIRED) {
    w->ok++;
    return;
  }
  if (rc != CACHET_OK) {
    if (!failed_ok(w, "lock_acquire", rc))
      unexpected(w, "lock_acquire", rc);
    return;
  }
  int none = 0;
  if (!atomic_compare_exchange_strong(&w->ch->holder[i], &none, w->id + 1))
    violation(w->ch, "worker %d took %s, held by worker %d", w->id, name,
              none - 1);
  uint64_t fence = cachet_lock_fence(lk), last = w->ch->last_fence[i];
  if (fence <= last)
    violation(w->ch, "worker %d took %s with fence %llu after %llu", w->id,
              name, (unsigned long long)fence, (unsigned long long)last);
  w->ch->last_fence[i] = fence;
  test_sleep_ms(1); /* held a while, so that a second holder would meet it */
  atomic_store(&w->ch->holder[i], 0);
  rc = cachet_lock_release(w->ch->c, lk);
  if (rc == CACHET_OK)
    w->ok++;
  else if (!failed_ok(w, "lock_release", rc))
    unexpected(w, "lock_release", rc);
  cachet_lock_free(lk);
}

static void do_exists_ttl(worker *w) {
  char key[16];
  snprintf(key, sizeof key, "s%u", next(w, NSTABLE));
  int64_t ttl = 0;
  int rc = next(w, 2) ? cachet_exists(w->ch->c, key, strlen(key))
                      : cachet_ttl(w->ch->c, key, strlen(key), &ttl);
  if (rc == CACHET_OK)
    w->ok++;
  else if (rc == CACHET_MISS)
    violation(w->ch, "worker %d: exists/ttl of %s, never removed, is a miss",
              w->id, key);
  else if (!failed_ok(w, "exists/ttl", rc))
    unexpected(w, "exists/ttl", rc);
}

static void *work(void *arg) {
  worker *w = arg;
  int calls = 0;
  while (!atomic_load(&w->ch->stop) || calls < MIN_OPS) {
    switch (next(w, 10)) {
    case 0:
    case 1:
      do_set(w);
      break;
    case 2:
      do_get(w, next(w, 2));
      break;
    case 3:
      do_get_or_set(w);
      break;
    case 4:
      do_mget(w);
      break;
    case 5:
      do_mset(w);
      break;
    case 6:
      do_delete(w);
      break;
    case 7:
      do_evict(w);
      break;
    case 8:
      do_lock(w);
      break;
    default:
      do_exists_ttl(w);
      break;
    }
    calls++;
  }
  return NULL;
}

static void chaos_round(redisContext *r, int round) {
  const char *cmd = "CLIENT KILL TYPE normal SKIPME yes";
  if (round % 5 == 4)
    cmd = "SCRIPT FLUSH";
  else if (round % 7 == 6)
    cmd = "CLIENT KILL TYPE pubsub SKIPME yes"; /* the near cache's feed */
  else if (round % 11 == 10)
    cmd = "CLIENT PAUSE 30 ALL";
  redisReply *rep = redisCommand(r, cmd); /* no % in cmd */
  if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
    fail_msg("chaos: %s: %s", cmd, rep ? rep->str : r->errstr);
  freeReplyObject(rep);
  test_sleep_ms(15);
}

/* Retry a call that may meet a connection killed last. */
#define SETTLED(call)                                                          \
  do {                                                                         \
    int rc_ = CACHET_ECONN;                                                    \
    for (int try_ = 0; try_ < 8 && rc_ == CACHET_ECONN; try_++)                \
      rc_ = (call);                                                            \
    assert_int_equal(rc_, CACHET_OK);                                          \
  } while (0)

static void run_chaos(const char *prefix, int multiplex, size_t near_bytes) {
  char keyring[128];
  assert_int_equal(cachet_keygen(1, keyring, sizeof keyring), CACHET_OK);
  cachet_options o;
  test_options(test_group_server(), &o, prefix);
  o.pool_size = 3; /* fewer connections than threads */
  o.multiplex = multiplex;
  o.near_cache_bytes = near_bytes;
  o.keys = keyring;
  o.lock_lease_ms = 500; /* a loader whose publish was lost is taken over */
  chaos ch;
  memset(&ch, 0, sizeof ch);
  pthread_mutex_init(&ch.mu, NULL);
  assert_int_equal(cachet_open(&ch.c, &o), CACHET_OK);
  for (unsigned i = 0; i < NSTABLE; i++) {
    char key[16], val[96];
    snprintf(key, sizeof key, "s%u", i);
    int vl = value_of(val, sizeof val, key, 0, -1, 0);
    assert_int_equal(cachet_set(ch.c, key, strlen(key), val, (size_t)vl, 0),
                     CACHET_OK);
  }

  worker w[WORKERS];
  pthread_t th[WORKERS];
  for (int i = 0; i < WORKERS; i++) {
    w[i] = (worker){.ch = &ch, .id = i, .rng = 0x9e3779b97f4a7c15u * (i + 1)};
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  redisContext *r = test_redis(test_group_server());
  for (int round = 0; round < ROUNDS; round++)
    chaos_round(r, round);
  redisFree(r);
  atomic_store(&ch.stop, 1);
  int ok = 0, failed = 0;
  for (int i = 0; i < WORKERS; i++) {
    pthread_join(th[i], NULL);
    ok += w[i].ok;
    failed += w[i].failed;
    assert_true(w[i].ok > 0);
  }
  if (ch.violations > 0)
    fail_msg("%d violations; first: %s", ch.violations, ch.why);
  print_message("%s %d calls done, %d failed with a connection error\n", prefix,
                ok, failed);
  /* The chaos really reached the calls. */
  assert_true(failed > 0);

  /* The handle works again. */
  SETTLED(cachet_ping(ch.c));
  for (unsigned i = 0; i < NSTABLE; i++) {
    char key[16];
    snprintf(key, sizeof key, "s%u", i);
    void *v = NULL;
    size_t n;
    SETTLED(cachet_get(ch.c, key, strlen(key), &v, &n));
    cachet_free(v);
  }
  cachet_close(ch.c);

  /* Evict every tag, then read every key on a fresh handle: what is left
   * was written with no tags. */
  assert_int_equal(cachet_open(&ch.c, &o), CACHET_OK);
  uint64_t evicted = 0;
  assert_int_equal(cachet_evict_tags(ch.c, tag_names, NTAGS, &evicted),
                   CACHET_OK);
  for (unsigned k = 0; k < NKEYS; k++) {
    char key[16], want[64];
    key_of(key, sizeof key, k);
    void *v = NULL;
    size_t n;
    int rc = cachet_get(ch.c, key, strlen(key), &v, &n);
    if (rc == CACHET_OK) {
      int wl = snprintf(want, sizeof want, "key=%s;tags=0;", key);
      if (n < (size_t)wl || memcmp(v, want, (size_t)wl) != 0)
        fail_msg("after evicting every tag, %s holds \"%.*s\"", key, (int)n,
                 (char *)v);
    } else {
      assert_int_equal(rc, CACHET_MISS);
    }
    cachet_free(v);
  }
  assert_int_equal(cachet_clear(ch.c, 0, &evicted), CACHET_OK);
  cachet_close(ch.c);
  pthread_mutex_destroy(&ch.mu);
}

static void test_chaos_on_a_pool(void **state) {
  (void)state;
  run_chaos("chaos-pool:", 0, 0);
}

static void test_chaos_on_multiplexed_connections(void **state) {
  (void)state;
  run_chaos("chaos-mux:", 2, 0);
}

static void test_chaos_with_a_near_cache(void **state) {
  (void)state;
  run_chaos("chaos-near:", 0, 1u << 20);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chaos_on_a_pool),
      cmocka_unit_test(test_chaos_on_multiplexed_connections),
      cmocka_unit_test(test_chaos_with_a_near_cache),
  };
  return cmocka_run_group_tests_name("chaos", tests, test_group_setup,
                                     test_group_teardown);
}
