/* The sync runner: drives a machine (op.h) on the calling thread.
 *
 * It moves bytes and time and nothing else. A SEND is pipelined over one
 * borrowed connection (in a cluster, a routing session: one connection per
 * master it touches, written out before any reply is read); a SLEEP or a
 * loader run holds no connection, so a waiting caller never keeps one from
 * the pool. What every machine would otherwise repeat lives here:
 *  - the node snapshot for fan-out (in->nodes, in->names);
 *  - NOSCRIPT: SCRIPT LOAD on the node that said it (never EVAL: Redis may
 *    evict EVAL-cached scripts), pipelined ahead of the command again, its
 *    SHA1 checked against the embedded one; the machine never sees it
 *    (redirections are followed below, in link.c);
 *  - after a transport failure, every command not yet answered gets that
 *    failure's own status and detail (the first cause, not "connection is
 *    broken"), and the connection is closed when it goes back.
 * On a handle with multiplexed connections, a machine marked `multiplex`
 * sends each SEND there instead (mux.h), with no connection borrowed.
 */
#include "run.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "mux.h"
#include "op_gos.h"
#include "op_lock.h"

#define RUN_INLINE 4

typedef struct runner {
  cachet *c;
  cachet_mux *mux; /* set: SENDs go over the multiplexed connections */
  cachet_link *cn;
  int nodes;
  const char **names;
  int failed; /* the first borrow failed: the first SEND says so */
  char why[512];
  cachet_res *res;
  int *from;   /* the node that answered each command */
  size_t *idx; /* commands being sent */
  size_t cap;
  void *mem; /* res, idx and from when they outgrow the inline ones */
  char detail[512];
  /* Most operations send a command or two to one server: no allocation. */
  const char *names1[1];
  cachet_res res_inl[RUN_INLINE];
  size_t idx_inl[RUN_INLINE];
  int from_inl[RUN_INLINE];
} runner;

static int borrow(runner *r) {
  if (r->mux != NULL) {
    r->names1[0] = "server";
    r->names = r->names1;
    r->nodes = 1;
    return CACHET_OK;
  }
  if (r->cn != NULL)
    return CACHET_OK;
  int rc = cachet_link_acquire(r->c, &r->cn);
  if (rc != CACHET_OK)
    return rc;
  int n = cachet_link_nodes(r->cn);
  if (n < 0) {
    cachet_link_release(r->c, r->cn);
    r->cn = NULL;
    return n;
  }
  const char **names = n == 1 ? r->names1
                              : realloc(r->names == r->names1 ? NULL : r->names,
                                        (size_t)n * sizeof *names);
  if (names == NULL) {
    cachet_link_release(r->c, r->cn);
    r->cn = NULL;
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  }
  r->names = names;
  for (int i = 0; i < n; i++)
    names[i] = cachet_link_node_name(r->cn, i);
  r->nodes = n;
  return CACHET_OK;
}

static void give_back(runner *r, int broken) {
  if (r->cn == NULL)
    return;
  if (broken)
    cachet_link_break(r->cn);
  cachet_link_release(r->c, r->cn);
  r->cn = NULL;
}

static void free_replies(runner *r, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (r->res[i].reply != NULL) {
      freeReplyObject(r->res[i].reply);
      r->res[i].reply = NULL;
    }
}

static int is_noscript(const cachet_res *res) {
  return res->status == CACHET_OK && cachet_reply_is_noscript(res->reply);
}

static int append_cmd(runner *r, const cachet_cmd *cmd) {
  return cachet_link_append(r->cn, cmd->node, cmd->argc, cmd->argv, cmd->lens);
}

/* From command `i` on, every outcome is the failure `rc` (its detail now
 * the calling thread's). */
static void fail_from(runner *r, size_t i, size_t n, int rc) {
  snprintf(r->detail, sizeof r->detail, "%s", cachet_last_error());
  for (; i < n; i++) {
    if (r->res[i].reply != NULL)
      freeReplyObject(r->res[i].reply);
    r->res[i] = (cachet_res){rc, NULL, r->detail};
  }
}

/* exchange() over the multiplexed connections. */
static int exchange_mux(runner *r, const cachet_cmd *cmds, const size_t *idx,
                        size_t n) {
  redisReply *inl[RUN_INLINE], **reps = inl;
  if (n > RUN_INLINE && (reps = malloc(n * sizeof *reps)) == NULL) {
    int rc = cachet_fail(CACHET_ENOMEM, "out of memory");
    for (size_t j = 0; j < n; j++)
      fail_from(r, idx[j], idx[j] + 1, rc);
    return rc;
  }
  int rc = cachet_mux_exchange(r->mux, cmds, idx, n, reps);
  if (rc != CACHET_OK)
    snprintf(r->detail, sizeof r->detail, "%s", cachet_last_error());
  for (size_t j = 0; j < n; j++) {
    size_t i = idx[j];
    if (r->res[i].reply != NULL)
      freeReplyObject(r->res[i].reply);
    r->res[i] = rc == CACHET_OK ? (cachet_res){CACHET_OK, reps[j], NULL}
                                : (cachet_res){rc, NULL, r->detail};
    r->from[i] = 0;
  }
  if (reps != inl)
    free(reps);
  return rc;
}

/* Append the commands idx[0..n), then read their replies in order. */
static int exchange(runner *r, const cachet_cmd *cmds, const size_t *idx,
                    size_t n) {
  if (r->mux != NULL)
    return exchange_mux(r, cmds, idx, n);
  for (size_t j = 0; j < n; j++) {
    int rc = append_cmd(r, &cmds[idx[j]]);
    if (rc != CACHET_OK) {
      cachet_link_break(r->cn); /* commands may sit unsent */
      /* None of them is answered: each outcome is this failure, never
       * an empty success. */
      for (size_t q = 0; q < n; q++)
        fail_from(r, idx[q], idx[q] + 1, rc);
      return rc;
    }
  }
  /* After a failed read every other reply is still read: in a cluster the
   * other masters' connections are sound, and their commands, sent
   * already, must be answered (or fail) before the call returns, never run
   * after it. The failed connection answers at once, broken. Each failure
   * is reported as the first, with its detail. */
  int first = CACHET_OK;
  for (size_t j = 0; j < n; j++) {
    size_t i = idx[j];
    redisReply *rep = NULL;
    int rc = cachet_link_read(r->cn, &rep);
    if (r->res[i].reply != NULL)
      freeReplyObject(r->res[i].reply);
    if (rc != CACHET_OK && first == CACHET_OK) {
      first = rc;
      r->res[i].reply = NULL;
      fail_from(r, i, i + 1, rc);
    } else if (rc != CACHET_OK) {
      r->res[i] = (cachet_res){first, NULL, r->detail};
    } else {
      r->res[i] = (cachet_res){CACHET_OK, rep, NULL};
      r->from[i] = cachet_link_last(r->cn);
    }
  }
  if (first != CACHET_OK) {
    cachet_link_break(r->cn);
    return cachet_fail(first, "%s", r->detail);
  }
  return CACHET_OK;
}

typedef struct load_cmd {
  const char *argv[3];
  size_t lens[3];
  int script;
} load_cmd;

/* Commands idx[0..again) of `out` met NOSCRIPT. Each script they need is
 * loaded on the node that said it, in the same pipeline just ahead of
 * them, as the async driver does: no round trip between the load and the
 * commands for a SCRIPT FLUSH to fall into. A load the server refuses is
 * the outcome of the commands that needed it (and met NOSCRIPT again). */
static int resend_loaded(runner *r, const cachet_out *out, size_t *idx,
                         size_t again) {
  size_t n = out->n, total = n + again;
  cachet_cmd *all = malloc(total * sizeof *all);
  cachet_res *res = calloc(total, sizeof *res);
  int *from = calloc(total, sizeof *from);
  size_t *ix = malloc(2 * again * sizeof *ix);
  size_t *need = malloc(again * sizeof *need);
  load_cmd *lc = malloc(again * sizeof *lc);
  int rc = CACHET_OK;
  if (all == NULL || res == NULL || from == NULL || ix == NULL ||
      need == NULL || lc == NULL) {
    rc = cachet_fail(CACHET_ENOMEM, "out of memory reloading a script");
    for (size_t j = 0; j < again; j++)
      fail_from(r, idx[j], idx[j] + 1, rc);
    goto out;
  }
  memcpy(all, out->cmds, n * sizeof *all);
  size_t nl = 0;
  for (size_t j = 0; j < again; j++) {
    const cachet_cmd *cmd = &out->cmds[idx[j]];
    int node = r->from[idx[j]];
    size_t k = 0;
    while (k < nl && !(all[n + k].node == node && lc[k].script == cmd->script))
      k++;
    if (k == nl) {
      const cachet_script *sc = &cachet_scripts[cmd->script];
      lc[nl] = (load_cmd){
          {"SCRIPT", "LOAD", sc->body}, {6, 4, sc->len}, cmd->script};
      all[n + nl] = (cachet_cmd){3, lc[nl].argv, lc[nl].lens, node, -1};
      ix[nl] = n + nl;
      nl++;
    }
    need[j] = k;
  }
  for (size_t j = 0; j < again; j++)
    ix[nl + j] = idx[j];
  /* The outcomes so far move to arrays with room for the loads' too. */
  cachet_res *keep_res = r->res;
  int *keep_from = r->from;
  memcpy(res, keep_res, n * sizeof *res);
  memcpy(from, keep_from, n * sizeof *from);
  r->res = res;
  r->from = from;
  rc = exchange(r, all, ix, nl + again);
  for (size_t k = 0; k < nl && rc == CACHET_OK; k++) {
    const cachet_res *lr = &res[n + k];
    int lrc = lr->status != CACHET_OK
                  ? cachet_fail(lr->status, "%s", lr->detail)
                  : cachet_script_loaded(r->c, lr->reply, lc[k].script);
    if (lrc == CACHET_OK)
      continue;
    for (size_t j = 0; j < again; j++)
      if (need[j] == k && is_noscript(&res[idx[j]]))
        fail_from(r, idx[j], idx[j] + 1, lrc);
  }
  for (size_t k = 0; k < nl; k++)
    if (res[n + k].reply != NULL)
      freeReplyObject(res[n + k].reply);
  memcpy(keep_res, res, n * sizeof *res);
  memcpy(keep_from, from, n * sizeof *from);
  r->res = keep_res;
  r->from = keep_from;
out:
  free(all);
  free(res);
  free(from);
  free(ix);
  free(need);
  free(lc);
  return rc;
}

/* Room for n outcomes (and their index list in r->idx): inline, else one
 * allocation for the three arrays. */
static int reserve(runner *r, size_t n) {
  if (n <= r->cap)
    return CACHET_OK;
  void *mem = malloc(n * (sizeof *r->res + sizeof *r->idx + sizeof *r->from));
  if (mem == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  free(r->mem);
  r->mem = mem;
  r->res = mem;
  r->idx = (size_t *)(void *)(r->res + n);
  r->from = (int *)(void *)(r->idx + n);
  r->cap = n;
  return CACHET_OK;
}

/* One SEND: the pipeline, then the commands that met NOSCRIPT again once
 * their script is loaded where it was missing. r->res has room for it. */
static void send(runner *r, const cachet_out *out) {
  size_t n = out->n;
  memset(r->res, 0, n * sizeof *r->res);
  int rc;
  if (r->failed != CACHET_OK) {
    /* The borrow before the first step failed: no second wait. */
    rc = cachet_fail(r->failed, "%s", r->why);
    r->failed = CACHET_OK;
  } else {
    rc = borrow(r);
  }
  if (rc != CACHET_OK) {
    fail_from(r, 0, n, rc);
    return;
  }
  size_t *idx = r->idx;
  for (size_t i = 0; i < n; i++)
    idx[i] = i;
  rc = exchange(r, out->cmds, idx, n);
  /* A large pipeline is read by the server a piece at a time, and a SCRIPT
   * FLUSH may fall between two pieces: while each round runs some of the
   * commands, they go again; CACHET_NOSCRIPT_ROUNDS rounds in a row that
   * run none end it: at most 2n + 1 rounds for n commands. */
  size_t left = SIZE_MAX;
  int stalled = 0;
  while (rc == CACHET_OK) {
    size_t again = 0;
    for (size_t i = 0; i < n; i++)
      if (out->cmds[i].script >= 0 && is_noscript(&r->res[i]))
        idx[again++] = i;
    if (again == 0)
      break;
    stalled = again < left ? 0 : stalled + 1;
    if (stalled == CACHET_NOSCRIPT_ROUNDS)
      break;
    left = again;
    rc = resend_loaded(r, out, idx, again);
  }
  /* A transport failure ends the recovery: a command still answered
   * NOSCRIPT did not run, as if it had never been answered, so its outcome
   * is that failure, not the server's NOSCRIPT (which is never the
   * caller's to see). */
  if (rc != CACHET_OK)
    for (size_t i = 0; i < n; i++)
      if (out->cmds[i].script >= 0 && is_noscript(&r->res[i]))
        fail_from(r, i, i + 1, rc);
}

/* ---- get_or_set's loader -------------------------------------------------
 * The loader runs on the calling thread, holding no connection, while a
 * watchdog thread renews the lease every lease/3, each time over a
 * connection it borrows for that one call. */
typedef struct watchdog {
  cachet *c;
  cachet_lock *lk;
  int64_t lease_ms;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  int lost; /* LOCK_EXPIRED or LOCK_NOT_OWNER once the lease is gone */
  pthread_t th;
} watchdog;

static void *watchdog_run(void *arg) {
  watchdog *w = arg;
  int64_t period = w->lease_ms / 3 > 0 ? w->lease_ms / 3 : 1;
  pthread_mutex_lock(&w->mu);
  while (!w->stop) {
    struct timespec dl;
    cachet_deadline_ts(period, &dl);
    while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &dl) != ETIMEDOUT)
      ;
    if (w->stop)
      break;
    pthread_mutex_unlock(&w->mu);
    /* An error (connection, timeout) is not a lost lease: the lease may
     * still be live, so try again at the next tick. */
    cachet_op_lock x;
    cachet_op_lock_init(&x, w->c, CACHET_LOCK_EXTEND, w->lk, w->lease_ms, 0);
    int rc = cachet_run(w->c, &x.op);
    x.op.k->free(&x.op);
    pthread_mutex_lock(&w->mu);
    if (rc == CACHET_LOCK_EXPIRED || rc == CACHET_LOCK_NOT_OWNER) {
      w->lost = rc;
      break;
    }
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static void run_loader(cachet *c, cachet_load *ld) {
  watchdog w;
  memset(&w, 0, sizeof w);
  w.c = c;
  w.lk = ld->lock;
  w.lease_ms = ld->lease_ms;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w.cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&w.mu, NULL);
  int started = pthread_create(&w.th, NULL, watchdog_run, &w) == 0;
  if (!started) {
    ld->status = -1;
    ld->start_failed = 1;
  } else {
    ld->status =
        ld->fn(ld->ud, ld->key, ld->keylen, &ld->val, &ld->len, &ld->ttl_ms);
    pthread_mutex_lock(&w.mu);
    w.stop = 1;
    pthread_cond_signal(&w.cv);
    pthread_mutex_unlock(&w.mu);
    pthread_join(w.th, NULL);
    ld->lost = w.lost;
  }
  pthread_cond_destroy(&w.cv);
  pthread_mutex_destroy(&w.mu);
}

int cachet_run(cachet *c, cachet_op *op) {
  runner r;
  memset(&r, 0, offsetof(runner, names1));
  r.c = c;
  r.res = r.res_inl;
  r.idx = r.idx_inl;
  r.from = r.from_inl;
  r.cap = RUN_INLINE;
  if (c->mux != NULL && op->k->multiplex)
    r.mux = c->mux;
  cachet_in in = {0};
  /* Borrow first, for the node snapshot. If that fails the machine still
   * runs, and its first SEND gets the failure: it decides what that means
   * (a batch, for one, gives every entry the status). */
  int rc = borrow(&r);
  if (rc != CACHET_OK) {
    r.failed = rc;
    snprintf(r.why, sizeof r.why, "%s", cachet_last_error());
    r.nodes = 1;
  }
  in.now = cachet_mono_ms();
  for (;;) {
    static const char *const unknown[1] = {"?"};
    in.nodes = r.nodes;
    in.names = r.names != NULL ? r.names : unknown;
    cachet_out out = {0};
    int what = op->k->step(op, &in, &out);
    free_replies(&r, in.n);
    in.res = NULL;
    in.n = 0;
    if (what == CACHET_DO_DONE) {
      /* A reply of the wrong shape leaves the stream in doubt. */
      give_back(&r, out.status == CACHET_EPROTO);
      rc = out.status;
      break;
    }
    if (what == CACHET_DO_SLEEP) {
      give_back(&r, 0);
      int64_t now = cachet_mono_ms();
      cachet_sleep_until(out.ms, now + out.ms);
    } else if (what == CACHET_DO_LOAD) {
      give_back(&r, 0);
      run_loader(c, out.load);
    } else if ((rc = reserve(&r, out.n)) != CACHET_OK) {
      give_back(&r, 0);
      break;
    } else {
      send(&r, &out);
      in.res = r.res;
      in.n = out.n;
      /* A connection that failed goes back now (closed), so that a
       * machine that tries again does so over a fresh one. */
      for (size_t i = 0; i < out.n && r.cn != NULL; i++)
        if (r.res[i].status != CACHET_OK)
          give_back(&r, 1);
    }
    in.now = cachet_mono_ms();
  }
  free(r.mem);
  if (r.names != r.names1)
    free(r.names);
  return rc;
}
