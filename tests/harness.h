/* Test harness: a private redis-server per test binary.
 *
 * Each server gets its own temp dir, a unix socket in it and a free TCP port
 * on 127.0.0.1, runs with --save '' --appendonly no, and dies with the test
 * process (PR_SET_PDEATHSIG) even if the test crashes. */
#ifndef CACHET_TEST_HARNESS_H
#define CACHET_TEST_HARNESS_H

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <sys/types.h>

#include "cachet.h"

typedef struct test_server {
  char dir[256];
  char sock[300];
  int port;
  pid_t pid;
} test_server;

/* Start a server. `extra` is a NULL-terminated list of extra redis-server
 * arguments (may be NULL), e.g. {"--requirepass", "s3cret", NULL}. Returns
 * 0 on success; on failure prints why and returns -1. */
int test_server_start(test_server *s, const char *const *extra);
/* Restart on the same dir, socket and port (after a kill). */
int test_server_restart(test_server *s, const char *const *extra);
/* Stop (SIGTERM, then SIGKILL after a deadline) and remove the temp dir. */
void test_server_stop(test_server *s);
/* SIGKILL the server and reap it, keeping the dir for a restart. */
void test_server_kill(test_server *s);

/* A raw hiredis connection to the server (unix socket), for checks that
 * must not go through cachet. Aborts the test on failure. */
redisContext *test_redis(const test_server *s);

/* Options pointing at the server's unix socket with the given prefix. */
void test_options(const test_server *s, cachet_options *o, const char *prefix);

/* Open a handle on the server; fails the test on error. */
cachet *test_open(const test_server *s, const char *prefix);

/* A unique free TCP port on 127.0.0.1 (bind to 0, read, close). */
int test_free_port(void);

/* A port on 127.0.0.1 that takes connections and never answers (a hung
 * server, a black hole): it listens and never accepts, so the kernel
 * completes the handshake and keeps the bytes. Its number goes to *port;
 * returns the socket, for the caller to close, or -1. */
int test_black_hole(int *port);

/* Throwaway TLS material made by tests/tls_certs.sh (found through
 * CACHET_SOURCE_DIR) in a fresh temp dir, whose path goes to dir[n]: ca,
 * other-ca, server (127.0.0.1, ::1, localhost), client and expired, each
 * .crt and .key. 0, or -1 after printing why. test_tls_remove deletes it. */
int test_tls_certs(char *dir, size_t n);
void test_tls_remove(const char *dir);
/* Start `s` with a TLS port too (returned in *tls_port) serving
 * <certs>/<cert>.crt; client certificates are required with `mutual`. The
 * plaintext port and unix socket stay. 0 or -1. */
int test_tls_server_start(test_server *s, const char *certs, const char *cert,
                          int mutual, int *tls_port);

/* Milliseconds of sleep (for tests that wait on TTLs). */
void test_sleep_ms(int ms);

/* The helpers below fail the running cmocka test instead of aborting, so
 * the rest of the group still runs. They live in harness_assert.c, which
 * only test binaries link: bench/ compiles harness.c without cmocka. */

/* The one server a test group shares. test_group_setup and
 * test_group_teardown are the group fixture to pass to
 * cmocka_run_group_tests; between them test_group_server() points at the
 * running server. The harness owns it: a test may kill and restart it,
 * but must leave it running for the next test. */
test_server *test_group_server(void);
int test_group_setup(void **state);
int test_group_teardown(void **state);

/* Run a command (hiredis format, %b for binary) on a fresh connection to
 * `s` and fail the test on an error reply. For setup such as CONFIG SET,
 * where the reply itself does not matter. */
void test_command(const test_server *s, const char *fmt, ...);

/* The integer reply of a command on `r`; fails the test on any other
 * reply. Not for threads other than the test's own: they must not assert.
 * test_vint is the va_list form, for helpers that forward their
 * arguments. */
long long test_int(redisContext *r, const char *fmt, ...);
long long test_vint(redisContext *r, const char *fmt, va_list ap);

/* A counter of INFO commandstats on `r`: `field` ("calls",
 * "failed_calls") of command `cmd` (lowercase, e.g. "evalsha"); 0 when the
 * command never ran. */
long long test_cmdstat(redisContext *r, const char *cmd, const char *field);

/* Every key matching `pattern` on `r`'s server, through SCAN: fn is
 * called once per key (a key may repeat, as SCAN allows). `r` is free for
 * other commands inside fn. */
typedef void (*test_key_fn)(void *ud, const char *key, size_t len);
void test_scan_keys(redisContext *r, const char *pattern, test_key_fn fn,
                    void *ud);

/* EVALSHA calls that ran on `r`'s server (a NOSCRIPT answer is a failed
 * call, and is not counted). */
long long test_scripts_run(redisContext *r);

/* Fail the test unless the command's reply on `r` is the string `want`
 * (a bulk string, compared as a C string). */
void test_expect_string(redisContext *r, const char *want, const char *fmt,
                        ...);

/* A reply parsed from RESP text, for tests that feed code canned replies
 * without a server; fails the test unless `resp` is one whole reply. The
 * caller frees it (freeReplyObject). */
redisReply *test_reply(const char *resp);

/* Get `key` through cachet: 1 on a hit, 0 on a miss; any other status
 * fails the test. With `want` non-NULL a hit must hold exactly that
 * value. The value is freed here, so nothing is returned to own. */
int test_hit(cachet *c, const char *key, const char *want);

/* A handle on a TCP port of 127.0.0.1 where nothing listens, with a 1 s
 * timeout: cachet_open succeeds (it connects lazily) and every call then
 * meets a refused connection. The caller closes it. */
cachet *test_open_unreachable(void);

/* Wait for child `pid` and fail the test unless it exited with status 0;
 * a child killed by a signal is reported with the signal's name, so that a
 * SIGPIPE death (say) reads as one. */
void test_expect_child_ok(pid_t pid);

#endif
