/* Redis key names. Internal. See docs/DESIGN.md, "Key layout".
 *
 *   <prefix>{<bb>}<kind>:<name>
 *
 * <bb> is the entry's bucket, two lowercase hex digits of a hash of the user
 * key (or lock name). Every key of one entry, and its tag index keys for
 * that bucket, share the hash tag {<bb>}, so each script touches one cluster
 * slot, while the namespace spreads over 256 slots. The kind byte keeps user
 * keys apart from internal keys: a user key can never name an index. */
#ifndef CACHET_KEYS_H
#define CACHET_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "handle.h"

#define CACHET_BUCKETS 256u

#define CACHET_KIND_VALUE 'v'    /* the envelope */
#define CACHET_KIND_TAGSET 'm'   /* SET: the tags an entry carries */
#define CACHET_KIND_INDEX 't'    /* ZSET: members of a tag in a bucket */
#define CACHET_KIND_EVICTING 'e' /* ZSET: a tag index being evicted */
#define CACHET_KIND_LOCK 'l'     /* user lock */
#define CACHET_KIND_FENCE 'f'    /* fencing counter of a lock */
#define CACHET_KIND_STAMPEDE 's' /* get_or_set lock of an entry */
#define CACHET_KIND_META 'x'     /* namespace metadata */
#define CACHET_KIND_STAGED 'w'   /* a large value on its way to v */

/* A key name with small-buffer storage; no allocation for short keys. */
typedef struct cachet_key {
  char *buf;
  size_t len;
  char inl[160];
} cachet_key;

/* FNV-1a of the name, mod CACHET_BUCKETS. Stable forever: it is part of the
 * stored layout. */
unsigned cachet_bucket(const void *name, size_t len);

/* Build <prefix>{bb}<kind>:<name> into k. ENOMEM or OK. Free with
 * cachet_key_free. */
int cachet_key_build(const cachet *c, cachet_key *k, char kind, unsigned bucket,
                     const void *name, size_t len);
/* The same name written at `out`, which has room for prefixlen + 7 + len
 * bytes (a NUL after it); returns its length. */
size_t cachet_key_write(const cachet *c, char *out, char kind, unsigned bucket,
                        const void *name, size_t len);
void cachet_key_free(cachet_key *k);

/* The SCAN MATCH pattern of the handle's namespace: the prefix with its glob
 * metacharacters (* ? [ ] \) escaped, so that it matches only itself,
 * followed by `tail` (e.g. "{??}t:*"). *out is malloc'd, NUL-terminated. */
int cachet_scan_pattern(const cachet *c, const char *tail, char **out);

/* The kind of a cache data key of this namespace, "<prefix>{bb}<kind>:..."
 * with kind v, m, t or e (what clear removes), else 0. Mirrors the check in
 * clear_chunk.lua. */
char cachet_data_kind(const cachet *c, const char *s, size_t len);

/* What clear removes after the prefix: entries (values, tag sets), tag
 * indexes and evictions in progress. Locks and staged values stay. */
#define CACHET_CLEAR_TAIL "{??}[vmte]:*"

#endif
