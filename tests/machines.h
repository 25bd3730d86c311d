/* Room for any operation machine (src/op_*.c), for code that drives
 * machines of several kinds itself: tests/unit/test_machines.c and
 * fuzz/server_replies_fuzzer.c. `op` is the shape every machine starts
 * with (op.h). */
#ifndef CACHET_TEST_MACHINES_H
#define CACHET_TEST_MACHINES_H

#include "op_batch.h"
#include "op_entry.h"
#include "op_evict.h"
#include "op_gos.h"
#include "op_health.h"
#include "op_key.h"
#include "op_lock.h"
#include "op_scan.h"

typedef union test_machine {
  cachet_op op;
  cachet_op_entry entry;
  cachet_op_key key;
  cachet_op_lock lock;
  cachet_op_gos gos;
  cachet_op_evict evict;
  cachet_op_scan scan;
  cachet_op_mget mget;
  cachet_op_mset mset;
  cachet_op_health health;
  cachet_op_info info;
} test_machine;

#endif
