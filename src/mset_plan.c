/* mset's planner (mset_plan.h). */
#include "mset_plan.h"

#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "keys.h"

int cachet_mset_plan_alloc(cachet_mset_plan *p, const cachet_entry *e,
                           size_t n) {
  memset(p, 0, sizeof *p);
  p->cap = n < CACHET_MSET_WINDOW ? n : CACHET_MSET_WINDOW;
  /* A call never holds more keys than the batch has, nor more than
   * CACHET_MSET_CALL_KEYS; every entry has at least 2. */
  size_t ksum = 0;
  for (size_t i = 0; i < n && ksum < CACHET_MSET_CALL_KEYS; i++)
    ksum += 2 + (e[i].ntags < CACHET_MSET_CALL_KEYS ? e[i].ntags
                                                    : CACHET_MSET_CALL_KEYS);
  size_t kcap = ksum < CACHET_MSET_CALL_KEYS ? ksum : CACHET_MSET_CALL_KEYS;
  p->ecap = kcap / 2 < p->cap ? kcap / 2 : p->cap;
  for (p->tsize = 16; p->tsize < 2 * p->cap;)
    p->tsize *= 2;
  p->st = malloc(p->cap);
  p->bucket = malloc(p->cap);
  p->winner = malloc(p->cap * sizeof *p->winner);
  p->order = malloc(p->cap * sizeof *p->order);
  p->calls = malloc(p->cap * sizeof *p->calls);
  p->plain = malloc(p->cap * sizeof *p->plain);
  p->tmp = malloc(p->cap * sizeof *p->tmp);
  p->table = malloc(p->tsize * sizeof *p->table);
  if (!p->st || !p->bucket || !p->winner || !p->order || !p->calls ||
      !p->plain || !p->tmp || !p->table) {
    cachet_mset_plan_free(p);
    return cachet_fail(CACHET_ENOMEM, "mset: out of memory");
  }
  return CACHET_OK;
}

void cachet_mset_plan_free(cachet_mset_plan *p) {
  free(p->st);
  free(p->bucket);
  free(p->winner);
  free(p->order);
  free(p->calls);
  free(p->plain);
  free(p->tmp);
  free(p->table);
  memset(p, 0, sizeof *p);
}

static uint64_t hash64(const void *key, size_t len) {
  const unsigned char *s = key;
  uint64_t h = 14695981039346656037u;
  for (size_t i = 0; i < len; i++) {
    h ^= s[i];
    h *= 1099511628211u;
  }
  return h;
}

/* Measured on Redis 7.0: SET (and SMEMBERS); with tags SADD and PEXPIREAT,
 * and per tag ZADD, PTTL, PEXPIRE and its share of the tag-set checks. */
size_t cachet_mset_entry_work(size_t ntags) {
  return 2 + (ntags > 0 ? 3 + 4 * ntags : 0);
}

/* Bytes an entry adds to a call: the value and its envelope, three copies
 * of the key (two key names and the member), the tags twice. */
static size_t entry_bytes(size_t prefixlen, const cachet_entry *x) {
  size_t b = x->len + 128 + 3 * (x->keylen + prefixlen + 6);
  for (size_t t = 0; t < x->ntags; t++)
    b += 2 * strlen(x->tags[t]) + prefixlen + 6;
  return b;
}

/* A stable counting sort of list[0..n) by bucket: entries of one bucket
 * share their tags' index keys, which a call then touches once, and in
 * Redis Cluster one bucket is one slot. */
static void sort_by_bucket(cachet_mset_plan *p, size_t *list, size_t n) {
  size_t start[CACHET_BUCKETS + 1] = {0};
  for (size_t j = 0; j < n; j++)
    start[p->bucket[list[j]] + 1]++;
  for (size_t b = 0; b < CACHET_BUCKETS; b++)
    start[b + 1] += start[b];
  for (size_t j = 0; j < n; j++)
    p->tmp[start[p->bucket[list[j]]]++] = list[j];
  memcpy(list, p->tmp, n * sizeof *list);
}

void cachet_mset_plan_window(cachet_mset_plan *p, const cachet_entry *e,
                             size_t m, int by_bucket, size_t prefixlen) {
  memset(p->table, 0, p->tsize * sizeof *p->table);
  for (size_t i = m; i-- > 0;) {
    const cachet_entry *x = &e[i];
    size_t slot = (size_t)hash64(x->key, x->keylen) & (p->tsize - 1);
    p->bucket[i] = (unsigned char)cachet_bucket(x->key, x->keylen);
    p->winner[i] = i;
    p->st[i] = CACHET_MSET_CALL;
    for (;; slot = (slot + 1) & (p->tsize - 1)) {
      uint32_t v = p->table[slot];
      if (v == 0) {
        p->table[slot] = (uint32_t)i + 1;
        break;
      }
      const cachet_entry *y = &e[v - 1];
      if (y->keylen == x->keylen && memcmp(y->key, x->key, x->keylen) == 0) {
        p->winner[i] = v - 1;
        p->st[i] = CACHET_MSET_DUP;
        break;
      }
    }
  }
  p->norder = p->nplain = 0;
  for (size_t i = 0; i < m; i++) {
    if (p->st[i] != CACHET_MSET_CALL)
      continue;
    /* A value large enough to be staged goes through set_tags, which
     * keeps it out of the script (entry.h, CACHET_STAGE_MIN). */
    if (2 + e[i].ntags > CACHET_MSET_CALL_KEYS ||
        cachet_envelope_bound(e[i].len) >= CACHET_STAGE_MIN) {
      p->st[i] = CACHET_MSET_ALONE;
    } else if (e[i].ntags == 0) {
      p->st[i] = CACHET_MSET_PLAIN;
      p->plain[p->nplain++] = i;
    } else {
      p->order[p->norder++] = i;
    }
  }
  sort_by_bucket(p, p->order, p->norder);
  sort_by_bucket(p, p->plain, p->nplain);
  p->ncalls = 0;
  size_t keys = 0, work = 0, bytes = 0;
  for (size_t j = 0; j < p->norder; j++) {
    const cachet_entry *x = &e[p->order[j]];
    size_t k = 2 + x->ntags, wk = cachet_mset_entry_work(x->ntags);
    size_t b = entry_bytes(prefixlen, x);
    cachet_mset_run *cur = p->ncalls > 0 ? &p->calls[p->ncalls - 1] : NULL;
    if (cur == NULL || cur->len == p->ecap ||
        keys + k > CACHET_MSET_CALL_KEYS || work + wk > CACHET_MSET_CALL_WORK ||
        bytes + b > CACHET_MSET_CALL_BYTES ||
        (by_bucket &&
         p->bucket[p->order[cur->first]] != p->bucket[p->order[j]])) {
      cur = &p->calls[p->ncalls++];
      cur->first = j;
      cur->len = 0;
      keys = work = bytes = 0;
    }
    cur->len++;
    keys += k;
    work += wk;
    bytes += b;
  }
}
