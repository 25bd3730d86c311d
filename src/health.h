/* Shared by the sync and async health probes. Internal. */
#ifndef CACHET_HEALTH_H
#define CACHET_HEALTH_H

#include <stddef.h>

/* Copy the value of `name:` from an INFO reply into out (NUL-terminated,
 * truncated to fit; "" when absent). Returns 1 if the field was found. */
int cachet_info_field(const char *info, size_t len, const char *name,
                      char *out, size_t outsz);

#endif
