/* One connection to one Redis server (conn.h): the sync driver's view of
 * the transport. Each wait for the socket is bounded by timeout_ms; a wait
 * that runs out breaks the connection, since a late reply would be read as
 * the next command's. */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "resp.h"

/* Wait for the socket, at most timeout_ms: ETIMEDOUT says what waited;
 * ECONN "stopped" when the owner's stop_fd turned readable first. */
static int wait_for(cachet_conn *cn, int want, const char *what) {
  int rc = cachet_sock_wait(&cn->s, want, cachet_mono_ms() + cn->timeout_ms,
                            cn->stop_fd != NULL ? *cn->stop_fd : -1);
  if (rc == CACHET_OK)
    return CACHET_OK;
  cn->broken = 1;
  if (rc == CACHET_ECONN)
    return cachet_fail(CACHET_ECONN, "%s: stopped", what);
  return cachet_fail(CACHET_ETIMEDOUT, "%s: %s within %d ms", what,
                     cachet_sock_silence(&cn->s), cn->timeout_ms);
}

static int broken(cachet_conn *cn, int rc) {
  cn->broken = 1;
  return rc;
}

/* A command during connection set-up (AUTH, SELECT): an error reply is the
 * server refusing us, reported with what we were doing. */
static int setup_command(cachet_conn *cn, int argc, const char **argv,
                         const size_t *lens, const char *what) {
  redisReply *r = NULL;
  int rc = cachet_conn_exchange(cn, argc, argv, lens, &r);
  if (rc == CACHET_OK && r->type == REDIS_REPLY_ERROR) {
    (void)cachet_fail_bytes(CACHET_ESERVER, NULL, r->str, r->len);
    char detail[512];
    snprintf(detail, sizeof detail, "%s", cachet_last_error());
    rc = cachet_fail(CACHET_ESERVER, "%s refused: %s", what, detail);
  }
  if (r != NULL)
    freeReplyObject(r);
  return rc;
}

void cachet_setup_commands(const cachet_config *cfg, int node,
                           cachet_setup *s) {
  s->n = 0;
  if (cfg->password != NULL) {
    int user = cfg->username != NULL;
    const char **a = s->argv[s->n];
    size_t *l = s->lens[s->n];
    a[0] = "AUTH", l[0] = 4;
    a[1 + user] = cfg->password, l[1 + user] = strlen(cfg->password);
    if (user)
      a[1] = cfg->username, l[1] = strlen(cfg->username);
    s->argc[s->n] = 2 + user;
    s->what[s->n++] = "AUTH";
  }
  if (cfg->db != 0 && !node) {
    int len = snprintf(s->db, sizeof s->db, "%d", cfg->db);
    s->argv[s->n][0] = "SELECT", s->lens[s->n][0] = 6;
    s->argv[s->n][1] = s->db, s->lens[s->n][1] = (size_t)len;
    s->argc[s->n] = 2;
    s->what[s->n++] = "SELECT";
  }
}

int cachet_conn_connect(cachet_conn *cn, const cachet_config *cfg,
                        const cachet_tls *tls, const char *host, int port) {
  int node = host != NULL; /* a cluster node: its address, never SELECT */
  if (!node && cfg->unix_path == NULL) {
    host = cfg->host;
    port = cfg->port;
  }
  cachet_conn_close(cn);
  cn->timeout_ms = cfg->timeout_ms;
  int rc = cachet_sock_open(&cn->s, host, port, cfg->unix_path, tls);
  while (rc == CACHET_OK && (rc = cachet_sock_progress(&cn->s)) > 0)
    rc = wait_for(cn, rc, cn->s.where);
  if (rc == CACHET_OK && (cn->reader = redisReaderCreate()) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "%s: out of memory", cn->s.where);
  if (rc == CACHET_OK) {
    cachet_reader_limits(cfg, &cn->bound);
    cachet_reader_attach(cn->reader, &cn->bound);
  }
  cachet_setup su;
  cachet_setup_commands(cfg, node, &su);
  for (int i = 0; rc == CACHET_OK && i < su.n; i++)
    rc = setup_command(cn, su.argc[i], su.argv[i], su.lens[i], su.what[i]);
  if (rc != CACHET_OK)
    cachet_conn_close(cn);
  return rc;
}

int cachet_conn_connected(const cachet_conn *cn) { return cn->s.ready; }

void cachet_conn_close(cachet_conn *cn) {
  cachet_sock_close(&cn->s);
  if (cn->reader != NULL)
    redisReaderFree(cn->reader);
  free(cn->out);
  cn->reader = NULL;
  cn->out = NULL;
  cn->olen = cn->ocap = 0;
  cn->broken = 0;
  cn->pending = 0;
}

void cachet_conn_break(cachet_conn *cn) { cn->broken = 1; }

int cachet_conn_append(cachet_conn *cn, int argc, const char **argv,
                       const size_t *lens) {
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  size_t bound = cachet_resp_bound(argc, lens);
  if (bound == 0 ||
      cachet_grow(&cn->out, &cn->ocap, cn->olen + bound, 1) != CACHET_OK)
    return broken(
        cn, cachet_fail(CACHET_ENOMEM, "out of memory queueing a command"));
  cn->olen = (size_t)(cachet_resp_write(cn->out + cn->olen, argc, argv, lens) -
                      cn->out);
  cn->pending++;
  return CACHET_OK;
}

int cachet_conn_flush(cachet_conn *cn) {
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  size_t off = 0;
  while (off < cn->olen) {
    int want = 0;
    ssize_t n = cachet_sock_send(&cn->s, cn->out + off, cn->olen - off, &want);
    if (n < 0)
      return broken(cn, (int)n);
    if (n > 0)
      off += (size_t)n;
    else if (wait_for(cn, want, "redis") != CACHET_OK)
      return CACHET_ETIMEDOUT;
  }
  cn->olen = 0;
  /* One large value must not stay allocated per connection. */
  if (cn->ocap > 65536) {
    free(cn->out);
    cn->out = NULL;
    cn->ocap = 0;
  }
  return CACHET_OK;
}

/*
 * Read one reply: parse what the reader holds, else receive more. Every
 * chunk is checked against the reader's bounds (reader.h) before it is
 * fed, so a server cannot make us buffer a reply larger than any value we
 * accept.
 */
int cachet_conn_read(cachet_conn *cn, redisReply **out) {
  *out = NULL;
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  /* Right after a command went out its reply cannot be here yet: wait for
   * it first instead of asking the socket in vain (a system call each). */
  int sent = cn->olen > 0;
  int rc = cachet_conn_flush(cn);
  char buf[16384];
  void *r = NULL;
  while (rc == CACHET_OK) {
    if (redisReaderGetReply(cn->reader, &r) != REDIS_OK)
      return broken(cn, cachet_fail(CACHET_EPROTO, "redis: protocol error: %s",
                                    cn->bound.refused ? cn->bound.why
                                                      : cn->reader->errstr));
    if (r != NULL)
      break;
    if (cachet_reader_check(cn->reader, &cn->bound) != 0)
      return broken(cn, cachet_fail(CACHET_EPROTO, "redis: protocol error: %s",
                                    cn->bound.why));
    int want = CACHET_SOCK_READ;
    ssize_t n = 0;
    if (sent)
      sent = 0;
    else if ((n = cachet_sock_recv(&cn->s, buf, sizeof buf, &want)) < 0)
      return broken(cn, (int)n);
    if (n == 0)
      rc = wait_for(cn, want, "redis");
    else if (redisReaderFeed(cn->reader, buf, (size_t)n) != REDIS_OK)
      return broken(cn, cachet_fail(CACHET_ENOMEM, "redis: out of memory"));
  }
  if (rc != CACHET_OK)
    return rc;
  if (cn->pending > 0)
    cn->pending--;
  *out = r;
  return CACHET_OK;
}

int cachet_conn_exchange(cachet_conn *cn, int argc, const char **argv,
                         const size_t *lens, redisReply **out) {
  *out = NULL;
  int rc = cachet_conn_append(cn, argc, argv, lens);
  if (rc != CACHET_OK)
    return rc;
  return cachet_conn_read(cn, out);
}
