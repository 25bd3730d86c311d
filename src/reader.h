/* Bounds on what a server can make cachet buffer. Internal.
 *
 * hiredis 0.14's reader trusts the server: a bulk reply's length header is
 * believed and its body buffered whole before anything looks at it, and an
 * array header's element count is allocated at once. A compromised or
 * misconfigured server could make a client allocate without bound. cachet
 * never needs a reply larger than a sealed value of max_value_size, so the
 * connection layers (conn.c, async.c) check every reader they feed:
 *
 *  - a bulk string whose length header exceeds `bulk_max` is refused when
 *    its header arrives, before its body is read;
 *  - an array header of more than `array_max` elements is refused before
 *    hiredis allocates it (a wrapper around the reader's createArray);
 *  - the unparsed bytes of a reply in progress never exceed `bulk_max`
 *    plus one socket read.
 *
 * A refusal leaves the connection out of step: the caller breaks it and
 * reports CACHET_EPROTO with the reason. */
#ifndef CACHET_READER_H
#define CACHET_READER_H

#include <hiredis/read.h>
#include <stddef.h>

#include "config.h"

typedef struct cachet_reader_bound {
  size_t bulk_max;                       /* largest bulk string, in bytes */
  size_t array_max;                      /* most elements of one array */
  const redisReplyObjectFunctions *orig; /* hiredis's own functions */
  int refused;                           /* set once a limit was hit */
  char why[160];                         /* ... and which */
} cachet_reader_bound;

/* The limits that follow from a configuration: the sealed size of a
 * max_value_size value (at least 1 MiB, for INFO and the like), and 1M
 * elements per array (cachet's largest legitimate replies are SCAN pages of
 * about 1000 keys). */
void cachet_reader_limits(const cachet_config *cfg, cachet_reader_bound *b);

/* Make `r` refuse arrays beyond b->array_max. `b` must outlive the reader
 * (it becomes the reader's privdata). */
void cachet_reader_attach(redisReader *r, cachet_reader_bound *b);

/* Look at what `r` holds but has not parsed yet: 0 when it may go on
 * reading, -1 when a limit is exceeded (b->why says which). Call it before
 * feeding more bytes. */
int cachet_reader_check(const redisReader *r, cachet_reader_bound *b);

#endif
