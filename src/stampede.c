/* get_or_set: read through the cache, with one loader per key across every
 * process.
 *
 * A hit is one GET. On a miss the caller tries to take the entry's stampede
 * lock (<prefix>{bb}s:<key>, the bucket of the value key) for a short lease.
 * The caller that gets it reads the cache once more (another process may
 * have filled it between our GET and our lock), then runs the loader while a
 * watchdog thread renews the lease every third of it. The others wait: they
 * poll the value and the lock with jittered backoff, and as soon as the lock
 * is free (the loader failed and released it, or its holder died and the
 * lease ran out) one of them takes it over and loads. Their whole wait is
 * bounded by fetch_wait_ms.
 *
 * There is no early refresh: an entry is loaded only once it is missing. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "entry.h"
#include "error.h"
#include "keys.h"
#include "lock.h"

#define DEFAULT_LEASE_MS 3000
#define DEFAULT_FETCH_WAIT_MS 30000
/* Waiters' backoff between polls: it starts short, so a fast loader is seen
 * quickly, and doubles up to a cap that keeps a takeover prompt without
 * turning many waiters into a load on Redis. */
#define WAIT_MIN_MS 4
#define WAIT_MAX_MS 100

/* GET the value of `key`. Misses are counted only when `count_miss`: a
 * waiter's polls are one logical miss, not many. */
static int read_value(cachet *c, const void *key, size_t keylen, int count_miss,
                      void **val, size_t *len) {
  cachet_key vk = {0};
  int rc = cachet_key_build(c, &vk, CACHET_KIND_VALUE,
                            cachet_bucket(key, keylen), key, keylen);
  if (rc != CACHET_OK)
    return rc;
  cachet_conn *cn;
  rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK) {
    cachet_key_free(&vk);
    return rc;
  }
  const char *argv[2] = {"GET", vk.buf};
  size_t lens[2] = {3, vk.len};
  redisReply *r = NULL;
  rc = cachet_conn_command(cn, 2, argv, lens, &r);
  if (rc == CACHET_OK) {
    if (r->type == REDIS_REPLY_NIL) {
      freeReplyObject(r);
      if (count_miss)
        CACHET_COUNT(c, misses, 1);
      rc = CACHET_MISS;
    } else if (r->type == REDIS_REPLY_STRING) {
      char *blob = r->str;
      size_t bl = r->len;
      r->str = NULL;
      freeReplyObject(r);
      rc = cachet_entry_open(c, vk.buf, vk.len, blob, bl, val, len);
    } else {
      int type = r->type;
      freeReplyObject(r);
      cachet_conn_break(cn);
      rc = cachet_fail(CACHET_EPROTO, "GET: unexpected reply type %d", type);
    }
  }
  cachet_conn_release(c, cn);
  cachet_key_free(&vk);
  return rc;
}

/* Release the lock on the way out, keeping the calling thread's error
 * detail: the outcome of the release is not the caller's result. */
static void unlock_quietly(cachet *c, const cachet_lock *lk) {
  char saved[512];
  snprintf(saved, sizeof saved, "%s", cachet_last_error());
  (void)cachet_lock_unlock(c, lk);
  (void)cachet_fail(CACHET_OK, "%s", saved);
}

/* The lease watchdog: a thread that extends the lock every lease/3 while
 * the loader runs, each time over a connection it borrows from the pool for
 * that one call (the loading thread holds none while its loader runs). */
typedef struct watchdog {
  cachet *c;
  const cachet_lock *lk;
  int64_t lease_ms;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  int lost; /* LOCK_EXPIRED or LOCK_NOT_OWNER once the lease is gone */
  pthread_t th;
} watchdog;

static void deadline_after(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)(ms / 1000);
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void *watchdog_run(void *arg) {
  watchdog *w = arg;
  int64_t period = w->lease_ms / 3 > 0 ? w->lease_ms / 3 : 1;
  pthread_mutex_lock(&w->mu);
  while (!w->stop) {
    struct timespec dl;
    deadline_after(&dl, period);
    while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &dl) != ETIMEDOUT)
      ;
    if (w->stop)
      break;
    pthread_mutex_unlock(&w->mu);
    /* An error (connection, timeout) is not a lost lease: the lease may
     * still be live, so try again at the next tick. */
    int rc = cachet_lock_renew(w->c, w->lk, w->lease_ms);
    pthread_mutex_lock(&w->mu);
    if (rc == CACHET_LOCK_EXPIRED || rc == CACHET_LOCK_NOT_OWNER) {
      w->lost = rc;
      break;
    }
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static int watchdog_start(watchdog *w, cachet *c, const cachet_lock *lk,
                          int64_t lease_ms) {
  memset(w, 0, sizeof *w);
  w->c = c;
  w->lk = lk;
  w->lease_ms = lease_ms;
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca) != 0)
    return cachet_fail(CACHET_ENOMEM, "cannot start the lease watchdog");
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int e = pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (e != 0)
    return cachet_fail(CACHET_ENOMEM, "cannot start the lease watchdog");
  pthread_mutex_init(&w->mu, NULL);
  if ((e = pthread_create(&w->th, NULL, watchdog_run, w)) != 0) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    return cachet_fail(CACHET_ENOMEM,
                       "cannot start the lease watchdog thread: %s",
                       strerror(e));
  }
  return CACHET_OK;
}

/* Stop and join the watchdog; returns what it saw (0 or a lost outcome). */
static int watchdog_stop(watchdog *w) {
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->th, NULL);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  return w->lost;
}

typedef struct request {
  const void *key;
  size_t keylen;
  cachet_loader_fn loader;
  void *ud;
  int64_t ttl_ms;
  const char *const *tags;
  size_t ntags;
} request;

/* Check what the loader handed back before anything is written. */
static int check_loaded(const cachet *c, const request *q, const void *lv,
                        size_t ll, int64_t ttl) {
  if (lv == NULL && ll > 0)
    return cachet_fail(CACHET_ELOADER,
                       "loader returned a NULL value of %zu bytes; nothing "
                       "was cached",
                       ll);
  if (ll > c->cfg.max_value_size)
    return cachet_fail(CACHET_ELOADER,
                       "loader returned %zu bytes, above max_value_size "
                       "(%zu); nothing was cached",
                       ll, c->cfg.max_value_size);
  /* The loader may only lower the TTL: a positive one no higher than the
   * caller's, or anything >= 0 when the caller asked for no expiry. */
  if (ttl < 0 || (q->ttl_ms > 0 && (ttl == 0 || ttl > q->ttl_ms)))
    return cachet_fail(CACHET_ELOADER,
                       "loader set ttl %lld ms; it may only lower the "
                       "caller's %lld ms; nothing was cached",
                       (long long)ttl, (long long)q->ttl_ms);
  return CACHET_OK;
}

/*
 * We hold the stampede lock. Look once more (whoever held it before us may
 * have just written the value), else load with the lease renewed, write the
 * value with its tags, and only then release the lock, so a waiter that
 * finds the lock free also finds the value.
 */
static int load_as_holder(cachet *c, const request *q, const cachet_lock *lk,
                          int64_t lease_ms, void **val, size_t *len) {
  int rc = read_value(c, q->key, q->keylen, 0, val, len);
  if (rc != CACHET_MISS) {
    unlock_quietly(c, lk);
    return rc;
  }
  watchdog w;
  if ((rc = watchdog_start(&w, c, lk, lease_ms)) != CACHET_OK) {
    unlock_quietly(c, lk);
    return rc;
  }
  void *lv = NULL;
  size_t ll = 0;
  int64_t ttl = q->ttl_ms;
  int lrc = q->loader(q->ud, q->key, q->keylen, &lv, &ll, &ttl);
  int lost = watchdog_stop(&w);
  if (lost != 0)
    cachet_log(c, CACHET_LOG_WARN,
               "get_or_set: the stampede lock %s while the loader ran "
               "(lease %lld ms); another caller may have loaded too",
               lost == CACHET_LOCK_EXPIRED ? "expired"
                                           : "passed to another "
                                             "owner",
               (long long)lease_ms);
  if (lrc != 0) {
    /* Release at once so that a waiter takes over without waiting out the
     * lease. On failure the loader keeps ownership of anything in *val. */
    (void)cachet_lock_unlock(c, lk);
    return cachet_fail(CACHET_ELOADER, "loader returned %d; nothing was cached",
                       lrc);
  }
  rc = check_loaded(c, q, lv, ll, ttl);
  if (rc == CACHET_OK) {
    cachet_conn *cn;
    rc = cachet_conn_acquire(c, &cn);
    if (rc == CACHET_OK) {
      rc = cachet_entry_write(c, cn, q->key, q->keylen, lv != NULL ? lv : "",
                              ll, ttl, q->tags, q->ntags);
      cachet_conn_release(c, cn);
    }
  }
  unlock_quietly(c, lk);
  if (rc != CACHET_OK) {
    free(lv);
    return rc;
  }
  /* Hand the loader's own buffer on, grown by the NUL cachet_get adds. */
  char *out = realloc(lv, ll + 1);
  if (out == NULL) {
    free(lv);
    return cachet_fail(CACHET_ENOMEM, "out of memory returning the value");
  }
  out[ll] = '\0';
  *val = out;
  *len = ll;
  return CACHET_OK;
}

int cachet_get_or_set(cachet *c, const void *key, size_t keylen,
                      cachet_loader_fn loader, void *ud, int64_t ttl_ms,
                      const char *const *tags, size_t ntags, void **val,
                      size_t *len) {
  *val = NULL;
  *len = 0;
  cachet_error_clear();
  int rc;
  if ((rc = cachet_check_key(c, key, keylen)) ||
      (rc = cachet_check_value(c, 0, ttl_ms)) ||
      (rc = cachet_check_tags(c, tags, ntags)))
    return cachet_result(c, rc);

  rc = read_value(c, key, keylen, 1, val, len);
  if (rc != CACHET_MISS)
    return cachet_result(c, rc);

  int64_t lease =
      c->cfg.lock_lease_ms > 0 ? c->cfg.lock_lease_ms : DEFAULT_LEASE_MS;
  int64_t wait =
      c->cfg.fetch_wait_ms > 0 ? c->cfg.fetch_wait_ms : DEFAULT_FETCH_WAIT_MS;
  cachet_lock *lk;
  if ((rc = cachet_lock_new(CACHET_KIND_STAMPEDE, key, keylen, &lk)) !=
      CACHET_OK)
    return cachet_result(c, rc);
  request q = {key, keylen, loader, ud, ttl_ms, tags, ntags};
  int64_t start = cachet_mono_ms();
  int64_t deadline = start + wait;
  int64_t step = WAIT_MIN_MS;
  int waited = 0;
  for (;;) {
    rc = cachet_lock_try(c, lk, lease, NULL);
    if (rc == CACHET_OK) {
      rc = load_as_holder(c, &q, lk, lease, val, len);
      break;
    }
    if (rc != CACHET_NOT_ACQUIRED)
      break;
    if (!waited) {
      waited = 1;
      CACHET_COUNT(c, stampede_waits, 1);
    }
    int64_t now = cachet_mono_ms();
    if (now >= deadline) {
      rc = cachet_fail(CACHET_ETIMEDOUT,
                       "get_or_set: another caller's loader of this key did "
                       "not finish within fetch_wait_ms (%lld ms); the "
                       "stampede lock is still held",
                       (long long)wait);
      break;
    }
    cachet_sleep_until(cachet_jitter_ms(step), deadline);
    if (step < WAIT_MAX_MS)
      step *= 2;
    rc = read_value(c, key, keylen, 0, val, len);
    if (rc != CACHET_MISS)
      break;
  }
  cachet_lock_free(lk);
  if (rc != CACHET_OK) {
    *val = NULL;
    *len = 0;
  }
  return cachet_result(c, rc);
}
