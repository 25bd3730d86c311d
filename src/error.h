/* Thread-local error detail. Internal. */
#ifndef CACHET_ERROR_H
#define CACHET_ERROR_H

#include <stddef.h>

/* Record `status` and a printf-style detail for the calling thread, and
 * return `status`, so a failure path reads `return cachet_fail(...)`.
 * The detail is truncated to fit; it must never contain key material. */
int cachet_fail(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record a detail from a binary-safe server message (non-printable bytes are
 * escaped), e.g. the text of a Redis error reply. An empty message is
 * said to be one, so that no error is left without a detail. */
int cachet_fail_bytes(int status, const char *prefix, const char *msg,
                      size_t len);

/* Room for `need` elements of `size` bytes in the array at *(void **)pp of
 * capacity *cap (doubled, from 8): CACHET_OK, or ENOMEM with the array as it
 * was. Growing an array is where most ENOMEM comes from. */
int cachet_grow(void *pp, size_t *cap, size_t need, size_t size);

/* Forget the calling thread's detail. */
void cachet_error_clear(void);

/* Exit code the CLI uses for a status: 0 ok, 1 outcome, 2 usage/config,
 * 3 connection/server/timeout, 4 integrity/format. */
int cachet_status_exit_code(int status);

#endif
