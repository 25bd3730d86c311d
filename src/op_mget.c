/* mget as a machine (op_batch.h): GETs a window at a time, answered
 * from the near cache where it holds the entry. */
#include "op_batch.h"

#include <stdlib.h>

#include "near.h"

/* The entry command k of the window reads. */
static size_t mget_entry(const cachet_op_mget *x, size_t k) {
  return x->idx != NULL ? x->idx[k] : x->base + k;
}

/* Out of memory before the window's GETs could go: their commands cannot
 * name the keys of the near cache's tickets yet, so every copy and ticket
 * is dropped instead (rare, and always correct). */
static int mget_unsent(cachet_op_mget *x, cachet_out *out, int rc) {
  if (x->op.c->near != NULL)
    cachet_near_flush(x->op.c->near);
  x->ncmd = 0;
  return cachet_op_done(out, rc);
}

/* One GET per entry of the window that the near cache (if any) cannot
 * answer; each value key is built in the command's arena, where the
 * decoding finds it again (argv[1]). A window answered whole from memory
 * sends nothing: the next one is tried. */
static int mget_send(cachet_op_mget *x, cachet_out *out) {
  cachet *c = x->op.c;
  cachet_cmds *b = &x->op.cmds;
  if (c->near != NULL && x->idx == NULL &&
      ((x->idx = malloc(CACHET_MSET_WINDOW * sizeof *x->idx)) == NULL ||
       (x->ticket = calloc(CACHET_MSET_WINDOW, sizeof *x->ticket)) == NULL))
    return cachet_op_fail(out, CACHET_ENOMEM, "out of memory");
  for (; x->base < x->n; x->base += x->m) {
    size_t left = x->n - x->base;
    x->m = left < CACHET_MSET_WINDOW ? left : CACHET_MSET_WINDOW;
    size_t bytes = 0;
    for (size_t i = 0; i < x->m; i++)
      bytes += c->cfg.prefixlen + 7 + x->e[x->base + i].keylen;
    cachet_cmds_reserve(b, x->m, 2 * x->m, bytes);
    x->ncmd = 0;
    for (size_t i = 0; i < x->m; i++) {
      cachet_entry *e = &x->e[x->base + i];
      unsigned bucket = cachet_bucket(e->key, e->keylen);
      if (c->near == NULL) {
        cachet_cmds_start(b, CACHET_ROUTE_KEY);
        cachet_cmds_str(b, "GET");
        cachet_cmds_key(b, c, CACHET_KIND_VALUE, bucket, e->key, e->keylen);
        x->ncmd++;
        continue;
      }
      /* The value key is built once: the near cache's key, then the
       * GET's argument if it has no copy. */
      cachet_key vk = {0};
      uint64_t ticket = 0;
      int rc = cachet_key_build(c, &vk, CACHET_KIND_VALUE, bucket, e->key,
                                e->keylen);
      if (rc == CACHET_OK)
        rc = cachet_near_lookup(c, &vk, &e->out, &e->outlen, &ticket);
      if (rc == CACHET_MISS) {
        cachet_cmds_start(b, CACHET_ROUTE_KEY);
        cachet_cmds_str(b, "GET");
        cachet_cmds_copy(b, vk.buf, vk.len);
        x->idx[x->ncmd] = x->base + i;
        x->ticket[x->ncmd++] = ticket;
      }
      cachet_key_free(&vk);
      if (rc == CACHET_OK)
        e->status = CACHET_OK;
      else if (rc != CACHET_MISS)
        return mget_unsent(x, out, rc);
    }
    if (x->ncmd > 0) {
      int what = cachet_cmds_send(b, out);
      return what == CACHET_DO_DONE ? mget_unsent(x, out, out->status) : what;
    }
  }
  return cachet_batch_finish(out, x->first, x->detail);
}

/* The near cache's tickets of the window's commands from k on, given up. */
static void mget_abandon(cachet_op_mget *x, size_t k) {
  for (; x->ticket != NULL && k < x->ncmd; k++) {
    const cachet_cmd *get = &x->op.cmds.cmd[k];
    cachet_key vk = {.buf = (char *)get->argv[1], .len = get->lens[1]};
    cachet_near_settle(x->op.c, &vk, &x->ticket[k], CACHET_ECONN, NULL, 0, 0);
  }
}

static int mget_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_mget *x = (cachet_op_mget *)op;
  cachet *c = op->c;
  if (in->res == NULL)
    return mget_send(x, out);
  for (size_t k = 0; k < x->ncmd; k++) {
    cachet_entry *e = &x->e[mget_entry(x, k)];
    const cachet_cmd *get = &op->cmds.cmd[k];
    int64_t expires = 0;
    int rc = cachet_res_value(c, &in->res[k], get->argv[1], get->lens[1], 1,
                              &e->out, &e->outlen, &expires);
    if (x->ticket != NULL) {
      cachet_key vk = {.buf = (char *)get->argv[1], .len = get->lens[1]};
      cachet_near_settle(c, &vk, &x->ticket[k], rc, e->out, e->outlen, expires);
    }
    if (rc == CACHET_OK || rc == CACHET_MISS) {
      e->status = rc;
    } else if (cachet_batch_fatal(rc)) {
      /* What the near cache answered keeps its value. */
      mget_abandon(x, k + 1);
      for (size_t j = k; j < x->ncmd; j++)
        x->e[mget_entry(x, j)].status = rc;
      for (size_t j = x->base + x->m; j < x->n; j++)
        x->e[j].status = rc;
      return cachet_op_done(out, rc);
    } else {
      cachet_batch_entry_error(c, e, rc, &x->first, x->detail,
                               sizeof x->detail);
    }
  }
  x->base += x->m;
  return mget_send(x, out);
}

static void mget_free(cachet_op *op) {
  cachet_op_mget *x = (cachet_op_mget *)op;
  mget_abandon(x, 0);
  free(x->idx);
  free(x->ticket);
  x->idx = NULL;
  x->ticket = NULL;
  cachet_cmds_free(&op->cmds);
}

static const cachet_op_kind mget_kind = {"mget", mget_step, mget_free, 0};

int cachet_op_mget_init(cachet_op_mget *x, cachet *c, cachet_entry *e,
                        size_t n) {
  cachet_op_begin(&x->op, sizeof *x, &mget_kind, c);
  x->e = e;
  x->n = n;
  return CACHET_OK;
}
