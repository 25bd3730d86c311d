/* Configuration: defaults, environment, precedence, URLs, validation and
 * secrets in messages. The environment is a fake table, never the process's
 * own, so tests can run in parallel and under any CI environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachet.h"
#include "config.h"
#include "error.h"

/* ---- fake environment --------------------------------------------------- */

#define FAKE_MAX 24

typedef struct fake_env {
  const char *name[FAKE_MAX];
  const char *value[FAKE_MAX];
  int n;
} fake_env;

static const char *fake_getenv(void *ud, const char *name) {
  const fake_env *e = ud;
  for (int i = 0; i < e->n; i++) {
    if (strcmp(e->name[i], name) == 0)
      return e->value[i];
  }
  return NULL;
}

static void env_set(fake_env *e, const char *name, const char *value) {
  for (int i = 0; i < e->n; i++) {
    if (strcmp(e->name[i], name) == 0) {
      e->value[i] = value;
      return;
    }
  }
  assert_true(e->n < FAKE_MAX);
  e->name[e->n] = name;
  e->value[e->n] = value;
  e->n++;
}

/* ---- helpers ------------------------------------------------------------ */

static void assert_zeroed(const cachet_config *c) {
  cachet_config zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(c, &zero, sizeof zero);
}

static void assert_error_has(const char *needle) {
  const char *err = cachet_last_error();
  if (strstr(err, needle) == NULL)
    fail_msg("error detail \"%s\" lacks \"%s\"", err, needle);
}

static void assert_error_lacks(const char *needle) {
  const char *err = cachet_last_error();
  if (strstr(err, needle) != NULL)
    fail_msg("error detail \"%s\" contains \"%s\"", err, needle);
}

/* Resolve with use_env on and the fake table; expect `status`, a zeroed
 * output, and a detail containing both substrings (b may be NULL). */
static void expect_env_fail(fake_env *e, int status, const char *a,
                            const char *b) {
  cachet_options o;
  cachet_config c;
  cachet_options_init(&o);
  o.use_env = 1;
  memset(&c, 0xa5, sizeof c);
  cachet_error_clear();
  assert_int_equal(cachet_config_resolve(&c, &o, fake_getenv, e), status);
  assert_zeroed(&c);
  assert_error_has(a);
  if (b != NULL)
    assert_error_has(b);
}

static void expect_var_fail(const char *name, const char *value,
                            const char *b) {
  fake_env e = {0};
  char quoted[128];
  env_set(&e, name, value);
  snprintf(quoted, sizeof quoted, "%s: \"%s\"", name, value);
  expect_env_fail(&e, CACHET_ECONFIG, quoted, b);
}

static void expect_opts_fail(const cachet_options *o, int status, const char *a,
                             const char *b) {
  cachet_config c;
  memset(&c, 0xa5, sizeof c);
  cachet_error_clear();
  assert_int_equal(cachet_config_resolve(&c, o, fake_getenv, &(fake_env){0}),
                   status);
  assert_zeroed(&c);
  assert_error_has(a);
  if (b != NULL)
    assert_error_has(b);
}

static cachet_config resolve_ok(const cachet_options *o, fake_env *e) {
  cachet_config c;
  int rc = cachet_config_resolve(&c, o, fake_getenv, e);
  if (rc != CACHET_OK)
    fail_msg("resolve: %s: %s", cachet_status_name(rc), cachet_last_error());
  return c;
}

static cachet_config resolve_env_ok(fake_env *e) {
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  return resolve_ok(&o, e);
}

static cachet_config url_ok(const char *url) {
  cachet_config c = {0};
  int rc = cachet_config_parse_url(&c, url, "url");
  if (rc != CACHET_OK)
    fail_msg("parse %s: %s: %s", url, cachet_status_name(rc),
             cachet_last_error());
  return c;
}

static void expect_url_fail(const char *url, int status, const char *a) {
  cachet_config c = {0};
  cachet_error_clear();
  assert_int_equal(cachet_config_parse_url(&c, url, "CACHET_URL"), status);
  assert_null(c.host);
  assert_null(c.password);
  assert_error_has("CACHET_URL: ");
  assert_error_has(a);
}

/* ---- options and defaults ----------------------------------------------- */

static void test_options_init_marks_every_field_unset(void **state) {
  (void)state;
  cachet_options o;
  memset(&o, 0x5a, sizeof o);
  cachet_options_init(&o);
  assert_null(o.url);
  assert_null(o.host);
  assert_int_equal(o.port, -1);
  assert_null(o.unix_path);
  assert_int_equal(o.db, -1);
  assert_null(o.username);
  assert_null(o.password);
  assert_null(o.prefix);
  assert_int_equal(o.timeout_ms, -1);
  assert_int_equal(o.pool_size, 0);
  assert_int_equal(o.use_env, 0);
  assert_null(o.keys);
  assert_null(o.keys_file);
  assert_int_equal(o.encrypt, -1);
  assert_int_equal(o.accept_unsealed, -1);
  assert_int_equal(o.max_value_size, 0);
  assert_int_equal(o.max_key_size, 0);
  assert_int_equal(o.max_tags, 0);
  assert_int_equal(o.lock_lease_ms, 0);
  assert_int_equal(o.fetch_wait_ms, 0);
  assert_null(o.progress);
  assert_null(o.progress_ud);
  assert_null(o.log);
  assert_null(o.log_ud);
}

static void assert_defaults(const cachet_config *c) {
  assert_string_equal(c->host, "localhost");
  assert_int_equal(c->port, 6379);
  assert_null(c->unix_path);
  assert_int_equal(c->db, 0);
  assert_null(c->username);
  assert_null(c->password);
  assert_string_equal(c->prefix, "cachet:");
  assert_int_equal(c->prefixlen, 7);
  assert_int_equal(c->timeout_ms, 5000);
  assert_int_equal(c->pool_size, 8);
  assert_null(c->keys);
  assert_int_equal(c->encrypt, 0);
  assert_int_equal(c->accept_unsealed, 0);
  assert_int_equal(c->max_value_size, 64u * 1024 * 1024);
  assert_int_equal(c->max_key_size, 64u * 1024);
  assert_int_equal(c->max_tags, 32);
  assert_int_equal(c->lock_lease_ms, 3000);
  assert_int_equal(c->fetch_wait_ms, 30000);
}

static void test_resolve_unset_options_give_defaults(void **state) {
  (void)state;
  fake_env e = {0};
  cachet_config c = resolve_env_ok(&e);
  assert_defaults(&c);
  cachet_config_free(&c);
}

static void test_resolve_ignores_env_without_use_env(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_PORT", "abc");
  env_set(&e, "CACHET_HOST", "elsewhere");
  env_set(&e, "CACHET_URL", "redis://x:1");
  env_set(&e, "CACHET_KEY_PREFIX", "p:");
  env_set(&e, "CACHET_USE_TLS", "yes");
  cachet_options o;
  cachet_options_init(&o);
  cachet_config c = resolve_ok(&o, &e);
  assert_defaults(&c);
  cachet_config_free(&c);
}

static void test_resolve_reads_every_variable(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_HOST", "redis.internal");
  env_set(&e, "CACHET_PORT", "6380");
  env_set(&e, "CACHET_DB", "3");
  env_set(&e, "CACHET_USERNAME", "app");
  env_set(&e, "CACHET_PASSWORD", "s3cret");
  env_set(&e, "CACHET_USE_TLS", "off");
  env_set(&e, "CACHET_KEY_PREFIX", "svc:");
  env_set(&e, "CACHET_TIMEOUT_MS", "250");
  env_set(&e, "CACHET_POOL_SIZE", "16");
  env_set(&e, "CACHET_KEYS", "1:AAAA");
  env_set(&e, "CACHET_ENCRYPT", "true");
  env_set(&e, "CACHET_ACCEPT_UNSEALED", "yes");
  env_set(&e, "CACHET_MAX_VALUE_SIZE", "1048576");
  env_set(&e, "CACHET_MAX_KEY_SIZE", "512");
  env_set(&e, "CACHET_MAX_TAGS", "4");
  env_set(&e, "CACHET_LOCK_LEASE_MS", "100");
  env_set(&e, "CACHET_FETCH_WAIT_MS", "1000");
  cachet_config c = resolve_env_ok(&e);
  assert_string_equal(c.host, "redis.internal");
  assert_int_equal(c.port, 6380);
  assert_null(c.unix_path);
  assert_int_equal(c.db, 3);
  assert_string_equal(c.username, "app");
  assert_string_equal(c.password, "s3cret");
  assert_string_equal(c.prefix, "svc:");
  assert_int_equal(c.prefixlen, 4);
  assert_int_equal(c.timeout_ms, 250);
  assert_int_equal(c.pool_size, 16);
  assert_string_equal(c.keys, "1:AAAA");
  assert_int_equal(c.encrypt, 1);
  assert_int_equal(c.accept_unsealed, 1);
  assert_int_equal(c.max_value_size, 1048576);
  assert_int_equal(c.max_key_size, 512);
  assert_int_equal(c.max_tags, 4);
  assert_int_equal(c.lock_lease_ms, 100);
  assert_int_equal(c.fetch_wait_ms, 1000);
  cachet_config_free(&c);
}

static void test_resolve_explicit_fields_beat_env(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_HOST", "envhost");
  env_set(&e, "CACHET_PORT", "not-a-port"); /* never read: port is set */
  env_set(&e, "CACHET_DB", "5");
  env_set(&e, "CACHET_USERNAME", "envuser");
  env_set(&e, "CACHET_PASSWORD", "envpass");
  env_set(&e, "CACHET_KEY_PREFIX", "env:");
  env_set(&e, "CACHET_TIMEOUT_MS", "0");
  env_set(&e, "CACHET_POOL_SIZE", "3");
  env_set(&e, "CACHET_KEYS", "9:ENV");
  env_set(&e, "CACHET_ENCRYPT", "1");
  env_set(&e, "CACHET_ACCEPT_UNSEALED", "1");
  env_set(&e, "CACHET_MAX_VALUE_SIZE", "7");
  env_set(&e, "CACHET_MAX_KEY_SIZE", "7");
  env_set(&e, "CACHET_MAX_TAGS", "7");
  env_set(&e, "CACHET_LOCK_LEASE_MS", "7000");
  env_set(&e, "CACHET_FETCH_WAIT_MS", "7000");
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  o.host = "opthost";
  o.port = 7000;
  o.db = 0;
  o.username = "optuser";
  o.password = "optpass";
  o.prefix = "";
  o.timeout_ms = 10;
  o.pool_size = 1;
  o.keys = "1:OPT";
  o.encrypt = 0;
  o.accept_unsealed = 0;
  o.max_value_size = 100;
  o.max_key_size = 10;
  o.max_tags = 1;
  o.lock_lease_ms = 200;
  o.fetch_wait_ms = 300;
  cachet_config c = resolve_ok(&o, &e);
  assert_string_equal(c.host, "opthost");
  assert_int_equal(c.port, 7000);
  assert_int_equal(c.db, 0);
  assert_string_equal(c.username, "optuser");
  assert_string_equal(c.password, "optpass");
  assert_string_equal(c.prefix, "");
  assert_int_equal(c.prefixlen, 0);
  assert_int_equal(c.timeout_ms, 10);
  assert_int_equal(c.pool_size, 1);
  assert_string_equal(c.keys, "1:OPT");
  assert_int_equal(c.encrypt, 0);
  assert_int_equal(c.accept_unsealed, 0);
  assert_int_equal(c.max_value_size, 100);
  assert_int_equal(c.max_key_size, 10);
  assert_int_equal(c.max_tags, 1);
  assert_int_equal(c.lock_lease_ms, 200);
  assert_int_equal(c.fetch_wait_ms, 300);
  cachet_config_free(&c);
}

static void test_resolve_env_fills_only_unset_fields(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_HOST", "envhost");
  env_set(&e, "CACHET_PORT", "6390");
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  o.port = 7001;
  cachet_config c = resolve_ok(&o, &e);
  assert_string_equal(c.host, "envhost");
  assert_int_equal(c.port, 7001);
  assert_int_equal(c.timeout_ms, 5000);
  cachet_config_free(&c);
}

static void
test_resolve_explicit_url_ignores_cachet_url_and_split_vars(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "redis://envurl:1111/1");
  env_set(&e, "CACHET_HOST", "envhost");
  env_set(&e, "CACHET_PORT", "2222");
  env_set(&e, "CACHET_DB", "2");
  env_set(&e, "CACHET_USERNAME", "envuser");
  env_set(&e, "CACHET_PASSWORD", "envpass");
  env_set(&e, "CACHET_KEY_PREFIX", "env:"); /* not a connection variable */
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  o.url = "redis://opturl";
  cachet_config c = resolve_ok(&o, &e);
  assert_string_equal(c.host, "opturl");
  assert_int_equal(c.port, 6379);
  assert_int_equal(c.db, 0);
  assert_null(c.username);
  assert_null(c.password);
  assert_string_equal(c.prefix, "env:");
  cachet_config_free(&c);
}

static void test_resolve_cachet_url_ignores_split_vars(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "redis://u:p@envurl:1111/1");
  env_set(&e, "CACHET_HOST", "envhost");
  env_set(&e, "CACHET_PORT", "junk");
  env_set(&e, "CACHET_DB", "junk");
  env_set(&e, "CACHET_USERNAME", "envuser");
  env_set(&e, "CACHET_PASSWORD", "envpass");
  cachet_config c = resolve_env_ok(&e);
  assert_string_equal(c.host, "envurl");
  assert_int_equal(c.port, 1111);
  assert_int_equal(c.db, 1);
  assert_string_equal(c.username, "u");
  assert_string_equal(c.password, "p");
  cachet_config_free(&c);

  /* Without a user in the URL, CACHET_PASSWORD still stays out of it. */
  env_set(&e, "CACHET_URL", "redis://envurl");
  c = resolve_env_ok(&e);
  assert_null(c.username);
  assert_null(c.password);
  assert_int_equal(c.port, 6379);
  assert_int_equal(c.db, 0);
  cachet_config_free(&c);
}

static void test_resolve_explicit_fields_override_url(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "redis://u:p@envurl:1111/1");
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  o.port = 2222;
  o.db = 4;
  o.password = "explicit";
  cachet_config c = resolve_ok(&o, &e);
  assert_string_equal(c.host, "envurl");
  assert_int_equal(c.port, 2222);
  assert_int_equal(c.db, 4);
  assert_string_equal(c.username, "u");
  assert_string_equal(c.password, "explicit");
  cachet_config_free(&c);

  /* An explicit empty password removes the URL's; the URL's user alone is
   * then refused (AUTH needs both), and an explicit empty user removes it. */
  o.password = "";
  cachet_config bad;
  assert_int_equal(cachet_config_resolve(&bad, &o, fake_getenv, &e),
                   CACHET_ECONFIG);
  assert_error_has("password");
  o.username = "";
  c = resolve_ok(&o, &e);
  assert_null(c.password);
  assert_null(c.username);
  cachet_config_free(&c);
}

static void test_resolve_explicit_host_drops_unix_url_socket(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  o.url = "unix:///run/redis.sock?db=2";
  cachet_config c = resolve_ok(&o, &(fake_env){0});
  assert_string_equal(c.unix_path, "/run/redis.sock");
  assert_int_equal(c.db, 2);
  cachet_config_free(&c);

  o.host = "tcp.example";
  c = resolve_ok(&o, &(fake_env){0});
  assert_null(c.unix_path);
  assert_string_equal(c.host, "tcp.example");
  assert_int_equal(c.db, 2);
  cachet_config_free(&c);

  o.unix_path = "/tmp/other.sock";
  c = resolve_ok(&o, &(fake_env){0});
  assert_string_equal(c.unix_path, "/tmp/other.sock");
  cachet_config_free(&c);
}

static void test_resolve_explicit_unix_path_is_kept(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  o.unix_path = "/var/run/redis/redis.sock";
  cachet_config c = resolve_ok(&o, &(fake_env){0});
  assert_string_equal(c.unix_path, "/var/run/redis/redis.sock");
  assert_string_equal(c.host, "localhost");
  cachet_config_free(&c);
}

static void test_resolve_empty_variable_counts_as_unset(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "");
  env_set(&e, "CACHET_HOST", "");
  env_set(&e, "CACHET_PORT", "");
  env_set(&e, "CACHET_PASSWORD", "");
  env_set(&e, "CACHET_TIMEOUT_MS", "");
  env_set(&e, "CACHET_USE_TLS", "");
  env_set(&e, "CACHET_KEYS", "");
  env_set(&e, "CACHET_KEYS_FILE", "");
  cachet_config c = resolve_env_ok(&e);
  assert_defaults(&c);
  cachet_config_free(&c);
}

static void
test_resolve_empty_prefix_variable_gives_empty_prefix(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_KEY_PREFIX", "");
  cachet_config c = resolve_env_ok(&e);
  assert_string_equal(c.prefix, "");
  assert_int_equal(c.prefixlen, 0);
  cachet_config_free(&c);
}

static void test_resolve_prefix_of_256_bytes_is_accepted(void **state) {
  (void)state;
  char p[257];
  memset(p, 'a', 256);
  p[256] = '\0';
  cachet_options o;
  cachet_options_init(&o);
  o.prefix = p;
  cachet_config c = resolve_ok(&o, &(fake_env){0});
  assert_int_equal(c.prefixlen, 256);
  cachet_config_free(&c);
}

static void test_resolve_bools_accept_every_spelling(void **state) {
  (void)state;
  static const char *const yes[] = {"1", "true", "TRUE", "Yes", "on", "ON"};
  static const char *const no[] = {"0", "false", "False", "NO", "off", "oFf"};
  for (size_t i = 0; i < 6; i++) {
    fake_env e = {0};
    env_set(&e, "CACHET_ENCRYPT", yes[i]);
    env_set(&e, "CACHET_ACCEPT_UNSEALED", no[i]);
    env_set(&e, "CACHET_USE_TLS", no[i]);
    cachet_config c = resolve_env_ok(&e);
    assert_int_equal(c.encrypt, 1);
    assert_int_equal(c.accept_unsealed, 0);
    cachet_config_free(&c);
  }
}

static void test_resolve_numbers_accept_bounds_and_leading_zeros(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_PORT", "65535");
  env_set(&e, "CACHET_DB", "2147483647");
  env_set(&e, "CACHET_TIMEOUT_MS", "86400000");
  env_set(&e, "CACHET_POOL_SIZE", "1024");
  env_set(&e, "CACHET_FETCH_WAIT_MS", "1");
  env_set(&e, "CACHET_MAX_TAGS", "007");
  cachet_config c = resolve_env_ok(&e);
  assert_int_equal(c.port, 65535);
  assert_int_equal(c.db, 2147483647);
  assert_int_equal(c.timeout_ms, 86400000);
  assert_int_equal(c.pool_size, 1024);
  assert_int_equal(c.fetch_wait_ms, 1);
  assert_int_equal(c.max_tags, 7);
  cachet_config_free(&c);
}

/* ---- URLs --------------------------------------------------------------- */

static void test_url_host_only_gets_defaults(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://cache.example");
  assert_string_equal(c.host, "cache.example");
  assert_int_equal(c.port, 6379);
  assert_int_equal(c.db, 0);
  assert_null(c.unix_path);
  assert_null(c.username);
  assert_null(c.password);
  cachet_config_free(&c);
}

static void test_url_user_password_port_db(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://alice:wonder@10.0.0.1:6380/7");
  assert_string_equal(c.host, "10.0.0.1");
  assert_int_equal(c.port, 6380);
  assert_int_equal(c.db, 7);
  assert_string_equal(c.username, "alice");
  assert_string_equal(c.password, "wonder");
  cachet_config_free(&c);
}

static void test_url_password_only(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://:hunter2@host");
  assert_null(c.username);
  assert_string_equal(c.password, "hunter2");
  assert_string_equal(c.host, "host");
  cachet_config_free(&c);
}

static void test_url_user_only_and_empty_password(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://bob@host");
  assert_string_equal(c.username, "bob");
  assert_null(c.password);
  cachet_config_free(&c);
  c = url_ok("redis://bob:@host");
  assert_string_equal(c.username, "bob");
  assert_null(c.password);
  cachet_config_free(&c);
}

static void test_username_without_password_is_refused(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "redis://bob@host");
  expect_env_fail(&e, CACHET_ECONFIG, "username", "password");
  fake_env e2 = {0};
  env_set(&e2, "CACHET_USERNAME", "bob");
  expect_env_fail(&e2, CACHET_ECONFIG, "username", "AUTH");
  fake_env e3 = {0};
  env_set(&e3, "CACHET_USERNAME", "bob");
  env_set(&e3, "CACHET_PASSWORD", "pw");
  cachet_config c = resolve_env_ok(&e3);
  assert_string_equal(c.username, "bob");
  cachet_config_free(&c);
}

static void test_url_ipv6_literal_with_and_without_port(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://[::1]:7000/2");
  assert_string_equal(c.host, "::1");
  assert_int_equal(c.port, 7000);
  assert_int_equal(c.db, 2);
  cachet_config_free(&c);
  c = url_ok("redis://:pw@[fe80::1%25eth0]");
  assert_string_equal(c.host, "fe80::1%25eth0");
  assert_int_equal(c.port, 6379);
  assert_string_equal(c.password, "pw");
  cachet_config_free(&c);
}

static void test_url_trailing_slash_and_query_db(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://h:1/");
  assert_int_equal(c.port, 1);
  assert_int_equal(c.db, 0);
  cachet_config_free(&c);
  c = url_ok("redis://h?db=12");
  assert_int_equal(c.db, 12);
  cachet_config_free(&c);
  c = url_ok("REDIS://h/3");
  assert_string_equal(c.host, "h");
  assert_int_equal(c.db, 3);
  cachet_config_free(&c);
}

static void test_url_unix_socket_with_and_without_db(void **state) {
  (void)state;
  cachet_config c = url_ok("unix:///var/run/redis.sock");
  assert_string_equal(c.unix_path, "/var/run/redis.sock");
  assert_string_equal(c.host, "localhost");
  assert_int_equal(c.db, 0);
  assert_null(c.password);
  cachet_config_free(&c);
  c = url_ok("unix:///run/redis@6379.sock?db=9");
  assert_string_equal(c.unix_path, "/run/redis@6379.sock");
  assert_int_equal(c.db, 9);
  cachet_config_free(&c);
}

/* A password-protected unix socket: the credentials go before the path, as
 * in redis://. The path itself may still hold '@'. */
static void test_url_unix_socket_with_credentials(void **state) {
  (void)state;
  cachet_config c = url_ok("unix://:s3cret@/run/redis.sock");
  assert_string_equal(c.unix_path, "/run/redis.sock");
  assert_null(c.username);
  assert_string_equal(c.password, "s3cret");
  cachet_config_free(&c);
  c = url_ok("unix://app:p%2Fa@ss@/run/r@1.sock?db=4");
  assert_string_equal(c.username, "app");
  assert_string_equal(c.password, "p/a@ss");
  assert_string_equal(c.unix_path, "/run/r@1.sock");
  assert_int_equal(c.db, 4);
  cachet_config_free(&c);
  expect_url_fail("unix://u:p@run/redis.sock", CACHET_ECONFIG,
                  "must be absolute");
  expect_url_fail("unix://u:p/x@/s", CACHET_ECONFIG, "must be absolute");
  expect_url_fail("unix://u:p%zz@/s", CACHET_ECONFIG, "percent-escape");
}

static void test_url_percent_escapes_in_user_and_password(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://us%65r%3a1:p%40ss%2Fw%3Ard%25@h");
  assert_string_equal(c.username, "user:1");
  assert_string_equal(c.password, "p@ss/w:rd%");
  cachet_config_free(&c);
}

static void test_url_unescaped_specials_stay_in_password(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://u:a@b/c?d:e@host:6000/1");
  assert_string_equal(c.username, "u");
  assert_string_equal(c.password, "a@b/c?d:e");
  assert_string_equal(c.host, "host");
  assert_int_equal(c.port, 6000);
  assert_int_equal(c.db, 1);
  cachet_config_free(&c);
}

static void test_url_parse_replaces_previous_fields(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://u:p@a:1/1");
  assert_int_equal(cachet_config_parse_url(&c, "unix:///s", "url"), CACHET_OK);
  assert_string_equal(c.unix_path, "/s");
  assert_string_equal(c.host, "localhost");
  assert_int_equal(c.port, 6379);
  assert_int_equal(c.db, 0);
  assert_null(c.username);
  assert_null(c.password);
  cachet_config_free(&c);
}

static void test_url_failure_leaves_fields_unchanged(void **state) {
  (void)state;
  cachet_config c = url_ok("redis://u:p@a:1/1");
  assert_int_equal(cachet_config_parse_url(&c, "redis://b:0", "url"),
                   CACHET_ECONFIG);
  assert_string_equal(c.host, "a");
  assert_int_equal(c.port, 1);
  assert_string_equal(c.password, "p");
  cachet_config_free(&c);
}

static void test_url_rediss_turns_tls_on(void **state) {
  (void)state;
  cachet_config c = url_ok("rediss://h:6380");
  assert_int_equal(c.tls, 1);
  assert_string_equal(c.host, "h");
  assert_int_equal(c.port, 6380);
  cachet_config_free(&c);
  c = url_ok("REDISS://:pw@h/3");
  assert_int_equal(c.tls, 1);
  assert_int_equal(c.db, 3);
  assert_string_equal(c.password, "pw");
  cachet_config_free(&c);
  c = url_ok("rediss+cluster://a:1,b:2");
  assert_int_equal(c.tls, 1);
  assert_int_equal(c.cluster, 1);
  assert_string_equal(c.cluster_seeds, "a:1,b:2");
  cachet_config_free(&c);
  c = url_ok("redis://h");
  assert_int_equal(c.tls, 0);
  cachet_config_free(&c);
  expect_url_fail("redisss://h", CACHET_ECONFIG, "unknown scheme");
}

static void test_url_unknown_scheme_is_named(void **state) {
  (void)state;
  expect_url_fail("http://h", CACHET_ECONFIG, "unknown scheme \"http\"");
  expect_url_fail("h:6379", CACHET_ECONFIG, "not a redis:// or unix:// URL");
  expect_url_fail("", CACHET_ECONFIG, "not a redis:// or unix:// URL");
}

static void test_url_malformed_forms_are_refused(void **state) {
  (void)state;
  expect_url_fail("redis://", CACHET_ECONFIG, "host is empty");
  expect_url_fail("redis://:6379", CACHET_ECONFIG, "host is empty");
  expect_url_fail("redis://u:p@", CACHET_ECONFIG, "host is empty");
  expect_url_fail("redis://[]", CACHET_ECONFIG, "host");
  expect_url_fail("redis://[::1", CACHET_ECONFIG, "unterminated '['");
  expect_url_fail("redis://[::1]x", CACHET_ECONFIG, "after the IPv6");
  expect_url_fail("redis://[host]", CACHET_ECONFIG, "invalid character");
  expect_url_fail("redis://ho st", CACHET_ECONFIG, "invalid character");
  expect_url_fail("redis://h:0", CACHET_ECONFIG, "port number (1-65535)");
  expect_url_fail("redis://h:65536", CACHET_ECONFIG, "port number");
  expect_url_fail("redis://h:", CACHET_ECONFIG, "port number");
  expect_url_fail("redis://h:+1", CACHET_ECONFIG, "port number");
  expect_url_fail("redis://h:12ab", CACHET_ECONFIG, "port number");
  expect_url_fail("redis://h/x", CACHET_ECONFIG, "database number");
  expect_url_fail("redis://h/-1", CACHET_ECONFIG, "database number");
  expect_url_fail("redis://h/1/", CACHET_ECONFIG, "database number");
  expect_url_fail("redis://h/99999999999", CACHET_ECONFIG, "database number");
  expect_url_fail("redis://h/1?db=2", CACHET_ECONFIG, "given twice");
  expect_url_fail("redis://h?db=", CACHET_ECONFIG, "database number");
  expect_url_fail("redis://h?timeout=3", CACHET_ECONFIG,
                  "unknown query parameter");
  expect_url_fail("redis://h#frag", CACHET_ECONFIG, "fragment");
  expect_url_fail("redis://a/b@h", CACHET_ECONFIG, "user name");
}

static void test_url_unix_malformed_forms_are_refused(void **state) {
  (void)state;
  char long_url[256];
  expect_url_fail("unix://", CACHET_ECONFIG, "must be absolute");
  expect_url_fail("unix://relative/path", CACHET_ECONFIG, "must be absolute");
  expect_url_fail("unix://?db=1", CACHET_ECONFIG, "must be absolute");
  expect_url_fail("unix:///s?db=x", CACHET_ECONFIG, "database number");
  expect_url_fail("unix:///s?db=1&db=2", CACHET_ECONFIG, "given twice");
  expect_url_fail("unix:///s?password=x", CACHET_ECONFIG,
                  "unknown query parameter");
  expect_url_fail("unix:///s?db=1&", CACHET_ECONFIG, "unknown query parameter");
  snprintf(long_url, sizeof long_url, "unix:///%0200d", 0);
  expect_url_fail(long_url, CACHET_ECONFIG, "longer than");
}

static void test_url_malformed_escapes_are_refused(void **state) {
  (void)state;
  expect_url_fail("redis://:ab%@h", CACHET_ECONFIG, "percent-escape");
  expect_url_fail("redis://:ab%4@h", CACHET_ECONFIG, "percent-escape");
  expect_url_fail("redis://:ab%zz@h", CACHET_ECONFIG, "percent-escape");
  expect_url_fail("redis://:ab%00cd@h", CACHET_ECONFIG, "percent-escape");
  expect_url_fail("redis://us%0@h", CACHET_ECONFIG,
                  "percent-escape in the user name");
  expect_url_fail("redis://u%00:p@h", CACHET_ECONFIG,
                  "percent-escape in the user name");
}

static void test_url_errors_never_quote_the_password(void **state) {
  (void)state;
  static const char *const urls[] = {
      "redis://u:Pa55word@h:0",       "redis://u:Pa55word@h/x",
      "redis://u:Pa55word@",          "redis://u:Pa55word@h?x=1",
      "redis://u:Pa55word%zz@h",      "redis://:Pa55word",
      "redis://Pa55word:Pa55word@h:", "bogus://u:Pa55word@h",
      "redis://u:Pa55word@[::1",      "redis://u:Pa55word@h#f"};
  for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
    cachet_config c = {0};
    assert_int_not_equal(cachet_config_parse_url(&c, urls[i], "url"),
                         CACHET_OK);
    assert_error_has("url: ");
    assert_error_lacks("Pa55word");
  }
}

/* ---- validation of variables and options -------------------------------- */

static void test_resolve_port_variable_must_be_a_port(void **state) {
  (void)state;
  const char *b = "is not a port number (1-65535)";
  expect_var_fail("CACHET_PORT", "abc", b);
  expect_var_fail("CACHET_PORT", "0", b);
  expect_var_fail("CACHET_PORT", "65536", b);
  expect_var_fail("CACHET_PORT", "+6379", b);
  expect_var_fail("CACHET_PORT", " 6379", b);
  expect_var_fail("CACHET_PORT", "6379 ", b);
  expect_var_fail("CACHET_PORT", "63x79", b);
  expect_var_fail("CACHET_PORT", "-1", b);
  expect_var_fail("CACHET_PORT", "4294973675", b); /* 2^32 + 6379 */
  expect_var_fail("CACHET_PORT", "99999999999999999999999999", b);
}

static void test_resolve_db_variable_must_be_non_negative(void **state) {
  (void)state;
  const char *b = "is not a database number (>= 0)";
  expect_var_fail("CACHET_DB", "-1", b);
  expect_var_fail("CACHET_DB", "one", b);
  expect_var_fail("CACHET_DB", "2147483648", b);
}

static void
test_resolve_timeout_variable_must_be_positive_and_bounded(void **state) {
  (void)state;
  expect_var_fail("CACHET_TIMEOUT_MS", "0", "timeout");
  expect_var_fail("CACHET_TIMEOUT_MS", "86400001", "timeout");
  expect_var_fail("CACHET_TIMEOUT_MS", "5s", "timeout");
}

static void test_resolve_pool_size_variable_must_be_in_range(void **state) {
  (void)state;
  expect_var_fail("CACHET_POOL_SIZE", "0", "pool size (1-1024)");
  expect_var_fail("CACHET_POOL_SIZE", "1025", "pool size (1-1024)");
}

static void test_resolve_multiplex_variable_must_be_in_range(void **state) {
  (void)state;
  expect_var_fail("CACHET_MULTIPLEX", "65", "multiplexed connections (0-64)");
  expect_var_fail("CACHET_MULTIPLEX", "-1", "multiplexed connections (0-64)");
  expect_var_fail("CACHET_MULTIPLEX", "2x", "multiplexed connections (0-64)");
}

static void test_resolve_size_variables_must_be_positive(void **state) {
  (void)state;
  expect_var_fail("CACHET_MAX_VALUE_SIZE", "0", "size in bytes");
  expect_var_fail("CACHET_MAX_VALUE_SIZE", "1MB", "size in bytes");
  expect_var_fail("CACHET_MAX_KEY_SIZE", "0", "size in bytes");
  expect_var_fail("CACHET_MAX_KEY_SIZE", "99999999999999999999999",
                  "size in bytes");
  expect_var_fail("CACHET_MAX_TAGS", "0", "tag count");
}

static void test_resolve_lease_and_wait_variables_are_checked(void **state) {
  (void)state;
  expect_var_fail("CACHET_LOCK_LEASE_MS", "99", "lock lease");
  expect_var_fail("CACHET_LOCK_LEASE_MS", "0", "lock lease");
  expect_var_fail("CACHET_FETCH_WAIT_MS", "0", "wait in milliseconds");
  expect_var_fail("CACHET_FETCH_WAIT_MS", "-5", "wait in milliseconds");
}

static void test_resolve_bool_variables_must_parse(void **state) {
  (void)state;
  expect_var_fail("CACHET_ENCRYPT", "maybe", "is not a boolean");
  expect_var_fail("CACHET_ACCEPT_UNSEALED", "2", "is not a boolean");
  expect_var_fail("CACHET_USE_TLS", "yess", "is not a boolean");
}

static void test_resolve_use_tls_and_its_variables(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_USE_TLS", "Yes");
  env_set(&e, "CACHET_TLS_CA_FILE", "/etc/ca.pem");
  env_set(&e, "CACHET_TLS_CERT", "/etc/c.pem");
  env_set(&e, "CACHET_TLS_KEY", "/etc/c.key");
  env_set(&e, "CACHET_TLS_SERVER_NAME", "redis.example");
  env_set(&e, "CACHET_TLS_INSECURE", "no");
  cachet_config c = resolve_env_ok(&e);
  assert_int_equal(c.tls, 1);
  assert_string_equal(c.tls_ca_file, "/etc/ca.pem");
  assert_null(c.tls_ca_dir);
  assert_string_equal(c.tls_cert, "/etc/c.pem");
  assert_string_equal(c.tls_key, "/etc/c.key");
  assert_string_equal(c.tls_server_name, "redis.example");
  assert_int_equal(c.tls_insecure, 0);
  cachet_config_free(&c);
}

/* A TLS setting that would not be used is a mistake, named at once. */
static void test_resolve_tls_settings_without_tls_are_refused(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_TLS_CA_FILE", "/etc/ca.pem");
  expect_env_fail(&e, CACHET_ECONFIG,
                  "CACHET_TLS_CA_FILE is set, but TLS is off", NULL);
  fake_env i = {0};
  env_set(&i, "CACHET_TLS_INSECURE", "1");
  expect_env_fail(&i, CACHET_ECONFIG, "tls_insecure is set, but TLS is off",
                  NULL);
  fake_env k = {0};
  env_set(&k, "CACHET_USE_TLS", "1");
  env_set(&k, "CACHET_TLS_CERT", "/etc/c.pem");
  expect_env_fail(&k, CACHET_ECONFIG, "tls_cert and tls_key go together", NULL);
  cachet_options o;
  cachet_options_init(&o);
  o.use_tls = 1;
  o.unix_path = "/run/redis.sock";
  expect_opts_fail(&o, CACHET_ECONFIG, "TLS is for TCP", NULL);
  cachet_options_init(&o);
  o.tls_key = "/k";
  expect_opts_fail(&o, CACHET_ECONFIG, "tls_key is set, but TLS is off", NULL);
  cachet_options_init(&o);
  o.use_tls = 3;
  expect_opts_fail(&o, CACHET_ECONFIG, "use_tls: 3 is not a boolean", NULL);
}

static void test_resolve_rediss_cachet_url_turns_tls_on(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "rediss://:Pa55word@h");
  env_set(&e, "CACHET_TLS_CA_DIR", "/etc/ssl/certs");
  cachet_config c = resolve_env_ok(&e);
  assert_int_equal(c.tls, 1);
  assert_string_equal(c.tls_ca_dir, "/etc/ssl/certs");
  cachet_config_free(&c);
}

static void test_resolve_bad_cachet_url_names_the_variable(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "redis://:Pa55word@h:99999");
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_URL: ", "port");
  assert_error_lacks("Pa55word");
}

static void
test_resolve_prefix_variable_rejects_braces_and_length(void **state) {
  (void)state;
  char long_prefix[300];
  memset(long_prefix, 'p', 257);
  long_prefix[257] = '\0';
  expect_var_fail("CACHET_KEY_PREFIX", "app{1}:", "hash tags");
  expect_var_fail("CACHET_KEY_PREFIX", "a}", "hash tags");
  fake_env e = {0};
  env_set(&e, "CACHET_KEY_PREFIX", long_prefix);
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_KEY_PREFIX: \"ppp",
                  "257 bytes long (at most 256)");
}

static void test_resolve_host_variable_must_look_like_a_host(void **state) {
  (void)state;
  expect_var_fail("CACHET_HOST", "a/b", "host name or IP address");
  expect_var_fail("CACHET_HOST", "u@h", "host name or IP address");
}

static void test_resolve_messages_escape_control_bytes(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_PORT", "12\n\"x");
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_PORT: \"12\\x0a\\x22x\"", NULL);
}

static void test_resolve_explicit_options_are_named_in_messages(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  o.port = 0;
  expect_opts_fail(&o, CACHET_ECONFIG, "port: 0 is not a port number", NULL);
  cachet_options_init(&o);
  o.port = 70000;
  expect_opts_fail(&o, CACHET_ECONFIG, "port: 70000", NULL);
  cachet_options_init(&o);
  o.db = -2;
  expect_opts_fail(&o, CACHET_ECONFIG, "db: -2 is not a database number", NULL);
  cachet_options_init(&o);
  o.timeout_ms = 0;
  expect_opts_fail(&o, CACHET_ECONFIG, "timeout_ms: 0 is not a timeout", NULL);
  cachet_options_init(&o);
  o.pool_size = -1;
  expect_opts_fail(&o, CACHET_ECONFIG, "pool_size: -1", NULL);
  cachet_options_init(&o);
  o.pool_size = 2000;
  expect_opts_fail(&o, CACHET_ECONFIG, "pool_size: 2000", NULL);
  cachet_options_init(&o);
  o.lock_lease_ms = 50;
  expect_opts_fail(&o, CACHET_ECONFIG, "lock_lease_ms: 50", NULL);
  cachet_options_init(&o);
  o.fetch_wait_ms = -1;
  expect_opts_fail(&o, CACHET_ECONFIG, "fetch_wait_ms: -1", NULL);
  cachet_options_init(&o);
  o.encrypt = 2;
  expect_opts_fail(&o, CACHET_ECONFIG, "encrypt: 2 is not a boolean", NULL);
  cachet_options_init(&o);
  o.accept_unsealed = 7;
  expect_opts_fail(&o, CACHET_ECONFIG, "accept_unsealed: 7", NULL);
  cachet_options_init(&o);
  o.prefix = "x{";
  expect_opts_fail(&o, CACHET_ECONFIG, "prefix: \"x{\"", "hash tags");
  cachet_options_init(&o);
  o.host = "";
  expect_opts_fail(&o, CACHET_ECONFIG, "host: \"\"", "host name");
  cachet_options_init(&o);
  o.unix_path = "redis.sock";
  expect_opts_fail(&o, CACHET_ECONFIG, "unix_path: \"redis.sock\"", "absolute");
  cachet_options_init(&o);
  o.url = "";
  expect_opts_fail(&o, CACHET_ECONFIG, "url: ", "empty");
  cachet_options_init(&o);
  o.url = "rediss://h";
  o.tls_ca_file = "";
  expect_opts_fail(&o, CACHET_ECONFIG, "tls_ca_file: ", "empty");
  cachet_options_init(&o);
  o.keys = "";
  expect_opts_fail(&o, CACHET_ECONFIG, "keys: ", "empty");
}

static void
test_resolve_failure_after_allocations_frees_and_zeroes(void **state) {
  (void)state;
  /* Host, password, prefix and keys are allocated before the bad value. */
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "redis://u:p@h");
  env_set(&e, "CACHET_KEY_PREFIX", "ok:");
  env_set(&e, "CACHET_KEYS", "1:AAAA");
  env_set(&e, "CACHET_FETCH_WAIT_MS", "never");
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_FETCH_WAIT_MS", NULL);
}

static void test_resolve_errors_never_quote_passwords_or_keys(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_PASSWORD", "Pa55word");
  env_set(&e, "CACHET_KEYS", "1:K3yMaterial");
  env_set(&e, "CACHET_PORT", "x");
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_PORT", NULL);
  assert_error_lacks("Pa55word");
  assert_error_lacks("K3yMaterial");
  env_set(&e, "CACHET_PORT", "1");
  env_set(&e, "CACHET_KEYS_FILE", "/nonexistent");
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_KEYS, CACHET_KEYS_FILE",
                  "set only one");
  assert_error_lacks("K3yMaterial");
}

static void test_resolve_requires_options_and_output(void **state) {
  (void)state;
  cachet_config c;
  assert_int_equal(cachet_config_resolve(&c, NULL, fake_getenv, NULL),
                   CACHET_EINVAL);
  assert_zeroed(&c);
}

/* ---- keys file ---------------------------------------------------------- */

/* A temporary file holding `len` bytes of `text`; the path is written into
 * `path` (which must hold 64 bytes). */
static void write_temp(char *path, const char *text, size_t len) {
  const char *dir = getenv("TMPDIR");
  snprintf(path, 64, "%s/cachet-keys-XXXXXX",
           dir != NULL && strlen(dir) < 40 ? dir : "/tmp");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    assert_true(w > 0);
    off += (size_t)w;
  }
  assert_int_equal(close(fd), 0);
}

static void test_keys_file_is_read_without_trailing_newlines(void **state) {
  (void)state;
  char path[64];
  static const char text[] = "1:AAAA,2:BBBB \n\r\n\t";
  write_temp(path, text, sizeof text - 1);
  fake_env e = {0};
  env_set(&e, "CACHET_KEYS_FILE", path);
  cachet_config c = resolve_env_ok(&e);
  assert_string_equal(c.keys, "1:AAAA,2:BBBB");
  cachet_config_free(&c);

  cachet_options o;
  cachet_options_init(&o);
  o.keys_file = path;
  c = resolve_ok(&o, &(fake_env){0});
  assert_string_equal(c.keys, "1:AAAA,2:BBBB");
  cachet_config_free(&c);
  unlink(path);
}

static void test_keys_and_keys_file_together_are_refused(void **state) {
  (void)state;
  char path[64];
  write_temp(path, "1:AAAA\n", 7);
  fake_env e = {0};
  env_set(&e, "CACHET_KEYS", "1:AAAA");
  env_set(&e, "CACHET_KEYS_FILE", path);
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_KEYS, CACHET_KEYS_FILE",
                  "set only one");

  cachet_options o;
  cachet_options_init(&o);
  o.keys = "1:AAAA";
  o.keys_file = path;
  expect_opts_fail(&o, CACHET_ECONFIG, "keys, keys_file", "set only one");
  unlink(path);
}

static void test_explicit_keys_beat_keys_file_variable(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_KEYS_FILE", "/nonexistent/keys");
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  o.keys = "3:CCCC";
  cachet_config c = resolve_ok(&o, &e);
  assert_string_equal(c.keys, "3:CCCC");
  cachet_config_free(&c);
}

static void test_keys_file_missing_names_the_path(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_KEYS_FILE", "/nonexistent/cachet.keys");
  expect_env_fail(&e, CACHET_ECONFIG,
                  "CACHET_KEYS_FILE: cannot read \"/nonexistent/cachet.keys\"",
                  "no such file");
}

/* As ssh with a private key: a keys file others can read or write is
 * refused, with its name and mode; 0600 and 0400 are fine. */
static void test_keys_file_readable_by_others_is_refused(void **state) {
  (void)state;
  char path[64];
  write_temp(path, "1:AAAA\n", 7);
  static const mode_t bad[] = {0644, 0640, 0604, 0620, 0602, 0660, 0666};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(chmod(path, bad[i]), 0);
    fake_env e = {0};
    env_set(&e, "CACHET_KEYS_FILE", path);
    char want[32];
    snprintf(want, sizeof want, "has mode %04o", (unsigned)bad[i]);
    expect_env_fail(&e, CACHET_ECONFIG, path, want);
  }
  static const mode_t good[] = {0600, 0400};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    assert_int_equal(chmod(path, good[i]), 0);
    cachet_options o;
    cachet_options_init(&o);
    o.keys_file = path;
    cachet_config cfg;
    assert_int_equal(cachet_config_resolve(&cfg, &o, NULL, NULL), CACHET_OK);
    assert_non_null(cfg.keys);
    cachet_config_free(&cfg);
  }
  unlink(path);
}

static void test_keys_file_empty_or_blank_is_refused(void **state) {
  (void)state;
  char path[64];
  write_temp(path, " \n\n", 3);
  fake_env e = {0};
  env_set(&e, "CACHET_KEYS_FILE", path);
  expect_env_fail(&e, CACHET_ECONFIG, "CACHET_KEYS_FILE: \"", "is empty");
  assert_error_has(path);
  unlink(path);
}

static void test_keys_file_with_nul_is_refused_without_content(void **state) {
  (void)state;
  char path[64];
  static const char text[] = "1:S3cretKey\0tail";
  write_temp(path, text, sizeof text - 1);
  cachet_options o;
  cachet_options_init(&o);
  o.keys_file = path;
  expect_opts_fail(&o, CACHET_ECONFIG, "keys_file: \"", "NUL byte");
  assert_error_has(path);
  assert_error_lacks("S3cretKey");
  unlink(path);
}

static void test_keys_file_larger_than_64k_is_refused(void **state) {
  (void)state;
  char path[64];
  size_t len = 64 * 1024 + 1;
  char *big = malloc(len);
  assert_non_null(big);
  memset(big, 'k', len);
  write_temp(path, big, len);
  cachet_options o;
  cachet_options_init(&o);
  o.keys_file = path;
  expect_opts_fail(&o, CACHET_ECONFIG, "keys_file: \"", "larger than 65536");
  assert_error_lacks("kkkk");
  unlink(path);

  /* Exactly 64 KiB is fine. */
  write_temp(path, big, len - 1);
  cachet_config c = resolve_ok(&o, &(fake_env){0});
  assert_int_equal(strlen(c.keys), len - 1);
  cachet_config_free(&c);
  unlink(path);
  free(big);
}

static void test_keys_file_that_is_a_directory_is_refused(void **state) {
  (void)state;
  cachet_options o;
  cachet_options_init(&o);
  o.keys_file = "/";
  expect_opts_fail(&o, CACHET_ECONFIG, "keys_file: cannot read \"/\"", NULL);
}

/* ---- free --------------------------------------------------------------- */

static void test_free_releases_everything_and_zeroes_the_struct(void **state) {
  (void)state;
  fake_env e = {0};
  env_set(&e, "CACHET_URL", "redis://u:p@h/1");
  env_set(&e, "CACHET_KEYS", "1:AAAA");
  cachet_config c = resolve_env_ok(&e);
  cachet_config_free(&c);
  assert_zeroed(&c);
  cachet_config_free(&c); /* a second free is harmless */
  cachet_config_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options_init_marks_every_field_unset),
      cmocka_unit_test(test_resolve_unset_options_give_defaults),
      cmocka_unit_test(test_resolve_ignores_env_without_use_env),
      cmocka_unit_test(test_resolve_reads_every_variable),
      cmocka_unit_test(test_resolve_explicit_fields_beat_env),
      cmocka_unit_test(test_resolve_env_fills_only_unset_fields),
      cmocka_unit_test(
          test_resolve_explicit_url_ignores_cachet_url_and_split_vars),
      cmocka_unit_test(test_resolve_cachet_url_ignores_split_vars),
      cmocka_unit_test(test_resolve_explicit_fields_override_url),
      cmocka_unit_test(test_resolve_explicit_host_drops_unix_url_socket),
      cmocka_unit_test(test_resolve_explicit_unix_path_is_kept),
      cmocka_unit_test(test_resolve_empty_variable_counts_as_unset),
      cmocka_unit_test(test_resolve_empty_prefix_variable_gives_empty_prefix),
      cmocka_unit_test(test_resolve_prefix_of_256_bytes_is_accepted),
      cmocka_unit_test(test_resolve_bools_accept_every_spelling),
      cmocka_unit_test(test_resolve_numbers_accept_bounds_and_leading_zeros),
      cmocka_unit_test(test_url_host_only_gets_defaults),
      cmocka_unit_test(test_url_user_password_port_db),
      cmocka_unit_test(test_url_password_only),
      cmocka_unit_test(test_url_user_only_and_empty_password),
      cmocka_unit_test(test_username_without_password_is_refused),
      cmocka_unit_test(test_url_ipv6_literal_with_and_without_port),
      cmocka_unit_test(test_url_trailing_slash_and_query_db),
      cmocka_unit_test(test_url_unix_socket_with_and_without_db),
      cmocka_unit_test(test_url_unix_socket_with_credentials),
      cmocka_unit_test(test_url_percent_escapes_in_user_and_password),
      cmocka_unit_test(test_url_unescaped_specials_stay_in_password),
      cmocka_unit_test(test_url_parse_replaces_previous_fields),
      cmocka_unit_test(test_url_failure_leaves_fields_unchanged),
      cmocka_unit_test(test_url_rediss_turns_tls_on),
      cmocka_unit_test(test_url_unknown_scheme_is_named),
      cmocka_unit_test(test_url_malformed_forms_are_refused),
      cmocka_unit_test(test_url_unix_malformed_forms_are_refused),
      cmocka_unit_test(test_url_malformed_escapes_are_refused),
      cmocka_unit_test(test_url_errors_never_quote_the_password),
      cmocka_unit_test(test_resolve_port_variable_must_be_a_port),
      cmocka_unit_test(test_resolve_db_variable_must_be_non_negative),
      cmocka_unit_test(
          test_resolve_timeout_variable_must_be_positive_and_bounded),
      cmocka_unit_test(test_resolve_pool_size_variable_must_be_in_range),
      cmocka_unit_test(test_resolve_multiplex_variable_must_be_in_range),
      cmocka_unit_test(test_resolve_size_variables_must_be_positive),
      cmocka_unit_test(test_resolve_lease_and_wait_variables_are_checked),
      cmocka_unit_test(test_resolve_bool_variables_must_parse),
      cmocka_unit_test(test_resolve_use_tls_and_its_variables),
      cmocka_unit_test(test_resolve_tls_settings_without_tls_are_refused),
      cmocka_unit_test(test_resolve_rediss_cachet_url_turns_tls_on),
      cmocka_unit_test(test_resolve_bad_cachet_url_names_the_variable),
      cmocka_unit_test(test_resolve_prefix_variable_rejects_braces_and_length),
      cmocka_unit_test(test_resolve_host_variable_must_look_like_a_host),
      cmocka_unit_test(test_resolve_messages_escape_control_bytes),
      cmocka_unit_test(test_resolve_explicit_options_are_named_in_messages),
      cmocka_unit_test(test_resolve_failure_after_allocations_frees_and_zeroes),
      cmocka_unit_test(test_resolve_errors_never_quote_passwords_or_keys),
      cmocka_unit_test(test_resolve_requires_options_and_output),
      cmocka_unit_test(test_keys_file_is_read_without_trailing_newlines),
      cmocka_unit_test(test_keys_and_keys_file_together_are_refused),
      cmocka_unit_test(test_explicit_keys_beat_keys_file_variable),
      cmocka_unit_test(test_keys_file_missing_names_the_path),
      cmocka_unit_test(test_keys_file_readable_by_others_is_refused),
      cmocka_unit_test(test_keys_file_empty_or_blank_is_refused),
      cmocka_unit_test(test_keys_file_with_nul_is_refused_without_content),
      cmocka_unit_test(test_keys_file_larger_than_64k_is_refused),
      cmocka_unit_test(test_keys_file_that_is_a_directory_is_refused),
      cmocka_unit_test(test_free_releases_everything_and_zeroes_the_struct),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
