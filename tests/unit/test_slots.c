/* The slot hand-out under the pools (pool.h): a wait is bounded, the queue
 * is served, a thread that outnumbers the slots is never starved, and a
 * slot kept for a live slice but never taken back reaches its waiter. No
 * server: the slots are plain memory. Nothing here asserts on wall time;
 * the timeouts are bounds that a correct pool never comes near. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cachet.h"
#include "pool.h"

static void test_take_all_then_time_out(void **state) {
  (void)state;
  cachet_slots s;
  assert_int_equal(cachet_slots_init(&s, 2), CACHET_OK);
  int a, b, c;
  /* Lowest first, so that a lightly used handle keeps few connections. */
  assert_int_equal(cachet_slots_take(&s, 1000, &a), CACHET_OK);
  assert_int_equal(a, 0);
  assert_int_equal(cachet_slots_take(&s, 1000, &b), CACHET_OK);
  assert_int_equal(b, 1);
  assert_int_equal(cachet_slots_take(&s, 20, &c), CACHET_ETIMEDOUT);
  assert_non_null(strstr(cachet_last_error(), "pool_size 2"));
  /* The timed-out waiter left the queue: a give goes to the free list, and
   * the next take gets it. */
  cachet_slots_give(&s, b);
  assert_int_equal(cachet_slots_take(&s, 1000, &c), CACHET_OK);
  assert_int_equal(c, 1);
  cachet_slots_give(&s, a);
  cachet_slots_give(&s, c);
  cachet_slots_destroy(&s);
}

typedef struct taker {
  pthread_t th;
  cachet_slots *s;
  int rounds;
  int hold_us;  /* how long each take holds its slot */
  int failures; /* takes that timed out */
  int done;
  int *in_use; /* per slot: 1 while held, to catch a double hand-out */
  pthread_mutex_t *mu;
  int doubles;
} taker;

static void *take_loop(void *arg) {
  taker *t = arg;
  for (int i = 0; i < t->rounds; i++) {
    int idx;
    if (cachet_slots_take(t->s, 10000, &idx) != CACHET_OK) {
      t->failures++;
      continue;
    }
    pthread_mutex_lock(t->mu);
    t->doubles += t->in_use[idx]++ != 0;
    pthread_mutex_unlock(t->mu);
    if (t->hold_us > 0) {
      struct timespec ts = {0, t->hold_us * 1000L};
      nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(t->mu);
    t->in_use[idx]--;
    pthread_mutex_unlock(t->mu);
    cachet_slots_give(t->s, idx);
    t->done++;
  }
  return NULL;
}

/* Many more threads than slots, each looping take/give as a request loop
 * does: every take succeeds (nobody is starved past the timeout), and no
 * slot is ever held by two threads. */
static void run_crowd(int nthreads, int nslots, int rounds, int hold_us) {
  cachet_slots s;
  assert_int_equal(cachet_slots_init(&s, nslots), CACHET_OK);
  int in_use[8] = {0};
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  taker t[32];
  assert_true(nthreads <= 32 && nslots <= 8);
  for (int i = 0; i < nthreads; i++) {
    t[i] = (taker){.s = &s,
                   .rounds = rounds,
                   .hold_us = hold_us,
                   .in_use = in_use,
                   .mu = &mu};
    assert_int_equal(pthread_create(&t[i].th, NULL, take_loop, &t[i]), 0);
  }
  for (int i = 0; i < nthreads; i++) {
    pthread_join(t[i].th, NULL);
    assert_int_equal(t[i].failures, 0);
    assert_int_equal(t[i].doubles, 0);
    assert_int_equal(t[i].done, rounds);
  }
  /* Every slot came back. */
  assert_int_equal(s.nfree, nslots);
  assert_int_equal(s.nwait, 0);
  assert_null(s.head);
  cachet_slots_destroy(&s);
}

static void test_crowd_on_few_slots(void **state) {
  (void)state;
  run_crowd(32, 2, 300, 0);
}

static void test_crowd_holding_slots(void **state) {
  (void)state;
  /* Held across a sleep, so that waiters really queue and hand-offs and
   * the head's polls both happen. */
  run_crowd(16, 4, 40, 200);
}

typedef struct waiter_arg {
  cachet_slots *s;
  int rc, idx;
} waiter_arg;

static void *wait_one(void *arg) {
  waiter_arg *w = arg;
  w->rc = cachet_slots_take(w->s, 10000, &w->idx);
  return NULL;
}

/* Until `n` threads wait in the queue. */
static void wait_queued(cachet_slots *s, int n) {
  for (;;) {
    pthread_mutex_lock(&s->mu);
    int queued = s->nwait;
    pthread_mutex_unlock(&s->mu);
    if (queued == n)
      return;
    struct timespec ts = {0, 100000L};
    nanosleep(&ts, NULL);
  }
}

/* A thread within its slice gives its slot back while another waits, and
 * never comes back for it: the waiter still gets the slot (the head polls),
 * long before its timeout. */
static void test_slot_kept_for_a_slice_reaches_the_waiter(void **state) {
  (void)state;
  cachet_slots s;
  assert_int_equal(cachet_slots_init(&s, 1), CACHET_OK);
  int idx;
  assert_int_equal(cachet_slots_take(&s, 1000, &idx), CACHET_OK);
  waiter_arg w = {.s = &s, .rc = -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, wait_one, &w), 0);
  wait_queued(&s, 1);
  /* This thread's slice is live (it took the slot just now), so the give
   * may keep the slot free for it rather than hand it over. */
  cachet_slots_give(&s, idx);
  pthread_join(th, NULL);
  assert_int_equal(w.rc, CACHET_OK);
  assert_int_equal(w.idx, 0);
  cachet_slots_give(&s, w.idx);
  assert_int_equal(s.nfree, 1);
  cachet_slots_destroy(&s);
}

/* The queue is served in order: waiters that queued one after another get
 * the slot one after another, once the holder's slice is over. */
static void test_waiters_are_served_in_order(void **state) {
  (void)state;
  cachet_slots s;
  assert_int_equal(cachet_slots_init(&s, 1), CACHET_OK);
  int idx;
  assert_int_equal(cachet_slots_take(&s, 1000, &idx), CACHET_OK);
  enum { N = 4 };
  waiter_arg w[N];
  pthread_t th[N];
  for (int i = 0; i < N; i++) {
    w[i] = (waiter_arg){.s = &s, .rc = -1, .idx = -1};
    assert_int_equal(pthread_create(&th[i], NULL, wait_one, &w[i]), 0);
    wait_queued(&s, i + 1);
  }
  /* Hand the slot down the queue: each waiter, once served, is the next
   * giver; the first to be served must be the first that queued. */
  cachet_slots_give(&s, idx);
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].rc, CACHET_OK);
    if (i + 1 < N) {
      /* The next waiter is still queued: nobody overtook it. */
      pthread_mutex_lock(&s.mu);
      assert_int_equal(s.nwait, N - i - 1);
      pthread_mutex_unlock(&s.mu);
    }
    cachet_slots_give(&s, w[i].idx);
  }
  assert_int_equal(s.nfree, 1);
  cachet_slots_destroy(&s);
}

/* A hand-off is two steps: the waiter's wake-up, then the slot. A waiter
 * that sees the slot from a poll that timed out returns without the lock
 * and destroys its semaphore, so the slot must come last: however long the
 * giver is held between the two steps, the waiter is still in its take. */
static atomic_int handed_waiter_returned;
static int handoff_calls, handoff_saw_return;

static void *wait_one_and_say(void *arg) {
  wait_one(arg);
  atomic_store(&handed_waiter_returned, 1);
  return NULL;
}

static void hold_between_handoff_steps(void) {
  handoff_calls++;
  /* Long enough for the waiter, the queue's head, to poll many times. */
  for (int i = 0; i < 25 && !atomic_load(&handed_waiter_returned); i++) {
    struct timespec ts = {0, (long)CACHET_SLOT_SLICE_NS};
    nanosleep(&ts, NULL);
  }
  handoff_saw_return = atomic_load(&handed_waiter_returned);
}

static void test_handoff_waiter_outlives_the_giver(void **state) {
  (void)state;
  cachet_slots s;
  assert_int_equal(cachet_slots_init(&s, 1), CACHET_OK);
  int idx;
  assert_int_equal(cachet_slots_take(&s, 1000, &idx), CACHET_OK);
  atomic_store(&handed_waiter_returned, 0);
  handoff_calls = handoff_saw_return = 0;
  waiter_arg w = {.s = &s, .rc = -1, .idx = -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, wait_one_and_say, &w), 0);
  wait_queued(&s, 1);
  /* Past this thread's slice, so that the give hands the slot over. */
  struct timespec ts = {0, 2 * (long)CACHET_SLOT_SLICE_NS};
  nanosleep(&ts, NULL);
  cachet_slots_handoff_hook = hold_between_handoff_steps;
  cachet_slots_give(&s, idx);
  cachet_slots_handoff_hook = NULL;
  pthread_join(th, NULL);
  assert_int_equal(handoff_calls, 1);
  assert_int_equal(handoff_saw_return, 0);
  assert_int_equal(w.rc, CACHET_OK);
  assert_int_equal(w.idx, 0);
  cachet_slots_give(&s, w.idx);
  assert_int_equal(s.nfree, 1);
  cachet_slots_destroy(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_take_all_then_time_out),
      cmocka_unit_test(test_crowd_on_few_slots),
      cmocka_unit_test(test_crowd_holding_slots),
      cmocka_unit_test(test_slot_kept_for_a_slice_reaches_the_waiter),
      cmocka_unit_test(test_waiters_are_served_in_order),
      cmocka_unit_test(test_handoff_waiter_outlives_the_giver),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
