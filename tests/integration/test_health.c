/* The health probe against a private redis-server: version, scripts in the
 * script cache (and their reload after SCRIPT FLUSH), the eviction policy
 * warning, the INFO fallback when CONFIG is refused, and an unreachable
 * server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cachet_scripts.h"
#include "harness.h"
#include "health.h"

/* How many embedded scripts the server has, asked directly. */
static int raw_scripts_cached(void) {
  int n = 0;
  redisContext *r = test_redis(test_group_server());
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++) {
    redisReply *rep =
        redisCommand(r, "SCRIPT EXISTS %s", cachet_scripts[i].sha);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    n += (int)rep->element[0]->integer;
    freeReplyObject(rep);
  }
  redisFree(r);
  return n;
}

static void test_fresh_server_is_healthy_with_version_and_policy(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "h1:");
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.healthy, 1);
  assert_true(h.ping_ms >= 0.0);
  assert_true(h.server_version[0] >= '1' && h.server_version[0] <= '9');
  assert_non_null(strchr(h.server_version, '.'));
  assert_string_equal(h.maxmemory_policy, "noeviction");
  assert_int_equal(h.policy_warning, 0);
  assert_int_equal(h.scripts_total, CACHET_SCRIPT_COUNT);
  assert_int_equal(h.scripts_loaded, raw_scripts_cached());
  cachet_close(c);
}

/* A pooled connection the server closed while idle (CLIENT KILL here; a
 * proxy or Redis's `timeout` in production) must not make a live server
 * look down: the probe retries once over a fresh connection. */
static void test_probe_after_idle_connection_was_closed_is_healthy(
    void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "h6:");
  assert_int_equal(cachet_ping(c), CACHET_OK);
  test_command(test_group_server(), "CLIENT KILL TYPE normal SKIPME yes");
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.healthy, 1);
  assert_null(strstr(h.message, "connection"));
  cachet_close(c);
}

static void test_scripts_present_after_use_missing_after_flush(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "h2:");
  test_command(test_group_server(), "SCRIPT FLUSH");
  /* Use the lock scripts and set_tags: exactly those four are cached. */
  cachet_lock *lk = NULL;
  assert_int_equal(cachet_lock_acquire(c, "L", 5000, 0, &lk), CACHET_OK);
  assert_int_equal(cachet_lock_extend(c, lk, 5000), CACHET_OK);
  assert_int_equal(cachet_lock_release(c, lk), CACHET_OK);
  cachet_lock_free(lk);
  const char *t[] = {"t"}; /* tagged: set_tags (untagged is a plain SET) */
  assert_int_equal(cachet_set_tags(c, "k", 1, "v", 1, 0, t, 1), CACHET_OK);
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.scripts_loaded, 4);
  assert_int_equal(raw_scripts_cached(), 4);

  /* Every script loaded (as the registry does): all present, no message. */
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++)
    test_command(test_group_server(), "SCRIPT LOAD %b", cachet_scripts[i].body,
                 cachet_scripts[i].len);
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.scripts_loaded, h.scripts_total);
  assert_string_equal(h.message, "");
  assert_int_equal(h.healthy, 1);

  /* After SCRIPT FLUSH: reported missing, which alone is not unhealthy. */
  test_command(test_group_server(), "SCRIPT FLUSH");
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.scripts_loaded, 0);
  assert_int_equal(h.healthy, 1);
  assert_non_null(strstr(h.message, "script cache"));

  /* The next operation reloads what it needs. */
  cachet_metrics before, after;
  cachet_metrics_snapshot(c, &before);
  assert_int_equal(cachet_set(c, "k", 1, "w", 1, 0), CACHET_OK);
  cachet_metrics_snapshot(c, &after);
  assert_int_equal(after.script_reloads, before.script_reloads + 1);
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.scripts_loaded, 1);
  cachet_close(c);
}

static void test_evicting_policies_warn_and_are_unhealthy(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "h3:");
  test_command(test_group_server(), "CONFIG SET maxmemory-policy allkeys-lru");
  cachet_health h;
  int rc = cachet_health_check(c, &h);
  test_command(test_group_server(), "CONFIG SET maxmemory-policy noeviction");
  assert_int_equal(rc, CACHET_OK);
  assert_string_equal(h.maxmemory_policy, "allkeys-lru");
  assert_int_equal(h.policy_warning, 1);
  assert_int_equal(h.healthy, 0);
  assert_non_null(strstr(h.message, "allkeys-lru"));

  test_command(test_group_server(), "CONFIG SET maxmemory-policy volatile-lru");
  rc = cachet_health_check(c, &h);
  test_command(test_group_server(), "CONFIG SET maxmemory-policy noeviction");
  assert_int_equal(rc, CACHET_OK);
  assert_string_equal(h.maxmemory_policy, "volatile-lru");
  /* volatile-* may evict any key with a TTL, and every lock has one. */
  assert_int_equal(h.policy_warning, 1);
  assert_non_null(strstr(h.message, "locks"));

  test_command(test_group_server(), "CONFIG SET maxmemory-policy noeviction");
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_int_equal(h.policy_warning, 0);
  cachet_close(c);
}

static void test_policy_falls_back_to_info_when_config_refused(void **state) {
  (void)state;
  test_command(test_group_server(),
               "ACL SETUSER noconfig on >pw ~* &* +@all -config");
  test_command(test_group_server(),
               "CONFIG SET maxmemory-policy allkeys-random");
  cachet_options o;
  test_options(test_group_server(), &o, "h4:");
  o.username = "noconfig";
  o.password = "pw";
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  cachet_health h;
  int rc = cachet_health_check(c, &h);
  test_command(test_group_server(), "CONFIG SET maxmemory-policy noeviction");
  assert_int_equal(rc, CACHET_OK);
  assert_string_equal(h.maxmemory_policy, "allkeys-random");
  assert_int_equal(h.policy_warning, 1);
  cachet_close(c);
}

static void test_unreachable_server_is_an_error(void **state) {
  (void)state;
  cachet *c = test_open_unreachable();
  cachet_health h;
  memset(&h, 0x5a, sizeof h);
  assert_int_equal(cachet_health_check(c, &h), CACHET_ECONN);
  assert_int_equal(h.healthy, 0);
  assert_int_equal(h.server_version[0], '\0');
  cachet_close(c);
}

static void test_server_refusing_the_probe_is_an_error(void **state) {
  (void)state;
  test_command(test_group_server(),
               "ACL SETUSER noscript on >pw ~* &* +@all -script");
  cachet_options o;
  test_options(test_group_server(), &o, "h5:");
  o.username = "noscript";
  o.password = "pw";
  cachet *c = NULL;
  assert_int_equal(cachet_open(&c, &o), CACHET_OK);
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "NOPERM"));
  cachet_close(c);
}

/* The verdict on what the probe found: a server too old for cachet's
 * scripts is unhealthy and says why; versions compare as numbers. */
static void test_verdict_on_server_version(void **state) {
  (void)state;
  assert_int_equal(cachet_version_num("7.0.15"), 70015);
  assert_int_equal(cachet_version_num("6.2"), 60200);
  assert_true(cachet_version_num("10.0.0") > cachet_version_num("7.0.15"));
  assert_int_equal(cachet_version_num(""), 0);
  assert_int_equal(cachet_version_num("unknown"), 0);

  cachet_health h;
  memset(&h, 0, sizeof h);
  snprintf(h.maxmemory_policy, sizeof h.maxmemory_policy, "noeviction");
  h.scripts_loaded = CACHET_SCRIPT_COUNT;
  snprintf(h.server_version, sizeof h.server_version, "6.0.16");
  cachet_health_verdict(&h, NULL, 0);
  assert_false(h.healthy);
  assert_non_null(strstr(h.message, "Redis 6.0.16 is older than 6.2"));
  snprintf(h.server_version, sizeof h.server_version, "6.2.0");
  cachet_health_verdict(&h, NULL, 0);
  assert_true(h.healthy);
  assert_string_equal(h.message, "");
  /* Several reasons are all given, the unreachable masters first. */
  snprintf(h.server_version, sizeof h.server_version, "5.0.7");
  snprintf(h.maxmemory_policy, sizeof h.maxmemory_policy, "allkeys-lru");
  cachet_health_verdict(&h, "1 of 3 masters did not answer", 0);
  assert_false(h.healthy);
  assert_non_null(strstr(h.message, "1 of 3 masters did not answer; Redis "
                                    "5.0.7 is older than 6.2"));
  assert_non_null(strstr(h.message, "; maxmemory-policy allkeys-lru"));
}

/* Degraded is healthy with writes failing or about to: memory at 90% of
 * maxmemory, or OOM refusals since the previous probe. */
static void test_verdict_on_memory(void **state) {
  (void)state;
  cachet_health h;
  memset(&h, 0, sizeof h);
  snprintf(h.maxmemory_policy, sizeof h.maxmemory_policy, "noeviction");
  snprintf(h.server_version, sizeof h.server_version, "7.0.15");
  h.scripts_loaded = CACHET_SCRIPT_COUNT;
  h.used_memory = 899;
  h.maxmemory = 1000;
  cachet_health_verdict(&h, NULL, 0);
  assert_true(h.healthy);
  assert_false(h.degraded);
  h.used_memory = 900;
  cachet_health_verdict(&h, NULL, 0);
  assert_true(h.healthy);
  assert_true(h.degraded);
  assert_non_null(strstr(h.message, "memory at 90% of maxmemory (900 of 1000 "
                                    "bytes): writes will fail with OOM"));
  h.maxmemory = 0; /* no limit: never tight */
  h.used_memory = 1u << 30;
  cachet_health_verdict(&h, NULL, 0);
  assert_false(h.degraded);
  cachet_health_verdict(&h, NULL, 3);
  assert_true(h.degraded);
  assert_non_null(strstr(h.message, "commands refused for memory (OOM) "
                                    "since the last probe: 3"));
  /* Unhealthy outranks degraded. */
  cachet_health_verdict(&h, "1 of 3 masters did not answer", 3);
  assert_false(h.healthy);
  assert_false(h.degraded);
}

/* Every write fails with OOM: the probe says degraded, with how full the
 * memory is and, on the next probe through the handle, the refusals. */
static void test_server_out_of_memory_is_degraded(void **state) {
  (void)state;
  cachet *c = test_open(test_group_server(), "h7:");
  cachet_health h;
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_false(h.degraded);
  assert_int_equal(h.maxmemory, 0);
  assert_true(h.used_memory > 0);
  test_command(test_group_server(), "CONFIG SET maxmemory 1");
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_ESERVER);
  assert_non_null(strstr(cachet_last_error(), "OOM"));
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_true(h.healthy);
  assert_true(h.degraded);
  assert_int_equal(h.maxmemory, 1);
  assert_true(h.oom_rejections >= 1);
  assert_non_null(strstr(h.message, "writes will fail with OOM"));
  assert_int_equal(cachet_set(c, "k", 1, "v", 1, 0), CACHET_ESERVER);
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_non_null(strstr(h.message, "since the last probe: 1"));
  test_command(test_group_server(), "CONFIG SET maxmemory 0");
  assert_int_equal(cachet_health_check(c, &h), CACHET_OK);
  assert_true(h.healthy);
  assert_false(h.degraded);
  cachet_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_verdict_on_server_version),
      cmocka_unit_test(test_verdict_on_memory),
      cmocka_unit_test(test_server_out_of_memory_is_degraded),
      cmocka_unit_test(test_fresh_server_is_healthy_with_version_and_policy),
      cmocka_unit_test(test_scripts_present_after_use_missing_after_flush),
      cmocka_unit_test(test_probe_after_idle_connection_was_closed_is_healthy),
      cmocka_unit_test(test_evicting_policies_warn_and_are_unhealthy),
      cmocka_unit_test(test_policy_falls_back_to_info_when_config_refused),
      cmocka_unit_test(test_unreachable_server_is_an_error),
      cmocka_unit_test(test_server_refusing_the_probe_is_an_error),
  };
  return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
