/* Async mget and mset.
 *
 * mget is one operation that pipelines one GET per key and reads the
 * replies in order. mset runs one entry write per distinct key as child
 * operations, all pipelined on the one connection: set_tags (with its
 * retag and NOSCRIPT handling) for a tagged entry, a plain SET for an
 * untagged one (CACHET_AOP_PLAIN, as batch.c). Statuses follow batch.c: each
 * entry has its own; the callback's status is the first connection- or
 * server-level error in entry order, while an entry that fails to decode or
 * verify is only that entry's status. */
#include "async.h"

#include "cachet.h"

#ifdef CACHET_HAVE_LIBEVENT

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"
#include "keys.h"

/* Not decided yet. */
#define ITEM_UNSET INT_MIN

static int is_value_error(int rc) {
  return rc == CACHET_ECORRUPT || rc == CACHET_EINTEGRITY ||
         rc == CACHET_EVERSION;
}

/* The first error of an entry, in entry order, that concerns the server or
 * the connection. */
static int batch_status(const cachet_async_item *items, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (items[i].status < 0 && !is_value_error(items[i].status))
      return items[i].status;
  return CACHET_OK;
}

/* ---- mget --------------------------------------------------------------- */

typedef struct mget_op {
  aop op;
  size_t n, next; /* entries, and the entry whose reply comes next */
  cachet_async_item *items;
  cachet_key *keys;
  size_t built;
  char *detail; /* the detail of the first server-level error */
} mget_op;

static void mget_cleanup(aop *op) {
  mget_op *m = (mget_op *)op;
  if (m->items != NULL)
    for (size_t i = 0; i < m->n; i++)
      free((void *)m->items[i].val);
  free(m->items);
  for (size_t i = 0; i < m->built; i++)
    cachet_key_free(&m->keys[i]);
  free(m->keys);
  free(m->detail);
}

static void mget_reply(aop *op, redisReply *r) {
  mget_op *m = (mget_op *)op;
  cachet *c = op->a->c;
  size_t i = m->next++;
  if (i >= m->n) {
    cachet_aop_proto(op, "mget");
    return;
  }
  void *val = NULL;
  size_t len = 0;
  int rc = cachet_async_value_reply(c, r, m->keys[i].buf, m->keys[i].len, 1,
                                    &val, &len);
  m->items[i].status = rc;
  m->items[i].val = val;
  m->items[i].len = len;
  if (rc < 0) {
    (void)cachet_result(c, rc);
    if (!is_value_error(rc) && m->detail == NULL)
      m->detail = strdup(cachet_last_error());
  }
  if (m->next == m->n) {
    int st = batch_status(m->items, m->n);
    if (st != CACHET_OK)
      (void)cachet_fail(st, "%s", m->detail ? m->detail : "");
    op->counted = 1; /* each entry's error was */
    cachet_aop_finish(op, st);
  }
}

static void mget_deliver(aop *op, int rc) {
  mget_op *m = (mget_op *)op;
  /* A failure that stopped the batch is the status of every entry it left
   * without one. */
  for (size_t i = 0; i < m->n; i++)
    if (m->items[i].status == ITEM_UNSET)
      m->items[i].status = rc < 0 ? rc : CACHET_EINTERNAL;
  ((cachet_async_items_cb)op->cb)(rc, m->items, m->n, op->ud);
}

static void mget_step(aop *op) {
  mget_op *m = (mget_op *)op;
  if (m->n == 0) {
    cachet_aop_finish(op, CACHET_OK);
    return;
  }
  for (size_t i = 0; i < m->n; i++) {
    const char *argv[2] = {"GET", m->keys[i].buf};
    size_t lens[2] = {3, m->keys[i].len};
    int rc = cachet_aop_send(op, 2, argv, lens);
    if (rc != CACHET_OK) {
      /* Replies to the GETs already sent still come and are dropped. */
      cachet_aop_finish(op, rc);
      return;
    }
  }
}

static const aop_kind mget_kind = {"mget",       mget_reply, NULL,        NULL,
                                   mget_deliver, NULL,       mget_cleanup};

int cachet_async_mget(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  cachet_error_clear();
  cachet *c = a->c;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  int rc0 = cachet_check_batch(c, entries, n, 0);
  if (rc0 != CACHET_OK)
    return cachet_result(c, rc0);
  mget_op *m = (mget_op *)cachet_aop_new(a, &mget_kind, sizeof *m, 1, NULL,
                                         (aop_cb)cb, ud);
  if (m == NULL)
    return cachet_result(c, CACHET_ENOMEM);
  m->n = n;
  m->items = calloc(n ? n : 1, sizeof *m->items);
  m->keys = calloc(n ? n : 1, sizeof *m->keys);
  int rc = m->items == NULL || m->keys == NULL
               ? cachet_fail(CACHET_ENOMEM, "mget: out of memory")
               : CACHET_OK;
  for (; rc == CACHET_OK && m->built < n; m->built++) {
    const cachet_entry *e = &entries[m->built];
    rc = cachet_key_build(c, &m->keys[m->built], CACHET_KIND_VALUE,
                          cachet_bucket(e->key, e->keylen), e->key, e->keylen);
    if (rc != CACHET_OK)
      break;
  }
  if (rc != CACHET_OK) {
    cachet_aop_discard(&m->op);
    return cachet_result(c, rc);
  }
  for (size_t i = 0; i < n; i++)
    m->items[i].status = ITEM_UNSET;
  cachet_aop_start(&m->op, mget_step);
  return CACHET_OK;
}

/* ---- mset --------------------------------------------------------------- */

typedef struct mset_op {
  aop op;
  size_t n;
  cachet_async_item *items;
  size_t *winner; /* the occurrence of each entry's key that is written */
  char *detail;   /* the detail of the first error in entry order */
  size_t detail_at;
} mset_op;

static void mset_cleanup(aop *op) {
  mset_op *m = (mset_op *)op;
  free(m->items);
  free(m->winner);
  free(m->detail);
}

static void mset_deliver(aop *op, int rc) {
  mset_op *m = (mset_op *)op;
  for (size_t i = 0; i < m->n; i++)
    if (m->items[i].status == ITEM_UNSET)
      m->items[i].status = rc < 0 ? rc : CACHET_EINTERNAL;
  ((cachet_async_items_cb)op->cb)(rc, m->items, m->n, op->ud);
}

/* All children have reported, or the batch could not start them all. */
static void mset_maybe_finish(mset_op *m) {
  if (m->op.children > 0)
    return;
  for (size_t i = 0; i < m->n; i++)
    if (m->winner[i] == i && m->items[i].status == ITEM_UNSET)
      return;
  /* An earlier occurrence of a key gets the status of the one written. */
  for (size_t i = 0; i < m->n; i++)
    if (m->winner[i] != i)
      m->items[i].status = m->items[m->winner[i]].status;
  int st = batch_status(m->items, m->n);
  if (st != CACHET_OK)
    (void)cachet_fail(st, "%s", m->detail ? m->detail : "");
  m->op.counted = 1; /* each entry's error was */
  cachet_aop_finish(&m->op, st);
}

static void mset_child_done(aop *parent, aop *child, int rc) {
  mset_op *m = (mset_op *)parent;
  size_t i = (size_t)(uintptr_t)child->ud;
  m->items[i].status = cachet_result(parent->a->c, rc);
  if (rc < 0 && (m->detail == NULL || i < m->detail_at)) {
    free(m->detail);
    m->detail = strdup(cachet_last_error());
    m->detail_at = i;
  }
  mset_maybe_finish(m);
}

/* A child that could not be created: its entry's status. */
static void mset_fail_entry(mset_op *m, size_t i, int rc) {
  (void)cachet_result(m->op.a->c, rc);
  m->items[i].status = rc;
  if (m->detail == NULL || i < m->detail_at) {
    free(m->detail);
    m->detail = strdup(cachet_last_error());
    m->detail_at = i;
  }
}

static const aop_kind mset_kind = {"mset",       NULL, NULL,        NULL,
                                   mset_deliver, NULL, mset_cleanup};

typedef struct key_ref {
  const void *key;
  size_t keylen;
  size_t index;
} key_ref;

static int key_ref_cmp(const void *x, const void *y) {
  const key_ref *a = x, *b = y;
  size_t n = a->keylen < b->keylen ? a->keylen : b->keylen;
  int d = memcmp(a->key, b->key, n);
  if (d != 0)
    return d;
  if (a->keylen != b->keylen)
    return a->keylen < b->keylen ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

/* Within one mset the last occurrence of a key wins, and only it is sent:
 * were the earlier ones sent too, one that needed a retag would be written
 * again after the last one and win. */
static int find_winners(const cachet_entry *e, size_t n, size_t *winner) {
  key_ref *refs = malloc((n ? n : 1) * sizeof *refs);
  if (refs == NULL)
    return cachet_fail(CACHET_ENOMEM, "mset: out of memory");
  for (size_t i = 0; i < n; i++)
    refs[i] = (key_ref){e[i].key, e[i].keylen, i};
  qsort(refs, n, sizeof *refs, key_ref_cmp);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && refs[j + 1].keylen == refs[i].keylen &&
           memcmp(refs[j + 1].key, refs[i].key, refs[i].keylen) == 0)
      j++;
    for (size_t k = i; k <= j; k++)
      winner[refs[k].index] = refs[j].index;
    i = j + 1;
  }
  free(refs);
  return CACHET_OK;
}

int cachet_async_mset(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  cachet_error_clear();
  cachet *c = a->c;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  int rc0 = cachet_check_batch(c, entries, n, 1);
  if (rc0 != CACHET_OK)
    return cachet_result(c, rc0);
  mset_op *m = (mset_op *)cachet_aop_new(a, &mset_kind, sizeof *m, 1, NULL,
                                         (aop_cb)cb, ud);
  if (m == NULL)
    return cachet_result(c, CACHET_ENOMEM);
  m->n = n;
  m->items = calloc(n ? n : 1, sizeof *m->items);
  m->winner = malloc((n ? n : 1) * sizeof *m->winner);
  int rc = m->items == NULL || m->winner == NULL
               ? cachet_fail(CACHET_ENOMEM, "mset: out of memory")
               : find_winners(entries, n, m->winner);
  if (rc != CACHET_OK) {
    cachet_aop_discard(&m->op);
    return cachet_result(c, rc);
  }
  for (size_t i = 0; i < n; i++)
    m->items[i].status = ITEM_UNSET;
  /* The children start inside this call: whatever they decide now is
   * delivered from the loop, and so is the batch's result. */
  m->op.starting = 1;
  m->op.busy++;
  for (size_t i = 0; i < n; i++) {
    if (m->winner[i] != i)
      continue;
    const cachet_entry *e = &entries[i];
    aop *child = cachet_aop_entry_new(
        a, e->ntags == 0 ? CACHET_AOP_PLAIN : CACHET_AOP_SET, e->key, e->keylen,
        e->val == NULL ? "" : e->val, e->len, e->ttl_ms, e->tags, e->ntags,
        NULL, (void *)(uintptr_t)i, &rc);
    if (child == NULL) {
      mset_fail_entry(m, i, rc);
      continue;
    }
    cachet_aop_adopt(&m->op, child, mset_child_done);
    cachet_aop_start(child, cachet_aop_entry_step);
  }
  mset_maybe_finish(m);
  m->op.starting = 0;
  m->op.busy--;
  return CACHET_OK;
}

#endif
