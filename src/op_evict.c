/* evict-tags as a machine (op_evict.h).
 *
 * A tag has one index key per bucket (<prefix>{bb}t:<tag>), so eviction
 * fans out over the buckets and works in bounded chunks: no script call
 * touches more than a fixed number of keys, so Redis never stalls for long,
 * and the read path pays nothing. Per tag and bucket (lua/evict_begin.lua,
 * lua/evict_chunk.lua):
 *  1. one pipelined sweep of EXISTS over the 256 t and 256 e keys finds the
 *     buckets with work to do;
 *  2. evict_begin renames t to e, a snapshot of the members the tag had
 *     (or reports an e left by an earlier or concurrent eviction, drained
 *     first);
 *  3. e is drained in chunks: ZRANGE, SMEMBERS of each member's tag set (to
 *     learn which other index keys the script must be given), then one
 *     evict_chunk call that re-checks each member atomically and evicts it,
 *     drops a stale membership, or skips it when its tags changed in
 *     between (read again next round).
 * Writers that add the tag meanwhile start a fresh t key, so each drain
 * ends. In a cluster each step touches one bucket, hence one slot. */
#include "op_evict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"

enum { V_START, V_SWEEP, V_BEGIN, V_RANGE, V_SETS, V_CHUNK };

static const char *tag(const cachet_op_evict *x) { return x->tags[x->ti]; }

static void drop_chunk(cachet_op_evict *x) {
  if (x->range != NULL)
    freeReplyObject(x->range);
  for (size_t i = 0; i < x->nsets; i++)
    if (x->sets[i] != NULL)
      freeReplyObject(x->sets[i]);
  x->range = NULL;
  x->nsets = 0;
}

static int send_sweep(cachet_op_evict *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  const char *t = tag(x);
  for (unsigned i = 0; i < 2 * CACHET_BUCKETS; i++) {
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    cachet_cmds_str(b, "EXISTS");
    cachet_cmds_key(b, x->op.c,
                    i % 2 ? CACHET_KIND_EVICTING : CACHET_KIND_INDEX, i / 2, t,
                    strlen(t));
  }
  x->op.state = V_SWEEP;
  return cachet_cmds_send(b, out);
}

static int send_begin(cachet_op_evict *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  const char *t = tag(x);
  cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_EVICT_BEGIN, 2);
  cachet_cmds_key(b, x->op.c, CACHET_KIND_INDEX, x->bucket, t, strlen(t));
  cachet_cmds_key(b, x->op.c, CACHET_KIND_EVICTING, x->bucket, t, strlen(t));
  x->op.state = V_BEGIN;
  return cachet_cmds_send(b, out);
}

static int send_range(cachet_op_evict *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  const char *t = tag(x);
  cachet_cmds_start(b, CACHET_ROUTE_KEY);
  cachet_cmds_str(b, "ZRANGE");
  cachet_cmds_key(b, x->op.c, CACHET_KIND_EVICTING, x->bucket, t, strlen(t));
  cachet_cmds_str(b, "0");
  cachet_cmds_int(b, CACHET_EVICT_MEMBERS - 1);
  x->op.state = V_RANGE;
  return cachet_cmds_send(b, out);
}

/* The next bucket of the current tag with work, or the next tag. */
static int next_bucket(cachet_op_evict *x, unsigned from, cachet_out *out) {
  for (unsigned b = from; b < CACHET_BUCKETS; b++)
    if (x->live[b]) {
      x->bucket = b;
      x->round = 0;
      return send_begin(x, out);
    }
  if (++x->ti < x->ntags)
    return send_sweep(x, out);
  return cachet_op_done(out, CACHET_OK);
}

static int sweep_reply(cachet_op_evict *x, const cachet_in *in,
                       cachet_out *out) {
  memset(x->live, 0, sizeof x->live);
  for (size_t i = 0; i < in->n; i++) {
    long long v;
    int rc = cachet_res_int(&in->res[i], "EXISTS", &v);
    if (rc != CACHET_OK)
      return cachet_op_done(out, rc);
    if (v > 0)
      x->live[i / 2] = 1;
  }
  return next_bucket(x, 0, out);
}

static int begin_reply(cachet_op_evict *x, const cachet_in *in,
                       cachet_out *out) {
  long long v;
  int rc = cachet_res_int(&in->res[0], "evict_begin", &v);
  if (rc == CACHET_OK && (v < 0 || v > 2))
    rc = cachet_res_proto("evict_begin");
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  if (v == 0) /* nothing left in this bucket */
    return next_bucket(x, x->bucket + 1, out);
  x->begin = (int)v;
  x->idle = 0;
  return send_range(x, out);
}

/* The e key is empty: done with it. After our own snapshot (2) the bucket
 * is done; after an earlier one (1), begin again to snapshot t. */
static int drained(cachet_op_evict *x, cachet_out *out) {
  if (x->begin == 2)
    return next_bucket(x, x->bucket + 1, out);
  if (++x->round == CACHET_EVICT_BEGINS)
    return cachet_op_fail(out, CACHET_EBUSY,
                          "evict-tags: tag '%s' was being evicted by %d other "
                          "calls at once",
                          tag(x), CACHET_EVICT_BEGINS);
  return send_begin(x, out);
}

static int range_reply(cachet_op_evict *x, cachet_in *in, cachet_out *out) {
  int rc = cachet_res_ok(&in->res[0]);
  redisReply *r = in->res[0].reply;
  if (rc == CACHET_OK &&
      (!cachet_reply_strings(r) || r->elements > CACHET_EVICT_MEMBERS))
    rc = cachet_res_proto("ZRANGE");
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  if (r->elements == 0)
    return drained(x, out);
  x->range = r; /* kept until the chunk is built */
  in->res[0].reply = NULL;
  cachet_cmds *b = &x->op.cmds;
  for (size_t i = 0; i < r->elements; i++) {
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    cachet_cmds_str(b, "SMEMBERS");
    cachet_cmds_key(b, x->op.c, CACHET_KIND_TAGSET, x->bucket,
                    r->element[i]->str, r->element[i]->len);
  }
  x->op.state = V_SETS;
  return cachet_cmds_send(b, out);
}

/* The chunk: members taken while the work stays within the budget, the
 * other tags they carry, then one evict_chunk. */
static int sets_reply(cachet_op_evict *x, cachet_in *in, cachet_out *out) {
  size_t nm = x->range->elements;
  size_t sizes[CACHET_EVICT_MEMBERS];
  for (size_t i = 0; i < nm; i++) {
    int rc = cachet_res_ok(&in->res[i]);
    if (rc == CACHET_OK && !cachet_reply_strings(in->res[i].reply))
      rc = cachet_res_proto("SMEMBERS");
    if (rc != CACHET_OK) {
      drop_chunk(x);
      return cachet_op_done(out, rc);
    }
    x->sets[i] = in->res[i].reply;
    in->res[i].reply = NULL;
    x->nsets = i + 1;
    sizes[i] = x->sets[i]->elements;
  }
  size_t ntags = 0;
  size_t n = cachet_evict_take(sizes, nm, &ntags);
  cachet_name *others = NULL;
  size_t nothers = 0;
  if (ntags > 0 && (others = malloc(ntags * sizeof *others)) == NULL) {
    drop_chunk(x);
    return cachet_op_fail(out, CACHET_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < x->sets[i]->elements; j++)
      others[nothers++] = (cachet_name){x->sets[i]->element[j]->str,
                                        x->sets[i]->element[j]->len};
  const char *t = tag(x);
  nothers = cachet_evict_others(others, nothers, t, strlen(t));

  cachet_cmds *b = &x->op.cmds;
  cachet *c = x->op.c;
  const redisReply *m = x->range;
  cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_EVICT_CHUNK,
                     2 + 2 * n + nothers);
  cachet_cmds_key(b, c, CACHET_KIND_EVICTING, x->bucket, t, strlen(t));
  cachet_cmds_key(b, c, CACHET_KIND_INDEX, x->bucket, t, strlen(t));
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = m->element[i];
    cachet_cmds_key(b, c, CACHET_KIND_VALUE, x->bucket, e->str, e->len);
    cachet_cmds_key(b, c, CACHET_KIND_TAGSET, x->bucket, e->str, e->len);
  }
  for (size_t i = 0; i < nothers; i++)
    cachet_cmds_key(b, c, CACHET_KIND_INDEX, x->bucket, others[i].s,
                    others[i].len);
  cachet_cmds_str(b, t);
  cachet_cmds_int(b, (long long)n);
  for (size_t i = 0; i < n; i++)
    cachet_cmds_copy(b, m->element[i]->str, m->element[i]->len);
  for (size_t i = 0; i < nothers; i++)
    cachet_cmds_copy(b, others[i].s, others[i].len);
  free(others);
  drop_chunk(x); /* everything it lent is copied */
  x->op.state = V_CHUNK;
  return cachet_cmds_send(b, out);
}

static int chunk_reply(cachet_op_evict *x, const cachet_in *in,
                       cachet_out *out) {
  int rc = cachet_res_ok(&in->res[0]);
  const redisReply *r = in->res[0].reply;
  if (rc == CACHET_OK &&
      (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
       r->element[0]->type != REDIS_REPLY_INTEGER ||
       r->element[1]->type != REDIS_REPLY_INTEGER ||
       r->element[2]->type != REDIS_REPLY_INTEGER ||
       r->element[0]->integer < 0 || r->element[2]->integer < 0))
    rc = cachet_res_proto("evict_chunk");
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  x->evicted += (uint64_t)r->element[0]->integer;
  /* Gone whatever comes next: counted now. */
  CACHET_COUNT(x->op.c, tag_evictions, (uint64_t)r->element[0]->integer);
  uint64_t moved =
      (uint64_t)r->element[0]->integer + (uint64_t)r->element[2]->integer;
  cachet_progress(x->op.c, "evict", x->evicted);
  if (moved > 0)
    x->idle = 0;
  else if (++x->idle == CACHET_EVICT_IDLE_ROUNDS)
    return cachet_op_fail(out, CACHET_EBUSY,
                          "evict-tags: entries of tag '%s' kept changing "
                          "their tags under concurrent writers (%d rounds)",
                          tag(x), CACHET_EVICT_IDLE_ROUNDS);
  return send_range(x, out);
}

static int evict_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_evict *x = (cachet_op_evict *)op;
  cachet_in *cur = (cachet_in *)in;
  switch (op->state) {
  case V_START:
    if (x->ntags == 0)
      return cachet_op_done(out, CACHET_OK);
    return send_sweep(x, out);
  case V_SWEEP:
    return sweep_reply(x, in, out);
  case V_BEGIN:
    return begin_reply(x, in, out);
  case V_RANGE:
    return range_reply(x, cur, out);
  case V_SETS:
    return sets_reply(x, cur, out);
  default:
    return chunk_reply(x, in, out);
  }
}

static void evict_free(cachet_op *op) {
  cachet_op_evict *x = (cachet_op_evict *)op;
  drop_chunk(x);
  for (size_t i = 0; i < x->ntags; i++)
    free(x->tags[i]);
  free(x->tags);
  x->tags = NULL;
  x->ntags = 0;
  cachet_cmds_free(&op->cmds);
}

static const cachet_op_kind evict_kind = {"evict-tags", evict_step, evict_free,
                                          0};

int cachet_op_evict_init(cachet_op_evict *x, cachet *c, const char *const *tags,
                         size_t ntags) {
  cachet_op_begin(&x->op, sizeof *x, &evict_kind, c);
  int rc = cachet_check_tag_names(c, tags, ntags);
  if (rc != CACHET_OK)
    return rc;
  if (ntags > 0 && (x->tags = calloc(ntags, sizeof *x->tags)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  for (; x->ntags < ntags; x->ntags++)
    if ((x->tags[x->ntags] = strdup(tags[x->ntags])) == NULL) {
      evict_free(&x->op);
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    }
  return CACHET_OK;
}
