/* Shared by the sync and async health probes. Internal. */
#ifndef CACHET_HEALTH_H
#define CACHET_HEALTH_H

#include <stddef.h>

#include "cachet.h"

/* Copy the value of `name:` from an INFO reply into out (NUL-terminated,
 * truncated to fit; "" when absent). Returns 1 if the field was found. */
int cachet_info_field(const char *info, size_t len, const char *name,
                      char *out, size_t outsz);

/* Fill in the verdict from the probed fields (ping, version, scripts_loaded,
 * maxmemory_policy): scripts_total, policy_warning, healthy and message.
 * `down` is NULL, or a description of masters that did not answer, which
 * makes the result unhealthy and leads the message. Only noeviction keeps
 * cachet's index and lock keys safe; missing scripts are reported but are
 * not unhealthy (they load on first use). */
void cachet_health_verdict(cachet_health *h, const char *down);

#endif
