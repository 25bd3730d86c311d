/* Invalidation feeds for the near cache (track.h). */
#include "track.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "error.h"
#include "keys.h"
#include "link.h"
#include "near.h"
#include "router.h"

#define FEEDS_MAX 128
#define PING_EVERY_MS 1000
#define TOPOLOGY_EVERY_MS 1000
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
/* After a read that found messages, the feed lets more gather for this
 * long before it looks again. A writer's every write is a message: read
 * one by one, their wake-ups cost a writing thread of the same process 16%
 * of its rate on two cores; gathered, 1.4% (bench_near). It delays an
 * invalidation by this much at most. */
#define GATHER_US 500
#define CHANNEL "__redis__:invalidate"

typedef struct feed {
  cachet_conn cn;
  int node; /* the router's index, or -1 on a single server */
  int want; /* what its socket waits for */
  int ping_out;
  int64_t ping_due, pong_by;
} feed;

struct cachet_track {
  cachet *c;
  pthread_t th;
  int wake[2];
  _Atomic int stop;
  _Atomic int active;
  pthread_mutex_t mu;
  char why[256];
  feed feeds[FEEDS_MAX];
  int nfeeds;
  int busy; /* the last drain found messages */
  /* The TRACKING command, built once (build_command). */
  const char *argv[8];
  size_t lens[8];
  int argc;
};

_Atomic int cachet_track_hold;
void (*_Atomic cachet_track_seen_hook)(const char *key, size_t len);

static int stopping(const cachet_track *t) {
  return atomic_load_explicit(&t->stop, memory_order_acquire);
}

static void set_why(cachet_track *t, const char *why) {
  pthread_mutex_lock(&t->mu);
  snprintf(t->why, sizeof t->why, "%s", why);
  pthread_mutex_unlock(&t->mu);
}

/* Coherence is lost (or not back yet) because of `why`: remembered for
 * health, and told to the log sink once per new reason, not on every
 * reconnect attempt. */
static void lost(cachet_track *t, const char *why) {
  pthread_mutex_lock(&t->mu);
  int news = strcmp(t->why, why) != 0;
  pthread_mutex_unlock(&t->mu);
  set_why(t, why);
  if (news && t->c->log != NULL) {
    char msg[400];
    snprintf(msg, sizeof msg, "near cache: bypassed until tracking is back: %s",
             why);
    t->c->log(t->c->log_ud, CACHET_LOG_WARN, msg);
  }
}

void cachet_track_why(cachet_track *t, char *out, size_t cap) {
  pthread_mutex_lock(&t->mu);
  snprintf(out, cap, "%s", t->why);
  pthread_mutex_unlock(&t->mu);
}

int cachet_track_active(const cachet_track *t) {
  return t != NULL && atomic_load_explicit(&t->active, memory_order_acquire);
}

/* Sleep `ms`, or less if stop is asked. */
static void nap(cachet_track *t, int64_t ms) {
  struct pollfd p = {t->wake[0], POLLIN, 0};
  int64_t until = cachet_mono_ms() + ms;
  for (int64_t left = ms; left > 0 && !stopping(t);
       left = until - cachet_mono_ms())
    (void)poll(&p, 1, (int)left);
}

static void close_feeds(cachet_track *t) {
  for (int i = 0; i < t->nfeeds; i++)
    cachet_conn_close(&t->feeds[i].cn);
  t->nfeeds = 0;
}

/* One command during set-up; an error reply is ESERVER in the server's
 * words. */
static int setup(feed *f, int argc, const char **argv, const size_t *lens,
                 int type, redisReply **out) {
  redisReply *r = NULL;
  int rc = cachet_conn_exchange(&f->cn, argc, argv, lens, &r);
  if (rc == CACHET_OK && r->type == REDIS_REPLY_ERROR)
    rc = cachet_fail_bytes(CACHET_ESERVER, argv[0], r->str, r->len);
  else if (rc == CACHET_OK && r->type != type)
    rc =
        cachet_fail(CACHET_EPROTO, "%s %s: unexpected reply", argv[0], argv[1]);
  if (rc == CACHET_OK && out != NULL)
    *out = r;
  else if (r != NULL)
    freeReplyObject(r);
  return rc;
}

/* Connect feed f and subscribe it to its own invalidations. */
static int subscribe(cachet_track *t, feed *f, const char *host, int port) {
  cachet *c = t->c;
  int rc = cachet_conn_connect(&f->cn, &c->cfg, c->tls, host, port);
  if (rc != CACHET_OK)
    return rc;
  const char *id_argv[2] = {"CLIENT", "ID"};
  size_t id_lens[2] = {6, 2};
  redisReply *r = NULL;
  if ((rc = setup(f, 2, id_argv, id_lens, REDIS_REPLY_INTEGER, &r)) !=
      CACHET_OK)
    return rc;
  char id[24];
  snprintf(id, sizeof id, "%lld", r->integer);
  freeReplyObject(r);
  t->argv[4] = id;
  t->lens[4] = strlen(id);
  if ((rc = setup(f, t->argc, t->argv, t->lens, REDIS_REPLY_STATUS, NULL)) !=
      CACHET_OK)
    return rc;
  const char *sub_argv[2] = {"SUBSCRIBE", CHANNEL};
  size_t sub_lens[2] = {9, strlen(CHANNEL)};
  if ((rc = setup(f, 2, sub_argv, sub_lens, REDIS_REPLY_ARRAY, NULL)) !=
      CACHET_OK)
    return rc;
  f->want = CACHET_SOCK_READ;
  f->ping_out = 0;
  f->ping_due = cachet_mono_ms() + PING_EVERY_MS;
  return CACHET_OK;
}

/* The masters to follow: one entry of -1 on a single server. */
static int masters(cachet_track *t, int *ids) {
  cachet_router *rt = cachet_links_router(t->c);
  if (rt == NULL) {
    ids[0] = -1;
    return 1;
  }
  /* Not through a link: one held here while a node is slow to answer
   * would be one fewer for the callers (with pool_size 1, none). */
  int rc = cachet_links_refresh(t->c);
  if (rc < 0)
    return rc;
  int n = cachet_router_masters(rt, ids, FEEDS_MAX);
  return n > 0 ? n : cachet_fail(CACHET_ECONN, "cluster: no master known");
}

static int connect_all(cachet_track *t) {
  int ids[FEEDS_MAX];
  int n = masters(t, ids);
  if (n < 0)
    return n;
  cachet_router *rt = cachet_links_router(t->c);
  for (int i = 0; i < n && !stopping(t); i++) {
    feed *f = &t->feeds[t->nfeeds++];
    memset(f, 0, sizeof *f);
    f->node = ids[i];
    /* Its connect and set-up end the moment stop is asked, so that closing
     * the handle never waits out timeout_ms on a server that accepts but
     * does not answer. */
    f->cn.stop_fd = &t->wake[0];
    int port = 0;
    const char *host =
        ids[i] >= 0 ? cachet_router_host(rt, ids[i], &port) : NULL;
    int rc = subscribe(t, f, host, port);
    if (rc != CACHET_OK) {
      if (rt != NULL) /* perhaps no longer a master: ask again next time */
        cachet_router_stale(rt);
      return rc;
    }
  }
  return stopping(t) ? CACHET_ECONN : CACHET_OK;
}

static int is(const redisReply *r, const char *s) {
  return r->type == REDIS_REPLY_STRING && r->len == strlen(s) &&
         memcmp(r->str, s, r->len) == 0;
}

static void drop(cachet_track *t, const redisReply *k) {
  if (k->type != REDIS_REPLY_STRING ||
      cachet_data_kind(t->c, k->str, k->len) != CACHET_KIND_VALUE)
    return;
  cachet_near_drop(t->c->near, k->str, k->len);
  cachet_near_count_invalidation(t->c->near);
  void (*seen)(const char *, size_t) = atomic_load(&cachet_track_seen_hook);
  if (seen != NULL)
    seen(k->str, k->len);
}

static int message(cachet_track *t, feed *f, const redisReply *r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 2)
    return cachet_fail(CACHET_EPROTO, "invalidation feed: unexpected reply");
  const redisReply *kind = r->element[0];
  if (is(kind, "message") && r->elements == 3) {
    const redisReply *p = r->element[2];
    if (p->type == REDIS_REPLY_NIL) /* FLUSHDB, FLUSHALL */
      cachet_near_flush(t->c->near);
    else if (p->type == REDIS_REPLY_ARRAY)
      for (size_t i = 0; i < p->elements; i++)
        drop(t, p->element[i]);
    else
      drop(t, p);
    return CACHET_OK;
  }
  if (is(kind, "pong")) {
    f->ping_out = 0;
    f->ping_due = cachet_mono_ms() + PING_EVERY_MS;
    return CACHET_OK;
  }
  if (is(kind, "subscribe"))
    return CACHET_OK;
  return cachet_fail(CACHET_EPROTO, "invalidation feed: unexpected message");
}

/* Everything the feed has now, without waiting. */
static int drain(cachet_track *t, feed *f) {
  char buf[16384];
  for (;;) {
    void *r = NULL;
    if (redisReaderGetReply(f->cn.reader, &r) != REDIS_OK)
      return cachet_fail(CACHET_EPROTO, "invalidation feed: %s",
                         f->cn.bound.refused ? f->cn.bound.why
                                             : f->cn.reader->errstr);
    if (r != NULL) {
      int rc = message(t, f, r);
      freeReplyObject(r);
      if (rc != CACHET_OK)
        return rc;
      continue;
    }
    if (cachet_reader_check(f->cn.reader, &f->cn.bound) != 0)
      return cachet_fail(CACHET_EPROTO, "invalidation feed: %s",
                         f->cn.bound.why);
    int want = CACHET_SOCK_READ;
    ssize_t n = cachet_sock_recv(&f->cn.s, buf, sizeof buf, &want);
    if (n < 0)
      return (int)n;
    if (n == 0) {
      f->want = want;
      return CACHET_OK;
    }
    t->busy = 1;
    if (redisReaderFeed(f->cn.reader, buf, (size_t)n) != REDIS_OK)
      return cachet_fail(CACHET_ENOMEM, "invalidation feed: out of memory");
  }
}

static int ping(feed *f, int timeout_ms) {
  const char *argv[1] = {"PING"};
  size_t lens[1] = {4};
  int rc = cachet_conn_append(&f->cn, 1, argv, lens);
  if (rc == CACHET_OK)
    rc = cachet_conn_flush(&f->cn);
  f->ping_out = 1;
  f->pong_by = cachet_mono_ms() + timeout_ms;
  return rc;
}

/* A cluster that gained or lost a master since the feeds were made. */
static int topology_changed(cachet_track *t) {
  cachet_router *rt = cachet_links_router(t->c);
  if (rt == NULL)
    return 0;
  int ids[FEEDS_MAX];
  int n = cachet_router_masters(rt, ids, FEEDS_MAX);
  if (n != t->nfeeds)
    return 1;
  for (int i = 0; i < n; i++)
    if (ids[i] != t->feeds[i].node)
      return 1;
  return 0;
}

/* Serve the feeds until one fails or stop is asked. */
static int serve(cachet_track *t) {
  int timeout_ms = t->c->cfg.timeout_ms;
  struct pollfd p[FEEDS_MAX + 1];
  int64_t topology_due = cachet_mono_ms() + TOPOLOGY_EVERY_MS;
  while (!stopping(t)) {
    if (atomic_load(&cachet_track_hold)) {
      nap(t, 1);
      continue;
    }
    if (t->busy) {
      struct timespec gather = {0, GATHER_US * 1000L};
      nanosleep(&gather, NULL);
      t->busy = 0;
    }
    int64_t now = cachet_mono_ms(), next = now + PING_EVERY_MS;
    for (int i = 0; i < t->nfeeds; i++) {
      feed *f = &t->feeds[i];
      int rc = drain(t, f);
      if (rc == CACHET_OK && f->ping_out && now >= f->pong_by)
        rc = cachet_fail(CACHET_ETIMEDOUT,
                         "invalidation feed: no answer to PING within %d ms",
                         timeout_ms);
      if (rc == CACHET_OK && !f->ping_out && now >= f->ping_due)
        rc = ping(f, timeout_ms);
      if (rc != CACHET_OK)
        return rc;
      int64_t due = f->ping_out ? f->pong_by : f->ping_due;
      next = due < next ? due : next;
      p[i] = (struct pollfd){
          f->cn.s.fd, (short)(f->want == CACHET_SOCK_WRITE ? POLLOUT : POLLIN),
          0};
    }
    if (now >= topology_due) {
      if (topology_changed(t))
        return cachet_fail(CACHET_ECONN, "cluster: the masters changed");
      topology_due = now + TOPOLOGY_EVERY_MS;
    }
    p[t->nfeeds] = (struct pollfd){t->wake[0], POLLIN, 0};
    int64_t wait = next - now;
    (void)poll(p, (nfds_t)t->nfeeds + 1,
               (int)(wait < 1      ? 1
                     : wait > 1000 ? 1000
                                   : wait));
  }
  return CACHET_OK;
}

static void *run(void *arg) {
  cachet_track *t = arg;
  cachet *c = t->c;
  int64_t backoff = 0;
  while (!stopping(t)) {
    if (backoff > 0)
      nap(t, cachet_jitter_ms(backoff));
    if (stopping(t))
      break;
    int rc = connect_all(t);
    if (rc == CACHET_OK) {
      cachet_near_activate(c->near);
      atomic_store(&t->active, 1);
      set_why(t, "");
      backoff = 0;
      rc = serve(t);
      atomic_store(&t->active, 0);
      cachet_near_deactivate(c->near);
    }
    close_feeds(t);
    if (!stopping(t)) {
      lost(t, cachet_last_error());
      backoff = backoff == 0                   ? BACKOFF_MIN_MS
                : backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                               : backoff * 2;
    }
  }
  return NULL;
}

/* CLIENT TRACKING on REDIRECT <id> BCAST [PREFIX <prefix>]: one prefix for
 * the whole namespace. Redis matches every written key against each
 * subscribed prefix in turn, so the 256 value-key prefixes
 * <prefix>{bb}v: cost a write 21% (bench_near); one costs 1%, and the
 * names of other kinds it also announces are skipped here. An empty
 * prefix takes no PREFIX: every key of the database. */
static void build_command(cachet_track *t) {
  static const char *const head[6] = {"CLIENT",   "TRACKING", "on",
                                      "REDIRECT", "",         "BCAST"};
  for (int i = 0; i < 6; i++) {
    t->argv[i] = head[i];
    t->lens[i] = strlen(head[i]);
  }
  t->argc = 6;
  if (t->c->cfg.prefixlen > 0) {
    t->argv[6] = "PREFIX";
    t->lens[6] = 6;
    t->argv[7] = t->c->cfg.prefix;
    t->lens[7] = t->c->cfg.prefixlen;
    t->argc = 8;
  }
}

int cachet_track_start(cachet *c, cachet_track **out) {
  *out = NULL;
  cachet_track *t = calloc(1, sizeof *t);
  if (t == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  t->c = c;
  t->wake[0] = t->wake[1] = -1;
  pthread_mutex_init(&t->mu, NULL);
  build_command(t);
  int rc = CACHET_OK;
  if (pipe(t->wake) != 0)
    rc = cachet_fail(CACHET_EINTERNAL, "near cache: no pipe for its thread");
  for (int i = 0; rc == CACHET_OK && i < 2; i++)
    (void)fcntl(t->wake[i], F_SETFD, FD_CLOEXEC);
  if (rc == CACHET_OK && pthread_create(&t->th, NULL, run, t) != 0)
    rc = cachet_fail(CACHET_EINTERNAL, "near cache: cannot start its thread");
  if (rc != CACHET_OK) {
    if (t->wake[0] >= 0) {
      close(t->wake[0]);
      close(t->wake[1]);
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
    return rc;
  }
  *out = t;
  return CACHET_OK;
}

void cachet_track_stop(cachet_track *t) {
  if (t == NULL)
    return;
  atomic_store_explicit(&t->stop, 1, memory_order_release);
  char b = 1;
  (void)!write(t->wake[1], &b, 1);
  pthread_join(t->th, NULL);
  close_feeds(t);
  close(t->wake[0]);
  close(t->wake[1]);
  pthread_mutex_destroy(&t->mu);
  free(t);
}
