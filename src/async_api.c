/* The async API (cachet.h "Async API"): each call is its sync twin's
 * machine, started on the loop by the driver (async.c).
 *
 * A call gathers its arguments, and its kind's init checks and copies them
 * with the same init function as the sync call, so it is refused for the
 * same reasons in the same words; then the run starts. Its result reaches
 * the callback through the kind's deliver, which reads it out of the
 * finished machine. */
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

#define CALL(r) ((call *)(void *)(r)) /* a call starts with its run */
#define MACHINE(r, type) ((type *)(void *)CALL(r)->m)
#define CB(r, type) ((type)(void (*)(void))(r)->cb)

/* A call's arguments, as the public function got them. */
typedef struct args {
  int mode; /* CACHET_KEY_*, CACHET_LOCK_*, or a flag */
  const void *key, *val;
  size_t keylen, len;
  int64_t ttl_ms, wait_ms;
  const char *const *tags;
  size_t ntags;
  const char *name;
  const cachet_lock *lock;
  cachet_async_loader_fn loader;
  void *ud;
  const cachet_entry *e;
  size_t n;
} args;

/* A kind of call: the run's kind, its machine's size and init. */
typedef struct kind {
  arun_kind run;
  size_t size;
  int (*init)(call *cl, cachet *c, const args *g);
} kind;

static void call_cleanup(arun *r) {
  call *cl = CALL(r);
  cachet_lock_free(cl->lk);
  for (size_t i = 0; cl->e != NULL && i < cl->n; i++)
    free(cl->e[i].out);
  free(cl->copy);
}

/* Start a call of kind k, or say why not (its callback is then never
 * called): ECONN while the handle closes, ENOMEM, or the init's error. */
static int start(cachet_async *a, const kind *k, const args *g,
                 void (*cb)(void), void *ud) {
  cachet_error_clear();
  call *cl = NULL;
  int rc = cachet_async_usable(a);
  if (rc == CACHET_OK &&
      (cl = CALL(cachet_arun_new(a, &k->run, sizeof(call) + k->size, cb,
                                 ud))) == NULL)
    rc = CACHET_ENOMEM;
  if (rc == CACHET_OK &&
      (rc = k->init(cl, cachet_async_handle(a), g)) == CACHET_OK) {
    cachet_arun_start(&cl->r, (cachet_op *)(void *)cl->m);
    return CACHET_OK;
  }
  if (cl != NULL)
    cachet_arun_discard(&cl->r);
  cachet *c = cachet_async_handle(a);
  return c != NULL ? cachet_result(c, rc) : rc;
}

#define FN(cb) ((void (*)(void))(cb))

/* ---- Deliveries -----------------------------------------------------------
 */

static void value_deliver(arun *r, int rc) { /* get */
  cachet_op_key *x = MACHINE(r, cachet_op_key);
  CB(r, cachet_async_value_cb)
  (rc, rc == CACHET_OK ? x->val : NULL, rc == CACHET_OK ? x->len : 0, r->ud);
}

static void gos_deliver(arun *r, int rc) {
  cachet_op_gos *x = MACHINE(r, cachet_op_gos);
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

static void evict_deliver(arun *r, int rc) {
  cachet_op_evict *x = MACHINE(r, cachet_op_evict);
  CB(r, cachet_async_count_cb)(rc, rc == CACHET_OK ? x->evicted : 0, r->ud);
}

static void scan_deliver(arun *r, int rc) {
  cachet_op_scan *x = MACHINE(r, cachet_op_scan);
  CB(r, cachet_async_count_cb)(rc, rc == CACHET_OK ? x->count : 0, r->ud);
}

static void lock_deliver(arun *r, int rc) {
  call *cl = CALL(r);
  cachet_lock *lk = NULL;
  if (rc == CACHET_OK) { /* handed over */
    lk = cl->lk;
    cl->lk = NULL;
  }
  CB(r, cachet_async_lock_cb)(rc, lk, r->ud);
}

static void items_deliver(arun *r, int rc) {
  call *cl = CALL(r);
  for (size_t i = 0; i < cl->n; i++) {
    const cachet_entry *e = &cl->e[i];
    cl->items[i] = (cachet_async_item){e->status, e->out, e->outlen};
  }
  CB(r, cachet_async_items_cb)(rc, cl->items, cl->n, r->ud);
}

static void health_deliver(arun *r, int rc) {
  cachet_op_health *x = MACHINE(r, cachet_op_health);
  CB(r, cachet_async_health_cb)(rc, rc == CACHET_OK ? &x->h : NULL, r->ud);
}

/* ---- Inits: the sync twin's, on the call's copies -------------------------
 */

static int key_init(call *cl, cachet *c, const args *g) {
  return cachet_op_key_init(MACHINE(cl, cachet_op_key), c, g->mode, g->key,
                            g->keylen);
}

static int set_init(call *cl, cachet *c, const args *g) {
  return cachet_op_entry_write(MACHINE(cl, cachet_op_entry), c, g->key,
                               g->keylen, g->val, g->len, g->ttl_ms, g->tags,
                               g->ntags);
}

static int delete_init(call *cl, cachet *c, const args *g) {
  return cachet_op_entry_delete(MACHINE(cl, cachet_op_entry), c, g->key,
                                g->keylen);
}

static int evict_init(call *cl, cachet *c, const args *g) {
  return cachet_op_evict_init(MACHINE(cl, cachet_op_evict), c, g->tags,
                              g->ntags);
}

/* mode: 1 prune, else clear (dry run when g->n). */
static int scan_init(call *cl, cachet *c, const args *g) {
  return cachet_op_scan_init(MACHINE(cl, cachet_op_scan), c, g->mode, (int)g->n,
                             c->cfg.cluster);
}

static int acquire_init(call *cl, cachet *c, const args *g) {
  int rc = cachet_lock_prepare(c, g->name, g->ttl_ms, g->wait_ms, &cl->lk);
  if (rc == CACHET_OK)
    cachet_op_lock_init(MACHINE(cl, cachet_op_lock), c, CACHET_LOCK_ACQUIRE,
                        cl->lk, g->ttl_ms, g->wait_ms);
  return rc;
}

/* Release or extend a copy of the caller's lock (only read in the call). */
static int lock_init(call *cl, cachet *c, const args *g) {
  int rc = g->mode == CACHET_LOCK_EXTEND ? cachet_lock_check_ttl(g->ttl_ms)
                                         : CACHET_OK;
  size_t size = sizeof *g->lock + g->lock->namelen + 1;
  if (rc == CACHET_OK && (cl->lk = malloc(size)) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  if (rc == CACHET_OK) {
    memcpy(cl->lk, g->lock, size);
    cachet_op_lock_init(MACHINE(cl, cachet_op_lock), c, g->mode, cl->lk,
                        g->ttl_ms, 0);
  }
  return rc;
}

static int gos_init(call *cl, cachet *c, const args *g) {
  cachet_op_gos *x = MACHINE(cl, cachet_op_gos);
  int rc = cachet_op_gos_init(x, c, g->key, g->keylen, NULL, g->ud, g->ttl_ms,
                              g->tags, g->ntags);
  x->load.afn = g->loader;
  return rc;
}

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

/* mode: 1 mset, 0 mget. */
static int batch_init(call *cl, cachet *c, const args *g) {
  int rc = cachet_check_batch(c, g->e, g->n, g->mode);
  if (rc == CACHET_OK)
    rc = copy_entries(cl, g->e, g->n, g->mode);
  if (rc == CACHET_OK && g->mode)
    rc = cachet_op_mset_init(MACHINE(cl, cachet_op_mset), c, cl->e, g->n);
  else if (rc == CACHET_OK)
    rc = cachet_op_mget_init(MACHINE(cl, cachet_op_mget), c, cl->e, g->n);
  return rc;
}

static int health_init(call *cl, cachet *c, const args *g) {
  (void)g;
  cachet_op_health_init(MACHINE(cl, cachet_op_health), c);
  return CACHET_OK;
}

#define KIND(name, count, deliver, machine, init)                              \
  { {name, count, deliver, call_cleanup}, sizeof(machine), init }

static const kind get_kind =
    KIND("get", A_COUNT_ALL, value_deliver, cachet_op_key, key_init);
static const kind exists_kind =
    KIND("exists", A_COUNT_ALL, status_deliver, cachet_op_key, key_init);
static const kind ttl_kind =
    KIND("ttl", A_COUNT_ALL, ttl_deliver, cachet_op_key, key_init);
static const kind set_kind =
    KIND("set", A_COUNT_ALL, status_deliver, cachet_op_entry, set_init);
static const kind delete_kind =
    KIND("delete", A_COUNT_ALL, status_deliver, cachet_op_entry, delete_init);
static const kind evict_kind =
    KIND("evict-tags", A_COUNT_ALL, evict_deliver, cachet_op_evict, evict_init);
static const kind scan_kind =
    KIND("clear", A_COUNT_ALL, scan_deliver, cachet_op_scan, scan_init);
static const kind acquire_kind = KIND("lock_acquire", A_COUNT_ALL, lock_deliver,
                                      cachet_op_lock, acquire_init);
static const kind lock_kind =
    KIND("lock", A_COUNT_ALL, status_deliver, cachet_op_lock, lock_init);
static const kind gos_kind =
    KIND("get_or_set", A_COUNT_ALL, gos_deliver, cachet_op_gos, gos_init);
static const kind mget_kind =
    KIND("mget", A_COUNT_FATAL, items_deliver, cachet_op_mget, batch_init);
static const kind mset_kind =
    KIND("mset", A_COUNT_FATAL, items_deliver, cachet_op_mset, batch_init);
static const kind health_kind =
    KIND("health", A_COUNT_ALL, health_deliver, cachet_op_health, health_init);

/* ---- The calls --------------------------------------------------------------
 */

int cachet_async_get(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_value_cb cb, void *ud) {
  return start(a, &get_kind,
               &(args){.mode = CACHET_KEY_GET, .key = key, .keylen = keylen},
               FN(cb), ud);
}

int cachet_async_exists(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  return start(a, &exists_kind,
               &(args){.mode = CACHET_KEY_EXISTS, .key = key, .keylen = keylen},
               FN(cb), ud);
}

int cachet_async_ttl(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_ttl_cb cb, void *ud) {
  return start(a, &ttl_kind,
               &(args){.mode = CACHET_KEY_PTTL, .key = key, .keylen = keylen},
               FN(cb), ud);
}

int cachet_async_set_tags(cachet_async *a, const void *key, size_t keylen,
                          const void *val, size_t len, int64_t ttl_ms,
                          const char *const *tags, size_t ntags,
                          cachet_async_status_cb cb, void *ud) {
  return start(a, &set_kind,
               &(args){.key = key,
                       .keylen = keylen,
                       .val = val,
                       .len = len,
                       .ttl_ms = ttl_ms,
                       .tags = tags,
                       .ntags = ntags},
               FN(cb), ud);
}

int cachet_async_set(cachet_async *a, const void *key, size_t keylen,
                     const void *val, size_t len, int64_t ttl_ms,
                     cachet_async_status_cb cb, void *ud) {
  return cachet_async_set_tags(a, key, keylen, val, len, ttl_ms, NULL, 0, cb,
                               ud);
}

int cachet_async_delete(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  return start(a, &delete_kind, &(args){.key = key, .keylen = keylen}, FN(cb),
               ud);
}

int cachet_async_evict_tags(cachet_async *a, const char *const *tags,
                            size_t ntags, cachet_async_count_cb cb, void *ud) {
  return start(a, &evict_kind, &(args){.tags = tags, .ntags = ntags}, FN(cb),
               ud);
}

int cachet_async_clear(cachet_async *a, int dry_run, cachet_async_count_cb cb,
                       void *ud) {
  return start(a, &scan_kind, &(args){.mode = 0, .n = dry_run != 0}, FN(cb),
               ud);
}

int cachet_async_prune(cachet_async *a, cachet_async_count_cb cb, void *ud) {
  return start(a, &scan_kind, &(args){.mode = 1}, FN(cb), ud);
}

int cachet_async_lock_acquire(cachet_async *a, const char *name, int64_t ttl_ms,
                              int64_t wait_ms, cachet_async_lock_cb cb,
                              void *ud) {
  return start(a, &acquire_kind,
               &(args){.name = name, .ttl_ms = ttl_ms, .wait_ms = wait_ms},
               FN(cb), ud);
}

int cachet_async_lock_release(cachet_async *a, const cachet_lock *lock,
                              cachet_async_status_cb cb, void *ud) {
  return start(a, &lock_kind,
               &(args){.mode = CACHET_LOCK_RELEASE, .lock = lock}, FN(cb), ud);
}

int cachet_async_lock_extend(cachet_async *a, const cachet_lock *lock,
                             int64_t ttl_ms, cachet_async_status_cb cb,
                             void *ud) {
  return start(
      a, &lock_kind,
      &(args){.mode = CACHET_LOCK_EXTEND, .lock = lock, .ttl_ms = ttl_ms},
      FN(cb), ud);
}

int cachet_async_get_or_set(cachet_async *a, const void *key, size_t keylen,
                            cachet_async_loader_fn loader, int64_t ttl_ms,
                            const char *const *tags, size_t ntags,
                            cachet_async_value_cb cb, void *ud) {
  return start(a, &gos_kind,
               &(args){.key = key,
                       .keylen = keylen,
                       .loader = loader,
                       .ttl_ms = ttl_ms,
                       .tags = tags,
                       .ntags = ntags,
                       .ud = ud},
               FN(cb), ud);
}

int cachet_async_mget(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  return start(a, &mget_kind, &(args){.mode = 0, .e = entries, .n = n}, FN(cb),
               ud);
}

int cachet_async_mset(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  return start(a, &mset_kind, &(args){.mode = 1, .e = entries, .n = n}, FN(cb),
               ud);
}

int cachet_async_health_check(cachet_async *a, cachet_async_health_cb cb,
                              void *ud) {
  return start(a, &health_kind, &(args){.mode = 0}, FN(cb), ud);
}
