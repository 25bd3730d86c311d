/* cachet's async API on a libevent loop: a set, a get, 100 gets in flight
 * at once, a get_or_set whose loader completes on a timer, a lock, then a
 * delete. Everything runs on this one thread, inside event_base_dispatch;
 * nothing blocks.
 *
 * Reads CACHET_URL (or CACHET_HOST/CACHET_PORT, CACHET_KEY_PREFIX, ...) as
 * the CLI does. Exit 0 and "ok" on success, 1 when the cache answered but
 * not as expected, 3 for a connection, server or timeout error.
 *
 *   cc async_libevent.c $(pkg-config --cflags --libs cachet libevent)
 */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "cachet.h"

#define MANY 100

static struct event_base *base;
static cachet_async *cache;
static int exit_code = 0;
static int many_left = MANY;

static void finish(int code) {
  exit_code = code;
  cachet_async_close(cache); /* from a callback: allowed */
  event_base_loopbreak(base);
}

/* Stop on anything unexpected, with cachet's own detail: it is set for the
 * callback's status when the callback runs. */
static int check(int status, int want, const char *what) {
  if (status == want)
    return 1;
  fprintf(stderr, "%s: %s (%s)\n", what, cachet_strerror(status),
          cachet_last_error());
  finish(status < 0 ? 3 : 1);
  return 0;
}

static void deleted_both(int status, void *ud) {
  (void)ud;
  if (!check(status, CACHET_OK, "delete"))
    return;
  printf("ok\n");
  finish(0);
}

static void deleted(int status, void *ud) {
  (void)ud;
  if (!check(status, CACHET_OK, "delete"))
    return;
  if (cachet_async_delete(cache, "example:async-loaded", 20, deleted_both,
                          NULL) != CACHET_OK)
    check(-1, CACHET_OK, "delete");
}

static void released(int status, void *ud) {
  (void)ud;
  if (!check(status, CACHET_OK, "lock release"))
    return;
  if (cachet_async_delete(cache, "example:async", 13, deleted, NULL) !=
      CACHET_OK)
    check(-1, CACHET_OK, "delete");
}

static void locked(int status, cachet_lock *lock, void *ud) {
  (void)ud;
  if (!check(status, CACHET_OK, "lock acquire"))
    return;
  printf("lock held, fence %llu\n",
         (unsigned long long)cachet_lock_fence(lock));
  int rc = cachet_async_lock_release(cache, lock, released, NULL);
  cachet_lock_free(lock); /* only read during the call */
  if (rc != CACHET_OK)
    check(rc, CACHET_OK, "lock release");
}

/* The loader: completes later, from a loop timer, as a real one would when
 * its own I/O (an HTTP call, a database query) answers. */
static void load_now(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  cachet_async_load_done(arg, 0, "from the origin", 15, 60000);
}

static void loader(cachet_async_load *load, const void *key, size_t keylen,
                   int64_t ttl_ms, void *ud) {
  (void)key;
  (void)keylen;
  (void)ttl_ms;
  (void)ud;
  struct timeval tv = {0, 20000};
  event_base_once(base, -1, EV_TIMEOUT, load_now, load, &tv);
}

static void loaded(int status, const void *val, size_t len, void *ud) {
  (void)ud;
  if (!check(status, CACHET_OK, "get_or_set"))
    return;
  printf("get_or_set: %.*s\n", (int)len, (const char *)val);
  if (cachet_async_lock_acquire(cache, "example:async-lock", 5000, 1000, locked,
                                NULL) != CACHET_OK)
    check(-1, CACHET_OK, "lock acquire");
}

static void got_many(int status, const void *val, size_t len, void *ud) {
  (void)val;
  (void)len;
  (void)ud;
  if (!check(status, CACHET_OK, "get (many)"))
    return;
  if (--many_left > 0)
    return;
  printf("%d gets in flight at once: all hits\n", MANY);
  if (cachet_async_get_or_set(cache, "example:async-loaded", 20, loader, 60000,
                              NULL, 0, loaded, NULL) != CACHET_OK)
    check(-1, CACHET_OK, "get_or_set");
}

static void got(int status, const void *val, size_t len, void *ud) {
  (void)ud;
  /* `val` is cachet's, valid only during this callback. */
  if (!check(status, CACHET_OK, "get"))
    return;
  printf("get: %.*s\n", (int)len, (const char *)val);
  for (int i = 0; i < MANY; i++)
    if (cachet_async_get(cache, "example:async", 13, got_many, NULL) !=
        CACHET_OK) {
      check(-1, CACHET_OK, "get (many)");
      return;
    }
}

static void stored(int status, void *ud) {
  (void)ud;
  if (!check(status, CACHET_OK, "set"))
    return;
  if (cachet_async_get(cache, "example:async", 13, got, NULL) != CACHET_OK)
    check(-1, CACHET_OK, "get");
}

int main(void) {
  base = event_base_new();
  if (base == NULL)
    return 3;
  cachet_options opts;
  cachet_options_init(&opts);
  opts.use_env = 1;
  int rc = cachet_async_open(&cache, base, &opts);
  if (rc != CACHET_OK) {
    fprintf(stderr, "open: %s (%s)\n", cachet_strerror(rc),
            cachet_last_error());
    event_base_free(base);
    return rc == CACHET_ECONFIG || rc == CACHET_EINVAL ? 2 : 3;
  }
  rc = cachet_async_set(cache, "example:async", 13, "hello, loop", 11, 60000,
                        stored, NULL);
  if (rc != CACHET_OK) {
    fprintf(stderr, "set: %s (%s)\n", cachet_strerror(rc), cachet_last_error());
    cachet_async_close(cache);
    event_base_free(base);
    return 3;
  }
  event_base_dispatch(base);
  /* Every path ends in finish(), which closed the handle. */
  event_base_free(base);
  return exit_code;
}
