/* Value envelope v1: encoder and strict decoder. Internal, pure (no I/O).
 * The byte layout is specified in docs/FORMAT.md. */
#ifndef CACHET_ENVELOPE_H
#define CACHET_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "cachet.h"
#include "keyring.h"

/* Sizes of the v1 layout (docs/FORMAT.md). */
#define CACHET_ENVELOPE_VERSION 1u
#define CACHET_ENVELOPE_HEADER_BYTES 34u
#define CACHET_ENVELOPE_NONCE_BYTES 24u
#define CACHET_ENVELOPE_MAC_BYTES 32u
#define CACHET_ENVELOPE_AEAD_TAG_BYTES 16u
/* The payload length field is a u32. */
#define CACHET_ENVELOPE_MAX_PAYLOAD ((size_t)UINT32_MAX)

/* Worst-case encoded size for a payload of `len` bytes, or 0 on overflow. */
size_t cachet_envelope_bound(size_t len);

/*
 * Encode `payload` for the Redis key `rkey`. With kr == NULL the envelope is
 * plain (no MAC). With a keyring it is MAC'd with the active key and, if
 * `encrypt`, AEAD-encrypted with a random nonce. expires_ms is the logical
 * expiry in Unix milliseconds (0 = none); created_ms the write time.
 * On CACHET_OK *out is malloc'd (caller frees) and *outlen set.
 * Errors: CACHET_EINVAL (sizes out of the format's limits), CACHET_ENOMEM.
 */
int cachet_envelope_seal(const cachet_keyring *kr, int encrypt,
                         const void *rkey, size_t rkeylen,
                         uint32_t content_type, int64_t created_ms,
                         int64_t expires_ms, const void *payload, size_t len,
                         uint8_t **out, size_t *outlen);

/*
 * cachet_envelope_seal() into the caller's buffer `buf` of `cap` bytes
 * instead of a malloc'd one: cachet_envelope_bound(len) bytes always
 * suffice (EINVAL if `cap` is too small). `buf` must not overlap `payload`
 * or `rkey`. On CACHET_OK *outlen is the envelope's length.
 */
int cachet_envelope_seal_into(const cachet_keyring *kr, int encrypt,
                              const void *rkey, size_t rkeylen,
                              uint32_t content_type, int64_t created_ms,
                              int64_t expires_ms, const void *payload,
                              size_t len, uint8_t *buf, size_t cap,
                              size_t *outlen);

/*
 * For tests and the FORMAT.md vectors only: cachet_envelope_seal() with the
 * AEAD nonce given instead of drawn from cachet_nonce(). `nonce` is read only
 * when `encrypt` is set. Reusing a nonce under one key breaks the AEAD, so
 * nothing outside tests/, fuzz/ and bench/ may call this.
 */
int cachet_envelope_seal_nonce(const cachet_keyring *kr, int encrypt,
                               const void *rkey, size_t rkeylen,
                               uint32_t content_type, int64_t created_ms,
                               int64_t expires_ms, const void *payload,
                               size_t len,
                               const uint8_t nonce[CACHET_ENVELOPE_NONCE_BYTES],
                               uint8_t **out, size_t *outlen);

/*
 * Decode and verify `blob` (len bytes) stored under `rkey`, in place: when
 * the envelope is encrypted the ciphertext is decrypted inside `blob`.
 * On CACHET_OK, the payload is blob[*payload_off .. *payload_off+*payload_len)
 * and `info` (may be NULL) describes the header.
 * Returns:
 *  - CACHET_MISS when the envelope verified but its logical expiry is at or
 *    before now_ms (`info` is filled, the payload outputs are 0; an
 *    encrypted payload has been decrypted in place);
 *  - CACHET_ECORRUPT: bad magic, unknown flags, bad lengths, trailing bytes;
 *  - CACHET_EVERSION: "written by a newer cachet";
 *  - CACHET_EINTEGRITY: MAC/AEAD failure, unknown key id, or a sealed
 *    envelope read without a keyring, or an unsealed envelope read with a
 *    keyring unless accept_unsealed.
 * On any error `info` is zeroed and the payload outputs are 0; a failed
 * AEAD check may have zeroed the ciphertext in `blob` (libsodium does), so
 * a caller that wants the bytes afterwards must open a copy.
 * The MAC is verified over the whole frame before any field inside it is
 * trusted. Never reads past blob[len-1]. Thread-safe: kr is only read.
 */
int cachet_envelope_open(const cachet_keyring *kr, int accept_unsealed,
                         const void *rkey, size_t rkeylen, uint8_t *blob,
                         size_t len, int64_t now_ms, cachet_envelope_info *info,
                         size_t *payload_off, size_t *payload_len);

/*
 * Parse the header only and report the MAC status into info->mac_status
 * without failing on a bad MAC (for `cachet inspect`). Checks an encrypted
 * envelope's tag without decrypting; never writes to `blob`. kr may be NULL
 * (a sealed envelope then reports CACHET_MAC_NO_KEY).
 * CACHET_OK, CACHET_ECORRUPT or CACHET_EVERSION (then info->version holds
 * the version byte and the rest of `info` is zero).
 */
int cachet_envelope_inspect(const cachet_keyring *kr, const void *rkey,
                            size_t rkeylen, const uint8_t *blob, size_t len,
                            cachet_envelope_info *info);

#endif
