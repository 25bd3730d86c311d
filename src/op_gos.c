/* get_or_set as a machine (op_gos.h).
 *
 * A hit is one GET. On a miss the caller tries to take the entry's stampede
 * lock (<prefix>{bb}s:<key>, the bucket of the value key) for a short
 * lease. The caller that gets it reads once more (another process may have
 * filled the entry between our GET and our lock), then the driver runs the
 * loader (LOAD) while the lease is renewed every third of it. The value is
 * written with its tags before the lock is released, so a waiter that finds
 * the lock free also finds the value. The others poll the value and the
 * lock with jittered backoff; when the lock is free (the loader failed and
 * released it, or its holder died and the lease ran out) one of them takes
 * it over and loads. Their whole wait is bounded by fetch_wait_ms.
 *
 * There is no early refresh: an entry is loaded only once it is missing. */
#include "op_gos.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"

/* Waiters' backoff between polls: it starts short, so a fast loader is seen
 * quickly, and doubles up to a cap that keeps a takeover prompt without
 * turning many waiters into a load on Redis. */
#define WAIT_MIN_MS 4
#define WAIT_MAX_MS 100

enum {
  G_START,
  G_GET,
  G_TRY,
  G_POLL_SEND,
  G_POLL,
  G_GET2,
  G_LOAD,
  G_WRITE,
  G_RELEASE
};

static int send_get(cachet_op_gos *x, int state, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  cachet_cmds_key1(b, "GET", x->vk.buf, x->vk.len);
  x->op.state = state;
  return cachet_cmds_send(b, out);
}

/* Check what the loader handed back before anything is written. */
static int check_loaded(const cachet_op_gos *x, const cachet_load *ld) {
  const cachet *c = x->op.c;
  if (ld->val == NULL && ld->len > 0)
    return cachet_fail(CACHET_ELOADER,
                       "loader returned a NULL value of %zu bytes; nothing "
                       "was cached",
                       ld->len);
  if (ld->len > c->cfg.max_value_size)
    return cachet_fail(CACHET_ELOADER,
                       "loader returned %zu bytes, above max_value_size "
                       "(%zu); nothing was cached",
                       ld->len, c->cfg.max_value_size);
  /* The loader may only lower the TTL: a positive one no higher than the
   * caller's, or anything >= 0 when the caller asked for no expiry. */
  int64_t ttl = ld->ttl_ms;
  if (ttl < 0 || (x->ttl_ms > 0 && (ttl == 0 || ttl > x->ttl_ms)))
    return cachet_fail(CACHET_ELOADER,
                       "loader set ttl %lld ms; it may only lower the "
                       "caller's %lld ms; nothing was cached",
                       (long long)ttl, (long long)x->ttl_ms);
  return CACHET_OK;
}

/* Release the lock, then finish with `rc` and the detail it had. */
static void release(cachet_op_gos *x, int rc) {
  x->result = rc;
  snprintf(x->detail, sizeof x->detail, "%s", cachet_last_error());
  cachet_op_lock_init(&x->lock, x->op.c, CACHET_LOCK_RELEASE, x->lk, 0, 0);
  x->op.state = G_RELEASE;
}

static void try_lock(cachet_op_gos *x) {
  cachet_op_lock_init(&x->lock, x->op.c, CACHET_LOCK_ACQUIRE, x->lk,
                      x->lease_ms, 0);
  x->op.state = G_TRY;
}

/* The loader's outcome: write the value, or say why not. */
static void loaded(cachet_op_gos *x) {
  cachet_load *ld = &x->load;
  cachet *c = x->op.c;
  if (ld->start_failed) {
    release(x, cachet_fail(CACHET_ENOMEM, "cannot start the lease renewal"));
    return;
  }
  if (ld->timed_out) {
    release(x, cachet_fail(CACHET_ETIMEDOUT,
                           "get_or_set: the loader did not finish within "
                           "fetch_wait_ms (%lld ms); nothing was cached",
                           (long long)x->wait_ms));
    return;
  }
  if (ld->lost != 0)
    cachet_log(c, CACHET_LOG_WARN,
               "get_or_set: the stampede lock %s while the loader ran "
               "(lease %lld ms); another caller may have loaded too",
               ld->lost == CACHET_LOCK_EXPIRED ? "expired"
                                               : "passed to another owner",
               (long long)x->lease_ms);
  if (ld->status != 0) {
    /* Released at once, so that a waiter takes over without waiting out
     * the lease; the loader keeps ownership of anything in *val. */
    ld->val = NULL;
    release(x,
            cachet_fail(CACHET_ELOADER,
                        "loader returned %d; nothing was cached", ld->status));
    return;
  }
  int rc = check_loaded(x, ld);
  if (rc == CACHET_OK)
    rc = cachet_op_entry_write(
        &x->write, c, x->key, x->keylen, ld->val != NULL ? ld->val : "",
        ld->len, ld->ttl_ms, (const char *const *)x->tags, x->ntags);
  if (rc != CACHET_OK) {
    free(ld->val);
    ld->val = NULL;
    release(x, rc);
    return;
  }
  x->op.state = G_WRITE;
}

static int gos_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_gos *x = (cachet_op_gos *)op;
  cachet_in cur = *in;
  for (;;) {
    int what, rc;
    switch (op->state) {
    case G_START:
      x->deadline = in->now + x->wait_ms;
      if (op->c->near != NULL &&
          (rc = cachet_near_lookup(op->c, &x->vk, &x->val, &x->len,
                                   &x->ticket)) != CACHET_MISS)
        return cachet_op_done(out, rc);
      return send_get(x, G_GET, out);
    case G_GET:
    case G_POLL:
    case G_GET2:
      /* A waiter's polls are one logical miss, not many. */
      rc = cachet_res_value(op->c, &cur.res[0], x->vk.buf, x->vk.len,
                            op->state == G_GET, &x->val, &x->len,
                            &x->expires_ms);
      /* Only the first GET fills: a loaded value is written, and its
       * write drops the copy anyway. */
      cachet_near_settle(op->c, &x->vk, &x->ticket, rc, x->val, x->len,
                         x->expires_ms);
      if (rc == CACHET_MISS && op->state == G_GET2) {
        cachet_load *ld = &x->load;
        *ld = (cachet_load){.key = x->key,
                            .keylen = x->keylen,
                            .ttl_ms = x->ttl_ms,
                            .lock = x->lk,
                            .lease_ms = x->lease_ms,
                            .fn = ld->fn,
                            .afn = ld->afn,
                            .ud = ld->ud,
                            .wait_ms = x->wait_ms};
        op->state = G_LOAD;
        out->load = &x->load;
        return CACHET_DO_LOAD;
      }
      if (op->state == G_GET2) { /* a hit or an error: let the lock go */
        release(x, rc);
        break;
      }
      if (rc != CACHET_MISS)
        return cachet_op_done(out, rc);
      try_lock(x);
      break;
    case G_TRY:
      if ((what = x->lock.op.k->step(&x->lock.op, &cur, out)) != CACHET_DO_DONE)
        return what;
      rc = out->status;
      x->lock.op.k->free(&x->lock.op);
      if (rc == CACHET_OK)
        return send_get(x, G_GET2, out);
      if (rc != CACHET_NOT_ACQUIRED)
        return cachet_op_done(out, rc);
      if (!x->waited) {
        x->waited = 1;
        CACHET_COUNT(op->c, stampede_waits, 1);
      }
      if (in->now >= x->deadline)
        return cachet_op_fail(out, CACHET_ETIMEDOUT,
                              "get_or_set: another caller's loader of this "
                              "key did not finish within fetch_wait_ms "
                              "(%lld ms); the stampede lock is still held",
                              (long long)x->wait_ms);
      out->ms = cachet_jitter_ms(x->backoff);
      if (out->ms > x->deadline - in->now)
        out->ms = x->deadline - in->now;
      if (x->backoff < WAIT_MAX_MS)
        x->backoff *= 2;
      op->state = G_POLL_SEND;
      return CACHET_DO_SLEEP;
    case G_POLL_SEND:
      return send_get(x, G_POLL, out);
    case G_LOAD:
      loaded(x);
      break;
    case G_WRITE:
      if ((what = x->write.op.k->step(&x->write.op, &cur, out)) !=
          CACHET_DO_DONE)
        return what;
      rc = out->status;
      x->write.op.k->free(&x->write.op);
      if (rc == CACHET_OK) {
        /* Hand the loader's own buffer on, grown by the NUL a get adds. */
        char *v = realloc(x->load.val, x->load.len + 1);
        if (v == NULL) {
          rc = cachet_fail(CACHET_ENOMEM, "out of memory returning the value");
        } else {
          v[x->load.len] = '\0';
          x->val = v;
          x->len = x->load.len;
          x->load.val = NULL;
        }
      }
      release(x, rc);
      break;
    default: /* G_RELEASE: its outcome is not the caller's result */
      if ((what = x->lock.op.k->step(&x->lock.op, &cur, out)) != CACHET_DO_DONE)
        return what;
      x->lock.op.k->free(&x->lock.op);
      if (x->result < 0)
        (void)cachet_fail(x->result, "%s", x->detail);
      else
        cachet_error_clear();
      return cachet_op_done(out, x->result);
    }
    /* A child starts afresh: it has not sent anything yet. */
    cur.res = NULL;
    cur.n = 0;
  }
}

static void gos_free(cachet_op *op) {
  cachet_op_gos *x = (cachet_op_gos *)op;
  cachet_near_settle(op->c, &x->vk, &x->ticket, CACHET_ECONN, NULL, 0, 0);
  for (size_t i = 0; i < x->ntags; i++)
    free(x->tags[i]);
  free(x->tags);
  free(x->key);
  free(x->val);
  free(x->load.val);
  cachet_key_free(&x->vk);
  cachet_lock_free(x->lk);
  cachet_cmds_free(&op->cmds);
  memset(x, 0, sizeof *x);
}

static const cachet_op_kind gos_kind = {"get_or_set", gos_step, gos_free, 0};

#define DEFAULT_LEASE_MS 3000
#define DEFAULT_FETCH_WAIT_MS 30000

int cachet_op_gos_init(cachet_op_gos *x, cachet *c, const void *key,
                       size_t keylen, cachet_loader_fn fn, void *ud,
                       int64_t ttl_ms, const char *const *tags, size_t ntags) {
  cachet_op_begin(&x->op, sizeof *x, &gos_kind, c);
  int rc;
  if ((rc = cachet_check_key(c, key, keylen)) ||
      (rc = cachet_check_value(c, 0, ttl_ms)) ||
      (rc = cachet_check_tags(c, tags, ntags)))
    return rc;
  x->ttl_ms = ttl_ms;
  x->lease_ms =
      c->cfg.lock_lease_ms > 0 ? c->cfg.lock_lease_ms : DEFAULT_LEASE_MS;
  x->wait_ms =
      c->cfg.fetch_wait_ms > 0 ? c->cfg.fetch_wait_ms : DEFAULT_FETCH_WAIT_MS;
  x->backoff = WAIT_MIN_MS;
  x->load.fn = fn;
  x->load.ud = ud;
  rc = cachet_lock_new(CACHET_KIND_STAMPEDE, key, keylen, &x->lk);
  if (rc == CACHET_OK)
    rc = cachet_key_build(c, &x->vk, CACHET_KIND_VALUE,
                          cachet_bucket(key, keylen), key, keylen);
  if (rc == CACHET_OK &&
      ((x->key = malloc(keylen > 0 ? keylen : 1)) == NULL ||
       (ntags > 0 && (x->tags = calloc(ntags, sizeof *x->tags)) == NULL)))
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  if (rc == CACHET_OK) {
    memcpy(x->key, key, keylen);
    x->keylen = keylen;
    for (; x->ntags < ntags; x->ntags++)
      if ((x->tags[x->ntags] = strdup(tags[x->ntags])) == NULL) {
        rc = cachet_fail(CACHET_ENOMEM, "out of memory");
        break;
      }
  }
  if (rc != CACHET_OK)
    gos_free(&x->op);
  return rc;
}
