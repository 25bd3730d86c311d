/* Multiplexed connections (auto-pipelining). Internal.
 *
 * With cachet_options.multiplex = N, a handle keeps N connections on which
 * any number of threads have requests in flight at once. A thread appends
 * its commands to a connection's output under the connection's mutex; the
 * first thread that finds nobody writing becomes the writer and sends
 * everything queued, its own and others', in one send() per round, until
 * nothing is left. Replies come back in order, and one waiting thread at a
 * time is the reader: it receives what has arrived, hands each reply to the
 * request it answers (waking that thread alone), and when its own request
 * is complete passes the reader's role to the oldest request still waiting.
 * No thread of its own: the callers move the bytes.
 *
 * Each request (a group of commands sent together, replies matched in
 * order) has its own deadline, timeout_ms from when it was queued. One that
 * is not answered in time returns ETIMEDOUT and leaves its place in the
 * queue, whose replies are dropped when they come: the connection stays in
 * step, so a late reply never answers another request. A connection that
 * fails (an I/O error, a send that cannot finish in time, a protocol
 * error) fails every request in flight on it with that status and detail
 * (ECONN, ETIMEDOUT, EPROTO), never a miss, and is reconnected by the next
 * request.
 *
 * Which calls use it: the operations whose machines are marked `multiplex`
 * (op.h), i.e. get, exists, ttl, inspect, set, set_tags, delete and the
 * lock calls, each step of which is a command or two with no state on the
 * connection. Everything else (get_or_set, batches, evict-tags, clear,
 * prune, health) keeps borrowing from the pool. Single server, plaintext
 * (TCP or unix socket) only: an OpenSSL session cannot be read and written
 * from two threads at once, and a cluster routes per command.
 */
#ifndef CACHET_MUX_H
#define CACHET_MUX_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "handle.h"
#include "op.h"

typedef struct cachet_mux cachet_mux;

/* c->cfg.multiplex connections to c's server, connected on first use.
 * ENOMEM. */
int cachet_mux_create(cachet *c, cachet_mux **out);
/* Close them. NULL is a no-op. No request may be in flight. */
void cachet_mux_destroy(cachet_mux *m);

/* Send cmds[idx[0..n)] together over one of the connections and wait for
 * their replies, in order, into replies[0..n) (the caller frees them).
 * CACHET_OK: every command got a reply, error replies included. Else none
 * did (the replies that came are freed) and the status says why: ECONN,
 * ETIMEDOUT, EPROTO, ENOMEM, with the calling thread's detail set. */
int cachet_mux_exchange(cachet_mux *m, const cachet_cmd *cmds,
                        const size_t *idx, size_t n, redisReply **replies);

#endif
