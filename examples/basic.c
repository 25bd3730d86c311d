/*
 * basic: a tour of cachet's core calls.
 *
 * It opens a handle from the environment (CACHET_URL, or CACHET_HOST and
 * CACHET_PORT, and the other CACHET_* variables), then stores a value with a
 * TTL, reads it back, stores two tagged values, evicts them by tag, and
 * deletes what is left. Every call's status is checked: a status is either
 * CACHET_OK, a positive outcome that is not an error (CACHET_MISS), or a
 * negative error, which is printed with cachet_strerror() and the detail
 * from cachet_last_error().
 *
 *   CACHET_URL=redis://localhost:6379/0 ./basic
 *
 * Exit status: 0 if every step did what it should, 1 if the cache answered
 * but not as expected, 2 for a configuration error, 3 for a connection or
 * server error, 4 for an integrity or format error (the same codes as the
 * cachet CLI).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <cachet.h>

/* The example's keys, so that a rerun starts from a clean slate. */
#define KEY_GREETING "example:greeting"
#define KEY_USER1 "example:user:1"
#define KEY_USER2 "example:user:2"

/*
 * Print a failed call's status and detail, and map it to an exit code the
 * way the CLI does.
 * The detail is thread-local and only valid until the next cachet call on
 * this thread, so it is printed right away.
 */
static int report(const char *what, int status) {
  const char *detail = cachet_last_error();
  fprintf(stderr, "basic: %s: %s (%s)%s%s\n", what, cachet_strerror(status),
          cachet_status_name(status), detail[0] != '\0' ? ": " : "", detail);
  switch (status) {
  case CACHET_EINVAL:
  case CACHET_ECONFIG:
    return 2;
  case CACHET_ECORRUPT:
  case CACHET_EINTEGRITY:
  case CACHET_EVERSION:
    return 4;
  default:
    return status > 0 ? 1 : 3;
  }
}

/* Read `key` and check that it holds `want` (or is absent if want is NULL).
 * Returns 0 if so, otherwise an exit code. */
static int expect_value(cachet *c, const char *key, const char *want) {
  void *val = NULL;
  size_t len = 0;
  int rc = cachet_get(c, key, strlen(key), &val, &len);
  if (rc == CACHET_MISS) {
    /* A miss is an outcome, not an error: val stays NULL. */
    if (want == NULL) {
      printf("get %s: miss, as expected\n", key);
      return 0;
    }
    fprintf(stderr, "basic: get %s: unexpected miss\n", key);
    return 1;
  }
  if (rc != CACHET_OK)
    return report("get", rc);

  /* cachet returns a malloc'd buffer the caller owns. It is binary-safe
   * (len counts the bytes) and NUL-terminated for convenience. */
  int ok = want != NULL && len == strlen(want) && memcmp(val, want, len) == 0;
  if (ok)
    printf("get %s: \"%s\"\n", key, (const char *)val);
  else
    fprintf(stderr, "basic: get %s: unexpected value \"%s\"\n", key,
            (const char *)val);
  cachet_free(val);
  return ok ? 0 : 1;
}

/* The example proper, on an open handle. Returns the exit code. */
static int run(cachet *c) {
  int rc, code;

  /* Fail fast if the server cannot be reached: cachet_open() itself makes
   * no connection. */
  if ((rc = cachet_ping(c)) != CACHET_OK)
    return report("ping", rc);
  printf("connected; key prefix \"%s\"\n", cachet_prefix(c));

  /* 1. A value with a 60 s TTL. TTLs are in milliseconds; 0 means none. */
  const char *greeting = "hello from cachet";
  rc = cachet_set(c, KEY_GREETING, strlen(KEY_GREETING), greeting,
                  strlen(greeting), 60 * 1000);
  if (rc != CACHET_OK)
    return report("set", rc);
  if ((code = expect_value(c, KEY_GREETING, greeting)) != 0)
    return code;

  int64_t ttl_ms = 0;
  rc = cachet_ttl(c, KEY_GREETING, strlen(KEY_GREETING), &ttl_ms);
  if (rc != CACHET_OK)
    return report("ttl", rc);
  printf("ttl %s: %" PRId64 " ms left\n", KEY_GREETING, ttl_ms);

  /* 2. Two entries tagged "users", one also "team:a". Tags are stored with
   * the value in one atomic step. */
  const char *tags1[] = {"users", "team:a"};
  const char *tags2[] = {"users"};
  rc =
      cachet_set_tags(c, KEY_USER1, strlen(KEY_USER1), "alice", 5, 0, tags1, 2);
  if (rc != CACHET_OK)
    return report("set_tags", rc);
  rc = cachet_set_tags(c, KEY_USER2, strlen(KEY_USER2), "bob", 3, 0, tags2, 1);
  if (rc != CACHET_OK)
    return report("set_tags", rc);
  if ((code = expect_value(c, KEY_USER1, "alice")) != 0 ||
      (code = expect_value(c, KEY_USER2, "bob")) != 0)
    return code;

  /* 3. Evict everything tagged "users": once this returns CACHET_OK, no
   * entry that carried the tag can be read any more. */
  const char *evict[] = {"users"};
  uint64_t evicted = 0;
  if ((rc = cachet_evict_tags(c, evict, 1, &evicted)) != CACHET_OK)
    return report("evict_tags", rc);
  printf("evict_tags users: %" PRIu64 " entries\n", evicted);
  if ((code = expect_value(c, KEY_USER1, NULL)) != 0 ||
      (code = expect_value(c, KEY_USER2, NULL)) != 0)
    return code;

  /* 4. Delete: CACHET_OK if the key existed, CACHET_MISS if not. */
  rc = cachet_delete(c, KEY_GREETING, strlen(KEY_GREETING));
  if (rc == CACHET_MISS) {
    fprintf(stderr, "basic: delete %s: it had already gone\n", KEY_GREETING);
    return 1;
  }
  if (rc != CACHET_OK)
    return report("delete", rc);
  printf("del %s: deleted\n", KEY_GREETING);
  rc = cachet_exists(c, KEY_GREETING, strlen(KEY_GREETING));
  if (rc < 0)
    return report("exists", rc);
  if (rc != CACHET_MISS) {
    fprintf(stderr, "basic: %s still exists after delete\n", KEY_GREETING);
    return 1;
  }
  return 0;
}

int main(void) {
  printf("cachet %s\n", CACHET_VERSION_STRING);

  /* Options are always filled by cachet_options_init() first, so that
   * fields added in later versions get their defaults. use_env reads the
   * CACHET_* variables for every field not set here. */
  cachet_options opts;
  cachet_options_init(&opts);
  opts.use_env = 1;

  cachet *c = NULL;
  int rc = cachet_open(&c, &opts);
  if (rc != CACHET_OK)
    return report("open", rc); /* e.g. CACHET_PORT: "abc" is not a port */

  int code = run(c);
  cachet_close(c);
  if (code == 0)
    printf("ok\n");
  return code;
}
