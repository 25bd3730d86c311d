/* One command on an entry's value key: GET, EXISTS or PTTL. Internal.
 *
 * A machine of one step (op.h), so that both APIs route, time out and
 * decode a single read the same way; the decoding is op.c's. With a near
 * cache (near.h), GET is answered from it without a step when it holds a
 * copy, and a GET that goes to the server fills it. */
#ifndef CACHET_OP_KEY_H
#define CACHET_OP_KEY_H

#include "op.h"

/* CACHET_KEY_RAW: GET, the stored bytes returned as they are (inspect). */
enum { CACHET_KEY_GET, CACHET_KEY_EXISTS, CACHET_KEY_PTTL, CACHET_KEY_RAW };

typedef struct cachet_op_key {
  cachet_op op;
  int cmd; /* CACHET_KEY_* */
  cachet_key vk;
  void *val; /* GET, CACHET_OK: the value (NUL after len), owned until taken */
  size_t len;
  int64_t ttl_ms; /* PTTL, CACHET_OK: ms left, or -1 for no expiry */
  uint64_t ticket;    /* GET: the near cache's fill ticket, or 0 */
  int64_t expires_ms; /* GET, CACHET_OK: the envelope's expiry */
  /* The command, built in place: a read is the hot path. */
  cachet_cmd one;
  const char *argv[2];
  size_t lens[2];
} cachet_op_key;

/* Checks the key (EINVAL) and builds its value key (ENOMEM); nothing to
 * run then. The result: CACHET_OK, CACHET_MISS (absent, expired, or for
 * GET an envelope past its expiry), or an error. */
int cachet_op_key_init(cachet_op_key *x, cachet *c, int cmd, const void *key,
                       size_t keylen);

#endif
