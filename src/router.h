/* Redis Cluster routing: the slot map and the redirections. Internal, and
 * without I/O: the sync link (link.c) and the async driver (async.c) ask
 * nodes for CLUSTER SLOTS their own way and hand the reply here.
 *
 * The map (slot -> node) is loaded by the first operation and refreshed
 * after a MOVED (the one slot is fixed at once, the rest follows), a
 * CLUSTERDOWN, or an I/O error on a node; refreshes are at most one per
 * CACHET_REFRESH_MIN_MS, so a dead node does not turn every call into a
 * CLUSTER SLOTS. Nodes are never removed while the handle lives (an index
 * stays valid), and a cluster has few. Thread-safe: one mutex. */
#ifndef CACHET_ROUTER_H
#define CACHET_ROUTER_H

#include <hiredis/hiredis.h>
#include <stdint.h>

#include "crc16.h"

#define CACHET_ROUTER_NODES 1024
#define CACHET_REFRESH_MIN_MS 100
/* Redirections followed per command. */
#define CACHET_REDIRECTS 16

typedef struct cachet_router cachet_router;

/* Seeds: "host:port[,host:port...]" (IPv6 in brackets). ECONFIG, ENOMEM. */
int cachet_router_create(const char *seeds, cachet_router **out);
void cachet_router_destroy(cachet_router *rt);

/* A node's address and "host:port" (valid for the router's life). */
const char *cachet_router_host(cachet_router *rt, int node, int *port);
const char *cachet_router_name(cachet_router *rt, int node);

/* The node serving `slot`, or the first master for slot < 0; -1 when the
 * map has none (and it is marked stale). */
int cachet_router_route(cachet_router *rt, int slot);

/* The masters in slot order into out[0..cap): how many. */
int cachet_router_masters(cachet_router *rt, int *out, int cap);

/* Does the map need loading (no map yet) or refreshing (stale and the last
 * refresh is old enough)? *gen is the generation to pass to apply. */
int cachet_router_due(cachet_router *rt, int64_t now_ms, uint64_t *gen);
/* Which nodes to ask, best first (masters, then seeds): how many. */
int cachet_router_candidates(cachet_router *rt, int *out, int cap);
/* A CLUSTER SLOTS reply from node `asked`: the new map, unless another
 * refresh already replaced generation `gen`. EPROTO for a malformed reply.
 * `failed` (no node answered): only note the time, so that the next
 * attempt waits. */
int cachet_router_apply(cachet_router *rt, uint64_t gen, int asked,
                        const redisReply *r, int64_t now_ms);
void cachet_router_failed(cachet_router *rt, int64_t now_ms);
void cachet_router_stale(cachet_router *rt);

/* What an error reply asks of the router. */
enum {
  CACHET_R_NONE,
  CACHET_R_MOVED,
  CACHET_R_ASK,
  CACHET_R_TRYAGAIN,
  CACHET_R_DOWN
};
int cachet_redirect_kind(const redisReply *r);
/* "MOVED <slot> <host>:<port>" or "ASK ...": the target node (added if new;
 * an empty host is the node `from` that answered). MOVED also fixes the
 * slot and marks the map stale. -1 (detail set) when malformed. */
int cachet_router_redirect(cachet_router *rt, const redisReply *r, int from);

/* The slot of a command's first key (KEYS[1] of EVAL/EVALSHA), or -1 for
 * a command without one. */
int cachet_command_slot(int argc, const char **argv, const size_t *lens);

#endif
