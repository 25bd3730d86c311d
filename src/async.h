/* The async API's machinery: the handle, its connection, and operations.
 * Internal; see include/cachet.h ("Async API") and docs/DESIGN.md.
 *
 * One handle drives one hiredis redisAsyncContext at a time on the user's
 * libevent loop. Every public call becomes an operation (`aop`): a small
 * state machine that sends commands, receives their replies in order (a
 * connection answers in the order it was asked, so an operation never needs
 * to match replies to commands), and ends by delivering its result exactly
 * once. Operations that are built from others (mset, get_or_set) run child
 * operations and hear of their results instead of a user callback.
 *
 * Lifetimes. An operation is freed once its result was delivered and hiredis
 * holds no callback for it any more (`pending` == 0). A connection record is
 * freed once it is dead and hiredis holds no callback for it. The handle is
 * freed once it was closed and no operation is left. So nothing hiredis or
 * libevent may still call into is ever freed first. */
#ifndef CACHET_ASYNC_H
#define CACHET_ASYNC_H

#ifdef CACHET_HAVE_LIBEVENT

#include <event2/event.h>
#include <hiredis/async.h>
#include <stddef.h>
#include <stdint.h>

#include "cachet_scripts.h"
#include "handle.h"
#include "reader.h"

typedef struct aop aop;
typedef struct aconn aconn;

/* What a timer event of an operation is waiting for. */
enum {
  AOP_TM_NONE,
  AOP_TM_REPLY,  /* the replies of the current step: timeout_ms */
  AOP_TM_SLEEP,  /* a backoff sleep between attempts */
  AOP_TM_LOADER, /* get_or_set: the loader's deadline */
  AOP_TM_DEFER   /* a result decided inside the call that started it */
};

/* What one kind of operation does. */
typedef struct aop_kind {
  const char *name;
  /* A reply to one of the operation's commands, never NULL (a lost
   * connection fails the operation instead). Error replies included. */
  void (*reply)(aop *op, redisReply *r);
  /* Re-send the current step's script call after SCRIPT LOAD (NOSCRIPT). */
  void (*resend)(aop *op);
  /* An AOP_TM_SLEEP or AOP_TM_LOADER timer fired. */
  void (*timer)(aop *op);
  /* Hand the result over: the user's callback, or the parent's. The
   * thread-local error detail is set for `rc`. */
  void (*deliver)(aop *op, int rc);
  /* Stop anything of the kind's own that could still call in (extra
   * events, a loader's completion token). Called once, when the result is
   * decided. May be NULL. */
  void (*stop)(aop *op);
  /* Free what the kind allocated. May be NULL. */
  void (*cleanup)(aop *op);
} aop_kind;

/* A user callback, stored untyped (each kind casts it back). */
typedef void (*aop_cb)(void);

/* A child operation reports to its parent through this. */
typedef void (*aop_child_fn)(aop *parent, aop *child, int rc);

struct aop {
  const aop_kind *k;
  struct cachet_async *a;
  aop *prev, *next; /* the handle's list of undelivered operations */
  aop *parent;      /* NULL for an operation the user started */
  aop_child_fn child_done;
  aop_cb cb; /* the user's callback (a cachet_async_*_cb) */
  void *ud;
  int pending;         /* hiredis callbacks still to come for this operation */
  int busy;            /* > 0 while code up the stack still uses the struct */
  int children;        /* child operations not yet delivered */
  int tmode;           /* AOP_TM_* of `ev` */
  int script_id;       /* script of the current step, -1 for plain commands */
  int expect_load;     /* SCRIPT LOAD replies that come next */
  unsigned done : 1;   /* the result is decided */
  unsigned listed : 1; /* on the handle's list (result not delivered) */
  unsigned starting : 1; /* inside the public call that created it */
  unsigned reloaded : 1; /* NOSCRIPT recovery used for the current call */
  unsigned resending : 1;
  unsigned counted : 1; /* the error was counted in the metrics already */
  int deferred_rc;
  char *deferred_detail;
  struct event *ev; /* the operation's timer (see tmode) */
};

/* A connection: one redisAsyncContext and what is known about its end. */
struct aconn {
  struct cachet_async *a; /* NULL once dead */
  redisAsyncContext *ac;
  int pending; /* hiredis callbacks still to come for it */
  int dead;
  int rc; /* why it died */
  char detail[512];
  int *lost; /* set to 1 when it dies inside a read or write event */
  cachet_reader_bound bound; /* what the server may make us buffer */
};

struct cachet_async {
  cachet *c; /* configuration, keyring and counters (a sync handle) */
  struct event_base *base;
  void *data;
  aconn *conn; /* the live connection, or NULL: the next command connects */
  aop *head, *tail;
  size_t nops;                    /* operations allocated and not yet freed */
  const struct timeval *reply_tv; /* timeout_ms, a libevent common timeout */
  struct timeval reply_tv_plain;
  int guard_sigpipe;
  int closing;
  int in_close;
};

/* ---- Operations ---------------------------------------------------------
 * A kind's struct starts with an `aop`. op_new allocates `size` bytes plus
 * storage for `nevents` libevent events; event 0 is op->ev, the others
 * come from op_event() and call `extra_cb` with the operation. */
aop *cachet_aop_new(struct cachet_async *a, const aop_kind *k, size_t size,
                    int nevents, event_callback_fn extra_cb, aop_cb cb,
                    void *ud);
/* Hold / let go of an operation across code that may deliver its result
 * (a loader's completion, for one): it is not freed while held. */
void cachet_aop_hold(aop *op);
void cachet_aop_unhold(aop *op);
/* Free an operation that was never started (no callback is called). */
void cachet_aop_discard(aop *op);
struct event *cachet_aop_event(aop *op, int i);
/* Make `child` report to `parent` (call right after cachet_aop_new). */
void cachet_aop_adopt(aop *parent, aop *child, aop_child_fn fn);

/* Send one command as part of the operation; the first command of a step
 * arms the reply timer. Returns CACHET_OK or ECONN/ENOMEM with a detail
 * (the operation is not failed: the caller decides). */
int cachet_aop_send(aop *op, int argc, const char **argv, const size_t *lens);
/* EVALSHA of script `id` (args: keys, then arguments), with NOSCRIPT
 * recovery: SCRIPT LOAD, then k->resend. */
int cachet_aop_script(aop *op, cachet_script_id id, int nkeys, int nargs,
                      const char *const *args, const size_t *lens);
/* Sleep `ms` (AOP_TM_SLEEP), or arm the loader deadline (AOP_TM_LOADER). */
void cachet_aop_timer(aop *op, int tmode, int64_t ms);

/* Decide the result. The error detail for `rc` must be the calling
 * thread's current one (cachet_fail just before). Inside the call that
 * started the operation the result is delivered from the loop instead. */
void cachet_aop_finish(aop *op, int rc);
/* Shorthand for a reply of an unexpected shape: EPROTO. */
void cachet_aop_proto(aop *op, const char *what);
/* An error reply: ESERVER with the server's words. */
void cachet_aop_server_error(aop *op, const redisReply *r);

/* Start an operation's first step with op->starting set; returns
 * CACHET_OK (the operation now owns its result). */
void cachet_aop_start(aop *op, void (*step)(aop *op));

/* Take a string reply's buffer (malloc'd by hiredis, len + 1 bytes). */
char *cachet_reply_take(redisReply *r);

/* ---- Pieces the operations share (async_entry.c) ----------------------- */

/* What an entry operation does: */
enum {
  CACHET_AOP_SET,    /* set_tags */
  CACHET_AOP_DELETE, /* delete_entry */
  /* An untagged write: a plain SET, then untag.lua only when the entry had
   * a tag set (entry.c's and batch.c's plain path). A value to be staged
   * is written as CACHET_AOP_SET. Needs ntags == 0. */
  CACHET_AOP_PLAIN
};

/* An entry write or delete (CACHET_AOP_*) as an operation. The arguments
 * must be checked already; they are copied. Its result goes to `cb`
 * (cachet_async_status_cb) or, for a child, to the parent. */
aop *cachet_aop_entry_new(struct cachet_async *a, int mode, const void *key,
                          size_t keylen, const void *val, size_t len,
                          int64_t ttl_ms, const char *const *tags, size_t ntags,
                          aop_cb cb, void *ud, int *rc);
void cachet_aop_entry_step(aop *op);

/* GET reply handling shared by get, mget and get_or_set: CACHET_OK with
 * *val (malloc'd, NUL after len; the caller frees), CACHET_MISS, or an
 * error with its detail. Counts hits and misses (misses only when
 * count_miss). */
int cachet_async_value_reply(cachet *c, redisReply *r, const char *rkey,
                             size_t rkeylen, int count_miss, void **val,
                             size_t *len);

#endif /* CACHET_HAVE_LIBEVENT */
#endif
