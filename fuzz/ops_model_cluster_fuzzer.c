/*
 * ops_model_cluster_fuzzer: ops_model_fuzzer's sequences and oracle against
 * a private 3-master Redis Cluster: the same input format, the same model.
 * What it adds is the routing: each entry's keys and its bucket's indexes
 * share one slot, fan-out (evict, clear, prune) crosses every master, a
 * killed connection may cut a fan-out part-way, and CLIENT KILL and SCRIPT
 * FLUSH hit every master.
 */
#include "fuzz_helpers.h"
#include "ops_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  ops_model_init(OPS_CLUSTER);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ops_model_run(data, size);
  return 0;
}
