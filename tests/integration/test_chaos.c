/* Chaos: many threads on one handle doing every kind of call while the
 * server kills their connections (and the near cache's feed), flushes its
 * script cache and pauses. The handle is a plain pool, a pool with
 * multiplexed connections, a pool with a near cache, or a cluster whose
 * slots move under the calls; its values are sealed, so a reply handed to
 * the wrong call cannot pass unnoticed. test_chaos_via_async runs it all
 * through the async API.
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
 * The calls: set (tagged or not, a few large enough to be staged), get,
 * get_or_set, mget, mset, delete, evict_tags, lock acquire, extend and
 * release, exists, ttl, write-through and write-behind (an origin that
 * fails on purpose now and then) and prune.
 *
 * Nothing here waits on wall time: the chaos runs a number of rounds, each
 * after the workers made a number of calls, and the pauses are far below
 * every timeout. */
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
#include "cluster_harness.h"
#include "crc16.h"
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
  pthread_mutex_t mu;
  int violations;
  char why[512];
  atomic_int holder[NLOCKS];           /* worker id + 1, 0 = free */
  _Atomic uint64_t last_fence[NLOCKS]; /* the highest fence taken */
  atomic_int loads;                    /* get_or_set loader runs */
  atomic_int calls;                    /* made by all workers so far */
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

/* One value in eight is large enough to be staged (64 KiB or more): a
 * write of two steps that a killed connection can cut between them. */
#define LARGE 70000

static void do_set(worker *w) {
  static _Thread_local char val[LARGE];
  char key[16];
  key_of(key, sizeof key, next(w, NKEYS));
  unsigned mask = next(w, 1u << NTAGS);
  size_t vl = (size_t)value_of(val, 96, key, mask, w->id, w->seq++);
  if (next(w, 8) == 0) {
    memset(val + vl, 'x', LARGE - vl);
    vl = LARGE;
  }
  const char *tags[NTAGS];
  size_t nt = tags_of(mask, tags);
  int rc = nt == 0 ? cachet_set(w->ch->c, key, strlen(key), val, vl, 60000)
                   : cachet_set_tags(w->ch->c, key, strlen(key), val, vl, 60000,
                                     tags, nt);
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
  if (next(w, 2)) {
    rc = cachet_lock_extend(w->ch->c, lk, 5000);
    if (rc != CACHET_OK && !failed_ok(w, "lock_extend", rc))
      unexpected(w, "lock_extend", rc);
  }
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

/* An origin that fails one write in four, on purpose. */
static int origin(void *ud, const void *key, size_t keylen, const void *val,
                  size_t len) {
  (void)key, (void)keylen, (void)val, (void)len;
  worker *w = ud;
  return next(w, 4) == 0;
}

static void do_write_policy(worker *w) {
  char key[16], val[96];
  key_of(key, sizeof key, next(w, NKEYS));
  unsigned mask = next(w, 1u << NTAGS);
  int vl = value_of(val, sizeof val, key, mask, w->id, w->seq++);
  const char *tags[NTAGS];
  size_t nt = tags_of(mask, tags);
  uint64_t before = w->rng;
  int rc = next(w, 2)
               ? cachet_write_through(w->ch->c, key, strlen(key), val,
                                      (size_t)vl, origin, w, 60000, tags, nt)
               : cachet_write_behind(w->ch->c, key, strlen(key), val,
                                     (size_t)vl, origin, w, 60000, tags, nt);
  /* The origin drew from this worker's generator: replay its draw. */
  worker again = {.rng = before};
  next(&again, 2);
  int origin_failed = next(&again, 4) == 0;
  if (rc == CACHET_OK && !origin_failed)
    w->ok++;
  else if (rc == CACHET_EWRITER && origin_failed)
    w->ok++;
  else if (!failed_ok(w, "write policy", rc))
    unexpected(w, "write policy", rc);
}

static void do_prune(worker *w) {
  uint64_t n = 0;
  int rc = cachet_prune(w->ch->c, &n);
  if (rc == CACHET_OK)
    w->ok++;
  else if (!failed_ok(w, "prune", rc))
    unexpected(w, "prune", rc);
}

static void *work(void *arg) {
  worker *w = arg;
  int calls = 0;
  while (!atomic_load(&w->ch->stop) || calls < MIN_OPS) {
    switch (next(w, 12)) {
    case 10:
      do_write_policy(w);
      break;
    case 11:
      do_prune(w);
      break;
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
    atomic_fetch_add(&w->ch->calls, 1);
  }
  return NULL;
}

/* What the chaos does each round, and what it must finish before the
 * workers stop. */
typedef struct driver {
  void (*round)(struct driver *d, int round);
  void (*finish)(struct driver *d); /* may be NULL */
  redisContext **nodes;             /* every server (master), raw */
  int nnodes;
} driver;

static void command_ok(redisContext *r, const char *what, redisReply *rep) {
  if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
    fail_msg("chaos: %s: %s", what, rep ? rep->str : r->errstr);
  freeReplyObject(rep);
}

/* ---- one server ---------------------------------------------------------- */

typedef struct single {
  driver d;
  redisContext *r;
} single;

static void single_round(driver *d, int round) {
  single *sd = (single *)d;
  const char *cmd = "CLIENT KILL TYPE normal SKIPME yes";
  if (round % 5 == 4)
    cmd = "SCRIPT FLUSH";
  else if (round % 7 == 6)
    cmd = "CLIENT KILL TYPE pubsub SKIPME yes"; /* the near cache's feed */
  else if (round % 11 == 10)
    cmd = "CLIENT PAUSE 30 ALL";
  command_ok(sd->r, cmd, redisCommand(sd->r, cmd)); /* no % in cmd */
}

/* After a clear, a server holds none of the namespace's entries or tag
 * data: only locks, fencing counters and stampede locks, and staged values
 * cut off by a killed connection, which expire on their own. */
static void expect_lock_kind(void *ud, const char *k, size_t len) {
  (void)len;
  redisContext *r = ud;
  const char *close = strchr(k, '}');
  char kind = close != NULL ? close[1] : '?';
  if (kind == 'w')
    assert_true(test_int(r, "PTTL %s", k) > 0);
  else if (kind != 'l' && kind != 'f' && kind != 's')
    fail_msg("after the clear, %s is left", k);
}

static void expect_only_locks_left(redisContext *r, const char *prefix) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "%s*", prefix);
  test_scan_keys(r, pattern, expect_lock_kind, r);
}

/* The rounds are paced by the calls, not by the clock: a slow build
 * (sanitizers, a loaded machine) meets as much chaos per call as a fast
 * one, not more. A round waits for `n` more calls, or at most 5 s if the
 * calls stall (which the checks after the chaos then report). */
#define CALLS_PER_ROUND 40

static void wait_for_calls(chaos *ch, int n) {
  int until = atomic_load(&ch->calls) + n;
  for (int ms = 0; ms < 5000 && atomic_load(&ch->calls) < until; ms++)
    test_sleep_ms(1);
}

/* Retry a call that may meet a connection killed last. */
#define SETTLED(call)                                                          \
  do {                                                                         \
    int rc_ = CACHET_ECONN;                                                    \
    for (int try_ = 0; try_ < 8 && rc_ == CACHET_ECONN; try_++)                \
      rc_ = (call);                                                            \
    assert_int_equal(rc_, CACHET_OK);                                          \
  } while (0)

/* The chaos on a handle opened with `base` (its server and the variant):
 * the calls run while `d` does its rounds. */
static void run_chaos(const cachet_options *base, driver *d) {
  char keyring[128];
  assert_int_equal(cachet_keygen(1, keyring, sizeof keyring), CACHET_OK);
  cachet_options o = *base;
  o.pool_size = 3; /* fewer connections than threads */
  o.keys = keyring;
  o.lock_lease_ms = 500; /* a loader whose publish was lost is taken over */
  const char *prefix = o.prefix;
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
  for (int round = 0; round < ROUNDS; round++) {
    d->round(d, round);
    wait_for_calls(&ch, CALLS_PER_ROUND);
  }
  if (d->finish != NULL)
    d->finish(d);
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
  print_message("%s %d calls done, %d failed with a connection error, %d "
                "loads\n",
                prefix, ok, failed, atomic_load(&ch.loads));
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
  for (int i = 0; i < d->nnodes; i++)
    expect_only_locks_left(d->nodes[i], prefix);
  cachet_close(ch.c);
  pthread_mutex_destroy(&ch.mu);
}

static void run_on(const test_server *srv, const cachet_options *o) {
  single sd = {{single_round, NULL, NULL, 1}, test_redis(srv)};
  sd.d.nodes = &sd.r;
  run_chaos(o, &sd.d);
  redisFree(sd.r);
}

static void run_single(const char *prefix, int multiplex, size_t near_bytes) {
  cachet_options o;
  test_options(test_group_server(), &o, prefix);
  o.multiplex = multiplex;
  o.near_cache_bytes = near_bytes;
  run_on(test_group_server(), &o);
}

static void test_chaos_on_a_pool(void **state) {
  (void)state;
  run_single("chaos-pool:", 0, 0);
}

static void test_chaos_on_multiplexed_connections(void **state) {
  (void)state;
  run_single("chaos-mux:", 2, 0);
}

static void test_chaos_with_a_near_cache(void **state) {
  (void)state;
  run_single("chaos-near:", 0, 1u << 20);
}

/* Over TLS, with a near cache: its feed and every pooled connection are
 * TLS sessions cut in the middle. */
static void test_chaos_over_tls(void **state) {
  (void)state;
  char certs[256], ca[300], url[64];
  test_server srv;
  int port;
  assert_int_equal(test_tls_certs(certs, sizeof certs), 0);
  assert_int_equal(test_tls_server_start(&srv, certs, "server", 0, &port), 0);
  snprintf(ca, sizeof ca, "%s/ca.crt", certs);
  snprintf(url, sizeof url, "rediss://127.0.0.1:%d", port);
  cachet_options o;
  cachet_options_init(&o);
  o.url = url;
  o.prefix = "chaos-tls:";
  o.tls_ca_file = ca;
  o.near_cache_bytes = 1u << 20;
  run_on(&srv, &o);
  test_server_stop(&srv);
  test_tls_remove(certs);
}

/* ---- a cluster whose slots move ------------------------------------------
 * Three masters. Every slot that holds cachet's keys (one per bucket, the
 * {bb} of every key) and belongs to the first master moves to the second,
 * key by key as `redis-cli --cluster reshard` moves them, then back, a few
 * slots a round, while the rounds also kill every master's clients and
 * flush its scripts. The calls meet MOVED, ASK and TRYAGAIN in every
 * machine, and a bucket half moved. */

#define MASTERS 3

typedef struct cluster {
  driver d;
  test_cluster *cl;
  redisContext *node[MASTERS];
  char id[MASTERS][41];
  unsigned slots[256]; /* the buckets' slots the first master holds */
  int nslots;
  int moves, per_round; /* slots[i] goes over for moves < nslots, then back */
  long long migrated;   /* keys */
} cluster;

static void move_slot(cluster *cd, unsigned slot, int from, int to) {
  redisContext *src = cd->node[from], *dst = cd->node[to];
  command_ok(
      dst, "SETSLOT IMPORTING",
      redisCommand(dst, "CLUSTER SETSLOT %u IMPORTING %s", slot, cd->id[from]));
  command_ok(
      src, "SETSLOT MIGRATING",
      redisCommand(src, "CLUSTER SETSLOT %u MIGRATING %s", slot, cd->id[to]));
  for (;;) {
    redisReply *keys = redisCommand(src, "CLUSTER GETKEYSINSLOT %u 100", slot);
    if (keys == NULL || keys->type != REDIS_REPLY_ARRAY)
      fail_msg("chaos: GETKEYSINSLOT %u: %s", slot,
               keys && keys->str ? keys->str : src->errstr);
    size_t n = keys->elements;
    if (n == 0) {
      freeReplyObject(keys);
      break;
    }
    const char *argv[7 + 100];
    size_t lens[7 + 100];
    char port[16];
    snprintf(port, sizeof port, "%d", cd->cl->port[to]);
    const char *head[7] = {"MIGRATE", "127.0.0.1", port,  "",
                           "0",       "5000",      "KEYS"};
    for (int i = 0; i < 7; i++) {
      argv[i] = head[i];
      lens[i] = strlen(head[i]);
    }
    for (size_t i = 0; i < n; i++) {
      argv[7 + i] = keys->element[i]->str;
      lens[7 + i] = keys->element[i]->len;
    }
    command_ok(src, "MIGRATE", redisCommandArgv(src, (int)(7 + n), argv, lens));
    cd->migrated += (long long)n;
    freeReplyObject(keys);
  }
  /* The new owner first, as redis-cli does: then the old one stops
   * answering with ASK, and the third learns it. */
  int order[MASTERS] = {to, from, 3 - to - from};
  for (int i = 0; i < MASTERS; i++)
    command_ok(cd->node[order[i]], "SETSLOT NODE",
               redisCommand(cd->node[order[i]], "CLUSTER SETSLOT %u NODE %s",
                            slot, cd->id[to]));
}

static void cluster_moves(cluster *cd, int n) {
  for (; n > 0 && cd->moves < 2 * cd->nslots; n--, cd->moves++) {
    if (cd->moves < cd->nslots)
      move_slot(cd, cd->slots[cd->moves], 0, 1);
    else
      move_slot(cd, cd->slots[cd->moves - cd->nslots], 1, 0);
  }
}

static void cluster_round(driver *d, int round) {
  cluster *cd = (cluster *)d;
  for (int i = 0; i < MASTERS; i++) {
    const char *cmd = round % 5 == 4 ? "SCRIPT FLUSH"
                      : round % 2    ? "CLIENT KILL TYPE normal SKIPME yes"
                                     : NULL;
    if (cmd != NULL)
      command_ok(cd->node[i], cmd, redisCommand(cd->node[i], cmd));
  }
  cluster_moves(cd, cd->per_round);
}

static void cluster_finish(driver *d) {
  cluster *cd = (cluster *)d;
  cluster_moves(cd, 2 * cd->nslots);
}

static void test_chaos_in_a_cluster_whose_slots_move(void **state) {
  (void)state;
  test_cluster cl;
  assert_int_equal(test_cluster_start(&cl, MASTERS, 0), 0);
  cluster cd = {.d = {cluster_round, cluster_finish, NULL, MASTERS}, .cl = &cl};
  cd.d.nodes = cd.node;
  for (int i = 0; i < MASTERS; i++) {
    assert_non_null(cd.node[i] = test_cluster_node(&cl, i));
    assert_int_equal(test_cluster_node_id(&cl, i, cd.id[i]), 0);
  }
  for (unsigned b = 0; b < 256; b++) {
    char tag[8];
    int n = snprintf(tag, sizeof tag, "{%02x}", b);
    unsigned slot = cachet_key_slot(tag, (size_t)n);
    if (test_cluster_owner(&cl, slot) == 0)
      cd.slots[cd.nslots++] = slot;
  }
  assert_true(cd.nslots > 0);
  /* Over and back within the rounds, the last ones without moves. */
  cd.per_round = (2 * cd.nslots + ROUNDS - 11) / (ROUNDS - 10);
  char url[512];
  cachet_options o;
  test_cluster_options(&cl, &o, "chaos-cluster:", url, sizeof url);
  run_chaos(&o, &cd.d);
  assert_int_equal(cd.moves, 2 * cd.nslots);
  /* Keys really moved under the calls, and were followed there. */
  assert_true(cd.migrated > 0);
  long long asking = 0;
  for (int i = 0; i < MASTERS; i++) {
    asking += test_cmdstat(cd.node[i], "asking", "calls");
    redisFree(cd.node[i]);
  }
  print_message("%d slots moved over and back, %lld keys migrated, %lld "
                "ASK redirections followed\n",
                cd.nslots, cd.migrated, asking);
  test_cluster_stop(&cl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chaos_on_a_pool),
      cmocka_unit_test(test_chaos_on_multiplexed_connections),
      cmocka_unit_test(test_chaos_with_a_near_cache),
      cmocka_unit_test(test_chaos_over_tls),
      cmocka_unit_test(test_chaos_in_a_cluster_whose_slots_move),
  };
  return cmocka_run_group_tests_name("chaos", tests, test_group_setup,
                                     test_group_teardown);
}
