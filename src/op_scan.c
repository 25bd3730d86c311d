/* clear and prune as machines: both walk every master with SCAN (op_scan.h).
 *
 * Both scan every master at once, each with its own cursor, and pipeline
 * their work with the next SCAN of each master: the round trips follow the
 * pages and the chunks of the largest index, not the number of masters or
 * of index keys. A SEND holds at most SCAN_PIPELINE commands.
 *
 * clear. Never FLUSHDB: a database is often shared. SCAN MATCH
 * <escaped prefix>{??}[vmte]:* and each page to lua/clear_chunk.lua, which
 * checks every key's layout again and UNLINKs it, at most 256 keys a call,
 * so Redis never stalls. A page's calls ride in the same pipeline as the
 * next SCAN of its master (the calls touch disjoint keys, and SCAN allows
 * keys to go while it runs). Only the cache data kinds go; locks (l, f, s)
 * and staged values (w) stay. The prefix is glob-escaped, so a prefix
 * holding * ? [ ] or \ never matches another namespace's keys. In a
 * cluster a call holds one bucket, hence one slot: the clear as a whole is
 * not atomic, each call is. Entries written while it runs may survive it;
 * a dry run counts the value keys SCAN returns (an estimate under
 * concurrent writes: SCAN may return a key twice).
 *
 * prune. SCAN MATCH <escaped prefix>{??}t:* for the indexes. Each index
 * key of a page is a lane, and all lanes advance together: lua/
 * prune_chunk.lua removes members scored before the server's TIME, 256 a
 * call, until none is left; then ZSCAN feeds lua/prune_dangling.lua, which
 * removes members whose value is gone or whose tag set no longer holds the
 * tag, 128 a call. A master's next page is read once its lanes are done, so
 * the lanes in memory stay within a page per master. */
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
/* Most commands in one SEND: lanes that do not fit wait for the next. */
#define SCAN_PIPELINE 4096

enum { S_START, S_RUN };
enum { P_EXPIRED, P_ZSCAN, P_DANGLING, P_DONE };

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

/* ---- prune ----------------------------------------------------------------
 */

/* "<prefix>{bb}t:<tag>" from a SCAN page: a lane on master `node`. */
static int add_lane(cachet_op_scan *x, int node, const redisReply *k) {
  cachet *c = x->op.c;
  if (cachet_data_kind(c, k->str, k->len) != CACHET_KIND_INDEX ||
      k->len < c->cfg.prefixlen + 7)
    return CACHET_OK;
  if (cachet_grow(&x->lanes, &x->lanecap, x->nlanes + 1, sizeof *x->lanes) !=
      CACHET_OK)
    return CACHET_ENOMEM;
  char *key = malloc(k->len);
  if (key == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  memcpy(key, k->str, k->len);
  x->lanes[x->nlanes++] = (cachet_scan_lane){.node = node,
                                             .key = key,
                                             .keylen = k->len,
                                             .bucket = key_bucket(c, k),
                                             .phase = P_EXPIRED};
  x->active[node]++;
  return CACHET_OK;
}

static size_t lane_cmds(const cachet_scan_lane *l) {
  switch (l->phase) {
  case P_EXPIRED:
  case P_ZSCAN:
    return 1;
  case P_DANGLING:
    return (l->zpage->element[1]->elements / 2 + PRUNE_MEMBERS - 1) /
           PRUNE_MEMBERS;
  default:
    return 0;
  }
}

static void lane_send(cachet_op_scan *x, cachet_scan_lane *l) {
  cachet_cmds *b = &x->op.cmds;
  cachet *c = x->op.c;
  if (l->phase == P_EXPIRED) {
    cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_PRUNE_CHUNK, 1);
    cachet_cmds_arg(b, l->key, l->keylen);
    cachet_cmds_int(b, PRUNE_EXPIRED_CAP);
    return;
  }
  if (l->phase == P_ZSCAN) {
    cachet_cmds_start(b, CACHET_ROUTE_KEY);
    cachet_cmds_str(b, "ZSCAN");
    cachet_cmds_arg(b, l->key, l->keylen);
    cachet_cmds_str(b, l->zcursor);
    cachet_cmds_str(b, "COUNT");
    cachet_cmds_int(b, PRUNE_ZSCAN_COUNT);
    return;
  }
  /* prune_dangling over the ZSCAN page's members, 128 a call. */
  const redisReply *el = l->zpage->element[1];
  size_t p = c->cfg.prefixlen + 6;
  size_t members = el->elements / 2;
  for (size_t i = 0; i < members; i += PRUNE_MEMBERS) {
    size_t n = members - i < PRUNE_MEMBERS ? members - i : PRUNE_MEMBERS;
    cachet_cmds_script(b, CACHET_ROUTE_KEY, CACHET_SCRIPT_PRUNE_DANGLING,
                       1 + 2 * n);
    cachet_cmds_arg(b, l->key, l->keylen);
    for (size_t j = i; j < i + n; j++) {
      const redisReply *m = el->element[2 * j];
      cachet_cmds_key(b, c, CACHET_KIND_VALUE, l->bucket, m->str, m->len);
      cachet_cmds_key(b, c, CACHET_KIND_TAGSET, l->bucket, m->str, m->len);
    }
    cachet_cmds_copy(b, l->key + p, l->keylen - p);
    for (size_t j = i; j < i + n; j++)
      cachet_cmds_copy(b, el->element[2 * j]->str, el->element[2 * j]->len);
  }
  freeReplyObject(l->zpage); /* everything it lent is copied */
  l->zpage = NULL;
}

static void lane_done(cachet_op_scan *x, cachet_scan_lane *l) {
  l->phase = P_DONE;
  x->active[l->node]--;
}

static int lane_replies(cachet_op_scan *x, cachet_scan_lane *l,
                        cachet_res *res) {
  if (l->phase == P_EXPIRED) {
    int rc = cachet_res_ok(res);
    const redisReply *r = res->reply;
    if (rc == CACHET_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                            r->element[0]->type != REDIS_REPLY_INTEGER ||
                            r->element[1]->type != REDIS_REPLY_INTEGER ||
                            r->element[0]->integer < 0))
      rc = cachet_res_proto("prune_chunk");
    if (rc != CACHET_OK)
      return rc;
    x->count += (uint64_t)r->element[0]->integer;
    if (r->element[1]->integer == 0) { /* none left: the dangling ones */
      strcpy(l->zcursor, "0");
      l->phase = P_ZSCAN;
    }
    return CACHET_OK;
  }
  if (l->phase == P_ZSCAN) {
    int rc = cursor_page(res, "ZSCAN", l->zcursor, sizeof l->zcursor, 1);
    if (rc != CACHET_OK)
      return rc;
    if (res->reply->element[1]->elements > 0) {
      l->zpage = res->reply; /* kept until its calls are built */
      res->reply = NULL;
      l->phase = P_DANGLING;
    } else if (strcmp(l->zcursor, "0") == 0) {
      lane_done(x, l);
    }
    return CACHET_OK;
  }
  for (size_t i = 0; i < l->ncmd; i++) {
    long long v;
    int rc = cachet_res_int(&res[i], "prune_dangling", &v);
    if (rc == CACHET_OK && v < 0)
      rc = cachet_res_proto("prune_dangling");
    if (rc != CACHET_OK)
      return rc;
    x->count += (uint64_t)v;
  }
  if (strcmp(l->zcursor, "0") == 0)
    lane_done(x, l);
  else
    l->phase = P_ZSCAN;
  return CACHET_OK;
}

/* ---- both -----------------------------------------------------------------
 */

/* The next SEND: the clear's calls for the pages just read, the next SCAN
 * of every master not done (for prune, once its lanes are done), then the
 * prune lanes' steps; or the end. */
static int send_next(cachet_op_scan *x, const cachet_in *in, cachet_out *out,
                     size_t calls) {
  cachet_cmds *b = &x->op.cmds;
  size_t total = calls;
  x->nchunks = calls;
  x->nscans = 0;
  for (int n = 0; n < in->nodes; n++) {
    if (x->cursors[n][0] == '\0' || (x->prune && x->active[n] > 0))
      continue;
    cachet_cmds_start(b, n);
    cachet_cmds_str(b, "SCAN");
    cachet_cmds_str(b, x->cursors[n]);
    cachet_cmds_str(b, "MATCH");
    cachet_cmds_str(b, x->pattern);
    cachet_cmds_str(b, "COUNT");
    cachet_cmds_int(b, x->prune ? PRUNE_SCAN_COUNT : CLEAR_SCAN_COUNT);
    x->scanned[x->nscans++] = n;
    total++;
  }
  for (size_t i = 0; i < x->nlanes; i++) {
    cachet_scan_lane *l = &x->lanes[i];
    l->ncmd = 0;
    size_t k = lane_cmds(l);
    if (k == 0 || (total > 0 && total + k > SCAN_PIPELINE))
      continue;
    l->cmd0 = total;
    l->ncmd = k;
    total += k;
    lane_send(x, l);
  }
  cachet_progress(x->op.c, x->prune ? "prune" : "clear", x->count);
  if (total == 0) {
    if (!x->prune && !x->dry_run)
      CACHET_COUNT(x->op.c, clears, 1);
    return cachet_op_done(out, CACHET_OK);
  }
  x->op.state = S_RUN;
  return cachet_cmds_send(b, out);
}

static int start(cachet_op_scan *x, const cachet_in *in, cachet_out *out) {
  size_t n = (size_t)in->nodes;
  x->cursors = calloc(n, sizeof *x->cursors);
  x->scanned = calloc(n, sizeof *x->scanned);
  x->active = calloc(n, sizeof *x->active);
  if (x->cursors == NULL || x->scanned == NULL || x->active == NULL)
    return cachet_op_fail(out, CACHET_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++)
    strcpy(x->cursors[i], "0");
  return send_next(x, in, out, 0);
}

/* The clear's counts, then each master's page (the next calls, or new
 * lanes), then the lanes' outcomes. */
static int replies(cachet_op_scan *x, cachet_in *in, cachet_out *out) {
  int rc = CACHET_OK;
  for (size_t i = 0; rc == CACHET_OK && i < x->nchunks; i++) {
    long long v;
    cachet_near_forget_cmd(x->op.c, &x->op.cmds.cmd[i]);
    rc = cachet_res_int(&in->res[i], "clear_chunk", &v);
    if (rc == CACHET_OK && v < 0)
      rc = cachet_res_proto("clear_chunk");
    if (rc == CACHET_OK)
      x->count += (uint64_t)v;
  }
  /* The lanes that sent go first: new ones may move the array. */
  for (size_t i = 0; rc == CACHET_OK && i < x->nlanes; i++)
    if (x->lanes[i].ncmd > 0)
      rc = lane_replies(x, &x->lanes[i], &in->res[x->lanes[i].cmd0]);
  size_t calls = 0;
  for (int s = 0; rc == CACHET_OK && s < x->nscans; s++) {
    cachet_res *res = &in->res[x->nchunks + (size_t)s];
    int node = x->scanned[s];
    char *cursor = x->cursors[node];
    rc = cursor_page(res, "SCAN", cursor, sizeof x->cursors[0], 0);
    const redisReply *page = rc == CACHET_OK ? res->reply->element[1] : NULL;
    if (rc == CACHET_OK && !x->prune)
      calls += clear_page(x, page);
    for (size_t i = 0; rc == CACHET_OK && x->prune && i < page->elements; i++)
      rc = add_lane(x, node, page->element[i]);
    if (rc == CACHET_OK && strcmp(cursor, "0") == 0)
      cursor[0] = '\0'; /* this master is done */
  }
  if (rc != CACHET_OK)
    return cachet_op_done(out, rc);
  size_t keep = 0;
  for (size_t i = 0; i < x->nlanes; i++)
    if (x->lanes[i].phase != P_DONE)
      x->lanes[keep++] = x->lanes[i];
    else
      free(x->lanes[i].key);
  x->nlanes = keep;
  return send_next(x, in, out, calls);
}

static int scan_step(cachet_op *op, const cachet_in *in, cachet_out *out) {
  cachet_op_scan *x = (cachet_op_scan *)op;
  if (op->state == S_START)
    return start(x, in, out);
  return replies(x, (cachet_in *)in, out);
}

static void scan_free(cachet_op *op) {
  cachet_op_scan *x = (cachet_op_scan *)op;
  for (size_t i = 0; i < x->nlanes; i++) {
    free(x->lanes[i].key);
    if (x->lanes[i].zpage != NULL)
      freeReplyObject(x->lanes[i].zpage);
  }
  free(x->lanes);
  x->lanes = NULL;
  x->nlanes = x->lanecap = 0;
  free(x->pattern);
  x->pattern = NULL;
  free(x->cursors);
  free(x->scanned);
  free(x->active);
  x->cursors = NULL;
  x->scanned = NULL;
  x->active = NULL;
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
