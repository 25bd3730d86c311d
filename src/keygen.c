/* cachet_keygen(): a fresh keyring entry for CACHET_KEYS. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cachet.h"
#include "error.h"
#include "keyring.h"
#include "sodium_once.h"

int cachet_keygen(uint32_t id, char *out, size_t outlen) {
  cachet_error_clear();
  /* Out-parameters are cleared on failure: an empty string. */
  if (outlen > 0)
    out[0] = '\0';
  if (id == 0)
    return cachet_fail(CACHET_EINVAL, "keygen: key id 0 is reserved (ids are "
                                      "1-4294967295)");
  char idtxt[16];
  int idlen = snprintf(idtxt, sizeof idtxt, "%lu:", (unsigned long)id);
  size_t b64len = sodium_base64_ENCODED_LEN(CACHET_KEY_BYTES,
                                            sodium_base64_VARIANT_ORIGINAL);
  /* b64len counts the NUL. */
  if (idlen < 0 || outlen < (size_t)idlen + b64len)
    return cachet_fail(CACHET_EINVAL,
                       "keygen: output buffer of %zu bytes is too small (%zu "
                       "needed)",
                       outlen, (size_t)(idlen < 0 ? 0 : idlen) + b64len);
  int rc = cachet_sodium_init();
  if (rc != CACHET_OK)
    return rc;
  uint8_t key[CACHET_KEY_BYTES];
  randombytes_buf(key, sizeof key);
  memcpy(out, idtxt, (size_t)idlen);
  sodium_bin2base64(out + idlen, outlen - (size_t)idlen, key, sizeof key,
                    sodium_base64_VARIANT_ORIGINAL);
  sodium_memzero(key, sizeof key);
  return CACHET_OK;
}
