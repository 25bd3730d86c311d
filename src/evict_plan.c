/* Chunk planning for tag eviction (evict.h): pure, shared by the sync and
 * async drivers. */
#include "evict.h"

#include <stdlib.h>
#include <string.h>

size_t cachet_evict_take(const size_t *ntags, size_t n, size_t *tags) {
  size_t taken = 0, ops = 0;
  *tags = 0;
  for (; taken < n; taken++) {
    size_t cost = 2 + ntags[taken];
    if (taken > 0 && ops + cost > CACHET_EVICT_OPS)
      break;
    ops += cost;
    *tags += ntags[taken];
  }
  return taken;
}

static int name_cmp(const void *a, const void *b) {
  const cachet_name *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int d = memcmp(x->s, y->s, n);
  if (d != 0)
    return d;
  return (x->len > y->len) - (x->len < y->len);
}

size_t cachet_evict_others(cachet_name *names, size_t n, const char *tag,
                           size_t taglen) {
  size_t kept = 0;
  for (size_t i = 0; i < n; i++)
    if (names[i].len != taglen || memcmp(names[i].s, tag, taglen) != 0)
      names[kept++] = names[i];
  if (kept > 1)
    qsort(names, kept, sizeof *names, name_cmp);
  size_t u = 0;
  for (size_t i = 0; i < kept; i++)
    if (u == 0 || name_cmp(&names[u - 1], &names[i]) != 0)
      names[u++] = names[i];
  return u;
}
