/* The machines' shared pieces: the command builder and the readers of
 * outcomes (op.h). */
#include "op.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "entry.h"
#include "error.h"
#include "near.h"

void cachet_cmds_start(cachet_cmds *b, int node) {
  if (b->oom || (b->n == b->cap && cachet_grow(&b->cmd, &b->cap, b->n + 1,
                                               sizeof *b->cmd) != CACHET_OK)) {
    b->oom = 1;
    return;
  }
  /* argv is an offset until cachet_cmds_send: the array may move. */
  b->cmd[b->n++] =
      (cachet_cmd){0, (const char **)(uintptr_t)b->nargs, NULL, node, -1};
}

/* argv, lens and own grow together; acap is what all three hold. */
static int grow_args(cachet_cmds *b, size_t need) {
  if (need <= b->acap)
    return 0;
  size_t n = b->acap ? b->acap * 2 : 32;
  while (n < need)
    n *= 2;
  const char **a = realloc(b->argv, n * sizeof *a);
  if (a == NULL)
    return -1;
  b->argv = a;
  size_t *l = realloc(b->lens, n * sizeof *l);
  if (l == NULL)
    return -1;
  b->lens = l;
  unsigned char *o = realloc(b->own, n);
  if (o == NULL)
    return -1;
  b->own = o;
  b->acap = n;
  return 0;
}

static void push(cachet_cmds *b, const void *p, size_t len, int own) {
  if (b->oom || b->n == 0)
    return;
  if (b->nargs == b->acap && grow_args(b, b->nargs + 1) != 0) {
    b->oom = 1;
    return;
  }
  b->argv[b->nargs] = p;
  b->lens[b->nargs] = len;
  b->own[b->nargs++] = (unsigned char)own;
  b->cmd[b->n - 1].argc++;
}

void cachet_cmds_reserve(cachet_cmds *b, size_t ncmds, size_t nargs,
                         size_t bytes) {
  if (b->oom ||
      cachet_grow(&b->cmd, &b->cap, b->n + ncmds, sizeof *b->cmd) !=
          CACHET_OK ||
      grow_args(b, b->nargs + nargs) != 0 ||
      cachet_grow(&b->arena, &b->arenacap, b->used + bytes, 1) != CACHET_OK)
    b->oom = 1;
}

void cachet_cmds_arg(cachet_cmds *b, const void *p, size_t len) {
  push(b, p, len, 0);
}

void cachet_cmds_str(cachet_cmds *b, const char *s) {
  push(b, s, strlen(s), 0);
}

void cachet_cmds_key1(cachet_cmds *b, const char *verb, const void *key,
                      size_t len) {
  cachet_cmds_start(b, CACHET_ROUTE_KEY);
  cachet_cmds_str(b, verb);
  cachet_cmds_arg(b, key, len);
}

/* Room for `len` bytes and a NUL in the arena: where they go, or NULL. */
static char *arena_take(cachet_cmds *b, size_t len) {
  if (b->oom || (b->used + len + 1 > b->arenacap &&
                 cachet_grow(&b->arena, &b->arenacap, b->used + len + 1, 1) !=
                     CACHET_OK)) {
    b->oom = 1;
    return NULL;
  }
  return b->arena + b->used;
}

/* The `len` bytes just written at arena_take's pointer are an argument. */
static void arena_push(cachet_cmds *b, size_t len) {
  b->arena[b->used + len] = '\0';
  push(b, (const char *)(uintptr_t)b->used, len, 1);
  b->used += len + 1;
}

void cachet_cmds_copy(cachet_cmds *b, const void *p, size_t len) {
  char *o = arena_take(b, len);
  if (o == NULL)
    return;
  if (len > 0)
    memcpy(o, p, len);
  arena_push(b, len);
}

/* Decimal without snprintf, whose cost shows at a million commands. */
void cachet_cmds_int(cachet_cmds *b, long long v) {
  char tmp[24], *o = arena_take(b, 24);
  if (o == NULL)
    return;
  unsigned long long u =
      v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;
  size_t n = 0, len = 0;
  do
    tmp[n++] = (char)('0' + u % 10);
  while ((u /= 10) > 0);
  if (v < 0)
    o[len++] = '-';
  while (n > 0)
    o[len++] = tmp[--n];
  arena_push(b, len);
}

void cachet_cmds_key(cachet_cmds *b, const cachet *c, char kind,
                     unsigned bucket, const void *name, size_t len) {
  char *o = arena_take(b, c->cfg.prefixlen + 6 + len);
  if (o != NULL)
    arena_push(b, cachet_key_write(c, o, kind, bucket, name, len));
}

void cachet_cmds_script(cachet_cmds *b, int node, cachet_script_id id,
                        size_t nkeys) {
  cachet_cmds_start(b, node);
  if (b->oom)
    return;
  b->cmd[b->n - 1].script = (int)id;
  cachet_cmds_str(b, "EVALSHA");
  cachet_cmds_arg(b, cachet_scripts[id].sha, 40);
  cachet_cmds_int(b, (long long)nkeys);
}

int cachet_cmds_send(cachet_cmds *b, cachet_out *out) {
  if (b->oom) {
    cachet_cmds_free(b);
    return cachet_op_fail(out, CACHET_ENOMEM,
                          "out of memory building a "
                          "command");
  }
  for (size_t i = 0; i < b->nargs; i++)
    if (b->own[i])
      b->argv[i] = b->arena + (uintptr_t)b->argv[i];
  for (size_t i = 0; i < b->n; i++) {
    size_t first = (uintptr_t)b->cmd[i].argv;
    b->cmd[i].argv = b->argv + first;
    b->cmd[i].lens = b->lens + first;
  }
  out->cmds = b->cmd;
  out->n = b->n;
  /* The next step builds anew: the arrays stay, their contents go. */
  b->n = b->nargs = b->used = 0;
  return CACHET_DO_SEND;
}

void cachet_cmds_free(cachet_cmds *b) {
  free(b->cmd);
  free(b->argv);
  free(b->lens);
  free(b->own);
  free(b->arena);
  memset(b, 0, sizeof *b);
}

void cachet_op_begin(cachet_op *op, size_t size, const cachet_op_kind *k,
                     cachet *c) {
  memset(op, 0, size);
  op->k = k;
  op->c = c;
}

int cachet_op_done(cachet_out *out, int status) {
  out->status = status;
  return CACHET_DO_DONE;
}

int cachet_op_fail(cachet_out *out, int status, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return cachet_op_done(out, cachet_fail(status, "%s", msg));
}

/* ---- Reading outcomes -----------------------------------------------------
 */

int cachet_res_ok(const cachet_res *r) {
  if (r->status != CACHET_OK)
    return cachet_fail(r->status, "%s", r->detail != NULL ? r->detail : "");
  if (r->reply->type == REDIS_REPLY_ERROR)
    return cachet_fail_bytes(CACHET_ESERVER, NULL, r->reply->str,
                             r->reply->len);
  return CACHET_OK;
}

int cachet_res_proto(const char *what) {
  return cachet_fail(CACHET_EPROTO, "%s: unexpected reply", what);
}

int cachet_res_int(const cachet_res *r, const char *what, long long *v) {
  int rc = cachet_res_ok(r);
  if (rc != CACHET_OK)
    return rc;
  if (r->reply->type != REDIS_REPLY_INTEGER)
    return cachet_res_proto(what);
  *v = r->reply->integer;
  return CACHET_OK;
}

int cachet_reply_strings(const redisReply *r) {
  if (r == NULL || r->type != REDIS_REPLY_ARRAY)
    return 0;
  for (size_t i = 0; i < r->elements; i++)
    if (r->element[i]->type != REDIS_REPLY_STRING)
      return 0;
  return 1;
}

int cachet_res_value(cachet *c, cachet_res *r, const char *rkey, size_t rkeylen,
                     int count_miss, void **val, size_t *len,
                     int64_t *expires_ms) {
  *val = NULL;
  *len = 0;
  int rc = cachet_res_ok(r);
  if (rc != CACHET_OK)
    return rc;
  redisReply *g = r->reply;
  if (g->type == REDIS_REPLY_NIL) {
    if (count_miss)
      CACHET_COUNT(c, misses, 1);
    return CACHET_MISS;
  }
  if (g->type != REDIS_REPLY_STRING)
    return cachet_fail(CACHET_EPROTO, "GET: unexpected reply type %d", g->type);
  /* Take hiredis's own buffer (malloc'd, len + 1 bytes): no copy. */
  char *blob = g->str;
  size_t bl = g->len;
  g->str = NULL;
  g->len = 0;
  rc = cachet_entry_open(c, rkey, rkeylen, blob, bl, val, len, expires_ms);
  if (rc == CACHET_MISS)
    cachet_error_clear();
  return rc;
}

int cachet_reply_is_noscript(const redisReply *r) {
  return r->type == REDIS_REPLY_ERROR && r->len >= 8 &&
         memcmp(r->str, "NOSCRIPT", 8) == 0 &&
         (r->len == 8 || r->str[8] == ' ');
}

int cachet_script_loaded(cachet *c, const redisReply *r, int id) {
  const cachet_script *s = &cachet_scripts[id];
  if (r->type == REDIS_REPLY_ERROR)
    return cachet_fail_bytes(CACHET_ESERVER, "SCRIPT LOAD: ", r->str, r->len);
  CACHET_COUNT(c, script_reloads, 1);
  if (r->type != REDIS_REPLY_STRING || r->len != 40 ||
      memcmp(r->str, s->sha, 40) != 0)
    return cachet_fail(CACHET_EINTERNAL,
                       "SCRIPT LOAD of %s returned a SHA1 other than the "
                       "embedded %s",
                       s->name, s->sha);
  return CACHET_OK;
}

int cachet_reply_is_retag(const redisReply *r) {
  return r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
         r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 5 &&
         memcmp(r->element[0]->str, "retag", 5) == 0;
}

int cachet_reply_tag_names(const redisReply *r, size_t from) {
  if (r->type != REDIS_REPLY_ARRAY)
    return cachet_res_proto("tag set");
  for (size_t i = from; i < r->elements; i++) {
    const redisReply *t = r->element[i];
    if (t->type != REDIS_REPLY_STRING || t->len == 0 ||
        memchr(t->str, '\0', t->len) != NULL)
      return cachet_fail(CACHET_ECORRUPT,
                         "an entry's tag set holds a malformed tag name");
  }
  return CACHET_OK;
}

void cachet_progress(cachet *c, const char *op, uint64_t done) {
  if (c->progress != NULL)
    c->progress(c->progress_ud, op, done);
}

void cachet_near_forget(cachet *c, const char *vk, size_t len) {
  if (c->near != NULL)
    cachet_near_drop(c->near, vk, len);
}

void cachet_near_forget_key(cachet *c, const void *key, size_t keylen) {
  if (c->near == NULL)
    return;
  char small[256];
  size_t cap = c->cfg.prefixlen + 7 + keylen;
  char *vk = cap <= sizeof small ? small : malloc(cap);
  if (vk == NULL) { /* no room to name it: drop every copy instead */
    cachet_near_flush(c->near);
    return;
  }
  size_t len = cachet_key_write(c, vk, CACHET_KIND_VALUE,
                                cachet_bucket(key, keylen), key, keylen);
  cachet_near_drop(c->near, vk, len);
  if (vk != small)
    free(vk);
}

void cachet_near_forget_cmd(cachet *c, const cachet_cmd *cmd) {
  for (int i = 1; c->near != NULL && i < cmd->argc; i++)
    if (cachet_data_kind(c, cmd->argv[i], cmd->lens[i]) == CACHET_KIND_VALUE)
      cachet_near_drop(c->near, cmd->argv[i], cmd->lens[i]);
}

/* A test's hook between a GET's reply and the fill, to stage the race of
 * near.h deterministically. Never set outside the tests. */
void (*cachet_near_fill_hook)(const char *rkey, size_t len);

int cachet_near_lookup(cachet *c, const cachet_key *vk, void **val, size_t *len,
                       uint64_t *ticket) {
  int rc = cachet_near_get(c->near, vk->buf, vk->len, cachet_now_ms(), val, len,
                           ticket);
  if (rc == CACHET_OK)
    CACHET_COUNT(c, hits, 1);
  else if (rc != CACHET_MISS)
    cachet_fail(rc, "out of memory");
  return rc;
}

void cachet_near_settle(cachet *c, const cachet_key *vk, uint64_t *ticket,
                        int rc, const void *val, size_t len,
                        int64_t expires_ms) {
  if (*ticket == 0)
    return;
  if (cachet_near_fill_hook != NULL)
    cachet_near_fill_hook(vk->buf, vk->len);
  if (rc == CACHET_OK)
    cachet_near_fill(c->near, vk->buf, vk->len, *ticket, val, len, expires_ms,
                     cachet_now_ms());
  else
    cachet_near_abandon(c->near, vk->buf, vk->len, *ticket);
  *ticket = 0;
}
