/* Multiplexed connections (mux.h). */
/* PTHREAD_MUTEX_ADAPTIVE_NP and syscall(2). */
#define _GNU_SOURCE
#include "mux.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "error.h"
#include "resp.h"

/* Requests that timed out but whose replies have not come yet: past this
 * many the server is not answering at all, and the connection is dropped
 * rather than remembered without bound. */
#define MUX_MAX_ABANDONED 4096
/* Replies the reader parses before it takes the mutex to hand them out. */
#define MUX_BATCH 64
/* A spare output buffer larger than this is freed, not kept. */
#define MUX_KEEP_BUF 65536

enum { REQ_WAITING, REQ_DONE, REQ_READ /* asked to become the reader */ };

/* A caller's request, on its stack. Under the connection's mutex once
 * queued, but for `state`, which its thread reads without the mutex to
 * learn that it is answered. */
typedef struct mux_req {
  atomic_int state; /* REQ_*; a futex, woken on every change */
  atomic_int busy;  /* another thread still wakes it: do not return yet */
  size_t n, got;
  redisReply **replies;
  int status;
  char detail[256];
  int64_t deadline;    /* monotonic ms */
  uint64_t replies_at; /* the connection's replies when it was queued */
} mux_req;

/* A group in flight: its request, or NULL once that timed out. */
typedef struct mux_slot {
  mux_req *req;
  size_t left; /* replies still owed */
} mux_slot;

typedef struct mux_conn {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* a connect finished, or the last I/O thread left */
  cachet_conn cn;    /* socket, reader and bounds; cn.out is unused */
  int connected, connecting, broken;
  int writing, reading, users; /* users: threads on the socket now */
  char *out, *spare;           /* queued bytes; the writer's other buffer */
  size_t olen, ocap, spcap;
  mux_slot *q; /* ring of groups in flight, oldest at qhead */
  size_t qhead, qlen, qcap;
  size_t abandoned;
  uint64_t replies; /* replies read, ever (only compared) */
  atomic_int load;  /* requests in the call now, read without the mutex */
} mux_conn;

struct cachet_mux {
  cachet *c;
  int n;
  mux_conn *conns;
};

int cachet_mux_create(cachet *c, cachet_mux **out) {
  cachet_mux *m = calloc(1, sizeof *m);
  int n = c->cfg.multiplex;
  if (m == NULL || (m->conns = calloc((size_t)n, sizeof *m->conns)) == NULL) {
    free(m);
    return cachet_fail(CACHET_ENOMEM, "out of memory creating the "
                                      "multiplexed connections");
  }
  m->c = c;
  m->n = n;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  /* Held for a few instructions at a time by many threads: a short spin
   * beats a sleep and a wake-up on contention. */
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
  for (int i = 0; i < n; i++) {
    pthread_mutex_init(&m->conns[i].mu, &ma);
    pthread_cond_init(&m->conns[i].cv, &ca);
  }
  pthread_mutexattr_destroy(&ma);
  pthread_condattr_destroy(&ca);
  *out = m;
  return CACHET_OK;
}

void cachet_mux_destroy(cachet_mux *m) {
  if (m == NULL)
    return;
  for (int i = 0; i < m->n; i++) {
    mux_conn *mc = &m->conns[i];
    cachet_conn_close(&mc->cn);
    pthread_mutex_destroy(&mc->mu);
    pthread_cond_destroy(&mc->cv);
    free(mc->out);
    free(mc->spare);
    free(mc->q);
  }
  free(m->conns);
  free(m);
}

/* A futex on the request's state, rather than a semaphore under the
 * mutex: the thread that answers a request marks it busy and stores DONE
 * under the mutex, then wakes the waiter after letting the mutex go, and
 * clears busy last. The waiter returns once it sees DONE and busy clear,
 * without taking the mutex: its request, on its stack, outlives every
 * access of the other thread. */
static void state_wake(atomic_int *state) {
  syscall(SYS_futex, state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Sleep while *state is `val`, until a wake or the monotonic deadline. */
static void state_wait(atomic_int *state, int val, int64_t deadline_ms) {
  struct timespec ts = {(time_t)(deadline_ms / 1000),
                        (long)(deadline_ms % 1000) * 1000000L};
  /* FUTEX_WAIT_BITSET takes an absolute time, on CLOCK_MONOTONIC. */
  syscall(SYS_futex, state, FUTEX_WAIT_BITSET_PRIVATE, val, &ts, NULL,
          FUTEX_BITSET_MATCH_ANY);
}

/* ---- under the connection's mutex ---------------------------------------
 */

static mux_slot *slot_at(mux_conn *mc, size_t i) {
  return &mc->q[(mc->qhead + i) % mc->qcap];
}

static int push_slot(mux_conn *mc, mux_req *r) {
  if (mc->qlen == mc->qcap) {
    size_t cap = mc->qcap ? 2 * mc->qcap : 64;
    mux_slot *q = malloc(cap * sizeof *q);
    if (q == NULL)
      return cachet_fail(CACHET_ENOMEM, "out of memory queueing a request");
    for (size_t i = 0; i < mc->qlen; i++)
      q[i] = *slot_at(mc, i);
    free(mc->q);
    mc->q = q;
    mc->qcap = cap;
    mc->qhead = 0;
  }
  mc->q[(mc->qhead + mc->qlen++) % mc->qcap] = (mux_slot){r, r->n};
  r->replies_at = mc->replies;
  return CACHET_OK;
}

/* Answer r, busy until the caller has woken it (unbusy). */
static void finish(mux_req *r, int status, const char *detail) {
  r->status = status;
  if (detail != NULL)
    snprintf(r->detail, sizeof r->detail, "%s", detail);
  atomic_store_explicit(&r->busy, 1, memory_order_relaxed);
  atomic_store_explicit(&r->state, REQ_DONE, memory_order_release);
}

/* Wake r's thread; after the store of busy, r may be gone. */
static void unbusy(mux_req *r) {
  state_wake(&r->state);
  atomic_store_explicit(&r->busy, 0, memory_order_release);
}

/* The connection failed: every request in flight fails with `status` and
 * the calling thread's detail, and whoever is blocked on the socket is
 * woken (shutdown) so that it leaves; the last to leave closes it. */
static void fail_all(mux_conn *mc, int status) {
  const char *why = cachet_last_error();
  for (size_t i = 0; i < mc->qlen; i++) {
    mux_slot *s = slot_at(mc, i);
    if (s->req != NULL) {
      finish(s->req, status, why);
      unbusy(s->req);
    }
  }
  mc->qlen = mc->qhead = 0;
  mc->abandoned = 0;
  mc->olen = 0;
  if (!mc->broken && mc->cn.s.open)
    shutdown(mc->cn.s.fd, SHUT_RDWR);
  mc->broken = 1;
}

/* Close a broken connection once nobody is on its socket. */
static void maybe_reset(mux_conn *mc) {
  if (!mc->broken || mc->users > 0)
    return;
  cachet_conn_close(&mc->cn);
  mc->connected = 0;
  mc->broken = 0;
  pthread_cond_broadcast(&mc->cv);
}

/* Ask the oldest request still waiting to become the reader. */
static void promote(mux_conn *mc) {
  for (size_t i = 0; i < mc->qlen; i++) {
    mux_req *r = slot_at(mc, i)->req;
    if (r != NULL &&
        atomic_load_explicit(&r->state, memory_order_relaxed) == REQ_WAITING) {
      atomic_store_explicit(&r->state, REQ_READ, memory_order_relaxed);
      state_wake(&r->state);
      return;
    }
  }
}

/* r timed out: it leaves its place, whose replies are dropped when they
 * come. But replies come in order: if none came at all while r waited, the
 * connection is silent (a server gone without a word, a half-open TCP
 * connection), nothing behind r will come either, and it is closed so
 * that the next request reconnects instead of timing out behind it. */
static void abandon(mux_conn *mc, mux_req *r, int timeout_ms) {
  if (mc->replies == r->replies_at) {
    cachet_fail(CACHET_ETIMEDOUT,
                "redis: no reply within %d ms, and none to any request on "
                "the multiplexed connection meanwhile; it was closed",
                timeout_ms);
    fail_all(mc, CACHET_ETIMEDOUT);
    return;
  }
  for (size_t i = 0; i < mc->qlen; i++) {
    mux_slot *s = slot_at(mc, i);
    if (s->req == r) {
      s->req = NULL;
      mc->abandoned++;
      break;
    }
  }
  atomic_store_explicit(&r->state, REQ_DONE, memory_order_relaxed);
  cachet_fail(CACHET_ETIMEDOUT, "redis: no reply within %d ms", timeout_ms);
  r->status = CACHET_ETIMEDOUT;
  snprintf(r->detail, sizeof r->detail, "%s", cachet_last_error());
  if (mc->abandoned > MUX_MAX_ABANDONED) {
    cachet_fail(CACHET_ETIMEDOUT,
                "redis: no reply within %d ms to %d requests in a row on a "
                "multiplexed connection; it was closed",
                timeout_ms, MUX_MAX_ABANDONED);
    fail_all(mc, CACHET_ETIMEDOUT);
  }
}

/* A reply came: it answers the oldest group in flight. Returns the request
 * to wake (unbusy) once the mutex is let go, or NULL. */
static mux_req *dispatch(mux_conn *mc, redisReply *rep, mux_req *self) {
  if (mc->qlen == 0) {
    freeReplyObject(rep);
    cachet_fail(CACHET_EPROTO, "redis: a reply that no request asked for");
    fail_all(mc, CACHET_EPROTO);
    return NULL;
  }
  mux_slot *s = slot_at(mc, 0);
  mc->replies++;
  if (s->req != NULL)
    s->req->replies[s->req->got++] = rep;
  else
    freeReplyObject(rep);
  if (--s->left > 0)
    return NULL;
  mux_req *r = s->req;
  mc->qhead = (mc->qhead + 1) % mc->qcap;
  mc->qlen--;
  if (r == NULL) {
    mc->abandoned--;
    return NULL;
  }
  if (r == self) {
    atomic_store_explicit(&r->state, REQ_DONE, memory_order_relaxed);
    return NULL;
  }
  finish(r, CACHET_OK, NULL);
  return r;
}

/* ---- the writer and the reader -------------------------------------------
 * Both enter and leave with the mutex held, and drop it around the socket.
 */

static int send_all(mux_conn *mc, const char *p, size_t len, int64_t deadline) {
  size_t off = 0;
  while (off < len) {
    int want = 0;
    ssize_t n = cachet_sock_send(&mc->cn.s, p + off, len - off, &want);
    if (n < 0)
      return (int)n;
    if (n > 0)
      off += (size_t)n;
    else if (cachet_sock_wait(&mc->cn.s, want, deadline, -1) != CACHET_OK)
      return cachet_fail(CACHET_ETIMEDOUT,
                         "redis: sending timed out (the server is not "
                         "reading)");
  }
  return CACHET_OK;
}

/* Send everything queued, round after round, until nothing is left: bytes
 * queued while a round is out go in the next one. The bytes are mostly
 * other requests': a round that the server does not take within a whole
 * timeout fails the connection, whatever this thread's own deadline. */
static void write_queued(mux_conn *mc, int timeout_ms) {
  mc->writing = 1;
  mc->users++;
  while (mc->olen > 0 && !mc->broken) {
    char *buf = mc->out;
    size_t len = mc->olen, cap = mc->ocap;
    mc->out = mc->spare;
    mc->ocap = mc->spcap;
    mc->olen = 0;
    pthread_mutex_unlock(&mc->mu);
    int rc = send_all(mc, buf, len, cachet_mono_ms() + timeout_ms);
    pthread_mutex_lock(&mc->mu);
    if (cap > MUX_KEEP_BUF) {
      free(buf);
      buf = NULL;
      cap = 0;
    }
    mc->spare = buf;
    mc->spcap = cap;
    if (rc != CACHET_OK && !mc->broken)
      fail_all(mc, rc);
  }
  mc->writing = 0;
  mc->users--;
  maybe_reset(mc);
}

/* Read until `self` is answered, handing out the replies of the requests
 * before it; then pass the role on. */
static void read_replies(mux_conn *mc, mux_req *self, int timeout_ms) {
  mc->reading = 1;
  mc->users++;
  redisReader *rd = mc->cn.reader;
  cachet_reader_bound *bound = &mc->cn.bound;
  while (atomic_load_explicit(&self->state, memory_order_relaxed) != REQ_DONE &&
         !mc->broken) {
    /* What was queued while the replies were read goes out now, together:
     * the reader does the writing whenever it is awake anyway. */
    if (mc->olen > 0 && !mc->writing) {
      write_queued(mc, timeout_ms);
      continue;
    }
    pthread_mutex_unlock(&mc->mu);
    redisReply *batch[MUX_BATCH];
    int nb = 0, rc = CACHET_OK, timed_out = 0;
    while (nb < MUX_BATCH) {
      void *rep = NULL;
      if (redisReaderGetReply(rd, &rep) != REDIS_OK) {
        rc = cachet_fail(CACHET_EPROTO, "redis: protocol error: %s",
                         bound->refused ? bound->why : rd->errstr);
        break;
      }
      if (rep == NULL)
        break;
      batch[nb++] = rep;
    }
    if (rc == CACHET_OK && nb == 0) {
      /* Nothing parsed: wait for bytes. */
      char buf[16384];
      int want = CACHET_SOCK_READ;
      ssize_t got;
      if (cachet_reader_check(rd, bound) != 0)
        rc =
            cachet_fail(CACHET_EPROTO, "redis: protocol error: %s", bound->why);
      else if ((got = cachet_sock_recv(&mc->cn.s, buf, sizeof buf, &want)) < 0)
        rc = (int)got;
      else if (got == 0)
        timed_out =
            cachet_sock_wait(&mc->cn.s, want, self->deadline, -1) != CACHET_OK;
      else if (redisReaderFeed(rd, buf, (size_t)got) != REDIS_OK)
        rc = cachet_fail(CACHET_ENOMEM, "redis: out of memory");
    }
    pthread_mutex_lock(&mc->mu);
    mux_req *wake[MUX_BATCH];
    int nw = 0;
    for (int i = 0; i < nb; i++)
      if (mc->broken)
        freeReplyObject(batch[i]);
      else if ((wake[nw] = dispatch(mc, batch[i], self)) != NULL)
        nw++;
    if (rc != CACHET_OK && !mc->broken)
      fail_all(mc, rc);
    else if (timed_out && atomic_load_explicit(
                              &self->state, memory_order_relaxed) != REQ_DONE)
      abandon(mc, self, timeout_ms);
    if (nw > 0) {
      /* The wake-ups are system calls: not with the mutex held. */
      pthread_mutex_unlock(&mc->mu);
      for (int i = 0; i < nw; i++)
        unbusy(wake[i]);
      pthread_mutex_lock(&mc->mu);
    }
  }
  /* Nothing may stay queued without a reader to send it. */
  if (mc->olen > 0 && !mc->writing && !mc->broken)
    write_queued(mc, timeout_ms);
  mc->reading = 0;
  mc->users--;
  if (!mc->broken)
    promote(mc);
  maybe_reset(mc);
}

/* ---- a request -----------------------------------------------------------
 */

/* Wait, with the mutex held, until the connection can take a request:
 * connected (this thread connects it if nobody is) and not broken. */
static int ready(cachet_mux *m, mux_conn *mc, int64_t deadline) {
  const cachet_config *cfg = &m->c->cfg;
  for (;;) {
    if (mc->broken)
      maybe_reset(mc);
    if (mc->connected && !mc->broken)
      return CACHET_OK;
    if (!mc->connecting && !mc->broken) {
      /* Nobody else touches mc->cn while it connects. */
      mc->connecting = 1;
      pthread_mutex_unlock(&mc->mu);
      int rc = cachet_conn_connect(&mc->cn, cfg, NULL, NULL, 0);
      pthread_mutex_lock(&mc->mu);
      mc->connecting = 0;
      mc->connected = rc == CACHET_OK;
      pthread_cond_broadcast(&mc->cv);
      if (rc != CACHET_OK)
        return rc;
      continue;
    }
    int64_t left = deadline - cachet_mono_ms();
    struct timespec ts;
    cachet_deadline_ts(left > 0 ? left : 0, &ts);
    if (left <= 0 || pthread_cond_timedwait(&mc->cv, &mc->mu, &ts) == ETIMEDOUT)
      return cachet_fail(CACHET_ETIMEDOUT,
                         "redis: the multiplexed connection was not ready "
                         "within %d ms",
                         cfg->timeout_ms);
  }
}

/* Append the group's commands to the queued bytes. */
static int queue_bytes(mux_conn *mc, const cachet_cmd *cmds, const size_t *idx,
                       size_t n) {
  size_t need = mc->olen;
  for (size_t j = 0; j < n; j++) {
    size_t b = cachet_resp_bound(cmds[idx[j]].argc, cmds[idx[j]].lens);
    if (b == 0 || need + b < need)
      return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
    need += b;
  }
  if (cachet_grow(&mc->out, &mc->ocap, need, 1) != CACHET_OK)
    return cachet_fail(CACHET_ENOMEM, "out of memory queueing a command");
  for (size_t j = 0; j < n; j++) {
    const cachet_cmd *cmd = &cmds[idx[j]];
    mc->olen = (size_t)(cachet_resp_write(mc->out + mc->olen, cmd->argc,
                                          cmd->argv, cmd->lens) -
                        mc->out);
  }
  return CACHET_OK;
}

int cachet_mux_exchange(cachet_mux *m, const cachet_cmd *cmds,
                        const size_t *idx, size_t n, redisReply **replies) {
  int timeout_ms = m->c->cfg.timeout_ms;
  /* The least loaded connection, the lowest of equals: a lightly used
   * handle keeps to one connection (so a dropped one surfaces once, as in
   * the pool), a busy one spreads over all. */
  mux_conn *mc = &m->conns[0];
  int best = atomic_load_explicit(&mc->load, memory_order_relaxed);
  for (int i = 1; i < m->n && best > 0; i++) {
    int l = atomic_load_explicit(&m->conns[i].load, memory_order_relaxed);
    if (l < best) {
      best = l;
      mc = &m->conns[i];
    }
  }
  atomic_fetch_add_explicit(&mc->load, 1, memory_order_relaxed);
  mux_req r;
  memset(&r, 0, sizeof r);
  r.n = n;
  r.replies = replies;
  r.deadline = cachet_mono_ms() + timeout_ms;
  for (size_t j = 0; j < n; j++)
    replies[j] = NULL;
  pthread_mutex_lock(&mc->mu);
  int rc = ready(m, mc, r.deadline);
  if (rc == CACHET_OK) {
    size_t olen = mc->olen;
    rc = queue_bytes(mc, cmds, idx, n);
    if (rc == CACHET_OK && (rc = push_slot(mc, &r)) != CACHET_OK)
      mc->olen = olen; /* not queued: its bytes must not go out */
  }
  if (rc != CACHET_OK) {
    pthread_mutex_unlock(&mc->mu);
    atomic_fetch_sub_explicit(&mc->load, 1, memory_order_relaxed);
    return rc;
  }
  /* With a reader awake on this connection, it sends what is queued the
   * next time it wakes, with whatever else came meanwhile: one send for
   * many requests. Else this thread sends now, then reads. */
  if (!mc->writing && !mc->reading)
    write_queued(mc, timeout_ms);
  for (;;) {
    int st = atomic_load_explicit(&r.state, memory_order_relaxed);
    if (st == REQ_DONE)
      break;
    if (!mc->reading && !mc->broken) {
      read_replies(mc, &r, timeout_ms);
      continue;
    }
    pthread_mutex_unlock(&mc->mu);
    if (st == REQ_WAITING)
      state_wait(&r.state, REQ_WAITING, r.deadline);
    /* Answered: the replies were stored before the state (release). */
    if (atomic_load_explicit(&r.state, memory_order_acquire) == REQ_DONE)
      goto answered;
    pthread_mutex_lock(&mc->mu);
    st = atomic_load_explicit(&r.state, memory_order_relaxed);
    if (st == REQ_READ) /* asked to read: the loop takes the role */
      atomic_store_explicit(&r.state, REQ_WAITING, memory_order_relaxed);
    else if (st == REQ_WAITING && cachet_mono_ms() >= r.deadline)
      abandon(mc, &r, timeout_ms);
  }
  pthread_mutex_unlock(&mc->mu);
answered:
  /* The thread that answered may still be waking us. */
  while (atomic_load_explicit(&r.busy, memory_order_acquire))
    sched_yield();
  atomic_fetch_sub_explicit(&mc->load, 1, memory_order_relaxed);
  if (r.status != CACHET_OK) {
    for (size_t j = 0; j < r.got; j++) {
      freeReplyObject(replies[j]);
      replies[j] = NULL;
    }
    return cachet_fail(r.status, "%s", r.detail);
  }
  return CACHET_OK;
}
