/* The shim of via_async.h: sync calls made async, on one loop thread. */
#define VIA_ASYNC_IMPL
#include "via_async.h"

#include <event2/event.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "async.h"
#include "error.h"

/* Work for the loop thread, posted through a pipe. */
typedef struct task {
  void (*run)(struct task *);
} task;

static struct event_base *base;
static int pipefd[2];
static int started; /* under mu */
static pthread_t loop_th;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct twin *twins;
static size_t ntwins;

static void on_pipe(evutil_socket_t fd, short what, void *arg) {
  (void)what, (void)arg;
  task *t;
  while (read(fd, &t, sizeof t) == (ssize_t)sizeof t)
    t->run(t);
}

static void *loop_main(void *arg) {
  (void)arg;
  event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

/* A forked child (the suites fork callers) has no loop thread: it starts
 * its own, with twins of its own. */
static void in_child(void) {
  pthread_mutex_init(&mu, NULL);
  pthread_cond_init(&cv, NULL);
  started = 0;
  twins = NULL;
  ntwins = 0;
}

static void stop_task(struct task *t) {
  (void)t;
  event_base_loopbreak(base);
}

/* At exit the loop thread stops and is joined: nothing is left running
 * (or "possibly lost" under valgrind). */
static void stop_loop(void) {
  static task stop = {stop_task};
  if (!started)
    return;
  task *t = &stop;
  if (write(pipefd[1], &t, sizeof t) == (ssize_t)sizeof t)
    pthread_join(loop_th, NULL);
}

static void start_loop(void) {
  static int once;
  /* OpenSSL first: its cleanup at exit is then registered before
   * stop_loop, so it runs after the loop thread is joined, and that
   * thread's OpenSSL state (error queue, random generators) is freed when
   * it ends instead of outliving a cleanup that already ran. */
  if (!once++ &&
      (OPENSSL_init_ssl(0, NULL) != 1 ||
       pthread_atfork(NULL, NULL, in_child) != 0 || atexit(stop_loop) != 0))
    abort();
  if ((base = event_base_new()) == NULL || pipe(pipefd) != 0 ||
      fcntl(pipefd[0], F_SETFL, O_NONBLOCK) != 0)
    abort();
  struct event *ev =
      event_new(base, pipefd[0], EV_READ | EV_PERSIST, on_pipe, NULL);
  if (ev == NULL || event_add(ev, NULL) != 0 ||
      pthread_create(&loop_th, NULL, loop_main, NULL) != 0)
    abort();
}

static void post(task *t) {
  pthread_mutex_lock(&mu);
  if (!started++)
    start_loop();
  pthread_mutex_unlock(&mu);
  if (write(pipefd[1], &t, sizeof t) != (ssize_t)sizeof t) /* < PIPE_BUF */
    abort();
}

/* ---- Twins: the async handle of each sync handle (loop thread only) ---- */

struct twin {
  cachet *c;
  cachet_async *a;
};

static int twin_of(cachet *c, cachet_async **out) {
  for (size_t i = 0; i < ntwins; i++)
    if (twins[i].c == c) {
      *out = twins[i].a;
      return CACHET_OK;
    }
  struct twin *t = realloc(twins, (ntwins + 1) * sizeof *t);
  if (t == NULL)
    return cachet_fail(CACHET_ENOMEM, "via_async: out of memory");
  twins = t;
  int rc = cachet_async_over(out, base, c, 0);
  if (rc == CACHET_OK)
    twins[ntwins++] = (struct twin){c, *out};
  return rc;
}

/* ---- One call ------------------------------------------------------------ */

typedef struct req {
  task t;
  cachet *c;
  int (*start)(struct req *q, cachet_async *a);
  int done, rc, refused;
  char detail[512];
  /* Arguments. */
  const void *key, *val;
  size_t keylen, len, ntags, n;
  int64_t ttl_ms, wait_ms;
  const char *const *tags;
  const char *name;
  int flag;
  const cachet_lock *lock;
  cachet_loader_fn loader;
  void *lud;
  cachet_entry *e;
  /* Results. */
  void *out;
  size_t outlen;
  int64_t ttl_out;
  uint64_t count;
  cachet_lock *lk;
  cachet_health h;
} req;

/* The result is in (on the loop thread): wake the caller. */
static void finish(req *q, int rc) {
  q->rc = rc;
  snprintf(q->detail, sizeof q->detail, "%s", cachet_last_error());
  pthread_mutex_lock(&mu);
  q->done = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void req_run(task *t) {
  req *q = (req *)t;
  cachet_async *a;
  int rc = twin_of(q->c, &a);
  if (rc == CACHET_OK)
    rc = q->start(q, a);
  if (rc != CACHET_OK) { /* refused in the call: no callback comes */
    q->refused = 1;
    finish(q, rc);
  }
}

/* Run q on the loop and wait for its result; the detail comes along. */
static int call(req *q) {
  q->t.run = req_run;
  post(&q->t);
  pthread_mutex_lock(&mu);
  while (!q->done)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  if (q->detail[0] != '\0')
    (void)cachet_fail(q->rc, "%s", q->detail);
  else
    cachet_error_clear();
  return q->rc;
}

/* ---- Callbacks -------------------------------------------------------------
 */

static void value_cb(int status, const void *val, size_t len, void *ud) {
  req *q = ud;
  if (status == CACHET_OK) {
    if ((q->out = malloc(len + 1)) == NULL)
      abort();
    memcpy(q->out, val, len + 1);
    q->outlen = len;
  }
  finish(q, status);
}

static void status_cb(int status, void *ud) { finish(ud, status); }

static void count_cb(int status, uint64_t count, void *ud) {
  ((req *)ud)->count = count;
  finish(ud, status);
}

static void ttl_cb(int status, int64_t ttl_ms, void *ud) {
  ((req *)ud)->ttl_out = ttl_ms;
  finish(ud, status);
}

static void lock_cb(int status, cachet_lock *lock, void *ud) {
  ((req *)ud)->lk = lock;
  finish(ud, status);
}

static void items_cb(int status, const cachet_async_item *items, size_t n,
                     void *ud) {
  req *q = ud;
  for (size_t i = 0; i < n; i++) {
    q->e[i].status = items[i].status;
    if (items[i].val != NULL) {
      if ((q->e[i].out = malloc(items[i].len + 1)) == NULL)
        abort();
      memcpy(q->e[i].out, items[i].val, items[i].len + 1);
      q->e[i].outlen = items[i].len;
    }
  }
  finish(q, status);
}

static void health_cb(int status, const cachet_health *h, void *ud) {
  req *q = ud;
  if (h != NULL)
    q->h = *h;
  finish(q, status);
}

/* ---- get_or_set's loader: a thread of its own, then back to the loop --- */

typedef struct loadjob {
  task t;
  cachet_async_load *load;
  /* Copied from the request, which lives on the caller's stack: the call
   * may return before the loader has even started (the load abandoned),
   * and the loader thread must not read it then. */
  cachet_loader_fn fn;
  void *lud;
  void *key;
  size_t keylen;
  int status;
  void *val;
  size_t len;
  int64_t ttl_ms;
} loadjob;

static void load_back(task *t) {
  loadjob *j = (loadjob *)t;
  cachet_async_load_done(j->load, j->status, j->val, j->len, j->ttl_ms);
  if (j->status == 0) /* a failed loader keeps what it left in *val */
    free(j->val);
  free(j->key);
  free(j);
}

static void *load_thread(void *arg) {
  loadjob *j = arg;
  j->status = j->fn(j->lud, j->key, j->keylen, &j->val, &j->len, &j->ttl_ms);
  j->t.run = load_back;
  post(&j->t);
  return NULL;
}

static void loader(cachet_async_load *load, const void *key, size_t keylen,
                   int64_t ttl_ms, void *ud) {
  loadjob *j = calloc(1, sizeof *j);
  pthread_t th;
  if (j == NULL || (j->key = malloc(keylen)) == NULL)
    abort();
  memcpy(j->key, key, keylen);
  j->keylen = keylen;
  j->load = load;
  j->fn = ((req *)ud)->loader;
  j->lud = ((req *)ud)->lud;
  j->ttl_ms = ttl_ms;
  if (pthread_create(&th, NULL, load_thread, j) != 0)
    abort();
  pthread_detach(th);
}

/* ---- The calls -------------------------------------------------------------
 */

static int s_get(req *q, cachet_async *a) {
  return cachet_async_get(a, q->key, q->keylen, value_cb, q);
}
static int s_set(req *q, cachet_async *a) {
  return cachet_async_set_tags(a, q->key, q->keylen, q->val, q->len, q->ttl_ms,
                               q->tags, q->ntags, status_cb, q);
}
static int s_delete(req *q, cachet_async *a) {
  return cachet_async_delete(a, q->key, q->keylen, status_cb, q);
}
static int s_exists(req *q, cachet_async *a) {
  return cachet_async_exists(a, q->key, q->keylen, status_cb, q);
}
static int s_ttl(req *q, cachet_async *a) {
  return cachet_async_ttl(a, q->key, q->keylen, ttl_cb, q);
}
static int s_evict(req *q, cachet_async *a) {
  return cachet_async_evict_tags(a, q->tags, q->ntags, count_cb, q);
}
static int s_clear(req *q, cachet_async *a) {
  return cachet_async_clear(a, q->flag, count_cb, q);
}
static int s_prune(req *q, cachet_async *a) {
  return cachet_async_prune(a, count_cb, q);
}
static int s_acquire(req *q, cachet_async *a) {
  return cachet_async_lock_acquire(a, q->name, q->ttl_ms, q->wait_ms, lock_cb,
                                   q);
}
static int s_release(req *q, cachet_async *a) {
  return cachet_async_lock_release(a, q->lock, status_cb, q);
}
static int s_extend(req *q, cachet_async *a) {
  return cachet_async_lock_extend(a, q->lock, q->ttl_ms, status_cb, q);
}
static int s_gos(req *q, cachet_async *a) {
  return cachet_async_get_or_set(a, q->key, q->keylen, loader, q->ttl_ms,
                                 q->tags, q->ntags, value_cb, q);
}
static int s_mget(req *q, cachet_async *a) {
  return cachet_async_mget(a, q->e, q->n, items_cb, q);
}
static int s_mset(req *q, cachet_async *a) {
  return cachet_async_mset(a, q->e, q->n, items_cb, q);
}
static int s_health(req *q, cachet_async *a) {
  return cachet_async_health_check(a, health_cb, q);
}

static void close_twin(task *t) {
  req *q = (req *)t;
  for (size_t i = 0; i < ntwins; i++)
    if (twins[i].c == q->c) {
      cachet_async_close(twins[i].a);
      twins[i] = twins[--ntwins];
      break;
    }
  finish(q, CACHET_OK);
}

void via_close(cachet *c) {
  if (c == NULL)
    return;
  req q = {.c = c};
  q.t.run = close_twin;
  post(&q.t);
  pthread_mutex_lock(&mu);
  while (!q.done)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  cachet_close(c);
}

int via_get(cachet *c, const void *key, size_t keylen, void **val,
            size_t *len) {
  req q = {.c = c, .start = s_get, .key = key, .keylen = keylen};
  int rc = call(&q);
  *val = q.out;
  *len = q.outlen;
  return rc;
}

int via_set_tags(cachet *c, const void *key, size_t keylen, const void *val,
                 size_t len, int64_t ttl_ms, const char *const *tags,
                 size_t ntags) {
  req q = {.c = c,
           .start = s_set,
           .key = key,
           .keylen = keylen,
           .val = val,
           .len = len,
           .ttl_ms = ttl_ms,
           .tags = tags,
           .ntags = ntags};
  return call(&q);
}

int via_set(cachet *c, const void *key, size_t keylen, const void *val,
            size_t len, int64_t ttl_ms) {
  return via_set_tags(c, key, keylen, val, len, ttl_ms, NULL, 0);
}

int via_delete(cachet *c, const void *key, size_t keylen) {
  req q = {.c = c, .start = s_delete, .key = key, .keylen = keylen};
  return call(&q);
}

int via_exists(cachet *c, const void *key, size_t keylen) {
  req q = {.c = c, .start = s_exists, .key = key, .keylen = keylen};
  return call(&q);
}

int via_ttl(cachet *c, const void *key, size_t keylen, int64_t *ttl_ms) {
  req q = {.c = c, .start = s_ttl, .key = key, .keylen = keylen};
  int rc = call(&q);
  if (rc == CACHET_OK)
    *ttl_ms = q.ttl_out;
  return rc;
}

static int counted(req *q, uint64_t *count) {
  int rc = call(q);
  if (count != NULL)
    *count = rc == CACHET_OK ? q->count : 0;
  return rc;
}

int via_evict_tags(cachet *c, const char *const *tags, size_t ntags,
                   uint64_t *evicted) {
  req q = {.c = c, .start = s_evict, .tags = tags, .ntags = ntags};
  return counted(&q, evicted);
}

int via_clear(cachet *c, int dry_run, uint64_t *removed) {
  req q = {.c = c, .start = s_clear, .flag = dry_run};
  return counted(&q, removed);
}

int via_prune(cachet *c, uint64_t *pruned) {
  req q = {.c = c, .start = s_prune};
  return counted(&q, pruned);
}

int via_lock_acquire(cachet *c, const char *name, int64_t ttl_ms,
                     int64_t wait_ms, cachet_lock **out) {
  req q = {.c = c,
           .start = s_acquire,
           .name = name,
           .ttl_ms = ttl_ms,
           .wait_ms = wait_ms};
  int rc = call(&q);
  *out = q.lk;
  return rc;
}

int via_lock_release(cachet *c, const cachet_lock *lock) {
  req q = {.c = c, .start = s_release, .lock = lock};
  return call(&q);
}

int via_lock_extend(cachet *c, const cachet_lock *lock, int64_t ttl_ms) {
  req q = {.c = c, .start = s_extend, .lock = lock, .ttl_ms = ttl_ms};
  return call(&q);
}

int via_get_or_set(cachet *c, const void *key, size_t keylen,
                   cachet_loader_fn load, void *ud, int64_t ttl_ms,
                   const char *const *tags, size_t ntags, void **val,
                   size_t *len) {
  req q = {.c = c,
           .start = s_gos,
           .key = key,
           .keylen = keylen,
           .ttl_ms = ttl_ms,
           .tags = tags,
           .ntags = ntags,
           .loader = load,
           .lud = ud};
  int rc = call(&q);
  *val = q.out;
  *len = q.outlen;
  return rc;
}

static int batch(req *q, int write) {
  for (size_t i = 0; q->e != NULL && i < q->n; i++) {
    if (!write) {
      q->e[i].out = NULL;
      q->e[i].outlen = 0;
    }
    q->e[i].status = CACHET_OK;
  }
  int rc = call(q);
  /* Refused in the call (no items came): every entry says why, as the sync
   * call has them. */
  for (size_t i = 0; q->refused && q->e != NULL && i < q->n; i++)
    q->e[i].status = rc;
  return rc;
}

int via_mget(cachet *c, cachet_entry *entries, size_t n) {
  req q = {.c = c, .start = s_mget, .e = entries, .n = n};
  return batch(&q, 0);
}

int via_mset(cachet *c, cachet_entry *entries, size_t n) {
  req q = {.c = c, .start = s_mset, .e = entries, .n = n};
  return batch(&q, 1);
}

int via_health_check(cachet *c, cachet_health *out) {
  req q = {.c = c, .start = s_health};
  int rc = call(&q);
  memset(out, 0, sizeof *out);
  if (rc == CACHET_OK)
    *out = q.h;
  return rc;
}
