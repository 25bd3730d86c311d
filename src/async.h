/* The async driver: machines (op.h) run on the user's libevent loop.
 * Internal; see include/cachet.h ("Async API") and docs/DESIGN.md.
 *
 * A public call becomes a run: a machine plus what the loop needs to drive
 * it (the outcomes of its current SEND, its timer, how to deliver its
 * result). The driver owns its connections: a non-blocking socket, an
 * output buffer sent with send(MSG_NOSIGNAL), and a bounded hiredis reader
 * (reader.h); each connection answers in order, so a queue of what it owes
 * matches every reply to its command. In a cluster there is one connection
 * per master, routed by the router the sync handle shares (router.h).
 *
 * Lifetimes. A run is freed once its result was delivered and no
 * connection still owes it a reply; the handle once it was closed and no
 * run is left. Nothing libevent may still call into is freed first.
 *
 * Without libevent, async_none.c stands in for async.c: no handle can be
 * opened, and every call says why (ENOTSUP). */
#ifndef CACHET_ASYNC_H
#define CACHET_ASYNC_H

#include <stddef.h>
#include <stdint.h>

#include "handle.h"
#include "op.h"

struct event;
struct event_base;
typedef struct arun arun;

enum { A_COUNT_ALL, A_COUNT_FATAL, A_COUNT_NONE };

/* How a run's result reaches the user: the API layer's (async_api.c). */
typedef struct arun_kind {
  const char *name;
  /* Which errors the metrics count: every one (A_COUNT_ALL); a batch's
   * fatal ones only, the others being counted with their entry
   * (A_COUNT_FATAL); none, for the driver's own runs (A_COUNT_NONE). */
  int count;
  /* Call the user's callback with `rc` (the thread's detail is set). */
  void (*deliver)(arun *r, int rc);
  /* Free what the kind allocated beside the machine. May be NULL. */
  void (*cleanup)(arun *r);
} arun_kind;

struct arun {
  cachet_async *a;
  arun *prev, *next; /* the handle's runs not yet delivered */
  const arun_kind *k;
  cachet_op *op; /* the machine, inside the kind's allocation */
  void (*cb)(void);
  void *ud;
  /* The current step. */
  cachet_out out;
  cachet_res *res;
  struct acmd *cmds;
  size_t cap, waiting;
  unsigned gen; /* which SEND: a reply to an earlier one is ignored */
  int nodes;
  const char **names;
  struct event *ev; /* reply deadline, sleep, or deferred delivery */
  int tmode;
  uint64_t map_ask; /* the slot-map ask in flight when it began to wait */
  int refs;         /* connection queue entries that point here */
  int busy;         /* > 0 while code up the stack uses it */
  unsigned done : 1, listed : 1, starting : 1, stepping : 1;
  int result;
  char detail[512];
  struct aload *load; /* get_or_set: the loader in flight */
};

/* Allocate a run of kind `k` with `size` bytes for the caller (the kind's
 * struct starts with the arun) around machine `op`, which must live in
 * those bytes. NULL (ENOMEM set). */
arun *cachet_arun_new(cachet_async *a, const arun_kind *k, size_t size,
                      void (*cb)(void), void *ud);
/* Start it: its first step runs now; a result decided inside this call is
 * delivered from the loop, never from the call. */
void cachet_arun_start(arun *r, cachet_op *op);
/* Free a run never started. */
void cachet_arun_discard(arun *r);
/* An async handle over sync handle `c`: the same configuration, router
 * and counters. With `own` the handle closes c; without, c must outlive
 * it (the tests run the sync suites through the driver this way). */
int cachet_async_over(cachet_async **out, struct event_base *base, cachet *c,
                      int own);
/* ECONN "closed" when the handle is closing, else CACHET_OK. */
int cachet_async_usable(const cachet_async *a);
cachet *cachet_async_handle(cachet_async *a);

#endif
