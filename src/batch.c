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
  for (size_t i = 0; i < n; i++) {
    int rc = cachet_check_key(c, entries[i].key, entries[i].keylen);
    if (rc != CACHET_OK) {
      char detail[400];
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      fail_rest(entries, 0, n, rc);
      return cachet_result(c, cachet_fail(rc, "entry %zu: %s", i, detail));
    }
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

/* Where an entry of the current chunk stands. */
enum { ST_TODO, ST_DONE, ST_NOSCRIPT, ST_RETAG };

/* The distinct tags of one entry and their index keys in its bucket. */
typedef struct tagset {
  const char *names_s[SMALL_TAGS];
  cachet_key keys_s[SMALL_TAGS];
  const char **names;
  cachet_key *keys;
  size_t n;
} tagset;

static int tagset_build(const cachet *c, tagset *t, unsigned bucket,
                        const char *const *tags, size_t ntags) {
  t->n = 0;
  t->names = t->names_s;
  t->keys = t->keys_s;
  if (ntags > SMALL_TAGS) {
    t->names = malloc(ntags * sizeof *t->names);
    t->keys = malloc(ntags * sizeof *t->keys);
    if (t->names == NULL || t->keys == NULL) {
      free(t->names);
      free(t->keys);
      t->names = t->names_s;
      t->keys = t->keys_s;
      return cachet_fail(CACHET_ENOMEM, "mset: out of memory");
    }
  }
  for (size_t i = 0; i < ntags; i++) {
    int dup = 0;
    for (size_t j = 0; j < t->n && !dup; j++)
      dup = strcmp(t->names[j], tags[i]) == 0;
    if (dup)
      continue;
    int rc = cachet_key_build(c, &t->keys[t->n], CACHET_KIND_INDEX, bucket,
                              tags[i], strlen(tags[i]));
    if (rc != CACHET_OK)
      return rc;
    t->names[t->n++] = tags[i];
  }
  return CACHET_OK;
}

static void tagset_free(tagset *t) {
  for (size_t i = 0; i < t->n; i++)
    cachet_key_free(&t->keys[i]);
  if (t->names != t->names_s)
    free(t->names);
  if (t->keys != t->keys_s)
    free(t->keys);
}

/*
 * Seal entry e and append its set_tags EVALSHA. The arguments are those
 * cachet_entry_write sends on its first attempt (KEYS: value key, tag-set key,
 * the new tags' index keys; ARGV: envelope, ttl, prune cap, N, member, tag
 * names), so an entry whose old tags differ gets the same "retag" answer.
 */
static int mset_append(cachet *c, cachet_conn *cn, const cachet_entry *e,
                       int64_t now) {
  unsigned bucket = cachet_bucket(e->key, e->keylen);
  cachet_key vk = {0}, mk = {0};
  tagset ts = {0};
  uint8_t *blob = NULL;
  size_t bloblen = 0;
  const char *sargs[7 + 2 * SMALL_TAGS];
  size_t slens[7 + 2 * SMALL_TAGS];
  const char **args = sargs;
  size_t *lens = slens;
  int rc;

  if ((rc = cachet_key_build(c, &vk, CACHET_KIND_VALUE, bucket, e->key,
                             e->keylen)) != CACHET_OK ||
      (rc = cachet_key_build(c, &mk, CACHET_KIND_TAGSET, bucket, e->key,
                             e->keylen)) != CACHET_OK ||
      (rc = tagset_build(c, &ts, bucket, e->tags, e->ntags)) != CACHET_OK)
    goto done;
  rc = cachet_envelope_seal(c->keyring, c->cfg.encrypt, vk.buf, vk.len, 0, now,
                            e->ttl_ms > 0 ? now + e->ttl_ms : 0,
                            e->val == NULL ? "" : e->val, e->len, &blob,
                            &bloblen);
  if (rc != CACHET_OK)
    goto done;
  if (ts.n > SMALL_TAGS) {
    args = malloc((7 + 2 * ts.n) * sizeof *args);
    lens = malloc((7 + 2 * ts.n) * sizeof *lens);
    if (args == NULL || lens == NULL) {
      rc = cachet_fail(CACHET_ENOMEM, "mset: out of memory");
      goto done;
    }
  }
  char ttl[24], nn[24];
  int ttll = snprintf(ttl, sizeof ttl, "%lld", (long long)e->ttl_ms);
  int nnl = snprintf(nn, sizeof nn, "%zu", ts.n);
  int k = 0;
  args[k] = vk.buf, lens[k++] = vk.len;
  args[k] = mk.buf, lens[k++] = mk.len;
  for (size_t i = 0; i < ts.n; i++)
    args[k] = ts.keys[i].buf, lens[k++] = ts.keys[i].len;
  int nkeys = k;
  args[k] = (const char *)blob, lens[k++] = bloblen;
  args[k] = ttl, lens[k++] = (size_t)ttll;
  const char *cap = cachet_prune_cap(c);
  args[k] = cap, lens[k++] = strlen(cap);
  args[k] = nn, lens[k++] = (size_t)nnl;
  args[k] = e->key, lens[k++] = e->keylen;
  for (size_t i = 0; i < ts.n; i++)
    args[k] = ts.names[i], lens[k++] = strlen(ts.names[i]);
  rc = cachet_script_append(cn, CACHET_SCRIPT_SET_TAGS, nkeys, k, args, lens);
done:
  if (args != sargs)
    free(args);
  if (lens != slens)
    free(lens);
  free(blob);
  tagset_free(&ts);
  cachet_key_free(&vk);
  cachet_key_free(&mk);
  return rc;
}

/* Read one set_tags reply and move the entry to its next state. Returns a
 * fatal status or CACHET_OK. */
static int mset_reply(cachet *c, cachet_conn *cn, cachet_entry *e,
                      unsigned char *st, int *first) {
  redisReply *r = NULL;
  int rc = cachet_conn_read(cn, &r);
  if (rc == CACHET_ESERVER) {
    if (cachet_server_error_is("NOSCRIPT")) {
      *st = ST_NOSCRIPT;
    } else {
      *st = ST_DONE;
      entry_error(c, e, rc, first);
    }
    return CACHET_OK;
  }
  if (rc != CACHET_OK)
    return rc;
  if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
    *st = ST_DONE;
    e->status = CACHET_OK;
    CACHET_COUNT(c, writes, 1);
  } else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
             r->element[0]->type == REDIS_REPLY_STRING &&
             strcmp(r->element[0]->str, "retag") == 0) {
    *st = ST_RETAG;
  } else {
    rc = cachet_fail(CACHET_EPROTO, "mset: set_tags: unexpected reply");
  }
  freeReplyObject(r);
  return rc;
}

/* Pipeline the entries of the chunk whose state is `sel`. A fatal error
 * becomes the status of every selected entry not yet answered. */
static int mset_pass(cachet *c, cachet_conn *cn, cachet_entry *e, size_t m,
                     unsigned char *st, unsigned char sel, int *first) {
  int64_t now = cachet_now_ms();
  int rc = CACHET_OK;
  size_t i;
  for (i = 0; i < m; i++) {
    if (st[i] != sel)
      continue;
    rc = mset_append(c, cn, &e[i], now);
    if (rc == CACHET_EINVAL) {
      /* The envelope refused this value (format limits): its own status. */
      st[i] = ST_DONE;
      entry_error(c, &e[i], rc, first);
      rc = CACHET_OK;
    } else if (rc != CACHET_OK) {
      break;
    }
  }
  for (i = 0; rc == CACHET_OK && i < m; i++) {
    if (st[i] == sel && (rc = mset_reply(c, cn, &e[i], &st[i], first)))
      break;
  }
  if (rc != CACHET_OK) {
    /* Unread replies or unsent commands: the connection is out of step.
     * Every selected entry still in its state was never answered. */
    cachet_conn_break(cn);
    for (i = 0; i < m; i++) {
      if (st[i] == sel) {
        st[i] = ST_DONE;
        e[i].status = rc;
      }
    }
  }
  return rc;
}

/* Write one chunk: a pipelined pass; after NOSCRIPT (a SCRIPT FLUSH, a
 * restart, a failover) load the script and pipeline the refused entries
 * again; then write one by one, through cachet_entry_write and its retag
 * loop, the entries whose old tags were not known and any still refused. */
static int mset_chunk(cachet *c, cachet_conn *cn, cachet_entry *e, size_t m,
                      unsigned char *st, int *first) {
  memset(st, ST_TODO, m);
  int rc = mset_pass(c, cn, e, m, st, ST_TODO, first);
  if (rc != CACHET_OK)
    return rc;
  if (memchr(st, ST_NOSCRIPT, m) != NULL) {
    rc = cachet_script_load(c, cn, CACHET_SCRIPT_SET_TAGS);
    if (rc == CACHET_OK)
      rc = mset_pass(c, cn, e, m, st, ST_NOSCRIPT, first);
    if (rc != CACHET_OK) {
      for (size_t i = 0; i < m; i++)
        if (st[i] == ST_NOSCRIPT)
          e[i].status = rc;
      return rc;
    }
  }
  for (size_t i = 0; i < m; i++) {
    if (st[i] != ST_RETAG && st[i] != ST_NOSCRIPT)
      continue;
    cachet_entry *x = &e[i];
    rc = cachet_entry_write(c, cn, x->key, x->keylen,
                            x->val == NULL ? "" : x->val, x->len, x->ttl_ms,
                            x->tags, x->ntags);
    st[i] = ST_DONE;
    if (rc == CACHET_OK) {
      x->status = CACHET_OK;
    } else if (is_fatal(rc)) {
      for (size_t j = i; j < m; j++)
        if (st[j] != ST_DONE || j == i)
          e[j].status = rc;
      return rc;
    } else {
      entry_error(c, x, rc, first);
      rc = CACHET_OK;
    }
  }
  return CACHET_OK;
}

int cachet_mset(cachet *c, cachet_entry *entries, size_t n) {
  cachet_error_clear();
  if (n > 0 && entries == NULL)
    return cachet_result(
        c, cachet_fail(CACHET_EINVAL, "entries is NULL but n is %zu", n));
  /* Validate everything before anything is written. */
  for (size_t i = 0; i < n; i++) {
    const cachet_entry *e = &entries[i];
    int rc;
    if ((rc = cachet_check_key(c, e->key, e->keylen)) == CACHET_OK &&
        (rc = cachet_check_value(c, e->len, e->ttl_ms)) == CACHET_OK &&
        (rc = cachet_check_tags(c, e->tags, e->ntags)) == CACHET_OK &&
        e->val == NULL && e->len > 0)
      rc = cachet_fail(CACHET_EINVAL, "value is NULL but len is %zu", e->len);
    if (rc != CACHET_OK) {
      char detail[400];
      snprintf(detail, sizeof detail, "%s", cachet_last_error());
      fail_rest(entries, 0, n, rc);
      return cachet_result(
          c, cachet_fail(rc, "entry %zu: %s (nothing was written)", i, detail));
    }
  }
  for (size_t i = 0; i < n; i++)
    entries[i].status = CACHET_OK;
  if (n == 0)
    return CACHET_OK;

  size_t cap = n < CHUNK ? n : CHUNK;
  unsigned char *st = malloc(cap);
  if (st == NULL) {
    fail_rest(entries, 0, n, CACHET_ENOMEM);
    return cachet_result(c, cachet_fail(CACHET_ENOMEM, "mset: out of memory"));
  }
  cachet_conn *cn = NULL;
  int rc = cachet_conn_acquire(c, &cn);
  if (rc != CACHET_OK) {
    free(st);
    fail_rest(entries, 0, n, rc);
    return cachet_result(c, rc);
  }
  int first = CACHET_OK;
  for (size_t base = 0; base < n; base += CHUNK) {
    size_t m = n - base < CHUNK ? n - base : CHUNK;
    rc = mset_chunk(c, cn, entries + base, m, st, &first);
    if (rc != CACHET_OK) {
      fail_rest(entries, base + m, n, rc);
      break;
    }
  }
  cachet_conn_release(c, cn);
  free(st);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  return first;
}
