/* cachet_get_or_set: the public call. The protocol is the machine's
 * (op_gos.c), run on the calling thread; the loader runs there too, without
 * a pooled connection, while run.c renews the lease. */
#include "error.h"
#include "op_gos.h"
#include "run.h"

int cachet_get_or_set(cachet *c, const void *key, size_t keylen,
                      cachet_loader_fn loader, void *ud, int64_t ttl_ms,
                      const char *const *tags, size_t ntags, void **val,
                      size_t *len) {
  *val = NULL;
  *len = 0;
  cachet_error_clear();
  int rc;
  cachet_op_gos x;
  if ((rc = cachet_op_gos_init(&x, c, key, keylen, loader, ud, ttl_ms, tags,
                               ntags)) != CACHET_OK)
    return cachet_result(c, rc);
  rc = cachet_run(c, &x.op);
  if (rc == CACHET_OK) {
    *val = x.val;
    *len = x.len;
    x.val = NULL;
  }
  x.op.k->free(&x.op);
  return cachet_result(c, rc);
}
