/* One entry: its checks, staging, opening, and the sync write and delete.
 * Internal; used by the public set/delete, batch, get_or_set and write
 * policies, and by the machines. */
#ifndef CACHET_ENTRY_H
#define CACHET_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "keys.h"

/* The prune cap to pass to set_tags for the next write: 64 on one write in
 * 8, 0 otherwise. Pruning on every write would cost each write a range
 * query per tag; one in 8 with a larger cap removes as many expired members
 * as writes can add. Returns a static string. */
const char *cachet_prune_cap(cachet *c);

/* Check a user key against the configured limits (EINVAL). */
int cachet_check_key(const cachet *c, const void *key, size_t keylen);
/* Check tag names (EINVAL): each non-NULL, non-empty, at most
 * max_key_size bytes. */
int cachet_check_tag_names(const cachet *c, const char *const *tags,
                           size_t ntags);
/* ... and for an entry's tags, their count <= max_tags too. */
int cachet_check_tags(const cachet *c, const char *const *tags, size_t ntags);
/* Check ttl >= 0 and the value size (EINVAL). */
int cachet_check_value(const cachet *c, size_t len, int64_t ttl_ms);

/* What every write is checked for (key, value, TTL, tags; a NULL value
 * must be empty): EINVAL naming the first problem. */
int cachet_check_write(const cachet *c, const void *key, size_t keylen,
                       const void *val, size_t len, int64_t ttl_ms,
                       const char *const *tags, size_t ntags);
/* Check every entry of a batch before anything is sent: the keys, and for
 * a write (`write` = 1) the values, TTLs and tags too. The detail of a
 * failure reads "entry N: <why> (nothing was written)" or "(... read)". */
int cachet_check_batch(const cachet *c, const cachet_entry *entries, size_t n,
                       int write);

/* Envelopes of at least this many bytes are staged: written with a plain
 * SET to a `w` key, then renamed into place by set_tags, so that the script
 * never carries the value. Redis copies script arguments more than once
 * (about 7.5 ms per MiB measured on Redis 7.0), while SET and RENAME cost
 * microseconds at any size: 64 KiB through a script is about 0.5 ms. */
#define CACHET_STAGE_MIN ((size_t)64 << 10)

/* A fresh staging key for `key`: kind `w` in its bucket (so the same slot),
 * named with 64 random bits so that concurrent writers of one key never
 * take each other's value. Caller frees it with cachet_key_free. */
int cachet_stage_key(const cachet *c, unsigned bucket, const void *key,
                     size_t keylen, cachet_key *sk);
/* The command that stages `blob` at `sk`: SET with a TTL that bounds what a
 * writer that dies before set_tags leaves behind. Pointers are borrowed. */
void cachet_stage_command(const cachet_key *sk, const uint8_t *blob,
                          size_t bloblen, const char *argv[5], size_t lens[5]);

/* One entry machine (op_entry.h) run to its end on the calling thread:
 * the write of cachet_set_tags and the delete of cachet_delete (CACHET_OK
 * existed, CACHET_MISS not). Arguments are checked (EINVAL). */
int cachet_write_entry(cachet *c, const void *key, size_t keylen,
                       const void *val, size_t len, int64_t ttl_ms,
                       const char *const *tags, size_t ntags);
int cachet_delete_entry(cachet *c, const void *key, size_t keylen);

/* Open (verify, decrypt) a stored blob in place. `blob` must be a malloc'd
 * buffer of len+1 bytes; on CACHET_OK it is moved to *val with the payload
 * at its start and a NUL after it (ownership passes to *val). On any other
 * status blob is freed. Counts hits/misses. `expires_ms` (may be NULL)
 * gets the envelope's expiry (0 = none) on CACHET_OK. */
int cachet_entry_open(cachet *c, const char *rkey, size_t rkeylen, char *blob,
                      size_t len, void **val, size_t *outlen,
                      int64_t *expires_ms);

#endif
