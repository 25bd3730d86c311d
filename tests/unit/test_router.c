/* The cluster router (router.h) with canned replies, no server: a CLUSTER
 * SLOTS reply becomes the slot map, a malformed one is refused whole, and
 * MOVED and ASK lead where they say. The fuzzer server_replies_fuzzer
 * drives the same functions with hostile replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "cachet.h"
#include "harness.h"
#include "router.h"

/* Apply a CLUSTER SLOTS reply as answered by node 0. */
static int apply(cachet_router *rt, const char *resp) {
  uint64_t gen;
  (void)cachet_router_due(rt, 1000, &gen);
  redisReply *r = test_reply(resp);
  int rc = cachet_router_apply(rt, gen, 0, r, 1000);
  freeReplyObject(r);
  return rc;
}

static int redirect(cachet_router *rt, const char *resp) {
  redisReply *r = test_reply(resp);
  int idx = cachet_router_redirect(rt, r, 0);
  freeReplyObject(r);
  return idx;
}

/* Slots 0-8191 on the seed (named "?" in the reply: the node asked),
 * 8192-16383 on another master, with a replica that the map ignores. */
#define TWO_MASTERS                                                            \
  "*2\r\n"                                                                     \
  "*3\r\n:0\r\n:8191\r\n*3\r\n$1\r\n?\r\n:7000\r\n$2\r\nid\r\n"                \
  "*4\r\n:8192\r\n:16383\r\n*3\r\n$8\r\n10.0.0.2\r\n:7001\r\n$2\r\nid\r\n"     \
  "*2\r\n$8\r\n10.0.0.9\r\n:7009\r\n"

static void test_slot_map(void **state) {
  (void)state;
  cachet_router *rt;
  assert_int_equal(cachet_router_create("10.0.0.1:7000", &rt), CACHET_OK);
  assert_int_equal(apply(rt, TWO_MASTERS), CACHET_OK);
  assert_string_equal(cachet_router_name(rt, cachet_router_route(rt, 0)),
                      "10.0.0.1:7000");
  assert_string_equal(cachet_router_name(rt, cachet_router_route(rt, 16383)),
                      "10.0.0.2:7001");
  int m[4];
  assert_int_equal(cachet_router_masters(rt, m, 4), 2);
  cachet_router_destroy(rt);
}

/* A malformed reply changes nothing, and says why. */
static void test_malformed_maps_are_refused(void **state) {
  (void)state;
  static const struct {
    const char *resp, *why;
  } bad[] = {
      {"+OK\r\n", "unexpected reply"},
      {"*1\r\n*2\r\n:0\r\n:1\r\n", "unexpected entry"},
      {"*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n", "bad slot range"},
      {"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", "bad slot range"},
      /* 2^32 + 7000: not port 7000 once cut to an int */
      {"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:4294974296\r\n", "bad port"},
      {"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n", "bad port"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cachet_router *rt;
    assert_int_equal(cachet_router_create("10.0.0.1:7000", &rt), CACHET_OK);
    assert_int_equal(apply(rt, TWO_MASTERS), CACHET_OK);
    if (apply(rt, bad[i].resp) != CACHET_EPROTO ||
        strstr(cachet_last_error(), bad[i].why) == NULL)
      fail_msg("reply %zu: \"%s\", want \"%s\"", i, cachet_last_error(),
               bad[i].why);
    /* the map of before still holds */
    assert_string_equal(cachet_router_name(rt, cachet_router_route(rt, 16383)),
                        "10.0.0.2:7001");
    cachet_router_destroy(rt);
  }
}

static void test_redirections(void **state) {
  (void)state;
  cachet_router *rt;
  assert_int_equal(cachet_router_create("10.0.0.1:7000", &rt), CACHET_OK);
  assert_int_equal(apply(rt, TWO_MASTERS), CACHET_OK);
  redisReply *r = test_reply("-MOVED 42 10.0.0.3:7002\r\n");
  assert_int_equal(cachet_redirect_kind(r), CACHET_R_MOVED);
  freeReplyObject(r);
  /* MOVED fixes the slot at once; ASK only names where to ask. */
  int idx = redirect(rt, "-MOVED 42 10.0.0.3:7002\r\n");
  assert_string_equal(cachet_router_name(rt, idx), "10.0.0.3:7002");
  assert_int_equal(cachet_router_route(rt, 42), idx);
  idx = redirect(rt, "-ASK 43 10.0.0.4:7003\r\n");
  assert_string_equal(cachet_router_name(rt, idx), "10.0.0.4:7003");
  assert_int_not_equal(cachet_router_route(rt, 43), idx);
  /* An empty host is the node that answered. */
  idx = redirect(rt, "-MOVED 44 :7000\r\n");
  assert_string_equal(cachet_router_name(rt, idx), "10.0.0.1:7000");
  static const char *const bad[] = {"-MOVED 42\r\n",     "-MOVED 16384 h:1\r\n",
                                    "-MOVED 1 h\r\n",    "-MOVED 1 h:70000\r\n",
                                    "-MOVED 1 h:-1\r\n", "-MOVED 1 h:0\r\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (redirect(rt, bad[i]) != -1)
      fail_msg("%s was followed", bad[i]);
    assert_true(cachet_last_error()[0] != '\0');
  }
  r = test_reply("-ERR MOVED elsewhere\r\n");
  assert_int_equal(cachet_redirect_kind(r), CACHET_R_NONE);
  freeReplyObject(r);
  cachet_router_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_slot_map),
      cmocka_unit_test(test_malformed_maps_are_refused),
      cmocka_unit_test(test_redirections),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
