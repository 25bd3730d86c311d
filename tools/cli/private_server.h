/* A private redis-server for `cachet demo` and `cachet bench`, and a raw
 * hiredis connection to whatever server a handle uses. */
#ifndef CACHET_CLI_PRIVATE_SERVER_H
#define CACHET_CLI_PRIVATE_SERVER_H

#include <hiredis/hiredis.h>
#include <sys/types.h>

#include "cli.h"

typedef struct cli_private_server {
  char dir[200];  /* mkdtemp dir, "" when none was started */
  char sock[240]; /* unix socket inside dir */
  char url[260];  /* unix://<sock> */
  pid_t pid;      /* 0 when none is running */
} cli_private_server;

/*
 * When nothing is configured (no --url, CACHET_URL, CACHET_HOST or
 * CACHET_PORT) and nothing answers on localhost:6379, start a private
 * redis-server (CACHET_REDIS_SERVER, or redis-server from PATH) in a fresh
 * temp dir on a unix socket, wait until it answers PING, point cl->url at it
 * and say so in one line on stderr. `who` names the command in messages.
 *
 * Returns 0 when the caller may go on (a server is configured, one answers on
 * localhost:6379, or the private one is up), or EXIT_SERVER after printing
 * why (redis-server not installed, or it did not start).
 * Stop it with cli_private_server_stop(); it also dies with this process.
 */
int cli_private_server_setup(cli *cl, cli_private_server *s, const char *who);

/* Stop the server (SIGTERM, then SIGKILL after a deadline) and remove its
 * dir. Safe to call when none was started, and twice. */
void cli_private_server_stop(cli_private_server *s);

/*
 * A raw hiredis connection to the server `c` uses (same socket or host and
 * port, AUTH and SELECT), for what must bypass cachet: the demo's tamper
 * step and the benchmarks' baselines. NULL (after printing why) on failure.
 */
redisContext *cli_raw_connect(cachet *c, const char *who);

#endif
