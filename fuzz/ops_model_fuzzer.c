/*
 * ops_model_fuzzer: random sequences of cachet operations against a private
 * redis-server, checked against a reference model (fuzz/ops_model.c).
 *
 * Input: a sequence of at most 64 operations. Each starts with one byte:
 * bit 7 picks the handle (prefix "fz:" or "fz:b:", which share a stem),
 * the low 7 bits modulo 17 the operation (set, set_tags, get, exists/ttl,
 * delete, mset, mget, evict_tags, clear, prune, expiry, get_or_set, lock
 * acquire/release/extend, two writers at once, a fault); the operation then
 * reads its own operands (key, value length, TTL, tag mask...) from the
 * bytes that follow. Reading past the end yields zeros.
 */
#include "fuzz_helpers.h"
#include "ops_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  ops_model_init(OPS_STANDALONE);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ops_model_run(data, size);
  return 0;
}
