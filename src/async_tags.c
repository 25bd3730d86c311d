/* Async evict_tags and clear: tags.c's and clear.c's chunked protocols as
 * state machines, one step per round trip, so the loop never waits.
 *
 * evict_tags, per tag: one pipelined sweep of 512 EXISTS finds the buckets
 * with an index (t) or an index being evicted (e); per such bucket,
 * evict_begin, then chunks of ZRANGE e 0 63, a pipelined SMEMBERS of each
 * member's tag set, and one evict_chunk call, until e is empty; the same
 * bounds as tags.c (64 begin rounds per bucket, 16 idle chunks in a row,
 * about 1024 key operations per call), then EBUSY.
 *
 * clear: SCAN MATCH <escaped prefix>{??}[vmte]:* COUNT 1000, and each page
 * to clear_chunk in batches of at most 256 keys. A single server only. */
#include "async.h"

#include "cachet.h"

#ifdef CACHET_HAVE_LIBEVENT

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "evict.h"
#include "keys.h"

#define CLEAR_SCAN_COUNT "1000"
#define CLEAR_KEYS 256

/* Strings taken out of replies (hiredis frees a reply when its callback
 * returns, so anything kept across a round trip is taken or copied). */
typedef struct strv {
  char **s;
  size_t *len;
  size_t n, cap;
} strv;

static int strv_push(strv *v, char *s, size_t len) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    char **ns = realloc(v->s, cap * sizeof *ns);
    if (ns == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    v->s = ns;
    size_t *nl = realloc(v->len, cap * sizeof *nl);
    if (nl == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    v->len = nl;
    v->cap = cap;
  }
  v->s[v->n] = s;
  v->len[v->n++] = len;
  return CACHET_OK;
}

static void strv_clear(strv *v) {
  for (size_t i = 0; i < v->n; i++)
    free(v->s[i]);
  v->n = 0;
}

static void strv_free(strv *v) {
  strv_clear(v);
  free(v->s);
  free(v->len);
  memset(v, 0, sizeof *v);
}

/* Take every element of an array of strings; 0 if the shape is wrong. */
static int take_strings(redisReply *r, strv *v, int *rc) {
  *rc = CACHET_OK;
  if (r->type != REDIS_REPLY_ARRAY)
    return 0;
  for (size_t i = 0; i < r->elements; i++)
    if (r->element[i]->type != REDIS_REPLY_STRING)
      return 0;
  for (size_t i = 0; i < r->elements; i++) {
    size_t len = r->element[i]->len;
    char *s = cachet_reply_take(r->element[i]);
    if ((*rc = strv_push(v, s, len)) != CACHET_OK) {
      free(s);
      return 1;
    }
  }
  return 1;
}

static void progress(cachet *c, const char *op, uint64_t done) {
  if (c->progress != NULL)
    c->progress(c->progress_ud, op, done);
}

/* ---- evict_tags --------------------------------------------------------- */

enum { E_SWEEP, E_BEGIN, E_RANGE, E_SETS, E_CHUNK };

typedef struct evict_op {
  aop op;
  int state;
  char **tags;
  size_t ntags, ti;
  unsigned char live[CACHET_BUCKETS];
  size_t swept; /* sweep replies received */
  unsigned bucket;
  cachet_key tk, ek;
  int begin_state, round, idle;
  uint64_t total;
  /* The chunk being evicted. */
  strv members;
  strv sets[CACHET_EVICT_MEMBERS]; /* each member's tag set */
  size_t nsets;
  cachet_key vk[CACHET_EVICT_MEMBERS], mk[CACHET_EVICT_MEMBERS];
  size_t nkeys;
  cachet_key *ok; /* index keys of the other tags */
  size_t nok;
  const char **args; /* the evict_chunk call, kept for a resend */
  size_t *lens;
  size_t nargs, nk;
  char nbuf[16];
} evict_op;

static void evict_chunk_free(evict_op *x) {
  strv_clear(&x->members);
  for (size_t i = 0; i < x->nsets; i++)
    strv_free(&x->sets[i]);
  x->nsets = 0;
  for (size_t i = 0; i < x->nkeys; i++) {
    cachet_key_free(&x->vk[i]);
    cachet_key_free(&x->mk[i]);
  }
  x->nkeys = 0;
  for (size_t i = 0; i < x->nok; i++)
    cachet_key_free(&x->ok[i]);
  free(x->ok);
  x->ok = NULL;
  x->nok = 0;
  free(x->args);
  free(x->lens);
  x->args = NULL;
  x->lens = NULL;
}

static void evict_cleanup(aop *op) {
  evict_op *x = (evict_op *)op;
  evict_chunk_free(x);
  strv_free(&x->members);
  for (size_t i = 0; i < x->ntags; i++)
    free(x->tags[i]);
  free(x->tags);
  cachet_key_free(&x->tk);
  cachet_key_free(&x->ek);
}

static void evict_fail(evict_op *x, int rc) { cachet_aop_finish(&x->op, rc); }

static void evict_sweep(evict_op *x);

static void evict_send_begin(evict_op *x) {
  x->state = E_BEGIN;
  const char *args[2] = {x->tk.buf, x->ek.buf};
  size_t lens[2] = {x->tk.len, x->ek.len};
  int rc =
      cachet_aop_script(&x->op, CACHET_SCRIPT_EVICT_BEGIN, 2, 2, args, lens);
  if (rc != CACHET_OK)
    evict_fail(x, rc);
}

/* The next bucket with work, the next tag, or the end. */
static void evict_next_bucket(evict_op *x, unsigned from) {
  cachet *c = x->op.a->c;
  for (unsigned b = from; b < CACHET_BUCKETS; b++) {
    if (!x->live[b])
      continue;
    const char *tag = x->tags[x->ti];
    size_t taglen = strlen(tag);
    cachet_key_free(&x->tk);
    cachet_key_free(&x->ek);
    int rc;
    if ((rc = cachet_key_build(c, &x->tk, CACHET_KIND_INDEX, b, tag, taglen)) ||
        (rc = cachet_key_build(c, &x->ek, CACHET_KIND_EVICTING, b, tag,
                               taglen))) {
      evict_fail(x, rc);
      return;
    }
    x->bucket = b;
    x->round = 0;
    evict_send_begin(x);
    return;
  }
  x->ti++;
  if (x->ti < x->ntags) {
    evict_sweep(x);
    return;
  }
  CACHET_COUNT(c, tag_evictions, x->total);
  cachet_aop_finish(&x->op, CACHET_OK);
}

static void evict_sweep(evict_op *x) {
  cachet *c = x->op.a->c;
  const char *tag = x->tags[x->ti];
  size_t taglen = strlen(tag);
  x->state = E_SWEEP;
  x->swept = 0;
  memset(x->live, 0, sizeof x->live);
  for (size_t i = 0; i < 2 * CACHET_BUCKETS; i++) {
    cachet_key k = {0};
    int rc = cachet_key_build(c, &k,
                              i % 2 ? CACHET_KIND_EVICTING : CACHET_KIND_INDEX,
                              (unsigned)(i / 2), tag, taglen);
    if (rc == CACHET_OK) {
      /* hiredis copies the command when it is queued. */
      const char *argv[2] = {"EXISTS", k.buf};
      size_t lens[2] = {6, k.len};
      rc = cachet_aop_send(&x->op, 2, argv, lens);
    }
    cachet_key_free(&k);
    if (rc != CACHET_OK) {
      evict_fail(x, rc);
      return;
    }
  }
}

static void evict_send_range(evict_op *x) {
  x->state = E_RANGE;
  char stop[16];
  int sl = snprintf(stop, sizeof stop, "%d", CACHET_EVICT_MEMBERS - 1);
  const char *argv[4] = {"ZRANGE", x->ek.buf, "0", stop};
  size_t lens[4] = {6, x->ek.len, 1, (size_t)sl};
  int rc = cachet_aop_send(&x->op, 4, argv, lens);
  if (rc != CACHET_OK)
    evict_fail(x, rc);
}

static void evict_send_chunk(aop *op) {
  evict_op *x = (evict_op *)op;
  int rc = cachet_aop_script(op, CACHET_SCRIPT_EVICT_CHUNK, (int)x->nk,
                             (int)x->nargs, x->args, x->lens);
  if (rc != CACHET_OK)
    evict_fail(x, rc);
}

/* A borrowed tag name, for sorting and de-duplication. */
typedef struct name {
  const char *s;
  size_t len;
} name;

/* Every tag set is in: take members within the budget, learn the other
 * tags' index keys, and send evict_chunk. */
static void evict_build_chunk(evict_op *x) {
  cachet *c = x->op.a->c;
  const char *tag = x->tags[x->ti];
  size_t taglen = strlen(tag);
  size_t sizes[CACHET_EVICT_MEMBERS], ntags = 0;
  for (size_t i = 0; i < x->members.n; i++)
    sizes[i] = x->sets[i].n;
  size_t n = cachet_evict_take(sizes, x->members.n, &ntags);
  cachet_name *others = malloc((ntags ? ntags : 1) * sizeof *others);
  size_t nothers = 0;
  int rc =
      others == NULL ? cachet_fail(CACHET_ENOMEM, "out of memory") : CACHET_OK;
  if (rc == CACHET_OK) {
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < x->sets[i].n; j++)
        others[nothers++] = (cachet_name){x->sets[i].s[j], x->sets[i].len[j]};
    nothers = cachet_evict_others(others, nothers, tag, taglen);
    x->ok = malloc((nothers ? nothers : 1) * sizeof *x->ok);
    size_t nargs = 4 + 3 * n + 2 * nothers;
    x->args = malloc(nargs * sizeof *x->args);
    x->lens = malloc(nargs * sizeof *x->lens);
    if (x->ok == NULL || x->args == NULL || x->lens == NULL)
      rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  }
  for (; rc == CACHET_OK && x->nok < nothers; x->nok++)
    rc = cachet_key_build(c, &x->ok[x->nok], CACHET_KIND_INDEX, x->bucket,
                          others[x->nok].s, others[x->nok].len);
  if (rc != CACHET_OK) {
    free(others);
    evict_fail(x, rc);
    return;
  }
  size_t k = 0;
#define PUSH(p, l) (x->args[k] = (p), x->lens[k++] = (l))
  PUSH(x->ek.buf, x->ek.len);
  PUSH(x->tk.buf, x->tk.len);
  for (size_t i = 0; i < n; i++) {
    PUSH(x->vk[i].buf, x->vk[i].len);
    PUSH(x->mk[i].buf, x->mk[i].len);
  }
  for (size_t i = 0; i < nothers; i++)
    PUSH(x->ok[i].buf, x->ok[i].len);
  x->nk = k;
  int nl = snprintf(x->nbuf, sizeof x->nbuf, "%zu", n);
  PUSH(tag, taglen);
  PUSH(x->nbuf, (size_t)nl);
  for (size_t i = 0; i < n; i++)
    PUSH(x->members.s[i], x->members.len[i]);
  /* The other tag names point into the tag sets, which live until the
   * chunk is freed. */
  for (size_t i = 0; i < nothers; i++)
    PUSH(others[i].s, others[i].len);
#undef PUSH
  x->nargs = k;
  free(others);
  x->state = E_CHUNK;
  evict_send_chunk(&x->op);
}

static void evict_reply(aop *op, redisReply *r) {
  evict_op *x = (evict_op *)op;
  cachet *c = op->a->c;
  int rc;
  if (r->type == REDIS_REPLY_ERROR) {
    cachet_aop_server_error(op, r);
    return;
  }
  switch (x->state) {
  case E_SWEEP: {
    size_t i = x->swept++;
    if (r->type != REDIS_REPLY_INTEGER) {
      cachet_aop_proto(op, "EXISTS");
      return;
    }
    if (r->integer > 0)
      x->live[i / 2] = 1;
    if (x->swept == 2 * CACHET_BUCKETS)
      evict_next_bucket(x, 0);
    return;
  }
  case E_BEGIN:
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0 || r->integer > 2) {
      cachet_aop_proto(op, "evict_begin");
      return;
    }
    if (r->integer == 0) {
      evict_next_bucket(x, x->bucket + 1);
      return;
    }
    x->begin_state = (int)r->integer;
    x->idle = 0;
    evict_send_range(x);
    return;
  case E_RANGE:
    evict_chunk_free(x);
    if (!take_strings(r, &x->members, &rc) ||
        r->elements > CACHET_EVICT_MEMBERS) {
      cachet_aop_proto(op, "ZRANGE");
      return;
    }
    if (rc != CACHET_OK) {
      evict_fail(x, rc);
      return;
    }
    if (x->members.n == 0) {
      /* Drained. Our own snapshot (2) ends the bucket; one left by another
       * eviction (1) is followed by our own begin. */
      if (x->begin_state == 2) {
        evict_next_bucket(x, x->bucket + 1);
      } else if (++x->round == CACHET_EVICT_BEGINS) {
        (void)cachet_fail(CACHET_EBUSY,
                          "evict-tags: tag '%s' was being evicted by %d "
                          "other calls at once",
                          x->tags[x->ti], CACHET_EVICT_BEGINS);
        evict_fail(x, CACHET_EBUSY);
      } else {
        evict_send_begin(x);
      }
      return;
    }
    for (; x->nkeys < x->members.n; x->nkeys++) {
      size_t i = x->nkeys;
      if ((rc = cachet_key_build(c, &x->vk[i], CACHET_KIND_VALUE, x->bucket,
                                 x->members.s[i], x->members.len[i])))
        break;
      if ((rc = cachet_key_build(c, &x->mk[i], CACHET_KIND_TAGSET, x->bucket,
                                 x->members.s[i], x->members.len[i]))) {
        cachet_key_free(&x->vk[i]);
        break;
      }
    }
    if (rc != CACHET_OK) {
      evict_fail(x, rc);
      return;
    }
    x->state = E_SETS;
    for (size_t i = 0; i < x->nkeys; i++) {
      const char *argv[2] = {"SMEMBERS", x->mk[i].buf};
      size_t lens[2] = {8, x->mk[i].len};
      if ((rc = cachet_aop_send(op, 2, argv, lens)) != CACHET_OK) {
        evict_fail(x, rc);
        return;
      }
    }
    return;
  case E_SETS: {
    size_t i = x->nsets++;
    if (!take_strings(r, &x->sets[i], &rc)) {
      cachet_aop_proto(op, "SMEMBERS");
      return;
    }
    if (rc != CACHET_OK) {
      evict_fail(x, rc);
      return;
    }
    if (x->nsets == x->members.n)
      evict_build_chunk(x);
    return;
  }
  case E_CHUNK:
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_INTEGER ||
        r->element[0]->integer < 0 || r->element[2]->integer < 0) {
      cachet_aop_proto(op, "evict_chunk");
      return;
    }
    x->total += (uint64_t)r->element[0]->integer;
    uint64_t moved =
        (uint64_t)r->element[0]->integer + (uint64_t)r->element[2]->integer;
    progress(c, "evict", x->total);
    if (moved > 0) {
      x->idle = 0;
    } else if (++x->idle == CACHET_EVICT_IDLE_ROUNDS) {
      (void)cachet_fail(CACHET_EBUSY,
                        "evict-tags: entries of tag '%s' kept changing their "
                        "tags under concurrent writers (%d rounds)",
                        x->tags[x->ti], CACHET_EVICT_IDLE_ROUNDS);
      evict_fail(x, CACHET_EBUSY);
      return;
    }
    evict_send_range(x);
    return;
  }
}

static void evict_resend(aop *op) {
  evict_op *x = (evict_op *)op;
  if (x->state == E_BEGIN)
    evict_send_begin(x);
  else if (x->state == E_CHUNK)
    evict_send_chunk(op);
}

static void evict_stop(aop *op) {
  evict_op *x = (evict_op *)op;
  /* Entries evicted before an error are gone all the same: count them
   * (the success path counted them already). */
  if (x->ti < x->ntags)
    CACHET_COUNT(op->a->c, tag_evictions, x->total);
}

static void count_deliver(aop *op, int rc, uint64_t n) {
  ((cachet_async_count_cb)op->cb)(rc, rc == CACHET_OK ? n : 0, op->ud);
}

static void evict_deliver(aop *op, int rc) {
  count_deliver(op, rc, ((evict_op *)op)->total);
}

static const aop_kind evict_kind = {"evict_tags", evict_reply,   evict_resend,
                                    NULL,         evict_deliver, evict_stop,
                                    evict_cleanup};

static void evict_start(aop *op) {
  evict_op *x = (evict_op *)op;
  if (x->ntags == 0) {
    cachet_aop_finish(op, CACHET_OK);
    return;
  }
  evict_sweep(x);
}

int cachet_async_evict_tags(cachet_async *a, const char *const *tags,
                            size_t ntags, cachet_async_count_cb cb, void *ud) {
  cachet_error_clear();
  cachet *c = a->c;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
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
  evict_op *x = (evict_op *)cachet_aop_new(a, &evict_kind, sizeof *x, 1, NULL,
                                           (aop_cb)cb, ud);
  if (x == NULL)
    return cachet_result(c, CACHET_ENOMEM);
  x->tags = calloc(ntags ? ntags : 1, sizeof *x->tags);
  int rc =
      x->tags == NULL ? cachet_fail(CACHET_ENOMEM, "out of memory") : CACHET_OK;
  for (size_t i = 0; rc == CACHET_OK && i < ntags; i++) {
    if ((x->tags[i] = strdup(tags[i])) == NULL)
      rc = cachet_fail(CACHET_ENOMEM, "out of memory");
    else
      x->ntags = i + 1;
  }
  if (rc != CACHET_OK) {
    cachet_aop_discard(&x->op);
    return cachet_result(c, rc);
  }
  cachet_aop_start(&x->op, evict_start);
  return CACHET_OK;
}

/* ---- clear -------------------------------------------------------------- */

typedef struct clear_op {
  aop op;
  int dry_run;
  int scanning; /* 1: a SCAN is out; 0: a clear_chunk call */
  char *pat;
  char cursor[32];
  strv page; /* this page's data keys */
  size_t pos, batch;
  const char *args[CLEAR_KEYS + 1];
  size_t lens[CLEAR_KEYS + 1];
  uint64_t total;
} clear_op;

static void clear_scan(clear_op *x) {
  x->scanning = 1;
  const char *argv[6] = {"SCAN", x->cursor, "MATCH",
                         x->pat, "COUNT",   CLEAR_SCAN_COUNT};
  size_t lens[6] = {4, strlen(x->cursor),          5, strlen(x->pat),
                    5, sizeof CLEAR_SCAN_COUNT - 1};
  int rc = cachet_aop_send(&x->op, 6, argv, lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(&x->op, rc);
}

static void clear_send_batch(aop *op) {
  clear_op *x = (clear_op *)op;
  cachet *c = op->a->c;
  x->scanning = 0;
  for (size_t i = 0; i < x->batch; i++) {
    x->args[i] = x->page.s[x->pos + i];
    x->lens[i] = x->page.len[x->pos + i];
  }
  x->args[x->batch] = c->cfg.prefix;
  x->lens[x->batch] = c->cfg.prefixlen;
  int rc = cachet_aop_script(op, CACHET_SCRIPT_CLEAR_CHUNK, (int)x->batch,
                             (int)x->batch + 1, x->args, x->lens);
  if (rc != CACHET_OK)
    cachet_aop_finish(op, rc);
}

/* The next batch of the page, or the next page, or the end. */
static void clear_continue(clear_op *x) {
  cachet *c = x->op.a->c;
  x->pos += x->batch;
  x->batch = 0;
  if (!x->dry_run && x->pos < x->page.n) {
    size_t left = x->page.n - x->pos;
    x->batch = left < CLEAR_KEYS ? left : CLEAR_KEYS;
    clear_send_batch(&x->op);
    return;
  }
  progress(c, "clear", x->total);
  if (strcmp(x->cursor, "0") != 0) {
    clear_scan(x);
    return;
  }
  if (!x->dry_run)
    CACHET_COUNT(c, clears, 1);
  cachet_aop_finish(&x->op, CACHET_OK);
}

static void clear_reply(aop *op, redisReply *r) {
  clear_op *x = (clear_op *)op;
  cachet *c = op->a->c;
  if (r->type == REDIS_REPLY_ERROR) {
    cachet_aop_server_error(op, r);
    return;
  }
  if (!x->scanning) {
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
      cachet_aop_proto(op, "clear_chunk");
      return;
    }
    x->total += (uint64_t)r->integer;
    clear_continue(x);
    return;
  }
  int shape = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[0]->type == REDIS_REPLY_STRING &&
              r->element[0]->len < sizeof x->cursor &&
              r->element[1]->type == REDIS_REPLY_ARRAY;
  for (size_t i = 0; shape && i < r->element[1]->elements; i++)
    shape = r->element[1]->element[i]->type == REDIS_REPLY_STRING;
  if (!shape) {
    cachet_aop_proto(op, "SCAN");
    return;
  }
  memcpy(x->cursor, r->element[0]->str, r->element[0]->len);
  x->cursor[r->element[0]->len] = '\0';
  strv_clear(&x->page);
  x->pos = x->batch = 0;
  redisReply *page = r->element[1];
  for (size_t i = 0; i < page->elements; i++) {
    redisReply *k = page->element[i];
    char kind = cachet_data_kind(c, k->str, k->len);
    if (kind == 0)
      continue;
    if (x->dry_run) {
      x->total += kind == CACHET_KIND_VALUE;
      continue;
    }
    size_t len = k->len;
    char *s = cachet_reply_take(k);
    int rc = strv_push(&x->page, s, len);
    if (rc != CACHET_OK) {
      free(s);
      cachet_aop_finish(op, rc);
      return;
    }
  }
  clear_continue(x);
}

static void clear_resend(aop *op) {
  clear_op *x = (clear_op *)op;
  if (!x->scanning)
    clear_send_batch(op);
}

static void clear_deliver(aop *op, int rc) {
  count_deliver(op, rc, ((clear_op *)op)->total);
}

static void clear_cleanup(aop *op) {
  clear_op *x = (clear_op *)op;
  strv_free(&x->page);
  free(x->pat);
}

static const aop_kind clear_kind = {"clear",      clear_reply,   clear_resend,
                                    NULL,         clear_deliver, NULL,
                                    clear_cleanup};

static void clear_start(aop *op) { clear_scan((clear_op *)op); }

int cachet_async_clear(cachet_async *a, int dry_run, cachet_async_count_cb cb,
                       void *ud) {
  cachet_error_clear();
  cachet *c = a->c;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  char *pat = NULL;
  int rc = cachet_scan_pattern(c, CACHET_CLEAR_TAIL, &pat);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  clear_op *x = (clear_op *)cachet_aop_new(a, &clear_kind, sizeof *x, 1, NULL,
                                           (aop_cb)cb, ud);
  if (x == NULL) {
    free(pat);
    return cachet_result(c, CACHET_ENOMEM);
  }
  x->pat = pat;
  x->dry_run = dry_run;
  strcpy(x->cursor, "0");
  cachet_aop_start(&x->op, clear_start);
  return CACHET_OK;
}

#endif
