/* What a sync call borrows: a link to the server or the cluster. Internal.
 *
 * A handle has pool_size links. On a single server a link is one
 * connection, kept across borrows. In a cluster it is a routing session:
 * each command goes to the master that serves the hash slot of its first
 * key (argv[1], or KEYS[1] of EVALSHA), or to a given master of a snapshot,
 * over one connection per master borrowed from that master's pool as
 * needed. MOVED and ASK are followed, TRYAGAIN and CLUSTERDOWN waited out
 * (bounded by timeout_ms), and a pipelined reply still comes back in append
 * order. The slot map is the router's (router.h); this layer loads it with
 * blocking CLUSTER SLOTS. */
#ifndef CACHET_LINK_H
#define CACHET_LINK_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "handle.h"
#include "router.h"

typedef struct cachet_link cachet_link;

/* The handle's links (c->links). ENOMEM, ECONFIG (bad seeds). */
int cachet_links_create(cachet *c);
void cachet_links_destroy(cachet *c);
/* The handle's router, or NULL on a single server. */
cachet_router *cachet_links_router(cachet *c);
/* In a cluster, load the slot map if it is due, as a borrow does, but
 * without taking a link: for a background thread (the near cache's feed),
 * which must not hold one of the pool_size links the callers share. The
 * refresh uses the spare connection each master's pool keeps for it.
 * CACHET_OK (also when a stale map is kept), else as cachet_link_acquire. */
int cachet_links_refresh(cachet *c);

/* Borrow a link, waiting at most timeout_ms for a free one. On a single
 * server it is connected (AUTH, SELECT); in a cluster the slot map is
 * loaded if there is none yet. ETIMEDOUT, ECONN, ESERVER, ENOMEM. */
int cachet_link_acquire(cachet *c, cachet_link **out);
/* Give it back; broken connections, and any that still owe replies, are
 * closed. NULL is a no-op. */
void cachet_link_release(cachet *c, cachet_link *l);
/* The caller lost step with the replies: refuse further commands until the
 * link goes back, then close its connections. */
void cachet_link_break(cachet_link *l);

/* The number of masters (1 on a single server), taken as a snapshot that
 * numbers them 0..n-1 until the next call; negative: an error. */
int cachet_link_nodes(cachet_link *l);
/* "host:port" of master `node` of the snapshot ("server" on a single
 * server), valid as long as the handle. */
const char *cachet_link_node_name(cachet_link *l, int node);

/* Pipelining. Append a command routed by its key (node < 0) or for master
 * `node` of the snapshot, which then never follows a redirection; then
 * read the replies in append order. A reply is returned whatever its type
 * (error replies included, redirections followed); only failures to reach
 * or hear a node are errors. A node that cannot be reached fails that
 * command's reply, not the pipeline. */
int cachet_link_append(cachet_link *l, int node, int argc, const char **argv,
                       const size_t *lens);
int cachet_link_read(cachet_link *l, redisReply **out);
/* Which node gave the last reply (an id for cachet_link_command_at), and
 * one command sent there: a script is loaded where NOSCRIPT was said. */
int cachet_link_last(const cachet_link *l);
int cachet_link_command_at(cachet_link *l, int node, int argc,
                           const char **argv, const size_t *lens,
                           redisReply **out);
/* One command, routed; an error reply is CACHET_ESERVER with the server's
 * words. For the single-command calls (GET, EXISTS, PTTL, PING). */
int cachet_link_command(cachet_link *l, int argc, const char **argv,
                        const size_t *lens, redisReply **out);

#endif
