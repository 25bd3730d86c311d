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
/* As cachet_conn_read, but an error reply is CACHET_OK with the reply (a
 * cluster still follows MOVED, ASK, TRYAGAIN and CLUSTERDOWN). */
int cachet_conn_read_raw(cachet_conn *cn, redisReply **out);
/* Append a command for master `node` of the last cachet_conn_nodes
 * snapshot (0 on a single server), without routing or redirection. */
int cachet_conn_append_node(cachet_conn *cn, int node, int argc,
                            const char **argv, const size_t *lens);
/* Which node gave the last reply (an id for cachet_conn_command_at), and a
 * command sent there: the script registry loads a script where NOSCRIPT was
 * said. */
int cachet_conn_last_node(const cachet_conn *cn);
int cachet_conn_command_at(cachet_conn *cn, int node, int argc,
                           const char **argv, const size_t *lens,
                           redisReply **out);

/* Send as much of hiredis's output buffer as the socket takes, with
 * send(MSG_NOSIGNAL) so that a closed connection raises no SIGPIPE, and drop
 * what was sent. Returns 0 when all of it went, else the errno that stopped
 * it (EAGAIN/EWOULDBLOCK: the socket is full, or its send timeout ran out).
 * Shared by the sync exchanges and the async write event. */
int cachet_obuf_send(redisContext *ctx);

/* Mark a connection broken, e.g. after a reply of an unexpected shape that
 * leaves the pipeline out of step. */
void cachet_conn_break(cachet_conn *cn);

/* The server's reply text of the last ESERVER on this thread starts with
 * `code` (e.g. "NOSCRIPT"). */
int cachet_server_error_is(const char *code);

/* ---- Redis Cluster -------------------------------------------------------
 *
 * In cluster mode a borrowed connection is a routing session (cluster.c):
 * cachet_conn_command, _append and _read send each command to the master
 * that serves the hash slot of its first key (argv[1], or the first KEYS
 * entry of EVAL/EVALSHA), borrowing one connection per node from that
 * node's pool as needed, following MOVED and ASK and waiting out TRYAGAIN
 * and CLUSTERDOWN (bounded by timeout_ms). Pipelined replies come back in
 * append order, whichever nodes answer them. Commands without a key go to
 * one master; commands meant for every master use the node API below. In
 * standalone mode these calls address the one server. */

/* 1 if the handle talks to a Redis Cluster. */
int cachet_conn_clustered(const cachet_conn *cn);

/* The number of masters (1 standalone), taken as a snapshot that numbers
 * them 0..n-1 for cachet_conn_command_node until the next call. Negative:
 * an error (no node reachable to learn the slot map). */
int cachet_conn_nodes(cachet_conn *cn);

/* Send one command to master `node` of the last snapshot, without routing
 * or redirection. Same reply mapping as cachet_conn_command. */
int cachet_conn_command_node(cachet_conn *cn, int node, int argc,
                             const char **argv, const size_t *lens,
                             redisReply **out);

/* "host:port" of master `node` of the last snapshot, for messages. */
const char *cachet_conn_node_name(cachet_conn *cn, int node);

/* Send one command to the node that answered the last command or pipelined
 * reply on this connection (standalone: the server). The script registry
 * uses it to SCRIPT LOAD where NOSCRIPT was said. */
int cachet_conn_command_last(cachet_conn *cn, int argc, const char **argv,
                             const size_t *lens, redisReply **out);

/* ---- For cluster.c only: pools per node and raw node connections -------- */

typedef struct cachet_endpoint cachet_endpoint;

/* A pool of `size` connections to host:port (AUTH as configured, never
 * SELECT: a cluster has database 0 only). */
int cachet_endpoint_create(cachet *c, const char *host, int port, int size,
                           cachet_endpoint **out);
void cachet_endpoint_destroy(cachet_endpoint *ep);
/* Borrow a connected connection (bounded wait) / give it back. */
int cachet_endpoint_acquire(cachet_endpoint *ep, cachet_conn **out);
void cachet_endpoint_release(cachet_conn *cn);

/* Raw exchanges on one node connection: an error reply is returned as a
 * reply (CACHET_OK, type REDIS_REPLY_ERROR) so that the router can see
 * MOVED and ASK; I/O failures break the connection as usual. */
int cachet_node_command(cachet_conn *cn, int argc, const char **argv,
                        const size_t *lens, redisReply **out);
int cachet_node_append(cachet_conn *cn, int argc, const char **argv,
                       const size_t *lens);
int cachet_node_read(cachet_conn *cn, redisReply **out);
/* Write out what was appended, so that several nodes work in parallel. */
int cachet_node_flush(cachet_conn *cn);
/* Turn an error reply into CACHET_ESERVER with its text; frees it. */
int cachet_node_error(redisReply *r);

#endif
