/* One connection to one Redis server. Internal.
 *
 * Used by one thread at a time (a pool hands it out whole). Every read is
 * bounded: by timeout_ms (the socket's SO_RCVTIMEO and SO_SNDTIMEO) and by
 * what the reader accepts (reader.h). A connection that saw an I/O error,
 * a timeout or a protocol error is broken, and its owner closes it. */
#ifndef CACHET_CONN_H
#define CACHET_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "config.h"
#include "reader.h"

typedef struct cachet_conn {
  redisContext *ctx; /* NULL: not connected */
  int broken;
  int timeout_ms;
  size_t pending;            /* replies owed */
  cachet_reader_bound bound; /* what the server may make us buffer */
} cachet_conn;

/* Connect `cn` (zeroed, or closed) to cfg's server, AUTH and SELECT as
 * configured; or, with `host`, to that cluster node (AUTH, never SELECT).
 * Errors: ECONN, ETIMEDOUT, ESERVER (AUTH/SELECT refused, with the
 * server's words), ENOMEM. */
int cachet_conn_connect(cachet_conn *cn, const cachet_config *cfg,
                        const char *host, int port);
/* Close it; it can be connected again. */
void cachet_conn_close(cachet_conn *cn);
/* Mark it broken, e.g. after a reply of an unexpected shape. */
void cachet_conn_break(cachet_conn *cn);

/* Pipelining: append commands, send them (flush, or the first read does),
 * then read their replies in order. A reply is returned whatever its type,
 * error replies included; only I/O failures are errors (ECONN, ETIMEDOUT,
 * EPROTO, ENOMEM), and they break the connection. */
int cachet_conn_append(cachet_conn *cn, int argc, const char **argv,
                       const size_t *lens);
int cachet_conn_flush(cachet_conn *cn);
int cachet_conn_read(cachet_conn *cn, redisReply **out);
/* One command and its reply. */
int cachet_conn_exchange(cachet_conn *cn, int argc, const char **argv,
                         const size_t *lens, redisReply **out);

/* Send as much of hiredis's output buffer as the socket takes, with
 * send(MSG_NOSIGNAL) so that a closed connection raises no SIGPIPE, and drop
 * what was sent. Returns 0 when all of it went, else the errno that stopped
 * it (EAGAIN/EWOULDBLOCK: the socket is full, or its send timeout ran out).
 * Shared by the sync exchanges and the async write event. */
int cachet_obuf_send(redisContext *ctx);

#endif
