/*
 * Model-based fuzzing of cachet's operations (see ops_model.h).
 *
 * The reference model is written from the documented contracts
 * (docs/DESIGN.md and the header of each lua/ script), not from the C code:
 * per handle and user key it keeps the value key's state, the tag set (m),
 * the live index memberships (t, future score) and the expired ones that
 * may still be listed until a prune; per lock name its holder and fence.
 * Every operation's result is predicted from it, and after the sequence the
 * raw keyspace must equal it. Where the contract leaves a choice (a write
 * may prune expired members of the indexes it touches; two concurrent
 * writes take effect in either order; an operation cut by a killed
 * connection may or may not have run), the model holds both possibilities
 * and Redis must show one of them.
 *
 * Raw reads never go through cachet's connections: the oracle has its own
 * hiredis connection per node, and opens envelopes with the keyring itself.
 */
#include "ops_model.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cachet.h"
#include "cluster_harness.h"
#include "crc16.h"
#include "envelope.h"
#include "fuzz_helpers.h"
#include "handle.h"
#include "harness.h"
#include "track.h"

/* ---- The alphabet --------------------------------------------------------
 * Small on purpose: operations must collide on keys, tags, buckets and
 * locks. Two keys share k0's bucket (so they share index keys), one holds
 * braces (cachet's hash tag comes first) and one a NUL byte. Twelve tags,
 * so an entry can carry more than the 8 tag names a plain write passes to
 * untag.lua (the rest must come back through its retag answer). */
#define NH 2 /* handles: two prefixes sharing the stem "fz:" */
#define NKEYS 8
#define NTAGS 12
#define NLOCKS 2
#define NSLOTS 4 /* lock handles per cachet handle */
#define TAGMASK ((uint16_t)((1u << NTAGS) - 1))
#define LONG_TTL_MS 600000
#define LOCK_TTL_MS 60000
#define LARGE_LEN 70000 /* staged: CACHET_STAGE_MIN is 64 KiB */
#define SHORT_TTL_MS 2
#define SHORT_WAIT_MS 15

static const char *const prefixes[NH] = {"fz:", "fz:b:"};
static char key_names[NKEYS][16] = {"k0", "k1", "k2",    "k3",
                                    "",   "",   "a{b}c", "x\0y"};
static size_t key_lens[NKEYS] = {2, 2, 2, 2, 0, 0, 5, 3};
static const char *const tag_names[NTAGS] = {"t0", "t1", "t2",      "t3",
                                             "t4", "t5", "t6",      "t7",
                                             "t8", "t9", "user:42", "a b"};
static const char *const lock_names[NLOCKS] = {"L0", "L1"};

/* Keys written under a prefix that are not cachet's: they must survive
 * every operation. "fz:{zz}v:k0" matches clear's SCAN pattern; the last
 * one looks like a third namespace on the same stem. */
#define NFOREIGN 5
static const char *const foreign_names[NFOREIGN] = {
    "fz:foreign", "fz:{zz}v:k0", "fz:{00}q:k0", "fz:b:{0}v:k", "fz:x:{00}v:k0"};

/* ---- The world: servers and raw connections ------------------------------ */

#define MAXNODES 3

static struct {
  ops_mode mode;
  test_server srv;
  test_cluster cl;
  int nnodes;
  redisContext *node[MAXNODES];
  int owner[CACHET_CLUSTER_SLOTS]; /* node index per slot (cluster) */
  char url[512];
  const cachet_keyring *ring[NH];
  int near; /* CACHET_FUZZ_NEAR=1: handles with a near cache */
} W;

static void die(const char *what) {
  fprintf(stderr, "ops_model: %s\n", what);
  abort();
}

static redisContext *node_connect(int i) {
  struct timeval tv = {5, 0};
  redisContext *c =
      W.mode == OPS_STANDALONE
          ? redisConnectUnixWithTimeout(W.srv.sock, tv)
          : redisConnectWithTimeout("127.0.0.1", W.cl.port[i], tv);
  if (c == NULL || c->err)
    die("cannot connect to a node");
  redisSetTimeout(c, tv);
  return c;
}

static redisContext *route(const char *key, size_t len) {
  if (W.mode == OPS_STANDALONE)
    return W.node[0];
  return W.node[W.owner[cachet_key_slot(key, len)]];
}

/* One command on a node; any failure of the oracle's own connection is a
 * broken harness, not a finding. */
static redisReply *node_cmd(redisContext *c, int argc, const char **argv,
                            const size_t *lens) {
  redisReply *r = redisCommandArgv(c, argc, argv, lens);
  if (r == NULL)
    die(c->errstr);
  return r;
}

static void near_sync(const char *key, size_t len);

/* A command whose first key is argv[1]. A raw write waits, with a near
 * cache, until the handle has heard of it (near_sync). */
static redisReply *kcmd(int argc, const char **argv, const size_t *lens) {
  redisReply *r = node_cmd(route(argv[1], lens[1]), argc, argv, lens);
  if (strcmp(argv[0], "GET") != 0 && strcmp(argv[0], "EXISTS") != 0)
    near_sync(argv[1], lens[1]);
  return r;
}

static redisReply *kcmd2(const char *cmd, const char *key, size_t klen) {
  const char *argv[2] = {cmd, key};
  size_t lens[2] = {strlen(cmd), klen};
  return kcmd(2, argv, lens);
}

static void every_node(const char *fmt) {
  for (int i = 0; i < W.nnodes; i++) {
    redisReply *r = redisCommand(W.node[i], fmt);
    if (r == NULL)
      die(W.node[i]->errstr);
    freeReplyObject(r);
  }
}

static void load_slot_map(void) {
  redisReply *r = redisCommand(W.node[0], "CLUSTER SLOTS");
  if (r == NULL || r->type != REDIS_REPLY_ARRAY)
    die("CLUSTER SLOTS");
  for (size_t i = 0; i < r->elements; i++) {
    redisReply *e = r->element[i];
    long long port = e->element[2]->element[1]->integer;
    int idx = -1;
    for (int n = 0; n < W.nnodes; n++)
      if (W.cl.port[n] == port)
        idx = n;
    if (idx < 0)
      die("CLUSTER SLOTS names an unknown node");
    for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
      W.owner[s] = idx;
  }
  freeReplyObject(r);
}

static void stop_world(void) {
  for (int i = 0; i < W.nnodes; i++)
    if (W.node[i] != NULL)
      redisFree(W.node[i]);
  if (W.mode == OPS_STANDALONE)
    test_server_stop(&W.srv);
  else
    test_cluster_stop(&W.cl);
}

/* ---- Names, from docs/DESIGN.md "Key layout" ----------------------------- */

/* FNV-1a-32 of the name, modulo 256: written from the document, not taken
 * from keys.c, so that a change of the stored layout fails here. */
static unsigned ref_bucket(const void *p, size_t n) {
  const unsigned char *s = p;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 16777619u;
  }
  return h % 256u;
}

typedef struct kname {
  char s[128];
  size_t n;
} kname;

static void name_at(kname *k, int h, char kind, unsigned bucket,
                    const void *name, size_t len) {
  int n = snprintf(k->s, sizeof k->s, "%s{%02x}%c:", prefixes[h], bucket, kind);
  memcpy(k->s + n, name, len);
  k->n = (size_t)n + len;
  k->s[k->n] = '\0';
}

/* A key's own kinds (v, m, s) are in its bucket. */
static void key_name(kname *k, int h, char kind, int key) {
  name_at(k, h, kind, ref_bucket(key_names[key], key_lens[key]), key_names[key],
          key_lens[key]);
}

/* The index (t) or evicting index (e) of tag `t` in key `key`'s bucket. */
static void index_name(kname *k, int h, char kind, int t, int key) {
  name_at(k, h, kind, ref_bucket(key_names[key], key_lens[key]), tag_names[t],
          strlen(tag_names[t]));
}

static void lock_name(kname *k, int h, char kind, int l) {
  const char *n = lock_names[l];
  name_at(k, h, kind, ref_bucket(n, strlen(n)), n, strlen(n));
}

/* ---- Values -------------------------------------------------------------
 * Every write of a sequence stores a value no other write stores (its id),
 * so a stale value can never pass for the right one. */
typedef struct mval {
  uint32_t id, len;
} mval;

static uint8_t *value_bytes(mval v) {
  uint8_t *b = malloc(v.len + 1);
  if (b == NULL)
    die("out of memory");
  uint64_t x = 0x9E3779B97F4A7C15ull * (v.id + 1) ^ v.len;
  for (uint32_t i = 0; i < v.len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = (uint8_t)(x >> 24);
  }
  return b;
}

static int value_equals(mval v, const void *p, size_t n) {
  if (n != v.len)
    return 0;
  uint8_t *b = value_bytes(v);
  int eq = memcmp(b, p, n) == 0;
  free(b);
  return eq;
}

/* ---- The model ------------------------------------------------------------
 */

enum { V_ABSENT, V_VALUE, V_CORRUPT, V_BADMAC, V_WRONGTYPE };
static const char *const vnames[] = {"absent", "value", "corrupt", "bad-mac",
                                     "wrongtype"};

typedef struct mkey {
  int v;         /* V_*: what the value key holds */
  mval val;      /* V_VALUE; for V_BADMAC, the copied envelope's value */
  int origin;    /* V_BADMAC: the key whose envelope it is */
  int ttl;       /* the value key has a (long) TTL */
  uint16_t mset; /* tags in the tag set (m); the key is absent when 0 */
  uint16_t tmem; /* tags whose index lists the key with a future score */
  uint16_t past; /* ... with a past score: may be listed until a prune */
  int slock;     /* a foreign owner holds its stampede lock */
} mkey;

typedef struct mlock {
  int holder; /* a lock slot, -1 free, -2 held by a token no slot has */
  uint64_t fence;
} mlock;

typedef struct mhandle {
  mkey k[NKEYS];
  mlock l[NLOCKS];
  uint16_t abandoned; /* tags that may have e keys (abandoned evictions) */
} mhandle;

/* The state of one run. */
static struct {
  cachet *h[NH];
  mhandle m[NH];
  cachet_lock *slot[NH][NSLOTS];
  int slot_lock[NH][NSLOTS]; /* lock index of each slot */
  uint32_t next_id;
  int budget[NH];   /* ECONN answers a killed connection may still give */
  int failed;       /* an operation was cut short (staged keys may remain) */
  unsigned foreign; /* foreign_names written */
  int loader_calls;
  char trace[OPS_MAX + 8][200];
  int ntrace;
} S;

static mval new_value(uint32_t len) {
  mval v = {++S.next_id, len};
  return v;
}

/* set_tags / a plain set / set_many (DESIGN.md "set_tags", "Untagged
 * writes"): memberships of old tags not written again are removed; the new
 * tags' memberships get the entry's (future) score; the tag set becomes
 * exactly `tags`. */
static void m_write(mkey *k, mval v, int ttl, uint16_t tags) {
  uint16_t drop = k->mset & (uint16_t)~tags;
  k->tmem &= (uint16_t)~drop;
  k->past &= (uint16_t)~drop;
  k->v = V_VALUE;
  k->val = v;
  k->ttl = ttl;
  k->mset = tags;
  k->tmem |= tags;
  k->past &= (uint16_t)~tags;
}

/* delete_entry: the result is whether the value existed. */
static int m_delete(mkey *k) {
  int existed = k->v != V_ABSENT;
  k->tmem &= (uint16_t)~k->mset;
  k->past &= (uint16_t)~k->mset;
  k->mset = 0;
  k->v = V_ABSENT;
  k->ttl = 0;
  return existed ? CACHET_OK : CACHET_MISS;
}

/* Redis expired the value and its tag set (same instant): the index
 * memberships stay, scored in the past, until something prunes them. */
static void m_expire(mkey *k) {
  k->v = V_ABSENT;
  k->ttl = 0;
  k->mset = 0;
  k->past |= k->tmem;
  k->tmem = 0;
}

/* evict-tags of `tags`: every entry whose tag set holds one of them loses
 * its value, tag set and memberships; every index of those tags is gone.
 * Returns the count cachet must report: values that existed. */
static uint64_t m_evict(mhandle *mh, uint16_t tags) {
  uint64_t n = 0;
  for (int i = 0; i < NKEYS; i++) {
    mkey *k = &mh->k[i];
    if (k->mset & tags) {
      n += k->v != V_ABSENT;
      (void)m_delete(k);
    }
  }
  for (int i = 0; i < NKEYS; i++) {
    mh->k[i].tmem &= (uint16_t)~tags;
    mh->k[i].past &= (uint16_t)~tags;
  }
  mh->abandoned &= (uint16_t)~tags;
  return n;
}

static uint64_t m_clear(mhandle *mh) {
  uint64_t n = 0;
  for (int i = 0; i < NKEYS; i++) {
    mkey *k = &mh->k[i];
    n += k->v != V_ABSENT;
    int slock = k->slock;
    memset(k, 0, sizeof *k);
    k->slock = slock;
  }
  mh->abandoned = 0;
  return n;
}

/* prune: expired memberships go (how many is uncertain: writes prune some
 * too); a live membership of an absent value is dangling and goes, with
 * the tag set; so does one whose tag set no longer holds the tag.
 * *lo and *hi bound the count. */
static void m_prune(mhandle *mh, uint64_t *lo, uint64_t *hi) {
  *lo = *hi = 0;
  for (int i = 0; i < NKEYS; i++) {
    mkey *k = &mh->k[i];
    unsigned past = (unsigned)__builtin_popcount(k->past);
    uint16_t dangling =
        k->v == V_ABSENT ? k->tmem : (uint16_t)(k->tmem & ~k->mset);
    *lo += (unsigned)__builtin_popcount(dangling);
    *hi += (unsigned)__builtin_popcount(dangling) + past;
    k->past = 0;
    if (k->v == V_ABSENT && k->tmem != 0) {
      k->mset = 0;
      k->tmem = 0;
    } else {
      k->tmem &= k->mset;
    }
  }
}

/* The model's own consistency, which the documented invariants follow
 * from: a membership is live only for a tag the tag set holds, and a tag
 * the tag set holds is listed live unless an abandoned eviction moved it
 * to an e key. */
static void m_selfcheck(const mhandle *mh) {
  for (int i = 0; i < NKEYS; i++) {
    const mkey *k = &mh->k[i];
    FUZZ_ASSERT_MSG((k->tmem & ~k->mset) == 0, "model: live stray member");
    FUZZ_ASSERT_MSG((k->mset & ~k->tmem & ~mh->abandoned) == 0,
                    "model: tag set without membership");
  }
}

/* ---- Trace and failure --------------------------------------------------- */

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...) {
  if (S.ntrace >= (int)(sizeof S.trace / sizeof S.trace[0]))
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(S.trace[S.ntrace++], sizeof S.trace[0], fmt, ap);
  va_end(ap);
}

static _Noreturn void failf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static _Noreturn void failf(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "ops_model (%s): the sequence:\n",
          W.mode == OPS_STANDALONE ? "standalone" : "cluster");
  for (int i = 0; i < S.ntrace; i++)
    fprintf(stderr, "  %s\n", S.trace[i]);
  fuzz_fail(__FILE__, __LINE__, "cachet agrees with the model", msg);
}

static const char *kdesc(int key) {
  static char b[4][24];
  static int i;
  char *o = b[i++ % 4];
  if (key == NKEYS - 1)
    snprintf(o, 24, "x\\0y");
  else
    snprintf(o, 24, "%s", key_names[key]);
  return o;
}

static const char *tdesc(uint16_t tags) {
  static char b[4][128];
  static int i;
  char *o = b[i++ % 4];
  size_t n = 0;
  o[n++] = '{';
  for (int t = 0; t < NTAGS; t++)
    if (tags & (1u << t))
      n += (size_t)snprintf(o + n, 128 - n, "%s%s", n > 1 ? "," : "",
                            tag_names[t]);
  snprintf(o + n, 128 - n, "}");
  return o;
}

static void expect(int got, int want, const char *what) {
  if (got != want)
    failf("%s: got %s, the model says %s (%s)", what, cachet_status_name(got),
          cachet_status_name(want), cachet_last_error());
}

/* An error a killed connection may cause: at most a bounded number per
 * handle after a CLIENT KILL. */
static int allowed_failure(int h, int rc) {
  if (rc == CACHET_ECONN && S.budget[h] > 0) {
    S.budget[h]--;
    S.failed = 1;
    trace("    (ECONN after CLIENT KILL: may or may not have run)");
    return 1;
  }
  return 0;
}

/* ---- Observing Redis ------------------------------------------------------
 */

typedef struct obs {
  int v;
  uint8_t *payload;
  size_t plen;
  int ttl;
  uint16_t mset, tmem, past;
  int slock;
} obs;

static int tag_index(const char *s, size_t n) {
  for (int t = 0; t < NTAGS; t++)
    if (strlen(tag_names[t]) == n && memcmp(tag_names[t], s, n) == 0)
      return t;
  return -1;
}

/* Read one key's state in one round trip: every key of an entry and its
 * bucket's indexes share a hash slot, hence a node. */
static void observe(int h, int key, obs *o) {
  memset(o, 0, sizeof *o);
  kname vk, mk, sk, ik[NTAGS];
  key_name(&vk, h, 'v', key);
  key_name(&mk, h, 'm', key);
  key_name(&sk, h, 's', key);
  redisContext *c = route(vk.s, vk.n);
  const char *argv[3];
  size_t lens[3];
#define APPEND(n)                                                              \
  do {                                                                         \
    if (redisAppendCommandArgv(c, (n), argv, lens) != REDIS_OK)                \
      die("out of memory");                                                    \
  } while (0)
  argv[0] = "TIME", lens[0] = 4;
  APPEND(1);
  argv[0] = "GET", lens[0] = 3, argv[1] = vk.s, lens[1] = vk.n;
  APPEND(2);
  argv[0] = "PTTL", lens[0] = 4;
  APPEND(2);
  argv[0] = "SMEMBERS", lens[0] = 8, argv[1] = mk.s, lens[1] = mk.n;
  APPEND(2);
  for (int t = 0; t < NTAGS; t++) {
    index_name(&ik[t], h, 't', t, key);
    argv[0] = "ZSCORE", lens[0] = 6, argv[1] = ik[t].s, lens[1] = ik[t].n;
    argv[2] = key_names[key], lens[2] = key_lens[key];
    APPEND(3);
  }
  argv[0] = "EXISTS", lens[0] = 6, argv[1] = sk.s, lens[1] = sk.n;
  APPEND(2);
#undef APPEND
  redisReply *r[4 + NTAGS + 1];
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
    if (redisGetReply(c, (void **)&r[i]) != REDIS_OK)
      die(c->errstr);

  if (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements != 2)
    die("TIME");
  int64_t now = strtoll(r[0]->element[0]->str, NULL, 10) * 1000 +
                strtoll(r[0]->element[1]->str, NULL, 10) / 1000;
  redisReply *g = r[1];
  if (g->type == REDIS_REPLY_NIL) {
    o->v = V_ABSENT;
  } else if (g->type == REDIS_REPLY_ERROR) {
    if (strncmp(g->str, "WRONGTYPE", 9) != 0)
      failf("GET %s: %s", vk.s, g->str);
    o->v = V_WRONGTYPE;
  } else {
    size_t off = 0, plen = 0;
    int rc = cachet_envelope_open(W.ring[h], 0, vk.s, vk.n, (uint8_t *)g->str,
                                  g->len, cachet_now_ms(), NULL, &off, &plen);
    if (rc == CACHET_OK) {
      o->v = V_VALUE;
      o->payload = malloc(plen + 1);
      if (o->payload == NULL)
        die("out of memory");
      memcpy(o->payload, g->str + off, plen);
      o->plen = plen;
    } else if (rc == CACHET_ECORRUPT) {
      o->v = V_CORRUPT;
    } else if (rc == CACHET_EINTEGRITY) {
      o->v = V_BADMAC;
    } else {
      failf("%s holds an envelope that opens as %s", vk.s,
            cachet_status_name(rc));
    }
  }
  o->ttl = o->v != V_ABSENT && r[2]->type == REDIS_REPLY_INTEGER &&
           r[2]->integer >= 0;
  if (r[3]->type != REDIS_REPLY_ARRAY)
    failf("SMEMBERS %s: not a set", mk.s);
  for (size_t i = 0; i < r[3]->elements; i++) {
    int t = tag_index(r[3]->element[i]->str, r[3]->element[i]->len);
    if (t < 0)
      failf("%s holds a tag outside the alphabet", mk.s);
    o->mset |= (uint16_t)(1u << t);
  }
  for (int t = 0; t < NTAGS; t++) {
    redisReply *z = r[4 + t];
    if (z->type == REDIS_REPLY_STRING) {
      double score = strtod(z->str, NULL);
      if (score > (double)now)
        o->tmem |= (uint16_t)(1u << t);
      else
        o->past |= (uint16_t)(1u << t);
    } else if (z->type != REDIS_REPLY_NIL) {
      failf("ZSCORE %s: unexpected reply", ik[t].s);
    }
  }
  o->slock = r[4 + NTAGS]->integer > 0;
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
    freeReplyObject(r[i]);
}

static void obs_free(obs *o) { free(o->payload); }

/* Does Redis hold what the model says for this key? `why` says what
 * differs. Expired memberships are only "may": writes prune some. */
static int key_matches(const mkey *m, const obs *o, char *why, size_t n) {
  if (m->v != o->v) {
    snprintf(why, n, "value key: model %s, redis %s", vnames[m->v],
             vnames[o->v]);
    return 0;
  }
  if (m->v == V_VALUE && !value_equals(m->val, o->payload, o->plen)) {
    snprintf(why, n,
             "value: model holds write #%u (%u bytes), redis %zu "
             "other bytes",
             m->val.id, m->val.len, o->plen);
    return 0;
  }
  if (m->v != V_ABSENT && m->ttl != o->ttl) {
    snprintf(why, n, "value TTL: model %s, redis %s", m->ttl ? "yes" : "none",
             o->ttl ? "yes" : "none");
    return 0;
  }
  if (m->mset != o->mset) {
    snprintf(why, n, "tag set: model %s, redis %s", tdesc(m->mset),
             tdesc(o->mset));
    return 0;
  }
  if (m->tmem != o->tmem) {
    snprintf(why, n, "live index memberships: model %s, redis %s",
             tdesc(m->tmem), tdesc(o->tmem));
    return 0;
  }
  if (o->past & ~m->past) {
    snprintf(why, n, "expired memberships %s the model does not allow",
             tdesc(o->past & ~m->past));
    return 0;
  }
  if (m->slock != o->slock) {
    snprintf(why, n, "stampede lock: model %s, redis %s",
             m->slock ? "held" : "free", o->slock ? "held" : "free");
    return 0;
  }
  return 1;
}

static void check_key(int h, int key, const char *when) {
  obs o;
  observe(h, key, &o);
  char why[400];
  if (!key_matches(&S.m[h].k[key], &o, why, sizeof why))
    failf("%s: handle %d key %s: %s", when, h, kdesc(key), why);
  /* What Redis shows is exact now for expired memberships too. */
  S.m[h].k[key].past = o.past;
  obs_free(&o);
}

static void check_handle(int h, const char *when) {
  m_selfcheck(&S.m[h]);
  for (int k = 0; k < NKEYS; k++)
    check_key(h, k, when);
}

/* A plain (untagged) write that failed after its SET: the new value with
 * the old tag set and memberships, which its untag step would have dropped
 * (DESIGN.md, "Untagged writes take plain SET"). */
static mkey m_half_written(const mkey *before, const mkey *after) {
  mkey k = *after;
  k.mset = before->mset;
  k.tmem = before->tmem;
  k.past = before->past;
  return k;
}

/* An operation failed part-way (a killed connection): each key must show
 * the state before it or after it, or, for a key in `plain` (a bit per key
 * written by a plain SET), the half-written state; the model takes what
 * Redis shows. */
static void resync(int h, const mhandle *before, unsigned plain) {
  for (int k = 0; k < NKEYS; k++) {
    obs o;
    observe(h, k, &o);
    char why_after[400], why_before[400], why_half[400] = "";
    mkey half = m_half_written(&before->k[k], &S.m[h].k[k]);
    if (!key_matches(&S.m[h].k[k], &o, why_after, sizeof why_after)) {
      if (key_matches(&before->k[k], &o, why_before, sizeof why_before)) {
        S.m[h].k[k] = before->k[k];
      } else if ((plain & (1u << k)) &&
                 key_matches(&half, &o, why_half, sizeof why_half)) {
        S.m[h].k[k] = half;
      } else {
        failf("after a failed operation, handle %d key %s is neither as "
              "before (%s) nor as after (%s)%s%s",
              h, kdesc(k), why_before, why_after,
              why_half[0] ? " nor half-written: " : "", why_half);
      }
    }
    S.m[h].k[k].past = o.past;
    obs_free(&o);
  }
}

/* Locks and their fences, read raw. */
static void check_locks(int h) {
  for (int l = 0; l < NLOCKS; l++) {
    const mlock *ml = &S.m[h].l[l];
    kname lk, fk;
    lock_name(&lk, h, 'l', l);
    lock_name(&fk, h, 'f', l);
    redisReply *r = kcmd2("GET", lk.s, lk.n);
    if (ml->holder == -1 && r->type != REDIS_REPLY_NIL)
      failf("lock %s: the model says free, redis holds it", lock_names[l]);
    if (ml->holder != -1 && r->type != REDIS_REPLY_STRING)
      failf("lock %s: the model says held, redis has no lock", lock_names[l]);
    if (ml->holder >= 0) {
      char tok[CACHET_LOCK_TOKEN_HEXLEN + 1];
      cachet_lock_token(S.slot[h][ml->holder], tok);
      if (r->len != CACHET_LOCK_TOKEN_HEXLEN || memcmp(r->str, tok, r->len))
        failf("lock %s: held by another token than the model's holder",
              lock_names[l]);
    }
    freeReplyObject(r);
    r = kcmd2("GET", fk.s, fk.n);
    uint64_t fence =
        r->type == REDIS_REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    if (fence != ml->fence)
      failf("lock %s: fence %llu in redis, %llu in the model", lock_names[l],
            (unsigned long long)fence, (unsigned long long)ml->fence);
  }
}

/* Is `s` a key the layout allows, given the model? */
static int foreign_index(const char *s, size_t n) {
  for (int i = 0; i < NFOREIGN; i++)
    if (strlen(foreign_names[i]) == n && memcmp(foreign_names[i], s, n) == 0)
      return i;
  return -1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

static void check_layout_key(const char *s, size_t n) {
  int f = foreign_index(s, n);
  if (f >= 0) {
    if (!(S.foreign & (1u << f)))
      failf("foreign key %s exists but was never written", s);
    return;
  }
  for (int h = NH - 1; h >= 0; h--) {
    size_t p = strlen(prefixes[h]);
    if (n < p + 6 || memcmp(s, prefixes[h], p) != 0 || s[p] != '{' ||
        s[p + 3] != '}' || s[p + 5] != ':')
      continue;
    int hi = hexval(s[p + 1]), lo = hexval(s[p + 2]);
    if (hi < 0 || lo < 0)
      continue;
    unsigned bucket = (unsigned)(hi * 16 + lo);
    char kind = s[p + 4];
    const char *name = s + p + 6;
    size_t nl = n - p - 6;
    switch (kind) {
    case 'v':
    case 'm':
    case 's':
      for (int k = 0; k < NKEYS; k++)
        if (key_lens[k] == nl && memcmp(key_names[k], name, nl) == 0 &&
            ref_bucket(name, nl) == bucket)
          return;
      break;
    case 'l':
    case 'f':
      for (int l = 0; l < NLOCKS; l++)
        if (strlen(lock_names[l]) == nl &&
            memcmp(lock_names[l], name, nl) == 0 &&
            ref_bucket(name, nl) == bucket)
          return;
      break;
    case 't':
      if (tag_index(name, nl) >= 0)
        return;
      break;
    case 'e': {
      int t = tag_index(name, nl);
      if (t >= 0 && (S.m[h].abandoned & (1u << t)))
        return;
      if (t >= 0)
        failf("%s: an evicting index is left although no eviction of the tag "
              "was abandoned",
              s);
      break;
    }
    case 'w':
      if (S.failed)
        return;
      failf("%s: a staged value is left behind after writes that succeeded", s);
    default:
      break;
    }
  }
  failf("key %.*s is outside the documented layout", (int)n, s);
}

/* SCAN every node, calling fn on each key that matches `match`. */
static void scan_all(const char *match,
                     void (*fn)(const char *, size_t, void *), void *ud) {
  for (int i = 0; i < W.nnodes; i++) {
    char cursor[32] = "0";
    do {
      redisReply *r =
          redisCommand(W.node[i], "SCAN %s MATCH %s COUNT 1000", cursor, match);
      if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        die("SCAN");
      snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
      for (size_t j = 0; j < r->element[1]->elements; j++)
        fn(r->element[1]->element[j]->str, r->element[1]->element[j]->len, ud);
      freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
  }
}

static void layout_cb(const char *s, size_t n, void *ud) {
  (void)ud;
  check_layout_key(s, n);
}

/* After an eviction of `tags` returned OK, no index of them is left. */
static void evicted_cb(const char *s, size_t n, void *ud) {
  const uint16_t *tags = ud;
  size_t p = strlen(prefixes[tags[1]]);
  int t = n > p + 6 ? tag_index(s + p + 6, n - p - 6) : -1;
  if (t >= 0 && (tags[0] & (1u << t)))
    failf("%.*s is left after its tag's eviction returned OK", (int)n, s);
}

static void check_foreign(void) {
  for (int i = 0; i < NFOREIGN; i++) {
    if (!(S.foreign & (1u << i)))
      continue;
    redisReply *r = kcmd2("EXISTS", foreign_names[i], strlen(foreign_names[i]));
    if (r->integer != 1)
      failf("foreign key %s was removed", foreign_names[i]);
    freeReplyObject(r);
  }
}

/* ---- Running operations ---------------------------------------------------
 */

static void free_slots(void) {
  for (int h = 0; h < NH; h++)
    for (int s = 0; s < NSLOTS; s++) {
      cachet_lock_free(S.slot[h][s]);
      S.slot[h][s] = NULL;
    }
}

static cachet *open_handle(int h) {
  cachet_options o;
  char keys[160];
  if (W.mode == OPS_STANDALONE) {
    test_options(&W.srv, &o, prefixes[h]);
  } else {
    cachet_options_init(&o);
    o.url = W.url;
    o.prefix = prefixes[h];
  }
  if (h == 0) {
    snprintf(keys, sizeof keys, "1:%s", FUZZ_K1_B64);
  } else {
    snprintf(keys, sizeof keys, "2:%s,1:%s", FUZZ_K2_B64, FUZZ_K1_B64);
    o.encrypt = 1;
  }
  o.keys = keys;
  if (W.near)
    o.near_cache_bytes = 1024 * 1024;
  o.pool_size = 3;
  o.timeout_ms = 5000;
  o.fetch_wait_ms = 30;
  o.lock_lease_ms = 3000;
  cachet *c = NULL;
  if (cachet_open(&c, &o) != CACHET_OK)
    die(cachet_last_error());
  for (int i = 0; W.near && i < 5000; i++) { /* until its feed is up */
    cachet_health hl;
    if (cachet_health_check(c, &hl) == CACHET_OK && hl.tracking)
      break;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return c;
}

/* The near-cache variant (CACHET_FUZZ_NEAR=1, fuzz/run.sh "near"): both
 * handles keep a near cache. A handle's own writes must show at once; a
 * raw write behind its back shows once its invalidation is processed. So
 * after a raw write to a handle's value key, write a sentinel value key of
 * the same bucket (so of the same master, whose feed delivers in order) and
 * wait, bounded, until the feed has processed the sentinel's invalidation:
 * the raw write's came before it. */
static char sync_name[64];
static size_t sync_len;
static atomic_int sync_seen;

static void sync_hook(const char *key, size_t len) {
  if (len == sync_len && memcmp(key, sync_name, len) == 0)
    atomic_store(&sync_seen, 1);
}

static void near_sync(const char *key, size_t len) {
  if (!W.near)
    return;
  for (int h = NH - 1; h >= 0; h--) { /* "fz:b:" before its prefix "fz:" */
    size_t p = strlen(prefixes[h]);
    if (len < p + 6 || memcmp(key, prefixes[h], p) != 0 || key[p] != '{' ||
        key[p + 4] != 'v' || S.h[h] == NULL)
      continue;
    if (key[p + 1] == 0 || key[p + 2] == 0 ||
        !strchr("0123456789abcdef", key[p + 1]) ||
        !strchr("0123456789abcdef", key[p + 2]))
      return; /* a foreign name like {zz}: no value key of the handle */
    static unsigned seq;
    atomic_store(&sync_seen, 0);
    sync_len =
        (size_t)snprintf(sync_name, sizeof sync_name, "%s{%c%c}v:\x01sync%u",
                         prefixes[h], key[p + 1], key[p + 2], ++seq);
    atomic_store(&cachet_track_seen_hook, sync_hook);
    const char *set[3] = {"SET", sync_name, "x"}, *del[2] = {"DEL", sync_name};
    size_t setl[3] = {3, sync_len, 1}, dell[2] = {3, sync_len};
    freeReplyObject(node_cmd(route(sync_name, sync_len), 3, set, setl));
    for (int i = 0; i < 5000 && !atomic_load(&sync_seen); i++) {
      struct timespec ts = {0, 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    atomic_store(&cachet_track_seen_hook, NULL);
    freeReplyObject(node_cmd(route(sync_name, sync_len), 2, del, dell));
    return;
  }
}

static uint16_t tags_list(uint16_t mask, const char **out) {
  uint16_t n = 0;
  for (int t = 0; t < NTAGS; t++)
    if (mask & (1u << t))
      out[n++] = tag_names[t];
  return n;
}

static uint32_t take_len(fuzz_cursor *in) {
  uint8_t b = fuzz_take_u8(in);
  return b == 255 ? LARGE_LEN : b;
}

/* A write through the public API; the model's transition on success. */
static int do_write(int h, int key, mval v, int ttl, uint16_t tags) {
  uint8_t *b = value_bytes(v);
  const char *tl[NTAGS];
  uint16_t nt = tags_list(tags, tl);
  int64_t ms = ttl ? LONG_TTL_MS : 0;
  int rc = nt == 0
               ? cachet_set(S.h[h], key_names[key], key_lens[key], b, v.len, ms)
               : cachet_set_tags(S.h[h], key_names[key], key_lens[key], b,
                                 v.len, ms, tl, nt);
  free(b);
  return rc;
}

static void op_write(int h, fuzz_cursor *in, int tagged) {
  int key = fuzz_take_u8(in) % NKEYS;
  mval v = new_value(take_len(in));
  int ttl = fuzz_take_u8(in) & 1;
  uint16_t tags = tagged ? (uint16_t)(fuzz_take_u32(in) & TAGMASK) : 0;
  trace("h%d %s %s #%u (%u B) ttl %s %s", h, tagged ? "set_tags" : "set",
        kdesc(key), v.id, v.len, ttl ? "long" : "none", tdesc(tags));
  mhandle before = S.m[h];
  m_write(&S.m[h].k[key], v, ttl, tags);
  int rc = do_write(h, key, v, ttl, tags);
  if (rc != CACHET_OK && allowed_failure(h, rc)) {
    resync(h, &before, tags == 0 ? 1u << key : 0);
    return;
  }
  expect(rc, CACHET_OK, "set");
}

static int want_get(const mkey *k) {
  switch (k->v) {
  case V_ABSENT:
    return CACHET_MISS;
  case V_VALUE:
    return CACHET_OK;
  case V_CORRUPT:
    return CACHET_ECORRUPT;
  case V_BADMAC:
    return CACHET_EINTEGRITY;
  default:
    return CACHET_ESERVER;
  }
}

static void check_value(const mkey *k, int rc, const void *val, size_t len,
                        const char *what) {
  expect(rc, want_get(k), what);
  if (rc == CACHET_OK && !value_equals(k->val, val, len))
    failf("%s: a hit with other bytes than write #%u", what, k->val.id);
  if (rc == CACHET_OK && ((const char *)val)[len] != '\0')
    failf("%s: the value is not NUL-terminated", what);
}

static void op_get(int h, fuzz_cursor *in) {
  int key = fuzz_take_u8(in) % NKEYS;
  trace("h%d get %s", h, kdesc(key));
  void *val = NULL;
  size_t len = 0;
  int rc = cachet_get(S.h[h], key_names[key], key_lens[key], &val, &len);
  if (rc != CACHET_OK && allowed_failure(h, rc))
    return;
  check_value(&S.m[h].k[key], rc, val, len, "get");
  if (rc != CACHET_OK && val != NULL)
    failf("get: an out-parameter was set on %s", cachet_status_name(rc));
  cachet_free(val);
}

static void op_exists_ttl(int h, fuzz_cursor *in) {
  int key = fuzz_take_u8(in) % NKEYS;
  int ttl = fuzz_take_u8(in) & 1;
  const mkey *k = &S.m[h].k[key];
  trace("h%d %s %s", h, ttl ? "ttl" : "exists", kdesc(key));
  int want = k->v == V_ABSENT ? CACHET_MISS : CACHET_OK;
  if (!ttl) {
    int rc = cachet_exists(S.h[h], key_names[key], key_lens[key]);
    if (rc != CACHET_OK && allowed_failure(h, rc))
      return;
    expect(rc, want, "exists");
    return;
  }
  int64_t ms = -7;
  int rc = cachet_ttl(S.h[h], key_names[key], key_lens[key], &ms);
  if (rc != CACHET_OK && allowed_failure(h, rc))
    return;
  expect(rc, want, "ttl");
  if (rc == CACHET_OK) {
    if (!k->ttl && ms != -1)
      failf("ttl: %lld ms for a key without expiry", (long long)ms);
    if (k->ttl && (ms <= 0 || ms > LONG_TTL_MS))
      failf("ttl: %lld ms, outside (0, %d]", (long long)ms, LONG_TTL_MS);
  }
}

static void op_delete(int h, fuzz_cursor *in) {
  int key = fuzz_take_u8(in) % NKEYS;
  trace("h%d delete %s", h, kdesc(key));
  mhandle before = S.m[h];
  int want = m_delete(&S.m[h].k[key]);
  int rc = cachet_delete(S.h[h], key_names[key], key_lens[key]);
  if (rc != CACHET_OK && rc != CACHET_MISS && allowed_failure(h, rc)) {
    resync(h, &before, 0);
    return;
  }
  expect(rc, want, "delete");
}

#define BATCH_MAX 6

static void op_mset(int h, fuzz_cursor *in) {
  size_t n = 1 + fuzz_take_u8(in) % BATCH_MAX;
  cachet_entry e[BATCH_MAX];
  const char *tl[BATCH_MAX][NTAGS];
  uint8_t *bufs[BATCH_MAX];
  int keys[BATCH_MAX], ttls[BATCH_MAX];
  mval vals[BATCH_MAX];
  uint16_t tags[BATCH_MAX];
  memset(e, 0, sizeof e);
  trace("h%d mset of %zu:", h, n);
  for (size_t i = 0; i < n; i++) {
    keys[i] = fuzz_take_u8(in) % NKEYS;
    uint8_t len = fuzz_take_u8(in);
    vals[i] = new_value(len == 255 ? LARGE_LEN : len);
    ttls[i] = fuzz_take_u8(in) & 1;
    uint32_t t = fuzz_take_u32(in);
    tags[i] = t & 0x8000u ? 0 : (uint16_t)(t & TAGMASK);
    bufs[i] = value_bytes(vals[i]);
    e[i].key = key_names[keys[i]];
    e[i].keylen = key_lens[keys[i]];
    e[i].val = bufs[i];
    e[i].len = vals[i].len;
    e[i].ttl_ms = ttls[i] ? LONG_TTL_MS : 0;
    e[i].ntags = tags_list(tags[i], tl[i]);
    e[i].tags = tl[i];
    e[i].status = 12345;
    trace("    %s #%u (%u B) ttl %s %s", kdesc(keys[i]), vals[i].id,
          vals[i].len, ttls[i] ? "long" : "none", tdesc(tags[i]));
  }
  mhandle before = S.m[h];
  /* The last occurrence of a key is the one written. */
  unsigned plain = 0;
  for (size_t i = 0; i < n; i++) {
    int last = 1;
    for (size_t j = i + 1; j < n; j++)
      last &= keys[j] != keys[i];
    if (last)
      m_write(&S.m[h].k[keys[i]], vals[i], ttls[i], tags[i]);
    if (last && tags[i] == 0)
      plain |= 1u << keys[i];
  }
  int rc = cachet_mset(S.h[h], e, n);
  for (size_t i = 0; i < n; i++)
    free(bufs[i]);
  if (rc != CACHET_OK && allowed_failure(h, rc)) {
    resync(h, &before, plain);
    return;
  }
  expect(rc, CACHET_OK, "mset");
  for (size_t i = 0; i < n; i++)
    expect(e[i].status, CACHET_OK, "mset entry");
}

static void op_mget(int h, fuzz_cursor *in) {
  size_t n = 1 + fuzz_take_u8(in) % BATCH_MAX;
  cachet_entry e[BATCH_MAX];
  int keys[BATCH_MAX];
  memset(e, 0, sizeof e);
  char line[160];
  size_t o = (size_t)snprintf(line, sizeof line, "h%d mget", h);
  int want = CACHET_OK;
  for (size_t i = 0; i < n; i++) {
    keys[i] = fuzz_take_u8(in) % NKEYS;
    e[i].key = key_names[keys[i]];
    e[i].keylen = key_lens[keys[i]];
    o += (size_t)snprintf(line + o, sizeof line - o, " %s", kdesc(keys[i]));
    if (want == CACHET_OK && S.m[h].k[keys[i]].v == V_WRONGTYPE)
      want = CACHET_ESERVER; /* the first server error is the call's */
  }
  trace("%s", line);
  int rc = cachet_mget(S.h[h], e, n);
  if (rc != CACHET_OK && rc != CACHET_ESERVER && allowed_failure(h, rc)) {
    for (size_t i = 0; i < n; i++)
      cachet_free(e[i].out);
    return;
  }
  expect(rc, want, "mget");
  for (size_t i = 0; i < n; i++) {
    /* The call's status is its first server-level error: an entry that
     * met a killed connection after a server error (say WRONGTYPE) does
     * not make the call ECONN, but is the same allowed failure. Which
     * connections were killed depends on the inputs run before this one
     * in the process, so this does not come back when one input is run
     * alone. */
    if (e[i].status == CACHET_ECONN && allowed_failure(h, CACHET_ECONN)) {
      cachet_free(e[i].out);
      continue;
    }
    check_value(&S.m[h].k[keys[i]], e[i].status, e[i].out, e[i].outlen,
                "mget entry");
    cachet_free(e[i].out);
  }
}

static void op_evict(int h, fuzz_cursor *in) {
  uint16_t mask = (uint16_t)(fuzz_take_u32(in) & TAGMASK);
  const char *tl[NTAGS];
  uint16_t nt = tags_list(mask, tl);
  trace("h%d evict %s", h, tdesc(mask));
  mhandle before = S.m[h];
  uint64_t want = m_evict(&S.m[h], mask);
  uint64_t got = 999;
  int rc = cachet_evict_tags(S.h[h], tl, nt, &got);
  if (rc != CACHET_OK && allowed_failure(h, rc)) {
    S.m[h].abandoned = before.abandoned | mask;
    resync(h, &before, 0);
    return;
  }
  expect(rc, CACHET_OK, "evict_tags");
  if (got != want)
    failf("evict_tags: %llu entries evicted, the model says %llu",
          (unsigned long long)got, (unsigned long long)want);
  char pat[64];
  snprintf(pat, sizeof pat, "%s{??}[te]:*", prefixes[h]);
  uint16_t ud[2] = {mask, (uint16_t)h};
  scan_all(pat, evicted_cb, ud);
}

static void op_clear(int h, fuzz_cursor *in) {
  int dry = fuzz_take_u8(in) % 4 == 0;
  trace("h%d clear%s", h, dry ? " --dry-run" : "");
  mhandle before = S.m[h];
  mhandle after = S.m[h];
  uint64_t want = m_clear(&after);
  if (!dry)
    S.m[h] = after;
  uint64_t got = 999;
  int rc = cachet_clear(S.h[h], dry, &got);
  if (rc != CACHET_OK && allowed_failure(h, rc)) {
    if (!dry) {
      S.m[h].abandoned = before.abandoned;
      resync(h, &before, 0);
    }
    return;
  }
  expect(rc, CACHET_OK, "clear");
  if (got != want)
    failf("clear%s: %llu entries, the model says %llu", dry ? " dry" : "",
          (unsigned long long)got, (unsigned long long)want);
  /* The other prefix shares the stem: nothing of it may have gone. */
  check_handle(1 - h, "after the other prefix's clear");
  check_locks(1 - h);
  check_foreign();
}

static void op_prune(int h) {
  trace("h%d prune", h);
  mhandle before = S.m[h];
  uint64_t lo, hi, got = 999;
  m_prune(&S.m[h], &lo, &hi);
  int rc = cachet_prune(S.h[h], &got);
  if (rc != CACHET_OK && allowed_failure(h, rc)) {
    resync(h, &before, 0);
    return;
  }
  expect(rc, CACHET_OK, "prune");
  if (got < lo || got > hi)
    failf("prune: %llu members removed, the model says %llu..%llu",
          (unsigned long long)got, (unsigned long long)lo,
          (unsigned long long)hi);
}

/* Expiry: the value key expired or deleted behind cachet's back, or a
 * short TTL that runs out. */
static void op_expire(int h, fuzz_cursor *in) {
  int key = fuzz_take_u8(in) % NKEYS;
  int mode = fuzz_take_u8(in) % 3;
  kname vk;
  key_name(&vk, h, 'v', key);
  mkey *k = &S.m[h].k[key];
  if (mode < 2) {
    trace("h%d %s %s (raw)", h, mode == 0 ? "PEXPIRE 0" : "DEL", kdesc(key));
    const char *argv[3] = {"PEXPIRE", vk.s, "0"};
    size_t lens[3] = {7, vk.n, 1};
    if (mode == 1)
      argv[0] = "DEL", lens[0] = 3;
    freeReplyObject(kcmd(mode == 0 ? 3 : 2, argv, lens));
    k->v = V_ABSENT;
    k->ttl = 0;
    return;
  }
  /* A tagged write with a short TTL, then time passes: an atomic script,
   * so the value and its tag set expire together. */
  mval v = new_value(fuzz_take_u8(in));
  uint16_t tags = (uint16_t)(fuzz_take_u32(in) & TAGMASK);
  if (tags == 0)
    tags = 1;
  trace("h%d set_tags %s #%u ttl %d ms %s, then %d ms pass", h, kdesc(key),
        v.id, SHORT_TTL_MS, tdesc(tags), SHORT_WAIT_MS);
  uint8_t *b = value_bytes(v);
  const char *tl[NTAGS];
  uint16_t nt = tags_list(tags, tl);
  mhandle before = S.m[h];
  m_write(k, v, 1, tags);
  int rc = cachet_set_tags(S.h[h], key_names[key], key_lens[key], b, v.len,
                           SHORT_TTL_MS, tl, nt);
  free(b);
  test_sleep_ms(SHORT_WAIT_MS);
  m_expire(k);
  if (rc != CACHET_OK && allowed_failure(h, rc)) {
    before.k[key].past |= before.k[key].tmem & tags; /* as after, maybe */
    resync(h, &before, 0);
    return;
  }
  expect(rc, CACHET_OK, "set_tags (short ttl)");
}

/* get_or_set's loader: counts its calls, fails when asked to. */
typedef struct loader_arg {
  mval v;
  int fail;
} loader_arg;

static int loader(void *ud, const void *key, size_t keylen, void **val,
                  size_t *len, int64_t *ttl_ms) {
  (void)key;
  (void)keylen;
  (void)ttl_ms;
  loader_arg *a = ud;
  S.loader_calls++;
  if (a->fail)
    return 7;
  *val = value_bytes(a->v);
  *len = a->v.len;
  return 0;
}

static void op_get_or_set(int h, fuzz_cursor *in) {
  int key = fuzz_take_u8(in) % NKEYS;
  loader_arg la = {new_value(fuzz_take_u8(in)), 0};
  int ttl = fuzz_take_u8(in) & 1;
  uint32_t t = fuzz_take_u32(in);
  uint16_t tags = (uint16_t)(t & TAGMASK);
  la.fail = (t >> 16) % 5 == 0;
  const char *tl[NTAGS];
  uint16_t nt = tags_list(tags, tl);
  trace("h%d get_or_set %s (loader: %s #%u) ttl %s %s", h, kdesc(key),
        la.fail ? "fails" : "gives", la.v.id, ttl ? "long" : "none",
        tdesc(tags));
  mkey *k = &S.m[h].k[key];
  mhandle before = S.m[h];
  int want_calls = 0, want = want_get(k);
  if (k->v == V_ABSENT) {
    if (k->slock) {
      want = CACHET_ETIMEDOUT; /* another owner's load never ends */
    } else {
      want_calls = 1;
      want = la.fail ? CACHET_ELOADER : CACHET_OK;
      if (!la.fail)
        m_write(k, la.v, ttl, tags);
    }
  }
  int calls = S.loader_calls;
  void *val = NULL;
  size_t len = 0;
  int rc = cachet_get_or_set(S.h[h], key_names[key], key_lens[key], loader, &la,
                             ttl ? LONG_TTL_MS : 0, tl, nt, &val, &len);
  if (rc != CACHET_OK && allowed_failure(h, rc)) {
    cachet_free(val);
    resync(h, &before, tags == 0 ? 1u << key : 0);
    return;
  }
  expect(rc, want, "get_or_set");
  if (S.loader_calls - calls != want_calls)
    failf("get_or_set: the loader ran %d times, the model says %d",
          S.loader_calls - calls, want_calls);
  if (rc == CACHET_OK) {
    const mkey *w = k->v == V_VALUE ? k : NULL;
    if (w == NULL || !value_equals(w->val, val, len))
      failf("get_or_set: returned other bytes than the model's value");
  }
  cachet_free(val);
}

static void op_lock(int h, fuzz_cursor *in, int what) {
  int s = fuzz_take_u8(in) % NSLOTS;
  mhandle *mh = &S.m[h];
  if (what == 0) { /* acquire into slot s, trying once or for a moment */
    uint8_t b = fuzz_take_u8(in);
    int l = b % NLOCKS;
    int64_t wait = b & 0x80 ? 5 : 0;
    trace("h%d lock_acquire %s wait %lld ms -> slot %d", h, lock_names[l],
          (long long)wait, s);
    for (int i = 0; i < NLOCKS; i++)
      if (mh->l[i].holder == s)
        mh->l[i].holder = -2; /* the slot's old token is dropped */
    cachet_lock_free(S.slot[h][s]);
    S.slot[h][s] = NULL;
    cachet_lock *lk = NULL;
    int rc = cachet_lock_acquire(S.h[h], lock_names[l], LOCK_TTL_MS, wait, &lk);
    if (rc != CACHET_OK && rc != CACHET_NOT_ACQUIRED && allowed_failure(h, rc))
      return;
    if (mh->l[l].holder == -1) {
      expect(rc, CACHET_OK, "lock_acquire");
      if (cachet_lock_fence(lk) != mh->l[l].fence + 1)
        failf("lock_acquire: fence %llu, the model says %llu",
              (unsigned long long)cachet_lock_fence(lk),
              (unsigned long long)mh->l[l].fence + 1);
      mh->l[l].fence++;
      mh->l[l].holder = s;
      S.slot[h][s] = lk;
      S.slot_lock[h][s] = l;
    } else {
      expect(rc, CACHET_NOT_ACQUIRED, "lock_acquire");
      if (lk != NULL)
        failf("lock_acquire: NOT_ACQUIRED with a lock handle");
    }
    return;
  }
  if (S.slot[h][s] == NULL) {
    trace("h%d lock %s of empty slot %d: skipped", h,
          what == 1 ? "release" : "extend", s);
    return;
  }
  int l = S.slot_lock[h][s];
  trace("h%d lock_%s slot %d (%s)", h, what == 1 ? "release" : "extend", s,
        lock_names[l]);
  int want = mh->l[l].holder == s    ? CACHET_OK
             : mh->l[l].holder == -1 ? CACHET_LOCK_EXPIRED
                                     : CACHET_LOCK_NOT_OWNER;
  int rc = what == 1 ? cachet_lock_release(S.h[h], S.slot[h][s])
                     : cachet_lock_extend(S.h[h], S.slot[h][s], LOCK_TTL_MS);
  if (rc < 0 && allowed_failure(h, rc))
    return;
  expect(rc, want, what == 1 ? "lock_release" : "lock_extend");
  if (what == 1 && rc == CACHET_OK)
    mh->l[l].holder = -1;
}

/* ---- Two writers at once -------------------------------------------------
 * Two of set / set_tags / delete run on two threads through the same
 * handle, released together. Each is atomic or, for an untagged set, ends
 * as if it were (DESIGN.md, "Untagged writes take plain SET"): Redis must
 * show the result of one order or the other, and each call's status must
 * be the one that order gives. */
typedef struct wop {
  int kind; /* 0 set, 1 set_tags, 2 delete */
  int h, key, ttl;
  mval v;
  uint16_t tags;
  int rc;
} wop;

static struct {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  wop *job;
  int done;
  atomic_int ready, go;
} T;

static void run_wop(wop *w) {
  if (w->kind == 2)
    w->rc = cachet_delete(S.h[w->h], key_names[w->key], key_lens[w->key]);
  else
    w->rc = do_write(w->h, w->key, w->v, w->ttl, w->kind ? w->tags : 0);
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&T.mu);
    while (T.job == NULL)
      pthread_cond_wait(&T.cv, &T.mu);
    wop *w = T.job;
    pthread_mutex_unlock(&T.mu);
    atomic_store(&T.ready, 1);
    while (!atomic_load(&T.go))
      sched_yield();
    run_wop(w);
    pthread_mutex_lock(&T.mu);
    T.job = NULL;
    T.done = 1;
    pthread_cond_broadcast(&T.cv);
    pthread_mutex_unlock(&T.mu);
  }
  return NULL;
}

static int apply_wop(mkey *k, const wop *w) {
  if (w->kind == 2)
    return m_delete(k);
  m_write(k, w->v, w->ttl, w->kind ? w->tags : 0);
  return CACHET_OK;
}

static void take_wop(fuzz_cursor *in, int h, wop *w) {
  memset(w, 0, sizeof *w);
  w->h = h;
  w->kind = fuzz_take_u8(in) % 3;
  w->key = fuzz_take_u8(in) % NKEYS;
  w->v = new_value(fuzz_take_u8(in));
  w->ttl = fuzz_take_u8(in) & 1;
  w->tags = (uint16_t)(fuzz_take_u32(in) & TAGMASK);
  if (w->kind == 1 && w->tags == 0)
    w->tags = 1;
  static const char *const kinds[] = {"set", "set_tags", "delete"};
  if (w->kind == 2)
    trace("    %s %s", kinds[w->kind], kdesc(w->key));
  else
    trace("    %s %s #%u ttl %s %s", kinds[w->kind], kdesc(w->key), w->v.id,
          w->ttl ? "long" : "none", tdesc(w->kind ? w->tags : 0));
}

static void op_concurrent(int h, fuzz_cursor *in) {
  trace("h%d at once:", h);
  wop a, b;
  take_wop(in, h, &a);
  take_wop(in, h, &b);
  mhandle before = S.m[h];
  /* Both orders, from the same start. */
  mhandle ab = before, ba = before;
  int ab_a = apply_wop(&ab.k[a.key], &a), ab_b = apply_wop(&ab.k[b.key], &b);
  int ba_b = apply_wop(&ba.k[b.key], &b), ba_a = apply_wop(&ba.k[a.key], &a);

  atomic_store(&T.ready, 0);
  atomic_store(&T.go, 0);
  pthread_mutex_lock(&T.mu);
  T.done = 0;
  T.job = &b;
  pthread_cond_broadcast(&T.cv);
  pthread_mutex_unlock(&T.mu);
  while (!atomic_load(&T.ready))
    sched_yield();
  atomic_store(&T.go, 1);
  run_wop(&a);
  pthread_mutex_lock(&T.mu);
  while (!T.done)
    pthread_cond_wait(&T.cv, &T.mu);
  pthread_mutex_unlock(&T.mu);

  int afail = a.rc != CACHET_OK && a.rc != CACHET_MISS;
  int bfail = b.rc != CACHET_OK && b.rc != CACHET_MISS;
  if ((afail && !allowed_failure(h, a.rc)) ||
      (bfail && !allowed_failure(h, b.rc)))
    failf("concurrent writes: %s and %s", cachet_status_name(a.rc),
          cachet_status_name(b.rc));

  int keys[2] = {a.key, b.key};
  int nk = a.key == b.key ? 1 : 2;
  int ok_ab = !afail && !bfail ? (a.rc == ab_a && b.rc == ab_b) : 1;
  int ok_ba = !afail && !bfail ? (a.rc == ba_a && b.rc == ba_b) : 1;
  char why_ab[480] = "", why_ba[480] = "";
  for (int i = 0; i < nk; i++) {
    obs o;
    observe(h, keys[i], &o);
    char w[400];
    if (ok_ab && !key_matches(&ab.k[keys[i]], &o, w, sizeof w)) {
      ok_ab = 0;
      snprintf(why_ab, sizeof why_ab, "%s: %s", kdesc(keys[i]), w);
    }
    if (ok_ba && !key_matches(&ba.k[keys[i]], &o, w, sizeof w)) {
      ok_ba = 0;
      snprintf(why_ba, sizeof why_ba, "%s: %s", kdesc(keys[i]), w);
    }
    if (afail || bfail) {
      /* A failed one may not have run at all. */
      int ok = key_matches(&before.k[keys[i]], &o, w, sizeof w) ||
               key_matches(&ab.k[keys[i]], &o, w, sizeof w) ||
               key_matches(&ba.k[keys[i]], &o, w, sizeof w);
      mhandle only_a = before, only_b = before;
      (void)apply_wop(&only_a.k[a.key], &a);
      (void)apply_wop(&only_b.k[b.key], &b);
      ok = ok || key_matches(&only_a.k[keys[i]], &o, w, sizeof w) ||
           key_matches(&only_b.k[keys[i]], &o, w, sizeof w);
      /* A failed untagged set may have stopped after its SET. */
      const mhandle *starts[4] = {&before, &ab, &ba, &only_b};
      const mhandle *ends[4] = {&only_a, &ab, &ba, &ab};
      for (int x = 0; !ok && x < 4; x++) {
        mkey half =
            m_half_written(&starts[x]->k[keys[i]], &ends[x]->k[keys[i]]);
        ok =
            (a.kind == 0 || b.kind == 0) && key_matches(&half, &o, w, sizeof w);
      }
      if (!ok)
        failf("after a failed concurrent write, %s is in no state either "
              "order could leave",
              kdesc(keys[i]));
      /* Adopt what Redis shows; a value is one of the three writes'. */
      mkey *m = &S.m[h].k[keys[i]];
      *m = before.k[keys[i]];
      m->v = o.v;
      if (o.v == V_VALUE && value_equals(a.v, o.payload, o.plen))
        m->val = a.v;
      else if (o.v == V_VALUE && value_equals(b.v, o.payload, o.plen))
        m->val = b.v;
      m->ttl = o.ttl;
      m->mset = o.mset;
      m->tmem = o.tmem;
      m->past = o.past;
    }
    obs_free(&o);
  }
  if (afail || bfail)
    return;
  if (!ok_ab && !ok_ba)
    failf("concurrent writes (%s, %s): Redis shows neither order: "
          "a-then-b: %s; b-then-a: %s",
          cachet_status_name(a.rc), cachet_status_name(b.rc),
          why_ab[0] ? why_ab : "statuses differ",
          why_ba[0] ? why_ba : "statuses differ");
  S.m[h] = ok_ab ? ab : ba;
  for (int i = 0; i < nk; i++) {
    obs o;
    observe(h, keys[i], &o);
    S.m[h].k[keys[i]].past = o.past;
    obs_free(&o);
  }
}

/* ---- Faults ----------------------------------------------------------------
 */

static void op_health(int h) {
  trace("h%d health", h);
  cachet_health hl;
  int rc = cachet_health_check(S.h[h], &hl);
  if (rc != CACHET_OK && allowed_failure(h, rc))
    return;
  expect(rc, CACHET_OK, "health_check");
  if (!hl.healthy || hl.scripts_loaded > hl.scripts_total ||
      hl.server_version[0] == '\0')
    failf("health_check: unhealthy or inconsistent: %s", hl.message);
}

static void op_fault(int h, fuzz_cursor *in) {
  int what = fuzz_take_u8(in) % 11;
  if (what == 10) {
    op_health(h);
    return;
  }
  int key = fuzz_take_u8(in) % NKEYS;
  mkey *k = &S.m[h].k[key];
  kname vk, sk;
  key_name(&vk, h, 'v', key);
  key_name(&sk, h, 's', key);
  switch (what) {
  case 0:
    trace("SCRIPT FLUSH");
    every_node("SCRIPT FLUSH");
    break;
  case 1:
    trace("CLIENT KILL of every connection but the oracle's");
    every_node("CLIENT KILL TYPE normal SKIPME yes");
    for (int i = 0; i < NH; i++)
      S.budget[i] = 2 * W.nnodes + 2;
    break;
  case 2: { /* bytes that are no envelope */
    trace("h%d SET %s garbage (raw)", h, kdesc(key));
    const char *argv[3] = {"SET", vk.s, "not an envelope"};
    size_t lens[3] = {3, vk.n, 15};
    freeReplyObject(kcmd(3, argv, lens));
    k->v = V_CORRUPT;
    k->ttl = 0;
    break;
  }
  case 3: { /* another key's envelope: bound to the other name */
    int src = fuzz_take_u8(in) % NKEYS;
    mkey *s = &S.m[h].k[src];
    trace("h%d copy the value key of %s to %s (raw)", h, kdesc(src),
          kdesc(key));
    if (src == key || s->v == V_ABSENT || s->v == V_WRONGTYPE)
      break;
    kname sv;
    key_name(&sv, h, 'v', src);
    redisReply *r = kcmd2("GET", sv.s, sv.n);
    if (r->type != REDIS_REPLY_STRING)
      failf("GET %s: the model says it holds bytes", sv.s);
    const char *argv[3] = {"SET", vk.s, r->str};
    size_t lens[3] = {3, vk.n, r->len};
    freeReplyObject(kcmd(3, argv, lens));
    freeReplyObject(r);
    /* An envelope verifies under its own key's name only: a copy put back
     * where it came from is a genuine value again. */
    if (s->v == V_VALUE || s->v == V_BADMAC) {
      int origin = s->v == V_VALUE ? src : s->origin;
      k->v = origin == key ? V_VALUE : V_BADMAC;
      k->val = s->val;
      k->origin = origin;
    } else {
      k->v = s->v;
    }
    k->ttl = 0;
    break;
  }
  case 4: { /* a key of the wrong type where a value belongs */
    trace("h%d RPUSH over %s's value key (raw)", h, kdesc(key));
    freeReplyObject(kcmd2("DEL", vk.s, vk.n));
    const char *argv[3] = {"RPUSH", vk.s, "x"};
    size_t lens[3] = {5, vk.n, 1};
    freeReplyObject(kcmd(3, argv, lens));
    k->v = V_WRONGTYPE;
    k->ttl = 0;
    break;
  }
  case 5: { /* a foreign key under the prefix */
    int f = key % NFOREIGN;
    trace("SET %s (a foreign key, raw)", foreign_names[f]);
    const char *argv[3] = {"SET", foreign_names[f], "foreign"};
    size_t lens[3] = {3, strlen(foreign_names[f]), 7};
    freeReplyObject(kcmd(3, argv, lens));
    S.foreign |= 1u << f;
    break;
  }
  case 6: { /* another process holds the key's stampede lock */
    trace("h%d another owner takes %s's stampede lock (raw)", h, kdesc(key));
    const char *argv[5] = {"SET", sk.s, "someone-else", "PX", "60000"};
    size_t lens[5] = {3, sk.n, 12, 2, 5};
    freeReplyObject(kcmd(5, argv, lens));
    k->slock = 1;
    break;
  }
  case 7:
    trace("h%d the other owner of %s's stampede lock is gone (raw)", h,
          kdesc(key));
    freeReplyObject(kcmd2("DEL", sk.s, sk.n));
    k->slock = 0;
    break;
  case 8: { /* a lock's TTL runs out */
    int l = key % NLOCKS;
    kname lk;
    lock_name(&lk, h, 'l', l);
    trace("h%d lock %s expires (raw)", h, lock_names[l]);
    const char *argv[3] = {"PEXPIRE", lk.s, "0"};
    size_t lens[3] = {7, lk.n, 1};
    freeReplyObject(kcmd(3, argv, lens));
    S.m[h].l[l].holder = -1;
    break;
  }
  case 9: { /* an eviction that died after evict_begin renamed the index */
    int t = key % NTAGS;
    trace("h%d an eviction of %s dies after its begin (raw RENAMENX t e)", h,
          tag_names[t]);
    /* RENAMENX does nothing where an e key is left already (an earlier
     * abandoned eviction): that bucket's live index stays. */
    unsigned char renamed[256] = {0};
    for (unsigned bkt = 0; bkt < 256; bkt++) {
      kname tk, ek;
      name_at(&tk, h, 't', bkt, tag_names[t], strlen(tag_names[t]));
      name_at(&ek, h, 'e', bkt, tag_names[t], strlen(tag_names[t]));
      const char *argv[3] = {"RENAMENX", tk.s, ek.s};
      size_t lens[3] = {8, tk.n, ek.n};
      redisReply *r = kcmd(3, argv, lens);
      renamed[bkt] = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
      freeReplyObject(r); /* an error where the tag has no index */
    }
    for (int i = 0; i < NKEYS; i++) {
      if (!renamed[ref_bucket(key_names[i], key_lens[i])])
        continue;
      S.m[h].k[i].tmem &= (uint16_t) ~(1u << t);
      S.m[h].k[i].past &= (uint16_t) ~(1u << t);
    }
    S.m[h].abandoned |= (uint16_t)(1u << t);
    break;
  }
  }
}

/* ---- The sequence ---------------------------------------------------------
 */

enum {
  OP_SET,
  OP_SET_TAGS,
  OP_GET,
  OP_EXISTS_TTL,
  OP_DELETE,
  OP_MSET,
  OP_MGET,
  OP_EVICT,
  OP_CLEAR,
  OP_PRUNE,
  OP_EXPIRE,
  OP_GET_OR_SET,
  OP_LOCK_ACQUIRE,
  OP_LOCK_RELEASE,
  OP_LOCK_EXTEND,
  OP_CONCURRENT,
  OP_FAULT,
  NOPS
};

static void run_op(fuzz_cursor *in) {
  uint8_t b = fuzz_take_u8(in);
  int op = (b & 0x7f) % NOPS;
  int h = b >> 7;
  switch (op) {
  case OP_SET:
    op_write(h, in, 0);
    break;
  case OP_SET_TAGS:
    op_write(h, in, 1);
    break;
  case OP_GET:
    op_get(h, in);
    break;
  case OP_EXISTS_TTL:
    op_exists_ttl(h, in);
    break;
  case OP_DELETE:
    op_delete(h, in);
    break;
  case OP_MSET:
    op_mset(h, in);
    break;
  case OP_MGET:
    op_mget(h, in);
    break;
  case OP_EVICT:
    op_evict(h, in);
    break;
  case OP_CLEAR:
    op_clear(h, in);
    break;
  case OP_PRUNE:
    op_prune(h);
    break;
  case OP_EXPIRE:
    op_expire(h, in);
    break;
  case OP_GET_OR_SET:
    op_get_or_set(h, in);
    break;
  case OP_LOCK_ACQUIRE:
    op_lock(h, in, 0);
    break;
  case OP_LOCK_RELEASE:
    op_lock(h, in, 1);
    break;
  case OP_LOCK_EXTEND:
    op_lock(h, in, 2);
    break;
  case OP_CONCURRENT:
    op_concurrent(h, in);
    break;
  default:
    op_fault(h, in);
    break;
  }
}

static void begin_input(void) {
  every_node("FLUSHALL");
  free_slots();
  for (int h = 0; h < NH; h++) {
    cachet_close(S.h[h]);
    S.h[h] = NULL;
  }
  memset(&S, 0, sizeof S);
  for (int h = 0; h < NH; h++) {
    S.h[h] = open_handle(h);
    for (int l = 0; l < NLOCKS; l++)
      S.m[h].l[l].holder = -1;
  }
}

static void end_input(void) {
  trace("end: the keyspace against the model");
  for (int h = 0; h < NH; h++) {
    check_handle(h, "at the end");
    check_locks(h);
  }
  check_foreign();
  scan_all("*", layout_cb, NULL);
}

void ops_model_run(const uint8_t *data, size_t size) {
  begin_input();
  fuzz_cursor in = {data, size};
  for (int i = 0; i < OPS_MAX && in.size > 0; i++)
    run_op(&in);
  end_input();
}

/* Two more keys in k0's bucket, found by search so that the alphabet needs
 * no magic constants. */
static void pick_colliding_keys(void) {
  unsigned want = ref_bucket("k0", 2);
  int found = 0;
  for (unsigned i = 0; found < 2 && i < 100000; i++) {
    char name[16];
    int n = snprintf(name, sizeof name, "c%u", i);
    if (ref_bucket(name, (size_t)n) == want) {
      memcpy(key_names[4 + found], name, (size_t)n + 1);
      key_lens[4 + found] = (size_t)n;
      found++;
    }
  }
  if (found < 2)
    die("no colliding keys");
}

void ops_model_init(ops_mode mode) {
  W.mode = mode;
  W.near = getenv("CACHET_FUZZ_NEAR") != NULL &&
           strcmp(getenv("CACHET_FUZZ_NEAR"), "1") == 0;
  if (W.near)
    fprintf(stderr, "ops_model: the handles keep a near cache\n");
  pick_colliding_keys();
  if (mode == OPS_STANDALONE) {
    if (test_server_start(&W.srv, NULL) != 0)
      die("cannot start redis-server");
    W.nnodes = 1;
  } else {
    if (test_cluster_start(&W.cl, 3, 0) != 0)
      die("cannot start the cluster");
    W.nnodes = 3;
    cachet_options o;
    test_cluster_options(&W.cl, &o, prefixes[0], W.url, sizeof W.url);
  }
  atexit(stop_world);
  for (int i = 0; i < W.nnodes; i++)
    W.node[i] = node_connect(i);
  if (mode == OPS_CLUSTER)
    load_slot_map();
  W.ring[0] = fuzz_ring_1();
  W.ring[1] = fuzz_ring_2_1();
  pthread_mutex_init(&T.mu, NULL);
  pthread_cond_init(&T.cv, NULL);
  if (pthread_create(&T.th, NULL, worker, NULL) != 0)
    die("cannot start the worker thread");
  pthread_detach(T.th);
}
