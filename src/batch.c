/* Batch reads and writes: cachet_mget and cachet_mset.
 *
 * A batch borrows one pooled connection and pipelines its commands in chunks
 * of CHUNK: append every command of the chunk, then read every reply. hiredis
 * copies each command into its output buffer when it is appended, so the key
 * names and sealed envelopes of an entry are freed right after, and memory
 * stays bounded by one chunk whatever the batch size.
 *
 * Statuses. Every entry gets its own status. The call returns CACHET_OK, or
 * the first error that is about the server or the connection rather than
 * about one stored value:
 *  - ECONN, ETIMEDOUT, EPROTO, ENOMEM, EINTERNAL stop the batch (the
 *    connection is out of step or gone); entries not carried out get that
 *    status too;
 *  - ESERVER (an error reply: OOM, READONLY, WRONGTYPE ...) is that entry's
 *    status, the batch goes on, and the call returns the first one;
 *  - ECORRUPT, EINTEGRITY, EVERSION (a stored value that fails to decode or
 *    verify) are only the entry's status: the call still returns CACHET_OK.
 * EINVAL (an entry fails validation) is returned before anything is sent,
 * with a detail naming the entry's index.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "entry.h"
#include "envelope.h"
#include "error.h"
#include "keys.h"
#include "script.h"

/* Commands per pipeline flush: large enough to hide the round trip, small
 * enough to bound the client's and the server's buffers. */
#define CHUNK 1000
/* Tags per entry handled without a heap allocation. */
#define SMALL_TAGS 8

/* Errors after which nothing more can be read on the connection. */
static int is_fatal(int rc) {
  return rc == CACHET_ECONN || rc == CACHET_ETIMEDOUT || rc == CACHET_EPROTO ||
         rc == CACHET_ENOMEM || rc == CACHET_EINTERNAL;
}

/* Per-value errors: they concern one stored value, not the server. */
static int is_value_error(int rc) {
  return rc == CACHET_ECORRUPT || rc == CACHET_EINTEGRITY ||
         rc == CACHET_EVERSION;
}

/* Give entries [from, n) the status of an error that stopped the batch. */
static void fail_rest(cachet_entry *e, size_t from, size_t n, int rc) {
  for (size_t i = from; i < n; i++)
    e[i].status = rc;
}

/* Record an entry's error status: counted in the metrics, and remembered as
 * the call's result when it is the first server-level one. */
static void entry_error(cachet *c, cachet_entry *e, int rc, int *first) {
  e->status = cachet_result(c, rc);
  if (!is_value_error(rc) && *first == CACHET_OK)
    *first = rc;
}

/* ---- mget --------------------------------------------------------------- */

/* Read the reply to the GET of entry e (value key vk). Returns a fatal
 * status, or CACHET_OK with e->status set. */
static int mget_reply(cachet *c, cachet_conn *cn, cachet_entry *e,
                      const cachet_key *vk, int *first) {
  redisReply *r = NULL;
  int rc = cachet_conn_read(cn, &r);
  if (rc == CACHET_ESERVER) {
    entry_error(c, e, rc, first);
    return CACHET_OK;
  }
  if (rc != CACHET_OK)
    return rc;
  if (r->type == REDIS_REPLY_NIL) {
    freeReplyObject(r);
    CACHET_COUNT(c, misses, 1);
    e->status = CACHET_MISS;
    return CACHET_OK;
  }
  if (r->type != REDIS_REPLY_STRING) {
    int type = r->type;
    freeReplyObject(r);
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "mget: GET: unexpected reply type %d",
                       type);
  }
  /* Take hiredis's own buffer (malloc'd, len + 1 bytes): no copy. */
  char *blob = r->str;
  size_t bl = r->len;
  r->str = NULL;
  freeReplyObject(r);
  rc = cachet_entry_open(c, vk->buf, vk->len, blob, bl, &e->out, &e->outlen);
  if (rc == CACHET_OK || rc == CACHET_MISS)
    e->status = rc;
  else if (rc == CACHET_ENOMEM)
    return rc;
  else
    entry_error(c, e, rc, first);
  return CACHET_OK;
}

/* One chunk of GETs: append them all, then read them all. On a fatal
 * error, the entries of the chunk not carried out get its status. */
static int mget_chunk(cachet *c, cachet_conn *cn, cachet_entry *e, size_t m,
                      cachet_key *keys, int *first) {
  size_t built = 0;
  int rc = CACHET_OK;
  while (built < m) {
    cachet_entry *x = &e[built];
    rc = cachet_key_build(c, &keys[built], CACHET_KIND_VALUE,
                          cachet_bucket(x->key, x->keylen), x->key, x->keylen);
    if (rc != CACHET_OK)
      break;
    const char *argv[2] = {"GET", keys[built].buf};
    size_t lens[2] = {3, keys[built].len};
    built++;
    if ((rc = cachet_conn_append(cn, 2, argv, lens)) != CACHET_OK)
      break;
  }
  if (rc != CACHET_OK) {
    /* Commands may sit unsent in the output buffer: the connection cannot
     * be used for anything else now. */
    cachet_conn_break(cn);
    fail_rest(e, 0, m, rc);
  }
  for (size_t i = 0; rc == CACHET_OK && i < m; i++) {
    rc = mget_reply(c, cn, &e[i], &keys[i], first);
    if (rc != CACHET_OK) {
      cachet_conn_break(cn);
      fail_rest(e, i, m, rc);
    }
  }
  for (size_t i = 0; i < built; i++)
    cachet_key_free(&keys[i]);
  return rc;
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
  int rc0 = cachet_check_batch(c, entries, n, 0);
  if (rc0 != CACHET_OK) {
    fail_rest(entries, 0, n, rc0);
    return cachet_result(c, rc0);
  }
  if (n == 0)
    return CACHET_OK;

  size_t cap = n < CHUNK ? n : CHUNK;
  cachet_key *keys = malloc(cap * sizeof *keys);
  if (keys == NULL) {
    fail_rest(entries, 0, n, CACHET_ENOMEM);
    return cachet_result(c, cachet_fail(CACHET_ENOMEM, "mget: out of memory"));
  }
  cachet_conn *cn = NULL;
  int rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK) {
    free(keys);
    fail_rest(entries, 0, n, rc);
    return cachet_result(c, rc);
  }
  int first = CACHET_OK;
  for (size_t base = 0; base < n; base += CHUNK) {
    size_t m = n - base < CHUNK ? n - base : CHUNK;
    rc = mget_chunk(c, cn, entries + base, m, keys, &first);
    if (rc != CACHET_OK) {
      fail_rest(entries, base + m, n, rc);
      break;
    }
  }
  cachet_conn_release(c, cn);
  free(keys);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  return first;
}

/* ---- mset --------------------------------------------------------------- */

/*
 * mset writes untagged entries with plain SET (write_plain, below) and the
 * others through set_many (lua/set_many.lua): one EVALSHA stores many
 * entries, so Redis's fixed cost per script call is paid once per call
 * instead of once per entry. Each entry's write stays atomic, since the
 * whole call is.
 *
 * A window of up to CHUNK entries is planned into calls, the calls are
 * pipelined, and then their replies are read. Then come the entries that
 * set_many does not write: those whose tag set holds tags they were not
 * given ("retag": only set_tags can learn them and drop those memberships),
 * and any entry with more keys than a call may hold. cachet_entry_write
 * writes them one by one. Windows run one after the other.
 *
 * Errors. A call the server refuses as a whole (NOSCRIPT aside: OOM before
 * its first write, READONLY, BUSY) wrote nothing, and each of its entries
 * gets ESERVER. A command failing inside one entry (WRONGTYPE on a foreign
 * key) is that entry's ESERVER; the call's other entries are written.
 *
 * Pruning. cachet_prune_cap() is asked once per tagged entry, as for a
 * single write, and a call may prune as many distinct indexes as its
 * entries drew tags, at most PRUNE_INDEXES, so the work stays bounded.
 *
 * Duplicate keys. Within one mset the last occurrence of a key wins. Only
 * that occurrence is sent; the earlier ones are never written and get its
 * status. (If every occurrence were sent, an earlier one that needed a
 * retag would be rewritten after the later one and win.)
 */

/* Bounds of one set_many call. Redis runs a script without serving anyone
 * else, so a call's work is kept near half a millisecond on an idle server
 * (about 1 ms worst case), measured with INFO commandstats and SLOWLOG:
 * at most CALL_MAX_KEYS keys, CALL_MAX_WORK units as counted by
 * entry_work(), and CALL_MAX_BYTES bytes of arguments (a script copies its
 * arguments more than once: about 6 ms per MiB on a small VM). An entry
 * larger than a bound goes alone in its call, where it costs what set_tags
 * would; one of CACHET_STAGE_MIN or more goes through set_tags, staged. */
#define CALL_MAX_KEYS 1000
#define CALL_MAX_WORK 500
#define CALL_MAX_BYTES ((size_t)128 << 10)
/* How many distinct indexes one call may prune (cap members each). */
#define PRUNE_INDEXES 16

/* Rounds of SCRIPT LOAD and resend after NOSCRIPT. One is enough for one
 * server; in a cluster each master has its own script cache and the load
 * goes to the node that refused last, so each round loads it on one more
 * master. Entries still refused after that go through set_tags. */
#define NOSCRIPT_ROUNDS 8

/* Where an entry of the current window stands. */
enum {
  ST_CALL,     /* in a set_many call, not answered yet */
  ST_DONE,     /* has its status */
  ST_NOSCRIPT, /* its call met NOSCRIPT */
  ST_RETAG,    /* set_many skipped it: old tags it was not given */
  ST_ALONE,    /* too many keys for a call, or a staged value */
  ST_DUP,      /* a later entry of the window has the same key */
  ST_PLAIN,    /* untagged: its plain SET is sent, not answered yet */
  ST_WRITTEN,  /* its plain SET is done; its group's EXISTS is not read */
  ST_UNTAG     /* written, but it may still have a tag set to drop */
};

/* One set_many call: entries order[first .. first+len) of the window. */
typedef struct mcall {
  size_t first, len;
  unsigned char st; /* ST_CALL, ST_NOSCRIPT or ST_DONE */
} mcall;

/* Everything one cachet_mset allocates, once, sized for its batch. */
typedef struct mset_ws {
  size_t cap;            /* entries per window */
  size_t *order;         /* entries sent, in send order */
  size_t *winner;        /* the occurrence of the key that is written */
  size_t *tmp;           /* scratch for the bucket sort */
  unsigned char *bucket; /* bucket of each entry */
  unsigned char *st;     /* ST_* of each entry */
  uint32_t *table;       /* open-addressing set of keys, for duplicates */
  size_t tsize;          /* a power of 2 */
  mcall *calls;
  size_t ncalls;
  /* Untagged entries, written with plain SET (see write_plain). */
  size_t *plain; /* in bucket order */
  size_t nplain;
  mcall *groups;    /* runs of `plain` that share one EXISTS */
  uint8_t **pblobs; /* each entry's envelope, until its replies are read */
  size_t *pblens;
  /* One call's arguments, built, appended and freed. */
  size_t kcap, ecap;
  cachet_key *keys;
  const char **names; /* tag name of keys[i], NULL for v and m keys */
  size_t *kstart;     /* first key of each entry of the call */
  size_t *ktags;      /* distinct tags of each entry of the call */
  uint8_t **blobs;
  size_t *bloblens;
  char (*nums)[2][24]; /* ttl and tag count of each entry, in decimal */
  const char **args;
  size_t *lens;
  /* The call's result: the first server-level error and its detail. */
  int first;
  char detail[512];
} mset_ws;

static void ws_free(mset_ws *w) {
  free(w->order);
  free(w->winner);
  free(w->tmp);
  free(w->bucket);
  free(w->st);
  free(w->table);
  free(w->calls);
  free(w->plain);
  free(w->groups);
  free(w->pblobs);
  free(w->pblens);
  free(w->keys);
  free(w->names);
  free(w->kstart);
  free(w->ktags);
  free(w->blobs);
  free(w->bloblens);
  free(w->nums);
  free(w->args);
  free(w->lens);
}

static int ws_alloc(mset_ws *w, const cachet_entry *e, size_t n) {
  memset(w, 0, sizeof *w);
  w->cap = n < CHUNK ? n : CHUNK;
  /* A call never holds more keys than the batch has, nor more than
   * CALL_MAX_KEYS; every entry has at least 2. */
  size_t ksum = 0;
  for (size_t i = 0; i < n && ksum < CALL_MAX_KEYS; i++)
    ksum += 2 + (e[i].ntags < CALL_MAX_KEYS ? e[i].ntags : CALL_MAX_KEYS);
  w->kcap = ksum < CALL_MAX_KEYS ? ksum : CALL_MAX_KEYS;
  w->ecap = w->kcap / 2 < w->cap ? w->kcap / 2 : w->cap;
  for (w->tsize = 16; w->tsize < 2 * w->cap;)
    w->tsize *= 2;
  size_t nargs = 2 * w->kcap + 3 + 4 * w->ecap;
  w->order = malloc(w->cap * sizeof *w->order);
  w->winner = malloc(w->cap * sizeof *w->winner);
  w->tmp = malloc(w->cap * sizeof *w->tmp);
  w->bucket = malloc(w->cap);
  w->st = malloc(w->cap);
  w->table = malloc(w->tsize * sizeof *w->table);
  w->calls = malloc(w->cap * sizeof *w->calls);
  w->plain = malloc(w->cap * sizeof *w->plain);
  w->groups = malloc(w->cap * sizeof *w->groups);
  w->pblobs = calloc(w->cap, sizeof *w->pblobs);
  w->pblens = malloc(w->cap * sizeof *w->pblens);
  w->keys = malloc(w->kcap * sizeof *w->keys);
  w->names = malloc(w->kcap * sizeof *w->names);
  w->kstart = malloc(w->ecap * sizeof *w->kstart);
  w->ktags = malloc(w->ecap * sizeof *w->ktags);
  w->blobs = calloc(w->ecap, sizeof *w->blobs);
  w->bloblens = malloc(w->ecap * sizeof *w->bloblens);
  w->nums = malloc(w->ecap * sizeof *w->nums);
  w->args = malloc(nargs * sizeof *w->args);
  w->lens = malloc(nargs * sizeof *w->lens);
  if (!w->order || !w->winner || !w->tmp || !w->bucket || !w->st || !w->table ||
      !w->calls || !w->plain || !w->groups || !w->pblobs || !w->pblens ||
      !w->keys || !w->names || !w->kstart || !w->ktags || !w->blobs ||
      !w->bloblens || !w->nums || !w->args || !w->lens) {
    ws_free(w);
    return cachet_fail(CACHET_ENOMEM, "mset: out of memory");
  }
  w->first = CACHET_OK;
  return CACHET_OK;
}

/* An entry's error status; the first server-level one is the call's result,
 * and its detail is kept for the end of the call. */
static void mset_error(cachet *c, mset_ws *w, cachet_entry *e, int rc) {
  int had = w->first;
  entry_error(c, e, rc, &w->first);
  if (had == CACHET_OK && w->first != CACHET_OK)
    snprintf(w->detail, sizeof w->detail, "%s", cachet_last_error());
}

/* Decimal, without snprintf's cost (it shows at millions of entries). */
static size_t fmt_u64(char *out, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  for (size_t i = 0; i < n; i++)
    out[i] = tmp[n - 1 - i];
  out[n] = '\0';
  return n;
}

static uint64_t hash64(const void *p, size_t len) {
  const unsigned char *s = p;
  uint64_t h = 14695981039346656037u;
  for (size_t i = 0; i < len; i++) {
    h ^= s[i];
    h *= 1099511628211u;
  }
  return h;
}

/* Server work of one entry, in units of about 1 us of script time (as
 * measured on Redis 7.0): SET (and SMEMBERS); with tags SADD and PEXPIREAT,
 * and per tag ZADD, PTTL, PEXPIRE and its share of the tag-set checks. */
static size_t entry_work(size_t ntags) {
  return 2 + (ntags > 0 ? 3 + 4 * ntags : 0);
}

/* Bytes an entry adds to a call: the value and its envelope, three copies
 * of the key (two key names and the member), the tags twice. */
static size_t entry_bytes(const cachet *c, const cachet_entry *x) {
  size_t b = x->len + 128 + 3 * (x->keylen + c->cfg.prefixlen + 6);
  for (size_t t = 0; t < x->ntags; t++)
    b += 2 * strlen(x->tags[t]) + c->cfg.prefixlen + 6;
  return b;
}

/* A stable counting sort of list[0..n) by bucket: entries of one bucket
 * share their tags' index keys, which a call then touches once, and in
 * Redis Cluster one bucket is one slot. */
static void sort_by_bucket(mset_ws *w, size_t *list, size_t n) {
  size_t start[CACHET_BUCKETS + 1] = {0};
  for (size_t j = 0; j < n; j++)
    start[w->bucket[list[j]] + 1]++;
  for (size_t b = 0; b < CACHET_BUCKETS; b++)
    start[b + 1] += start[b];
  for (size_t j = 0; j < n; j++)
    w->tmp[start[w->bucket[list[j]]]++] = list[j];
  memcpy(list, w->tmp, n * sizeof *list);
}

/*
 * Plan window e[0..m): find duplicate keys (the last occurrence wins),
 * set untagged entries apart for plain SETs, order the others by bucket,
 * and cut them into calls within the bounds. In Redis Cluster (by_bucket)
 * every key of one call must hash to one slot, which in cachet's layout
 * means one bucket {bb}: a call is also cut where the bucket changes.
 */
static void plan_window(const cachet *c, mset_ws *w, const cachet_entry *e,
                        size_t m, int by_bucket) {
  memset(w->table, 0, w->tsize * sizeof *w->table);
  for (size_t i = m; i-- > 0;) {
    const cachet_entry *x = &e[i];
    uint64_t h = hash64(x->key, x->keylen);
    size_t slot = (size_t)h & (w->tsize - 1);
    w->bucket[i] = (unsigned char)cachet_bucket(x->key, x->keylen);
    w->winner[i] = i;
    w->st[i] = ST_CALL;
    for (;; slot = (slot + 1) & (w->tsize - 1)) {
      uint32_t v = w->table[slot];
      if (v == 0) {
        w->table[slot] = (uint32_t)i + 1;
        break;
      }
      const cachet_entry *y = &e[v - 1];
      if (y->keylen == x->keylen && memcmp(y->key, x->key, x->keylen) == 0) {
        w->winner[i] = v - 1;
        w->st[i] = ST_DUP;
        break;
      }
    }
  }
  size_t norder = 0;
  w->nplain = 0;
  for (size_t i = 0; i < m; i++) {
    if (w->st[i] != ST_CALL)
      continue;
    /* A value large enough to be staged goes through set_tags, which
     * keeps it out of the script (entry.h, CACHET_STAGE_MIN). */
    if (2 + e[i].ntags > CALL_MAX_KEYS ||
        cachet_envelope_bound(e[i].len) >= CACHET_STAGE_MIN) {
      w->st[i] = ST_ALONE;
    } else if (e[i].ntags == 0) {
      w->st[i] = ST_PLAIN;
      w->plain[w->nplain++] = i;
    } else {
      w->order[norder++] = i;
    }
  }
  sort_by_bucket(w, w->order, norder);
  sort_by_bucket(w, w->plain, w->nplain);
  w->ncalls = 0;
  size_t keys = 0, work = 0, bytes = 0;
  for (size_t j = 0; j < norder; j++) {
    const cachet_entry *x = &e[w->order[j]];
    size_t k = 2 + x->ntags, wk = entry_work(x->ntags);
    size_t b = entry_bytes(c, x);
    mcall *cur = w->ncalls > 0 ? &w->calls[w->ncalls - 1] : NULL;
    if (cur == NULL || cur->len == w->ecap || keys + k > CALL_MAX_KEYS ||
        work + wk > CALL_MAX_WORK || bytes + b > CALL_MAX_BYTES ||
        (by_bucket &&
         w->bucket[w->order[cur->first]] != w->bucket[w->order[j]])) {
      cur = &w->calls[w->ncalls++];
      cur->first = j;
      cur->len = 0;
      cur->st = ST_CALL;
      keys = work = bytes = 0;
    }
    cur->len++;
    keys += k;
    work += wk;
    bytes += b;
  }
}

static void call_free_args(mset_ws *w, size_t nkeys, size_t nent) {
  for (size_t i = 0; i < nkeys; i++)
    cachet_key_free(&w->keys[i]);
  for (size_t j = 0; j < nent; j++) {
    free(w->blobs[j]);
    w->blobs[j] = NULL;
  }
}

/*
 * Build the arguments of call `k` (layout in lua/set_many.lua) and append
 * its EVALSHA. An entry the envelope refuses (its format limits) gets EINVAL
 * and leaves the call. Returns a fatal status or CACHET_OK.
 */
static int call_append(cachet *c, cachet_conn *cn, mset_ws *w, cachet_entry *e,
                       mcall *k) {
  int64_t now = cachet_now_ms();
  size_t *ids = w->order + k->first;
  size_t nk = 0, ne = 0, nprune = 0;
  const char *cap = "0";
  int rc = CACHET_OK;
  for (size_t j = 0; j < k->len; j++) {
    cachet_entry *x = &e[ids[j]];
    unsigned b = w->bucket[ids[j]];
    size_t k0 = nk;
    if ((rc = cachet_key_build(c, &w->keys[nk], CACHET_KIND_VALUE, b, x->key,
                               x->keylen)) != CACHET_OK)
      break;
    w->names[nk++] = NULL;
    if ((rc = cachet_key_build(c, &w->keys[nk], CACHET_KIND_TAGSET, b, x->key,
                               x->keylen)) != CACHET_OK)
      break;
    w->names[nk++] = NULL;
    for (size_t t = 0; t < x->ntags && rc == CACHET_OK; t++) {
      int dup = 0;
      for (size_t q = k0 + 2; q < nk && !dup; q++)
        dup = strcmp(w->names[q], x->tags[t]) == 0;
      if (dup)
        continue;
      rc = cachet_key_build(c, &w->keys[nk], CACHET_KIND_INDEX, b, x->tags[t],
                            strlen(x->tags[t]));
      if (rc == CACHET_OK)
        w->names[nk++] = x->tags[t];
    }
    if (rc != CACHET_OK)
      break;
    rc = cachet_envelope_seal(
        c->keyring, c->cfg.encrypt, w->keys[k0].buf, w->keys[k0].len, 0, now,
        x->ttl_ms > 0 ? now + x->ttl_ms : 0, x->val == NULL ? "" : x->val,
        x->len, &w->blobs[ne], &w->bloblens[ne]);
    if (rc == CACHET_EINVAL) {
      /* This value alone is refused: its own status, out of the call. */
      mset_error(c, w, x, rc);
      w->st[ids[j]] = ST_DONE;
      for (size_t q = k0; q < nk; q++)
        cachet_key_free(&w->keys[q]);
      nk = k0;
      rc = CACHET_OK;
      continue;
    }
    if (rc != CACHET_OK)
      break;
    size_t ntags = nk - k0 - 2;
    if (ntags > 0) {
      const char *pc = cachet_prune_cap(c);
      if (strcmp(pc, "0") != 0) {
        cap = pc;
        nprune += ntags;
      }
    }
    w->kstart[ne] = k0;
    w->ktags[ne] = ntags;
    fmt_u64(w->nums[ne][0], (uint64_t)x->ttl_ms);
    fmt_u64(w->nums[ne][1], ntags);
    ids[ne++] = ids[j]; /* the call keeps the entries it sends */
  }
  if (rc != CACHET_OK) {
    call_free_args(w, nk, ne);
    return rc;
  }
  k->len = ne;
  if (ne == 0) {
    k->st = ST_DONE;
    return CACHET_OK;
  }
  char hdr[2][24];
  const char **a = w->args;
  size_t *l = w->lens;
  size_t na = 0;
  for (size_t i = 0; i < nk; i++)
    a[na] = w->keys[i].buf, l[na++] = w->keys[i].len;
  a[na] = hdr[0], l[na++] = fmt_u64(hdr[0], ne);
  a[na] = cap, l[na++] = strlen(cap);
  a[na] = hdr[1],
  l[na++] = fmt_u64(hdr[1], nprune < PRUNE_INDEXES ? nprune : PRUNE_INDEXES);
  for (size_t j = 0; j < ne; j++) {
    const cachet_entry *x = &e[ids[j]];
    a[na] = w->nums[j][0], l[na++] = strlen(w->nums[j][0]);
    a[na] = w->nums[j][1], l[na++] = strlen(w->nums[j][1]);
    a[na] = (const char *)w->blobs[j], l[na++] = w->bloblens[j];
    if (w->ktags[j] > 0) /* the member, needed only for the indexes */
      a[na] = x->key, l[na++] = x->keylen;
    for (size_t t = 0; t < w->ktags[j]; t++) {
      const char *name = w->names[w->kstart[j] + 2 + t];
      a[na] = name, l[na++] = strlen(name);
    }
  }
  rc = cachet_script_append(cn, CACHET_SCRIPT_SET_MANY, (int)nk, (int)na, a, l);
  call_free_args(w, nk, ne);
  return rc;
}

/* The shape of one set_many reply: {written, {j, "retag", tag...} or
 * {j, "err", text}...}, positions rising within 1..len, every entry
 * accounted for. Checked in full before any status is set. */
static int reply_ok(const redisReply *r, size_t len) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER ||
      r->element[0]->integer < 0 ||
      (size_t)r->element[0]->integer + (r->elements - 1) != len)
    return 0;
  long long prev = 0;
  for (size_t i = 1; i < r->elements; i++) {
    const redisReply *x = r->element[i];
    if (x->type != REDIS_REPLY_ARRAY || x->elements < 3 ||
        x->element[0]->type != REDIS_REPLY_INTEGER ||
        x->element[0]->integer <= prev ||
        x->element[0]->integer > (long long)len ||
        x->element[1]->type != REDIS_REPLY_STRING)
      return 0;
    prev = x->element[0]->integer;
    for (size_t q = 2; q < x->elements; q++)
      if (x->element[q]->type != REDIS_REPLY_STRING)
        return 0;
    int retag = strcmp(x->element[1]->str, "retag") == 0;
    if (!retag && (strcmp(x->element[1]->str, "err") != 0 || x->elements != 3))
      return 0;
  }
  return 1;
}

/* Read the reply of call k and give its entries their state. Returns a
 * fatal status or CACHET_OK. */
static int call_reply(cachet *c, cachet_conn *cn, mset_ws *w, cachet_entry *e,
                      mcall *k) {
  const size_t *ids = w->order + k->first;
  redisReply *r = NULL;
  int rc = cachet_conn_read(cn, &r);
  if (rc == CACHET_ESERVER) {
    /* The call did not run: nothing of it was written. */
    unsigned char st =
        cachet_server_error_is("NOSCRIPT") ? ST_NOSCRIPT : ST_DONE;
    k->st = st;
    for (size_t j = 0; j < k->len; j++) {
      w->st[ids[j]] = st;
      if (st == ST_DONE)
        mset_error(c, w, &e[ids[j]], rc);
    }
    return CACHET_OK;
  }
  if (rc != CACHET_OK)
    return rc;
  if (!reply_ok(r, k->len)) {
    freeReplyObject(r);
    return cachet_fail(CACHET_EPROTO, "mset: set_many: unexpected reply");
  }
  k->st = ST_DONE;
  size_t x = 1;
  for (size_t j = 0; j < k->len; j++) {
    cachet_entry *ent = &e[ids[j]];
    const redisReply *sk = x < r->elements ? r->element[x] : NULL;
    if (sk == NULL || (size_t)sk->element[0]->integer != j + 1) {
      w->st[ids[j]] = ST_DONE;
      ent->status = CACHET_OK;
      CACHET_COUNT(c, writes, 1);
      continue;
    }
    x++;
    if (strcmp(sk->element[1]->str, "retag") == 0) {
      w->st[ids[j]] = ST_RETAG;
    } else {
      w->st[ids[j]] = ST_DONE;
      const redisReply *text = sk->element[2];
      mset_error(c, w, ent,
                 cachet_fail_bytes(CACHET_ESERVER, NULL, text->str, text->len));
    }
  }
  freeReplyObject(r);
  return CACHET_OK;
}

/* Pipeline every call of the window in state `sel`, then read their
 * replies. A fatal error breaks the connection; the caller fails the
 * entries not answered. */
static int send_calls(cachet *c, cachet_conn *cn, mset_ws *w, cachet_entry *e,
                      unsigned char sel) {
  int rc = CACHET_OK;
  size_t sent = 0;
  for (size_t i = 0; i < w->ncalls && rc == CACHET_OK; i++) {
    mcall *k = &w->calls[i];
    if (k->st != sel)
      continue;
    for (size_t j = 0; j < k->len; j++)
      w->st[w->order[k->first + j]] = ST_CALL;
    k->st = ST_CALL;
    rc = call_append(c, cn, w, e, k);
    sent = i + 1;
  }
  for (size_t i = 0; i < sent && rc == CACHET_OK; i++) {
    mcall *k = &w->calls[i];
    if (k->st == ST_CALL)
      rc = call_reply(c, cn, w, e, k);
  }
  if (rc != CACHET_OK) /* unsent commands or unread replies */
    cachet_conn_break(cn);
  return rc;
}

/* Give every entry of the window still waiting the status of the error
 * that stopped it. */
static void window_fail(mset_ws *w, cachet_entry *e, size_t m, int rc) {
  for (size_t i = 0; i < m; i++) {
    if (w->st[i] != ST_DONE && w->st[i] != ST_DUP) {
      w->st[i] = ST_DONE;
      e[i].status = rc;
    }
  }
}

/* ---- mset: untagged entries, plain SET --------------------------------
 *
 * An entry without tags needs no script: a plain SET stores it, at a
 * fraction of the server time of a scripted write (docs/DESIGN.md,
 * "Untagged writes take plain SET"). What a SET cannot do is drop the tags the entry had before.
 * So each group of SETs is followed, in the same pipeline, by one EXISTS
 * over the group's tag-set keys; when it counts none, the group is done.
 * Otherwise one pipelined EXISTS per entry finds those with a tag set, and
 * lua/untag.lua drops it with its memberships unless a later write owns the
 * entry by then, which it tells by comparing the value with the envelope
 * this SET stored. Envelopes are therefore kept until the replies are read:
 * PLAIN_MAX_BYTES bounds them per round trip. In Redis Cluster a group
 * holds one bucket, so that its EXISTS names keys of one slot.
 */
#define PLAIN_MAX_BYTES ((size_t)4 << 20)

/* Seal entry `id` and append its SET; its envelope stays in w->pblobs. An
 * entry the envelope refuses gets EINVAL and is not sent. Returns a fatal
 * status or CACHET_OK. */
static int plain_append_set(cachet *c, cachet_conn *cn, mset_ws *w,
                            cachet_entry *e, size_t id, int64_t now) {
  cachet_entry *x = &e[id];
  cachet_key vk = {0};
  int rc = cachet_key_build(c, &vk, CACHET_KIND_VALUE, w->bucket[id], x->key,
                            x->keylen);
  if (rc != CACHET_OK)
    return rc;
  rc = cachet_envelope_seal(c->keyring, c->cfg.encrypt, vk.buf, vk.len, 0, now,
                            x->ttl_ms > 0 ? now + x->ttl_ms : 0,
                            x->val == NULL ? "" : x->val, x->len,
                            &w->pblobs[id], &w->pblens[id]);
  if (rc == CACHET_OK) {
    char ttl[24];
    const char *argv[5] = {"SET", vk.buf, (const char *)w->pblobs[id], "PX",
                           ttl};
    size_t lens[5] = {3, vk.len, w->pblens[id], 2,
                      fmt_u64(ttl, (uint64_t)x->ttl_ms)};
    rc = cachet_conn_append(cn, x->ttl_ms > 0 ? 5 : 3, argv, lens);
  } else if (rc == CACHET_EINVAL) {
    mset_error(c, w, x, rc);
    w->st[id] = ST_DONE;
    rc = CACHET_OK;
  }
  cachet_key_free(&vk);
  return rc;
}

/* Append one command over the tag-set keys of the entries of `ids` in
 * state `sel`: EXISTS naming them all (`cmd` "EXISTS"), or one SMEMBERS
 * each. Sets *sent to the number of commands appended. */
static int plain_append_tagsets(cachet *c, cachet_conn *cn, mset_ws *w,
                                const cachet_entry *e, const size_t *ids,
                                size_t n, unsigned char sel, const char *cmd,
                                size_t *sent) {
  int each = strcmp(cmd, "SMEMBERS") == 0;
  size_t nk = 0;
  int rc = CACHET_OK;
  *sent = 0;
  w->args[0] = cmd, w->lens[0] = strlen(cmd);
  for (size_t j = 0; j < n && rc == CACHET_OK; j++) {
    const cachet_entry *x = &e[ids[j]];
    if (w->st[ids[j]] != sel)
      continue;
    rc = cachet_key_build(c, &w->keys[nk], CACHET_KIND_TAGSET,
                          w->bucket[ids[j]], x->key, x->keylen);
    if (rc != CACHET_OK)
      break;
    w->args[1 + nk] = w->keys[nk].buf, w->lens[1 + nk] = w->keys[nk].len;
    nk++;
    if (each) {
      rc = cachet_conn_append(cn, 2, w->args, w->lens);
      cachet_key_free(&w->keys[0]);
      nk = 0;
      if (rc == CACHET_OK)
        (*sent)++;
    }
  }
  if (rc == CACHET_OK && nk > 0) {
    rc = cachet_conn_append(cn, (int)(1 + nk), w->args, w->lens);
    if (rc == CACHET_OK)
      *sent = 1;
  }
  for (size_t i = 0; i < nk; i++)
    cachet_key_free(&w->keys[i]);
  return rc;
}

/* Read an EXISTS reply into *n; an error reply gives ESERVER. */
static int read_count(cachet_conn *cn, long long *n) {
  redisReply *r = NULL;
  int rc = cachet_conn_read(cn, &r);
  if (rc != CACHET_OK)
    return rc;
  int type = r->type;
  *n = r->integer;
  freeReplyObject(r);
  if (type != REDIS_REPLY_INTEGER) {
    cachet_conn_break(cn);
    return cachet_fail(CACHET_EPROTO, "mset: EXISTS: unexpected reply type %d",
                       type);
  }
  return CACHET_OK;
}

/* A plain entry is stored for good. */
static void plain_done(cachet *c, mset_ws *w, cachet_entry *e, size_t id) {
  w->st[id] = ST_DONE;
  e[id].status = CACHET_OK;
  CACHET_COUNT(c, writes, 1);
}

/* The entries of ids[0..n) in ST_UNTAG: read their tag sets (one round
 * trip), then untag those that have one. Returns a fatal status or
 * CACHET_OK. */
static int plain_untag(cachet *c, cachet_conn *cn, mset_ws *w, cachet_entry *e,
                       const size_t *ids, size_t n) {
  redisReply **sets = calloc(n, sizeof *sets);
  if (sets == NULL)
    return cachet_fail(CACHET_ENOMEM, "mset: out of memory");
  size_t sent = 0;
  int rc =
      plain_append_tagsets(c, cn, w, e, ids, n, ST_UNTAG, "SMEMBERS", &sent);
  /* Every reply first: untag's own exchange comes after them. */
  for (size_t j = 0; j < n && rc == CACHET_OK; j++) {
    if (w->st[ids[j]] != ST_UNTAG)
      continue;
    rc = cachet_conn_read(cn, &sets[j]);
    if (rc == CACHET_ESERVER) /* e.g. WRONGTYPE: untag will say */
      rc = CACHET_OK;
    else if (rc == CACHET_OK && sets[j]->type != REDIS_REPLY_ARRAY)
      rc = cachet_fail(CACHET_EPROTO, "mset: SMEMBERS: unexpected reply");
  }
  for (size_t j = 0; j < n && rc == CACHET_OK; j++) {
    size_t id = ids[j];
    if (w->st[id] != ST_UNTAG)
      continue;
    if (sets[j] != NULL && sets[j]->elements == 0) {
      plain_done(c, w, e, id);
      continue;
    }
    /* Passing the tags it read saves untag a retag round. */
    const char *names[SMALL_TAGS];
    size_t nt = cachet_reply_tags(sets[j], names, SMALL_TAGS);
    rc = cachet_entry_untag(c, cn, e[id].key, e[id].keylen, w->pblobs[id],
                            w->pblens[id], names, nt);
    if (rc == CACHET_OK) {
      plain_done(c, w, e, id);
    } else if (!is_fatal(rc)) {
      char detail[400];
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      w->st[id] = ST_DONE;
      mset_error(c, w, &e[id],
                 cachet_fail(rc,
                             "the value was stored, but the tags it had "
                             "were not dropped: %s",
                             detail));
      rc = CACHET_OK;
    }
  }
  for (size_t j = 0; j < n; j++)
    if (sets[j] != NULL)
      freeReplyObject(sets[j]);
  free(sets);
  return rc;
}

/* Read the replies of groups[0..ng): each group's SETs, then its EXISTS. */
static int plain_read(cachet *c, cachet_conn *cn, mset_ws *w, cachet_entry *e,
                      size_t ng) {
  for (size_t g = 0; g < ng; g++) {
    const mcall *grp = &w->groups[g];
    const size_t *ids = w->plain + grp->first;
    for (size_t j = 0; j < grp->len; j++) {
      if (w->st[ids[j]] != ST_PLAIN)
        continue;
      redisReply *r = NULL;
      int rc = cachet_conn_read(cn, &r);
      if (rc == CACHET_ESERVER) {
        w->st[ids[j]] = ST_DONE;
        mset_error(c, w, &e[ids[j]], rc);
        continue;
      }
      if (rc != CACHET_OK)
        return rc;
      int ok = r->type == REDIS_REPLY_STATUS;
      freeReplyObject(r);
      if (!ok) {
        cachet_conn_break(cn);
        return cachet_fail(CACHET_EPROTO, "mset: SET: unexpected reply");
      }
      w->st[ids[j]] = ST_WRITTEN;
    }
    if (grp->st == ST_DONE) /* no EXISTS was sent: nothing was written */
      continue;
    long long n = 1;
    int rc = read_count(cn, &n);
    if (rc == CACHET_ESERVER) { /* unknown: ask each entry */
      n = 1;
      rc = CACHET_OK;
    }
    if (rc != CACHET_OK)
      return rc;
    for (size_t j = 0; j < grp->len; j++) {
      if (w->st[ids[j]] != ST_WRITTEN)
        continue;
      if (n == 0)
        plain_done(c, w, e, ids[j]);
      else
        w->st[ids[j]] = ST_UNTAG;
    }
  }
  return CACHET_OK;
}

/* Write the window's untagged entries, in round trips of at most
 * PLAIN_MAX_BYTES of envelopes. Returns a fatal status or CACHET_OK. */
static int write_plain(cachet *c, cachet_conn *cn, mset_ws *w, cachet_entry *e,
                       int by_bucket) {
  int rc = CACHET_OK;
  size_t j = 0;
  while (rc == CACHET_OK && j < w->nplain) {
    int64_t now = cachet_now_ms();
    size_t from = j, ng = 0, bytes = 0;
    while (rc == CACHET_OK && j < w->nplain && bytes < PLAIN_MAX_BYTES) {
      mcall *grp = &w->groups[ng++];
      grp->first = j;
      unsigned b = w->bucket[w->plain[j]];
      while (rc == CACHET_OK && j < w->nplain && bytes < PLAIN_MAX_BYTES &&
             (!by_bucket || w->bucket[w->plain[j]] == b)) {
        size_t id = w->plain[j++];
        rc = plain_append_set(c, cn, w, e, id, now);
        if (w->pblobs[id] != NULL)
          bytes += w->pblens[id] + e[id].keylen;
      }
      grp->len = j - grp->first;
      size_t sent = 0;
      if (rc == CACHET_OK)
        rc = plain_append_tagsets(c, cn, w, e, w->plain + grp->first, grp->len,
                                  ST_PLAIN, "EXISTS", &sent);
      grp->st = sent > 0 ? ST_CALL : ST_DONE;
    }
    if (rc == CACHET_OK)
      rc = plain_read(c, cn, w, e, ng);
    int untag = 0;
    for (size_t q = from; q < j && !untag; q++)
      untag = w->st[w->plain[q]] == ST_UNTAG;
    if (rc == CACHET_OK && untag)
      rc = plain_untag(c, cn, w, e, w->plain + from, j - from);
    for (size_t q = from; q < j; q++) {
      free(w->pblobs[w->plain[q]]);
      w->pblobs[w->plain[q]] = NULL;
    }
  }
  if (rc != CACHET_OK) /* unsent commands or unread replies */
    cachet_conn_break(cn);
  return rc;
}

/* Write window e[0..m). Returns a fatal status or CACHET_OK. */
static int mset_window(cachet *c, cachet_conn *cn, mset_ws *w, cachet_entry *e,
                       size_t m) {
  int by_bucket = cachet_conn_clustered(cn);
  plan_window(c, w, e, m, by_bucket);
  int rc = write_plain(c, cn, w, e, by_bucket);
  if (rc == CACHET_OK)
    rc = send_calls(c, cn, w, e, ST_CALL);
  for (int round = 0; rc == CACHET_OK && round < NOSCRIPT_ROUNDS &&
                      memchr(w->st, ST_NOSCRIPT, m) != NULL;
       round++) {
    /* A SCRIPT FLUSH, a restart or a failover: load and send those calls
     * again. Should NOSCRIPT persist, set_tags below handles it. */
    rc = cachet_script_load(c, cn, CACHET_SCRIPT_SET_MANY);
    if (rc == CACHET_OK) {
      rc = send_calls(c, cn, w, e, ST_NOSCRIPT);
    } else if (!is_fatal(rc)) {
      rc = CACHET_OK; /* refused: set_tags below tries those entries */
      break;
    }
  }
  /* One by one: entries with old tags they were not given, entries too
   * large for a call, and calls still refused. */
  for (size_t i = 0; rc == CACHET_OK && i < m; i++) {
    if (w->st[i] != ST_RETAG && w->st[i] != ST_ALONE && w->st[i] != ST_NOSCRIPT)
      continue;
    cachet_entry *x = &e[i];
    rc = cachet_entry_write(c, cn, x->key, x->keylen,
                            x->val == NULL ? "" : x->val, x->len, x->ttl_ms,
                            x->tags, x->ntags);
    if (rc == CACHET_OK || !is_fatal(rc)) {
      w->st[i] = ST_DONE;
      if (rc == CACHET_OK)
        x->status = CACHET_OK;
      else
        mset_error(c, w, x, rc);
      rc = CACHET_OK;
    }
  }
  if (rc != CACHET_OK)
    window_fail(w, e, m, rc);
  for (size_t i = 0; i < m; i++)
    if (w->st[i] == ST_DUP)
      e[i].status = e[w->winner[i]].status;
  return rc;
}

int cachet_mset(cachet *c, cachet_entry *entries, size_t n) {
  cachet_error_clear();
  /* Validate everything before anything is written. */
  int rc0 = cachet_check_batch(c, entries, n, 1);
  if (rc0 != CACHET_OK) {
    if (entries != NULL)
      fail_rest(entries, 0, n, rc0);
    return cachet_result(c, rc0);
  }
  for (size_t i = 0; i < n; i++)
    entries[i].status = CACHET_OK;
  if (n == 0)
    return CACHET_OK;

  mset_ws w;
  int rc = ws_alloc(&w, entries, n);
  if (rc != CACHET_OK) {
    fail_rest(entries, 0, n, rc);
    return cachet_result(c, rc);
  }
  cachet_conn *cn = NULL;
  rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK) {
    ws_free(&w);
    fail_rest(entries, 0, n, rc);
    return cachet_result(c, rc);
  }
  for (size_t base = 0; base < n; base += CHUNK) {
    size_t m = n - base < CHUNK ? n - base : CHUNK;
    rc = mset_window(c, cn, &w, entries + base, m);
    if (rc != CACHET_OK) {
      fail_rest(entries, base + m, n, rc);
      break;
    }
  }
  cachet_conn_release(c, cn);
  int first = w.first;
  char detail[sizeof w.detail];
  memcpy(detail, w.detail, sizeof detail);
  ws_free(&w);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  if (first != CACHET_OK)
    cachet_fail(first, "%s", detail);
  return first;
}
