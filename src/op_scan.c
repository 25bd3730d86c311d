/* clear and prune as machines: both walk every master with SCAN (op_scan.h).
 *
 * clear. Never FLUSHDB: a database is often shared. SCAN MATCH
 * <escaped prefix>{??}[vmte]:* and each page to lua/clear_chunk.lua, which
 * checks every key's layout again and UNLINKs it, at most 256 keys a call,
 * so Redis never stalls. Every master is scanned at once, and a page's
 * calls ride in the same pipeline as the next SCAN of its master: one round
 * trip per page, whatever the number of masters (the calls touch disjoint
 * keys, and SCAN allows keys to go while it runs). Only the cache data kinds
 * go; locks (l, f, s) and staged values
 * (w) stay. The prefix is glob-escaped, so a prefix holding * ? [ ] or \
 * never matches another namespace's keys. In a cluster a call holds one
 * bucket, hence one slot: the clear as a whole is not atomic, each call is.
 * Entries written while it runs may survive it; a dry run counts the value
 * keys SCAN returns (an estimate under concurrent writes: SCAN may return a
 * key twice).
 *
 * prune. SCAN MATCH <escaped prefix>{??}t:* for the indexes; for each,
 * lua/prune_chunk.lua removes members scored before the server's TIME, 256
 * a call, until none is left; then ZSCAN feeds lua/prune_dangling.lua,
 * which removes members whose value is gone or whose tag set no longer
 * holds the tag, 128 a call. */
#include "op_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define CLEAR_SCAN_COUNT 1000
#define CLEAR_KEYS 256
#define PRUNE_SCAN_COUNT 500
#define PRUNE_EXPIRED_CAP 256
#define PRUNE_ZSCAN_COUNT 128
#define PRUNE_MEMBERS 128

enum { S_START, S_SCAN, S_CLEAR, S_EXPIRED, S_ZSCAN, S_DANGLING };

static int dangling_done(cachet_op_scan *x, const cachet_in *in,
                         cachet_out *out);

static int send_scan(cachet_op_scan *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  cachet_cmds_start(b, x->node);
  cachet_cmds_str(b, "SCAN");
  cachet_cmds_str(b, x->cursor);
  cachet_cmds_str(b, "MATCH");
  cachet_cmds_str(b, x->pattern);
  cachet_cmds_str(b, "COUNT");
  cachet_cmds_int(b, x->prune ? PRUNE_SCAN_COUNT : CLEAR_SCAN_COUNT);
  x->op.state = S_SCAN;
  return cachet_cmds_send(b, out);
}

/* {cursor, [string...]}: copy the cursor. */
static int cursor_page(const cachet_res *res, const char *what, char *cursor,
                       size_t cap, int pairs) {
  int rc = cachet_res_ok(res);
  const redisReply *r = res->reply;
  if (rc == CACHET_OK &&
      (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
       r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= cap ||
       !cachet_reply_strings(r->element[1]) ||
       (pairs && r->element[1]->elements % 2 != 0)))
    rc = cachet_res_proto(what);
  if (rc != CACHET_OK)
    return rc;
  memcpy(cursor, r->element[0]->str, r->element[0]->len);
  cursor[r->element[0]->len] = '\0';
  return CACHET_OK;
}

/* The next SCAN page of this master, or the next master, or the end. */
static int next_page(cachet_op_scan *x, const cachet_in *in, cachet_out *out) {
  cachet_progress(x->op.c, x->prune ? "prune" : "clear", x->count);
  if (strcmp(x->cursor, "0") == 0 && ++x->node >= in->nodes) {
    if (!x->prune && !x->dry_run)
      CACHET_COUNT(x->op.c, clears, 1);
    return cachet_op_done(out, CACHET_OK);
  }
  return send_scan(x, out);
}

/* ---- clear ----------------------------------------------------------------
 */

/* The bucket of a data key (its {bb} hash tag), as a number. */
static unsigned key_bucket(const cachet *c, const redisReply *k) {
  unsigned b = 0;
  for (size_t i = c->cfg.prefixlen + 1; i <= c->cfg.prefixlen + 2; i++) {
    char ch = k->str[i];
    b = b * 16 + (unsigned)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
  }
  return b;
}

/* One page: count its value keys (dry run), or append clear_chunk calls
 * over its data keys, per bucket in a cluster. Returns the calls added. */
static size_t clear_page(cachet_op_scan *x, const redisReply *page) {
  cachet *c = x->op.c;
  cachet_cmds *b = &x->op.cmds;
  int clustered = x->clustered;
  unsigned char seen[CACHET_BUCKETS] = {0};
  for (size_t i = 0; i < page->elements; i++) {
    const redisReply *k = page->element[i];
    char kind = cachet_data_kind(c, k->str, k->len);
    if (kind == 0)
      continue;
    if (x->dry_run) {
      x->count += kind == CACHET_KIND_VALUE;
      continue;
    }
    seen[clustered ? key_bucket(c, k) : 0] = 1;
  }
  size_t calls = 0;
  for (unsigned bkt = 0; !x->dry_run && bkt < CACHET_BUCKETS; bkt++) {
    if (!seen[bkt])
      continue;
    /* Keys of this bucket (all of them on a single server), <= 256 a call;
     * KEYS first, then the prefix, so each call is sized before it
     * starts. */
    size_t i = 0;
    while (i < page->elements) {
      size_t take = 0, j = i;
      for (; j < page->elements && take < CLEAR_KEYS; j++) {
        const redisReply *k = page->element[j];
        if (cachet_data_kind(c, k->str, k->len) != 0 &&
            (!clustered || key_bucket(c, k) == bkt))
          take++;
      }
      if (take == 0)
        break;
      cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_CLEAR_CHUNK, take);
      for (; i < j; i++) {
        const redisReply *k = page->element[i];
        if (cachet_data_kind(c, k->str, k->len) != 0 &&
            (!clustered || key_bucket(c, k) == bkt))
          cachet_cmds_copy(b, k->str, k->len);
      }
      cachet_cmds_arg(b, c->cfg.prefix, c->cfg.prefixlen);
      calls++;
    }
  }
  return calls;
}

/* The next SEND of a clear: the calls for the pages just read, then the
 * next SCAN of every master not done; or the end. */
static int clear_send(cachet_op_scan *x, const cachet_in *in, cachet_out *out,
                      size_t calls) {
  cachet_cmds *b = &x->op.cmds;
  x->nchunks = calls;
  x->nscans = 0;
  for (int n = 0; n < in->nodes; n++) {
    if (x->cursors[n][0] == '\0')
      continue;
    cachet_cmds_start(b, n);
    cachet_cmds_str(b, "SCAN");
    cachet_cmds_str(b, x->cursors[n]);
    cachet_cmds_str(b, "MATCH");
    cachet_cmds_str(b, x->pattern);
    cachet_cmds_str(b, "COUNT");
    cachet_cmds_int(b, CLEAR_SCAN_COUNT);
    x->scanned[x->nscans++] = n;
  }
  cachet_progress(x->op.c, "clear", x->count);
  if (calls == 0 && x->nscans == 0) {
    if (!x->dry_run)
      CACHET_COUNT(x->op.c, clears, 1);
    return cachet_op_done(out, CACHET_OK);
  }
  x->op.state = S_CLEAR;
  return cachet_cmds_send(b, out);
}

static int clear_start(cachet_op_scan *x, const cachet_in *in,
                       cachet_out *out) {
  x->cursors = calloc((size_t)in->nodes, sizeof *x->cursors);
  x->scanned = calloc((size_t)in->nodes, sizeof *x->scanned);
  if (x->cursors == NULL || x->scanned == NULL)
    return cachet_op_fail(out, CACHET_ENOMEM, "out of memory");
  for (int n = 0; n < in->nodes; n++)
    strcpy(x->cursors[n], "0");
  return clear_send(x, in, out, 0);
}

/* The calls' counts, then each master's page, which becomes the next
 * calls. */
static int clear_replies(cachet_op_scan *x, const cachet_in *in,
                         cachet_out *out) {
  for (size_t i = 0; i < x->nchunks; i++) {
    long long v;
    int rc = cachet_res_int(&in->res[i], "clear_chunk", &v);
    if (rc == CACHET_OK && v < 0)
      rc = cachet_res_proto("clear_chunk");
    if (rc != CACHET_OK)
      return cachet_op_done(out, rc);
    x->count += (uint64_t)v;
  }
  size_t calls = 0;
  for (int s = 0; s < x->nscans; s++) {
    const cachet_res *res = &in->res[x->nchunks + (size_t)s];
    char *cursor = x->cursors[x->scanned[s]];
    int rc = cursor_page(res, "SCAN", cursor, sizeof x->cursors[0], 0);
    if (rc != CACHET_OK)
      return cachet_op_done(out, rc);
    calls += clear_page(x, res->reply->element[1]);
    if (strcmp(cursor, "0") == 0)
      cursor[0] = '\0'; /* this master is done */
  }
  return clear_send(x, in, out, calls);
}

/* ---- prune ----------------------------------------------------------------
 */

/* "<prefix>{bb}t:<tag>": its bucket and where the tag starts. */
static int parse_index_key(const cachet *c, const redisReply *k,
                           unsigned *bucket) {
  size_t p = c->cfg.prefixlen;
  if (cachet_data_kind(c, k->str, k->len) != CACHET_KIND_INDEX ||
      k->len < p + 7)
    return 0;
  *bucket = key_bucket(c, k);
  return 1;
}

static const redisReply *index_key(const cachet_op_scan *x) {
  return x->page->element[1]->element[x->ki];
}

static int send_expired(cachet_op_scan *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  const redisReply *k = index_key(x);
  cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_PRUNE_CHUNK, 1);
  cachet_cmds_arg(b, k->str, k->len);
  cachet_cmds_int(b, PRUNE_EXPIRED_CAP);
  x->op.state = S_EXPIRED;
  return cachet_cmds_send(b, out);
}

static int send_zscan(cachet_op_scan *x, cachet_out *out) {
  cachet_cmds *b = &x->op.cmds;
  const redisReply *k = index_key(x);
  cachet_cmds_start(b, CACHET_ROUTE_KEY);
  cachet_cmds_str(b, "ZSCAN");
  cachet_cmds_arg(b, k->str, k->len);
  cachet_cmds_str(b, x->zcursor);
  cachet_cmds_str(b, "COUNT");
  cachet_cmds_int(b, PRUNE_ZSCAN_COUNT);
  x->op.state = S_ZSCAN;
  return cachet_cmds_send(b, out);
}

/* The next index key of the page, or the next page. */
static int next_index(cachet_op_scan *x, const cachet_in *in, cachet_out *out) {
  const redisReply *keys = x->page->element[1];
  for (; x->ki < keys->elements; x->ki++)
    if (parse_index_key(x->op.c, keys->element[x->ki], &x->bucket))
      return send_expired(x, out);
  freeReplyObject(x->page);
  x->page = NULL;
  return next_page(x, in, out);
}

static int expired_reply(cachet_op_scan *x, const cachet_in *in,
                         cachet_out *out) {
  int rc = cachet_res_ok(&in->res[0]);
  const redisReply *r = in->res[0].reply;
  if (rc == CACHET_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                          r->element[0]->type != REDIS_REPLY_INTEGER ||
                          r->element[1]->type != REDIS_REPLY_INTEGER ||
                          r->element[0]->integer < 0))
    rc = cachet_res_proto("prune_chunk");
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  x->count += (uint64_t)r->element[0]->integer;
  if (r->element[1]->integer != 0)
    return send_expired(x, out);
  strcpy(x->zcursor, "0");
  return send_zscan(x, out);
}

/* A ZSCAN page: prune_dangling over its members, 128 a call. */
static int zscan_reply(cachet_op_scan *x, const cachet_in *in,
                       cachet_out *out) {
  int rc = cursor_page(&in->res[0], "ZSCAN", x->zcursor, sizeof x->zcursor, 1);
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  const redisReply *el = in->res[0].reply->element[1];
  const redisReply *k = index_key(x);
  size_t p = x->op.c->cfg.prefixlen + 6;
  size_t members = el->elements / 2;
  cachet_cmds *b = &x->op.cmds;
  cachet *c = x->op.c;
  for (size_t i = 0; i < members; i += PRUNE_MEMBERS) {
    size_t n = members - i < PRUNE_MEMBERS ? members - i : PRUNE_MEMBERS;
    cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_PRUNE_DANGLING,
                       1 + 2 * n);
    cachet_cmds_arg(b, k->str, k->len);
    for (size_t j = i; j < i + n; j++) {
      const redisReply *m = el->element[2 * j];
      cachet_cmds_key(b, c, CACHET_KIND_VALUE, x->bucket, m->str, m->len);
      cachet_cmds_key(b, c, CACHET_KIND_TAGSET, x->bucket, m->str, m->len);
    }
    cachet_cmds_arg(b, k->str + p, k->len - p);
    for (size_t j = i; j < i + n; j++)
      cachet_cmds_copy(b, el->element[2 * j]->str, el->element[2 * j]->len);
  }
  if (members == 0)
    return dangling_done(x, in, out);
  x->op.state = S_DANGLING;
  return cachet_cmds_send(b, out);
}

static int dangling_done(cachet_op_scan *x, const cachet_in *in,
                         cachet_out *out) {
  if (strcmp(x->zcursor, "0") != 0)
    return send_zscan(x, out);
  x->ki++;
  return next_index(x, in, out);
}

static int dangling_reply(cachet_op_scan *x, const cachet_in *in,
                          cachet_out *out) {
  for (size_t i = 0; i < in->n; i++) {
    long long v;
    int rc = cachet_res_int(&in->res[i], "prune_dangling", &v);
    if (rc == CACHET_OK && v < 0)
      rc = cachet_res_proto("prune_dangling");
    if (rc != CACHET_OK)
      return cachet_op_done(out, rc);
    x->count += (uint64_t)v;
  }
  return dangling_done(x, in, out);
}

/* ---- both -----------------------------------------------------------------
 */

static int scan_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_scan *x = (cachet_op_scan *)op;
  switch (op->state) {
  case S_START:
    if (!x->prune)
      return clear_start(x, in, out);
    strcpy(x->cursor, "0");
    return send_scan(x, out);
  case S_SCAN: {
    int rc = cursor_page(&in->res[0], "SCAN", x->cursor, sizeof x->cursor, 0);
    if (rc != CACHET_OK)
      return cachet_op_done(out, rc);
    x->page = in->res[0].reply; /* kept while its indexes are pruned */
    in->res[0].reply = NULL;
    x->ki = 0;
    return next_index(x, in, out);
  }
  case S_CLEAR:
    return clear_replies(x, in, out);
  case S_EXPIRED:
    return expired_reply(x, in, out);
  case S_ZSCAN:
    return zscan_reply(x, in, out);
  default:
    return dangling_reply(x, in, out);
  }
}

static void scan_free(cachet_op *op) {
  cachet_op_scan *x = (cachet_op_scan *)op;
  if (x->page != NULL)
    freeReplyObject(x->page);
  x->page = NULL;
  free(x->pattern);
  x->pattern = NULL;
  free(x->cursors);
  free(x->scanned);
  x->cursors = NULL;
  x->scanned = NULL;
  cachet_cmds_free(&op->cmds);
}

static const cachet_op_kind scan_kind = {"scan", scan_step, scan_free, 0};

int cachet_op_scan_init(cachet_op_scan *x, cachet *c, int prune, int dry_run,
                        int clustered) {
  cachet_op_begin(&x->op, sizeof *x, &scan_kind, c);
  x->prune = prune;
  x->dry_run = dry_run;
  x->clustered = clustered;
  return cachet_scan_pattern(c, prune ? "{??}t:*" : CACHET_CLEAR_TAIL,
                             &x->pattern);
}
