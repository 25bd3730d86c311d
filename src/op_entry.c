/* One entry written or deleted with its tag memberships (op_entry.h).
 *
 * A tagged write is lua/set_tags.lua and a delete lua/delete_entry.lua. The
 * scripts can only touch keys they are given, and C does not know an
 * entry's old tags before the call: so a script reports tags it was not
 * given ({"retag", tag...}) without writing, and the machine calls again
 * with their index keys. That costs a second round trip only when an
 * entry's tags change, and loops (bounded) only while concurrent writers
 * keep changing them.
 *
 * An untagged write is a plain SET, with the tag set read (SMEMBERS) in the
 * same round trip; only an entry that had tags goes on to lua/untag.lua,
 * which drops them unless a later write owns the entry by then
 * (docs/DESIGN.md, "Untagged writes take plain SET"). A value whose
 * envelope is CACHET_STAGE_MIN or more is SET beside the entry first and
 * renamed into place by set_tags, so that Redis never copies it through a
 * script. */
#include "op_entry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "envelope.h"
#include "error.h"

enum { ENTRY_WRITE, ENTRY_DELETE, ENTRY_UNTAG };
enum { E_START, E_PLAIN, E_STAGE, E_SCRIPT, E_UNSTAGE };

/* How often a write may learn of new old tags before giving up. Only a
 * concurrent writer changing the same entry's tags can make it loop. */
#define RETAG_ATTEMPTS 8
/* Old tags a plain write passes to untag.lua from the tag set it read;
 * beyond that untag names them through retag. */
#define PLAIN_TAGS 8

static int has_name(const cachet_op_entry *x, const char *s, size_t len) {
  for (size_t i = 0; i < x->ntags; i++)
    if (strlen(x->names[i]) == len && memcmp(x->names[i], s, len) == 0)
      return 1;
  return 0;
}

static int add_name(cachet_op_entry *x, const char *s, size_t len) {
  if (has_name(x, s, len))
    return CACHET_OK;
  if (cachet_grow(&x->names, &x->cap, x->ntags + 1, sizeof *x->names) !=
      CACHET_OK)
    return CACHET_ENOMEM;
  char *copy = malloc(len + 1);
  if (copy == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  memcpy(copy, s, len);
  copy[len] = '\0';
  x->names[x->ntags++] = copy;
  return CACHET_OK;
}

/* Learn the names r->element[from..] (checked first). */
static int learn(cachet_op_entry *x, const redisReply *r, size_t from) {
  int rc = cachet_reply_tag_names(r, from);
  for (size_t i = from; rc == CACHET_OK && i < r->elements; i++)
    rc = add_name(x, r->element[i]->str, r->element[i]->len);
  return rc;
}

static const char *what(const cachet_op_entry *x) {
  return x->mode == ENTRY_DELETE  ? "delete"
         : x->mode == ENTRY_UNTAG ? "untag"
                                  : "set";
}

static int send_script(cachet_op_entry *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  cachet *c = x->op.c;
  int set = x->mode == ENTRY_WRITE;
  cachet_script_id id = x->mode == ENTRY_DELETE  ? CACHET_SCRIPT_DELETE_ENTRY
                        : x->mode == ENTRY_UNTAG ? CACHET_SCRIPT_UNTAG
                                                 : CACHET_SCRIPT_SET_TAGS;
  /* set_tags: a staged write passes an empty blob (an envelope never is
   * one) and the staging key last in KEYS. */
  int staged = set && x->staged;
  cachet_cmds_script(b, CACHET_ROUTE_KEY, id, 2 + x->ntags + (size_t)staged);
  cachet_cmds_arg(b, x->vk.buf, x->vk.len);
  cachet_cmds_arg(b, x->mk.buf, x->mk.len);
  for (size_t i = 0; i < x->ntags; i++)
    cachet_cmds_key(b, c, CACHET_KIND_INDEX, x->bucket, x->names[i],
                    strlen(x->names[i]));
  if (staged)
    cachet_cmds_arg(b, x->sk.buf, x->sk.len);
  if (set) {
    cachet_cmds_arg(b, x->blob, staged ? 0 : x->bloblen);
    cachet_cmds_int(b, x->ttl_ms);
    cachet_cmds_str(b, x->prune_cap);
    cachet_cmds_int(b, (long long)x->nnew);
  } else if (x->mode == ENTRY_UNTAG) {
    cachet_cmds_arg(b, x->blob, x->bloblen);
  }
  cachet_cmds_arg(b, x->key, x->keylen);
  for (size_t i = 0; i < x->ntags; i++)
    cachet_cmds_str(b, x->names[i]);
  x->op.state = E_SCRIPT;
  return cachet_cmds_send(b, out);
}

static int start(cachet_op_entry *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  if (x->mode != ENTRY_WRITE)
    return send_script(x, out);
  if (x->staged) {
    const char *argv[5];
    size_t lens[5];
    cachet_stage_command(&x->sk, x->blob, x->bloblen, argv, lens);
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    for (int i = 0; i < 5; i++)
      cachet_cmds_arg(b, argv[i], lens[i]);
    x->op.state = E_STAGE;
    return cachet_cmds_send(b, out);
  }
  if (x->ntags > 0)
    return send_script(x, out);
  /* Untagged: the SET and the old tag set in one round trip. */
  cachet_cmds_start(b, CACHET_ROUTE_KEY);
  cachet_cmds_str(b, "SET");
  cachet_cmds_arg(b, x->vk.buf, x->vk.len);
  cachet_cmds_arg(b, x->blob, x->bloblen);
  if (x->ttl_ms > 0) {
    cachet_cmds_str(b, "PX");
    cachet_cmds_int(b, x->ttl_ms);
  }
  cachet_cmds_key1(b, "SMEMBERS", x->mk.buf, x->mk.len);
  x->op.state = E_PLAIN;
  return cachet_cmds_send(b, out);
}

/* The untag step failed: the value is stored all the same. */
static int untag_failed(cachet_out *out, int rc) {
  char detail[400];
  snprintf(detail, sizeof detail, "%s", cachet_last_error());
  return cachet_op_fail(out, rc,
                        "the value was stored, but the tags it had were not "
                        "dropped: %s",
                        detail);
}

static int plain_reply(cachet_op_entry *x, const cachet_in *in,
                       cachet_out *out) {
  int rc = cachet_res_ok(&in->res[0]);
  if (rc != CACHET_OK) /* OOM, READONLY ...: nothing was written */
    return cachet_op_done(out, rc);
  if (in->res[0].reply->type != REDIS_REPLY_STATUS)
    return cachet_op_done(out, cachet_res_proto("set: SET"));
  const cachet_res *t = &in->res[1];
  if (t->status != CACHET_OK)
    return untag_failed(out, cachet_res_ok(t));
  const redisReply *set = t->reply;
  if (set->type == REDIS_REPLY_ARRAY && set->elements == 0) {
    CACHET_COUNT(x->op.c, writes, 1);
    return cachet_op_done(out, CACHET_OK);
  }
  if (set->type != REDIS_REPLY_ARRAY && set->type != REDIS_REPLY_ERROR)
    return cachet_op_done(out, cachet_res_proto("set: SMEMBERS"));
  /* It had tags (or its tag set is of another type: untag will say).
   * Passing a few names saves untag a retag round. */
  if (set->type == REDIS_REPLY_ARRAY && set->elements <= PLAIN_TAGS &&
      cachet_reply_tag_names(set, 0) == CACHET_OK &&
      (rc = learn(x, set, 0)) != CACHET_OK)
    return cachet_op_done(out, rc);
  cachet_error_clear();
  x->mode = ENTRY_UNTAG;
  return send_script(x, out);
}

static int script_reply(cachet_op_entry *x, const cachet_in *in,
                        cachet_out *out) {
  cachet_res *r = &in->res[0];
  int rc = cachet_res_ok(r);
  if (rc == CACHET_OK && r->reply->type == REDIS_REPLY_INTEGER) {
    long long v = r->reply->integer;
    if (x->mode == ENTRY_DELETE) {
      if (v == 0)
        return cachet_op_done(out, CACHET_MISS);
      CACHET_COUNT(x->op.c, deletes, 1);
      return cachet_op_done(out, CACHET_OK);
    }
    if (v == 1 || (x->mode == ENTRY_UNTAG && v == 0)) {
      CACHET_COUNT(x->op.c, writes, 1);
      return cachet_op_done(out, CACHET_OK);
    }
    rc = cachet_fail(CACHET_EPROTO, "%s: unexpected reply %lld", what(x), v);
  } else if (rc == CACHET_OK && cachet_reply_is_retag(r->reply)) {
    if ((rc = learn(x, r->reply, 1)) == CACHET_OK) {
      if (++x->attempt < RETAG_ATTEMPTS)
        return send_script(x, out);
      rc = cachet_fail(CACHET_EBUSY,
                       "%s: the entry's tags kept changing under concurrent "
                       "writers (%d attempts)",
                       what(x), RETAG_ATTEMPTS);
    }
  } else if (rc == CACHET_OK) {
    rc = cachet_res_proto(what(x));
  }
  if (x->mode == ENTRY_UNTAG)
    return untag_failed(out, rc);
  if (x->staged && r->status == CACHET_OK) {
    /* Best effort while the connection works; the TTL removes it else. */
    x->failed = rc;
    snprintf(x->detail, sizeof x->detail, "%s", cachet_last_error());
    cachet_cmds *b = &x->op.cmds;
    cachet_cmds_key1(b, "UNLINK", x->sk.buf, x->sk.len);
    x->op.state = E_UNSTAGE;
    return cachet_cmds_send(b, out);
  }
  return cachet_op_done(out, rc);
}

static int entry_step1(cachet_op *op, const cachet_in *in, cachet_out *out);

/* Every end drops the near cache's copy: even a failed write may have
 * landed. */
static int entry_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  int rc = entry_step1(op, in, out);
  if (rc == CACHET_DO_DONE) {
    cachet_op_entry *x = (cachet_op_entry *)op;
    cachet_near_forget(op->c, x->vk.buf, x->vk.len);
  }
  return rc;
}

static int entry_step1(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_entry *x = (cachet_op_entry *)op;
  switch (op->state) {
  case E_START:
    return start(x, out);
  case E_PLAIN:
    return plain_reply(x, in, out);
  case E_STAGE: {
    int rc = cachet_res_ok(&in->res[0]);
    if (rc == CACHET_OK && in->res[0].reply->type != REDIS_REPLY_STATUS)
      rc = cachet_res_proto("staging SET");
    if (rc != CACHET_OK)
      return cachet_op_done(out, rc);
    return send_script(x, out);
  }
  case E_SCRIPT:
    return script_reply(x, in, out);
  default: /* E_UNSTAGE: the write's own failure, not the UNLINK's */
    return cachet_op_done(out, cachet_fail(x->failed, "%s", x->detail));
  }
}

static void entry_free(cachet_op *op) {
  cachet_op_entry *x = (cachet_op_entry *)op;
  for (size_t i = 0; i < x->ntags; i++)
    free(x->names[i]);
  free(x->names);
  free(x->blob);
  free(x->key);
  cachet_key_free(&x->vk);
  cachet_key_free(&x->mk);
  cachet_key_free(&x->sk);
  cachet_cmds_free(&op->cmds);
  memset(x, 0, sizeof *x);
}

static const cachet_op_kind entry_kind = {"entry", entry_step, entry_free, 1};

static int init(cachet_op_entry *x, cachet *c, int mode, const void *key,
                size_t keylen) {
  cachet_op_begin(&x->op, sizeof *x, &entry_kind, c);
  x->mode = mode;
  x->bucket = cachet_bucket(key, keylen);
  x->keylen = keylen;
  int rc = cachet_check_key(c, key, keylen);
  if (rc != CACHET_OK)
    return rc;
  if ((x->key = malloc(keylen > 0 ? keylen : 1)) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  else if ((rc = cachet_key_build(c, &x->vk, CACHET_KIND_VALUE, x->bucket, key,
                                  keylen)) == CACHET_OK)
    rc =
        cachet_key_build(c, &x->mk, CACHET_KIND_TAGSET, x->bucket, key, keylen);
  if (rc == CACHET_OK)
    memcpy(x->key, key, keylen);
  return rc;
}

int cachet_op_entry_write(cachet_op_entry *x, cachet *c, const void *key,
                          size_t keylen, const void *val, size_t len,
                          int64_t ttl_ms, const char *const *tags,
                          size_t ntags) {
  int rc = cachet_check_write(c, key, keylen, val, len, ttl_ms, tags, ntags);
  if (rc != CACHET_OK)
    return rc;
  if (val == NULL)
    val = "";
  rc = init(x, c, ENTRY_WRITE, key, keylen);
  for (size_t i = 0; rc == CACHET_OK && i < ntags; i++)
    rc = add_name(x, tags[i], strlen(tags[i]));
  x->nnew = x->ntags;
  x->ttl_ms = ttl_ms;
  int64_t now = cachet_now_ms();
  if (rc == CACHET_OK)
    rc = cachet_envelope_seal(c->keyring, c->cfg.encrypt, x->vk.buf, x->vk.len,
                              0, now, ttl_ms > 0 ? now + ttl_ms : 0, val, len,
                              &x->blob, &x->bloblen);
  if (rc == CACHET_OK && x->bloblen >= CACHET_STAGE_MIN) {
    rc = cachet_stage_key(c, x->bucket, key, keylen, &x->sk);
    x->staged = 1;
  }
  if (rc == CACHET_OK && (ntags > 0 || x->staged))
    x->prune_cap = cachet_prune_cap(c);
  if (rc != CACHET_OK)
    entry_free(&x->op);
  return rc;
}

int cachet_op_entry_delete(cachet_op_entry *x, cachet *c, const void *key,
                           size_t keylen) {
  int rc = init(x, c, ENTRY_DELETE, key, keylen);
  if (rc != CACHET_OK)
    entry_free(&x->op);
  return rc;
}

int cachet_op_entry_untag(cachet_op_entry *x, cachet *c, const void *key,
                          size_t keylen, const uint8_t *blob, size_t bloblen,
                          const redisReply *names) {
  int rc = init(x, c, ENTRY_UNTAG, key, keylen);
  if (rc == CACHET_OK && (x->blob = malloc(bloblen > 0 ? bloblen : 1)) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  if (rc == CACHET_OK) {
    memcpy(x->blob, blob, bloblen);
    x->bloblen = bloblen;
    if (names != NULL && names->type == REDIS_REPLY_ARRAY &&
        names->elements <= PLAIN_TAGS &&
        cachet_reply_tag_names(names, 0) == CACHET_OK)
      rc = learn(x, names, 0);
    cachet_error_clear();
  }
  if (rc != CACHET_OK)
    entry_free(&x->op);
  return rc;
}
