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

#endif
