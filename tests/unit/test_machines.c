/* The operation machines (src/op_*.c) driven with canned replies, no
 * server: what each sends, what it makes of each answer, and that an
 * error at any step is reported as an error with the server's words, never
 * as a miss or a success it was not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cachet.h"
#include "entry.h"
#include "error.h"
#include "harness.h"
#include "machines.h"

static cachet *c;

/* ---- A driver of canned replies ------------------------------------------ */

/* Transport failures, written where a RESP reply would be. */
#define CONN_LOST "!ECONN"

typedef struct drv {
  cachet_op *op;
  cachet_out out;
  int what;
  int64_t now;
  int sends; /* SEND steps so far */
  cachet_res res[2048];
} drv;

static void start(drv *d, cachet_op *op) {
  memset(d, 0, sizeof *d);
  d->op = op;
  d->now = 1000;
  static const char *const names[] = {"node0"};
  cachet_in in = {d->now, 1, names, NULL, 0};
  d->what = op->k->step(op, &in, &d->out);
  d->sends += d->what == CACHET_DO_SEND;
}

/* Step with one outcome per command of the last SEND (replies[i], or
 * CONN_LOST), or with none after a SLEEP or LOAD. */
static void feed(drv *d, const char *const *replies) {
  static const char *const names[] = {"node0"};
  size_t n = replies != NULL ? d->out.n : 0;
  assert_true(n <= sizeof d->res / sizeof d->res[0]);
  for (size_t i = 0; i < n; i++)
    d->res[i] = strcmp(replies[i], CONN_LOST) == 0
                    ? (cachet_res){CACHET_ECONN, NULL, "redis: connection lost"}
                    : (cachet_res){CACHET_OK, test_reply(replies[i]), NULL};
  if (d->what == CACHET_DO_SLEEP)
    d->now += d->out.ms;
  cachet_in in = {d->now, 1, names, replies != NULL ? d->res : NULL, n};
  d->out = (cachet_out){0};
  d->what = d->op->k->step(d->op, &in, &d->out);
  d->sends += d->what == CACHET_DO_SEND;
  for (size_t i = 0; i < n; i++)
    if (d->res[i].reply != NULL)
      freeReplyObject(d->res[i].reply);
}

/* The same reply to every command of the last SEND. */
static void feed_all(drv *d, const char *reply) {
  const char *r[600];
  for (size_t i = 0; i < d->out.n; i++)
    r[i] = reply;
  feed(d, r);
}

static const cachet_cmd *cmd(const drv *d, size_t i) {
  assert_int_equal(d->what, CACHET_DO_SEND);
  assert_true(i < d->out.n);
  return &d->out.cmds[i];
}

static int is(const cachet_cmd *k, const char *name) {
  return k->lens[0] == strlen(name) &&
         memcmp(k->argv[0], name, k->lens[0]) == 0;
}

static void expect_script(const drv *d, size_t i, int id, int nkeys) {
  const cachet_cmd *k = cmd(d, i);
  assert_true(is(k, "EVALSHA"));
  assert_int_equal(k->script, id); /* the driver recovers NOSCRIPT with it */
  assert_memory_equal(k->argv[1], cachet_scripts[id].sha, 40);
  assert_int_equal(atoi(k->argv[2]), nkeys);
}

static void expect_done(const drv *d, int status) {
  assert_int_equal(d->what, CACHET_DO_DONE);
  if (d->out.status != status)
    fail_msg("done with %s (%s), want %s", cachet_status_name(d->out.status),
             cachet_last_error(), cachet_status_name(status));
}

/* ---- entry: retag, staging, the plain path ---------------------------------
 */

static void test_write_learns_old_tags_through_retag(void **state) {
  (void)state;
  cachet_op_entry x;
  const char *tags[] = {"a"};
  assert_int_equal(cachet_op_entry_write(&x, c, "k", 1, "v", 1, 0, tags, 1),
                   CACHET_OK);
  drv d;
  start(&d, &x.op);
  expect_script(&d, 0, CACHET_SCRIPT_SET_TAGS, 3); /* v, m, t:a */
  feed(&d, (const char *[]){"*3\r\n$5\r\nretag\r\n$1\r\nb\r\n$1\r\nc\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_SET_TAGS, 5); /* ... t:b, t:c */
  feed(&d, (const char *[]){":1\r\n"});
  expect_done(&d, CACHET_OK);
  x.op.k->free(&x.op);
}

static void test_retag_is_bounded(void **state) {
  (void)state;
  cachet_op_entry x;
  assert_int_equal(cachet_op_entry_delete(&x, c, "k", 1), CACHET_OK);
  drv d;
  start(&d, &x.op);
  char reply[64];
  for (int i = 0; d.what == CACHET_DO_SEND; i++) {
    assert_true(i < 20);
    expect_script(&d, 0, CACHET_SCRIPT_DELETE_ENTRY, 2 + i);
    snprintf(reply, sizeof reply, "*2\r\n$5\r\nretag\r\n$2\r\nt%d\r\n", i);
    feed(&d, (const char *[]){reply});
  }
  expect_done(&d, CACHET_EBUSY);
  assert_non_null(strstr(cachet_last_error(), "kept changing"));
  x.op.k->free(&x.op);
}

static void test_lost_stage_is_an_error_and_unstaged(void **state) {
  (void)state;
  size_t len = CACHET_STAGE_MIN;
  char *big = calloc(1, len);
  cachet_op_entry x;
  assert_int_equal(cachet_op_entry_write(&x, c, "k", 1, big, len, 0, NULL, 0),
                   CACHET_OK);
  free(big);
  drv d;
  start(&d, &x.op);
  assert_true(is(cmd(&d, 0), "SET")); /* the staging key, with a TTL */
  assert_string_equal(cmd(&d, 0)->argv[3], "PX");
  char stage[256];
  snprintf(stage, sizeof stage, "%.*s", (int)cmd(&d, 0)->lens[1],
           cmd(&d, 0)->argv[1]);
  feed(&d, (const char *[]){"+OK\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_SET_TAGS, 3); /* v, m, the stage */
  feed(&d, (const char *[]){"-ERR cachet: staged value is gone (it "
                            "expired before set_tags ran)\r\n"});
  assert_true(is(cmd(&d, 0), "UNLINK"));
  assert_memory_equal(cmd(&d, 0)->argv[1], stage, strlen(stage));
  feed(&d, (const char *[]){":0\r\n"});
  expect_done(&d, CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "staged value is gone"));
  x.op.k->free(&x.op);
}

static void test_plain_write_untags_an_entry_that_had_tags(void **state) {
  (void)state;
  cachet_op_entry x;
  assert_int_equal(cachet_op_entry_write(&x, c, "k", 1, "v", 1, 5000, NULL, 0),
                   CACHET_OK);
  drv d;
  start(&d, &x.op);
  assert_int_equal(d.out.n, 2);
  assert_true(is(cmd(&d, 0), "SET"));
  assert_true(is(cmd(&d, 1), "SMEMBERS"));
  feed(&d, (const char *[]){"+OK\r\n", "*1\r\n$1\r\na\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_UNTAG, 3); /* v, m, t:a */
  feed(&d, (const char *[]){":1\r\n"});
  expect_done(&d, CACHET_OK);
  x.op.k->free(&x.op);

  /* A failed untag: the value is stored, and the detail says so. */
  assert_int_equal(cachet_op_entry_write(&x, c, "k", 1, "v", 1, 0, NULL, 0),
                   CACHET_OK);
  start(&d, &x.op);
  feed(&d, (const char *[]){"+OK\r\n", "*1\r\n$1\r\na\r\n"});
  feed(&d, (const char *[]){"-OOM command not allowed\r\n"});
  expect_done(&d, CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "the value was stored"));
  assert_non_null(strstr(cachet_last_error(), "OOM"));
  x.op.k->free(&x.op);
}

/* A driver recovers NOSCRIPT; should one come through (the reload failed
 * twice), it is the server's error, never a miss. */
static void test_noscript_reaching_a_machine_is_eserver(void **state) {
  (void)state;
  cachet_op_entry x;
  assert_int_equal(cachet_op_entry_delete(&x, c, "k", 1), CACHET_OK);
  drv d;
  start(&d, &x.op);
  feed(&d, (const char *[]){"-NOSCRIPT No matching script.\r\n"});
  expect_done(&d, CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "NOSCRIPT"));
  x.op.k->free(&x.op);
}

/* ---- locks
 * ------------------------------------------------------------------- */

/* A lock machine on "l" (ttl 1 s), started: its first SEND is out. */
static cachet_lock *start_lock(cachet_op_lock *x, drv *d, int mode,
                               int64_t wait_ms) {
  cachet_lock *lk;
  assert_int_equal(cachet_lock_new(CACHET_KIND_LOCK, "l", 1, &lk), CACHET_OK);
  cachet_op_lock_init(x, c, mode, lk, 1000, wait_ms);
  start(d, &x->op);
  return lk;
}

static void run_lock(int mode, const char *reply, int want) {
  cachet_op_lock x;
  drv d;
  cachet_lock *lk = start_lock(&x, &d, mode, 0);
  int id = mode == CACHET_LOCK_RELEASE  ? CACHET_SCRIPT_LOCK_RELEASE
           : mode == CACHET_LOCK_EXTEND ? CACHET_SCRIPT_LOCK_EXTEND
                                        : CACHET_SCRIPT_LOCK_ACQUIRE;
  expect_script(&d, 0, id, mode == CACHET_LOCK_ACQUIRE ? 2 : 1);
  feed(&d, (const char *[]){reply});
  expect_done(&d, want);
  if (mode == CACHET_LOCK_ACQUIRE && want == CACHET_OK)
    assert_int_equal(lk->fence, 7);
  x.op.k->free(&x.op);
  cachet_lock_free(lk);
}

static void test_expired_and_stolen_locks(void **state) {
  (void)state;
  run_lock(CACHET_LOCK_ACQUIRE, "*2\r\n:1\r\n:7\r\n", CACHET_OK);
  run_lock(CACHET_LOCK_RELEASE, ":1\r\n", CACHET_OK);
  run_lock(CACHET_LOCK_RELEASE, ":0\r\n", CACHET_LOCK_EXPIRED);
  run_lock(CACHET_LOCK_RELEASE, ":-1\r\n", CACHET_LOCK_NOT_OWNER);
  run_lock(CACHET_LOCK_EXTEND, ":0\r\n", CACHET_LOCK_EXPIRED);
  run_lock(CACHET_LOCK_EXTEND, ":-1\r\n", CACHET_LOCK_NOT_OWNER);
  run_lock(CACHET_LOCK_RELEASE, ":5\r\n", CACHET_EPROTO);
  run_lock(CACHET_LOCK_ACQUIRE, "+OK\r\n", CACHET_EPROTO);
}

static void test_acquire_backs_off_within_the_wait(void **state) {
  (void)state;
  cachet_op_lock x;
  drv d;
  cachet_lock *lk = start_lock(&x, &d, CACHET_LOCK_ACQUIRE, 300);
  int64_t t0 = d.now, slept = 0;
  int attempts = 0;
  while (d.what == CACHET_DO_SEND) {
    attempts++;
    feed(&d, (const char *[]){"*2\r\n:0\r\n:60000\r\n"}); /* held */
    if (d.what == CACHET_DO_SLEEP) {
      assert_true(d.out.ms >= 0 && d.now + d.out.ms <= t0 + 300);
      slept += d.out.ms;
      feed(&d, NULL);
    }
  }
  expect_done(&d, CACHET_NOT_ACQUIRED);
  assert_true(attempts >= 3); /* backed off, tried again */
  assert_true(slept <= 300);  /* never past the wait */
  assert_int_equal(d.now, t0 + slept);
  x.op.k->free(&x.op);
  cachet_lock_free(lk);
}

/* The holder's TTL is the server's number: the largest one must not
 * overflow the sleep into a negative one (found by server_replies_fuzzer). */
static void test_acquire_survives_any_holder_ttl(void **state) {
  (void)state;
  static const char *const held[] = {"*2\r\n:0\r\n:9223372036854775807\r\n",
                                     "*2\r\n:0\r\n:-9223372036854775808\r\n",
                                     "*2\r\n:0\r\n:1\r\n"};
  for (size_t i = 0; i < sizeof held / sizeof held[0]; i++) {
    cachet_op_lock x;
    drv d;
    cachet_lock *lk = start_lock(&x, &d, CACHET_LOCK_ACQUIRE, 300);
    feed(&d, (const char *[]){held[i]});
    assert_int_equal(d.what, CACHET_DO_SLEEP);
    assert_true(d.out.ms >= 0 && d.out.ms <= 300);
    x.op.k->free(&x.op);
    cachet_lock_free(lk);
  }
}

/* ---- get_or_set ------------------------------------------------------------
 */

static void load_value(drv *d, const char *v) {
  assert_int_equal(d->what, CACHET_DO_LOAD);
  cachet_load *ld = d->out.load;
  ld->status = 0;
  ld->val = strdup(v);
  ld->len = strlen(v);
  feed(d, NULL);
}

/* The holder died: a waiter finds the lock free, takes it over and loads. */
static void test_waiter_takes_over_a_dead_holder(void **state) {
  (void)state;
  cachet_op_gos x;
  assert_int_equal(cachet_op_gos_init(&x, c, "k", 1, NULL, NULL, 0, NULL, 0),
                   CACHET_OK);
  drv d;
  start(&d, &x.op);
  assert_true(is(cmd(&d, 0), "GET"));
  feed(&d, (const char *[]){"$-1\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_LOCK_ACQUIRE, 1); /* no fence */
  feed(&d, (const char *[]){"*2\r\n:0\r\n:3000\r\n"}); /* held */
  assert_int_equal(d.what, CACHET_DO_SLEEP);
  feed(&d, NULL);
  assert_true(is(cmd(&d, 0), "GET")); /* a poll */
  feed(&d, (const char *[]){"$-1\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_LOCK_ACQUIRE, 1);
  feed(&d, (const char *[]){"*2\r\n:1\r\n:0\r\n"}); /* the lease ran out */
  assert_true(is(cmd(&d, 0), "GET")); /* once more, holding the lock */
  feed(&d, (const char *[]){"$-1\r\n"});
  load_value(&d, "loaded");
  assert_true(is(cmd(&d, 0), "SET"));
  feed(&d, (const char *[]){"+OK\r\n", "*0\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_LOCK_RELEASE, 1);
  feed(&d, (const char *[]){":1\r\n"});
  expect_done(&d, CACHET_OK);
  assert_string_equal(x.val, "loaded");
  x.op.k->free(&x.op);
}

static void test_loader_timeout_releases_the_lock(void **state) {
  (void)state;
  cachet_op_gos x;
  assert_int_equal(cachet_op_gos_init(&x, c, "k", 1, NULL, NULL, 0, NULL, 0),
                   CACHET_OK);
  drv d;
  start(&d, &x.op);
  feed(&d, (const char *[]){"$-1\r\n"});
  feed(&d, (const char *[]){"*2\r\n:1\r\n:0\r\n"});
  feed(&d, (const char *[]){"$-1\r\n"});
  assert_int_equal(d.what, CACHET_DO_LOAD);
  d.out.load->timed_out = 1; /* the async driver's deadline */
  feed(&d, NULL);
  expect_script(&d, 0, CACHET_SCRIPT_LOCK_RELEASE, 1);
  feed(&d, (const char *[]){":1\r\n"});
  expect_done(&d, CACHET_ETIMEDOUT);
  assert_non_null(strstr(cachet_last_error(), "fetch_wait_ms"));
  x.op.k->free(&x.op);
}

/* ---- evict-tags
 * -------------------------------------------------------------- */

/* The sweep's answer for `ntags` tags: buckets below `live` hold one
 * member "m" in t; bucket `only_e` (if any) only an e key. */
static void sweep_answer(drv *d, size_t ntags, unsigned live, int only_e) {
  static const char *rep[3 * 2 * CACHET_BUCKETS];
  assert_int_equal(d->out.n, ntags * 2 * CACHET_BUCKETS);
  for (size_t i = 0; i < d->out.n; i += 2) {
    unsigned b = (unsigned)(i / 2) % CACHET_BUCKETS;
    assert_true(is(cmd(d, i), "ZRANGE"));     /* t's first members */
    assert_true(is(cmd(d, i + 1), "EXISTS")); /* an e left over */
    rep[i] = b < live ? "*1\r\n$1\r\nm\r\n" : "*0\r\n";
    rep[i + 1] = (int)b == only_e ? ":1\r\n" : ":0\r\n";
  }
  feed(d, rep);
}

/* The mode of an evict_chunk's first lane: where its members come from
 * ("0" e, "1" t and begin a snapshot, "2" all of t). ARGV: lanes, how many
 * to return, then per lane: tag, n, mode, members. */
static const char *chunk_begins(const drv *d, size_t i) {
  const cachet_cmd *k = cmd(d, i);
  int nkeys = atoi(k->argv[2]);
  return k->argv[3 + nkeys + 4];
}

/* How many lanes an evict_chunk holds. */
static int chunk_lanes(const drv *d, size_t i) {
  const cachet_cmd *k = cmd(d, i);
  return atoi(k->argv[3 + atoi(k->argv[2])]);
}

static void test_eviction_without_progress_gives_up(void **state) {
  (void)state;
  const char *tags[] = {"t"};
  cachet_op_evict x;
  assert_int_equal(cachet_op_evict_init(&x, c, tags, 1), CACHET_OK);
  drv d;
  start(&d, &x.op);
  sweep_answer(&d, 1, 1, -1);
  int chunks = 0;
  while (d.what == CACHET_DO_SEND) {
    assert_int_equal(d.out.n, 1);
    assert_true(is(cmd(&d, 0), "SMEMBERS"));
    feed(&d, (const char *[]){"*1\r\n$1\r\nt\r\n"});
    expect_script(&d, 0, CACHET_SCRIPT_EVICT_CHUNK, 4); /* e, t, v, m */
    /* All of t was read: no snapshot, the skipped member is retried. */
    assert_string_equal(chunk_begins(&d, 0), "2");
    /* Nothing moved: {evicted, then the lane: doomed, skipped, stale,
     * begun, 1 member to retry}. */
    feed(&d, (const char *[]){
                 "*7\r\n:0\r\n:0\r\n:1\r\n:0\r\n:0\r\n:1\r\n$1\r\nm\r\n"});
    assert_true(++chunks <= CACHET_EVICT_IDLE_ROUNDS);
  }
  expect_done(&d, CACHET_EBUSY);
  assert_int_equal(chunks, CACHET_EVICT_IDLE_ROUNDS);
  assert_non_null(strstr(cachet_last_error(), "kept changing"));
  x.op.k->free(&x.op);
}

/* Every bucket of every tag advances in the same SEND: the round trips do
 * not grow with the buckets. 3 tags, each with one member in 40 buckets:
 * the sweep, the tag sets, the chunks: 3 SENDs; and the three tags of a
 * bucket share one evict_chunk call. */
static void test_eviction_fans_out_in_parallel_phases(void **state) {
  (void)state;
  const char *tags[] = {"a", "b", "c"};
  cachet_op_evict x;
  assert_int_equal(cachet_op_evict_init(&x, c, tags, 3), CACHET_OK);
  drv d;
  start(&d, &x.op);
  sweep_answer(&d, 3, 40, -1);
  static const char *rep[3 * 40];
  assert_int_equal(d.out.n, 3 * 40);
  for (size_t i = 0; i < d.out.n; i++) {
    assert_true(is(cmd(&d, i), "SMEMBERS"));
    rep[i] = i % 2 ? "*0\r\n" : "*1\r\n$1\r\nz\r\n"; /* another tag, or none */
  }
  feed(&d, rep);
  assert_int_equal(d.out.n, 40);
  for (size_t i = 0; i < d.out.n; i++) {
    /* Per lane e, t, v, m; and z's index in the buckets whose members
     * carry it (the even ones: lane t*40+b is even when b is). */
    expect_script(&d, i, CACHET_SCRIPT_EVICT_CHUNK, 3 * 4 + (i % 2 ? 0 : 1));
    assert_int_equal(chunk_lanes(&d, i), 3);
    assert_string_equal(chunk_begins(&d, i), "2");
    /* 3 values deleted, then per lane: one doomed, none to drain next. */
    rep[i] = "*16\r\n:3\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n"
             ":1\r\n:0\r\n:0\r\n:0\r\n:0\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n";
  }
  feed(&d, rep);
  expect_done(&d, CACHET_OK);
  assert_int_equal(x.evicted, 3 * 40);
  assert_int_equal(x.sends, 3);
  x.op.k->free(&x.op);
}

/* A bucket whose t holds a chunk's worth (maybe more): the first chunk
 * begins a snapshot, and the snapshot is drained to its end. */
static void test_eviction_snapshots_a_large_bucket(void **state) {
  (void)state;
  const char *tags[] = {"t"};
  cachet_op_evict x;
  assert_int_equal(cachet_op_evict_init(&x, c, tags, 1), CACHET_OK);
  drv d;
  start(&d, &x.op);
  static char full[64 * 8 + 8];
  int n = snprintf(full, sizeof full, "*%d\r\n", CACHET_EVICT_MEMBERS);
  for (int i = 0; i < CACHET_EVICT_MEMBERS; i++)
    n += snprintf(full + n, sizeof full - (size_t)n, "$1\r\n%c\r\n",
                  'A' + i % 26);
  static const char *rep[2 * CACHET_BUCKETS];
  for (size_t i = 0; i < d.out.n; i++)
    rep[i] = i == 0 ? full : i % 2 ? ":0\r\n" : "*0\r\n";
  feed(&d, rep);
  assert_int_equal(d.out.n, CACHET_EVICT_MEMBERS);
  for (size_t i = 0; i < d.out.n; i++)
    rep[i] = "*1\r\n$1\r\nt\r\n";
  feed(&d, rep);
  expect_script(&d, 0, CACHET_SCRIPT_EVICT_CHUNK, 2 + 2 * 64);
  assert_string_equal(chunk_begins(&d, 0), "1");
  /* Took the snapshot; one member more in it. */
  feed(&d, (const char *[]){
               "*7\r\n:64\r\n:64\r\n:0\r\n:0\r\n:2\r\n:1\r\n$1\r\nz\r\n"});
  feed(&d, (const char *[]){"*1\r\n$1\r\nt\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_EVICT_CHUNK, 4);
  assert_string_equal(chunk_begins(&d, 0), "0");
  feed(&d, (const char *[]){"*6\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n"});
  expect_done(&d, CACHET_OK);
  assert_int_equal(x.evicted, 65);
  x.op.k->free(&x.op);
}

/* All of t was read, but its members carry so many tags that one call
 * cannot take them all: the chunk begins a snapshot instead, so the
 * members left out are drained from it rather than forgotten. */
static void test_eviction_snapshots_what_one_call_cannot_take(void **state) {
  (void)state;
  const char *tags[] = {"t"};
  cachet_op_evict x;
  assert_int_equal(cachet_op_evict_init(&x, c, tags, 1), CACHET_OK);
  drv d;
  start(&d, &x.op);
  static const char *rep[2 * CACHET_BUCKETS];
  for (size_t i = 0; i < d.out.n; i++)
    rep[i] = i == 0  ? "*4\r\n$1\r\nA\r\n$1\r\nB\r\n$1\r\nC\r\n$1\r\nD\r\n"
             : i % 2 ? ":0\r\n"
                     : "*0\r\n";
  feed(&d, rep);
  assert_int_equal(d.out.n, 4);
  /* Each member carries 400 tags: 402 operations each, two fit 1024. */
  static char many[400 * 16 + 16];
  int n = snprintf(many, sizeof many, "*400\r\n");
  for (int i = 0; i < 400; i++)
    n += snprintf(many + n, sizeof many - (size_t)n, "$4\r\nx%03d\r\n", i);
  for (size_t i = 0; i < 4; i++)
    rep[i] = many;
  feed(&d, rep);
  expect_script(&d, 0, CACHET_SCRIPT_EVICT_CHUNK, 2 + 2 * 2 + 400);
  assert_string_equal(chunk_begins(&d, 0), "1");
  x.op.k->free(&x.op);
}

/* A bucket whose t is gone but whose e an earlier eviction left: joined
 * with evict_begin, drained, then begun again for a t written since. */
static void test_eviction_joins_an_e_left_behind(void **state) {
  (void)state;
  const char *tags[] = {"t"};
  cachet_op_evict x;
  assert_int_equal(cachet_op_evict_init(&x, c, tags, 1), CACHET_OK);
  drv d;
  start(&d, &x.op);
  sweep_answer(&d, 1, 0, 7);
  assert_int_equal(d.out.n, 1);
  expect_script(&d, 0, CACHET_SCRIPT_EVICT_BEGIN, 2);
  feed(&d, (const char *[]){"*2\r\n:1\r\n$1\r\nm\r\n"}); /* joined e */
  assert_true(is(cmd(&d, 0), "SMEMBERS"));
  feed(&d, (const char *[]){"*1\r\n$1\r\nt\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_EVICT_CHUNK, 4);
  assert_string_equal(chunk_begins(&d, 0), "0");
  feed(&d, (const char *[]){
               "*6\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n"}); /* e drained */
  /* Joined, not our own snapshot: begin again. */
  expect_script(&d, 0, CACHET_SCRIPT_EVICT_BEGIN, 2);
  feed(&d, (const char *[]){"*2\r\n:2\r\n$1\r\nn\r\n"}); /* t renamed */
  assert_true(is(cmd(&d, 0), "SMEMBERS"));
  feed(&d, (const char *[]){"*1\r\n$1\r\nt\r\n"});
  expect_script(&d, 0, CACHET_SCRIPT_EVICT_CHUNK, 4);
  feed(&d, (const char *[]){"*6\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n"});
  expect_done(&d, CACHET_OK);
  assert_int_equal(x.evicted, 2);
  x.op.k->free(&x.op);
}

/* ---- clear and prune
 * ---------------------------------------------------------- */

/* A page's clear_chunk calls ride with the next SCAN of its master. */
static void test_clear_pipelines_calls_with_the_next_scan(void **state) {
  (void)state;
  cachet_op_scan x;
  assert_int_equal(cachet_op_scan_init(&x, c, 0, 0, 0), CACHET_OK);
  drv d;
  start(&d, &x.op);
  assert_int_equal(d.out.n, 1);
  assert_true(is(cmd(&d, 0), "SCAN"));
  feed(&d, (const char *[]){"*2\r\n$2\r\n17\r\n*2\r\n$11\r\nmt:{00}v:ab\r\n"
                            "$11\r\nmt:{00}m:ab\r\n"});
  assert_int_equal(d.out.n, 2);
  expect_script(&d, 0, CACHET_SCRIPT_CLEAR_CHUNK, 2);
  assert_true(is(cmd(&d, 1), "SCAN"));
  assert_int_equal(cmd(&d, 1)->lens[1], 2); /* the cursor it was given */
  assert_memory_equal(cmd(&d, 1)->argv[1], "17", 2);
  feed(&d, (const char *[]){":1\r\n",
                            "*2\r\n$1\r\n0\r\n*1\r\n$11\r\nmt:{01}v:cd\r\n"});
  assert_int_equal(d.out.n, 1);
  expect_script(&d, 0, CACHET_SCRIPT_CLEAR_CHUNK, 1);
  feed(&d, (const char *[]){":1\r\n"});
  expect_done(&d, CACHET_OK);
  assert_int_equal(x.count, 2);
  assert_int_equal(d.sends, 3);
  x.op.k->free(&x.op);
}

/* Every index key of a page is pruned at once: expired members, then a
 * ZSCAN, then the dangling ones, each step one SEND for all of them. */
static void test_prune_fans_out_over_a_page(void **state) {
  (void)state;
  cachet_op_scan x;
  assert_int_equal(cachet_op_scan_init(&x, c, 1, 0, 0), CACHET_OK);
  drv d;
  start(&d, &x.op);
  assert_true(is(cmd(&d, 0), "SCAN"));
  feed(&d, (const char *[]){"*2\r\n$1\r\n0\r\n*3\r\n$11\r\nmt:{00}t:ta\r\n"
                            "$11\r\nmt:{01}t:tb\r\n$11\r\nmt:{02}t:tc\r\n"});
  assert_int_equal(d.out.n, 3);
  const char *rep[3];
  for (size_t i = 0; i < 3; i++) {
    expect_script(&d, i, CACHET_SCRIPT_PRUNE_CHUNK, 1);
    rep[i] = "*2\r\n:2\r\n:0\r\n"; /* two expired, none left */
  }
  feed(&d, rep);
  assert_int_equal(d.out.n, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_true(is(cmd(&d, i), "ZSCAN"));
    rep[i] = "*2\r\n$1\r\n0\r\n*2\r\n$1\r\nm\r\n$1\r\n5\r\n";
  }
  feed(&d, rep);
  assert_int_equal(d.out.n, 3);
  for (size_t i = 0; i < 3; i++) {
    expect_script(&d, i, CACHET_SCRIPT_PRUNE_DANGLING, 3);
    rep[i] = ":1\r\n";
  }
  feed(&d, rep);
  expect_done(&d, CACHET_OK);
  assert_int_equal(x.count, 3 * 3);
  assert_int_equal(d.sends, 4);
  x.op.k->free(&x.op);
}

/* ---- An error at every step
 * --------------------------------------------------- Each machine runs against
 * a plausible server (answer() below) until it is done; then once more for each
 * SEND it made, with that SEND answered by an error reply (then by a lost
 * connection) and the rest as before. */

/* A server that says yes. `round` counts SENDs, for replies that change. */
static const char *answer(const cachet_cmd *k, size_t i, int round) {
  static char info[256];
  if (is(k, "EVALSHA")) {
    switch (k->script) {
    case CACHET_SCRIPT_LOCK_ACQUIRE:
      return "*2\r\n:1\r\n:1\r\n";
    case CACHET_SCRIPT_EVICT_BEGIN:
      return "*1\r\n:0\r\n";
    case CACHET_SCRIPT_EVICT_CHUNK: /* evicted one, nothing left */
      return "*6\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n";
    case CACHET_SCRIPT_PRUNE_CHUNK:
      return "*2\r\n:1\r\n:0\r\n";
    case CACHET_SCRIPT_PRUNE_DANGLING:
      return ":1\r\n";
    case CACHET_SCRIPT_SET_MANY:
      return "*1\r\n:1\r\n";
    default:
      return ":1\r\n";
    }
  }
  if (is(k, "GET"))
    return "$-1\r\n";
  if (is(k, "SET"))
    return "+OK\r\n";
  if (is(k, "EXISTS"))
    return i == 0 ? ":1\r\n" : ":0\r\n";
  if (is(k, "SMEMBERS"))
    return k->argv[1][k->lens[1] - 2] == ':' ? "*1\r\n$1\r\nt\r\n" : "*0\r\n";
  if (is(k, "ZRANGE")) /* the sweep: one member in bucket 00 */
    return i == 0 && round < 4 ? "*1\r\n$1\r\nm\r\n" : "*0\r\n";
  if (is(k, "SCAN"))
    return "*2\r\n$1\r\n0\r\n*1\r\n$11\r\nmt:{00}t:tg\r\n";
  if (is(k, "ZSCAN"))
    return "*2\r\n$1\r\n0\r\n*2\r\n$1\r\nm\r\n$1\r\n1\r\n";
  if (is(k, "PING"))
    return "+PONG\r\n";
  if (is(k, "SCRIPT")) {
    static char se[4 * CACHET_SCRIPT_COUNT + 16];
    int n = snprintf(se, sizeof se, "*%d\r\n", CACHET_SCRIPT_COUNT);
    for (int s = 0; s < CACHET_SCRIPT_COUNT; s++)
      n += snprintf(se + n, sizeof se - (size_t)n, ":1\r\n");
    return se;
  }
  if (is(k, "INFO")) {
    const char *body = "redis_version:7.0.15\r\nused_memory:10\r\n";
    snprintf(info, sizeof info, "$%zu\r\n%s\r\n", strlen(body), body);
    return info;
  }
  if (is(k, "CONFIG"))
    return "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n";
  return ":1\r\n"; /* UNLINK, DEL */
}

/* Run `op` to its end; at SEND number `bad` (1-based; 0: none) every
 * command gets `failure`. Returns the SENDs made. */
static int run(cachet_op *op, int bad, const char *failure, drv *d) {
  start(d, op);
  for (int guard = 0; d->what != CACHET_DO_DONE; guard++) {
    assert_true(guard < 200);
    if (d->what == CACHET_DO_SLEEP) {
      feed(d, NULL);
    } else if (d->what == CACHET_DO_LOAD) {
      load_value(d, "v");
    } else if (d->sends == bad) {
      feed_all(d, failure);
    } else {
      const char *r[600];
      for (size_t i = 0; i < d->out.n; i++)
        r[i] = answer(&d->out.cmds[i], i, d->sends);
      feed(d, r);
    }
  }
  return d->sends;
}

enum {
  M_SET_TAGS,
  M_SET_PLAIN,
  M_SET_STAGED,
  M_DELETE,
  M_GET,
  M_LOCK,
  M_GOS,
  M_EVICT,
  M_CLEAR,
  M_PRUNE,
  M_MGET,
  M_MSET,
  M_HEALTH,
  M_COUNT
};
static const char *const mnames[M_COUNT] = {
    "set_tags", "set (plain)", "set (staged)", "delete", "get",
    "lock",     "get_or_set",  "evict-tags",   "clear",  "prune",
    "mget",     "mset",        "health"};

static cachet_lock *mlock;
static cachet_entry ments[2];
static char *staged_value;

static cachet_op *make(test_machine *m, int which) {
  static const char *tags[] = {"tg"};
  int rc = CACHET_OK;
  memset(ments, 0, sizeof ments);
  ments[0] = (cachet_entry){.key = "a", .keylen = 1, .val = "1", .len = 1};
  ments[1] = (cachet_entry){
      .key = "b", .keylen = 1, .val = "2", .len = 1, .tags = tags, .ntags = 1};
  switch (which) {
  case M_SET_TAGS:
    rc = cachet_op_entry_write(&m->entry, c, "k", 1, "v", 1, 0, tags, 1);
    break;
  case M_SET_PLAIN:
    rc = cachet_op_entry_write(&m->entry, c, "k", 1, "v", 1, 0, NULL, 0);
    break;
  case M_SET_STAGED:
    rc = cachet_op_entry_write(&m->entry, c, "k", 1, staged_value,
                               CACHET_STAGE_MIN, 0, NULL, 0);
    break;
  case M_DELETE:
    rc = cachet_op_entry_delete(&m->entry, c, "k", 1);
    break;
  case M_GET:
    rc = cachet_op_key_init(&m->key, c, CACHET_KEY_GET, "k", 1);
    break;
  case M_LOCK:
    cachet_op_lock_init(&m->lock, c, CACHET_LOCK_ACQUIRE, mlock, 1000, 0);
    break;
  case M_GOS:
    rc = cachet_op_gos_init(&m->gos, c, "k", 1, NULL, NULL, 0, tags, 1);
    break;
  case M_EVICT:
    rc = cachet_op_evict_init(&m->evict, c, tags, 1);
    break;
  case M_CLEAR:
  case M_PRUNE:
    rc = cachet_op_scan_init(&m->scan, c, which == M_PRUNE, 0, 0);
    break;
  case M_MGET:
    rc = cachet_op_mget_init(&m->mget, c, ments, 2);
    break;
  case M_MSET:
    rc = cachet_op_mset_init(&m->mset, c, ments, 2);
    break;
  default:
    cachet_op_health_init(&m->health, c);
    break;
  }
  assert_int_equal(rc, CACHET_OK);
  return &m->op;
}

static void drop(test_machine *m) {
  m->op.k->free(&m->op);
  for (size_t i = 0; i < 2; i++)
    free(ments[i].out);
}

/* Failures that are not the caller's result: get_or_set's release of its
 * lock once the value is written (the lock expires by itself), and a
 * connection lost under the health probe, which it probes again over a
 * fresh one (an idle connection the server closed is no outage). */
static int tolerated(int which, int step, int sends, int lost, const drv *d) {
  if (which == M_GOS)
    return step == sends;
  return which == M_HEALTH && lost && d->sends > sends;
}

static void test_an_error_at_every_step_is_an_error(void **state) {
  (void)state;
  staged_value = calloc(1, CACHET_STAGE_MIN);
  assert_int_equal(cachet_lock_new(CACHET_KIND_LOCK, "l", 1, &mlock),
                   CACHET_OK);
  static const char *const failures[] = {"-ERR boom\r\n", CONN_LOST};
  for (int which = 0; which < M_COUNT; which++) {
    test_machine m;
    drv d;
    int sends = run(make(&m, which), 0, NULL, &d);
    if (d.out.status != CACHET_OK && d.out.status != CACHET_MISS)
      fail_msg("%s: the plausible server gave %s (%s)", mnames[which],
               cachet_status_name(d.out.status), cachet_last_error());
    drop(&m);
    assert_true(sends >= 1);
    for (int f = 0; f < 2; f++)
      for (int step = 1; step <= sends; step++) {
        (void)run(make(&m, which), step, failures[f], &d);
        int rc = d.out.status;
        const char *words = f == 0 ? "boom" : "connection lost";
        if (rc == CACHET_OK && tolerated(which, step, sends, f, &d)) {
          drop(&m);
          continue;
        }
        if (rc >= 0 || strstr(cachet_last_error(), words) == NULL)
          fail_msg("%s: %s at step %d of %d gave %s (\"%s\")", mnames[which],
                   f == 0 ? "an error reply" : "a lost connection", step, sends,
                   cachet_status_name(rc), cachet_last_error());
        if (f == 1)
          assert_int_equal(rc, CACHET_ECONN);
        drop(&m);
      }
  }
  cachet_lock_free(mlock);
  free(staged_value);
}

/* ---- Reads
 * -------------------------------------------------------------------- */

static void test_reads_decode_once(void **state) {
  (void)state;
  static const struct {
    int cmd;
    const char *reply;
    int want;
  } cases[] = {
      {CACHET_KEY_GET, "$-1\r\n", CACHET_MISS},
      {CACHET_KEY_GET, ":1\r\n", CACHET_EPROTO},
      {CACHET_KEY_GET, "$3\r\nxyz\r\n", CACHET_ECORRUPT},
      {CACHET_KEY_GET, "-WRONGTYPE Operation\r\n", CACHET_ESERVER},
      {CACHET_KEY_EXISTS, ":0\r\n", CACHET_MISS},
      {CACHET_KEY_EXISTS, ":1\r\n", CACHET_OK},
      {CACHET_KEY_EXISTS, "$1\r\n1\r\n", CACHET_EPROTO},
      {CACHET_KEY_PTTL, ":-2\r\n", CACHET_MISS},
      {CACHET_KEY_PTTL, ":-1\r\n", CACHET_OK},
      {CACHET_KEY_PTTL, ":1500\r\n", CACHET_OK},
      {CACHET_KEY_RAW, "$3\r\nxyz\r\n", CACHET_OK},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cachet_op_key x;
    assert_int_equal(cachet_op_key_init(&x, c, cases[i].cmd, "k", 1),
                     CACHET_OK);
    drv d;
    start(&d, &x.op);
    feed(&d, (const char *[]){cases[i].reply});
    expect_done(&d, cases[i].want);
    if (cases[i].cmd == CACHET_KEY_PTTL && cases[i].want == CACHET_OK)
      assert_int_equal(x.ttl_ms, cases[i].reply[1] == '-' ? -1 : 1500);
    x.op.k->free(&x.op);
  }
}

/* A server may answer "-" alone: still ESERVER, and a detail that says
 * so (found by server_replies_fuzzer). */
static void test_an_error_reply_without_words_has_a_detail(void **state) {
  (void)state;
  cachet_op_key x;
  assert_int_equal(cachet_op_key_init(&x, c, CACHET_KEY_GET, "k", 1),
                   CACHET_OK);
  drv d;
  start(&d, &x.op);
  cachet_error_clear();
  feed(&d, (const char *[]){"-\r\n"});
  expect_done(&d, CACHET_ESERVER);
  assert_string_equal(cachet_last_error(),
                      "(an error reply without a message)");
  x.op.k->free(&x.op);
}

static int setup(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  o.host = "127.0.0.1";
  o.port = 1; /* never connected: no machine does I/O */
  o.prefix = "mt:";
  return cachet_open(&c, &o) == CACHET_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  cachet_close(c);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_learns_old_tags_through_retag),
      cmocka_unit_test(test_retag_is_bounded),
      cmocka_unit_test(test_lost_stage_is_an_error_and_unstaged),
      cmocka_unit_test(test_plain_write_untags_an_entry_that_had_tags),
      cmocka_unit_test(test_noscript_reaching_a_machine_is_eserver),
      cmocka_unit_test(test_expired_and_stolen_locks),
      cmocka_unit_test(test_acquire_backs_off_within_the_wait),
      cmocka_unit_test(test_acquire_survives_any_holder_ttl),
      cmocka_unit_test(test_waiter_takes_over_a_dead_holder),
      cmocka_unit_test(test_loader_timeout_releases_the_lock),
      cmocka_unit_test(test_eviction_without_progress_gives_up),
      cmocka_unit_test(test_eviction_fans_out_in_parallel_phases),
      cmocka_unit_test(test_eviction_snapshots_a_large_bucket),
      cmocka_unit_test(test_eviction_snapshots_what_one_call_cannot_take),
      cmocka_unit_test(test_eviction_joins_an_e_left_behind),
      cmocka_unit_test(test_clear_pipelines_calls_with_the_next_scan),
      cmocka_unit_test(test_prune_fans_out_over_a_page),
      cmocka_unit_test(test_an_error_at_every_step_is_an_error),
      cmocka_unit_test(test_reads_decode_once),
      cmocka_unit_test(test_an_error_reply_without_words_has_a_detail),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
