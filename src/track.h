/* The near cache's coherence: invalidation feeds from Redis. Internal.
 *
 * One thread per handle holds one connection per server (per master in a
 * cluster). Each connection runs
 *
 *   CLIENT TRACKING on REDIRECT <its own id> BCAST PREFIX <prefix>
 *   SUBSCRIBE __redis__:invalidate
 *
 * so the server tells it, as a pub/sub message, the name of every key of
 * this namespace that anyone writes, deletes, evicts or expires, and a null
 * message on FLUSHDB/FLUSHALL. Each value key's name drops the near
 * cache's copy (near.h); the other kinds are skipped. Broadcast mode needs
 * nothing of the data connections: a pooled or multiplexed connection that
 * reconnects, or the async API's, loses no invalidation (docs/DESIGN.md, "Near
 * cache").
 *
 * Coherence is lost when a feed's connection fails, when a PING on it gets
 * no answer within timeout_ms, or when the cluster gains a master: the
 * thread then empties the near cache and bypasses it (near.h,
 * cachet_near_deactivate) until every feed is subscribed again. Reconnects
 * back off from 50 ms to 2 s. Every wait is a poll() with a deadline, and
 * cachet_track_stop wakes it through a pipe. */
#ifndef CACHET_TRACK_H
#define CACHET_TRACK_H

#include <stdatomic.h>

#include "handle.h"

typedef struct cachet_track cachet_track;

/* Start the thread for c->near. ENOMEM, or EINTERNAL if no thread. */
int cachet_track_start(cachet *c, cachet_track **out);
/* Stop it and close its connections; at most a connect's timeout_ms. NULL
 * is a no-op. */
void cachet_track_stop(cachet_track *t);
/* 1 while every feed is subscribed (the near cache serves copies). */
int cachet_track_active(const cachet_track *t);
/* Why coherence was last lost, or "" (for health). Thread-safe; copies. */
void cachet_track_why(cachet_track *t, char *out, size_t cap);

/* Tests only: while non-zero, feeds are not read (invalidations wait in
 * their sockets), so a test can tell a handle's own drops from the echo.
 * Keep it shorter than timeout_ms, or the PING check declares a loss. */
extern _Atomic int cachet_track_hold;
/* Tests only: called on the feed's thread with each value key's name once
 * its copy is dropped, so a test can wait for one invalidation in
 * particular (the feed of a server delivers them in order). */
extern void (*_Atomic cachet_track_seen_hook)(const char *key, size_t len);

#endif
