/* Shared helpers for the fuzz targets. */
#include "fuzz_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachet.h"

void fuzz_fail(const char *file, int line, const char *cond, const char *msg) {
  fprintf(stderr, "%s:%d: FUZZ_ASSERT(%s) failed%s%s\n", file, line, cond,
          msg[0] ? ": " : "", msg);
  fprintf(stderr, "last cachet error: %s\n", cachet_last_error());
  abort();
}

uint8_t fuzz_take_u8(fuzz_cursor *c) {
  if (c->size == 0)
    return 0;
  uint8_t v = c->data[0];
  c->data++;
  c->size--;
  return v;
}

uint32_t fuzz_take_u32(fuzz_cursor *c) {
  uint32_t v = 0;
  for (unsigned i = 0; i < 4; i++)
    v |= (uint32_t)fuzz_take_u8(c) << (8 * i);
  return v;
}

uint64_t fuzz_take_u64(fuzz_cursor *c) {
  uint64_t lo = fuzz_take_u32(c);
  return lo | (uint64_t)fuzz_take_u32(c) << 32;
}

const uint8_t *fuzz_take_bytes(fuzz_cursor *c, size_t max, size_t *got) {
  size_t n = max < c->size ? max : c->size;
  const uint8_t *p = c->data;
  c->data += n;
  c->size -= n;
  *got = n;
  return p;
}

static const cachet_keyring *ring_once(cachet_keyring **slot,
                                       const char *text) {
  /* Fuzz targets run single-threaded; a lazy static is enough. */
  if (*slot == NULL) {
    int rc = cachet_keyring_parse(text, strlen(text), slot);
    FUZZ_ASSERT_MSG(rc == CACHET_OK, "test keyring does not parse");
  }
  return *slot;
}

const cachet_keyring *fuzz_ring_1(void) {
  static cachet_keyring *kr;
  return ring_once(&kr, "1:" FUZZ_K1_B64);
}

const cachet_keyring *fuzz_ring_2_1(void) {
  static cachet_keyring *kr;
  return ring_once(&kr, "2:" FUZZ_K2_B64 ",1:" FUZZ_K1_B64);
}
