/* Redis Cluster: the slot map, the nodes' pools, and routing sessions.
 * Internal; conn.c is its only user (see conn.h, "Redis Cluster"). */
#ifndef CACHET_CLUSTER_H
#define CACHET_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "handle.h"

typedef struct cachet_cluster cachet_cluster;
typedef struct cachet_cluster_session cachet_cluster_session;

/* The handle's cluster state: the seeds from the configuration, no map yet
 * (it is loaded by the first borrower). */
int cachet_cluster_create(cachet *c, cachet_cluster **out);
/* NULL is a no-op. Every session must be freed first. */
void cachet_cluster_destroy(cachet_cluster *cl);

int cachet_cluster_session_new(cachet_cluster *cl,
                               cachet_cluster_session **out);
void cachet_cluster_session_free(cachet_cluster_session *s);

/* A borrow starts: load the slot map if there is none yet (ECONN when no
 * node answers CLUSTER SLOTS). */
int cachet_cluster_begin(cachet_cluster_session *s);
/* A borrow ends: node connections go back to their pools (closed if they
 * still owe replies or the session was broken). */
void cachet_cluster_end(cachet_cluster_session *s);
/* The caller lost step with the replies: refuse further commands until the
 * borrow ends, then close the node connections. */
void cachet_cluster_break(cachet_cluster_session *s);

/* Routed forms of cachet_conn_command, _append and _read. */
int cachet_cluster_command(cachet_cluster_session *s, int argc,
                           const char **argv, const size_t *lens,
                           redisReply **out);
int cachet_cluster_append(cachet_cluster_session *s, int argc,
                          const char **argv, const size_t *lens);
int cachet_cluster_append_node(cachet_cluster_session *s, int node, int argc,
                               const char **argv, const size_t *lens);
/* raw: error replies other than redirections come back as replies. */
int cachet_cluster_read(cachet_cluster_session *s, redisReply **out, int raw);
/* The cluster node of the last reply (-1 none), and a command to it. */
int cachet_cluster_last(const cachet_cluster_session *s);
int cachet_cluster_command_at(cachet_cluster_session *s, int node, int argc,
                              const char **argv, const size_t *lens,
                              redisReply **out);

/* The per-node API of conn.h. */
int cachet_cluster_nodes(cachet_cluster_session *s);
int cachet_cluster_command_node(cachet_cluster_session *s, int node, int argc,
                                const char **argv, const size_t *lens,
                                redisReply **out);
const char *cachet_cluster_node_name(cachet_cluster_session *s, int node);
int cachet_cluster_command_last(cachet_cluster_session *s, int argc,
                                const char **argv, const size_t *lens,
                                redisReply **out);

#endif
