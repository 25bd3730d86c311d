/*
 * The drivers and the transport against a hostile server, over a socket.
 *
 * server_replies_fuzzer hands replies straight to the machines, so what
 * lies between a machine and the socket is not in it: the sync runner's
 * NOSCRIPT recovery and its fan-out of a transport failure (run.c), the
 * links and the pool (link.c, pool.c), multiplexed connections (mux.c), the
 * async driver (async.c, through the tests' via_async shim) and the
 * bounded reader on a real stream. Here the server is a thread of this
 * process on a private unix socket (and two TCP ports on 127.0.0.1 the
 * kernel picks, which play the two masters of a cluster: CLUSTER SLOTS
 * splits the slots between them, and commands may be redirected with
 * MOVED or ASK from one to the other), and the input decides its answer to
 * each command it reads: what Redis could answer (it keeps which scripts
 * are loaded, so EVALSHA meets NOSCRIPT as after a SCRIPT FLUSH, and some
 * outcomes flush them), a reply from the grammar (replies.h), a reply cut
 * short, a connection that never answers again, or a closed connection.
 *
 * With TLS, the two ports speak it (a certificate made at start, which the
 * client does not verify): every outcome then happens inside TLS records,
 * and a closed connection is closed with or without a close_notify, so the
 * TLS read and write paths of both drivers meet them too.
 *
 * A handle may have a near cache: its invalidation feed connects too, its
 * set-up commands meet the same outcomes, and once it has subscribed the
 * input may push a message on it after any command (keys the calls use, a
 * flush, a payload from the grammar, or anything at all).
 *
 * Input: a byte of flags (the async driver, multiplexed connections,
 * scripts loaded at the start, a cluster, a near cache, TLS), the call and its
 * arguments, then one outcome per command the server reads. Past the end
 * of the input every command the server reads closes its connection.
 *
 * What must hold, beyond ASan, UBSan and the leak checker:
 *  - every call returns (libFuzzer's -timeout), with a status cachet
 *    knows, and an error has a detail;
 *  - ESERVER is in the server's own words: its detail holds the text of a
 *    reply the server sent during the call;
 *  - NOSCRIPT reaches the caller only after the server said it at least
 *    CACHET_NOSCRIPT_ROUNDS times in the call;
 *  - a read of one key whose one command failed (closed, cut short, never
 *    answered, an error reply, a reply of the wrong type) is an error,
 *    never a hit or a miss;
 *  - the handle recovers: once the server is honest again, each GET gets
 *    its own reply. A connection put back with replies of the failed call
 *    still unread would hand them to the next call. Through the sync
 *    runner the first GET must succeed; through the async driver or a
 *    multiplexed connection, which may return before every reply of a
 *    step is read, the first may meet a connection the server cut
 *    meanwhile (ECONN or ETIMEDOUT), and the next must succeed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "cachet.h"
#include "crc16.h"
#include "entry.h"
#include "error.h"
#include "fuzz_helpers.h"
#include "replies.h"

#ifdef CACHET_HAVE_LIBEVENT
#define VIA_ASYNC_IMPL
#include "via_async.h"
#endif

#define MAX_PEERS 16
#define MAX_ARGS 8192
#define MAX_TEXTS 256
/* How much of a text the ESERVER check compares. */
#define TEXT_CMP 40

/* ---- The server ----------------------------------------------------------
 * One thread, poll(2) over the listening socket and its connections. Every
 * reply goes through the connection's output buffer and is written as the
 * socket takes it, so a long pipeline never deadlocks the two sides. */

typedef struct peer {
  int fd;
  SSL *ssl;        /* a TLS peer */
  int want_write;  /* its handshake waits to write */
  unsigned served; /* commands answered: how it closes, with TLS */
  redisReader *rd; /* the client's commands */
  reply_buf out;
  size_t off;      /* of out, written */
  int stalled;     /* never answers again */
  int close_after; /* close once out is written */
  int feed;        /* a near cache's invalidation feed (it subscribed) */
} peer;

static struct {
  pthread_mutex_t mu;
  pthread_t thread;
  /* The unix socket, and two TCP ports on 127.0.0.1 that play two
   * masters of a cluster (the same server behind both). */
  int lfd[3];
  int port[2];
  SSL_CTX *tls;  /* the server's side of TLS */
  int tls_peers; /* the ports take TLS now */
  int wake[2];
  char dir[64], path[128];
  peer p[MAX_PEERS];
  int np;
  /* The input of the call being made; NULL: the server is honest. */
  fuzz_cursor *in;
  int cluster; /* the handle is a cluster client */
  int loaded[CACHET_SCRIPT_COUNT];
  /* What the server said during the call. */
  char texts[MAX_TEXTS][TEXT_CMP + 1];
  int ntexts;
  /* NOSCRIPT answers to EVALSHA, and to any other command. */
  int noscripts, noscripts_other;
  /* One-key reads (GET, EXISTS, PTTL): how many, and whether the last one
   * failed. */
  int reads, read_failed;
  /* Connections the server closed or stopped answering in this input. */
  int cut;
  /* A near cache's feed has subscribed, or failed to (the call waits for
   * that, briefly, so that the feed takes part in it). */
  int feed_settled;
  /* The value keys of the calls' keys, for invalidation messages. */
  char vkeys[3][64];
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER, .lfd = {-1, -1, -1}};

static void peer_close(peer *pe) {
  if (pe->ssl != NULL) {
    /* As a server that exits cleanly, or one that dies. */
    if (pe->served & 1)
      (void)SSL_shutdown(pe->ssl);
    SSL_free(pe->ssl);
    pe->ssl = NULL;
    ERR_clear_error();
  }
  if (pe->fd >= 0)
    close(pe->fd);
  pe->fd = -1;
  if (pe->rd != NULL)
    redisReaderFree(pe->rd);
  pe->rd = NULL;
  free(pe->out.p);
  memset(&pe->out, 0, sizeof pe->out);
}

/* As cachet_fail_bytes writes a server's words into a detail. */
static void note_text(const char *s, size_t n) {
  if (srv.ntexts == MAX_TEXTS)
    return;
  char *t = srv.texts[srv.ntexts++];
  size_t o = 0;
  for (size_t i = 0; i < n && o + 4 <= TEXT_CMP; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch < 0x7f)
      t[o++] = (char)ch;
    else
      o += (size_t)snprintf(t + o, TEXT_CMP + 1 - o, "\\x%02x", ch);
  }
  t[o] = '\0';
}

static void note_reply(const redisReply *r, int depth) {
  if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STRING ||
      r->type == REDIS_REPLY_STATUS)
    note_text(r->str, r->len);
  else if (r->type == REDIS_REPLY_ARRAY && depth < REPLY_MAX_DEPTH + 1)
    for (size_t i = 0; i < r->elements; i++)
      note_reply(r->element[i], depth + 1);
}

/* The bytes from `mark` on are one reply, or the connection closes after
 * them (the client meets an end it must treat as a failure). Anything
 * after a whole reply is dropped: the client must never be sent a reply it
 * did not ask for, or the server would be the one out of step. Returns the
 * reply's type, or 0 if it is not whole. */
static int settle(peer *pe, size_t mark, int evalsha, int note) {
  redisReader *rd = redisReaderCreate();
  FUZZ_ASSERT(rd != NULL);
  void *r = NULL;
  int type = 0;
  if (pe->out.len > mark &&
      redisReaderFeed(rd, pe->out.p + mark, pe->out.len - mark) == REDIS_OK &&
      redisReaderGetReply(rd, &r) == REDIS_OK && r != NULL) {
    redisReply *reply = r;
    type = reply->type;
    if (note)
      note_reply(reply, 0);
    if (note && type == REDIS_REPLY_ERROR && reply->len >= 8 &&
        memcmp(reply->str, "NOSCRIPT", 8) == 0)
      *(evalsha ? &srv.noscripts : &srv.noscripts_other) += 1;
    /* What the reader took: the whole buffer less what it still holds. */
    pe->out.len -= rd->len - rd->pos;
    freeReplyObject(reply);
  } else {
    pe->close_after = 1;
    srv.cut++;
  }
  redisReaderFree(rd);
  return type;
}

static int is_read(const cachet_cmd *k) {
  return reply_is(k, "GET") || reply_is(k, "EXISTS") || reply_is(k, "PTTL");
}

/* A one-key read's reply of the type it needs. */
static int read_ok(const cachet_cmd *k, int type) {
  if (reply_is(k, "GET"))
    return type == REDIS_REPLY_STRING || type == REDIS_REPLY_NIL;
  return type == REDIS_REPLY_INTEGER;
}

/* CLUSTER SLOTS: the two halves of the slots, on the two ports; `v` says
 * which port has which half, so a refreshed map may move every slot. */
static void put_map(reply_buf *b, uint8_t v) {
  reply_put_raw(b, "*2\r\n");
  for (int h = 0; h < 2; h++) {
    int node = h ^ (v & 1);
    reply_put_raw(b, "*3\r\n");
    reply_put_head(b, ':', h ? 8192 : 0);
    reply_put_head(b, ':', h ? 16383 : 8191);
    reply_put_raw(b, "*3\r\n");
    reply_put_str(b, "127.0.0.1");
    reply_put_head(b, ':', srv.port[node]);
    reply_put_str(b, node ? "node-b" : "node-a");
  }
}

/* The key a cluster routes `k` by, or NULL for a command sent to a node. */
static const char *routed_key(const cachet_cmd *k, size_t *len) {
  static const char *const to_node[] = {"SCAN",   "INFO",   "PING",
                                        "CONFIG", "SCRIPT", "CLUSTER",
                                        "ASKING", "CLIENT", "ZSCAN"};
  for (size_t i = 0; i < sizeof to_node / sizeof to_node[0]; i++)
    if (reply_is(k, to_node[i]))
      return NULL;
  int at = reply_is(k, "EVALSHA") ? 3 : 1;
  if (k->argc <= at)
    return NULL;
  *len = k->lens[at];
  return k->argv[at];
}

/* CACHET_FUZZ_TRACE=1: each command the server reads, and what became of
 * it, on stderr. */
static int tracing;

static void trace(const peer *pe, const cachet_cmd *k, const char *what) {
  if (!tracing)
    return;
  fprintf(stderr, "  [%d%s]%s %.*s", pe->fd, pe->ssl != NULL ? " tls" : "",
          srv.in == NULL ? " honest" : "", (int)k->lens[0], k->argv[0]);
  for (int i = 1; i < k->argc && i < 4; i++)
    fprintf(stderr, " %.*s", (int)(k->lens[i] < 24 ? k->lens[i] : 24),
            k->argv[i]);
  fprintf(stderr, " -> %s\n", what);
}

/* Now and then, a message on a near cache's invalidation feed, as Redis
 * sends one after a write: keys the calls use, a flush (nil), a payload
 * from the grammar, or anything at all. The input says when (only while a
 * feed is subscribed, so other inputs read as before). */
static void push(fuzz_cursor *in) {
  peer *f = NULL;
  for (int i = 0; i < srv.np && f == NULL; i++)
    if (srv.p[i].feed && srv.p[i].fd >= 0 && !srv.p[i].stalled &&
        !srv.p[i].close_after)
      f = &srv.p[i];
  if (f == NULL)
    return;
  uint8_t p = fuzz_take_u8(in);
  if (p >= 48)
    return;
  size_t mark = f->out.len;
  if (p % 4 != 3)
    reply_put_raw(&f->out, "*3\r\n$7\r\nmessage\r\n$20\r\n"
                           "__redis__:invalidate\r\n");
  if (p % 4 == 0) {
    int n = 1 + (p >> 2) % 3;
    reply_put_head(&f->out, '*', n);
    for (int i = 0; i < n; i++)
      reply_put_str(&f->out, srv.vkeys[(p + i) % 3]);
  } else if (p % 4 == 1) {
    reply_put_raw(&f->out, "$-1\r\n");
  } else {
    reply_gen(in, &f->out, 1);
  }
  (void)settle(f, mark, 0, 0);
  if (tracing)
    fprintf(stderr, "  [%d] pushed a message (%d)%s\n", f->fd, p % 4,
            f->close_after ? ", then closed" : "");
}

/* Answer one command; called with srv.mu held. */
static void answer(peer *pe, const redisReply *cmd) {
  const char *argv[MAX_ARGS];
  size_t lens[MAX_ARGS];
  if (cmd->type != REDIS_REPLY_ARRAY || cmd->elements == 0 ||
      cmd->elements > MAX_ARGS) {
    pe->close_after = 1;
    return;
  }
  for (size_t i = 0; i < cmd->elements; i++) {
    FUZZ_ASSERT_MSG(cmd->element[i]->type == REDIS_REPLY_STRING,
                    "a command argument that is not a bulk string");
    argv[i] = cmd->element[i]->str;
    lens[i] = cmd->element[i]->len;
  }
  cachet_cmd k = {(int)cmd->elements, argv, lens, 0, -1};
  const cachet_script *sc = NULL;
  if (reply_is(&k, "EVALSHA") && k.argc >= 2) {
    sc = reply_script_by_sha(argv[1], lens[1]);
    if (sc != NULL)
      k.script = (int)(sc - cachet_scripts);
  }
  fuzz_cursor *in = srv.in;
  int read = in != NULL && is_read(&k);
  /* The feed's set-up: CLIENT ID, CLIENT TRACKING, SUBSCRIBE. */
  int setup = reply_is(&k, "CLIENT") || reply_is(&k, "SUBSCRIBE");
  srv.feed_settled |= setup && in == NULL;
  if (read)
    srv.reads++;
  /* Past the input's end every command closes its connection. */
  int ran_out = in != NULL && in->size == 0;
  uint8_t o = in == NULL ? 128 : ran_out ? 0 : fuzz_take_u8(in);
  if (o <= 12) { /* the connection drops, or (12) never answers again */
    if (o == 12)
      pe->stalled = 1; /* the client's deadline ends it */
    else
      pe->close_after = 1;
    srv.read_failed = read;
    srv.cut++;
    srv.feed_settled |= setup;
    trace(pe, &k,
          o == 12   ? "stalled"
          : ran_out ? "closed (the input ran out)"
                    : "closed");
    return;
  }
  if (o < 16) /* SCRIPT FLUSH, by another client */
    memset(srv.loaded, 0, sizeof srv.loaded);
  size_t mark = pe->out.len, klen = 0;
  const char *key =
      srv.cluster && o >= 16 && o < 32 ? routed_key(&k, &klen) : NULL;
  if (key != NULL) { /* the slot is elsewhere, for good or for this once */
    char r[96];
    int n = snprintf(r, sizeof r, "-%s %u 127.0.0.1:%d\r\n",
                     o & 2 ? "ASK" : "MOVED", cachet_key_slot(key, klen),
                     srv.port[o & 1]);
    reply_put(&pe->out, r, (size_t)n);
  } else if (reply_is(&k, "CLUSTER")) {
    put_map(&pe->out, in != NULL ? fuzz_take_u8(in) : 0);
  } else if (reply_is(&k, "ASKING")) {
    reply_put_raw(&pe->out, "+OK\r\n");
  } else if (o >= 170) {
    reply_gen(in, &pe->out, 0);
  } else if (sc != NULL && !srv.loaded[k.script]) {
    reply_put_raw(&pe->out, "-NOSCRIPT No matching script.\r\n");
  } else {
    if (reply_is(&k, "SCRIPT") && k.argc == 3) {
      const cachet_script *ld = reply_script_by_body(argv[2], lens[2]);
      if (ld != NULL)
        srv.loaded[ld - cachet_scripts] = 1;
    }
    uint8_t v = in != NULL ? fuzz_take_u8(in) : 0;
    if (reply_is(&k, "CLIENT") && k.argc >= 2 && lens[1] == 2 &&
        memcmp(argv[1], "ID", 2) == 0) {
      reply_put_raw(&pe->out, ":7\r\n");
    } else if (reply_is(&k, "CLIENT")) { /* TRACKING */
      reply_put_raw(&pe->out, "+OK\r\n");
    } else if (reply_is(&k, "SUBSCRIBE") && k.argc == 2) {
      reply_put_raw(&pe->out, "*3\r\n$9\r\nsubscribe\r\n");
      reply_put_bulk(&pe->out, argv[1], lens[1]);
      reply_put_raw(&pe->out, ":1\r\n");
      pe->feed = 1;
    } else if (pe->feed && reply_is(&k, "PING")) {
      reply_put_raw(&pe->out, "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    } else {
      reply_plausible(&pe->out, &k, v);
    }
  }
  int type = settle(pe, mark, reply_is(&k, "EVALSHA"), 1);
  if (tracing) {
    char what[96];
    snprintf(what, sizeof what, "reply type %d%s%s", type,
             o < 16 ? " (after a SCRIPT FLUSH)" : "",
             pe->close_after ? ", then closed" : "");
    trace(pe, &k, what);
  }
  if (read)
    srv.read_failed = type == 0 || !read_ok(&k, type);
  if (setup)
    srv.feed_settled |=
        reply_is(&k, "SUBSCRIBE") || pe->close_after ||
        type != (k.argc >= 2 && lens[1] == 2 ? REDIS_REPLY_INTEGER /* ID */
                                             : REDIS_REPLY_STATUS);
  /* Honest replies are whole and of the right type. */
  FUZZ_ASSERT(in != NULL || type != 0);
  if (in != NULL)
    push(in);
}

/* Answer every whole command read so far, in order. */
static void serve_commands(peer *pe) {
  while (!pe->stalled && !pe->close_after) {
    void *cmd = NULL;
    if (redisReaderGetReply(pe->rd, &cmd) != REDIS_OK) {
      pe->close_after = 1;
      break;
    }
    if (cmd == NULL)
      break;
    pthread_mutex_lock(&srv.mu);
    answer(pe, cmd);
    pthread_mutex_unlock(&srv.mu);
    pe->served++;
    freeReplyObject(cmd);
  }
}

/* Bytes from the client: > 0 read, 0 closed or broken, -1 none yet. With
 * TLS the handshake comes first, and the records it leaves are read on. */
static ssize_t peer_recv(peer *pe, char *buf, size_t n) {
  if (pe->ssl == NULL) {
    ssize_t r = read(pe->fd, buf, n);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
      return -1;
    return r < 0 ? 0 : r;
  }
  pe->want_write = 0;
  int r = 1;
  if (!SSL_is_init_finished(pe->ssl))
    r = SSL_do_handshake(pe->ssl);
  if (r == 1)
    r = SSL_read(pe->ssl, buf, (int)n);
  if (r > 0)
    return r;
  int e = SSL_get_error(pe->ssl, r);
  ERR_clear_error();
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    pe->want_write = e == SSL_ERROR_WANT_WRITE;
    return -1;
  }
  return 0;
}

/* Read until the socket has nothing more: a stalled or closing peer's
 * bytes are dropped, the others' commands answered. */
static void take(peer *pe) {
  char buf[16384];
  for (;;) {
    ssize_t n = peer_recv(pe, buf, sizeof buf);
    if (n < 0)
      return;
    if (n == 0) {
      peer_close(pe);
      return;
    }
    if (pe->stalled || pe->close_after)
      continue;
    if (redisReaderFeed(pe->rd, buf, (size_t)n) != REDIS_OK) {
      pe->close_after = 1;
      continue;
    }
    serve_commands(pe);
  }
}

/* Bytes to the client: > 0 written, 0 broken, -1 not now. */
static ssize_t peer_send(peer *pe) {
  size_t left = pe->out.len - pe->off;
  if (pe->ssl == NULL) {
    ssize_t n = send(pe->fd, pe->out.p + pe->off, left, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return -1;
    return n < 0 ? 0 : n;
  }
  int n = SSL_write(pe->ssl, pe->out.p + pe->off,
                    left > INT_MAX ? INT_MAX : (int)left);
  if (n > 0)
    return n;
  int e = SSL_get_error(pe->ssl, n);
  ERR_clear_error();
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? -1 : 0;
}

static void give(peer *pe) {
  if (pe->ssl != NULL && !SSL_is_init_finished(pe->ssl)) {
    if (pe->want_write)
      take(pe); /* the handshake goes on */
    return;
  }
  while (pe->off < pe->out.len) {
    ssize_t n = peer_send(pe);
    if (n <= 0) {
      if (n == 0)
        peer_close(pe);
      return;
    }
    pe->off += (size_t)n;
  }
  pe->out.len = pe->off = 0;
  if (pe->close_after)
    peer_close(pe);
}

static void *serve(void *arg) {
  (void)arg;
  /* OpenSSL writes the server's records with write(): a client gone
   * raises SIGPIPE, here only (it stays pending on this thread). The
   * library's own threads keep it, so that a write of cachet's that could
   * raise it would still end the process. */
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  FUZZ_ASSERT(pthread_sigmask(SIG_BLOCK, &pipe, NULL) == 0);
  for (;;) {
    struct pollfd fds[4 + MAX_PEERS];
    fds[0] = (struct pollfd){srv.wake[0], POLLIN, 0};
    for (int i = 0; i < 3; i++)
      fds[1 + i] = (struct pollfd){srv.lfd[i], POLLIN, 0};
    int n = 4;
    for (int i = 0; i < srv.np; i++)
      fds[n++] = (struct pollfd){
          srv.p[i].fd,
          (short)(POLLIN | (srv.p[i].off < srv.p[i].out.len ||
                                    srv.p[i].close_after || srv.p[i].want_write
                                ? POLLOUT
                                : 0)),
          0};
    if (poll(fds, (nfds_t)n, -1) < 0) {
      FUZZ_ASSERT(errno == EINTR);
      continue;
    }
    if (fds[0].revents != 0) {
      char c;
      if (read(srv.wake[0], &c, 1) == 1 && c == 'q')
        return NULL;
    }
    for (int i = 0; i < srv.np; i++) {
      peer *pe = &srv.p[i];
      short ev = fds[4 + i].revents;
      if (pe->fd >= 0 && (ev & (POLLIN | POLLHUP | POLLERR)))
        take(pe);
      if (pe->fd >= 0 &&
          (ev & POLLOUT || pe->out.len > pe->off || pe->close_after))
        give(pe);
    }
    int kept = 0;
    for (int i = 0; i < srv.np; i++)
      if (srv.p[i].fd >= 0)
        srv.p[kept++] = srv.p[i];
    srv.np = kept;
    for (int l = 0; l < 3; l++) {
      if (!(fds[1 + l].revents & POLLIN))
        continue;
      int fd = accept(srv.lfd[l], NULL, NULL);
      if (fd >= 0) {
        pthread_mutex_lock(&srv.mu);
        int refuse =
            srv.np == MAX_PEERS || (srv.in != NULL && srv.in->size == 0);
        /* A connection closed at once is one the server cut: the async
         * driver may have queued the next call's command on it already. */
        srv.cut += refuse;
        int tls = l > 0 && srv.tls_peers;
        pthread_mutex_unlock(&srv.mu);
        if (refuse) {
          close(fd);
        } else {
          FUZZ_ASSERT(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
          peer *pe = &srv.p[srv.np++];
          memset(pe, 0, sizeof *pe);
          pe->fd = fd;
          pe->rd = redisReaderCreate();
          FUZZ_ASSERT(pe->rd != NULL);
          if (tls) {
            pe->ssl = SSL_new(srv.tls);
            FUZZ_ASSERT(pe->ssl != NULL && SSL_set_fd(pe->ssl, fd) == 1);
            SSL_set_accept_state(pe->ssl);
          }
        }
      }
    }
  }
}

static void stop_server(void) {
  FUZZ_ASSERT(write(srv.wake[1], "q", 1) == 1);
  pthread_join(srv.thread, NULL);
  for (int i = 0; i < srv.np; i++)
    peer_close(&srv.p[i]);
  for (int i = 0; i < 3; i++)
    close(srv.lfd[i]);
  unlink(srv.path);
  rmdir(srv.dir);
  SSL_CTX_free(srv.tls);
}

/* The server's TLS: a fresh P-256 key and a self-signed certificate for
 * 127.0.0.1, in memory (the client does not verify it: test_tls covers
 * verification). */
static SSL_CTX *tls_server(void) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  FUZZ_ASSERT(key != NULL && x != NULL);
  FUZZ_ASSERT(X509_set_version(x, 2) == 1);
  FUZZ_ASSERT(ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1);
  FUZZ_ASSERT(X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL);
  FUZZ_ASSERT(X509_gmtime_adj(X509_getm_notAfter(x), 86400) != NULL);
  FUZZ_ASSERT(X509_set_pubkey(x, key) == 1);
  X509_NAME *name = X509_get_subject_name(x);
  FUZZ_ASSERT(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                         (const unsigned char *)"127.0.0.1", -1,
                                         -1, 0) == 1);
  FUZZ_ASSERT(X509_set_issuer_name(x, name) == 1);
  FUZZ_ASSERT(X509_sign(x, key, EVP_sha256()) > 0);
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  FUZZ_ASSERT(ctx != NULL);
  FUZZ_ASSERT(SSL_CTX_use_certificate(ctx, x) == 1);
  FUZZ_ASSERT(SSL_CTX_use_PrivateKey(ctx, key) == 1);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  X509_free(x);
  EVP_PKEY_free(key);
  return ctx;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  tracing = getenv("CACHET_FUZZ_TRACE") != NULL;
  const char *tmp = getenv("TMPDIR");
  snprintf(srv.dir, sizeof srv.dir, "%s/cachet-wire.XXXXXX",
           tmp != NULL && strlen(tmp) < 30 ? tmp : "/tmp");
  FUZZ_ASSERT(mkdtemp(srv.dir) != NULL);
  snprintf(srv.path, sizeof srv.path, "%s/s", srv.dir);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  FUZZ_ASSERT(strlen(srv.path) < sizeof a.sun_path);
  strcpy(a.sun_path, srv.path);
  srv.lfd[0] = socket(AF_UNIX, SOCK_STREAM, 0);
  FUZZ_ASSERT(srv.lfd[0] >= 0);
  FUZZ_ASSERT(bind(srv.lfd[0], (struct sockaddr *)&a, sizeof a) == 0);
  FUZZ_ASSERT(listen(srv.lfd[0], 64) == 0);
  for (int i = 0; i < 2; i++) { /* ports the kernel picks: never a fixed one */
    struct sockaddr_in in = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof in;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    FUZZ_ASSERT(fd >= 0);
    FUZZ_ASSERT(bind(fd, (struct sockaddr *)&in, sizeof in) == 0);
    FUZZ_ASSERT(listen(fd, 64) == 0);
    FUZZ_ASSERT(getsockname(fd, (struct sockaddr *)&in, &len) == 0);
    srv.lfd[1 + i] = fd;
    srv.port[i] = ntohs(in.sin_port);
  }
  /* A client may give up between poll and accept: never block there. */
  for (int i = 0; i < 3; i++)
    FUZZ_ASSERT(fcntl(srv.lfd[i], F_SETFL, O_NONBLOCK) == 0);
  srv.tls = tls_server();
  FUZZ_ASSERT(pipe(srv.wake) == 0);
  FUZZ_ASSERT(pthread_create(&srv.thread, NULL, serve, NULL) == 0);
  atexit(stop_server);
  return 0;
}

/* ---- The calls ------------------------------------------------------------
 * Through the public API, sync or (with libevent) through the async driver
 * by the via_async shim: each via_* is the async twin of its sync call. */

#ifdef CACHET_HAVE_LIBEVENT
#define CALL(async, name, ...)                                                 \
  ((async) ? via_##name(__VA_ARGS__) : cachet_##name(__VA_ARGS__))
#else
#define CALL(async, name, ...) ((void)(async), cachet_##name(__VA_ARGS__))
#endif

enum {
  W_GET,
  W_EXISTS,
  W_TTL,
  W_SET,
  W_SET_TAGS,
  W_SET_STAGED,
  W_DELETE,
  W_EVICT,
  W_CLEAR,
  W_PRUNE,
  W_LOCK_ACQUIRE,
  W_LOCK_RELEASE,
  W_LOCK_EXTEND,
  W_GET_OR_SET,
  W_MGET,
  W_MSET,
  W_HEALTH,
  W_WRITE_THROUGH,
  W_WRITE_BEHIND,
  W_PING,
  W_COUNT
};

static const char *const tag_names[] = {"tg", "t2", "other"};
static const char *const keys[] = {"k", "a", "b", "k"};

/* The loader's choices. Not on the caller's stack: through the async
 * driver a load the call gave up on goes on after the call returns. */
static _Atomic uint8_t load_choice;

static int loader(void *ud, const void *key, size_t keylen, void **val,
                  size_t *len, int64_t *ttl_ms) {
  (void)ud;
  (void)key;
  (void)keylen;
  (void)ttl_ms;
  uint8_t b = atomic_load(&load_choice);
  /* A slow load outlives a third of the 100 ms lease: the watchdog renews
   * it meanwhile, on the connection the call does not hold. */
  if (b & 0x80)
    usleep(40000);
  if (b & 1)
    return -1;
  *val = strdup("loaded");
  FUZZ_ASSERT(*val != NULL);
  *len = 6;
  return 0;
}

static int writer(void *ud, const void *key, size_t keylen, const void *val,
                  size_t len) {
  (void)key;
  (void)keylen;
  (void)val;
  (void)len;
  return *(const uint8_t *)ud & 2 ? -1 : 0;
}

/* Make the call the input names; its status. */
static int call(cachet *c, int async, uint8_t op, uint8_t b) {
  const char *key = keys[b % 4];
  size_t ntags = (b >> 2) % 4;
  const char *const *tags = ntags > 0 ? tag_names : NULL;
  int64_t ttl = b & 0x40 ? 1000 : 0;
  void *val = NULL;
  size_t len = 0;
  uint64_t n = 0;
  int rc;
  switch (op % W_COUNT) {
  case W_GET:
    rc = CALL(async, get, c, key, 1, &val, &len);
    FUZZ_ASSERT((rc == CACHET_OK) == (val != NULL));
    cachet_free(val);
    return rc;
  case W_EXISTS:
    return CALL(async, exists, c, key, 1);
  case W_TTL: {
    int64_t t = 0;
    return CALL(async, ttl, c, key, 1, &t);
  }
  case W_SET:
    return CALL(async, set, c, key, 1, "v", 1, ttl);
  case W_SET_TAGS:
    return CALL(async, set_tags, c, key, 1, "v", 1, ttl, tags, ntags);
  case W_SET_STAGED: {
    char *big = calloc(1, CACHET_STAGE_MIN);
    FUZZ_ASSERT(big != NULL);
    rc = CALL(async, set_tags, c, key, 1, big, CACHET_STAGE_MIN, ttl, tags,
              ntags);
    free(big);
    return rc;
  }
  case W_DELETE:
    return CALL(async, delete, c, key, 1);
  case W_EVICT:
    return CALL(async, evict_tags, c, tag_names, 1 + b % 3, &n);
  case W_CLEAR:
    return CALL(async, clear, c, b & 1, &n);
  case W_PRUNE:
    return CALL(async, prune, c, &n);
  case W_LOCK_ACQUIRE: {
    cachet_lock *lk = NULL;
    rc = CALL(async, lock_acquire, c, "l", 1000, (b % 4) * 5, &lk);
    FUZZ_ASSERT((rc == CACHET_OK) == (lk != NULL));
    cachet_lock_free(lk);
    return rc;
  }
  case W_LOCK_RELEASE:
  case W_LOCK_EXTEND: {
    cachet_lock *lk = NULL;
    FUZZ_ASSERT(cachet_lock_from_token("l", "00112233445566778899aabbccddeeff",
                                       &lk) == CACHET_OK);
    rc = op % W_COUNT == W_LOCK_RELEASE ? CALL(async, lock_release, c, lk)
                                        : CALL(async, lock_extend, c, lk, 500);
    cachet_lock_free(lk);
    return rc;
  }
  case W_GET_OR_SET:
    atomic_store(&load_choice, b);
    rc = CALL(async, get_or_set, c, key, 1, loader, NULL, ttl, tags, ntags,
              &val, &len);
    FUZZ_ASSERT((rc == CACHET_OK) == (val != NULL));
    cachet_free(val);
    return rc;
  case W_MGET:
  case W_MSET: {
    cachet_entry e[3];
    size_t ne = 1 + b % 3;
    for (size_t i = 0; i < ne; i++)
      e[i] = (cachet_entry){.key = keys[(b >> i) % 4],
                            .keylen = 1,
                            .val = "v",
                            .len = 1,
                            .ttl_ms = ttl,
                            .tags = (b >> (i + 3)) & 1 ? tag_names : NULL,
                            .ntags = (b >> (i + 3)) & 1 ? 2 : 0};
    rc = op % W_COUNT == W_MGET ? CALL(async, mget, c, e, ne)
                                : CALL(async, mset, c, e, ne);
    for (size_t i = 0; i < ne; i++) {
      FUZZ_ASSERT_MSG(
          strcmp(cachet_status_name(e[i].status), "CACHET_UNKNOWN") != 0,
          "an entry status cachet does not know");
      cachet_free(e[i].out);
    }
    return rc;
  }
  case W_HEALTH: {
    cachet_health h;
    return CALL(async, health_check, c, &h);
  }
  case W_WRITE_THROUGH:
    return cachet_write_through(c, key, 1, "v", 1, writer, &b, ttl, tags,
                                ntags);
  case W_WRITE_BEHIND:
    return cachet_write_behind(c, key, 1, "v", 1, writer, &b, ttl, tags, ntags);
  default:
    return cachet_ping(c);
  }
}

/* Did the server say, during the call, what this detail quotes? */
static int quoted(const char *detail) {
  for (int i = 0; i < srv.ntexts; i++) {
    const char *t = srv.texts[i];
    if (t[0] == '\0' ? strstr(detail, "without a message") != NULL
                     : strstr(detail, t) != NULL)
      return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_cursor in = {data, size};
  uint8_t flags = fuzz_take_u8(&in), op = fuzz_take_u8(&in),
          b = fuzz_take_u8(&in);
#ifdef CACHET_HAVE_LIBEVENT
  int async = flags & 1;
#else
  int async = 0;
#endif
  cachet_options o;
  cachet_options_init(&o);
  int cluster = (flags & 8) != 0;
  /* Both bits: inputs committed before TLS came have one or the other. */
  int tls = (flags & 0x60) == 0x60;
  if (cluster || tls) {
    o.cluster = cluster;
    o.host = "127.0.0.1";
    o.port = srv.port[0];
  } else {
    o.unix_path = srv.path;
  }
  if (tls) {
    o.use_tls = 1;
    o.tls_insecure = 1;
  }
  o.prefix = "fz:";
  /* A connection that never answers costs this much. Not less: the
   * honest GETs afterwards must not miss their deadline because a loaded
   * machine (CI runs two targets per two cores) did not schedule the
   * client in time. */
  o.timeout_ms = 250;
  o.fetch_wait_ms = 30;
  o.lock_lease_ms = 100;
  /* One connection, so that each call meets whatever the last one left. */
  o.pool_size = 1;
  o.multiplex = flags & 2 && !cluster && !tls ? 1 : 0; /* plaintext, one
                                                           server only */
  if (flags & 16) /* a near cache, and its feed */
    o.near_cache_bytes = 1 << 20;
  /* The server follows the input from the start: a near cache's feed
   * connects as the handle opens. */
  pthread_mutex_lock(&srv.mu);
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++)
    srv.loaded[i] = (flags & 4) != 0;
  srv.ntexts = srv.noscripts = srv.noscripts_other = 0;
  srv.reads = srv.read_failed = srv.cut = srv.feed_settled = 0;
  srv.in = &in;
  srv.cluster = cluster;
  srv.tls_peers = tls;
  pthread_mutex_unlock(&srv.mu);
  cachet *c;
  FUZZ_ASSERT_MSG(cachet_open(&c, &o) == CACHET_OK, cachet_last_error());
  /* (A feed thread may already be reading from the server.) */
  pthread_mutex_lock(&srv.mu);
  for (int i = 0; i < 3; i++) {
    char *k = NULL;
    size_t kl = 0;
    FUZZ_ASSERT(cachet_value_key(c, keys[i], 1, &k, &kl) == CACHET_OK);
    snprintf(srv.vkeys[i], sizeof srv.vkeys[i], "%s", k);
    cachet_free(k);
  }
  pthread_mutex_unlock(&srv.mu);

  /* A near cache's feed takes part in the call once it has subscribed:
   * wait for it, at most 200 ms (it may have failed without a word, and
   * retries only later). */
  for (int waited = 0; o.near_cache_bytes > 0 && waited < 200; waited++) {
    pthread_mutex_lock(&srv.mu);
    int settled = srv.feed_settled;
    pthread_mutex_unlock(&srv.mu);
    if (settled)
      break;
    usleep(1000);
  }
  cachet_error_clear();
  int rc = call(c, async, op, b);
  char detail[600];
  snprintf(detail, sizeof detail, "%s", cachet_last_error());

  pthread_mutex_lock(&srv.mu);
  srv.in = NULL;
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++)
    srv.loaded[i] = 1;
  if (getenv("CACHET_FUZZ_TRACE") != NULL)
    fprintf(stderr, "call %d (%s): %s (%s); reads %d, failed %d\n",
            op % W_COUNT, async ? "async" : "sync", cachet_status_name(rc),
            detail, srv.reads, srv.read_failed);
  FUZZ_ASSERT_MSG(strcmp(cachet_status_name(rc), "CACHET_UNKNOWN") != 0,
                  "a status cachet does not know");
  if (rc < 0)
    FUZZ_ASSERT_MSG(detail[0] != '\0', "an error without detail");
  if (rc == CACHET_ESERVER)
    FUZZ_ASSERT_MSG(quoted(detail), "ESERVER not in the server's words");
  /* (A NOSCRIPT to another command is passed on as it is.) */
  if (rc == CACHET_ESERVER && strstr(detail, "NOSCRIPT") != NULL &&
      srv.noscripts_other == 0)
    FUZZ_ASSERT_MSG(srv.noscripts >= CACHET_NOSCRIPT_ROUNDS,
                    "NOSCRIPT surfaced before its rounds ran out");
  int one_read = op % W_COUNT <= W_TTL;
  if (one_read && srv.reads == 1 && srv.read_failed)
    FUZZ_ASSERT_MSG(rc < 0, "a failed read reported as a hit or a miss");
  /* The sync runner reads every reply of a step before it returns, or
   * drops the connection. The async driver delivers a failed step at once
   * and reads the replies still owed later, and a multiplexed request that
   * timed out leaves its place behind while replies still come: there, a
   * connection the server cut after the call returned may fail the next
   * call, once, as a closed or silent connection: never as another reply. */
  int may_fail_once = (async || o.multiplex > 0) && srv.cut > 0;
  pthread_mutex_unlock(&srv.mu);

  /* The server is honest now: every GET is a hit of "v". */
  for (int i = 0; i < 3; i++) {
    void *val = NULL;
    size_t len = 0;
    rc = CALL(async, get, c, "k", 1, &val, &len);
    if (i == 0 && may_fail_once &&
        (rc == CACHET_ECONN || rc == CACHET_ETIMEDOUT))
      continue;
    FUZZ_ASSERT_MSG(rc == CACHET_OK && len == 1 && memcmp(val, "v", 1) == 0,
                    cachet_last_error());
    cachet_free(val);
  }
  FUZZ_ASSERT_MSG(cachet_ping(c) == CACHET_OK, cachet_last_error());
#ifdef CACHET_HAVE_LIBEVENT
  if (async) {
    via_close(c);
    return 0;
  }
#endif
  cachet_close(c);
  return 0;
}
