/* clear: remove every cache entry under the handle's prefix.
 *
 * Never FLUSHDB or FLUSHALL: a database is often shared. C drives SCAN with
 * MATCH <escaped prefix>{??}[vmte]:* and hands each page to clear_chunk.lua,
 * which checks every key's layout again and UNLINKs it, so a page is one
 * bounded script call and Redis never stalls. Only the cache data kinds go
 * (v value, m tag set, t index, e index being evicted); locks (l, f, s) are
 * left alone. The prefix is glob-escaped: a prefix holding * ? [ ] or \ must
 * never match another namespace's keys.
 *
 * In a cluster, each master is scanned in turn, and each page is cut per
 * bucket, so that every clear_chunk call touches one hash slot; each call is
 * atomic on its shard, the clear as a whole is not.
 *
 * Cross-call semantics: entries written while clear runs may survive it (SCAN
 * only promises the keys that existed throughout). A dry run counts the value
 * keys SCAN returns; SCAN may return a key twice while the keyspace is being
 * resized, so under concurrent writes the count is an estimate. */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "error.h"
#include "keys.h"
#include "script.h"

/* SCAN COUNT hint and the most keys one clear_chunk call may delete. */
#define CLEAR_SCAN_COUNT "1000"
#define CLEAR_KEYS 256

static void progress_note(cachet *c, uint64_t done) {
  if (c->progress != NULL)
    c->progress(c->progress_ud, "clear", done);
}

/* Delete up to CLEAR_KEYS keys in one script call; add the entries removed
 * to *total. */
static int clear_batch(cachet *c, cachet_conn *cn, const char **keys,
                       size_t *lens, size_t n, uint64_t *total) {
  /* keys/lens have room for one more slot: ARGV[1], the prefix. */
  keys[n] = c->cfg.prefix;
  lens[n] = c->cfg.prefixlen;
  redisReply *r = NULL;
  int rc = cachet_script_run(c, cn, CACHET_SCRIPT_CLEAR_CHUNK, (int)n,
                             (int)n + 1, keys, lens, &r);
  if (rc != CACHET_OK)
    return rc;
  if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
    freeReplyObject(r);
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "clear_chunk: unexpected reply");
  }
  *total += (uint64_t)r->integer;
  freeReplyObject(r);
  return CACHET_OK;
}

/* The bucket of a data key (its {bb} hash tag), as a number. */
static unsigned key_bucket(const cachet *c, const redisReply *k) {
  unsigned b = 0;
  for (size_t i = c->cfg.prefixlen + 1; i <= c->cfg.prefixlen + 2; i++) {
    char ch = k->str[i];
    b = b * 16 + (unsigned)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
  }
  return b;
}

/* One SCAN page: count its value keys (dry run) or delete its data keys.
 * In a cluster a script call may only touch one slot, so the page is cut
 * per bucket (one hash tag, hence one slot): `bucket` selects the keys of
 * one bucket, or -1 for all of them (a single server). */
static int clear_page(cachet *c, cachet_conn *cn, const redisReply *page,
                      int dry_run, int bucket, const char **keys, size_t *lens,
                      uint64_t *total) {
  size_t n = 0;
  for (size_t i = 0; i < page->elements; i++) {
    const redisReply *k = page->element[i];
    char kind = cachet_data_kind(c, k->str, k->len);
    if (kind == 0 || (bucket >= 0 && key_bucket(c, k) != (unsigned)bucket))
      continue;
    if (dry_run) {
      if (kind == CACHET_KIND_VALUE)
        (*total)++;
      continue;
    }
    keys[n] = k->str;
    lens[n] = k->len;
    if (++n == CLEAR_KEYS) {
      int rc = clear_batch(c, cn, keys, lens, n, total);
      if (rc != CACHET_OK)
        return rc;
      n = 0;
    }
  }
  if (n > 0)
    return clear_batch(c, cn, keys, lens, n, total);
  return CACHET_OK;
}

/* SCAN one master (the server, standalone) to the end. */
static int clear_node(cachet *c, cachet_conn *cn, int node, const char *pat,
                      int dry_run, const char **keys, size_t *lens,
                      uint64_t *total) {
  int clustered = cachet_conn_clustered(cn);
  char cursor[32] = "0";
  int rc;
  do {
    redisReply *r = NULL;
    const char *argv[6] = {"SCAN", cursor,  "MATCH",
                           pat,    "COUNT", CLEAR_SCAN_COUNT};
    size_t alens[6] = {
        4, strlen(cursor), 5, strlen(pat), 5, sizeof CLEAR_SCAN_COUNT - 1};
    if ((rc = cachet_conn_command_node(cn, node, 6, argv, alens, &r)) !=
        CACHET_OK)
      break;
    int shape = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                r->element[0]->type == REDIS_REPLY_STRING &&
                r->element[0]->len < sizeof cursor &&
                r->element[1]->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; shape && i < r->element[1]->elements; i++)
      shape = r->element[1]->element[i]->type == REDIS_REPLY_STRING;
    if (!shape) {
      freeReplyObject(r);
      cachet_conn_break(cn);
      rc = cachet_fail(CACHET_EPROTO, "SCAN: unexpected reply");
      break;
    }
    memcpy(cursor, r->element[0]->str, r->element[0]->len);
    cursor[r->element[0]->len] = '\0';
    if (!clustered || dry_run) {
      rc = clear_page(c, cn, r->element[1], dry_run, -1, keys, lens, total);
    } else {
      /* The buckets present in this page, each cleared on its own. */
      unsigned char seen[CACHET_BUCKETS] = {0};
      const redisReply *page = r->element[1];
      for (size_t i = 0; i < page->elements; i++)
        if (cachet_data_kind(c, page->element[i]->str, page->element[i]->len))
          seen[key_bucket(c, page->element[i])] = 1;
      for (unsigned b = 0; rc == CACHET_OK && b < CACHET_BUCKETS; b++)
        if (seen[b])
          rc = clear_page(c, cn, page, 0, (int)b, keys, lens, total);
    }
    freeReplyObject(r);
    if (rc == CACHET_OK)
      progress_note(c, *total);
  } while (rc == CACHET_OK && strcmp(cursor, "0") != 0);
  return rc;
}

int cachet_clear(cachet *c, int dry_run, uint64_t *removed) {
  cachet_error_clear();
  if (removed != NULL)
    *removed = 0;
  char *pat = NULL;
  int rc = cachet_scan_pattern(c, CACHET_CLEAR_TAIL, &pat);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  const char **keys = malloc((CLEAR_KEYS + 1) * sizeof *keys);
  size_t *lens = malloc((CLEAR_KEYS + 1) * sizeof *lens);
  cachet_conn *cn = NULL;
  if (keys == NULL || lens == NULL) {
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
    goto done;
  }
  if ((rc = cachet_conn_acquire(c, &cn)) != CACHET_OK)
    goto done;
  int nodes = cachet_conn_nodes(cn);
  if (nodes < 0) {
    rc = nodes;
    goto done;
  }

  /* A cluster is cleared one master at a time, each with its own SCAN. */
  uint64_t total = 0;
  for (int node = 0; rc == CACHET_OK && node < nodes; node++)
    rc = clear_node(c, cn, node, pat, dry_run, keys, lens, &total);

  if (rc == CACHET_OK) {
    if (!dry_run)
      CACHET_COUNT(c, clears, 1);
    if (removed != NULL)
      *removed = total;
  }
done:
  cachet_conn_release(c, cn);
  free(lens);
  free(keys);
  free(pat);
  return cachet_result(c, rc);
}
