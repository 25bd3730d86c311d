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

/* A cache data key of this namespace: "<prefix>{hh}<kind>:" with kind one of
 * v m t e. Returns the kind, or 0. Mirrors the check in clear_chunk.lua. */
static char data_kind(const cachet *c, const char *s, size_t len) {
  size_t p = c->cfg.prefixlen;
  if (len < p + 6 || memcmp(s, c->cfg.prefix, p) != 0 || s[p] != '{' ||
      s[p + 3] != '}' || s[p + 5] != ':')
    return 0;
  for (size_t i = p + 1; i <= p + 2; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  char k = s[p + 4];
  if (k == CACHET_KIND_VALUE || k == CACHET_KIND_TAGSET ||
      k == CACHET_KIND_INDEX || k == CACHET_KIND_EVICTING)
    return k;
  return 0;
}

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

/* One SCAN page: count its value keys (dry run) or delete its data keys. */
static int clear_page(cachet *c, cachet_conn *cn, const redisReply *page,
                      int dry_run, const char **keys, size_t *lens,
                      uint64_t *total) {
  size_t n = 0;
  for (size_t i = 0; i < page->elements; i++) {
    const redisReply *k = page->element[i];
    char kind = data_kind(c, k->str, k->len);
    if (kind == 0)
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

int cachet_clear(cachet *c, int dry_run, uint64_t *removed) {
  cachet_error_clear();
  if (removed != NULL)
    *removed = 0;
  char *esc = NULL;
  size_t esclen = 0;
  int rc = cachet_glob_escape(c->cfg.prefix, c->cfg.prefixlen, &esc, &esclen);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  static const char tail[] = "{??}[vmte]:*";
  char *pat = malloc(esclen + sizeof tail);
  const char **keys = malloc((CLEAR_KEYS + 1) * sizeof *keys);
  size_t *lens = malloc((CLEAR_KEYS + 1) * sizeof *lens);
  cachet_conn *cn = NULL;
  if (pat == NULL || keys == NULL || lens == NULL) {
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
    goto done;
  }
  memcpy(pat, esc, esclen);
  memcpy(pat + esclen, tail, sizeof tail);
  if ((rc = cachet_conn_acquire(c, &cn)) != CACHET_OK)
    goto done;

  uint64_t total = 0;
  char cursor[32] = "0";
  do {
    redisReply *r = NULL;
    const char *argv[6] = {"SCAN", cursor,  "MATCH",
                           pat,    "COUNT", CLEAR_SCAN_COUNT};
    size_t alens[6] = {
        4, strlen(cursor), 5, strlen(pat), 5, sizeof CLEAR_SCAN_COUNT - 1};
    if ((rc = cachet_conn_command(cn, 6, argv, alens, &r)) != CACHET_OK)
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
    rc = clear_page(c, cn, r->element[1], dry_run, keys, lens, &total);
    freeReplyObject(r);
    if (rc == CACHET_OK)
      progress_note(c, total);
  } while (rc == CACHET_OK && strcmp(cursor, "0") != 0);

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
  free(esc);
  return cachet_result(c, rc);
}
