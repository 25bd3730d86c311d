/* cachet bench: each workload against its raw hiredis (or bare libsodium)
 * baseline, in the same run, against the same server.
 *
 * Machine noise must hit both sides alike, so a workload runs in ROUNDS
 * rounds, each timing cachet and then the baseline back to back (the order
 * alternates between rounds); the ratio reported is the median of the
 * per-round ratios, and the rates are the medians of the per-round rates. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "private_server.h"
#include "tool.h"

extern const cli_command cli_cmd_bench;

#define ROUNDS 7
#define DEFAULT_OPS 20000
#define DEFAULT_SIZE 100
#define NKEYS 1000 /* distinct keys the write workloads cycle through */
#define BATCH 100  /* entries per mget/mset */
#define PREFIX "cachet-bench:"
#define RAW_PREFIX "cachet-bench:raw:"
#define NEAR_BYTES ((size_t)64 * 1024 * 1024)
#define TTL_MS 600000
#define TTL_STR "600000"

static void help_bench(FILE *o) {
  fprintf(o,
          "usage: cachet bench [--ops N] [--size BYTES] [--only NAMES] "
          "[--json]\n"
          "  Measure cachet against raw hiredis on the same server, in the\n"
          "  same run: get (hit) vs GET, the same get on a handle with a near\n"
          "  cache (CACHET_NEAR_CACHE_BYTES; 64 MiB here) vs GET, set vs SET\n"
          "  (also with the near cache on), set with 2 tags vs SET,\n"
          "  mget/mset of %d vs pipelined GET/SET, a lock cycle vs SET NX PX\n"
          "  + a compare-and-delete script (the raw way to release only your\n"
          "  own lock), and envelope seal+open (MAC key) vs two keyed BLAKE2b\n"
          "  (crypto_generichash) over the bytes the MAC hashes (key name and\n"
          "  value). Each workload runs in %d interleaved rounds; rates and\n"
          "  ratio (cachet/raw) are medians.\n"
          "  Keys live under the prefix '%s' and are removed at the end.\n"
          "  When no server is configured (no --url, CACHET_URL, CACHET_HOST,\n"
          "  CACHET_PORT) and none answers on localhost:6379, a private\n"
          "  redis-server is started for the run and stopped afterwards.\n"
          "  --ops N       operations per workload and side (default %d)\n"
          "  --size BYTES  value size (default %d)\n"
          "  --only NAMES  comma-separated workloads to run: get_hit,\n"
          "                near_get_hit, set, near_set, set_tags, mget, mset,\n"
          "                lock_cycle, seal_open\n"
          "  --json        one JSON object; each workload has a \"ratio\"\n"
          "Exit: 0 measured (a number never fails the run), 2 usage,\n"
          "3 connection/server error or redis-server not available,\n"
          "4 integrity/format error.\n",
          BATCH, ROUNDS, PREFIX, DEFAULT_OPS, DEFAULT_SIZE);
}

typedef struct bench {
  cachet *c;
  cachet *near; /* the same, with a near cache */
  redisContext *raw;
  cachet *sealed; /* with a MAC keyring: the envelope workload */
  char *val;
  size_t size;
  char keys[NKEYS][24];    /* cachet keys */
  char rawkeys[NKEYS][40]; /* raw keys */
  size_t klen[NKEYS], rklen[NKEYS];
  cachet_entry batch[BATCH];
  uint8_t mackey[crypto_generichash_KEYBYTES];
  uint8_t *macmsg; /* key name || value: what the envelope MAC hashes */
  size_t macmsglen;
  char release_sha[41]; /* the raw compare-and-delete release script */
  int err;              /* first cachet status that stopped the run */
  const char *what;     /* ... and the workload that saw it */
} bench;

/* One operation of a workload; `i` counts operations. Returns 0 or a
 * status (which stops the run). */
typedef int (*op_fn)(bench *b, uint64_t i);

typedef struct workload {
  const char *name; /* JSON name */
  const char *desc; /* text label */
  const char *baseline;
  double target;     /* 0: none */
  unsigned per_call; /* entries per op (batch) */
  op_fn cachet_op, raw_op;
} workload;

/* ---- raw helpers -------------------------------------------------------- */

static int raw_status(redisReply *r, int want_type) {
  int ok = r != NULL && r->type == want_type;
  if (r != NULL)
    freeReplyObject(r);
  return ok ? 0 : CACHET_EPROTO;
}

static int raw_cmd(bench *b, int argc, const char **argv, const size_t *lens,
                   int want_type) {
  return raw_status(redisCommandArgv(b->raw, argc, argv, lens), want_type);
}

/* ---- workloads ---------------------------------------------------------- */

static int c_get(bench *b, uint64_t i) {
  (void)i;
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(b->c, "hit", 3, &v, &n);
  cachet_free(v);
  return rc;
}

static int c_near_get(bench *b, uint64_t i) {
  (void)i;
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(b->near, "hit", 3, &v, &n);
  cachet_free(v);
  return rc;
}

static int c_near_set(bench *b, uint64_t i) {
  size_t k = i % NKEYS;
  return cachet_set(b->near, b->keys[k], b->klen[k], b->val, b->size, TTL_MS);
}

static int r_get(bench *b, uint64_t i) {
  (void)i;
  const char *argv[2] = {"GET", RAW_PREFIX "hit"};
  size_t lens[2] = {3, sizeof RAW_PREFIX "hit" - 1};
  return raw_cmd(b, 2, argv, lens, REDIS_REPLY_STRING);
}

static int c_set(bench *b, uint64_t i) {
  size_t k = i % NKEYS;
  return cachet_set(b->c, b->keys[k], b->klen[k], b->val, b->size, TTL_MS);
}

static int r_set(bench *b, uint64_t i) {
  size_t k = i % NKEYS;
  const char *argv[5] = {"SET", b->rawkeys[k], b->val, "PX", TTL_STR};
  size_t lens[5] = {3, b->rklen[k], b->size, 2, sizeof TTL_STR - 1};
  return raw_cmd(b, 5, argv, lens, REDIS_REPLY_STATUS);
}

static int c_set_tags(bench *b, uint64_t i) {
  static const char *const tags[2] = {"bench-tag-a", "bench-tag-b"};
  size_t k = i % NKEYS;
  /* A key space of its own ("t" + key), so plain sets do not retag it. */
  char key[32];
  key[0] = 't';
  memcpy(key + 1, b->keys[k], b->klen[k]);
  return cachet_set_tags(b->c, key, b->klen[k] + 1, b->val, b->size, TTL_MS,
                         tags, 2);
}

static int c_mget(bench *b, uint64_t i) {
  (void)i;
  int rc = cachet_mget(b->c, b->batch, BATCH);
  for (size_t k = 0; k < BATCH; k++) {
    if (rc == CACHET_OK && b->batch[k].status != CACHET_OK)
      rc = b->batch[k].status == CACHET_MISS ? CACHET_EINTERNAL
                                             : b->batch[k].status;
    cachet_free(b->batch[k].out);
    b->batch[k].out = NULL;
  }
  return rc;
}

static int r_mget(bench *b, uint64_t i) {
  (void)i;
  for (size_t k = 0; k < BATCH; k++) {
    const char *argv[2] = {"GET", b->rawkeys[k]};
    size_t lens[2] = {3, b->rklen[k]};
    if (redisAppendCommandArgv(b->raw, 2, argv, lens) != REDIS_OK)
      return CACHET_ENOMEM;
  }
  int rc = 0;
  for (size_t k = 0; k < BATCH; k++) {
    void *r = NULL;
    if (redisGetReply(b->raw, &r) != REDIS_OK)
      return CACHET_ECONN;
    if (raw_status(r, REDIS_REPLY_STRING) != 0)
      rc = CACHET_EPROTO;
  }
  return rc;
}

static int c_mset(bench *b, uint64_t i) {
  (void)i;
  int rc = cachet_mset(b->c, b->batch, BATCH);
  for (size_t k = 0; rc == CACHET_OK && k < BATCH; k++)
    rc = b->batch[k].status;
  return rc;
}

static int r_mset(bench *b, uint64_t i) {
  (void)i;
  for (size_t k = 0; k < BATCH; k++) {
    const char *argv[5] = {"SET", b->rawkeys[k], b->val, "PX", TTL_STR};
    size_t lens[5] = {3, b->rklen[k], b->size, 2, sizeof TTL_STR - 1};
    if (redisAppendCommandArgv(b->raw, 5, argv, lens) != REDIS_OK)
      return CACHET_ENOMEM;
  }
  int rc = 0;
  for (size_t k = 0; k < BATCH; k++) {
    void *r = NULL;
    if (redisGetReply(b->raw, &r) != REDIS_OK)
      return CACHET_ECONN;
    if (raw_status(r, REDIS_REPLY_STATUS) != 0)
      rc = CACHET_EPROTO;
  }
  return rc;
}

static int c_lock(bench *b, uint64_t i) {
  (void)i;
  cachet_lock *lk = NULL;
  int rc = cachet_lock_acquire(b->c, "bench-lock", 10000, 0, &lk);
  if (rc != CACHET_OK)
    return rc == CACHET_NOT_ACQUIRED ? CACHET_EINTERNAL : rc;
  rc = cachet_lock_release(b->c, lk);
  cachet_lock_free(lk);
  return rc == CACHET_OK ? 0 : rc > 0 ? CACHET_EINTERNAL : rc;
}

static int r_lock(bench *b, uint64_t i) {
  (void)i;
  /* A token as random as cachet's, so both sides pay for one. */
  unsigned char tok[16];
  char hex[33];
  randombytes_buf(tok, sizeof tok);
  sodium_bin2hex(hex, sizeof hex, tok, sizeof tok);
  const char *set[6] = {"SET", RAW_PREFIX "lock", hex, "NX", "PX", "10000"};
  size_t setl[6] = {3, sizeof RAW_PREFIX "lock" - 1, 32, 2, 2, 5};
  int rc = raw_cmd(b, 6, set, setl, REDIS_REPLY_STATUS);
  if (rc != 0)
    return rc;
  /* Release only if still the owner: a plain DEL would release whoever
   * holds the lock by then, so the raw way needs a compare-and-delete. */
  const char *rel[5] = {"EVALSHA", b->release_sha, "1", RAW_PREFIX "lock", hex};
  size_t rell[5] = {7, 40, 1, sizeof RAW_PREFIX "lock" - 1, 32};
  return raw_cmd(b, 5, rel, rell, REDIS_REPLY_INTEGER);
}

#define SEAL_KEY "cachet-bench:{00}v:envelope"

static int c_seal_open(bench *b, uint64_t i) {
  (void)i;
  return cachet_tool_seal_open(b->sealed, SEAL_KEY, b->val, b->size);
}

static int r_seal_open(bench *b, uint64_t i) {
  (void)i;
  /* One keyed hash to seal, one to verify, over the bytes the envelope MAC
   * hashes: the key name and the value. The MAC's header rides in BLAKE2b's
   * parameter block, which costs no compression (docs/FORMAT.md), so this
   * is the primitive's cost for the same work. */
  uint8_t tag[32];
  for (int k = 0; k < 2; k++)
    crypto_generichash(tag, sizeof tag, b->macmsg, b->macmsglen, b->mackey,
                       sizeof b->mackey);
  (void)tag;
  return 0;
}

static const workload workloads[] = {
    {"get_hit", "get (hit)", "GET", 0.95, 1, c_get, r_get},
    {"near_get_hit", "get (hit, near cache)", "GET", 100, 1, c_near_get, r_get},
    {"set", "set", "SET PX", 0, 1, c_set, r_set},
    {"near_set", "set (near cache on)", "SET PX", 0, 1, c_near_set, r_set},
    {"set_tags", "set with 2 tags", "SET PX", 0.90, 1, c_set_tags, r_set},
    {"mget", "mget (batch of 100)", "pipelined GET", 0.80, BATCH, c_mget,
     r_mget},
    {"mset", "mset (batch of 100)", "pipelined SET PX", 0.80, BATCH, c_mset,
     r_mset},
    {"lock_cycle", "lock acquire+release", "SET NX PX + owner-checked DEL", 0,
     1, c_lock, r_lock},
    {"seal_open", "envelope seal+open (MAC)", "2x keyed crypto_generichash", 0,
     1, c_seal_open, r_seal_open},
};
#define NWORKLOADS (sizeof workloads / sizeof workloads[0])

/* ---- timing ------------------------------------------------------------- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Run `calls` calls of `op`; returns the elapsed ns, or 0 on an error. */
static uint64_t timed(bench *b, op_fn op, uint64_t calls, uint64_t *seq) {
  uint64_t t0 = now_ns();
  for (uint64_t k = 0; k < calls; k++) {
    int rc = op(b, (*seq)++);
    if (rc != 0) {
      b->err = rc;
      return 0;
    }
  }
  uint64_t dt = now_ns() - t0;
  return dt > 0 ? dt : 1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct result {
  double cachet_ops_s, raw_ops_s, ratio;
} result;

static int run_workload(bench *b, const workload *w, uint64_t ops,
                        result *res) {
  uint64_t calls = ops / w->per_call / ROUNDS;
  if (calls == 0)
    calls = 1;
  uint64_t seq_c = 0, seq_r = 0;
  /* Over TLS there is no raw baseline (hiredis 0.14 has no TLS): cachet's
   * side alone, but for the envelope, whose baseline needs no server. */
  op_fn raw = b->raw != NULL || w->cachet_op == c_seal_open ? w->raw_op : NULL;
  /* Warm up both sides: connections, scripts, caches. */
  uint64_t warm = calls / 4 + 1;
  if (timed(b, w->cachet_op, warm, &seq_c) == 0 ||
      (raw != NULL && timed(b, raw, warm, &seq_r) == 0))
    return -1;
  double rc_[ROUNDS], rr[ROUNDS], ratio[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    uint64_t tc, tr = 1;
    if (r % 2 == 0 || raw == NULL) {
      tc = timed(b, w->cachet_op, calls, &seq_c);
      tr = tc && raw != NULL ? timed(b, raw, calls, &seq_r) : tr;
    } else {
      tr = timed(b, raw, calls, &seq_r);
      tc = tr ? timed(b, w->cachet_op, calls, &seq_c) : 0;
    }
    if (tc == 0 || tr == 0)
      return -1;
    double n = (double)(calls * w->per_call);
    rc_[r] = n * 1e9 / (double)tc;
    rr[r] = raw != NULL ? n * 1e9 / (double)tr : 0;
    ratio[r] = raw != NULL ? rc_[r] / rr[r] : 0;
  }
  res->cachet_ops_s = median(rc_, ROUNDS);
  res->raw_ops_s = median(rr, ROUNDS);
  res->ratio = median(ratio, ROUNDS);
  return 0;
}

/* ---- set-up and clean-up --------------------------------------------------
 */

/* A handle that only seals and opens (it never connects), with `keys`. */
static int open_sealed(bench *b, const char *keys) {
  cachet_options o;
  cachet_options_init(&o);
  o.keys = keys;
  o.prefix = PREFIX;
  return cachet_open(&b->sealed, &o);
}

static int prepare(bench *b) {
  b->val = malloc(b->size + 1);
  if (b->val == NULL)
    return CACHET_ENOMEM;
  for (size_t i = 0; i < b->size; i++)
    b->val[i] = (char)('a' + i % 26);
  b->val[b->size] = '\0';
  for (size_t k = 0; k < NKEYS; k++) {
    b->klen[k] = (size_t)snprintf(b->keys[k], sizeof b->keys[k], "k%05zu", k);
    b->rklen[k] = (size_t)snprintf(b->rawkeys[k], sizeof b->rawkeys[k],
                                   RAW_PREFIX "%05zu", k);
  }
  int rc = cachet_set(b->c, "hit", 3, b->val, b->size, TTL_MS);
  if (rc != CACHET_OK)
    return rc;
  /* The near cache serves copies once its invalidation feed is up; a
   * server without client tracking (before Redis 6) leaves it bypassed,
   * and the row then shows plain gets. */
  for (int i = 0; i < 500; i++) {
    cachet_health h;
    if (cachet_health_check(b->near, &h) == CACHET_OK && h.tracking)
      break;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  const char *argv[5] = {"SET", RAW_PREFIX "hit", b->val, "PX", TTL_STR};
  size_t lens[5] = {3, sizeof RAW_PREFIX "hit" - 1, b->size, 2,
                    sizeof TTL_STR - 1};
  if (b->raw != NULL && raw_cmd(b, 5, argv, lens, REDIS_REPLY_STATUS) != 0)
    return CACHET_EPROTO;
  /* The batch entries, written once so that mget and raw GET hit. */
  memset(b->batch, 0, sizeof b->batch);
  for (size_t k = 0; k < BATCH; k++) {
    b->batch[k].key = b->keys[k];
    b->batch[k].keylen = b->klen[k];
    b->batch[k].val = b->val;
    b->batch[k].len = b->size;
    b->batch[k].ttl_ms = TTL_MS;
  }
  if ((rc = c_mset(b, 0)) != 0 || (b->raw != NULL && (rc = r_mset(b, 0)) != 0))
    return rc;
  static const char release_lua[] =
      "if redis.call('GET', KEYS[1]) == ARGV[1] then "
      "return redis.call('DEL', KEYS[1]) end return 0";
  redisReply *r = b->raw != NULL
                      ? redisCommand(b->raw, "SCRIPT LOAD %s", release_lua)
                      : NULL;
  if (b->raw != NULL &&
      (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40)) {
    if (r != NULL)
      freeReplyObject(r);
    return CACHET_EPROTO;
  }
  if (r != NULL) {
    memcpy(b->release_sha, r->str, 41);
    freeReplyObject(r);
  }

  /* A MAC keyring for the envelope workload, and the baseline's key and
   * message. */
  char entry[CACHET_KEYGEN_BUFLEN];
  if ((rc = cachet_keygen(1, entry, sizeof entry)) != CACHET_OK ||
      (rc = open_sealed(b, entry)) != CACHET_OK)
    return rc;
  sodium_memzero(entry, sizeof entry);
  randombytes_buf(b->mackey, sizeof b->mackey);
  b->macmsglen = sizeof SEAL_KEY - 1 + b->size;
  if ((b->macmsg = malloc(b->macmsglen)) == NULL)
    return CACHET_ENOMEM;
  memcpy(b->macmsg, SEAL_KEY, sizeof SEAL_KEY - 1);
  memcpy(b->macmsg + sizeof SEAL_KEY - 1, b->val, b->size);
  return CACHET_OK;
}

/* Remove every key the run wrote: cachet's through clear, the baseline's
 * with DEL. */
static int cleanup(bench *b) {
  uint64_t removed = 0;
  int rc = cachet_clear(b->c, 0, &removed);
  if (b->raw != NULL) {
    for (size_t k = 0; k < NKEYS; k++) {
      const char *argv[2] = {"DEL", b->rawkeys[k]};
      size_t lens[2] = {3, b->rklen[k]};
      redisAppendCommandArgv(b->raw, 2, argv, lens);
    }
    redisAppendCommand(b->raw, "DEL %s %s", RAW_PREFIX "hit",
                       RAW_PREFIX "lock");
    /* The lock's fencing counter outlives its releases. */
    char *fk = NULL;
    size_t fkl = 0, n = NKEYS + 1;
    if (cachet_tool_fence_key(b->c, "bench-lock", &fk, &fkl) == CACHET_OK) {
      redisAppendCommand(b->raw, "DEL %b", fk, fkl);
      cachet_free(fk);
      n++;
    }
    for (size_t k = 0; k < n; k++) {
      void *r = NULL;
      if (redisGetReply(b->raw, &r) != REDIS_OK)
        break;
      freeReplyObject(r);
    }
  }
  return rc;
}

static void print_text(const result *res, const int *sel, uint64_t ops,
                       size_t size, const char *server) {
  printf("cachet bench: %llu ops per workload, %zu-byte values, %d "
         "interleaved rounds, %s server\n",
         (unsigned long long)ops, size, ROUNDS, server);
  printf("%-26s %14s %14s %7s  %s\n", "workload", "cachet ops/s", "raw ops/s",
         "ratio", "baseline");
  for (size_t w = 0; w < NWORKLOADS; w++) {
    if (!sel[w])
      continue;
    if (res[w].raw_ops_s > 0)
      printf("%-26s %14.0f %14.0f %7.3f  %s", workloads[w].desc,
             res[w].cachet_ops_s, res[w].raw_ops_s, res[w].ratio,
             workloads[w].baseline);
    else /* over TLS: hiredis 0.14 cannot be the baseline */
      printf("%-26s %14.0f %14s %7s  %s", workloads[w].desc,
             res[w].cachet_ops_s, "n/a", "n/a", "no raw baseline over TLS");
    if (workloads[w].target > 0 && res[w].raw_ops_s > 0)
      printf(" (target >= %.2f)", workloads[w].target);
    printf("\n");
  }
}

static void print_json(const result *res, const int *sel, uint64_t ops,
                       size_t size, const char *server) {
  int any = 0;
  printf("{\"ops\":%llu,\"value_bytes\":%zu,\"rounds\":%d,\"batch\":%d,"
         "\"server\":\"%s\",\"workloads\":{",
         (unsigned long long)ops, size, ROUNDS, BATCH, server);
  for (size_t w = 0; w < NWORKLOADS; w++) {
    if (!sel[w])
      continue;
    printf("%s\"%s\":{\"cachet_ops_s\":%.0f,", any++ ? "," : "",
           workloads[w].name, res[w].cachet_ops_s);
    if (res[w].raw_ops_s > 0)
      printf("\"raw_ops_s\":%.0f,\"ratio\":%.3f,", res[w].raw_ops_s,
             res[w].ratio);
    else
      printf("\"raw_ops_s\":null,\"ratio\":null,");
    printf("\"baseline\":");
    cli_json_str(stdout, workloads[w].baseline, strlen(workloads[w].baseline));
    if (workloads[w].target > 0)
      printf(",\"target\":%.2f", workloads[w].target);
    printf("}");
  }
  printf("}}\n");
}

/* "--only a,b": select those workloads. -1 on an unknown name. */
static int parse_only(const char *list, int *sel) {
  for (size_t w = 0; w < NWORKLOADS; w++)
    sel[w] = 0;
  const char *p = list;
  for (;;) {
    size_t n = strcspn(p, ",");
    int found = 0;
    for (size_t w = 0; w < NWORKLOADS; w++) {
      if (strlen(workloads[w].name) == n &&
          strncmp(workloads[w].name, p, n) == 0)
        sel[w] = found = 1;
    }
    if (!found)
      return -1;
    if (p[n] == '\0')
      return 0;
    p += n + 1;
  }
}

static int run_bench(cli *cl, int argc, char **argv) {
  uint64_t ops = DEFAULT_OPS, size = DEFAULT_SIZE;
  int json = 0, sel[NWORKLOADS];
  for (size_t w = 0; w < NWORKLOADS; w++)
    sel[w] = 1;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--ops") == 0) {
      if (++i >= argc || cli_parse_u64(argv[i], &ops) != 0 || ops == 0 ||
          ops > 100000000)
        return cli_usage(&cli_cmd_bench, "--ops needs a count 1..100000000");
    } else if (opts && strcmp(argv[i], "--size") == 0) {
      if (++i >= argc || cli_parse_u64(argv[i], &size) != 0 ||
          size > 16 * 1024 * 1024)
        return cli_usage(&cli_cmd_bench, "--size needs bytes 0..16777216");
    } else if (opts && strcmp(argv[i], "--only") == 0) {
      if (++i >= argc || parse_only(argv[i], sel) != 0)
        return cli_usage(&cli_cmd_bench, "--only needs workload names");
    } else if (opts && strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else {
      return cli_usage(&cli_cmd_bench, "unknown argument %s", argv[i]);
    }
  }

  cli_private_server srv;
  int code = cli_private_server_setup(cl, &srv, "bench");
  if (code != 0)
    return code;
  const char *server = srv.pid > 0 ? "private" : "configured";
  cachet_options o;
  cli_options(cl, &o);
  o.prefix = PREFIX;
  o.progress = NULL;
  bench *b = calloc(1, sizeof *b);
  if (b == NULL) {
    cli_private_server_stop(&srv);
    fprintf(stderr, "cachet bench: out of memory\n");
    return EXIT_SERVER;
  }
  b->size = (size_t)size;
  int rc = cachet_open(&b->c, &o);
  if (rc == CACHET_OK) {
    o.near_cache_bytes = NEAR_BYTES;
    rc = cachet_open(&b->near, &o);
  }
  if (rc != CACHET_OK) {
    code = cli_status(rc, "bench: configuration");
    goto out;
  }
  if ((rc = cachet_ping(b->c)) != CACHET_OK) {
    code = cli_status(rc, "bench");
    goto out;
  }
  cachet_tool_server ts;
  cachet_tool_server_get(b->c, &ts);
  if (!ts.tls && (b->raw = cli_raw_connect(b->c, "bench")) == NULL) {
    code = EXIT_SERVER;
    goto out;
  }
  if ((rc = prepare(b)) != 0) {
    code = cli_status(rc, "bench: preparing");
    goto out;
  }
  result res[NWORKLOADS];
  for (size_t w = 0; w < NWORKLOADS; w++) {
    if (!sel[w])
      continue;
    if (!json && isatty(2))
      fprintf(stderr, "\rrunning %-30s", workloads[w].desc), fflush(stderr);
    if (run_workload(b, &workloads[w], ops, &res[w]) != 0) {
      if (!json && isatty(2))
        fputc('\n', stderr);
      code = cli_status(b->err, workloads[w].name);
      if (code == EXIT_HIT || code == EXIT_MISS) {
        fprintf(stderr, "cachet bench: %s: unexpected outcome %s\n",
                workloads[w].name, cachet_status_name(b->err));
        code = EXIT_SERVER;
      }
      goto out;
    }
  }
  if (!json && isatty(2))
    fprintf(stderr, "\r%40s\r", "");
  if (json)
    print_json(res, sel, ops, b->size, server);
  else
    print_text(res, sel, ops, b->size, server);
  code = EXIT_HIT;
out:
  if (b->c != NULL) {
    int crc = cleanup(b);
    if (crc != CACHET_OK && code == EXIT_HIT)
      code = cli_status(crc, "bench: cleaning up");
    cachet_close(b->c);
  }
  cachet_close(b->near);
  if (b->raw != NULL)
    redisFree(b->raw);
  cachet_close(b->sealed);
  free(b->macmsg);
  free(b->val);
  free(b);
  cli_private_server_stop(&srv);
  return code;
}

const cli_command cli_cmd_bench = {
    "bench", "measure cachet against raw hiredis (same run, same server)",
    run_bench, help_bench};
