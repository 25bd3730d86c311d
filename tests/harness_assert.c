/* Test helpers that fail the running cmocka test: the group fixture and
 * raw Redis checks shared by the integration tests. Kept apart from
 * harness.c, which bench/ compiles without cmocka. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "harness.h"

/* One group runs per test binary, so one server serves them all. */
static test_server group;

test_server *test_group_server(void) { return &group; }

int test_group_setup(void **state) {
  (void)state;
  return test_server_start(&group, NULL);
}

int test_group_teardown(void **state) {
  (void)state;
  test_server_stop(&group);
  return 0;
}

void test_command(const test_server *s, const char *fmt, ...) {
  redisContext *r = test_redis(s);
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
  freeReplyObject(rep);
  redisFree(r);
}

long long test_vint(redisContext *r, const char *fmt, va_list ap) {
  redisReply *rep = redisvCommand(r, fmt, ap);
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  long long v = rep->integer;
  freeReplyObject(rep);
  return v;
}

long long test_int(redisContext *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  long long v = test_vint(r, fmt, ap);
  va_end(ap);
  return v;
}

void test_expect_string(redisContext *r, const char *want, const char *fmt,
                        ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_STRING);
  assert_string_equal(rep->str, want);
  freeReplyObject(rep);
}

int test_hit(cachet *c, const char *key, const char *want) {
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, key, strlen(key), &v, &n);
  if (rc == CACHET_MISS)
    return 0;
  assert_int_equal(rc, CACHET_OK);
  if (want != NULL) {
    assert_int_equal(n, strlen(want));
    assert_memory_equal(v, want, n);
  }
  cachet_free(v);
  return 1;
}

cachet *test_open_unreachable(void) {
  cachet_options o;
  cachet_options_init(&o);
  o.host = "127.0.0.1";
  o.port = test_free_port();
  o.timeout_ms = 1000;
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  return c;
}

void test_expect_child_ok(pid_t pid) {
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFSIGNALED(status))
    fail_msg("child killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

redisReply *test_reply(const char *resp) {
  redisReader *rd = redisReaderCreate();
  void *out = NULL;
  assert_non_null(rd);
  assert_int_equal(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
  assert_int_equal(redisReaderGetReply(rd, &out), REDIS_OK);
  assert_non_null(out);
  redisReaderFree(rd);
  return out;
}

long long test_cmdstat(redisContext *r, const char *cmd, const char *field) {
  redisReply *rep = redisCommand(r, "INFO commandstats");
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_STRING);
  char line[64], f[32];
  snprintf(line, sizeof line, "\ncmdstat_%s:", cmd);
  snprintf(f, sizeof f, "%s=", field);
  long long n = 0;
  const char *p = strstr(rep->str, line);
  if (p != NULL) {
    const char *eol = strchr(p + 1, '\n');
    /* "calls=" is also the tail of "failed_calls=": match it whole. */
    for (const char *q = strstr(p, f); q != NULL && (eol == NULL || q < eol);
         q = strstr(q + 1, f)) {
      if (q[-1] == ':' || q[-1] == ',') {
        n = atoll(q + strlen(f));
        break;
      }
    }
  }
  freeReplyObject(rep);
  return n;
}

void test_scan_keys(redisContext *r, const char *pattern, test_key_fn fn,
                    void *ud) {
  char cursor[32] = "0";
  do {
    redisReply *rep =
        redisCommand(r, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
    for (size_t i = 0; i < rep->element[1]->elements; i++)
      fn(ud, rep->element[1]->element[i]->str,
         rep->element[1]->element[i]->len);
    freeReplyObject(rep);
  } while (strcmp(cursor, "0") != 0);
}

long long test_scripts_run(redisContext *r) {
  return test_cmdstat(r, "evalsha", "calls") -
         test_cmdstat(r, "evalsha", "failed_calls");
}
