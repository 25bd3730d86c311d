/* GET, EXISTS and PTTL as a one-step machine (op_key.h). */
#include "op_key.h"

#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"

static const char *const names[] = {"GET", "EXISTS", "PTTL", "GET"};

static int key_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_key *x = (cachet_op_key *)op;
  int rc;
  if (in->res == NULL && x->cmd == CACHET_KEY_GET && op->c->near != NULL &&
      (rc = cachet_near_lookup(op->c, &x->vk, &x->val, &x->len, &x->ticket)) !=
          CACHET_MISS)
    return cachet_op_done(out, rc);
  if (in->res == NULL) {
    x->argv[0] = names[x->cmd];
    x->lens[0] = strlen(names[x->cmd]);
    x->argv[1] = x->vk.buf;
    x->lens[1] = x->vk.len;
    x->one = (cachet_cmd){2, x->argv, x->lens, CACHET_ROUTE_KEY, -1};
    out->cmds = &x->one;
    out->n = 1;
    return CACHET_DO_SEND;
  }
  if (x->cmd == CACHET_KEY_GET) {
    rc = cachet_res_value(op->c, &in->res[0], x->vk.buf, x->vk.len, 1, &x->val,
                          &x->len, &x->expires_ms);
    cachet_near_settle(op->c, &x->vk, &x->ticket, rc, x->val, x->len,
                       x->expires_ms);
    return cachet_op_done(out, rc);
  }
  if (x->cmd == CACHET_KEY_RAW) {
    redisReply *g = in->res[0].reply;
    rc = cachet_res_ok(&in->res[0]);
    if (rc == CACHET_OK && g->type == REDIS_REPLY_NIL)
      rc = CACHET_MISS;
    else if (rc == CACHET_OK && g->type != REDIS_REPLY_STRING)
      rc = cachet_res_proto("GET");
    if (rc == CACHET_OK) { /* hiredis's buffer, NUL after len: no copy */
      x->val = g->str;
      x->len = g->len;
      g->str = NULL;
      g->len = 0;
    }
    return cachet_op_done(out, rc);
  }
  long long v;
  rc = cachet_res_int(&in->res[0], names[x->cmd], &v);
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  if (x->cmd == CACHET_KEY_EXISTS)
    return cachet_op_done(out, v > 0 ? CACHET_OK : CACHET_MISS);
  /* PTTL: -2 absent, -1 no expiry, else milliseconds left. */
  x->ttl_ms = v < 0 ? -1 : v;
  return cachet_op_done(out, v == -2 ? CACHET_MISS : CACHET_OK);
}

static void key_free(cachet_op *op) {
  cachet_op_key *x = (cachet_op_key *)op;
  cachet_near_settle(op->c, &x->vk, &x->ticket, CACHET_ECONN, NULL, 0, 0);
  free(x->val);
  x->val = NULL;
  cachet_key_free(&x->vk);
}

static const cachet_op_kind key_kind = {"get", key_step, key_free, 1};

int cachet_op_key_init(cachet_op_key *x, cachet *c, int cmd, const void *key,
                       size_t keylen) {
  cachet_op_begin(&x->op, sizeof *x, &key_kind, c);
  x->cmd = cmd;
  int rc = cachet_check_key(c, key, keylen);
  if (rc == CACHET_OK)
    rc = cachet_key_build(c, &x->vk, CACHET_KIND_VALUE,
                          cachet_bucket(key, keylen), key, keylen);
  return rc;
}
