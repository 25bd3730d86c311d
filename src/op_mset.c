/* mset as a machine (op_batch.h).
 *
 * mset writes untagged entries with plain SET and the others through
 * lua/set_many.lua: one EVALSHA stores many entries, so Redis's fixed cost
 * per script call is paid once per call instead of once per entry, and each
 * entry's write stays atomic, since the whole call is. mset_plan.c cuts a
 * window into calls. Each group of plain SETs is followed, in the same
 * pipeline, by one EXISTS over the group's tag-set keys; when it counts
 * none, the group is done. Otherwise each entry's tag set is read, and
 * untag.lua (through the entry machine) drops it unless a later write owns
 * the entry (docs/DESIGN.md, "Untagged writes take plain SET"); envelopes
 * are kept until then, PLAIN_MAX_BYTES of them a round trip. In Redis
 * Cluster a group and a call each hold one bucket, hence one slot. Entries
 * set_many does not write (old tags it was not given: only set_tags can
 * learn them) and entries too large for a call are written one by one by
 * the entry machine. Within one mset the last occurrence of a key wins;
 * the earlier ones are never sent and get its status. */
#include "op_batch.h"

#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "near.h"

#define PLAIN_MAX_BYTES ((size_t)4 << 20)
/* How many distinct indexes one call may prune (cap members each). */
#define PRUNE_INDEXES 16

/* Where a window stands (x->phase), and what the machine waits for
 * (op.state). */
enum { PH_PLAIN, PH_UNTAG, PH_CALLS, PH_ONE };
enum { AW_NONE, AW_PLAIN, AW_TAGSETS, AW_CALLS, AW_CHILD };

static cachet_entry *ent(cachet_op_mset *x, size_t id) {
  return &x->e[x->base + id];
}

static void mset_error(cachet_op_mset *x, size_t id, int rc) {
  x->p.st[id] = CACHET_MSET_DONE;
  cachet_batch_entry_error(x->op.c, ent(x, id), rc, &x->first, x->detail,
                           sizeof x->detail);
}

static void written(cachet_op_mset *x, size_t id) {
  x->p.st[id] = CACHET_MSET_DONE;
  ent(x, id)->status = CACHET_OK;
  CACHET_COUNT(x->op.c, writes, 1);
}

static void drop_blobs(cachet_op_mset *x) {
  for (size_t i = 0; i < x->p.cap; i++) {
    free(x->blobs[i]);
    x->blobs[i] = NULL;
  }
}

static void drop_sets(cachet_op_mset *x) {
  for (size_t j = 0; j < x->nuntag; j++)
    if (x->sets[j] != NULL)
      freeReplyObject(x->sets[j]);
  x->nuntag = 0;
}

/* A fatal error: every entry of this window and of those after it that has
 * no status yet gets this one. */
static int fatal(cachet_op_mset *x, cachet_out *out, int rc) {
  for (size_t i = 0; i < x->m; i++)
    if (x->p.st[i] != CACHET_MSET_DONE && x->p.st[i] != CACHET_MSET_DUP)
      ent(x, i)->status = rc;
  for (size_t i = 0; i < x->m; i++)
    if (x->p.st[i] == CACHET_MSET_DUP)
      ent(x, i)->status = ent(x, x->p.winner[i])->status;
  for (size_t i = x->base + x->m; i < x->n; i++)
    x->e[i].status = rc;
  drop_blobs(x);
  drop_sets(x);
  return cachet_op_done(out, rc);
}

/* Build entry `id`'s value key into *vk (the caller frees it) and seal the
 * entry into blobs[id] under it: CACHET_OK, or EINVAL (that entry alone is
 * refused: its status), or a fatal error. */
static int seal(cachet_op_mset *x, size_t id, cachet_key *vk, int64_t now) {
  const cachet_entry *e = ent(x, id);
  cachet *c = x->op.c;
  vk->buf = NULL; /* not zeroed whole: the inline buffer is large */
  int rc = cachet_key_build(c, vk, CACHET_KIND_VALUE, x->p.bucket[id], e->key,
                            e->keylen);
  if (rc == CACHET_OK)
    rc = cachet_envelope_seal(c->keyring, c->cfg.encrypt, vk->buf, vk->len, 0,
                              now, e->ttl_ms > 0 ? now + e->ttl_ms : 0,
                              e->val == NULL ? "" : e->val, e->len,
                              &x->blobs[id], &x->blens[id]);
  if (rc == CACHET_EINVAL)
    mset_error(x, id, rc);
  return rc;
}

/* 1 if tag t of e is a repeat of an earlier one (a call sends each once). */
static int repeats(const cachet_entry *e, size_t t) {
  for (size_t u = 0; u < t; u++)
    if (strcmp(e->tags[u], e->tags[t]) == 0)
      return 1;
  return 0;
}

static size_t distinct_tags(const cachet_entry *e) {
  size_t nt = 0;
  for (size_t t = 0; t < e->ntags; t++)
    nt += !repeats(e, t);
  return nt;
}

/* One round trip of plain SETs, at most PLAIN_MAX_BYTES of envelopes, in
 * groups (per bucket in a cluster) each followed by one EXISTS over its
 * entries' tag sets. */
static int send_plain(cachet_op_mset *x, cachet_out *out) {
  cachet *c = x->op.c;
  cachet_cmds *b = &x->op.cmds;
  int64_t now = cachet_now_ms();
  size_t bytes = 0;
  drop_blobs(x); /* the last round's */
  x->pfrom = x->pj;
  x->ngroups = 0;
  /* Most rounds are one window: SET key blob PX ms, and one EXISTS. */
  size_t np = x->p.nplain - x->pj;
  cachet_cmds_reserve(b, np + 1, 6 * np, np * (2 * c->cfg.prefixlen + 48));
  while (x->pj < x->p.nplain && bytes < PLAIN_MAX_BYTES) {
    cachet_mset_run *g = &x->groups[x->ngroups++];
    g->first = x->pj;
    unsigned bkt = x->p.bucket[x->p.plain[x->pj]];
    size_t sent = 0;
    while (x->pj < x->p.nplain && bytes < PLAIN_MAX_BYTES &&
           (!x->by_bucket || x->p.bucket[x->p.plain[x->pj]] == bkt)) {
      size_t id = x->p.plain[x->pj++];
      const cachet_entry *e = ent(x, id);
      cachet_key vk;
      int rc = seal(x, id, &vk, now);
      if (rc == CACHET_OK) {
        cachet_cmds_start(b, CACHET_ROUTE_KEY);
        cachet_cmds_str(b, "SET");
        cachet_cmds_copy(b, vk.buf, vk.len);
        cachet_cmds_arg(b, x->blobs[id], x->blens[id]);
        if (e->ttl_ms > 0) {
          cachet_cmds_str(b, "PX");
          cachet_cmds_int(b, e->ttl_ms);
        }
        bytes += x->blens[id] + e->keylen;
        sent++;
      }
      cachet_key_free(&vk);
      if (rc != CACHET_OK && rc != CACHET_EINVAL)
        return fatal(x, out, rc);
    }
    g->len = x->pj - g->first;
    if (sent == 0) {
      g->len = 0; /* nothing written: no EXISTS */
      continue;
    }
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    cachet_cmds_str(b, "EXISTS");
    for (size_t j = g->first; j < g->first + g->len; j++) {
      size_t id = x->p.plain[j];
      if (x->p.st[id] == CACHET_MSET_PLAIN)
        cachet_cmds_key(b, c, CACHET_KIND_TAGSET, x->p.bucket[id],
                        ent(x, id)->key, ent(x, id)->keylen);
    }
  }
  if (b->n == 0) /* every entry refused: the next round */
    return -1;
  x->op.state = AW_PLAIN;
  return cachet_cmds_send(b, out);
}

static int next(cachet_op_mset *x, const cachet_in *in, cachet_out *out);
static cachet_in no_replies(const cachet_in *in) {
  cachet_in fresh = *in;
  fresh.res = NULL;
  fresh.n = 0;
  return fresh;
}

/* The round's SETs and EXISTS: entries whose group counted no tag set are
 * done; the others' tag sets are read next. */
static int plain_reply(cachet_op_mset *x, const cachet_in *in,
                       cachet_out *out) {
  size_t k = 0;
  x->nuntag = 0;
  for (size_t g = 0; g < x->ngroups; g++) {
    const cachet_mset_run *grp = &x->groups[g];
    if (grp->len == 0)
      continue;
    for (size_t j = grp->first; j < grp->first + grp->len; j++) {
      size_t id = x->p.plain[j];
      if (x->p.st[id] != CACHET_MSET_PLAIN)
        continue;
      const cachet_res *r = &in->res[k++];
      int rc = cachet_res_ok(r);
      if (rc == CACHET_ESERVER) {
        mset_error(x, id, rc);
      } else if (rc != CACHET_OK) {
        return fatal(x, out, rc);
      } else if (r->reply->type != REDIS_REPLY_STATUS) {
        return fatal(x, out, cachet_res_proto("mset: SET"));
      } else {
        x->p.st[id] = CACHET_MSET_WRITTEN;
      }
    }
    long long n = 1; /* unknown (an error reply): ask each entry */
    int rc = cachet_res_int(&in->res[k++], "mset: EXISTS", &n);
    if (rc == CACHET_ESERVER)
      n = 1;
    else if (rc != CACHET_OK)
      return fatal(x, out, rc);
    for (size_t j = grp->first; j < grp->first + grp->len; j++) {
      size_t id = x->p.plain[j];
      if (x->p.st[id] != CACHET_MSET_WRITTEN)
        continue;
      if (n == 0) {
        written(x, id);
      } else {
        x->p.st[id] = CACHET_MSET_UNTAG;
        x->untag[x->nuntag++] = id;
      }
    }
  }
  cachet_error_clear();
  if (x->nuntag == 0) {
    cachet_in fresh = no_replies(in);
    return next(x, &fresh, out);
  }
  cachet_cmds *b = &x->op.cmds;
  for (size_t j = 0; j < x->nuntag; j++) {
    const cachet_entry *e = ent(x, x->untag[j]);
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    cachet_cmds_str(b, "SMEMBERS");
    cachet_cmds_key(b, x->op.c, CACHET_KIND_TAGSET, x->p.bucket[x->untag[j]],
                    e->key, e->keylen);
  }
  x->op.state = AW_TAGSETS;
  return cachet_cmds_send(b, out);
}

/* Build and pipeline every set_many call of the window (layout in
 * lua/set_many.lua). An entry the envelope refuses leaves its call. */
static int send_calls(cachet_op_mset *x, cachet_out *out) {
  cachet *c = x->op.c;
  cachet_cmds *b = &x->op.cmds;
  int64_t now = cachet_now_ms();
  drop_blobs(x);
  for (size_t q = 0; q < x->p.ncalls; q++) {
    cachet_mset_run *k = &x->p.calls[q];
    size_t *ids = x->p.order + k->first;
    size_t ne = 0, nkeys = 0, nprune = 0;
    const char *cap = "0";
    for (size_t j = 0; j < k->len; j++) {
      size_t id = ids[j];
      const cachet_entry *e = ent(x, id);
      cachet_key vk;
      int rc = seal(x, id, &vk, now);
      cachet_key_free(&vk);
      if (rc == CACHET_EINVAL)
        continue;
      if (rc != CACHET_OK)
        return fatal(x, out, rc);
      /* The tags an entry gives, each once. */
      size_t nt = distinct_tags(e);
      if (nt > 0) {
        const char *pc = cachet_prune_cap(c);
        if (strcmp(pc, "0") != 0) {
          cap = pc;
          nprune += nt;
        }
      }
      nkeys += 2 + nt;
      ids[ne++] = id; /* the call keeps the entries it sends */
    }
    k->len = ne;
    if (ne == 0)
      continue;
    cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_SET_MANY, nkeys);
    for (size_t j = 0; j < ne; j++) {
      const cachet_entry *e = ent(x, ids[j]);
      unsigned bkt = x->p.bucket[ids[j]];
      cachet_cmds_key(b, c, CACHET_KIND_VALUE, bkt, e->key, e->keylen);
      cachet_cmds_key(b, c, CACHET_KIND_TAGSET, bkt, e->key, e->keylen);
      for (size_t t = 0; t < e->ntags; t++)
        if (!repeats(e, t))
          cachet_cmds_key(b, c, CACHET_KIND_INDEX, bkt, e->tags[t],
                          strlen(e->tags[t]));
    }
    cachet_cmds_int(b, (long long)ne);
    cachet_cmds_str(b, cap);
    cachet_cmds_int(
        b, (long long)(nprune < PRUNE_INDEXES ? nprune : PRUNE_INDEXES));
    for (size_t j = 0; j < ne; j++) {
      const cachet_entry *e = ent(x, ids[j]);
      size_t nt = distinct_tags(e);
      cachet_cmds_int(b, e->ttl_ms);
      cachet_cmds_int(b, (long long)nt);
      cachet_cmds_arg(b, x->blobs[ids[j]], x->blens[ids[j]]);
      if (nt > 0) /* the member, needed only for the indexes */
        cachet_cmds_arg(b, e->key, e->keylen);
      for (size_t t = 0; t < e->ntags; t++)
        if (!repeats(e, t))
          cachet_cmds_str(b, e->tags[t]);
    }
  }
  if (b->n == 0)
    return -1;
  x->op.state = AW_CALLS;
  return cachet_cmds_send(b, out);
}

/* The shape of one set_many reply: {written, {j, "retag", tag...} or
 * {j, "err", text}...}, positions rising within 1..len, every entry
 * accounted for. Checked in full before any status is set. */
static int call_reply_ok(const redisReply *r, size_t len) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER ||
      r->element[0]->integer < 0 ||
      (size_t)r->element[0]->integer + (r->elements - 1) != len)
    return 0;
  long long prev = 0;
  for (size_t i = 1; i < r->elements; i++) {
    const redisReply *s = r->element[i];
    if (s->type != REDIS_REPLY_ARRAY || s->elements < 3 ||
        s->element[0]->type != REDIS_REPLY_INTEGER ||
        s->element[0]->integer <= prev ||
        s->element[0]->integer > (long long)len ||
        s->element[1]->type != REDIS_REPLY_STRING)
      return 0;
    prev = s->element[0]->integer;
    if (!cachet_reply_strings(s) && s->elements > 2) {
      for (size_t q = 2; q < s->elements; q++)
        if (s->element[q]->type != REDIS_REPLY_STRING)
          return 0;
    }
    int retag = strcmp(s->element[1]->str, "retag") == 0;
    if (!retag && (strcmp(s->element[1]->str, "err") != 0 || s->elements != 3))
      return 0;
  }
  return 1;
}

static int calls_reply(cachet_op_mset *x, const cachet_in *in,
                       cachet_out *out) {
  size_t q = 0;
  for (size_t i = 0; i < x->p.ncalls; i++) {
    const cachet_mset_run *k = &x->p.calls[i];
    if (k->len == 0)
      continue;
    const size_t *ids = x->p.order + k->first;
    const cachet_res *res = &in->res[q++];
    int rc = cachet_res_ok(res);
    if (rc == CACHET_ESERVER) { /* the call did not run: nothing written */
      for (size_t j = 0; j < k->len; j++)
        mset_error(x, ids[j], rc);
      continue;
    }
    if (rc != CACHET_OK)
      return fatal(x, out, rc);
    const redisReply *r = res->reply;
    if (!call_reply_ok(r, k->len))
      return fatal(x, out, cachet_res_proto("mset: set_many"));
    size_t s = 1;
    for (size_t j = 0; j < k->len; j++) {
      const redisReply *skip = s < r->elements ? r->element[s] : NULL;
      if (skip == NULL || (size_t)skip->element[0]->integer != j + 1) {
        written(x, ids[j]);
        continue;
      }
      s++;
      if (strcmp(skip->element[1]->str, "retag") == 0) {
        x->p.st[ids[j]] = CACHET_MSET_RETAG;
      } else {
        const redisReply *text = skip->element[2];
        mset_error(
            x, ids[j],
            cachet_fail_bytes(CACHET_ESERVER, NULL, text->str, text->len));
      }
    }
  }
  drop_blobs(x);
  cachet_in fresh = no_replies(in);
  return next(x, &fresh, out);
}

/* Start the entry machine in x->child: it has sent nothing yet. */
static int run_child(cachet_op_mset *x, const cachet_in *in, cachet_out *out) {
  cachet_in fresh = *in;
  fresh.res = NULL;
  fresh.n = 0;
  x->child_on = 1;
  x->op.state = AW_CHILD;
  return x->child.op.k->step(&x->child.op, &fresh, out);
}

/* What comes next: in each window the plain rounds (each perhaps followed
 * by untags), then the calls, then the entries written one by one; then
 * the next window, or the end. */
static int next(cachet_op_mset *x, const cachet_in *in, cachet_out *out) {
  for (;;) {
    int what;
    switch (x->phase) {
    case PH_PLAIN:
      while (x->pj < x->p.nplain)
        if ((what = send_plain(x, out)) != -1)
          return what;
      x->phase = PH_CALLS;
      break;
    case PH_UNTAG:
      for (; x->ui < x->nuntag; x->ui++) {
        size_t id = x->untag[x->ui];
        const redisReply *set = x->sets[x->ui];
        if (set->type == REDIS_REPLY_ARRAY && set->elements == 0) {
          written(x, id);
          continue;
        }
        const cachet_entry *e = ent(x, id);
        int rc = cachet_op_entry_untag(&x->child, x->op.c, e->key, e->keylen,
                                       x->blobs[id], x->blens[id], set);
        if (rc != CACHET_OK)
          return fatal(x, out, rc);
        return run_child(x, in, out);
      }
      drop_sets(x);
      x->phase = PH_PLAIN;
      break;
    case PH_CALLS:
      x->phase = PH_ONE;
      if ((what = send_calls(x, out)) != -1)
        return what;
      break;
    default: /* PH_ONE */
      for (; x->i < x->m; x->i++) {
        unsigned char st = x->p.st[x->i];
        if (st != CACHET_MSET_RETAG && st != CACHET_MSET_ALONE)
          continue;
        const cachet_entry *e = ent(x, x->i);
        int rc = cachet_op_entry_write(&x->child, x->op.c, e->key, e->keylen,
                                       e->val == NULL ? "" : e->val, e->len,
                                       e->ttl_ms, e->tags, e->ntags);
        if (rc == CACHET_EINVAL) {
          mset_error(x, x->i, rc);
          continue;
        }
        if (rc != CACHET_OK)
          return fatal(x, out, rc);
        return run_child(x, in, out);
      }
      for (size_t i = 0; i < x->m; i++)
        if (x->p.st[i] == CACHET_MSET_DUP)
          ent(x, i)->status = ent(x, x->p.winner[i])->status;
      x->base += x->m;
      if (x->base >= x->n)
        return cachet_batch_finish(out, x->first, x->detail);
      size_t left = x->n - x->base;
      x->m = left < CACHET_MSET_WINDOW ? left : CACHET_MSET_WINDOW;
      cachet_mset_plan_window(&x->p, x->e + x->base, x->m, x->by_bucket,
                              x->op.c->cfg.prefixlen);
      x->pj = x->i = 0;
      x->phase = PH_PLAIN;
      break;
    }
  }
}

static int mset_step1(cachet_op *op, const cachet_in *in, cachet_out *out);

/* As set's: every end drops the near cache's copies of the entries. */
static int mset_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  int rc = mset_step1(op, in, out);
  if (rc == CACHET_DO_DONE) {
    cachet_op_mset *x = (cachet_op_mset *)op;
    for (size_t i = 0; i < x->n; i++)
      cachet_near_forget_key(op->c, x->e[i].key, x->e[i].keylen);
  }
  return rc;
}

static int mset_step1(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_mset *x = (cachet_op_mset *)op;
  cachet_in fresh = *in;
  fresh.res = NULL;
  fresh.n = 0;
  switch (op->state) {
  case AW_NONE:
    if (x->n == 0)
      return cachet_op_done(out, CACHET_OK);
    x->m = x->n < CACHET_MSET_WINDOW ? x->n : CACHET_MSET_WINDOW;
    cachet_mset_plan_window(&x->p, x->e, x->m, x->by_bucket,
                            op->c->cfg.prefixlen);
    x->phase = PH_PLAIN;
    return next(x, &fresh, out);
  case AW_PLAIN:
    return plain_reply(x, in, out);
  case AW_TAGSETS:
    for (size_t j = 0; j < x->nuntag; j++) {
      if (in->res[j].status != CACHET_OK)
        return fatal(x, out, cachet_res_ok(&in->res[j]));
      x->sets[j] = in->res[j].reply; /* an error reply: untag says */
      in->res[j].reply = NULL;
    }
    x->ui = 0;
    x->phase = PH_UNTAG;
    return next(x, &fresh, out);
  case AW_CALLS:
    return calls_reply(x, in, out);
  default: { /* AW_CHILD */
    int what = x->child.op.k->step(&x->child.op, in, out);
    if (what != CACHET_DO_DONE)
      return what;
    int rc = out->status;
    x->child.op.k->free(&x->child.op);
    x->child_on = 0;
    size_t id = x->phase == PH_UNTAG ? x->untag[x->ui++] : x->i++;
    if (rc == CACHET_OK) { /* the entry machine counted its write */
      x->p.st[id] = CACHET_MSET_DONE;
      ent(x, id)->status = CACHET_OK;
    } else if (cachet_batch_fatal(rc))
      return fatal(x, out, rc);
    else
      mset_error(x, id, rc);
    return next(x, &fresh, out);
  }
  }
}

static void mset_free(cachet_op *op) {
  cachet_op_mset *x = (cachet_op_mset *)op;
  if (x->child_on)
    x->child.op.k->free(&x->child.op);
  x->child_on = 0;
  if (x->blobs != NULL)
    drop_blobs(x);
  if (x->sets != NULL)
    drop_sets(x);
  free(x->blobs);
  free(x->blens);
  free(x->groups);
  free(x->untag);
  free(x->sets);
  cachet_mset_plan_free(&x->p);
  cachet_cmds_free(&op->cmds);
}

static const cachet_op_kind mset_kind = {"mset", mset_step, mset_free, 0};

int cachet_op_mset_init(cachet_op_mset *x, cachet *c, cachet_entry *e,
                        size_t n) {
  cachet_op_begin(&x->op, sizeof *x, &mset_kind, c);
  x->e = e;
  x->n = n;
  x->first = CACHET_OK;
  x->by_bucket = c->cfg.cluster;
  if (n == 0)
    return CACHET_OK; /* done at the first step */
  int rc = cachet_mset_plan_alloc(&x->p, e, n);
  if (rc != CACHET_OK)
    return rc;
  size_t cap = x->p.cap;
  x->blobs = calloc(cap, sizeof *x->blobs);
  x->blens = calloc(cap, sizeof *x->blens);
  x->groups = calloc(cap, sizeof *x->groups);
  x->untag = calloc(cap, sizeof *x->untag);
  x->sets = calloc(cap, sizeof *x->sets);
  if (!x->blobs || !x->blens || !x->groups || !x->untag || !x->sets) {
    mset_free(&x->op);
    return cachet_fail(CACHET_ENOMEM, "mset: out of memory");
  }
  return CACHET_OK;
}
