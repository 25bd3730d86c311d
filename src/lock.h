/* Locks: the public cachet_lock API and the stampede locks of get_or_set.
 * Internal.
 *
 * A lock is one string key whose value is its owner's token, with a TTL
 * (no lock lives without one). Both kinds share the scripts in lua/lock_*:
 *
 *   CACHET_KIND_LOCK      <prefix>{bb}l:<name>, fenced by <prefix>{bb}f:<name>
 *                         (bb = bucket of the name, so both are one slot)
 *   CACHET_KIND_STAMPEDE  <prefix>{bb}s:<key>, in the bucket of the value key
 *                         it guards; never fenced (a fencing counter per
 *                         cache entry would be a key that never expires)
 *
 * Token checks happen inside Redis, in the scripts. */
#ifndef CACHET_LOCK_H
#define CACHET_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "handle.h"

struct cachet_lock {
  char kind; /* CACHET_KIND_LOCK or CACHET_KIND_STAMPEDE */
  uint64_t fence;
  char token[CACHET_LOCK_TOKEN_HEXLEN + 1]; /* lowercase hex, NUL */
  size_t namelen;
  char name[]; /* namelen bytes (binary-safe) and a NUL */
};

/*
 * A new, unheld lock handle for `name` of `kind`, with a fresh 128-bit token
 * from randombytes_buf. The handle owns a copy of the name. ENOMEM, or
 * EINTERNAL if libsodium cannot initialise. Free with cachet_lock_free().
 */
int cachet_lock_new(char kind, const void *name, size_t namelen,
                    cachet_lock **out);

/* An acquire's checks (EINVAL: the name, ttl_ms > 0, wait_ms >= 0) and
 * its new handle (as cachet_lock_new). */
int cachet_lock_prepare(const cachet *c, const char *name, int64_t ttl_ms,
                        int64_t wait_ms, cachet_lock **out);
/* EINVAL unless ttl_ms > 0: no lock lives without a TTL. */
int cachet_lock_check_ttl(int64_t ttl_ms);

#endif
