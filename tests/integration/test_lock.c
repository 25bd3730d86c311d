/* Locks against a private redis-server: tokens, fencing, release and extend
 * outcomes, waiting, and mutual exclusion under real contention. */
#include <limits.h>
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

#include "harness.h"
#include "keys.h"

/* test_int for threads, which must not assert: LLONG_MIN on failure. */
static long long raw_int_quiet(redisContext *r, const char *cmd) {
  redisReply *rep = redisCommand(r, cmd);
  long long v = LLONG_MIN;
  if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
    v = rep->integer;
  if (rep != NULL)
    freeReplyObject(rep);
  return v;
}

/* Wait (bounded) until `key` no longer exists: Redis expired it. */
static void wait_gone(redisContext *r, const char *key) {
  for (int i = 0; i < 500; i++) {
    if (test_int(r, "EXISTS %s", key) == 0)
      return;
    test_sleep_ms(10);
  }
  fail_msg("%s did not expire", key);
}

static int is_lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return s[n] == '\0';
}

static void test_acquire_gives_fresh_token_and_rising_fence(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk1:");
  cachet_lock *a = NULL, *b = NULL;
  char ta[CACHET_LOCK_TOKEN_HEXLEN + 1], tb[CACHET_LOCK_TOKEN_HEXLEN + 1];

  assert_int_equal(cachet_lock_acquire(c, "L", 5000, 0, &a), CACHET_OK);
  cachet_lock_token(a, ta);
  assert_true(is_lower_hex(ta, CACHET_LOCK_TOKEN_HEXLEN));
  uint64_t fa = cachet_lock_fence(a);
  assert_true(fa >= 1);
  assert_int_equal(cachet_lock_release(c, a), CACHET_OK);

  assert_int_equal(cachet_lock_acquire(c, "L", 5000, 0, &b), CACHET_OK);
  cachet_lock_token(b, tb);
  assert_string_not_equal(ta, tb);
  assert_true(cachet_lock_fence(b) > fa);

  /* The token in Redis is the hex the handle reports, in the layout's lock
   * key; the fencing counter sits in the same bucket. */
  redisContext *r = test_redis(test_group_server());
  redisReply *rep = redisCommand(r, "KEYS lk1:*");
  assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
  assert_int_equal(rep->elements, 2);
  char lkey[64] = "", fkey[64] = "";
  for (size_t i = 0; i < rep->elements; i++) {
    const char *k = rep->element[i]->str;
    assert_int_equal(strlen(k), strlen("lk1:{bb}l:L"));
    snprintf(k[8] == 'l' ? lkey : fkey, 64, "%s", k);
  }
  freeReplyObject(rep);
  assert_string_equal(lkey + 8, "l:L");
  assert_string_equal(fkey + 8, "f:L");
  assert_memory_equal(lkey, fkey, 8);
  test_expect_string(r, tb, "GET %s", lkey);
  assert_true(test_int(r, "PTTL %s", lkey) > 0);
  redisFree(r);

  assert_int_equal(cachet_lock_release(c, b), CACHET_OK);
  cachet_lock_free(a);
  cachet_lock_free(b);
  cachet_lock_free(NULL);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.lock_acquisitions, 2);
  cachet_close(c);
}

static void test_held_lock_is_not_acquired_without_wait(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk2:");
  cachet_lock *a = NULL, *b = (cachet_lock *)1;
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 0, &a), CACHET_OK);
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 0, &b),
                   CACHET_NOT_ACQUIRED);
  assert_null(b);
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 50, &b),
                   CACHET_NOT_ACQUIRED);
  assert_null(b);
  /* Another name is another lock. */
  assert_int_equal(cachet_lock_acquire(c, "M", 60000, 0, &b), CACHET_OK);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.lock_contentions, 2);
  assert_int_equal(cachet_lock_release(c, a), CACHET_OK);
  assert_int_equal(cachet_lock_release(c, b), CACHET_OK);
  cachet_lock_free(a);
  cachet_lock_free(b);
  cachet_close(c);
}

static void test_release_by_non_owner_fails_and_keeps_lock(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk3:");
  cachet_lock *a = NULL, *other = NULL, *b = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 0, &a), CACHET_OK);
  assert_int_equal(
      cachet_lock_from_token("L", "0123456789abcdef0123456789abcdef", &other),
      CACHET_OK);
  assert_int_equal(cachet_lock_fence(other), 0);
  assert_int_equal(cachet_lock_release(c, other), CACHET_LOCK_NOT_OWNER);
  assert_int_equal(cachet_lock_extend(c, other, 1000), CACHET_LOCK_NOT_OWNER);
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 0, &b),
                   CACHET_NOT_ACQUIRED);
  /* The owner's token, rebuilt from its hex as the CLI does, releases. */
  char hex[CACHET_LOCK_TOKEN_HEXLEN + 1];
  cachet_lock_token(a, hex);
  cachet_lock *again = NULL;
  assert_int_equal(cachet_lock_from_token("L", hex, &again), CACHET_OK);
  assert_int_equal(cachet_lock_release(c, again), CACHET_OK);
  assert_int_equal(cachet_lock_release(c, a), CACHET_LOCK_EXPIRED);
  cachet_lock_free(a);
  cachet_lock_free(other);
  cachet_lock_free(again);
  cachet_close(c);
}

static void test_release_after_expiry_reports_expired(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk4:");
  redisContext *r = test_redis(test_group_server());
  cachet_lock *a = NULL, *b = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 50, 0, &a), CACHET_OK);
  redisReply *rep = redisCommand(r, "KEYS lk4:*l:L");
  assert_int_equal(rep->elements, 1);
  char lkey[64];
  snprintf(lkey, sizeof lkey, "%s", rep->element[0]->str);
  freeReplyObject(rep);
  wait_gone(r, lkey);
  assert_int_equal(cachet_lock_release(c, a), CACHET_LOCK_EXPIRED);
  assert_int_equal(cachet_lock_extend(c, a, 1000), CACHET_LOCK_EXPIRED);
  /* Once someone else has it, the old owner is told so, and cannot take
   * it away. */
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 0, &b), CACHET_OK);
  assert_true(cachet_lock_fence(b) > cachet_lock_fence(a));
  assert_int_equal(cachet_lock_release(c, a), CACHET_LOCK_NOT_OWNER);
  assert_int_equal(cachet_lock_extend(c, a, 1000), CACHET_LOCK_NOT_OWNER);
  assert_int_equal(cachet_lock_release(c, b), CACHET_OK);
  cachet_lock_free(a);
  cachet_lock_free(b);
  redisFree(r);
  cachet_close(c);
}

static void test_extend_sets_remaining_ttl_for_owner(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk5:");
  redisContext *r = test_redis(test_group_server());
  cachet_lock *a = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 1000, 0, &a), CACHET_OK);
  redisReply *rep = redisCommand(r, "KEYS lk5:*l:L");
  char lkey[64];
  snprintf(lkey, sizeof lkey, "%s", rep->element[0]->str);
  freeReplyObject(rep);
  assert_true(test_int(r, "PTTL %s", lkey) <= 1000);
  assert_int_equal(cachet_lock_extend(c, a, 600000), CACHET_OK);
  assert_true(test_int(r, "PTTL %s", lkey) > 1000);
  /* Extend sets, it does not add: it can shorten too. */
  assert_int_equal(cachet_lock_extend(c, a, 30), CACHET_OK);
  assert_true(test_int(r, "PTTL %s", lkey) <= 30);
  wait_gone(r, lkey);
  assert_int_equal(cachet_lock_extend(c, a, 1000), CACHET_LOCK_EXPIRED);
  cachet_lock_free(a);
  redisFree(r);
  cachet_close(c);
}

static void test_invalid_arguments_are_rejected(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk6:");
  cachet_lock *a = (cachet_lock *)1;
  assert_int_equal(cachet_lock_acquire(c, "L", 0, 0, &a), CACHET_EINVAL);
  assert_null(a);
  assert_non_null(strstr(cachet_last_error(), "no lock lives without a TTL"));
  assert_int_equal(cachet_lock_acquire(c, "L", -5, 0, &a), CACHET_EINVAL);
  assert_int_equal(cachet_lock_acquire(c, "L", 100, -1, &a), CACHET_EINVAL);
  assert_int_equal(cachet_lock_acquire(c, "", 100, 0, &a), CACHET_EINVAL);

  const char *bad[] = {"",
                       "xyz",
                       "0123456789abcdef0123456789abcde",
                       "0123456789abcdef0123456789abcdef0",
                       "0123456789abcdef0123456789abcdeg",
                       "0123456789abcdef 123456789abcdef"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    a = (cachet_lock *)1;
    assert_int_equal(cachet_lock_from_token("L", bad[i], &a), CACHET_EINVAL);
    assert_null(a);
  }
  assert_int_equal(
      cachet_lock_from_token("", "0123456789abcdef0123456789abcdef", &a),
      CACHET_EINVAL);
  /* Upper case is accepted and compared as the lowercase Redis holds. */
  assert_int_equal(cachet_lock_acquire(c, "U", 60000, 0, &a), CACHET_OK);
  char hex[CACHET_LOCK_TOKEN_HEXLEN + 1];
  cachet_lock_token(a, hex);
  for (char *p = hex; *p; p++)
    if (*p >= 'a' && *p <= 'f')
      *p = (char)(*p - 'a' + 'A');
  cachet_lock *up = NULL;
  assert_int_equal(cachet_lock_from_token("U", hex, &up), CACHET_OK);
  assert_int_equal(cachet_lock_extend(c, up, 0), CACHET_EINVAL);
  assert_int_equal(cachet_lock_release(c, up), CACHET_OK);
  cachet_lock_free(up);
  cachet_lock_free(a);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.errors[-CACHET_EINVAL], 5);
  cachet_close(c);
}

/* A holder that releases after a while; the waiter gets it then. */
typedef struct holder_arg {
  cachet *c;
  cachet_lock *lk;
  atomic_int released;
  int rc;
} holder_arg;

/* Threads never call cmocka's asserts (they longjmp to the main thread's
 * context); they record results for the main thread to check. */
static void *release_later(void *p) {
  holder_arg *h = p;
  test_sleep_ms(100);
  atomic_store(&h->released, 1);
  h->rc = cachet_lock_release(h->c, h->lk);
  return NULL;
}

static void test_waiter_acquires_once_holder_releases(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk7:");
  holder_arg h = {c, NULL, 0, -100};
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 0, &h.lk), CACHET_OK);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, release_later, &h), 0);
  cachet_lock *b = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 30000, &b), CACHET_OK);
  assert_int_equal(atomic_load(&h.released), 1);
  assert_true(cachet_lock_fence(b) > cachet_lock_fence(h.lk));
  pthread_join(th, NULL);
  assert_int_equal(h.rc, CACHET_OK);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.lock_contentions, 1);
  assert_int_equal(cachet_lock_release(c, b), CACHET_OK);
  cachet_lock_free(h.lk);
  cachet_lock_free(b);
  cachet_close(c);
}

static void test_waiter_acquires_after_holder_expires(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk8:");
  cachet_lock *a = NULL, *b = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 200, 0, &a), CACHET_OK);
  /* Never released: the waiter gets it when the TTL runs out. */
  assert_int_equal(cachet_lock_acquire(c, "L", 60000, 30000, &b), CACHET_OK);
  assert_int_equal(cachet_lock_release(c, a), CACHET_LOCK_NOT_OWNER);
  assert_int_equal(cachet_lock_release(c, b), CACHET_OK);
  cachet_lock_free(a);
  cachet_lock_free(b);
  cachet_close(c);
}

/* Mutual exclusion under contention. Each holder checks, inside Redis and
 * in memory, that it is alone: INCR of a counter must give 1, and the
 * fencing numbers must rise in the order holders enter. */
#define CYCLES 10000
#define THREADS 6

typedef struct excl {
  const test_server *s;
  cachet *c;
  atomic_int remaining;
  atomic_int inside;
  atomic_int violations;
  atomic_int not_acquired;
  _Atomic uint64_t last_fence;
} excl;

static void *contend(void *p) {
  excl *x = p;
  struct timeval tv = {5, 0};
  redisContext *r = redisConnectUnixWithTimeout(x->s->sock, tv);
  if (r == NULL || r->err) {
    atomic_fetch_add(&x->violations, 1000000);
    if (r != NULL)
      redisFree(r);
    return NULL;
  }
  while (atomic_load(&x->remaining) > 0) {
    cachet_lock *lk = NULL;
    int rc = cachet_lock_acquire(x->c, "hot", 1000, 10000, &lk);
    if (rc == CACHET_NOT_ACQUIRED) {
      atomic_fetch_add(&x->not_acquired, 1);
      continue;
    }
    if (rc != CACHET_OK) {
      atomic_fetch_add(&x->violations, 1000000);
      break;
    }
    if (atomic_exchange(&x->inside, 1) != 0)
      atomic_fetch_add(&x->violations, 1);
    if (raw_int_quiet(r, "INCR lk9:holders") != 1)
      atomic_fetch_add(&x->violations, 1);
    uint64_t f = cachet_lock_fence(lk);
    if (atomic_exchange(&x->last_fence, f) >= f)
      atomic_fetch_add(&x->violations, 1);
    if (raw_int_quiet(r, "DECR lk9:holders") != 0)
      atomic_fetch_add(&x->violations, 1);
    atomic_store(&x->inside, 0);
    if (cachet_lock_release(x->c, lk) != CACHET_OK)
      atomic_fetch_add(&x->violations, 1);
    cachet_lock_free(lk);
    atomic_fetch_sub(&x->remaining, 1);
  }
  redisFree(r);
  return NULL;
}

static void test_contended_cycles_never_have_two_holders(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk9:");
  excl x;
  memset(&x, 0, sizeof x);
  x.s = test_group_server();
  x.c = c;
  atomic_store(&x.remaining, CYCLES);
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, contend, &x), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&x.violations), 0);
  assert_true(atomic_load(&x.remaining) <= 0);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_true(m.lock_acquisitions >= CYCLES);
  assert_true(m.lock_contentions > 0);
  /* Fences rose once per acquisition. */
  assert_int_equal(atomic_load(&x.last_fence), m.lock_acquisitions);
  cachet_close(c);
}

static void test_noscript_is_recovered_for_lock_scripts(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "lk10:");
  redisContext *r = test_redis(test_group_server());
  freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
  cachet_lock *a = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 5000, 0, &a), CACHET_OK);
  freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
  assert_int_equal(cachet_lock_extend(c, a, 5000), CACHET_OK);
  freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
  assert_int_equal(cachet_lock_release(c, a), CACHET_OK);
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  assert_int_equal(m.script_reloads, 3);
  cachet_lock_free(a);
  redisFree(r);
  cachet_close(c);
}

static void test_unreachable_server_is_error_not_outcome(void **state) {
  (void)state;
  cachet *c = test_open_unreachable();
  cachet_lock *a = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 1000, 100, &a), CACHET_ECONN);
  assert_null(a);
  assert_int_equal(
      cachet_lock_from_token("L", "0123456789abcdef0123456789abcdef", &a),
      CACHET_OK);
  assert_int_equal(cachet_lock_release(c, a), CACHET_ECONN);
  assert_int_equal(cachet_lock_extend(c, a, 100), CACHET_ECONN);
  cachet_lock_free(a);
  cachet_close(c);
}

/* A fencing counter that a foreign write broke: no lock is taken without a
 * fence that rises, and the error names the counter. A negative one would
 * fall, read as unsigned, when it crosses zero. */
static void test_broken_fencing_counter_takes_no_lock(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "fz1:");
  redisContext *r = test_redis(test_group_server());
  char lkey[64], fkey[64];
  unsigned b = cachet_bucket("F", 1);
  snprintf(lkey, sizeof lkey, "fz1:{%02x}l:F", b);
  snprintf(fkey, sizeof fkey, "fz1:{%02x}f:F", b);
  static const char *const broken[] = {"abc", "-5", "-1"};
  for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
    freeReplyObject(redisCommand(r, "SET %s %s", fkey, broken[i]));
    cachet_lock *lk = NULL;
    assert_int_equal(cachet_lock_acquire(c, "F", 10000, 0, &lk),
                     CACHET_ESERVER);
    assert_null(lk);
    assert_non_null(strstr(cachet_last_error(),
                           i == 0 ? "not an integer" : "not positive"));
    assert_int_equal(test_int(r, "EXISTS %s", lkey), 0);
  }
  /* Mended, it works again, and the fence goes on from there. */
  freeReplyObject(redisCommand(r, "SET %s 41", fkey));
  cachet_lock *lk = NULL;
  assert_int_equal(cachet_lock_acquire(c, "F", 10000, 0, &lk), CACHET_OK);
  assert_int_equal(cachet_lock_fence(lk), 42);
  assert_int_equal(cachet_lock_release(c, lk), CACHET_OK);
  cachet_lock_free(lk);
  redisFree(r);
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_acquire_gives_fresh_token_and_rising_fence),
      cmocka_unit_test(test_held_lock_is_not_acquired_without_wait),
      cmocka_unit_test(test_release_by_non_owner_fails_and_keeps_lock),
      cmocka_unit_test(test_release_after_expiry_reports_expired),
      cmocka_unit_test(test_extend_sets_remaining_ttl_for_owner),
      cmocka_unit_test(test_invalid_arguments_are_rejected),
      cmocka_unit_test(test_waiter_acquires_once_holder_releases),
      cmocka_unit_test(test_waiter_acquires_after_holder_expires),
      cmocka_unit_test(test_contended_cycles_never_have_two_holders),
      cmocka_unit_test(test_noscript_is_recovered_for_lock_scripts),
      cmocka_unit_test(test_unreachable_server_is_error_not_outcome),
      cmocka_unit_test(test_broken_fencing_counter_takes_no_lock),
  };
  return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
