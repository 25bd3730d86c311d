/* Async get, set, set_tags and delete.
 *
 * The same protocol as entry.c: a tagged write is set_tags.lua and a delete
 * delete_entry.lua; when the entry carries tags the call did not know, the
 * script answers {"retag", tag...} and the call is sent again with their
 * index keys (bounded, then EBUSY). An untagged write is a plain SET with
 * the tag set read (SMEMBERS) in the same round trip, then untag.lua (same
 * retag protocol) only if the entry had tags; a value large enough to be staged
 * goes through set_tags. The envelope is sealed once, with the value key's
 * name, when the call is made; a read opens it with the same name. */
#include "async.h"

#include "cachet.h"

#ifdef CACHET_HAVE_LIBEVENT

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "keys.h"

/* As entry.c: only concurrent writers changing the entry's tags loop. */
#define RETAG_ATTEMPTS 8

int cachet_async_value_reply(cachet *c, redisReply *r, const char *rkey,
                             size_t rkeylen, int count_miss, void **val,
                             size_t *len) {
  *val = NULL;
  *len = 0;
  if (r->type == REDIS_REPLY_NIL) {
    if (count_miss)
      CACHET_COUNT(c, misses, 1);
    return CACHET_MISS;
  }
  if (r->type == REDIS_REPLY_ERROR)
    return cachet_fail_bytes(CACHET_ESERVER, NULL, r->str, r->len);
  if (r->type != REDIS_REPLY_STRING)
    return cachet_fail(CACHET_EPROTO, "GET: unexpected reply type %d", r->type);
  /* Take hiredis's own buffer (len + 1 bytes) instead of copying it. */
  size_t bl = r->len;
  char *blob = cachet_reply_take(r);
  int rc = cachet_entry_open(c, rkey, rkeylen, blob, bl, val, len);
  if (rc == CACHET_MISS)
    cachet_error_clear();
  return rc;
}

/* ---- get, exists, ttl ---------------------------------------------------
 * One command on the value key: GET, EXISTS, or PTTL (-2 absent, -1 no
 * expiry, else milliseconds left), with core.c's meaning. */

typedef struct key_op {
  aop op;
  const char *cmd; /* "GET", "EXISTS" or "PTTL" */
  void *val;       /* get */
  size_t len;
  int64_t ttl_ms; /* ttl */
  size_t vklen;
  char vk[]; /* the value key's name: the envelope is bound to it */
} key_op;

static void key_step(aop *op) {
  key_op *g = (key_op *)op;
  const char *argv[2] = {g->cmd, g->vk};
  size_t lens[2] = {strlen(g->cmd), g->vklen};
  int rc = cachet_aop_send(op, 2, argv, lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(op, rc);
}

static int key_start(cachet_async *a, const aop_kind *k, const char *cmd,
                     const void *key, size_t keylen, aop_cb cb, void *ud) {
  cachet_error_clear();
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  cachet_key vk = {0};
  int rc = cachet_check_key(a->c, key, keylen);
  if (rc == CACHET_OK)
    rc = cachet_key_build(a->c, &vk, CACHET_KIND_VALUE,
                          cachet_bucket(key, keylen), key, keylen);
  if (rc != CACHET_OK)
    return cachet_result(a->c, rc);
  key_op *g =
      (key_op *)cachet_aop_new(a, k, sizeof *g + vk.len + 1, 1, NULL, cb, ud);
  if (g == NULL) {
    cachet_key_free(&vk);
    return cachet_result(a->c, CACHET_ENOMEM);
  }
  g->cmd = cmd;
  memcpy(g->vk, vk.buf, vk.len + 1);
  g->vklen = vk.len;
  cachet_key_free(&vk);
  cachet_aop_start(&g->op, key_step);
  return CACHET_OK;
}

static void get_reply(aop *op, redisReply *r) {
  key_op *g = (key_op *)op;
  int rc = cachet_async_value_reply(op->a->c, r, g->vk, g->vklen, 1, &g->val,
                                    &g->len);
  cachet_aop_finish(op, rc);
}

static void get_deliver(aop *op, int rc) {
  key_op *g = (key_op *)op;
  ((cachet_async_value_cb)op->cb)(rc, rc == CACHET_OK ? g->val : NULL,
                                  rc == CACHET_OK ? g->len : 0, op->ud);
}

static void get_cleanup(aop *op) { free(((key_op *)op)->val); }

/* EXISTS and PTTL answer an integer. */
static void int_reply(aop *op, redisReply *r) {
  key_op *g = (key_op *)op;
  if (r->type == REDIS_REPLY_ERROR) {
    cachet_aop_server_error(op, r);
    return;
  }
  if (r->type != REDIS_REPLY_INTEGER) {
    cachet_aop_proto(op, g->cmd);
    return;
  }
  int rc;
  if (g->cmd[0] == 'P') {
    rc = r->integer == -2 ? CACHET_MISS : CACHET_OK;
    g->ttl_ms = r->integer < 0 ? -1 : r->integer;
  } else {
    rc = r->integer > 0 ? CACHET_OK : CACHET_MISS;
  }
  cachet_aop_finish(op, rc);
}

static void exists_deliver(aop *op, int rc) {
  ((cachet_async_status_cb)op->cb)(rc, op->ud);
}

static void ttl_deliver(aop *op, int rc) {
  key_op *g = (key_op *)op;
  ((cachet_async_ttl_cb)op->cb)(rc, rc == CACHET_OK ? g->ttl_ms : 0, op->ud);
}

static const aop_kind get_kind = {"get",       get_reply, NULL,       NULL,
                                  get_deliver, NULL,      get_cleanup};
static const aop_kind exists_kind = {"exists",       int_reply, NULL, NULL,
                                     exists_deliver, NULL,      NULL};
static const aop_kind ttl_kind = {"ttl",       int_reply, NULL, NULL,
                                  ttl_deliver, NULL,      NULL};

int cachet_async_get(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_value_cb cb, void *ud) {
  return key_start(a, &get_kind, "GET", key, keylen, (aop_cb)cb, ud);
}

int cachet_async_exists(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  return key_start(a, &exists_kind, "EXISTS", key, keylen, (aop_cb)cb, ud);
}

int cachet_async_ttl(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_ttl_cb cb, void *ud) {
  return key_start(a, &ttl_kind, "PTTL", key, keylen, (aop_cb)cb, ud);
}

/* ---- set_tags / delete ----------------------------------------------------
 */

typedef struct entry_op {
  aop op;
  int del;
  unsigned bucket;
  int attempt;
  void *key;
  size_t keylen;
  cachet_key vk, mk;
  /* Tag names (owned) and their index keys in this bucket: first the new
   * tags, then old ones a retag reply named. */
  char **names;
  cachet_key **ikeys;
  size_t ntags, cap, nnew;
  uint8_t *blob;
  size_t bloblen;
  char ttl[24];
  const char *prune_cap;
  /* A large value is staged first (entry.h): sk is its staging key; the SET
   * is in flight while stage_wait is set. */
  cachet_key sk;
  int staged, stage_wait;
  /* CACHET_AOP_PLAIN: replies still due for the SET and SMEMBERS step,
   * and whether the entry went on to untag.lua. */
  int plain_wait, untag;
} entry_op;

static int entry_has(const entry_op *e, const char *name, size_t len) {
  for (size_t i = 0; i < e->ntags; i++)
    if (strlen(e->names[i]) == len && memcmp(e->names[i], name, len) == 0)
      return 1;
  return 0;
}

static int entry_add_tag(entry_op *e, const char *name, size_t len) {
  if (entry_has(e, name, len))
    return CACHET_OK;
  if (e->ntags == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 4;
    char **nn = realloc(e->names, cap * sizeof *nn);
    if (nn == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    e->names = nn;
    cachet_key **nk = realloc(e->ikeys, cap * sizeof *nk);
    if (nk == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    e->ikeys = nk;
    e->cap = cap;
  }
  char *copy = malloc(len + 1);
  cachet_key *k = malloc(sizeof *k);
  if (copy == NULL || k == NULL) {
    free(copy);
    free(k);
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  }
  memcpy(copy, name, len);
  copy[len] = '\0';
  int rc =
      cachet_key_build(e->op.a->c, k, CACHET_KIND_INDEX, e->bucket, copy, len);
  if (rc != CACHET_OK) {
    free(copy);
    free(k);
    return rc;
  }
  e->names[e->ntags] = copy;
  e->ikeys[e->ntags++] = k;
  return CACHET_OK;
}

static void entry_cleanup(aop *op) {
  entry_op *e = (entry_op *)op;
  for (size_t i = 0; i < e->ntags; i++) {
    free(e->names[i]);
    cachet_key_free(e->ikeys[i]);
    free(e->ikeys[i]);
  }
  free(e->names);
  free(e->ikeys);
  free(e->blob);
  free(e->key);
  cachet_key_free(&e->vk);
  cachet_key_free(&e->mk);
  cachet_key_free(&e->sk);
}

static void entry_send(aop *op) {
  entry_op *e = (entry_op *)op;
  size_t n = 8 + 2 * e->ntags;
  const char **args = malloc(n * sizeof *args);
  size_t *lens = malloc(n * sizeof *lens);
  if (args == NULL || lens == NULL) {
    free(args);
    free(lens);
    (void)cachet_fail(CACHET_ENOMEM, "out of memory");
    cachet_aop_finish(op, CACHET_ENOMEM);
    return;
  }
  size_t k = 0;
#define PUSH(p, l) (args[k] = (const char *)(p), lens[k++] = (l))
  PUSH(e->vk.buf, e->vk.len);
  PUSH(e->mk.buf, e->mk.len);
  for (size_t i = 0; i < e->ntags; i++)
    PUSH(e->ikeys[i]->buf, e->ikeys[i]->len);
  if (e->staged)
    PUSH(e->sk.buf, e->sk.len); /* set_tags: the staging key comes last */
  int nkeys = (int)k;
  char nn[24];
  if (e->untag) {
    PUSH(e->blob, e->bloblen); /* the envelope the plain SET stored */
  } else if (!e->del) {
    int nnl = snprintf(nn, sizeof nn, "%zu", e->nnew);
    if (e->staged)
      PUSH("", 0); /* an empty blob: the value is staged */
    else
      PUSH(e->blob, e->bloblen);
    PUSH(e->ttl, strlen(e->ttl));
    PUSH(e->prune_cap, strlen(e->prune_cap));
    PUSH(nn, (size_t)nnl);
  }
  PUSH(e->key, e->keylen);
  for (size_t i = 0; i < e->ntags; i++)
    PUSH(e->names[i], strlen(e->names[i]));
#undef PUSH
  cachet_script_id id = e->del     ? CACHET_SCRIPT_DELETE_ENTRY
                        : e->untag ? CACHET_SCRIPT_UNTAG
                                   : CACHET_SCRIPT_SET_TAGS;
  int rc = cachet_aop_script(op, id, nkeys, (int)k, args, lens);
  free(args);
  free(lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(op, rc);
}

/* {"retag", name...}: learn the names. Returns 1 if it was one. */
/* Learn the tag names r->element[from..]: a retag reply's, or a tag set's
 * (SMEMBERS). */
static int learn_tags(entry_op *e, const redisReply *r, size_t from) {
  for (size_t i = from; i < r->elements; i++) {
    const redisReply *t = r->element[i];
    if (t->type != REDIS_REPLY_STRING || t->len == 0 ||
        memchr(t->str, '\0', t->len) != NULL)
      return cachet_fail(CACHET_ECORRUPT,
                         "an entry's tag set holds a malformed tag name");
    int rc = entry_add_tag(e, t->str, t->len);
    if (rc != CACHET_OK)
      return rc;
  }
  return CACHET_OK;
}

static int absorb_retag(entry_op *e, const redisReply *r, int *rc) {
  *rc = CACHET_OK;
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_STRING ||
      strcmp(r->element[0]->str, "retag") != 0)
    return 0;
  *rc = learn_tags(e, r, 1);
  return 1;
}

static void entry_reply(aop *op, redisReply *r) {
  entry_op *e = (entry_op *)op;
  const char *what = e->del ? "delete_entry" : e->untag ? "untag" : "set_tags";
  if (r->type == REDIS_REPLY_ERROR) {
    /* A plain SET refused: its SMEMBERS reply comes after the result. */
    cachet_aop_server_error(op, r);
    return;
  }
  if (e->plain_wait > 0) {
    if (--e->plain_wait == 1) { /* the SET */
      if (r->type != REDIS_REPLY_STATUS)
        cachet_aop_proto(op, "SET");
      return;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
      cachet_aop_proto(op, "SMEMBERS");
    } else if (r->elements == 0) { /* no tag set: done */
      CACHET_COUNT(op->a->c, writes, 1);
      cachet_aop_finish(op, CACHET_OK);
    } else { /* it had tags: drop them unless a later write owns it */
      int rc = learn_tags(e, r, 0);
      if (rc != CACHET_OK) {
        cachet_aop_finish(op, rc);
        return;
      }
      e->untag = 1;
      entry_send(op);
    }
    return;
  }
  if (e->stage_wait) {
    /* The staging SET answered: now the script that moves it in place. */
    e->stage_wait = 0;
    if (r->type != REDIS_REPLY_STATUS) {
      cachet_aop_proto(op, "staging SET");
      return;
    }
    entry_send(op);
    return;
  }
  if (r->type == REDIS_REPLY_INTEGER) {
    if (e->del) {
      int rc = r->integer > 0 ? CACHET_OK : CACHET_MISS;
      if (rc == CACHET_OK)
        CACHET_COUNT(op->a->c, deletes, 1);
      cachet_aop_finish(op, rc);
    } else if (r->integer == 1 || (e->untag && r->integer == 0)) {
      CACHET_COUNT(op->a->c, writes, 1);
      cachet_aop_finish(op, CACHET_OK);
    } else {
      cachet_aop_proto(op, what);
    }
    return;
  }
  int rc;
  if (!absorb_retag(e, r, &rc)) {
    cachet_aop_proto(op, what);
    return;
  }
  if (rc != CACHET_OK) {
    cachet_aop_finish(op, rc);
    return;
  }
  if (++e->attempt == RETAG_ATTEMPTS) {
    (void)cachet_fail(CACHET_EBUSY,
                      "%s: the entry's tags kept changing under concurrent "
                      "writers (%d attempts)",
                      e->del ? "delete" : "set", RETAG_ATTEMPTS);
    cachet_aop_finish(op, CACHET_EBUSY);
    return;
  }
  entry_send(op);
}

static void entry_deliver(aop *op, int rc) {
  ((cachet_async_status_cb)op->cb)(rc, op->ud);
}

static const aop_kind entry_kind = {"set_tags",   entry_reply,   entry_send,
                                    NULL,         entry_deliver, NULL,
                                    entry_cleanup};
static const aop_kind delete_kind = {"delete",     entry_reply,   entry_send,
                                     NULL,         entry_deliver, NULL,
                                     entry_cleanup};

aop *cachet_aop_entry_new(cachet_async *a, int mode, const void *key,
                          size_t keylen, const void *val, size_t len,
                          int64_t ttl_ms, const char *const *tags, size_t ntags,
                          aop_cb cb, void *ud, int *rc) {
  int del = mode == CACHET_AOP_DELETE;
  entry_op *e = (entry_op *)cachet_aop_new(a, del ? &delete_kind : &entry_kind,
                                           sizeof *e, 1, NULL, cb, ud);
  if (e == NULL) {
    *rc = CACHET_ENOMEM;
    return NULL;
  }
  cachet *c = a->c;
  e->del = del;
  e->bucket = cachet_bucket(key, keylen);
  e->keylen = keylen;
  e->key = malloc(keylen);
  if (e->key == NULL) {
    *rc = cachet_fail(CACHET_ENOMEM, "out of memory");
    goto fail;
  }
  memcpy(e->key, key, keylen);
  if ((*rc = cachet_key_build(c, &e->vk, CACHET_KIND_VALUE, e->bucket, key,
                              keylen)) ||
      (*rc = cachet_key_build(c, &e->mk, CACHET_KIND_TAGSET, e->bucket, key,
                              keylen)))
    goto fail;
  for (size_t i = 0; i < ntags; i++)
    if ((*rc = entry_add_tag(e, tags[i], strlen(tags[i]))) != CACHET_OK)
      goto fail;
  e->nnew = e->ntags;
  if (!del) {
    int64_t now = cachet_now_ms();
    *rc = cachet_envelope_seal(c->keyring, c->cfg.encrypt, e->vk.buf, e->vk.len,
                               0, now, ttl_ms > 0 ? now + ttl_ms : 0, val, len,
                               &e->blob, &e->bloblen);
    if (*rc != CACHET_OK)
      goto fail;
    snprintf(e->ttl, sizeof e->ttl, "%lld", (long long)ttl_ms);
    e->prune_cap = cachet_prune_cap(c);
    if (e->bloblen >= CACHET_STAGE_MIN) {
      if ((*rc = cachet_stage_key(c, e->bucket, key, keylen, &e->sk)))
        goto fail;
      e->staged = 1;
    } else if (mode == CACHET_AOP_PLAIN && ntags == 0) {
      e->plain_wait = 2;
    }
  }
  *rc = CACHET_OK;
  return &e->op;
fail:
  /* Not started: dropped without a callback. */
  cachet_aop_discard(&e->op);
  return NULL;
}

/* The first step: stage a large value (one more round trip, only for those),
 * else go straight to the script. */
void cachet_aop_entry_step(aop *op) {
  entry_op *e = (entry_op *)op;
  if (e->plain_wait > 0) {
    const char *argv[5] = {"SET", e->vk.buf, (const char *)e->blob, "PX",
                           e->ttl};
    size_t lens[5] = {3, e->vk.len, e->bloblen, 2, strlen(e->ttl)};
    int rc = cachet_aop_send(op, strcmp(e->ttl, "0") == 0 ? 3 : 5, argv, lens);
    if (rc == CACHET_OK) {
      const char *ex[2] = {"SMEMBERS", e->mk.buf};
      size_t exl[2] = {8, e->mk.len};
      rc = cachet_aop_send(op, 2, ex, exl);
    }
    if (rc != CACHET_OK)
      cachet_aop_finish(op, rc);
    return;
  }
  if (!e->staged) {
    entry_send(op);
    return;
  }
  const char *argv[5];
  size_t lens[5];
  cachet_stage_command(&e->sk, e->blob, e->bloblen, argv, lens);
  e->stage_wait = 1;
  int rc = cachet_aop_send(op, 5, argv, lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(op, rc);
}

static int start_entry(cachet_async *a, int del, const void *key, size_t keylen,
                       const void *val, size_t len, int64_t ttl_ms,
                       const char *const *tags, size_t ntags,
                       cachet_async_status_cb cb, void *ud) {
  cachet_error_clear();
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  cachet *c = a->c;
  int rc;
  if ((rc = cachet_check_key(c, key, keylen)))
    return cachet_result(c, rc);
  if (!del) {
    if ((rc = cachet_check_value(c, len, ttl_ms)) ||
        (rc = cachet_check_tags(c, tags, ntags)))
      return cachet_result(c, rc);
    if (val == NULL && len > 0)
      return cachet_result(
          c, cachet_fail(CACHET_EINVAL, "value is NULL but len is %zu", len));
  }
  int mode = del          ? CACHET_AOP_DELETE
             : ntags == 0 ? CACHET_AOP_PLAIN
                          : CACHET_AOP_SET;
  aop *op = cachet_aop_entry_new(a, mode, key, keylen, val == NULL ? "" : val,
                                 len, ttl_ms, tags, ntags, (aop_cb)cb, ud, &rc);
  if (op == NULL)
    return cachet_result(c, rc);
  cachet_aop_start(op, cachet_aop_entry_step);
  return CACHET_OK;
}

int cachet_async_set_tags(cachet_async *a, const void *key, size_t keylen,
                          const void *val, size_t len, int64_t ttl_ms,
                          const char *const *tags, size_t ntags,
                          cachet_async_status_cb cb, void *ud) {
  return start_entry(a, 0, key, keylen, val, len, ttl_ms, tags, ntags, cb, ud);
}

int cachet_async_set(cachet_async *a, const void *key, size_t keylen,
                     const void *val, size_t len, int64_t ttl_ms,
                     cachet_async_status_cb cb, void *ud) {
  return start_entry(a, 0, key, keylen, val, len, ttl_ms, NULL, 0, cb, ud);
}

int cachet_async_delete(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  return start_entry(a, 1, key, keylen, NULL, 0, 0, NULL, 0, cb, ud);
}

#endif
