/* What cachet's own tools may use beyond cachet.h. Internal.
 *
 * The CLI (tools/cli) includes cachet.h and this header, nothing else from
 * src/: these few calls are what an operator's tool needs that an
 * application does not (talking to the same server directly, naming a key
 * the library derives, timing the envelope alone). They follow cachet.h's
 * conventions; none is stable API. */
#ifndef CACHET_TOOL_H
#define CACHET_TOOL_H

#include <stddef.h>
#include <stdint.h>

#include "cachet.h"

/* Where and how the handle connects, as configured (borrowed strings, valid
 * while the handle lives): for a tool's own raw connection. */
typedef struct cachet_tool_server {
  const char *host; /* NULL with a unix socket */
  int port;
  const char *unix_path;
  const char *username, *password;
  int db;
  int timeout_ms;
  int tls, tls_insecure; /* TLS is on; and unverified */
} cachet_tool_server;
void cachet_tool_server_get(const cachet *c, cachet_tool_server *out);

/* 1 if the handle has a keyring (seals and verifies), else 0. */
int cachet_tool_sealed(const cachet *c);

/* The Redis name of lock `name`'s fencing counter, which outlives the lock
 * (malloc'd, NUL-terminated; the caller frees). EINVAL, ENOMEM. */
int cachet_tool_fence_key(const cachet *c, const char *name, char **out,
                          size_t *outlen);

/* The bucket (0 .. 255) of a user key: keys of one bucket share a hash
 * slot, and a batch of them one server. */
unsigned cachet_tool_bucket(const void *key, size_t keylen);

/* The checks cachet_mset makes of one entry, without a server: EINVAL with
 * the detail, or CACHET_OK. */
int cachet_tool_check_entry(const cachet *c, const cachet_entry *e);

/* Seal `val` in an envelope bound to `redis_key` and open it again, with
 * the handle's keyring (MAC) or without: what each get and set costs in
 * CPU, for `cachet bench`. */
int cachet_tool_seal_open(const cachet *c, const char *redis_key,
                          const void *val, size_t len);

#endif
