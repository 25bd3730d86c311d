/* Locks: acquire with a deadline, release and extend by token, fencing.
 *
 * A lock is `SET key token NX PX ttl` in lua/lock_acquire.lua, which also
 * INCRs the name's fencing counter in the same step. The token is 128 random
 * bits (randombytes_buf), kept in Redis as 32 lowercase hex digits; release
 * and extend compare it inside Redis, so a client never deletes or extends a
 * lock that expired and passed to someone else between a check and an
 * action. Waiting is a loop of attempts with jittered exponential backoff,
 * bounded by a monotonic deadline it never sleeps past. */
#include "lock.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "error.h"
#include "keys.h"
#include "script.h"
#include "sodium_once.h"

/* Backoff between attempts: the first wait is about BACKOFF_MIN_MS, each
 * one doubles, up to BACKOFF_MAX_MS. Short at first so that a lock held
 * briefly is taken quickly; capped so that a waiter still notices a release
 * within a fraction of a second. */
#define BACKOFF_MIN_MS 2
#define BACKOFF_MAX_MS 128

int cachet_lock_new(char kind, const void *name, size_t namelen,
                    cachet_lock **out) {
  *out = NULL;
  int rc = cachet_sodium_init();
  if (rc != CACHET_OK)
    return rc;
  if (namelen > SIZE_MAX - sizeof(cachet_lock) - 1)
    return cachet_fail(CACHET_EINVAL, "lock name too long");
  cachet_lock *lk = malloc(sizeof *lk + namelen + 1);
  if (lk == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a lock handle");
  lk->kind = kind;
  lk->fence = 0;
  unsigned char raw[CACHET_LOCK_TOKEN_HEXLEN / 2];
  randombytes_buf(raw, sizeof raw);
  sodium_bin2hex(lk->token, sizeof lk->token, raw, sizeof raw);
  lk->namelen = namelen;
  if (namelen > 0)
    memcpy(lk->name, name, namelen);
  lk->name[namelen] = '\0';
  *out = lk;
  return CACHET_OK;
}

void cachet_lock_free(cachet_lock *lock) {
  if (lock == NULL)
    return;
  /* The token is not a secret in the cryptographic sense, but whoever holds
   * it can release someone else's lock: do not leave it in freed memory. */
  sodium_memzero(lock->token, sizeof lock->token);
  free(lock);
}

int64_t cachet_jitter_ms(int64_t step) {
  if (step < 2)
    return 1;
  if (step > (int64_t)UINT32_MAX)
    step = (int64_t)UINT32_MAX;
  int64_t half = step / 2;
  return half + (int64_t)randombytes_uniform((uint32_t)(step - half + 1));
}

void cachet_sleep_until(int64_t ms, int64_t deadline_ms) {
  int64_t now = cachet_mono_ms();
  int64_t until = ms > deadline_ms - now ? deadline_ms : now + ms;
  while (now < until) {
    int64_t left = until - now;
    struct timespec ts = {(time_t)(left / 1000),
                          (long)(left % 1000) * 1000000L};
    if (nanosleep(&ts, NULL) == 0)
      break;
    if (errno != EINTR)
      break;
    now = cachet_mono_ms();
  }
}

/* The lock key (and, for a user lock, its fencing counter) of `lk`. Both
 * are in the bucket of the name, hence one hash slot. */
static int lock_keys(const cachet *c, const cachet_lock *lk, cachet_key *lkey,
                     cachet_key *fkey) {
  unsigned bucket = cachet_bucket(lk->name, lk->namelen);
  int rc = cachet_key_build(c, lkey, lk->kind, bucket, lk->name, lk->namelen);
  if (rc != CACHET_OK || fkey == NULL)
    return rc;
  rc = cachet_key_build(c, fkey, CACHET_KIND_FENCE, bucket, lk->name,
                        lk->namelen);
  if (rc != CACHET_OK)
    cachet_key_free(lkey);
  return rc;
}

int cachet_lock_try(cachet *c, cachet_lock *lk, int64_t ttl_ms,
                    int64_t *holder_pttl) {
  cachet_key lkey = {0}, fkey = {0};
  int fenced = lk->kind == CACHET_KIND_LOCK;
  if (holder_pttl != NULL)
    *holder_pttl = 0;
  int rc = lock_keys(c, lk, &lkey, fenced ? &fkey : NULL);
  if (rc != CACHET_OK)
    return rc;
  cachet_conn *cn;
  rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK)
    goto done;

  char ttl[24];
  int ttll = snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  const char *args[4];
  size_t lens[4];
  int n = 0;
  args[n] = lkey.buf;
  lens[n++] = lkey.len;
  if (fenced) {
    args[n] = fkey.buf;
    lens[n++] = fkey.len;
  }
  int nkeys = n;
  args[n] = lk->token;
  lens[n++] = CACHET_LOCK_TOKEN_HEXLEN;
  args[n] = ttl;
  lens[n++] = (size_t)ttll;

  redisReply *r = NULL;
  rc = cachet_script_run(c, cn, CACHET_SCRIPT_LOCK_ACQUIRE, nkeys, n, args,
                         lens, &r);
  if (rc == CACHET_OK) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER) {
      cachet_conn_break(cn);
      rc = cachet_fail(CACHET_EPROTO, "lock_acquire: unexpected reply");
    } else if (r->element[0]->integer == 1) {
      lk->fence = (uint64_t)r->element[1]->integer;
    } else {
      if (holder_pttl != NULL)
        *holder_pttl = r->element[1]->integer;
      rc = CACHET_NOT_ACQUIRED;
    }
    freeReplyObject(r);
  }
  cachet_conn_release(c, cn);
done:
  cachet_key_free(&lkey);
  cachet_key_free(&fkey);
  return rc;
}

/* Run lock_release or lock_extend and map its 1 / 0 / -1. */
static int owner_op(cachet *c, const cachet_lock *lk, cachet_script_id id,
                    int64_t ttl_ms) {
  cachet_key lkey = {0};
  int rc = lock_keys(c, lk, &lkey, NULL);
  if (rc != CACHET_OK)
    return rc;
  cachet_conn *cn;
  rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK) {
    cachet_key_free(&lkey);
    return rc;
  }
  char ttl[24];
  int ttll = snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  const char *args[3] = {lkey.buf, lk->token, ttl};
  size_t lens[3] = {lkey.len, CACHET_LOCK_TOKEN_HEXLEN, (size_t)ttll};
  int nargs = id == CACHET_SCRIPT_LOCK_EXTEND ? 3 : 2;
  redisReply *r = NULL;
  rc = cachet_script_run(c, cn, id, 1, nargs, args, lens, &r);
  if (rc == CACHET_OK) {
    if (r->type != REDIS_REPLY_INTEGER || r->integer < -1 || r->integer > 1) {
      cachet_conn_break(cn);
      rc = cachet_fail(CACHET_EPROTO, "%s: unexpected reply",
                       cachet_scripts[id].name);
    } else if (r->integer == 1) {
      rc = CACHET_OK;
    } else if (r->integer == 0) {
      rc = CACHET_LOCK_EXPIRED;
    } else {
      rc = CACHET_LOCK_NOT_OWNER;
    }
    freeReplyObject(r);
  }
  cachet_conn_release(c, cn);
  cachet_key_free(&lkey);
  return rc;
}

int cachet_lock_unlock(cachet *c, const cachet_lock *lk) {
  return owner_op(c, lk, CACHET_SCRIPT_LOCK_RELEASE, 0);
}

int cachet_lock_renew(cachet *c, const cachet_lock *lk, int64_t ttl_ms) {
  return owner_op(c, lk, CACHET_SCRIPT_LOCK_EXTEND, ttl_ms);
}

static int check_name(const cachet *c, const char *name, size_t *len) {
  *len = strlen(name);
  if (*len == 0)
    return cachet_fail(CACHET_EINVAL, "lock name must not be empty");
  if (c != NULL && *len > c->cfg.max_key_size)
    return cachet_fail(CACHET_EINVAL,
                       "lock name of %zu bytes exceeds max_key_size (%zu)",
                       *len, c->cfg.max_key_size);
  return CACHET_OK;
}

static int check_ttl(int64_t ttl_ms) {
  if (ttl_ms <= 0)
    return cachet_fail(CACHET_EINVAL,
                       "lock ttl %lld ms: no lock lives without a TTL (it "
                       "must be > 0)",
                       (long long)ttl_ms);
  return CACHET_OK;
}

/*
 * Attempts until the lock is ours or the deadline passes. The holder's PTTL,
 * which each failed attempt returns, caps the next sleep: there is no point
 * sleeping longer than the lock has to live. The last sleep ends at the
 * deadline and is followed by one more attempt, so a lock that frees up
 * exactly then is still taken.
 */
int cachet_lock_acquire(cachet *c, const char *name, int64_t ttl_ms,
                        int64_t wait_ms, cachet_lock **out) {
  *out = NULL;
  cachet_error_clear();
  size_t len;
  int rc;
  if ((rc = check_name(c, name, &len)) || (rc = check_ttl(ttl_ms)))
    return cachet_result(c, rc);
  if (wait_ms < 0)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL,
                       "lock wait %lld ms is negative (0 means try once)",
                       (long long)wait_ms));
  cachet_lock *lk;
  if ((rc = cachet_lock_new(CACHET_KIND_LOCK, name, len, &lk)) != CACHET_OK)
    return cachet_result(c, rc);

  int64_t start = cachet_mono_ms();
  int64_t deadline = wait_ms > INT64_MAX - start ? INT64_MAX : start + wait_ms;
  int64_t step = BACKOFF_MIN_MS;
  int contended = 0;
  for (;;) {
    int64_t pttl = 0;
    rc = cachet_lock_try(c, lk, ttl_ms, &pttl);
    if (rc == CACHET_OK) {
      CACHET_COUNT(c, lock_acquisitions, 1);
      *out = lk;
      return CACHET_OK;
    }
    if (rc != CACHET_NOT_ACQUIRED)
      break;
    if (!contended) {
      contended = 1;
      CACHET_COUNT(c, lock_contentions, 1);
    }
    int64_t now = cachet_mono_ms();
    if (now >= deadline) {
      rc = cachet_fail(CACHET_NOT_ACQUIRED,
                       "lock \"%s\" is held by another owner (waited %lld ms)",
                       name, (long long)(now - start));
      break;
    }
    int64_t delay = cachet_jitter_ms(step);
    if (pttl > 0 && pttl + 1 < delay)
      delay = pttl + 1;
    cachet_sleep_until(delay, deadline);
    if (step < BACKOFF_MAX_MS)
      step *= 2;
  }
  cachet_lock_free(lk);
  return cachet_result(c, rc);
}

int cachet_lock_from_token(const char *name, const char *token_hex,
                           cachet_lock **out) {
  *out = NULL;
  cachet_error_clear();
  size_t len;
  int rc = check_name(NULL, name, &len);
  if (rc != CACHET_OK)
    return rc;
  size_t tl = strnlen(token_hex, CACHET_LOCK_TOKEN_HEXLEN + 1);
  int ok = tl == CACHET_LOCK_TOKEN_HEXLEN;
  for (size_t i = 0; ok && i < tl; i++) {
    char ch = token_hex[i];
    ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
         (ch >= 'A' && ch <= 'F');
  }
  if (!ok)
    return cachet_fail(CACHET_EINVAL,
                       "lock token must be %d hex digits (as printed by "
                       "`cachet lock acquire`)",
                       CACHET_LOCK_TOKEN_HEXLEN);
  cachet_lock *lk;
  if ((rc = cachet_lock_new(CACHET_KIND_LOCK, name, len, &lk)) != CACHET_OK)
    return rc;
  /* Tokens are lowercase in Redis; accept either case from a user. */
  for (size_t i = 0; i < CACHET_LOCK_TOKEN_HEXLEN; i++) {
    char ch = token_hex[i];
    lk->token[i] = (ch >= 'A' && ch <= 'F') ? (char)(ch - 'A' + 'a') : ch;
  }
  lk->token[CACHET_LOCK_TOKEN_HEXLEN] = '\0';
  *out = lk;
  return CACHET_OK;
}

int cachet_lock_release(cachet *c, const cachet_lock *lock) {
  cachet_error_clear();
  return cachet_result(c, cachet_lock_unlock(c, lock));
}

int cachet_lock_extend(cachet *c, const cachet_lock *lock, int64_t ttl_ms) {
  cachet_error_clear();
  int rc = check_ttl(ttl_ms);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  return cachet_result(c, cachet_lock_renew(c, lock, ttl_ms));
}

void cachet_lock_token(const cachet_lock *lock,
                       char hex[CACHET_LOCK_TOKEN_HEXLEN + 1]) {
  memcpy(hex, lock->token, CACHET_LOCK_TOKEN_HEXLEN + 1);
}

uint64_t cachet_lock_fence(const cachet_lock *lock) { return lock->fence; }
