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

#include "error.h"
#include "keys.h"
#include "op_lock.h"
#include "run.h"
#include "sodium_once.h"

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

/* One lock machine, run to its end. */
static int run_lock(cachet *c, int mode, const cachet_lock *lk, int64_t ttl_ms,
                    int64_t wait_ms) {
  cachet_op_lock x;
  /* Release and extend only read the lock; acquire sets its fence. */
  cachet_op_lock_init(&x, c, mode, (cachet_lock *)lk, ttl_ms, wait_ms);
  int rc = cachet_run(c, &x.op);
  x.op.k->free(&x.op);
  return rc;
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

int cachet_lock_check_ttl(int64_t ttl_ms) {
  if (ttl_ms <= 0)
    return cachet_fail(CACHET_EINVAL,
                       "lock ttl %lld ms: no lock lives without a TTL (it "
                       "must be > 0)",
                       (long long)ttl_ms);
  return CACHET_OK;
}

int cachet_lock_prepare(const cachet *c, const char *name, int64_t ttl_ms,
                        int64_t wait_ms, cachet_lock **out) {
  *out = NULL;
  size_t len;
  int rc;
  if ((rc = check_name(c, name, &len)) || (rc = cachet_lock_check_ttl(ttl_ms)))
    return rc;
  if (wait_ms < 0)
    return cachet_fail(CACHET_EINVAL,
                       "lock wait %lld ms is negative (0 means try once)",
                       (long long)wait_ms);
  return cachet_lock_new(CACHET_KIND_LOCK, name, len, out);
}

/* The wait is the machine's (op_lock.c): jittered backoff, each sleep
 * capped by the holder's remaining TTL and the deadline, one last attempt at
 * the deadline. */
int cachet_lock_acquire(cachet *c, const char *name, int64_t ttl_ms,
                        int64_t wait_ms, cachet_lock **out) {
  *out = NULL;
  cachet_error_clear();
  cachet_lock *lk;
  int rc = cachet_lock_prepare(c, name, ttl_ms, wait_ms, &lk);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  rc = run_lock(c, CACHET_LOCK_ACQUIRE, lk, ttl_ms, wait_ms);
  if (rc == CACHET_OK)
    *out = lk;
  else
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
  return cachet_result(c, run_lock(c, CACHET_LOCK_RELEASE, lock, 0, 0));
}

int cachet_lock_extend(cachet *c, const cachet_lock *lock, int64_t ttl_ms) {
  cachet_error_clear();
  int rc = cachet_lock_check_ttl(ttl_ms);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  return cachet_result(c, run_lock(c, CACHET_LOCK_EXTEND, lock, ttl_ms, 0));
}

void cachet_lock_token(const cachet_lock *lock,
                       char hex[CACHET_LOCK_TOKEN_HEXLEN + 1]) {
  memcpy(hex, lock->token, CACHET_LOCK_TOKEN_HEXLEN + 1);
}

uint64_t cachet_lock_fence(const cachet_lock *lock) { return lock->fence; }
