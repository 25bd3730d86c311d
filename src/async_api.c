/* The async API (cachet.h "Async API"): each call is its sync twin's
 * machine, started on the loop by the driver (async.c).
 *
 * A call checks and copies its arguments with the same init functions as
 * the sync call, so it is refused for the same reasons in the same words,
 * then starts the run. Its result reaches the callback through the run's
 * kind: the deliver functions below read it out of the finished machine. */
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"
#include "entry.h"
#include "error.h"
#include "op_batch.h"
#include "op_entry.h"
#include "op_evict.h"
#include "op_gos.h"
#include "op_health.h"
#include "op_key.h"
#include "op_lock.h"
#include "op_scan.h"

/* A call: the run, what the kind keeps beside the machine, the machine. */
typedef struct call {
  arun r;
  cachet_lock *lk;          /* lock calls: the handle the machine uses */
  cachet_entry *e;          /* mget, mset: copies of the entries */
  cachet_async_item *items; /* ... and the callback's view of them */
  size_t n;
  void *copy; /* what e points into */
  alignas(max_align_t) unsigned char m[];
} call;

#define MACHINE(r, type) ((type *)(void *)((call *)(r))->m)

static void call_cleanup(arun *r) {
  call *cl = (call *)r;
  cachet_lock_free(cl->lk);
  for (size_t i = 0; cl->e != NULL && i < cl->n; i++)
    free(cl->e[i].out);
  free(cl->copy);
}

/* A call of kind `k` whose machine takes `size` bytes; ECONN when the
 * handle is closing, ENOMEM. */
static int call_new(cachet_async *a, const arun_kind *k, size_t size,
                    void (*cb)(void), void *ud, call **out) {
  cachet_error_clear();
  int rc = cachet_async_usable(a);
  if (rc == CACHET_OK && (*out = (call *)cachet_arun_new(
                              a, k, sizeof(call) + size, cb, ud)) == NULL)
    rc = CACHET_ENOMEM;
  cachet *c = rc == CACHET_OK ? NULL : cachet_async_handle(a);
  return c != NULL ? cachet_result(c, rc) : rc;
}

/* Start the machine its init function prepared, or after `rc` from it,
 * give the call up (its callback is never called). */
static int launch(call *cl, int rc) {
  if (rc != CACHET_OK) {
    cachet *c = cachet_async_handle(cl->r.a);
    cachet_arun_discard(&cl->r);
    return cachet_result(c, rc);
  }
  cachet_arun_start(&cl->r, (cachet_op *)(void *)cl->m);
  return CACHET_OK;
}

#define CB(r, type) ((type)(void (*)(void))(r)->cb)

/* ---- get, exists, ttl --------------------------------------------------- */

static void value_deliver(arun *r, int rc) {
  cachet_op_key *x = MACHINE(r, cachet_op_key);
  CB(r, cachet_async_value_cb)
  (rc, rc == CACHET_OK ? x->val : NULL, rc == CACHET_OK ? x->len : 0, r->ud);
}

static void status_deliver(arun *r, int rc) {
  CB(r, cachet_async_status_cb)(rc, r->ud);
}

static void ttl_deliver(arun *r, int rc) {
  cachet_op_key *x = MACHINE(r, cachet_op_key);
  CB(r, cachet_async_ttl_cb)(rc, rc == CACHET_OK ? x->ttl_ms : 0, r->ud);
}

static const arun_kind get_kind = {"get", A_COUNT_ALL, value_deliver,
                                   call_cleanup};
static const arun_kind exists_kind = {"exists", A_COUNT_ALL, status_deliver,
                                      call_cleanup};
static const arun_kind ttl_kind = {"ttl", A_COUNT_ALL, ttl_deliver,
                                   call_cleanup};

static int key_call(cachet_async *a, const arun_kind *k, int cmd,
                    const void *key, size_t keylen, void (*cb)(void),
                    void *ud) {
  call *cl;
  int rc = call_new(a, k, sizeof(cachet_op_key), cb, ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  return launch(cl,
                cachet_op_key_init(MACHINE(cl, cachet_op_key),
                                   cachet_async_handle(a), cmd, key, keylen));
}

int cachet_async_get(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_value_cb cb, void *ud) {
  return key_call(a, &get_kind, CACHET_KEY_GET, key, keylen, (void (*)(void))cb,
                  ud);
}

int cachet_async_exists(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  return key_call(a, &exists_kind, CACHET_KEY_EXISTS, key, keylen,
                  (void (*)(void))cb, ud);
}

int cachet_async_ttl(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_ttl_cb cb, void *ud) {
  return key_call(a, &ttl_kind, CACHET_KEY_PTTL, key, keylen,
                  (void (*)(void))cb, ud);
}

/* ---- set, set_tags, delete ------------------------------------------------
 */

static const arun_kind entry_kind = {"set", A_COUNT_ALL, status_deliver,
                                     call_cleanup};

int cachet_async_set_tags(cachet_async *a, const void *key, size_t keylen,
                          const void *val, size_t len, int64_t ttl_ms,
                          const char *const *tags, size_t ntags,
                          cachet_async_status_cb cb, void *ud) {
  call *cl;
  int rc = call_new(a, &entry_kind, sizeof(cachet_op_entry), (void (*)(void))cb,
                    ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  return launch(cl, cachet_op_entry_write(MACHINE(cl, cachet_op_entry),
                                          cachet_async_handle(a), key, keylen,
                                          val, len, ttl_ms, tags, ntags));
}

int cachet_async_set(cachet_async *a, const void *key, size_t keylen,
                     const void *val, size_t len, int64_t ttl_ms,
                     cachet_async_status_cb cb, void *ud) {
  return cachet_async_set_tags(a, key, keylen, val, len, ttl_ms, NULL, 0, cb,
                               ud);
}

int cachet_async_delete(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  call *cl;
  int rc = call_new(a, &entry_kind, sizeof(cachet_op_entry), (void (*)(void))cb,
                    ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  return launch(cl,
                cachet_op_entry_delete(MACHINE(cl, cachet_op_entry),
                                       cachet_async_handle(a), key, keylen));
}

/* ---- evict_tags, clear, prune ---------------------------------------------
 */

static void evict_deliver(arun *r, int rc) {
  cachet_op_evict *x = MACHINE(r, cachet_op_evict);
  CB(r, cachet_async_count_cb)(rc, rc == CACHET_OK ? x->evicted : 0, r->ud);
}

static void scan_deliver(arun *r, int rc) {
  cachet_op_scan *x = MACHINE(r, cachet_op_scan);
  CB(r, cachet_async_count_cb)(rc, rc == CACHET_OK ? x->count : 0, r->ud);
}

static const arun_kind evict_kind = {"evict-tags", A_COUNT_ALL, evict_deliver,
                                     call_cleanup};
static const arun_kind scan_kind = {"clear", A_COUNT_ALL, scan_deliver,
                                    call_cleanup};

int cachet_async_evict_tags(cachet_async *a, const char *const *tags,
                            size_t ntags, cachet_async_count_cb cb, void *ud) {
  call *cl;
  int rc = call_new(a, &evict_kind, sizeof(cachet_op_evict), (void (*)(void))cb,
                    ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  return launch(cl, cachet_op_evict_init(MACHINE(cl, cachet_op_evict),
                                         cachet_async_handle(a), tags, ntags));
}

static int scan_call(cachet_async *a, int prune, int dry_run,
                     cachet_async_count_cb cb, void *ud) {
  call *cl;
  int rc = call_new(a, &scan_kind, sizeof(cachet_op_scan), (void (*)(void))cb,
                    ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  cachet *c = cachet_async_handle(a);
  return launch(cl, cachet_op_scan_init(MACHINE(cl, cachet_op_scan), c, prune,
                                        dry_run, c->cfg.cluster));
}

int cachet_async_clear(cachet_async *a, int dry_run, cachet_async_count_cb cb,
                       void *ud) {
  return scan_call(a, 0, dry_run, cb, ud);
}

int cachet_async_prune(cachet_async *a, cachet_async_count_cb cb, void *ud) {
  return scan_call(a, 1, 0, cb, ud);
}

/* ---- Locks ----------------------------------------------------------------
 */

static void lock_deliver(arun *r, int rc) {
  call *cl = (call *)r;
  cachet_lock *lk = NULL;
  if (rc == CACHET_OK) { /* handed over */
    lk = cl->lk;
    cl->lk = NULL;
  }
  CB(r, cachet_async_lock_cb)(rc, lk, r->ud);
}

static const arun_kind acquire_kind = {"lock_acquire", A_COUNT_ALL,
                                       lock_deliver, call_cleanup};
static const arun_kind lock_kind = {"lock", A_COUNT_ALL, status_deliver,
                                    call_cleanup};

int cachet_async_lock_acquire(cachet_async *a, const char *name, int64_t ttl_ms,
                              int64_t wait_ms, cachet_async_lock_cb cb,
                              void *ud) {
  call *cl;
  int rc = call_new(a, &acquire_kind, sizeof(cachet_op_lock),
                    (void (*)(void))cb, ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  cachet *c = cachet_async_handle(a);
  rc = cachet_lock_prepare(c, name, ttl_ms, wait_ms, &cl->lk);
  if (rc == CACHET_OK)
    cachet_op_lock_init(MACHINE(cl, cachet_op_lock), c, CACHET_LOCK_ACQUIRE,
                        cl->lk, ttl_ms, wait_ms);
  return launch(cl, rc);
}

/* Release or extend a copy of the caller's lock (only read in the call). */
static int lock_call(cachet_async *a, int mode, const cachet_lock *lock,
                     int64_t ttl_ms, cachet_async_status_cb cb, void *ud) {
  call *cl;
  int rc = call_new(a, &lock_kind, sizeof(cachet_op_lock), (void (*)(void))cb,
                    ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  if (mode == CACHET_LOCK_EXTEND)
    rc = cachet_lock_check_ttl(ttl_ms);
  size_t size = sizeof *lock + lock->namelen + 1;
  if (rc == CACHET_OK && (cl->lk = malloc(size)) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  if (rc == CACHET_OK) {
    memcpy(cl->lk, lock, size);
    cachet_op_lock_init(MACHINE(cl, cachet_op_lock), cachet_async_handle(a),
                        mode, cl->lk, ttl_ms, 0);
  }
  return launch(cl, rc);
}

int cachet_async_lock_release(cachet_async *a, const cachet_lock *lock,
                              cachet_async_status_cb cb, void *ud) {
  return lock_call(a, CACHET_LOCK_RELEASE, lock, 0, cb, ud);
}

int cachet_async_lock_extend(cachet_async *a, const cachet_lock *lock,
                             int64_t ttl_ms, cachet_async_status_cb cb,
                             void *ud) {
  return lock_call(a, CACHET_LOCK_EXTEND, lock, ttl_ms, cb, ud);
}

/* ---- get_or_set -----------------------------------------------------------
 */

static void gos_deliver(arun *r, int rc) {
  cachet_op_gos *x = MACHINE(r, cachet_op_gos);
  CB(r, cachet_async_value_cb)
  (rc, rc == CACHET_OK ? x->val : NULL, rc == CACHET_OK ? x->len : 0, r->ud);
}

static const arun_kind gos_kind = {"get_or_set", A_COUNT_ALL, gos_deliver,
                                   call_cleanup};

int cachet_async_get_or_set(cachet_async *a, const void *key, size_t keylen,
                            cachet_async_loader_fn loader, int64_t ttl_ms,
                            const char *const *tags, size_t ntags,
                            cachet_async_value_cb cb, void *ud) {
  call *cl;
  int rc = call_new(a, &gos_kind, sizeof(cachet_op_gos), (void (*)(void))cb, ud,
                    &cl);
  if (rc != CACHET_OK)
    return rc;
  cachet_op_gos *x = MACHINE(cl, cachet_op_gos);
  rc = cachet_op_gos_init(x, cachet_async_handle(a), key, keylen, NULL, ud,
                          ttl_ms, tags, ntags);
  x->load.afn = loader;
  return launch(cl, rc);
}

/* ---- mget, mset -----------------------------------------------------------
 */

static void items_deliver(arun *r, int rc) {
  call *cl = (call *)r;
  for (size_t i = 0; i < cl->n; i++) {
    const cachet_entry *e = &cl->e[i];
    cl->items[i] = (cachet_async_item){e->status, e->out, e->outlen};
  }
  CB(r, cachet_async_items_cb)(rc, cl->items, cl->n, r->ud);
}

static const arun_kind mget_kind = {"mget", A_COUNT_FATAL, items_deliver,
                                    call_cleanup};
static const arun_kind mset_kind = {"mset", A_COUNT_FATAL, items_deliver,
                                    call_cleanup};

/* Copy the entries the machine reads (keys; for a write values and tags
 * too) into one allocation, with room for the items. */
static int copy_entries(call *cl, const cachet_entry *src, size_t n,
                        int write) {
  size_t ptrs = 0, bytes = 0;
  for (size_t i = 0; i < n; i++) {
    bytes += src[i].keylen;
    if (!write)
      continue;
    bytes += src[i].len;
    ptrs += src[i].ntags;
    for (size_t t = 0; t < src[i].ntags; t++)
      bytes += strlen(src[i].tags[t]) + 1;
  }
  size_t head = n * (sizeof(cachet_entry) + sizeof(cachet_async_item)) +
                ptrs * sizeof(char *);
  char *p = malloc(head + bytes + 1);
  if (p == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory copying a batch");
  cl->copy = p;
  cl->e = (cachet_entry *)(void *)p;
  cl->items = (cachet_async_item *)(void *)(p + n * sizeof(cachet_entry));
  const char **tp = (const char **)(void *)(cl->items + n);
  char *b = p + head;
  for (size_t i = 0; i < n; i++) {
    cachet_entry *e = &cl->e[i];
    *e = (cachet_entry){.key = b, .keylen = src[i].keylen};
    memcpy(b, src[i].key, src[i].keylen);
    b += src[i].keylen;
    if (!write)
      continue;
    e->val = b;
    e->len = src[i].len;
    e->ttl_ms = src[i].ttl_ms;
    if (src[i].len > 0)
      memcpy(b, src[i].val, src[i].len);
    b += src[i].len;
    e->tags = tp;
    e->ntags = src[i].ntags;
    for (size_t t = 0; t < src[i].ntags; t++) {
      size_t l = strlen(src[i].tags[t]) + 1;
      *tp++ = memcpy(b, src[i].tags[t], l);
      b += l;
    }
  }
  cl->n = n;
  return CACHET_OK;
}

static int batch_call(cachet_async *a, const cachet_entry *entries, size_t n,
                      int write, cachet_async_items_cb cb, void *ud) {
  call *cl;
  const arun_kind *k = write ? &mset_kind : &mget_kind;
  size_t size = write ? sizeof(cachet_op_mset) : sizeof(cachet_op_mget);
  int rc = call_new(a, k, size, (void (*)(void))cb, ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  cachet *c = cachet_async_handle(a);
  rc = cachet_check_batch(c, entries, n, write);
  if (rc == CACHET_OK)
    rc = copy_entries(cl, entries, n, write);
  if (rc == CACHET_OK && write)
    rc = cachet_op_mset_init(MACHINE(cl, cachet_op_mset), c, cl->e, n);
  else if (rc == CACHET_OK)
    rc = cachet_op_mget_init(MACHINE(cl, cachet_op_mget), c, cl->e, n);
  return launch(cl, rc);
}

int cachet_async_mget(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  return batch_call(a, entries, n, 0, cb, ud);
}

int cachet_async_mset(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  return batch_call(a, entries, n, 1, cb, ud);
}

/* ---- health -----------------------------------------------------------------
 */

static void health_deliver(arun *r, int rc) {
  cachet_op_health *x = MACHINE(r, cachet_op_health);
  CB(r, cachet_async_health_cb)(rc, rc == CACHET_OK ? &x->h : NULL, r->ud);
}

static const arun_kind health_kind = {"health", A_COUNT_ALL, health_deliver,
                                      call_cleanup};

int cachet_async_health_check(cachet_async *a, cachet_async_health_cb cb,
                              void *ud) {
  call *cl;
  int rc = call_new(a, &health_kind, sizeof(cachet_op_health),
                    (void (*)(void))cb, ud, &cl);
  if (rc != CACHET_OK)
    return rc;
  cachet_op_health_init(MACHINE(cl, cachet_op_health), cachet_async_handle(a));
  return launch(cl, CACHET_OK);
}
