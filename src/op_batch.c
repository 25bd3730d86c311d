/* What mget and mset share (op_batch.h): the windows and the statuses.
 *
 * Both work in windows of CACHET_MSET_WINDOW entries: a window's commands
 * go out as one pipeline, then its replies are read, so memory stays
 * bounded whatever the batch size.
 *
 * Statuses. Every entry gets its own. The call returns CACHET_OK, or the
 * first error that is about the server or the connection rather than about
 * one stored value:
 *  - ECONN, ETIMEDOUT, EPROTO, ENOMEM, EINTERNAL stop the batch; entries not
 *    carried out get that status too;
 *  - ESERVER (an error reply: OOM, READONLY, WRONGTYPE ...) is that entry's
 *    status, the batch goes on, and the call returns the first one;
 *  - ECORRUPT, EINTEGRITY, EVERSION (a stored value that fails to decode or
 *    verify) are only the entry's status. */
#include "op_batch.h"

#include <stdio.h>

#include "error.h"

int cachet_batch_fatal(int rc) {
  return rc == CACHET_ECONN || rc == CACHET_ETIMEDOUT || rc == CACHET_EPROTO ||
         rc == CACHET_ENOMEM || rc == CACHET_EINTERNAL;
}

static int is_value_error(int rc) {
  return rc == CACHET_ECORRUPT || rc == CACHET_EINTEGRITY ||
         rc == CACHET_EVERSION;
}

void cachet_batch_entry_error(cachet *c, cachet_entry *e, int rc, int *first,
                              char *detail, size_t dsz) {
  e->status = cachet_result(c, rc);
  if (!is_value_error(rc) && *first == CACHET_OK) {
    *first = rc;
    snprintf(detail, dsz, "%s", cachet_last_error());
  }
}

int cachet_batch_finish(cachet_out *out, int first, const char *detail) {
  if (first != CACHET_OK)
    return cachet_op_done(out, cachet_fail(first, "%s", detail));
  cachet_error_clear();
  return cachet_op_done(out, CACHET_OK);
}
