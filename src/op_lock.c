/* Locks as a machine: acquire with jittered backoff, release, extend (see
 * op_lock.h). The token comparisons happen inside Redis, in lua/lock_*.lua,
 * so a client never deletes or extends a lock that expired and passed to
 * someone else between a check and an action. */
#include "op_lock.h"

#include <string.h>

#include "error.h"

/* Backoff between attempts: the first wait is about BACKOFF_MIN_MS, each
 * one doubles, up to BACKOFF_MAX_MS. Short at first so that a lock held
 * briefly is taken quickly; capped so that a waiter still notices a release
 * within a fraction of a second. */
#define BACKOFF_MIN_MS 2
#define BACKOFF_MAX_MS 128

enum { L_SEND, L_REPLY };

/* The lock key, and for a user lock its fencing counter: both in the
 * bucket of the name, hence one hash slot. */
static void push_keys(cachet_cmds *b, const cachet *c, const cachet_lock *lk,
                      int fence) {
  unsigned bucket = cachet_bucket(lk->name, lk->namelen);
  cachet_cmds_key(b, c, lk->kind, bucket, lk->name, lk->namelen);
  if (fence)
    cachet_cmds_key(b, c, CACHET_KIND_FENCE, bucket, lk->name, lk->namelen);
}

static int send_attempt(cachet_op_lock *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  cachet *c = x->op.c;
  int acquire = x->mode == CACHET_LOCK_ACQUIRE;
  int fence = acquire && x->lk->kind == CACHET_KIND_LOCK;
  cachet_script_id id = acquire ? CACHET_SCRIPT_LOCK_ACQUIRE
                        : x->mode == CACHET_LOCK_EXTEND
                            ? CACHET_SCRIPT_LOCK_EXTEND
                            : CACHET_SCRIPT_LOCK_RELEASE;
  cachet_cmds_script(b, CACHET_ROUTE_KEY, id, fence ? 2 : 1);
  push_keys(b, c, x->lk, fence);
  cachet_cmds_arg(b, x->lk->token, CACHET_LOCK_TOKEN_HEXLEN);
  if (x->mode != CACHET_LOCK_RELEASE)
    cachet_cmds_int(b, x->ttl_ms);
  x->op.state = L_REPLY;
  return cachet_cmds_send(b, out);
}

/* {1, fence}: taken. {0, holder's pttl}: held by someone else. */
static int acquire_reply(cachet_op_lock *x, const cachet_in *in,
                         cachet_out *out) {
  const cachet_res *r = &in->res[0];
  int rc = cachet_res_ok(r);
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  const redisReply *v = r->reply;
  if (v->type != REDIS_REPLY_ARRAY || v->elements != 2 ||
      v->element[0]->type != REDIS_REPLY_INTEGER ||
      v->element[1]->type != REDIS_REPLY_INTEGER)
    return cachet_op_done(out, cachet_res_proto("lock_acquire"));
  int user = x->lk->kind == CACHET_KIND_LOCK;
  if (v->element[0]->integer == 1) {
    x->lk->fence = (uint64_t)v->element[1]->integer;
    if (user)
      CACHET_COUNT(x->op.c, lock_acquisitions, 1);
    return cachet_op_done(out, CACHET_OK);
  }
  int64_t pttl = v->element[1]->integer;
  if (!x->contended) {
    x->contended = 1;
    if (user)
      CACHET_COUNT(x->op.c, lock_contentions, 1);
  }
  if (in->now >= x->deadline)
    return cachet_op_fail(out, CACHET_NOT_ACQUIRED,
                          "lock \"%s\" is held by another owner (waited "
                          "%lld ms)",
                          x->lk->name, (long long)(in->now - x->start));
  /* No point sleeping longer than the lock has to live; the last sleep
   * ends at the deadline and is followed by one more attempt, so a lock
   * that frees up exactly then is still taken. */
  int64_t delay = cachet_jitter_ms(x->backoff);
  if (pttl > 0 && pttl < delay - 1) /* the server's number: no overflow */
    delay = pttl + 1;
  if (delay > x->deadline - in->now)
    delay = x->deadline - in->now;
  if (x->backoff < BACKOFF_MAX_MS)
    x->backoff *= 2;
  x->op.state = L_SEND;
  out->ms = delay;
  return CACHET_DO_SLEEP;
}

/* 1 done, 0 nobody holds it any more, -1 another owner holds it. */
static int owner_reply(cachet_op_lock *x, const cachet_in *in,
                       cachet_out *out) {
  long long v;
  const char *what =
      x->mode == CACHET_LOCK_EXTEND ? "lock_extend" : "lock_release";
  int rc = cachet_res_int(&in->res[0], what, &v);
  if (rc == CACHET_OK && (v < -1 || v > 1))
    rc = cachet_res_proto(what);
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  return cachet_op_done(out, v == 1   ? CACHET_OK
                             : v == 0 ? CACHET_LOCK_EXPIRED
                                      : CACHET_LOCK_NOT_OWNER);
}

static int lock_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_lock *x = (cachet_op_lock *)op;
  if (!x->started) {
    x->started = 1;
    x->start = in->now;
    x->deadline =
        x->wait_ms > INT64_MAX - in->now ? INT64_MAX : in->now + x->wait_ms;
  }
  if (op->state == L_SEND)
    return send_attempt(x, out);
  if (x->mode == CACHET_LOCK_ACQUIRE)
    return acquire_reply(x, in, out);
  return owner_reply(x, in, out);
}

static void lock_free(cachet_op *op) { cachet_cmds_free(&op->cmds); }

static const cachet_op_kind lock_kind = {"lock", lock_step, lock_free, 1};

void cachet_op_lock_init(cachet_op_lock *x, cachet *c, int mode,
                         cachet_lock *lk, int64_t ttl_ms, int64_t wait_ms) {
  cachet_op_begin(&x->op, sizeof *x, &lock_kind, c);
  x->mode = mode;
  x->lk = lk;
  x->ttl_ms = ttl_ms;
  x->wait_ms = wait_ms;
  x->backoff = BACKOFF_MIN_MS;
}
