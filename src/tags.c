/* cachet_evict_tags and cachet_prune: the public calls. The protocols are
 * the machines' (op_evict.c, op_scan.c), run on the calling thread. */
#include "error.h"
#include "op_evict.h"
#include "op_scan.h"
#include "run.h"

int cachet_evict_tags(cachet *c, const char *const *tags, size_t ntags,
                      uint64_t *evicted) {
  cachet_error_clear();
  if (evicted != NULL)
    *evicted = 0;
  cachet_op_evict x;
  int rc = cachet_op_evict_init(&x, c, tags, ntags);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  rc = cachet_run(c, &x.op);
  if (rc == CACHET_OK && evicted != NULL)
    *evicted = x.evicted;
  x.op.k->free(&x.op);
  return cachet_result(c, rc);
}

/* clear (prune = 0) or prune, to its end. */
static int run_scan(cachet *c, int prune, int dry_run, uint64_t *count) {
  cachet_error_clear();
  if (count != NULL)
    *count = 0;
  cachet_op_scan x;
  int rc = cachet_op_scan_init(&x, c, prune, dry_run, c->cfg.cluster);
  if (rc == CACHET_OK)
    rc = cachet_run(c, &x.op);
  if (rc == CACHET_OK && count != NULL)
    *count = x.count;
  x.op.k->free(&x.op);
  return cachet_result(c, rc);
}

int cachet_prune(cachet *c, uint64_t *pruned) {
  return run_scan(c, 1, 0, pruned);
}

int cachet_clear(cachet *c, int dry_run, uint64_t *removed) {
  return run_scan(c, 0, dry_run, removed);
}
