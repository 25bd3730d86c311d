/* evict-tags as a machine (op_evict.h).
 *
 * A tag has one index key per bucket (<prefix>{bb}t:<tag>), so eviction
 * fans out over the buckets and works in bounded chunks: no script call
 * touches more than a fixed number of keys, so Redis never stalls for long,
 * and the read path pays nothing. Per tag and bucket (lua/evict_begin.lua,
 * lua/evict_chunk.lua):
 *  1. a pipelined sweep of EXISTS t e (one slot: the keys share {bb}) over
 *     the 256 buckets finds those with work to do;
 *  2. evict_begin renames t to e, a snapshot of the members the tag had
 *     (or reports an e left by an earlier or concurrent eviction, drained
 *     first);
 *  3. e is drained in chunks: ZRANGE, SMEMBERS of each member's tag set (to
 *     learn which other index keys the script must be given), then one
 *     evict_chunk call that re-checks each member atomically and evicts it,
 *     drops a stale membership, or skips it when its tags changed in
 *     between (read again next round).
 * Writers that add the tag meanwhile start a fresh t key, so each drain
 * ends. In a cluster each command touches one bucket, hence one slot.
 *
 * The round trips are what cost, not the work: each (tag, bucket) is a
 * lane, and every lane advances in the same SEND, which a cluster driver
 * splits into one pipeline per master, written before any reply is read.
 * A step's ZRANGE rides behind the command that changes e (evict_begin,
 * evict_chunk) in the same pipeline, so a chunk takes two round trips:
 * [evict_chunk + the next ZRANGE], then [SMEMBERS of those members]. A SEND
 * holds at most CACHET_EVICT_PIPELINE commands; lanes that do not fit wait
 * for the next one.
 *
 * A driver sends a command again after NOSCRIPT behind the rest of its
 * pipeline, so the ZRANGE may have run before its evict_begin: a snapshot
 * just taken (2) is never empty, so an empty range after it is read again.
 * After evict_chunk the ZRANGE may list members the chunk then evicted: the
 * next chunk finds them stale, which costs work, never correctness. */
#include "op_evict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"

enum { V_START, V_SWEEP, V_LANES };
enum { L_BEGIN, L_RANGE, L_SETS, L_CHUNK, L_DONE };

static const char *tag_of(const cachet_op_evict *x,
                          const cachet_evict_lane *l) {
  return x->tags[l->ti];
}

static void drop_chunk(cachet_evict_lane *l) {
  if (l->range != NULL)
    freeReplyObject(l->range);
  for (size_t i = 0; i < l->nsets; i++)
    if (l->sets[i] != NULL)
      freeReplyObject(l->sets[i]);
  free(l->sets);
  l->range = NULL;
  l->sets = NULL;
  l->nsets = 0;
}

/* ---- building a SEND -----------------------------------------------------
 */

static void key_cmd(cachet_op_evict *x, const char *verb, char kind,
                    unsigned bucket, const char *t) {
  cachet_cmds *b = &x->op.cmds;
  cachet_cmds_start(b, CACHET_ROUTE_KEY);
  cachet_cmds_str(b, verb);
  cachet_cmds_key(b, x->op.c, kind, bucket, t, strlen(t));
}

static void range_cmd(cachet_op_evict *x, const cachet_evict_lane *l) {
  cachet_cmds *b = &x->op.cmds;
  key_cmd(x, "ZRANGE", CACHET_KIND_EVICTING, l->bucket, tag_of(x, l));
  cachet_cmds_str(b, "0");
  cachet_cmds_int(b, CACHET_EVICT_MEMBERS - 1);
}

static void begin_cmds(cachet_op_evict *x, const cachet_evict_lane *l) {
  cachet_cmds *b = &x->op.cmds;
  const char *t = tag_of(x, l);
  cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_EVICT_BEGIN, 2);
  cachet_cmds_key(b, x->op.c, CACHET_KIND_INDEX, l->bucket, t, strlen(t));
  cachet_cmds_key(b, x->op.c, CACHET_KIND_EVICTING, l->bucket, t, strlen(t));
  range_cmd(x, l);
}

static void sets_cmds(cachet_op_evict *x, const cachet_evict_lane *l) {
  const redisReply *r = l->range;
  for (size_t i = 0; i < r->elements; i++) {
    cachet_cmds *b = &x->op.cmds;
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    cachet_cmds_str(b, "SMEMBERS");
    cachet_cmds_key(b, x->op.c, CACHET_KIND_TAGSET, l->bucket,
                    r->element[i]->str, r->element[i]->len);
  }
}

/* The chunk: members taken while the work stays within the budget, the
 * other tags they carry, then one evict_chunk, and the next ZRANGE. */
static int chunk_cmds(cachet_op_evict *x, cachet_evict_lane *l) {
  size_t nm = l->range->elements;
  size_t sizes[CACHET_EVICT_MEMBERS];
  for (size_t i = 0; i < nm; i++)
    sizes[i] = l->sets[i]->elements;
  size_t ntags = 0;
  size_t n = cachet_evict_take(sizes, nm, &ntags);
  cachet_name *others = NULL;
  size_t nothers = 0;
  if (ntags > 0 && (others = malloc(ntags * sizeof *others)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < l->sets[i]->elements; j++)
      others[nothers++] = (cachet_name){l->sets[i]->element[j]->str,
                                        l->sets[i]->element[j]->len};
  const char *t = tag_of(x, l);
  nothers = cachet_evict_others(others, nothers, t, strlen(t));

  cachet_cmds *b = &x->op.cmds;
  cachet *c = x->op.c;
  const redisReply *m = l->range;
  cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_EVICT_CHUNK,
                     2 + 2 * n + nothers);
  cachet_cmds_key(b, c, CACHET_KIND_EVICTING, l->bucket, t, strlen(t));
  cachet_cmds_key(b, c, CACHET_KIND_INDEX, l->bucket, t, strlen(t));
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = m->element[i];
    cachet_cmds_key(b, c, CACHET_KIND_VALUE, l->bucket, e->str, e->len);
    cachet_cmds_key(b, c, CACHET_KIND_TAGSET, l->bucket, e->str, e->len);
  }
  for (size_t i = 0; i < nothers; i++)
    cachet_cmds_key(b, c, CACHET_KIND_INDEX, l->bucket, others[i].s,
                    others[i].len);
  cachet_cmds_str(b, t);
  cachet_cmds_int(b, (long long)n);
  for (size_t i = 0; i < n; i++)
    cachet_cmds_copy(b, m->element[i]->str, m->element[i]->len);
  for (size_t i = 0; i < nothers; i++)
    cachet_cmds_copy(b, others[i].s, others[i].len);
  free(others);
  drop_chunk(l); /* everything it lent is copied */
  range_cmd(x, l);
  return CACHET_OK;
}

/* How many commands a lane's next step takes. */
static size_t lane_cmds(const cachet_evict_lane *l) {
  switch (l->phase) {
  case L_BEGIN:
  case L_CHUNK:
    return 2;
  case L_RANGE:
    return 1;
  case L_SETS:
    return l->range->elements;
  default:
    return 0;
  }
}

/* The next SEND: sweeps of the tags not swept yet, then the lanes' steps,
 * up to CACHET_EVICT_PIPELINE commands (at least one tag or lane). */
static int send_next(cachet_op_evict *x, cachet_out *out) {
  size_t total = 0;
  x->sweep_to = x->swept;
  while (x->sweep_to < x->ntags &&
         (total == 0 || total + CACHET_BUCKETS <= CACHET_EVICT_PIPELINE)) {
    const char *t = x->tags[x->sweep_to++];
    for (unsigned i = 0; i < CACHET_BUCKETS; i++) {
      key_cmd(x, "EXISTS", CACHET_KIND_INDEX, i, t);
      cachet_cmds_key(&x->op.cmds, x->op.c, CACHET_KIND_EVICTING, i, t,
                      strlen(t));
    }
    total += CACHET_BUCKETS;
  }
  for (size_t i = 0; i < x->nlanes; i++) {
    cachet_evict_lane *l = &x->lanes[i];
    l->ncmd = 0;
    size_t k = lane_cmds(l);
    if (k == 0 || (total > 0 && total + k > CACHET_EVICT_PIPELINE))
      continue;
    l->cmd0 = total;
    l->ncmd = k;
    total += k;
    if (l->phase == L_BEGIN)
      begin_cmds(x, l);
    else if (l->phase == L_RANGE)
      range_cmd(x, l);
    else if (l->phase == L_SETS)
      sets_cmds(x, l);
    else {
      int rc = chunk_cmds(x, l);
      if (rc != CACHET_OK)
        return cachet_op_done(out, rc);
    }
  }
  if (total == 0)
    return cachet_op_done(out, CACHET_OK);
  x->sends++;
  x->op.state = V_LANES;
  return cachet_cmds_send(&x->op.cmds, out);
}

/* ---- reading a SEND's outcomes -------------------------------------------
 */

static int add_lane(cachet_op_evict *x, unsigned ti, unsigned bucket) {
  if (x->nlanes == x->lanecap) {
    size_t cap = x->lanecap ? 2 * x->lanecap : 64;
    cachet_evict_lane *ls = realloc(x->lanes, cap * sizeof *ls);
    if (ls == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory");
    x->lanes = ls;
    x->lanecap = cap;
  }
  x->lanes[x->nlanes++] =
      (cachet_evict_lane){.ti = ti, .bucket = bucket, .phase = L_BEGIN};
  return CACHET_OK;
}

static int sweep_replies(cachet_op_evict *x, const cachet_in *in) {
  size_t i = 0;
  for (size_t ti = x->swept; ti < x->sweep_to; ti++)
    for (unsigned bkt = 0; bkt < CACHET_BUCKETS; bkt++) {
      long long v; /* how many of t and e exist */
      int rc = cachet_res_int(&in->res[i++], "EXISTS", &v);
      if (rc == CACHET_OK && v > 0)
        rc = add_lane(x, (unsigned)ti, bkt);
      if (rc != CACHET_OK)
        return rc;
    }
  x->swept = x->sweep_to;
  return CACHET_OK;
}

/* A range read: members to chunk, or e is empty. An empty e after our own
 * snapshot (2) ends the lane; after an earlier one (1), begin again to
 * snapshot t. */
static int take_range(cachet_op_evict *x, cachet_evict_lane *l,
                      cachet_res *res) {
  int rc = cachet_res_ok(res);
  redisReply *r = res->reply;
  if (rc == CACHET_OK &&
      (!cachet_reply_strings(r) || r->elements > CACHET_EVICT_MEMBERS))
    rc = cachet_res_proto("ZRANGE");
  if (rc != CACHET_OK)
    return rc;
  if (r->elements > 0) {
    l->range = r; /* kept until the chunk is built */
    res->reply = NULL;
    l->phase = L_SETS;
    return CACHET_OK;
  }
  if (l->begin == 2) {
    l->phase = L_DONE;
    return CACHET_OK;
  }
  if (++l->round == CACHET_EVICT_BEGINS)
    return cachet_fail(CACHET_EBUSY,
                       "evict-tags: tag '%s' was being evicted by %d other "
                       "calls at once",
                       tag_of(x, l), CACHET_EVICT_BEGINS);
  l->phase = L_BEGIN;
  return CACHET_OK;
}

static int begin_replies(cachet_op_evict *x, cachet_evict_lane *l,
                         cachet_res *res) {
  long long v;
  int rc = cachet_res_int(&res[0], "evict_begin", &v);
  if (rc == CACHET_OK && (v < 0 || v > 2))
    rc = cachet_res_proto("evict_begin");
  if (rc != CACHET_OK)
    return rc;
  if (v == 0) { /* nothing left in this bucket */
    l->phase = L_DONE;
    return CACHET_OK;
  }
  l->begin = (int)v;
  l->idle = 0;
  rc = take_range(x, l, &res[1]);
  /* A snapshot just taken is never empty: this range ran before it (the
   * begin was sent again after NOSCRIPT). Read it again. */
  if (rc == CACHET_OK && l->phase == L_DONE && v == 2)
    l->phase = L_RANGE;
  return rc;
}

static int sets_replies(cachet_evict_lane *l, cachet_res *res) {
  size_t nm = l->range->elements;
  if ((l->sets = calloc(nm, sizeof *l->sets)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  for (size_t i = 0; i < nm; i++) {
    int rc = cachet_res_ok(&res[i]);
    if (rc == CACHET_OK && !cachet_reply_strings(res[i].reply))
      rc = cachet_res_proto("SMEMBERS");
    if (rc != CACHET_OK)
      return rc;
    l->sets[i] = res[i].reply;
    res[i].reply = NULL;
    l->nsets = i + 1;
  }
  l->phase = L_CHUNK;
  return CACHET_OK;
}

static int chunk_replies(cachet_op_evict *x, cachet_evict_lane *l,
                         cachet_res *res) {
  int rc = cachet_res_ok(&res[0]);
  const redisReply *r = res[0].reply;
  if (rc == CACHET_OK &&
      (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
       r->element[0]->type != REDIS_REPLY_INTEGER ||
       r->element[1]->type != REDIS_REPLY_INTEGER ||
       r->element[2]->type != REDIS_REPLY_INTEGER ||
       r->element[0]->integer < 0 || r->element[2]->integer < 0))
    rc = cachet_res_proto("evict_chunk");
  if (rc != CACHET_OK)
    return rc;
  x->evicted += (uint64_t)r->element[0]->integer;
  /* Gone whatever comes next: counted now. */
  CACHET_COUNT(x->op.c, tag_evictions, (uint64_t)r->element[0]->integer);
  uint64_t moved =
      (uint64_t)r->element[0]->integer + (uint64_t)r->element[2]->integer;
  cachet_progress(x->op.c, "evict", x->evicted); /* once a chunk, as ever */
  if (moved > 0)
    l->idle = 0;
  else if (++l->idle == CACHET_EVICT_IDLE_ROUNDS)
    return cachet_fail(CACHET_EBUSY,
                       "evict-tags: entries of tag '%s' kept changing "
                       "their tags under concurrent writers (%d rounds)",
                       tag_of(x, l), CACHET_EVICT_IDLE_ROUNDS);
  return take_range(x, l, &res[1]);
}

static int lane_replies(cachet_op_evict *x, cachet_evict_lane *l,
                        cachet_res *res) {
  switch (l->phase) {
  case L_BEGIN:
    return begin_replies(x, l, res);
  case L_RANGE:
    return take_range(x, l, res);
  case L_SETS:
    return sets_replies(l, res);
  default:
    return chunk_replies(x, l, res);
  }
}

static int evict_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_evict *x = (cachet_op_evict *)op;
  if (op->state == V_START)
    return send_next(x, out);
  /* The sweeps come first in a SEND, then the lanes in order. */
  int rc = sweep_replies(x, in);
  for (size_t i = 0; rc == CACHET_OK && i < x->nlanes; i++) {
    cachet_evict_lane *l = &x->lanes[i];
    if (l->ncmd > 0)
      rc = lane_replies(x, l, &in->res[l->cmd0]);
  }
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  /* Lanes that are done no longer take a place. */
  size_t keep = 0;
  for (size_t i = 0; i < x->nlanes; i++)
    if (x->lanes[i].phase != L_DONE)
      x->lanes[keep++] = x->lanes[i];
  x->nlanes = keep;
  return send_next(x, out);
}

static void evict_free(cachet_op *op) {
  cachet_op_evict *x = (cachet_op_evict *)op;
  for (size_t i = 0; i < x->nlanes; i++)
    drop_chunk(&x->lanes[i]);
  free(x->lanes);
  x->lanes = NULL;
  x->nlanes = x->lanecap = 0;
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
