/* TLS against real TLS redis-servers, with a throwaway CA made by the
 * openssl CLI (tests/tls_certs.sh): every sync operation, the async API, a
 * 3-master TLS cluster, an 8 MiB value, and each way verification fails,
 * which is a connection error with its reason, never a hang and never a
 * miss. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachet.h"
#include "cluster_harness.h"
#include "harness.h"

#ifdef CACHET_HAVE_LIBEVENT
#include <event2/event.h>
#endif

static char certs[256];
static test_server srv, mtls, expired;
static int port, mtls_port, expired_port;
static test_cluster cl;
static char ca[300], other_ca[300], client_crt[300], client_key[300];

static int setup(void **state) {
  (void)state;
  if (test_tls_certs(certs, sizeof certs) != 0 ||
      test_tls_server_start(&srv, certs, "server", 0, &port) != 0 ||
      test_tls_server_start(&mtls, certs, "server", 1, &mtls_port) != 0 ||
      test_tls_server_start(&expired, certs, "expired", 0, &expired_port) !=
          0 ||
      test_cluster_start_tls(&cl, 3, 0, certs) != 0)
    return -1;
  snprintf(ca, sizeof ca, "%s/ca.crt", certs);
  snprintf(other_ca, sizeof other_ca, "%s/other-ca.crt", certs);
  snprintf(client_crt, sizeof client_crt, "%s/client.crt", certs);
  snprintf(client_key, sizeof client_key, "%s/client.key", certs);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  test_cluster_stop(&cl);
  test_server_stop(&srv);
  test_server_stop(&mtls);
  test_server_stop(&expired);
  test_tls_remove(certs);
  return 0;
}

/* Options for rediss://127.0.0.1:<p>, verified by the test CA. */
static void tls_options(cachet_options *o, int p, const char *prefix, char *url,
                        size_t n) {
  cachet_options_init(o);
  snprintf(url, n, "rediss://127.0.0.1:%d", p);
  o->url = url;
  o->prefix = prefix;
  o->tls_ca_file = ca;
  o->timeout_ms = 2000;
}

static cachet *open_ok(const cachet_options *o) {
  cachet *c = NULL;
  int rc = cachet_open(&c, o);
  if (rc != CACHET_OK)
    fail_msg("cachet_open: %s: %s", cachet_strerror(rc), cachet_last_error());
  return c;
}

static void expect_get(cachet *c, const char *key, const char *want) {
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, key, strlen(key), &v, &n);
  if (want == NULL) {
    assert_int_equal(rc, CACHET_MISS);
  } else {
    if (rc != CACHET_OK)
      fail_msg("get %s: %s: %s", key, cachet_strerror(rc), cachet_last_error());
    assert_int_equal(n, strlen(want));
    assert_memory_equal(v, want, n);
  }
  cachet_free(v);
}

static int load_value(void *ud, const void *key, size_t keylen, void **val,
                      size_t *len, int64_t *ttl_ms) {
  (void)ud, (void)key, (void)keylen, (void)ttl_ms;
  *val = strdup("loaded");
  *len = 6;
  return 0;
}

static void test_every_sync_operation_over_tls(void **state) {
  (void)state;
  cachet_options o;
  char url[64];
  tls_options(&o, port, "tls1:", url, sizeof url);
  cachet *c = open_ok(&o);
  assert_int_equal(cachet_ping(c), CACHET_OK);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 60000), CACHET_OK);
  expect_get(c, "k", "v");
  assert_int_equal(cachet_exists(c, "k", 1), CACHET_OK);
  int64_t ttl = 0;
  assert_int_equal(cachet_ttl(c, "k", 1, &ttl), CACHET_OK);
  assert_true(ttl > 0 && ttl <= 60000);
  const char *tags[] = {"t1", "t2"};
  assert_int_equal(cachet_set_tags(c, "a", 1, "1", 1, 0, tags, 2), CACHET_OK);
  assert_int_equal(cachet_set_tags(c, "b", 1, "2", 1, 0, tags, 1), CACHET_OK);
  cachet_entry e[3] = {{.key = "m1", .keylen = 2, .val = "x", .len = 1},
                       {.key = "m2",
                        .keylen = 2,
                        .val = "y",
                        .len = 1,
                        .tags = tags,
                        .ntags = 1},
                       {.key = "m3", .keylen = 2, .val = "z", .len = 1}};
  assert_int_equal(cachet_mset(c, e, 3), CACHET_OK);
  assert_int_equal(cachet_mget(c, e, 3), CACHET_OK);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(e[i].status, CACHET_OK);
    assert_int_equal(e[i].outlen, 1);
    cachet_free(e[i].out);
  }
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, tags, 1, &n), CACHET_OK);
  assert_int_equal(n, 3); /* a, b, m2 */
  expect_get(c, "a", NULL);
  expect_get(c, "m1", "x");
  assert_int_equal(cachet_delete(c, "k", 1), CACHET_OK);
  assert_int_equal(cachet_delete(c, "k", 1), CACHET_MISS);

  cachet_lock *lk = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 5000, 0, &lk), CACHET_OK);
  assert_int_equal(cachet_lock_extend(c, lk, 5000), CACHET_OK);
  assert_int_equal(cachet_lock_release(c, lk), CACHET_OK);
  cachet_lock_free(lk);

  void *v = NULL;
  size_t len = 0;
  assert_int_equal(
      cachet_get_or_set(c, "g", 1, load_value, NULL, 0, NULL, 0, &v, &len),
      CACHET_OK);
  assert_int_equal(len, 6);
  cachet_free(v);
  assert_int_equal(cachet_prune(c, &n), CACHET_OK);
  assert_int_equal(cachet_clear(c, 0, &n), CACHET_OK);
  assert_true(n >= 3);
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_true(h.healthy);
  assert_null(strstr(h.message, "TLS"));
  cachet_close(c);
}

/* The near cache's invalidation feed over TLS: a write by another handle
 * reaches the copy, read from memory meanwhile. */
static void test_near_cache_over_tls(void **state) {
  (void)state;
  cachet_options o;
  char url[64];
  tls_options(&o, port, "tlsn:", url, sizeof url);
  cachet *w = open_ok(&o);
  o.near_cache_bytes = 1024 * 1024;
  cachet *c = open_ok(&o);
  cachet_health h = {0};
  for (int i = 0; i < 1000 && !h.tracking; i++) {
    assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
    if (!h.tracking)
      test_sleep_ms(10);
  }
  assert_int_equal(h.tracking, 1);
  assert_int_equal(cachet_set(w, "k", 1, "v1", 2, 0), CACHET_OK);
  cachet_metrics m = {0};
  for (int i = 0; i < 1000 && m.near_hits == 0; i++) {
    expect_get(c, "k", "v1");
    cachet_metrics_snapshot(c, &m);
  }
  assert_true(m.near_hits > 0);
  assert_int_equal(cachet_set(w, "k", 1, "v2", 2, 0), CACHET_OK);
  int seen = 0;
  for (int i = 0; i < 10000 && !seen; i++) {
    void *v = NULL;
    size_t n = 0;
    assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_OK);
    seen = n == 2 && memcmp(v, "v2", 2) == 0;
    cachet_free(v);
    if (!seen)
      test_sleep_ms(1);
  }
  assert_true(seen);
  cachet_close(c);
  cachet_close(w);
}

static void test_an_8_mib_value_round_trips(void **state) {
  (void)state;
  cachet_options o;
  char url[64];
  tls_options(&o, port, "tls2:", url, sizeof url);
  o.timeout_ms = 10000;
  cachet *c = open_ok(&o);
  size_t n = (size_t)8 << 20;
  unsigned char *big = malloc(n);
  assert_non_null(big);
  for (size_t i = 0; i < n; i++)
    big[i] = (unsigned char)(i * 131 + (i >> 13));
  assert_int_equal(cachet_set(c, "big", 3, big, n, 0), CACHET_OK);
  void *v = NULL;
  size_t len = 0;
  assert_int_equal(cachet_get(c, "big", 3, &v, &len), CACHET_OK);
  assert_int_equal(len, n);
  assert_memory_equal(v, big, n);
  cachet_free(v);
  free(big);
  cachet_close(c);
}

/* A connection error whose detail holds `why`. */
static void expect_refused(cachet_options *o, int want, const char *why) {
  cachet *c = open_ok(o);
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, "k", 1, &v, &n);
  char detail[512];
  snprintf(detail, sizeof detail, "%s", cachet_last_error());
  cachet_close(c);
  if (rc != want || strstr(detail, why) == NULL)
    fail_msg("got %s \"%s\", want %s with \"%s\"", cachet_status_name(rc),
             detail, cachet_status_name(want), why);
  assert_null(v);
}

static void test_each_verification_failure_is_a_connection_error(void **state) {
  (void)state;
  cachet_options o;
  char url[64];
  tls_options(&o, port, "tls3:", url, sizeof url);
  o.tls_ca_file = other_ca;
  expect_refused(&o, CACHET_ECONN, "certificate verification failed");

  tls_options(&o, port, "tls3:", url, sizeof url);
  o.tls_server_name = "elsewhere.example";
  expect_refused(&o, CACHET_ECONN, "hostname mismatch");

  tls_options(&o, expired_port, "tls3:", url, sizeof url);
  expect_refused(&o, CACHET_ECONN, "certificate has expired");

  /* Mutual TLS: no client certificate, then one. */
  tls_options(&o, mtls_port, "tls3:", url, sizeof url);
  expect_refused(&o, CACHET_ECONN, "requires a client certificate");
  tls_options(&o, mtls_port, "tls3:", url, sizeof url);
  o.tls_cert = client_crt;
  o.tls_key = client_key;
  cachet *c = open_ok(&o);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  expect_get(c, "k", "v");
  cachet_close(c);

  /* A TLS client on a plaintext port: the server waits for a command and
   * the handshake for an answer, until the timeout says which. */
  tls_options(&o, srv.port, "tls3:", url, sizeof url);
  o.timeout_ms = 300;
  expect_refused(&o, CACHET_ETIMEDOUT, "TLS handshake got no answer");

  /* A CA file that does not exist is the configuration's fault. */
  tls_options(&o, port, "tls3:", url, sizeof url);
  o.tls_ca_file = "/nonexistent/ca.pem";
  c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_ECONFIG);
  assert_non_null(strstr(cachet_last_error(), "/nonexistent/ca.pem"));
  assert_null(c);
}

static void test_insecure_connects_and_says_so(void **state) {
  (void)state;
  cachet_options o;
  char url[64];
  tls_options(&o, port, "tls4:", url, sizeof url);
  o.tls_ca_file = NULL;
  o.tls_insecure = 1;
  cachet *c = open_ok(&o);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_non_null(strstr(h.message, "tls_insecure"));
  cachet_close(c);
}

static void test_a_paused_server_times_out_over_tls(void **state) {
  (void)state;
  cachet_options o;
  char url[64];
  tls_options(&o, port, "tls5:", url, sizeof url);
  o.timeout_ms = 300;
  cachet *c = open_ok(&o);
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  test_command(&srv, "CLIENT PAUSE 3000 ALL");
  void *v = NULL;
  size_t n = 0;
  assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_ETIMEDOUT);
  assert_non_null(strstr(cachet_last_error(), "300 ms"));
  test_command(&srv, "CLIENT UNPAUSE");
  expect_get(c, "k", "v"); /* over a new connection */
  cachet_close(c);
}

/* ---- async ----------------------------------------------------------------
 */
#ifdef CACHET_HAVE_LIBEVENT

typedef struct res {
  int calls, status;
  char val[32];
  uint64_t count;
  char detail[256];
} res;

static void status_cb(int status, void *ud) {
  res *r = ud;
  r->calls++;
  r->status = status;
  snprintf(r->detail, sizeof r->detail, "%s", cachet_last_error());
}

static void value_cb(int status, const void *val, size_t len, void *ud) {
  res *r = ud;
  r->calls++;
  r->status = status;
  snprintf(r->val, sizeof r->val, "%.*s", (int)len,
           val != NULL ? (const char *)val : "");
  snprintf(r->detail, sizeof r->detail, "%s", cachet_last_error());
}

static void count_cb(int status, uint64_t count, void *ud) {
  res *r = ud;
  r->calls++;
  r->status = status;
  r->count = count;
}

static void run_until(struct event_base *base, const int *calls, int want) {
  for (int i = 0; i < 1000 && *calls < want; i++)
    event_base_loop(base, EVLOOP_ONCE);
  assert_int_equal(*calls, want);
}

static void async_round(cachet_options *o) {
  struct event_base *base = event_base_new();
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, o), CACHET_OK);
  const char *tags[] = {"at"};
  res s[20], g[20], ev = {0};
  memset(s, 0, sizeof s);
  memset(g, 0, sizeof g);
  int done = 0;
  char keys[20][8];
  for (int i = 0; i < 20; i++) {
    snprintf(keys[i], sizeof keys[i], "ak%d", i);
    assert_int_equal(cachet_async_set_tags(a, keys[i], strlen(keys[i]), keys[i],
                                           strlen(keys[i]), 0, tags, 1,
                                           status_cb, &s[i]),
                     CACHET_OK);
  }
  for (int i = 0; i < 20; i++) {
    run_until(base, &s[i].calls, 1);
    assert_int_equal(s[i].status, CACHET_OK);
  }
  for (int i = 0; i < 20; i++)
    assert_int_equal(
        cachet_async_get(a, keys[i], strlen(keys[i]), value_cb, &g[i]),
        CACHET_OK);
  for (int i = 0; i < 20; i++) {
    run_until(base, &g[i].calls, 1);
    assert_int_equal(g[i].status, CACHET_OK);
    assert_string_equal(g[i].val, keys[i]);
  }
  assert_int_equal(cachet_async_evict_tags(a, tags, 1, count_cb, &ev),
                   CACHET_OK);
  run_until(base, &ev.calls, 1);
  assert_int_equal(ev.status, CACHET_OK);
  assert_int_equal(ev.count, 20);
  (void)done;
  cachet_async_close(a);
  event_base_free(base);
}

static void test_async_over_tls(void **state) {
  (void)state;
  cachet_options o;
  char url[64];
  tls_options(&o, port, "tls6:", url, sizeof url);
  async_round(&o);

  /* A verification failure reaches the callback with its reason. */
  tls_options(&o, port, "tls6:", url, sizeof url);
  o.tls_ca_file = other_ca;
  struct event_base *base = event_base_new();
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, &o), CACHET_OK);
  res r = {0};
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &r), CACHET_OK);
  run_until(base, &r.calls, 1);
  assert_int_equal(r.status, CACHET_ECONN);
  assert_non_null(strstr(r.detail, "certificate verification failed"));
  cachet_async_close(a);
  event_base_free(base);
}

/* One async get on a handle with options `o`: its status, and its detail
 * in detail[n]. */
static int async_get(const cachet_options *o, char *detail, size_t n) {
  struct event_base *base = event_base_new();
  cachet_async *a = NULL;
  assert_int_equal(cachet_async_open(&a, base, o), CACHET_OK);
  res r = {0};
  assert_int_equal(cachet_async_get(a, "k", 1, value_cb, &r), CACHET_OK);
  run_until(base, &r.calls, 1);
  snprintf(detail, n, "%s", r.detail);
  cachet_async_close(a);
  event_base_free(base);
  return r.status;
}

#else
static void async_round(cachet_options *o) { (void)o; }
static void test_async_over_tls(void **state) { (void)state; }
#endif

/* A port that takes the connection and never answers the ClientHello (a
 * hung server, a black hole): each call times out, and its detail says it
 * was the handshake, on a single server and for a cluster's slot map, in
 * both APIs. */
static void test_a_silent_port_times_out_in_the_handshake(void **state) {
  (void)state;
  int silent;
  int fd = test_black_hole(&silent);
  assert_true(fd >= 0);
  for (int cluster = 0; cluster < 2; cluster++) {
    cachet_options o;
    char url[96];
    tls_options(&o, silent, "tls7:", url, sizeof url);
    if (cluster)
      snprintf(url, sizeof url, "rediss+cluster://127.0.0.1:%d", silent);
    o.timeout_ms = 300;
    cachet *c = open_ok(&o);
    void *v = NULL;
    size_t n = 0;
    assert_int_equal(cachet_get(c, "k", 1, &v, &n), CACHET_ETIMEDOUT);
    printf("# %s, sync: %s\n", url, cachet_last_error());
    assert_non_null(strstr(cachet_last_error(), "TLS handshake"));
    cachet_close(c);
#ifdef CACHET_HAVE_LIBEVENT
    char d[256];
    assert_int_equal(async_get(&o, d, sizeof d), CACHET_ETIMEDOUT);
    printf("# %s, async: %s\n", url, d);
    assert_non_null(strstr(d, "TLS handshake"));
#endif
  }
  close(fd);
}

/* ---- cluster ----------------------------------------------------------------
 */

static void test_cluster_over_tls(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "tlsc:");
  char key[16], val[16];
  const char *tags[] = {"ct"};
  for (int i = 0; i < 60; i++) {
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "v%d", i);
    int rc = cachet_set_tags(c, key, strlen(key), val, strlen(val), 0, tags, 1);
    if (rc != CACHET_OK)
      fail_msg("set %s: %s: %s", key, cachet_strerror(rc), cachet_last_error());
  }
  for (int i = 0; i < 60; i++) {
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "v%d", i);
    expect_get(c, key, val);
  }
  /* Every master holds some: the keys were routed, over TLS, to each. */
  for (int m = 0; m < 3; m++) {
    redisContext *r = test_cluster_node(&cl, m);
    assert_non_null(r);
    redisReply *x = redisCommand(r, "DBSIZE");
    assert_true(x != NULL && x->type == REDIS_REPLY_INTEGER && x->integer > 0);
    freeReplyObject(x);
    redisFree(r);
  }
  uint64_t n = 0;
  assert_int_equal(cachet_evict_tags(c, tags, 1, &n), CACHET_OK);
  assert_int_equal(n, 60);
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_true(h.healthy);
  cachet_close(c);

  cachet_options o;
  char url[64];
  test_cluster_options(&cl, &o, "tlsc2:", url, sizeof url);
  async_round(&o);
}

/* A raw command on cluster node i (its plaintext port); the reply, which
 * the caller frees. */
static redisReply *node_cmd(int i, const char *fmt, ...) {
  redisContext *r = test_cluster_node(&cl, i);
  assert_non_null(r);
  va_list ap;
  va_start(ap, fmt);
  redisReply *x = redisvCommand(r, fmt, ap);
  va_end(ap);
  redisFree(r);
  assert_non_null(x);
  return x;
}

/* A slot moves while the handle's map still names its old master: the
 * MOVED reply, given to a TLS client, names the new master's TLS port,
 * and the command is followed there over TLS. */
static void test_moved_is_followed_over_tls(void **state) {
  (void)state;
  cachet *c = test_cluster_open(&cl, "tlsm:");
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_OK);
  char *vk = NULL;
  size_t vkl = 0;
  assert_int_equal(cachet_value_key(c, "k", 1, &vk, &vkl), CACHET_OK);
  redisReply *x = node_cmd(0, "CLUSTER KEYSLOT %b", vk, vkl);
  int slot = (int)x->integer;
  freeReplyObject(x);
  cachet_free(vk);
  int from = test_cluster_owner(&cl, (unsigned)slot), to = (from + 1) % 3;
  char fid[41], tid[41];
  assert_int_equal(test_cluster_node_id(&cl, from, fid), 0);
  assert_int_equal(test_cluster_node_id(&cl, to, tid), 0);
  freeReplyObject(node_cmd(to, "CLUSTER SETSLOT %d IMPORTING %s", slot, fid));
  freeReplyObject(node_cmd(from, "CLUSTER SETSLOT %d MIGRATING %s", slot, tid));
  x = node_cmd(from, "CLUSTER GETKEYSINSLOT %d 100", slot);
  for (size_t i = 0; i < x->elements; i++)
    freeReplyObject(node_cmd(from, "MIGRATE 127.0.0.1 %d %b 0 5000",
                             cl.tls_port[to], x->element[i]->str,
                             x->element[i]->len)); /* tls-cluster: TLS */
  freeReplyObject(x);
  for (int i = 0; i < 3; i++)
    freeReplyObject(node_cmd(i, "CLUSTER SETSLOT %d NODE %s", slot, tid));
  expect_get(c, "k", "v");
  assert_int_equal(test_cluster_owner(&cl, (unsigned)slot), to);
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_sync_operation_over_tls),
      cmocka_unit_test(test_near_cache_over_tls),
      cmocka_unit_test(test_an_8_mib_value_round_trips),
      cmocka_unit_test(test_each_verification_failure_is_a_connection_error),
      cmocka_unit_test(test_insecure_connects_and_says_so),
      cmocka_unit_test(test_a_paused_server_times_out_over_tls),
      cmocka_unit_test(test_async_over_tls),
      cmocka_unit_test(test_a_silent_port_times_out_in_the_handshake),
      cmocka_unit_test(test_cluster_over_tls),
      cmocka_unit_test(test_moved_is_followed_over_tls),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
