/* Model-based fuzzing of cachet's operations against a real Redis.
 *
 * The engine behind ops_model_fuzzer (one server) and
 * ops_model_cluster_fuzzer (a 3-master Redis Cluster). An input decodes into
 * at most OPS_MAX operations over a small alphabet of keys, tags and lock
 * names, so that they collide. Each operation runs through the public API and
 * through a reference model of what it must return; any difference fails the
 * input. After the sequence, Redis's raw keyspace is read with plain commands
 * and compared with the model key by key: values, tag sets and index
 * memberships, locks and fences, and the documented key layout. See
 * docs/FUZZING.md for the operations and the oracle.
 *
 * The server (or cluster) is started once per process by ops_model_init and
 * stopped at exit; every input starts on an empty keyspace (FLUSHALL) with
 * fresh handles. */
#ifndef CACHET_FUZZ_OPS_MODEL_H
#define CACHET_FUZZ_OPS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define OPS_MAX 64

typedef enum { OPS_STANDALONE, OPS_CLUSTER } ops_mode;

/* Start the private server or cluster. Aborts when it cannot. */
void ops_model_init(ops_mode mode);

/* Run one input. Aborts (FUZZ_ASSERT) on the first disagreement between
 * cachet and the model, after printing the operations that led to it. */
void ops_model_run(const uint8_t *data, size_t size);

#endif
