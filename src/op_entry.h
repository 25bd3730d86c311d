/* The entry machine: one entry written (set_tags, staged when large, or an
 * untagged plain SET followed by untag), its old tags dropped, or deleted.
 * Internal; see op.h for the interface and docs/DESIGN.md for the scripts'
 * contracts. */
#ifndef CACHET_OP_ENTRY_H
#define CACHET_OP_ENTRY_H

#include "op.h"

typedef struct cachet_op_entry {
  cachet_op op;
  int mode; /* ENTRY_* in op_entry.c */
  void *key;
  size_t keylen;
  unsigned bucket;
  cachet_key vk, mk, sk;
  /* The tag names the script is given (owned): the new tags first (nnew of
   * them), then old ones the entry's tag set or a retag reply named. */
  char **names;
  size_t ntags, nnew, cap;
  uint8_t *blob; /* the sealed envelope */
  size_t bloblen;
  int64_t ttl_ms;
  const char *prune_cap;
  int staged, attempt;
  int failed;       /* the status of a failed staged write, being unstaged */
  char detail[512]; /* ... and its detail */
} cachet_op_entry;

/*
 * A write of `val` under `key` with `tags`, sealed now (the machine owns
 * copies of everything). Untagged and
 * below CACHET_STAGE_MIN: a plain SET with the tag set read in the same
 * round trip, then untag.lua only when the entry had tags. Otherwise
 * set_tags.lua, the envelope staged first when large. Returns CACHET_OK,
 * or EINVAL (cachet_check_write, or the envelope) or ENOMEM with nothing to
 * run (and nothing to free).
 * The machine's result: CACHET_OK, or an error.
 */
int cachet_op_entry_write(cachet_op_entry *x, cachet *c, const void *key,
                          size_t keylen, const void *val, size_t len,
                          int64_t ttl_ms, const char *const *tags,
                          size_t ntags);

/* A delete: CACHET_OK if the value existed, CACHET_MISS if not. The key
 * is checked (EINVAL). */
int cachet_op_entry_delete(cachet_op_entry *x, cachet *c, const void *key,
                           size_t keylen);

/* Only untag.lua for an entry a plain SET of `blob` (the envelope it
 * stored) just wrote: its tag set and memberships go unless a later write
 * owns the entry. `names` are the tags read from its tag set (pointers into
 * a reply; copied). For mset's plain path. */
int cachet_op_entry_untag(cachet_op_entry *x, cachet *c, const void *key,
                          size_t keylen, const uint8_t *blob, size_t bloblen,
                          const redisReply *names);

#endif
