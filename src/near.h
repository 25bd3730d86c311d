/* The near cache: an in-process copy of opened values, kept coherent by
 * Redis's invalidation messages (track.h). Internal. Pure: no I/O, so the
 * unit tests drive it alone.
 *
 * Entries are keyed by the Redis key name (<prefix>{bb}v:<key>), the name
 * an invalidation message carries. Memory is bounded in bytes: nodes, keys,
 * values and the tables that hold them are all counted. The table is split
 * in stripes, each with its own mutex and its own S3-FIFO queues, so
 * readers of different keys rarely meet.
 *
 * The fill race. A reply to a GET can arrive after the invalidation of the
 * value it carries was processed. So a miss leaves a placeholder and hands
 * out a ticket; the reply is stored only if the placeholder is still there
 * under the same ticket. An invalidation of the key, a flush, or losing
 * tracking removes the placeholder, and the fill is dropped.
 *
 * Thread-safety: every function may be called from any thread. */
#ifndef CACHET_NEAR_H
#define CACHET_NEAR_H

#include <stddef.h>
#include <stdint.h>

typedef struct cachet_near cachet_near;

/* At least this many bytes, else the cache could hold almost nothing. */
#define CACHET_NEAR_MIN_BYTES ((size_t)64 * 1024)

/* A cache of at most `bytes` (>= CACHET_NEAR_MIN_BYTES) whose copies live at
 * most `ttl_ms` (> 0). It starts inactive: every lookup misses without a
 * ticket until cachet_near_activate. ENOMEM. */
int cachet_near_create(cachet_near **out, size_t bytes, int64_t ttl_ms);
/* Free it and every copy. NULL is a no-op. No other thread may use it. */
void cachet_near_destroy(cachet_near *n);

/* Look `key` up at Unix time `now_ms`. CACHET_OK: a hit, *val is a malloc'd
 * copy (NUL after *len bytes) the caller owns. CACHET_MISS: *ticket is
 * non-zero when the caller should fill the key (a placeholder is left), or
 * 0 when it should not (inactive, another fill under way, no memory). */
int cachet_near_get(cachet_near *n, const void *key, size_t klen,
                    int64_t now_ms, void **val, size_t *len, uint64_t *ticket);
/* Store the value read under `ticket`, unless that fill was cancelled since.
 * `expires_ms` is the entry's own expiry (Unix ms; 0 = none): the copy
 * lives until that, or ttl_ms, whichever comes first. A value too large for
 * its stripe is not kept. */
void cachet_near_fill(cachet_near *n, const void *key, size_t klen,
                      uint64_t ticket, const void *val, size_t len,
                      int64_t expires_ms, int64_t now_ms);
/* Give a ticket up (the read failed or missed). */
void cachet_near_abandon(cachet_near *n, const void *key, size_t klen,
                         uint64_t ticket);

/* Drop the key's copy and cancel a fill of it under way. */
void cachet_near_drop(cachet_near *n, const void *key, size_t klen);
/* Drop every copy and cancel every fill. */
void cachet_near_flush(cachet_near *n);
/* Coherence is (re)established: lookups may hand out tickets again. */
void cachet_near_activate(cachet_near *n);
/* Coherence is lost: flush, and bypass until cachet_near_activate. */
void cachet_near_deactivate(cachet_near *n);
int cachet_near_active(const cachet_near *n);

typedef struct cachet_near_stats {
  uint64_t hits, misses, invalidations, flushes;
  uint64_t bytes;   /* in use now */
  uint64_t entries; /* copies held now */
} cachet_near_stats;
void cachet_near_get_stats(const cachet_near *n, cachet_near_stats *out);

/* Counting, done by the tracking connection: one invalidated key. */
void cachet_near_count_invalidation(cachet_near *n);

/* Tests only (op_key.c): called between a GET's reply and its fill. */
extern void (*cachet_near_fill_hook)(const char *rkey, size_t len);

#endif
