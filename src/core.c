/* The public core operations: get, set, set_tags, delete, exists, ttl,
 * inspect, each one machine (op_key.c, op_entry.c) run on the calling
 * thread. */
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "keys.h"
#include "op_entry.h"
#include "op_key.h"
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

/* One read, run to its end; the caller takes the result, then frees x. */
static int run_key(cachet *c, cachet_op_key *x, int cmd, const void *key,
                   size_t keylen) {
  cachet_error_clear();
  int rc = cachet_op_key_init(x, c, cmd, key, keylen);
  if (rc == CACHET_OK)
    rc = cachet_run(c, &x->op);
  return cachet_result(c, rc);
}

int cachet_get(cachet *c, const void *key, size_t keylen, void **val,
               size_t *len) {
  cachet_op_key x;
  int rc = run_key(c, &x, CACHET_KEY_GET, key, keylen);
  *val = rc == CACHET_OK ? x.val : NULL;
  *len = rc == CACHET_OK ? x.len : 0;
  x.val = NULL;
  x.op.k->free(&x.op);
  return rc;
}

int cachet_set_tags(cachet *c, const void *key, size_t keylen, const void *val,
                    size_t len, int64_t ttl_ms, const char *const *tags,
                    size_t ntags) {
  cachet_error_clear();
  return cachet_result(
      c, cachet_write_entry(c, key, keylen, val, len, ttl_ms, tags, ntags));
}

int cachet_set(cachet *c, const void *key, size_t keylen, const void *val,
               size_t len, int64_t ttl_ms) {
  return cachet_set_tags(c, key, keylen, val, len, ttl_ms, NULL, 0);
}

int cachet_delete(cachet *c, const void *key, size_t keylen) {
  cachet_error_clear();
  return cachet_result(c, cachet_delete_entry(c, key, keylen));
}

int cachet_exists(cachet *c, const void *key, size_t keylen) {
  cachet_op_key x;
  int rc = run_key(c, &x, CACHET_KEY_EXISTS, key, keylen);
  x.op.k->free(&x.op);
  return rc;
}

int cachet_ttl(cachet *c, const void *key, size_t keylen, int64_t *ttl_ms) {
  cachet_op_key x;
  int rc = run_key(c, &x, CACHET_KEY_PTTL, key, keylen);
  if (rc == CACHET_OK)
    *ttl_ms = x.ttl_ms;
  x.op.k->free(&x.op);
  return rc;
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
  memset(info, 0, sizeof *info);
  cachet_op_key x;
  int rc = run_key(c, &x, CACHET_KEY_RAW, key, keylen);
  if (rc == CACHET_OK)
    rc =
        cachet_result(c, cachet_envelope_inspect(c->keyring, x.vk.buf, x.vk.len,
                                                 x.val, x.len, info));
  x.op.k->free(&x.op);
  return rc;
}
