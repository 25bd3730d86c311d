/* What a fuzz target's server answers: RESP written into a growing buffer,
 * either from a small grammar of hostile replies (any type, nesting, raw
 * bytes that may break the stream) or what Redis could plausibly answer to
 * one of cachet's commands. Shared by server_replies_fuzzer (which feeds
 * the machines directly) and wire_fuzzer (which serves them over a
 * socket). */
#ifndef CACHET_FUZZ_REPLIES_H
#define CACHET_FUZZ_REPLIES_H

#include <stddef.h>
#include <stdint.h>

#include "cachet_scripts.h"
#include "fuzz_helpers.h"
#include "op.h"

/* Arrays nest at most this deep in the grammar. */
#define REPLY_MAX_DEPTH 3

typedef struct reply_buf {
  char *p; /* malloc'd; the caller frees it */
  size_t len, cap;
} reply_buf;

void reply_put(reply_buf *b, const void *p, size_t n);
void reply_put_raw(reply_buf *b, const char *s);
/* A RESP header: a type byte and a number. */
void reply_put_head(reply_buf *b, char type, long long v);
void reply_put_bulk(reply_buf *b, const void *p, size_t n);
void reply_put_str(reply_buf *b, const char *s);

/* One reply from the grammar, its choices read from `in`. */
void reply_gen(fuzz_cursor *in, reply_buf *b, int depth);

/* What Redis could answer to `k`; `v` chooses among the answers (a hit or
 * a miss, a lock taken or not, a retag, ...). SCRIPT LOAD of an embedded
 * script answers its SHA1. */
void reply_plausible(reply_buf *b, const cachet_cmd *k, uint8_t v);

/* Is `k` the command `name` (exact, case-sensitive)? */
int reply_is(const cachet_cmd *k, const char *name);

/* The embedded script with this SHA1 (40 hex digits) or body; NULL if none. */
const cachet_script *reply_script_by_sha(const char *p, size_t n);
const cachet_script *reply_script_by_body(const char *p, size_t n);

#endif
