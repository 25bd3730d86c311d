/* Connections and the per-handle pool. Internal.
 *
 * A call borrows one connection for its whole duration, so a connection is
 * only ever used by one thread at a time and needs no lock of its own. A
 * connection that saw an I/O error, a timeout or a protocol error is marked
 * broken and closed when it is returned; the next borrower reconnects. */
#ifndef CACHET_CONN_H
#define CACHET_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "handle.h"

typedef struct cachet_conn cachet_conn;

int cachet_pool_create(cachet *c);
void cachet_pool_destroy(cachet *c);

/* Borrow a connected connection, waiting at most timeout_ms for a free one
 * and connecting (AUTH, SELECT) if needed. Errors: ETIMEDOUT, ECONN,
 * ESERVER (AUTH/SELECT refused), ENOMEM. */
int cachet_conn_acquire(cachet *c, cachet_conn **out);
/* Give it back; a broken connection is closed. NULL is a no-op. */
void cachet_conn_release(cachet *c, cachet_conn *cn);

/*
 * Send one command and read its reply. On CACHET_OK *out is the reply (any
 * type but an error; the caller frees it with freeReplyObject). An error
 * reply gives CACHET_ESERVER with the server's text as the detail and the
 * connection stays usable. I/O failures give ECONN/ETIMEDOUT/EPROTO/ENOMEM
 * and break the connection.
 */
int cachet_conn_command(cachet_conn *cn, int argc, const char **argv,
                        const size_t *lens, redisReply **out);

/* Pipelining: append commands, then read their replies in order with
 * cachet_conn_read (same mapping as cachet_conn_command). */
int cachet_conn_append(cachet_conn *cn, int argc, const char **argv,
                       const size_t *lens);
int cachet_conn_read(cachet_conn *cn, redisReply **out);

/* Mark a connection broken, e.g. after a reply of an unexpected shape that
 * leaves the pipeline out of step. */
void cachet_conn_break(cachet_conn *cn);

/* The server's reply text of the last ESERVER on this thread starts with
 * `code` (e.g. "NOSCRIPT"). */
int cachet_server_error_is(const char *code);

#endif
