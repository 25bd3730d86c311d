/*
 * Every decoder of server replies, against a hostile server: the operation
 * machines (src/op_*.c) and the cluster router (src/router.c).
 *
 * The ops_model fuzzers drive the operations against a real Redis, which
 * only ever answers what Redis answers. Here the server is the input: each
 * command of each SEND gets an outcome made from the fuzz bytes: a
 * transport failure, a plausible answer to that command, or a reply from a
 * small grammar (nil, integers, strings, statuses, errors, nested arrays,
 * and raw bytes that may break the stream). Replies are RESP bytes parsed
 * through cachet's bounded reader (reader.c) with small limits, in pieces,
 * as the drivers parse a socket: a reply the reader refuses is a protocol
 * error, one it cannot finish is a timeout. The machines and the router
 * are pure, so this needs no server and no I/O.
 *
 * Input: the number of masters and whether the handle has a near cache,
 * the operation and its arguments, then the outcomes. Past the end of the input
 * every outcome is a lost connection.
 *
 * What must hold, beyond ASan, UBSan and the leak checker:
 *  - every machine ends: within a bounded number of steps, and within a few
 *    steps once the server only fails (the input has run out);
 *  - a SEND is well formed: at least one command, none without a name,
 *    each aimed at the key's slot or at a master that exists, and no SEND
 *    beyond a pipeline's cap; a SLEEP is not negative;
 *  - it ends with a status cachet knows; an error has a detail message;
 *  - an error reply or a transport failure is never a success or a miss
 *    when it is the only outcome of a single-command read;
 *  - the router takes a plausible slot map or redirection exactly when it
 *    is valid, and every slot routes to a node that exists.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include "cachet.h"
#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "fuzz_helpers.h"
#include "lock.h"
#include "machines.h"
#include "near.h"
#include "reader.h"
#include "replies.h"
#include "router.h"

/* Steps of one machine, at most: far above any honest run of the small
 * operations built here (a lock's wait is at most 2 s of 1 ms sleeps). */
#define MAX_STEPS 20000
/* Steps a machine may take once the server only fails. */
#define MAX_STEPS_FAILING 32
/* No SEND needs more commands (evict's pipeline cap, plus one lane). */
#define MAX_SEND 8192
#define MAX_NODES 3

/* Two handles on the same options; the second has a near cache, made and
 * activated by hand (no tracking feed runs here), emptied before each
 * input so that one input never sees another's copies. */
static cachet *plain, *near_handle;
/* CACHET_FUZZ_TRACE=1: each step on stderr, to read a crash's story. */
static int tracing;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  cachet_options o;
  cachet_options_init(&o);
  o.host = "127.0.0.1";
  o.port = 1; /* never connected: the machines do no I/O */
  o.prefix = "fz:";
  tracing = getenv("CACHET_FUZZ_TRACE") != NULL;
  int rc = cachet_open(&plain, &o);
  FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_last_error());
  rc = cachet_open(&near_handle, &o);
  FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_last_error());
  rc = cachet_near_create(&near_handle->near, 1 << 20, 60000);
  FUZZ_ASSERT(rc == CACHET_OK);
  cachet_near_activate(near_handle->near);
  return 0;
}

/* ---- The server: replies from the input ---------------------------------- */

/* The connection: a reader with small limits, fed a reply's bytes in
 * pieces, as a socket delivers them. */
typedef struct server {
  fuzz_cursor *in;
  redisReader *rd;
  cachet_reader_bound bound;
  reply_buf stream;
} server;

static void reconnect(server *s) {
  if (s->rd != NULL)
    redisReaderFree(s->rd);
  s->rd = redisReaderCreate();
  FUZZ_ASSERT(s->rd != NULL);
  memset(&s->bound, 0, sizeof s->bound);
  uint8_t k = fuzz_take_u8(s->in);
  s->bound.bulk_max = k & 1 ? 1u << 20 : 32 + (size_t)k * 8;
  s->bound.array_max = k & 2 ? 1u << 20 : 4 + (size_t)(k >> 2);
  cachet_reader_attach(s->rd, &s->bound);
}

static cachet_res failure(int status, const char *detail) {
  return (cachet_res){status, NULL, detail};
}

/* ---- A plausible server --------------------------------------------------
 * Hostile replies alone rarely get a machine past its first step. So most
 * outcomes are what Redis could answer to the command (some choices left to
 * the input byte k), and the grammar's replies are mixed in among them. */

/* What a plausible server writes for a request: `ctx` says what was asked,
 * `v` chooses among the answers, more may be read from `in`. */
typedef void (*answer_fn)(reply_buf *b, fuzz_cursor *in, const void *ctx,
                          uint8_t v);

static void plausible(reply_buf *b, fuzz_cursor *in, const void *ctx,
                      uint8_t v) {
  (void)in;
  reply_plausible(b, ctx, v);
}

/* One command's outcome: a failure (always, once the input has run out), a
 * plausible answer or one from the grammar. */
static cachet_res outcome(server *s, answer_fn answer, const void *ctx) {
  uint8_t k = fuzz_take_u8(s->in);
  if (k < 16) { /* a driver drops the connection: nothing of it is read */
    reconnect(s);
    return failure(k & 1 ? CACHET_ETIMEDOUT : CACHET_ECONN,
                   "fuzz: the connection failed");
  }
  s->stream.len = 0;
  if (k < 160)
    answer(&s->stream, s->in, ctx, fuzz_take_u8(s->in));
  else
    reply_gen(s->in, &s->stream, 0);
  size_t piece = 1 + k % 64, at = 0;
  for (;;) {
    void *r = NULL;
    if (redisReaderGetReply(s->rd, &r) != REDIS_OK) {
      reconnect(s);
      return failure(CACHET_EPROTO, "fuzz: protocol error");
    }
    if (r != NULL)
      return (cachet_res){CACHET_OK, r, NULL};
    if (cachet_reader_check(s->rd, &s->bound) != 0) {
      FUZZ_ASSERT(s->bound.why[0] != '\0');
      reconnect(s);
      return failure(CACHET_EPROTO, "fuzz: reply over the reader's bounds");
    }
    if (at == s->stream.len) { /* the rest never comes */
      reconnect(s);
      return failure(CACHET_ETIMEDOUT, "fuzz: no whole reply");
    }
    size_t n = s->stream.len - at < piece ? s->stream.len - at : piece;
    FUZZ_ASSERT(redisReaderFeed(s->rd, s->stream.p + at, n) == REDIS_OK);
    at += n;
  }
}

/* ---- The operations --------------------------------------------------- */

enum {
  F_SET,
  F_SET_STAGED,
  F_DELETE,
  F_KEY,
  F_LOCK,
  F_GOS,
  F_EVICT,
  F_SCAN,
  F_MGET,
  F_MSET,
  F_HEALTH,
  F_INFO,
  F_ROUTER, /* not a machine: the cluster router (below) */
  F_COUNT
};

static const char *const tag_names[] = {"tg", "t2", "other", "tg"};
static const char *const keys[] = {"k", "a", "b", "k"};

typedef struct run {
  test_machine m;
  int which;
  cachet_lock *lk;
  cachet_entry ents[4];
  size_t nents;
  char *staged;
} run;

/* Build the operation the input names; 0 if its arguments were refused
 * (nothing to run). */
static int make(run *r, fuzz_cursor *in, int nodes, int near) {
  uint8_t a = fuzz_take_u8(in), b = fuzz_take_u8(in);
  /* The near cache serves reads and is dropped by writes; health and locks
   * do not use it (and health expects the feed a real one has). */
  cachet *handle = near && a % F_COUNT != F_HEALTH && a % F_COUNT != F_LOCK &&
                           a % F_COUNT != F_INFO
                       ? near_handle
                       : plain;
  size_t ntags = b % 4;
  const char *const *tags = ntags > 0 ? tag_names : NULL;
  const char *key = keys[a % 4];
  int64_t ttl = b & 0x40 ? 1000 + (b >> 6) : 0;
  int rc = CACHET_OK;
  r->which = a % F_COUNT;
  switch (r->which) {
  case F_SET:
    rc = cachet_op_entry_write(&r->m.entry, handle, key, 1, "v", 1, ttl, tags,
                               ntags);
    break;
  case F_SET_STAGED:
    r->staged = calloc(1, CACHET_STAGE_MIN);
    FUZZ_ASSERT(r->staged != NULL);
    rc = cachet_op_entry_write(&r->m.entry, handle, key, 1, r->staged,
                               CACHET_STAGE_MIN, ttl, tags, ntags);
    break;
  case F_DELETE:
    rc = cachet_op_entry_delete(&r->m.entry, handle, key, 1);
    break;
  case F_KEY:
    rc = cachet_op_key_init(&r->m.key, handle, b % 4, key, 1);
    break;
  case F_LOCK: {
    rc = cachet_lock_new(b & 0x80 ? CACHET_KIND_LOCK : CACHET_KIND_STAMPEDE,
                         "l", 1, &r->lk);
    if (rc != CACHET_OK)
      return 0;
    int mode = b % 3 == 0   ? CACHET_LOCK_ACQUIRE
               : b % 3 == 1 ? CACHET_LOCK_RELEASE
                            : CACHET_LOCK_EXTEND;
    cachet_op_lock_init(&r->m.lock, handle, mode, r->lk, 1000,
                        (int64_t)(b & 0x30) * 40);
    break;
  }
  case F_GOS:
    rc = cachet_op_gos_init(&r->m.gos, handle, key, 1, NULL, NULL, ttl, tags,
                            ntags);
    break;
  case F_EVICT:
    rc = cachet_op_evict_init(&r->m.evict, handle, tag_names, 1 + b % 4);
    break;
  case F_SCAN:
    rc =
        cachet_op_scan_init(&r->m.scan, handle, b & 1, (b >> 1) & 1, nodes > 1);
    break;
  case F_MGET:
  case F_MSET:
    r->nents = 1 + b % 4;
    for (size_t i = 0; i < r->nents; i++) {
      uint8_t e = fuzz_take_u8(in);
      r->ents[i] = (cachet_entry){.key = keys[e % 4],
                                  .keylen = 1,
                                  .val = "v",
                                  .len = 1,
                                  .ttl_ms = e & 0x40 ? 500 : 0,
                                  .tags = (e >> 2) % 4 ? tag_names : NULL,
                                  .ntags = (e >> 2) % 4};
    }
    rc = r->which == F_MGET
             ? cachet_op_mget_init(&r->m.mget, handle, r->ents, r->nents)
             : cachet_op_mset_init(&r->m.mset, handle, r->ents, r->nents);
    break;
  case F_HEALTH:
    cachet_op_health_init(&r->m.health, handle);
    break;
  default:
    cachet_op_info_init(&r->m.info, handle);
    break;
  }
  /* An init that refuses has nothing to run and owns nothing (it is not
   * freed: the leak checker holds it to that). */
  if (rc != CACHET_OK) {
    FUZZ_ASSERT(rc < 0 && cachet_last_error()[0] != '\0');
    return 0;
  }
  return 1;
}

static void drop(run *r, int made) {
  if (made)
    r->m.op.k->free(&r->m.op);
  for (size_t i = 0; i < r->nents; i++)
    free(r->ents[i].out);
  cachet_lock_free(r->lk);
  free(r->staged);
}

/* get_or_set's loader, as a driver runs it: a value, a failure, a lease
 * lost meanwhile, a loader that could not start, or one past its
 * deadline. */
static void load(cachet_load *ld, uint8_t k) {
  switch (k % 5) {
  case 0:
    ld->status = 0;
    ld->val = strdup("loaded");
    FUZZ_ASSERT(ld->val != NULL);
    ld->len = 6;
    ld->ttl_ms = k & 0x80 ? 0 : 1000;
    break;
  case 1:
    ld->status = -1;
    break;
  case 2:
    ld->status = 0;
    ld->val = strdup("late");
    FUZZ_ASSERT(ld->val != NULL);
    ld->len = 4;
    ld->lost = k & 0x80 ? CACHET_LOCK_EXPIRED : CACHET_LOCK_NOT_OWNER;
    break;
  case 3:
    ld->status = -1;
    ld->start_failed = 1;
    break;
  default:
    ld->status = -1;
    ld->timed_out = 1;
    break;
  }
}

static void trace_send(const cachet_out *out, const cachet_res *res) {
  for (size_t i = 0; i < out->n; i++) {
    const cachet_cmd *k = &out->cmds[i];
    fprintf(stderr, "  %.*s", (int)k->lens[0], k->argv[0]);
    for (int a = 1; a < k->argc && a < 6; a++)
      fprintf(stderr, " %.*s", (int)(k->lens[a] < 40 ? k->lens[a] : 40),
              k->argv[a]);
    if (res[i].status != CACHET_OK)
      fprintf(stderr, " -> %s\n", cachet_status_name(res[i].status));
    else if (res[i].reply->type == REDIS_REPLY_ARRAY)
      fprintf(stderr, " -> array of %zu\n", res[i].reply->elements);
    else if (res[i].reply->type == REDIS_REPLY_INTEGER)
      fprintf(stderr, " -> %lld\n", res[i].reply->integer);
    else
      fprintf(stderr, " -> type %d '%.*s'\n", res[i].reply->type,
              (int)(res[i].reply->len < 60 ? res[i].reply->len : 60),
              res[i].reply->str != NULL ? res[i].reply->str : "");
  }
}

static void check_send(const cachet_out *out, int nodes) {
  FUZZ_ASSERT(out->n >= 1 && out->n <= MAX_SEND);
  for (size_t i = 0; i < out->n; i++) {
    const cachet_cmd *k = &out->cmds[i];
    FUZZ_ASSERT(k->argc >= 1 && k->argv != NULL && k->lens != NULL);
    FUZZ_ASSERT(k->argv[0] != NULL && k->lens[0] > 0);
    FUZZ_ASSERT_MSG(k->node == CACHET_ROUTE_KEY ||
                        (k->node >= 0 && k->node < nodes),
                    "a command aimed at a master that does not exist");
    /* Routed by its key: it has one (EVALSHA: sha, numkeys, KEYS[1]). */
    if (k->node == CACHET_ROUTE_KEY)
      FUZZ_ASSERT(k->argc >= (k->script >= 0 ? 4 : 2));
  }
}

/* ---- The cluster router -------------------------------------------------
 * CLUSTER SLOTS replies and MOVED/ASK redirections, decoded by router.c
 * (no I/O either). A plausible reply records whether it is valid, so that
 * the router must take exactly the valid ones. */

static const char *const hosts[] = {
    "10.0.0.1",
    "10.0.0.2",
    "",
    "?",
    "[::1]",
    "a-host-name-longer-than-any-that-fits-a-node-record-"
    "0123456789012345678901234567890123456789012345678901234567890123456789"
    "0123456789012345678901234567890123456789012345678901234567890123456789"
    "0123456789012345678901234567890123456789012345678901234567890123456789"};
static const long long ports[] = {7000, 7001, 7002, 0, 65536, 4294974296LL, -1};

typedef struct slots_ctx {
  int valid; /* out: 1 if every entry is one the router must take */
} slots_ctx;

typedef struct redirect_ctx {
  int valid, slot; /* out */
} redirect_ctx;

static int host_ok(const char *h) { return strlen(h) <= 255; }
static int port_ok(long long p) { return p > 0 && p <= 65535; }

static void put_slots(reply_buf *b, fuzz_cursor *in, const void *ctx,
                      uint8_t v) {
  slots_ctx *x = (slots_ctx *)ctx;
  x->valid = 1;
  size_t n = v % 4;
  reply_put_head(b, '*', (long long)n);
  for (size_t i = 0; i < n; i++) {
    long long lo = (fuzz_take_u8(in) | fuzz_take_u8(in) << 8) % 16400;
    long long hi = lo + (long long)fuzz_take_u8(in) * 64;
    uint8_t k = fuzz_take_u8(in);
    const char *h = hosts[(k >> 1) % (sizeof hosts / sizeof hosts[0])];
    long long port = ports[(k >> 4) % (sizeof ports / sizeof ports[0])];
    x->valid &= hi < 16384 && host_ok(h) && port_ok(port);
    reply_put_head(b, '*', 3 + (k & 1));
    reply_put_head(b, ':', lo);
    reply_put_head(b, ':', hi);
    reply_put_raw(b, "*3\r\n");
    reply_put_str(b, h);
    reply_put_head(b, ':', port);
    reply_put_str(b, "0123abcd");
    if (k & 1) { /* a replica: not the router's business */
      reply_put_raw(b, "*2\r\n");
      reply_put_str(b, "10.0.0.9");
      reply_put_head(b, ':', 7009);
    }
  }
}

static void put_redirect(reply_buf *b, fuzz_cursor *in, const void *ctx,
                         uint8_t v) {
  redirect_ctx *x = (redirect_ctx *)ctx;
  int slot = (fuzz_take_u8(in) | fuzz_take_u8(in) << 8) % 16400;
  const char *h = hosts[(v >> 1) % (sizeof hosts / sizeof hosts[0])];
  long long port = ports[(v >> 4) % (sizeof ports / sizeof ports[0])];
  char s[400];
  int n = snprintf(s, sizeof s, "-%s %d %s:%lld\r\n", v & 1 ? "ASK" : "MOVED",
                   slot, h, port);
  reply_put(b, s, (size_t)n);
  /* An empty host is the node that answered. */
  x->valid = slot < 16384 && host_ok(h) && port_ok(port);
  x->slot = slot;
}

/* Every slot routes to a node that exists, or to none. */
static void check_map(cachet_router *rt) {
  for (int s = 0; s < 16384; s += 127) {
    int idx = cachet_router_route(rt, s);
    FUZZ_ASSERT(idx == -1 || strcmp(cachet_router_name(rt, idx), "?") != 0);
  }
  int m[CACHET_ROUTER_NODES];
  int n = cachet_router_masters(rt, m, CACHET_ROUTER_NODES);
  for (int i = 0; i < n; i++)
    FUZZ_ASSERT(strcmp(cachet_router_name(rt, m[i]), "?") != 0);
}

static void route_replies(fuzz_cursor *in) {
  cachet_router *rt;
  FUZZ_ASSERT(cachet_router_create("10.0.0.1:7000,[::1]:7001", &rt) ==
              CACHET_OK);
  server s = {in, NULL, {0}, {0}};
  reconnect(&s);
  int64_t now = 1000;
  for (int round = 0; round < 16 && in->size > 0; round++) {
    int cand[CACHET_ROUTER_NODES];
    int nc = cachet_router_candidates(rt, cand, CACHET_ROUTER_NODES);
    FUZZ_ASSERT(nc >= 1);
    uint8_t op = fuzz_take_u8(in);
    int asked = cand[(op >> 1) % nc];
    cachet_error_clear();
    if (op & 1) {
      uint64_t gen;
      (void)cachet_router_due(rt, now, &gen);
      slots_ctx x = {-1};
      cachet_res r = outcome(&s, put_slots, &x);
      if (r.status == CACHET_OK) {
        int rc = cachet_router_apply(rt, gen, asked, r.reply, now);
        FUZZ_ASSERT(rc == CACHET_OK || rc == CACHET_EPROTO ||
                    rc == CACHET_ENOMEM);
        if (rc != CACHET_OK)
          FUZZ_ASSERT_MSG(cachet_last_error()[0] != '\0',
                          "a map refused without a detail");
        if (x.valid >= 0) /* the plausible reply */
          FUZZ_ASSERT_MSG((rc == CACHET_OK) == x.valid,
                          x.valid ? "a valid slot map refused"
                                  : "an invalid slot map taken");
        freeReplyObject(r.reply);
      }
    } else {
      redirect_ctx x = {-1, -1};
      cachet_res r = outcome(&s, put_redirect, &x);
      int kind =
          r.status == CACHET_OK ? cachet_redirect_kind(r.reply) : CACHET_R_NONE;
      if (kind == CACHET_R_MOVED || kind == CACHET_R_ASK) {
        int idx = cachet_router_redirect(rt, r.reply, asked);
        if (idx < 0)
          FUZZ_ASSERT_MSG(cachet_last_error()[0] != '\0',
                          "a redirection refused without a detail");
        else
          FUZZ_ASSERT(strcmp(cachet_router_name(rt, idx), "?") != 0);
        if (x.valid >= 0) {
          FUZZ_ASSERT_MSG((idx >= 0) == x.valid,
                          x.valid ? "a valid redirection refused"
                                  : "an invalid redirection followed");
          if (idx >= 0 && kind == CACHET_R_MOVED)
            FUZZ_ASSERT(cachet_router_route(rt, x.slot) == idx);
        }
      }
      if (r.reply != NULL)
        freeReplyObject(r.reply);
    }
    check_map(rt);
    now += 1 + fuzz_take_u8(in);
  }
  redisReaderFree(s.rd);
  free(s.stream.p);
  cachet_router_destroy(rt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_cursor in = {data, size};
  static const char *const names[MAX_NODES] = {"node0", "node1", "node2"};
  uint8_t first = fuzz_take_u8(&in);
  int nodes = 1 + (first & 0x7f) % MAX_NODES;
  if (in.size > 0 && in.data[0] % F_COUNT == F_ROUTER) {
    fuzz_take_u8(&in);
    route_replies(&in);
    return 0;
  }
  run r;
  memset(&r, 0, sizeof r);
  cachet_error_clear();
  cachet_near_flush(near_handle->near);
  int made = make(&r, &in, nodes, first >> 7);
  if (!made) {
    drop(&r, 0);
    return 0;
  }
  server s = {&in, NULL, {0}, {0}};
  reconnect(&s);
  cachet_res res[MAX_SEND];
  cachet_in ci = {1000000, nodes, names, NULL, 0};
  cachet_out out = {0};
  int what = r.m.op.k->step(&r.m.op, &ci, &out);
  int steps = 0, failing = 0;
  int read1 = 0, only = CACHET_OK; /* a single-command read: its outcome */
  while (what != CACHET_DO_DONE) {
    FUZZ_ASSERT_MSG(++steps <= MAX_STEPS, "a machine that does not end");
    if (in.size == 0)
      FUZZ_ASSERT_MSG(++failing <= MAX_STEPS_FAILING,
                      "a machine that goes on while every command fails");
    size_t n = 0;
    if (what == CACHET_DO_SEND) {
      check_send(&out, nodes);
      n = out.n;
      for (size_t i = 0; i < n; i++)
        res[i] = outcome(&s, plausible, &out.cmds[i]);
      if (tracing)
        trace_send(&out, res);
      if (r.which == F_KEY && steps == 1 && n == 1) {
        read1 = 1;
        only = res[0].status != CACHET_OK                ? res[0].status
               : res[0].reply->type == REDIS_REPLY_ERROR ? CACHET_ESERVER
                                                         : CACHET_OK;
      }
    } else if (what == CACHET_DO_SLEEP) {
      FUZZ_ASSERT_MSG(out.ms >= 0, "a negative sleep");
      ci.now += out.ms;
    } else {
      FUZZ_ASSERT(what == CACHET_DO_LOAD && out.load != NULL);
      load(out.load, fuzz_take_u8(&in));
    }
    ci.now += fuzz_take_u8(&in) % 4; /* time passes on the wire */
    ci.res = n > 0 ? res : NULL;
    ci.n = n;
    out = (cachet_out){0};
    what = r.m.op.k->step(&r.m.op, &ci, &out);
    for (size_t i = 0; i < n; i++)
      if (res[i].reply != NULL)
        freeReplyObject(res[i].reply);
  }
  int rc = out.status;
  if (tracing)
    fprintf(stderr, "%s: %s (%s) after %d steps\n", r.m.op.k->name,
            cachet_status_name(rc), cachet_last_error(), steps);
  FUZZ_ASSERT_MSG(strcmp(cachet_status_name(rc), "CACHET_UNKNOWN") != 0,
                  "a status cachet does not know");
  if (rc < 0)
    FUZZ_ASSERT_MSG(cachet_last_error()[0] != '\0', "an error without detail");
  if (read1 && only < 0)
    FUZZ_ASSERT_MSG(rc < 0, "a failed read reported as a success or miss");
  redisReaderFree(s.rd);
  free(s.stream.p);
  drop(&r, 1);
  return 0;
}
