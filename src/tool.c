/* tool.h: the few internals cachet's own tools use. */
#include "tool.h"

#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "keys.h"

void cachet_tool_server_get(const cachet *c, cachet_tool_server *out) {
  const cachet_config *cfg = &c->cfg;
  *out = (cachet_tool_server){cfg->unix_path != NULL ? NULL : cfg->host,
                              cfg->port,
                              cfg->unix_path,
                              cfg->username,
                              cfg->password,
                              cfg->db,
                              cfg->timeout_ms,
                              cfg->tls,
                              cfg->tls_insecure};
}

int cachet_tool_sealed(const cachet *c) { return c->keyring != NULL; }

int cachet_tool_fence_key(const cachet *c, const char *name, char **out,
                          size_t *outlen) {
  cachet_key k = {0};
  size_t len = strlen(name);
  *out = NULL;
  int rc = cachet_check_key(c, name, len);
  if (rc == CACHET_OK)
    rc = cachet_key_build(c, &k, CACHET_KIND_FENCE, cachet_bucket(name, len),
                          name, len);
  if (rc == CACHET_OK && (*out = malloc(k.len + 1)) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  if (rc == CACHET_OK) {
    memcpy(*out, k.buf, k.len + 1);
    *outlen = k.len;
  }
  cachet_key_free(&k);
  return rc;
}

unsigned cachet_tool_bucket(const void *key, size_t keylen) {
  return cachet_bucket(key, keylen);
}

int cachet_tool_check_entry(const cachet *c, const cachet_entry *e) {
  return cachet_check_write(c, e->key, e->keylen, e->val, e->len, e->ttl_ms,
                            e->tags, e->ntags);
}

int cachet_tool_seal_open(const cachet *c, const char *redis_key,
                          const void *val, size_t len) {
  uint8_t *blob = NULL;
  size_t blen = 0, off = 0, plen = 0;
  size_t klen = strlen(redis_key);
  int64_t now = cachet_now_ms();
  int rc = cachet_envelope_seal(c->keyring, 0, redis_key, klen, 0, now, 0, val,
                                len, &blob, &blen);
  if (rc == CACHET_OK)
    rc = cachet_envelope_open(c->keyring, 0, redis_key, klen, blob, blen, now,
                              NULL, &off, &plen);
  free(blob);
  return rc;
}
