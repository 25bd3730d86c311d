/* The get_or_set machine: read through the cache with one loader per key
 * across every process. Internal; see op.h, and docs/DESIGN.md
 * "get_or_set". */
#ifndef CACHET_OP_GOS_H
#define CACHET_OP_GOS_H

#include "op.h"
#include "op_entry.h"
#include "op_lock.h"

/* What a LOAD step asks of the driver: run the loader for `key` while the
 * stampede lock's lease is renewed every lease_ms/3, then fill in the
 * outcome and step again. */
struct cachet_load {
  const void *key;
  size_t keylen;
  int64_t ttl_ms;    /* in: the caller's TTL; out: the loader's */
  cachet_lock *lock; /* the lease to renew */
  int64_t lease_ms;
  cachet_loader_fn fn;        /* the sync loader (run.c), or */
  cachet_async_loader_fn afn; /* the async one (async.c) */
  void *ud;
  int64_t wait_ms; /* the async loader's deadline: fetch_wait_ms */
  /* The outcome. */
  int status; /* 0: *val holds the value; else the loader failed */
  void *val;  /* malloc'd; the machine takes it */
  size_t len;
  int lost;         /* LOCK_EXPIRED or LOCK_NOT_OWNER: the lease was lost */
  int start_failed; /* the driver could not start the renewals */
  int timed_out;    /* the async loader missed its deadline */
};

typedef struct cachet_op_gos {
  cachet_op op;
  void *key; /* owned copies */
  size_t keylen;
  char **tags;
  size_t ntags;
  cachet_key vk;
  int64_t ttl_ms, lease_ms, wait_ms, deadline, backoff;
  int waited;
  cachet_lock *lk;
  cachet_load load;
  cachet_op_lock lock;   /* child: take or release the stampede lock */
  cachet_op_entry write; /* child: the loaded value's write */
  int child;             /* which child runs, if any */
  int result;            /* kept across the release */
  char detail[512];
  void *val; /* the result, owned until taken */
  size_t len;
  uint64_t ticket;    /* the near cache's fill ticket, or 0 */
  int64_t expires_ms; /* the first GET's envelope expiry */
} cachet_op_gos;

/* Arguments are checked (EINVAL) and copied; ENOMEM or EINTERNAL (the
 * token). After an error there is nothing to run or free. For an async
 * loader, set x->load.afn after this (fn NULL). The machine's result is
 * cachet_get_or_set's; on CACHET_OK x->val/x->len hold the value (NUL
 * after len), which the caller takes by setting x->val to NULL. */
int cachet_op_gos_init(cachet_op_gos *x, cachet *c, const void *key,
                       size_t keylen, cachet_loader_fn fn, void *ud,
                       int64_t ttl_ms, const char *const *tags, size_t ntags);

#endif
