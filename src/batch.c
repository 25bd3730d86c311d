/* cachet_mget and cachet_mset: the public calls. Every entry is checked
 * before anything is sent (EINVAL names the entry); the batches are the
 * machines' (op_mget.c, op_mset.c), run on the calling thread. */
#include <stdlib.h>

#include "entry.h"
#include "error.h"
#include "op_batch.h"
#include "run.h"

static void fail_all(cachet_entry *e, size_t n, int rc) {
  for (size_t i = 0; e != NULL && i < n; i++)
    e[i].status = rc;
}

int cachet_mget(cachet *c, cachet_entry *entries, size_t n) {
  cachet_error_clear();
  if (n > 0 && entries == NULL)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL, "entries is NULL but n is %zu", n));
  for (size_t i = 0; i < n; i++) {
    entries[i].out = NULL;
    entries[i].outlen = 0;
    entries[i].status = CACHET_OK;
  }
  int rc = cachet_check_batch(c, entries, n, 0);
  if (rc != CACHET_OK) {
    fail_all(entries, n, rc);
    return cachet_result(c, rc);
  }
  if (n == 0)
    return CACHET_OK;
  cachet_op_mget x;
  if ((rc = cachet_op_mget_init(&x, c, entries, n)) == CACHET_OK)
    rc = cachet_run(c, &x.op);
  else
    fail_all(entries, n, rc);
  x.op.k->free(&x.op);
  /* An entry's own error was counted when it was set. */
  return cachet_batch_fatal(rc) || rc == CACHET_EINVAL ? cachet_result(c, rc)
                                                       : rc;
}

int cachet_mset(cachet *c, cachet_entry *entries, size_t n) {
  cachet_error_clear();
  int rc = cachet_check_batch(c, entries, n, 1);
  if (rc != CACHET_OK) {
    fail_all(entries, n, rc);
    return cachet_result(c, rc);
  }
  for (size_t i = 0; i < n; i++)
    entries[i].status = CACHET_OK;
  if (n == 0)
    return CACHET_OK;
  cachet_op_mset x;
  if ((rc = cachet_op_mset_init(&x, c, entries, n)) == CACHET_OK)
    rc = cachet_run(c, &x.op);
  else
    fail_all(entries, n, rc);
  x.op.k->free(&x.op);
  return cachet_batch_fatal(rc) ? cachet_result(c, rc) : rc;
}
