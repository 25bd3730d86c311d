/* The async driver (async.h): machines on the user's libevent loop.
 *
 * What this file guarantees:
 *  - every run's result is delivered exactly once: by its machine, by
 *    cachet_async_close, or after a failure the machine was told about;
 *  - a result decided inside the public call that started the run is
 *    delivered from the loop (an activated event), never from the call;
 *  - nothing that libevent can still call into is freed.
 *
 * Connections. Each is a non-blocking cachet_sock (sock.h: plaintext or
 * TLS, never SIGPIPE) driven by a read and a write event: commands are
 * formatted into an output buffer, replies fed to a hiredis reader,
 * checked against its bounds (reader.h), and matched in order against the
 * queue of what the connection owes. TLS may need to read before it can
 * write, or the reverse; the write_wants_read and read_wants_write flags
 * send each event's work to the other. AUTH and
 * SELECT go first on a new connection; if the server refuses them, the
 * connection is dropped and the commands behind get the refusal. A dropped
 * connection fails every command it still owed (each run hears of it as
 * that command's outcome), and the next command opens a new one. Host names
 * are resolved when a connection opens, which blocks (getaddrinfo).
 *
 * Each SEND's replies are due within timeout_ms (one timer per run). When
 * they are late, the connections the run waits on are dropped, as in the
 * sync API, and the run's machine hears ETIMEDOUT for each command. */
#include "async.h"

#include <event2/event.h>

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "error.h"
#include "link.h"
#include "op_batch.h"
#include "op_gos.h"
#include "op_lock.h"
#include "reader.h"
#include "resp.h"
#include "router.h"
#include "sock.h"

#define BACKOFF_MIN_MS 2

/* What a connection owes, in order. */
enum { P_CMD, P_LOAD, P_ASKING, P_SETUP, P_SLOTS };
typedef struct apend {
  arun *run; /* NULL: nobody waits for it any more */
  int what;
  size_t idx;   /* P_CMD, P_LOAD: the run's command */
  unsigned gen; /* ... of the run's SEND number gen */
} apend;

/* A command of the current SEND. */
typedef struct acmd {
  int node;      /* where it was sent (router index; 0 on a single server) */
  int redirects; /* MOVED, ASK, TRYAGAIN, CLUSTERDOWN followed */
  int reloaded;  /* NOSCRIPT recoveries */
  int asking;    /* the next send is preceded by ASKING */
  int decided;   /* its outcome is in; whatever else comes is ignored */
  int64_t deadline;
} acmd;

typedef struct aconn {
  cachet_async *a;
  int node, dead, busy;
  cachet_sock s;
  /* TLS may need the other direction: a write waiting for a read, or a
   * read waiting for a write. */
  int write_wants_read, read_wants_write;
  const char *setup_what[2]; /* what a refusal of P_SETUP idx was */
  struct event *rev, *wev;
  char *out;
  size_t olen, ooff, ocap;
  redisReader *reader;
  cachet_reader_bound bound;
  apend *q;
  size_t qhead, qlen, qcap;
  char where[300];
} aconn;

/* A loader in flight: the user holds `token` until load_done. */
struct cachet_async_load {
  arun *run; /* NULL once the run gave up on it */
};
typedef struct aload {
  cachet_async_load *token;
  cachet_load *ld;
  struct event *renew; /* every lease/3 */
  arun *ext_run;       /* the renewal in flight, or NULL */
  int loaded;          /* load_done came */
} aload;

struct cachet_async {
  cachet *c;
  struct event_base *base;
  void *data;
  cachet_router *rt; /* NULL on a single server */
  aconn *conns[CACHET_ROUTER_NODES];
  arun *head, *tail;
  size_t nruns;
  const struct timeval *reply_tv;
  struct timeval reply_tv_plain;
  int own; /* c is closed with the handle */
  int closing, in_close;
  /* Runs waiting for the slot map, and whether it is being loaded. */
  arun **waiting;
  size_t nwaiting, capwaiting;
  int loading_map;
  uint64_t map_gen;
  int cand[2 * CACHET_ROUTER_NODES], ncand, map_next; /* who to ask next */
  char map_why[600]; /* the first refusal of the current attempt */
  uint64_t map_asks; /* CLUSTER SLOTS sent: numbers the ask in flight */
};

/* Timer modes. */
enum { T_NONE, T_REPLY, T_SLEEP, T_DEFER, T_LOADER, T_MAP };

static void run_step(arun *r);
static void conn_drop(aconn *cn, int rc, const char *detail);
static void run_maybe_free(arun *r);
static void dispatch(arun *r);
static int conn_send(aconn *cn, int argc, const char **argv, const size_t *lens,
                     apend p);
static void load_map(cachet_async *a);
static void finish(arun *r, int rc);
static void release_waiting(cachet_async *a);
static void map_refused(cachet_async *a, int node, const char *why);

int cachet_async_usable(const cachet_async *a) {
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  return CACHET_OK;
}

cachet *cachet_async_handle(cachet_async *a) { return a->c; }

/* ---- Connections ----------------------------------------------------------
 */

static void conn_free(aconn *cn) {
  if (cn->rev != NULL)
    event_free(cn->rev);
  if (cn->wev != NULL)
    event_free(cn->wev);
  cachet_sock_close(&cn->s);
  if (cn->reader != NULL)
    redisReaderFree(cn->reader);
  free(cn->out);
  free(cn->q);
  free(cn);
}

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

/* A new connection to node `node` (the server on a single server), with
 * AUTH and SELECT queued first (P_SETUP, idx: which, in setup_what). */
static int conn_open(cachet_async *a, int node, aconn **out) {
  const cachet_config *cfg = &a->c->cfg;
  aconn *cn = calloc(1, sizeof *cn);
  if (cn == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  cn->a = a;
  cn->node = node;
  int port = 0;
  const char *host =
      a->rt != NULL ? cachet_router_host(a->rt, node, &port) : NULL;
  if (host == NULL && cfg->unix_path == NULL) {
    host = cfg->host;
    port = cfg->port;
  }
  int rc = cachet_sock_open(&cn->s, host, port, cfg->unix_path, a->c->tls);
  if (rc == CACHET_OK &&
      ((cn->reader = redisReaderCreate()) == NULL ||
       (cn->rev = event_new(a->base, cn->s.fd, EV_READ | EV_PERSIST, on_read,
                            cn)) == NULL ||
       (cn->wev = event_new(a->base, cn->s.fd, EV_WRITE | EV_PERSIST, on_write,
                            cn)) == NULL))
    rc = cachet_fail(CACHET_ENOMEM, "out of memory");
  if (rc == CACHET_OK) {
    cachet_reader_limits(cfg, &cn->bound);
    cachet_reader_attach(cn->reader, &cn->bound);
    event_add(cn->rev, NULL);
    event_add(cn->wev, NULL); /* writable: the connect is done, the TLS
                                 handshake can start */
  }
  cachet_setup su;
  cachet_setup_commands(cfg, a->rt != NULL, &su);
  for (int i = 0; rc == CACHET_OK && i < su.n; i++)
    rc = conn_send(cn, su.argc[i], su.argv[i], su.lens[i],
                   (apend){NULL, P_SETUP, (size_t)i, 0});
  memcpy(cn->setup_what, su.what, sizeof cn->setup_what);
  if (rc != CACHET_OK) {
    conn_free(cn);
    return rc;
  }
  a->conns[node] = cn;
  *out = cn;
  return CACHET_OK;
}

/* Queue one command and what its reply is for. */
static int conn_send(aconn *cn, int argc, const char **argv, const size_t *lens,
                     apend p) {
  size_t size = cachet_resp_bound(argc, lens);
  if (size == 0)
    return cachet_fail(CACHET_ENOMEM, "command too large");
  if (cn->olen + size > cn->ocap) {
    size_t cap = cn->ocap ? cn->ocap : 4096;
    while (cap < cn->olen + size)
      cap *= 2;
    char *o = realloc(cn->out, cap);
    if (o == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
    cn->out = o;
    cn->ocap = cap;
  }
  if (cn->qlen == cn->qcap) {
    if (cn->qhead > 0) { /* slide the queue down before growing it */
      memmove(cn->q, cn->q + cn->qhead, (cn->qlen - cn->qhead) * sizeof *cn->q);
      cn->qlen -= cn->qhead;
      cn->qhead = 0;
    }
    if (cachet_grow(&cn->q, &cn->qcap, cn->qlen + 1, sizeof *cn->q) !=
        CACHET_OK)
      return CACHET_ENOMEM;
  }
  cn->olen = (size_t)(cachet_resp_write(cn->out + cn->olen, argc, argv, lens) -
                      cn->out);
  cn->q[cn->qlen++] = p;
  if (p.run != NULL)
    p.run->refs++;
  if (cn->s.ready)
    event_add(cn->wev, NULL);
  return CACHET_OK;
}

/* The connection for `node`, opened when there is none. */
static int conn_for(cachet_async *a, int node, aconn **out) {
  *out = a->conns[node];
  if (*out != NULL && !(*out)->dead)
    return CACHET_OK;
  return conn_open(a, node, out);
}

static void conn_read(aconn *cn);

/* The connect and the TLS handshake, until the socket is ready: 1 when it
 * is, 0 while waiting (the events are set for what it waits for). */
static int conn_ready(aconn *cn) {
  if (cn->s.ready)
    return 1;
  int rc = cachet_sock_progress(&cn->s);
  if (rc < 0) {
    char d[512];
    snprintf(d, sizeof d, "%s", cachet_last_error());
    conn_drop(cn, CACHET_ECONN, d);
    return 0;
  }
  if (rc == CACHET_OK)
    return 1;
  if (rc & CACHET_SOCK_WRITE)
    event_add(cn->wev, NULL);
  else
    event_del(cn->wev); /* the read event carries the handshake on */
  return 0;
}

/* Send what is queued, as far as the socket takes it. */
static void conn_write(aconn *cn) {
  cn->write_wants_read = 0;
  while (cn->ooff < cn->olen) {
    int want = 0;
    ssize_t n = cachet_sock_send(&cn->s, cn->out + cn->ooff,
                                 cn->olen - cn->ooff, &want);
    if (n < 0) {
      char d[512];
      snprintf(d, sizeof d, "%s", cachet_last_error());
      conn_drop(cn, CACHET_ECONN, d);
      return;
    }
    if (n == 0) { /* full: wait for the socket (TLS: perhaps to read) */
      cn->write_wants_read = want == CACHET_SOCK_READ;
      if (cn->write_wants_read)
        event_del(cn->wev);
      return;
    }
    cn->ooff += (size_t)n;
  }
  cn->ooff = cn->olen = 0;
  /* One large value must not stay allocated per connection. */
  if (cn->ocap > 65536) {
    free(cn->out);
    cn->out = NULL;
    cn->ocap = 0;
  }
  event_del(cn->wev);
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  aconn *cn = arg;
  if (!conn_ready(cn))
    return;
  if (cn->read_wants_write) {
    cn->busy++;
    conn_read(cn);
    cn->busy--;
    if (cn->dead) {
      if (cn->busy == 0)
        conn_free(cn);
      return;
    }
  }
  conn_write(cn);
}

/* ---- Runs: the outcomes of a SEND -----------------------------------------
 */

/* Every command of r's SEND has its outcome: the machine steps. */
static void settled(arun *r) {
  if (r->waiting > 0 && --r->waiting == 0 && !r->done && r->tmode == T_REPLY) {
    event_del(r->ev);
    r->tmode = T_NONE;
    run_step(r);
  }
}

/* Command `idx` of r's SEND has its outcome (the first one counts). */
static void outcome(arun *r, size_t idx, int status, redisReply *reply,
                    const char *detail) {
  if (r->cmds[idx].decided) {
    if (reply != NULL)
      freeReplyObject(reply);
    return;
  }
  r->cmds[idx].decided = 1;
  cachet_res *res = &r->res[idx];
  res->status = status;
  res->reply = reply;
  res->detail = NULL;
  if (status != CACHET_OK) {
    /* The first failure's words are the run's to report. */
    if (r->detail[0] == '\0')
      snprintf(r->detail, sizeof r->detail, "%s", detail);
    res->detail = r->detail;
  }
  settled(r);
}

/* Send command `idx` of r's SEND to its node (or its ASK target). */
static void send_cmd(arun *r, size_t idx) {
  cachet_async *a = r->a;
  const cachet_cmd *cmd = &r->out.cmds[idx];
  acmd *ac = &r->cmds[idx];
  aconn *cn = NULL;
  int rc = conn_for(a, ac->node, &cn);
  if (rc == CACHET_OK && ac->asking)
    rc = conn_send(cn, 1, (const char *[]){"ASKING"}, (size_t[]){6},
                   (apend){NULL, P_ASKING, 0, 0});
  ac->asking = 0;
  if (rc == CACHET_OK)
    rc = conn_send(cn, cmd->argc, cmd->argv, cmd->lens,
                   (apend){r, P_CMD, idx, r->gen});
  if (rc != CACHET_OK) {
    char d[512];
    snprintf(d, sizeof d, "%s", cachet_last_error());
    outcome(r, idx, rc, NULL, d);
  }
}

/* A TRYAGAIN or CLUSTERDOWN: send it again after a backoff. */
typedef struct retry {
  arun *r;
  size_t idx;
  unsigned gen;
} retry;

static void retry_fire(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  retry *t = arg;
  arun *r = t->r;
  r->refs--;
  if (!r->done && t->gen == r->gen && !r->cmds[t->idx].decided)
    send_cmd(r, t->idx);
  free(t);
  run_maybe_free(r);
}

/* A reply to command `idx` of r, from connection cn: what the machine
 * would never see (NOSCRIPT, redirections) is handled here. */
static void cmd_reply(arun *r, size_t idx, aconn *cn, redisReply *reply) {
  cachet_async *a = r->a;
  const cachet_cmd *cmd = &r->out.cmds[idx];
  acmd *ac = &r->cmds[idx];
  if (cmd->script >= 0 && ac->reloaded < CACHET_NOSCRIPT_ROUNDS &&
      cachet_reply_is_noscript(reply)) {
    /* SCRIPT LOAD where it was missing, then the command again, on the
     * same connection: in order. */
    ac->reloaded++;
    freeReplyObject(reply);
    const cachet_script *s = &cachet_scripts[cmd->script];
    int rc =
        conn_send(cn, 3, (const char *[]){"SCRIPT", "LOAD", s->body},
                  (size_t[]){6, 4, s->len}, (apend){r, P_LOAD, idx, r->gen});
    if (rc == CACHET_OK)
      rc = conn_send(cn, cmd->argc, cmd->argv, cmd->lens,
                     (apend){r, P_CMD, idx, r->gen});
    if (rc != CACHET_OK)
      outcome(r, idx, rc, NULL, cachet_last_error());
    return;
  }
  int kind = a->rt != NULL ? cachet_redirect_kind(reply) : CACHET_R_NONE;
  int routed = cmd->node == CACHET_ROUTE_KEY;
  if (kind == CACHET_R_NONE || ac->redirects >= CACHET_REDIRECTS ||
      (!routed && (kind == CACHET_R_MOVED || kind == CACHET_R_ASK)) ||
      ((kind == CACHET_R_TRYAGAIN || kind == CACHET_R_DOWN) &&
       cachet_mono_ms() >= ac->deadline)) {
    outcome(r, idx, CACHET_OK, reply, NULL);
    return;
  }
  ac->redirects++;
  if (kind == CACHET_R_MOVED || kind == CACHET_R_ASK) {
    int target = cachet_router_redirect(a->rt, reply, cn->node);
    freeReplyObject(reply);
    if (target < 0) {
      outcome(r, idx, CACHET_EPROTO, NULL, cachet_last_error());
      return;
    }
    ac->node = target;
    ac->asking = kind == CACHET_R_ASK;
    send_cmd(r, idx);
    return;
  }
  /* TRYAGAIN (a slot migrating) or CLUSTERDOWN (a failover): wait. */
  freeReplyObject(reply);
  if (kind == CACHET_R_DOWN) {
    cachet_router_stale(a->rt);
    if (routed) {
      int slot = cachet_command_slot(cmd->argc, cmd->argv, cmd->lens);
      int node = cachet_router_route(a->rt, slot);
      if (node >= 0)
        ac->node = node;
    }
  }
  retry *t = malloc(sizeof *t);
  int64_t ms = cachet_jitter_ms(BACKOFF_MIN_MS
                                << (ac->redirects < 6 ? ac->redirects : 6));
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  if (t == NULL) {
    outcome(r, idx, CACHET_ENOMEM, NULL, "out of memory");
    return;
  }
  *t = (retry){r, idx, r->gen};
  r->refs++;
  if (event_base_once(a->base, -1, EV_TIMEOUT, retry_fire, t, &tv) != 0) {
    r->refs--;
    free(t);
    outcome(r, idx, CACHET_ENOMEM, NULL, "out of memory");
  }
}

/* The reply at the head of cn's queue. */
static void conn_reply(aconn *cn, redisReply *reply) {
  cachet_async *a = cn->a;
  apend p = cn->q[cn->qhead++];
  if (cn->qhead == cn->qlen)
    cn->qhead = cn->qlen = 0;
  arun *r = p.run;
  if (r != NULL)
    r->busy++, r->refs--;
  switch (p.what) {
  case P_SETUP:
    if (reply->type == REDIS_REPLY_ERROR) {
      /* The commands behind get the server's refusal, as the sync API
       * reports it. */
      char d[512];
      (void)cachet_fail_bytes(CACHET_ESERVER, NULL, reply->str, reply->len);
      snprintf(d, sizeof d, "%s refused: %s", cn->setup_what[p.idx],
               cachet_last_error());
      freeReplyObject(reply);
      conn_drop(cn, CACHET_ESERVER, d);
      return;
    }
    freeReplyObject(reply);
    return;
  case P_ASKING:
    freeReplyObject(reply);
    return;
  case P_SLOTS:
    a->loading_map = 0;
    if (reply->type == REDIS_REPLY_ERROR) {
      (void)cachet_fail_bytes(CACHET_ESERVER, NULL, reply->str, reply->len);
      map_refused(a, cn->node, cachet_last_error());
    } else if (cachet_router_apply(a->rt, a->map_gen, cn->node, reply,
                                   cachet_mono_ms()) == CACHET_OK) {
      a->map_next = 0; /* done: the waiting runs go on */
    } else {
      map_refused(a, cn->node, cachet_last_error());
    }
    freeReplyObject(reply);
    load_map(a); /* ... or the next candidate is asked */
    return;
  case P_LOAD:
    if (r != NULL && !r->done && p.gen == r->gen && !r->cmds[p.idx].decided) {
      /* Refused, or another SHA1: that is the command's outcome. */
      int rc = cachet_script_loaded(a->c, reply, r->out.cmds[p.idx].script);
      if (rc != CACHET_OK)
        outcome(r, p.idx, rc, NULL, cachet_last_error());
    }
    freeReplyObject(reply);
    break;
  default: /* P_CMD */
    if (r == NULL || r->done || r->tmode != T_REPLY || p.gen != r->gen)
      freeReplyObject(reply); /* late: the run gave up on it */
    else
      cmd_reply(r, p.idx, cn, reply);
    break;
  }
  if (r != NULL) {
    r->busy--;
    run_maybe_free(r);
  }
}

/* Receive and hand every complete reply to its owner. */
static void conn_read(aconn *cn) {
  char buf[16384];
  cn->read_wants_write = 0;
  while (!cn->dead) {
    if (cachet_reader_check(cn->reader, &cn->bound) != 0) {
      char d[256];
      snprintf(d, sizeof d, "redis: protocol error: %s", cn->bound.why);
      conn_drop(cn, CACHET_EPROTO, d);
      break;
    }
    int want = 0;
    ssize_t n = cachet_sock_recv(&cn->s, buf, sizeof buf, &want);
    if (n < 0) {
      char d[512];
      snprintf(d, sizeof d, "%s", cachet_last_error());
      conn_drop(cn, CACHET_ECONN, d);
      break;
    }
    if (n == 0) { /* drained (TLS: perhaps it must write first) */
      cn->read_wants_write = want == CACHET_SOCK_WRITE;
      if (cn->read_wants_write)
        event_add(cn->wev, NULL);
      break;
    }
    if (redisReaderFeed(cn->reader, buf, (size_t)n) != REDIS_OK) {
      conn_drop(cn, CACHET_ENOMEM, "redis: out of memory");
      break;
    }
    void *reply = NULL;
    while (!cn->dead && cn->qhead < cn->qlen) {
      if (redisReaderGetReply(cn->reader, &reply) != REDIS_OK) {
        char d[256];
        snprintf(d, sizeof d, "redis: protocol error: %s",
                 cn->bound.refused ? cn->bound.why : cn->reader->errstr);
        conn_drop(cn, CACHET_EPROTO, d);
        break;
      }
      if (reply == NULL)
        break;
      conn_reply(cn, reply);
    }
  }
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  aconn *cn = arg;
  cn->busy++;
  if (conn_ready(cn)) {
    if (cn->write_wants_read)
      conn_write(cn);
    if (!cn->dead)
      conn_read(cn);
    if (!cn->dead && cn->ooff < cn->olen && !cn->write_wants_read)
      event_add(cn->wev, NULL); /* e.g. the handshake just ended */
  }
  cn->busy--;
  if (cn->dead && cn->busy == 0)
    conn_free(cn);
}

/* Give up on a connection: what it owed fails with `rc`, and the next
 * command opens a new one. */
static void conn_drop(aconn *cn, int rc, const char *detail) {
  if (cn->dead)
    return;
  cachet_async *a = cn->a;
  cn->dead = 1;
  if (a->conns[cn->node] == cn)
    a->conns[cn->node] = NULL;
  event_del(cn->rev);
  event_del(cn->wev);
  cn->busy++;
  while (cn->qhead < cn->qlen) {
    apend p = cn->q[cn->qhead++];
    if (p.what == P_SLOTS) { /* the next candidate is asked */
      a->loading_map = 0;
      map_refused(a, cn->node, detail);
      load_map(a);
      continue;
    }
    arun *r = p.run;
    if (r == NULL)
      continue;
    r->refs--;
    r->busy++;
    if (!r->done && r->tmode == T_REPLY && p.gen == r->gen &&
        (p.what == P_CMD || p.what == P_LOAD))
      outcome(r, p.idx, rc, NULL, detail);
    r->busy--;
    run_maybe_free(r);
  }
  if (a->rt != NULL)
    cachet_router_stale(a->rt);
  cn->busy--;
  if (cn->busy == 0)
    conn_free(cn);
}

/* ---- The slot map -----------------------------------------------------------
 */

/* Why node `node` gave no map, if it is the attempt's first refusal. */
static void map_refused(cachet_async *a, int node, const char *why) {
  if (a->map_why[0] == '\0')
    snprintf(a->map_why, sizeof a->map_why, "%s: %s",
             cachet_router_name(a->rt, node), why);
}

/* No node gave a map. With a map, even a stale one, the waiting runs go
 * on; without one they fail, as the sync call does, rather than wait for
 * an attempt that nothing would start but themselves (a tight loop of
 * reconnections with every seed down). */
static void map_failed(cachet_async *a) {
  if (cachet_router_route(a->rt, -1) >= 0) {
    release_waiting(a);
    return;
  }
  /* Their callbacks may start runs that wait anew: those join a new list. */
  arun **list = a->waiting;
  size_t n = a->nwaiting;
  a->waiting = NULL;
  a->nwaiting = a->capwaiting = 0;
  for (size_t i = 0; i < n; i++) {
    arun *r = list[i];
    r->refs--;
    r->busy++;
    (void)cachet_fail(CACHET_ECONN,
                      "cluster: no node answered CLUSTER SLOTS (%s)",
                      a->map_why[0] != '\0' ? a->map_why : "no node to ask");
    finish(r, CACHET_ECONN);
    r->busy--;
    run_maybe_free(r);
  }
  free(list);
}

/* The runs waiting for a slot map go on (with a map, or to fail). */
static void release_waiting(cachet_async *a) {
  size_t n = a->nwaiting;
  a->nwaiting = 0;
  for (size_t i = 0; i < n; i++) {
    arun *r = a->waiting[i];
    r->refs--;
    if (!r->done)
      run_step(r);
    run_maybe_free(r);
  }
}

/* Load the slot map when there is none, or refresh a stale one, without
 * blocking: CLUSTER SLOTS to each candidate in turn until one answers
 * (P_SLOTS comes back here). With a map, even a stale one, runs do not
 * wait for it. */
static void load_map(cachet_async *a) {
  /* Closing: nothing waits for a map any more, and a connection opened now
   * (close drops the one asking, which asks the next) would outlive the
   * handle. */
  if (a->loading_map || a->closing)
    return;
  if (a->map_next == 0) { /* a new attempt */
    if (!cachet_router_due(a->rt, cachet_mono_ms(), &a->map_gen)) {
      release_waiting(a);
      return;
    }
    a->ncand =
        cachet_router_candidates(a->rt, a->cand, 2 * CACHET_ROUTER_NODES);
    a->map_why[0] = '\0';
  }
  while (a->map_next < a->ncand) {
    aconn *cn;
    int node = a->cand[a->map_next++];
    if (conn_for(a, node, &cn) == CACHET_OK &&
        conn_send(cn, 2, (const char *[]){"CLUSTER", "SLOTS"}, (size_t[]){7, 5},
                  (apend){NULL, P_SLOTS, 0, 0}) == CACHET_OK) {
      a->loading_map = 1;
      a->map_asks++;
      if (cachet_router_route(a->rt, -1) >= 0)
        release_waiting(a);
      return;
    }
    map_refused(a, node, cachet_last_error());
  }
  a->map_next = 0; /* nobody answered: the next attempt waits a while */
  cachet_router_failed(a->rt, cachet_mono_ms());
  map_failed(a);
}

/* ---- Runs -------------------------------------------------------------------
 */

static size_t round_up(size_t n) {
  size_t al = alignof(max_align_t);
  return (n + al - 1) / al * al;
}

static void handle_maybe_free(cachet_async *a);

static void list_remove(arun *r) {
  cachet_async *a = r->a;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    a->head = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  else
    a->tail = r->prev;
  r->prev = r->next = NULL;
  r->listed = 0;
}

static void free_replies(arun *r) {
  for (size_t i = 0; i < r->cap; i++)
    if (r->res[i].reply != NULL) {
      freeReplyObject(r->res[i].reply);
      r->res[i].reply = NULL;
    }
}

static void run_maybe_free(arun *r) {
  if (!r->done || r->listed || r->refs > 0 || r->busy > 0)
    return;
  cachet_async *a = r->a;
  if (r->tmode != T_NONE)
    event_del(r->ev);
  if (r->op != NULL)
    r->op->k->free(r->op);
  if (r->k->cleanup != NULL)
    r->k->cleanup(r);
  free_replies(r);
  free(r->res);
  free(r->cmds);
  free(r->names);
  free(r);
  a->nruns--;
  handle_maybe_free(a);
}

static void stop_load(arun *r);

/* Deliver the result: the user's callback, with the detail set. */
static void deliver(arun *r) {
  list_remove(r);
  if (r->result == CACHET_OK || r->result == CACHET_MISS)
    cachet_error_clear();
  else
    (void)cachet_fail(r->result, "%s", r->detail);
  if (r->k->count == A_COUNT_ALL ||
      (r->k->count == A_COUNT_FATAL && cachet_batch_fatal(r->result)))
    (void)cachet_result(r->a->c, r->result);
  r->busy++;
  r->k->deliver(r, r->result);
  r->busy--;
  run_maybe_free(r);
}

/* The run's result is decided. Inside the public call that started it,
 * delivery waits for the loop. */
static void finish(arun *r, int rc) {
  if (r->done)
    return;
  r->done = 1;
  r->result = rc;
  snprintf(r->detail, sizeof r->detail, "%s",
           rc == CACHET_OK ? "" : cachet_last_error());
  stop_load(r);
  event_del(r->ev);
  r->tmode = T_NONE;
  if (r->starting) {
    r->tmode = T_DEFER;
    event_active(r->ev, EV_TIMEOUT, 1);
    return;
  }
  deliver(r);
}

/* The reply deadline passed: the connections it waits on are dropped (a
 * late reply would be read as another's), and the machine hears
 * ETIMEDOUT for each command still owed. */
static void reply_timeout(arun *r) {
  cachet_async *a = r->a;
  int ms = a->c->cfg.timeout_ms;
  char d[200], dd[160];
  aconn *first =
      r->out.n > 0 && r->cmds[0].node >= 0 ? a->conns[r->cmds[0].node] : NULL;
  snprintf(d, sizeof d, "%s: %s within %d ms", r->k->name,
           first != NULL ? cachet_sock_silence(&first->s)
                         : "no answer from the server",
           ms);
  snprintf(dd, sizeof dd,
           "connection dropped: an operation got no reply within %d ms", ms);
  aconn *drop[CACHET_ROUTER_NODES];
  int nd = 0;
  r->busy++;
  r->waiting++; /* the machine steps once the connections are gone */
  for (size_t i = 0; i < r->out.n; i++) {
    if (r->cmds[i].decided)
      continue;
    aconn *cn = r->cmds[i].node >= 0 ? a->conns[r->cmds[i].node] : NULL;
    int seen = cn == NULL;
    for (int j = 0; j < nd && !seen; j++)
      seen = drop[j] == cn;
    if (!seen)
      drop[nd++] = cn;
    outcome(r, i, CACHET_ETIMEDOUT, NULL, d);
  }
  for (int j = 0; j < nd; j++)
    conn_drop(drop[j], CACHET_ECONN, dd);
  settled(r);
  r->busy--;
  run_maybe_free(r);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  arun *r = arg;
  int mode = r->tmode;
  r->tmode = T_NONE;
  r->busy++;
  if (mode == T_DEFER)
    deliver(r);
  else if (mode == T_REPLY && !r->done) {
    r->tmode = T_REPLY;
    reply_timeout(r);
  } else if (mode == T_LOADER && !r->done) {
    r->load->ld->timed_out = 1;
    stop_load(r);
    run_step(r);
  } else if (mode == T_SLEEP && !r->done) {
    run_step(r);
  } else if (mode == T_MAP && !r->done) {
    cachet_async *a = r->a;
    int ms = a->c->cfg.timeout_ms;
    for (size_t i = 0; i < a->nwaiting; i++)
      if (a->waiting[i] == r) {
        a->waiting[i] = a->waiting[--a->nwaiting];
        r->refs--;
        break;
      }
    /* The node being asked is the one asked when this run began to wait
     * (before, or by the run itself), so it has not answered in a whole
     * timeout: the next one is asked, so that a seed that never answers (a
     * black hole, a hung server) cannot hold the map back for good. The
     * ask is named by its number, not by clock readings: a run that asks
     * itself may do so a millisecond after it began to wait. */
    if (a->loading_map && a->map_next > 0 && a->map_asks == r->map_ask) {
      aconn *cn = a->conns[a->cand[a->map_next - 1]];
      char d[160];
      snprintf(d, sizeof d, "%s within %d ms",
               cn == NULL || cn->s.ready ? "no answer to CLUSTER SLOTS"
                                         : cachet_sock_silence(&cn->s),
               ms);
      if (cn != NULL)
        conn_drop(cn, CACHET_ETIMEDOUT, d);
    }
    finish(r, cachet_fail(CACHET_ETIMEDOUT,
                          "cluster: no slot map within %d ms (%s)", ms,
                          a->map_why[0] != '\0'
                              ? a->map_why
                              : "no node has answered CLUSTER SLOTS yet"));
  }
  r->busy--;
  run_maybe_free(r);
}

arun *cachet_arun_new(cachet_async *a, const arun_kind *k, size_t size,
                      void (*cb)(void), void *ud) {
  size_t evsz = round_up(event_get_struct_event_size());
  size_t base = round_up(size);
  arun *r = calloc(1, base + evsz);
  if (r == NULL) {
    (void)cachet_fail(CACHET_ENOMEM, "out of memory starting an operation");
    return NULL;
  }
  r->a = a;
  r->k = k;
  r->cb = cb;
  r->ud = ud;
  r->ev = (struct event *)((char *)r + base);
  event_assign(r->ev, a->base, -1, 0, timer_cb, r);
  r->listed = 1;
  r->prev = a->tail;
  if (a->tail != NULL)
    a->tail->next = r;
  else
    a->head = r;
  a->tail = r;
  a->nruns++;
  return r;
}

void cachet_arun_discard(arun *r) {
  r->done = 1;
  r->op = NULL;
  if (r->listed)
    list_remove(r);
  run_maybe_free(r);
}

/* The SEND's commands go out: each to the master of its key's slot (or the
 * one the machine names). Without a slot map they wait for one. */
static void dispatch(arun *r) {
  cachet_async *a = r->a;
  size_t n = r->out.n;
  int64_t deadline = cachet_mono_ms() + a->c->cfg.timeout_ms;
  if (a->rt != NULL)
    load_map(a); /* a stale map is refreshed in the background */
  r->gen++;
  r->detail[0] = '\0';
  r->waiting = n;
  r->tmode = T_REPLY;
  event_add(r->ev, a->reply_tv);
  for (size_t i = 0; i < n && !r->done; i++) {
    const cachet_cmd *cmd = &r->out.cmds[i];
    acmd *ac = &r->cmds[i];
    memset(ac, 0, sizeof *ac);
    ac->deadline = deadline;
    if (a->rt == NULL) {
      ac->node = 0;
    } else if (cmd->node >= 0) {
      int m[CACHET_ROUTER_NODES];
      int nm = cachet_router_masters(a->rt, m, CACHET_ROUTER_NODES);
      ac->node = cmd->node < nm ? m[cmd->node] : -1;
    } else {
      ac->node = cachet_router_route(
          a->rt, cachet_command_slot(cmd->argc, cmd->argv, cmd->lens));
    }
    if (ac->node < 0) {
      outcome(r, i, CACHET_ECONN, NULL,
              "cluster: no master serves the command's slot");
      continue;
    }
    send_cmd(r, i);
  }
}

static void start_load(arun *r, cachet_load *ld);

/* Step the machine until it waits for something. */
static void run_step(arun *r) {
  cachet_async *a = r->a;
  if (r->stepping || r->done)
    return;
  if (a->rt != NULL && cachet_router_route(a->rt, -1) < 0) {
    /* No slot map yet: wait for one (no run steps without the nodes), at
     * most timeout_ms, however many attempts are made meanwhile. */
    if (cachet_grow(&a->waiting, &a->capwaiting, a->nwaiting + 1,
                    sizeof *a->waiting) != CACHET_OK) {
      finish(r, cachet_fail(CACHET_ENOMEM, "out of memory"));
      return;
    }
    a->waiting[a->nwaiting++] = r;
    r->refs++;
    int began = r->tmode != T_MAP;
    if (began) {
      r->tmode = T_MAP;
      event_add(r->ev, a->reply_tv);
    }
    r->busy++; /* an attempt that fails at once finishes r */
    load_map(a);
    r->busy--;
    if (began)
      r->map_ask = a->map_asks;
    return;
  }
  if (r->tmode == T_MAP) {
    event_del(r->ev);
    r->tmode = T_NONE;
  }
  r->stepping = 1;
  r->busy++;
  for (;;) {
    cachet_in in = {cachet_mono_ms(), 1, NULL, NULL, 0};
    static const char *const server[1] = {"server"};
    in.names = server;
    if (a->rt != NULL) {
      int m[CACHET_ROUTER_NODES];
      in.nodes = cachet_router_masters(a->rt, m, CACHET_ROUTER_NODES);
      const char **names = realloc(
          r->names, (size_t)(in.nodes > 0 ? in.nodes : 1) * sizeof *names);
      if (names != NULL) {
        r->names = names;
        for (int i = 0; i < in.nodes; i++)
          names[i] = cachet_router_name(a->rt, m[i]);
        in.names = names;
      }
    }
    if (r->out.n > 0 && r->tmode == T_NONE) {
      in.res = r->res;
      in.n = r->out.n;
    }
    cachet_out out = {0};
    int what = r->op->k->step(r->op, &in, &out);
    free_replies(r);
    r->out.n = 0;
    if (what == CACHET_DO_DONE) {
      /* A reply of the wrong shape leaves the stream in doubt. */
      if (out.status == CACHET_EPROTO)
        for (int i = 0; i < CACHET_ROUTER_NODES; i++)
          if (a->conns[i] != NULL) {
            char d[600];
            snprintf(d, sizeof d, "%s", cachet_last_error());
            conn_drop(a->conns[i], CACHET_ECONN, d);
            (void)cachet_fail(CACHET_EPROTO, "%s", d);
          }
      finish(r, out.status);
      break;
    }
    if (what == CACHET_DO_SLEEP) {
      struct timeval tv = {(time_t)(out.ms / 1000),
                           (suseconds_t)(out.ms % 1000) * 1000};
      r->tmode = T_SLEEP;
      event_add(r->ev, &tv);
      break;
    }
    if (what == CACHET_DO_LOAD) {
      start_load(r, out.load);
      if (r->load != NULL && !r->load->loaded)
        break;
      continue; /* load_done came from inside the loader */
    }
    /* SEND */
    if (out.n == 0) {
      finish(r, cachet_fail(CACHET_EINTERNAL, "%s: a step sent nothing",
                            r->op->k->name));
      break;
    }
    if (out.n > r->cap) {
      cachet_res *res = realloc(r->res, out.n * sizeof *res);
      if (res != NULL)
        r->res = res;
      acmd *cmds = realloc(r->cmds, out.n * sizeof *cmds);
      if (cmds != NULL)
        r->cmds = cmds;
      if (res == NULL || cmds == NULL) {
        finish(r, cachet_fail(CACHET_ENOMEM, "out of memory"));
        break;
      }
      memset(r->res + r->cap, 0, (out.n - r->cap) * sizeof *r->res);
      r->cap = out.n;
    }
    for (size_t i = 0; i < out.n; i++)
      r->res[i] = (cachet_res){CACHET_OK, NULL, NULL};
    r->out = out;
    if (a->closing) {
      for (size_t i = 0; i < out.n; i++)
        r->res[i] = (cachet_res){CACHET_ECONN, NULL, "closed"};
      continue;
    }
    dispatch(r);
    if (r->waiting > 0 || r->done)
      break;
    /* Every command failed at once: the machine hears of it now. */
    event_del(r->ev);
    r->tmode = T_NONE;
  }
  r->stepping = 0;
  r->busy--;
}

void cachet_arun_start(arun *r, cachet_op *op) {
  r->op = op;
  r->starting = 1;
  r->busy++;
  run_step(r);
  r->starting = 0;
  r->busy--;
  run_maybe_free(r);
}

/* ---- get_or_set's loader ----------------------------------------------------
 */

/* A renewal owns its machine and a copy of the lock: it can still be in
 * flight when the load ends and the aload (and soon the lock) is freed. */
typedef struct aext {
  arun r;
  cachet_op_lock op;
  cachet_lock *lk;
} aext;

static void ext_deliver(arun *e, int rc) {
  aload *l = e->ud;
  if (l != NULL) {
    l->ext_run = NULL;
    /* An error is not a lost lease: the next tick tries again. */
    if (rc == CACHET_LOCK_EXPIRED || rc == CACHET_LOCK_NOT_OWNER)
      l->ld->lost = rc;
  }
}

static void ext_cleanup(arun *e) { cachet_lock_free(((aext *)e)->lk); }

static const arun_kind ext_kind = {"lock_extend", A_COUNT_NONE, ext_deliver,
                                   ext_cleanup};

static void renew_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  arun *r = arg;
  aload *l = r->load;
  if (l == NULL || l->ext_run != NULL || l->ld->lost)
    return;
  const cachet_lock *held = l->ld->lock;
  size_t size = sizeof *held + held->namelen + 1;
  cachet_lock *lk = malloc(size);
  if (lk == NULL)
    return; /* the next tick tries again */
  memcpy(lk, held, size);
  aext *e = (aext *)cachet_arun_new(r->a, &ext_kind, sizeof *e, NULL, l);
  if (e == NULL) {
    cachet_lock_free(lk);
    return;
  }
  e->lk = lk;
  cachet_op_lock_init(&e->op, r->a->c, CACHET_LOCK_EXTEND, lk, l->ld->lease_ms,
                      0);
  l->ext_run = &e->r;
  cachet_arun_start(&e->r, &e->op.op);
}

/* LOAD: the user's loader runs, its lease renewed every lease/3 and its
 * wait bounded by fetch_wait_ms. */
static void start_load(arun *r, cachet_load *ld) {
  cachet_async *a = r->a;
  aload *l = calloc(1, sizeof *l);
  cachet_async_load *token = malloc(sizeof *token);
  if (l == NULL || token == NULL) {
    free(l);
    free(token);
    ld->start_failed = 1;
    l = NULL;
  } else {
    l->token = token;
    token->run = r;
    l->ld = ld;
    r->load = l;
    int64_t period = ld->lease_ms / 3 > 0 ? ld->lease_ms / 3 : 1;
    struct timeval tv = {(time_t)(period / 1000),
                         (suseconds_t)(period % 1000) * 1000};
    l->renew = event_new(a->base, -1, EV_PERSIST, renew_tick, r);
    if (l->renew != NULL)
      event_add(l->renew, &tv);
    int64_t wait = ld->wait_ms;
    struct timeval dl = {(time_t)(wait / 1000),
                         (suseconds_t)(wait % 1000) * 1000};
    r->tmode = T_LOADER;
    event_add(r->ev, &dl);
    ld->afn(token, ld->key, ld->keylen, ld->ttl_ms, ld->ud);
    return;
  }
  r->load = NULL;
}

/* The loader is over (done, timed out, closed): no more renewals, and a
 * late load_done is accepted and ignored. */
static void stop_load(arun *r) {
  aload *l = r->load;
  if (l == NULL)
    return;
  if (l->renew != NULL)
    event_free(l->renew);
  if (l->ext_run != NULL)
    l->ext_run->ud = NULL;
  if (l->token != NULL)
    l->token->run = NULL; /* the user's load_done frees it */
  free(l);
  r->load = NULL;
}

void cachet_async_load_done(cachet_async_load *load, int status,
                            const void *val, size_t len, int64_t ttl_ms) {
  arun *r = load->run;
  if (r == NULL || r->load == NULL) {
    free(load);
    return;
  }
  aload *l = r->load;
  cachet_load *ld = l->ld;
  ld->status = status;
  ld->ttl_ms = ttl_ms;
  ld->len = status == 0 ? len : 0;
  ld->val = NULL;
  if (status == 0 && (ld->val = malloc(len > 0 ? len : 1)) == NULL) {
    ld->status = -1;
  } else if (status == 0 && len > 0) {
    memcpy(ld->val, val, len);
  }
  l->token = NULL;
  free(load);
  l->loaded = 1;
  if (r->stepping) { /* called from inside the loader: run_step goes on */
    if (l->renew != NULL)
      event_free(l->renew);
    l->renew = NULL;
    return;
  }
  stop_load(r);
  event_del(r->ev);
  r->tmode = T_NONE;
  r->busy++;
  run_step(r);
  r->busy--;
  run_maybe_free(r);
}

/* ---- The handle -------------------------------------------------------------
 */

static void handle_maybe_free(cachet_async *a) {
  if (!a->closing || a->in_close || a->nruns > 0)
    return;
  free(a->waiting);
  if (a->own)
    cachet_close(a->c);
  free(a);
}

int cachet_async_over(cachet_async **out, struct event_base *base, cachet *c,
                      int own) {
  cachet_async *a = calloc(1, sizeof *a);
  if (a == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory opening a handle");
  a->c = c;
  a->own = own;
  a->base = base;
  a->rt = cachet_links_router(c);
  int ms = c->cfg.timeout_ms;
  a->reply_tv_plain.tv_sec = ms / 1000;
  a->reply_tv_plain.tv_usec = (suseconds_t)(ms % 1000) * 1000;
  /* Every reply timer has the same duration: a common timeout queue makes
   * adding and removing one O(1) instead of a heap operation. */
  a->reply_tv = event_base_init_common_timeout(base, &a->reply_tv_plain);
  if (a->reply_tv == NULL)
    a->reply_tv = &a->reply_tv_plain;
  *out = a;
  return CACHET_OK;
}

int cachet_async_open(cachet_async **out, struct event_base *base,
                      const cachet_options *opts) {
  *out = NULL;
  cachet_error_clear();
  if (base == NULL)
    return cachet_fail(CACHET_EINVAL, "event base must not be NULL");
  cachet *c;
  int rc = cachet_open(&c, opts);
  if (rc == CACHET_OK && (rc = cachet_async_over(out, base, c, 1)) != CACHET_OK)
    cachet_close(c);
  return rc;
}

void cachet_async_close(cachet_async *a) {
  if (a == NULL || a->closing)
    return;
  a->closing = 1;
  a->in_close = 1;
  /* Newest first: a renewal runs after the load it serves. */
  while (a->tail != NULL) {
    arun *r = a->tail;
    r->busy++;
    if (r->tmode == T_DEFER) {
      event_del(r->ev);
      r->tmode = T_NONE;
      deliver(r);
    } else if (!r->done) {
      (void)cachet_fail(CACHET_ECONN, "closed: the async handle was closed "
                                      "with the operation in flight");
      r->done = 1;
      r->result = CACHET_ECONN;
      snprintf(r->detail, sizeof r->detail, "%s", cachet_last_error());
      stop_load(r);
      event_del(r->ev);
      r->tmode = T_NONE;
      deliver(r);
    } else {
      list_remove(r);
    }
    r->busy--;
    run_maybe_free(r);
  }
  for (int i = 0; i < CACHET_ROUTER_NODES; i++)
    if (a->conns[i] != NULL)
      conn_drop(a->conns[i], CACHET_ECONN, "closed");
  size_t n = a->nwaiting;
  a->nwaiting = 0;
  for (size_t i = 0; i < n; i++) {
    a->waiting[i]->refs--;
    run_maybe_free(a->waiting[i]);
  }
  a->in_close = 0;
  handle_maybe_free(a);
}

void cachet_async_set_data(cachet_async *a, void *data) { a->data = data; }

void *cachet_async_get_data(const cachet_async *a) { return a->data; }

cachet *cachet_async_cachet(cachet_async *a) { return a->c; }
