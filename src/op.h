/* Operations as state machines, without I/O. Internal.
 *
 * Every operation that takes more than one round trip, or a wait, is a
 * machine of this one shape (the "sans-I/O" style of hiredis's own reader):
 * it is fed the outcomes of the commands it asked for, and says what to do
 * next. Two drivers move its bytes and its time: the sync runner (run.c), on
 * the calling thread, and the async loop (async.c). Neither holds protocol
 * logic, so an operation exists once for both APIs, and a unit test drives
 * a machine with replies it builds itself, without a server.
 *
 * A step. The driver calls op->k->step(op, &in, &out) and looks at what it
 * returns:
 *   CACHET_DO_SEND   send out->cmds[0..n) as one pipeline, then step again
 *                    with one outcome per command in in->res (in order);
 *   CACHET_DO_SLEEP  wait out->ms, then step again with in->res NULL;
 *   CACHET_DO_LOAD   run the user's loader described by out->load (see
 *                    op_gos.c), then step again with in->res NULL;
 *   CACHET_DO_DONE   finished with out->status; after an error the calling
 *                    thread's detail (cachet_last_error) says why.
 * The first call has in->res NULL.
 *
 * What drivers do for every machine, so that no machine has to:
 *  - route each command: by the hash slot of its first key (KEYS[1] for
 *    EVALSHA), or to master `node` of a snapshot taken when the operation
 *    started (in->nodes masters; 1 on a single server);
 *  - recover a NOSCRIPT answer to an EVALSHA (SCRIPT LOAD on that node, then
 *    the command again), and follow MOVED, ASK, TRYAGAIN and CLUSTERDOWN:
 *    a machine never sees them. A command sent again runs after the others
 *    of its pipeline, so a machine only pipelines commands that commute;
 *  - bound each pipeline's replies by timeout_ms, and treat a connection
 *    that failed (I/O, timeout, EPROTO from the machine) as broken: the
 *    next SEND goes over a fresh one.
 *
 * Commands stay valid until the next step call (drivers resend them on
 * NOSCRIPT or a redirect). Replies belong to the driver and are valid during
 * the step; a machine may take one by setting its pointer to NULL.
 */
#ifndef CACHET_OP_H
#define CACHET_OP_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "cachet_scripts.h"
#include "handle.h"
#include "keys.h"

enum { CACHET_DO_SEND, CACHET_DO_SLEEP, CACHET_DO_LOAD, CACHET_DO_DONE };

/* How often a driver loads a script and sends a command again after
 * NOSCRIPT without any of them running: twice, since a SCRIPT FLUSH may
 * land between the load and the command. */
#define CACHET_NOSCRIPT_ROUNDS 2

/* Route by the command's first key. */
#define CACHET_ROUTE_KEY (-1)

typedef struct cachet_cmd {
  int argc;
  const char **argv;
  const size_t *lens;
  int node;   /* CACHET_ROUTE_KEY, or a master 0 .. in->nodes-1 */
  int script; /* the script of an EVALSHA (NOSCRIPT recovery), else -1 */
} cachet_cmd;

/* What became of one command. */
typedef struct cachet_res {
  int status;         /* CACHET_OK: `reply` is the server's answer, error
                         replies included; else the transport failed
                         (ECONN, ETIMEDOUT, EPROTO, ENOMEM) */
  redisReply *reply;  /* NULL unless status is OK */
  const char *detail; /* why, when status is not OK */
} cachet_res;

typedef struct cachet_in {
  int64_t now;              /* monotonic milliseconds */
  int nodes;                /* masters: 1 on a single server */
  const char *const *names; /* "host:port" of each master, for messages */
  cachet_res *res;          /* the last SEND's outcomes, or NULL */
  size_t n;
} cachet_in;

typedef struct cachet_load cachet_load; /* op_gos.c */

typedef struct cachet_out {
  const cachet_cmd *cmds; /* SEND */
  size_t n;
  int64_t ms;        /* SLEEP */
  cachet_load *load; /* LOAD */
  int status;        /* DONE */
} cachet_out;

typedef struct cachet_op cachet_op;

typedef struct cachet_op_kind {
  const char *name; /* for messages: "set", "evict-tags" ... */
  int (*step)(cachet_op *op, const cachet_in *in, cachet_out *out);
  void (*free)(cachet_op *op); /* what the machine owns; not op itself */
  /* 1: every step is a command or two with no state on the connection, so
   * a handle with multiplexed connections sends them there (mux.h). */
  int multiplex;
} cachet_op_kind;

/* The commands of one SEND, built in place: arguments are either borrowed
 * (they must live until the next step) or copied into the builder's arena,
 * which is addressed by offset until cachet_cmds_done. */
typedef struct cachet_cmds {
  cachet_cmd *cmd;
  size_t n, cap;
  const char **argv;
  size_t *lens;
  unsigned char *own; /* argv[i] is an arena offset */
  size_t nargs, acap;
  char *arena;
  size_t used, arenacap;
  int oom;
} cachet_cmds;

struct cachet_op {
  const cachet_op_kind *k;
  cachet *c;
  int state;        /* the machine's own */
  cachet_cmds cmds; /* the commands of the current SEND */
};

/* Zero a machine of `size` bytes (op at its start) and make it a `k` on c:
 * the first line of every machine's init. */
void cachet_op_begin(cachet_op *op, size_t size, const cachet_op_kind *k,
                     cachet *c);

/* Start a command aimed at `node` (CACHET_ROUTE_KEY to route by key). */
void cachet_cmds_start(cachet_cmds *b, int node);
/* EVALSHA of script `id` with `nkeys` keys: push the keys, then ARGV. */
void cachet_cmds_script(cachet_cmds *b, int node, cachet_script_id id,
                        size_t nkeys);
/* Room for that many more commands, arguments and arena bytes at once: a
 * large SEND grows its arrays once instead of doubling its way up. */
void cachet_cmds_reserve(cachet_cmds *b, size_t ncmds, size_t nargs,
                         size_t bytes);
void cachet_cmds_arg(cachet_cmds *b, const void *p, size_t len); /* borrowed */
void cachet_cmds_str(cachet_cmds *b, const char *s);             /* borrowed */
void cachet_cmds_copy(cachet_cmds *b, const void *p, size_t len);
void cachet_cmds_int(cachet_cmds *b, long long v);
/* A whole command of one key, routed by it: `verb key` (both borrowed). */
void cachet_cmds_key1(cachet_cmds *b, const char *verb, const void *key,
                      size_t len);
/* <prefix>{bb}<kind>:<name>, copied. */
void cachet_cmds_key(cachet_cmds *b, const cachet *c, char kind,
                     unsigned bucket, const void *name, size_t len);
/* Finish: out->cmds and out->n, and CACHET_DO_SEND; or ENOMEM as DONE. */
int cachet_cmds_send(cachet_cmds *b, cachet_out *out);
void cachet_cmds_free(cachet_cmds *b);

/* After a write has its reply (whatever it was: a write that failed may
 * still have landed), drop the near cache's copies of what it wrote, so
 * that the handle's next read never waits for Redis's echo (near.h). Of
 * the value key `vk`; of the user key `key`; of every value key among a
 * command's arguments. No-ops without a near cache. */
void cachet_near_forget(cachet *c, const char *vk, size_t len);
/* A read's use of the near cache (get, get_or_set): before its GET, the
 * copy of value key `vk` (CACHET_OK, counted as a hit; *val malloc'd),
 * else CACHET_MISS with *ticket for the fill (0: none), or ENOMEM. After
 * the GET's decoding (status rc, the value and its envelope's expiry):
 * fill the copy, or give the ticket up; *ticket becomes 0. */
int cachet_near_lookup(cachet *c, const cachet_key *vk, void **val, size_t *len,
                       uint64_t *ticket);
void cachet_near_settle(cachet *c, const cachet_key *vk, uint64_t *ticket,
                        int rc, const void *val, size_t len,
                        int64_t expires_ms);
void cachet_near_forget_key(cachet *c, const void *key, size_t keylen);
void cachet_near_forget_cmd(cachet *c, const cachet_cmd *cmd);

/* Finish the operation with `status`; the detail must already be set for
 * an error (cachet_fail). */
int cachet_op_done(cachet_out *out, int status);
/* Finish with a formatted error. */
int cachet_op_fail(cachet_out *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- Reading outcomes ----------------------------------------------------
 * One home for each rule: a transport failure is its own status with the
 * driver's detail; an error reply is CACHET_ESERVER with the server's words;
 * a reply of another shape than expected is CACHET_EPROTO (and the driver
 * then drops the connection). */

/* CACHET_OK when the command got a reply that is not an error; else the
 * status and detail that say why (for `what`, e.g. "evict_chunk"). */
int cachet_res_ok(const cachet_res *r);
/* EPROTO: "<what>: unexpected reply". */
int cachet_res_proto(const char *what);
/* The reply is an integer: *v. Else as cachet_res_ok, or EPROTO. */
int cachet_res_int(const cachet_res *r, const char *what, long long *v);
/* An array of strings (SMEMBERS, ZRANGE, a SCAN page). */
int cachet_reply_strings(const redisReply *r);

/* The GET decoder: the reply to GET of value key `rkey`. CACHET_OK with
 * *val (malloc'd, NUL after len; the caller frees), CACHET_MISS, or an
 * error (transport, ESERVER, EPROTO for another type, or what the envelope
 * says). Takes the reply's buffer instead of copying it. Counts hits, and
 * misses when count_miss. `expires_ms` (may be NULL): the envelope's
 * expiry, on CACHET_OK. */
int cachet_res_value(cachet *c, cachet_res *r, const char *rkey, size_t rkeylen,
                     int count_miss, void **val, size_t *len,
                     int64_t *expires_ms);

/* Tag names of a tag set (SMEMBERS reply) or of a {"retag", tag...} reply
 * from element `from`: each a non-empty string without NUL, else ECORRUPT
 * ("an entry's tag set holds a malformed tag name"). */
int cachet_reply_tag_names(const redisReply *r, size_t from);
/* 1 if r is the error NOSCRIPT (a driver's to recover). */
int cachet_reply_is_noscript(const redisReply *r);
/* The reply to SCRIPT LOAD of script `id`: CACHET_OK when the server now
 * holds it under the embedded SHA1; ESERVER in the server's words when it
 * refused (out of memory, an ACL); EINTERNAL for another SHA1. Counts a
 * load that happened in c's script_reloads. Both drivers use it. */
int cachet_script_loaded(cachet *c, const redisReply *r, int id);
/* 1 if r is {"retag", ...}. */
int cachet_reply_is_retag(const redisReply *r);

/* The user's progress callback, if any. */
void cachet_progress(cachet *c, const char *op, uint64_t done);

#endif
