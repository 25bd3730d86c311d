/* An entry's checks, its staging key and its opening: what the entry
 * machine (op_entry.c), the batches and the reads share. */
#include "entry.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "error.h"
#include "keys.h"

const char *cachet_prune_cap(cachet *c) {
  uint64_t n =
      atomic_fetch_add_explicit(&c->write_seq, 1, memory_order_relaxed);
  return n % 8 == 0 ? "64" : "0";
}

int cachet_check_key(const cachet *c, const void *key, size_t keylen) {
  if (key == NULL || keylen == 0)
    return cachet_fail(CACHET_EINVAL, "key must not be empty");
  if (keylen > c->cfg.max_key_size)
    return cachet_fail(CACHET_EINVAL,
                       "key of %zu bytes exceeds max_key_size "
                       "(%zu)",
                       keylen, c->cfg.max_key_size);
  return CACHET_OK;
}

int cachet_check_tag_names(const cachet *c, const char *const *tags,
                           size_t ntags) {
  if (ntags > 0 && tags == NULL)
    return cachet_fail(CACHET_EINVAL, "tags is NULL but ntags is %zu", ntags);
  for (size_t i = 0; i < ntags; i++) {
    if (tags[i] == NULL || tags[i][0] == '\0')
      return cachet_fail(CACHET_EINVAL, "tag %zu is empty", i + 1);
    if (strlen(tags[i]) > c->cfg.max_key_size)
      return cachet_fail(CACHET_EINVAL, "tag %zu exceeds max_key_size", i + 1);
  }
  return CACHET_OK;
}

int cachet_check_tags(const cachet *c, const char *const *tags, size_t ntags) {
  if (ntags > c->cfg.max_tags && tags != NULL)
    return cachet_fail(CACHET_EINVAL, "%zu tags exceed max_tags (%zu)", ntags,
                       c->cfg.max_tags);
  return cachet_check_tag_names(c, tags, ntags);
}

int cachet_check_value(const cachet *c, size_t len, int64_t ttl_ms) {
  if (ttl_ms < 0)
    return cachet_fail(CACHET_EINVAL,
                       "ttl %lld ms is negative (0 means no expiry)",
                       (long long)ttl_ms);
  if (ttl_ms > CACHET_TTL_MAX_MS)
    return cachet_fail(CACHET_EINVAL,
                       "ttl %lld ms exceeds the maximum (100 years)",
                       (long long)ttl_ms);
  if (len > c->cfg.max_value_size)
    return cachet_fail(CACHET_EINVAL,
                       "value of %zu bytes exceeds max_value_size (%zu)", len,
                       c->cfg.max_value_size);
  return CACHET_OK;
}

int cachet_check_write(const cachet *c, const void *key, size_t keylen,
                       const void *val, size_t len, int64_t ttl_ms,
                       const char *const *tags, size_t ntags) {
  int rc;
  if ((rc = cachet_check_key(c, key, keylen)) ||
      (rc = cachet_check_value(c, len, ttl_ms)) ||
      (rc = cachet_check_tags(c, tags, ntags)))
    return rc;
  if (val == NULL && len > 0)
    return cachet_fail(CACHET_EINVAL, "value is NULL but len is %zu", len);
  return CACHET_OK;
}

int cachet_check_batch(const cachet *c, const cachet_entry *entries, size_t n,
                       int write) {
  if (n > 0 && entries == NULL)
    return cachet_fail(CACHET_EINVAL, "entries is NULL but n is %zu", n);
  for (size_t i = 0; i < n; i++) {
    const cachet_entry *e = &entries[i];
    int rc = write ? cachet_check_write(c, e->key, e->keylen, e->val, e->len,
                                        e->ttl_ms, e->tags, e->ntags)
                   : cachet_check_key(c, e->key, e->keylen);
    if (rc != CACHET_OK) {
      char detail[400];
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      return cachet_fail(rc, "entry %zu: %s (nothing was %s)", i, detail,
                         write ? "written" : "read");
    }
  }
  return CACHET_OK;
}

/* Staged values live this long if the write never completes. */
#define STAGE_TTL_MS "60000"

int cachet_stage_key(const cachet *c, unsigned bucket, const void *key,
                     size_t keylen, cachet_key *sk) {
  unsigned char rnd[8];
  char *name = malloc(2 * sizeof rnd + 1 + keylen);
  if (name == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  randombytes_buf(rnd, sizeof rnd);
  sodium_bin2hex(name, 2 * sizeof rnd + 1, rnd, sizeof rnd);
  name[2 * sizeof rnd] = ':';
  memcpy(name + 2 * sizeof rnd + 1, key, keylen);
  int rc = cachet_key_build(c, sk, CACHET_KIND_STAGED, bucket, name,
                            2 * sizeof rnd + 1 + keylen);
  free(name);
  return rc;
}

void cachet_stage_command(const cachet_key *sk, const uint8_t *blob,
                          size_t bloblen, const char *argv[5], size_t lens[5]) {
  argv[0] = "SET", lens[0] = 3;
  argv[1] = sk->buf, lens[1] = sk->len;
  argv[2] = (const char *)blob, lens[2] = bloblen;
  argv[3] = "PX", lens[3] = 2;
  argv[4] = STAGE_TTL_MS, lens[4] = strlen(STAGE_TTL_MS);
}

int cachet_entry_open(cachet *c, const char *rkey, size_t rkeylen, char *blob,
                      size_t len, void **val, size_t *outlen,
                      int64_t *expires_ms) {
  size_t off = 0, plen = 0;
  cachet_envelope_info info;
  int rc = cachet_envelope_open(c->keyring, c->cfg.accept_unsealed, rkey,
                                rkeylen, (uint8_t *)blob, len, cachet_now_ms(),
                                &info, &off, &plen);
  if (rc == CACHET_OK && plen > c->cfg.max_value_size) {
    /* Written by a client that accepts more, or by the server itself: this
     * handle promised its caller no value above the limit. */
    free(blob);
    return cachet_fail(CACHET_EPROTO,
                       "the server holds a value of %zu bytes, above "
                       "max_value_size (%zu)",
                       plen, c->cfg.max_value_size);
  }
  if (rc == CACHET_OK) {
    memmove(blob, blob + off, plen);
    blob[plen] = '\0';
    *val = blob;
    *outlen = plen;
    if (expires_ms != NULL)
      *expires_ms = info.expires_ms;
    CACHET_COUNT(c, hits, 1);
    return CACHET_OK;
  }
  free(blob);
  if (rc == CACHET_MISS) {
    CACHET_COUNT(c, misses, 1);
    CACHET_COUNT(c, expired_envelopes, 1);
  }
  return rc;
}
