/* The async API (libevent) against a private redis-server: every operation,
 * NOSCRIPT recovery, 10k gets in flight, a connection killed with
 * operations in flight, a server killed and restarted, close with
 * operations in flight, timeouts, and the error model inside callbacks.
 *
 * The loop runs until the callbacks a test waits for have run; a guard
 * timer fails the test instead of hanging it. Operations are held in flight
 * with CLIENT PAUSE WRITE (scripts that write wait; the connection that
 * sent them stays blocked behind them), never with sleeps. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#ifdef CACHET_HAVE_LIBEVENT

#include <event2/event.h>

#include "keys.h"

static struct event_base *base;
static int guard_fired;

static int setup(void **state) {
  (void)state;
  base = event_base_new();
  if (base == NULL)
    return -1;
  return test_group_setup(state);
}

static int teardown(void **state) {
  test_group_teardown(state);
  event_base_free(base);
  return 0;
}

static void guard_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  guard_fired = 1;
  event_base_loopbreak(base);
}

/* Run the loop until *counter reaches target. The guard (60 s) only turns
 * a hang into a failure; nothing asserts on time. */
static void run_until(const int *counter, int target) {
  struct event *guard = evtimer_new(base, guard_cb, NULL);
  struct timeval tv = {60, 0};
  guard_fired = 0;
  evtimer_add(guard, &tv);
  while (*counter < target && !guard_fired)
    event_base_loop(base, EVLOOP_ONCE);
  event_free(guard);
  assert_false(guard_fired);
}

/* Run the loop for about `ms` (for writes to go out). */
static void run_for(int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  event_base_loopexit(base, &tv);
  event_base_dispatch(base);
}

static cachet_async *open_async(const char *prefix) {
  cachet_options o;
  test_options(test_group_server(), &o, prefix);
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  return a;
}

/* One callback's record: how often it ran and what it got. */
typedef struct res {
  int calls;
  int status;
  char val[256];
  size_t len;
  uint64_t count;
  cachet_lock *lock;
  char detail[256];
  int *done; /* bumped on every call */
} res;

static void note(res *r, int status) {
  r->calls++;
  r->status = status;
  snprintf(r->detail, sizeof r->detail, "%s", cachet_last_error());
  if (r->done != NULL)
    (*r->done)++;
}

static void value_cb(int status, const void *val, size_t len, void *ud) {
  res *r = ud;
  note(r, status);
  r->len = len;
  if (val != NULL && len < sizeof r->val) {
    memcpy(r->val, val, len);
    r->val[len] = '\0';
  }
}

static void status_cb(int status, void *ud) { note(ud, status); }

static void count_cb(int status, uint64_t n, void *ud) {
  res *r = ud;
  note(r, status);
  r->count = n;
}

static void lock_cb(int status, cachet_lock *lock, void *ud) {
  res *r = ud;
  note(r, status);
  r->lock = lock;
}

static void items_cb(int status, const cachet_async_item *items, size_t n,
                     void *ud);

/* Start, then run the loop until the callback ran, once. */
#define AWAIT(r) (run_until(&(r).calls, 1), assert_int_equal((r).calls, 1))

/* As the sync API: a value larger than any this handle accepts is refused
 * from its length header, never buffered, and the next call reconnects. */
static void test_async_value_above_max_value_size_is_refused(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "abig:");
  o.max_value_size = 1 << 20;
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  char *vk = NULL;
  size_t vkl = 0;
  assert_int_equal(
      cachet_value_key(cachet_async_cachet(a), "huge", 4, &vk, &vkl),
      CACHET_OK);
  test_command(test_group_server(), "SETRANGE %b 67108863 x", vk, vkl);
  res r = {0};
  assert_int_equal(cachet_async_get(a, "huge", 4, value_cb, &r), CACHET_OK);
  AWAIT(r);
  assert_int_equal(r.status, CACHET_EPROTO);
  assert_non_null(strstr(r.detail, "a bulk string of 67108864"));
  res w = {0};
  assert_int_equal(cachet_async_set(a, "k", 1, "v", 1, 0, status_cb, &w),
                   CACHET_OK);
  AWAIT(w);
  assert_int_equal(w.status, CACHET_OK);
  test_command(test_group_server(), "DEL %b", vk, vkl);
  cachet_free(vk);
  cachet_async_close(a);
}

static void degraded_cb(int status, const cachet_health *h, void *ud) {
  res *r = ud;
  note(r, status);
  if (h != NULL)
    r->count = (uint64_t)h->degraded << 1 | (uint64_t)h->healthy;
}

/* As the sync probe: a server refusing writes for memory is degraded. */
static void test_async_health_out_of_memory_is_degraded(void **state) {
  (void)state;
  cachet_async *a = open_async("ahealth:");
  test_command(test_group_server(), "CONFIG SET maxmemory 1");
  res r = {0};
  assert_int_equal(cachet_async_health_check(a, degraded_cb, &r), CACHET_OK);
  AWAIT(r);
  test_command(test_group_server(), "CONFIG SET maxmemory 0");
  assert_int_equal(r.status, CACHET_OK);
  assert_int_equal(r.count, 3); /* healthy and degraded */
  cachet_async_close(a);
}

static void test_async_set_get_delete_round_trip(void **state) {
  (void)state;
  cachet_async *a = open_async("async1:");
  const char key[] = {'k', '\0', 'y'};
  const char val[] = {'v', '\0', (char)0xff};
  res s = {0}, g = {0}, d = {0}, g2 = {0}, d2 = {0};
  assert_int_equal(cachet_async_set(a, key, sizeof key, val, sizeof val, 60000,
                                    status_cb, &s),
                   CACHET_OK);
  /* Never called from inside the call that started it. */
  assert_int_equal(s.calls, 0);
  AWAIT(s);
  assert_int_equal(s.status, CACHET_OK);

  assert_int_equal(cachet_async_get(a, key, sizeof key, value_cb, &g),
                   CACHET_OK);
  AWAIT(g);
  assert_int_equal(g.status, CACHET_OK);
  assert_int_equal(g.len, sizeof val);
  assert_memory_equal(g.val, val, sizeof val);

  assert_int_equal(cachet_async_delete(a, key, sizeof key, status_cb, &d),
                   CACHET_OK);
  AWAIT(d);
  assert_int_equal(d.status, CACHET_OK);
  assert_int_equal(cachet_async_get(a, key, sizeof key, value_cb, &g2),
                   CACHET_OK);
  AWAIT(g2);
  assert_int_equal(g2.status, CACHET_MISS);
  assert_string_equal(g2.detail, "");
  assert_int_equal(cachet_async_delete(a, key, sizeof key, status_cb, &d2),
                   CACHET_OK);
  AWAIT(d2);
  assert_int_equal(d2.status, CACHET_MISS);

  /* The sync API reads what the async one wrote: same envelope, keys. */
  res s2 = {0};
  assert_int_equal(
      cachet_async_set(a, "shared", 6, "both", 4, 0, status_cb, &s2),
      CACHET_OK);
  AWAIT(s2);
  void *out = NULL;
  size_t outlen = 0;
  assert_int_equal(
      cachet_get(cachet_async_cachet(a), "shared", 6, &out, &outlen),
      CACHET_OK);
  assert_int_equal(outlen, 4);
  assert_memory_equal(out, "both", 4);
  cachet_free(out);

  cachet_metrics m;
  cachet_metrics_snapshot(cachet_async_cachet(a), &m);
  assert_true(m.writes >= 2);
  assert_true(m.hits >= 2);
  assert_true(m.misses >= 1);
  assert_int_equal(m.deletes, 1);
  cachet_async_close(a);
}

/* A large value is staged (SET to a w key, then set_tags renames it into
 * place) as in the sync API: it reads back whole through both APIs, keeps
 * its tags, and leaves no staging key. */
static void test_async_large_value_is_staged(void **state) {
  (void)state;
  cachet_async *a = open_async("astage:");
  cachet *c = cachet_async_cachet(a);
  size_t n = (size_t)1 << 20;
  char *big = malloc(n);
  assert_non_null(big);
  for (size_t i = 0; i < n; i++)
    big[i] = (char)('A' + i % 23);
  redisContext *r = test_redis(test_group_server());
  freeReplyObject(redisCommand(r, "CONFIG RESETSTAT"));
  const char *tg[] = {"bigtag"};
  res s = {0}, s2 = {0};
  assert_int_equal(
      cachet_async_set_tags(a, "big", 3, big, n, 60000, tg, 1, status_cb, &s),
      CACHET_OK);
  AWAIT(s);
  assert_int_equal(s.status, CACHET_OK);
  void *out = NULL;
  size_t outlen = 0;
  assert_int_equal(cachet_get(c, "big", 3, &out, &outlen), CACHET_OK);
  assert_int_equal(outlen, n);
  assert_memory_equal(out, big, n);
  cachet_free(out);
  /* Overwritten persistent: the staging key's TTL must not stick. */
  assert_int_equal(cachet_async_set(a, "big", 3, big, n, 0, status_cb, &s2),
                   CACHET_OK);
  AWAIT(s2);
  assert_int_equal(s2.status, CACHET_OK);
  assert_int_equal(test_cmdstat(r, "rename", "calls"), 2);
  redisReply *rep = redisCommand(r, "KEYS astage:*w:*");
  assert_int_equal(rep->elements, 0);
  freeReplyObject(rep);
  rep = redisCommand(r, "KEYS astage:*v:big");
  assert_int_equal(rep->elements, 1);
  redisReply *p = redisCommand(r, "PTTL %s", rep->element[0]->str);
  assert_int_equal(p->integer, -1);
  freeReplyObject(p);
  freeReplyObject(rep);
  redisFree(r);
  free(big);
  cachet_async_close(a);
}

static void ttl_cb(int status, int64_t ttl_ms, void *ud) {
  res *r = ud;
  note(r, status);
  r->count = (uint64_t)ttl_ms;
}

/* exists and ttl, as their sync forms: hit, miss, no expiry, never an
 * error for an absent key. */
static void test_async_exists_and_ttl(void **state) {
  (void)state;
  cachet_async *a = open_async("attl:");
  res s1 = {0}, s2 = {0};
  assert_int_equal(cachet_async_set(a, "ttl", 3, "v", 1, 60000, status_cb, &s1),
                   CACHET_OK);
  assert_int_equal(cachet_async_set(a, "forever", 7, "v", 1, 0, status_cb, &s2),
                   CACHET_OK);
  AWAIT(s1);
  AWAIT(s2);
  res e1 = {0}, e2 = {0}, t1 = {0}, t2 = {0}, t3 = {0};
  assert_int_equal(cachet_async_exists(a, "ttl", 3, status_cb, &e1), CACHET_OK);
  assert_int_equal(cachet_async_exists(a, "absent", 6, status_cb, &e2),
                   CACHET_OK);
  assert_int_equal(cachet_async_ttl(a, "ttl", 3, ttl_cb, &t1), CACHET_OK);
  assert_int_equal(cachet_async_ttl(a, "forever", 7, ttl_cb, &t2), CACHET_OK);
  assert_int_equal(cachet_async_ttl(a, "absent", 6, ttl_cb, &t3), CACHET_OK);
  AWAIT(e1);
  AWAIT(e2);
  AWAIT(t1);
  AWAIT(t2);
  AWAIT(t3);
  assert_int_equal(e1.status, CACHET_OK);
  assert_int_equal(e2.status, CACHET_MISS);
  assert_string_equal(e2.detail, "");
  assert_int_equal(t1.status, CACHET_OK);
  assert_true((int64_t)t1.count > 50000 && (int64_t)t1.count <= 60000);
  assert_int_equal(t2.status, CACHET_OK);
  assert_int_equal((int64_t)t2.count, -1);
  assert_int_equal(t3.status, CACHET_MISS);
  assert_int_equal(t3.count, 0);
  /* Bad input fails in the call, as everywhere. */
  res bad = {0};
  assert_int_equal(cachet_async_exists(a, "", 0, status_cb, &bad),
                   CACHET_EINVAL);
  assert_int_equal(cachet_async_ttl(a, "", 0, ttl_cb, &bad), CACHET_EINVAL);
  assert_int_equal(bad.calls, 0);
  cachet_async_close(a);
}

static void test_async_invalid_arguments_fail_in_the_call(void **state) {
  (void)state;
  cachet_async *a = open_async("async2:");
  res r = {0};
  assert_int_equal(cachet_async_get(a, "", 0, value_cb, &r), CACHET_EINVAL);
  assert_int_equal(cachet_async_set(a, "k", 1, "v", 1, -5, status_cb, &r),
                   CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "negative"));
  const char *bad[] = {""};
  assert_int_equal(
      cachet_async_set_tags(a, "k", 1, "v", 1, 0, bad, 1, status_cb, &r),
      CACHET_EINVAL);
  assert_int_equal(cachet_async_lock_acquire(a, "l", 0, 0, lock_cb, &r),
                   CACHET_EINVAL);
  cachet_entry e = {0};
  assert_int_equal(cachet_async_mget(a, &e, 1, items_cb, &r), CACHET_EINVAL);
  assert_non_null(strstr(cachet_last_error(), "entry 0"));
  run_for(20);
  assert_int_equal(r.calls, 0);
  cachet_async_close(a);

  cachet_options o;
  test_options(test_group_server(), &o, "async2:");
  cachet_async *cl = NULL;
  assert_int_equal(cachet_async_open(&cl, NULL, &o), CACHET_EINVAL);
  assert_null(cl);
}

static void test_async_tags_evict_and_retag(void **state) {
  (void)state;
  cachet_async *a = open_async("async3:");
  const char *t12[] = {"t1", "t2"};
  const char *t2[] = {"t2"};
  res s[4] = {{0}};
  int done = 0;
  for (int i = 0; i < 4; i++)
    s[i].done = &done;
  assert_int_equal(
      cachet_async_set_tags(a, "a", 1, "A", 1, 60000, t12, 2, status_cb, &s[0]),
      CACHET_OK);
  assert_int_equal(
      cachet_async_set_tags(a, "b", 1, "B", 1, 60000, t2, 1, status_cb, &s[1]),
      CACHET_OK);
  assert_int_equal(cachet_async_set(a, "c", 1, "C", 1, 60000, status_cb, &s[2]),
                   CACHET_OK);
  /* Overwrite b without tags: the retag round drops its t2 membership. */
  assert_int_equal(
      cachet_async_set(a, "b", 1, "B2", 2, 60000, status_cb, &s[3]), CACHET_OK);
  run_until(&done, 4);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(s[i].calls, 1);
    assert_int_equal(s[i].status, CACHET_OK);
  }
  res ev = {0};
  const char *evt[] = {"t2"};
  assert_int_equal(cachet_async_evict_tags(a, evt, 1, count_cb, &ev),
                   CACHET_OK);
  AWAIT(ev);
  assert_int_equal(ev.status, CACHET_OK);
  assert_int_equal(ev.count, 1);
  res ga = {0}, gb = {0}, gc = {0};
  assert_int_equal(cachet_async_get(a, "a", 1, value_cb, &ga), CACHET_OK);
  assert_int_equal(cachet_async_get(a, "b", 1, value_cb, &gb), CACHET_OK);
  assert_int_equal(cachet_async_get(a, "c", 1, value_cb, &gc), CACHET_OK);
  AWAIT(gc);
  assert_int_equal(ga.status, CACHET_MISS);
  assert_int_equal(gb.status, CACHET_OK);
  assert_string_equal(gb.val, "B2");
  assert_int_equal(gc.status, CACHET_OK);
  /* Nothing carries t1 any more. */
  res ev1 = {0};
  const char *t1[] = {"t1"};
  assert_int_equal(cachet_async_evict_tags(a, t1, 1, count_cb, &ev1),
                   CACHET_OK);
  AWAIT(ev1);
  assert_int_equal(ev1.status, CACHET_OK);
  assert_int_equal(ev1.count, 0);
  /* No tags: done at once, still through the loop. */
  res ev0 = {0};
  assert_int_equal(cachet_async_evict_tags(a, NULL, 0, count_cb, &ev0),
                   CACHET_OK);
  assert_int_equal(ev0.calls, 0);
  AWAIT(ev0);
  assert_int_equal(ev0.status, CACHET_OK);
  cachet_async_close(a);
}

static void test_async_evict_many_members_in_chunks(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "async4:");
  const char *tags[] = {"big", "other"};
  enum { N = 600 };
  for (int i = 0; i < N; i++) {
    char k[32];
    int n = snprintf(k, sizeof k, "m%d", i);
    assert_int_equal(
        cachet_set_tags(c, k, (size_t)n, "v", 1, 60000, tags, i % 3 ? 1 : 2),
        CACHET_OK);
  }
  cachet_close(c);
  cachet_async *a = open_async("async4:");
  res ev = {0};
  const char *big[] = {"big"};
  assert_int_equal(cachet_async_evict_tags(a, big, 1, count_cb, &ev),
                   CACHET_OK);
  AWAIT(ev);
  assert_int_equal(ev.status, CACHET_OK);
  assert_int_equal(ev.count, N);
  res g = {0};
  assert_int_equal(cachet_async_get(a, "m3", 2, value_cb, &g), CACHET_OK);
  AWAIT(g);
  assert_int_equal(g.status, CACHET_MISS);
  cachet_async_close(a);
}

static void test_async_clear_and_dry_run(void **state) {
  (void)state;
  cachet_async *a = open_async("async5:");
  res s[10] = {{0}};
  int done = 0;
  const char *tg[] = {"x"};
  for (int i = 0; i < 10; i++) {
    char k[8];
    int n = snprintf(k, sizeof k, "k%d", i);
    s[i].done = &done;
    assert_int_equal(cachet_async_set_tags(a, k, (size_t)n, "v", 1, 0, tg, 1,
                                           status_cb, &s[i]),
                     CACHET_OK);
  }
  run_until(&done, 10);
  test_command(test_group_server(), "SET async5:foreign 1");
  res dry = {0}, cl = {0}, g = {0};
  assert_int_equal(cachet_async_clear(a, 1, count_cb, &dry), CACHET_OK);
  AWAIT(dry);
  assert_int_equal(dry.status, CACHET_OK);
  assert_int_equal(dry.count, 10);
  assert_int_equal(cachet_async_clear(a, 0, count_cb, &cl), CACHET_OK);
  AWAIT(cl);
  assert_int_equal(cl.status, CACHET_OK);
  assert_int_equal(cl.count, 10);
  assert_int_equal(cachet_async_get(a, "k1", 2, value_cb, &g), CACHET_OK);
  AWAIT(g);
  assert_int_equal(g.status, CACHET_MISS);
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommand(r, "EXISTS async5:foreign");
  assert_int_equal(rep->integer, 1);
  freeReplyObject(rep);
  redisFree(r);
  cachet_async_close(a);
}

static void release_later(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  cachet_lock *lk = arg;
  cachet *c = test_open(test_group_server(), "async6:");
  assert_int_equal(cachet_lock_release(c, lk), CACHET_OK);
  cachet_close(c);
}

static void test_async_locks(void **state) {
  (void)state;
  cachet_async *a = open_async("async6:");
  res acq = {0};
  assert_int_equal(cachet_async_lock_acquire(a, "L", 10000, 0, lock_cb, &acq),
                   CACHET_OK);
  AWAIT(acq);
  assert_int_equal(acq.status, CACHET_OK);
  assert_non_null(acq.lock);
  uint64_t fence = cachet_lock_fence(acq.lock);
  assert_true(fence > 0);

  /* Held: a try-once attempt is NOT_ACQUIRED. */
  res busy = {0};
  assert_int_equal(cachet_async_lock_acquire(a, "L", 10000, 0, lock_cb, &busy),
                   CACHET_OK);
  AWAIT(busy);
  assert_int_equal(busy.status, CACHET_NOT_ACQUIRED);
  assert_null(busy.lock);
  assert_non_null(strstr(busy.detail, "held by another owner"));

  res ext = {0};
  assert_int_equal(
      cachet_async_lock_extend(a, acq.lock, 20000, status_cb, &ext), CACHET_OK);
  AWAIT(ext);
  assert_int_equal(ext.status, CACHET_OK);

  /* A waiter gets it once the holder (another handle) releases it, which
   * happens on a loop timer while the waiter backs off on its own. */
  res wait = {0};
  struct event *rel = evtimer_new(base, release_later, acq.lock);
  struct timeval tv = {0, 50000};
  evtimer_add(rel, &tv);
  assert_int_equal(
      cachet_async_lock_acquire(a, "L", 10000, 20000, lock_cb, &wait),
      CACHET_OK);
  AWAIT(wait);
  event_free(rel);
  assert_int_equal(wait.status, CACHET_OK);
  assert_true(cachet_lock_fence(wait.lock) > fence);

  /* The first handle is not the owner any more. */
  res notown = {0}, rel2 = {0}, gone = {0};
  assert_int_equal(cachet_async_lock_release(a, acq.lock, status_cb, &notown),
                   CACHET_OK);
  AWAIT(notown);
  assert_int_equal(notown.status, CACHET_LOCK_NOT_OWNER);
  assert_string_equal(notown.detail, "");
  assert_int_equal(cachet_async_lock_release(a, wait.lock, status_cb, &rel2),
                   CACHET_OK);
  AWAIT(rel2);
  assert_int_equal(rel2.status, CACHET_OK);
  assert_int_equal(cachet_async_lock_release(a, wait.lock, status_cb, &gone),
                   CACHET_OK);
  AWAIT(gone);
  assert_int_equal(gone.status, CACHET_LOCK_EXPIRED);
  cachet_lock_free(acq.lock);
  cachet_lock_free(wait.lock);
  cachet_async_close(a);
}

/* ---- get_or_set ---------------------------------------------------------- */

typedef struct loader_ctx {
  int calls;
  int fail;
  int delay_ms;
  int pause_ms; /* CLIENT PAUSE the server for this long at the start */
  cachet_async_load *pending;
  struct event *ev;
  char lock_key[128]; /* the stampede lock, checked before completing */
  long long lock_pttl;
} loader_ctx;

static loader_ctx lctx;

static void complete_load(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  if (lctx.lock_key[0] != '\0') {
    redisContext *r = test_redis(test_group_server());
    redisReply *rep = redisCommand(r, "PTTL %s", lctx.lock_key);
    lctx.lock_pttl = rep->integer;
    freeReplyObject(rep);
    redisFree(r);
  }
  cachet_async_load *ld = lctx.pending;
  lctx.pending = NULL;
  if (lctx.fail)
    cachet_async_load_done(ld, 7, NULL, 0, 0);
  else
    cachet_async_load_done(ld, 0, "loaded", 6, 60000);
}

static void loader(cachet_async_load *load, const void *key, size_t keylen,
                   int64_t ttl_ms, void *ud) {
  (void)key;
  (void)keylen;
  (void)ttl_ms;
  (void)ud;
  lctx.calls++;
  lctx.pending = load;
  if (lctx.pause_ms > 0) {
    char cmd[64];
    snprintf(cmd, sizeof cmd, "CLIENT PAUSE %d ALL", lctx.pause_ms);
    test_command(test_group_server(), cmd);
  }
  if (lctx.delay_ms == 0) {
    complete_load(-1, 0, NULL); /* completes before it returns */
    return;
  }
  struct timeval tv = {lctx.delay_ms / 1000, (lctx.delay_ms % 1000) * 1000};
  lctx.ev = evtimer_new(base, complete_load, NULL);
  evtimer_add(lctx.ev, &tv);
}

static void test_async_get_or_set_loads_once(void **state) {
  (void)state;
  cachet_async *a = open_async("async7:");
  memset(&lctx, 0, sizeof lctx);
  lctx.delay_ms = 100;
  res r[5] = {{0}};
  int done = 0;
  for (int i = 0; i < 5; i++) {
    r[i].done = &done;
    assert_int_equal(cachet_async_get_or_set(a, "gk", 2, loader, 60000, NULL, 0,
                                             value_cb, &r[i]),
                     CACHET_OK);
  }
  run_until(&done, 5);
  event_free(lctx.ev);
  assert_int_equal(lctx.calls, 1);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, CACHET_OK);
    assert_string_equal(r[i].val, "loaded");
  }
  /* A hit now, without the loader; and the lock was released. */
  res hit = {0};
  assert_int_equal(cachet_async_get_or_set(a, "gk", 2, loader, 60000, NULL, 0,
                                           value_cb, &hit),
                   CACHET_OK);
  AWAIT(hit);
  assert_int_equal(hit.status, CACHET_OK);
  assert_int_equal(lctx.calls, 1);
  cachet_metrics m;
  cachet_metrics_snapshot(cachet_async_cachet(a), &m);
  assert_true(m.stampede_waits >= 1);

  /* A loader that completes inside its own call, with tags. */
  memset(&lctx, 0, sizeof lctx);
  const char *tags[] = {"gt"};
  res now = {0};
  assert_int_equal(cachet_async_get_or_set(a, "gk2", 3, loader, 60000, tags, 1,
                                           value_cb, &now),
                   CACHET_OK);
  AWAIT(now);
  assert_int_equal(now.status, CACHET_OK);
  assert_string_equal(now.val, "loaded");
  res ev = {0};
  assert_int_equal(cachet_async_evict_tags(a, tags, 1, count_cb, &ev),
                   CACHET_OK);
  AWAIT(ev);
  assert_int_equal(ev.count, 1);
  cachet_async_close(a);
}

static void test_async_get_or_set_loader_failure_caches_nothing(void **state) {
  (void)state;
  cachet_async *a = open_async("async8:");
  memset(&lctx, 0, sizeof lctx);
  lctx.fail = 1;
  res r = {0};
  assert_int_equal(
      cachet_async_get_or_set(a, "fk", 2, loader, 60000, NULL, 0, value_cb, &r),
      CACHET_OK);
  AWAIT(r);
  assert_int_equal(r.status, CACHET_ELOADER);
  assert_non_null(strstr(r.detail, "loader"));
  /* Released at once: the next caller loads (and succeeds). */
  lctx.fail = 0;
  res r2 = {0};
  assert_int_equal(cachet_async_get_or_set(a, "fk", 2, loader, 60000, NULL, 0,
                                           value_cb, &r2),
                   CACHET_OK);
  AWAIT(r2);
  assert_int_equal(r2.status, CACHET_OK);
  assert_int_equal(lctx.calls, 2);
  cachet_async_close(a);
}

static void test_async_get_or_set_renews_the_lease(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "async9:");
  o.lock_lease_ms = 300;
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  memset(&lctx, 0, sizeof lctx);
  lctx.delay_ms = 1200; /* four leases */
  cachet_key sk = {0};
  assert_int_equal(cachet_key_build(cachet_async_cachet(a), &sk,
                                    CACHET_KIND_STAMPEDE,
                                    cachet_bucket("rk", 2), "rk", 2),
                   CACHET_OK);
  snprintf(lctx.lock_key, sizeof lctx.lock_key, "%s", sk.buf);
  cachet_key_free(&sk);
  res r = {0};
  assert_int_equal(
      cachet_async_get_or_set(a, "rk", 2, loader, 0, NULL, 0, value_cb, &r),
      CACHET_OK);
  AWAIT(r);
  event_free(lctx.ev);
  assert_int_equal(r.status, CACHET_OK);
  /* Still held when the loader completed: the timer renewed it. */
  assert_true(lctx.lock_pttl > 0);
  cachet_async_close(a);
}

/* A renewal still in flight when the load ends: its reply arrives after
 * the loader's state is gone and must not touch it. The server holds every
 * command for 2 s from the loader's start; the renewal goes at 1 s and the
 * load completes at 1.2 s, so the renewal's reply comes last. */
static void test_async_load_ends_while_a_renewal_is_in_flight(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "async9b:");
  o.lock_lease_ms = 3000;
  o.fetch_wait_ms = 10000;
  o.timeout_ms = 10000;
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  memset(&lctx, 0, sizeof lctx);
  lctx.delay_ms = 1200;
  lctx.pause_ms = 2000;
  res r = {0};
  assert_int_equal(
      cachet_async_get_or_set(a, "pk", 2, loader, 0, NULL, 0, value_cb, &r),
      CACHET_OK);
  AWAIT(r);
  event_free(lctx.ev);
  assert_int_equal(r.status, CACHET_OK);
  assert_string_equal(r.val, "loaded");
  run_for(100); /* the renewal's reply, after the load's end */
  res hit = {0};
  assert_int_equal(cachet_async_get(a, "pk", 2, value_cb, &hit), CACHET_OK);
  AWAIT(hit);
  assert_int_equal(hit.status, CACHET_OK);
  assert_string_equal(hit.val, "loaded");
  cachet_async_close(a);
}

/* ---- batches and health -----------------------------------------------------
 */

static int items_calls;
static int items_status;
static cachet_async_item items_copy[8];
static char items_vals[8][32];

static void items_cb(int status, const cachet_async_item *items, size_t n,
                     void *ud) {
  (void)ud;
  items_calls++;
  items_status = status;
  for (size_t i = 0; i < n && i < 8; i++) {
    items_copy[i] = items[i];
    items_vals[i][0] = '\0';
    if (items[i].val != NULL && items[i].len < 32) {
      memcpy(items_vals[i], items[i].val, items[i].len);
      items_vals[i][items[i].len] = '\0';
    }
    items_copy[i].val = NULL;
  }
}

static void test_async_mset_mget(void **state) {
  (void)state;
  cachet_async *a = open_async("async10:");
  cachet_entry e[4];
  memset(e, 0, sizeof e);
  const char *tg[] = {"bt"};
  e[0].key = "a", e[0].keylen = 1, e[0].val = "first", e[0].len = 5;
  e[1].key = "b", e[1].keylen = 1, e[1].val = "bee", e[1].len = 3;
  e[1].tags = tg, e[1].ntags = 1;
  e[2].key = "a", e[2].keylen = 1, e[2].val = "last", e[2].len = 4;
  e[3].key = "c", e[3].keylen = 1, e[3].val = "", e[3].len = 0;
  e[3].ttl_ms = 60000;
  items_calls = 0;
  assert_int_equal(cachet_async_mset(a, e, 4, items_cb, NULL), CACHET_OK);
  run_until(&items_calls, 1);
  assert_int_equal(items_status, CACHET_OK);
  for (int i = 0; i < 4; i++)
    assert_int_equal(items_copy[i].status, CACHET_OK);

  /* A foreign value under the value key: that item is ECORRUPT, the call
   * is still OK. */
  cachet_key vk = {0};
  assert_int_equal(cachet_key_build(cachet_async_cachet(a), &vk,
                                    CACHET_KIND_VALUE, cachet_bucket("x", 1),
                                    "x", 1),
                   CACHET_OK);
  test_command(test_group_server(), "SET %s %s", vk.buf, "not-an-envelope");
  cachet_key_free(&vk);
  cachet_entry q[5];
  memset(q, 0, sizeof q);
  const char *keys[] = {"a", "b", "c", "missing", "x"};
  for (int i = 0; i < 5; i++)
    q[i].key = keys[i], q[i].keylen = strlen(keys[i]);
  items_calls = 0;
  assert_int_equal(cachet_async_mget(a, q, 5, items_cb, NULL), CACHET_OK);
  run_until(&items_calls, 1);
  assert_int_equal(items_calls, 1);
  assert_int_equal(items_status, CACHET_OK);
  assert_int_equal(items_copy[0].status, CACHET_OK);
  assert_string_equal(items_vals[0], "last");
  assert_string_equal(items_vals[1], "bee");
  assert_int_equal(items_copy[2].status, CACHET_OK);
  assert_int_equal(items_copy[2].len, 0);
  assert_int_equal(items_copy[3].status, CACHET_MISS);
  assert_int_equal(items_copy[4].status, CACHET_ECORRUPT);

  /* Empty batches complete through the loop too. */
  items_calls = 0;
  assert_int_equal(cachet_async_mget(a, NULL, 0, items_cb, NULL), CACHET_OK);
  assert_int_equal(cachet_async_mset(a, NULL, 0, items_cb, NULL), CACHET_OK);
  assert_int_equal(items_calls, 0);
  run_until(&items_calls, 2);
  cachet_async_close(a);
}

/* Untagged entries of an async mset are plain SETs too; those that had
 * tags lose them (untag.lua), as with the sync mset. */
static void test_async_mset_untagged_drops_old_tags(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "aplain:");
  const char *x[] = {"x"};
  assert_int_equal(cachet_set_tags(c, "k1", 2, "old", 3, 600000, x, 1),
                   CACHET_OK);
  assert_int_equal(cachet_set_tags(c, "k2", 2, "old", 3, 0, x, 1), CACHET_OK);
  redisContext *r = test_redis(test_group_server());
  long long reads = test_cmdstat(r, "smembers", "calls");
  long long scripts = test_scripts_run(r);

  cachet_async *a = open_async("aplain:");
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  const char *k[] = {"k1", "k2", "k3"};
  for (int i = 0; i < 3; i++)
    e[i].key = k[i], e[i].keylen = 2, e[i].val = k[i], e[i].len = 2;
  e[0].ttl_ms = 600000;
  items_calls = 0;
  assert_int_equal(cachet_async_mset(a, e, 3, items_cb, NULL), CACHET_OK);
  run_until(&items_calls, 1);
  assert_int_equal(items_status, CACHET_OK);
  for (int i = 0; i < 3; i++)
    assert_int_equal(items_copy[i].status, CACHET_OK);
  cachet_async_close(a);
  /* The plain path, not set_tags: one read of the tag set per entry, and
   * one untag (which reads it again, inside the script) each for k1 and k2,
   * which had tags. set_tags would have run three scripts. */
  assert_int_equal(test_scripts_run(r) - scripts, 2);
  assert_int_equal(test_cmdstat(r, "smembers", "calls") - reads, 3 + 2);

  for (int i = 0; i < 3; i++) {
    cachet_key mk = {0};
    assert_int_equal(cachet_key_build(c, &mk, CACHET_KIND_TAGSET,
                                      cachet_bucket(k[i], 2), k[i], 2),
                     CACHET_OK);
    assert_int_equal(test_int(r, "EXISTS %s", mk.buf), 0);
    cachet_key_free(&mk);
    void *v = NULL;
    size_t n = 0;
    assert_int_equal(cachet_get(c, k[i], 2, &v, &n), CACHET_OK);
    assert_memory_equal(v, k[i], 2);
    cachet_free(v);
  }
  int64_t ttl = 0;
  assert_int_equal(cachet_ttl(c, "k2", 2, &ttl), CACHET_OK);
  assert_int_equal(ttl, -1);
  uint64_t evicted = 1;
  assert_int_equal(cachet_evict_tags(c, x, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 0);
  redisFree(r);
  cachet_close(c);
}

/* A single untagged async set is a plain SET too: over a tagged entry it
 * drops the tags; over an untagged one it runs no script. */
static void test_async_untagged_set_is_plain(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "aplain1:");
  const char *x[] = {"x"};
  assert_int_equal(cachet_set_tags(c, "k", 1, "old", 3, 0, x, 1), CACHET_OK);
  redisContext *r = test_redis(test_group_server());
  long long reads = test_cmdstat(r, "smembers", "calls");
  long long scripts = test_scripts_run(r);
  cachet_async *a = open_async("aplain1:");
  res s = {0}, s2 = {0};
  assert_int_equal(cachet_async_set(a, "k", 1, "new", 3, 0, status_cb, &s),
                   CACHET_OK);
  AWAIT(s);
  assert_int_equal(s.status, CACHET_OK);
  assert_int_equal(cachet_async_set(a, "k", 1, "newer", 5, 0, status_cb, &s2),
                   CACHET_OK);
  AWAIT(s2);
  assert_int_equal(s2.status, CACHET_OK);
  cachet_async_close(a);
  /* Two reads of the tag set, and one untag (it reads it too) for the
   * first set, over a tagged entry. */
  assert_int_equal(test_scripts_run(r) - scripts, 1);
  assert_int_equal(test_cmdstat(r, "smembers", "calls") - reads, 2 + 1);
  uint64_t evicted = 1;
  assert_int_equal(cachet_evict_tags(c, x, 1, &evicted), CACHET_OK);
  assert_int_equal(evicted, 0);
  assert_true(test_hit(c, "k", "newer"));
  redisFree(r);
  cachet_close(c);
}

static int health_calls;
static cachet_health health_copy;
static int health_status;

static void health_cb(int status, const cachet_health *h, void *ud) {
  (void)ud;
  health_calls++;
  health_status = status;
  if (h != NULL)
    health_copy = *h;
}

static void test_async_health(void **state) {
  (void)state;
  cachet_async *a = open_async("async11:");
  health_calls = 0;
  assert_int_equal(cachet_async_health_check(a, health_cb, NULL), CACHET_OK);
  run_until(&health_calls, 1);
  assert_int_equal(health_status, CACHET_OK);
  assert_true(health_copy.server_version[0] >= '1');
  assert_string_equal(health_copy.maxmemory_policy, "noeviction");
  assert_true(health_copy.scripts_total > 0);
  assert_true(health_copy.scripts_loaded <= health_copy.scripts_total);
  assert_true(health_copy.healthy);
  assert_true(health_copy.ping_ms >= 0);
  test_command(test_group_server(), "CONFIG SET maxmemory-policy allkeys-lru");
  assert_int_equal(cachet_async_health_check(a, health_cb, NULL), CACHET_OK);
  run_until(&health_calls, 2);
  assert_int_equal(health_status, CACHET_OK);
  assert_false(health_copy.healthy);
  assert_true(health_copy.policy_warning);
  test_command(test_group_server(), "CONFIG SET maxmemory-policy noeviction");
  cachet_async_close(a);
}

/* ---- NOSCRIPT, errors -------------------------------------------------------
 */

static void test_async_noscript_recovery(void **state) {
  (void)state;
  cachet_async *a = open_async("async12:");
  cachet_metrics m0, m1;
  cachet_metrics_snapshot(cachet_async_cachet(a), &m0);
  const char *tg[] = {"nt"};
  test_command(test_group_server(), "SCRIPT FLUSH");
  res s = {0};
  assert_int_equal(
      cachet_async_set_tags(a, "k", 1, "v", 1, 0, tg, 1, status_cb, &s),
      CACHET_OK);
  AWAIT(s);
  assert_int_equal(s.status, CACHET_OK);
  test_command(test_group_server(), "SCRIPT FLUSH");
  res l = {0};
  assert_int_equal(cachet_async_lock_acquire(a, "nl", 5000, 0, lock_cb, &l),
                   CACHET_OK);
  AWAIT(l);
  assert_int_equal(l.status, CACHET_OK);
  test_command(test_group_server(), "SCRIPT FLUSH");
  res rl = {0};
  assert_int_equal(cachet_async_lock_release(a, l.lock, status_cb, &rl),
                   CACHET_OK);
  AWAIT(rl);
  assert_int_equal(rl.status, CACHET_OK);
  cachet_lock_free(l.lock);
  test_command(test_group_server(), "SCRIPT FLUSH");
  res ev = {0};
  assert_int_equal(cachet_async_evict_tags(a, tg, 1, count_cb, &ev), CACHET_OK);
  AWAIT(ev);
  assert_int_equal(ev.status, CACHET_OK);
  assert_int_equal(ev.count, 1);
  res s2 = {0};
  assert_int_equal(cachet_async_set(a, "k2", 2, "v", 1, 0, status_cb, &s2),
                   CACHET_OK);
  AWAIT(s2);
  test_command(test_group_server(), "SCRIPT FLUSH");
  res d = {0};
  assert_int_equal(cachet_async_delete(a, "k2", 2, status_cb, &d), CACHET_OK);
  AWAIT(d);
  assert_int_equal(d.status, CACHET_OK);
  res s3 = {0};
  assert_int_equal(cachet_async_set(a, "k3", 2, "v", 1, 0, status_cb, &s3),
                   CACHET_OK);
  AWAIT(s3);
  test_command(test_group_server(), "SCRIPT FLUSH");
  res cl = {0};
  assert_int_equal(cachet_async_clear(a, 0, count_cb, &cl), CACHET_OK);
  AWAIT(cl);
  assert_int_equal(cl.status, CACHET_OK);
  assert_int_equal(cl.count, 1);
  test_command(test_group_server(), "SCRIPT FLUSH");
  memset(&lctx, 0, sizeof lctx);
  res g = {0};
  assert_int_equal(
      cachet_async_get_or_set(a, "gk", 2, loader, 0, NULL, 0, value_cb, &g),
      CACHET_OK);
  AWAIT(g);
  assert_int_equal(g.status, CACHET_OK);
  /* Many writes meet NOSCRIPT at once in one batch. */
  test_command(test_group_server(), "SCRIPT FLUSH");
  cachet_entry e[3];
  memset(e, 0, sizeof e);
  const char *ks[] = {"m1", "m2", "m3"};
  for (int i = 0; i < 3; i++)
    e[i].key = ks[i], e[i].keylen = 2, e[i].val = "v", e[i].len = 1;
  items_calls = 0;
  assert_int_equal(cachet_async_mset(a, e, 3, items_cb, NULL), CACHET_OK);
  run_until(&items_calls, 1);
  assert_int_equal(items_status, CACHET_OK);
  cachet_metrics_snapshot(cachet_async_cachet(a), &m1);
  assert_true(m1.script_reloads >= m0.script_reloads + 8);
  cachet_async_close(a);
}

static void test_async_errors_are_set_inside_callbacks(void **state) {
  (void)state;
  cachet_async *a = open_async("async13:");
  cachet_key vk = {0};
  assert_int_equal(cachet_key_build(cachet_async_cachet(a), &vk,
                                    CACHET_KIND_VALUE, cachet_bucket("l", 1),
                                    "l", 1),
                   CACHET_OK);
  test_command(test_group_server(), "RPUSH %s x", vk.buf);
  cachet_key_free(&vk);
  res g = {0};
  assert_int_equal(cachet_async_get(a, "l", 1, value_cb, &g), CACHET_OK);
  AWAIT(g);
  assert_int_equal(g.status, CACHET_ESERVER);
  assert_memory_equal(g.detail, "WRONGTYPE", 9);
  /* A foreign value where the entry's tag set lives: the write script's
   * SMEMBERS fails. */
  cachet_key mk = {0};
  assert_int_equal(cachet_key_build(cachet_async_cachet(a), &mk,
                                    CACHET_KIND_TAGSET, cachet_bucket("l", 1),
                                    "l", 1),
                   CACHET_OK);
  test_command(test_group_server(), "SET %s x", mk.buf);
  cachet_key_free(&mk);
  res s = {0};
  assert_int_equal(cachet_async_set(a, "l", 1, "v", 1, 0, status_cb, &s),
                   CACHET_OK);
  AWAIT(s);
  assert_int_equal(s.status, CACHET_ESERVER);
  assert_non_null(strstr(s.detail, "WRONGTYPE"));
  cachet_metrics m;
  cachet_metrics_snapshot(cachet_async_cachet(a), &m);
  assert_true(m.errors[-CACHET_ESERVER] >= 2);
  cachet_async_close(a);
}

static void test_async_wrong_password_is_eserver(void **state) {
  (void)state;
  test_server pw;
  const char *extra[] = {"--requirepass", "s3cret", NULL};
  assert_int_equal(test_server_start(&pw, extra), 0);
  cachet_options o;
  test_options(&pw, &o, "async14:");
  o.password = "wrong";
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  res g1 = {0}, g2 = {0};
  int done = 0;
  g1.done = g2.done = &done;
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &g1), CACHET_OK);
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &g2), CACHET_OK);
  run_until(&done, 2);
  assert_int_equal(g1.calls, 1);
  assert_int_equal(g2.calls, 1);
  assert_int_equal(g1.status, CACHET_ESERVER);
  assert_int_equal(g2.status, CACHET_ESERVER);
  assert_non_null(strstr(g1.detail, "AUTH refused"));
  assert_null(strstr(g1.detail, "wrong"));
  cachet_async_close(a);

  o.password = "s3cret";
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  res ok = {0};
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &ok), CACHET_OK);
  AWAIT(ok);
  assert_int_equal(ok.status, CACHET_MISS);
  cachet_async_close(a);
  test_server_stop(&pw);
}

static void
test_async_refused_connection_comes_through_the_callback(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  o.unix_path = "/nonexistent/cachet-async.sock";
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  res g = {0};
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &g), CACHET_OK);
  assert_int_equal(g.calls, 0);
  AWAIT(g);
  assert_int_equal(g.status, CACHET_ECONN);
  assert_non_null(strstr(g.detail, "connect"));
  cachet_async_close(a);

  cachet_options_init(&o);
  o.host = "127.0.0.1";
  o.port = test_free_port();
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  res g2 = {0};
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &g2), CACHET_OK);
  AWAIT(g2);
  assert_int_equal(g2.status, CACHET_ECONN);
  cachet_async_close(a);
}

/* ---- many in flight, disconnects, close, timeouts --------------------------
 */

static void test_async_10k_gets_in_flight(void **state) {
  (void)state;
  enum { N = 10000 };
  cachet *c = test_open(test_group_server(), "async15:");
  cachet_entry *e = calloc(N, sizeof *e);
  char(*keys)[16] = calloc(N, sizeof *keys);
  for (int i = 0; i < N; i++) {
    int n = snprintf(keys[i], sizeof keys[i], "k%d", i);
    e[i].key = keys[i], e[i].keylen = (size_t)n;
    e[i].val = keys[i], e[i].len = (size_t)n;
  }
  assert_int_equal(cachet_mset(c, e, N), CACHET_OK);
  cachet_close(c);
  cachet_async *a = open_async("async15:");
  res *r = calloc(N, sizeof *r);
  int done = 0;
  for (int i = 0; i < N; i++) {
    r[i].done = &done;
    assert_int_equal(cachet_async_get(a, keys[i], e[i].keylen, value_cb, &r[i]),
                     CACHET_OK);
  }
  run_until(&done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, CACHET_OK);
    assert_string_equal(r[i].val, keys[i]);
  }
  cachet_metrics m;
  cachet_metrics_snapshot(cachet_async_cachet(a), &m);
  assert_int_equal(m.hits, N);
  cachet_async_close(a);
  free(r);
  free(keys);
  free(e);
}

/* Queue `n` writes behind a CLIENT PAUSE WRITE, so that they stay in flight
 * (sent, unanswered) until the test acts. */
static void queue_paused_writes(cachet_async *a, res *r, int n, int *done) {
  /* Connect and answer once first, so the writes below go out at once. */
  res warm = {0};
  assert_int_equal(cachet_async_get(a, "warm", 4, value_cb, &warm), CACHET_OK);
  AWAIT(warm);
  test_command(test_group_server(), "CLIENT PAUSE 20000 WRITE");
  for (int i = 0; i < n; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "w%d", i);
    r[i].done = done;
    assert_int_equal(
        cachet_async_set(a, k, (size_t)kl, "v", 1, 0, status_cb, &r[i]),
        CACHET_OK);
  }
  run_for(100); /* written, not answered */
  assert_int_equal(*done, 0);
}

static void
test_async_client_kill_fails_every_pending_callback_once(void **state) {
  (void)state;
  cachet_async *a = open_async("async16:");
  enum { N = 200 };
  res r[N];
  memset(r, 0, sizeof r);
  int done = 0;
  queue_paused_writes(a, r, N, &done);
  test_command(test_group_server(), "CLIENT KILL TYPE normal SKIPME yes");
  run_until(&done, N);
  test_command(test_group_server(), "CLIENT UNPAUSE");
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, CACHET_ECONN);
  }
  assert_non_null(strstr(r[0].detail, "closed"));
  /* The next operation reconnects. */
  res g = {0};
  assert_int_equal(cachet_async_set(a, "after", 5, "v", 1, 0, status_cb, &g),
                   CACHET_OK);
  AWAIT(g);
  assert_int_equal(g.status, CACHET_OK);
  run_for(50);
  for (int i = 0; i < N; i++)
    assert_int_equal(r[i].calls, 1);
  cachet_async_close(a);
}

/* A write to a connection the server closed must not raise SIGPIPE (the
 * default action would kill the application). Run in a child with SIGPIPE
 * at its default: its connection is killed, then it writes 1 MiB values;
 * each must fail through its callback (or succeed on a new connection),
 * and the child must exit normally. */
static void
test_async_write_to_closed_connection_raises_no_sigpipe(void **state) {
  (void)state;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGPIPE, SIG_DFL);
    struct event_base *b = event_base_new();
    cachet_options o;
    test_options(test_group_server(), &o, "apipe:");
    cachet_async *a = NULL;
    if (b == NULL || cachet_async_open(&a, b, &o) != CACHET_OK)
      _exit(10);
    res first = {0};
    if (cachet_async_set(a, "k", 1, "v", 1, 0, status_cb, &first) != CACHET_OK)
      _exit(11);
    while (first.calls == 0)
      event_base_loop(b, EVLOOP_ONCE);
    if (first.status != CACHET_OK)
      _exit(12);
    redisContext *r = test_redis(test_group_server());
    freeReplyObject(redisCommand(r, "CLIENT KILL TYPE normal SKIPME yes"));
    redisFree(r);
    test_sleep_ms(50);
    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    res w[3];
    memset(w, 0, sizeof w);
    int done = 0;
    for (int i = 0; i < 3; i++) {
      w[i].done = &done;
      if (cachet_async_set(a, "k", 1, big, sizeof big, 0, status_cb, &w[i]) !=
          CACHET_OK)
        _exit(13);
    }
    while (done < 3)
      event_base_loop(b, EVLOOP_ONCE);
    for (int i = 0; i < 3; i++)
      if (w[i].status != CACHET_OK && w[i].status != CACHET_ECONN)
        _exit(14);
    cachet_async_close(a);
    event_base_free(b);
    _exit(0);
  }
  test_expect_child_ok(pid);
}

static void test_async_server_killed_then_restarted(void **state) {
  (void)state;
  cachet_async *a = open_async("async17:");
  enum { N = 100 };
  res r[N];
  memset(r, 0, sizeof r);
  int done = 0;
  queue_paused_writes(a, r, N, &done);
  test_server_kill(test_group_server());
  run_until(&done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, CACHET_ECONN);
  }
  /* Down: the next call fails through its callback... */
  res down = {0};
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &down), CACHET_OK);
  AWAIT(down);
  assert_int_equal(down.status, CACHET_ECONN);
  /* ... and once it is back, the one after reconnects. */
  assert_int_equal(test_server_restart(test_group_server(), NULL), 0);
  res up = {0};
  assert_int_equal(cachet_async_set(a, "k", 1, "v", 1, 0, status_cb, &up),
                   CACHET_OK);
  AWAIT(up);
  assert_int_equal(up.status, CACHET_OK);
  cachet_async_close(a);
}

/* A callback that closes the handle from inside (counted in close_calls). */
static int close_calls;
static void close_inside_cb(int status, void *ud) {
  (void)status;
  close_calls++;
  cachet_async_close(ud);
}

/* A callback that close calls, and that tries to start another operation. */
static cachet_async *closing;
static int refused_rc;
static void start_again_cb(int status, void *ud) {
  note(ud, status);
  res unused = {0};
  refused_rc = cachet_async_get(closing, "k", 1, value_cb, &unused);
}

static void test_async_close_with_operations_in_flight(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "async18:");
  cachet_lock *held = NULL;
  assert_int_equal(cachet_lock_acquire(c, "busy", 60000, 0, &held), CACHET_OK);
  cachet_async *a = open_async("async18:");
  /* A get_or_set whose loader is still running ... */
  memset(&lctx, 0, sizeof lctx);
  lctx.delay_ms = 60000;
  res gos = {0};
  assert_int_equal(cachet_async_get_or_set(a, "loading", 7, loader, 0, NULL, 0,
                                           value_cb, &gos),
                   CACHET_OK);
  run_until(&lctx.calls, 1);
  /* ... writes sent and unanswered, a lock waiter, and an operation whose
   * result is decided but not delivered yet. */
  enum { N = 50 };
  res r[N];
  memset(r, 0, sizeof r);
  int done = 0;
  queue_paused_writes(a, r, N, &done);
  res waiter = {0}, deferred = {0}, again = {0};
  assert_int_equal(
      cachet_async_lock_acquire(a, "busy", 1000, 60000, lock_cb, &waiter),
      CACHET_OK);
  assert_int_equal(
      cachet_async_set(a, "z", 1, "v", 1, 0, start_again_cb, &again),
      CACHET_OK);
  assert_int_equal(cachet_async_evict_tags(a, NULL, 0, count_cb, &deferred),
                   CACHET_OK);
  closing = a;
  refused_rc = 0;
  cachet_async_close(a);
  /* Every callback ran, once, before close returned. */
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, CACHET_ECONN);
    assert_non_null(strstr(r[i].detail, "closed"));
  }
  assert_int_equal(gos.calls, 1);
  assert_int_equal(gos.status, CACHET_ECONN);
  assert_int_equal(waiter.calls, 1);
  assert_int_equal(waiter.status, CACHET_ECONN);
  assert_int_equal(deferred.calls, 1);
  assert_int_equal(deferred.status, CACHET_OK);
  assert_int_equal(again.calls, 1);
  assert_int_equal(refused_rc, CACHET_ECONN);
  /* The loader completes late: accepted and ignored. */
  event_free(lctx.ev);
  complete_load(-1, 0, NULL);
  test_command(test_group_server(), "CLIENT UNPAUSE");
  run_for(50);
  assert_int_equal(gos.calls, 1);

  /* Close from inside a callback, with others still in flight. */
  a = open_async("async18:");
  res warm = {0};
  assert_int_equal(cachet_async_get(a, "warm", 4, value_cb, &warm), CACHET_OK);
  AWAIT(warm);
  res rest[10];
  memset(rest, 0, sizeof rest);
  close_calls = 0;
  assert_int_equal(cachet_async_set(a, "x", 1, "v", 1, 0, close_inside_cb, a),
                   CACHET_OK);
  for (int i = 0; i < 10; i++)
    assert_int_equal(
        cachet_async_set(a, "y", 1, "v", 1, 0, status_cb, &rest[i]), CACHET_OK);
  run_until(&close_calls, 1);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(rest[i].calls, 1);
    assert_int_equal(rest[i].status, CACHET_ECONN);
  }
  run_for(50);
  assert_int_equal(close_calls, 1);
  assert_int_equal(cachet_lock_release(c, held), CACHET_OK);
  cachet_lock_free(held);
  cachet_close(c);
}

static void test_async_timeout_drops_the_connection(void **state) {
  (void)state;
  cachet_options o;
  test_options(test_group_server(), &o, "async19:");
  o.timeout_ms = 200;
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  res warm = {0};
  assert_int_equal(cachet_async_get(a, "warm", 4, value_cb, &warm), CACHET_OK);
  AWAIT(warm);
  test_command(test_group_server(), "CLIENT PAUSE 20000 WRITE");
  res s = {0}, g = {0};
  int done = 0;
  s.done = g.done = &done;
  assert_int_equal(cachet_async_set(a, "k", 1, "v", 1, 0, status_cb, &s),
                   CACHET_OK);
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &g), CACHET_OK);
  run_until(&done, 2);
  test_command(test_group_server(), "CLIENT UNPAUSE");
  assert_int_equal(s.status, CACHET_ETIMEDOUT);
  assert_non_null(strstr(s.detail, "200 ms"));
  /* The get was queued behind the set on the same connection: it went with
   * it (or timed out on its own). */
  assert_true(g.status == CACHET_ECONN || g.status == CACHET_ETIMEDOUT);
  res after = {0};
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &after), CACHET_OK);
  AWAIT(after);
  assert_true(after.status == CACHET_OK || after.status == CACHET_MISS);
  run_for(50);
  assert_int_equal(s.calls, 1);
  assert_int_equal(g.calls, 1);
  cachet_metrics m;
  cachet_metrics_snapshot(cachet_async_cachet(a), &m);
  assert_true(m.errors[-CACHET_ETIMEDOUT] >= 1);
  cachet_async_close(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_async_set_get_delete_round_trip),
      cmocka_unit_test(test_async_large_value_is_staged),
      cmocka_unit_test(test_async_exists_and_ttl),
      cmocka_unit_test(test_async_invalid_arguments_fail_in_the_call),
      cmocka_unit_test(test_async_tags_evict_and_retag),
      cmocka_unit_test(test_async_evict_many_members_in_chunks),
      cmocka_unit_test(test_async_clear_and_dry_run),
      cmocka_unit_test(test_async_locks),
      cmocka_unit_test(test_async_get_or_set_loads_once),
      cmocka_unit_test(test_async_get_or_set_loader_failure_caches_nothing),
      cmocka_unit_test(test_async_get_or_set_renews_the_lease),
      cmocka_unit_test(test_async_load_ends_while_a_renewal_is_in_flight),
      cmocka_unit_test(test_async_mset_mget),
      cmocka_unit_test(test_async_mset_untagged_drops_old_tags),
      cmocka_unit_test(test_async_untagged_set_is_plain),
      cmocka_unit_test(test_async_health),
      cmocka_unit_test(test_async_noscript_recovery),
      cmocka_unit_test(test_async_errors_are_set_inside_callbacks),
      cmocka_unit_test(test_async_wrong_password_is_eserver),
      cmocka_unit_test(
          test_async_refused_connection_comes_through_the_callback),
      cmocka_unit_test(test_async_10k_gets_in_flight),
      cmocka_unit_test(
          test_async_client_kill_fails_every_pending_callback_once),
      cmocka_unit_test(test_async_write_to_closed_connection_raises_no_sigpipe),
      cmocka_unit_test(test_async_server_killed_then_restarted),
      cmocka_unit_test(test_async_close_with_operations_in_flight),
      cmocka_unit_test(test_async_timeout_drops_the_connection),
      cmocka_unit_test(test_async_value_above_max_value_size_is_refused),
      cmocka_unit_test(test_async_health_out_of_memory_is_degraded),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

#else /* !CACHET_HAVE_LIBEVENT */

static void test_async_open_without_libevent_is_enotsup(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, NULL, &o), CACHET_ENOTSUP);
  assert_null(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_async_open_without_libevent_is_enotsup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
