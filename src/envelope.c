/* Value envelope v1: encoder and strict decoder. The byte layout, the MAC
 * and AEAD inputs and the rejection rules are specified in docs/FORMAT.md;
 * this file follows it line by line. */
#include "envelope.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "nonce.h"

static const uint8_t MAGIC[4] = {0xC4, 0xC7, 0xE5, 0x1A};

_Static_assert(CACHET_ENVELOPE_NONCE_BYTES == CACHET_NONCE_BYTES,
               "the nonce generator makes XChaCha20 nonces");

/* Header offsets. */
#define OFF_VERSION 4u
#define OFF_FLAGS 5u
#define OFF_KEY_ID 6u
#define OFF_CREATED 10u
#define OFF_EXPIRES 18u
#define OFF_CTYPE 26u
#define OFF_PLEN 30u

#define KNOWN_FLAGS (CACHET_ENV_F_MAC | CACHET_ENV_F_ENCRYPTED)

/* The MAC's BLAKE2b parameters: salt || personal is header bytes 4..34
 * (every field after the magic) followed by this marker. */
#define MAC_PARAM_BYTES                                                        \
  (crypto_generichash_blake2b_SALTBYTES +                                      \
   crypto_generichash_blake2b_PERSONALBYTES)
#define MAC_FIELD_BYTES (CACHET_ENVELOPE_HEADER_BYTES - OFF_VERSION)
static const uint8_t MAC_MARKER[2] = {'e', 'm'};
_Static_assert(MAC_FIELD_BYTES + sizeof MAC_MARKER == MAC_PARAM_BYTES,
               "header fields and marker fill salt || personal exactly");

/* Stack room for the associated data of typical key names; longer names
 * take a heap buffer. */
#define AD_STACK_BYTES 512u

static void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static void put_le64(uint8_t *p, uint64_t v) {
  put_le32(p, (uint32_t)v);
  put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p) {
  return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* What the structural parse learned: enough to locate every part of the
 * frame. Nothing here is trusted until the MAC (if any) has verified. */
typedef struct frame {
  unsigned version;
  unsigned flags;
  uint32_t key_id;
  uint64_t created_raw;
  uint64_t expires_raw;
  uint32_t content_type;
  uint32_t payload_len;
  size_t payload_off; /* = header length, nonce included */
  size_t tag_off;
  size_t tag_len;
} frame;

/*
 * Check the parts of the frame a decoder needs before it can verify
 * anything: magic, version, flags, the key id's presence, and that the
 * declared payload length accounts for exactly every byte. Never reads
 * past blob[len-1].
 */
static int parse_frame(const uint8_t *blob, size_t len, frame *f) {
  if (len < sizeof MAGIC || memcmp(blob, MAGIC, sizeof MAGIC) != 0)
    return cachet_fail(CACHET_ECORRUPT,
                       "not a cachet envelope (bad magic, %zu bytes)", len);
  if (len <= OFF_VERSION)
    return cachet_fail(CACHET_ECORRUPT,
                       "envelope truncated before its version byte");
  f->version = blob[OFF_VERSION];
  /* The version decides the rest of the layout, so it is judged before the
   * length of a header whose size only version 1 defines. */
  if (f->version > CACHET_ENVELOPE_VERSION)
    return cachet_fail(CACHET_EVERSION,
                       "value written by a newer cachet (format version %u)",
                       f->version);
  if (f->version == 0)
    return cachet_fail(CACHET_ECORRUPT, "envelope format version 0 is invalid");
  if (len < CACHET_ENVELOPE_HEADER_BYTES)
    return cachet_fail(CACHET_ECORRUPT,
                       "envelope header truncated (%zu of %u bytes)", len,
                       CACHET_ENVELOPE_HEADER_BYTES);
  f->flags = blob[OFF_FLAGS];
  if ((f->flags & ~KNOWN_FLAGS) != 0)
    return cachet_fail(CACHET_ECORRUPT,
                       "envelope has reserved flag bits set (flags 0x%02x)",
                       f->flags);
  if ((f->flags & CACHET_ENV_F_ENCRYPTED) && !(f->flags & CACHET_ENV_F_MAC))
    return cachet_fail(CACHET_ECORRUPT,
                       "envelope flags 0x%02x: encrypted without the MAC flag",
                       f->flags);
  f->key_id = get_le32(blob + OFF_KEY_ID);
  int sealed = (f->flags & CACHET_ENV_F_MAC) != 0;
  if (sealed && f->key_id == 0)
    return cachet_fail(CACHET_ECORRUPT, "sealed envelope has key id 0");
  if (!sealed && f->key_id != 0)
    return cachet_fail(CACHET_ECORRUPT, "unsealed envelope has a key id (%u)",
                       (unsigned)f->key_id);
  f->created_raw = get_le64(blob + OFF_CREATED);
  f->expires_raw = get_le64(blob + OFF_EXPIRES);
  f->content_type = get_le32(blob + OFF_CTYPE);
  f->payload_len = get_le32(blob + OFF_PLEN);

  int enc = (f->flags & CACHET_ENV_F_ENCRYPTED) != 0;
  f->payload_off =
      CACHET_ENVELOPE_HEADER_BYTES + (enc ? CACHET_ENVELOPE_NONCE_BYTES : 0u);
  f->tag_len = enc      ? CACHET_ENVELOPE_AEAD_TAG_BYTES
               : sealed ? CACHET_ENVELOPE_MAC_BYTES
                        : 0u;
  if (len < f->payload_off + f->tag_len)
    return cachet_fail(CACHET_ECORRUPT,
                       "envelope truncated (%zu bytes, at least %zu needed)",
                       len, f->payload_off + f->tag_len);
  /* Compare against what is there rather than adding to the declared
   * length, so a huge payload_len cannot overflow anything. */
  size_t room = len - f->payload_off - f->tag_len;
  if ((uint64_t)f->payload_len > (uint64_t)room)
    return cachet_fail(CACHET_ECORRUPT,
                       "envelope truncated (payload length %u, %zu bytes "
                       "present)",
                       (unsigned)f->payload_len, room);
  if ((uint64_t)f->payload_len < (uint64_t)room)
    return cachet_fail(CACHET_ECORRUPT, "envelope has %zu trailing bytes",
                       room - (size_t)f->payload_len);
  f->tag_off = f->payload_off + (size_t)f->payload_len;
  return CACHET_OK;
}

/* Fields that only make sense once they are trusted (after the MAC, or at
 * once for an unsealed envelope). */
static int check_fields(const frame *f) {
  if (f->created_raw > (uint64_t)INT64_MAX)
    return cachet_fail(CACHET_ECORRUPT, "envelope created-at is negative");
  if (f->expires_raw > (uint64_t)INT64_MAX)
    return cachet_fail(CACHET_ECORRUPT, "envelope expires-at is negative");
  return CACHET_OK;
}

static void fill_info(const frame *f, int mac_status,
                      cachet_envelope_info *info) {
  if (info == NULL)
    return;
  info->version = f->version;
  info->flags = f->flags;
  info->key_id = f->key_id;
  /* Only called once check_fields() has passed: both fit an int64_t. */
  info->created_ms = (int64_t)f->created_raw;
  info->expires_ms = (int64_t)f->expires_raw;
  info->content_type = f->content_type;
  info->payload_len = f->payload_len;
  info->mac_status = mac_status;
}

/*
 * The envelope MAC (docs/FORMAT.md, "MAC'd envelopes"): keyed BLAKE2b-256
 * under the key's MAC subkey, with frm[4 .. 34) and MAC_MARKER as the
 * parameter block's salt || personal, over rkey || payload. The header
 * rides in the parameter block, which BLAKE2b folds into its IV before the
 * key block, so it costs no compression: a small value under a short key
 * name takes the same two compressions as the bare primitive over the
 * value. The split between rkey and payload needs no length prefix, since
 * payload_len is fixed by the parameters. The hash state holds
 * key-derived material and is wiped before returning.
 */
static void compute_mac(const uint8_t sub[CACHET_KEY_BYTES], const void *rkey,
                        size_t rkeylen, const uint8_t *frm, size_t payload_len,
                        uint8_t tag[CACHET_ENVELOPE_MAC_BYTES]) {
  crypto_generichash_blake2b_state st;
  uint8_t param[MAC_PARAM_BYTES];
  memcpy(param, frm + OFF_VERSION, MAC_FIELD_BYTES);
  memcpy(param + MAC_FIELD_BYTES, MAC_MARKER, sizeof MAC_MARKER);
  crypto_generichash_blake2b_init_salt_personal(
      &st, sub, CACHET_KEY_BYTES, CACHET_ENVELOPE_MAC_BYTES, param,
      param + crypto_generichash_blake2b_SALTBYTES);
  if (rkeylen > 0)
    crypto_generichash_blake2b_update(&st, rkey, rkeylen);
  if (payload_len > 0)
    crypto_generichash_blake2b_update(&st, frm + CACHET_ENVELOPE_HEADER_BYTES,
                                      payload_len);
  crypto_generichash_blake2b_final(&st, tag, CACHET_ENVELOPE_MAC_BYTES);
  sodium_memzero(&st, sizeof st);
}

/* Associated data for the AEAD: le32(rkeylen) || rkey || the 34 header
 * bytes before the nonce. No domain string: K_aead is a subkey used for
 * nothing else. No nonce: the AEAD authenticates its own nonce (another one
 * gives another keystream and Poly1305 key). Uses `stackbuf` when it fits,
 * else the heap; *heap is what the caller must free. */
static uint8_t *build_ad(const void *rkey, size_t rkeylen, const uint8_t *hdr,
                         uint8_t *stackbuf, uint8_t **heap, size_t *adlen) {
  size_t hdrlen = CACHET_ENVELOPE_HEADER_BYTES;
  size_t n = 4u + rkeylen + hdrlen;
  uint8_t *ad = stackbuf;
  *heap = NULL;
  if (n > AD_STACK_BYTES) {
    ad = malloc(n);
    if (ad == NULL)
      return NULL;
    *heap = ad;
  }
  put_le32(ad, (uint32_t)rkeylen);
  if (rkeylen > 0)
    memcpy(ad + 4u, rkey, rkeylen);
  memcpy(ad + 4u + rkeylen, hdr, hdrlen);
  *adlen = n;
  return ad;
}

/*
 * Verify (and, with `m` non-NULL, decrypt into `m`) an encrypted frame.
 * With m == NULL libsodium checks the tag without writing any plaintext,
 * which is what inspect needs. Returns 0, -1 on a bad tag, or CACHET_ENOMEM.
 */
static int aead_open(const uint8_t sub[CACHET_KEY_BYTES], const void *rkey,
                     size_t rkeylen, const uint8_t *blob, const frame *f,
                     uint8_t *m) {
  uint8_t adbuf[AD_STACK_BYTES];
  uint8_t *heap;
  size_t adlen;
  const uint8_t *ad = build_ad(rkey, rkeylen, blob, adbuf, &heap, &adlen);
  if (ad == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory opening an envelope");
  int r = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
      m, NULL, blob + f->payload_off, f->payload_len, blob + f->tag_off, ad,
      adlen, blob + CACHET_ENVELOPE_HEADER_BYTES, sub);
  free(heap);
  return r == 0 ? 0 : -1;
}

size_t cachet_envelope_bound(size_t len) {
  if (len > CACHET_ENVELOPE_MAX_PAYLOAD)
    return 0;
  size_t over = CACHET_ENVELOPE_HEADER_BYTES + CACHET_ENVELOPE_NONCE_BYTES +
                CACHET_ENVELOPE_MAC_BYTES;
  if (len > SIZE_MAX - over)
    return 0;
  return len + over;
}

/* The one sealing routine: into `buf` (cap bytes), or into a malloc'd
 * buffer when buf is NULL; *out is where the envelope is. */
static int seal(const cachet_keyring *kr, int encrypt, const void *rkey,
                size_t rkeylen, uint32_t content_type, int64_t created_ms,
                int64_t expires_ms, const void *payload, size_t len,
                const uint8_t nonce[CACHET_ENVELOPE_NONCE_BYTES], uint8_t *buf,
                size_t cap, uint8_t **out, size_t *outlen) {
  *out = NULL;
  *outlen = 0;
  if (encrypt && kr == NULL)
    return cachet_fail(CACHET_EINVAL, "encryption needs a keyring");
  if (encrypt && nonce == NULL)
    return cachet_fail(CACHET_EINVAL, "encryption needs a nonce");
  if (created_ms < 0 || expires_ms < 0)
    return cachet_fail(CACHET_EINVAL,
                       "envelope times must not be negative (created %lld, "
                       "expires %lld)",
                       (long long)created_ms, (long long)expires_ms);
  if (len > CACHET_ENVELOPE_MAX_PAYLOAD)
    return cachet_fail(CACHET_EINVAL,
                       "value of %zu bytes exceeds the envelope limit (%zu)",
                       len, CACHET_ENVELOPE_MAX_PAYLOAD);
  if ((uint64_t)rkeylen > UINT32_MAX)
    return cachet_fail(CACHET_EINVAL, "key name of %zu bytes is too long",
                       rkeylen);
  if (len > 0 && payload == NULL)
    return cachet_fail(CACHET_EINVAL, "payload is NULL");
  if (rkeylen > 0 && rkey == NULL)
    return cachet_fail(CACHET_EINVAL, "key name is NULL");

  const uint8_t *sub = NULL;
  uint32_t key_id = 0;
  unsigned flags = 0;
  if (kr != NULL) {
    key_id = cachet_keyring_active_id(kr);
    sub = cachet_keyring_subkey(
        kr, key_id, encrypt ? CACHET_SUBKEY_AEAD : CACHET_SUBKEY_MAC);
    if (sub == NULL)
      return cachet_fail(CACHET_EINTERNAL, "keyring has no active key");
    flags = CACHET_ENV_F_MAC | (encrypt ? CACHET_ENV_F_ENCRYPTED : 0u);
  }
  int enc = (flags & CACHET_ENV_F_ENCRYPTED) != 0;
  size_t hdr =
      CACHET_ENVELOPE_HEADER_BYTES + (enc ? CACHET_ENVELOPE_NONCE_BYTES : 0u);
  size_t tag = enc          ? CACHET_ENVELOPE_AEAD_TAG_BYTES
               : kr != NULL ? CACHET_ENVELOPE_MAC_BYTES
                            : 0u;
  /* len <= UINT32_MAX was checked, but size_t may be 32 bits. */
  if (len > SIZE_MAX - hdr - tag)
    return cachet_fail(CACHET_EINVAL, "value of %zu bytes is too large", len);
  size_t total = hdr + len + tag;

  uint8_t *b = buf;
  if (b != NULL && cap < total)
    return cachet_fail(CACHET_EINVAL,
                       "a %zu-byte buffer cannot hold a %zu-byte envelope", cap,
                       total);
  if (b == NULL && (b = malloc(total)) == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory sealing a %zu-byte value",
                       len);
  memcpy(b, MAGIC, sizeof MAGIC);
  b[OFF_VERSION] = (uint8_t)CACHET_ENVELOPE_VERSION;
  b[OFF_FLAGS] = (uint8_t)flags;
  put_le32(b + OFF_KEY_ID, key_id);
  put_le64(b + OFF_CREATED, (uint64_t)created_ms);
  put_le64(b + OFF_EXPIRES, (uint64_t)expires_ms);
  put_le32(b + OFF_CTYPE, content_type);
  put_le32(b + OFF_PLEN, (uint32_t)len);
  if (enc)
    memcpy(b + CACHET_ENVELOPE_HEADER_BYTES, nonce,
           CACHET_ENVELOPE_NONCE_BYTES);
  if (len > 0 && !enc)
    memcpy(b + hdr, payload, len);

  if (enc) {
    uint8_t adbuf[AD_STACK_BYTES];
    uint8_t *heap;
    size_t adlen;
    const uint8_t *ad = build_ad(rkey, rkeylen, b, adbuf, &heap, &adlen);
    if (ad == NULL) {
      if (b != buf)
        free(b);
      return cachet_fail(CACHET_ENOMEM, "out of memory sealing a value");
    }

    /* Straight from the caller's buffer into the frame, so the plaintext
     * is never copied. An empty value has no bytes to read. */
    crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
        b + hdr, b + hdr + len, NULL, len > 0 ? payload : (const void *)b, len,
        ad, adlen, NULL, b + CACHET_ENVELOPE_HEADER_BYTES, sub);
    free(heap);
  } else if (kr != NULL) {
    compute_mac(sub, rkey, rkeylen, b, len, b + hdr + len);
  }
  *out = b;
  *outlen = total;
  return CACHET_OK;
}

int cachet_envelope_seal_nonce(const cachet_keyring *kr, int encrypt,
                               const void *rkey, size_t rkeylen,
                               uint32_t content_type, int64_t created_ms,
                               int64_t expires_ms, const void *payload,
                               size_t len,
                               const uint8_t nonce[CACHET_ENVELOPE_NONCE_BYTES],
                               uint8_t **out, size_t *outlen) {
  return seal(kr, encrypt, rkey, rkeylen, content_type, created_ms, expires_ms,
              payload, len, nonce, NULL, 0, out, outlen);
}

/* A fresh nonce when the envelope will be encrypted. 192-bit random nonces:
 * collisions are negligible without any coordination between writers. */
static int draw_nonce(const cachet_keyring *kr, int encrypt,
                      uint8_t nonce[CACHET_ENVELOPE_NONCE_BYTES]) {
  return encrypt && kr != NULL ? cachet_nonce(nonce) : CACHET_OK;
}

int cachet_envelope_seal(const cachet_keyring *kr, int encrypt,
                         const void *rkey, size_t rkeylen,
                         uint32_t content_type, int64_t created_ms,
                         int64_t expires_ms, const void *payload, size_t len,
                         uint8_t **out, size_t *outlen) {
  uint8_t nonce[CACHET_ENVELOPE_NONCE_BYTES];
  *out = NULL;
  *outlen = 0;
  int rc = draw_nonce(kr, encrypt, nonce);
  if (rc != CACHET_OK)
    return rc;
  return seal(kr, encrypt, rkey, rkeylen, content_type, created_ms, expires_ms,
              payload, len, nonce, NULL, 0, out, outlen);
}

int cachet_envelope_seal_into(const cachet_keyring *kr, int encrypt,
                              const void *rkey, size_t rkeylen,
                              uint32_t content_type, int64_t created_ms,
                              int64_t expires_ms, const void *payload,
                              size_t len, uint8_t *buf, size_t cap,
                              size_t *outlen) {
  uint8_t nonce[CACHET_ENVELOPE_NONCE_BYTES];
  uint8_t *out;
  *outlen = 0;
  if (buf == NULL)
    return cachet_fail(CACHET_EINVAL, "buffer is NULL");
  int rc = draw_nonce(kr, encrypt, nonce);
  if (rc != CACHET_OK)
    return rc;
  return seal(kr, encrypt, rkey, rkeylen, content_type, created_ms, expires_ms,
              payload, len, nonce, buf, cap, &out, outlen);
}

/* The subkey an envelope's flags call for. */
static unsigned purpose_of(const frame *f) {
  return (f->flags & CACHET_ENV_F_ENCRYPTED) ? CACHET_SUBKEY_AEAD
                                             : CACHET_SUBKEY_MAC;
}

/*
 * Decide whether the keyring policy allows this envelope at all and find
 * its subkey. Returns CACHET_OK with *sub NULL for an accepted unsealed
 * envelope.
 */
static int select_key(const cachet_keyring *kr, int accept_unsealed,
                      const frame *f, const uint8_t **sub) {
  *sub = NULL;
  if (!(f->flags & CACHET_ENV_F_MAC)) {
    if (kr != NULL && !accept_unsealed)
      return cachet_fail(CACHET_EINTEGRITY,
                         "value is not sealed but a keyring is configured "
                         "(CACHET_ACCEPT_UNSEALED=1 accepts it during a "
                         "migration)");
    return CACHET_OK;
  }
  if (kr == NULL)
    return cachet_fail(CACHET_EINTEGRITY,
                       "value is sealed with key id %u but no keyring is "
                       "configured",
                       (unsigned)f->key_id);
  *sub = cachet_keyring_subkey(kr, f->key_id, purpose_of(f));
  if (*sub == NULL)
    return cachet_fail(CACHET_EINTEGRITY,
                       "value is sealed with key id %u, which the keyring "
                       "does not hold",
                       (unsigned)f->key_id);
  return CACHET_OK;
}

/* The argument checks and the frame parse that open and inspect share. */
static int decode_frame(const void *rkey, size_t rkeylen, const uint8_t *blob,
                        size_t len, frame *f) {
  if (blob == NULL && len > 0)
    return cachet_fail(CACHET_EINVAL, "envelope is NULL");
  if ((uint64_t)rkeylen > UINT32_MAX || (rkeylen > 0 && rkey == NULL))
    return cachet_fail(CACHET_EINVAL, "invalid key name");
  return parse_frame(blob, len, f);
}

/* 0 when the MAC-only frame's tag matches, compared in constant time. */
static int verify_mac(const uint8_t *sub, const void *rkey, size_t rkeylen,
                      const uint8_t *blob, const frame *f) {
  uint8_t tag[CACHET_ENVELOPE_MAC_BYTES];
  compute_mac(sub, rkey, rkeylen, blob, f->payload_len, tag);
  int bad = crypto_verify_32(tag, blob + f->tag_off);
  sodium_memzero(tag, sizeof tag);
  return bad;
}

int cachet_envelope_open(const cachet_keyring *kr, int accept_unsealed,
                         const void *rkey, size_t rkeylen, uint8_t *blob,
                         size_t len, int64_t now_ms, cachet_envelope_info *info,
                         size_t *payload_off, size_t *payload_len) {
  frame f;
  *payload_off = 0;
  *payload_len = 0;
  if (info != NULL)
    memset(info, 0, sizeof *info);
  int rc = decode_frame(rkey, rkeylen, blob, len, &f);
  if (rc != CACHET_OK)
    return rc;
  const uint8_t *sub;
  if ((rc = select_key(kr, accept_unsealed, &f, &sub)) != CACHET_OK)
    return rc;

  int mac_status = CACHET_MAC_NONE;
  if (f.flags & CACHET_ENV_F_ENCRYPTED) {
    /* Verifies the tag first and writes plaintext only if it matched. */
    rc = aead_open(sub, rkey, rkeylen, blob, &f, blob + f.payload_off);
    if (rc == CACHET_ENOMEM)
      return rc;
    if (rc != 0)
      return cachet_fail(CACHET_EINTEGRITY,
                         "decryption failed under key id %u (tampered, or "
                         "stored under another key name)",
                         (unsigned)f.key_id);
    mac_status = CACHET_MAC_OK;
  } else if (f.flags & CACHET_ENV_F_MAC) {
    if (verify_mac(sub, rkey, rkeylen, blob, &f) != 0)
      return cachet_fail(CACHET_EINTEGRITY,
                         "MAC check failed under key id %u (tampered, or "
                         "stored under another key name)",
                         (unsigned)f.key_id);
    mac_status = CACHET_MAC_OK;
  }
  if ((rc = check_fields(&f)) != CACHET_OK)
    return rc;
  fill_info(&f, mac_status, info);
  if (f.expires_raw != 0 && (int64_t)f.expires_raw <= now_ms)
    return CACHET_MISS;
  *payload_off = f.payload_off;
  *payload_len = f.payload_len;
  return CACHET_OK;
}

int cachet_envelope_inspect(const cachet_keyring *kr, const void *rkey,
                            size_t rkeylen, const uint8_t *blob, size_t len,
                            cachet_envelope_info *info) {
  frame f;
  memset(info, 0, sizeof *info);
  int rc = decode_frame(rkey, rkeylen, blob, len, &f);
  if (rc != CACHET_OK) {
    if (rc == CACHET_EVERSION)
      info->version = blob[OFF_VERSION];
    return rc;
  }
  int mac_status = CACHET_MAC_NONE;
  if (f.flags & CACHET_ENV_F_MAC) {
    const uint8_t *sub = cachet_keyring_subkey(kr, f.key_id, purpose_of(&f));
    if (sub == NULL) {
      mac_status = CACHET_MAC_NO_KEY;
    } else if (f.flags & CACHET_ENV_F_ENCRYPTED) {
      rc = aead_open(sub, rkey, rkeylen, blob, &f, NULL);
      if (rc == CACHET_ENOMEM)
        return rc;
      mac_status = rc == 0 ? CACHET_MAC_OK : CACHET_MAC_BAD;
    } else {
      mac_status = verify_mac(sub, rkey, rkeylen, blob, &f) == 0
                       ? CACHET_MAC_OK
                       : CACHET_MAC_BAD;
    }
  }
  if ((rc = check_fields(&f)) != CACHET_OK)
    return rc;
  /* Filled whatever the MAC said, so a tool sees every field; mac_status
   * says whether to believe them. */
  fill_info(&f, mac_status, info);
  return CACHET_OK;
}
