/* The near cache (cachet_options.near_cache_bytes), measured in one run on
 * one private redis-server over loopback TCP:
 *
 *   hot key     one thread, get of one key from memory, against raw hiredis
 *               GET of the same key (goal: >= 100x);
 *   writes      set on a handle with the near cache on, against a handle
 *               with it off, each in its own prefix (goal: >= 0.95);
 *   modes       what each tracking mode costs the server, raw: SET with a
 *               BCAST subscriber of the prefix against none, and GET on a
 *               connection in default tracking mode against plain GET;
 *   zipf        --keys keys (default 1M) read by 8 threads with Zipf(0.99)
 *               popularity, near cache at 10% of the data (keys and values),
 *               against the same handle without it: ops/s and hit rate;
 *   policies    the same key sequence through the near cache's own table
 *               (S3-FIFO) and through FIFO and CLOCK simulations of as many
 *               entries: hit rates.
 * Figures are medians of ROUNDS interleaved rounds; nothing here fails on a
 * number. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "near.h"

#define ROUNDS 5
#define VALUE_BYTES 100
#define THREADS 8
#define ZIPF_S 0.99

static test_server srv;
static char value[VALUE_BYTES + 1];

static cachet *open_handle(const char *prefix, size_t near_bytes) {
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
  cachet_options o;
  cachet_options_init(&o);
  o.url = url;
  o.prefix = prefix;
  o.near_cache_bytes = near_bytes;
  o.pool_size = THREADS;
  cachet *c = NULL;
  if (cachet_open(&c, &o) != CACHET_OK || cachet_ping(c) != CACHET_OK) {
    fprintf(stderr, "bench_near: %s\n", cachet_last_error());
    exit(1);
  }
  for (int i = 0; near_bytes > 0 && i < 1000; i++) {
    cachet_health h;
    if (cachet_health_check(c, &h) == CACHET_OK && h.tracking)
      return c;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (near_bytes > 0) {
    fprintf(stderr, "bench_near: tracking never became active\n");
    exit(1);
  }
  return c;
}

static void die_reply(redisReply *r, const char *what) {
  if (r == NULL) {
    fprintf(stderr, "bench_near: %s failed\n", what);
    exit(1);
  }
  freeReplyObject(r);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return v[n / 2];
}

static void get_or_die(cachet *c, const char *key, size_t len) {
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, key, len, &v, &n);
  if (rc != CACHET_OK) {
    fprintf(stderr, "bench_near: get: %s\n", cachet_last_error());
    exit(1);
  }
  cachet_free(v);
}

/* ---- hot key ------------------------------------------------------------ */

static void hot_key(void) {
  cachet *c = open_handle("bn-hot:", 64 * 1024 * 1024);
  if (cachet_set(c, "hot", 3, value, VALUE_BYTES, 0) != CACHET_OK)
    exit(1);
  char *vk = NULL;
  size_t vkl = 0;
  if (cachet_value_key(c, "hot", 3, &vk, &vkl) != CACHET_OK)
    exit(1);
  redisContext *r = test_redis(&srv);
  for (int i = 0; i < 1000; i++) /* filled, and the feed's echo is past */
    get_or_die(c, "hot", 3);
  double near[ROUNDS], raw[ROUNDS], ratio[ROUNDS];
  for (int k = 0; k < ROUNDS; k++) {
    enum { NRAW = 20000, NNEAR = 2000000 };
    uint64_t t0 = bench_ns();
    for (int i = 0; i < NRAW; i++) {
      redisReply *x = redisCommand(r, "GET %b", vk, vkl);
      if (x == NULL || x->type != REDIS_REPLY_STRING)
        exit(1);
      freeReplyObject(x);
    }
    uint64_t t1 = bench_ns();
    for (int i = 0; i < NNEAR; i++)
      get_or_die(c, "hot", 3);
    uint64_t t2 = bench_ns();
    raw[k] = NRAW / ((double)(t1 - t0) / 1e9);
    near[k] = NNEAR / ((double)(t2 - t1) / 1e9);
    ratio[k] = near[k] / raw[k];
  }
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  printf("hot key, one thread (%llu of %llu gets from memory)\n",
         (unsigned long long)m.near_hits,
         (unsigned long long)(m.near_hits + m.near_misses));
  printf("  %-30s %12.0f ops/s\n", "near cache get", median(near, ROUNDS));
  printf("  %-30s %12.0f ops/s\n", "raw hiredis GET", median(raw, ROUNDS));
  printf("  %-30s %12.1f x   (goal >= 100)\n", "ratio (median of rounds)",
         median(ratio, ROUNDS));
  cachet_free(vk);
  redisFree(r);
  cachet_close(c);
}

/* ---- writes ------------------------------------------------------------- */

static double set_rate(cachet *c, int n) {
  char key[32];
  uint64_t t0 = bench_ns();
  for (int i = 0; i < n; i++) {
    int len = snprintf(key, sizeof key, "w%d", i % 1000);
    if (cachet_set(c, key, (size_t)len, value, VALUE_BYTES, 0) != CACHET_OK) {
      fprintf(stderr, "bench_near: set: %s\n", cachet_last_error());
      exit(1);
    }
  }
  return n / ((double)(bench_ns() - t0) / 1e9);
}

static void writes(void) {
  cachet *off = open_handle("bn-off:", 0);
  cachet *on = open_handle("bn-on:", 64 * 1024 * 1024);
  set_rate(off, 2000);
  set_rate(on, 2000);
  double a[ROUNDS], b[ROUNDS], ratio[ROUNDS];
  for (int k = 0; k < ROUNDS; k++) {
    a[k] = set_rate(off, 20000);
    b[k] = set_rate(on, 20000);
    ratio[k] = b[k] / a[k];
  }
  printf("writes, one thread (set of %d-byte values)\n", VALUE_BYTES);
  printf("  %-30s %12.0f ops/s\n", "near cache off", median(a, ROUNDS));
  printf("  %-30s %12.0f ops/s\n", "near cache on (tracking)",
         median(b, ROUNDS));
  printf("  %-30s %12.3f     (goal >= 0.95)\n", "ratio on/off",
         median(ratio, ROUNDS));
  cachet_close(on);
  cachet_close(off);
}

/* ---- tracking modes, raw ------------------------------------------------- */

static double raw_rate(redisContext *r, const char *cmd, int n) {
  uint64_t t0 = bench_ns();
  for (int i = 0; i < n; i++) {
    redisReply *x =
        strcmp(cmd, "SET") == 0
            ? redisCommand(r, "SET bm:{%02x}v:k%d %s", i % 256, i % 1000, value)
            : redisCommand(r, "GET bm:{%02x}v:k%d", i % 256, i % 1000);
    if (x == NULL || x->type == REDIS_REPLY_ERROR)
      exit(1);
    freeReplyObject(x);
  }
  return n / ((double)(bench_ns() - t0) / 1e9);
}

/* A fresh connection (to be subscribed to invalidations), its id in *id,
 * and in cmd the CLIENT TRACKING that makes it a BCAST subscriber of the
 * 256 value-key prefixes, as cachet's feed is. */
static redisContext *subscriber(long long *id, char *cmd, size_t cap) {
  redisContext *s = test_redis(&srv);
  redisReply *x = redisCommand(s, "CLIENT ID");
  *id = x->integer;
  freeReplyObject(x);
  int o = snprintf(cmd, cap, "CLIENT TRACKING on REDIRECT %lld BCAST", *id);
  for (int b = 0; b < 256; b++)
    o += snprintf(cmd + o, cap - (size_t)o, " PREFIX bm:{%02x}v:", b);
  return s;
}

static void modes(void) {
  redisContext *w = test_redis(&srv);
  long long id;
  static char cmd[16384];
  redisContext *s = subscriber(&id, cmd, sizeof cmd);
  /* The same with one prefix for the whole namespace. */
  double one[ROUNDS], ratio_1[ROUNDS];
  raw_rate(w, "SET", 2000);
  for (int k = 0; k < ROUNDS; k++) {
    double base = raw_rate(w, "SET", 20000);
    die_reply(redisCommand(
                  s, "CLIENT TRACKING on REDIRECT %lld BCAST PREFIX bm:", id),
              "CLIENT TRACKING");
    die_reply(redisCommand(s, "SUBSCRIBE __redis__:invalidate"), "SUBSCRIBE");
    one[k] = raw_rate(w, "SET", 20000);
    redisFree(s);
    s = subscriber(&id, cmd, sizeof cmd);
    ratio_1[k] = one[k] / base;
  }
  double none[ROUNDS], bcast[ROUNDS], ratio_w[ROUNDS];
  raw_rate(w, "SET", 2000);
  for (int k = 0; k < ROUNDS; k++) {
    none[k] = raw_rate(w, "SET", 20000);
    die_reply(redisCommand(s, cmd), "CLIENT TRACKING");
    die_reply(redisCommand(s, "SUBSCRIBE __redis__:invalidate"), "SUBSCRIBE");
    bcast[k] = raw_rate(w, "SET", 20000);
    redisFree(s); /* drops its tracking; the queued messages go with it */
    s = subscriber(&id, cmd, sizeof cmd);
    ratio_w[k] = bcast[k] / none[k];
  }
  /* Default mode: a reading connection whose every GET the server records
   * in its tracking table. */
  double plain[ROUNDS], deflt[ROUNDS], ratio_r[ROUNDS];
  redisContext *g = test_redis(&srv);
  for (int k = 0; k < ROUNDS; k++) {
    plain[k] = raw_rate(g, "GET", 20000);
    die_reply(redisCommand(g, "CLIENT TRACKING on REDIRECT %lld", id),
              "CLIENT TRACKING");
    deflt[k] = raw_rate(g, "GET", 20000);
    die_reply(redisCommand(g, "CLIENT TRACKING off"), "CLIENT TRACKING");
    ratio_r[k] = deflt[k] / plain[k];
  }
  printf("tracking modes, raw hiredis (what each costs; DESIGN.md)\n");
  printf("  %-30s %12.0f ops/s   ratio %.3f\n", "SET, BCAST of 1 prefix",
         median(one, ROUNDS), median(ratio_1, ROUNDS));
  printf("  %-30s %12.0f ops/s\n", "SET, nobody tracking",
         median(none, ROUNDS));
  printf("  %-30s %12.0f ops/s   ratio %.3f\n", "SET, BCAST of 256 prefixes",
         median(bcast, ROUNDS), median(ratio_w, ROUNDS));
  printf("  %-30s %12.0f ops/s\n", "GET, no tracking", median(plain, ROUNDS));
  printf("  %-30s %12.0f ops/s   ratio %.3f\n", "GET, default-mode tracking",
         median(deflt, ROUNDS), median(ratio_r, ROUNDS));
  redisFree(g);
  redisFree(s);
  redisFree(w);
}

/* ---- zipf -----------------------------------------------------------------
 */

static int nkeys = 1000000;
static int run_ms = 2000;
static double *cdf;    /* Zipf(ZIPF_S) over ranks 0..nkeys-1 */
static uint32_t *perm; /* rank -> key id, so hot keys spread over buckets */
static atomic_int go, halt;

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static uint32_t zipf_key(uint64_t *s) {
  double u = (double)(rng_next(s) >> 11) / 9007199254740992.0;
  size_t lo = 0, hi = (size_t)nkeys - 1;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cdf[mid] < u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return perm[lo];
}

static int key_name(char *out, uint32_t id) {
  return snprintf(out, 16, "z%07u", id);
}

typedef struct zworker {
  pthread_t th;
  cachet *c;
  uint64_t seed;
  uint32_t *seq; /* the keys, drawn before the clock starts */
  size_t nseq;
  unsigned long long ops;
} zworker;

static void *zwork(void *arg) {
  zworker *w = arg;
  char key[16];
  while (!atomic_load(&go))
    ;
  for (size_t i = 0; !atomic_load_explicit(&halt, memory_order_relaxed);
       i = (i + 1) % w->nseq) {
    int len = key_name(key, w->seq[i]);
    get_or_die(w->c, key, (size_t)len);
    w->ops++;
  }
  return NULL;
}

static double zipf_run(cachet *c, zworker *w) {
  atomic_store(&go, 0);
  atomic_store(&halt, 0);
  for (int i = 0; i < THREADS; i++) {
    w[i].c = c;
    w[i].ops = 0;
    pthread_create(&w[i].th, NULL, zwork, &w[i]);
  }
  atomic_store(&go, 1);
  uint64_t t0 = bench_ns();
  struct timespec ts = {run_ms / 1000, (run_ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  atomic_store(&halt, 1);
  unsigned long long ops = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(w[i].th, NULL);
    ops += w[i].ops;
  }
  return (double)ops / ((double)(bench_ns() - t0) / 1e9);
}

/* FIFO and CLOCK of `cap` entries over the trace: hit rates. A direct
 * table maps a key id to its slot (or -1). */
static void simulate(const uint32_t *trace, size_t n, size_t cap, double *fifo,
                     double *clockr) {
  int32_t *where = malloc((size_t)nkeys * sizeof *where);
  uint32_t *slots = malloc(cap * sizeof *slots);
  uint8_t *ref = calloc(cap, 1);
  for (int pass = 0; pass < 2; pass++) {
    memset(where, -1, (size_t)nkeys * sizeof *where);
    size_t used = 0, hand = 0, hits = 0;
    for (size_t i = 0; i < n; i++) {
      uint32_t k = trace[i];
      if (where[k] >= 0) {
        hits++;
        ref[where[k]] = 1;
        continue;
      }
      size_t s;
      if (used < cap) {
        s = used++;
      } else {
        if (pass == 1) /* CLOCK: pass over referenced slots once */
          while (ref[hand]) {
            ref[hand] = 0;
            hand = (hand + 1) % cap;
          }
        s = hand;
        hand = (hand + 1) % cap;
        where[slots[s]] = -1;
      }
      slots[s] = k;
      ref[s] = 0;
      where[k] = (int32_t)s;
    }
    *(pass == 0 ? fifo : clockr) = (double)hits / (double)n;
  }
  free(where);
  free(slots);
  free(ref);
}

static void policies(size_t bytes) {
  size_t n = 4000000;
  uint32_t *trace = malloc(n * sizeof *trace);
  uint64_t s = 12345;
  for (size_t i = 0; i < n; i++)
    trace[i] = zipf_key(&s);
  cachet_near *t = NULL;
  if (cachet_near_create(&t, bytes, 3600 * 1000) != CACHET_OK)
    exit(1);
  cachet_near_activate(t);
  size_t hits = 0;
  char key[16];
  for (size_t i = 0; i < n; i++) {
    int len = key_name(key, trace[i]);
    void *v;
    size_t vl;
    uint64_t tk;
    if (cachet_near_get(t, key, (size_t)len, 1, &v, &vl, &tk) == CACHET_OK) {
      hits++;
      free(v);
    } else {
      cachet_near_fill(t, key, (size_t)len, tk, value, VALUE_BYTES, 0, 1);
    }
  }
  cachet_near_stats st;
  cachet_near_get_stats(t, &st);
  double fifo = 0, clk = 0;
  simulate(trace, n, (size_t)st.entries, &fifo, &clk);
  printf("policies, one pass of %zu Zipf(%.2f) reads, %llu entries held\n", n,
         ZIPF_S, (unsigned long long)st.entries);
  printf("  %-30s %11.1f %%\n", "S3-FIFO (the near cache)",
         100.0 * (double)hits / (double)n);
  printf("  %-30s %11.1f %%\n", "FIFO, as many entries", 100.0 * fifo);
  printf("  %-30s %11.1f %%\n", "CLOCK, as many entries", 100.0 * clk);
  cachet_near_destroy(t);
  free(trace);
}

static void zipf(void) {
  cdf = malloc((size_t)nkeys * sizeof *cdf);
  perm = malloc((size_t)nkeys * sizeof *perm);
  double sum = 0;
  for (int i = 0; i < nkeys; i++)
    sum += 1.0 / pow(i + 1, ZIPF_S);
  double acc = 0;
  for (int i = 0; i < nkeys; i++) {
    acc += 1.0 / pow(i + 1, ZIPF_S) / sum;
    cdf[i] = acc;
    perm[i] = (uint32_t)i;
  }
  uint64_t s = 42;
  for (int i = nkeys - 1; i > 0; i--) {
    uint32_t j = (uint32_t)(rng_next(&s) % (uint64_t)(i + 1));
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  /* The data: nkeys keys, written in batches. */
  cachet *off = open_handle("bn-z:", 0);
  enum { BATCH = 1000 };
  static cachet_entry e[BATCH];
  static char names[BATCH][16];
  for (int i = 0; i < nkeys; i += BATCH) {
    int n = nkeys - i < BATCH ? nkeys - i : BATCH;
    for (int k = 0; k < n; k++) {
      int len = key_name(names[k], (uint32_t)(i + k));
      e[k] = (cachet_entry){.key = names[k],
                            .keylen = (size_t)len,
                            .val = value,
                            .len = VALUE_BYTES};
    }
    if (cachet_mset(off, e, (size_t)n) != CACHET_OK) {
      fprintf(stderr, "bench_near: mset: %s\n", cachet_last_error());
      exit(1);
    }
  }
  size_t data = (size_t)nkeys * (8 + VALUE_BYTES);
  size_t bytes = data / 10;
  if (bytes < CACHET_NEAR_MIN_BYTES)
    bytes = CACHET_NEAR_MIN_BYTES;
  cachet *on = open_handle("bn-z:", bytes);
  zworker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i].seed = 1000 + (uint64_t)i;
    w[i].nseq = 500000;
    w[i].seq = malloc(w[i].nseq * sizeof *w[i].seq);
    for (size_t k = 0; k < w[i].nseq; k++)
      w[i].seq[k] = zipf_key(&w[i].seed);
  }
  zipf_run(on, w); /* warm: the near cache fills */
  double a[ROUNDS], b[ROUNDS], ratio[ROUNDS];
  cachet_metrics m0, m1;
  cachet_metrics_snapshot(on, &m0);
  for (int k = 0; k < ROUNDS; k++) {
    a[k] = zipf_run(off, w);
    b[k] = zipf_run(on, w);
    ratio[k] = b[k] / a[k];
  }
  cachet_metrics_snapshot(on, &m1);
  uint64_t nh = m1.near_hits - m0.near_hits,
           nm = m1.near_misses - m0.near_misses;
  printf("zipf(%.2f), %d keys of %d bytes, %d threads, near cache %zu bytes "
         "(10%% of %zu)\n",
         ZIPF_S, nkeys, VALUE_BYTES, THREADS, bytes, data);
  printf("  %-30s %12.0f ops/s\n", "near cache off", median(a, ROUNDS));
  printf("  %-30s %12.0f ops/s\n", "near cache on", median(b, ROUNDS));
  printf("  %-30s %12.2f x\n", "ratio on/off", median(ratio, ROUNDS));
  printf("  %-30s %11.1f %%   (%llu bytes held)\n", "near cache hit rate",
         100.0 * (double)nh / (double)(nh + nm),
         (unsigned long long)m1.near_bytes);
  for (int i = 0; i < THREADS; i++)
    free(w[i].seq);
  cachet_close(on);
  cachet_close(off);
  policies(bytes);
  free(cdf);
  free(perm);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "--keys=", 7) == 0)
      nkeys = atoi(argv[i] + 7);
    else if (strncmp(argv[i], "--ms=", 5) == 0)
      run_ms = atoi(argv[i] + 5);
    else {
      fprintf(stderr, "usage: bench_near [--keys=N] [--ms=MS]\n"
                      "  --keys: the Zipf workload's keys (default 1000000)\n"
                      "  --ms: each Zipf run's length (default 2000)\n");
      return 2;
    }
  }
  if (nkeys < 1000)
    nkeys = 1000;
  memset(value, 'v', VALUE_BYTES);
  bench_server_start(&srv);
  hot_key();
  writes();
  modes();
  zipf();
  test_server_stop(&srv);
  return 0;
}
