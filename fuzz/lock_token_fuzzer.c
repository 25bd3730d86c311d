/*
 * A lock name and token from the user (`cachet lock release --token`) into
 * cachet_lock_from_token(): the input is split at its first NUL into the
 * name and the token, each in an exact-size buffer, so over-reads are
 * caught. It must accept exactly a non-empty name and 32 hex digits (either
 * case), keep the name, and give the token back lowercase; anything else is
 * EINVAL with a detail and no handle.
 */
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "fuzz_helpers.h"

static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

static char lower(char c) { return c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t nl = nul != NULL ? (size_t)(nul - data) : size;
  size_t tl = nul != NULL ? size - nl - 1 : 0;
  char *name = malloc(nl + 1), *token = malloc(tl + 1);
  FUZZ_ASSERT(name != NULL && token != NULL);
  memcpy(name, data, nl);
  name[nl] = '\0';
  if (tl > 0)
    memcpy(token, nul + 1, tl);
  token[tl] = '\0';
  /* The token as C sees it: up to its first NUL. */
  size_t tlen = strlen(token);
  int valid = nl > 0 && tlen == CACHET_LOCK_TOKEN_HEXLEN;
  for (size_t i = 0; valid && i < tlen; i++)
    valid = is_hex(token[i]);

  cachet_lock *lk = NULL;
  int rc = cachet_lock_from_token(name, token, &lk);
  if (valid) {
    FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_last_error());
    char hex[CACHET_LOCK_TOKEN_HEXLEN + 1];
    cachet_lock_token(lk, hex);
    for (size_t i = 0; i < CACHET_LOCK_TOKEN_HEXLEN; i++)
      FUZZ_ASSERT(hex[i] == lower(token[i]));
    FUZZ_ASSERT(hex[CACHET_LOCK_TOKEN_HEXLEN] == '\0');
    FUZZ_ASSERT(cachet_lock_fence(lk) == 0);
    cachet_lock_free(lk);
  } else {
    FUZZ_ASSERT_MSG(rc == CACHET_EINVAL, cachet_status_name(rc));
    FUZZ_ASSERT(lk == NULL);
    FUZZ_ASSERT(cachet_last_error()[0] != '\0');
  }
  free(name);
  free(token);
  return 0;
}
