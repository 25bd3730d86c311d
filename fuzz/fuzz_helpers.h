/* Shared helpers for the fuzz targets (zstd's tests/fuzz layout). Every
 * target includes this header, links fuzz_helpers.c, and defines
 * LLVMFuzzerTestOneInput. */
#ifndef CACHET_FUZZ_HELPERS_H
#define CACHET_FUZZ_HELPERS_H

#include <stddef.h>
#include <stdint.h>

#include "keyring.h"

/* The libFuzzer entry point, declared here so every target has a
 * prototype and the regression driver can call it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print where and why, then abort, so libFuzzer records a crash and the
 * regression driver fails. */
_Noreturn void fuzz_fail(const char *file, int line, const char *cond,
                         const char *msg);

/* Unlike assert(), these stay on under NDEBUG: a fuzz build is usually a
 * release build, and a silent check finds nothing. */
#define FUZZ_ASSERT_MSG(cond, msg)                                             \
  ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond, (msg)))
#define FUZZ_ASSERT(cond) FUZZ_ASSERT_MSG((cond), "")

/*
 * A cursor over the fuzz input that hands out control values from the
 * front and leaves the rest as a payload. Reading past the end yields
 * zeros, so every input is usable and short inputs mean "defaults".
 */
typedef struct fuzz_cursor {
  const uint8_t *data;
  size_t size;
} fuzz_cursor;

uint8_t fuzz_take_u8(fuzz_cursor *c);
uint32_t fuzz_take_u32(fuzz_cursor *c);
uint64_t fuzz_take_u64(fuzz_cursor *c);
/* Up to `max` bytes: a pointer into the input and the count taken. */
const uint8_t *fuzz_take_bytes(fuzz_cursor *c, size_t max, size_t *got);

/* The fixed test keys of docs/FORMAT.md: K1 = 00..1f (id 1) and
 * K2 = 80..9f (id 2). Never used outside tests and fuzzing. */
#define FUZZ_K1_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define FUZZ_K2_B64 "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8="
/* The key name and times of the FORMAT.md vectors, so the seed corpus
 * verifies under the fixed keys. */
#define FUZZ_RKEY "cachet:v:user:42"
#define FUZZ_CREATED INT64_C(1700000000000)

/* Keyrings built once per process from the test keys: "1" holds K1,
 * "2,1" holds K2 (active) and K1. Owned by the helpers; never freed. */
const cachet_keyring *fuzz_ring_1(void);
const cachet_keyring *fuzz_ring_2_1(void);

#endif
