/* Keyring: parse "ID:BASE64KEY[,...]" and find a key by id in O(1). */
#include "keyring.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "error.h"
#include "sodium_once.h"

/* A bound on the keyring keeps the lookup table a fixed size and the parse
 * cheap; rotation needs two or three keys, not hundreds. */
#define MAX_KEYS 64u
/* Power of two, at least twice MAX_KEYS, so linear probing stays short. */
#define TABLE_BITS 7u
#define TABLE_SIZE (1u << TABLE_BITS)

/* Ids and the table are not secret and live in ordinary memory; the key
 * bytes live in one sodium_malloc'd region (guard pages, mlock'd, zeroed by
 * sodium_free) that is read-only once parsed. */
/* Each entry's slice of the guarded region: the master key, then its
 * subkeys in purpose order. */
#define SLOT_KEYS 3u
#define SLOT_BYTES (SLOT_KEYS * CACHET_KEY_BYTES)
static const char KDF_CONTEXT[crypto_kdf_CONTEXTBYTES] = {'c', 'a', 'c', 'h',
                                                          'e', 't', 'v', '1'};

struct cachet_keyring {
  uint8_t *keys; /* n * SLOT_BYTES, entry order */
  size_t n;
  uint32_t ids[MAX_KEYS];
  uint32_t slot_id[TABLE_SIZE]; /* 0 = empty: id 0 is never valid */
  uint8_t slot_idx[TABLE_SIZE];
};

/* Fibonacci hashing: ids are often small and consecutive, and the golden
 * ratio multiplier spreads them over the top bits. */
static size_t slot_of(uint32_t id) {
  return (size_t)((id * UINT32_C(2654435769)) >> (32u - TABLE_BITS));
}

static int is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Parse a decimal id in 1..4294967295 with no sign and no leading zero, so
 * every id has exactly one spelling. */
static int parse_id(const char *s, size_t len, uint32_t *out) {
  if (len == 0 || len > 10 || (s[0] == '0' && len > 1))
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10u + (uint64_t)(s[i] - '0');
  }
  if (v > UINT32_MAX)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

/* Look up a slot: the index of `id`'s slot, or of the empty slot where it
 * would go. The table is never full (n <= MAX_KEYS < TABLE_SIZE). */
static size_t probe(const cachet_keyring *kr, uint32_t id) {
  size_t s = slot_of(id);
  while (kr->slot_id[s] != 0 && kr->slot_id[s] != id)
    s = (s + 1u) & (TABLE_SIZE - 1u);
  return s;
}

/* Decode one base64 key into `dst`: exactly 32 bytes, standard alphabet,
 * padded, nothing after it. */
static int decode_key(uint8_t dst[CACHET_KEY_BYTES], const char *b64,
                      size_t b64len) {
  size_t binlen = 0;
  const char *end = NULL;
  if (sodium_base642bin(dst, CACHET_KEY_BYTES, b64, b64len, NULL, &binlen, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != b64 + b64len || binlen != CACHET_KEY_BYTES)
    return -1;
  return 0;
}

/*
 * Check entry number `pos` (1-based, for messages) and record its id in
 * slot kr->n. The key is decoded into `scratch` only to validate it; the
 * caller decodes it again into guarded memory once every entry is valid,
 * so a bad keyring costs no sodium_malloc (about ten syscalls).
 */
static int parse_entry(cachet_keyring *kr, const char *e, size_t elen,
                       size_t pos, uint8_t scratch[CACHET_KEY_BYTES],
                       const char **b64, size_t *b64len) {
  const char *colon = memchr(e, ':', elen);
  if (colon == NULL)
    return cachet_fail(CACHET_ECONFIG,
                       "CACHET_KEYS entry %zu: expected ID:BASE64KEY", pos);
  uint32_t id;
  if (parse_id(e, (size_t)(colon - e), &id) != 0)
    return cachet_fail(CACHET_ECONFIG,
                       "CACHET_KEYS entry %zu: key id is not a decimal number "
                       "1-4294967295",
                       pos);
  if (id == 0)
    return cachet_fail(CACHET_ECONFIG,
                       "CACHET_KEYS entry %zu: key id 0 is reserved (ids are "
                       "1-4294967295)",
                       pos);
  size_t s = probe(kr, id);
  if (kr->slot_id[s] == id)
    return cachet_fail(CACHET_ECONFIG,
                       "CACHET_KEYS entry %zu: duplicate key id %u (also "
                       "entry %u)",
                       pos, (unsigned)id, (unsigned)kr->slot_idx[s] + 1u);
  *b64 = colon + 1;
  *b64len = elen - (size_t)(*b64 - e);
  if (decode_key(scratch, *b64, *b64len) != 0)
    return cachet_fail(CACHET_ECONFIG,
                       "CACHET_KEYS entry %zu: key is not 32 bytes of base64",
                       pos);
  /* A placeholder left in a template, never a key anyone generated. */
  if (sodium_is_zero(scratch, CACHET_KEY_BYTES))
    return cachet_fail(CACHET_ECONFIG,
                       "CACHET_KEYS entry %zu: the key is all zero bytes "
                       "(generate one with `cachet keygen`)",
                       pos);
  kr->ids[kr->n] = id;
  kr->slot_id[s] = id;
  kr->slot_idx[s] = (uint8_t)kr->n;
  kr->n++;
  return CACHET_OK;
}

int cachet_keyring_parse(const char *text, size_t len, cachet_keyring **out) {
  *out = NULL;
  int rc = cachet_sodium_init();
  if (rc != CACHET_OK)
    return rc;
  if (text == NULL)
    len = 0;

  /* Trim the whole text first, so "" and "\n" say "no keys" rather than
   * "entry 1 is empty". */
  size_t lo = 0, hi = len;
  while (lo < hi && is_space(text[lo]))
    lo++;
  while (hi > lo && is_space(text[hi - 1]))
    hi--;
  if (lo == hi)
    return cachet_fail(CACHET_ECONFIG, "CACHET_KEYS: no keys given");

  size_t n = 1;
  for (size_t i = lo; i < hi; i++)
    if (text[i] == ',')
      n++;
  if (n > MAX_KEYS)
    return cachet_fail(CACHET_ECONFIG,
                       "CACHET_KEYS: %zu entries, at most %u are allowed", n,
                       MAX_KEYS);

  cachet_keyring *kr = calloc(1, sizeof *kr);
  if (kr == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory parsing CACHET_KEYS");

  uint8_t scratch[CACHET_KEY_BYTES];
  const char *b64[MAX_KEYS];
  size_t b64len[MAX_KEYS];
  size_t start = lo;
  for (size_t pos = 1; pos <= n; pos++) {
    size_t stop = start;
    while (stop < hi && text[stop] != ',')
      stop++;
    size_t a = start, b = stop;
    while (a < b && is_space(text[a]))
      a++;
    while (b > a && is_space(text[b - 1]))
      b--;
    if (a == b) {
      rc = cachet_fail(CACHET_ECONFIG, "CACHET_KEYS entry %zu is empty", pos);
      goto fail;
    }
    rc = parse_entry(kr, text + a, b - a, pos, scratch, &b64[pos - 1],
                     &b64len[pos - 1]);
    if (rc != CACHET_OK)
      goto fail;
    start = stop + 1;
  }
  sodium_memzero(scratch, sizeof scratch);

  kr->keys = sodium_malloc(n * SLOT_BYTES);
  if (kr->keys == NULL) {
    rc = cachet_fail(CACHET_ENOMEM, "out of memory parsing CACHET_KEYS");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t *slot = kr->keys + i * SLOT_BYTES;
    if (decode_key(slot, b64[i], b64len[i]) != 0) {
      rc = cachet_fail(CACHET_EINTERNAL,
                       "CACHET_KEYS entry %zu: key decoded "
                       "once but not twice",
                       i + 1);
      goto fail;
    }
    crypto_kdf_derive_from_key(slot + CACHET_KEY_BYTES, CACHET_KEY_BYTES,
                               CACHET_SUBKEY_MAC, KDF_CONTEXT, slot);
    crypto_kdf_derive_from_key(slot + 2u * CACHET_KEY_BYTES, CACHET_KEY_BYTES,
                               CACHET_SUBKEY_AEAD, KDF_CONTEXT, slot);
  }
  /* Nothing writes the keys after this; a stray write now faults. */
  sodium_mprotect_readonly(kr->keys);
  *out = kr;
  return CACHET_OK;
fail:
  sodium_memzero(scratch, sizeof scratch);
  cachet_keyring_free(kr);
  return rc;
}

void cachet_keyring_free(cachet_keyring *kr) {
  if (kr == NULL)
    return;
  /* sodium_free makes the region writable again and zeroes it; NULL (a
   * parse that failed before allocating) is a no-op. */
  sodium_free(kr->keys);
  free(kr);
}

uint32_t cachet_keyring_active_id(const cachet_keyring *kr) {
  return kr != NULL && kr->n > 0 ? kr->ids[0] : 0;
}

const uint8_t *cachet_keyring_find(const cachet_keyring *kr, uint32_t id) {
  if (kr == NULL || id == 0)
    return NULL;
  size_t s = probe(kr, id);
  if (kr->slot_id[s] != id)
    return NULL;
  return kr->keys + (size_t)kr->slot_idx[s] * SLOT_BYTES;
}

const uint8_t *cachet_keyring_subkey(const cachet_keyring *kr, uint32_t id,
                                     unsigned purpose) {
  if (purpose != CACHET_SUBKEY_MAC && purpose != CACHET_SUBKEY_AEAD)
    return NULL;
  const uint8_t *master = cachet_keyring_find(kr, id);
  return master == NULL ? NULL : master + purpose * CACHET_KEY_BYTES;
}
