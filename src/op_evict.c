/* evict-tags as a machine (op_evict.h).
 *
 * A tag has one index key per bucket (<prefix>{bb}t:<tag>), so eviction
 * fans out over the buckets and works in bounded chunks: no script call
 * touches more than a fixed number of keys, so Redis never stalls for long,
 * and the read path pays nothing. Per tag and bucket (lua/evict_begin.lua,
 * lua/evict_chunk.lua):
 *  1. a pipelined sweep reads the first members of each bucket's t key
 *     (ZRANGE) and whether an e key is left (EXISTS);
 *  2. SMEMBERS of each member's tag set, to learn which other index keys
 *     the script must be given;
 *  3. evict_chunk re-checks each member atomically and evicts it, drops a
 *     stale membership, or skips it when its tags changed in between (read
 *     again next round). One call serves every tag of the eviction in a
 *     bucket (the keys share its slot), within one call's budget. When the
 *     sweep read all of t (fewer than 64 members, all within that budget)
 *     and no e is left, that is all: members added since were written
 *     after the call started, and only the skipped ones are tried again.
 *     Else its first call renames t to e, a snapshot of the members
 *     the tag had (or joins an e left by an earlier or concurrent eviction,
 *     drained first), and each call returns the next members of e; 2-3
 *     repeat until e is empty. A bucket with only an e key starts with
 *     evict_begin, which joins it and returns its first members.
 * Writers that add the tag meanwhile start a fresh t key, so each drain
 * ends. In a cluster each command touches one bucket, hence one slot.
 *
 * The round trips are what cost, not the work: each (tag, bucket) is a
 * lane, and every lane advances in the same SEND, which a cluster driver
 * splits into one pipeline per master, written before any reply is read.
 * A bucket of up to 64 members takes three round trips: the sweep, the tag
 * sets, the chunk. A SEND holds at most CACHET_EVICT_PIPELINE commands;
 * lanes that do not fit wait for the next one. The scripts return the next
 * members themselves, so a NOSCRIPT retry (sent behind the rest of its
 * pipeline) never reorders a read before the write it depends on. */
#include "op_evict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"

enum { V_START, V_SWEEP, V_LANES };
/* L_CHUNKED: its chunk is in the current SEND. */
enum { L_BEGIN, L_SETS, L_CHUNK, L_CHUNKED, L_DONE };

static const char *tag_of(const cachet_op_evict *x,
                          const cachet_evict_lane *l) {
  return x->tags[l->ti];
}

static void drop_chunk(cachet_evict_lane *l) {
  for (size_t i = 0; i < l->nsets; i++)
    if (l->sets[i] != NULL)
      freeReplyObject(l->sets[i]);
  free(l->sets);
  free(l->mem);
  free(l->mbuf);
  l->mem = NULL;
  l->mbuf = NULL;
  l->sets = NULL;
  l->nsets = l->nm = 0;
}

static cachet_name member(const cachet_evict_lane *l, size_t i) {
  return l->mem[i];
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

static void sweep_cmds(cachet_op_evict *x, const char *t) {
  cachet_cmds *b = &x->op.cmds;
  for (unsigned i = 0; i < CACHET_BUCKETS; i++) {
    key_cmd(x, "ZRANGE", CACHET_KIND_INDEX, i, t);
    cachet_cmds_str(b, "0");
    cachet_cmds_int(b, CACHET_EVICT_MEMBERS - 1);
    key_cmd(x, "EXISTS", CACHET_KIND_EVICTING, i, t);
  }
}

static void begin_cmd(cachet_op_evict *x, const cachet_evict_lane *l) {
  cachet_cmds *b = &x->op.cmds;
  const char *t = tag_of(x, l);
  cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_EVICT_BEGIN, 2);
  cachet_cmds_key(b, x->op.c, CACHET_KIND_INDEX, l->bucket, t, strlen(t));
  cachet_cmds_key(b, x->op.c, CACHET_KIND_EVICTING, l->bucket, t, strlen(t));
  cachet_cmds_int(b, CACHET_EVICT_MEMBERS);
}

static void sets_cmds(cachet_op_evict *x, const cachet_evict_lane *l) {
  for (size_t i = 0; i < l->nm; i++) {
    cachet_cmds *b = &x->op.cmds;
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    cachet_cmds_str(b, "SMEMBERS");
    cachet_cmds_key(b, x->op.c, CACHET_KIND_TAGSET, l->bucket, member(l, i).s,
                    member(l, i).len);
  }
}

/* How many of a lane's members its chunk takes (while the work stays
 * within one call's budget), and that work. */
static size_t lane_take(const cachet_evict_lane *l, size_t *ops) {
  size_t sizes[CACHET_EVICT_MEMBERS], ntags = 0;
  for (size_t i = 0; i < l->nm; i++)
    sizes[i] = l->sets[i]->elements;
  size_t n = cachet_evict_take(sizes, l->nm, &ntags);
  *ops = 2 * n + ntags + 2;
  return n;
}

/* One evict_chunk over the lanes order[first .. first+n), all of one
 * bucket: their keys and members, then the other tags they carry. */
static int chunk_call(cachet_op_evict *x, size_t first, size_t n) {
  cachet_cmds *b = &x->op.cmds;
  cachet *c = x->op.c;
  size_t nkeys = 0, ntags = 0;
  for (size_t q = first; q < first + n; q++) {
    const cachet_evict_lane *l = &x->lanes[x->order[q]];
    nkeys += 2 + 2 * l->take;
    for (size_t i = 0; i < l->take; i++)
      ntags += l->sets[i]->elements;
  }
  cachet_name *others = NULL;
  size_t nothers = 0;
  if (ntags > 0 && (others = malloc(ntags * sizeof *others)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  for (size_t q = first; q < first + n; q++) {
    const cachet_evict_lane *l = &x->lanes[x->order[q]];
    const char *t = tag_of(x, l);
    for (size_t i = 0; i < l->take; i++)
      for (size_t j = 0; j < l->sets[i]->elements; j++) {
        const redisReply *e = l->sets[i]->element[j];
        /* A lane's own tag is its KEYS' t key, not another index. */
        if (e->len != strlen(t) || memcmp(e->str, t, e->len) != 0)
          others[nothers++] = (cachet_name){e->str, e->len};
      }
  }
  nothers = cachet_evict_others(others, nothers, "", 0);
  unsigned bucket = x->lanes[x->order[first]].bucket;
  cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_EVICT_CHUNK,
                     nkeys + nothers);
  for (size_t q = first; q < first + n; q++) {
    const cachet_evict_lane *l = &x->lanes[x->order[q]];
    const char *t = tag_of(x, l);
    cachet_cmds_key(b, c, CACHET_KIND_EVICTING, bucket, t, strlen(t));
    cachet_cmds_key(b, c, CACHET_KIND_INDEX, bucket, t, strlen(t));
    for (size_t i = 0; i < l->take; i++) {
      cachet_name m = member(l, i);
      cachet_cmds_key(b, c, CACHET_KIND_VALUE, bucket, m.s, m.len);
      cachet_cmds_key(b, c, CACHET_KIND_TAGSET, bucket, m.s, m.len);
    }
  }
  for (size_t i = 0; i < nothers; i++)
    cachet_cmds_key(b, c, CACHET_KIND_INDEX, bucket, others[i].s,
                    others[i].len);
  cachet_cmds_int(b, (long long)n);
  cachet_cmds_int(b, CACHET_EVICT_MEMBERS);
  for (size_t q = first; q < first + n; q++) {
    const cachet_evict_lane *l = &x->lanes[x->order[q]];
    cachet_cmds_str(b, tag_of(x, l));
    cachet_cmds_int(b, (long long)l->take);
    cachet_cmds_int(b, l->mode);
    for (size_t i = 0; i < l->take; i++)
      cachet_cmds_copy(b, member(l, i).s, member(l, i).len);
  }
  for (size_t i = 0; i < nothers; i++)
    cachet_cmds_copy(b, others[i].s, others[i].len);
  free(others);
  for (size_t q = first; q < first + n; q++)
    drop_chunk(&x->lanes[x->order[q]]); /* everything they lent is copied */
  return CACHET_OK;
}

/* The chunks of this SEND: the lanes with tag sets read, bucket by bucket
 * (a counting sort into x->order), cut into calls that each stay within
 * one call's budget, as long as the SEND has room. */
static int chunk_calls(cachet_op_evict *x, size_t *total) {
  size_t count[CACHET_BUCKETS + 1] = {0};
  size_t n = 0;
  for (size_t i = 0; i < x->nlanes; i++)
    if (x->lanes[i].phase == L_CHUNK) {
      count[x->lanes[i].bucket + 1]++;
      n++;
    }
  x->ncalls = 0;
  if (n == 0)
    return CACHET_OK;
  if (cachet_grow(&x->order, &x->ordercap, n, sizeof *x->order) != CACHET_OK)
    return CACHET_ENOMEM;
  for (unsigned bkt = 0; bkt < CACHET_BUCKETS; bkt++)
    count[bkt + 1] += count[bkt];
  for (size_t i = 0; i < x->nlanes; i++)
    if (x->lanes[i].phase == L_CHUNK)
      x->order[count[x->lanes[i].bucket]++] = i;
  x->norder = n;
  size_t q = 0;
  while (q < n && *total < CACHET_EVICT_PIPELINE) {
    /* One call: lanes of one bucket while the members and the work stay
     * within one call's budget (always at least one lane). */
    size_t first = q, members = 0, ops = 0;
    unsigned bucket = x->lanes[x->order[q]].bucket;
    while (q < n && x->lanes[x->order[q]].bucket == bucket) {
      cachet_evict_lane *l = &x->lanes[x->order[q]];
      size_t lops;
      size_t take = lane_take(l, &lops);
      if (q > first && (members + take > CACHET_EVICT_MEMBERS ||
                        ops + lops > CACHET_EVICT_OPS))
        break;
      /* Members left out of a chunk are only drained later from a
       * snapshot: all of t no longer fits one call, so begin one. */
      if (take < l->nm && l->mode == CACHET_EVICT_FROM_T_ALL)
        l->mode = CACHET_EVICT_FROM_T_BEGIN;
      l->take = take;
      members += take;
      ops += lops;
      q++;
    }
    if (cachet_grow(&x->calls, &x->callcap, x->ncalls + 1, sizeof *x->calls) !=
        CACHET_OK)
      return CACHET_ENOMEM;
    x->calls[x->ncalls++] = (cachet_evict_call){*total, first, q - first};
    int rc = chunk_call(x, first, q - first);
    if (rc != CACHET_OK)
      return rc;
    for (size_t k = first; k < q; k++)
      x->lanes[x->order[k]].phase = L_CHUNKED;
    (*total)++;
  }
  return CACHET_OK;
}

/* How many commands a lane's next step takes (its chunk is counted by
 * chunk_calls). */
static size_t lane_cmds(const cachet_evict_lane *l) {
  switch (l->phase) {
  case L_BEGIN:
    return 1;
  case L_SETS:
    return l->nm;
  default:
    return 0;
  }
}

/* The next SEND: sweeps of the tags not swept yet, the lanes' single
 * steps, then the chunk calls, up to CACHET_EVICT_PIPELINE commands (at
 * least one tag, lane or call). */
static int send_next(cachet_op_evict *x, cachet_out *out) {
  size_t total = 0;
  x->sweep_to = x->swept;
  while (x->sweep_to < x->ntags &&
         (total == 0 || total + 2 * CACHET_BUCKETS <= CACHET_EVICT_PIPELINE)) {
    sweep_cmds(x, x->tags[x->sweep_to++]);
    total += 2 * CACHET_BUCKETS;
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
      begin_cmd(x, l);
    else
      sets_cmds(x, l);
  }
  int rc = chunk_calls(x, &total);
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  if (total == 0)
    return cachet_op_done(out, CACHET_OK);
  x->sends++;
  x->op.state = V_LANES;
  return cachet_cmds_send(&x->op.cmds, out);
}

/* ---- reading a SEND's outcomes -------------------------------------------
 */

static int add_lane(cachet_op_evict *x, unsigned ti, unsigned bucket) {
  int rc = cachet_grow(&x->lanes, &x->lanecap, x->nlanes + 1, sizeof *x->lanes);
  if (rc != CACHET_OK)
    return rc;
  x->lanes[x->nlanes++] =
      (cachet_evict_lane){.ti = ti, .bucket = bucket, .phase = L_BEGIN};
  return CACHET_OK;
}

/* Members listed in `r` from element `off` on (`nm` of them): strings, at
 * most a chunk's worth, copied into the lane. */
static int take_members(cachet_evict_lane *l, const redisReply *r, size_t off,
                        size_t nm, const char *what) {
  if (nm > CACHET_EVICT_MEMBERS || off + nm > r->elements)
    return cachet_res_proto(what);
  size_t bytes = 0;
  for (size_t i = off; i < off + nm; i++) {
    if (r->element[i]->type != REDIS_REPLY_STRING)
      return cachet_res_proto(what);
    bytes += r->element[i]->len;
  }
  if (nm == 0)
    return CACHET_OK;
  l->mem = malloc(nm * sizeof *l->mem);
  l->mbuf = malloc(bytes + 1);
  if (l->mem == NULL || l->mbuf == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  char *p = l->mbuf;
  for (size_t i = 0; i < nm; i++) {
    const redisReply *e = r->element[off + i];
    memcpy(p, e->str, e->len);
    l->mem[i] = (cachet_name){p, e->len};
    p += e->len;
  }
  l->nm = nm;
  l->phase = L_SETS;
  return CACHET_OK;
}

/* e is empty: after our own snapshot the lane is done; after joining an
 * earlier one, begin again to snapshot t. */
static int drained(cachet_op_evict *x, cachet_evict_lane *l) {
  if (l->begin != 1) {
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

static int sweep_replies(cachet_op_evict *x, cachet_in *in) {
  size_t i = 0;
  for (size_t ti = x->swept; ti < x->sweep_to; ti++)
    for (unsigned bkt = 0; bkt < CACHET_BUCKETS; bkt++, i += 2) {
      cachet_res *range = &in->res[i];
      long long e;
      int rc = cachet_res_ok(range);
      if (rc == CACHET_OK && range->reply->type != REDIS_REPLY_ARRAY)
        rc = cachet_res_proto("ZRANGE");
      if (rc == CACHET_OK)
        rc = cachet_res_int(&in->res[i + 1], "EXISTS", &e);
      if (rc == CACHET_OK && (range->reply->elements > 0 || e > 0))
        rc = add_lane(x, (unsigned)ti, bkt);
      /* Members of t: all of them, or the first chunk begins a snapshot.
       * Only an e: join it first. */
      if (rc == CACHET_OK && range->reply->elements > 0) {
        cachet_evict_lane *l = &x->lanes[x->nlanes - 1];
        l->mode = range->reply->elements < CACHET_EVICT_MEMBERS && e == 0
                      ? CACHET_EVICT_FROM_T_ALL
                      : CACHET_EVICT_FROM_T_BEGIN;
        rc = take_members(l, range->reply, 0, range->reply->elements, "ZRANGE");
      }
      if (rc != CACHET_OK)
        return rc;
    }
  x->swept = x->sweep_to;
  return CACHET_OK;
}

static int begin_reply(cachet_op_evict *x, cachet_evict_lane *l,
                       cachet_res *res) {
  int rc = cachet_res_ok(res);
  const redisReply *r = res->reply;
  if (rc == CACHET_OK &&
      (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
       r->element[0]->type != REDIS_REPLY_INTEGER ||
       r->element[0]->integer < 0 || r->element[0]->integer > 2))
    rc = cachet_res_proto("evict_begin");
  if (rc != CACHET_OK)
    return rc;
  if (r->element[0]->integer == 0) { /* nothing left in this bucket */
    l->phase = L_DONE;
    return CACHET_OK;
  }
  l->begin = (int)r->element[0]->integer;
  l->mode = CACHET_EVICT_FROM_E;
  l->idle = 0;
  l->phase = L_DONE; /* unless members follow */
  if ((rc = take_members(l, r, 1, r->elements - 1, "evict_begin")) != CACHET_OK)
    return rc;
  return l->phase == L_DONE ? drained(x, l) : CACHET_OK;
}

static int sets_replies(cachet_evict_lane *l, cachet_res *res) {
  if ((l->sets = calloc(l->nm, sizeof *l->sets)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  for (size_t i = 0; i < l->nm; i++) {
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

/* A lane's record in an evict_chunk reply, from element *at on: doomed,
 * skipped, stale, begun, count, then count members. */
static int chunk_lane(cachet_op_evict *x, cachet_evict_lane *l,
                      const redisReply *r, size_t *at) {
  size_t i = *at;
  if (i + 5 > r->elements)
    return cachet_res_proto("evict_chunk");
  for (size_t k = i; k < i + 5; k++)
    if (r->element[k]->type != REDIS_REPLY_INTEGER ||
        r->element[k]->integer < 0 ||
        (k == i + 3 && r->element[k]->integer > 2))
      return cachet_res_proto("evict_chunk");
  long long doomed = r->element[i]->integer, stale = r->element[i + 2]->integer;
  size_t count = (size_t)r->element[i + 4]->integer;
  if (l->mode == CACHET_EVICT_FROM_T_BEGIN) {
    /* Joined an earlier snapshot (1), or took our own (2, or 0: another
     * eviction took t and emptied e meanwhile; what is left is ours). */
    l->begin = r->element[i + 3]->integer == 1 ? 1 : 2;
    l->mode = CACHET_EVICT_FROM_E;
  } else if (l->mode == CACHET_EVICT_FROM_T_ALL) {
    l->begin = 2; /* nothing to begin again: the skipped are retried */
  }
  if (doomed + stale > 0)
    l->idle = 0;
  else if (++l->idle == CACHET_EVICT_IDLE_ROUNDS)
    return cachet_fail(CACHET_EBUSY,
                       "evict-tags: entries of tag '%s' kept changing "
                       "their tags under concurrent writers (%d rounds)",
                       tag_of(x, l), CACHET_EVICT_IDLE_ROUNDS);
  l->phase = L_DONE; /* unless members follow */
  int rc = take_members(l, r, i + 5, count, "evict_chunk");
  *at = i + 5 + count;
  if (rc != CACHET_OK)
    return rc;
  return l->phase == L_DONE ? drained(x, l) : CACHET_OK;
}

/* One call's reply: the values it deleted, then each lane's record. */
static int call_reply(cachet_op_evict *x, const cachet_evict_call *call,
                      const cachet_res *res) {
  int rc = cachet_res_ok(res);
  const redisReply *r = res->reply;
  if (rc == CACHET_OK && (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
                          r->element[0]->type != REDIS_REPLY_INTEGER ||
                          r->element[0]->integer < 0))
    rc = cachet_res_proto("evict_chunk");
  if (rc != CACHET_OK)
    return rc;
  uint64_t evicted = (uint64_t)r->element[0]->integer;
  x->evicted += evicted;
  cachet_near_forget_cmd(x->op.c, &x->op.cmds.cmd[call->cmd]);
  /* Gone whatever comes next: counted now. */
  CACHET_COUNT(x->op.c, tag_evictions, evicted);
  cachet_progress(x->op.c, "evict", x->evicted); /* once a chunk, as ever */
  size_t at = 1;
  for (size_t q = call->first; rc == CACHET_OK && q < call->first + call->n;
       q++)
    rc = chunk_lane(x, &x->lanes[x->order[q]], r, &at);
  if (rc == CACHET_OK && at != r->elements)
    rc = cachet_res_proto("evict_chunk");
  return rc;
}

static int lane_replies(cachet_op_evict *x, cachet_evict_lane *l,
                        cachet_res *res) {
  if (l->phase == L_BEGIN)
    return begin_reply(x, l, res);
  return sets_replies(l, res);
}

static int evict_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_evict *x = (cachet_op_evict *)op;
  if (op->state == V_START)
    return send_next(x, out);
  /* The sweeps come first in a SEND, then the lanes (cmd0 counts from the
   * SEND's start). The lanes that sent go first: the sweep's new lanes may
   * move the array. */
  cachet_in *cur = (cachet_in *)in;
  size_t nlanes = x->nlanes;
  int rc = CACHET_OK;
  for (size_t i = 0; rc == CACHET_OK && i < nlanes; i++) {
    cachet_evict_lane *l = &x->lanes[i];
    if (l->ncmd > 0)
      rc = lane_replies(x, l, &cur->res[l->cmd0]);
  }
  for (size_t k = 0; rc == CACHET_OK && k < x->ncalls; k++)
    rc = call_reply(x, &x->calls[k], &cur->res[x->calls[k].cmd]);
  if (rc == CACHET_OK)
    rc = sweep_replies(x, cur);
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  /* Lanes that are done no longer take a place. */
  size_t keep = 0;
  for (size_t i = 0; i < x->nlanes; i++)
    if (x->lanes[i].phase != L_DONE)
      x->lanes[keep++] = x->lanes[i];
    else
      drop_chunk(&x->lanes[i]);
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
  free(x->calls);
  free(x->order);
  x->calls = NULL;
  x->order = NULL;
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
