/* Async locks and get_or_set.
 *
 * The scripts and the protocol are lock.c's and stampede.c's; what changes
 * is how time passes. A waiter never sleeps: the backoff between attempts
 * is a loop timer, with the same jitter, the same caps (the holder's PTTL,
 * the deadline) and one last attempt at the deadline. A get_or_set holder
 * runs the application's async loader and renews the lease with a second
 * loop timer every lease/3 until the loader completes; the loader's own
 * wait is bounded by fetch_wait_ms. The value is written before the lock is
 * released, and the result is delivered after the release, so a waiter
 * that finds the lock free also finds the value. */
#include "async.h"

#include "cachet.h"

#ifdef CACHET_HAVE_LIBEVENT

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"
#include "keys.h"
#include "lock.h"

/* As lock.c and stampede.c. */
#define LOCK_BACKOFF_MIN_MS 2
#define LOCK_BACKOFF_MAX_MS 128
#define DEFAULT_LEASE_MS 3000
#define DEFAULT_FETCH_WAIT_MS 30000
#define WAIT_MIN_MS 4
#define WAIT_MAX_MS 100

static int check_lock_reply(const redisReply *r) {
  return r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
         r->element[0]->type == REDIS_REPLY_INTEGER &&
         r->element[1]->type == REDIS_REPLY_INTEGER;
}

/* ---- lock_acquire ------------------------------------------------------- */

typedef struct lock_op {
  aop op;
  cachet_lock *lk;
  cachet_key lkey, fkey;
  char ttl[24];
  int64_t start, deadline, step;
  int contended;
} lock_op;

static void lock_try(aop *op) {
  lock_op *l = (lock_op *)op;
  const char *args[4] = {l->lkey.buf, l->fkey.buf, l->lk->token, l->ttl};
  size_t lens[4] = {l->lkey.len, l->fkey.len, CACHET_LOCK_TOKEN_HEXLEN,
                    strlen(l->ttl)};
  int rc = cachet_aop_script(op, CACHET_SCRIPT_LOCK_ACQUIRE, 2, 4, args, lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(op, rc);
}

static void lock_reply(aop *op, redisReply *r) {
  lock_op *l = (lock_op *)op;
  cachet *c = op->a->c;
  if (r->type == REDIS_REPLY_ERROR) {
    cachet_aop_server_error(op, r);
    return;
  }
  if (!check_lock_reply(r)) {
    cachet_aop_proto(op, "lock_acquire");
    return;
  }
  if (r->element[0]->integer == 1) {
    l->lk->fence = (uint64_t)r->element[1]->integer;
    CACHET_COUNT(c, lock_acquisitions, 1);
    cachet_aop_finish(op, CACHET_OK);
    return;
  }
  int64_t pttl = r->element[1]->integer;
  if (!l->contended) {
    l->contended = 1;
    CACHET_COUNT(c, lock_contentions, 1);
  }
  int64_t now = cachet_mono_ms();
  if (now >= l->deadline) {
    (void)cachet_fail(CACHET_NOT_ACQUIRED,
                      "lock \"%s\" is held by another owner (waited %lld ms)",
                      l->lk->name, (long long)(now - l->start));
    cachet_aop_finish(op, CACHET_NOT_ACQUIRED);
    return;
  }
  int64_t delay = cachet_jitter_ms(l->step);
  if (pttl > 0 && pttl + 1 < delay)
    delay = pttl + 1;
  if (delay > l->deadline - now)
    delay = l->deadline - now;
  if (l->step < LOCK_BACKOFF_MAX_MS)
    l->step *= 2;
  cachet_aop_timer(op, AOP_TM_SLEEP, delay);
}

static void lock_deliver(aop *op, int rc) {
  lock_op *l = (lock_op *)op;
  cachet_lock *lk = NULL;
  if (rc == CACHET_OK) {
    lk = l->lk; /* handed over */
    l->lk = NULL;
  }
  ((cachet_async_lock_cb)op->cb)(rc, lk, op->ud);
}

static void lock_cleanup(aop *op) {
  lock_op *l = (lock_op *)op;
  cachet_lock_free(l->lk);
  cachet_key_free(&l->lkey);
  cachet_key_free(&l->fkey);
}

static const aop_kind lock_kind = {"lock_acquire", lock_reply,   lock_try,
                                   lock_try,       lock_deliver, NULL,
                                   lock_cleanup};

/* The lock key and, for a user lock, its fencing counter (one bucket). */
static int lock_keys(const cachet *c, const cachet_lock *lk, cachet_key *lkey,
                     cachet_key *fkey) {
  unsigned bucket = cachet_bucket(lk->name, lk->namelen);
  int rc = cachet_key_build(c, lkey, lk->kind, bucket, lk->name, lk->namelen);
  if (rc == CACHET_OK && fkey != NULL)
    rc = cachet_key_build(c, fkey, CACHET_KIND_FENCE, bucket, lk->name,
                          lk->namelen);
  return rc;
}

int cachet_async_lock_acquire(cachet_async *a, const char *name, int64_t ttl_ms,
                              int64_t wait_ms, cachet_async_lock_cb cb,
                              void *ud) {
  cachet_error_clear();
  cachet *c = a->c;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  size_t len = strlen(name);
  if (len == 0)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL, "lock name must not be empty"));
  if (len > c->cfg.max_key_size)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL,
                       "lock name of %zu bytes exceeds max_key_size (%zu)", len,
                       c->cfg.max_key_size));
  if (ttl_ms <= 0)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL,
                       "lock ttl %lld ms: no lock lives without a TTL (it "
                       "must be > 0)",
                       (long long)ttl_ms));
  if (wait_ms < 0)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL,
                       "lock wait %lld ms is negative (0 means try once)",
                       (long long)wait_ms));
  lock_op *l = (lock_op *)cachet_aop_new(a, &lock_kind, sizeof *l, 1, NULL,
                                         (aop_cb)cb, ud);
  if (l == NULL)
    return cachet_result(c, CACHET_ENOMEM);
  int rc = cachet_lock_new(CACHET_KIND_LOCK, name, len, &l->lk);
  if (rc == CACHET_OK)
    rc = lock_keys(c, l->lk, &l->lkey, &l->fkey);
  if (rc != CACHET_OK) {
    cachet_aop_discard(&l->op);
    return cachet_result(c, rc);
  }
  snprintf(l->ttl, sizeof l->ttl, "%lld", (long long)ttl_ms);
  l->start = cachet_mono_ms();
  l->deadline = wait_ms > INT64_MAX - l->start ? INT64_MAX : l->start + wait_ms;
  l->step = LOCK_BACKOFF_MIN_MS;
  cachet_aop_start(&l->op, lock_try);
  return CACHET_OK;
}

/* ---- release / extend --------------------------------------------------- */

typedef struct owner_op {
  aop op;
  cachet_script_id id;
  cachet_key lkey;
  char token[CACHET_LOCK_TOKEN_HEXLEN + 1];
  char ttl[24];
} owner_op;

static void owner_send(aop *op) {
  owner_op *o = (owner_op *)op;
  const char *args[3] = {o->lkey.buf, o->token, o->ttl};
  size_t lens[3] = {o->lkey.len, CACHET_LOCK_TOKEN_HEXLEN, strlen(o->ttl)};
  int nargs = o->id == CACHET_SCRIPT_LOCK_EXTEND ? 3 : 2;
  int rc = cachet_aop_script(op, o->id, 1, nargs, args, lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(op, rc);
}

static void owner_reply(aop *op, redisReply *r) {
  if (r->type == REDIS_REPLY_ERROR) {
    cachet_aop_server_error(op, r);
    return;
  }
  if (r->type != REDIS_REPLY_INTEGER || r->integer < -1 || r->integer > 1) {
    cachet_aop_proto(op, op->k->name);
    return;
  }
  /* Outcomes, not errors: no detail from an earlier call may linger. */
  cachet_error_clear();
  cachet_aop_finish(op, r->integer == 1   ? CACHET_OK
                        : r->integer == 0 ? CACHET_LOCK_EXPIRED
                                          : CACHET_LOCK_NOT_OWNER);
}

static void owner_deliver(aop *op, int rc) {
  ((cachet_async_status_cb)op->cb)(rc, op->ud);
}

static void owner_cleanup(aop *op) { cachet_key_free(&((owner_op *)op)->lkey); }

static const aop_kind release_kind = {"lock_release", owner_reply,   owner_send,
                                      NULL,           owner_deliver, NULL,
                                      owner_cleanup};
static const aop_kind extend_kind = {"lock_extend", owner_reply,   owner_send,
                                     NULL,          owner_deliver, NULL,
                                     owner_cleanup};

static int start_owner(cachet_async *a, const cachet_lock *lock,
                       cachet_script_id id, int64_t ttl_ms,
                       cachet_async_status_cb cb, void *ud) {
  cachet *c = a->c;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  owner_op *o = (owner_op *)cachet_aop_new(
      a, id == CACHET_SCRIPT_LOCK_EXTEND ? &extend_kind : &release_kind,
      sizeof *o, 1, NULL, (aop_cb)cb, ud);
  if (o == NULL)
    return cachet_result(c, CACHET_ENOMEM);
  o->id = id;
  memcpy(o->token, lock->token, sizeof o->token);
  snprintf(o->ttl, sizeof o->ttl, "%lld", (long long)ttl_ms);
  int rc = lock_keys(c, lock, &o->lkey, NULL);
  if (rc != CACHET_OK) {
    cachet_aop_discard(&o->op);
    return cachet_result(c, rc);
  }
  cachet_aop_start(&o->op, owner_send);
  return CACHET_OK;
}

int cachet_async_lock_release(cachet_async *a, const cachet_lock *lock,
                              cachet_async_status_cb cb, void *ud) {
  cachet_error_clear();
  return start_owner(a, lock, CACHET_SCRIPT_LOCK_RELEASE, 0, cb, ud);
}

int cachet_async_lock_extend(cachet_async *a, const cachet_lock *lock,
                             int64_t ttl_ms, cachet_async_status_cb cb,
                             void *ud) {
  cachet_error_clear();
  if (ttl_ms <= 0)
    return cachet_result(
        a->c, cachet_fail(CACHET_EINVAL,
                          "lock ttl %lld ms: no lock lives without a TTL (it "
                          "must be > 0)",
                          (long long)ttl_ms));
  return start_owner(a, lock, CACHET_SCRIPT_LOCK_EXTEND, ttl_ms, cb, ud);
}

/* ---- get_or_set --------------------------------------------------------- */

enum {
  G_GET,     /* the first read */
  G_TRY,     /* an attempt at the stampede lock */
  G_POLL,    /* a waiter's read */
  G_RECHECK, /* the holder's read before loading */
  G_LOADING, /* the loader runs; replies are lease renewals */
  G_WRITING, /* a child operation writes the value */
  G_UNLOCK   /* the release, after which the result is delivered */
};

typedef struct gos_op gos_op;

struct cachet_async_load {
  gos_op *g; /* NULL once the get_or_set no longer waits for it */
};

struct gos_op {
  aop op;
  int state;
  cachet_async_loader_fn loader;
  void *key;
  size_t keylen;
  cachet_key vk;
  char **tags;
  size_t ntags;
  int64_t ttl_ms, lease, wait, deadline, step;
  char lease_s[24];
  int waited;
  cachet_lock *lk; /* the stampede lock (its key is built from the name) */
  cachet_key sk;   /* <prefix>{bb}s:<key> */
  cachet_async_load *load;
  int renew_inflight;
  int lost; /* LOCK_EXPIRED / LOCK_NOT_OWNER seen by a renewal */
  void *val;
  size_t len;
  int result; /* delivered after the release */
  char *detail;
};

static struct event *renew_event(gos_op *g) {
  return cachet_aop_event(&g->op, 1);
}

static void gos_get(gos_op *g, int state) {
  g->state = state;
  const char *argv[2] = {"GET", g->vk.buf};
  size_t lens[2] = {3, g->vk.len};
  int rc = cachet_aop_send(&g->op, 2, argv, lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(&g->op, rc);
}

static void gos_try(gos_op *g) {
  g->state = G_TRY;
  const char *args[3] = {g->sk.buf, g->lk->token, g->lease_s};
  size_t lens[3] = {g->sk.len, CACHET_LOCK_TOKEN_HEXLEN, strlen(g->lease_s)};
  int rc =
      cachet_aop_script(&g->op, CACHET_SCRIPT_LOCK_ACQUIRE, 1, 3, args, lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(&g->op, rc);
}

static void gos_renew_send(gos_op *g) {
  const char *args[3] = {g->sk.buf, g->lk->token, g->lease_s};
  size_t lens[3] = {g->sk.len, CACHET_LOCK_TOKEN_HEXLEN, strlen(g->lease_s)};
  /* A renewal that cannot be sent is not a lost lease: the next tick
   * tries again, and the loader's deadline bounds the whole. */
  if (cachet_aop_script(&g->op, CACHET_SCRIPT_LOCK_EXTEND, 1, 3, args, lens) ==
      CACHET_OK)
    g->renew_inflight++;
}

static void gos_renew_arm(gos_op *g) {
  int64_t period = g->lease / 3 > 0 ? g->lease / 3 : 1;
  struct timeval tv = {(time_t)(period / 1000),
                       (suseconds_t)(period % 1000) * 1000};
  event_add(renew_event(g), &tv);
}

static void gos_renew_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  gos_op *g = arg;
  if (g->op.done || g->state != G_LOADING || g->lost)
    return;
  cachet_aop_hold(&g->op);
  if (g->renew_inflight == 0)
    gos_renew_send(g);
  gos_renew_arm(g);
  cachet_aop_unhold(&g->op);
}

/* Release the stampede lock, then deliver `rc` (its detail is the calling
 * thread's now, kept across the release). */
static void gos_release_then_finish(gos_op *g, int rc) {
  free(g->detail);
  g->detail = strdup(cachet_last_error());
  g->result = rc;
  g->state = G_UNLOCK;
  event_del(renew_event(g));
  const char *args[2] = {g->sk.buf, g->lk->token};
  size_t lens[2] = {g->sk.len, CACHET_LOCK_TOKEN_HEXLEN};
  if (cachet_aop_script(&g->op, CACHET_SCRIPT_LOCK_RELEASE, 1, 2, args, lens) !=
      CACHET_OK) {
    /* The lock then expires after its lease; the result stands. */
    (void)cachet_fail(rc, "%s", g->detail ? g->detail : "");
    cachet_aop_finish(&g->op, rc);
  }
}

static void gos_child_done(aop *parent, aop *child, int rc) {
  (void)child;
  gos_op *g = (gos_op *)parent;
  if (rc < 0)
    (void)cachet_result(parent->a->c, rc);
  if (rc < 0) {
    /* The value is not cached: do not hand it out as if it were. */
    free(g->val);
    g->val = NULL;
    parent->counted = 1;
  }
  gos_release_then_finish(g, rc);
}

/* The loader's value: check it, then write it (with the tags) as a child
 * operation; the lock is released once the write is done. */
static void gos_loaded(gos_op *g, int status, const void *val, size_t len,
                       int64_t ttl) {
  cachet *c = g->op.a->c;
  event_del(renew_event(g));
  event_del(g->op.ev);
  g->op.tmode = AOP_TM_NONE;
  if (g->lost)
    cachet_log(c, CACHET_LOG_WARN,
               "get_or_set: the stampede lock %s while the loader ran "
               "(lease %lld ms); another caller may have loaded too",
               g->lost == CACHET_LOCK_EXPIRED ? "expired"
                                              : "passed to another owner",
               (long long)g->lease);
  int rc = CACHET_OK;
  if (status != 0)
    rc = cachet_fail(CACHET_ELOADER, "loader returned %d; nothing was cached",
                     status);
  else if (val == NULL && len > 0)
    rc = cachet_fail(CACHET_ELOADER,
                     "loader returned a NULL value of %zu bytes; nothing was "
                     "cached",
                     len);
  else if (len > c->cfg.max_value_size)
    rc = cachet_fail(CACHET_ELOADER,
                     "loader returned %zu bytes, above max_value_size (%zu); "
                     "nothing was cached",
                     len, c->cfg.max_value_size);
  else if (ttl < 0 || (g->ttl_ms > 0 && (ttl == 0 || ttl > g->ttl_ms)))
    rc = cachet_fail(CACHET_ELOADER,
                     "loader set ttl %lld ms; it may only lower the caller's "
                     "%lld ms; nothing was cached",
                     (long long)ttl, (long long)g->ttl_ms);
  if (rc == CACHET_OK) {
    g->val = malloc(len + 1);
    if (g->val == NULL)
      rc = cachet_fail(CACHET_ENOMEM, "out of memory keeping the value");
  }
  if (rc != CACHET_OK) {
    gos_release_then_finish(g, rc);
    return;
  }
  if (len > 0)
    memcpy(g->val, val, len);
  ((char *)g->val)[len] = '\0';
  g->len = len;
  g->state = G_WRITING;
  aop *child = cachet_aop_entry_new(
      g->op.a, g->ntags == 0 ? CACHET_AOP_PLAIN : CACHET_AOP_SET, g->key,
      g->keylen, g->val, len, ttl, (const char *const *)g->tags, g->ntags, NULL,
      NULL, &rc);
  if (child == NULL) {
    free(g->val);
    g->val = NULL;
    gos_release_then_finish(g, rc);
    return;
  }
  cachet_aop_adopt(&g->op, child, gos_child_done);
  cachet_aop_start(child, cachet_aop_entry_step);
}

void cachet_async_load_done(cachet_async_load *load, int status,
                            const void *val, size_t len, int64_t ttl_ms) {
  gos_op *g = load->g;
  free(load);
  if (g == NULL)
    return; /* timed out or closed: too late */
  g->load = NULL;
  cachet_aop_hold(&g->op);
  gos_loaded(g, status, val, len, ttl_ms);
  cachet_aop_unhold(&g->op);
}

static void gos_load(gos_op *g) {
  cachet_async_load *load = malloc(sizeof *load);
  if (load == NULL) {
    (void)cachet_fail(CACHET_ENOMEM, "out of memory starting the loader");
    gos_release_then_finish(g, CACHET_ENOMEM);
    return;
  }
  load->g = g;
  g->load = load;
  g->state = G_LOADING;
  cachet_aop_timer(&g->op, AOP_TM_LOADER, g->wait);
  gos_renew_arm(g);
  g->loader(load, g->key, g->keylen, g->ttl_ms, g->op.ud);
}

static void gos_reply(aop *op, redisReply *r) {
  gos_op *g = (gos_op *)op;
  cachet *c = op->a->c;
  int rc;
  switch (g->state) {
  case G_GET:
  case G_POLL:
  case G_RECHECK:
    rc = cachet_async_value_reply(c, r, g->vk.buf, g->vk.len, g->state == G_GET,
                                  &g->val, &g->len);
    if (rc == CACHET_MISS) {
      if (g->state == G_RECHECK)
        gos_load(g);
      else
        gos_try(g);
    } else if (g->state == G_RECHECK) {
      gos_release_then_finish(g, rc);
    } else {
      cachet_aop_finish(op, rc);
    }
    return;
  case G_TRY:
    if (r->type == REDIS_REPLY_ERROR) {
      cachet_aop_server_error(op, r);
      return;
    }
    if (!check_lock_reply(r)) {
      cachet_aop_proto(op, "lock_acquire");
      return;
    }
    if (r->element[0]->integer == 1) {
      /* Ours. Someone may have written the value just before. */
      gos_get(g, G_RECHECK);
      return;
    }
    if (!g->waited) {
      g->waited = 1;
      CACHET_COUNT(c, stampede_waits, 1);
    }
    {
      int64_t now = cachet_mono_ms();
      if (now >= g->deadline) {
        (void)cachet_fail(CACHET_ETIMEDOUT,
                          "get_or_set: another caller's loader of this key "
                          "did not finish within fetch_wait_ms (%lld ms); "
                          "the stampede lock is still held",
                          (long long)g->wait);
        cachet_aop_finish(op, CACHET_ETIMEDOUT);
        return;
      }
      int64_t delay = cachet_jitter_ms(g->step);
      if (delay > g->deadline - now)
        delay = g->deadline - now;
      if (g->step < WAIT_MAX_MS)
        g->step *= 2;
      cachet_aop_timer(op, AOP_TM_SLEEP, delay);
    }
    return;
  case G_LOADING:
    /* A lease renewal. An error is not a lost lease: the next tick tries
     * again. */
    if (g->renew_inflight > 0)
      g->renew_inflight--;
    if (r->type == REDIS_REPLY_INTEGER && r->integer != 1) {
      g->lost = r->integer == 0 ? CACHET_LOCK_EXPIRED : CACHET_LOCK_NOT_OWNER;
      event_del(renew_event(g));
    }
    return;
  case G_WRITING:
    return; /* a renewal answered after the loader completed */
  case G_UNLOCK:
    if (op->pending > 0)
      return; /* a late renewal; the release is the last reply */
    (void)cachet_fail(g->result, "%s", g->detail ? g->detail : "");
    if (g->result == CACHET_OK || g->result == CACHET_MISS)
      cachet_error_clear();
    cachet_aop_finish(op, g->result);
    return;
  }
}

static void gos_resend(aop *op) {
  gos_op *g = (gos_op *)op;
  switch (g->state) {
  case G_TRY:
    gos_try(g);
    break;
  case G_LOADING:
    if (g->renew_inflight > 0)
      g->renew_inflight--;
    gos_renew_send(g);
    break;
  case G_UNLOCK: {
    const char *args[2] = {g->sk.buf, g->lk->token};
    size_t lens[2] = {g->sk.len, CACHET_LOCK_TOKEN_HEXLEN};
    if (cachet_aop_script(op, CACHET_SCRIPT_LOCK_RELEASE, 1, 2, args, lens) !=
        CACHET_OK) {
      (void)cachet_fail(g->result, "%s", g->detail ? g->detail : "");
      cachet_aop_finish(op, g->result);
    }
    break;
  }
  default:
    break;
  }
}

static void gos_timer(aop *op) {
  gos_op *g = (gos_op *)op;
  if (g->state == G_LOADING) {
    (void)cachet_fail(CACHET_ETIMEDOUT,
                      "get_or_set: the loader did not complete within "
                      "fetch_wait_ms (%lld ms); nothing was cached",
                      (long long)g->wait);
    if (g->load != NULL) {
      g->load->g = NULL;
      g->load = NULL;
    }
    gos_release_then_finish(g, CACHET_ETIMEDOUT);
    return;
  }
  /* A waiter's backoff ended: look again. */
  gos_get(g, G_POLL);
}

static void gos_stop(aop *op) {
  gos_op *g = (gos_op *)op;
  event_del(renew_event(g));
  if (g->load != NULL) {
    g->load->g = NULL; /* a late load_done then only frees it */
    g->load = NULL;
  }
}

static void gos_deliver(aop *op, int rc) {
  gos_op *g = (gos_op *)op;
  ((cachet_async_value_cb)op->cb)(rc, rc == CACHET_OK ? g->val : NULL,
                                  rc == CACHET_OK ? g->len : 0, op->ud);
}

static void gos_cleanup(aop *op) {
  gos_op *g = (gos_op *)op;
  event_del(renew_event(g));
  for (size_t i = 0; i < g->ntags; i++)
    free(g->tags[i]);
  free(g->tags);
  free(g->key);
  free(g->val);
  free(g->detail);
  cachet_lock_free(g->lk);
  cachet_key_free(&g->vk);
  cachet_key_free(&g->sk);
}

static const aop_kind gos_kind = {"get_or_set", gos_reply,   gos_resend,
                                  gos_timer,    gos_deliver, gos_stop,
                                  gos_cleanup};

static void gos_start(aop *op) { gos_get((gos_op *)op, G_GET); }

int cachet_async_get_or_set(cachet_async *a, const void *key, size_t keylen,
                            cachet_async_loader_fn loader, int64_t ttl_ms,
                            const char *const *tags, size_t ntags,
                            cachet_async_value_cb cb, void *ud) {
  cachet_error_clear();
  cachet *c = a->c;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  int rc;
  if ((rc = cachet_check_key(c, key, keylen)) ||
      (rc = cachet_check_value(c, 0, ttl_ms)) ||
      (rc = cachet_check_tags(c, tags, ntags)))
    return cachet_result(c, rc);
  gos_op *g = (gos_op *)cachet_aop_new(a, &gos_kind, sizeof *g, 2,
                                       gos_renew_tick, (aop_cb)cb, ud);
  if (g == NULL)
    return cachet_result(c, CACHET_ENOMEM);
  g->loader = loader;
  g->keylen = keylen;
  g->ttl_ms = ttl_ms;
  g->lease = c->cfg.lock_lease_ms > 0 ? c->cfg.lock_lease_ms : DEFAULT_LEASE_MS;
  g->wait =
      c->cfg.fetch_wait_ms > 0 ? c->cfg.fetch_wait_ms : DEFAULT_FETCH_WAIT_MS;
  g->deadline = cachet_mono_ms() + g->wait;
  g->step = WAIT_MIN_MS;
  snprintf(g->lease_s, sizeof g->lease_s, "%lld", (long long)g->lease);
  g->key = malloc(keylen);
  g->tags = calloc(ntags ? ntags : 1, sizeof *g->tags);
  rc = g->key == NULL || g->tags == NULL
           ? cachet_fail(CACHET_ENOMEM, "out of memory")
           : CACHET_OK;
  for (size_t i = 0; rc == CACHET_OK && i < ntags; i++) {
    g->tags[i] = strdup(tags[i]);
    if (g->tags[i] == NULL)
      rc = cachet_fail(CACHET_ENOMEM, "out of memory");
    else
      g->ntags = i + 1;
  }
  if (rc == CACHET_OK) {
    memcpy(g->key, key, keylen);
    unsigned bucket = cachet_bucket(key, keylen);
    if ((rc = cachet_key_build(c, &g->vk, CACHET_KIND_VALUE, bucket, key,
                               keylen)) == CACHET_OK &&
        (rc = cachet_lock_new(CACHET_KIND_STAMPEDE, key, keylen, &g->lk)) ==
            CACHET_OK)
      rc = cachet_key_build(c, &g->sk, CACHET_KIND_STAMPEDE, bucket, key,
                            keylen);
  }
  if (rc != CACHET_OK) {
    cachet_aop_discard(&g->op);
    return cachet_result(c, rc);
  }
  cachet_aop_start(&g->op, gos_start);
  return CACHET_OK;
}

#endif
