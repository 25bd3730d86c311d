/* One connection to one Redis server, used by one thread at a time.
 *
 * hiredis formats nothing and writes nothing here: cachet formats RESP
 * straight into the context's output buffer and sends it with
 * send(MSG_NOSIGNAL), and it reads the socket itself, checking every chunk
 * against the reader's bounds (reader.h). hiredis's part is the connect and
 * the RESP reader. A connection that saw an I/O error, a timeout or a
 * protocol error is broken: its owner closes it. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "error.h"
#include "resp.h"

/* hiredis 0.14 reports a receive timeout as an I/O error whose errno is
 * EAGAIN (SO_RCVTIMEO) and a connect timeout as ETIMEDOUT. */
static int io_status(redisContext *ctx, int saved_errno, int timeout_ms,
                     const char *what) {
  switch (ctx->err) {
  case REDIS_ERR_IO:
    if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
        saved_errno == ETIMEDOUT || saved_errno == EINPROGRESS)
      return cachet_fail(CACHET_ETIMEDOUT,
                         "%s: no answer from the server within %d ms", what,
                         timeout_ms);
    return cachet_fail(CACHET_ECONN, "%s: %s", what, ctx->errstr);
  case REDIS_ERR_EOF:
    return cachet_fail(CACHET_ECONN, "%s: connection closed by the server",
                       what);
  case REDIS_ERR_PROTOCOL:
    return cachet_fail(CACHET_EPROTO, "%s: protocol error: %s", what,
                       ctx->errstr);
  case REDIS_ERR_OOM:
    return cachet_fail(CACHET_ENOMEM, "%s: out of memory", what);
  default:
    return cachet_fail(CACHET_ECONN, "%s: %s", what, ctx->errstr);
  }
}

/*
 * hiredis writes with write(2), and a write to a connection the server
 * closed raises SIGPIPE, whose default action kills the process. A library
 * must not change the process's signal disposition, and blocking SIGPIPE
 * around each exchange costs two system calls. So cachet never lets hiredis
 * write: commands are formatted into hiredis's output buffer as usual, and
 * sent with send(MSG_NOSIGNAL), which reports EPIPE as an error and raises
 * nothing. hiredis then only reads (its output buffer is empty). The async
 * API's write event uses the same sender (async.c).
 */
int cachet_obuf_send(redisContext *ctx) {
  size_t len = sdslen(ctx->obuf), off = 0;
  int err = 0;
  while (off < len) {
    ssize_t n = send(ctx->fd, ctx->obuf + off, len - off, MSG_NOSIGNAL);
    if (n >= 0) {
      off += (size_t)n;
    } else if (errno != EINTR) {
      err = errno;
      break;
    }
  }
  if (off == len) {
    /* As hiredis does after a write: drop a large buffer (one big value
     * must not stay allocated per connection), keep a small one. */
    sds fresh = sdsalloc(ctx->obuf) > 16384 ? sdsempty() : NULL;
    if (fresh != NULL) {
      sdsfree(ctx->obuf);
      ctx->obuf = fresh;
    } else {
      sdsclear(ctx->obuf);
    }
  } else if (off > 0) {
    sdsrange(ctx->obuf, (int)off, -1);
  }
  return err;
}

/* The socket's SO_SNDTIMEO bounds each send, as it bounded hiredis's write:
 * EAGAIN here is a timeout. */
static int send_obuf(cachet_conn *cn) {
  int err = cachet_obuf_send(cn->ctx);
  if (err == 0)
    return CACHET_OK;
  cn->broken = 1;
  cn->ctx->err = REDIS_ERR_IO;
  snprintf(cn->ctx->errstr, sizeof cn->ctx->errstr, "%s", strerror(err));
  return io_status(cn->ctx, err, cn->timeout_ms, "redis");
}

/* Queue one command, in RESP, on hiredis's output buffer. Commands over
 * INT_MAX bytes go through hiredis (sdsIncrLen takes an int). Returns
 * REDIS_OK or REDIS_ERR (out of memory). */
static int format_append(redisContext *ctx, int argc, const char **argv,
                         const size_t *lens) {
  size_t bound = cachet_resp_bound(argc, lens);
  if (bound == 0 || bound > INT_MAX)
    return redisAppendCommandArgv(ctx, argc, argv, lens);
  size_t used = sdslen(ctx->obuf);
  sds buf = sdsMakeRoomFor(ctx->obuf, bound);
  if (buf == NULL)
    return REDIS_ERR;
  ctx->obuf = buf;
  char *end = cachet_resp_write(buf + used, argc, argv, lens);
  sdsIncrLen(buf, (ssize_t)(end - (buf + used)));
  return REDIS_OK;
}

/*
 * Read one reply: parse what the reader holds, else receive more. cachet
 * reads the socket itself, as it writes it, so that every chunk is checked
 * against the reader's bounds (reader.h) before it is fed: a server cannot
 * make us buffer a reply larger than any value we accept. The socket's
 * SO_RCVTIMEO bounds each wait. On failure *out is NULL and ctx->err says
 * why, as after hiredis's own redisGetReply; returns the errno to report.
 */
static int get_reply(cachet_conn *cn, void **out) {
  redisContext *ctx = cn->ctx;
  char buf[16384];
  *out = NULL;
  for (;;) {
    if (redisGetReplyFromReader(ctx, out) != REDIS_OK) {
      if (cn->bound.refused) {
        ctx->err = REDIS_ERR_PROTOCOL;
        snprintf(ctx->errstr, sizeof ctx->errstr, "%.127s", cn->bound.why);
      }
      *out = NULL;
      return 0;
    }
    if (*out != NULL)
      return 0;
    if (cachet_reader_check(ctx->reader, &cn->bound) != 0) {
      ctx->err = REDIS_ERR_PROTOCOL;
      snprintf(ctx->errstr, sizeof ctx->errstr, "%.127s", cn->bound.why);
      return 0;
    }
    ssize_t n = recv(ctx->fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (redisReaderFeed(ctx->reader, buf, (size_t)n) != REDIS_OK) {
        ctx->err = REDIS_ERR_OOM;
        snprintf(ctx->errstr, sizeof ctx->errstr, "out of memory");
        return 0;
      }
    } else if (n == 0) {
      ctx->err = REDIS_ERR_EOF;
      snprintf(ctx->errstr, sizeof ctx->errstr, "Server closed the connection");
      return 0;
    } else if (errno != EINTR) {
      int e = errno;
      ctx->err = REDIS_ERR_IO;
      snprintf(ctx->errstr, sizeof ctx->errstr, "%s", strerror(e));
      return e;
    }
  }
}

/* A command during connection set-up (AUTH, SELECT): an error reply is the
 * server refusing us, reported with what we were doing. */
static int setup_command(cachet_conn *cn, int argc, const char **argv,
                         const size_t *lens, const char *what) {
  redisReply *r = NULL;
  int rc = cachet_conn_exchange(cn, argc, argv, lens, &r);
  if (rc == CACHET_OK && r->type == REDIS_REPLY_ERROR) {
    rc = cachet_fail_bytes(CACHET_ESERVER, NULL, r->str, r->len);
    char detail[512];
    snprintf(detail, sizeof detail, "%s", cachet_last_error());
    rc = cachet_fail(CACHET_ESERVER, "%s refused: %s", what, detail);
  }
  if (r != NULL)
    freeReplyObject(r);
  return rc;
}

int cachet_conn_connect(cachet_conn *cn, const cachet_config *cfg,
                        const char *host, int port) {
  struct timeval tv = {cfg->timeout_ms / 1000, (cfg->timeout_ms % 1000) * 1000};
  redisContext *ctx;
  char where[300];
  int node = host != NULL; /* a cluster node: its address, never SELECT */
  if (node) {
    snprintf(where, sizeof where, "connect to %s:%d", host, port);
    ctx = redisConnectWithTimeout(host, port, tv);
  } else if (cfg->unix_path != NULL) {
    snprintf(where, sizeof where, "connect to unix:%s", cfg->unix_path);
    ctx = redisConnectUnixWithTimeout(cfg->unix_path, tv);
  } else {
    snprintf(where, sizeof where, "connect to %s:%d", cfg->host, cfg->port);
    ctx = redisConnectWithTimeout(cfg->host, cfg->port, tv);
  }
  int saved = errno;
  if (ctx == NULL)
    return cachet_fail(CACHET_ENOMEM, "%s: out of memory", where);
  if (ctx->err) {
    int rc = io_status(ctx, saved, cfg->timeout_ms, where);
    redisFree(ctx);
    return rc;
  }
  if (redisSetTimeout(ctx, tv) != REDIS_OK) {
    int rc = cachet_fail(CACHET_ECONN, "%s: cannot set timeout", where);
    redisFree(ctx);
    return rc;
  }
  if (node || cfg->unix_path == NULL)
    (void)redisEnableKeepAlive(ctx);
  /* hiredis 0.14 leaves the socket inheritable: a child the application
   * spawns (cachet fetch runs one) must not keep our connection open. */
  int fdflags = fcntl(ctx->fd, F_GETFD);
  if (fdflags >= 0)
    (void)fcntl(ctx->fd, F_SETFD, fdflags | FD_CLOEXEC);
  cn->ctx = ctx;
  cn->broken = 0;
  cn->pending = 0;
  cn->timeout_ms = cfg->timeout_ms;
  cachet_reader_limits(cfg, &cn->bound);
  cachet_reader_attach(ctx->reader, &cn->bound);

  int rc = CACHET_OK;
  if (cfg->password != NULL) {
    if (cfg->username != NULL) {
      const char *argv[3] = {"AUTH", cfg->username, cfg->password};
      size_t lens[3] = {4, strlen(cfg->username), strlen(cfg->password)};
      rc = setup_command(cn, 3, argv, lens, "AUTH");
    } else {
      const char *argv[2] = {"AUTH", cfg->password};
      size_t lens[2] = {4, strlen(cfg->password)};
      rc = setup_command(cn, 2, argv, lens, "AUTH");
    }
  }
  if (rc == CACHET_OK && cfg->db != 0 && !node) {
    char db[16];
    int n = snprintf(db, sizeof db, "%d", cfg->db);
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, (size_t)n};
    rc = setup_command(cn, 2, argv, lens, "SELECT");
  }
  if (rc != CACHET_OK)
    cachet_conn_close(cn);
  return rc;
}

void cachet_conn_close(cachet_conn *cn) {
  if (cn->ctx != NULL)
    redisFree(cn->ctx);
  cn->ctx = NULL;
  cn->broken = 0;
  cn->pending = 0;
}

void cachet_conn_break(cachet_conn *cn) { cn->broken = 1; }

/* A failed read: the connection is broken, the status says why. */
static int read_failed(cachet_conn *cn, int saved_errno) {
  cn->broken = 1;
  if (cn->bound.refused)
    return cachet_fail(CACHET_EPROTO, "redis: protocol error: %s",
                       cn->bound.why);
  return io_status(cn->ctx, saved_errno, cn->timeout_ms, "redis");
}

int cachet_conn_append(cachet_conn *cn, int argc, const char **argv,
                       const size_t *lens) {
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  if (format_append(cn->ctx, argc, argv, lens) != REDIS_OK) {
    cn->broken = 1;
    return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
  }
  cn->pending++;
  return CACHET_OK;
}

int cachet_conn_flush(cachet_conn *cn) {
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  return send_obuf(cn);
}

int cachet_conn_read(cachet_conn *cn, redisReply **out) {
  *out = NULL;
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  void *r = NULL;
  /* A pipelined reply is usually buffered already: parse it without any
   * system call, and only go to the socket when none is. */
  if (redisGetReplyFromReader(cn->ctx, &r) != REDIS_OK)
    return read_failed(cn, 0);
  if (r == NULL) {
    int rc = send_obuf(cn);
    if (rc != CACHET_OK)
      return rc;
    int saved = get_reply(cn, &r);
    if (r == NULL)
      return read_failed(cn, saved);
  }
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
