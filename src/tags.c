/* evict-tags and prune: operations over every index key of a tag.
 *
 * A tag has one index key per bucket (<prefix>{bb}t:<tag>), so both fan out
 * over the buckets and work in bounded chunks: no single script call touches
 * more than a fixed number of keys, so Redis never stalls for long, and the
 * read path pays nothing (a read is one plain GET of the value key).
 *
 * Eviction, per tag and bucket (see lua/evict_begin.lua, evict_chunk.lua):
 *  1. one pipelined EXISTS sweep over the 256 t and 256 e keys finds the
 *     buckets with work to do;
 *  2. evict_begin renames t to e, a snapshot of the members the tag had
 *     (or reports an e left by an earlier or concurrent eviction, drained
 *     first);
 *  3. the e key is drained in chunks: ZRANGE (read), SMEMBERS of each
 *     member's tag set (read, pipelined) to learn which other index keys the
 *     script must be given, then one evict_chunk call that re-checks each
 *     member atomically and evicts it, or drops a stale membership, or skips
 *     it when its tags changed in between (re-read on the next round).
 * Writers that add the tag meanwhile start a fresh t key, so each drain ends.
 *
 * In a cluster nothing changes here: every key of one bucket shares a slot,
 * so each step is one atomic call on one shard, and the connection routes
 * each command (the EXISTS sweep is pipelined across the masters at once).
 * Prune scans every master in turn.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "error.h"
#include "evict.h"
#include "keys.h"
#include "script.h"

/* SCAN COUNT hint, expired members removed per prune_chunk call, and
 * members checked per prune_dangling call. */
#define PRUNE_SCAN_COUNT "500"
#define PRUNE_EXPIRED_CAP "256"
#define PRUNE_MEMBERS 128
#define PRUNE_ZSCAN_COUNT "128"

/* ---- small helpers ------------------------------------------------------ */

/* A growable argument vector (pointers are borrowed). */
typedef struct args {
  const char **a;
  size_t *l;
  size_t n, cap;
} args;

static int args_push(args *b, const void *p, size_t len) {
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    const char **na = realloc(b->a, cap * sizeof *na);
    if (na == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    b->a = na;
    size_t *nl = realloc(b->l, cap * sizeof *nl);
    if (nl == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    b->l = nl;
    b->cap = cap;
  }
  b->a[b->n] = p;
  b->l[b->n] = len;
  b->n++;
  return CACHET_OK;
}

static void args_free(args *b) {
  free(b->a);
  free(b->l);
  memset(b, 0, sizeof *b);
}

static int proto(cachet_conn *cn, const char *what) {
  cachet_conn_break(cn);
  return cachet_fail(CACHET_EPROTO, "%s: unexpected reply", what);
}

static void progress(cachet *c, const char *op, uint64_t done) {
  if (c->progress != NULL)
    c->progress(c->progress_ud, op, done);
}

/* Read n pipelined replies into r[] (NULL where the server answered with an
 * error). Every reply is consumed so the connection stays in step; the first
 * error is returned with its own detail (after a timeout, the replies after
 * it only say that the connection is broken). */
static int read_replies(cachet_conn *cn, size_t n, redisReply **r) {
  int first = CACHET_OK;
  char detail[512] = "";
  for (size_t i = 0; i < n; i++) {
    int rc = cachet_conn_read(cn, &r[i]);
    if (rc != CACHET_OK && first == CACHET_OK) {
      first = rc;
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
    }
  }
  return first == CACHET_OK ? CACHET_OK : cachet_fail(first, "%s", detail);
}

static void free_replies(size_t n, redisReply **r) {
  for (size_t i = 0; i < n; i++)
    if (r[i] != NULL)
      freeReplyObject(r[i]);
}

static int is_string(const redisReply *r) {
  return r != NULL && r->type == REDIS_REPLY_STRING;
}

/* An array whose elements are all strings. */
static int is_string_array(const redisReply *r) {
  if (r == NULL || r->type != REDIS_REPLY_ARRAY)
    return 0;
  for (size_t i = 0; i < r->elements; i++)
    if (!is_string(r->element[i]))
      return 0;
  return 1;
}

/* ---- evict -------------------------------------------------------------- */

/* One bucket of one tag being evicted. */
typedef struct evict_ctx {
  cachet *c;
  cachet_conn *cn;
  const char *tag;
  size_t taglen;
  unsigned bucket;
  cachet_key tk, ek;
  uint64_t *total; /* Entries evicted by this call so far, all tags. */
} evict_ctx;

/* Find the buckets where the tag has an index or an index being evicted:
 * one pipelined round trip of 512 EXISTS. */
static int sweep(cachet *c, cachet_conn *cn, const char *tag, size_t taglen,
                 unsigned char live[CACHET_BUCKETS]) {
  size_t n = 2 * CACHET_BUCKETS;
  cachet_key *k = calloc(n, sizeof *k);
  redisReply **r = calloc(n, sizeof *r);
  int rc = CACHET_OK;
  size_t built = 0;
  if (k == NULL || r == NULL) {
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
    goto done;
  }
  for (; built < n; built++) {
    unsigned b = (unsigned)(built / 2);
    char kind = built % 2 ? CACHET_KIND_EVICTING : CACHET_KIND_INDEX;
    if ((rc = cachet_key_build(c, &k[built], kind, b, tag, taglen)))
      goto done;
  }
  for (size_t i = 0; i < n; i++) {
    const char *argv[2] = {"EXISTS", k[i].buf};
    size_t lens[2] = {6, k[i].len};
    if ((rc = cachet_conn_append(cn, 2, argv, lens)) != CACHET_OK)
      goto done;
  }
  rc = read_replies(cn, n, r);
  for (size_t i = 0; rc == CACHET_OK && i < n; i++) {
    if (r[i]->type != REDIS_REPLY_INTEGER) {
      rc = proto(cn, "EXISTS");
      break;
    }
    if (i % 2 == 0)
      live[i / 2] = 0;
    if (r[i]->integer > 0)
      live[i / 2] = 1;
  }
done:
  if (r != NULL)
    free_replies(n, r);
  free(r);
  for (size_t i = 0; i < built; i++)
    cachet_key_free(&k[i]);
  free(k);
  return rc;
}

/*
 * One chunk: the first members of the e key, their tag sets, then one
 * evict_chunk call. *empty is set when the e key had no members left.
 */
static int evict_chunk(evict_ctx *x, int *empty, uint64_t *moved) {
  cachet *c = x->c;
  cachet_conn *cn = x->cn;
  redisReply *range = NULL, *sets[CACHET_EVICT_MEMBERS] = {0}, *res = NULL;
  cachet_key vk[CACHET_EVICT_MEMBERS], mk[CACHET_EVICT_MEMBERS];
  cachet_key *ok = NULL; /* Index keys of the other tags. */
  cachet_name *others = NULL;
  size_t nkeys = 0, nread = 0, nothers = 0, nok = 0;
  args b = {0};
  int rc;

  *empty = 0;
  *moved = 0;
  {
    char stop[16];
    int sl = snprintf(stop, sizeof stop, "%d", CACHET_EVICT_MEMBERS - 1);
    const char *argv[4] = {"ZRANGE", x->ek.buf, "0", stop};
    size_t lens[4] = {6, x->ek.len, 1, (size_t)sl};
    if ((rc = cachet_conn_command(cn, 4, argv, lens, &range)))
      return rc;
  }
  if (!is_string_array(range) || range->elements > CACHET_EVICT_MEMBERS) {
    rc = proto(cn, "ZRANGE");
    goto done;
  }
  if (range->elements == 0) {
    *empty = 1;
    rc = CACHET_OK;
    goto done;
  }

  /* The tag sets, to learn which index keys the script must be given. */
  for (; nkeys < range->elements; nkeys++) {
    const redisReply *m = range->element[nkeys];
    if ((rc = cachet_key_build(c, &vk[nkeys], CACHET_KIND_VALUE, x->bucket,
                               m->str, m->len)))
      goto done;
    if ((rc = cachet_key_build(c, &mk[nkeys], CACHET_KIND_TAGSET, x->bucket,
                               m->str, m->len))) {
      cachet_key_free(&vk[nkeys]);
      goto done;
    }
  }
  for (size_t i = 0; i < nkeys; i++) {
    const char *argv[2] = {"SMEMBERS", mk[i].buf};
    size_t lens[2] = {8, mk[i].len};
    if ((rc = cachet_conn_append(cn, 2, argv, lens)) != CACHET_OK)
      goto done;
  }
  nread = nkeys;
  if ((rc = read_replies(cn, nread, sets)) != CACHET_OK)
    goto done;

  /* Take members while the work stays within the budget. */
  size_t sizes[CACHET_EVICT_MEMBERS];
  for (size_t i = 0; i < nkeys; i++) {
    if (!is_string_array(sets[i])) {
      rc = proto(cn, "SMEMBERS");
      goto done;
    }
    sizes[i] = sets[i]->elements;
  }
  size_t ntags = 0;
  size_t n = cachet_evict_take(sizes, nkeys, &ntags);

  /* The other tags those members carry, each once. */
  if (ntags > 0) {
    others = malloc(ntags * sizeof *others);
    if (others == NULL) {
      rc = cachet_fail(CACHET_ENOMEM, "out of memory");
      goto done;
    }
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < sets[i]->elements; j++)
        others[nothers++] =
            (cachet_name){sets[i]->element[j]->str, sets[i]->element[j]->len};
    nothers = cachet_evict_others(others, nothers, x->tag, x->taglen);
  }
  if (nothers > 0) {
    ok = malloc(nothers * sizeof *ok);
    if (ok == NULL) {
      rc = cachet_fail(CACHET_ENOMEM, "out of memory");
      goto done;
    }
    for (; nok < nothers; nok++)
      if ((rc = cachet_key_build(c, &ok[nok], CACHET_KIND_INDEX, x->bucket,
                                 others[nok].s, others[nok].len)))
        goto done;
  }

  char nbuf[16];
  int nl = snprintf(nbuf, sizeof nbuf, "%zu", n);
  if ((rc = args_push(&b, x->ek.buf, x->ek.len)) ||
      (rc = args_push(&b, x->tk.buf, x->tk.len)))
    goto done;
  for (size_t i = 0; i < n; i++)
    if ((rc = args_push(&b, vk[i].buf, vk[i].len)) ||
        (rc = args_push(&b, mk[i].buf, mk[i].len)))
      goto done;
  for (size_t i = 0; i < nothers; i++)
    if ((rc = args_push(&b, ok[i].buf, ok[i].len)))
      goto done;
  size_t nk = b.n;
  if ((rc = args_push(&b, x->tag, x->taglen)) ||
      (rc = args_push(&b, nbuf, (size_t)nl)))
    goto done;
  for (size_t i = 0; i < n; i++)
    if ((rc = args_push(&b, range->element[i]->str, range->element[i]->len)))
      goto done;
  for (size_t i = 0; i < nothers; i++)
    if ((rc = args_push(&b, others[i].s, others[i].len)))
      goto done;
  rc = cachet_script_run(c, cn, CACHET_SCRIPT_EVICT_CHUNK, (int)nk, (int)b.n,
                         b.a, b.l, &res);
  if (rc != CACHET_OK)
    goto done;
  if (res->type != REDIS_REPLY_ARRAY || res->elements != 3 ||
      res->element[0]->type != REDIS_REPLY_INTEGER ||
      res->element[1]->type != REDIS_REPLY_INTEGER ||
      res->element[2]->type != REDIS_REPLY_INTEGER ||
      res->element[0]->integer < 0 || res->element[2]->integer < 0) {
    rc = proto(cn, "evict_chunk");
    goto done;
  }
  *x->total += (uint64_t)res->element[0]->integer;
  *moved =
      (uint64_t)res->element[0]->integer + (uint64_t)res->element[2]->integer;
done:
  if (res != NULL)
    freeReplyObject(res);
  args_free(&b);
  for (size_t i = 0; i < nok; i++)
    cachet_key_free(&ok[i]);
  free(ok);
  free(others);
  free_replies(nread, sets);
  for (size_t i = 0; i < nkeys; i++) {
    cachet_key_free(&vk[i]);
    cachet_key_free(&mk[i]);
  }
  if (range != NULL)
    freeReplyObject(range);
  return rc;
}

static int drain(evict_ctx *x) {
  int idle = 0;
  for (;;) {
    int empty;
    uint64_t moved;
    int rc = evict_chunk(x, &empty, &moved);
    if (rc != CACHET_OK || empty)
      return rc;
    progress(x->c, "evict", *x->total);
    if (moved > 0) {
      idle = 0;
    } else if (++idle == CACHET_EVICT_IDLE_ROUNDS) {
      return cachet_fail(CACHET_EBUSY,
                         "evict-tags: entries of tag '%s' kept changing their "
                         "tags under concurrent writers (%d rounds)",
                         x->tag, CACHET_EVICT_IDLE_ROUNDS);
    }
  }
}

/*
 * Drain whatever earlier or concurrent evictions left in the e key, then
 * snapshot the t key into e and drain that. After our own snapshot is drained
 * the bucket is done: members added later were written after the call
 * started.
 */
static int evict_bucket(evict_ctx *x) {
  const char *argv[2] = {x->tk.buf, x->ek.buf};
  size_t lens[2] = {x->tk.len, x->ek.len};
  for (int round = 0; round < CACHET_EVICT_BEGINS; round++) {
    redisReply *r = NULL;
    int rc = cachet_script_run(x->c, x->cn, CACHET_SCRIPT_EVICT_BEGIN, 2, 2,
                               argv, lens, &r);
    if (rc != CACHET_OK)
      return rc;
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0 || r->integer > 2) {
      freeReplyObject(r);
      return proto(x->cn, "evict_begin");
    }
    long long state = r->integer;
    freeReplyObject(r);
    if (state == 0)
      return CACHET_OK;
    if ((rc = drain(x)) != CACHET_OK)
      return rc;
    if (state == 2)
      return CACHET_OK;
  }
  return cachet_fail(CACHET_EBUSY,
                     "evict-tags: tag '%s' was being evicted by %d other "
                     "calls at once",
                     x->tag, CACHET_EVICT_BEGINS);
}

static int evict_tag(cachet *c, cachet_conn *cn, const char *tag,
                     uint64_t *total) {
  unsigned char live[CACHET_BUCKETS];
  size_t taglen = strlen(tag);
  int rc = sweep(c, cn, tag, taglen, live);
  for (unsigned b = 0; rc == CACHET_OK && b < CACHET_BUCKETS; b++) {
    if (!live[b])
      continue;
    evict_ctx x = {c, cn, tag, taglen, b, {0}, {0}, total};
    if ((rc = cachet_key_build(c, &x.tk, CACHET_KIND_INDEX, b, tag, taglen)) ==
            CACHET_OK &&
        (rc = cachet_key_build(c, &x.ek, CACHET_KIND_EVICTING, b, tag,
                               taglen)) == CACHET_OK)
      rc = evict_bucket(&x);
    cachet_key_free(&x.tk);
    cachet_key_free(&x.ek);
  }
  return rc;
}

int cachet_evict_tags(cachet *c, const char *const *tags, size_t ntags,
                      uint64_t *evicted) {
  cachet_error_clear();
  if (evicted != NULL)
    *evicted = 0;
  if (ntags > 0 && tags == NULL)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL, "tags is NULL but ntags is %zu", ntags));
  for (size_t i = 0; i < ntags; i++) {
    if (tags[i] == NULL || tags[i][0] == '\0')
      return cachet_result(
          c, cachet_fail(CACHET_EINVAL, "tag %zu is empty", i + 1));
    if (strlen(tags[i]) > c->cfg.max_key_size)
      return cachet_result(
          c, cachet_fail(CACHET_EINVAL, "tag %zu exceeds max_key_size", i + 1));
  }
  if (ntags == 0)
    return cachet_result(c, CACHET_OK);
  cachet_conn *cn;
  int rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  uint64_t total = 0;
  for (size_t i = 0; rc == CACHET_OK && i < ntags; i++)
    rc = evict_tag(c, cn, tags[i], &total);
  cachet_conn_release(c, cn);
  /* Entries evicted before an error are gone all the same: count them. */
  CACHET_COUNT(c, tag_evictions, total);
  if (rc == CACHET_OK && evicted != NULL)
    *evicted = total;
  return cachet_result(c, rc);
}

/* ---- prune -------------------------------------------------------------- */

/* Parse "<prefix>{bb}t:<tag>": the bucket and where the tag starts. */
static int parse_index_key(const cachet *c, const redisReply *k,
                           unsigned *bucket, const char **tag, size_t *taglen) {
  size_t p = c->cfg.prefixlen;
  const char *s = k->str;
  if (k->len < p + 7 || memcmp(s, c->cfg.prefix, p) != 0 || s[p] != '{' ||
      s[p + 3] != '}' || s[p + 4] != CACHET_KIND_INDEX || s[p + 5] != ':')
    return 0;
  unsigned b = 0;
  for (int i = 1; i <= 2; i++) {
    char ch = s[p + (size_t)i];
    if (ch >= '0' && ch <= '9')
      b = b * 16 + (unsigned)(ch - '0');
    else if (ch >= 'a' && ch <= 'f')
      b = b * 16 + (unsigned)(ch - 'a' + 10);
    else
      return 0;
  }
  *bucket = b;
  *tag = s + p + 6;
  *taglen = k->len - p - 6;
  return 1;
}

/* Remove expired members, cap at a time. */
static int prune_expired(cachet *c, cachet_conn *cn, const redisReply *key,
                         uint64_t *total) {
  const char *argv[2] = {key->str, PRUNE_EXPIRED_CAP};
  size_t lens[2] = {key->len, sizeof PRUNE_EXPIRED_CAP - 1};
  for (;;) {
    redisReply *r = NULL;
    int rc = cachet_script_run(c, cn, CACHET_SCRIPT_PRUNE_CHUNK, 1, 2, argv,
                               lens, &r);
    if (rc != CACHET_OK)
      return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[0]->integer < 0) {
      freeReplyObject(r);
      return proto(cn, "prune_chunk");
    }
    *total += (uint64_t)r->element[0]->integer;
    int more = r->element[1]->integer != 0;
    freeReplyObject(r);
    if (!more)
      return CACHET_OK;
  }
}

/* Check up to PRUNE_MEMBERS members (elements[from..to) step 2 of a ZSCAN
 * page) and remove the dangling ones. */
static int prune_members(cachet *c, cachet_conn *cn, const redisReply *key,
                         unsigned bucket, const char *tag, size_t taglen,
                         redisReply *const *el, size_t n, uint64_t *total) {
  cachet_key vk[PRUNE_MEMBERS], mk[PRUNE_MEMBERS];
  size_t built = 0;
  args b = {0};
  redisReply *r = NULL;
  int rc = args_push(&b, key->str, key->len);
  for (; rc == CACHET_OK && built < n; built++) {
    const redisReply *m = el[2 * built];
    if ((rc = cachet_key_build(c, &vk[built], CACHET_KIND_VALUE, bucket, m->str,
                               m->len)))
      break;
    if ((rc = cachet_key_build(c, &mk[built], CACHET_KIND_TAGSET, bucket,
                               m->str, m->len))) {
      cachet_key_free(&vk[built]);
      break;
    }
  }
  for (size_t i = 0; rc == CACHET_OK && i < n; i++)
    if ((rc = args_push(&b, vk[i].buf, vk[i].len)) == CACHET_OK)
      rc = args_push(&b, mk[i].buf, mk[i].len);
  size_t nk = b.n;
  if (rc == CACHET_OK)
    rc = args_push(&b, tag, taglen);
  for (size_t i = 0; rc == CACHET_OK && i < n; i++)
    rc = args_push(&b, el[2 * i]->str, el[2 * i]->len);
  if (rc == CACHET_OK)
    rc = cachet_script_run(c, cn, CACHET_SCRIPT_PRUNE_DANGLING, (int)nk,
                           (int)b.n, b.a, b.l, &r);
  if (rc == CACHET_OK) {
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0)
      rc = proto(cn, "prune_dangling");
    else
      *total += (uint64_t)r->integer;
    freeReplyObject(r);
  }
  args_free(&b);
  for (size_t i = 0; i < built; i++) {
    cachet_key_free(&vk[i]);
    cachet_key_free(&mk[i]);
  }
  return rc;
}

/* ZSCAN the index and drop members whose entry no longer carries the tag. */
static int prune_dangling(cachet *c, cachet_conn *cn, const redisReply *key,
                          unsigned bucket, const char *tag, size_t taglen,
                          uint64_t *total) {
  char cursor[32] = "0";
  do {
    redisReply *r = NULL;
    const char *argv[5] = {"ZSCAN", key->str, cursor, "COUNT",
                           PRUNE_ZSCAN_COUNT};
    size_t lens[5] = {5, key->len, strlen(cursor), 5,
                      sizeof PRUNE_ZSCAN_COUNT - 1};
    int rc = cachet_conn_command(cn, 5, argv, lens, &r);
    if (rc != CACHET_OK)
      return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        !is_string(r->element[0]) || r->element[0]->len >= sizeof cursor ||
        !is_string_array(r->element[1]) || r->element[1]->elements % 2 != 0) {
      freeReplyObject(r);
      return proto(cn, "ZSCAN");
    }
    memcpy(cursor, r->element[0]->str, r->element[0]->len);
    cursor[r->element[0]->len] = '\0';
    const redisReply *page = r->element[1];
    size_t members = page->elements / 2;
    for (size_t i = 0; rc == CACHET_OK && i < members; i += PRUNE_MEMBERS) {
      size_t n = members - i < PRUNE_MEMBERS ? members - i : PRUNE_MEMBERS;
      rc = prune_members(c, cn, key, bucket, tag, taglen, page->element + 2 * i,
                         n, total);
    }
    freeReplyObject(r);
    if (rc != CACHET_OK)
      return rc;
  } while (strcmp(cursor, "0") != 0);
  return CACHET_OK;
}

/* SCAN one master (the server, standalone) for index keys and prune each;
 * every script call is on the index's own slot. */
static int prune_node(cachet *c, cachet_conn *cn, int node, const char *pat,
                      uint64_t *total) {
  char cursor[32] = "0";
  int rc;
  do {
    redisReply *r = NULL;
    const char *argv[6] = {"SCAN", cursor,  "MATCH",
                           pat,    "COUNT", PRUNE_SCAN_COUNT};
    size_t lens[6] = {
        4, strlen(cursor), 5, strlen(pat), 5, sizeof PRUNE_SCAN_COUNT - 1};
    if ((rc = cachet_conn_command_node(cn, node, 6, argv, lens, &r)) !=
        CACHET_OK)
      break;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        !is_string(r->element[0]) || r->element[0]->len >= sizeof cursor ||
        !is_string_array(r->element[1])) {
      freeReplyObject(r);
      rc = proto(cn, "SCAN");
      break;
    }
    memcpy(cursor, r->element[0]->str, r->element[0]->len);
    cursor[r->element[0]->len] = '\0';
    const redisReply *keys = r->element[1];
    for (size_t i = 0; rc == CACHET_OK && i < keys->elements; i++) {
      unsigned bucket;
      const char *tag;
      size_t taglen;
      if (!parse_index_key(c, keys->element[i], &bucket, &tag, &taglen))
        continue;
      if ((rc = prune_expired(c, cn, keys->element[i], total)) == CACHET_OK)
        rc =
            prune_dangling(c, cn, keys->element[i], bucket, tag, taglen, total);
    }
    freeReplyObject(r);
    if (rc == CACHET_OK)
      progress(c, "prune", *total);
  } while (rc == CACHET_OK && strcmp(cursor, "0") != 0);
  return rc;
}

int cachet_prune(cachet *c, uint64_t *pruned) {
  cachet_error_clear();
  if (pruned != NULL)
    *pruned = 0;
  char *pat = NULL;
  int rc = cachet_scan_pattern(c, "{??}t:*", &pat);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);

  cachet_conn *cn;
  if ((rc = cachet_conn_acquire(c, &cn)) != CACHET_OK) {
    free(pat);
    return cachet_result(c, rc);
  }
  uint64_t total = 0;
  /* In a cluster every master holds its own share of the index keys. */
  int nodes = cachet_conn_nodes(cn);
  if (nodes < 0)
    rc = nodes;
  for (int node = 0; rc == CACHET_OK && node < nodes; node++)
    rc = prune_node(c, cn, node, pat, &total);
  cachet_conn_release(c, cn);
  free(pat);
  if (rc == CACHET_OK && pruned != NULL)
    *pruned = total;
  return cachet_result(c, rc);
}
