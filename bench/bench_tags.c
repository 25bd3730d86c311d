/* bench_tags: the cost of tags on the write and read paths, against raw
 * hiredis in the same run on the same private server, and the worst stall
 * other clients see while a large tag is evicted and a large namespace is
 * cleared.
 *
 *   bench_tags [--ops N] [--members N] [--no-pin]
 *
 * --ops      operations per throughput measurement (default 100000)
 * --members  entries in the evicted tag and in the cleared namespace
 *            (default 1000000)
 * --no-pin   leave the server and the bench where the scheduler puts them
 *
 * The headline "worst stall" is the slowest PING of a client on its own
 * connection. On a small host it also holds time the pinger or the server
 * spent waiting for a core, so more views follow it: the pinger's p99.9 and
 * counts, the same less the server's waits for a CPU, the server's SLOWLOG
 * and its latency monitor. The server measures wall-clock time: a client
 * waiting for a core cannot inflate it, a vCPU the hypervisor stops can.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "envelope.h"
#include "keys.h"
#include "cachet_scripts.h"

#define VALUE_LEN 64

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_tags: %s: %s: %s\n", what, cachet_strerror(rc),
          cachet_last_error());
  exit(1);
}

static long parse_count(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v <= 0) {
    fprintf(stderr, "bench_tags: not a positive count: %s\n", s);
    exit(2);
  }
  return v;
}

/* Mean server time of one EVALSHA since the last reset: the work of one
 * chunk without the host's scheduling noise. */
static double evalsha_usec(redisContext *r) {
  redisReply *rep = redisCommand(r, "INFO commandstats");
  double us = 0;
  if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
    const char *p = strstr(rep->str, "cmdstat_evalsha:");
    if (p != NULL && (p = strstr(p, "usec_per_call=")) != NULL)
      us = strtod(p + 14, NULL);
  }
  if (rep != NULL)
    freeReplyObject(rep);
  return us;
}

/* Clear the server's counters before a phase: command stats, the SLOWLOG
 * (commands over 1 ms) and the latency monitor (events of 1 ms or more). */
static void server_stats_reset(redisContext *r) {
  freeReplyObject(redisCommand(r, "CONFIG RESETSTAT"));
  freeReplyObject(redisCommand(r, "CONFIG SET slowlog-log-slower-than 1000"));
  freeReplyObject(redisCommand(r, "CONFIG SET slowlog-max-len 100000"));
  freeReplyObject(redisCommand(r, "SLOWLOG RESET"));
  freeReplyObject(redisCommand(r, "CONFIG SET latency-monitor-threshold 1"));
  freeReplyObject(redisCommand(r, "LATENCY RESET"));
}

/* How many commands the server logged over 1 ms, and the slowest, for
 * telling a server-side stall from scheduling noise on the client host. */
static void slowlog_print(redisContext *r, const char *phase) {
  redisReply *rep = redisCommand(r, "SLOWLOG GET 100000");
  if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
    if (rep != NULL)
      freeReplyObject(rep);
    return;
  }
  long long worst = 0;
  const char *what = "-";
  for (size_t i = 0; i < rep->elements; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
        e->element[3]->elements < 1)
      continue;
    if (e->element[2]->integer > worst) {
      worst = e->element[2]->integer;
      what = e->element[3]->element[0]->str;
    }
  }
  printf("  %s: one chunk (EVALSHA) takes %.0f us on average; %zu commands "
         "ran over 1 ms on the server, the slowest %.2f ms (%s)\n",
         phase, evalsha_usec(r), rep->elements, (double)worst / 1e3, what);
  freeReplyObject(rep);
}

/* The worst event of each kind the server's latency monitor saw: a command,
 * a fast command, an expire cycle, each one stretch in which the server
 * served nobody else. Redis records whole milliseconds, rounded down, and
 * only events of 1 ms or more. */
static void latency_print(redisContext *r, const char *phase) {
  redisReply *rep = redisCommand(r, "LATENCY LATEST");
  if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
    printf("  %s: server latency monitor unavailable\n", phase);
    if (rep != NULL)
      freeReplyObject(rep);
    return;
  }
  printf("  %s: server latency monitor, worst event per kind (whole ms, "
         "rounded down):",
         phase);
  size_t shown = 0;
  for (size_t i = 0; i < rep->elements; i++) {
    const redisReply *e = rep->element[i];
    /* {event, time of the latest, latest ms, worst ms} */
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[3]->type != REDIS_REPLY_INTEGER)
      continue;
    printf("%s %s %lld ms", shown++ ? "," : "", e->element[0]->str,
           e->element[3]->integer);
  }
  printf("%s\n", shown ? "" : " none of 1 ms or more");
  freeReplyObject(rep);
}

/* Write n entries "<stem><i>" with `ntags` tags through pipelined EVALSHA of
 * set_tags on a raw connection, 1000 per round trip: the fastest way to
 * fill the server. */
static void populate(cachet *c, redisContext *raw, const char *stem, long n,
                     const char *const *tags, size_t ntags) {
  const cachet_script *sc = &cachet_scripts[CACHET_SCRIPT_SET_TAGS];
  redisReply *lr = redisCommand(raw, "SCRIPT LOAD %b", sc->body, sc->len);
  if (lr == NULL || lr->type != REDIS_REPLY_STRING)
    die("script load", CACHET_ESERVER);
  freeReplyObject(lr);
  char nn[16], nkb[16];
  snprintf(nn, sizeof nn, "%zu", ntags);
  snprintf(nkb, sizeof nkb, "%zu", 2 + ntags);
  int rc;
  for (long base = 0; base < n; base += 1000) {
    long end = base + 1000 < n ? base + 1000 : n;
    for (long i = base; i < end; i++) {
      char key[64];
      int kl = snprintf(key, sizeof key, "%s%ld", stem, i);
      unsigned b = cachet_bucket(key, (size_t)kl);
      cachet_key vk = {0}, mk = {0}, tk[4];
      if (cachet_key_build(c, &vk, CACHET_KIND_VALUE, b, key, (size_t)kl) ||
          cachet_key_build(c, &mk, CACHET_KIND_TAGSET, b, key, (size_t)kl))
        die("key", CACHET_ENOMEM);
      for (size_t t = 0; t < ntags; t++)
        if (cachet_key_build(c, &tk[t], CACHET_KIND_INDEX, b, tags[t],
                             strlen(tags[t])))
          die("key", CACHET_ENOMEM);
      uint8_t *blob = NULL;
      size_t bl = 0;
      if ((rc = cachet_envelope_seal(c->keyring, c->cfg.encrypt, vk.buf, vk.len,
                                     0, cachet_now_ms(), 0, "value", 5, &blob,
                                     &bl)) != CACHET_OK)
        die("seal", rc);
      const char *a[20];
      size_t l[20];
      int na = 0;
      a[na] = "EVALSHA", l[na++] = 7;
      a[na] = sc->sha, l[na++] = 40;
      a[na] = nkb, l[na++] = strlen(nkb);
      a[na] = vk.buf, l[na++] = vk.len;
      a[na] = mk.buf, l[na++] = mk.len;
      for (size_t t = 0; t < ntags; t++)
        a[na] = tk[t].buf, l[na++] = tk[t].len;
      a[na] = (const char *)blob, l[na++] = bl;
      a[na] = "0", l[na++] = 1;
      a[na] = "16", l[na++] = 2;
      a[na] = nn, l[na++] = strlen(nn);
      a[na] = key, l[na++] = (size_t)kl;
      for (size_t t = 0; t < ntags; t++)
        a[na] = tags[t], l[na++] = strlen(tags[t]);
      if (redisAppendCommandArgv(raw, na, a, l) != REDIS_OK)
        die("append", CACHET_ENOMEM);
      free(blob);
      cachet_key_free(&vk);
      cachet_key_free(&mk);
      for (size_t t = 0; t < ntags; t++)
        cachet_key_free(&tk[t]);
    }
    for (long i = base; i < end; i++) {
      redisReply *rep = NULL;
      if (redisGetReply(raw, (void **)&rep) != REDIS_OK)
        die("populate", CACHET_ECONN);
      freeReplyObject(rep);
    }
  }
}

static double rate(long n, uint64_t ns) {
  return ns > 0 ? (double)n * 1e9 / (double)ns : 0;
}

int main(int argc, char **argv) {
  long ops = 100000, members = 1000000;
  int pin = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
      ops = parse_count(argv[++i]);
    else if (strcmp(argv[i], "--members") == 0 && i + 1 < argc)
      members = parse_count(argv[++i]);
    else if (strcmp(argv[i], "--no-pin") == 0)
      pin = 0;
    else {
      fprintf(stderr, "usage: bench_tags [--ops N] [--members N] [--no-pin]\n");
      return 2;
    }
  }
  test_server srv;
  bench_server_start(&srv);
  /* Before any thread starts: the pinger inherits the bench's CPUs. */
  bench_place(&srv, pin);
  cachet *c = test_open(&srv, "bench:");
  redisContext *raw = test_redis(&srv);
  char val[VALUE_LEN];
  memset(val, 'v', sizeof val);
  const char *tags[] = {"tag-a", "tag-b"};
  int rc;

  /* Write path: set with 2 tags (one EVALSHA) against a raw SET of the same
   * value, over the same keys, so both pay the same keyspace growth. */
  char key[32];
  uint64_t t0 = bench_ns();
  for (long i = 0; i < ops; i++) {
    int kl = snprintf(key, sizeof key, "k%ld", i % 10000);
    if ((rc = cachet_set_tags(c, key, (size_t)kl, val, sizeof val, 0, tags,
                              2)) != CACHET_OK)
      die("set_tags", rc);
  }
  uint64_t t_set = bench_ns() - t0;
  t0 = bench_ns();
  for (long i = 0; i < ops; i++) {
    redisReply *r =
        redisCommand(raw, "SET raw:k%ld %b", i % 10000, val, sizeof val);
    if (r == NULL)
      die("raw SET", CACHET_ECONN);
    freeReplyObject(r);
  }
  uint64_t t_raw_set = bench_ns() - t0;
  bench_report("set with 2 tags vs SET", rate(ops, t_set),
               rate(ops, t_raw_set));

  /* Read path: cachet_get of a tagged entry is one GET plus the envelope. */
  t0 = bench_ns();
  for (long i = 0; i < ops; i++) {
    int kl = snprintf(key, sizeof key, "k%ld", i % 10000);
    void *v = NULL;
    size_t n = 0;
    if ((rc = cachet_get(c, key, (size_t)kl, &v, &n)) != CACHET_OK)
      die("get", rc);
    cachet_free(v);
  }
  uint64_t t_get = bench_ns() - t0;
  t0 = bench_ns();
  for (long i = 0; i < ops; i++) {
    redisReply *r = redisCommand(raw, "GET raw:k%ld", i % 10000);
    if (r == NULL)
      die("raw GET", CACHET_ECONN);
    freeReplyObject(r);
  }
  uint64_t t_raw_get = bench_ns() - t0;
  bench_report("get (tagged) vs GET", rate(ops, t_get), rate(ops, t_raw_get));

  /* Eviction of a large tag while another client PINGs. */
  const char *big[] = {"big"};
  t0 = bench_ns();
  populate(c, raw, "m", members, big, 1);
  printf("populated %ld members of one tag in %.1f s\n", members,
         (double)(bench_ns() - t0) / 1e9);
  server_stats_reset(raw);
  bench_stall st;
  bench_stall_start(&st, &srv);
  uint64_t evicted = 0;
  t0 = bench_ns();
  rc = cachet_evict_tags(c, big, 1, &evicted);
  uint64_t t_ev = bench_ns() - t0;
  bench_stall_stop(&st);
  if (rc != CACHET_OK)
    die("evict", rc);
  printf("evict %llu entries: %.2f s (%.0f entries/s); worst stall %.2f ms "
         "over %llu pings (target <= 5 ms)\n",
         (unsigned long long)evicted, (double)t_ev / 1e9,
         rate((long)evicted, t_ev), (double)st.worst_ns / 1e6,
         (unsigned long long)st.pings);
  bench_stall_print(&st, "evict");
  slowlog_print(raw, "evict");
  latency_print(raw, "evict");

  /* Clearing a large namespace while another client PINGs. */
  t0 = bench_ns();
  populate(c, raw, "c", members, NULL, 0);
  printf("populated %ld entries in %.1f s\n", members,
         (double)(bench_ns() - t0) / 1e9);
  server_stats_reset(raw);
  bench_stall_start(&st, &srv);
  uint64_t removed = 0;
  t0 = bench_ns();
  rc = cachet_clear(c, 0, &removed);
  uint64_t t_cl = bench_ns() - t0;
  bench_stall_stop(&st);
  if (rc != CACHET_OK)
    die("clear", rc);
  printf("clear %llu entries: %.2f s (%.0f entries/s); worst stall %.2f ms "
         "over %llu pings (target <= 5 ms)\n",
         (unsigned long long)removed, (double)t_cl / 1e9,
         rate((long)removed, t_cl), (double)st.worst_ns / 1e6,
         (unsigned long long)st.pings);
  bench_stall_print(&st, "clear");
  slowlog_print(raw, "clear");
  latency_print(raw, "clear");

  redisFree(raw);
  cachet_close(c);
  test_server_stop(&srv);
  return 0;
}
