/* One connection to one Redis server, used by one thread at a time.
 * Internal.
 *
 * A pool hands it out whole. It formats commands into its own output
 * buffer (resp.h), moves bytes through a cachet_sock (plaintext or TLS),
 * and parses replies with a bounded hiredis reader (reader.h). Every wait
 * is bounded by timeout_ms. A connection that saw an I/O error, a timeout
 * or a protocol error is broken, and its owner closes it. */
#ifndef CACHET_CONN_H
#define CACHET_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "config.h"
#include "reader.h"
#include "sock.h"

/* The commands a new connection sends before any other: AUTH (with the
 * user name when one is set), then SELECT, never to a cluster node. Both
 * drivers send these; a refusal is reported as "<what> refused: ...". */
typedef struct cachet_setup {
  int n;
  int argc[2];
  const char *argv[2][3];
  size_t lens[2][3];
  const char *what[2];
  char db[16];
} cachet_setup;
void cachet_setup_commands(const cachet_config *cfg, int node, cachet_setup *s);

/* A zeroed connection is a closed one. */
typedef struct cachet_conn {
  cachet_sock s;
  redisReader *reader;
  char *out; /* commands not sent yet */
  size_t olen, ocap;
  int broken;
  int timeout_ms;
  size_t pending;            /* replies owed */
  cachet_reader_bound bound; /* what the server may make us buffer */
  /* Set by the owner, kept by connect and close: a descriptor that turns
   * readable when every wait must end at once (ECONN, "stopped"), or NULL.
   * The near cache's feeds use it so that closing a handle never waits out
   * timeout_ms on a server that does not answer (track.c). */
  const int *stop_fd;
} cachet_conn;

/* Connect `cn` (zeroed, or closed) to cfg's server, AUTH and SELECT as
 * configured; or, with `host`, to that cluster node (AUTH, never SELECT).
 * With `tls`, over TLS. Errors: ECONN (with why: refused, a certificate
 * that does not verify ...), ETIMEDOUT, ESERVER (AUTH/SELECT refused, with
 * the server's words), ENOMEM. */
int cachet_conn_connect(cachet_conn *cn, const cachet_config *cfg,
                        const cachet_tls *tls, const char *host, int port);
int cachet_conn_connected(const cachet_conn *cn);
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

#endif
