/* Run a sync test suite through the async driver.
 *
 * A test file compiled with `-include via_async.h` calls via_* instead of
 * the sync operations: each call is the async twin, started on one loop
 * thread that the shim runs (via_async.c), and the calling thread waits for
 * its callback. A handle gets its async twin on first use, over the same
 * sync handle (same configuration, router and counters), so the suites'
 * own helpers, which open sync handles, need no change. Calls from many
 * threads interleave on the loop as they would in one async program; a
 * sync loader runs on a thread of its own and hands its value back to the
 * loop, as an async loader would. The detail of each result is copied to
 * the calling thread, so cachet_last_error() reads as after a sync call. */
#ifndef CACHET_VIA_ASYNC_H
#define CACHET_VIA_ASYNC_H

#include "cachet.h"

void via_close(cachet *c);
int via_get(cachet *c, const void *key, size_t keylen, void **val, size_t *len);
int via_set(cachet *c, const void *key, size_t keylen, const void *val,
            size_t len, int64_t ttl_ms);
int via_set_tags(cachet *c, const void *key, size_t keylen, const void *val,
                 size_t len, int64_t ttl_ms, const char *const *tags,
                 size_t ntags);
int via_delete(cachet *c, const void *key, size_t keylen);
int via_exists(cachet *c, const void *key, size_t keylen);
int via_ttl(cachet *c, const void *key, size_t keylen, int64_t *ttl_ms);
int via_evict_tags(cachet *c, const char *const *tags, size_t ntags,
                   uint64_t *evicted);
int via_clear(cachet *c, int dry_run, uint64_t *removed);
int via_prune(cachet *c, uint64_t *pruned);
int via_lock_acquire(cachet *c, const char *name, int64_t ttl_ms,
                     int64_t wait_ms, cachet_lock **out);
int via_lock_release(cachet *c, const cachet_lock *lock);
int via_lock_extend(cachet *c, const cachet_lock *lock, int64_t ttl_ms);
int via_get_or_set(cachet *c, const void *key, size_t keylen,
                   cachet_loader_fn loader, void *ud, int64_t ttl_ms,
                   const char *const *tags, size_t ntags, void **val,
                   size_t *len);
int via_mget(cachet *c, cachet_entry *entries, size_t n);
int via_mset(cachet *c, cachet_entry *entries, size_t n);
int via_health_check(cachet *c, cachet_health *out);

#ifndef VIA_ASYNC_IMPL
#define cachet_close via_close
#define cachet_get via_get
#define cachet_set via_set
#define cachet_set_tags via_set_tags
#define cachet_delete via_delete
#define cachet_exists via_exists
#define cachet_ttl via_ttl
#define cachet_evict_tags via_evict_tags
#define cachet_clear via_clear
#define cachet_prune via_prune
#define cachet_lock_acquire via_lock_acquire
#define cachet_lock_release via_lock_release
#define cachet_lock_extend via_lock_extend
#define cachet_get_or_set via_get_or_set
#define cachet_mget via_mget
#define cachet_mset via_mset
#define cachet_health_check via_health_check
#endif

#endif
