/* The async handle, its connection, and the life of an operation.
 *
 * See async.h for the shape. What this file guarantees:
 *  - every operation's result is delivered exactly once: by its own code,
 *    by a lost connection (hiredis calls each pending callback with a NULL
 *    reply), by its timer, or by cachet_async_close;
 *  - a result decided inside the public call that started the operation is
 *    delivered from the loop (an activated event), never from the call;
 *  - nothing that hiredis or libevent can still call into is freed.
 *
 * The connection. hiredis 0.14 has no timeouts and no reconnection: each
 * step of an operation arms its own timer (libevent "common timeout", so
 * thousands cost O(1) each), and a connection that died is forgotten so that
 * the next command opens a new one. AUTH and SELECT are queued ahead of
 * everything else on a new connection; if the server refuses them the
 * connection is dropped and the operations queued behind get the refusal.
 *
 * SIGPIPE. hiredis writes with write(2); writing to a connection the server
 * closed raises SIGPIPE, which kills a process that left it at its default.
 * When it is at its default, the write event of hiredis's libevent adapter
 * is re-pointed at nosignal_write: as in conn.c, cachet sends the output
 * buffer itself with send(MSG_NOSIGNAL). Only the connect step and a failed
 * send fall back to hiredis's write, with SIGPIPE blocked in the loop thread
 * and the signal it raised consumed (guarded_write). */
#include "async.h"

#include "cachet.h"

#ifdef CACHET_HAVE_LIBEVENT

#include <errno.h>
#include <fcntl.h>
#include <hiredis/adapters/libevent.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "error.h"
#include "script.h"

static void conn_drop(aconn *cn, int rc, const char *detail);
static void handle_maybe_free(cachet_async *a);

/* ---- SIGPIPE guard around hiredis's writes ------------------------------ */

/* Blocking SIGPIPE costs a system call on each side of the write; the
 * pending signal is looked for only when the write lost the connection
 * (the connection record reports its death through `lost`). A
 * SIGPIPE pending before our write can only exist if the thread already
 * blocked SIGPIPE itself; only then is the pending set read first, so that
 * we never consume a signal that is not ours. */
static void guarded_write(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  redisLibeventEvents *e = arg;
  aconn *cn = e->context->data;
  sigset_t block, old, pending;
  sigemptyset(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int user_blocks = sigismember(&old, SIGPIPE);
  int was_pending = 0;
  if (user_blocks) {
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
  }
  int lost = 0;
  if (cn != NULL)
    cn->lost = &lost;
  /* May free the context, `e` and cn with it: only `lost` is read after. */
  redisAsyncHandleWrite(e->context);
  if (!lost && cn != NULL)
    cn->lost = NULL;
  if ((lost || cn == NULL) && !was_pending) {
    sigemptyset(&pending);
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE)) {
      struct timespec zero = {0, 0};
      while (sigtimedwait(&block, NULL, &zero) < 0 && errno == EINTR) {
      }
    }
  }
  if (!user_blocks)
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The write event when SIGPIPE is at its default: send hiredis's output
 * buffer here with send(MSG_NOSIGNAL), which costs no signal-mask system
 * calls, and let hiredis do its bookkeeping with the buffer empty (it then
 * stops watching for writability and reads). Only the connect step and a
 * failed send go through hiredis's own write, guarded: the failure repeats
 * there (the socket stays in error) and hiredis tears the connection down
 * as it always does, with the SIGPIPE it raises consumed. */
static void nosignal_write(evutil_socket_t fd, short what, void *arg) {
  redisLibeventEvents *e = arg;
  redisContext *c = &e->context->c;
  if (!(c->flags & REDIS_CONNECTED)) {
    guarded_write(fd, what, arg);
    return;
  }
  int err = cachet_obuf_send(c);
  if (err != 0 && err != EAGAIN && err != EWOULDBLOCK) {
    guarded_write(fd, what, arg);
    return;
  }
  if (sdslen(c->obuf) > 0) {
    /* The socket is full: wait for it, as hiredis would. */
    event_add(e->wev, NULL);
    event_add(e->rev, NULL);
    return;
  }
  redisAsyncHandleWrite(e->context); /* nothing left to write */
}

/* ---- Connections -------------------------------------------------------- */

static void conn_mark_dead(aconn *cn, int rc, const char *detail) {
  cn->dead = 1;
  if (cn->lost != NULL) {
    *cn->lost = 1;
    cn->lost = NULL;
  }
  cn->rc = rc;
  snprintf(cn->detail, sizeof cn->detail, "%s", detail);
  if (cn->a != NULL && cn->a->conn == cn)
    cn->a->conn = NULL;
  cn->a = NULL;
  /* hiredis frees the context next; it must not call us about it. */
  cn->ac->onConnect = NULL;
  cn->ac->onDisconnect = NULL;
}

/* Why hiredis gave up on a context. */
static int conn_error(const redisAsyncContext *ac, char *detail, size_t n) {
  switch (ac->err) {
  case REDIS_ERR_EOF:
    snprintf(detail, n, "redis: connection closed by the server");
    return CACHET_ECONN;
  case REDIS_ERR_PROTOCOL:
    snprintf(detail, n, "redis: protocol error: %s", ac->errstr);
    return CACHET_EPROTO;
  case REDIS_ERR_OOM:
    snprintf(detail, n, "redis: out of memory");
    return CACHET_ENOMEM;
  case 0:
    snprintf(detail, n, "redis: connection closed");
    return CACHET_ECONN;
  default:
    snprintf(detail, n, "redis: %s", ac->errstr ? ac->errstr : "I/O error");
    return CACHET_ECONN;
  }
}

static void conn_lost(aconn *cn) {
  if (cn->dead)
    return;
  char detail[256];
  int rc = conn_error(cn->ac, detail, sizeof detail);
  if (cn->bound.refused) { /* the reader refused an array (reader.h) */
    rc = CACHET_EPROTO;
    snprintf(detail, sizeof detail, "redis: protocol error: %s",
             cn->bound.why);
  }
  conn_mark_dead(cn, rc, detail);
}

/* The read event: hiredis reads and hands out every complete reply, then
 * what it holds unparsed is checked against the bounds, as conn.c checks
 * before each read (reader.h). Each read adds at most 16 KiB, so a reply
 * too large is dropped before it is buffered. */
static void bounded_read(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  redisLibeventEvents *e = arg;
  aconn *cn = e->context->data;
  if (cn == NULL) {
    redisAsyncHandleRead(e->context);
    return;
  }
  int lost = 0;
  cn->lost = &lost;
  /* May free the context, `e` and cn with it: only `lost` is read after. */
  redisAsyncHandleRead(e->context);
  if (lost)
    return;
  cn->lost = NULL;
  if (cachet_reader_check(cn->ac->c.reader, &cn->bound) != 0) {
    char detail[256];
    snprintf(detail, sizeof detail, "redis: protocol error: %s",
             cn->bound.why);
    conn_drop(cn, CACHET_EPROTO, detail);
  }
}

static void on_connect(const redisAsyncContext *cac, int status) {
  aconn *cn = cac->data;
  if (status == REDIS_OK || cn == NULL || cn->dead)
    return;
  char detail[256];
  (void)conn_error(cac, detail, sizeof detail);
  const cachet_config *cfg = &cn->a->c->cfg;
  char msg[400];
  if (cfg->unix_path != NULL)
    snprintf(msg, sizeof msg, "connect to unix:%s: %s", cfg->unix_path,
             cac->errstr ? cac->errstr : detail);
  else
    snprintf(msg, sizeof msg, "connect to %s:%d: %s", cfg->host, cfg->port,
             cac->errstr ? cac->errstr : detail);
  conn_mark_dead(cn, CACHET_ECONN, msg);
  if (cn->pending == 0)
    free(cn);
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
  (void)status;
  aconn *cn = cac->data;
  if (cn == NULL)
    return;
  conn_lost(cn);
  if (cn->pending == 0)
    free(cn);
}

/* The reply to AUTH or SELECT on a new connection. A refusal drops the
 * connection, and the operations queued behind it get the server's words,
 * as the sync API reports them. */
static void setup_reply(aconn *cn, redisReply *r, const char *what) {
  cn->pending--;
  if (r == NULL) {
    conn_lost(cn);
  } else if (!cn->dead && r->type == REDIS_REPLY_ERROR) {
    char msg[256];
    int n = r->len > 200 ? 200 : (int)r->len;
    snprintf(msg, sizeof msg, "%s refused: %.*s", what, n, r->str);
    conn_drop(cn, CACHET_ESERVER, msg);
    return;
  }
  if (cn->dead && cn->pending == 0)
    free(cn);
}

static void auth_reply(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  setup_reply(priv, reply, "AUTH");
}

static void select_reply(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  setup_reply(priv, reply, "SELECT");
}

static int conn_setup(aconn *cn, redisCallbackFn *fn, int argc,
                      const char **argv, const size_t *lens) {
  if (redisAsyncCommandArgv(cn->ac, fn, cn, argc, argv, lens) != REDIS_OK)
    return cachet_fail(CACHET_ENOMEM, "out of memory queueing AUTH/SELECT");
  cn->pending++;
  return CACHET_OK;
}

static int conn_open(cachet_async *a) {
  const cachet_config *cfg = &a->c->cfg;
  char where[300];
  redisAsyncContext *ac;
  if (cfg->unix_path != NULL) {
    snprintf(where, sizeof where, "connect to unix:%s", cfg->unix_path);
    ac = redisAsyncConnectUnix(cfg->unix_path);
  } else {
    snprintf(where, sizeof where, "connect to %s:%d", cfg->host, cfg->port);
    ac = redisAsyncConnect(cfg->host, cfg->port);
  }
  if (ac == NULL)
    return cachet_fail(CACHET_ENOMEM, "%s: out of memory", where);
  if (ac->err) {
    int rc = cachet_fail(CACHET_ECONN, "%s: %s", where, ac->errstr);
    redisAsyncFree(ac);
    return rc;
  }
  aconn *cn = calloc(1, sizeof *cn);
  if (cn == NULL || redisLibeventAttach(ac, a->base) != REDIS_OK) {
    free(cn);
    redisAsyncFree(ac);
    return cachet_fail(CACHET_ENOMEM, "%s: out of memory", where);
  }
  int fdflags = fcntl(ac->c.fd, F_GETFD);
  if (fdflags >= 0)
    (void)fcntl(ac->c.fd, F_SETFD, fdflags | FD_CLOEXEC);
  if (cfg->unix_path == NULL)
    (void)redisEnableKeepAlive(&ac->c);
  redisLibeventEvents *e = ac->ev.data;
  if (a->guard_sigpipe) {
    event_del(e->wev);
    event_assign(e->wev, a->base, ac->c.fd, EV_WRITE, nosignal_write, e);
    event_add(e->wev, NULL);
  }
  event_del(e->rev);
  event_assign(e->rev, a->base, ac->c.fd, EV_READ, bounded_read, e);
  event_add(e->rev, NULL);
  cachet_reader_limits(cfg, &cn->bound);
  cachet_reader_attach(ac->c.reader, &cn->bound);
  cn->a = a;
  cn->ac = ac;
  ac->data = cn;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  a->conn = cn;

  int rc = CACHET_OK;
  if (cfg->password != NULL) {
    if (cfg->username != NULL) {
      const char *argv[3] = {"AUTH", cfg->username, cfg->password};
      size_t lens[3] = {4, strlen(cfg->username), strlen(cfg->password)};
      rc = conn_setup(cn, auth_reply, 3, argv, lens);
    } else {
      const char *argv[2] = {"AUTH", cfg->password};
      size_t lens[2] = {4, strlen(cfg->password)};
      rc = conn_setup(cn, auth_reply, 2, argv, lens);
    }
  }
  if (rc == CACHET_OK && cfg->db != 0) {
    char db[16];
    int n = snprintf(db, sizeof db, "%d", cfg->db);
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, (size_t)n};
    rc = conn_setup(cn, select_reply, 2, argv, lens);
  }
  if (rc != CACHET_OK) {
    char detail[256];
    snprintf(detail, sizeof detail, "%s", cachet_last_error());
    conn_drop(cn, rc, detail);
    return cachet_fail(rc, "%s", detail);
  }
  return CACHET_OK;
}

/* Give up on a connection: the operations waiting on it fail with `rc`,
 * and the next command opens a new one. */
static void conn_drop(aconn *cn, int rc, const char *detail) {
  if (cn->dead)
    return;
  redisAsyncContext *ac = cn->ac;
  conn_mark_dead(cn, rc, detail);
  /* With callbacks pending, the last of them frees cn; without, nothing of
   * hiredis calls in again. */
  int free_now = cn->pending == 0;
  redisAsyncFree(ac);
  if (free_now)
    free(cn);
}

/* ---- Operations --------------------------------------------------------- */

static size_t round_up(size_t n) {
  size_t al = alignof(max_align_t);
  return (n + al - 1) / al * al;
}

static void list_remove(aop *op) {
  cachet_async *a = op->a;
  if (op->prev != NULL)
    op->prev->next = op->next;
  else
    a->head = op->next;
  if (op->next != NULL)
    op->next->prev = op->prev;
  else
    a->tail = op->prev;
  op->prev = op->next = NULL;
  op->listed = 0;
}

static void op_maybe_free(aop *op) {
  if (!op->done || op->listed || op->pending > 0 || op->busy > 0)
    return;
  cachet_async *a = op->a;
  if (op->tmode != AOP_TM_NONE)
    event_del(op->ev);
  if (op->k->cleanup != NULL)
    op->k->cleanup(op);
  free(op->deferred_detail);
  free(op);
  a->nops--;
  handle_maybe_free(a);
}

static void op_deliver(aop *op, int rc) {
  list_remove(op);
  /* A child's error is counted by its parent, as the batch sees fit. */
  if (rc < 0 && op->parent == NULL && !op->counted)
    (void)cachet_result(op->a->c, rc);
  else if (rc == CACHET_OK || rc == CACHET_MISS)
    cachet_error_clear();
  op->busy++;
  aop *parent = op->parent;
  if (parent != NULL) {
    parent->busy++;
    parent->children--;
    op->child_done(parent, op, rc);
    parent->busy--;
    op_maybe_free(parent);
  } else {
    op->k->deliver(op, rc);
  }
  op->busy--;
  op_maybe_free(op);
}

static void op_timer_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  aop *op = arg;
  int mode = op->tmode;
  op->tmode = AOP_TM_NONE;
  op->busy++;
  if (mode == AOP_TM_DEFER) {
    (void)cachet_fail(op->deferred_rc, "%s",
                      op->deferred_detail ? op->deferred_detail : "");
    op_deliver(op, op->deferred_rc);
  } else if (mode == AOP_TM_REPLY && !op->done) {
    cachet_async *a = op->a;
    int ms = a->c->cfg.timeout_ms;
    int waiting = op->pending > 0;
    char detail[160];
    snprintf(detail, sizeof detail,
             "connection dropped: an operation got no reply within %d ms", ms);
    (void)cachet_fail(CACHET_ETIMEDOUT,
                      "%s: no answer from the server within %d ms", op->k->name,
                      ms);
    cachet_aop_finish(op, CACHET_ETIMEDOUT);
    /* As in the sync API, a server that missed a deadline is treated as
     * gone: the operations queued behind on the connection fail, and the
     * next one reconnects. */
    if (waiting && a->conn != NULL)
      conn_drop(a->conn, CACHET_ECONN, detail);
  } else if (!op->done && op->k->timer != NULL) {
    op->k->timer(op);
  }
  op->busy--;
  op_maybe_free(op);
}

aop *cachet_aop_new(cachet_async *a, const aop_kind *k, size_t size,
                    int nevents, event_callback_fn extra_cb, aop_cb cb,
                    void *ud) {
  size_t evsz = round_up(event_get_struct_event_size());
  size_t base = round_up(size);
  aop *op = calloc(1, base + (size_t)nevents * evsz);
  if (op == NULL) {
    (void)cachet_fail(CACHET_ENOMEM, "out of memory starting an operation");
    return NULL;
  }
  op->k = k;
  op->a = a;
  op->cb = cb;
  op->ud = ud;
  op->script_id = -1;
  op->ev = (struct event *)((char *)op + base);
  event_assign(op->ev, a->base, -1, 0, op_timer_cb, op);
  for (int i = 1; i < nevents; i++)
    event_assign((struct event *)((char *)op + base + (size_t)i * evsz),
                 a->base, -1, 0, extra_cb, op);
  op->listed = 1;
  op->prev = a->tail;
  if (a->tail != NULL)
    a->tail->next = op;
  else
    a->head = op;
  a->tail = op;
  a->nops++;
  return op;
}

void cachet_aop_hold(aop *op) { op->busy++; }

void cachet_aop_unhold(aop *op) {
  op->busy--;
  op_maybe_free(op);
}

void cachet_aop_discard(aop *op) {
  op->done = 1;
  if (op->listed)
    list_remove(op);
  op_maybe_free(op);
}

struct event *cachet_aop_event(aop *op, int i) {
  size_t evsz = round_up(event_get_struct_event_size());
  return (struct event *)((char *)op->ev + (size_t)i * evsz);
}

void cachet_aop_adopt(aop *parent, aop *child, aop_child_fn fn) {
  child->parent = parent;
  child->child_done = fn;
  parent->children++;
}

void cachet_aop_start(aop *op, void (*step)(aop *op)) {
  op->starting = 1;
  op->busy++;
  step(op);
  op->starting = 0;
  op->busy--;
  op_maybe_free(op);
}

void cachet_aop_finish(aop *op, int rc) {
  if (op->done)
    return;
  op->done = 1;
  event_del(op->ev);
  op->tmode = AOP_TM_NONE;
  if (op->k->stop != NULL)
    op->k->stop(op);
  if (op->starting) {
    /* Never call back from inside the call that started the operation. */
    op->deferred_rc = rc;
    op->deferred_detail = strdup(cachet_last_error());
    op->tmode = AOP_TM_DEFER;
    event_active(op->ev, EV_TIMEOUT, 1);
    return;
  }
  op_deliver(op, rc);
}

void cachet_aop_proto(aop *op, const char *what) {
  (void)cachet_fail(CACHET_EPROTO, "%s: unexpected reply", what);
  cachet_aop_finish(op, CACHET_EPROTO);
}

void cachet_aop_server_error(aop *op, const redisReply *r) {
  (void)cachet_fail_bytes(CACHET_ESERVER, NULL, r->str, r->len);
  cachet_aop_finish(op, CACHET_ESERVER);
}

void cachet_aop_timer(aop *op, int tmode, int64_t ms) {
  if (ms < 0)
    ms = 0;
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  event_del(op->ev);
  op->tmode = tmode;
  event_add(op->ev, &tv);
}

static int is_noscript(const redisReply *r) {
  return r->type == REDIS_REPLY_ERROR && r->len >= 8 &&
         memcmp(r->str, "NOSCRIPT", 8) == 0 &&
         (r->len == 8 || r->str[8] == ' ');
}

/* The reply to a SCRIPT LOAD sent for NOSCRIPT recovery. */
static void load_reply(aop *op, redisReply *r) {
  const cachet_script *s = &cachet_scripts[op->script_id];
  if (r->type == REDIS_REPLY_ERROR) {
    cachet_aop_server_error(op, r);
    return;
  }
  CACHET_COUNT(op->a->c, script_reloads, 1);
  if (r->type != REDIS_REPLY_STRING || r->len != 40 ||
      memcmp(r->str, s->sha, 40) != 0) {
    (void)cachet_fail(CACHET_EINTERNAL,
                      "SCRIPT LOAD of %s returned a SHA1 other than the "
                      "embedded %s",
                      s->name, s->sha);
    cachet_aop_finish(op, CACHET_EINTERNAL);
  }
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *priv) {
  aconn *cn = ac->data;
  aop *op = priv;
  redisReply *r = reply;
  int lost_rc = CACHET_OK;
  char lost[512];
  cn->pending--;
  if (r == NULL) {
    conn_lost(cn);
    lost_rc = cn->rc;
    snprintf(lost, sizeof lost, "%s", cn->detail);
  }
  if (cn->dead && cn->pending == 0)
    free(cn);
  /* cn is not touched below: user code may drop or free it. */
  op->pending--;
  op->busy++;
  if (op->done) {
    /* A late reply (the operation timed out or was closed): dropped. */
  } else if (r == NULL) {
    (void)cachet_fail(lost_rc, "%s", lost);
    cachet_aop_finish(op, lost_rc);
  } else if (op->expect_load > 0) {
    op->expect_load--;
    load_reply(op, r);
  } else if (op->script_id >= 0 && !op->reloaded && is_noscript(r)) {
    /* The script cache was flushed (or this is a new server): load the
     * script and send the call again; the caller never sees it. */
    const cachet_script *s = &cachet_scripts[op->script_id];
    const char *argv[3] = {"SCRIPT", "LOAD", s->body};
    size_t lens[3] = {6, 4, s->len};
    op->reloaded = 1;
    int rc = cachet_aop_send(op, 3, argv, lens);
    if (rc == CACHET_OK) {
      op->expect_load++;
      op->resending = 1;
      op->k->resend(op);
      op->resending = 0;
    } else {
      cachet_aop_finish(op, rc);
    }
  } else {
    op->k->reply(op, r);
  }
  /* Every reply of the step is in and nothing new was sent: the step's
   * deadline is met. */
  if (op->pending == 0 && op->tmode == AOP_TM_REPLY) {
    event_del(op->ev);
    op->tmode = AOP_TM_NONE;
  }
  op->busy--;
  op_maybe_free(op);
}

int cachet_aop_send(aop *op, int argc, const char **argv, const size_t *lens) {
  cachet_async *a = op->a;
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  if (a->conn == NULL) {
    int rc = conn_open(a);
    if (rc != CACHET_OK)
      return rc;
  }
  aconn *cn = a->conn;
  if (redisAsyncCommandArgv(cn->ac, reply_cb, op, argc, argv, lens) != REDIS_OK)
    return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
  cn->pending++;
  if ((op->pending++ == 0 || op->tmode != AOP_TM_REPLY) && !op->done &&
      op->tmode != AOP_TM_LOADER) {
    /* The first command of a step: its replies are due in timeout_ms. (A
     * lease renewal while a loader runs is bounded by the loader's
     * deadline instead.) The event is pending only when tmode says so. */
    if (op->tmode != AOP_TM_NONE)
      event_del(op->ev);
    op->tmode = AOP_TM_REPLY;
    event_add(op->ev, a->reply_tv);
  }
  return CACHET_OK;
}

int cachet_aop_script(aop *op, cachet_script_id id, int nkeys, int nargs,
                      const char *const *args, const size_t *lens) {
  cachet_evalsha e;
  int rc = cachet_evalsha_build(&e, id, nkeys, nargs, args, lens);
  if (rc != CACHET_OK)
    return rc;
  op->script_id = (int)id;
  if (!op->resending)
    op->reloaded = 0;
  rc = cachet_aop_send(op, e.argc, e.argv, e.lens);
  cachet_evalsha_free(&e);
  return rc;
}

char *cachet_reply_take(redisReply *r) {
  char *s = r->str;
  r->str = NULL;
  return s;
}

/* ---- The handle --------------------------------------------------------- */

static void handle_maybe_free(cachet_async *a) {
  if (!a->closing || a->in_close || a->nops > 0)
    return;
  cachet_close(a->c);
  free(a);
}

int cachet_async_open(cachet_async **out, struct event_base *base,
                      const cachet_options *opts) {
  *out = NULL;
  cachet_error_clear();
  if (base == NULL)
    return cachet_fail(CACHET_EINVAL, "event base must not be NULL");
  cachet *c;
  int rc = cachet_open(&c, opts);
  if (rc != CACHET_OK)
    return rc;
  if (c->cfg.cluster) {
    cachet_close(c);
    return cachet_fail(CACHET_ENOTSUP,
                       "the async API does not support Redis Cluster yet "
                       "(CACHET_CLUSTER / redis+cluster://)");
  }
  cachet_async *a = calloc(1, sizeof *a);
  if (a == NULL) {
    cachet_close(c);
    return cachet_fail(CACHET_ENOMEM, "out of memory opening a handle");
  }
  a->c = c;
  a->base = base;
  int ms = c->cfg.timeout_ms;
  a->reply_tv_plain.tv_sec = ms / 1000;
  a->reply_tv_plain.tv_usec = (suseconds_t)(ms % 1000) * 1000;
  /* Every reply timer has the same duration: a common timeout queue makes
   * adding and removing one O(1) instead of a heap operation. */
  a->reply_tv = event_base_init_common_timeout(base, &a->reply_tv_plain);
  if (a->reply_tv == NULL)
    a->reply_tv = &a->reply_tv_plain;
  struct sigaction sa;
  a->guard_sigpipe =
      sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler == SIG_DFL;
  *out = a;
  return CACHET_OK;
}

void cachet_async_close(cachet_async *a) {
  if (a == NULL || a->closing)
    return;
  a->closing = 1;
  a->in_close = 1;
  /* Newest first: children come after their parents, so a parent hears
   * of its children's ends before its own turn. */
  while (a->tail != NULL) {
    aop *op = a->tail;
    op->busy++;
    if (op->tmode == AOP_TM_DEFER) {
      event_del(op->ev);
      op->tmode = AOP_TM_NONE;
      (void)cachet_fail(op->deferred_rc, "%s",
                        op->deferred_detail ? op->deferred_detail : "");
      op_deliver(op, op->deferred_rc);
    } else if (op->done) {
      /* Decided, delivery under way up the stack: nothing to do here but
       * leave the list. */
      list_remove(op);
    } else {
      (void)cachet_fail(CACHET_ECONN,
                        "closed: the async handle was closed with the "
                        "operation in flight");
      cachet_aop_finish(op, CACHET_ECONN);
    }
    op->busy--;
    op_maybe_free(op);
  }
  if (a->conn != NULL)
    conn_drop(a->conn, CACHET_ECONN, "closed");
  a->in_close = 0;
  handle_maybe_free(a);
}

void cachet_async_set_data(cachet_async *a, void *data) { a->data = data; }

void *cachet_async_get_data(const cachet_async *a) { return a->data; }

cachet *cachet_async_cachet(cachet_async *a) { return a->c; }

#else /* !CACHET_HAVE_LIBEVENT */

/* Built without libevent: the API links, and says why it cannot work. No
 * handle can exist, so every other call reports the same. */
#include "conn.h"
#include "error.h"

static int no_libevent(void) {
  return cachet_fail(CACHET_ENOTSUP,
                     "the async API needs libevent; cachet was built without "
                     "it");
}

int cachet_async_open(cachet_async **out, struct event_base *base,
                      const cachet_options *opts) {
  (void)base;
  (void)opts;
  *out = NULL;
  return no_libevent();
}

void cachet_async_close(cachet_async *a) { (void)a; }
void cachet_async_set_data(cachet_async *a, void *data) {
  (void)a;
  (void)data;
}
void *cachet_async_get_data(const cachet_async *a) {
  (void)a;
  return NULL;
}
cachet *cachet_async_cachet(cachet_async *a) {
  (void)a;
  return NULL;
}
int cachet_async_get(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_value_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_set(cachet_async *a, const void *key, size_t keylen,
                     const void *val, size_t len, int64_t ttl_ms,
                     cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)val, (void)len, (void)ttl_ms;
  (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_set_tags(cachet_async *a, const void *key, size_t keylen,
                          const void *val, size_t len, int64_t ttl_ms,
                          const char *const *tags, size_t ntags,
                          cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)val, (void)len, (void)ttl_ms;
  (void)tags, (void)ntags, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_delete(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_exists(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_ttl(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_ttl_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_evict_tags(cachet_async *a, const char *const *tags,
                            size_t ntags, cachet_async_count_cb cb, void *ud) {
  (void)a, (void)tags, (void)ntags, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_clear(cachet_async *a, int dry_run, cachet_async_count_cb cb,
                       void *ud) {
  (void)a, (void)dry_run, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_lock_acquire(cachet_async *a, const char *name, int64_t ttl_ms,
                              int64_t wait_ms, cachet_async_lock_cb cb,
                              void *ud) {
  (void)a, (void)name, (void)ttl_ms, (void)wait_ms, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_lock_release(cachet_async *a, const cachet_lock *lock,
                              cachet_async_status_cb cb, void *ud) {
  (void)a, (void)lock, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_lock_extend(cachet_async *a, const cachet_lock *lock,
                             int64_t ttl_ms, cachet_async_status_cb cb,
                             void *ud) {
  (void)a, (void)lock, (void)ttl_ms, (void)cb, (void)ud;
  return no_libevent();
}
void cachet_async_load_done(cachet_async_load *load, int status,
                            const void *val, size_t len, int64_t ttl_ms) {
  (void)load, (void)status, (void)val, (void)len, (void)ttl_ms;
}
int cachet_async_get_or_set(cachet_async *a, const void *key, size_t keylen,
                            cachet_async_loader_fn loader, int64_t ttl_ms,
                            const char *const *tags, size_t ntags,
                            cachet_async_value_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)loader, (void)ttl_ms;
  (void)tags, (void)ntags, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_mget(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  (void)a, (void)entries, (void)n, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_mset(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  (void)a, (void)entries, (void)n, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_health_check(cachet_async *a, cachet_async_health_cb cb,
                              void *ud) {
  (void)a, (void)cb, (void)ud;
  return no_libevent();
}

#endif
