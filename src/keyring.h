/* Keyring: the MAC/AEAD keys, selected by id in O(1). Internal, pure. */
#ifndef CACHET_KEYRING_H
#define CACHET_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#define CACHET_KEY_BYTES 32u

typedef struct cachet_keyring cachet_keyring;

/*
 * Parse "ID:BASE64KEY[,ID:BASE64KEY...]" (whitespace around entries ignored,
 * a trailing newline allowed). The first entry is the active writing key.
 * IDs are 1..4294967295 and unique; each key decodes to exactly 32 bytes.
 * Returns CACHET_OK, or CACHET_ECONFIG with a detail naming the entry by
 * position (never echoing key material), or CACHET_ENOMEM.
 * The caller owns *out; free with cachet_keyring_free().
 */
int cachet_keyring_parse(const char *text, size_t len, cachet_keyring **out);

/* Zero every key (sodium_memzero) and free. NULL is a no-op. */
void cachet_keyring_free(cachet_keyring *kr);

/* The active key id. */
uint32_t cachet_keyring_active_id(const cachet_keyring *kr);

/* Key bytes for `id`, or NULL if the keyring does not hold it. The pointer
 * is owned by the keyring. */
const uint8_t *cachet_keyring_find(const cachet_keyring *kr, uint32_t id);

/*
 * The envelope never uses a master key directly: each purpose has its own
 * 32-byte subkey, crypto_kdf_derive_from_key(subkey_id = purpose,
 * ctx = "cachetv1", master) as docs/FORMAT.md "Keys" specifies. They are
 * derived once at parse time and kept in the same guarded memory, so no
 * operation derives (or has to wipe) a key. NULL if the keyring does not
 * hold `id` or `purpose` is unknown.
 */
#define CACHET_SUBKEY_MAC 1u
#define CACHET_SUBKEY_AEAD 2u
const uint8_t *cachet_keyring_subkey(const cachet_keyring *kr, uint32_t id,
                                     unsigned purpose);

#endif
