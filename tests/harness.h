/* Test harness: a private redis-server per test binary.
 *
 * Each server gets its own temp dir, a unix socket in it and a free TCP port
 * on 127.0.0.1, runs with --save '' --appendonly no, and dies with the test
 * process (PR_SET_PDEATHSIG) even if the test crashes. */
#ifndef CACHET_TEST_HARNESS_H
#define CACHET_TEST_HARNESS_H

#include <hiredis/hiredis.h>
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

/* Milliseconds of sleep (for tests that wait on TTLs). */
void test_sleep_ms(int ms);

#endif
