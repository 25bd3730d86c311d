/* The public core operations: get, set, set_tags, delete, exists, ttl,
 * inspect. Each borrows one pooled connection for the call. */
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "keys.h"
#include "link.h"
#include "op_entry.h"
#include "run.h"

int cachet_write_entry(cachet *c, const void *key, size_t keylen,
                       const void *val, size_t len, int64_t ttl_ms,
                       const char *const *tags, size_t ntags) {
  cachet_op_entry x;
  int rc =
      cachet_op_entry_write(&x, c, key, keylen, val, len, ttl_ms, tags, ntags);
  if (rc != CACHET_OK)
    return rc;
  rc = cachet_run(c, &x.op);
  x.op.k->free(&x.op);
  return rc;
}

int cachet_delete_entry(cachet *c, const void *key, size_t keylen) {
  cachet_op_entry x;
  int rc = cachet_op_entry_delete(&x, c, key, keylen);
  if (rc != CACHET_OK)
    return rc;
  rc = cachet_run(c, &x.op);
  x.op.k->free(&x.op);
  return rc;
}

/* Run one plain command against the value key of `key`. */
static int value_command(cachet *c, const char *cmd, const void *key,
                         size_t keylen, cachet_key *vk, redisReply **r) {
  int rc = cachet_check_key(c, key, keylen);
  if (rc != CACHET_OK)
    return rc;
  rc = cachet_key_build(c, vk, CACHET_KIND_VALUE, cachet_bucket(key, keylen),
                        key, keylen);
  if (rc != CACHET_OK)
    return rc;
  cachet_link *l;
  rc = cachet_link_acquire(c, &l);
  if (rc != CACHET_OK)
    return rc;
  const char *argv[2] = {cmd, vk->buf};
  size_t lens[2] = {strlen(cmd), vk->len};
  rc = cachet_link_command(l, 2, argv, lens, r);
  cachet_link_release(c, l);
  return rc;
}

static int unexpected(redisReply *r, const char *cmd) {
  int type = r->type;
  freeReplyObject(r);
  return cachet_fail(CACHET_EPROTO, "%s: unexpected reply type %d", cmd, type);
}

int cachet_get(cachet *c, const void *key, size_t keylen, void **val,
               size_t *len) {
  cachet_key vk = {0};
  redisReply *r = NULL;
  *val = NULL;
  *len = 0;
  cachet_error_clear();
  int rc = value_command(c, "GET", key, keylen, &vk, &r);
  if (rc == CACHET_OK) {
    if (r->type == REDIS_REPLY_NIL) {
      freeReplyObject(r);
      CACHET_COUNT(c, misses, 1);
      rc = CACHET_MISS;
    } else if (r->type == REDIS_REPLY_STRING) {
      /* Take the reply's own buffer (malloc'd by hiredis, len + 1 bytes)
       * instead of copying it. */
      char *blob = r->str;
      size_t bl = r->len;
      r->str = NULL;
      freeReplyObject(r);
      rc = cachet_entry_open(c, vk.buf, vk.len, blob, bl, val, len);
    } else {
      rc = unexpected(r, "GET");
    }
  }
  cachet_key_free(&vk);
  return cachet_result(c, rc);
}

int cachet_set_tags(cachet *c, const void *key, size_t keylen, const void *val,
                    size_t len, int64_t ttl_ms, const char *const *tags,
                    size_t ntags) {
  cachet_error_clear();
  int rc;
  if ((rc = cachet_check_key(c, key, keylen)) ||
      (rc = cachet_check_value(c, len, ttl_ms)) ||
      (rc = cachet_check_tags(c, tags, ntags)))
    return cachet_result(c, rc);
  if (val == NULL && len > 0)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL, "value is NULL but len is %zu", len));
  return cachet_result(c, cachet_write_entry(c, key, keylen,
                                             val == NULL ? "" : val, len,
                                             ttl_ms, tags, ntags));
}

int cachet_set(cachet *c, const void *key, size_t keylen, const void *val,
               size_t len, int64_t ttl_ms) {
  return cachet_set_tags(c, key, keylen, val, len, ttl_ms, NULL, 0);
}

int cachet_delete(cachet *c, const void *key, size_t keylen) {
  cachet_error_clear();
  int rc = cachet_check_key(c, key, keylen);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  return cachet_result(c, cachet_delete_entry(c, key, keylen));
}

int cachet_exists(cachet *c, const void *key, size_t keylen) {
  cachet_key vk = {0};
  redisReply *r = NULL;
  cachet_error_clear();
  int rc = value_command(c, "EXISTS", key, keylen, &vk, &r);
  if (rc == CACHET_OK) {
    if (r->type == REDIS_REPLY_INTEGER) {
      rc = r->integer > 0 ? CACHET_OK : CACHET_MISS;
      freeReplyObject(r);
    } else {
      rc = unexpected(r, "EXISTS");
    }
  }
  cachet_key_free(&vk);
  return cachet_result(c, rc);
}

int cachet_ttl(cachet *c, const void *key, size_t keylen, int64_t *ttl_ms) {
  cachet_key vk = {0};
  redisReply *r = NULL;
  cachet_error_clear();
  int rc = value_command(c, "PTTL", key, keylen, &vk, &r);
  if (rc == CACHET_OK) {
    if (r->type == REDIS_REPLY_INTEGER) {
      /* PTTL: -2 absent, -1 no expiry, else milliseconds left. */
      if (r->integer == -2) {
        rc = CACHET_MISS;
      } else {
        *ttl_ms = r->integer < 0 ? -1 : r->integer;
      }
      freeReplyObject(r);
    } else {
      rc = unexpected(r, "PTTL");
    }
  }
  cachet_key_free(&vk);
  return cachet_result(c, rc);
}

int cachet_value_key(const cachet *c, const void *key, size_t keylen,
                     char **out, size_t *outlen) {
  cachet_key vk = {0};
  *out = NULL;
  int rc = cachet_check_key(c, key, keylen);
  if (rc != CACHET_OK)
    return rc;
  rc = cachet_key_build(c, &vk, CACHET_KIND_VALUE, cachet_bucket(key, keylen),
                        key, keylen);
  if (rc != CACHET_OK)
    return rc;
  char *s = malloc(vk.len + 1);
  if (s == NULL) {
    cachet_key_free(&vk);
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  }
  memcpy(s, vk.buf, vk.len + 1);
  *out = s;
  *outlen = vk.len;
  cachet_key_free(&vk);
  return CACHET_OK;
}

int cachet_inspect_blob(cachet *c, const void *redis_key, size_t redis_keylen,
                        const void *blob, size_t bloblen,
                        cachet_envelope_info *info) {
  cachet_error_clear();
  memset(info, 0, sizeof *info);
  if (redis_key == NULL)
    redis_keylen = 0;
  return cachet_envelope_inspect(c != NULL ? c->keyring : NULL,
                                 redis_key == NULL ? "" : redis_key,
                                 redis_keylen, blob, bloblen, info);
}

int cachet_inspect(cachet *c, const void *key, size_t keylen,
                   cachet_envelope_info *info) {
  cachet_key vk = {0};
  redisReply *r = NULL;
  cachet_error_clear();
  memset(info, 0, sizeof *info);
  int rc = value_command(c, "GET", key, keylen, &vk, &r);
  if (rc == CACHET_OK) {
    if (r->type == REDIS_REPLY_NIL) {
      rc = CACHET_MISS;
      freeReplyObject(r);
    } else if (r->type == REDIS_REPLY_STRING) {
      rc = cachet_envelope_inspect(c->keyring, vk.buf, vk.len,
                                   (const uint8_t *)r->str, r->len, info);
      freeReplyObject(r);
    } else {
      rc = unexpected(r, "GET");
    }
  }
  cachet_key_free(&vk);
  return cachet_result(c, rc);
}
