/* The hostile and the plausible server of the fuzz targets (replies.h). */
#include "replies.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "envelope.h"

void reply_put(reply_buf *b, const void *p, size_t n) {
  if (n == 0)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap * 2 + n + 64;
    char *q = realloc(b->p, cap);
    FUZZ_ASSERT(q != NULL);
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

void reply_put_raw(reply_buf *b, const char *s) { reply_put(b, s, strlen(s)); }

/* A RESP header: a type byte and a number. */
void reply_put_head(reply_buf *b, char type, long long v) {
  char s[32];
  int n = snprintf(s, sizeof s, "%c%lld\r\n", type, v);
  reply_put(b, s, (size_t)n);
}

void reply_put_bulk(reply_buf *b, const void *p, size_t n) {
  reply_put_head(b, '$', (long long)n);
  reply_put(b, p, n);
  reply_put_raw(b, "\r\n");
}

/* An INFO reply of a healthy server. */
static const char info_body[] =
    "redis_version:7.0.15\r\nused_memory:10\r\nmaxmemory:0\r\n"
    "connected_clients:1\r\nkeyspace_hits:1\r\nkeyspace_misses:1\r\n";

/* Strings the machines look for, so that the fuzzer need not guess them. */
static const char *const words[] = {"retag",
                                    "OK",
                                    "0",
                                    "1",
                                    "2",
                                    "tg",
                                    "t2",
                                    "k",
                                    "a",
                                    "b",
                                    "m",
                                    "PONG",
                                    "fz:{00}t:tg",
                                    "fz:{00}v:k",
                                    "fz:{00}m:k",
                                    "fz:{3a}e:tg",
                                    "fz:{00}x:k",
                                    "maxmemory-policy",
                                    "noeviction",
                                    "allkeys-lru",
                                    "volatile-lru",
                                    info_body,
                                    "redis_version:6.0.0\r\n",
                                    "redis_version:x\r\n",
                                    "used_memory:-1\r\n",
                                    "0123456789abcdef0123456789abcdef"};
static const char *const errors[] = {
    "-ERR boom",
    "-NOSCRIPT No matching script",
    "-BUSY Redis is busy",
    "-OOM command not allowed when used memory > 'maxmemory'",
    "-MOVED 0 127.0.0.1:1",
    "-ASK 0 127.0.0.1:1",
    "-TRYAGAIN",
    "-CLUSTERDOWN",
    "-WRONGTYPE Operation against a key holding the wrong kind of value",
    "-LOADING",
    "-READONLY",
    "-NOPERM",
    "-",
    "-ERR"};
static const long long ints[] = {0,  1,    2,         3,         -1,
                                 -2, 64,   65,        1000,      1 << 20,
                                 -3, 1500, INT64_MAX, INT64_MIN, 100000};

/* One reply, as RESP, from the grammar. */
void reply_gen(fuzz_cursor *in, reply_buf *b, int depth) {
  uint8_t t = fuzz_take_u8(in);
  switch (t % 11) {
  case 0:
    reply_put_raw(b, "$-1\r\n");
    break;
  case 1: {
    uint8_t k = fuzz_take_u8(in);
    long long v = k & 0x80 ? (long long)fuzz_take_u64(in)
                           : ints[k % (sizeof ints / sizeof ints[0])];
    reply_put_head(b, ':', v);
    break;
  }
  case 2: {
    size_t got;
    const uint8_t *p = fuzz_take_bytes(in, fuzz_take_u8(in), &got);
    reply_put_bulk(b, p, got);
    break;
  }
  case 3: {
    const char *w = words[fuzz_take_u8(in) % (sizeof words / sizeof words[0])];
    reply_put_bulk(b, w, strlen(w));
    break;
  }
  case 4:
    reply_put_raw(b, t & 0x80 ? "+PONG\r\n" : "+OK\r\n");
    break;
  case 5: {
    const char *e =
        errors[fuzz_take_u8(in) % (sizeof errors / sizeof errors[0])];
    reply_put(b, e, strlen(e));
    reply_put_raw(b, "\r\n");
    break;
  }
  case 6:
  case 7:
  case 8: {
    /* Mostly short; sometimes around a chunk's 64 members. */
    uint8_t k = fuzz_take_u8(in);
    size_t n = k & 0x80 ? 60 + k % 8 : k % 6;
    if (depth >= REPLY_MAX_DEPTH)
      n = 0;
    reply_put_head(b, '*', (long long)n);
    for (size_t i = 0; i < n; i++)
      reply_gen(in, b, depth + 1);
    break;
  }
  case 9:
    reply_put_raw(b, "*-1\r\n");
    break;
  default: { /* raw bytes: any stream at all */
    size_t got;
    const uint8_t *p = fuzz_take_bytes(in, fuzz_take_u8(in), &got);
    reply_put(b, p, got);
    break;
  }
  }
}

int reply_is(const cachet_cmd *k, const char *name) {
  return k->lens[0] == strlen(name) &&
         memcmp(k->argv[0], name, k->lens[0]) == 0;
}

void reply_put_str(reply_buf *b, const char *s) {
  reply_put_bulk(b, s, strlen(s));
}

static long long arg_int(const cachet_cmd *k, int i) {
  if (i >= k->argc || k->lens[i] >= 24)
    return 0;
  char s[24];
  memcpy(s, k->argv[i], k->lens[i]);
  s[k->lens[i]] = '\0';
  return atoll(s);
}

/* A value of "v" sealed for the key the GET names: a hit. */
static void put_value(reply_buf *b, const cachet_cmd *k) {
  uint8_t *blob = NULL;
  size_t len = 0;
  int rc = cachet_envelope_seal(NULL, 0, k->argv[1], k->lens[1], 0,
                                cachet_now_ms(), 0, "v", 1, &blob, &len);
  FUZZ_ASSERT(rc == CACHET_OK);
  reply_put_bulk(b, blob, len);
  free(blob);
}

/* evict_chunk: every lane's members evicted; some lanes drain on. */
static void put_chunk(reply_buf *b, const cachet_cmd *k, uint8_t v) {
  int a = 3 + (int)arg_int(k, 2); /* ARGV[1] */
  long long lanes = arg_int(k, a), total = 0;
  if (lanes < 1 || lanes > 4096) {
    reply_put_raw(b, ":0\r\n");
    return;
  }
  reply_put_head(b, '*', 1 + 5 * lanes + ((v & 2) ? lanes : 0));
  for (int i = a + 2, j = 0; j < lanes; j++) {
    long long n = arg_int(k, i + 1);
    total += n;
    i += 3 + (int)n;
  }
  reply_put_head(b, ':', total);
  for (int i = a + 2, j = 0; j < lanes; j++) {
    long long n = arg_int(k, i + 1), mode = arg_int(k, i + 2);
    reply_put_head(b, ':', n);
    reply_put_raw(b, ":0\r\n:0\r\n");
    reply_put_head(b, ':', mode == 1 ? 1 + (v & 1) : 0);
    reply_put_head(b, ':', (v & 2) ? 1 : 0);
    if (v & 2)
      reply_put_str(b, "m");
    i += 3 + (int)n;
  }
}

static void put_script(reply_buf *b, const cachet_cmd *k, uint8_t v) {
  switch (k->script) {
  case CACHET_SCRIPT_LOCK_ACQUIRE:
    reply_put_raw(b, v & 1 ? "*2\r\n:1\r\n:7\r\n" : "*2\r\n:0\r\n:50\r\n");
    break;
  case CACHET_SCRIPT_LOCK_EXTEND:
  case CACHET_SCRIPT_LOCK_RELEASE:
  case CACHET_SCRIPT_DELETE_ENTRY:
    reply_put_head(b, ':', v % 3 == 2 ? -1 : v % 3);
    break;
  case CACHET_SCRIPT_EVICT_BEGIN:
    if (v & 1) {
      reply_put_raw(b, "*1\r\n:0\r\n");
    } else {
      reply_put_raw(b, "*2\r\n");
      reply_put_head(b, ':', 1 + (v & 2 ? 1 : 0));
      reply_put_str(b, "m");
    }
    break;
  case CACHET_SCRIPT_EVICT_CHUNK:
    put_chunk(b, k, v);
    break;
  case CACHET_SCRIPT_PRUNE_CHUNK:
    reply_put_raw(b, "*2\r\n");
    reply_put_head(b, ':', v % 3);
    reply_put_head(b, ':', (v >> 2) & 1);
    break;
  case CACHET_SCRIPT_SET_TAGS:
    if (v & 1)
      reply_put_raw(b, ":1\r\n");
    else
      reply_put_raw(b, "*2\r\n$5\r\nretag\r\n$2\r\nt2\r\n");
    break;
  case CACHET_SCRIPT_SET_MANY: {
    long long e = arg_int(k, 3 + (int)arg_int(k, 2));
    if (v & 1 || e < 1) {
      reply_put_raw(b, "*1\r\n");
      reply_put_head(b, ':', e);
    } else {
      reply_put_raw(b, "*2\r\n");
      reply_put_head(b, ':', e - 1);
      reply_put_raw(b, "*3\r\n:1\r\n");
      reply_put_str(b, v & 2 ? "retag" : "err");
      reply_put_str(b, v & 2 ? "t2" : "ERR boom");
    }
    break;
  }
  default: /* clear_chunk, prune_dangling, untag */
    reply_put_head(b, ':', v % 2);
    break;
  }
}

const cachet_script *reply_script_by_sha(const char *p, size_t n) {
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++)
    if (n == 40 && memcmp(p, cachet_scripts[i].sha, 40) == 0)
      return &cachet_scripts[i];
  return NULL;
}

const cachet_script *reply_script_by_body(const char *p, size_t n) {
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++)
    if (n == cachet_scripts[i].len && memcmp(p, cachet_scripts[i].body, n) == 0)
      return &cachet_scripts[i];
  return NULL;
}

void reply_plausible(reply_buf *b, const cachet_cmd *k, uint8_t v) {
  if (reply_is(k, "EVALSHA")) {
    put_script(b, k, v);
  } else if (reply_is(k, "GET") && k->argc == 2) {
    if (v & 1)
      reply_put_raw(b, "$-1\r\n");
    else
      put_value(b, k);
  } else if (reply_is(k, "SET")) {
    reply_put_raw(b, "+OK\r\n");
  } else if (reply_is(k, "SMEMBERS")) {
    reply_put_raw(b, "*1\r\n");
    reply_put_str(b, v & 1 ? "tg" : "t2");
  } else if (reply_is(k, "ZRANGE")) {
    reply_put_head(b, '*', v % 3);
    for (int i = 0; i < v % 3; i++)
      reply_put_str(b, i == 0 ? "m" : "a");
  } else if (reply_is(k, "SCAN") || reply_is(k, "ZSCAN")) {
    reply_put_raw(b, "*2\r\n");
    reply_put_str(b, v & 1 ? "0" : "17");
    reply_put_raw(b, "*2\r\n");
    reply_put_str(b, reply_is(k, "ZSCAN") ? "m"
                     : v & 2              ? "fz:{00}v:k"
                                          : "fz:{00}t:tg");
    reply_put_str(b, reply_is(k, "ZSCAN") ? "1000" : "fz:{3a}t:t2");
  } else if (reply_is(k, "PTTL")) {
    reply_put_head(b, ':', v % 3 == 0 ? 1500 : -(long long)(v % 3));
  } else if (reply_is(k, "PING")) {
    reply_put_raw(b, "+PONG\r\n");
  } else if (reply_is(k, "INFO")) {
    reply_put_str(b, info_body);
  } else if (reply_is(k, "CONFIG")) {
    reply_put_raw(b, "*2\r\n");
    reply_put_str(b, "maxmemory-policy");
    reply_put_str(b, v & 1 ? "noeviction" : "allkeys-lru");
  } else if (reply_is(k, "SCRIPT") && k->argc == 3 && k->lens[1] == 4 &&
             memcmp(k->argv[1], "LOAD", 4) == 0) {
    const cachet_script *sc = reply_script_by_body(k->argv[2], k->lens[2]);
    if (sc != NULL)
      reply_put_str(b, sc->sha);
    else
      reply_put_raw(b, "-ERR Error compiling script\r\n");
  } else if (reply_is(k, "SCRIPT")) {
    reply_put_head(b, '*', k->argc - 2);
    for (int i = 2; i < k->argc; i++)
      reply_put_raw(b, v & 1 ? ":1\r\n" : ":0\r\n");
  } else { /* EXISTS, UNLINK, DEL */
    reply_put_head(b, ':', v % 2);
  }
}
