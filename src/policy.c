/* Write policies: write-through and write-behind, around the caller's origin
 * writer.
 *
 * Both keep one promise: after a failure, the cache does not hold a value
 * the origin may not have. Write-through runs the writer first, so a writer
 * failure leaves the cache as it was (it still matches the origin); when
 * the cache write fails after the origin took the value, the old cached
 * value is stale, so the entry is deleted. Write-behind writes the cache
 * first, so a writer failure leaves a value the origin refused: the entry
 * is deleted. The deletion is best effort; when it fails too, the error
 * detail says so. */
#include <stdio.h>
#include <string.h>

#include "entry.h"
#include "error.h"

#define DETAIL_MAX 512

/* Delete the entry over a freshly borrowed connection: the one the failed
 * write used may be broken (it is closed when returned, and the borrow
 * reconnects). Returns the delete's status; MISS counts as done. */
static int remove_entry(cachet *c, const void *key, size_t keylen) {
  int rc = cachet_delete_entry(c, key, keylen);
  return rc == CACHET_MISS ? CACHET_OK : rc;
}

/* Both policies: the origin first (through) or the cache first (behind),
 * and after a failure past the first write, the entry removed. */
static int write_both(cachet *c, int behind, const void *key, size_t keylen,
                      const void *val, size_t len, cachet_writer_fn writer,
                      void *ud, int64_t ttl_ms, const char *const *tags,
                      size_t ntags) {
  cachet_error_clear();
  int rc = cachet_check_write(c, key, keylen, val, len, ttl_ms, tags, ntags);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  if (val == NULL)
    val = "";
  int wrc = behind ? 0 : writer(ud, key, keylen, val, len);
  if (wrc != 0)
    return cachet_result(
        c, cachet_fail(CACHET_EWRITER,
                       "write-through: writer returned %d; nothing was "
                       "cached",
                       wrc));
  rc = cachet_write_entry(c, key, keylen, val, len, ttl_ms, tags, ntags);
  if (rc != CACHET_OK && behind)
    return cachet_result(c, rc);
  if (rc == CACHET_OK && behind)
    wrc = writer(ud, key, keylen, val, len);
  if (rc == CACHET_OK && wrc == 0)
    return CACHET_OK;

  /* Through: the origin has the new value and the cache may hold an old
   * one; the write's error stays the result. Behind: the cache holds a
   * value the origin refused. */
  char saved[DETAIL_MAX];
  snprintf(saved, sizeof saved, "%s", cachet_last_error());
  int drc = remove_entry(c, key, keylen);
  if (behind && drc == CACHET_OK)
    rc = cachet_fail(CACHET_EWRITER,
                     "write-behind: writer returned %d; the cache entry was "
                     "removed",
                     wrc);
  else if (behind)
    rc = cachet_fail(CACHET_EWRITER,
                     "write-behind: writer returned %d; removing the cache "
                     "entry failed (%s), so the cache may hold a value the "
                     "origin refused until it expires",
                     wrc, cachet_strerror(drc));
  else if (drc == CACHET_OK)
    (void)cachet_fail(rc,
                      "write-through: the origin was written but the "
                      "cache write failed (the old entry was removed): "
                      "%s",
                      saved);
  else
    (void)cachet_fail(rc,
                      "write-through: the origin was written but the "
                      "cache write failed: %s; removing the old entry "
                      "failed too (%s), so it may be stale until it "
                      "expires",
                      saved, cachet_strerror(drc));
  return cachet_result(c, rc);
}

int cachet_write_through(cachet *c, const void *key, size_t keylen,
                         const void *val, size_t len, cachet_writer_fn writer,
                         void *ud, int64_t ttl_ms, const char *const *tags,
                         size_t ntags) {
  return write_both(c, 0, key, keylen, val, len, writer, ud, ttl_ms, tags,
                    ntags);
}

int cachet_write_behind(cachet *c, const void *key, size_t keylen,
                        const void *val, size_t len, cachet_writer_fn writer,
                        void *ud, int64_t ttl_ms, const char *const *tags,
                        size_t ntags) {
  return write_both(c, 1, key, keylen, val, len, writer, ud, ttl_ms, tags,
                    ntags);
}
