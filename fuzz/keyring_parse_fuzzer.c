/*
 * Arbitrary text into cachet_keyring_parse(): it must accept or refuse
 * with ECONFIG, never read past `len` (the input gets an exact-size copy),
 * and an accepted ring must find its active key by id.
 */
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "fuzz_helpers.h"
#include "keyring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size ? size : 1);
  FUZZ_ASSERT(text != NULL);
  if (size)
    memcpy(text, data, size);
  cachet_keyring *kr = NULL;
  int rc = cachet_keyring_parse(text, size, &kr);
  if (rc == CACHET_OK) {
    FUZZ_ASSERT(kr != NULL);
    uint32_t id = cachet_keyring_active_id(kr);
    FUZZ_ASSERT(id != 0);
    FUZZ_ASSERT(cachet_keyring_find(kr, id) != NULL);
    FUZZ_ASSERT(cachet_keyring_find(kr, 0) == NULL);
    /* Every accepted entry starts with its decimal id, so the active id
     * must be the text's first number. */
    size_t i = 0;
    while (i < size && strchr(" \t\r\n", text[i]) != NULL && text[i] != 0)
      i++;
    uint64_t first = 0;
    while (i < size && text[i] >= '0' && text[i] <= '9')
      first = first * 10u + (uint64_t)(text[i++] - '0');
    FUZZ_ASSERT(first == id);
    cachet_keyring_free(kr);
  } else {
    FUZZ_ASSERT_MSG(rc == CACHET_ECONFIG, cachet_status_name(rc));
    FUZZ_ASSERT(kr == NULL);
    const char *detail = cachet_last_error();
    FUZZ_ASSERT(strncmp(detail, "CACHET_KEYS", 11) == 0);
  }
  free(text);
  return 0;
}
