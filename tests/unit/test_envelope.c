/* Value envelope v1: golden vectors from docs/FORMAT.md, strict decoding,
 * tamper and truncation resistance, key binding, expiry and rotation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cachet.h"
#include "envelope.h"
#include "keyring.h"

/* ---- Golden data: docs/FORMAT.md section "Test vectors". These bytes are
 * the v1 format; they never change, even when v2 exists. ---- */

/* K1 = 00 01 .. 1f, K2 = 80 81 .. 9f. */
#define K1_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2_B64 "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8="
#define RING_1 "1:" K1_B64
#define RING_2_1 "2:" K2_B64 ",1:" K1_B64
#define RKEY "cachet:v:user:42"
#define CREATED INT64_C(1700000000000)
#define EXPIRES INT64_C(1700000060000)

typedef struct vector {
  const char *name;
  const char *ring; /* NULL: unsealed */
  int encrypt;
  uint32_t content_type;
  int64_t expires_ms;
  const char *payload;
  unsigned flags;
  uint32_t key_id;
  const char *hex;
} vector;

static const vector VECTORS[] = {
    {"V1 plain, no expiry", NULL, 0, 0, 0, "hello, cachet", 0x00, 0,
     "c4c7e51a0100000000000068e5cf8b0100000000000000000000000000000d00"
     "000068656c6c6f2c20636163686574"},
    {"V2 plain, expiry, content type 1", NULL, 0, 1, EXPIRES, "{\"id\":42}",
     0x00, 0,
     "c4c7e51a0100000000000068e5cf8b0100006052e6cf8b010000010000000900"
     "00007b226964223a34327d"},
    {"V3 MAC, key 1, no expiry", RING_1, 0, 0, 0, "hello, cachet", 0x01, 1,
     "c4c7e51a0101010000000068e5cf8b0100000000000000000000000000000d00"
     "000068656c6c6f2c20636163686574888c813d89ffb1804ac097c8f778463d01"
     "f068f89315cb937c9c43ca389e7d65"},
    {"V4 MAC, key 2, expiry, content type 7", RING_2_1, 0, 7, EXPIRES,
     "{\"id\":42}", 0x01, 2,
     "c4c7e51a0101020000000068e5cf8b0100006052e6cf8b010000070000000900"
     "00007b226964223a34327d35d408bc3f8d48f70601f5c3924536ef5c1e9d4b0a"
     "83314340a01adc2a036901"},
    {"V5 encrypted, key 1, no expiry", RING_1, 1, 0, 0, "hello, cachet", 0x03,
     1,
     "c4c7e51a0103010000000068e5cf8b0100000000000000000000000000000d00"
     "0000404142434445464748494a4b4c4d4e4f5051525354555657e166fff96376"
     "c28205dbb993bda32bc011906320f6f0cfb9a62792a873"},
    {"V6 encrypted, key 2, expiry, content type 0x12345678", RING_2_1, 1,
     0x12345678u, EXPIRES, "secret", 0x03, 2,
     "c4c7e51a0103020000000068e5cf8b0100006052e6cf8b010000785634120600"
     "0000404142434445464748494a4b4c4d4e4f50515253545556577ecb74f925d5"
     "7c8fd6ff59b4b00491bc4f7d480341e8"},
    {"V7 MAC, key 1, empty payload", RING_1, 0, 0, 0, "", 0x01, 1,
     "c4c7e51a0101010000000068e5cf8b0100000000000000000000000000000000"
     "0000f71ef70364611755e8b73ca8b6128d612aeba8e51ea25132d2fd03657216"
     "379b"},
};
#define NVECTORS (sizeof VECTORS / sizeof VECTORS[0])

/* The vectors' nonce: 40 41 .. 57. */
static void vector_nonce(uint8_t n[CACHET_ENVELOPE_NONCE_BYTES]) {
  for (unsigned i = 0; i < CACHET_ENVELOPE_NONCE_BYTES; i++)
    n[i] = (uint8_t)(0x40 + i);
}

/* ---- Helpers ---- */

static uint8_t *unhex(const char *hex, size_t *len) {
  size_t n = strlen(hex) / 2;
  uint8_t *b = malloc(n + 1);
  assert_non_null(b);
  size_t got = 0;
  assert_int_equal(sodium_hex2bin(b, n, hex, strlen(hex), NULL, &got, NULL), 0);
  assert_int_equal(got, n);
  *len = n;
  return b;
}

static cachet_keyring *ring(const char *text) {
  cachet_keyring *kr = NULL;
  if (text == NULL)
    return NULL;
  assert_int_equal(cachet_keyring_parse(text, strlen(text), &kr), CACHET_OK);
  return kr;
}

/* Open a private copy, because open decrypts in place. */
static int open_copy(const cachet_keyring *kr, int accept_unsealed,
                     const char *rkey, const uint8_t *blob, size_t len,
                     int64_t now, cachet_envelope_info *info, uint8_t **payload,
                     size_t *plen) {
  uint8_t *copy = malloc(len ? len : 1);
  assert_non_null(copy);
  if (len)
    memcpy(copy, blob, len);
  size_t off = 99, pl = 99;
  int rc = cachet_envelope_open(kr, accept_unsealed, rkey, strlen(rkey), copy,
                                len, now, info, &off, &pl);
  if (rc == CACHET_OK) {
    assert_true(off <= len && pl <= len - off);
    if (payload != NULL) {
      *payload = malloc(pl + 1);
      assert_non_null(*payload);
      memcpy(*payload, copy + off, pl);
      *plen = pl;
    }
  } else {
    /* Out-parameters are cleared on anything but success. */
    assert_int_equal(off, 0);
    assert_int_equal(pl, 0);
  }
  free(copy);
  return rc;
}

static uint8_t *seal_vector(const vector *v, cachet_keyring *kr, size_t *len) {
  uint8_t nonce[CACHET_ENVELOPE_NONCE_BYTES];
  uint8_t *out = NULL;
  vector_nonce(nonce);
  assert_int_equal(cachet_envelope_seal_nonce(
                       kr, v->encrypt, RKEY, strlen(RKEY), v->content_type,
                       CREATED, v->expires_ms, v->payload, strlen(v->payload),
                       nonce, &out, len),
                   CACHET_OK);
  return out;
}

/* A fresh sealed blob under RING_1 (MAC or encrypted) with a payload long
 * enough to span several blocks. */
static uint8_t *sealed_blob(int encrypt, size_t *len, cachet_keyring **kr) {
  static const char payload[] = "the quick brown fox jumps over the lazy dog";
  uint8_t *out = NULL;
  *kr = ring(RING_1);
  assert_int_equal(cachet_envelope_seal(*kr, encrypt, RKEY, strlen(RKEY), 5,
                                        CREATED, EXPIRES, payload,
                                        sizeof payload - 1, &out, len),
                   CACHET_OK);
  return out;
}

/* ---- Golden vectors ---- */

static void test_vectors_encode_to_golden_bytes(void **state) {
  (void)state;
  for (size_t i = 0; i < NVECTORS; i++) {
    const vector *v = &VECTORS[i];
    cachet_keyring *kr = ring(v->ring);
    size_t len, glen;
    uint8_t *out = seal_vector(v, kr, &len);
    uint8_t *gold = unhex(v->hex, &glen);
    if (len != glen || memcmp(out, gold, len) != 0)
      fail_msg("%s: encoding differs from the golden vector", v->name);
    free(gold);
    free(out);
    cachet_keyring_free(kr);
  }
}

static void test_vectors_decode_to_golden_fields(void **state) {
  (void)state;
  for (size_t i = 0; i < NVECTORS; i++) {
    const vector *v = &VECTORS[i];
    cachet_keyring *kr = ring(v->ring);
    size_t len, plen = 0;
    uint8_t *gold = unhex(v->hex, &len);
    uint8_t *payload = NULL;
    cachet_envelope_info info;
    int rc = open_copy(kr, 0, RKEY, gold, len, CREATED, &info, &payload, &plen);
    if (rc != CACHET_OK)
      fail_msg("%s: open returned %s (%s)", v->name, cachet_status_name(rc),
               cachet_last_error());
    assert_int_equal(plen, strlen(v->payload));
    assert_memory_equal(payload, v->payload, plen);
    assert_int_equal(info.version, 1);
    assert_int_equal(info.flags, v->flags);
    assert_int_equal(info.key_id, v->key_id);
    assert_int_equal(info.created_ms, CREATED);
    assert_int_equal(info.expires_ms, v->expires_ms);
    assert_int_equal(info.content_type, v->content_type);
    assert_int_equal(info.payload_len, strlen(v->payload));
    assert_int_equal(info.mac_status,
                     v->ring ? CACHET_MAC_OK : CACHET_MAC_NONE);
    free(payload);
    free(gold);
    cachet_keyring_free(kr);
  }
}

static void test_vectors_open_with_rotated_keyring_by_id(void **state) {
  (void)state;
  /* A keyring holding both keys, in either order, opens every sealed
   * vector: the id in the envelope selects the key, not the position. */
  const char *rings[] = {RING_2_1, "1:" K1_B64 ",2:" K2_B64};
  for (size_t r = 0; r < 2; r++) {
    cachet_keyring *kr = ring(rings[r]);
    for (size_t i = 0; i < NVECTORS; i++) {
      if (VECTORS[i].ring == NULL)
        continue;
      size_t len;
      uint8_t *gold = unhex(VECTORS[i].hex, &len);
      assert_int_equal(
          open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
          CACHET_OK);
      free(gold);
    }
    cachet_keyring_free(kr);
  }
}

/* ---- Tampering, truncation, trailing bytes ---- */

static void flip_every_bit(int encrypt) {
  cachet_keyring *kr;
  size_t len;
  uint8_t *blob = sealed_blob(encrypt, &len, &kr);
  assert_int_equal(open_copy(kr, 0, RKEY, blob, len, CREATED, NULL, NULL, NULL),
                   CACHET_OK);
  for (size_t i = 0; i < len; i++) {
    for (unsigned bit = 0; bit < 8; bit++) {
      blob[i] ^= (uint8_t)(1u << bit);
      int rc = open_copy(kr, 0, RKEY, blob, len, CREATED, NULL, NULL, NULL);
      if (rc >= 0)
        fail_msg("flipping bit %u of byte %zu was accepted (%s)", bit, i,
                 cachet_status_name(rc));
      blob[i] ^= (uint8_t)(1u << bit);
    }
  }
  free(blob);
  cachet_keyring_free(kr);
}

static void test_open_rejects_every_bit_flip_of_mac_blob(void **state) {
  (void)state;
  flip_every_bit(0);
}

static void test_open_rejects_every_bit_flip_of_encrypted_blob(void **state) {
  (void)state;
  flip_every_bit(1);
}

static void
test_open_rejects_bit_flips_in_payload_tag_as_integrity(void **state) {
  (void)state;
  /* Past the header the frame's shape does not change, so the only thing
   * left to object is the MAC or the AEAD tag. */
  for (int enc = 0; enc <= 1; enc++) {
    cachet_keyring *kr;
    size_t len;
    uint8_t *blob = sealed_blob(enc, &len, &kr);
    for (size_t i = CACHET_ENVELOPE_HEADER_BYTES; i < len; i++) {
      blob[i] ^= 0x80;
      assert_int_equal(
          open_copy(kr, 0, RKEY, blob, len, CREATED, NULL, NULL, NULL),
          CACHET_EINTEGRITY);
      blob[i] ^= 0x80;
    }
    /* Header fields that keep the frame well-formed are MAC'd too. */
    const size_t covered[] = {10, 17, 18, 25, 26, 29};
    for (size_t j = 0; j < sizeof covered / sizeof covered[0]; j++) {
      blob[covered[j]] ^= 0x01;
      assert_int_equal(
          open_copy(kr, 0, RKEY, blob, len, CREATED, NULL, NULL, NULL),
          CACHET_EINTEGRITY);
      blob[covered[j]] ^= 0x01;
    }
    free(blob);
    cachet_keyring_free(kr);
  }
}

static void test_open_rejects_every_truncation(void **state) {
  (void)state;
  for (size_t v = 0; v < NVECTORS; v++) {
    cachet_keyring *kr = ring(VECTORS[v].ring);
    size_t len;
    uint8_t *gold = unhex(VECTORS[v].hex, &len);
    for (size_t n = 0; n < len; n++) {
      int rc = open_copy(kr, 0, RKEY, gold, n, CREATED, NULL, NULL, NULL);
      if (rc != CACHET_ECORRUPT)
        fail_msg("%s cut to %zu bytes gave %s", VECTORS[v].name, n,
                 cachet_status_name(rc));
    }
    free(gold);
    cachet_keyring_free(kr);
  }
}

static void test_open_rejects_trailing_byte(void **state) {
  (void)state;
  for (size_t v = 0; v < NVECTORS; v++) {
    cachet_keyring *kr = ring(VECTORS[v].ring);
    size_t len;
    uint8_t *gold = unhex(VECTORS[v].hex, &len);
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, gold, len);
    longer[len] = 0;
    assert_int_equal(
        open_copy(kr, 0, RKEY, longer, len + 1, CREATED, NULL, NULL, NULL),
        CACHET_ECORRUPT);
    assert_non_null(strstr(cachet_last_error(), "trailing"));
    free(longer);
    free(gold);
    cachet_keyring_free(kr);
  }
}

static void test_open_rejects_empty_and_bad_magic(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[0].hex, &len);
  uint8_t empty = 0;
  assert_int_equal(
      open_copy(NULL, 0, RKEY, &empty, 0, CREATED, NULL, NULL, NULL),
      CACHET_ECORRUPT);
  for (size_t i = 0; i < 4; i++) {
    gold[i] ^= 0x20;
    assert_int_equal(
        open_copy(NULL, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
        CACHET_ECORRUPT);
    assert_non_null(strstr(cachet_last_error(), "magic"));
    gold[i] ^= 0x20;
  }
  /* A value some other client wrote as plain text. */
  const char *text = "hello, cachet, this is plain text and not an envelope";
  assert_int_equal(open_copy(NULL, 0, RKEY, (const uint8_t *)text, strlen(text),
                             CREATED, NULL, NULL, NULL),
                   CACHET_ECORRUPT);
  free(gold);
}

/* ---- Version and flags ---- */

static void test_open_unknown_version_is_eversion(void **state) {
  (void)state;
  const unsigned versions[] = {2, 3, 255};
  for (size_t i = 0; i < 3; i++) {
    size_t len;
    uint8_t *gold = unhex(VECTORS[2].hex, &len);
    gold[4] = (uint8_t)versions[i];
    cachet_keyring *kr = ring(RING_1);
    assert_int_equal(
        open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
        CACHET_EVERSION);
    char want[80];
    snprintf(want, sizeof want,
             "value written by a newer cachet (format version %u)",
             versions[i]);
    assert_string_equal(cachet_last_error(), want);
    /* A newer version may have a shorter header: the version alone must
     * decide, before any length check. */
    assert_int_equal(open_copy(kr, 0, RKEY, gold, 5, CREATED, NULL, NULL, NULL),
                     CACHET_EVERSION);
    cachet_envelope_info info;
    assert_int_equal(
        cachet_envelope_inspect(kr, RKEY, strlen(RKEY), gold, len, &info),
        CACHET_EVERSION);
    assert_int_equal(info.version, versions[i]);
    cachet_keyring_free(kr);
    free(gold);
  }
}

static void test_open_version_zero_is_corrupt(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[0].hex, &len);
  gold[4] = 0;
  assert_int_equal(
      open_copy(NULL, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
      CACHET_ECORRUPT);
  free(gold);
}

static void test_open_reserved_flag_is_corrupt(void **state) {
  (void)state;
  /* On the plain vector, so no MAC stands between the flag and the
   * check; and on a sealed one, where it must fail before the MAC. */
  const size_t which[] = {0, 2, 4};
  for (size_t w = 0; w < 3; w++) {
    const vector *v = &VECTORS[which[w]];
    cachet_keyring *kr = ring(v->ring);
    size_t len;
    uint8_t *gold = unhex(v->hex, &len);
    for (unsigned bit = 2; bit < 8; bit++) {
      gold[5] ^= (uint8_t)(1u << bit);
      assert_int_equal(
          open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
          CACHET_ECORRUPT);
      assert_non_null(strstr(cachet_last_error(), "reserved flag"));
      gold[5] ^= (uint8_t)(1u << bit);
    }
    free(gold);
    cachet_keyring_free(kr);
  }
}

static void test_open_encrypted_flag_without_mac_flag_is_corrupt(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[4].hex, &len);
  cachet_keyring *kr = ring(RING_1);
  gold[5] = CACHET_ENV_F_ENCRYPTED;
  assert_int_equal(open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
                   CACHET_ECORRUPT);
  cachet_keyring_free(kr);
  free(gold);
}

static void test_open_key_id_must_match_sealing(void **state) {
  (void)state;
  size_t len;
  /* Unsealed with a key id. */
  uint8_t *gold = unhex(VECTORS[0].hex, &len);
  gold[6] = 1;
  assert_int_equal(
      open_copy(NULL, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
      CACHET_ECORRUPT);
  free(gold);
  /* Sealed with key id 0. */
  gold = unhex(VECTORS[2].hex, &len);
  cachet_keyring *kr = ring(RING_1);
  gold[6] = 0;
  assert_int_equal(open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
                   CACHET_ECORRUPT);
  cachet_keyring_free(kr);
  free(gold);
}

static void test_open_negative_times_are_corrupt(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[1].hex, &len);
  gold[17] = 0x80; /* created-at's top byte */
  assert_int_equal(
      open_copy(NULL, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
      CACHET_ECORRUPT);
  gold[17] = 0x00;
  gold[25] = 0xff; /* expires-at's top byte */
  assert_int_equal(
      open_copy(NULL, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
      CACHET_ECORRUPT);
  free(gold);
}

static void test_open_payload_length_overflow_is_corrupt(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[2].hex, &len);
  cachet_keyring *kr = ring(RING_1);
  const uint32_t lens[] = {0xffffffffu, 0xffffffe0u, 0x80000000u, 14, 12};
  for (size_t i = 0; i < 5; i++) {
    gold[30] = (uint8_t)lens[i];
    gold[31] = (uint8_t)(lens[i] >> 8);
    gold[32] = (uint8_t)(lens[i] >> 16);
    gold[33] = (uint8_t)(lens[i] >> 24);
    assert_int_equal(
        open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
        CACHET_ECORRUPT);
  }
  cachet_keyring_free(kr);
  free(gold);
}

/* ---- Keyring policy, key binding, rotation ---- */

static void test_open_under_other_key_name_fails(void **state) {
  (void)state;
  for (int enc = 0; enc <= 1; enc++) {
    cachet_keyring *kr;
    size_t len;
    uint8_t *blob = sealed_blob(enc, &len, &kr);
    assert_int_equal(
        open_copy(kr, 0, RKEY, blob, len, CREATED, NULL, NULL, NULL),
        CACHET_OK);
    const char *others[] = {"cachet:v:user:43", "cachet:v:user:4",
                            "cachet:v:user:42 ", ""};
    for (size_t i = 0; i < 4; i++)
      assert_int_equal(
          open_copy(kr, 0, others[i], blob, len, CREATED, NULL, NULL, NULL),
          CACHET_EINTEGRITY);
    free(blob);
    cachet_keyring_free(kr);
  }
}

static void test_open_sealed_blob_without_keyring_is_integrity(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[3].hex, &len);
  assert_int_equal(
      open_copy(NULL, 1, RKEY, gold, len, CREATED, NULL, NULL, NULL),
      CACHET_EINTEGRITY);
  assert_non_null(strstr(cachet_last_error(), "no keyring"));
  free(gold);
}

static void
test_open_unsealed_blob_with_keyring_needs_accept_unsealed(void **state) {
  (void)state;
  size_t len, plen;
  uint8_t *gold = unhex(VECTORS[0].hex, &len);
  uint8_t *payload = NULL;
  cachet_keyring *kr = ring(RING_1);
  assert_int_equal(open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
                   CACHET_EINTEGRITY);
  cachet_envelope_info info;
  assert_int_equal(
      open_copy(kr, 1, RKEY, gold, len, CREATED, &info, &payload, &plen),
      CACHET_OK);
  assert_int_equal(info.mac_status, CACHET_MAC_NONE);
  assert_int_equal(plen, 13);
  assert_memory_equal(payload, "hello, cachet", 13);
  free(payload);
  cachet_keyring_free(kr);
  free(gold);
}

static void test_open_unknown_key_id_names_the_id(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[5].hex, &len); /* key 2, encrypted */
  cachet_keyring *kr = ring(RING_1);
  assert_int_equal(open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
                   CACHET_EINTEGRITY);
  assert_non_null(strstr(cachet_last_error(), "key id 2"));
  assert_null(strstr(cachet_last_error(), K1_B64));
  cachet_keyring_free(kr);
  free(gold);
}

static void
test_rotation_new_key_readable_only_by_rings_that_hold_it(void **state) {
  (void)state;
  for (int enc = 0; enc <= 1; enc++) {
    cachet_keyring *writer = ring("2:" K2_B64);
    cachet_keyring *both = ring(RING_2_1);
    cachet_keyring *old = ring(RING_1);
    uint8_t *blob = NULL, *payload = NULL;
    size_t len, plen;
    assert_int_equal(cachet_envelope_seal(writer, enc, RKEY, strlen(RKEY), 0,
                                          CREATED, 0, "rotated", 7, &blob,
                                          &len),
                     CACHET_OK);
    cachet_envelope_info info;
    assert_int_equal(
        open_copy(both, 0, RKEY, blob, len, CREATED, &info, &payload, &plen),
        CACHET_OK);
    assert_int_equal(info.key_id, 2);
    assert_int_equal(plen, 7);
    assert_memory_equal(payload, "rotated", 7);
    assert_int_equal(
        open_copy(old, 0, RKEY, blob, len, CREATED, NULL, NULL, NULL),
        CACHET_EINTEGRITY);
    /* The old key's values stay readable under the new ring. */
    free(blob);
    assert_int_equal(cachet_envelope_seal(old, enc, RKEY, strlen(RKEY), 0,
                                          CREATED, 0, "old", 3, &blob, &len),
                     CACHET_OK);
    assert_int_equal(
        open_copy(both, 0, RKEY, blob, len, CREATED, NULL, NULL, NULL),
        CACHET_OK);
    free(payload);
    free(blob);
    cachet_keyring_free(writer);
    cachet_keyring_free(both);
    cachet_keyring_free(old);
  }
}

static void test_same_key_bytes_under_other_id_fail(void **state) {
  (void)state;
  /* The id is MAC'd: a blob relabelled with another id that maps to the
   * same key bytes still fails. */
  cachet_keyring *kr = ring("1:" K1_B64 ",3:" K1_B64);
  size_t len;
  uint8_t *gold = unhex(VECTORS[2].hex, &len);
  gold[6] = 3;
  assert_int_equal(open_copy(kr, 0, RKEY, gold, len, CREATED, NULL, NULL, NULL),
                   CACHET_EINTEGRITY);
  cachet_keyring_free(kr);
  free(gold);
}

/* ---- Expiry ---- */

static void test_open_expired_blob_is_miss(void **state) {
  (void)state;
  for (size_t v = 0; v < NVECTORS; v++) {
    if (VECTORS[v].expires_ms == 0)
      continue;
    cachet_keyring *kr = ring(VECTORS[v].ring);
    size_t len;
    uint8_t *gold = unhex(VECTORS[v].hex, &len);
    cachet_envelope_info info;
    assert_int_equal(
        open_copy(kr, 0, RKEY, gold, len, EXPIRES - 1, NULL, NULL, NULL),
        CACHET_OK);
    assert_int_equal(
        open_copy(kr, 0, RKEY, gold, len, EXPIRES, &info, NULL, NULL),
        CACHET_MISS);
    assert_int_equal(info.expires_ms, EXPIRES);
    assert_int_equal(
        open_copy(kr, 0, RKEY, gold, len, INT64_MAX, NULL, NULL, NULL),
        CACHET_MISS);
    free(gold);
    cachet_keyring_free(kr);
  }
}

static void test_open_no_expiry_never_misses(void **state) {
  (void)state;
  size_t len;
  uint8_t *gold = unhex(VECTORS[0].hex, &len);
  assert_int_equal(
      open_copy(NULL, 0, RKEY, gold, len, INT64_MAX, NULL, NULL, NULL),
      CACHET_OK);
  free(gold);
}

static void test_open_expired_but_tampered_is_integrity_not_miss(void **state) {
  (void)state;
  /* Expiry is only believed after the MAC: a forged expiry must not turn
   * an attack into a quiet miss. */
  size_t len;
  uint8_t *gold = unhex(VECTORS[3].hex, &len);
  cachet_keyring *kr = ring(RING_2_1);
  gold[len - 1] ^= 1;
  assert_int_equal(
      open_copy(kr, 0, RKEY, gold, len, INT64_MAX, NULL, NULL, NULL),
      CACHET_EINTEGRITY);
  cachet_keyring_free(kr);
  free(gold);
}

/* ---- Sealing ---- */

static void test_seal_roundtrips_sizes_and_modes(void **state) {
  (void)state;
  const size_t sizes[] = {0, 1, 15, 16, 17, 100, 1024, 65536, 1 << 20};
  cachet_keyring *kr = ring(RING_2_1);
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    uint8_t *payload = malloc(sizes[s] + 1);
    assert_non_null(payload);
    randombytes_buf(payload, sizes[s]);
    for (int mode = 0; mode < 3; mode++) {
      const cachet_keyring *use = mode == 0 ? NULL : kr;
      uint8_t *blob = NULL, *back = NULL;
      size_t len, plen;
      assert_int_equal(cachet_envelope_seal(use, mode == 2, RKEY, strlen(RKEY),
                                            9, CREATED, EXPIRES, payload,
                                            sizes[s], &blob, &len),
                       CACHET_OK);
      assert_true(len <= cachet_envelope_bound(sizes[s]));
      cachet_envelope_info info;
      assert_int_equal(
          open_copy(use, 0, RKEY, blob, len, CREATED, &info, &back, &plen),
          CACHET_OK);
      assert_int_equal(plen, sizes[s]);
      if (plen)
        assert_memory_equal(back, payload, plen);
      assert_int_equal(info.content_type, 9);
      assert_int_equal(info.key_id, use ? 2 : 0);
      if (mode == 2 && sizes[s] >= 16)
        /* Encrypted: the plaintext does not appear in the blob. */
        assert_true(memcmp(blob + CACHET_ENVELOPE_HEADER_BYTES +
                               CACHET_ENVELOPE_NONCE_BYTES,
                           payload, 16) != 0);
      free(back);
      free(blob);
    }
    free(payload);
  }
  cachet_keyring_free(kr);
}

/* seal_into writes what seal writes (byte for byte where no nonce is
 * drawn), opens the same, and refuses a buffer one byte short. */
static void test_seal_into_matches_seal(void **state) {
  (void)state;
  cachet_keyring *kr = ring(RING_2_1);
  const char payload[] = "into the caller's buffer";
  size_t plen = sizeof payload - 1;
  for (int mode = 0; mode < 3; mode++) {
    const cachet_keyring *use = mode == 0 ? NULL : kr;
    uint8_t *blob = NULL, *back = NULL;
    size_t len, n, blen;
    assert_int_equal(cachet_envelope_seal(use, mode == 2, RKEY, strlen(RKEY), 3,
                                          CREATED, EXPIRES, payload, plen,
                                          &blob, &len),
                     CACHET_OK);
    uint8_t buf[256];
    assert_true(cachet_envelope_bound(plen) <= sizeof buf);
    assert_int_equal(cachet_envelope_seal_into(
                         use, mode == 2, RKEY, strlen(RKEY), 3, CREATED,
                         EXPIRES, payload, plen, buf, len - 1, &n),
                     CACHET_EINVAL);
    assert_int_equal(cachet_envelope_seal_into(
                         use, mode == 2, RKEY, strlen(RKEY), 3, CREATED,
                         EXPIRES, payload, plen, buf, sizeof buf, &n),
                     CACHET_OK);
    assert_int_equal(n, len);
    if (mode < 2)
      assert_memory_equal(buf, blob, len);
    assert_int_equal(
        open_copy(use, 0, RKEY, buf, n, CREATED, NULL, &back, &blen),
        CACHET_OK);
    assert_int_equal(blen, plen);
    assert_memory_equal(back, payload, plen);
    free(back);
    free(blob);
  }
  cachet_keyring_free(kr);
}

static void test_seal_draws_a_fresh_nonce_each_time(void **state) {
  (void)state;
  cachet_keyring *kr = ring(RING_1);
  uint8_t *a = NULL, *b = NULL;
  size_t alen, blen;
  assert_int_equal(cachet_envelope_seal(kr, 1, RKEY, strlen(RKEY), 0, CREATED,
                                        0, "same", 4, &a, &alen),
                   CACHET_OK);
  assert_int_equal(cachet_envelope_seal(kr, 1, RKEY, strlen(RKEY), 0, CREATED,
                                        0, "same", 4, &b, &blen),
                   CACHET_OK);
  assert_int_equal(alen, blen);
  assert_true(memcmp(a + CACHET_ENVELOPE_HEADER_BYTES,
                     b + CACHET_ENVELOPE_HEADER_BYTES,
                     CACHET_ENVELOPE_NONCE_BYTES) != 0);
  free(a);
  free(b);
  cachet_keyring_free(kr);
}

static void test_seal_rejects_out_of_range_inputs(void **state) {
  (void)state;
  cachet_keyring *kr = ring(RING_1);
  static uint8_t sentinel;
  uint8_t *out = &sentinel;
  size_t len = 7;
  assert_int_equal(cachet_envelope_seal(NULL, 1, RKEY, strlen(RKEY), 0, CREATED,
                                        0, "x", 1, &out, &len),
                   CACHET_EINVAL);
  assert_null(out);
  assert_int_equal(len, 0);
  assert_int_equal(cachet_envelope_seal(kr, 0, RKEY, strlen(RKEY), 0, -1, 0,
                                        "x", 1, &out, &len),
                   CACHET_EINVAL);
  assert_int_equal(cachet_envelope_seal(kr, 0, RKEY, strlen(RKEY), 0, CREATED,
                                        -5, "x", 1, &out, &len),
                   CACHET_EINVAL);
  assert_int_equal(cachet_envelope_seal(kr, 0, RKEY, strlen(RKEY), 0, CREATED,
                                        0, NULL, 3, &out, &len),
                   CACHET_EINVAL);
  assert_int_equal(cachet_envelope_bound(CACHET_ENVELOPE_MAX_PAYLOAD + 1u), 0);
  assert_int_equal(cachet_envelope_bound(SIZE_MAX), 0);
  assert_int_equal(cachet_envelope_bound(0), 34 + 24 + 32);
  cachet_keyring_free(kr);
}

static void test_seal_long_key_name_roundtrips(void **state) {
  (void)state;
  /* Key names past the associated data's stack buffer take the heap. */
  size_t klen = 5000;
  char *rkey = malloc(klen + 1);
  assert_non_null(rkey);
  memset(rkey, 'k', klen);
  rkey[klen] = '\0';
  cachet_keyring *kr = ring(RING_1);
  for (int enc = 0; enc <= 1; enc++) {
    uint8_t *blob = NULL;
    size_t len;
    assert_int_equal(cachet_envelope_seal(kr, enc, rkey, klen, 0, CREATED, 0,
                                          "v", 1, &blob, &len),
                     CACHET_OK);
    assert_int_equal(
        open_copy(kr, 0, rkey, blob, len, CREATED, NULL, NULL, NULL),
        CACHET_OK);
    rkey[klen - 1] = 'j';
    assert_int_equal(
        open_copy(kr, 0, rkey, blob, len, CREATED, NULL, NULL, NULL),
        CACHET_EINTEGRITY);
    rkey[klen - 1] = 'k';
    free(blob);
  }
  cachet_keyring_free(kr);
  free(rkey);
}

/* ---- Inspect ---- */

static void test_inspect_reports_mac_status_without_decrypting(void **state) {
  (void)state;
  cachet_keyring *k1 = ring(RING_1);
  cachet_keyring *k21 = ring(RING_2_1);
  cachet_envelope_info info;
  for (size_t v = 0; v < NVECTORS; v++) {
    size_t len;
    uint8_t *gold = unhex(VECTORS[v].hex, &len);
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, gold, len);
    int sealed = VECTORS[v].ring != NULL;

    assert_int_equal(
        cachet_envelope_inspect(k21, RKEY, strlen(RKEY), copy, len, &info),
        CACHET_OK);
    assert_int_equal(info.mac_status, sealed ? CACHET_MAC_OK : CACHET_MAC_NONE);
    assert_int_equal(info.flags, VECTORS[v].flags);
    assert_int_equal(info.payload_len, strlen(VECTORS[v].payload));
    assert_memory_equal(copy, gold, len); /* never decrypts in place */

    assert_int_equal(
        cachet_envelope_inspect(NULL, RKEY, strlen(RKEY), copy, len, &info),
        CACHET_OK);
    assert_int_equal(info.mac_status,
                     sealed ? CACHET_MAC_NO_KEY : CACHET_MAC_NONE);

    if (sealed && VECTORS[v].key_id == 2) {
      assert_int_equal(
          cachet_envelope_inspect(k1, RKEY, strlen(RKEY), copy, len, &info),
          CACHET_OK);
      assert_int_equal(info.mac_status, CACHET_MAC_NO_KEY);
    }
    if (sealed) {
      assert_int_equal(
          cachet_envelope_inspect(k21, "other", 5, copy, len, &info),
          CACHET_OK);
      assert_int_equal(info.mac_status, CACHET_MAC_BAD);
      copy[len - 1] ^= 1;
      assert_int_equal(
          cachet_envelope_inspect(k21, RKEY, strlen(RKEY), copy, len, &info),
          CACHET_OK);
      assert_int_equal(info.mac_status, CACHET_MAC_BAD);
    }
    assert_int_equal(
        cachet_envelope_inspect(k21, RKEY, strlen(RKEY), copy, len - 1, &info),
        CACHET_ECORRUPT);
    free(copy);
    free(gold);
  }
  cachet_keyring_free(k1);
  cachet_keyring_free(k21);
}

/* ---- keygen ---- */

static void test_keygen_output_parses_as_a_keyring(void **state) {
  (void)state;
  char a[CACHET_KEYGEN_BUFLEN], b[CACHET_KEYGEN_BUFLEN];
  assert_int_equal(cachet_keygen(4294967295u, a, sizeof a), CACHET_OK);
  assert_int_equal(strncmp(a, "4294967295:", 11), 0);
  assert_int_equal(strlen(a), 11 + 44);
  assert_int_equal(cachet_keygen(7, b, sizeof b), CACHET_OK);
  assert_string_not_equal(a + 11, b + 2);
  cachet_keyring *kr = NULL;
  assert_int_equal(cachet_keyring_parse(a, strlen(a), &kr), CACHET_OK);
  assert_int_equal(cachet_keyring_active_id(kr), 4294967295u);
  cachet_keyring_free(kr);
  sodium_memzero(a, sizeof a);
  sodium_memzero(b, sizeof b);
}

static void test_keygen_rejects_id_zero_and_small_buffer(void **state) {
  (void)state;
  char buf[CACHET_KEYGEN_BUFLEN];
  assert_int_equal(cachet_keygen(0, buf, sizeof buf), CACHET_EINVAL);
  assert_int_equal(cachet_keygen(1, buf, 46), CACHET_EINVAL); /* 1: + 44 */
  assert_int_equal(cachet_keygen(1, buf, 47), CACHET_OK);
  assert_int_equal(strlen(buf), 46);
  sodium_memzero(buf, sizeof buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors_encode_to_golden_bytes),
      cmocka_unit_test(test_vectors_decode_to_golden_fields),
      cmocka_unit_test(test_vectors_open_with_rotated_keyring_by_id),
      cmocka_unit_test(test_open_rejects_every_bit_flip_of_mac_blob),
      cmocka_unit_test(test_open_rejects_every_bit_flip_of_encrypted_blob),
      cmocka_unit_test(test_open_rejects_bit_flips_in_payload_tag_as_integrity),
      cmocka_unit_test(test_open_rejects_every_truncation),
      cmocka_unit_test(test_open_rejects_trailing_byte),
      cmocka_unit_test(test_open_rejects_empty_and_bad_magic),
      cmocka_unit_test(test_open_unknown_version_is_eversion),
      cmocka_unit_test(test_open_version_zero_is_corrupt),
      cmocka_unit_test(test_open_reserved_flag_is_corrupt),
      cmocka_unit_test(test_open_encrypted_flag_without_mac_flag_is_corrupt),
      cmocka_unit_test(test_open_key_id_must_match_sealing),
      cmocka_unit_test(test_open_negative_times_are_corrupt),
      cmocka_unit_test(test_open_payload_length_overflow_is_corrupt),
      cmocka_unit_test(test_open_under_other_key_name_fails),
      cmocka_unit_test(test_open_sealed_blob_without_keyring_is_integrity),
      cmocka_unit_test(
          test_open_unsealed_blob_with_keyring_needs_accept_unsealed),
      cmocka_unit_test(test_open_unknown_key_id_names_the_id),
      cmocka_unit_test(
          test_rotation_new_key_readable_only_by_rings_that_hold_it),
      cmocka_unit_test(test_same_key_bytes_under_other_id_fail),
      cmocka_unit_test(test_open_expired_blob_is_miss),
      cmocka_unit_test(test_open_no_expiry_never_misses),
      cmocka_unit_test(test_open_expired_but_tampered_is_integrity_not_miss),
      cmocka_unit_test(test_seal_roundtrips_sizes_and_modes),
      cmocka_unit_test(test_seal_into_matches_seal),
      cmocka_unit_test(test_seal_draws_a_fresh_nonce_each_time),
      cmocka_unit_test(test_seal_rejects_out_of_range_inputs),
      cmocka_unit_test(test_seal_long_key_name_roundtrips),
      cmocka_unit_test(test_inspect_reports_mac_status_without_decrypting),
      cmocka_unit_test(test_keygen_output_parses_as_a_keyring),
      cmocka_unit_test(test_keygen_rejects_id_zero_and_small_buffer),
  };
  if (sodium_init() < 0)
    return 1;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
