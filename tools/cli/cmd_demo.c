/* cachet demo: a narrated tour of every capability, which doubles as a smoke
 * test. Each step says what it does in a line or two, checks that cachet
 * behaved as documented, and the command exits 0 only if every step did.
 * Everything lives under its own prefix and is removed at the end. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "private_server.h"
#include "tool.h"

extern const cli_command cli_cmd_demo;

#define PREFIX "cachet-demo:"
#define NSTEPS 11

static void help_demo(FILE *o) {
  fprintf(o,
          "usage: cachet demo\n"
          "  A narrated tour of cachet, which is also a smoke test: set/get\n"
          "  with a TTL counting down, tags and eviction, batches, clear,\n"
          "  locks (acquire, contention, release), fetch (get_or_set with a\n"
          "  loader), stats, health, sealed values with a generated key and\n"
          "  tamper detection. It uses the prefix '%s' (whatever --prefix\n"
          "  says) and removes everything under it at the end.\n"
          "  When no server is configured (no --url, CACHET_URL, CACHET_HOST,\n"
          "  CACHET_PORT) and none answers on localhost:6379, it starts a\n"
          "  private redis-server for the run and stops it afterwards.\n"
          "Exit: 0 every step behaved as expected, 1 a step's outcome was\n"
          "not the expected one, 2 usage/configuration, 3 connection/server\n"
          "error or no redis-server available, 4 an integrity/format error\n"
          "where none was expected.\n",
          PREFIX);
}

typedef struct demo {
  cachet *c;      /* plain handle */
  cachet *sealed; /* handle with a generated keyring */
  int step;
  int failed; /* exit code of the first failure, 0 if none */
} demo;

static void step(demo *d, const char *title) {
  printf("\n[%d/%d] %s\n", ++d->step, NSTEPS, title);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("      ", stdout);
  vprintf(fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
}

/* Check a call's status against the expected one. Returns 1 if it matched;
 * otherwise records the failure and says what happened. */
static int expect(demo *d, int got, int want, const char *what) {
  if (got == want)
    return 1;
  if (got < 0) {
    fprintf(stdout, "      UNEXPECTED: %s: %s\n", what, cachet_strerror(got));
    fflush(stdout);
    int code = cli_status(got, what);
    if (d->failed == 0)
      d->failed = code;
  } else {
    printf("      UNEXPECTED: %s returned %s, expected %s\n", what,
           cachet_status_name(got), cachet_status_name(want));
    if (d->failed == 0)
      d->failed = EXIT_MISS;
  }
  return 0;
}

/* A condition that must hold. */
static int check(demo *d, int cond, const char *what) {
  if (cond)
    return 1;
  printf("      UNEXPECTED: %s\n", what);
  if (d->failed == 0)
    d->failed = EXIT_MISS;
  return 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Get `key` and expect `want` (NULL: a miss). */
static int get_is(demo *d, cachet *c, const char *key, const char *want) {
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, key, strlen(key), &v, &n);
  int ok;
  if (want == NULL) {
    ok = expect(d, rc, CACHET_MISS, key);
  } else {
    ok = expect(d, rc, CACHET_OK, key) &&
         check(d, n == strlen(want) && memcmp(v, want, n) == 0,
               "the value read back differs from the one written");
  }
  cachet_free(v);
  return ok;
}

static void demo_ttl(demo *d) {
  step(d, "set and get with a TTL");
  if (!expect(d, cachet_set(d->c, "greeting", 8, "hello", 5, 1500), CACHET_OK,
              "set greeting"))
    return;
  say("set greeting = \"hello\" with a TTL of 1500 ms");
  if (get_is(d, d->c, "greeting", "hello"))
    say("get greeting -> \"hello\"");
  int64_t prev = 1501;
  for (int i = 0; i < 3; i++) {
    int64_t ttl = 0;
    if (!expect(d, cachet_ttl(d->c, "greeting", 8, &ttl), CACHET_OK,
                "ttl greeting"))
      return;
    say("ttl greeting -> %lld ms", (long long)ttl);
    check(d, ttl >= 0 && ttl < prev, "the TTL did not count down");
    prev = ttl;
    sleep_ms(400);
  }
  sleep_ms((int)prev);
  if (get_is(d, d->c, "greeting", NULL))
    say("after the TTL: get greeting -> miss (exit 1 in the CLI), "
        "not an error");
}

static void demo_tags(demo *d) {
  step(d, "tags and eviction");
  static const char *const u1[] = {"users", "team:a"};
  static const char *const u2[] = {"users"};
  static const char *const p1[] = {"posts"};
  static const char *const users[] = {"users"};
  int ok = expect(d, cachet_set_tags(d->c, "user:1", 6, "ann", 3, 0, u1, 2),
                  CACHET_OK, "set user:1") &&
           expect(d, cachet_set_tags(d->c, "user:2", 6, "bob", 3, 0, u2, 1),
                  CACHET_OK, "set user:2") &&
           expect(d, cachet_set_tags(d->c, "post:1", 6, "hi", 2, 0, p1, 1),
                  CACHET_OK, "set post:1");
  if (!ok)
    return;
  say("user:1 tagged users,team:a; user:2 tagged users; post:1 tagged posts");
  uint64_t evicted = 0;
  if (!expect(d, cachet_evict_tags(d->c, users, 1, &evicted), CACHET_OK,
              "evict users"))
    return;
  say("evict-tags users -> %llu entries evicted", (unsigned long long)evicted);
  check(d, evicted == 2, "expected 2 entries evicted");
  if (get_is(d, d->c, "user:1", NULL) && get_is(d, d->c, "user:2", NULL) &&
      get_is(d, d->c, "post:1", "hi"))
    say("user:1 and user:2 are gone; post:1 is still there");
}

static void demo_batch(demo *d) {
  step(d, "batches (one pipelined round trip)");
  cachet_entry e[3];
  static const char *const k[3] = {"batch:a", "batch:b", "batch:c"};
  memset(e, 0, sizeof e);
  for (int i = 0; i < 3; i++) {
    e[i].key = k[i];
    e[i].keylen = strlen(k[i]);
    e[i].val = k[i] + 6;
    e[i].len = 1;
    e[i].ttl_ms = 60000;
  }
  if (!expect(d, cachet_mset(d->c, e, 2), CACHET_OK, "mset"))
    return;
  say("mset batch:a, batch:b");
  for (int i = 0; i < 3; i++)
    e[i].out = NULL;
  if (!expect(d, cachet_mget(d->c, e, 3), CACHET_OK, "mget"))
    return;
  say("mget batch:a batch:b batch:c -> %s, %s, %s",
      cachet_status_name(e[0].status), cachet_status_name(e[1].status),
      cachet_status_name(e[2].status));
  check(d,
        e[0].status == CACHET_OK && e[1].status == CACHET_OK &&
            e[2].status == CACHET_MISS && e[0].outlen == 1 &&
            memcmp(e[0].out, "a", 1) == 0,
        "expected hit, hit, miss");
  for (int i = 0; i < 3; i++)
    cachet_free(e[i].out);
}

static void demo_clear(demo *d) {
  step(d, "clear (the prefix only, in bounded chunks, never FLUSHDB)");
  uint64_t n = 0;
  if (!expect(d, cachet_clear(d->c, 1, &n), CACHET_OK, "clear --dry-run"))
    return;
  say("clear --dry-run -> would remove %llu entries", (unsigned long long)n);
  check(d, n == 3, "expected 3 entries (post:1, batch:a, batch:b)");
  if (!expect(d, cachet_clear(d->c, 0, &n), CACHET_OK, "clear"))
    return;
  say("clear -> removed %llu entries", (unsigned long long)n);
  if (get_is(d, d->c, "post:1", NULL))
    say("get post:1 -> miss");
}

static void demo_lock(demo *d) {
  step(d, "locks: acquire, contention, release");
  cachet_lock *a = NULL, *b = NULL;
  if (!expect(d, cachet_lock_acquire(d->c, "demo-lock", 5000, 0, &a), CACHET_OK,
              "lock acquire"))
    return;
  char hex[CACHET_LOCK_TOKEN_HEXLEN + 1];
  cachet_lock_token(a, hex);
  say("acquire demo-lock for 5000 ms -> token %.8s..., fence %llu", hex,
      (unsigned long long)cachet_lock_fence(a));
  int rc = cachet_lock_acquire(d->c, "demo-lock", 5000, 200, &b);
  if (expect(d, rc, CACHET_NOT_ACQUIRED, "second acquire"))
    say("a second owner waits 200 ms -> not acquired (exit 1 in the CLI)");
  if (rc == CACHET_OK)
    cachet_lock_free(b), b = NULL;
  if (expect(d, cachet_lock_release(d->c, a), CACHET_OK, "release"))
    say("release with the token -> released");
  if (expect(d, cachet_lock_release(d->c, a), CACHET_LOCK_EXPIRED,
             "second release"))
    say("release again -> nobody holds it any more");
  uint64_t fence = cachet_lock_fence(a);
  cachet_lock_free(a);
  if (expect(d, cachet_lock_acquire(d->c, "demo-lock", 5000, 0, &b), CACHET_OK,
             "re-acquire")) {
    say("the next owner gets a higher fencing number: %llu",
        (unsigned long long)cachet_lock_fence(b));
    check(d, cachet_lock_fence(b) > fence, "the fence did not rise");
    expect(d, cachet_lock_release(d->c, b), CACHET_OK, "release");
    cachet_lock_free(b);
  }
}

static int loader(void *ud, const void *key, size_t keylen, void **val,
                  size_t *len, int64_t *ttl_ms) {
  (void)key;
  (void)keylen;
  (void)ttl_ms;
  int *calls = ud;
  (*calls)++;
  char *v = malloc(16);
  if (v == NULL)
    return -1;
  memcpy(v, "expensive", 9);
  *val = v;
  *len = 9;
  return 0;
}

static void demo_fetch(demo *d) {
  step(d, "fetch: get_or_set with a loader, under stampede protection");
  int calls = 0;
  for (int i = 0; i < 2; i++) {
    void *v = NULL;
    size_t n = 0;
    int rc = cachet_get_or_set(d->c, "report", 6, loader, &calls, 60000, NULL,
                               0, &v, &n);
    if (!expect(d, rc, CACHET_OK, "get_or_set"))
      return;
    check(d, n == 9 && memcmp(v, "expensive", 9) == 0, "wrong value");
    say("fetch report -> \"%.*s\" (loader calls so far: %d)", (int)n, (char *)v,
        calls);
    cachet_free(v);
  }
  check(d, calls == 1, "the loader ran more than once");
}

static void demo_stats(demo *d) {
  step(d, "stats: the handle's counters");
  cachet_metrics m;
  cachet_metrics_snapshot(d->c, &m);
  say("hits %llu, misses %llu, writes %llu, tag evictions %llu",
      (unsigned long long)m.hits, (unsigned long long)m.misses,
      (unsigned long long)m.writes, (unsigned long long)m.tag_evictions);
  say("locks acquired %llu, contentions %llu, script reloads %llu",
      (unsigned long long)m.lock_acquisitions,
      (unsigned long long)m.lock_contentions,
      (unsigned long long)m.script_reloads);
  check(d, m.hits > 0 && m.misses > 0 && m.writes > 0 && m.tag_evictions == 2,
        "the counters do not match the steps above");
  char *prom = NULL;
  size_t plen = 0;
  if (expect(d, cachet_metrics_prometheus(&m, &prom, &plen), CACHET_OK,
             "prometheus"))
    say("(also in the Prometheus text format: %zu bytes; `cachet stats`)",
        plen);
  cachet_free(prom);
}

static void demo_health(demo *d) {
  step(d, "health");
  cachet_health h;
  if (!expect(d, cachet_health_check(d->c, &h), CACHET_OK, "health"))
    return;
  say("redis %s, ping %.2f ms, %d/%d scripts loaded, maxmemory-policy %s",
      h.server_version, h.ping_ms, h.scripts_loaded, h.scripts_total,
      h.maxmemory_policy);
  say("%s%s",
      h.healthy ? "healthy" : "NOT healthy: ", h.healthy ? "" : h.message);
}

static void demo_sealed(demo *d) {
  step(d, "sealed values: a generated key, MAC bound to the key name");
  if (d->sealed == NULL) {
    check(d, 0, "no sealed handle");
    return;
  }
  if (!expect(d, cachet_set(d->sealed, "secret", 6, "s3cr3t-value", 12, 60000),
              CACHET_OK, "sealed set"))
    return;
  say("a second handle with keyring \"1:<base64 key>\" (cachet keygen) "
      "stores secret");
  if (get_is(d, d->sealed, "secret", "s3cr3t-value"))
    say("get secret with the key -> \"s3cr3t-value\"");
  cachet_envelope_info info;
  if (expect(d, cachet_inspect(d->sealed, "secret", 6, &info), CACHET_OK,
             "inspect")) {
    say("inspect: key id %u, flags %s, MAC %s", (unsigned)info.key_id,
        info.flags & CACHET_ENV_F_MAC ? "mac" : "none",
        info.mac_status == CACHET_MAC_OK ? "verified" : "NOT verified");
    check(d, info.mac_status == CACHET_MAC_OK, "the MAC did not verify");
  }
  if (!cachet_tool_sealed(d->c)) {
    void *v = NULL;
    size_t n = 0;
    int rc = cachet_get(d->c, "secret", 6, &v, &n);
    cachet_free(v);
    if (expect(d, rc, CACHET_EINTEGRITY, "get without the key"))
      say("the plain handle (no keyring) refuses it: %s", cachet_strerror(rc));
  }
}

static void demo_tamper(demo *d) {
  step(d, "tamper detection");
  if (d->sealed == NULL)
    return;
  char *vk = NULL;
  size_t vkl = 0;
  if (!expect(d, cachet_value_key(d->sealed, "secret", 6, &vk, &vkl), CACHET_OK,
              "value key"))
    return;
  redisContext *raw = cli_raw_connect(d->sealed, "demo");
  if (!check(d, raw != NULL, "no raw connection")) {
    cachet_free(vk);
    return;
  }
  redisReply *r = redisCommand(raw, "STRLEN %b", vk, vkl);
  long long len = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  if (r != NULL)
    freeReplyObject(r);
  if (check(d, len > 0, "the sealed value is not in Redis")) {
    /* Flip one bit of the last payload byte with SETRANGE. */
    r = redisCommand(raw, "GETRANGE %b -1 -1", vk, vkl);
    char byte = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 1
                    ? (char)(r->str[0] ^ 0x20)
                    : 'x';
    if (r != NULL)
      freeReplyObject(r);
    char off[24];
    snprintf(off, sizeof off, "%lld", len - 1);
    r = redisCommand(raw, "SETRANGE %b %s %b", vk, vkl, off, &byte, (size_t)1);
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (r != NULL)
      freeReplyObject(r);
    if (check(d, ok, "SETRANGE failed")) {
      say("raw SETRANGE flips one byte of the stored envelope "
          "(%lld bytes) behind cachet's back",
          len);
      void *v = NULL;
      size_t n = 0;
      int rc = cachet_get(d->sealed, "secret", 6, &v, &n);
      cachet_free(v);
      if (expect(d, rc, CACHET_EINTEGRITY, "get of the tampered value"))
        say("get secret -> %s: %s (`cachet get` exits 4), never the "
            "tampered bytes and never a miss",
            cachet_strerror(rc), cachet_last_error());
    }
  }
  redisFree(raw);
  cachet_free(vk);
}

/* Remove everything the demo wrote: entries through clear, and the lock's
 * fencing counter (clear leaves locks alone) with a raw DEL. */
static void demo_cleanup(demo *d) {
  step(d, "clean up");
  uint64_t n = 0;
  if (expect(d, cachet_clear(d->c, 0, &n), CACHET_OK, "clear"))
    say("clear -> removed %llu entries under %s", (unsigned long long)n,
        PREFIX);
  char *fk = NULL;
  size_t fkl = 0;
  redisContext *raw = cli_raw_connect(d->c, "demo");
  if (raw != NULL &&
      cachet_tool_fence_key(d->c, "demo-lock", &fk, &fkl) == CACHET_OK) {
    redisReply *r = redisCommand(raw, "DEL %b", fk, fkl);
    if (r != NULL)
      freeReplyObject(r);
    cachet_free(fk);
  }
  redisFree(raw);
}

static cachet *open_handle(demo *d, cli *cl, const char *keys) {
  cachet_options o;
  cli_options(cl, &o);
  o.prefix = PREFIX;
  o.keys = keys;
  o.progress = NULL;
  cachet *c = NULL;
  int rc = cachet_open(&c, &o);
  if (rc != CACHET_OK) {
    int code = cli_status(rc, "demo: configuration");
    if (d->failed == 0)
      d->failed = code;
    return NULL;
  }
  return c;
}

static int run_demo(cli *cl, int argc, char **argv) {
  if (argc > 0)
    return cli_usage(&cli_cmd_demo, "unexpected argument %s", argv[0]);
  cli_private_server srv;
  int code = cli_private_server_setup(cl, &srv, "demo");
  if (code != 0)
    return code;
  demo d = {NULL, NULL, 0, 0};
  char key[CACHET_KEYGEN_BUFLEN];
  d.c = open_handle(&d, cl, NULL);
  if (d.c == NULL)
    goto out;
  int rc = cachet_ping(d.c);
  if (rc != CACHET_OK) {
    d.failed = cli_status(rc, "demo");
    goto out;
  }
  printf("cachet %s demo, prefix %s\n", CACHET_VERSION_STRING, PREFIX);
  /* Start from an empty namespace, e.g. after an interrupted run. */
  uint64_t stale = 0;
  if (!expect(&d, cachet_clear(d.c, 0, &stale), CACHET_OK, "clear"))
    goto out;
  if (!expect(&d, cachet_keygen(1, key, sizeof key), CACHET_OK, "keygen"))
    goto out;
  d.sealed = open_handle(&d, cl, key);
  memset(key, 0, sizeof key);

  demo_ttl(&d);
  demo_tags(&d);
  demo_batch(&d);
  demo_clear(&d);
  demo_lock(&d);
  demo_fetch(&d);
  demo_stats(&d);
  demo_health(&d);
  demo_sealed(&d);
  demo_tamper(&d);
  demo_cleanup(&d);
  if (d.failed == 0)
    printf("\ndemo: all %d steps behaved as expected\n", NSTEPS);
  else
    printf("\ndemo: some steps did not behave as expected (exit %d)\n",
           d.failed);
out:
  cachet_close(d.sealed);
  cachet_close(d.c);
  cli_private_server_stop(&srv);
  return d.failed;
}

const cli_command cli_cmd_demo = {
    "demo", "a narrated tour of every capability (also a smoke test)", run_demo,
    help_demo};
