/* Connections and the per-handle pool.
 *
 * The pool is a fixed array of slots and a stack of free ones behind one
 * mutex. A slot keeps its redisContext across borrows; a slot whose context
 * broke is reconnected by its next borrower, outside the lock, so a slow
 * connect never blocks other threads. Every wait has a deadline. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "cluster.h"
#include "error.h"
#include "reader.h"

struct cachet_conn {
  redisContext *ctx;
  int broken;
  int timeout_ms;
  cachet_reader_bound bound; /* what the server may make us buffer */
  cachet_endpoint *ep;          /* The pool it belongs to. */
  cachet_cluster_session *sess; /* Cluster mode: the routing session. */
};

/* A pool of connections to one server: the configured one (host NULL), or
 * one cluster node. */
struct cachet_endpoint {
  cachet *c;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int size;
  int nfree;
  int *free_idx;
  cachet_conn *slots;
  char *host; /* NULL: the configured server, unix socket and db included. */
  int port;
};

/* The handle's pool. Standalone, its slots are connections to the server.
 * In cluster mode they are routing sessions, which borrow connections from
 * the per-node endpoints that `cluster` owns. */
struct cachet_pool {
  cachet_endpoint ep;
  cachet_cluster *cluster;
};

static int endpoint_init(cachet_endpoint *ep, cachet *c, const char *host,
                         int port, int size) {
  memset(ep, 0, sizeof *ep);
  ep->c = c;
  ep->size = size;
  ep->port = port;
  ep->slots = calloc((size_t)size, sizeof *ep->slots);
  ep->free_idx = calloc((size_t)size, sizeof *ep->free_idx);
  if (host != NULL)
    ep->host = strdup(host);
  if (ep->slots == NULL || ep->free_idx == NULL ||
      (host != NULL && ep->host == NULL)) {
    free(ep->slots);
    free(ep->free_idx);
    free(ep->host);
    return cachet_fail(CACHET_ENOMEM, "out of memory creating the pool");
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  /* Deadlines are monotonic so that a clock step cannot stretch a wait. */
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&ep->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&ep->mu, NULL);
  for (int i = 0; i < size; i++) {
    ep->slots[i].timeout_ms = c->cfg.timeout_ms;
    ep->slots[i].ep = ep;
    /* Hand out low slots first so a lightly used handle keeps few
     * connections open. */
    ep->free_idx[i] = size - 1 - i;
  }
  ep->nfree = size;
  return CACHET_OK;
}

static void endpoint_fini(cachet_endpoint *ep) {
  for (int i = 0; i < ep->size; i++) {
    if (ep->slots[i].ctx != NULL)
      redisFree(ep->slots[i].ctx);
    if (ep->slots[i].sess != NULL)
      cachet_cluster_session_free(ep->slots[i].sess);
  }
  pthread_mutex_destroy(&ep->mu);
  pthread_cond_destroy(&ep->cv);
  free(ep->slots);
  free(ep->free_idx);
  free(ep->host);
}

int cachet_pool_create(cachet *c) {
  cachet_pool *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating the pool");
  int rc = endpoint_init(&p->ep, c, NULL, 0, c->cfg.pool_size);
  if (rc != CACHET_OK) {
    free(p);
    return rc;
  }
  if (c->cfg.cluster) {
    rc = cachet_cluster_create(c, &p->cluster);
    for (int i = 0; rc == CACHET_OK && i < p->ep.size; i++)
      rc = cachet_cluster_session_new(p->cluster, &p->ep.slots[i].sess);
    if (rc != CACHET_OK) {
      endpoint_fini(&p->ep);
      cachet_cluster_destroy(p->cluster);
      free(p);
      return rc;
    }
  }
  c->pool = p;
  return CACHET_OK;
}

void cachet_pool_destroy(cachet *c) {
  cachet_pool *p = c->pool;
  if (p == NULL)
    return;
  /* Sessions first: they hold no connection between borrows, but they
   * point into the cluster's node table. */
  endpoint_fini(&p->ep);
  cachet_cluster_destroy(p->cluster);
  free(p);
  c->pool = NULL;
}

int cachet_endpoint_create(cachet *c, const char *host, int port, int size,
                           cachet_endpoint **out) {
  cachet_endpoint *ep = malloc(sizeof *ep);
  if (ep == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory creating a node pool");
  int rc = endpoint_init(ep, c, host, port, size);
  if (rc != CACHET_OK) {
    free(ep);
    return rc;
  }
  *out = ep;
  return CACHET_OK;
}

void cachet_endpoint_destroy(cachet_endpoint *ep) {
  if (ep == NULL)
    return;
  endpoint_fini(ep);
  free(ep);
}

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

static int server_error(const redisReply *r) {
  return cachet_fail_bytes(CACHET_ESERVER, NULL, r->str, r->len);
}

int cachet_server_error_is(const char *code) {
  size_t n = strlen(code);
  const char *d = cachet_last_error();
  return strncmp(d, code, n) == 0 && (d[n] == ' ' || d[n] == '\0');
}

/* A command during connection set-up (AUTH, SELECT): an error reply is the
 * server refusing us, reported with what we were doing. */
static int setup_command(cachet_conn *cn, int argc, const char **argv,
                         const size_t *lens, const char *what) {
  redisReply *r = NULL;
  int rc = cachet_conn_command(cn, argc, argv, lens, &r);
  if (rc == CACHET_ESERVER) {
    char detail[512];
    snprintf(detail, sizeof detail, "%s", cachet_last_error());
    return cachet_fail(CACHET_ESERVER, "%s refused: %s", what, detail);
  }
  if (rc != CACHET_OK)
    return rc;
  freeReplyObject(r);
  return CACHET_OK;
}

static int connect_slot(cachet_endpoint *ep, cachet_conn *cn) {
  const cachet_config *cfg = &ep->c->cfg;
  struct timeval tv = {cfg->timeout_ms / 1000, (cfg->timeout_ms % 1000) * 1000};
  redisContext *ctx;
  char where[300];

  if (ep->host != NULL) {
    snprintf(where, sizeof where, "connect to %s:%d", ep->host, ep->port);
    ctx = redisConnectWithTimeout(ep->host, ep->port, tv);
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
  if (ep->host != NULL || cfg->unix_path == NULL)
    (void)redisEnableKeepAlive(ctx);
  /* hiredis 0.14 leaves the socket inheritable: a child the application
   * spawns (cachet fetch runs one) must not keep our connection open. */
  int fdflags = fcntl(ctx->fd, F_GETFD);
  if (fdflags >= 0)
    (void)fcntl(ctx->fd, F_SETFD, fdflags | FD_CLOEXEC);
  cn->ctx = ctx;
  cn->broken = 0;
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
  if (rc == CACHET_OK && cfg->db != 0 && ep->host == NULL) {
    char db[16];
    int n = snprintf(db, sizeof db, "%d", cfg->db);
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, (size_t)n};
    rc = setup_command(cn, 2, argv, lens, "SELECT");
  }
  if (rc != CACHET_OK) {
    redisFree(cn->ctx);
    cn->ctx = NULL;
  }
  return rc;
}

static int endpoint_borrow(cachet_endpoint *ep, cachet_conn **out,
                           int connect) {
  int timeout_ms = ep->c->cfg.timeout_ms;
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }

  pthread_mutex_lock(&ep->mu);
  while (ep->nfree == 0) {
    int w = pthread_cond_timedwait(&ep->cv, &ep->mu, &dl);
    if (w == ETIMEDOUT && ep->nfree == 0) {
      pthread_mutex_unlock(&ep->mu);
      return cachet_fail(CACHET_ETIMEDOUT,
                         "no pooled connection became free within %d ms "
                         "(pool_size %d)",
                         timeout_ms, ep->size);
    }
  }
  int idx = ep->free_idx[--ep->nfree];
  pthread_mutex_unlock(&ep->mu);

  cachet_conn *cn = &ep->slots[idx];
  if (connect && cn->ctx == NULL) {
    int rc = connect_slot(ep, cn);
    if (rc != CACHET_OK) {
      cachet_endpoint_release(cn);
      return rc;
    }
  }
  *out = cn;
  return CACHET_OK;
}

int cachet_endpoint_acquire(cachet_endpoint *ep, cachet_conn **out) {
  return endpoint_borrow(ep, out, 1);
}

void cachet_endpoint_release(cachet_conn *cn) {
  if (cn == NULL)
    return;
  cachet_endpoint *ep = cn->ep;
  if (cn->broken && cn->ctx != NULL) {
    redisFree(cn->ctx);
    cn->ctx = NULL;
  }
  cn->broken = 0;
  pthread_mutex_lock(&ep->mu);
  ep->free_idx[ep->nfree++] = (int)(cn - ep->slots);
  pthread_cond_signal(&ep->cv);
  pthread_mutex_unlock(&ep->mu);
}

int cachet_conn_acquire(cachet *c, cachet_conn **out) {
  cachet_pool *p = c->pool;
  int rc = endpoint_borrow(&p->ep, out, p->cluster == NULL);
  if (rc == CACHET_OK && p->cluster != NULL &&
      (rc = cachet_cluster_begin((*out)->sess)) != CACHET_OK) {
    cachet_cluster_end((*out)->sess);
    cachet_endpoint_release(*out);
    *out = NULL;
  }
  return rc;
}

void cachet_conn_release(cachet *c, cachet_conn *cn) {
  (void)c;
  if (cn == NULL)
    return;
  if (cn->sess != NULL)
    cachet_cluster_end(cn->sess);
  cachet_endpoint_release(cn);
}

void cachet_conn_break(cachet_conn *cn) {
  if (cn->sess != NULL)
    cachet_cluster_break(cn->sess);
  else
    cn->broken = 1;
}

int cachet_node_error(redisReply *r) {
  int rc = server_error(r);
  freeReplyObject(r);
  return rc;
}

/* A reply as hiredis gave it: NULL is an I/O failure, which breaks the
 * connection. Error replies are passed on as replies. */
static int raw_reply(cachet_conn *cn, redisReply *r, int saved_errno,
                     redisReply **out) {
  if (r == NULL) {
    cn->broken = 1;
    return io_status(cn->ctx, saved_errno, cn->timeout_ms, "redis");
  }
  *out = r;
  return CACHET_OK;
}

static int map_reply(cachet_conn *cn, redisReply *r, int saved_errno,
                     redisReply **out) {
  if (r == NULL) {
    cn->broken = 1;
    return io_status(cn->ctx, saved_errno, cn->timeout_ms, "redis");
  }
  if (r->type == REDIS_REPLY_ERROR)
    return cachet_node_error(r);
  *out = r;
  return CACHET_OK;
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

/* Decimal digits of v. */
static size_t digits(size_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    n++;
  }
  return n;
}

/* `mark` (e.g. '$'), v in decimal and CRLF at p, which has room for them;
 * returns the end. */
static char *put_header(char *p, char mark, size_t v) {
  size_t n = digits(v);
  *p++ = mark;
  for (size_t i = n; i-- > 0; v /= 10)
    p[i] = (char)('0' + v % 10);
  p += n;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

/* Queue one command, in RESP, on hiredis's output buffer. hiredis 0.14
 * formats an argv through sdscatfmt, piece by piece, into a fresh string
 * that it then copies: in a pipelined batch that was the client's largest
 * cost. Here the length is computed once and each piece is copied once,
 * straight into the buffer. Returns REDIS_OK or REDIS_ERR (out of memory).*/
static int format_append(redisContext *ctx, int argc, const char **argv,
                         const size_t *lens) {
  size_t total = 1 + digits((size_t)argc) + 2;
  for (int i = 0; i < argc && total <= INT_MAX; i++)
    total +=
        1 + digits(lens[i]) + 2 + (lens[i] < INT_MAX ? lens[i] : INT_MAX) + 2;
  if (total > INT_MAX) /* sdsIncrLen takes an int: hiredis's way, slower */
    return redisAppendCommandArgv(ctx, argc, argv, lens);
  size_t used = sdslen(ctx->obuf);
  sds buf = sdsMakeRoomFor(ctx->obuf, total);
  if (buf == NULL)
    return REDIS_ERR;
  ctx->obuf = buf;
  char *p = put_header(buf + used, '*', (size_t)argc);
  for (int i = 0; i < argc; i++) {
    p = put_header(p, '$', lens[i]);
    if (lens[i] > 0)
      memcpy(p, argv[i], lens[i]);
    p += lens[i];
    *p++ = '\r';
    *p++ = '\n';
  }
  sdsIncrLen(buf, (ssize_t)total);
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

/* One exchange on one connection; `raw` keeps error replies as replies. */
static int exchange(cachet_conn *cn, int argc, const char **argv,
                    const size_t *lens, redisReply **out, int raw) {
  *out = NULL;
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  if (format_append(cn->ctx, argc, argv, lens) != REDIS_OK) {
    cn->broken = 1;
    return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
  }
  int rc = send_obuf(cn);
  if (rc != CACHET_OK)
    return rc;
  void *r = NULL;
  int saved = get_reply(cn, &r);
  return raw ? raw_reply(cn, r, saved, out) : map_reply(cn, r, saved, out);
}

static int append(cachet_conn *cn, int argc, const char **argv,
                  const size_t *lens) {
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  if (format_append(cn->ctx, argc, argv, lens) != REDIS_OK) {
    cn->broken = 1;
    return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
  }
  return CACHET_OK;
}

static int read_one(cachet_conn *cn, redisReply **out, int raw) {
  *out = NULL;
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  void *r = NULL;
  /* A pipelined reply is usually buffered already: parse it without any
   * system call, and only go to the socket when none is. */
  if (redisGetReplyFromReader(cn->ctx, &r) != REDIS_OK) {
    cn->broken = 1;
    return cachet_fail(CACHET_EPROTO, "redis: protocol error: %s",
                       cn->bound.refused ? cn->bound.why : cn->ctx->errstr);
  }
  if (r != NULL)
    return raw ? raw_reply(cn, r, 0, out) : map_reply(cn, r, 0, out);
  int rc = send_obuf(cn);
  if (rc != CACHET_OK)
    return rc;
  int saved = get_reply(cn, &r);
  return raw ? raw_reply(cn, r, saved, out) : map_reply(cn, r, saved, out);
}

int cachet_conn_command(cachet_conn *cn, int argc, const char **argv,
                        const size_t *lens, redisReply **out) {
  if (cn->sess != NULL)
    return cachet_cluster_command(cn->sess, argc, argv, lens, out);
  return exchange(cn, argc, argv, lens, out, 0);
}

int cachet_conn_append(cachet_conn *cn, int argc, const char **argv,
                       const size_t *lens) {
  if (cn->sess != NULL)
    return cachet_cluster_append(cn->sess, argc, argv, lens);
  return append(cn, argc, argv, lens);
}

int cachet_conn_read(cachet_conn *cn, redisReply **out) {
  if (cn->sess != NULL)
    return cachet_cluster_read(cn->sess, out, 0);
  return read_one(cn, out, 0);
}

int cachet_conn_read_raw(cachet_conn *cn, redisReply **out) {
  if (cn->sess != NULL)
    return cachet_cluster_read(cn->sess, out, 1);
  return read_one(cn, out, 1);
}

int cachet_conn_append_node(cachet_conn *cn, int node, int argc,
                            const char **argv, const size_t *lens) {
  if (cn->sess != NULL)
    return cachet_cluster_append_node(cn->sess, node, argc, argv, lens);
  if (node != 0)
    return cachet_fail(CACHET_EINTERNAL, "no node %d on a single server", node);
  return append(cn, argc, argv, lens);
}

int cachet_conn_last_node(const cachet_conn *cn) {
  return cn->sess != NULL ? cachet_cluster_last(cn->sess) : 0;
}

int cachet_conn_command_at(cachet_conn *cn, int node, int argc,
                           const char **argv, const size_t *lens,
                           redisReply **out) {
  if (cn->sess != NULL)
    return cachet_cluster_command_at(cn->sess, node, argc, argv, lens, out);
  return exchange(cn, argc, argv, lens, out, 0);
}

int cachet_node_command(cachet_conn *cn, int argc, const char **argv,
                        const size_t *lens, redisReply **out) {
  return exchange(cn, argc, argv, lens, out, 1);
}

int cachet_node_append(cachet_conn *cn, int argc, const char **argv,
                       const size_t *lens) {
  return append(cn, argc, argv, lens);
}

int cachet_node_read(cachet_conn *cn, redisReply **out) {
  return read_one(cn, out, 1);
}

int cachet_node_flush(cachet_conn *cn) {
  if (cn->broken)
    return cachet_fail(CACHET_ECONN, "connection is broken");
  return send_obuf(cn);
}

int cachet_conn_clustered(const cachet_conn *cn) { return cn->sess != NULL; }

int cachet_conn_nodes(cachet_conn *cn) {
  if (cn->sess != NULL)
    return cachet_cluster_nodes(cn->sess);
  return 1;
}

int cachet_conn_command_node(cachet_conn *cn, int node, int argc,
                             const char **argv, const size_t *lens,
                             redisReply **out) {
  if (cn->sess != NULL)
    return cachet_cluster_command_node(cn->sess, node, argc, argv, lens, out);
  if (node != 0) {
    *out = NULL;
    return cachet_fail(CACHET_EINTERNAL, "no node %d on a single server", node);
  }
  return exchange(cn, argc, argv, lens, out, 0);
}

const char *cachet_conn_node_name(cachet_conn *cn, int node) {
  if (cn->sess != NULL)
    return cachet_cluster_node_name(cn->sess, node);
  return "server";
}

int cachet_conn_command_last(cachet_conn *cn, int argc, const char **argv,
                             const size_t *lens, redisReply **out) {
  if (cn->sess != NULL)
    return cachet_cluster_command_last(cn->sess, argc, argv, lens, out);
  return exchange(cn, argc, argv, lens, out, 0);
}
