/* Shared by the sync and async health probes. Internal. */
#ifndef CACHET_HEALTH_H
#define CACHET_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "cachet.h"

/* Copy the value of `name:` from an INFO reply into out (NUL-terminated,
 * truncated to fit; "" when absent). Returns 1 if the field was found. */
int cachet_info_field(const char *info, size_t len, const char *name,
                      char *out, size_t outsz);

/* The oldest Redis cachet's scripts run on: SET ... PXAT is 6.2. */
#define CACHET_REDIS_MIN_VERSION 60200

/* "7.0.15" as 70015, for comparing versions as numbers ("10.0.0" is newer
 * than "7.0.15", which strcmp would not say). 0 when unparsable. */
int cachet_version_num(const char *v);

/* From an INFO memory reply: used_memory, maxmemory, and maxmemory_policy
 * when `policy` is set (the fallback when CONFIG GET is refused). */
void cachet_health_memory(cachet_health *h, const char *info, size_t len,
                          int policy);

/* From an INFO errorstats reply: the OOM refusals since the server
 * started (errorstat_OOM:count=N), 0 when none. */
uint64_t cachet_health_oom_count(const char *info, size_t len);

/* The refusals since the handle's previous probe, and remember `total` for
 * the next one: 0 on the first probe. Thread-safe. */
uint64_t cachet_health_oom_since(cachet *c, uint64_t total);

/* Fill in the verdict from the probed fields (ping, version, scripts_loaded,
 * maxmemory_policy, memory): scripts_total, policy_warning, healthy,
 * degraded and message. `down` is NULL, or a description of masters that
 * did not answer, which makes the result unhealthy and leads the message.
 * A server older than CACHET_REDIS_MIN_VERSION is unhealthy. Only
 * noeviction keeps cachet's index and lock keys safe; missing scripts are
 * reported but are not unhealthy (they load on first use). `oom_new`
 * refusals since the previous probe, or memory at 90% of maxmemory, make
 * the result degraded. */
void cachet_health_verdict(cachet_health *h, const char *down,
                           uint64_t oom_new);

#endif
