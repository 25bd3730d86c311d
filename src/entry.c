/* set, set with tags, delete: the write side of one entry.
 *
 * A tagged write goes through lua/set_tags.lua. An untagged one is a plain
 * SET, with the entry's tag set read in the same round trip: an overwrite
 * must still drop the tags the entry had, which untag.lua does only for
 * entries that had some (large values, which untag would have to copy, go
 * through set_tags, staged). The scripts can only touch keys they are
 * given, and C does not know the old tags before the call; so a script
 * reports tags it was not given ("retag") without writing, and C calls
 * again with their index keys. That costs a second round trip only when an
 * entry's tags change. */
#include "entry.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "error.h"
#include "keys.h"
#include "script.h"

/* How often a write may learn of new old tags before giving up. Only a
 * concurrent writer changing the same entry's tags can make it loop. */
#define RETAG_ATTEMPTS 8

const char *cachet_prune_cap(cachet *c) {
  uint64_t n = atomic_fetch_add_explicit(&c->write_seq, 1, memory_order_relaxed);
  return n % 8 == 0 ? "64" : "0";
}

int cachet_check_key(const cachet *c, const void *key, size_t keylen) {
  if (key == NULL || keylen == 0)
    return cachet_fail(CACHET_EINVAL, "key must not be empty");
  if (keylen > c->cfg.max_key_size)
    return cachet_fail(CACHET_EINVAL, "key of %zu bytes exceeds max_key_size "
                       "(%zu)", keylen, c->cfg.max_key_size);
  return CACHET_OK;
}

int cachet_check_tags(const cachet *c, const char *const *tags, size_t ntags) {
  if (ntags > 0 && tags == NULL)
    return cachet_fail(CACHET_EINVAL, "tags is NULL but ntags is %zu", ntags);
  if (ntags > c->cfg.max_tags)
    return cachet_fail(CACHET_EINVAL, "%zu tags exceed max_tags (%zu)", ntags,
                       c->cfg.max_tags);
  for (size_t i = 0; i < ntags; i++) {
    if (tags[i] == NULL || tags[i][0] == '\0')
      return cachet_fail(CACHET_EINVAL, "tag %zu is empty", i + 1);
    if (strlen(tags[i]) > c->cfg.max_key_size)
      return cachet_fail(CACHET_EINVAL, "tag %zu exceeds max_key_size", i + 1);
  }
  return CACHET_OK;
}

int cachet_check_value(const cachet *c, size_t len, int64_t ttl_ms) {
  if (ttl_ms < 0)
    return cachet_fail(CACHET_EINVAL,
                       "ttl %lld ms is negative (0 means no expiry)",
                       (long long)ttl_ms);
  if (ttl_ms > CACHET_TTL_MAX_MS)
    return cachet_fail(CACHET_EINVAL,
                       "ttl %lld ms exceeds the maximum (100 years)",
                       (long long)ttl_ms);
  if (len > c->cfg.max_value_size)
    return cachet_fail(CACHET_EINVAL,
                       "value of %zu bytes exceeds max_value_size (%zu)", len,
                       c->cfg.max_value_size);
  return CACHET_OK;
}

int cachet_check_batch(const cachet *c, const cachet_entry *entries, size_t n,
                       int write) {
  if (n > 0 && entries == NULL)
    return cachet_fail(CACHET_EINVAL, "entries is NULL but n is %zu", n);
  for (size_t i = 0; i < n; i++) {
    const cachet_entry *e = &entries[i];
    int rc = cachet_check_key(c, e->key, e->keylen);
    if (rc == CACHET_OK && write &&
        (rc = cachet_check_value(c, e->len, e->ttl_ms)) == CACHET_OK &&
        (rc = cachet_check_tags(c, e->tags, e->ntags)) == CACHET_OK &&
        e->val == NULL && e->len > 0)
      rc = cachet_fail(CACHET_EINVAL, "value is NULL but len is %zu", e->len);
    if (rc != CACHET_OK) {
      char detail[400];
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      return cachet_fail(rc, "entry %zu: %s (nothing was %s)", i, detail,
                         write ? "written" : "read");
    }
  }
  return CACHET_OK;
}

/* A growable list of tag names and their index keys for one bucket. */
typedef struct taglist {
  const char **names;
  cachet_key **keys; /* Each on the heap: a key may point into itself. */
  size_t n, cap;
} taglist;

static int taglist_has(const taglist *t, const char *name, size_t len) {
  for (size_t i = 0; i < t->n; i++)
    if (strlen(t->names[i]) == len && memcmp(t->names[i], name, len) == 0)
      return 1;
  return 0;
}

/* Add `name` (NUL-terminated, borrowed) unless present. */
static int taglist_add(const cachet *c, taglist *t, unsigned bucket,
                       const char *name) {
  size_t len = strlen(name);
  if (taglist_has(t, name, len))
    return CACHET_OK;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    const char **nn = realloc(t->names, cap * sizeof *nn);
    if (nn == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    t->names = nn;
    cachet_key **nk = realloc(t->keys, cap * sizeof *nk);
    if (nk == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    t->keys = nk;
    t->cap = cap;
  }
  cachet_key *k = malloc(sizeof *k);
  if (k == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  int rc = cachet_key_build(c, k, CACHET_KIND_INDEX, bucket, name, len);
  if (rc != CACHET_OK) {
    free(k);
    return rc;
  }
  t->keys[t->n] = k;
  t->names[t->n++] = name;
  return CACHET_OK;
}

static void taglist_free(taglist *t) {
  for (size_t i = 0; i < t->n; i++) {
    cachet_key_free(t->keys[i]);
    free(t->keys[i]);
  }
  free(t->names);
  free(t->keys);
  memset(t, 0, sizeof *t);
}

/* Old tags a retag reply names are copied here so that their storage
 * outlives the reply. */
typedef struct strpool {
  char **s;
  size_t n;
} strpool;

static const char *strpool_add(strpool *p, const char *s, size_t len) {
  char **ns = realloc(p->s, (p->n + 1) * sizeof *ns);
  if (ns == NULL)
    return NULL;
  p->s = ns;
  char *copy = malloc(len + 1);
  if (copy == NULL)
    return NULL;
  memcpy(copy, s, len);
  copy[len] = '\0';
  p->s[p->n++] = copy;
  return copy;
}

static void strpool_free(strpool *p) {
  for (size_t i = 0; i < p->n; i++)
    free(p->s[i]);
  free(p->s);
}

/* A reply {"retag", name...}: add each name. Returns 1 if it was one. */
static int absorb_retag(const cachet *c, const redisReply *r, taglist *tl,
                        unsigned bucket, strpool *sp, int *rc) {
  *rc = CACHET_OK;
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_STRING ||
      strcmp(r->element[0]->str, "retag") != 0)
    return 0;
  for (size_t i = 1; i < r->elements; i++) {
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_STRING || e->len == 0 ||
        memchr(e->str, '\0', e->len) != NULL) {
      *rc = cachet_fail(CACHET_ECORRUPT,
                        "an entry's tag set holds a malformed tag name");
      return 1;
    }
    if (taglist_has(tl, e->str, e->len))
      continue;
    const char *name = strpool_add(sp, e->str, e->len);
    if (name == NULL) {
      *rc = cachet_fail(CACHET_ENOMEM, "out of memory");
      return 1;
    }
    *rc = taglist_add(c, tl, bucket, name);
    if (*rc != CACHET_OK)
      return 1;
  }
  return 1;
}

/* Build the script arguments: KEYS then ARGV. */
typedef struct argv_buf {
  const char **a;
  size_t *l;
  int n;
} argv_buf;

static int argv_alloc(argv_buf *b, size_t n) {
  b->a = malloc(n * sizeof *b->a);
  b->l = malloc(n * sizeof *b->l);
  b->n = 0;
  if (b->a == NULL || b->l == NULL) {
    free(b->a);
    free(b->l);
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  }
  return CACHET_OK;
}

static void argv_push(argv_buf *b, const void *p, size_t len) {
  b->a[b->n] = p;
  b->l[b->n] = len;
  b->n++;
}

static void argv_free(argv_buf *b) {
  free(b->a);
  free(b->l);
}

/*
 * Run a script that speaks the retag protocol (set_tags, delete_entry). KEYS
 * are the value key, the tag-set key, the index keys in `tl` and, when not
 * NULL, the staging key `stage` last; ARGV is `head` followed by the tag
 * names in `tl`. An integer reply is the result.
 * A {"retag", tag...} reply adds those tags to `tl` and calls again, at most
 * RETAG_ATTEMPTS times: only writers changing the same entry's tags at the
 * same moment can keep it looping.
 */
static int run_retag(cachet *c, cachet_conn *cn, cachet_script_id id,
                     const char *what, const cachet_key *vk,
                     const cachet_key *mk, unsigned bucket, taglist *tl,
                     strpool *sp, const cachet_key *stage,
                     const char *const *head, const size_t *headlen,
                     size_t nhead, long long *result) {
  for (int attempt = 0; attempt < RETAG_ATTEMPTS; attempt++) {
    argv_buf b;
    int rc = argv_alloc(&b, 3 + nhead + 2 * tl->n);
    if (rc != CACHET_OK)
      return rc;
    argv_push(&b, vk->buf, vk->len);
    argv_push(&b, mk->buf, mk->len);
    for (size_t i = 0; i < tl->n; i++)
      argv_push(&b, tl->keys[i]->buf, tl->keys[i]->len);
    if (stage != NULL)
      argv_push(&b, stage->buf, stage->len);
    int nkeys = b.n;
    for (size_t i = 0; i < nhead; i++)
      argv_push(&b, head[i], headlen[i]);
    for (size_t i = 0; i < tl->n; i++)
      argv_push(&b, tl->names[i], strlen(tl->names[i]));
    redisReply *r = NULL;
    rc = cachet_script_run(c, cn, id, nkeys, b.n, b.a, b.l, &r);
    argv_free(&b);
    if (rc != CACHET_OK)
      return rc;
    if (r->type == REDIS_REPLY_INTEGER) {
      *result = r->integer;
      freeReplyObject(r);
      return CACHET_OK;
    }
    int handled = absorb_retag(c, r, tl, bucket, sp, &rc);
    freeReplyObject(r);
    if (!handled) {
      cachet_conn_break(cn);
      return cachet_fail(CACHET_EPROTO, "%s: unexpected reply", what);
    }
    if (rc != CACHET_OK)
      return rc;
  }
  return cachet_fail(CACHET_EBUSY,
                     "%s: the entry's tags kept changing under concurrent "
                     "writers (%d attempts)",
                     what, RETAG_ATTEMPTS);
}

/* Staged values live this long if the write never completes. */
#define STAGE_TTL_MS "60000"

int cachet_stage_key(const cachet *c, unsigned bucket, const void *key,
                     size_t keylen, cachet_key *sk) {
  unsigned char rnd[8];
  char *name = malloc(2 * sizeof rnd + 1 + keylen);
  if (name == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  randombytes_buf(rnd, sizeof rnd);
  sodium_bin2hex(name, 2 * sizeof rnd + 1, rnd, sizeof rnd);
  name[2 * sizeof rnd] = ':';
  memcpy(name + 2 * sizeof rnd + 1, key, keylen);
  int rc = cachet_key_build(c, sk, CACHET_KIND_STAGED, bucket, name,
                            2 * sizeof rnd + 1 + keylen);
  free(name);
  return rc;
}

void cachet_stage_command(const cachet_key *sk, const uint8_t *blob,
                          size_t bloblen, const char *argv[5], size_t lens[5]) {
  argv[0] = "SET", lens[0] = 3;
  argv[1] = sk->buf, lens[1] = sk->len;
  argv[2] = (const char *)blob, lens[2] = bloblen;
  argv[3] = "PX", lens[3] = 2;
  argv[4] = STAGE_TTL_MS, lens[4] = strlen(STAGE_TTL_MS);
}

static int stage_value(cachet *c, cachet_conn *cn, unsigned bucket,
                       const void *key, size_t keylen, const uint8_t *blob,
                       size_t bloblen, cachet_key *sk) {
  int rc = cachet_stage_key(c, bucket, key, keylen, sk);
  if (rc != CACHET_OK)
    return rc;
  const char *argv[5];
  size_t lens[5];
  cachet_stage_command(sk, blob, bloblen, argv, lens);
  redisReply *r = NULL;
  rc = cachet_conn_command(cn, 5, argv, lens, &r);
  if (r != NULL)
    freeReplyObject(r);
  return rc;
}

/* Best effort after a failed staged write (the TTL removes it otherwise).
 * Returns `rc` with the write's own detail, not the UNLINK's. */
static int unstage(cachet_conn *cn, const cachet_key *sk, int rc) {
  char detail[512];
  snprintf(detail, sizeof detail, "%s", cachet_last_error());
  const char *argv[2] = {"UNLINK", sk->buf};
  size_t lens[2] = {6, sk->len};
  redisReply *r = NULL;
  if (cachet_conn_command(cn, 2, argv, lens, &r) == CACHET_OK)
    freeReplyObject(r);
  return cachet_fail(rc, "%s", detail);
}

size_t cachet_reply_tags(const redisReply *r, const char **names, size_t cap) {
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements > cap)
    return 0;
  for (size_t i = 0; i < r->elements; i++) {
    const redisReply *t = r->element[i];
    if (t->type != REDIS_REPLY_STRING || t->len == 0 ||
        memchr(t->str, '\0', t->len) != NULL)
      return 0;
    names[i] = t->str;
  }
  return r->elements;
}

/*
 * An untagged write of a value below CACHET_STAGE_MIN: a plain SET, and the
 * entry's tag set read in the same round trip. Only an entry that had tags
 * goes on to untag.lua, which drops them unless a later write owns the
 * entry by then (docs/DESIGN.md, "Untagged writes take plain SET").
 */
static int write_untagged(cachet *c, cachet_conn *cn, const void *key,
                          size_t keylen, const cachet_key *vk,
                          const cachet_key *mk, const uint8_t *blob,
                          size_t bloblen, int64_t ttl_ms) {
  char ttl[24];
  int ttll = snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  const char *set[5] = {"SET", vk->buf, (const char *)blob, "PX", ttl};
  size_t setl[5] = {3, vk->len, bloblen, 2, (size_t)ttll};
  const char *sm[2] = {"SMEMBERS", mk->buf};
  size_t sml[2] = {8, mk->len};
  int rc = cachet_conn_append(cn, ttl_ms > 0 ? 5 : 3, set, setl);
  if (rc == CACHET_OK)
    rc = cachet_conn_append(cn, 2, sm, sml);
  if (rc != CACHET_OK) {
    cachet_conn_break(cn);
    return rc;
  }
  /* Both replies are read before anything else is sent. */
  redisReply *r = NULL, *tags = NULL;
  int set_rc = cachet_conn_read(cn, &r);
  char detail[512] = "";
  if (set_rc == CACHET_OK && r->type != REDIS_REPLY_STATUS) {
    cachet_conn_break(cn);
    set_rc = cachet_fail(CACHET_EPROTO, "set: SET: unexpected reply");
  }
  if (r != NULL)
    freeReplyObject(r);
  if (set_rc != CACHET_OK && set_rc != CACHET_ESERVER)
    return set_rc; /* the connection is broken */
  if (set_rc == CACHET_ESERVER)
    snprintf(detail, sizeof detail, "%s", cachet_last_error());
  rc = cachet_conn_read(cn, &tags);
  if (rc != CACHET_OK && rc != CACHET_ESERVER)
    return rc;
  if (set_rc != CACHET_OK) { /* OOM, READONLY...: nothing was written */
    if (tags != NULL)
      freeReplyObject(tags);
    return cachet_fail(set_rc, "%s", detail);
  }
  if (tags != NULL && tags->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(tags);
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "set: SMEMBERS: unexpected reply");
  }
  rc = CACHET_OK;
  if (tags == NULL || tags->elements > 0) { /* it had tags (or WRONGTYPE) */
    const char *names[8];
    size_t nt = cachet_reply_tags(tags, names, sizeof names / sizeof names[0]);
    rc = cachet_entry_untag(c, cn, key, keylen, blob, bloblen, names, nt);
    if (rc != CACHET_OK) {
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      rc = cachet_fail(rc,
                       "the value was stored, but the tags it had were not "
                       "dropped: %s",
                       detail);
    }
  }
  if (tags != NULL)
    freeReplyObject(tags);
  if (rc == CACHET_OK)
    CACHET_COUNT(c, writes, 1);
  return rc;
}

int cachet_entry_write(cachet *c, cachet_conn *cn, const void *key,
                       size_t keylen, const void *val, size_t len,
                       int64_t ttl_ms, const char *const *tags, size_t ntags) {
  unsigned bucket = cachet_bucket(key, keylen);
  cachet_key vk = {0}, mk = {0}, sk = {0};
  taglist tl = {0};
  strpool sp = {0};
  uint8_t *blob = NULL;
  size_t bloblen = 0;
  int staged = 0;
  int rc;

  if ((rc = cachet_key_build(c, &vk, CACHET_KIND_VALUE, bucket, key, keylen)) ||
      (rc = cachet_key_build(c, &mk, CACHET_KIND_TAGSET, bucket, key, keylen)))
    goto done;
  for (size_t i = 0; i < ntags; i++)
    if ((rc = taglist_add(c, &tl, bucket, tags[i])) != CACHET_OK)
      goto done;
  size_t nnew = tl.n;

  int64_t now = cachet_now_ms();
  rc = cachet_envelope_seal(c->keyring, c->cfg.encrypt, vk.buf, vk.len, 0, now,
                            ttl_ms > 0 ? now + ttl_ms : 0, val, len, &blob,
                            &bloblen);
  if (rc != CACHET_OK)
    goto done;
  if (ntags == 0 && bloblen < CACHET_STAGE_MIN) {
    rc = write_untagged(c, cn, key, keylen, &vk, &mk, blob, bloblen, ttl_ms);
    goto done;
  }
  if (bloblen >= CACHET_STAGE_MIN) {
    rc = stage_value(c, cn, bucket, key, keylen, blob, bloblen, &sk);
    if (rc != CACHET_OK)
      goto done;
    staged = 1;
  }

  char ttl[24], nn[16];
  int ttll = snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  const char *cap = cachet_prune_cap(c);
  int nnl = snprintf(nn, sizeof nn, "%zu", nnew);

  /* A staged write passes an empty blob (an envelope never is one) and the
   * staging key last in KEYS. */
  const char *head[5] = {staged ? "" : (const char *)blob, ttl, cap, nn, key};
  size_t headlen[5] = {staged ? 0 : bloblen, (size_t)ttll, strlen(cap),
                       (size_t)nnl, keylen};
  long long result = 0;
  rc = run_retag(c, cn, CACHET_SCRIPT_SET_TAGS, "set", &vk, &mk, bucket, &tl,
                 &sp, staged ? &sk : NULL, head, headlen, 5, &result);
  if (rc == CACHET_OK) {
    if (result == 1) {
      CACHET_COUNT(c, writes, 1);
    } else {
      cachet_conn_break(cn);
      rc = cachet_fail(CACHET_EPROTO, "set: unexpected reply %lld", result);
    }
  }
  if (rc != CACHET_OK && staged)
    rc = unstage(cn, &sk, rc);
done:
  free(blob);
  taglist_free(&tl);
  strpool_free(&sp);
  cachet_key_free(&vk);
  cachet_key_free(&mk);
  cachet_key_free(&sk);
  return rc;
}

/* An entry script that writes no value (delete_entry, untag): its keys
 * built for `key`, `tags` as the index keys known up front, ARGV `head`,
 * and the retag loop. *result is the script's integer reply. */
static int run_entry_script(cachet *c, cachet_conn *cn, cachet_script_id id,
                            const char *what, const void *key, size_t keylen,
                            const char *const *tags, size_t ntags,
                            const char *const *head, const size_t *headlen,
                            size_t nhead, long long *result) {
  unsigned bucket = cachet_bucket(key, keylen);
  cachet_key vk = {0}, mk = {0};
  taglist tl = {0};
  strpool sp = {0};
  int rc;

  if ((rc = cachet_key_build(c, &vk, CACHET_KIND_VALUE, bucket, key, keylen)) ||
      (rc = cachet_key_build(c, &mk, CACHET_KIND_TAGSET, bucket, key, keylen)))
    goto done;
  for (size_t i = 0; i < ntags; i++)
    if ((rc = taglist_add(c, &tl, bucket, tags[i])) != CACHET_OK)
      goto done;
  rc = run_retag(c, cn, id, what, &vk, &mk, bucket, &tl, &sp, NULL, head,
                 headlen, nhead, result);
done:
  taglist_free(&tl);
  strpool_free(&sp);
  cachet_key_free(&vk);
  cachet_key_free(&mk);
  return rc;
}

int cachet_entry_delete(cachet *c, cachet_conn *cn, const void *key,
                        size_t keylen) {
  const char *head[1] = {key};
  size_t headlen[1] = {keylen};
  long long existed = 0;
  int rc = run_entry_script(c, cn, CACHET_SCRIPT_DELETE_ENTRY, "delete", key,
                            keylen, NULL, 0, head, headlen, 1, &existed);
  if (rc != CACHET_OK)
    return rc;
  if (existed == 0)
    return CACHET_MISS;
  CACHET_COUNT(c, deletes, 1);
  return CACHET_OK;
}

int cachet_entry_untag(cachet *c, cachet_conn *cn, const void *key,
                       size_t keylen, const uint8_t *blob, size_t bloblen,
                       const char *const *tags, size_t ntags) {
  const char *head[2] = {(const char *)blob, key};
  size_t headlen[2] = {bloblen, keylen};
  long long result = 0;
  int rc = run_entry_script(c, cn, CACHET_SCRIPT_UNTAG, "mset", key, keylen,
                            tags, ntags, head, headlen, 2, &result);
  if (rc == CACHET_OK && result != 0 && result != 1) {
    cachet_conn_break(cn);
    rc = cachet_fail(CACHET_EPROTO, "mset: untag: unexpected reply %lld",
                     result);
  }
  return rc;
}

int cachet_entry_open(cachet *c, const char *rkey, size_t rkeylen, char *blob,
                      size_t len, void **val, size_t *outlen) {
  size_t off = 0, plen = 0;
  cachet_envelope_info info;
  int rc = cachet_envelope_open(c->keyring, c->cfg.accept_unsealed, rkey,
                                rkeylen, (uint8_t *)blob, len, cachet_now_ms(),
                                &info, &off, &plen);
  if (rc == CACHET_OK && plen > c->cfg.max_value_size) {
    /* Written by a client that accepts more, or by the server itself: this
     * handle promised its caller no value above the limit. */
    free(blob);
    return cachet_fail(CACHET_EPROTO,
                       "the server holds a value of %zu bytes, above "
                       "max_value_size (%zu)",
                       plen, c->cfg.max_value_size);
  }
  if (rc == CACHET_OK) {
    memmove(blob, blob + off, plen);
    blob[plen] = '\0';
    *val = blob;
    *outlen = plen;
    CACHET_COUNT(c, hits, 1);
    return CACHET_OK;
  }
  free(blob);
  if (rc == CACHET_MISS) {
    CACHET_COUNT(c, misses, 1);
    CACHET_COUNT(c, expired_envelopes, 1);
  }
  return rc;
}
