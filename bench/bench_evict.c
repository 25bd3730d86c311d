/* bench_evict: tag eviction and clear at the speed of the work. Against the
 * physical floor measured in the same run on the same private server: one
 * raw pipelined UNLINK per key of what the eviction deletes (the values,
 * their tag sets and the tags' index keys), which has none of the
 * bookkeeping and none of the atomicity; and the same keys 1000 to an
 * UNLINK, which also has no cost per command.
 *
 *   bench_evict [--rounds N] [--commandstats]
 *
 * --commandstats prints, after each workload, the server's INFO
 * commandstats for cachet's side of its last round: what each command
 * cost the server (calls, microseconds).
 *
 * Workloads (100-byte values, each entry with 2 tags, TCP loopback):
 *   evict 50 tags x 200 entries   goal: <= 2x the raw UNLINKs
 *   evict 1 tag of 200 entries    goal: <= 10 round trips (printed)
 *   evict 1 tag of 5 entries      what the empty-bucket sweep costs a small
 *                                 tag (251 of its 256 buckets are empty),
 *                                 and the sweep's commands alone, raw
 *   clear 20k tagged entries      against the raw UNLINKs of its keys
 * Each figure is the median of the rounds; the data is written again before
 * each round, outside the timing.
 *
 * Where PHP, phpredis and Symfony's cache component are installed (Debian:
 * php-cli php-redis php-symfony-cache), symfony_evict.php then runs the same
 * workloads through Symfony's RedisTagAwareAdapter on the same server, and
 * each row is printed again against it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common.h"
#include "keys.h"
#include "op_evict.h"
#include "run.h"

#define VALUE_LEN 100
#define MAX_ROUNDS 15
#define MAX_ROWS 8

/* cachet's medians, kept for the rows against Symfony. */
typedef struct row {
  const char *name;
  double ms;
} row;
static row rows[MAX_ROWS];
static int nrows;

static void die(const char *what) {
  fprintf(stderr, "bench_evict: %s: %s\n", what, cachet_last_error());
  exit(1);
}

static int commandstats;

/* Reset the server's command statistics before the timed call. */
static void stats_reset(redisContext *raw) {
  if (commandstats)
    freeReplyObject(redisCommand(raw, "CONFIG RESETSTAT"));
}

/* Print what the server spent since stats_reset, one command a line. */
static void stats_print(redisContext *raw, const char *name) {
  if (!commandstats)
    return;
  redisReply *r = redisCommand(raw, "INFO commandstats");
  if (r == NULL || r->type != REDIS_REPLY_STRING)
    die("INFO commandstats");
  printf("  %s, server side (INFO commandstats):\n", name);
  for (char *line = strtok(r->str, "\r\n"); line != NULL;
       line = strtok(NULL, "\r\n")) {
    char cmd[64];
    unsigned long long calls, usec;
    if (sscanf(line, "cmdstat_%63[^:]:calls=%llu,usec=%llu", cmd, &calls,
               &usec) == 3 &&
        strcmp(cmd, "config") != 0)
      printf("    %-12s %8llu calls %10.2f ms %6.2f us/call\n", cmd, calls,
             (double)usec / 1e3, (double)usec / (double)calls);
  }
  freeReplyObject(r);
}

static void keep(const char *name, double ms) {
  if (nrows < MAX_ROWS)
    rows[nrows++] = (row){name, ms};
}

static test_server srv;
static char value[VALUE_LEN];

/* ntags tags of `per` entries each; entry i of tag t also carries tag
 * "extra<t % 5>", so every eviction touches a second index. */
static void populate(cachet *c, const char *stem, int ntags, int per) {
  cachet_entry *e = calloc((size_t)per, sizeof *e);
  char(*keys)[32] = calloc((size_t)per, sizeof *keys);
  if (e == NULL || keys == NULL)
    die("out of memory");
  for (int t = 0; t < ntags; t++) {
    char tag[32], extra[16];
    snprintf(tag, sizeof tag, "%s-tag%d", stem, t);
    snprintf(extra, sizeof extra, "extra%d", t % 5);
    const char *tags[2] = {tag, extra};
    for (int i = 0; i < per; i++) {
      int kl = snprintf(keys[i], sizeof keys[i], "%s:%d:%d", stem, t, i);
      e[i] = (cachet_entry){.key = keys[i],
                            .keylen = (size_t)kl,
                            .val = value,
                            .len = VALUE_LEN,
                            .ttl_ms = 600000,
                            .tags = tags,
                            .ntags = 2};
    }
    if (cachet_mset(c, e, (size_t)per) != CACHET_OK)
      die("mset");
    for (int i = 0; i < per; i++)
      free(e[i].out);
  }
  free(keys);
  free(e);
}

/* Every key under the prefix, as the raw baseline deletes them. */
static redisReply *all_keys(redisContext *r, const char *prefix) {
  redisReply *rep = redisCommand(r, "KEYS %s*", prefix);
  if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
    die("KEYS");
  return rep;
}

/* Read and drop n replies. */
static void drain(redisContext *r, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++) {
    redisReply *x = NULL;
    if (redisGetReply(r, (void **)&x) != REDIS_OK)
      die(what);
    freeReplyObject(x);
  }
}

/* The keys, `batch` to an UNLINK, all written before any reply is read.
 * One per command is the floor with Redis's cost per command; 1000 per
 * command (UNLINK_BATCH) the floor of deleting this layout's keys
 * without it. */
#define UNLINK_BATCH 1000
static uint64_t raw_unlink(redisContext *r, const redisReply *keys,
                           size_t batch) {
  const char *argv[UNLINK_BATCH + 1];
  size_t lens[UNLINK_BATCH + 1], sent = 0;
  argv[0] = "UNLINK";
  lens[0] = 6;
  uint64_t t0 = bench_ns();
  for (size_t i = 0; i < keys->elements; i += batch, sent++) {
    size_t n = keys->elements - i < batch ? keys->elements - i : batch;
    for (size_t j = 0; j < n; j++) {
      argv[j + 1] = keys->element[i + j]->str;
      lens[j + 1] = keys->element[i + j]->len;
    }
    redisAppendCommandArgv(r, (int)n + 1, argv, lens);
  }
  drain(r, sent, "UNLINK");
  return bench_ns() - t0;
}

/* Write the data again and time both raw floors on it. */
static void raw_floors(cachet *c, redisContext *raw, const char *prefix,
                       const char *stem, int ntags, int per, uint64_t *one,
                       uint64_t *batched, size_t *nkeys) {
  populate(c, stem, ntags, per);
  redisReply *keys = all_keys(raw, prefix);
  *one = raw_unlink(raw, keys, 1);
  *nkeys = keys->elements;
  freeReplyObject(keys);
  populate(c, stem, ntags, per);
  keys = all_keys(raw, prefix);
  *batched = raw_unlink(raw, keys, UNLINK_BATCH);
  freeReplyObject(keys);
}

static uint64_t evict(cachet *c, const char *stem, int ntags, uint64_t *rt,
                      uint64_t *n) {
  char names[64][32];
  const char *tags[64];
  for (int t = 0; t < ntags; t++) {
    snprintf(names[t], sizeof names[t], "%s-tag%d", stem, t);
    tags[t] = names[t];
  }
  cachet_op_evict x;
  if (cachet_op_evict_init(&x, c, tags, (size_t)ntags) != CACHET_OK)
    die("evict init");
  uint64_t t0 = bench_ns();
  int rc = cachet_run(c, &x.op);
  uint64_t dt = bench_ns() - t0;
  if (rc != CACHET_OK)
    die("evict");
  *rt = x.sends;
  *n = x.evicted;
  x.op.k->free(&x.op);
  return dt;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double median_ms(uint64_t *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_u64);
  return (double)v[n / 2] / 1e6;
}

static cachet *open_handle(const char *prefix) {
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
  cachet_options o;
  cachet_options_init(&o);
  o.url = url;
  o.prefix = prefix;
  cachet *c = NULL;
  if (cachet_open(&c, &o) != CACHET_OK || cachet_ping(c) != CACHET_OK)
    die("open");
  return c;
}

/* A workload's two lines, its medians against both raw floors (and its
 * round trips, unless rt < 0), kept for the rows against Symfony. */
static void report(const char *name, uint64_t *ours, uint64_t *one,
                   uint64_t *batched, int rounds, size_t nkeys, long long rt) {
  double e = median_ms(ours, rounds), u = median_ms(one, rounds),
         b = median_ms(batched, rounds);
  printf("%-30s cachet %8.2f ms   raw UNLINK %8.2f ms   ratio %.2f", name, e, u,
         e / u);
  if (rt >= 0)
    printf("   round trips %lld", rt);
  printf("\n%-30s cachet %8.2f ms   %d per UNLINK %6.2f ms   ratio %.2f   "
         "(%zu keys)\n",
         "", e, UNLINK_BATCH, b, e / b, nkeys);
  keep(name, e);
}

/* Evict ntags x per, and the raw UNLINK of the same keys, `rounds` times. */
static void evict_workload(const char *name, int ntags, int per, int rounds,
                           redisContext *raw) {
  uint64_t ev[MAX_ROUNDS], un[MAX_ROUNDS], ub[MAX_ROUNDS], rt = 0, n = 0;
  size_t nkeys = 0;
  cachet *c = open_handle("bev:");
  for (int k = 0; k < rounds; k++) {
    populate(c, "w", ntags, per);
    stats_reset(raw);
    ev[k] = evict(c, "w", ntags, &rt, &n);
    if (k == rounds - 1)
      stats_print(raw, name);
    if (n != (uint64_t)ntags * (uint64_t)per)
      die("evicted another count");
    /* The same keys again, this time for the raw side: the values, their
     * tag sets and the index keys the eviction emptied. */
    raw_floors(c, raw, "bev:", "w", ntags, per, &un[k], &ub[k], &nkeys);
  }
  report(name, ev, un, ub, rounds, nkeys, (long long)rt);
  cachet_close(c);
}

/* What the sweep of one tag costs by itself: its 512 commands (ZRANGE of
 * each bucket's index, EXISTS of each bucket's e key) as one raw pipeline,
 * on keys that do not exist. */
static void sweep_alone(int rounds, redisContext *raw) {
  uint64_t sw[MAX_ROUNDS];
  cachet *c = open_handle("bsw:");
  cachet_key t[CACHET_BUCKETS], e[CACHET_BUCKETS];
  for (unsigned i = 0; i < CACHET_BUCKETS; i++)
    if (cachet_key_build(c, &t[i], CACHET_KIND_INDEX, i, "tag", 3) !=
            CACHET_OK ||
        cachet_key_build(c, &e[i], CACHET_KIND_EVICTING, i, "tag", 3) !=
            CACHET_OK)
      die("key");
  for (int k = 0; k < rounds; k++) {
    uint64_t t0 = bench_ns();
    for (unsigned i = 0; i < CACHET_BUCKETS; i++) {
      redisAppendCommand(raw, "ZRANGE %b 0 63", t[i].buf, t[i].len);
      redisAppendCommand(raw, "EXISTS %b", e[i].buf, e[i].len);
    }
    drain(raw, 2 * CACHET_BUCKETS, "sweep");
    sw[k] = bench_ns() - t0;
  }
  for (unsigned i = 0; i < CACHET_BUCKETS; i++) {
    cachet_key_free(&t[i]);
    cachet_key_free(&e[i]);
  }
  printf("%-30s raw pipeline of its %u commands %8.2f ms\n",
         "  (a tag's sweep alone)", 2 * CACHET_BUCKETS, median_ms(sw, rounds));
  cachet_close(c);
}

static void clear_workload(int entries, int rounds, redisContext *raw) {
  uint64_t cl[MAX_ROUNDS], un[MAX_ROUNDS], ub[MAX_ROUNDS];
  size_t nkeys = 0;
  cachet *c = open_handle("bcl:");
  for (int k = 0; k < rounds; k++) {
    populate(c, "c", entries / 200, 200);
    stats_reset(raw);
    uint64_t t0 = bench_ns(), n = 0;
    if (cachet_clear(c, 0, &n) != CACHET_OK)
      die("clear");
    cl[k] = bench_ns() - t0;
    if (k == rounds - 1)
      stats_print(raw, "clear 20k tagged entries");
    raw_floors(c, raw, "bcl:", "c", entries / 200, 200, &un[k], &ub[k], &nkeys);
  }
  report("clear 20k tagged entries", cl, un, ub, rounds, nkeys, -1);
  cachet_close(c);
}

/* Symfony's figures for the rows above, from symfony_evict.php on the same
 * server. Says why not where it cannot run. */
static void symfony(int rounds) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "php '%s/symfony_evict.php' %d %d 2>&1",
           BENCH_SOURCE_DIR, srv.port, rounds);
  FILE *p = popen(cmd, "r");
  if (p == NULL) {
    printf("symfony: not measured (popen failed)\n");
    return;
  }
  char line[512];
  while (fgets(line, sizeof line, p) != NULL) {
    /* "symfony <row name>: <ms> <keys>"; anything else is passed on. */
    const char *colon = strrchr(line, ':');
    double ms = 0;
    unsigned long keys = 0;
    int i = nrows;
    if (strncmp(line, "symfony ", 8) == 0 && colon != NULL &&
        sscanf(colon + 1, "%lf %lu", &ms, &keys) == 2)
      for (i = 0; i < nrows; i++)
        if ((size_t)(colon - line) == 8 + strlen(rows[i].name) &&
            strncmp(line + 8, rows[i].name, strlen(rows[i].name)) == 0)
          break;
    if (i < nrows)
      printf("%-30s cachet %8.2f ms   Symfony    %8.2f ms   ratio %.2f   "
             "(Symfony's keys: %lu)\n",
             rows[i].name, rows[i].ms, ms, rows[i].ms / ms, keys);
    else
      printf("symfony: %s", line);
  }
  int st = pclose(p);
  if (st != 0)
    printf("symfony: not measured (php exited with status %d; it needs the "
           "Debian packages php-cli, php-redis and php-symfony-cache)\n",
           WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(int argc, char **argv) {
  int rounds = 5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--commandstats") == 0)
      commandstats = 1;
    else {
      fprintf(stderr, "usage: bench_evict [--rounds N] [--commandstats]\n");
      return 2;
    }
  }
  if (rounds < 1 || rounds > MAX_ROUNDS)
    rounds = 5;
  memset(value, 'v', sizeof value);
  bench_server_start(&srv);
  redisContext *raw = redisConnect("127.0.0.1", srv.port);
  if (raw == NULL || raw->err)
    die("raw connect");
  printf("bench_evict: %d-byte values, 2 tags each, TCP loopback, median of "
         "%d rounds\n",
         VALUE_LEN, rounds);
  evict_workload("evict 50 tags x 200 entries", 50, 200, rounds, raw);
  evict_workload("evict 1 tag of 200 entries", 1, 200, rounds, raw);
  evict_workload("evict 1 tag of 5 entries", 1, 5, rounds, raw);
  sweep_alone(rounds, raw);
  clear_workload(20000, rounds, raw);
  symfony(rounds);
  redisFree(raw);
  test_server_stop(&srv);
  return 0;
}
