/* Per-handle counters. Internal. Relaxed atomics: each counter is exact, a
 * snapshot is not a consistent cut across counters (documented). */
#ifndef CACHET_METRICS_H
#define CACHET_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "cachet.h"

typedef struct cachet_counters {
  _Atomic uint64_t hits;
  _Atomic uint64_t misses;
  _Atomic uint64_t expired_envelopes;
  _Atomic uint64_t writes;
  _Atomic uint64_t deletes;
  _Atomic uint64_t clears;
  _Atomic uint64_t tag_evictions;
  _Atomic uint64_t stampede_waits;
  _Atomic uint64_t lock_acquisitions;
  _Atomic uint64_t lock_contentions;
  _Atomic uint64_t script_reloads;
  _Atomic uint64_t errors[CACHET_ERROR_COUNT + 1];
} cachet_counters;

#define CACHET_COUNT(c, field, n)                                              \
  atomic_fetch_add_explicit(&(c)->counters.field, (uint64_t)(n),               \
                            memory_order_relaxed)

#endif
